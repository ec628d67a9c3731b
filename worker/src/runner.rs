//! The worker's life: fetch the connector settings from the api, then lease jobs (long-poll, in
//! batches, never more than `concurrency` delivering and `prefetch` more leased ahead), deliver
//! each, and report outcomes in batches, heartbeating the leases it holds. It obeys the api's
//! directive (`pause` stops leasing, `exit` finishes and exits) and, on a signal, finishes what
//! it holds within a grace period.
//! When the api is unreachable it backs off and tries again, keeping unreported outcomes.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_shared::job::LeaseId;
use ferry_shared::protocol::{
    Directive, HeartbeatRequest, LeaseRequest, LeasedJob, MAX_BODY, MAX_LEASE_MAX, ReportItem,
    ReportRequest,
};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::client::{ApiClient, ClientError};
use crate::connector::Connector;

/// Outcomes sent in one report at most; fewer when their JSON would be over the api's
/// [`MAX_BODY`].
const MAX_REPORT: usize = 512;

#[derive(Debug, Clone)]
pub struct Settings {
    pub api: String,
    pub token: Option<String>,
    pub worker_id: String,
    pub concurrency: usize,
    /// Jobs leased beyond `concurrency`, waiting for a delivery slot (`None`: as many as the
    /// deliveries at once).
    pub prefetch: Option<usize>,
    pub lease_ms: u64,
    /// How long one lease call may wait for work (long-poll).
    pub poll_ms: u64,
    /// After a signal or `exit`, how long in-flight jobs may take to finish and be reported.
    pub grace_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("the api refused the worker")]
    Refused(#[source] ClientError),
    #[error("cannot build the connector's HTTP client")]
    Connector(#[source] reqwest::Error),
}

/// Exponential backoff for calls to an unreachable api: 100 ms doubling to 5 s.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Self(Duration::from_millis(100))
    }
    fn next(&mut self) -> Duration {
        let now = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
        now
    }
}

/// The directive most recently heard from the api.
#[derive(Default)]
struct Heard(AtomicU8);

impl Heard {
    fn set(&self, d: Directive) {
        let v = match d {
            Directive::Run => 0,
            Directive::Pause => 1,
            Directive::Exit => 2,
        };
        self.0.store(v, Ordering::Relaxed);
    }
    fn exit(&self) -> bool {
        self.0.load(Ordering::Relaxed) == 2
    }
}

pub struct Worker {
    api: ApiClient,
    /// The tenant's source, run beside the lease loop, if it pulls its jobs.
    source: Option<ferry_shared::source::Source>,
    connector: Arc<Connector>,
    settings: Settings,
    heard: Arc<Heard>,
    held: Arc<Held>,
}

/// Leases delivered or being delivered whose outcome the api has not yet acknowledged: the
/// heartbeat extends them, and sleeps without a timer while there are none.
#[derive(Default)]
struct Held {
    ids: Mutex<HashSet<LeaseId>>,
    /// Woken when the first lease comes into an empty hand.
    first: tokio::sync::Notify,
}

impl Held {
    fn insert(&self, id: LeaseId) {
        let mut ids = self.ids.lock().expect("lock");
        if ids.is_empty() {
            self.first.notify_one();
        }
        ids.insert(id);
    }

    fn forget(&self, items: &[ReportItem]) {
        let mut ids = self.ids.lock().expect("lock");
        for item in items {
            ids.remove(&item.lease_id);
        }
    }

    fn ids(&self) -> Vec<LeaseId> {
        self.ids.lock().expect("lock").iter().copied().collect()
    }

    fn is_empty(&self) -> bool {
        self.ids.lock().expect("lock").is_empty()
    }
}

