//! What every handler shares: the store, the settings, and the api's own life cycle.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ferry_shared::config::Settings;
use ferry_shared::protocol::Directive;
use ferry_shared::target::WorkerConfig;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::store::Store;

pub struct AppState {
    pub store: Store,
    pub settings: Settings,
    /// What `GET /worker/config` hands the worker (secrets resolved), if a target is configured.
    pub worker_config: Option<WorkerConfig>,
    pub started: Instant,
    pub metrics: Metrics,
    /// Set by `PUT /kill` or a signal: intake is refused and workers are told to exit.
    stopping: AtomicBool,
    /// Fired when the HTTP server should stop (after the worker has handed back its jobs).
    pub stop: CancellationToken,
    /// When each worker was last heard from (lease, report or heartbeat).
    workers_seen: Mutex<HashMap<String, Instant>>,
}

impl AppState {
    pub fn new(
        store: Store,
        settings: Settings,
        worker_config: Option<WorkerConfig>,
        stop: CancellationToken,
    ) -> Self {
        Self {
            store,
            settings,
            worker_config,
            started: Instant::now(),
            metrics: Metrics::default(),
            stopping: AtomicBool::new(false),
            stop,
            workers_seen: Mutex::new(HashMap::new()),
        }
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Refuse intake from now on and wake long-polling workers so they hear `exit`.
    pub fn begin_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.store.work_notify().notify_waiters();
    }

    pub fn directive(&self) -> Directive {
        if self.stopping() {
            Directive::Exit
        } else if self.store.worker_running() {
            Directive::Run
        } else {
            Directive::Pause
        }
    }

    pub fn saw_worker(&self, worker_id: &str) {
        if let Ok(mut seen) = self.workers_seen.lock() {
            match seen.get_mut(worker_id) {
                Some(at) => *at = Instant::now(),
                None => {
                    seen.insert(worker_id.to_string(), Instant::now());
                }
            }
        }
    }

    /// How long ago the most recently heard-from worker spoke, if any did.
    pub fn last_worker_contact(&self) -> Option<Duration> {
        let seen = self.workers_seen.lock().ok()?;
        seen.values().map(Instant::elapsed).min()
    }

    pub fn worker_connected(&self) -> bool {
        self.last_worker_contact()
            .is_some_and(|d| d <= Duration::from_millis(self.settings.worker_seen_ms))
    }
}
