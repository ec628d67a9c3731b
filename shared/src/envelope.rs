//! The one JSON envelope every answer of ferry-api is wrapped in:
//! `{"success": true, "message", "data"}` ([`Success`]) or
//! `{"success": false, "message", "error": {code, detail, fields}}` ([`Failure`]).
//! Clients read either as an [`Envelope`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};

/// What a client reads: a [`Success`] or a [`Failure`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(bound(deserialize = "T: Deserialize<'de>"))]
pub struct Envelope<T> {
    pub success: bool,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<T>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// The api did what was asked; `data` is the answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Success<T> {
    /// Always `true`.
    #[schema(schema_with = always_true)]
    pub success: bool,
    /// A short sentence for people.
    pub message: String,
    pub data: T,
}

/// The api refused or failed; `error.code` says why, for machines.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Failure {
    /// Always `false`.
    #[schema(schema_with = always_false)]
    pub success: bool,
    /// A short sentence for people.
    pub message: String,
    pub error: ErrorBody,
}

/// A machine-readable failure: a stable `code`, a sentence for people, and per-field messages when
/// the input was at fault.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default, ToSchema)]
pub struct ErrorBody {
    #[schema(value_type = ErrorCode)]
    pub code: String,
    pub detail: String,
    /// Field name → what is wrong with it (only with `VALIDATION_FAILED`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, String>,
}

/// Every `error.code` the api answers with. Clients should treat an unknown code by its HTTP
/// status; codes are never renamed.
///
/// | code | status | meaning |
/// |---|---|---|
/// | `VALIDATION_FAILED` | 400 | some fields are missing or wrong; `error.fields` names them |
/// | `MALFORMED_JSON` | 400 | the body is not JSON, or not a JSON object |
/// | `INVALID_BODY` | 400 | the JSON does not have the expected shape |
/// | `BAD_BODY` | 400 | the body could not be read |
/// | `INVALID_QUERY` | 400 | a query parameter has the wrong type |
/// | `INVALID_PATH` | 400 | a path segment has the wrong type |
/// | `INVALID_JOB_ID` | 400 | the job id is not a UUID |
/// | `KIND_NOT_TAKEN` | 400 | this tenant's target does not take jobs of this kind |
/// | `UNAUTHORIZED` | 401 | the API key (or worker token) is missing or wrong |
/// | `NOT_FOUND` | 404 | no such route |
/// | `JOB_NOT_FOUND` | 404 | no such job |
/// | `NO_TARGET` | 404 | the tenant has no `[target]` configured |
/// | `NO_SOURCE` | 404 | the tenant has no `[source]` configured |
/// | `METHOD_NOT_ALLOWED` | 405 | the route does not take that method |
/// | `UNIQUEID_CONFLICT` | 409 | the uniqueid is known with a different order |
/// | `BOOKID_CONFLICT` | 409 | the bookId is known with other times or another patron |
/// | `NOT_IN_ERROR` | 409 | only jobs in `error` can be retried |
/// | `STATE_CONFLICT` | 409 | connector state changed since it was read; read it again |
/// | `PAYLOAD_TOO_LARGE` | 413 | the body is over 64 KiB |
/// | `UNSUPPORTED_MEDIA_TYPE` | 415 | the body must be `application/json` |
/// | `INTERNAL` | 500 | an unexpected failure; the cause is in the api log |
/// | `QUEUE_FULL` | 503 | `max_queue` jobs are waiting; retry after `Retry-After` seconds |
/// | `SHUTTING_DOWN` | 503 | the api is stopping |
/// | `STORE_UNAVAILABLE` | 503 | the store failed (the api stops to be restarted) or is closed |
/// | `DISK_FULL` | 503 | the disk is full: nothing was stored; intake resumes by itself when space comes back |
/// | `KEY_CONFLICT` | 409 | a page of records' key is already used with other records |
/// | `NO_OAUTH` | 404 | the tenant has no `[oauth2]` (or no consent step: client credentials) |
/// | `OAUTH_CONSENT_REQUIRED` | 409 | no usable OAuth2 token: a person must consent at `/oauth/start` |
/// | `NO_ALERTS` | 404 | the tenant has no `[alerts]` |
/// | `OAUTH_PROVIDER_UNAVAILABLE` | 503 | the OAuth2 provider could not be reached or failed; try again |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    ValidationFailed,
    MalformedJson,
    InvalidBody,
    BadBody,
    InvalidQuery,
    InvalidPath,
    InvalidJobId,
    KindNotTaken,
    Unauthorized,
    NotFound,
    JobNotFound,
    NoTarget,
    NoSource,
    MethodNotAllowed,
    UniqueidConflict,
    BookidConflict,
    NotInError,
    StateConflict,
    PayloadTooLarge,
    UnsupportedMediaType,
    Internal,
    QueueFull,
    ShuttingDown,
    StoreUnavailable,
    DiskFull,
    KeyConflict,
    NoOauth,
    OauthConsentRequired,
    OauthProviderUnavailable,
    NoAlerts,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 30] = [
        ErrorCode::ValidationFailed,
        ErrorCode::MalformedJson,
        ErrorCode::InvalidBody,
        ErrorCode::BadBody,
        ErrorCode::InvalidQuery,
        ErrorCode::InvalidPath,
        ErrorCode::InvalidJobId,
        ErrorCode::KindNotTaken,
        ErrorCode::Unauthorized,
        ErrorCode::NotFound,
        ErrorCode::JobNotFound,
        ErrorCode::NoTarget,
        ErrorCode::NoSource,
        ErrorCode::MethodNotAllowed,
        ErrorCode::UniqueidConflict,
        ErrorCode::BookidConflict,
        ErrorCode::NotInError,
        ErrorCode::StateConflict,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::Internal,
        ErrorCode::QueueFull,
        ErrorCode::ShuttingDown,
        ErrorCode::StoreUnavailable,
        ErrorCode::DiskFull,
        ErrorCode::KeyConflict,
        ErrorCode::NoOauth,
        ErrorCode::OauthConsentRequired,
        ErrorCode::OauthProviderUnavailable,
        ErrorCode::NoAlerts,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ValidationFailed => "VALIDATION_FAILED",
            ErrorCode::MalformedJson => "MALFORMED_JSON",
            ErrorCode::InvalidBody => "INVALID_BODY",
            ErrorCode::BadBody => "BAD_BODY",
            ErrorCode::InvalidQuery => "INVALID_QUERY",
            ErrorCode::InvalidPath => "INVALID_PATH",
            ErrorCode::InvalidJobId => "INVALID_JOB_ID",
            ErrorCode::KindNotTaken => "KIND_NOT_TAKEN",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::JobNotFound => "JOB_NOT_FOUND",
            ErrorCode::NoTarget => "NO_TARGET",
            ErrorCode::NoSource => "NO_SOURCE",
            ErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ErrorCode::UniqueidConflict => "UNIQUEID_CONFLICT",
            ErrorCode::BookidConflict => "BOOKID_CONFLICT",
            ErrorCode::NotInError => "NOT_IN_ERROR",
            ErrorCode::StateConflict => "STATE_CONFLICT",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::QueueFull => "QUEUE_FULL",
            ErrorCode::ShuttingDown => "SHUTTING_DOWN",
            ErrorCode::StoreUnavailable => "STORE_UNAVAILABLE",
            ErrorCode::DiskFull => "DISK_FULL",
            ErrorCode::KeyConflict => "KEY_CONFLICT",
            ErrorCode::NoOauth => "NO_OAUTH",
            ErrorCode::OauthConsentRequired => "OAUTH_CONSENT_REQUIRED",
            ErrorCode::OauthProviderUnavailable => "OAUTH_PROVIDER_UNAVAILABLE",
            ErrorCode::NoAlerts => "NO_ALERTS",
        }
    }
}

