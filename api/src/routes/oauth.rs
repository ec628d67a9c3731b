//! OAuth2 consent and tokens: `GET /oauth/start` sends a person to the provider,
//! `GET /oauth/callback` takes them back with a code, and `POST /worker/oauth/token` hands the
//! worker an access token (see [`crate::oauth`]).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use ferry_shared::envelope::{ErrorCode, Failure, Success};
use ferry_shared::oauth2::{AccessToken, Grant, OAUTH_CONSENT_REQUIRED, TokenAsk};
use ferry_shared::strict::Object;
use serde::Deserialize;
use utoipa::IntoParams;

use super::ok;
use super::openapi::JsonBodyFailures;
use crate::error::ApiError;
use crate::oauth::{ConsentError, OAuth, TokenError};
use crate::state::AppState;

fn oauth(state: &AppState, consent: bool) -> Result<&OAuth, ApiError> {
    match &state.oauth {
        Some(o) if !consent || o.cfg.grant == Grant::AuthorizationCode => Ok(o),
        Some(_) => Err(ApiError::NotFound {
            code: ErrorCode::NoOauth,
            detail: "this tenant's [oauth2] uses client credentials: no consent to give".into(),
        }),
        None => Err(ApiError::NotFound {
            code: ErrorCode::NoOauth,
            detail: "this tenant has no [oauth2] configured".into(),
        }),
    }
}

/// Starts OAuth2 consent.
///
/// Redirects to the provider's authorize page with a new single-use `state`, good for 10
/// minutes; the provider sends the person back to `/oauth/callback`. Open (no API key): it
/// only leads to the provider, where the person must sign in.
#[utoipa::path(
    get,
    path = "/oauth/start",
    tag = "management",
    security(()),
    responses(
        (status = 302, description = "To the provider's authorize page (`Location`)."),
        (status = 404, description = "`NO_OAUTH`: no `[oauth2]` with grant `authorization_code`.", body = Failure),
    ),
)]
pub(super) async fn start(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let url = oauth(&state, true)?.start();
    Ok(HttpResponse::Found()
        .insert_header(("Location", url))
        .insert_header(("Cache-Control", "no-store"))
        .finish())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackParams {
    /// The code to exchange (single use, 10 minutes).
    code: Option<String>,
    /// The `state` `/oauth/start` handed out.
    state: Option<String>,
    /// Set instead of `code` when consent was refused (`access_denied`).
    error: Option<String>,
}

/// Where the provider sends the person back.
///
/// Checks `state` (once, within 10 minutes), exchanges the code and stores the token pair; jobs
/// waiting with `OAUTH_CONSENT_REQUIRED` go on by themselves and the source polls at once.
/// Answers a page saying it worked, or why not.
#[utoipa::path(
    get,
    path = "/oauth/callback",
    tag = "management",
    security(()),
    params(CallbackParams),
    responses(
        (status = 200, description = "Connected: a page saying so.", content_type = "text/html", body = String),
        (status = 400, description = "Consent refused (`access_denied`), an unknown, reused or expired `state`, or a code the provider refused: a page saying which.", content_type = "text/html", body = String),
        (status = 404, description = "`NO_OAUTH`: no `[oauth2]` with grant `authorization_code`.", body = Failure),
        (status = 502, description = "The provider could not be reached: a page saying so.", content_type = "text/html", body = String),
    ),
)]
pub(super) async fn callback(
    state: web::Data<AppState>,
    params: web::Query<CallbackParams>,
) -> Result<HttpResponse, ApiError> {
    let o = oauth(&state, true)?;
    let p = params.into_inner();
    let done = o
        .callback(
            &state.store,
            p.code.as_deref(),
            p.state.as_deref(),
            p.error.as_deref(),
        )
        .await;
    let tenant = &state.settings.workshop;
    let (status, title, text) = match done {
        Ok(()) => {
            let woken = state.store.wake(OAUTH_CONSENT_REQUIRED).await.unwrap_or(0);
            if state.settings.source.is_some() {
                state.source.ask(false);
            }
            tracing::info!(woken, "consent given: waiting jobs are due again");
            (
                StatusCode::OK,
                "Connected",
                format!(
                    "Ferry ({tenant}) can reach the provider again. {woken} waiting job(s) go on now."
                ),
            )
        }
        Err(ConsentError::Store(e)) => return Err(ApiError::Store(e)),
        Err(e) => {
            tracing::warn!(error = %e, "OAuth2 consent did not complete");
            let status = match e {
                ConsentError::Provider(_) => StatusCode::BAD_GATEWAY,
                _ => StatusCode::BAD_REQUEST,
            };
            (status, "Not connected", e.to_string())
        }
    };
    Ok(crate::html::page(
        status,
        title,
        &format!("<p>{}</p>", crate::html::escape(&text)),
    ))
}

/// An OAuth2 access token for the target or source.
///
/// Fresh, or refreshed now (one refresh at a time; the new pair is on disk before this
/// answers). `stale` names a token the target refused with 401: it is replaced unless another
/// request already replaced it.
#[utoipa::path(
    post,
    path = "/worker/oauth/token",
    tag = "worker",
    security(("worker_token" = []), ("worker_bearer" = [])),
    request_body = TokenAsk,
    responses(
        (status = 200, description = "The token and when to ask again.", body = Success<AccessToken>),
        JsonBodyFailures,
        (status = 404, description = "`NO_OAUTH`: the tenant has no `[oauth2]`.", body = Failure),
        (status = 409, description = "`OAUTH_CONSENT_REQUIRED`: no usable token; a person must consent at `/oauth/start`.", body = Failure),
        (status = 503, description = "`OAUTH_PROVIDER_UNAVAILABLE`: the provider could not be reached or failed. `STORE_UNAVAILABLE`, `DISK_FULL`: the new pair could not be stored.", body = Failure),
    ),
)]
pub(super) async fn token(
    state: web::Data<AppState>,
    body: web::Json<Object<TokenAsk>>,
) -> Result<HttpResponse, ApiError> {
    let o = oauth(&state, false)?;
    let ask = body.into_inner().0;
    match o.access_token(&state.store, ask.stale.as_deref()).await {
        Ok(token) => Ok(ok(StatusCode::OK, "fresh", token)),
        Err(TokenError::ConsentRequired(reason)) => Err(ApiError::Conflict {
            code: ErrorCode::OauthConsentRequired,
            detail: format!("{reason}; a person must consent at /oauth/start"),
            fields: Default::default(),
        }),
        Err(TokenError::Provider(answer)) => Err(ApiError::Unavailable {
            code: ErrorCode::OauthProviderUnavailable,
            detail: answer,
        }),
        Err(TokenError::Store(e)) => Err(ApiError::Store(e)),
    }
}
