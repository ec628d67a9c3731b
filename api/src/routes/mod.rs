//! The HTTP surface, one module per route group. Every route is a `web::resource`, so a wrong
//! method answers 405 (the route macros would answer 404), and every answer is the envelope.

mod control;
mod health;
mod jobs;
mod worker;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, Resource, web};
use ferry_shared::envelope::Envelope;
use serde::Serialize;

use crate::error::ApiError;

/// Largest request body accepted anywhere.
pub const MAX_BODY: usize = 64 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(json_config())
        .app_data(web::QueryConfig::default().error_handler(|err, _| {
            ApiError::BadRequest {
                code: "INVALID_QUERY",
                detail: err.to_string(),
            }
            .into()
        }))
        .app_data(web::PathConfig::default().error_handler(|err, _| {
            ApiError::BadRequest {
                code: "INVALID_PATH",
                detail: err.to_string(),
            }
            .into()
        }))
        .configure(health::configure)
        .configure(control::configure)
        .configure(jobs::configure)
        .configure(worker::configure)
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
                    code: "INVALID_BODY",
                    detail: format!("the JSON does not have the expected shape: {e}"),
                },
                other => ApiError::BadRequest {
                    code: "MALFORMED_JSON",
                    detail: format!("the body is not valid JSON: {other}"),
                },
            }
            .into()
        })
}

/// A route whose unsupported methods answer 405 in the envelope.
pub fn resource(path: &str) -> Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound {
        code: "NOT_FOUND",
        detail: format!("no route {} {}", req.method(), req.path()),
    })
}

/// A success in the envelope.
pub fn ok<T: Serialize>(status: StatusCode, message: impl Into<String>, data: T) -> HttpResponse {
    HttpResponse::build(status).json(Envelope::ok(message, data))
}
