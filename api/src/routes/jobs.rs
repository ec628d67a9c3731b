//! Upstream intake and job inspection: `POST /create`, `GET /get_order_status`, the original
//! service's `GET /check_order_status`, `GET /jobs/{id}`, `GET /jobs/{id}/log`,
//! `PUT /jobs/{id}/retry`.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use ferry_shared::answer::{JobLog, LegacyError, LegacyStatus, Placed};
use ferry_shared::envelope::{ErrorCode, Failure, Success};
use ferry_shared::job::{EventView, JobId, JobKind, JobView, Payload, Status};
use ferry_shared::validate::{CreateRequest, ParsedOrder, parse_create};
use serde::Deserialize;
use utoipa::IntoParams;

use super::openapi::{IntakeFailures, JobLookupFailures};
use super::{IntakeWords, answer_intake, ok, read_intake};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::RetryOutcome;
use crate::store::record::Job;

/// Places a job.
///
/// One order line for the worker to put on the ERP's worksheet, exactly once. The job is on disk
/// before the answer. Posting the same `uniqueid` again with the same order is answered `200`
/// too, with the job already placed: `data.new` says which (the deployed client counts an order
/// as accepted only on exactly `200`, as the original service's contract says).
// Reads the body itself (not `web::Json`): the deployed client sends a JSON string holding the
// object, and every refusal must still be the envelope.
#[utoipa::path(
    post,
    path = "/create",
    tag = "upstream",
    request_body(content = CreateRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Placed (`data.new` is `true`: the job is stored and will be delivered), or already placed (`data.new` is `false`: this uniqueid is known with the same order).", body = Success<Placed>, links(
            ("GetJob" = (operation_id = "job", parameters(("id" = "$response.body#/data/id")))),
            ("GetJobLog" = (operation_id = "job_log", parameters(("id" = "$response.body#/data/id")))),
            ("RetryJob" = (operation_id = "retry", parameters(("id" = "$response.body#/data/id")))),
            ("GetOrderStatus" = (operation_id = "order_status", parameters(("uniqueid" = "$response.body#/data/uniqueid")))),
        )),
        (status = 400, description = "`VALIDATION_FAILED`: fields missing or wrong, or another workshop's order (`error.fields` names them). `MALFORMED_JSON`: not JSON, or not an object. `KIND_NOT_TAKEN`: this tenant's target takes no order lines. `BAD_BODY`: the body could not be read.", body = Failure),
        (status = 409, description = "`UNIQUEID_CONFLICT`: the uniqueid is known with a different order; `error.fields` names the fields that differ.", body = Failure),
        IntakeFailures,
    ),
)]
pub(super) async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    const KIND: JobKind = JobKind::OrderLine;
    let workshop = &state.settings.workshop;
    let ParsedOrder { order, ignored } =
        read_intake(&state, KIND, &req, payload, super::MAX_BODY, |b| {
            parse_create(b, workshop)
        })
        .await?;
    let uniqueid = order.uniqueid.clone();
    let outcome = state.store.create(Payload::OrderLine(order), None).await?;
    let words = IntakeWords {
        // 200, not 201: the documented contract, which the deployed client checks exactly.
        new_status: StatusCode::OK,
        new_message: |_| "job placed".into(),
        repeat_message: "already placed: this uniqueid is known with the same order".into(),
        note: ignored_note(&ignored),
        conflict: ErrorCode::UniqueidConflict,
    };
    answer_intake(&state, KIND, &uniqueid, outcome, words)
}

/// " (fields ignored: a, b)" for the answer's message: the first few names, shortened.
fn ignored_note(ignored: &[String]) -> String {
    const SHOWN: usize = 5;
    if ignored.is_empty() {
        return String::new();
    }
    let mut names: Vec<String> = ignored
        .iter()
        .take(SHOWN)
        .map(|n| n.chars().take(40).collect())
        .collect();
    if ignored.len() > SHOWN {
        names.push(format!("and {} more", ignored.len() - SHOWN));
    }
    let note = format!(" (fields ignored: {})", names.join(", "));
    tracing::info!("order{note}");
    note
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatusParams {
    /// The uniqueid the job was posted with.
    #[param(required = true, pattern = "\\S")]
    uniqueid: Option<String>,
    /// The legacy client's name for `uniqueid`, taken when `uniqueid` is absent.
    unique_id: Option<String>,
}

/// Where the job with this uniqueid stands.
///
/// `message` is its status; `data` the whole job.
#[utoipa::path(
    get,
    path = "/get_order_status",
    tag = "upstream",
    params(StatusParams),
    responses(
        (status = 200, description = "The job; `message` is its status.", body = Success<JobView>),
        (status = 400, description = "`VALIDATION_FAILED`: no uniqueid given.", body = Failure),
        (status = 404, description = "`JOB_NOT_FOUND`: no job has this uniqueid.", body = Failure),
    ),
)]
pub(super) async fn order_status(
    state: web::Data<AppState>,
    params: web::Query<StatusParams>,
) -> Result<HttpResponse, ApiError> {
    let p = params.into_inner();
    status_by_key(&state, JobKind::OrderLine, p.uniqueid.or(p.unique_id))
}

/// A job by its upstream key (`uniqueid`, `bookId`), for the status routes; `message` is its
/// status.
pub(super) fn status_by_key(
    state: &AppState,
    kind: JobKind,
    key: Option<String>,
) -> Result<HttpResponse, ApiError> {
    let name = kind.key_name();
    let Some(key) = key.filter(|k| !k.trim().is_empty()) else {
        return Err(ApiError::field(name, "is required"));
    };
    let job = state
        .store
        .job_by_key(kind, key.trim())?
        .ok_or_else(|| ApiError::job_not_found(format_args!("with {name} '{key}'")))?;
    Ok(ok(StatusCode::OK, job.status.as_str(), state.view(&job)))
}

