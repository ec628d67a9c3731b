//! Booking intake, for library tenants: `POST /bookings` (one LibCal booking, idempotent on its
//! `bookId`) and `GET /get_booking_status`.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use ferry_shared::answer::Placed;
use ferry_shared::booking::{BookingRequest, parse_booking};
use ferry_shared::envelope::{ErrorCode, Failure, Success};
use ferry_shared::job::{JobKind, JobView, Payload};
use serde::Deserialize;
use utoipa::IntoParams;

use super::jobs::status_by_key;
use super::openapi::IntakeFailures;
use super::{IntakeWords, answer_intake, read_intake};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::Refusal;

pub const BOOKING_MISSING_PRIMARY_ID: &str = "BOOKING_MISSING_PRIMARY_ID";
pub const DESTINATION_UNMAPPED: &str = "DESTINATION_UNMAPPED";

/// Places a booking.
///
/// One LibCal booking for the worker to register at the door, exactly once. The job is on disk
/// before the answer. A booking without a primary id is kept, in `error` with
/// `BOOKING_MISSING_PRIMARY_ID`, never dropped; so is one whose location has no PassagePoint
/// destination (`DESTINATION_UNMAPPED`).
#[utoipa::path(
    post,
    path = "/bookings",
    tag = "upstream",
    request_body(content = BookingRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Placed (`data.new` is `true`); in `error` at once when it cannot be delivered (`data.reason_code` says why).", body = Success<Placed>),
        (status = 200, description = "Already placed: this bookId is known with the same times and patron (`data.new` is `false`).", body = Success<Placed>),
        (status = 400, description = "`VALIDATION_FAILED`: fields missing or wrong (`error.fields` names them). `MALFORMED_JSON`: not JSON, or not an object. `KIND_NOT_TAKEN`: this tenant's target takes no bookings. `BAD_BODY`: the body could not be read.", body = Failure),
        (status = 409, description = "`BOOKID_CONFLICT`: the bookId is known with other times or another patron; `error.fields` names what differs.", body = Failure),
        IntakeFailures,
    ),
)]
pub(super) async fn create_booking(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    const KIND: JobKind = JobKind::Booking;
    let booking = read_intake(&state, KIND, &req, payload, super::MAX_BODY, parse_booking).await?;
    let book_id = booking.book_id.clone();
    let unmapped = state
        .settings
        .target
        .as_ref()
        .and_then(|t| t.maps_location(booking.lid))
        == Some(false);
    let cannot = if booking.primary_id.is_none() {
        Some(Refusal {
            code: BOOKING_MISSING_PRIMARY_ID,
            text: "the booking has no primary id, so the patron cannot be looked up".into(),
        })
    } else if unmapped {
        Some(Refusal {
            code: DESTINATION_UNMAPPED,
            text: format!(
                "LibCal location {} has no PassagePoint destination in target.destinations",
                booking.lid
            ),
        })
    } else {
        None
    };
    let outcome = state
        .store
        .create(Payload::Booking(booking), cannot)
        .await?;
    let words = IntakeWords {
        new_status: StatusCode::CREATED,
        new_message: |job| match &job.reason_code {
            Some(code) => format!("booking kept, in error: {code}"),
            None => "booking placed".into(),
        },
        repeat_message: "already placed: this bookId is known with the same times and patron"
            .into(),
        note: String::new(),
        conflict: ErrorCode::BookidConflict,
    };
    answer_intake(&state, KIND, &book_id, outcome, words)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BookingStatusParams {
    /// The booking's LibCal id.
    #[serde(rename = "bookId")]
    #[param(rename = "bookId", required = true, pattern = "\\S")]
    book_id: Option<String>,
}

/// Where the booking with this bookId stands.
///
/// `message` is its status; `data` the whole job, with the pre-registration's id as
/// `target_ref` once it is made.
#[utoipa::path(
    get,
    path = "/get_booking_status",
    tag = "upstream",
    params(BookingStatusParams),
    responses(
        (status = 200, description = "The job; `message` is its status.", body = Success<JobView>),
        (status = 400, description = "`VALIDATION_FAILED`: no bookId given.", body = Failure),
        (status = 404, description = "`JOB_NOT_FOUND`: no job has this bookId.", body = Failure),
    ),
)]
pub(super) async fn booking_status(
    state: web::Data<AppState>,
    params: web::Query<BookingStatusParams>,
) -> Result<HttpResponse, ApiError> {
    status_by_key(&state, JobKind::Booking, params.into_inner().book_id)
}
