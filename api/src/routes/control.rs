//! Queue inspection and control for operators and the management system: `GET /queue`,
//! `PUT /clear_queue`, `PUT /start_worker`, `PUT /stop_worker`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use ferry_shared::answer::{Cleared, Desired, QueuePage, WorkerSwitch};
use ferry_shared::envelope::{Failure, Success};
use ferry_shared::job::{Counts, JobKind, JobView, Status};
use serde::Deserialize;
use utoipa::IntoParams;

use super::ok;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::read::{Cursor, ListQuery};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 500;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QueueParams {
    /// Comma-separated statuses (`placed`, `processing`, `created`, `error`, `cleared`); default:
    /// waiting and in flight. Takes precedence over `type`.
    #[param(
        example = "placed,processing",
        pattern = "^\\s*((placed|processing|created|error|cleared)\\s*)?(,\\s*((placed|processing|created|error|cleared)\\s*)?)*$"
    )]
    status: Option<String>,
    /// `task` (waiting and in flight) or `error`, as the original service had.
    #[serde(rename = "type")]
    #[param(rename = "type", pattern = "^(task|error)$")]
    list_type: Option<String>,
    /// Text to find in uniqueid, bookId, worksheet, product, username, reason or target
    /// reference (ignoring case).
    q: Option<String>,
    /// Only jobs of this kind.
    #[param(pattern = "^(order_line|booking|records)$")]
    kind: Option<String>,
    /// Only jobs whose reason code is exactly this (`ERP_WORKSHEET_NOT_FOUND`, say).
    reason: Option<String>,
    /// Only jobs made at or after this time (RFC 3339).
    #[param(format = DateTime)]
    since: Option<String>,
    /// Only jobs made at or before this time (RFC 3339).
    #[param(format = DateTime)]
    until: Option<String>,
    /// Jobs per page.
    #[param(minimum = 1, maximum = 500, default = 100)]
    limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

impl QueueParams {
    /// The filters alone (the statuses are the caller's).
    pub(super) fn filtering(
        q: Option<String>,
        kind: Option<String>,
        reason: Option<String>,
        since: Option<String>,
        until: Option<String>,
    ) -> Self {
        Self {
            status: None,
            list_type: None,
            q,
            kind,
            reason,
            since,
            until,
            limit: None,
            cursor: None,
        }
    }
}

fn statuses(p: &QueueParams) -> Result<Vec<Status>, ApiError> {
    let by_type = match p.list_type.as_deref() {
        None | Some("task") => vec![Status::Placed, Status::Processing],
        Some("error") => vec![Status::Error],
        Some(other) => {
            return Err(ApiError::field(
                "type",
                format!("unknown type '{other}'; use task or error"),
            ));
        }
    };
    let Some(list) = &p.status else {
        return Ok(by_type);
    };
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            Status::parse(s).ok_or_else(|| {
                ApiError::field(
                    "status",
                    format!(
                        "unknown status '{s}'; use placed, processing, created, error or cleared"
                    ),
                )
            })
        })
        .collect()
}

