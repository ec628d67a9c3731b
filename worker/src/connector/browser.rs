//! The browser behind the `erp_browser` connector: one `chromedriver` the worker starts and
//! supervises, and up to `concurrency` headless Chromium sessions through it, each logged in once
//! and reused job after job.
//!
//! Nothing runs while there is no work: chromedriver and the first browser start with the first
//! job; a session unused for `idle_secs` is closed, and chromedriver stops with the last one (with
//! `idle_secs = 0` every job gets a fresh browser, as the original integration did). A
//! chromedriver that died is started again for the next job; a session whose browser crashed is
//! dropped.
//!
//! chromedriver runs under a small `sh` watchdog in a process group of its own: when the worker
//! goes away, even by `kill -9` (which leaves no chance to clean up), the watchdog sees it within
//! half a second and kills the group, chromedriver and its browsers with it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use ferry_shared::target::ErpBrowser;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::process::{Child, Command};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long chromedriver may take to listen.
const DRIVER_START: Duration = Duration::from_secs(20);
/// How often idle sessions are looked for.
const REAP_EVERY: Duration = Duration::from_millis(500);

/// Chromium's flags: headless, no sandbox (the worker may run as root in a container), and
/// nothing that reaches out to Google's services on its own.
const CHROMIUM_ARGS: [&str; 10] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--window-size=1280,1024",
];

/// A browser session, logged in (or not yet) to the ERP.
pub struct Session {
    pub client: Client,
    /// Whose credentials it is logged in with, if it is.
    pub logged_in_as: Option<String>,
    last_used: Instant,
}

/// A session lent to one job, with its place among the `concurrency` allowed.
pub struct Lent {
    pub session: Session,
    _permit: OwnedSemaphorePermit,
}

struct Driver {
    child: Child,
    url: String,
}

pub struct Browser {
    cfg: ErpBrowser,
    slots: Arc<Semaphore>,
    driver: tokio::sync::Mutex<Option<Driver>>,
    idle: Mutex<Vec<Session>>,
    /// Sessions open, idle or lent.
    open: std::sync::atomic::AtomicUsize,
}

/// The browser could not be reached or started: retried, after the driver is restarted.
#[derive(Debug)]
pub struct Broken(pub String);