impl Worker {
    /// Fetches the connector settings from the api, retrying while it is unreachable. `None`
    /// when `shutdown` fired first.
    pub async fn connect(
        settings: Settings,
        shutdown: &CancellationToken,
    ) -> Result<Option<Self>, WorkerError> {
        let api = ApiClient::new(&settings.api, settings.token.clone());
        let mut backoff = Backoff::new();
        let config = loop {
            match api.config().await {
                Ok(c) => break c,
                Err(e) if e.is_transient() => {
                    tracing::warn!(api = %settings.api, "api not reachable yet; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next()) => {}
                        _ = shutdown.cancelled() => return Ok(None),
                    }
                }
                Err(e) => return Err(WorkerError::Refused(e)),
            }
        };
        tracing::info!(tenant = %config.tenant, target = ?config.target, "connector configured");
        let connector =
            Connector::new(config.target, api.clone()).map_err(WorkerError::Connector)?;
        let mut settings = settings;
        if let Some(most) = connector.deliveries_at_most()
            && most < settings.concurrency
        {
            tracing::info!(
                concurrency = settings.concurrency,
                "the target takes {most} at once: delivering {most} at once"
            );
            settings.concurrency = most;
        }
        Ok(Some(Self {
            source: config.source,
            api,
            connector: Arc::new(connector),
            settings,
            heard: Arc::default(),
            held: Arc::default(),
        }))
    }

    fn lease_request(&self, max: usize, wait_ms: u64) -> LeaseRequest {
        LeaseRequest {
            worker_id: self.settings.worker_id.clone(),
            max: max as u32,
            wait_ms,
            lease_ms: self.settings.lease_ms,
        }
    }

    /// Runs until the api says `exit` or `shutdown` fires, then finishes what it holds.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        // The source stops with the lease loop, whatever stops it.
        let source_stop = shutdown.child_token();
        let _source_guard = source_stop.clone().drop_guard();
        if let Some(source) = self.source.clone() {
            tokio::spawn(crate::source::run(source, self.api.clone(), source_stop));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let grace = Duration::from_millis(self.settings.grace_ms);
        let reporter = tokio::spawn(report_loop(
            self.api.clone(),
            self.settings.worker_id.clone(),
            rx,
            self.heard.clone(),
            self.held.clone(),
        ));
        let beats = CancellationToken::new();
        tokio::spawn(heartbeat_loop(
            self.api.clone(),
            self.settings.clone(),
            self.heard.clone(),
            self.held.clone(),
            beats.clone(),
        ));
        // A job takes a place in hand when it is asked for and a delivery slot when it is
        // delivered: a lease asks for the places free, so jobs wait in hand while every slot is
        // busy, and a slot that frees is taken at once. A drain of 60,000 jobs at 64 slots:
        // 21,448-22,806 jobs/s with no places beyond the slots, 24,391-26,970 with 64 more.
        let prefetch = self.settings.prefetch.unwrap_or(self.settings.concurrency);
        let in_hand = self.settings.concurrency + prefetch;
        let places = Arc::new(Semaphore::new(in_hand));
        let slots = Arc::new(Semaphore::new(self.settings.concurrency));
        let mut backoff = Backoff::new();
        let mut unreachable = false;
        let mut paused = false;
        let ended = loop {
            if shutdown.is_cancelled() {
                break "a signal";
            }
            if self.heard.exit() {
                break "the api's exit directive";
            }
            let first = tokio::select! {
                p = places.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                _ = shutdown.cancelled() => continue,
            };
            let mut permits = vec![first];
            while permits.len() < MAX_LEASE_MAX as usize
                && let Ok(p) = places.clone().try_acquire_owned()
            {
                permits.push(p);
            }
            let lease = self.lease_request(permits.len(), self.settings.poll_ms);
            // A signal ends the poll rather than waiting it out (up to `poll_ms` with no work).
            // Should the api lease jobs in the very moment it is dropped, they return to the
            // queue when those leases expire, as after a crash.
            let leased = tokio::select! {
                answer = self.api.lease(&lease) => answer,
                _ = shutdown.cancelled() => continue,
            };
            let answer = match leased {
                Ok(a) => a,
                Err(e) if e.is_transient() => {
                    if !unreachable {
                        tracing::warn!(error = %e, "api unreachable; retrying with backoff");
                        unreachable = true;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next()) => {}
                        _ = shutdown.cancelled() => {}
                    }
                    continue;
                }
                Err(e) => return Err(WorkerError::Refused(e)),
            };
            if unreachable {
                tracing::info!("api reachable again");
                unreachable = false;
            }
            backoff = Backoff::new();
            self.heard.set(answer.directive);
            if (answer.directive == Directive::Pause) != paused {
                paused = !paused;
                tracing::info!(paused, "worker desired state changed by the api");
            }
            for job in answer.jobs {
                let permit = permits.pop().expect("the api leases no more than asked");
                self.held.insert(job.lease_id);
                let (connector, tx, slots) = (self.connector.clone(), tx.clone(), slots.clone());
                tokio::spawn(async move {
                    let slot = slots.acquire_owned().await.expect("never closed");
                    let item = deliver(&connector, job).await;
                    drop(slot);
                    // The reporter outlives every delivery; a failed send means it was aborted.
                    let _ = tx.send(item);
                    drop(permit);
                });
            }
        };
        tracing::info!("stopping after {ended}: finishing jobs in flight");
        let all = places.acquire_many(in_hand as u32);
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!(
                "grace period over with jobs still in flight; their leases will expire and they \
                 will be leased again"
            );
        }
        drop(tx);
        match tokio::time::timeout(grace, reporter).await {
            Ok(_) => tracing::info!("every outcome reported; exiting"),
            Err(_) => tracing::warn!(
                "could not report every outcome in time; those jobs will be leased again"
            ),
        }
        beats.cancel();
        Ok(())
    }
}