/// Read as pairs (see [`check_order_status`]); this struct only describes them.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct LegacyStatusParams {
    /// The order's `unique_id`, as the original service names it.
    #[param(required = true, pattern = "\\S")]
    unique_id: String,
}

/// Where an order stands, as the original service answered.
///
/// For the pollers deployed against the original service: its path, its parameter, its shape
/// (`{unique_id, status, reason}`, not the envelope) and its status names: `received`,
/// `processing`, `completed`, `failed`. New clients use `GET /get_order_status`.
#[utoipa::path(
    get,
    path = "/check_order_status",
    tag = "upstream",
    params(LegacyStatusParams),
    responses(
        (status = 200, description = "The order's status in the original names; `reason` says why it failed or waits.", body = LegacyStatus),
        (status = 400, description = "`unique_id` is missing.", body = LegacyError),
        (status = 404, description = "No order has this `unique_id`: `{\"error\": \"Order not found\"}`.", body = LegacyError),
    ),
)]
// The query is read as pairs, which cannot fail to parse: every refusal here is in the
// original's shape, never the envelope.
pub(super) async fn check_order_status(
    state: web::Data<AppState>,
    params: web::Query<Vec<(String, String)>>,
) -> Result<HttpResponse, ApiError> {
    let legacy_error = |status: StatusCode, error: &str| {
        HttpResponse::build(status).json(LegacyError {
            error: error.to_string(),
        })
    };
    let Some(unique_id) = params
        .into_inner()
        .into_iter()
        .find_map(|(k, v)| (k == "unique_id").then_some(v))
        .filter(|u| !u.trim().is_empty())
    else {
        return Ok(legacy_error(
            StatusCode::BAD_REQUEST,
            "unique_id is required",
        ));
    };
    let Some(job) = state
        .store
        .job_by_key(JobKind::OrderLine, unique_id.trim())?
    else {
        return Ok(legacy_error(StatusCode::NOT_FOUND, "Order not found"));
    };
    let reason = match (job.status, &job.reason_text, &job.reason_code) {
        (Status::Cleared, _, _) => Some("cleared from the queue by an operator".to_string()),
        (_, Some(text), Some(code)) => Some(format!("{code}: {text}")),
        (_, text, _) => text.clone(),
    };
    Ok(HttpResponse::Ok().json(LegacyStatus {
        unique_id: job.payload.key().to_string(),
        status: job.status.into(),
        reason,
    }))
}

pub(super) fn load(state: &AppState, id: &str) -> Result<Job, ApiError> {
    let job_id = JobId::parse(id).ok_or_else(|| ApiError::BadRequest {
        code: ErrorCode::InvalidJobId,
        detail: format!("'{id}' is not a job id (a UUID)"),
    })?;
    state
        .store
        .job(job_id)?
        .ok_or_else(|| ApiError::job_not_found(job_id))
}

/// One job, by its id.
///
/// `message` is its status; `data` the whole job.
#[utoipa::path(
    get,
    path = "/jobs/{id}",
    tag = "operators",
    params(("id" = uuid::Uuid, Path, description = "The job's id.")),
    responses(
        (status = 200, description = "The job; `message` is its status.", body = Success<JobView>),
        JobLookupFailures,
    ),
)]
pub(super) async fn job(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let job = load(&state, &id)?;
    Ok(ok(StatusCode::OK, job.status.as_str(), state.view(&job)))
}

/// A job's history.
///
/// Every transition, with what the target answered on each attempt.
#[utoipa::path(
    get,
    path = "/jobs/{id}/log",
    tag = "operators",
    params(("id" = uuid::Uuid, Path, description = "The job's id.")),
    responses(
        (status = 200, description = "The job's events, oldest first.", body = Success<JobLog>),
        JobLookupFailures,
    ),
)]
pub(super) async fn job_log(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let job = load(&state, &id)?;
    let events: Vec<EventView> = job.log.iter().map(|e| e.view()).collect();
    Ok(ok(
        StatusCode::OK,
        format!("{} event(s)", events.len()),
        JobLog {
            job_id: job.id,
            status: job.status,
            events,
            earlier_events_not_kept: job.log_elided,
        },
    ))
}

/// Retries a job that failed.
///
/// Places a job in `error` again, for an operator who fixed the cause; its age limit restarts.
#[utoipa::path(
    put,
    path = "/jobs/{id}/retry",
    tag = "operators",
    params(("id" = uuid::Uuid, Path, description = "The job's id.")),
    responses(
        (status = 200, description = "Placed again.", body = Success<JobView>),
        JobLookupFailures,
        (status = 409, description = "`NOT_IN_ERROR`: only jobs in `error` can be retried.", body = Failure),
    ),
)]
pub(super) async fn retry(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let job = load(&state, &id)?;
    match state.store.retry(job.id).await? {
        RetryOutcome::Retried(job) => {
            tracing::info!(job_id = %job.id, "job retried by an operator");
            Ok(ok(StatusCode::OK, "placed again", state.view(&job)))
        }
        RetryOutcome::NotFound => Err(ApiError::job_not_found(job.id)),
        RetryOutcome::NotInError(status) => Err(ApiError::Conflict {
            code: ErrorCode::NotInError,
            detail: format!(
                "job {} is {}; only jobs in error can be retried",
                job.id,
                status.as_str()
            ),
            fields: Default::default(),
        }),
    }
}
