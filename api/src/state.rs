//! What every handler shares: the store, the settings, and the api's own life cycle.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use ferry_shared::config::Settings;
use ferry_shared::job::Status;
use ferry_shared::protocol::Directive;
use ferry_shared::target::WorkerConfig;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::store::Store;

/// Why the api stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Stop {
    /// A signal: the api stops, its worker pauses until it is back.
    Api = 1,
    /// `PUT /kill`: the pair stops; the worker is told to exit.
    Pair = 2,
}

pub struct AppState {
    pub store: Store,
    pub settings: Settings,
    /// What `GET /worker/config` hands the worker (secrets resolved), if a target is configured.
    pub worker_config: Option<WorkerConfig>,
    pub started: Instant,
    pub metrics: Metrics,
    /// 0 while running, then a [`Stop`] as `u8`: intake is refused from then on.
    stopping: AtomicU8,
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
            stopping: AtomicU8::new(0),
            stop,
            workers_seen: Mutex::new(HashMap::new()),
        }
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed) != 0
    }

    /// Refuse intake from now on and wake long-polling workers so they hear the directive. A
    /// stop of the pair is never downgraded to a stop of the api alone.
    pub fn begin_stopping(&self, stop: Stop) {
        self.stopping.fetch_max(stop as u8, Ordering::Relaxed);
        self.store.work_notify().notify_waiters();
    }

    pub fn directive(&self) -> Directive {
        match self.stopping.load(Ordering::Relaxed) {
            s if s == Stop::Pair as u8 => Directive::Exit,
            // The api is going away but will be back: the worker finishes what it holds and
            // waits for it, rather than exiting where no supervisor would start it again.
            s if s == Stop::Api as u8 => Directive::Pause,
            _ if self.store.worker_running() => Directive::Run,
            _ => Directive::Pause,
        }
    }

    /// Stops leasing, gives a connected worker up to `kill_grace_ms` to report the jobs it holds
    /// (so none waits for its lease to expire), then stops the server. `begin_stopping` first.
    pub async fn drain_then_stop(&self) {
        // A lease already past its directive check may still be granting jobs: after this,
        // none is, and the processing count includes whatever it granted.
        if let Err(e) = self.store.stop_leasing().await {
            tracing::error!(error = ?e, "could not stop leasing");
        }
        let grace = Duration::from_millis(self.settings.kill_grace_ms);
        let started = Instant::now();
        while started.elapsed() < grace
            && self.store.count(Status::Processing) > 0
            && self.worker_connected()
        {
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::info!("stopping: intake closed, worker released");
        self.stop.cancel();
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
