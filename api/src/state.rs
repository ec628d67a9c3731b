//! What every handler shares: the store, the settings, and the api's own life cycle.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::metrics::Metrics;
use crate::shutdown::{Shutdown, Stop};
use crate::store::Store;
use crate::store::record::Job;
use ferry_shared::config::Settings;
use ferry_shared::job::{JobView, Status};
use ferry_shared::protocol::Directive;
use ferry_shared::target::WorkerConfig;

pub struct SourceState {
    pub status: Mutex<Option<ferry_shared::source::SourceStatus>>,
    /// One more per ask. It starts at the api's start time in ms, so it never goes back across
    /// a restart: a worker that saw the old api's count still notices the new api's asks.
    pub requested: std::sync::atomic::AtomicU64,
    /// The ask that was the latest full resync (0: none).
    pub full: std::sync::atomic::AtomicU64,
    /// Polls reported failed in a row (0 after one that succeeded).
    pub failed_in_row: std::sync::atomic::AtomicU64,
    /// Woken when a poll is asked for.
    pub asked: tokio::sync::Notify,
}

impl Default for SourceState {
    fn default() -> Self {
        Self {
            status: Mutex::new(None),
            requested: AtomicU64::new(ferry_shared::now_ms().max(0) as u64),
            full: AtomicU64::new(0),
            failed_in_row: AtomicU64::new(0),
            asked: tokio::sync::Notify::new(),
        }
    }
}

impl SourceState {
    /// Asks the worker's source to poll now (`full`: a full resync); answers the ask's number
    /// and that of the latest full resync.
    pub fn ask(&self, full: bool) -> (u64, u64) {
        let requested = self.requested.fetch_add(1, Ordering::Relaxed) + 1;
        if full {
            self.full.fetch_max(requested, Ordering::Relaxed);
        }
        self.asked.notify_waiters();
        (requested, self.full.load(Ordering::Relaxed))
    }
}

pub struct AppState {
    pub store: Store,
    pub settings: Settings,
    /// What `GET /worker/config` hands the worker (secrets resolved), if a target is configured.
    pub worker_config: Option<WorkerConfig>,
    pub started: Instant,
    pub metrics: Metrics,
    /// Whether and why the api is stopping (see [`crate::shutdown`]).
    pub shutdown: Shutdown,
    /// What the worker's source last reported, and polls asked for by `PUT /source/poll`.
    pub source: SourceState,
    /// When each worker was last heard from (lease, report or heartbeat).
    workers_seen: Mutex<HashMap<String, Instant>>,
    /// Free bytes on the data dir's filesystem when last looked at (`u64::MAX`: unknown).
    pub disk_free: AtomicU64,
    /// The tenant's OAuth2 tokens, when it has `[oauth2]`.
    pub oauth: Option<crate::oauth::OAuth>,
    /// Alerts by e-mail, when it has `[alerts]`.
    pub alerts: Option<crate::alerts::Alerter>,
}

impl AppState {
    pub fn new(
        store: Store,
        settings: Settings,
        worker_config: Option<WorkerConfig>,
        oauth: Option<ferry_shared::oauth2::OAuth2>,
        alerts: Option<crate::alerts::Alerter>,
    ) -> Self {
        let oauth = oauth.map(|cfg| crate::oauth::OAuth::new(cfg, &store));
        Self {
            oauth,
            alerts,
            store,
            settings,
            worker_config,
            started: Instant::now(),
            metrics: Metrics::default(),
            shutdown: Shutdown::default(),
            source: SourceState::default(),
            workers_seen: Mutex::new(HashMap::new()),
            disk_free: AtomicU64::new(u64::MAX),
        }
    }

    /// Free bytes on the data dir's filesystem, when under `disk_warn_mb`.
    pub fn disk_low(&self) -> Option<u64> {
        let free = self.disk_free.load(Ordering::Relaxed);
        (free < self.settings.disk_warn_mb.saturating_mul(1 << 20)).then_some(free)
    }

    /// Intake is refused from now on.
    pub fn stopping(&self) -> bool {
        self.shutdown.is_stopping()
    }

    pub fn directive(&self) -> Directive {
        match self.shutdown.reason() {
            Some(Stop::Pair) => Directive::Exit,
            // The api is going away but will be back: the worker finishes what it holds and
            // waits for it, rather than exiting where no supervisor would start it again.
            Some(Stop::Api) => Directive::Pause,
            None if self.store.worker_running() => Directive::Run,
            None => Directive::Pause,
        }
    }

    /// What holds every waiting job back right now, if anything does.
    pub fn why_waiting(&self) -> Option<&'static str> {
        if self.stopping() {
            Some("the api is stopping")
        } else if !self.store.worker_running() {
            Some("the worker is stopped; PUT /start_worker lets it lease again")
        } else if !self.worker_connected() {
            Some("no worker is connected to deliver it")
        } else {
            None
        }
    }

    /// A job as people see it, saying why it waits when it does.
    pub fn view(&self, job: &Job) -> JobView {
        let mut view = job.view();
        if job.status == Status::Placed {
            let backoff = job
                .due_ms
                .filter(|due| *due > ferry_shared::now_ms())
                .map(|due| format!("its next attempt, due at {}", ferry_shared::rfc3339(due)));
            view.waiting_for = backoff.or_else(|| self.why_waiting().map(String::from));
        }
        view
    }

    /// What connectors say of their targets: the `status:*` connector state values, each
    /// `{note?, until_ms?, gauges?}`. A note is shown until its `until_ms`.
    pub fn connector_status(&self) -> Vec<(String, serde_json::Value)> {
        self.store.states("status:").unwrap_or_default()
    }

    pub fn notes(&self) -> Vec<String> {
        let now = ferry_shared::now_ms();
        self.connector_status()
            .into_iter()
            .filter(|(_, v)| v["until_ms"].as_i64().is_none_or(|u| u > now))
            .filter_map(|(_, v)| v["note"].as_str().map(str::to_string))
            .chain(self.disk_low().map(|free| {
                format!(
                    "the disk is nearly full: {} MiB free for the store (warning under {} MiB)",
                    free >> 20,
                    self.settings.disk_warn_mb
                )
            }))
            .collect()
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
