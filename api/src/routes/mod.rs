//! The HTTP surface, one module per route group. Every route is a `web::resource` (see [`route`]),
//! so a wrong method answers 405 with `Allow` (the route macros would answer 404), and every
//! answer is the envelope.

mod control;
mod health;
mod jobs;
mod openapi;
mod worker;

pub use openapi::{DocumentJson, document};

use actix_web::http::{Method, StatusCode};
use actix_web::{FromRequest, Handler, HttpRequest, HttpResponse, Resource, Responder, web};
use ferry_shared::envelope::{ErrorCode, Success};
use serde::Serialize;

use crate::error::ApiError;

/// Largest request body accepted anywhere.
pub const MAX_BODY: usize = 64 * 1024;

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
        .configure(health::configure)
        .configure(control::configure)
        .configure(jobs::configure)
        .configure(worker::configure)
        .configure(openapi::configure)
        .default_service(web::to(not_found));
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

/// A route taking one method (and HEAD with GET, as RFC 9110 asks of every server); any other
/// answers 405 in the envelope, with `Allow`.
pub fn route<F, Args>(method: Method, path: &str, handler: F) -> Resource
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    let mut resource = web::resource(path);
    let allowed = match method {
        Method::GET => {
            resource = resource.route(web::head().to(handler.clone()));
            "GET, HEAD"
        }
        Method::PUT => "PUT",
        Method::POST => "POST",
        _ => unreachable!("routes take GET, PUT or POST"),
    };
    resource
        .route(web::method(method).to(handler))
        .default_service(web::to(move || async move {
            Err::<HttpResponse, _>(ApiError::MethodNotAllowed(allowed))
        }))
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
