//! What the dashboard reads and does beyond the operators' routes: `GET /stats` (counts by
//! status and kind, the last hour's outcomes by minute) and `POST /jobs/retry` (every `error` job
//! matching a filter back to `placed`, or only counted first).

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use ferry_shared::envelope::Success;
use ferry_shared::job::{Counts, JobKind, Status};
use ferry_shared::strict::Object;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::control::{QueueParams, filters};
use super::ok;
use super::openapi::JsonBodyFailures;
use crate::error::ApiError;
use crate::metrics::Minute;
use crate::state::AppState;

/// Jobs a bulk retry touches at most; the answer says when more matched.
pub const MAX_BULK: usize = 100_000;

#[derive(Debug, Serialize, ToSchema)]
pub struct Stats {
    /// The target's and the source's kinds, as configured.
    pub target: Option<String>,
    pub source: Option<String>,
    pub counts: Counts,
    /// Jobs kept (not yet pruned), by kind.
    pub kinds: BTreeMap<String, u64>,
    /// The last 60 minutes, oldest first: reports that left a job created, in `error`, or
    /// waiting again (since this api started).
    pub minutes: Vec<Minute>,
}

/// Counts and the last hour's outcomes.
///
/// For the dashboard's tiles and chart.
#[utoipa::path(
    get,
    path = "/stats",
    tag = "operators",
    responses((status = 200, description = "Counts by status and kind, outcomes per minute.", body = Success<Stats>)),
)]
pub(super) async fn stats(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (counts, kinds) = state.store.counts_and_kinds();
    let data = Stats {
        target: state
            .settings
            .target
            .as_ref()
            .map(|t| t.kind_name().to_string()),
        source: state
            .settings
            .source
            .as_ref()
            .map(|s| s.kind_name().to_string()),
        counts: Counts::from_indexed(counts),
        kinds: JobKind::ALL
            .iter()
            .map(|k| (k.as_str().to_string(), kinds[*k as usize]))
            .collect(),
        minutes: state.metrics.last_hour(),
    };
    Ok(ok(StatusCode::OK, "stats", data))
}

/// `POST /jobs/retry`: which `error` jobs (the filters of `GET /queue`), and whether only to
/// count them.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct RetryMatching {
    /// Text to find, as `/queue`'s `q`.
    #[serde(default)]
    pub q: Option<String>,
    #[serde(default)]
    #[schema(pattern = "^(order_line|booking|records)$")]
    pub kind: Option<String>,
    /// A reason code, exactly.
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    #[schema(format = DateTime)]
    pub since: Option<String>,
    #[serde(default)]
    #[schema(format = DateTime)]
    pub until: Option<String>,
    /// Count only: what a confirmation asks about.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RetriedMatching {
    /// `error` jobs matching the filter (at most 100,000).
    pub matched: u64,
    /// Of those, back to `placed` now (0 on a dry run).
    pub retried: u64,
}

/// Retries every failed job matching a filter.
///
/// The filters of `GET /queue` over the jobs in `error`; `dry_run` only counts them (for a
/// confirmation). Attempts count afresh, as for one job.
#[utoipa::path(
    post,
    path = "/jobs/retry",
    tag = "operators",
    request_body = RetryMatching,
    responses(
        (status = 200, description = "How many matched, and how many were retried.", body = Success<RetriedMatching>),
        JsonBodyFailures,
    ),
)]
pub(super) async fn retry_matching(
    state: web::Data<AppState>,
    body: web::Json<Object<RetryMatching>>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner().0;
    let params = QueueParams::filtering(b.q, b.kind, b.reason, b.since, b.until);
    let query = crate::store::read::ListQuery {
        statuses: vec![Status::Error],
        limit: MAX_BULK,
        budget: usize::MAX,
        ..filters(&params)?
    };
    let st = state.clone();
    let page = web::block(move || st.store.list(&query))
        .await
        .map_err(|_| ApiError::Store(crate::store::StoreError::Closed))??;
    let ids: Vec<_> = page.jobs.iter().map(|j| j.id).collect();
    let matched = ids.len() as u64;
    let retried = match b.dry_run {
        true => 0,
        false => state.store.retry_many(ids).await?,
    };
    if retried > 0 {
        tracing::info!(retried, "failed jobs retried by an operator");
    }
    let message = match b.dry_run {
        true => format!("{matched} job(s) in error match"),
        false => format!("{retried} of {matched} matching job(s) retried"),
    };
    Ok(ok(
        StatusCode::OK,
        message,
        RetriedMatching { matched, retried },
    ))
}
