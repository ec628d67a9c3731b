//! The HTTP surface, one module per route group. Every route is listed once, in [`table`]: the
//! server serves it and the OpenAPI document describes it from that one entry (its handler's
//! `#[utoipa::path]` names the method and the path), so no route can be served undocumented. Each
//! is a `web::resource` (see [`route`]), so a wrong method answers 405 with `Allow` (the route
//! macros would answer 404), and every answer is the envelope.

mod alerts;
mod artifacts;
mod bookings;
mod control;
mod dashboard;
mod health;
mod jobs;
mod oauth;
mod openapi;
mod records;
mod source;
mod state;
mod ui;
mod worker;

pub use artifacts::prune as prune_artifacts;
pub use openapi::{DocumentJson, document};

use actix_web::http::{Method, StatusCode};
use actix_web::{FromRequest, Handler, HttpRequest, HttpResponse, Resource, Responder, web};
use ferry_shared::envelope::{ErrorCode, Success};
use ferry_shared::job::JobKind;
use serde::Serialize;
use utoipa::openapi::path::HttpMethod;
use utoipa_actix_web::OpenApiFactory;

use crate::error::ApiError;
use crate::state::AppState;

/// Largest request body accepted anywhere but artifacts and records.
pub use ferry_shared::protocol::MAX_BODY;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(json_config())
        .app_data(web::QueryConfig::default().error_handler(|err, _| {
            ApiError::BadRequest {
                code: ErrorCode::InvalidQuery,
                detail: err.to_string(),
            }
            .into()
        }))
        .app_data(web::PathConfig::default().error_handler(|err, _| {
            ApiError::BadRequest {
                code: ErrorCode::InvalidPath,
                detail: err.to_string(),
            }
            .into()
        }))
        .configure(serve_table)
        .configure(openapi::configure)
        .configure(ui::configure)
        .configure(alerts::configure)
        .default_service(web::to(not_found));
}

/// Every route the api serves and documents. (`/openapi.json` and `/docs` serve the document
/// itself and are not in it.)
pub fn table() -> Vec<ApiRoute> {
    vec![
        // Before `/jobs/{id}`, which would take `/jobs/retry` for a job's id.
        ApiRoute::new(dashboard::__path_retry_matching, dashboard::retry_matching),
        ApiRoute::new(dashboard::__path_stats, dashboard::stats),
        ApiRoute::new(alerts::__path_list, alerts::list),
        ApiRoute::new(alerts::__path_test, alerts::test),
        ApiRoute::new(jobs::__path_create, jobs::create),
        ApiRoute::new(jobs::__path_order_status, jobs::order_status),
        ApiRoute::new(jobs::__path_check_order_status, jobs::check_order_status),
        ApiRoute::new(jobs::__path_job, jobs::job),
        ApiRoute::new(jobs::__path_job_log, jobs::job_log),
        ApiRoute::new(jobs::__path_retry, jobs::retry),
        ApiRoute::new(artifacts::__path_artifact, artifacts::artifact),
        ApiRoute::new(artifacts::__path_put_artifact, artifacts::put_artifact),
        ApiRoute::new(bookings::__path_create_booking, bookings::create_booking),
        ApiRoute::new(bookings::__path_booking_status, bookings::booking_status),
        ApiRoute::new(control::__path_queue, control::queue),
        ApiRoute::new(control::__path_clear_queue, control::clear_queue),
        ApiRoute::new(control::__path_start_worker, control::start_worker),
        ApiRoute::new(control::__path_stop_worker, control::stop_worker),
        ApiRoute::new(health::__path_alive, health::alive),
        ApiRoute::new(health::__path_metrics, health::metrics),
        ApiRoute::new(health::__path_kill, health::kill),
        ApiRoute::new(worker::__path_config, worker::config),
        ApiRoute::new(worker::__path_lease, worker::lease),
        ApiRoute::new(worker::__path_report, worker::report),
        ApiRoute::new(worker::__path_heartbeat, worker::heartbeat),
        ApiRoute::new(source::__path_poll, source::poll),
        ApiRoute::new(source::__path_wait, source::wait),
        ApiRoute::new(source::__path_status, source::status),
        ApiRoute::new(state::__path_get_state, state::get_state),
        ApiRoute::new(state::__path_put_state, state::put_state),
        ApiRoute::new(records::__path_create_records, records::create_records),
        ApiRoute::new(oauth::__path_start, oauth::start),
        ApiRoute::new(oauth::__path_callback, oauth::callback),
        ApiRoute::new(oauth::__path_token, oauth::token),
    ]
}

/// One route: how to serve it and its part of the document, both from its handler's
/// `#[utoipa::path]`.
pub struct ApiRoute {
    path: String,
    method: Method,
    add: Box<dyn Fn(Resource) -> Resource>,
    pub doc: Box<dyn OpenApiFactory>,
}

