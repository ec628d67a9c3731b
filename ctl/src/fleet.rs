//! `ferryctl fleet up|down|status TENANTS.toml`: one api+worker pair per active tenant.
//!
//! ```toml
//! data_dir = "./data"   # the tenants' stores (default ./data)
//! run_dir = "./run"     # generated configs, pid files, process output (default ./run)
//!
//! [[tenant]]
//! name = "Bennys Auto"
//! port = 8001
//! active = true         # default true
//! # api_key = "..."     # optional; else ferryctl's --key or FERRY_API_KEY; also the worker's token
//! [tenant.target]
//! kind = "erp_rest"
//! base_url = "http://127.0.0.1:8090"
//! ```
//!
//! Secrets never go to disk: the generated config in `run_dir` holds no key; the api and the
//! worker get theirs in their environment (`FERRY_API_KEY`, `FERRY_WORKER_TOKEN`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{StreamExt, stream};

use anyhow::Context;
use ferry_shared::answer::{Alive, Desired};
use ferry_shared::config::TenantSlug;
use serde::Deserialize;

use crate::client::Api;
use crate::table;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fleet {
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default = "default_run_dir")]
    pub run_dir: PathBuf,
    #[serde(rename = "tenant", default)]
    pub tenants: Vec<Tenant>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tenant {
    pub name: String,
    pub port: u16,
    #[serde(default = "yes")]
    pub active: bool,
    #[serde(default)]
    pub api_key: Option<String>,
    #[serde(default)]
    pub target: Option<toml::Table>,
    /// A `[source]` (LibCal, Teamleader), passed through like the target.
    #[serde(default)]
    pub source: Option<toml::Table>,
    /// `[oauth2]`, for a target or source that takes only OAuth2, passed through likewise.
    #[serde(default)]
    pub oauth2: Option<toml::Table>,
}

fn default_data_dir() -> PathBuf {
    "./data".into()
}
fn default_run_dir() -> PathBuf {
    "./run".into()
}
fn yes() -> bool {
    true
}

impl Fleet {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut fleet: Fleet = toml::from_str(&text)
            .with_context(|| format!("{} is not a tenants file", path.display()))?;
        // A browser tenant's recipe is named relative to the tenants file; the config ferryctl
        // writes for it lives elsewhere.
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        let base = std::path::absolute(dir.unwrap_or(Path::new(".")))?;
        for t in &mut fleet.tenants {
            if let Some(toml::Value::String(recipe)) = t
                .target
                .as_mut()
                .and_then(|target| target.get_mut("recipe"))
                && Path::new(recipe.as_str()).is_relative()
            {
                *recipe = base.join(&*recipe).display().to_string();
            }
        }
        let mut ports = std::collections::HashSet::new();
        for t in &fleet.tenants {
            anyhow::ensure!(
                ports.insert(t.port),
                "port {} is used by two tenants",
                t.port
            );
        }
        Ok(fleet)
    }
}

impl Tenant {
    fn slug(&self) -> String {
        TenantSlug::from_name(&self.name).as_str().to_string()
    }

    /// The tenant's own key, else the one ferryctl was given.
    fn key(&self, given: Option<&str>) -> Option<String> {
        self.api_key
            .clone()
            .or_else(|| given.map(str::to_string))
            .filter(|k| !k.is_empty())
    }

    fn api(&self, given: Option<&str>) -> Api {
        Api::new(&format!("http://127.0.0.1:{}", self.port), self.key(given))
    }
}

/// Tenants `fleet up` starts at a time (each waits for its api and its worker's first contact).
const AT_ONCE_UP: usize = 32;
/// Tenants `fleet down` stops, and `fleet status` asks, at a time.
const AT_ONCE: usize = 64;
/// How long `fleet up` waits for a new worker's first contact with its api.
const FIRST_CONTACT: Duration = Duration::from_secs(10);
/// How long `fleet down` waits for a tenant's processes to exit.
const STOP_WAIT: Duration = Duration::from_secs(40);

/// The directory the ferry binaries are in: `--bin-dir`, or beside ferryctl.
pub fn bin_dir(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| ".".into())
    })
}

fn pid_file(fleet: &Fleet, tenant: &Tenant, what: &str) -> PathBuf {
    fleet.run_dir.join(format!("{}.{what}.pid", tenant.slug()))
}

/// Writes a file only its owner can read (a tenant's target may name hosts and users).
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

