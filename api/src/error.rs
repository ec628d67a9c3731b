//! `ApiError`: every failure of the HTTP surface, always answered in the JSON envelope. A 5xx says
//! nothing internal; its cause chain goes to the log.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use ferry_shared::envelope::{ErrorBody, ErrorCode, Failure};

use crate::store::StoreError;

/// Seconds a client is asked to wait when the queue is full or the api is stopping.
const RETRY_AFTER_SECS: &str = "5";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request has invalid fields")]
    Validation(BTreeMap<String, String>),
    #[error("{detail}")]
    BadRequest { code: ErrorCode, detail: String },
    #[error("{detail}")]
    NotFound { code: ErrorCode, detail: String },
    /// `fields` names what conflicts, where the request has fields.
    #[error("{detail}")]
    Conflict {
        code: ErrorCode,
        detail: String,
        fields: BTreeMap<String, String>,
    },
    #[error("a valid API key is required (x-api-key or Authorization: Bearer)")]
    Unauthorized,
    #[error("the body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The methods the route takes, as the `Allow` header lists them.
    #[error("this route takes only {0}")]
    MethodNotAllowed(String),
    #[error("the queue is full; try again later")]
    QueueFull,
    #[error("the api is shutting down")]
    ShuttingDown,
    /// Something the api depends on is unavailable for now (an OAuth2 provider): 503.
    #[error("{detail}")]
    Unavailable { code: ErrorCode, detail: String },
    #[error("the store failed")]
    Store(#[from] StoreError),
}

impl ApiError {
    pub fn field(name: &str, problem: impl Into<String>) -> Self {
        ApiError::Validation(BTreeMap::from([(name.to_string(), problem.into())]))
    }

    pub fn job_not_found(what: impl std::fmt::Display) -> Self {
        ApiError::NotFound {
            code: ErrorCode::JobNotFound,
            detail: format!("no job {what}"),
        }
    }

    fn code(&self) -> ErrorCode {
        match self {
            ApiError::Validation(_) => ErrorCode::ValidationFailed,
            ApiError::BadRequest { code, .. }
            | ApiError::NotFound { code, .. }
            | ApiError::Conflict { code, .. }
            | ApiError::Unavailable { code, .. } => *code,
            ApiError::Unauthorized => ErrorCode::Unauthorized,
            ApiError::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            ApiError::UnsupportedMediaType(_) => ErrorCode::UnsupportedMediaType,
            ApiError::MethodNotAllowed(_) => ErrorCode::MethodNotAllowed,
            ApiError::QueueFull => ErrorCode::QueueFull,
            ApiError::ShuttingDown => ErrorCode::ShuttingDown,
            ApiError::Store(StoreError::Failed | StoreError::Closed) => ErrorCode::StoreUnavailable,
            ApiError::Store(StoreError::DiskFull | StoreError::NoSpace(_)) => ErrorCode::DiskFull,
            ApiError::Store(_) => ErrorCode::Internal,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Validation(_) | ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::QueueFull | ApiError::ShuttingDown | ApiError::Unavailable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Store(
                StoreError::Failed
                | StoreError::Closed
                | StoreError::DiskFull
                | StoreError::NoSpace(_),
            ) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let (detail, fields) = match self {
            ApiError::Validation(fields) => (
                format!(
                    "invalid field(s): {}",
                    fields.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
                fields.clone(),
            ),
            ApiError::Conflict { detail, fields, .. } => (detail.clone(), fields.clone()),
            ApiError::Store(StoreError::DiskFull | StoreError::NoSpace(_)) => (
                "the disk is full: nothing was stored; try again after Retry-After seconds (the \
                 api resumes by itself when space comes back)"
                    .to_string(),
                BTreeMap::new(),
            ),
            ApiError::Store(e) => {
                tracing::error!(error = ?e, "request failed in the store");
                (
                    "the request could not be completed; the cause is in the api log".to_string(),
                    BTreeMap::new(),
                )
            }
            other => (other.to_string(), BTreeMap::new()),
        };
        let message = match self {
            ApiError::Store(_) => status.canonical_reason().unwrap_or("error").to_lowercase(),
            other => other.to_string(),
        };
        let body = Failure::new(
            message,
            ErrorBody {
                code: self.code().as_str().to_string(),
                detail,
                fields,
            },
        );
        let mut resp = HttpResponse::build(status).json(body);
        if let ApiError::MethodNotAllowed(allowed) = self {
            resp.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_str(allowed).unwrap_or(HeaderValue::from_static("GET")),
            );
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        resp
    }
}