impl ApiRoute {
    fn new<P, F, Args>(doc: P, handler: F) -> Self
    where
        P: utoipa::Path + OpenApiFactory + 'static,
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        let method = match P::methods().as_slice() {
            [HttpMethod::Get] => Method::GET,
            [HttpMethod::Put] => Method::PUT,
            [HttpMethod::Post] => Method::POST,
            _ => unreachable!("{} must take one of GET, PUT or POST", P::path()),
        };
        let m = method.clone();
        Self {
            path: P::path(),
            method,
            add: Box::new(move |resource| with_method(resource, m.clone(), handler.clone())),
            doc: Box::new(doc),
        }
    }
}

/// Serves [`table`]: one resource per path, with every method the table gives it.
fn serve_table(cfg: &mut web::ServiceConfig) {
    let routes = table();
    let mut paths: Vec<&str> = Vec::new();
    for r in &routes {
        if !paths.contains(&r.path.as_str()) {
            paths.push(&r.path);
        }
    }
    for path in paths {
        let mut resource = web::resource(path);
        let mut allowed = Vec::new();
        for r in routes.iter().filter(|r| r.path == path) {
            resource = (r.add)(resource);
            allowed.push(r.method.as_str());
            if r.method == Method::GET {
                allowed.push("HEAD");
            }
        }
        cfg.service(refuse_others(resource, allowed.join(", ")));
    }
}

/// Adds `handler` for `method` to `resource` (and for HEAD with GET, as RFC 9110 asks).
fn with_method<F, Args>(mut resource: Resource, method: Method, handler: F) -> Resource
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    if method == Method::GET {
        resource = resource.route(web::head().to(handler.clone()));
    }
    resource.route(web::method(method).to(handler))
}

/// Any other method answers 405 in the envelope, with `Allow`.
fn refuse_others(resource: Resource, allowed: String) -> Resource {
    resource.default_service(web::to(move || {
        let allowed = allowed.clone();
        async move { Err::<HttpResponse, _>(ApiError::MethodNotAllowed(allowed)) }
    }))
}

fn json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(MAX_BODY)
        .error_handler(|err, _| {
            use actix_web::error::JsonPayloadError as E;
            match &err {
                E::Overflow { .. } | E::OverflowKnownLength { .. } => {
                    ApiError::PayloadTooLarge(MAX_BODY)
                }
                E::ContentType => ApiError::UnsupportedMediaType(
                    "the body must be JSON (Content-Type: application/json)".into(),
                ),
                E::Deserialize(e) if e.is_data() => ApiError::BadRequest {
                    code: ErrorCode::InvalidBody,
                    detail: format!("the JSON does not have the expected shape: {e}"),
                },
                other => ApiError::BadRequest {
                    code: ErrorCode::MalformedJson,
                    detail: format!("the body is not valid JSON: {other}"),
                },
            }
            .into()
        })
}

/// A route taking one method (and HEAD with GET); any other answers 405 with `Allow`.
pub fn route<F, Args>(method: Method, path: &str, handler: F) -> Resource
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    let allowed = if method == Method::GET {
        "GET, HEAD".to_string()
    } else {
        method.as_str().to_string()
    };
    refuse_others(with_method(web::resource(path), method, handler), allowed)
}

/// A JSON body read as bytes (intake parses it itself, so every refusal is the envelope and
/// names the field): `application/json`, at most [`MAX_BODY`].
pub(crate) async fn json_body(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, ApiError> {
    let content_type = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
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
    read_body(payload, limit).await
}

/// A body of at most `limit` bytes; a larger one answers 413.
///
/// A body that arrives in one chunk (an order, as it comes with its headers) is that chunk, not
/// a copy. actix-web's `to_bytes_limited` allocates 32 KiB first for every body it reads from a
/// request (whose length it treats as unknown): a large block per order, which libc's allocator
/// serves by first merging its small free blocks (`malloc_consolidate`). Reading chunks here
/// took the allocator's instructions per order from 20.2k to 18.6k (callgrind, 16 connections).
pub(crate) async fn read_body(
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, ApiError> {
    use futures_util::StreamExt;
    let (mut first, mut rest) = (None::<web::Bytes>, web::BytesMut::new());
    let mut len = 0;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest {
            code: ErrorCode::BadBody,
            detail: format!("the body could not be read: {e}"),
        })?;
        len += chunk.len();
        if len > limit {
            return Err(ApiError::PayloadTooLarge(limit));
        }
        match first.take() {
            None if rest.is_empty() => first = Some(chunk),
            Some(earlier) => {
                rest.extend_from_slice(&earlier);
                rest.extend_from_slice(&chunk);
            }
            None => rest.extend_from_slice(&chunk),
        }
    }
    Ok(first.unwrap_or_else(|| rest.freeze()))
}