async fn deliver(connector: &Connector, job: LeasedJob) -> ReportItem {
    let (outcome, detail) = connector.deliver(&job).await;
    tracing::debug!(job_id = %job.job_id, attempt = job.attempt, ?outcome, "delivered");
    let mut item = ReportItem {
        job_id: job.job_id,
        lease_id: job.lease_id,
        outcome,
        detail,
    };
    // As the api would keep it: no item is then too large for a report of its own.
    item.clip();
    item
}

/// As many of `results` as fit in one report body, and that body; the others are moved to
/// `rest`. A report of one item is sent whatever its size (a clipped item is a few KiB).
fn fitting(
    worker_id: &str,
    mut results: Vec<ReportItem>,
    rest: &mut Vec<ReportItem>,
) -> (Vec<ReportItem>, Vec<u8>) {
    loop {
        let report = ReportRequest {
            worker_id: worker_id.to_string(),
            results,
        };
        let body = serde_json::to_vec(&report).expect("a report encodes as JSON");
        results = report.results;
        if body.len() <= MAX_BODY || results.len() == 1 {
            return (results, body);
        }
        rest.extend(results.split_off(results.len() / 2));
    }
}

/// Sends outcomes in batches; while the api is unreachable, keeps them and tries again.
async fn report_loop(
    api: ApiClient,
    worker_id: String,
    mut rx: mpsc::UnboundedReceiver<ReportItem>,
    heard: Arc<Heard>,
    held: Arc<Held>,
) {
    let mut pending: Vec<ReportItem> = Vec::new();
    let mut backoff = Backoff::new();
    loop {
        if pending.is_empty() {
            match rx.recv().await {
                Some(item) => pending.push(item),
                None => return,
            }
        }
        while pending.len() < MAX_REPORT {
            match rx.try_recv() {
                Ok(item) => pending.push(item),
                Err(_) => break,
            }
        }
        let (sent, body) = fitting(&worker_id, std::mem::take(&mut pending), &mut pending);
        match api.report(body).await {
            Ok(answer) => {
                backoff = Backoff::new();
                heard.set(answer.directive);
                for ack in answer.results.iter().filter(|a| !a.accepted) {
                    tracing::warn!(
                        job_id = %ack.job_id, error = ?ack.error,
                        "report refused: the job was handed to another attempt"
                    );
                }
                held.forget(&sent);
            }
            Err(e) if e.is_transient() => {
                pending.extend(sent);
                tracing::warn!(error = %e, held = pending.len(), "cannot report yet; retrying");
                tokio::time::sleep(backoff.next()).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "report refused; those jobs will be leased again");
                held.forget(&sent);
            }
        }
    }
}

