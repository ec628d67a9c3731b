//! Prometheus metrics for one tenant, kept in memory (counters start at zero with the process, as
//! Prometheus expects) and rendered as text by `GET /metrics`. Every series carries the tenant.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use ferry_shared::job::JobKind;
use ferry_shared::job::Status;
use ferry_shared::protocol::{Outcome, ReportAck, ReportItem};

/// Upper bounds (seconds) of the delivery latency histogram's buckets.
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// How `POST /create` answered.
#[derive(Debug, Clone, Copy)]
pub enum Intake {
    Created,
    Duplicate,
    Conflict,
    Refused,
}

#[derive(Default)]
pub struct Metrics {
    /// By kind (`JobKind::ALL` order), then by [`Intake`].
    intake: [[AtomicU64; 4]; JobKind::ALL.len()],
    /// created, retry, failed
    deliveries: [AtomicU64; 3],
    leased: AtomicU64,
    /// When a delivery was last reported created (ms since the epoch; 0: never since start).
    last_delivery_ms: AtomicU64,
    expired: AtomicU64,
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_ms: AtomicU64,
    target_errors: Mutex<BTreeMap<String, u64>>,
    /// Reported outcomes per minute, the last hour's (the dashboard's chart).
    minutes: Mutex<std::collections::VecDeque<Minute>>,
}

/// What was reported in one minute: jobs created, ended in `error`, and sent back to wait.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, utoipa::ToSchema)]
pub struct Minute {
    /// The minute's start, ms since the epoch.
    pub at_ms: i64,
    pub created: u64,
    pub failed: u64,
    pub retried: u64,
}

/// One report item as the metrics count it: outcome (created, retry, failed), reason, duration.
pub struct Reported {
    slot: usize,
    reason: Option<String>,
    duration_ms: Option<u64>,
}

/// What the renderer needs from the rest of the api at scrape time.
pub struct Snapshot {
    pub tenant: String,
    pub counts: [u64; 5],
    pub oldest_waiting_s: Option<f64>,
    pub worker_connected: bool,
    /// Gauges connectors report of their targets (`alma_api_remaining`, say).
    pub gauges: Vec<(String, f64)>,
    /// The source's last report, for a tenant that has a source.
    pub source: Option<ferry_shared::source::SourceStatus>,
    pub store_health: crate::store::Health,
    /// Commands the store refused, by the health that refused them.
    pub store_refusals: [(crate::store::Health, u64); 2],
    pub disk_free_bytes: Option<u64>,
    /// Free space is under `disk_warn_mb`.
    pub disk_low: bool,
    /// For a tenant with `[oauth2]`: whether consent is needed, token calls, failed ones.
    pub oauth: Option<(bool, u64, u64)>,
}

