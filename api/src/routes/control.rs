//! Queue inspection and control for operators and the management system: `GET /queue`,
//! `PUT /clear_queue`, `PUT /start_worker`, `PUT /stop_worker`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use ferry_shared::job::{JobView, Status};
use serde::Deserialize;
use serde_json::json;

use super::health::counts_json;
use super::{ok, resource};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::read::{Cursor, ListQuery};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 500;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/queue").route(web::get().to(queue)))
        .service(resource("/clear_queue").route(web::put().to(clear_queue)))
        .service(resource("/start_worker").route(web::put().to(start_worker)))
        .service(resource("/stop_worker").route(web::put().to(stop_worker)));
}

#[derive(Debug, Deserialize)]
struct QueueParams {
    /// Comma-separated statuses; default: waiting and in flight.
    status: Option<String>,
    /// `task` (waiting and in flight) or `error`, as the original service had.
    #[serde(rename = "type")]
    kind: Option<String>,
    /// Text to find in uniqueid, worksheet, product, username, reason or target reference.
    q: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

fn statuses(p: &QueueParams) -> Result<Vec<Status>, ApiError> {
    if let Some(list) = &p.status {
        return list
            .split(',')
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
            .collect();
    }
    match p.kind.as_deref() {
        None | Some("task") => Ok(vec![Status::Placed, Status::Processing]),
        Some("error") => Ok(vec![Status::Error]),
        Some(other) => Err(ApiError::field(
            "type",
            format!("unknown type '{other}'; use task or error"),
        )),
    }
}

async fn queue(
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
    let query = ListQuery {
        statuses: statuses.clone(),
        after,
        limit,
        needle: p
            .q
            .map(|q| q.trim().to_lowercase())
            .filter(|q| !q.is_empty()),
        budget: crate::store::read::SCAN_BUDGET,
    };
    let st = state.clone();
    let page = web::block(move || st.store.list(&query))
        .await
        .map_err(|_| ApiError::Store(crate::store::StoreError::Closed))??;
    let length: u64 = statuses.iter().map(|s| state.store.count(*s)).sum();
    let jobs: Vec<JobView> = page.jobs.iter().map(|j| j.view()).collect();
    Ok(ok(
        StatusCode::OK,
        format!("{length} job(s) in {}", names(&statuses)),
        json!({
            "length": length,
            "counts": counts_json(&state),
            "jobs": jobs,
            "next_cursor": page.next_cursor.map(|c| c.encode()),
        }),
    ))
}

fn names(statuses: &[Status]) -> String {
    statuses
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

async fn clear_queue(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let n = state.store.clear().await?;
    tracing::info!(cleared = n, "queue cleared by an operator");
    Ok(ok(
        StatusCode::OK,
        format!("cleared {n} waiting job(s); jobs in flight were left alone"),
        json!({ "cleared": n }),
    ))
}

async fn set_worker(state: &AppState, running: bool) -> Result<HttpResponse, ApiError> {
    state.store.set_worker_running(running).await?;
    let word = if running { "running" } else { "stopped" };
    tracing::info!(worker = word, "worker desired state changed");
    Ok(ok(
        StatusCode::OK,
        format!("worker {word}"),
        json!({ "worker": word, "connected": state.worker_connected() }),
    ))
}

async fn start_worker(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    set_worker(&state, true).await
}

async fn stop_worker(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    set_worker(&state, false).await
}
