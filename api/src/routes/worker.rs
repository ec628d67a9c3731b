//! The worker protocol: `POST /worker/lease` (batch, long-poll), `/worker/report` (batch),
//! `/worker/heartbeat`. Guarded by the worker token.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use ferry_shared::protocol::{
    HeartbeatRequest, HeartbeatResponse, LeaseRequest, LeaseResponse, MAX_LEASE_MAX, MAX_LEASE_MS,
    MAX_WAIT_MS, MIN_LEASE_MS, ReportRequest, ReportResponse,
};

use super::{ok, resource};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/worker/lease").route(web::post().to(lease)))
        .service(resource("/worker/report").route(web::post().to(report)))
        .service(resource("/worker/heartbeat").route(web::post().to(heartbeat)))
        .service(resource("/worker/config").route(web::get().to(config)));
}

/// The connector settings: the worker needs only its api's URL and token.
async fn config(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    match &state.worker_config {
        Some(c) => Ok(ok(StatusCode::OK, "worker config", c)),
        None => Err(ApiError::NotFound {
            code: "NO_TARGET",
            detail: "this tenant has no [target] configured; add one to its config file".into(),
        }),
    }
}

fn check_worker_id(id: &str) -> Result<(), ApiError> {
    if id.trim().is_empty() || id.len() > 128 {
        return Err(ApiError::field("worker_id", "must be 1 to 128 characters"));
    }
    Ok(())
}

async fn lease(
    state: web::Data<AppState>,
    body: web::Json<LeaseRequest>,
) -> Result<HttpResponse, ApiError> {
    let req = body.into_inner();
    check_worker_id(&req.worker_id)?;
    if !(1..=MAX_LEASE_MAX).contains(&req.max) {
        return Err(ApiError::field(
            "max",
            format!("must be between 1 and {MAX_LEASE_MAX}"),
        ));
    }
    if !(MIN_LEASE_MS..=MAX_LEASE_MS).contains(&req.lease_ms) {
        return Err(ApiError::field(
            "lease_ms",
            format!("must be between {MIN_LEASE_MS} and {MAX_LEASE_MS}"),
        ));
    }
    if req.wait_ms > MAX_WAIT_MS {
        return Err(ApiError::field(
            "wait_ms",
            format!("must be at most {MAX_WAIT_MS}"),
        ));
    }
    state.saw_worker(&req.worker_id);
    // At most half a lease: a worker heartbeats every third of one, so if it dies while this poll
    // is parked, the poll ends before the leases it held expire, and cannot take those jobs.
    let wait_ms = req.wait_ms.min(req.lease_ms / 2);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
    loop {
        // Registered before looking, so work placed in between still wakes us.
        let notified = state.store.work_notify().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let directive = state.directive();
        let (jobs, next_due_ms) = if directive == ferry_shared::protocol::Directive::Exit {
            (Vec::new(), None)
        } else {
            state
                .store
                .lease(req.worker_id.clone(), req.max, req.lease_ms)
                .await?
        };
        let now = tokio::time::Instant::now();
        if !jobs.is_empty()
            || now >= deadline
            || directive == ferry_shared::protocol::Directive::Exit
        {
            state.saw_worker(&req.worker_id);
            let n = jobs.len();
            state.metrics.leased(n);
            return Ok(ok(
                StatusCode::OK,
                format!("{n} job(s) leased"),
                LeaseResponse {
                    jobs,
                    directive: state.directive(),
                },
            ));
        }
        let mut wake = deadline;
        if let Some(due) = next_due_ms {
            let in_ms = (due - ferry_shared::now_ms()).max(1) as u64;
            wake = wake.min(now + Duration::from_millis(in_ms));
        }
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep_until(wake) => {}
            _ = state.stop.cancelled() => {}
        }
    }
}

async fn report(
    state: web::Data<AppState>,
    body: web::Json<ReportRequest>,
) -> Result<HttpResponse, ApiError> {
    let req = body.into_inner();
    check_worker_id(&req.worker_id)?;
    state.saw_worker(&req.worker_id);
    let summary = Metrics::summarize(&req.results);
    let results = state.store.report(req.worker_id, req.results).await?;
    state.metrics.reported(summary, &results);
    let refused = results.iter().filter(|r| !r.accepted).count();
    Ok(ok(
        StatusCode::OK,
        format!("{} accepted, {refused} refused", results.len() - refused),
        ReportResponse {
            results,
            directive: state.directive(),
        },
    ))
}

async fn heartbeat(
    state: web::Data<AppState>,
    body: web::Json<HeartbeatRequest>,
) -> Result<HttpResponse, ApiError> {
    let req = body.into_inner();
    check_worker_id(&req.worker_id)?;
    state.saw_worker(&req.worker_id);
    let (extended, lost) = state.store.heartbeat(req.worker_id, req.lease_ids).await?;
    Ok(ok(
        StatusCode::OK,
        format!("{} extended, {} lost", extended.len(), lost.len()),
        HeartbeatResponse {
            extended,
            lost,
            directive: state.directive(),
        },
    ))
}
