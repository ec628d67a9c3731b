//! Alerts: `GET /alerts` (every message and what became of each copy), `POST /alerts/test` (a
//! test message, to check the mail settings), and the signed "retry these jobs" link's page,
//! `GET /alerts/retry` (asks first) and `POST /alerts/retry` (acts, once).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use ferry_shared::envelope::{ErrorCode, Failure, Success};
use ferry_shared::job::{JobId, Status};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ok;
use crate::alerts::{Alerter, Record, verify};
use crate::error::ApiError;
use crate::html::{escape, page};
use crate::state::AppState;
use crate::store::StateWrite;

fn alerter(state: &AppState) -> Result<&Alerter, ApiError> {
    state.alerts.as_ref().ok_or_else(|| ApiError::NotFound {
        code: ErrorCode::NoAlerts,
        detail: "this tenant has no [alerts] configured".into(),
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AlertList {
    pub alerts: Vec<Record>,
}

/// Every alert, newest first.
///
/// Each message with its copies: `pending` (with the mail server's last answer and when the
/// next try is due), `sent`, or `failed` with the server's answer.
#[utoipa::path(
    get,
    path = "/alerts",
    tag = "operators",
    responses(
        (status = 200, description = "The messages, newest first.", body = Success<AlertList>),
        (status = 404, description = "`NO_ALERTS`: the tenant has no `[alerts]`.", body = Failure),
    ),
)]
pub(super) async fn list(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let a = alerter(&state)?;
    let alerts = crate::alerts::records(&state, a)?;
    Ok(ok(
        StatusCode::OK,
        format!("{} alert(s)", alerts.len()),
        AlertList { alerts },
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TestQueued {
    /// The test message's id in `GET /alerts`.
    pub id: String,
}

/// Sends a test message.
///
/// To every address of `alerts.to`, through the configured mail server, at once; `GET /alerts`
/// shows whether it went.
#[utoipa::path(
    post,
    path = "/alerts/test",
    tag = "operators",
    responses(
        (status = 202, description = "Queued; it is sent at once.", body = Success<TestQueued>),
        (status = 404, description = "`NO_ALERTS`: the tenant has no `[alerts]`.", body = Failure),
    ),
)]
pub(super) async fn test(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let a = alerter(&state)?;
    let id = crate::alerts::test_message(&state, a).await?;
    Ok(ok(
        StatusCode::ACCEPTED,
        "test message queued",
        TestQueued { id },
    ))
}

/// The signed link's parts.
#[derive(Debug, Deserialize)]
pub struct Signed {
    exp: Option<i64>,
    jobs: Option<String>,
    sig: Option<String>,
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/alerts/retry")
            .route(web::get().to(confirm))
            .route(web::post().to(act)),
    );
}

/// Why a link does not act: a title and a sentence for its page.
type Refused = (&'static str, &'static str);

fn refused((title, text): Refused) -> HttpResponse {
    page(
        StatusCode::BAD_REQUEST,
        title,
        &format!("<p>{}</p>", escape(text)),
    )
}

/// Checks a link: signed by this tenant, not expired, not used. Answers its job ids and the key
/// that marks it used, or why not.
fn check(state: &AppState, s: &Signed) -> Result<(Vec<JobId>, String), Refused> {
    let refuse = |title, text| Err((title, text));
    let (Some(exp), Some(jobs), Some(sig), Some(a)) = (s.exp, &s.jobs, &s.sig, &state.alerts)
    else {
        return refuse("Not a retry link", "This link is incomplete.");
    };
    let secret = a.secret.get().cloned().unwrap_or_default();
    if secret.is_empty() || !verify(&secret, exp, jobs, sig) {
        return refuse(
            "Not a valid link",
            "This link was not made by this Ferry, or was changed after it was sent.",
        );
    }
    if exp < ferry_shared::now_ms() / 1000 {
        return refuse(
            "This link has expired",
            "Retry links last a few days. Retry the jobs from the dashboard instead.",
        );
    }
    let used_key = format!("alerts:used:{}", &sig[..sig.len().min(64)]);
    if !state
        .store
        .state(&used_key)
        .map(|(v, _)| v.is_null())
        .unwrap_or(false)
    {
        return refuse(
            "This link was already used",
            "It retried its jobs once already; it does not act twice.",
        );
    }
    let ids = jobs.split(',').filter_map(JobId::parse).collect();
    Ok((ids, used_key))
}

async fn confirm(state: web::Data<AppState>, q: web::Query<Signed>) -> HttpResponse {
    let (ids, _) = match check(&state, &q) {
        Ok(found) => found,
        Err(why) => return refused(why),
    };
    let mut rows = String::new();
    let mut in_error = 0;
    for id in &ids {
        if let Ok(Some(j)) = state.store.job(*id) {
            in_error += usize::from(j.status == Status::Error);
            rows.push_str(&format!(
                "<li>{} ({}, {}{})</li>",
                escape(j.payload.key()),
                j.status.as_str(),
                escape(j.reason_code.as_deref().unwrap_or("")),
                j.reason_text
                    .as_deref()
                    .map(|t| format!(": {}", escape(t)))
                    .unwrap_or_default()
            ));
        }
    }
    // The form posts back to this very address (its query included), wherever a proxy put it.
    page(
        StatusCode::OK,
        &format!("Retry {in_error} job(s)?"),
        &format!(
            "<p>Tenant {}. Of the jobs this link names, {in_error} are in error now; those go \
             back to the queue, their attempts counted afresh.</p><ul>{rows}</ul>\
             <form method=\"post\"><button id=\"retry\" type=\"submit\">Retry {in_error} job(s)</button></form>",
            escape(&state.settings.workshop)
        ),
    )
}

async fn act(state: web::Data<AppState>, q: web::Query<Signed>) -> HttpResponse {
    let (ids, used_key) = match check(&state, &q) {
        Ok(found) => found,
        Err(why) => return refused(why),
    };
    // Spent before it acts: two clicks at once retry once.
    let spent = state
        .store
        .put_state(
            used_key,
            Some(serde_json::json!({ "at_ms": ferry_shared::now_ms() })),
            0,
        )
        .await;
    match spent {
        Ok(StateWrite::Written(_)) => {}
        Ok(StateWrite::Conflict(_)) => {
            return page(
                StatusCode::BAD_REQUEST,
                "This link was already used",
                "<p>It retried its jobs once already; it does not act twice.</p>",
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "a retry link could not be marked used");
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Not now",
                "<p>The store cannot write just now; try the link again in a minute.</p>",
            );
        }
    }
    match state.store.retry_many(ids).await {
        Ok(n) => {
            tracing::info!(retried = n, "jobs retried through a signed alert link");
            page(
                StatusCode::OK,
                &format!("{n} job(s) retried"),
                "<p>They are back in the queue. This link is now used up.</p>",
            )
        }
        Err(e) => {
            tracing::warn!(error = %e, "a retry link's jobs could not be retried");
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Not now",
                "<p>The store cannot write just now.</p>",
            )
        }
    }
}
