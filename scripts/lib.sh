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
