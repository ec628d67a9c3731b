//! Connector state for the worker: `GET|PUT /worker/state/{key}`, compare-and-swap on a version.
//! Tokens, id maps and cursors live here, in the tenant's store, never in the stateless worker.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use ferry_shared::envelope::{ErrorCode, Failure, Success};
use ferry_shared::protocol::{MAX_STATE_KEY, StatePut, StateValue, valid_state_key};
use ferry_shared::strict::Object;

use super::ok;
use super::openapi::JsonBodyFailures;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::StateWrite;

fn key(raw: &str) -> Result<String, ApiError> {
    if raw.starts_with(crate::oauth::RESERVED_PREFIX)
        || raw.starts_with(crate::alerts::RESERVED_PREFIX)
    {
        return Err(ApiError::field(
            "key",
            "keys under oauth2: and alerts: are the api's own",
        ));
    }
    if valid_state_key(raw) {
        Ok(raw.to_string())
    } else {
        Err(ApiError::field(
            "key",
            format!("must be 1 to {MAX_STATE_KEY} ASCII letters, digits or ._:-"),
        ))
    }
}

/// Reads connector state.
///
/// An absent key answers `version` 0 and `value` `null`.
#[utoipa::path(
    get,
    path = "/worker/state/{key}",
    tag = "worker",
    security(("worker_token" = []), ("worker_bearer" = [])),
    params(("key" = String, Path, description = "The state's key: 1 to 200 ASCII letters, digits or `._:-`.", pattern = "^[A-Za-z0-9._:-]{1,200}$")),
    responses(
        (status = 200, description = "The value and its version.", body = Success<StateValue>),
        (status = 400, description = "`VALIDATION_FAILED`: the key has other characters or is too long.", body = Failure),
    ),
)]
pub(super) async fn get_state(
    state: web::Data<AppState>,
    raw: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let key = key(&raw)?;
    let (value, version) = state.store.state(&key)?;
    Ok(ok(
        StatusCode::OK,
        format!("version {version}"),
        StateValue {
            key,
            value,
            version,
        },
    ))
}

/// Writes connector state, if unchanged since read.
///
/// Compare-and-swap: written only if the key is still at `version` (0: absent), so two workers
/// (or a restarted one) never both act on one value. `value` `null` deletes the key. The write
/// is on disk before the answer.
#[utoipa::path(
    put,
    path = "/worker/state/{key}",
    tag = "worker",
    security(("worker_token" = []), ("worker_bearer" = [])),
    params(("key" = String, Path, description = "The state's key: 1 to 200 ASCII letters, digits or `._:-`.", pattern = "^[A-Za-z0-9._:-]{1,200}$")),
    request_body = StatePut,
    responses(
        (status = 200, description = "Written: the new version (0 after a delete).", body = Success<StateValue>),
        JsonBodyFailures,
        (status = 409, description = "`STATE_CONFLICT`: the key changed since it was read (`error.detail` gives its version); read it again.", body = Failure),
    ),
)]
pub(super) async fn put_state(
    state: web::Data<AppState>,
    raw: web::Path<String>,
    body: web::Json<Object<StatePut>>,
) -> Result<HttpResponse, ApiError> {
    let key = key(&raw)?;
    let StatePut { value, version } = body.into_inner().0;
    let write = (!value.is_null()).then(|| value.clone());
    match state.store.put_state(key.clone(), write, version).await? {
        StateWrite::Written(version) => Ok(ok(
            StatusCode::OK,
            format!("written: version {version}"),
            StateValue {
                key,
                value,
                version,
            },
        )),
        StateWrite::Conflict(current) => Err(ApiError::Conflict {
            code: ErrorCode::StateConflict,
            detail: format!(
                "'{key}' is at version {current}, not {version}: read it again before writing"
            ),
            fields: Default::default(),
        }),
    }
}