/// Whether `pid` is a live process (a zombie is not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .map(|rest| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The last lines a process wrote, for a failure message on the terminal; a backtrace after the
/// error is left out (it says where, not why).
fn tail(out: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    let all: Vec<&str> = text
        .lines()
        .take_while(|l| {
            !l.trim_start()
                .to_lowercase()
                .starts_with("stack backtrace:")
        })
        .filter(|l| !l.trim().is_empty())
        .collect();
    all[all.len().saturating_sub(lines)..].join("\n      ")
}

/// Starts `bin` in its own process group. Secrets come only from `env`: a key in ferryctl's own
/// environment is not inherited by a tenant that has another (or none).
fn spawn(bin: &Path, args: &[String], env: &[(&str, &str)], out: &Path) -> anyhow::Result<u32> {
    use std::os::unix::process::CommandExt;
    let log = std::fs::File::create(out)?;
    let mut cmd = Command::new(bin);
    cmd.env_remove("FERRY_API_KEY")
        .env_remove("FERRY_WORKER_TOKEN")
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: a Ctrl-C meant for a later ferryctl does not reach the fleet.
        .process_group(0);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    Ok(child.id())
}

pub async fn up(fleet: &Fleet, bins: &Path, key: Option<&str>) -> anyhow::Result<()> {
    std::fs::create_dir_all(&fleet.run_dir)?;
    // Inherited by every process started here: each api then starts once, not twice (see
    // `small_pages_only` in ferry-api's `main.rs`).
    rustix::thread::disable_transparent_huge_pages(true).ok();
    let active: Vec<&Tenant> = fleet.tenants.iter().filter(|t| t.active).collect();
    println!(
        "starting {} active tenant(s), {} at a time",
        active.len(),
        AT_ONCE_UP
    );
    let mut failed = 0;
    let mut starts = stream::iter(
        active
            .iter()
            .enumerate()
            .map(|(i, t)| async move { (i, t, start(fleet, t, bins, key).await) }),
    )
    .buffer_unordered(AT_ONCE_UP);
    while let Some((i, t, started)) = starts.next().await {
        let line = format!(
            "  [{}/{}] {} on :{} ...",
            i + 1,
            active.len(),
            t.name,
            t.port
        );
        match started {
            Ok(note) => println!("{line} {note}"),
            Err(e) => {
                failed += 1;
                println!("{line} FAILED: {e:#}");
            }
        }
    }
    println!();
    status(fleet, key).await?;
    anyhow::ensure!(failed == 0, "{failed} tenant(s) did not start");
    Ok(())
}

