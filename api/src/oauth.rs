//! OAuth2 tokens, kept by the api for its worker (see `ferry_shared::oauth2`).
//!
//! The token pair lives in the tenant's store (connector state `oauth2:token`, which the worker
//! can neither read nor write). Every call to the provider's token endpoint holds one lock, so
//! a refresh token is spent once: two workers (or a worker and a consent) asking together get
//! the pair the first one fetched. A refreshed pair is on disk before its access token is
//! handed out; a refresh the provider refuses (`The refresh token is invalid`) marks the tenant
//! as needing consent, durably, until a person gives it at `/oauth/start`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferry_shared::oauth2::{AccessToken, Grant, OAuth2, OAuthStatus};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::{StateWrite, Store, StoreError};

/// The connector-state key of the token pair. Keys under `oauth2:` are the api's alone.
pub const TOKEN_KEY: &str = "oauth2:token";
pub const RESERVED_PREFIX: &str = "oauth2:";
/// A consent's `state` is good for this long, once.
const STATE_TTL: Duration = Duration::from_secs(600);
/// The provider answers within this, or the call failed.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Stored {
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    expires_ms: Option<i64>,
    /// Why a person must consent again; no token is usable while set.
    #[serde(default)]
    needs_consent: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("consent is required: {0}")]
    ConsentRequired(String),
    #[error("the OAuth2 provider is unavailable: {0}")]
    Provider(String),
    #[error("the store failed")]
    Store(#[from] StoreError),
}

