//! `GET /alive` for the management system, and `PUT /kill`, the graceful stop of the pair.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use ferry_shared::answer::{Alive, Desired, Stopping, WorkerStatus};
use ferry_shared::envelope::Success;
use ferry_shared::job::Counts;

use super::ok;
use crate::metrics::Snapshot;
use crate::shutdown::{self, Stop};
use crate::state::AppState;
use crate::store::Health;

/// When the oldest waiting job was created; `None` when none waits, or when the store cannot be
/// read just now (it is reopening after a full disk): the probes answer all the same.
async fn oldest_waiting(state: &web::Data<AppState>) -> Option<i64> {
    let st = state.clone();
    web::block(move || st.store.oldest_waiting_ms())
        .await
        .ok()
        .and_then(Result::ok)
        .flatten()
}

fn counts(state: &AppState) -> Counts {
    Counts::from_indexed(state.store.counts())
}

/// Whether this tenant's pair is healthy.
///
/// The management system polls it: queue counts, the worker's state, the oldest waiting job.
#[utoipa::path(
    get,
    path = "/alive",
    tag = "management",
    security(()),
    responses(
        (status = 200, description = "The api is up; `data` says how the pair is doing.", body = Success<Alive>),
        (status = 503, description = "The store refuses writes (`store_problem` says why: the disk is full, or a failed write the api stops for); the same body.", body = Success<Alive>),
    ),
)]
pub(super) async fn alive(state: web::Data<AppState>) -> HttpResponse {
    let running = state.store.worker_running();
    let oldest = oldest_waiting(&state).await;
    let now = ferry_shared::now_ms();
    let health = state.store.health();
    let data = Alive {
        tenant: state.settings.workshop.clone(),
        slug: state.settings.slug().as_str().to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_s: state.started.elapsed().as_secs(),
        stopping: state.stopping(),
        store_ok: health == Health::Ok,
        store_problem: health.describe().map(String::from),
        worker: WorkerStatus {
            desired: Desired::from_running(running),
            running,
            connected: state.worker_connected(),
            last_seen_ms_ago: state.last_worker_contact().map(|d| d.as_millis() as u64),
        },
        queue: counts(&state),
        oldest_waiting_s: oldest.map(|created| (now - created).max(0) / 1000),
        waiting_for: oldest.and_then(|_| state.why_waiting()).map(String::from),
        oauth: state.oauth.as_ref().map(|o| o.status()),
        last_delivery_at: state.metrics.last_delivery_ms().map(ferry_shared::rfc3339),
        notes: state.notes(),
        source: state.settings.source.as_ref().map(|_| {
            state
                .source
                .status
                .lock()
                .map(|s| s.clone().unwrap_or_default())
                .unwrap_or_default()
        }),
    };
    // A probe or a load balancer acts on the status; the body is the same.
    let status = match health {
        Health::Ok => StatusCode::OK,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    ok(status, "alive", data)
}

/// Metrics for Prometheus.
///
/// Jobs by status, intake and delivery counters, delivery latency, queue depth, the oldest
/// waiting job, whether a worker is connected, target errors by reason code.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "management",
    security(()),
    responses((
        status = 200,
        description = "Prometheus text exposition (version 0.0.4), labelled by tenant.",
        body = String,
        content_type = "text/plain; version=0.0.4; charset=utf-8",
    )),
)]
pub(super) async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let oldest = oldest_waiting(&state).await;
    let snapshot = Snapshot {
        tenant: state.settings.slug().as_str().to_string(),
        counts: state.store.counts(),
        oldest_waiting_s: oldest
            .map(|created| (ferry_shared::now_ms() - created).max(0) as f64 / 1000.0),
        worker_connected: state.worker_connected(),
        gauges: state
            .connector_status()
            .into_iter()
            .flat_map(|(_, v)| {
                v["gauges"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter_map(|(k, g)| Some((k.clone(), g.as_f64()?)))
                    .collect::<Vec<_>>()
            })
            .collect(),
        source: state
            .settings
            .source
            .as_ref()
            .and_then(|_| state.source.status.lock().ok()?.clone()),
        store_health: state.store.health(),
        store_refusals: Health::REFUSALS.map(|h| (h, state.store.refused(h))),
        oauth: state.oauth.as_ref().map(|o| {
            use std::sync::atomic::Ordering::Relaxed;
            (
                o.status().needs_consent,
                o.refreshes.load(Relaxed),
                o.refresh_failures.load(Relaxed),
            )
        }),
        disk_free_bytes: Some(state.disk_free.load(std::sync::atomic::Ordering::Relaxed))
            .filter(|b| *b != u64::MAX),
        disk_low: state.disk_low().is_some(),
    };
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render(&snapshot))
}

/// Stops the pair gracefully.
///
/// Answers first, then stops: intake is refused at once, a connected worker is told to exit and
/// given `kill_grace_ms` to hand back what it holds, then the server finishes in-flight requests,
/// the store flushes and the process exits 0.
#[utoipa::path(
    put,
    path = "/kill",
    tag = "management",
    responses(
        (status = 200, description = "Stopping: intake is refused from now on.", body = Success<Stopping>),
    ),
)]
pub(super) async fn kill(state: web::Data<AppState>) -> HttpResponse {
    shutdown::begin(&state, Stop::Pair);
    // 200, not 202: the original service's documented contract, which deployed managers check.
    ok(
        StatusCode::OK,
        "stopping: intake refused, the worker is told to finish and exit",
        Stopping { stopping: true },
    )
}