async fn start(
    fleet: &Fleet,
    t: &Tenant,
    bins: &Path,
    given: Option<&str>,
) -> anyhow::Result<String> {
    let api = t.api(given);
    if api.is_up().await {
        return Ok("already up".into());
    }
    let slug = t.slug();
    let mut config = toml::Table::new();
    config.insert("workshop".into(), t.name.clone().into());
    config.insert("port".into(), i64::from(t.port).into());
    config.insert(
        "data_dir".into(),
        fleet.data_dir.display().to_string().into(),
    );
    if let Some(target) = &t.target {
        config.insert("target".into(), target.clone().into());
    }
    if let Some(source) = &t.source {
        config.insert("source".into(), source.clone().into());
    }
    if let Some(oauth2) = &t.oauth2 {
        config.insert("oauth2".into(), oauth2.clone().into());
    }
    let config_path = fleet.run_dir.join(format!("{slug}.toml"));
    write_private(&config_path, &config.to_string())?;
    let key = t.key(given);
    let key_env: Vec<(&str, &str)> = key
        .as_deref()
        .map(|k| vec![("FERRY_API_KEY", k)])
        .unwrap_or_default();
    let api_out = fleet.run_dir.join(format!("{slug}.api.out"));
    let api_pid = spawn(
        &bins.join("ferry-api"),
        &["--config".into(), config_path.display().to_string()],
        &key_env,
        &api_out,
    )?;
    std::fs::write(pid_file(fleet, t, "api"), api_pid.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !api.is_up().await {
        anyhow::ensure!(
            alive(api_pid),
            "ferry-api exited:\n      {}\n    (all of it in {})",
            tail(&api_out, 5),
            api_out.display()
        );
        anyhow::ensure!(
            Instant::now() < deadline,
            "ferry-api did not answer in 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let token_env: Vec<(&str, &str)> = key
        .as_deref()
        .map(|k| vec![("FERRY_WORKER_TOKEN", k)])
        .unwrap_or_default();
    let worker_out = fleet.run_dir.join(format!("{slug}.worker.out"));
    let worker_pid = spawn(
        &bins.join("ferry-worker"),
        &["--api".into(), api.base.clone()],
        &token_env,
        &worker_out,
    )?;
    std::fs::write(pid_file(fleet, t, "worker"), worker_pid.to_string())?;
    // Up means delivering: wait for the worker's first contact, or say why there is none.
    let deadline = Instant::now() + FIRST_CONTACT;
    loop {
        let heard = api
            .get::<Alive>("/alive")
            .await
            .is_ok_and(|a| a.worker.last_seen_ms_ago.is_some());
        if heard {
            return Ok(format!("up (api pid {api_pid}, worker pid {worker_pid})"));
        }
        anyhow::ensure!(
            alive(worker_pid),
            "ferry-worker exited at start:\n      {}\n    (all of it in {})",
            tail(&worker_out, 5),
            worker_out.display()
        );
        if Instant::now() >= deadline {
            return Ok(format!(
                "up, worker starting (api pid {api_pid}, worker pid {worker_pid}; no contact in {} s)",
                FIRST_CONTACT.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn down(fleet: &Fleet, key: Option<&str>) -> anyhow::Result<()> {
    // Active tenants, and inactive ones still running (made inactive after they were started).
    let mut running = Vec::new();
    for t in &fleet.tenants {
        let pids: Vec<u32> = ["api", "worker"]
            .iter()
            .filter_map(|w| read_pid(&pid_file(fleet, t, w)))
            .filter(|p| alive(*p))
            .collect();
        if t.active || !pids.is_empty() {
            running.push((t, pids));
        }
    }
    println!(
        "stopping {} tenant(s), {} at a time",
        running.len(),
        AT_ONCE
    );
    let mut stuck = 0;
    let n = running.len();
    let mut stops = stream::iter(
        running
            .iter()
            .enumerate()
            .map(|(i, (t, pids))| async move { (i, t, stop(fleet, t, pids, key).await) }),
    )
    .buffer_unordered(AT_ONCE);
    while let Some((i, t, stopped)) = stops.next().await {
        let line = format!("  [{}/{}] {} ...", i + 1, n, t.name);
        match stopped {
            Ok(note) => println!("{line} {note}"),
            Err(why) => {
                stuck += 1;
                println!("{line} {why}");
            }
        }
    }
    anyhow::ensure!(stuck == 0, "{stuck} tenant(s) did not stop");
    Ok(())
}

/// Stops one tenant: `PUT /kill` (or SIGTERM to processes that no longer answer), then waits for
/// its processes to exit. `Err` says why it did not stop.
async fn stop(
    fleet: &Fleet,
    t: &Tenant,
    pids: &[u32],
    key: Option<&str>,
) -> Result<&'static str, String> {
    let api = t.api(key);
    if let Err(e) = api.put::<serde::de::IgnoredAny>("/kill").await {
        if api.is_up().await {
            // It answers but refuses (a wrong key): waiting would not change that.
            return Err(format!("not stopped: PUT /kill was refused: {e:#}"));
        }
        if pids.is_empty() {
            return Ok("not running");
        }
        // Not answering: its processes get SIGTERM, the same graceful path.
        for pid in pids {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    }
    // The worker finishes what it holds and reports; the api then flushes and exits.
    let deadline = Instant::now() + STOP_WAIT;
    while pids.iter().any(|p| alive(*p)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
    if !left.is_empty() {
        return Err(format!(
            "still running after {} s (pids {left:?}); see {}",
            STOP_WAIT.as_secs(),
            fleet.run_dir.display()
        ));
    }
    for w in ["api", "worker"] {
        let _ = std::fs::remove_file(pid_file(fleet, t, w));
    }
    Ok("stopped")
}

/// The columns of `fleet status` and of the fleet page.
pub const SURVEY: [&str; 8] = [
    "TENANT",
    "PORT",
    "API",
    "WORKER",
    "QUEUE",
    "ERROR",
    "OLDEST WAITING",
    "LAST DELIVERY",
];

pub async fn status(fleet: &Fleet, key: Option<&str>) -> anyhow::Result<()> {
    let rows = survey(fleet, key).await;
    println!("{}", table::render(&SURVEY, &rows));
    Ok(())
}

/// One row per tenant, [`SURVEY`]'s columns, from every active tenant's `/alive` (asked at
/// once, a few dozen at a time).
pub async fn survey(fleet: &Fleet, key: Option<&str>) -> Vec<Vec<String>> {
    let now = ferry_shared::now_ms();
    let mut rows = Vec::new();
    // Every tenant is asked at once (a few dozen at a time), in the file's order.
    let answers: Vec<Option<anyhow::Result<Alive>>> =
        stream::iter(fleet.tenants.iter().map(|t| async move {
            match t.active {
                true => Some(t.api(key).get::<Alive>("/alive").await),
                false => None,
            }
        }))
        .buffered(AT_ONCE)
        .collect()
        .await;
    for (t, answer) in fleet.tenants.iter().zip(answers) {
        let mut row = vec![t.name.clone(), t.port.to_string()];
        let Some(answer) = answer else {
            row.extend(["inactive".into()]);
            rows.push(row);
            continue;
        };
        match answer {
            Err(_) => row.push("down".into()),
            Ok(a) => {
                let never_heard = a.worker.last_seen_ms_ago.is_none();
                let worker = match (a.worker.desired, a.worker.connected) {
                    (Desired::Running, true) => "running",
                    // Just started: its worker has not spoken yet.
                    (Desired::Running, false) if never_heard && a.uptime_s < 30 => "starting",
                    (Desired::Running, false) if never_heard => "no-worker",
                    (Desired::Running, false) => "disconnected",
                    (Desired::Stopped, _) => "stopped",
                };
                let api_state = match (a.stopping, a.store_ok) {
                    (true, _) => "stopping",
                    // The store refuses intake until space comes back.
                    (false, false)
                        if a.store_problem
                            .as_deref()
                            .is_some_and(|p| p.starts_with("DISK_FULL")) =>
                    {
                        "disk-full"
                    }
                    (false, false) => "store-failed",
                    (false, true) => "up",
                };
                let oldest = a.oldest_waiting_s.map_or("-".into(), table::human_secs);
                let last = a
                    .last_delivery_at
                    .as_deref()
                    .and_then(chrono_ms)
                    .map_or("-".into(), |ms| {
                        format!("{} ago", table::human_secs((now - ms) / 1000))
                    });
                row.extend([
                    api_state.into(),
                    worker.into(),
                    (a.queue.placed + a.queue.processing).to_string(),
                    a.queue.error.to_string(),
                    oldest,
                    last,
                ]);
            }
        }
        rows.push(row);
    }
    rows
}

/// Milliseconds of an RFC 3339 time as the api writes it.
fn chrono_ms(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_configs_are_readable_by_their_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("ferryctl-mode-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.toml");
        write_private(&path, "workshop = \"s\"\n").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn api_times_parse_to_milliseconds() {
        assert_eq!(chrono_ms("1970-01-01T00:00:01.500Z"), Some(1_500));
        assert_eq!(
            chrono_ms("2026-11-23T18:05:06.745Z"),
            Some(1_795_457_106_745)
        );
    }

    #[test]
    fn the_example_tenants_file_parses_with_its_library_and_browser_tenants() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/tenants.example.toml");
        let fleet = Fleet::load(&path).unwrap();
        let library = fleet
            .tenants
            .iter()
            .find(|t| t.name == "Gelman Library")
            .unwrap();
        assert_eq!(
            library.source.as_ref().unwrap()["kind"].as_str(),
            Some("libcal")
        );
        assert_eq!(
            library.target.as_ref().unwrap()["kind"].as_str(),
            Some("passagepoint")
        );
        // A recipe named relative to the tenants file is found from anywhere.
        let web = fleet
            .tenants
            .iter()
            .find(|t| t.name == "Web Garage")
            .unwrap();
        let recipe = web.target.as_ref().unwrap()["recipe"].as_str().unwrap();
        assert!(Path::new(recipe).is_absolute(), "{recipe}");
        assert!(Path::new(recipe).exists(), "{recipe}");
    }

    #[test]
    fn a_tenants_file_parses_and_refuses_shared_ports() {
        let dir = std::env::temp_dir().join(format!("ferryctl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tenants.toml");
        std::fs::write(
            &file,
            "[[tenant]]\nname = \"A\"\nport = 8001\n[tenant.target]\nkind = \"erp_rest\"\nbase_url = \"http://x\"\n[[tenant]]\nname = \"B\"\nport = 8002\nactive = false\n",
        )
        .unwrap();
        let fleet = Fleet::load(&file).unwrap();
        assert_eq!(fleet.tenants.len(), 2);
        assert!(fleet.tenants[0].active && !fleet.tenants[1].active);
        std::fs::write(
            &file,
            "[[tenant]]\nname = \"A\"\nport = 1\n[[tenant]]\nname = \"B\"\nport = 1\n",
        )
        .unwrap();
        assert!(
            Fleet::load(&file)
                .unwrap_err()
                .to_string()
                .contains("port 1")
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
