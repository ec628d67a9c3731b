//! Upstream intake and job inspection: `POST /create`, `GET /get_order_status`,
//! `GET /check_order_status`, `GET /jobs/{id}`, `GET /jobs/{id}/log`, `PUT /jobs/{id}/retry`.

use actix_web::http::StatusCode;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::{HttpRequest, HttpResponse, web};
use ferry_shared::job::{EventView, JobId};
use ferry_shared::validate::{CreateError, parse_create};
use serde::Deserialize;
use serde_json::json;

use super::{MAX_BODY, ok, resource};
use crate::error::ApiError;
use crate::metrics::Intake;
use crate::state::AppState;
use crate::store::record::Job;
use crate::store::{CreateOutcome, RetryOutcome};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/create").route(web::post().to(create)))
        .service(resource("/get_order_status").route(web::get().to(order_status)))
        .service(resource("/check_order_status").route(web::get().to(order_status)))
        .service(resource("/jobs/{id}").route(web::get().to(job)))
        .service(resource("/jobs/{id}/log").route(web::get().to(job_log)))
        .service(resource("/jobs/{id}/retry").route(web::put().to(retry)));
}

/// Reads the body ourselves (not `web::Json`): the deployed client sends a JSON string holding
/// the object, and every refusal must still be the envelope.
async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    if state.stopping() {
        return Err(ApiError::ShuttingDown);
    }
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
    {
        return Err(ApiError::UnsupportedMediaType(format!(
            "the body must be JSON (Content-Type: application/json), not '{content_type}'"
        )));
    }
    let body = payload
        .to_bytes_limited(MAX_BODY)
        .await
        .map_err(|_| ApiError::PayloadTooLarge(MAX_BODY))?
        .map_err(|e| ApiError::BadRequest {
            code: "BAD_BODY",
            detail: format!("the body could not be read: {e}"),
        })?;
    let order = parse_create(&body, &state.settings.workshop).map_err(|e| match e {
        CreateError::Malformed(detail) => ApiError::BadRequest {
            code: "MALFORMED_JSON",
            detail,
        },
        CreateError::Fields(fields) => ApiError::Validation(fields),
    })?;
    let uniqueid = order.uniqueid.clone();
    match state.store.create(order).await? {
        CreateOutcome::New(job) => {
            state.metrics.intake(Intake::Created);
            tracing::debug!(job_id = %job.id, %uniqueid, "job placed");
            Ok(ok(StatusCode::CREATED, "job placed", job.view()))
        }
        CreateOutcome::Duplicate(job) => {
            state.metrics.intake(Intake::Duplicate);
            Ok(ok(
                StatusCode::OK,
                "already placed: this uniqueid is known with the same order",
                job.view(),
            ))
        }
        CreateOutcome::Conflict(job) => {
            state.metrics.intake(Intake::Conflict);
            Err(ApiError::Conflict {
                code: "UNIQUEID_CONFLICT",
                detail: format!(
                    "uniqueid '{uniqueid}' is already used by job {} with a different order",
                    job.id
                ),
            })
        }
        CreateOutcome::QueueFull => {
            state.metrics.intake(Intake::Refused);
            tracing::warn!(
                max_queue = state.settings.max_queue,
                "intake refused: queue full"
            );
            Err(ApiError::QueueFull)
        }
    }
}

#[derive(Debug, Deserialize)]
struct StatusParams {
    uniqueid: Option<String>,
    unique_id: Option<String>,
}

async fn order_status(
    state: web::Data<AppState>,
    params: web::Query<StatusParams>,
) -> Result<HttpResponse, ApiError> {
    let p = params.into_inner();
    let Some(uniqueid) = p.uniqueid.or(p.unique_id).filter(|u| !u.trim().is_empty()) else {
        return Err(ApiError::field("uniqueid", "is required"));
    };
    let job = state
        .store
        .job_by_uniqueid(uniqueid.trim())?
        .ok_or_else(|| ApiError::job_not_found(format_args!("with uniqueid '{uniqueid}'")))?;
    Ok(ok(StatusCode::OK, job.status.as_str(), job.view()))
}

fn load(state: &AppState, id: &str) -> Result<Job, ApiError> {
    let job_id = JobId::parse(id).ok_or_else(|| ApiError::BadRequest {
        code: "INVALID_JOB_ID",
        detail: format!("'{id}' is not a job id (a UUID)"),
    })?;
    state
        .store
        .job(job_id)?
        .ok_or_else(|| ApiError::job_not_found(job_id))
}

async fn job(state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let job = load(&state, &id)?;
    Ok(ok(StatusCode::OK, job.status.as_str(), job.view()))
}

async fn job_log(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let job = load(&state, &id)?;
    let events: Vec<EventView> = job.log.iter().map(|e| e.view()).collect();
    Ok(ok(
        StatusCode::OK,
        format!("{} event(s)", events.len()),
        json!({
            "job_id": job.id,
            "status": job.status,
            "events": events,
            "earlier_events_not_kept": job.log_elided,
        }),
    ))
}

async fn retry(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let job = load(&state, &id)?;
    match state.store.retry(job.id).await? {
        RetryOutcome::Retried(job) => {
            tracing::info!(job_id = %job.id, "job retried by an operator");
            Ok(ok(StatusCode::OK, "placed again", job.view()))
        }
        RetryOutcome::NotFound => Err(ApiError::job_not_found(job.id)),
        RetryOutcome::NotInError(status) => Err(ApiError::Conflict {
            code: "NOT_IN_ERROR",
            detail: format!(
                "job {} is {}; only jobs in error can be retried",
                job.id,
                status.as_str()
            ),
        }),
    }
}
