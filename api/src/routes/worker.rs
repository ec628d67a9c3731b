//! The worker protocol: `POST /worker/lease` (batch, long-poll), `/worker/report` (batch),
//! `/worker/heartbeat`. Guarded by the worker token.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use ferry_shared::envelope::{ErrorCode, Failure, Success};
use ferry_shared::protocol::{
    HeartbeatRequest, HeartbeatResponse, LeaseRequest, LeaseResponse, LeasedJob, MAX_LEASE_MAX,
    MAX_LEASE_MS, MAX_WAIT_MS, MIN_LEASE_MS, ReportRequest, ReportResponse,
};
use ferry_shared::strict::Object;
use ferry_shared::target::WorkerConfig;

use super::ok;
use super::openapi::JsonBodyFailures;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::state::AppState;

/// Where and how the worker delivers.
///
/// The connector settings, so the worker needs only its api's URL and token. Secrets are
/// resolved and in the clear.
#[utoipa::path(
    get,
    path = "/worker/config",
    tag = "worker",
    security(("worker_token" = []), ("worker_bearer" = [])),
    responses(
        (status = 200, description = "Where and how to deliver.", body = Success<WorkerConfig>),
        (status = 404, description = "`NO_TARGET`: the tenant has no `[target]` configured.", body = Failure),
    ),
)]
pub(super) async fn config(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    match &state.worker_config {
        Some(c) => Ok(ok(StatusCode::OK, "worker config", c)),
        None => Err(ApiError::NotFound {
            code: ErrorCode::NoTarget,
            detail: "this tenant has no [target] configured; add one to its config file".into(),
        }),
    }
}

fn check_worker_id(id: &str) -> Result<(), ApiError> {
    if id.trim().is_empty() || id.chars().count() > 128 {
        return Err(ApiError::field("worker_id", "must be 1 to 128 characters"));
    }
    Ok(())
}

/// Leases jobs to the worker.
///
/// Up to `max` waiting jobs, each for `lease_ms`. With none ready, waits up to `wait_ms` (at
/// most half of `lease_ms`) for work to arrive. The answer's `directive` says whether to go on
/// (`run`), hold off (`pause`) or finish and exit (`exit`).
#[utoipa::path(
    post,
    path = "/worker/lease",
    tag = "worker",
    security(("worker_token" = []), ("worker_bearer" = [])),
    request_body = LeaseRequest,
    responses(
        (status = 200, description = "The jobs leased (perhaps none) and the directive.", body = Success<LeaseResponse>),
        JsonBodyFailures,
    ),
)]
pub(super) async fn lease(
    state: web::Data<AppState>,
    body: web::Json<Object<LeaseRequest>>,
) -> Result<HttpResponse, ApiError> {
    let req = body.into_inner().0;
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
    let leased = |jobs: Vec<LeasedJob>| {
        state.saw_worker(&req.worker_id);
        let n = jobs.len();
        state.metrics.leased(n);
        ok(
            StatusCode::OK,
            format!("{n} job(s) leased"),
            LeaseResponse {
                jobs,
                directive: state.directive(),
            },
        )
    };
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
            return Ok(leased(jobs));
        }
        let mut wake = deadline;
        if let Some(due) = next_due_ms {
            let in_ms = (due - ferry_shared::now_ms()).max(1) as u64;
            wake = wake.min(now + Duration::from_millis(in_ms));
        }
        // Parked with the writer, the lease is served in the group that places new work. Any
        // other wake-up takes it back (or, when the writer has taken it, waits for its answer)
        // and looks again.
        let mut parked = state
            .store
            .park_lease(req.worker_id.clone(), req.max, req.lease_ms);
        let served = tokio::select! {
            served = parked.served() => Some(served),
            _ = notified => None,
            _ = tokio::time::sleep_until(wake) => None,
            _ = state.shutdown.server_stopping() => None,
        };
        let served = match served {
            Some(served) => Some(served),
            None => parked.withdraw().await,
        };
        if let Some(served) = served {
            let (jobs, _) = served?;
            if !jobs.is_empty() {
                return Ok(leased(jobs));
            }
        }
    }
}

/// Reports how delivery attempts ended.
///
/// A report on a lease that expired is refused per job (`STALE_LEASE`), so a newer attempt is
/// never overwritten. Once accepted, the job's new status is on disk.
#[utoipa::path(
    post,
    path = "/worker/report",
    tag = "worker",
    security(("worker_token" = []), ("worker_bearer" = [])),
    request_body = ReportRequest,
    responses(
        (status = 200, description = "Per job: accepted or refused, and the directive.", body = Success<ReportResponse>),
        JsonBodyFailures,
    ),
)]
pub(super) async fn report(
    state: web::Data<AppState>,
    body: web::Json<Object<ReportRequest>>,
) -> Result<HttpResponse, ApiError> {
    let req = body.into_inner().0;
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

/// Extends the worker's leases.
///
/// Extends those it still holds and names those it has lost.
#[utoipa::path(
    post,
    path = "/worker/heartbeat",
    tag = "worker",
    security(("worker_token" = []), ("worker_bearer" = [])),
    request_body = HeartbeatRequest,
    responses(
        (status = 200, description = "Leases extended and lost, and the directive.", body = Success<HeartbeatResponse>),
        JsonBodyFailures,
    ),
)]
pub(super) async fn heartbeat(
    state: web::Data<AppState>,
    body: web::Json<Object<HeartbeatRequest>>,
) -> Result<HttpResponse, ApiError> {
    let req = body.into_inner().0;
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