impl Browser {
    pub fn new(cfg: ErpBrowser) -> Arc<Self> {
        let browser = Arc::new(Self {
            slots: Arc::new(Semaphore::new(cfg.concurrency as usize)),
            cfg,
            driver: tokio::sync::Mutex::new(None),
            idle: Mutex::new(Vec::new()),
            open: Default::default(),
        });
        let weak = Arc::downgrade(&browser);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REAP_EVERY).await;
                let Some(browser) = weak.upgrade() else {
                    return;
                };
                browser.reap().await;
            }
        });
        browser
    }

    /// A session for one job: an idle one, or a new one while fewer than `concurrency` are open.
    pub async fn lend(&self) -> Result<Lent, Broken> {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Broken("the browser is shutting down".into()))?;
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let session = match idle {
            Some(s) => s,
            None => self.start_session().await?,
        };
        Ok(Lent {
            session,
            _permit: permit,
        })
    }

    /// Takes a session back after a job: kept for the next one, or closed when `healthy` is
    /// false (its browser crashed) or no session is to outlive its job (`idle_secs = 0`).
    pub async fn give_back(&self, lent: Lent, healthy: bool) {
        let Lent {
            mut session,
            _permit,
        } = lent;
        if healthy && self.cfg.idle_secs > 0 {
            session.last_used = Instant::now();
            self.idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(session);
            return;
        }
        self.close(session).await;
        if !healthy {
            self.check_driver().await;
        }
    }

    /// Browsers open now (for tests and the benchmark's memory figures, through the log).
    pub fn open_sessions(&self) -> usize {
        self.open.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn start_session(&self) -> Result<Session, Broken> {
        let url = self.driver_url().await?;
        let caps = serde_json::json!({
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "timeouts": { "pageLoad": self.cfg.page_timeout_ms, "script": 10_000, "implicit": 0 },
            "goog:chromeOptions": { "binary": self.cfg.chromium, "args": CHROMIUM_ARGS },
        });
        let caps = match caps {
            serde_json::Value::Object(m) => m,
            _ => unreachable!("a JSON object literal"),
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&url)
            .await
            .map_err(|e| Broken(format!("cannot start a browser session: {e}")))?;
        self.open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(open = self.open_sessions(), "browser session started");
        Ok(Session {
            client,
            logged_in_as: None,
            last_used: Instant::now(),
        })
    }

    async fn close(&self, session: Session) {
        // A crashed browser may not answer; closing must not hold the job up.
        let _ = tokio::time::timeout(Duration::from_secs(5), session.client.close()).await;
        let left = self
            .open
            .fetch_update(
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
                |n| Some(n.saturating_sub(1)),
            )
            .map_or(0, |n| n.saturating_sub(1));
        tracing::info!(open = left, "browser session closed");
        if left == 0 {
            self.stop_driver().await;
        }
    }

    /// Closes the sessions idle for `idle_secs`.
    async fn reap(&self) {
        let max_idle = Duration::from_secs(self.cfg.idle_secs);
        let stale: Vec<Session> = {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            let (stale, kept) = idle
                .drain(..)
                .partition(|s: &Session| s.last_used.elapsed() >= max_idle);
            *idle = kept;
            stale
        };
        for session in stale {
            self.close(session).await;
        }
    }

    /// chromedriver's URL, starting it when it is not running.
    async fn driver_url(&self) -> Result<String, Broken> {
        let mut driver = self.driver.lock().await;
        if let Some(d) = driver.as_mut() {
            match d.child.try_wait() {
                Ok(None) => return Ok(d.url.clone()),
                _ => tracing::warn!("chromedriver is gone; starting it again"),
            }
        }
        let port =
            free_port().map_err(|e| Broken(format!("no free port for chromedriver: {e}")))?;
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("ferry-chromedriver")
            .arg(&self.cfg.chromedriver)
            .arg(port.to_string())
            .arg(std::process::id().to_string())
            .process_group(0)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Broken(format!("cannot start {}: {e}", self.cfg.chromedriver)))?;
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            if started.elapsed() > DRIVER_START {
                return Err(Broken("chromedriver did not start listening".into()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tracing::info!(pid = child.id(), %url, "chromedriver started");
        *driver = Some(Driver {
            child,
            url: url.clone(),
        });
        Ok(url)
    }

    /// After a crash: forget a chromedriver that has died, so the next job starts one.
    async fn check_driver(&self) {
        let mut driver = self.driver.lock().await;
        if let Some(d) = driver.as_mut()
            && !matches!(d.child.try_wait(), Ok(None))
        {
            tracing::warn!("chromedriver died; the next job starts it again");
            // Sessions through the dead driver are dead too.
            self.idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
            self.open.store(0, std::sync::atomic::Ordering::Relaxed);
            *driver = None;
        }
    }

    async fn stop_driver(&self) {
        if let Some(d) = self.driver.lock().await.take() {
            kill_group(d.child);
            tracing::info!("chromedriver stopped: no browser is open");
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(d) = self.driver.get_mut().take() {
            kill_group(d.child);
        }
    }
}

/// Runs chromedriver (`$1`, on port `$2`) while the worker (`$3`) lives; then ends the process
/// group: chromedriver and every browser it started.
const WATCHDOG: &str = r#""$1" --port="$2" & driver=$!
while kill -0 "$3" 2>/dev/null && kill -0 "$driver" 2>/dev/null; do sleep 0.5; done
kill -KILL 0"#;

/// Kills the watchdog's process group (its pid is the group's id).
fn kill_group(child: Child) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .status();
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
