# Helpers shared by the scripts (sourced, not run).

# Waits until http://127.0.0.1:$1/alive answers (or the given pid dies), at most 20 s.
wait_alive() {
  local port=$1 pid=${2:-}
  for _ in $(seq 200); do
    if curl -fsS "http://127.0.0.1:$port/alive" >/dev/null 2>&1; then return 0; fi
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      echo "process $pid died before listening on $port" >&2; return 1
    fi
    sleep 0.1
  done
  echo "nothing answered on port $port" >&2; return 1
}

# A free TCP port on loopback.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Resident memory of a pid in kB.
rss_kb() {
  awk '/^VmRSS:/ {print $2}' "/proc/$1/status"
}

need() {
  command -v "$1" >/dev/null || { echo "$0 needs $1: $2" >&2; exit 1; }
}

# Waits up to $1 tenths of a second for the given pids to exit.
wait_gone() {
  local tenths=$1; shift
  for _ in $(seq "$tenths"); do
    local alive=0
    for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && return 0
    sleep 0.1
  done
  return 1
}

# Stops a demo: PUT /kill to the api on port $1 (its worker finishes and exits, the api flushes
# and exits), then the simulator $2, which nothing else stops; $3... are the api's and worker's
# pids. Whatever does not exit in time is killed.
stop_demo() {
  local port=$1 sim=$2; shift 2
  echo
  echo "stopping: PUT /kill (the worker finishes what it holds, the api flushes, both exit)"
  curl -fsS -XPUT "http://127.0.0.1:$port/kill" >/dev/null 2>&1 || true
  wait_gone 200 "$@" || kill "$@" 2>/dev/null || true
  kill "$sim" 2>/dev/null || true
  wait_gone 50 "$sim" || kill -9 "$sim" 2>/dev/null || true
}

# Installs Debian's packages $@ (apt-get, as root or through sudo) unless `command -v $1` finds
# the first one's command already; $1 is that command's name.
apt_install() {
  local cmd=$1; shift
  command -v "$cmd" >/dev/null && return 0
  echo "installing $* (apt-get)..."
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get install -y -qq "$@" >/dev/null 2>&1 \
    || { $sudo apt-get update -qq && $sudo apt-get install -y -qq "$@" >/dev/null; }
}

# PostgreSQL (server and psql), for the postgres target's tests, demo and benchmark: each starts
# a throwaway cluster of its own, so the package's own cluster is not needed (nor started here).
need_postgres() {
  if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || ! command -v psql >/dev/null; then
    local cmd=postgres-server-missing
    apt_install "$cmd" postgresql postgresql-client
  fi
}

# Chromium and chromedriver, for the erp_browser connector, its tests, demo and benchmark.
need_chromium() {
  apt_install chromium chromium chromium-driver
  apt_install chromedriver chromium chromium-driver
}