/// Why a consent did not complete, as the callback page says it.
#[derive(Debug, thiserror::Error)]
pub enum ConsentError {
    #[error("consent was refused at the provider ({0})")]
    Denied(String),
    #[error("this consent link is unknown or was already used; start again at /oauth/start")]
    UnknownState,
    #[error("this consent link expired (they last 10 minutes); start again at /oauth/start")]
    ExpiredState,
    #[error("the callback had no code")]
    NoCode,
    #[error("the provider refused the code: {0}")]
    Refused(String),
    #[error("the OAuth2 provider is unavailable: {0}")]
    Provider(String),
    #[error("the store failed")]
    Store(#[from] StoreError),
}

enum CallError {
    /// The provider answered, and said no (4xx): its answer, clipped.
    Refused(String),
    /// No answer, or a 5xx / 429.
    Unavailable(String),
}

pub struct OAuth {
    pub cfg: OAuth2,
    http: reqwest::Client,
    /// One token call at a time.
    lock: tokio::sync::Mutex<()>,
    /// `state`s handed out by `/oauth/start`, until when each is good.
    pending: Mutex<HashMap<String, Instant>>,
    /// Why consent is needed, mirrored from the store for `/alive` and `/metrics`.
    consent: Mutex<Option<String>>,
    pub refreshes: AtomicU64,
    pub refresh_failures: AtomicU64,
}

impl OAuth {
    pub fn new(cfg: OAuth2, store: &Store) -> Self {
        let stored = read(store).map(|(s, _)| s).unwrap_or_default();
        let consent = match cfg.grant {
            Grant::AuthorizationCode if stored.refresh_token.is_none() => Some(
                stored
                    .needs_consent
                    .unwrap_or_else(|| "no consent has been given yet".into()),
            ),
            _ => stored.needs_consent,
        };
        Self {
            http: reqwest::Client::builder()
                .timeout(PROVIDER_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
            cfg,
            lock: tokio::sync::Mutex::new(()),
            pending: Mutex::new(HashMap::new()),
            consent: Mutex::new(consent),
            refreshes: AtomicU64::new(0),
            refresh_failures: AtomicU64::new(0),
        }
    }

    pub fn status(&self) -> OAuthStatus {
        let reason = self.consent.lock().ok().and_then(|c| c.clone());
        OAuthStatus {
            needs_consent: reason.is_some(),
            reason,
            consent_url: (self.cfg.grant == Grant::AuthorizationCode)
                .then(|| "/oauth/start".to_string()),
        }
    }

    fn set_consent(&self, reason: Option<String>) {
        if let Ok(mut c) = self.consent.lock() {
            *c = reason;
        }
    }

    /// The access token to use now: the stored one while it is fresh and not `stale`, else a
    /// new one (refreshed, or by client credentials), on disk before it is answered.
    pub async fn access_token(
        &self,
        store: &Store,
        stale: Option<&str>,
    ) -> Result<AccessToken, TokenError> {
        let _one = self.lock.lock().await;
        let (stored, version) = read(store)?;
        if let Some(reason) = stored.needs_consent {
            return Err(TokenError::ConsentRequired(reason));
        }
        let margin = self.cfg.refresh_before_secs as i64 * 1000;
        if let (Some(token), Some(expires)) = (&stored.access_token, stored.expires_ms)
            && stale != Some(token.as_str())
            && expires - margin > ferry_shared::now_ms()
        {
            return Ok(AccessToken {
                access_token: token.clone(),
                refresh_at_ms: expires - margin,
            });
        }
        let mut form = vec![
            ("client_id", self.cfg.client_id.clone()),
            ("client_secret", self.cfg.client_secret.clone()),
        ];
        match (self.cfg.grant, &stored.refresh_token) {
            (Grant::ClientCredentials, _) => {
                form.push(("grant_type", "client_credentials".into()));
                if let Some(scope) = &self.cfg.scope {
                    form.push(("scope", scope.clone()));
                }
            }
            (Grant::AuthorizationCode, Some(refresh)) => {
                form.push(("grant_type", "refresh_token".into()));
                form.push(("refresh_token", refresh.clone()));
                form.push(("redirect_uri", self.cfg.redirect_uri.clone()));
            }
            (Grant::AuthorizationCode, None) => {
                let reason = "no consent has been given yet".to_string();
                self.set_consent(Some(reason.clone()));
                return Err(TokenError::ConsentRequired(reason));
            }
        }
        self.refreshes.fetch_add(1, Ordering::Relaxed);
        match self.call(&form).await {
            Ok(answer) => {
                let stored = Stored {
                    refresh_token: answer.refresh_token.or(stored.refresh_token),
                    ..answer.stored
                };
                let token = save(store, &stored, version).await?;
                tracing::info!(
                    grant = ?self.cfg.grant,
                    "OAuth2 access token fetched and stored"
                );
                Ok(AccessToken {
                    refresh_at_ms: stored.expires_ms.unwrap_or(0) - margin,
                    access_token: token,
                })
            }
            Err(CallError::Refused(answer)) if self.cfg.grant == Grant::AuthorizationCode => {
                self.refresh_failures.fetch_add(1, Ordering::Relaxed);
                let reason = format!("the provider refused the refresh token: {answer}");
                tracing::error!(%answer, "OAuth2 refresh refused: consent is required at /oauth/start");
                let marked = Stored {
                    needs_consent: Some(reason.clone()),
                    ..Stored::default()
                };
                save_state(store, &marked, version).await?;
                self.set_consent(Some(reason.clone()));
                Err(TokenError::ConsentRequired(reason))
            }
            Err(CallError::Refused(answer) | CallError::Unavailable(answer)) => {
                self.refresh_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%answer, "OAuth2 token call failed; the stored pair is kept");
                Err(TokenError::Provider(answer))
            }
        }
    }

    /// Where to send a person to consent: the provider's authorize URL with a new `state`.
    pub fn start(&self) -> String {
        let state = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        if let Ok(mut pending) = self.pending.lock() {
            let now = Instant::now();
            pending.retain(|_, until| *until > now);
            pending.insert(state.clone(), now + STATE_TTL);
        }
        let mut url = format!(
            "{}?response_type=code&client_id={}&redirect_uri={}&state={state}",
            self.cfg.authorize_url,
            encode(&self.cfg.client_id),
            encode(&self.cfg.redirect_uri),
        );
        if let Some(scope) = &self.cfg.scope {
            url.push_str(&format!("&scope={}", encode(scope)));
        }
        url
    }

