//! `Proc`: one child process of a test, its output captured in a file (never a pipe that could
//! fill and block it), killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::{bin, clear_ferry_env, wait_exit};

pub struct Proc {
    child: Option<Child>,
    out: PathBuf,
}

impl Proc {
    /// Starts binary `name` with `args` and `env` (FERRY_* cleared first), output to `out`.
    pub fn spawn(name: &str, args: &[String], env: &[(String, String)], out: &Path) -> Self {
        let file = std::fs::File::create(out).expect("output file");
        let mut cmd = Command::new(bin(name));
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup"))
            .stderr(file);
        clear_ferry_env(&mut cmd);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self {
            child: Some(cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"))),
            out: out.to_path_buf(),
        }
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Waits for `<what> listening on <host>:<port>` in the output; answers the port.
    pub fn wait_listening(&mut self, what: &str) -> u16 {
        let needle = format!("{what} listening on ");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = self.output();
            if let Some(port) = log
                .lines()
                .find_map(|l| l.split(&needle).nth(1))
                .and_then(|rest| rest.split(':').nth(1))
                .and_then(|p| {
                    // Plain or inside a JSON log line: the digits after the colon.
                    let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
                    digits.parse().ok()
                })
            {
                return port;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("{what} exited during start-up ({status}):\n{log}");
            }
            assert!(Instant::now() < deadline, "{what} did not start:\n{log}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("process running");
        wait_exit(&mut child, within)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}
