//! `GET /alive` for the management system, and `PUT /kill`, the graceful stop of the pair.

use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use ferry_shared::job::Status;
use serde_json::json;

use super::{ok, resource};
use crate::error::ApiError;
use crate::metrics::Snapshot;
use crate::state::AppState;
use crate::store::StoreError;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/alive").route(web::get().to(alive)))
        .service(resource("/kill").route(web::put().to(kill)))
        .service(resource("/metrics").route(web::get().to(metrics)));
}

pub fn counts_json(state: &AppState) -> serde_json::Value {
    let counts = state.store.counts();
    let mut map = serde_json::Map::new();
    for st in Status::ALL {
        map.insert(st.as_str().into(), counts[st.index()].into());
    }
    serde_json::Value::Object(map)
}

async fn alive(state: web::Data<AppState>) -> HttpResponse {
    let running = state.store.worker_running();
    let st = state.clone();
    let oldest = web::block(move || st.store.oldest_waiting_ms())
        .await
        .ok()
        .and_then(Result::ok)
        .flatten();
    let now = ferry_shared::now_ms();
    let data = json!({
        "tenant": state.settings.workshop,
        "slug": state.settings.slug().as_str(),
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": state.started.elapsed().as_secs(),
        "stopping": state.stopping(),
        "store_ok": !state.store.failed(),
        "worker": {
            "desired": if running { "running" } else { "stopped" },
            "running": running,
            "connected": state.worker_connected(),
            "last_seen_ms_ago": state.last_worker_contact().map(|d| d.as_millis() as u64),
        },
        "queue": counts_json(&state),
        "oldest_waiting_s": oldest.map(|created| (now - created).max(0) / 1000),
        "last_delivery_at": state.metrics.last_delivery_ms().map(ferry_shared::rfc3339),
    });
    ok(StatusCode::OK, "alive", data)
}

/// Prometheus text: jobs by status, intake and delivery counters, latency, queue depth, the
/// oldest waiting job, whether a worker is connected, target errors by reason code.
async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let st = state.clone();
    let oldest = web::block(move || st.store.oldest_waiting_ms())
        .await
        .map_err(|_| ApiError::Store(StoreError::Closed))??;
    let snapshot = Snapshot {
        tenant: state.settings.slug().as_str().to_string(),
        counts: state.store.counts(),
        oldest_waiting_s: oldest
            .map(|created| (ferry_shared::now_ms() - created).max(0) as f64 / 1000.0),
        worker_connected: state.worker_connected(),
    };
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render(&snapshot)))
}

/// Answers first, then stops: intake is refused at once, a connected worker is told to exit and
/// given `kill_grace_ms` to hand back what it holds, then the server finishes in-flight requests,
/// the store flushes and the process exits 0.
async fn kill(state: web::Data<AppState>) -> HttpResponse {
    state.begin_stopping();
    let grace = Duration::from_millis(state.settings.kill_grace_ms);
    let st = state.clone();
    actix_web::rt::spawn(async move {
        // A lease already past its directive check may still be granting jobs: after this,
        // none is, and the processing count includes whatever it granted.
        if let Err(e) = st.store.stop_leasing().await {
            tracing::error!(error = ?e, "could not stop leasing");
        }
        let started = Instant::now();
        while started.elapsed() < grace
            && st.store.count(Status::Processing) > 0
            && st.worker_connected()
        {
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::info!("stopping: intake closed, worker released");
        st.stop.cancel();
    });
    ok(
        StatusCode::ACCEPTED,
        "stopping: intake refused, the worker is told to finish and exit",
        json!({ "stopping": true }),
    )
}