    /// The provider sent the person back: checks `state` (once), exchanges the code and stores
    /// the pair.
    pub async fn callback(
        &self,
        store: &Store,
        code: Option<&str>,
        state: Option<&str>,
        error: Option<&str>,
    ) -> Result<(), ConsentError> {
        let until = state.and_then(|s| self.pending.lock().ok()?.remove(s));
        if let Some(error) = error {
            return Err(ConsentError::Denied(error.to_string()));
        }
        match until {
            None => return Err(ConsentError::UnknownState),
            Some(until) if until <= Instant::now() => return Err(ConsentError::ExpiredState),
            Some(_) => {}
        }
        let code = code.filter(|c| !c.is_empty()).ok_or(ConsentError::NoCode)?;
        let _one = self.lock.lock().await;
        let form = [
            ("grant_type", "authorization_code".to_string()),
            ("code", code.to_string()),
            ("client_id", self.cfg.client_id.clone()),
            ("client_secret", self.cfg.client_secret.clone()),
            ("redirect_uri", self.cfg.redirect_uri.clone()),
        ];
        let answer = self.call(&form).await.map_err(|e| match e {
            CallError::Refused(a) => ConsentError::Refused(a),
            CallError::Unavailable(a) => ConsentError::Provider(a),
        })?;
        let (_, version) = read(store)?;
        save(store, &answer.stored_with_refresh(), version).await?;
        self.set_consent(None);
        tracing::info!("OAuth2 consent given; tokens stored");
        Ok(())
    }

    async fn call(&self, form: &[(&str, String)]) -> Result<Answer, CallError> {
        let resp = self
            .http
            .post(&self.cfg.token_url)
            .header("accept", "application/json")
            .form(form)
            .send()
            .await
            .map_err(|e| CallError::Unavailable(format!("unreachable: {e}")))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let excerpt = || format!("{status} {}", text.chars().take(300).collect::<String>());
        if status == 429 || status >= 500 {
            return Err(CallError::Unavailable(excerpt()));
        }
        if !(200..300).contains(&status) {
            return Err(CallError::Refused(excerpt()));
        }
        let body: Value = serde_json::from_str(&text)
            .map_err(|_| CallError::Unavailable(format!("not JSON: {}", excerpt())))?;
        let Some(access) = body["access_token"].as_str().filter(|t| !t.is_empty()) else {
            return Err(CallError::Unavailable(format!(
                "no access_token: {}",
                excerpt()
            )));
        };
        let lasts_ms = body["expires_in"].as_i64().unwrap_or(3600).max(1) * 1000;
        Ok(Answer {
            stored: Stored {
                access_token: Some(access.to_string()),
                refresh_token: None,
                expires_ms: Some(ferry_shared::now_ms() + lasts_ms),
                needs_consent: None,
            },
            refresh_token: body["refresh_token"].as_str().map(String::from),
        })
    }
}

struct Answer {
    stored: Stored,
    refresh_token: Option<String>,
}

impl Answer {
    fn stored_with_refresh(self) -> Stored {
        Stored {
            refresh_token: self.refresh_token,
            ..self.stored
        }
    }
}

fn read(store: &Store) -> Result<(Stored, u64), StoreError> {
    let (value, version) = store.state(TOKEN_KEY)?;
    Ok((serde_json::from_value(value).unwrap_or_default(), version))
}

/// Writes the pair (on disk when it returns) and answers its access token.
async fn save(store: &Store, stored: &Stored, version: u64) -> Result<String, StoreError> {
    save_state(store, stored, version).await?;
    Ok(stored.access_token.clone().unwrap_or_default())
}

async fn save_state(store: &Store, stored: &Stored, version: u64) -> Result<(), StoreError> {
    let value = serde_json::to_value(stored).unwrap_or(Value::Null);
    match store
        .put_state(TOKEN_KEY.into(), Some(value), version)
        .await?
    {
        StateWrite::Written(_) => Ok(()),
        // Only this module writes the key, under its lock: a conflict means the store changed
        // under it, which it cannot.
        StateWrite::Conflict(v) => {
            tracing::error!(version = v, "the OAuth2 token changed under the lock");
            Err(StoreError::Failed)
        }
    }
}

/// A query value: everything but RFC 3986's unreserved characters encoded.
fn encode(s: &str) -> String {
    const NOT_UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, NOT_UNRESERVED).to_string()
}