impl Metrics {
    pub fn intake(&self, kind: JobKind, what: Intake) {
        self.intake[kind as usize][what as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// When a delivery was last reported created, since this process started.
    pub fn last_delivery_ms(&self) -> Option<i64> {
        match self.last_delivery_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(ms as i64),
        }
    }

    pub fn leased(&self, n: usize) {
        self.leased.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn expired(&self, n: u64) {
        self.expired.fetch_add(n, Ordering::Relaxed);
    }

    /// What the metrics need of a report's items, taken before the items go to the store.
    pub fn summarize(items: &[ReportItem]) -> Vec<Reported> {
        items
            .iter()
            .map(|item| {
                let (slot, reason) = match &item.outcome {
                    Outcome::Created { .. } => (0, None),
                    Outcome::Retry { reason_code, .. } | Outcome::Wait { reason_code, .. } => {
                        (1, Some(reason_code.clone()))
                    }
                    Outcome::Failed { reason_code, .. } => (2, Some(reason_code.clone())),
                };
                Reported {
                    slot,
                    reason,
                    duration_ms: item.detail.duration_ms,
                }
            })
            .collect()
    }

    /// Counts a report's outcomes (created, failed, sent back to wait) in this minute.
    fn minute(&self, [created, failed, retried]: [u64; 3]) {
        if created + failed + retried == 0 {
            return;
        }
        let Ok(mut minutes) = self.minutes.lock() else {
            return;
        };
        let at_ms = ferry_shared::now_ms() / 60_000 * 60_000;
        if minutes.back().is_none_or(|m| m.at_ms != at_ms) {
            minutes.push_back(Minute {
                at_ms,
                ..Minute::default()
            });
            while minutes.len() > 60 {
                minutes.pop_front();
            }
        }
        if let Some(m) = minutes.back_mut() {
            m.created += created;
            m.failed += failed;
            m.retried += retried;
        }
    }

    /// The last hour's minutes, oldest first, every minute present (empty ones as zeros).
    pub fn last_hour(&self) -> Vec<Minute> {
        let now = ferry_shared::now_ms() / 60_000 * 60_000;
        let kept = self.minutes.lock().map(|m| m.clone()).unwrap_or_default();
        (0..60)
            .rev()
            .map(|back| {
                let at_ms = now - back * 60_000;
                kept.iter()
                    .find(|m| m.at_ms == at_ms)
                    .copied()
                    .unwrap_or(Minute {
                        at_ms,
                        ..Minute::default()
                    })
            })
            .collect()
    }

    /// Counts the accepted results of a report.
    pub fn reported(&self, summary: Vec<Reported>, acks: &[ReportAck]) {
        use ferry_shared::job::Status;
        let mut minute = [0u64; 3];
        for (item, ack) in summary.into_iter().zip(acks) {
            if !ack.accepted {
                continue;
            }
            let Reported {
                slot,
                reason,
                duration_ms,
            } = item;
            self.deliveries[slot].fetch_add(1, Ordering::Relaxed);
            minute[match ack.status {
                Some(Status::Created) => 0,
                Some(Status::Error) => 1,
                _ => 2,
            }] += 1;
            if slot == 0 {
                let now = ferry_shared::now_ms().max(0) as u64;
                self.last_delivery_ms.fetch_max(now, Ordering::Relaxed);
            }
            if let Some(code) = reason
                && let Ok(mut errors) = self.target_errors.lock()
            {
                *errors.entry(code).or_default() += 1;
            }
            if let Some(ms) = duration_ms {
                let secs = ms as f64 / 1000.0;
                for (bound, bucket) in BUCKETS.iter().zip(&self.latency_buckets) {
                    if secs <= *bound {
                        bucket.fetch_add(1, Ordering::Relaxed);
                    }
                }
                self.latency_count.fetch_add(1, Ordering::Relaxed);
                self.latency_sum_ms.fetch_add(ms, Ordering::Relaxed);
            }
        }
        self.minute(minute);
    }

    pub fn render(&self, snap: &Snapshot) -> String {
        let t = escape(&snap.tenant);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::with_capacity(4096);

        header(
            &mut out,
            "ferry_jobs",
            "gauge",
            "Jobs in the store by status.",
        );
        for st in Status::ALL {
            let labels = format!("tenant=\"{t}\",status=\"{}\"", st.as_str());
            sample(&mut out, "ferry_jobs", &labels, snap.counts[st.index()]);
        }
        let tenant = format!("tenant=\"{t}\"");
        let depth = snap.counts[Status::Placed.index()] + snap.counts[Status::Processing.index()];
        let single: [(&str, &str, &str, String); 5] = [
            (
                "ferry_queue_depth",
                "gauge",
                "Jobs waiting or in flight.",
                depth.to_string(),
            ),
            (
                "ferry_oldest_waiting_seconds",
                "gauge",
                "Age of the oldest job waiting to be leased (0 when none waits).",
                format!("{:.3}", snap.oldest_waiting_s.unwrap_or(0.0)),
            ),
            (
                "ferry_worker_connected",
                "gauge",
                "1 when a worker was heard from recently.",
                u8::from(snap.worker_connected).to_string(),
            ),
            (
                "ferry_attempts_total",
                "counter",
                "Delivery attempts (jobs leased).",
                load(&self.leased).to_string(),
            ),
            (
                "ferry_retries_total",
                "counter",
                "Attempts to be tried again: retry outcomes and expired leases.",
                (load(&self.deliveries[1]) + load(&self.expired)).to_string(),
            ),
        ];
        for (name, kind, help, value) in single {
            header(&mut out, name, kind, help);
            sample(&mut out, name, &tenant, value);
        }
        let store: [(&str, &str, &str, String); 2] = [
            (
                "ferry_store_refusing_writes",
                "gauge",
                "1 while the store refuses writes (the disk is full, or a failed write the api stops for).",
                u8::from(snap.store_health != crate::store::Health::Ok).to_string(),
            ),
            (
                "ferry_disk_low",
                "gauge",
                "1 while free space on the data dir's filesystem is under disk_warn_mb.",
                u8::from(snap.disk_low).to_string(),
            ),
        ];
        for (name, kind, help, value) in store {
            header(&mut out, name, kind, help);
            sample(&mut out, name, &tenant, value);
        }
        if let Some(free) = snap.disk_free_bytes {
            header(
                &mut out,
                "ferry_disk_free_bytes",
                "gauge",
                "Free space on the data dir's filesystem.",
            );
            sample(&mut out, "ferry_disk_free_bytes", &tenant, free);
        }
        header(
            &mut out,
            "ferry_store_refusals_total",
            "counter",
            "Store commands refused, by reason (DISK_FULL: intake while the disk is full; STORE_FAILED: everything after a write of unknown outcome).",
        );
        for (health, n) in snap.store_refusals {
            let labels = format!("{tenant},reason=\"{}\"", health.code().unwrap_or(""));
            sample(&mut out, "ferry_store_refusals_total", &labels, n);
        }
        if !snap.gauges.is_empty() {
            header(
                &mut out,
                "ferry_target_gauge",
                "gauge",
                "What the connector last heard from its target, by name (alma_api_remaining: Alma calls left today).",
            );
            for (name, value) in &snap.gauges {
                let labels = format!("{tenant},name=\"{}\"", escape(name));
                sample(&mut out, "ferry_target_gauge", &labels, value);
            }
        }
        if let Some(s) = &snap.source {
            let source: [(&str, &str, &str, u64); 4] = [
                (
                    "ferry_source_polls_total",
                    "counter",
                    "Polls of the source by the current worker.",
                    s.polls,
                ),
                (
                    "ferry_source_polls_failed_total",
                    "counter",
                    "Polls of the source that failed.",
                    s.polls_failed,
                ),
                (
                    "ferry_source_bookings_seen",
                    "gauge",
                    "Bookings the last poll found.",
                    s.bookings_seen,
                ),
                (
                    "ferry_source_last_poll_ok",
                    "gauge",
                    "1 when the last poll succeeded.",
                    u64::from(s.polls > 0 && s.last_error.is_none()),
                ),
            ];
            for (name, kind, help, value) in source {
                header(&mut out, name, kind, help);
                sample(&mut out, name, &tenant, value);
            }
        }

        if let Some((needs_consent, calls, failed)) = snap.oauth {
            let oauth: [(&str, &str, &str, u64); 3] = [
                (
                    "ferry_oauth_consent_required",
                    "gauge",
                    "1 when no OAuth2 token is usable: a person must consent at /oauth/start.",
                    u64::from(needs_consent),
                ),
                (
                    "ferry_oauth_token_calls_total",
                    "counter",
                    "Calls to the OAuth2 token endpoint (refreshes, client credentials).",
                    calls,
                ),
                (
                    "ferry_oauth_token_failures_total",
                    "counter",
                    "Token calls refused or failed.",
                    failed,
                ),
            ];
            for (name, kind, help, value) in oauth {
                header(&mut out, name, kind, help);
                sample(&mut out, name, &tenant, value);
            }
        }
        header(
            &mut out,
            "ferry_intake_total",
            "counter",
            "Answers to POST /create (kind order_line), POST /bookings (kind booking) and POST /worker/records (kind records).",
        );
        for kind in JobKind::ALL {
            for (i, result) in ["created", "duplicate", "conflict", "refused"]
                .iter()
                .enumerate()
            {
                let labels = format!("{tenant},kind=\"{}\",result=\"{result}\"", kind.as_str());
                sample(
                    &mut out,
                    "ferry_intake_total",
                    &labels,
                    load(&self.intake[kind as usize][i]),
                );
            }
        }
        header(
            &mut out,
            "ferry_deliveries_total",
            "counter",
            "Reported delivery outcomes.",
        );
        for (i, outcome) in ["created", "retry", "failed"].iter().enumerate() {
            let labels = format!("{tenant},outcome=\"{outcome}\"");
            sample(
                &mut out,
                "ferry_deliveries_total",
                &labels,
                load(&self.deliveries[i]),
            );
        }
        let name = "ferry_target_errors_total";
        header(&mut out, name, "counter", "Target failures by reason code.");
        if let Ok(errors) = self.target_errors.lock() {
            for (code, n) in errors.iter() {
                sample(
                    &mut out,
                    name,
                    &format!("{tenant},reason_code=\"{}\"", escape(code)),
                    n,
                );
            }
        }
        let name = "ferry_delivery_duration_seconds";
        header(
            &mut out,
            name,
            "histogram",
            "Time one delivery attempt took at the target.",
        );
        let bucket = format!("{name}_bucket");
        for (bound, n) in BUCKETS.iter().zip(&self.latency_buckets) {
            sample(
                &mut out,
                &bucket,
                &format!("{tenant},le=\"{bound}\""),
                load(n),
            );
        }
        let count = load(&self.latency_count);
        sample(&mut out, &bucket, &format!("{tenant},le=\"+Inf\""), count);
        let sum = format!("{:.3}", load(&self.latency_sum_ms) as f64 / 1000.0);
        sample(&mut out, &format!("{name}_sum"), &tenant, sum);
        sample(&mut out, &format!("{name}_count"), &tenant, count);
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "{name}{{{labels}}} {value}");
}

/// A label value as Prometheus text wants it.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