/// Lists jobs by status, oldest first.
///
/// A page at a time: what waits, what failed, what was cleared. Without `status` or `type`, the
/// jobs waiting or in flight.
#[utoipa::path(
    get,
    path = "/queue",
    tag = "operators",
    params(QueueParams),
    responses(
        (status = 200, description = "One page of jobs.", body = Success<QueuePage>),
        (status = 400, description = "`VALIDATION_FAILED`: an unknown status or type, a limit out of range, or a cursor this query did not hand out (`error.fields` names it). `INVALID_QUERY`: a parameter of the wrong type.", body = Failure),
    ),
)]
pub(super) async fn queue(
    state: web::Data<AppState>,
    params: web::Query<QueueParams>,
) -> Result<HttpResponse, ApiError> {
    let p = params.into_inner();
    let statuses = statuses(&p)?;
    let limit = p.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::field(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let after = match p.cursor.as_deref().filter(|c| !c.is_empty()) {
        Some(c) => Some(
            Cursor::parse(c)
                .filter(|c| statuses.contains(&c.status()))
                .ok_or_else(|| {
                    ApiError::field("cursor", "is not a cursor this query handed out")
                })?,
        ),
        None => None,
    };
    let first_page = after.is_none();
    let exact_key =
        p.q.as_deref()
            .map(str::trim)
            .filter(|q| !q.is_empty())
            .map(String::from);
    let query = ListQuery {
        statuses: statuses.clone(),
        after,
        limit,
        ..filters(&p)?
    };
    let st = state.clone();
    let (page, exact) = web::block(move || {
        let page = st.store.list(&query)?;
        let mut exact = None;
        if let (true, Some(key)) = (first_page, exact_key) {
            for kind in JobKind::ALL {
                if let Some(j) = st.store.job_by_key(kind, &key)?
                    && query.statuses.contains(&j.status)
                    && query.admits(&j)
                {
                    exact = Some(j);
                }
            }
        }
        Ok::<_, crate::store::StoreError>((page, exact))
    })
    .await
    .map_err(|_| ApiError::Store(crate::store::StoreError::Closed))??;
    // The length and the counts from one reading, so that they agree.
    let tally = state.store.counts();
    let length: u64 = statuses.iter().map(|s| tally[s.index()]).sum();
    let jobs: Vec<JobView> = page.jobs.iter().map(|j| state.view(j)).collect();
    Ok(ok(
        StatusCode::OK,
        format!("{length} job(s) in {}", names(&statuses)),
        QueuePage {
            length,
            counts: Counts::from_indexed(tally),
            jobs,
            exact: exact.map(|j| state.view(&j)),
            next_cursor: page.next_cursor.map(|c| c.encode()),
        },
    ))
}

/// The filters `/queue` and `POST /jobs/retry` share: text, kind, reason code, time range.
pub(super) fn filters(p: &QueueParams) -> Result<ListQuery, ApiError> {
    let kind = match p.kind.as_deref() {
        None => None,
        Some(k) => Some(
            JobKind::ALL
                .into_iter()
                .find(|kind| kind.as_str() == k)
                .ok_or_else(|| ApiError::field("kind", "must be order_line, booking or records"))?,
        ),
    };
    let time = |name: &str, v: &Option<String>| match v.as_deref() {
        None => Ok(None),
        Some(t) => ferry_shared::rfc3339_ms(t)
            .map(Some)
            .ok_or_else(|| ApiError::field(name, "must be an RFC 3339 date-time")),
    };
    Ok(ListQuery {
        needle: p
            .q
            .as_deref()
            .map(|q| q.trim().to_lowercase())
            .filter(|q| !q.is_empty()),
        kind,
        reason: p.reason.clone().filter(|r| !r.is_empty()),
        since_ms: time("since", &p.since)?,
        until_ms: time("until", &p.until)?,
        ..ListQuery::default()
    })
}

fn names(statuses: &[Status]) -> String {
    statuses
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Clears the waiting jobs.
///
/// Moves every waiting job to `cleared`; jobs a worker holds are left alone.
#[utoipa::path(
    put,
    path = "/clear_queue",
    tag = "operators",
    responses((status = 200, description = "How many jobs were cleared.", body = Success<Cleared>)),
)]
pub(super) async fn clear_queue(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let n = state.store.clear().await?;
    tracing::info!(cleared = n, "queue cleared by an operator");
    Ok(ok(
        StatusCode::OK,
        format!("cleared {n} waiting job(s); jobs in flight were left alone"),
        Cleared { cleared: n },
    ))
}

async fn set_worker(state: &AppState, running: bool) -> Result<HttpResponse, ApiError> {
    state.store.set_worker_running(running).await?;
    let desired = Desired::from_running(running);
    tracing::info!(worker = desired.as_str(), "worker desired state changed");
    Ok(ok(
        StatusCode::OK,
        format!("worker {}", desired.as_str()),
        WorkerSwitch {
            worker: desired,
            connected: state.worker_connected(),
        },
    ))
}

/// Lets the worker lease jobs again.
///
/// Its next answer from the api says `run`.
#[utoipa::path(
    put,
    path = "/start_worker",
    tag = "management",
    responses((status = 200, description = "The worker's desired state is now running.", body = Success<WorkerSwitch>)),
)]
pub(super) async fn start_worker(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    set_worker(&state, true).await
}

/// Pauses the worker.
///
/// It finishes what it holds and leases nothing more (its next answer says `pause`). Intake goes
/// on.
#[utoipa::path(
    put,
    path = "/stop_worker",
    tag = "management",
    responses((status = 200, description = "The worker's desired state is now stopped.", body = Success<WorkerSwitch>)),
)]
pub(super) async fn stop_worker(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    set_worker(&state, false).await
}