/// What both intake routes do before placing a job: refuse while stopping or for a kind the
/// target does not take, read the JSON body and parse it, counting every refusal.
pub(crate) async fn read_intake<T>(
    state: &AppState,
    kind: JobKind,
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
    parse: impl FnOnce(&[u8]) -> Result<T, ferry_shared::validate::CreateError>,
) -> Result<T, ApiError> {
    use ferry_shared::validate::CreateError;
    let refused = |e: ApiError| {
        state.metrics.intake(kind, crate::metrics::Intake::Refused);
        e
    };
    if state.stopping() {
        return Err(refused(ApiError::ShuttingDown));
    }
    check_kind(state, kind).map_err(refused)?;
    let body = json_body(req, payload, limit).await.map_err(refused)?;
    parse(&body).map_err(|e| {
        refused(match e {
            CreateError::Malformed(detail) => ApiError::BadRequest {
                code: ErrorCode::MalformedJson,
                detail,
            },
            CreateError::Fields(fields) => ApiError::Validation(fields),
        })
    })
}

/// How an intake route words its answers: the status and message of a new job (from the job,
/// which may already be in `error`), and the message of a repeat.
pub(crate) struct IntakeWords {
    pub new_status: StatusCode,
    pub new_message: fn(&crate::store::record::Job) -> String,
    pub repeat_message: String,
    /// Appended to either message (the fields an order had that nothing reads, say).
    pub note: String,
    pub conflict: ErrorCode,
}

/// What both intake routes answer once the store has placed (or not) the job: `Placed` with
/// `new` for a new job or a repeat, 409 naming the differing fields, 503 for a full queue;
/// each counted in the intake metrics of `kind`.
pub(crate) fn answer_intake(
    state: &AppState,
    kind: JobKind,
    key: &str,
    outcome: crate::store::CreateOutcome,
    words: IntakeWords,
) -> Result<HttpResponse, ApiError> {
    use crate::metrics::Intake;
    use crate::store::CreateOutcome;
    use ferry_shared::answer::Placed;
    let placed = |job, new| Placed {
        new,
        job: state.view(job),
    };
    match outcome {
        CreateOutcome::New(job) => {
            state.metrics.intake(kind, Intake::Created);
            let message = format!("{}{}", (words.new_message)(&job), words.note);
            tracing::debug!(job_id = %job.id, kind = kind.as_str(), %key, "{message}");
            Ok(ok(words.new_status, message, placed(&job, true)))
        }
        CreateOutcome::Duplicate(job) => {
            state.metrics.intake(kind, Intake::Duplicate);
            let message = format!("{}{}", words.repeat_message, words.note);
            Ok(ok(StatusCode::OK, message, placed(&job, false)))
        }
        CreateOutcome::Conflict(job, differing) => {
            state.metrics.intake(kind, Intake::Conflict);
            Err(ApiError::Conflict {
                code: words.conflict,
                detail: format!(
                    "{} '{key}' is already used by job {} with a different {}",
                    kind.key_name(),
                    job.id,
                    differing.join(", ")
                ),
                fields: differing
                    .iter()
                    .map(|f| {
                        (
                            f.to_string(),
                            "differs from the one placed first".to_string(),
                        )
                    })
                    .collect(),
            })
        }
        CreateOutcome::QueueFull => {
            state.metrics.intake(kind, Intake::Refused);
            tracing::warn!(
                max_queue = state.settings.max_queue,
                kind = kind.as_str(),
                "intake refused: queue full"
            );
            Err(ApiError::QueueFull)
        }
    }
}

/// Refuses a job of a kind this tenant's target does not take (a tenant with no target yet takes
/// any: its jobs wait for one).
pub(crate) fn check_kind(state: &AppState, kind: JobKind) -> Result<(), ApiError> {
    match &state.settings.target {
        Some(target) if !target.takes().contains(&kind) => Err(ApiError::BadRequest {
            code: ErrorCode::KindNotTaken,
            detail: format!(
                "this tenant's target ({}) takes {} jobs, not {}",
                target.kind_name(),
                target
                    .takes()
                    .iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                kind.as_str()
            ),
        }),
        _ => Ok(()),
    }
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound {
        code: ErrorCode::NotFound,
        detail: format!("no route {} {}", req.method(), req.path()),
    })
}

/// A success in the envelope.
pub fn ok<T: Serialize>(status: StatusCode, message: impl Into<String>, data: T) -> HttpResponse {
    HttpResponse::build(status).json(Success::new(message, data))
}