impl<T> Success<T> {
    pub fn new(message: impl Into<String>, data: T) -> Self {
        Self {
            success: true,
            message: message.into(),
            data,
        }
    }
}

impl Failure {
    pub fn new(message: impl Into<String>, error: ErrorBody) -> Self {
        Self {
            success: false,
            message: message.into(),
            error,
        }
    }
}

fn always(value: bool) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Boolean)
        .enum_values(Some([value]))
        .build()
}
fn always_true() -> Object {
    always(true)
}
fn always_false() -> Object {
    always(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_reads_both_answers_as_an_envelope() {
        let ok = serde_json::to_string(&Success::new("done", 7)).unwrap();
        let read: Envelope<i32> = serde_json::from_str(&ok).unwrap();
        assert_eq!((read.success, read.data, read.error), (true, Some(7), None));

        let body = ErrorBody {
            code: ErrorCode::QueueFull.as_str().into(),
            detail: "full".into(),
            fields: BTreeMap::new(),
        };
        let fail = serde_json::to_string(&Failure::new("no", body.clone())).unwrap();
        let read: Envelope<i32> = serde_json::from_str(&fail).unwrap();
        assert_eq!(
            (read.success, read.data, read.error),
            (false, None, Some(body))
        );
    }

    #[test]
    fn every_code_serializes_as_its_name() {
        for code in ErrorCode::ALL {
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::Value::String(code.as_str().into())
            );
        }
    }
}
