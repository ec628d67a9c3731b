//! Connectors turn a leased job into calls on the tenant's target and classify what happened as
//! created / retry / failed with a stable reason code. Only this crate talks to targets.

pub mod alma;
pub mod auth;
pub mod browser;
pub mod erp_browser;
pub mod erp_rest;
pub mod passagepoint;
pub mod postgres;

use ferry_shared::protocol::{AttemptDetail, LeasedJob, Outcome};
use std::time::Duration;

use ferry_shared::target::Target;

use crate::client::ApiClient;

/// One implementation per kind of target, chosen by the tenant's `[target].kind`. Each turns a
/// leased job into calls on its target and classifies the answer; connectors that must remember
/// something across attempts and workers (PassagePoint's id maps) keep it in connector state,
/// through the api client they are given.
// Built once per worker and never moved after: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub enum Connector {
    ErpRest(erp_rest::ErpRestConnector),
    ErpBrowser(erp_browser::ErpBrowserConnector),
    Passagepoint(passagepoint::PassagePointConnector),
    Postgres(postgres::PostgresConnector),
}

/// What every connector shares: one HTTP client for the target (its connection pool and TLS;
/// each connector sets its own timeout per request) and the api client, for connector state.
#[derive(Clone)]
pub struct Ctx {
    pub http: reqwest::Client,
    pub api: ApiClient,
    /// OAuth2 access tokens from the api, for a target whose `auth` is `oauth2`.
    pub oauth: std::sync::Arc<auth::OAuthTokens>,
}

impl Ctx {
    pub fn new(api: ApiClient, connect_timeout: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let oauth = std::sync::Arc::new(auth::OAuthTokens::new(api.clone()));
        Ok(Self { http, api, oauth })
    }
}

impl Connector {
    pub fn new(target: Target, api: ApiClient) -> Result<Self, reqwest::Error> {
        Ok(match target {
            Target::ErpRest(cfg) => {
                let ctx = Ctx::new(api, Duration::from_millis(cfg.connect_timeout_ms))?;
                Connector::ErpRest(erp_rest::ErpRestConnector::new(cfg, ctx))
            }
            Target::ErpBrowser(cfg) => {
                let ctx = Ctx::new(api, Duration::from_secs(5))?;
                Connector::ErpBrowser(erp_browser::ErpBrowserConnector::new(cfg, ctx))
            }
            Target::Passagepoint(cfg) => {
                let ctx = Ctx::new(api, Duration::from_secs(5))?;
                Connector::Passagepoint(passagepoint::PassagePointConnector::new(cfg, ctx))
            }
            Target::Postgres(cfg) => Connector::Postgres(postgres::PostgresConnector::new(cfg)),
        })
    }

    /// How many deliveries the target itself takes at once, where it says (a browser tenant's
    /// sessions). The worker delivers no more than that, and leases ahead accordingly: a job
    /// waiting for a browser in the worker would only show as processing and wait there.
    pub fn deliveries_at_most(&self) -> Option<usize> {
        match self {
            Connector::ErpBrowser(c) => Some(c.sessions()),
            Connector::ErpRest(_) | Connector::Passagepoint(_) | Connector::Postgres(_) => None,
        }
    }

    pub async fn deliver(&self, job: &LeasedJob) -> (Outcome, AttemptDetail) {
        match self {
            Connector::ErpRest(c) => c.deliver(job).await,
            Connector::ErpBrowser(c) => c.deliver(job).await,
            Connector::Passagepoint(c) => c.deliver(job).await,
            Connector::Postgres(c) => c.deliver(job).await,
        }
    }
}

/// An error with its sources, `a: b: c`: what a person needs of a transport failure.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A job of a kind the connector does not deliver. The api refuses such jobs at intake, so this
/// is a job placed before the tenant's target changed: it fails, visibly, rather than waits.
pub fn not_taken(job: &LeasedJob, connector: &str) -> (Outcome, AttemptDetail) {
    (
        Outcome::Failed {
            reason_code: "KIND_NOT_TAKEN".into(),
            reason_text: format!(
                "the {connector} target does not take {} jobs",
                job.payload.kind().as_str()
            ),
        },
        AttemptDetail::default(),
    )
}
