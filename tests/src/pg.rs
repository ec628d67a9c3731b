//! `TestPg`: a throwaway PostgreSQL cluster (Debian's `postgresql` package) in a temporary
//! directory, on a free loopback port, stopped and removed when dropped. Queried with `psql`,
//! as a person checking the synced tables would.
//!
//! PostgreSQL refuses to run as root: under root the cluster is owned by, and run as, the
//! `postgres` user the package creates (`setpriv`, so the pid kept is the server's own).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct TestPg {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// `fsync` on (the benchmark) or off (the tests: a throwaway cluster need not survive a
    /// power cut, and the tests run faster).
    durable: bool,
}

/// The directory of the newest installed PostgreSQL's server binaries.
pub fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p)
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// `program` as a command, run as `postgres` when this process is root.
fn as_owner(program: &Path) -> Command {
    if is_root() {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--clear-groups",
            "--",
        ])
        .arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

impl TestPg {
    /// A new cluster, started; superuser `ferry` (trust auth on loopback), database `postgres`.
    pub fn start(durable: bool) -> Self {
        let bin = bin_dir().expect(
            "PostgreSQL is not installed: scripts/test installs it (apt-get install postgresql)",
        );
        let dir = tempfile::Builder::new()
            .prefix("ferry-pg-")
            .tempdir()
            .expect("temp dir");
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown the cluster's directory to postgres");
        }
        let out = as_owner(&bin.join("initdb"))
            .arg("-D")
            .arg(dir.path().join("data"))
            .args([
                "-U",
                "ferry",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .stdin(Stdio::null())
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = Self {
            port: crate::free_port(),
            dir,
            child: None,
            durable,
        };
        pg.run();
        pg
    }

    /// Starts the server (again) on the same data and port, and waits until it answers.
    pub fn run(&mut self) {
        assert!(self.child.is_none(), "already running");
        let bin = bin_dir().expect("PostgreSQL");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .expect("log file");
        let mut cmd = as_owner(&bin.join("postgres"));
        cmd.arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.path().display()
            ))
            .args(["-c", "max_connections=40"]);
        if !self.durable {
            cmd.args(["-c", "fsync=off", "-c", "synchronous_commit=off"]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("start postgres");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.try_query("postgres", "select 1").is_err() {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not answer within 30 s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server (fast shutdown: open transactions roll back), waiting for it to exit.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal(child.id(), "INT");
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.wait();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// `postgresql://ferry@127.0.0.1:<port>/<db>`
    pub fn url(&self, db: &str) -> String {
        format!("postgresql://ferry@127.0.0.1:{}/{db}", self.port)
    }

    /// A new, empty database.
    pub fn create_db(&self, db: &str) {
        self.query("postgres", &format!("create database {db}"));
    }

    /// Runs `sql` with psql; answers its rows, `|`-separated, or the error.
    pub fn try_query(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "ferry",
            ])
            .args([
                "-d",
                db,
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .env("PGCONNECT_TIMEOUT", "5")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    pub fn query(&self, db: &str, sql: &str) -> String {
        self.try_query(db, sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
}

impl Drop for TestPg {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Immediate shutdown: the data is thrown away anyway.
            signal(child.id(), "QUIT");
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
