//! A tenant's source (LibCal for a library): `PUT /source/poll` asks its worker to poll now;
//! the worker waits for such asks (`POST /worker/source/wait`) and reports each poll
//! (`POST /worker/source/status`), which `/alive` and `/metrics` show.

use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use ferry_shared::answer::SourcePolls;
use ferry_shared::envelope::{ErrorCode, Failure, Success};
use ferry_shared::protocol::{MAX_WAIT_MS, SourceWait};
use ferry_shared::source::SourceStatus;
use ferry_shared::strict::Object;
use serde::Deserialize;
use utoipa::IntoParams;

use super::ok;
use super::openapi::JsonBodyFailures;
use crate::error::ApiError;
use crate::state::AppState;

fn no_source(state: &AppState) -> Result<(), ApiError> {
    match state.settings.source {
        Some(_) => Ok(()),
        None => Err(ApiError::NotFound {
            code: ErrorCode::NoSource,
            detail: "this tenant has no [source] configured".into(),
        }),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PollParams {
    /// A full resync: every record again, not only those changed since the last poll (a
    /// `teamleader` source; a `libcal` source always reads every booking).
    full: Option<bool>,
}

/// Polls the source now.
///
/// Asks the tenant's worker to poll its source (LibCal, Teamleader) at once instead of at its
/// next tick. `/alive` shows the poll's outcome when it is done.
#[utoipa::path(
    put,
    path = "/source/poll",
    tag = "management",
    params(PollParams),
    responses(
        (status = 200, description = "Asked; `data.requested` is this ask's number.", body = Success<SourcePolls>),
        (status = 400, description = "`INVALID_QUERY`: `full` is not `true` or `false`.", body = Failure),
        (status = 404, description = "`NO_SOURCE`: the tenant has no `[source]`.", body = Failure),
    ),
)]
pub(super) async fn poll(
    state: web::Data<AppState>,
    params: web::Query<PollParams>,
) -> Result<HttpResponse, ApiError> {
    no_source(&state)?;
    let (requested, full) = state.source.ask(params.full.unwrap_or(false));
    let message = if state.worker_connected() {
        "asked the worker to poll now"
    } else {
        "asked; no worker is connected to poll"
    };
    Ok(ok(StatusCode::OK, message, SourcePolls { requested, full }))
}

/// Waits for a poll to be asked for.
///
/// Answers when more polls have been asked for than `seen`, or after `wait_ms` (at most 60 s).
#[utoipa::path(
    post,
    path = "/worker/source/wait",
    tag = "worker",
    security(("worker_token" = []), ("worker_bearer" = [])),
    request_body = SourceWait,
    responses(
        (status = 200, description = "Polls asked for so far.", body = Success<SourcePolls>),
        JsonBodyFailures,
    ),
)]
pub(super) async fn wait(
    state: web::Data<AppState>,
    body: web::Json<Object<SourceWait>>,
) -> Result<HttpResponse, ApiError> {
    let SourceWait { seen, wait_ms } = body.into_inner().0;
    if wait_ms > MAX_WAIT_MS {
        return Err(ApiError::field(
            "wait_ms",
            format!("must be at most {MAX_WAIT_MS}"),
        ));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
    loop {
        let asked = state.source.asked.notified();
        let requested = state.source.requested.load(Ordering::Relaxed);
        let full = state.source.full.load(Ordering::Relaxed);
        if requested > seen
            || tokio::time::Instant::now() >= deadline
            || state.shutdown.is_stopping()
        {
            return Ok(ok(
                StatusCode::OK,
                "polls asked",
                SourcePolls { requested, full },
            ));
        }
        tokio::select! {
            _ = asked => {}
            _ = tokio::time::sleep_until(deadline) => {}
            // The api is stopping: answer now, so the server's graceful stop need not wait.
            _ = state.shutdown.server_stopping() => {}
        }
    }
}

/// Reports a poll of the source.
///
/// What the worker's last poll found, or why it failed; `/alive` and `/metrics` show it.
#[utoipa::path(
    post,
    path = "/worker/source/status",
    tag = "worker",
    security(("worker_token" = []), ("worker_bearer" = [])),
    request_body = SourceStatus,
    responses(
        (status = 200, description = "Kept.", body = Success<SourceStatus>),
        JsonBodyFailures,
    ),
)]
pub(super) async fn status(
    state: web::Data<AppState>,
    body: web::Json<Object<SourceStatus>>,
) -> Result<HttpResponse, ApiError> {
    let status = body.into_inner().0;
    if status
        .last_poll_at
        .as_deref()
        .is_some_and(|t| !ferry_shared::is_rfc3339(t))
    {
        return Err(ApiError::field(
            "last_poll_at",
            "must be an RFC 3339 date-time",
        ));
    }
    if let Some(e) = &status.last_error {
        tracing::warn!(error = %e, polls_failed = status.polls_failed, "source poll failed");
        state.source.failed_in_row.fetch_add(1, Ordering::Relaxed);
    } else {
        state.source.failed_in_row.store(0, Ordering::Relaxed);
    }
    if let Ok(mut kept) = state.source.status.lock() {
        *kept = Some(status.clone());
    }
    Ok(ok(StatusCode::OK, "kept", status))
}