/// Extends the leases of jobs not yet reported, every third of the lease time. With none in
/// hand it waits for the first rather than waking on a timer (an idle worker's wake-ups are
/// a fleet's idle CPU).
async fn heartbeat_loop(
    api: ApiClient,
    settings: Settings,
    heard: Arc<Heard>,
    held: Arc<Held>,
    stop: CancellationToken,
) {
    let every = Duration::from_millis((settings.lease_ms / 3).max(200));
    loop {
        if held.is_empty() {
            tokio::select! {
                _ = held.first.notified() => {}
                _ = stop.cancelled() => return,
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        let lease_ids = held.ids();
        if lease_ids.is_empty() {
            continue;
        }
        let beat = HeartbeatRequest {
            worker_id: settings.worker_id.clone(),
            lease_ids,
        };
        match api.heartbeat(&beat).await {
            Ok(answer) => {
                heard.set(answer.directive);
                if !answer.lost.is_empty() {
                    tracing::warn!(
                        lost = answer.lost.len(),
                        "leases lost (expired); those jobs go to another attempt"
                    );
                }
            }
            Err(e) => tracing::debug!(error = %e, "heartbeat failed"),
        }
    }
}

/// Connects to the api and runs until `exit` or `shutdown`.
pub async fn run_until_stopped(
    settings: Settings,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    match Worker::connect(settings, &shutdown).await? {
        Some(worker) => worker.run(shutdown).await,
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use ferry_shared::job::JobId;
    use ferry_shared::protocol::{AttemptDetail, Outcome};

    use super::*;

    fn item(excerpt_chars: usize) -> ReportItem {
        ReportItem {
            job_id: JobId::new(),
            lease_id: LeaseId::new(),
            outcome: Outcome::Created {
                target_ref: "L-1".into(),
            },
            detail: AttemptDetail {
                http_status: Some(201),
                excerpt: Some("x".repeat(excerpt_chars)),
                ..AttemptDetail::default()
            },
        }
    }

    #[test]
    fn a_report_too_large_for_one_body_is_split_and_nothing_is_dropped() {
        let all: Vec<ReportItem> = (0..MAX_REPORT).map(|_| item(1_000)).collect();
        let ids: HashSet<LeaseId> = all.iter().map(|i| i.lease_id).collect();
        let (mut pending, mut seen, mut bodies) = (all, HashSet::new(), 0);
        while !pending.is_empty() {
            let (sent, body) = fitting("w", std::mem::take(&mut pending), &mut pending);
            assert!(body.len() <= MAX_BODY, "{} bytes", body.len());
            let decoded: ReportRequest = serde_json::from_slice(&body).unwrap();
            assert_eq!(decoded.results.len(), sent.len());
            seen.extend(sent.iter().map(|i| i.lease_id));
            bodies += 1;
        }
        assert_eq!(seen, ids);
        assert!(bodies > 8, "{bodies} bodies for ~530 KiB");
    }

    #[test]
    fn a_report_that_fits_is_sent_whole() {
        let all: Vec<ReportItem> = (0..10).map(|_| item(10)).collect();
        let mut rest = Vec::new();
        let (sent, _) = fitting("w", all, &mut rest);
        assert_eq!((sent.len(), rest.len()), (10, 0));
    }
}
