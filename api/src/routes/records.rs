//! Records from the tenant's source (a page of Teamleader companies, say): `POST /worker/records`,
//! idempotent on the page's key, on disk before the answer. The source moves its cursor only
//! after this answers, so a crash re-reads rather than skips.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use ferry_shared::answer::Placed;
use ferry_shared::envelope::{ErrorCode, Failure, Success};
use ferry_shared::job::{JobKind, Payload};
use ferry_shared::records::{RecordsRequest, parse_records};

use super::{IntakeWords, answer_intake, read_intake};
use crate::error::ApiError;
use crate::state::AppState;

/// Largest page of records taken.
pub const MAX_RECORDS_BODY: usize = 4 * 1024 * 1024;

/// Places a page of records.
///
/// One job per page of a source's records, for the target to upsert. The same key with the same
/// records again is a repeat (`data.new` is `false`).
#[utoipa::path(
    post,
    path = "/worker/records",
    tag = "worker",
    security(("worker_token" = []), ("worker_bearer" = [])),
    request_body(content = RecordsRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Placed (`data.new` is `true`).", body = Success<Placed>),
        (status = 200, description = "Already placed with the same records (`data.new` is `false`).", body = Success<Placed>),
        (status = 400, description = "`VALIDATION_FAILED`: fields missing or wrong (`error.fields` names them). `MALFORMED_JSON`: not JSON, or not an object. `KIND_NOT_TAKEN`: this tenant's target takes no records. `BAD_BODY`: the body could not be read.", body = Failure),
        (status = 409, description = "`KEY_CONFLICT`: the key is known with other records.", body = Failure),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`: the body is over 4 MiB.", body = Failure),
        (status = 415, description = "`UNSUPPORTED_MEDIA_TYPE`: the body must be `application/json`.", body = Failure),
        (status = 503, description = "`QUEUE_FULL`, `SHUTTING_DOWN`, `DISK_FULL` or `STORE_UNAVAILABLE`: nothing was stored; retry after `Retry-After` seconds.", body = Failure),
    ),
)]
pub(super) async fn create_records(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    const KIND: JobKind = JobKind::Records;
    let records = read_intake(&state, KIND, &req, payload, MAX_RECORDS_BODY, parse_records).await?;
    let key = records.key.clone();
    let outcome = state.store.create(Payload::Records(records), None).await?;
    let words = IntakeWords {
        new_status: StatusCode::CREATED,
        new_message: |_| "records placed".into(),
        repeat_message: "already placed: this key is known with the same records".into(),
        note: String::new(),
        conflict: ErrorCode::KeyConflict,
    };
    answer_intake(&state, KIND, &key, outcome, words)
}
