//! Helpers for the end-to-end suites: start the real binaries (`ferry-api` on a free port with a
//! fresh data dir, `ferry-sim`, `ferry-worker`), talk to them over HTTP, kill them (gracefully or
//! with SIGKILL) and restart them.
//!
//! The binaries must be built first (`cargo build --workspace`, as `scripts/test` does); they are
//! found beside the test executable, or in `$FERRY_BIN_DIR`.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod api;
pub mod chrome;
pub mod pg;
pub mod procs;
pub mod sim;

pub use api::{ApiOptions, TestApi};
pub use sim::{TestLibSim, TestSim, TestWorker, order_on};

/// An HTTP client for the processes under test. Idle sockets are dropped before actix-web's 5 s
/// keep-alive closes them: a request sent on a socket the server is closing at that moment fails
/// (`IncompleteMessage`) through no fault of the server.
pub fn http_client() -> reqwest::ClientBuilder {
    reqwest::Client::builder().pool_idle_timeout(Duration::from_secs(2))
}

/// The path of one of the workspace's binaries.
pub fn bin(name: &str) -> PathBuf {
    let dir = match std::env::var_os("FERRY_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            // Beside a binary of this crate (target/debug/ferry-torture), or one level up from a
            // test executable (target/debug/deps/e2e-<hash>).
            let exe = std::env::current_exe().expect("executable path");
            let here = exe.parent().expect("target dir").to_path_buf();
            if here.join(name).exists() {
                here
            } else {
                here.parent().expect("target dir").to_path_buf()
            }
        }
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` first (scripts/test does)",
        path.display()
    );
    path
}

/// A loopback port free just now (for a process the test starts on it, or leaves closed to
/// stand for a server that is down), and never handed out before in this test binary: the
/// kernel may give the same free port to two calls in a row, and a fleet test's tenants then
/// shared one (`ferryctl fleet up` refused: "port … is used by two tenants").
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        if GIVEN.lock().expect("lock").insert(port) {
            return port;
        }
    }
}

/// Polls `check` every 20 ms until it returns `Some`, failing the test after `within`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for a child to exit, failing after `within` (the child is then killed).
pub fn wait_exit(child: &mut Child, within: Duration) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process {} did not exit within {within:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a binary to completion with `args` (for `--help` and refusals), with FERRY_* cleared.
pub fn run_to_end(name: &str, args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String) {
    let mut cmd = Command::new(bin(name));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    clear_ferry_env(&mut cmd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn");
    let status = wait_exit(&mut child, Duration::from_secs(20));
    let out = child.wait_with_output().expect("output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (status, text)
}

pub fn clear_ferry_env(cmd: &mut Command) {
    for (k, _) in std::env::vars() {
        if k.starts_with("FERRY_") && k != "FERRY_BIN_DIR" {
            cmd.env_remove(k);
        }
    }
}

/// An order for `Bennys Auto` with the given uniqueid.
pub fn order(uniqueid: &str) -> Value {
    serde_json::json!({
        "uniqueid": uniqueid,
        "workshop": "Bennys Auto",
        "worksheet": "558",
        "product_nr": "10",
        "amount": 5,
    })
}

/// The processes descended from `pid` (children, their children, ...), with their names.
pub fn descendants(pid: u32) -> Vec<(u32, String)> {
    let mut all: Vec<(u32, u32, String)> = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let mut rest = stat[close + 1..].split_whitespace();
        let state = rest.next().unwrap_or("");
        let ppid = rest.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        if state != "Z" {
            all.push((p, ppid, comm));
        }
    }
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for (p, ppid, comm) in &all {
            if *ppid == parent {
                found.push((*p, comm.clone()));
                frontier.push(*p);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    /// Bare `bind(0)` repeats itself here: 5,000 calls gave 4,238 distinct ports, so a thousand
    /// would share some.
    #[test]
    fn a_thousand_free_ports_are_a_thousand_ports() {
        let ports: std::collections::BTreeSet<u16> =
            (0..1000).map(|_| super::free_port()).collect();
        assert_eq!(ports.len(), 1000);
    }
}
