//! The worker's side of the worker protocol: typed calls to its api, answers unwrapped from the
//! envelope. Whether a failure is worth retrying is carried by the error type.

use std::time::Duration;

use ferry_shared::answer::SourcePolls;
use ferry_shared::envelope::Envelope;
use ferry_shared::protocol::{
    HeartbeatRequest, HeartbeatResponse, LeaseRequest, LeaseResponse, ReportResponse, SourceWait,
    StatePut, StateValue,
};
use ferry_shared::source::SourceStatus;
use ferry_shared::target::WorkerConfig;
use serde::de::DeserializeOwned;

/// What the intake routes answer, as far as a source needs it.
#[derive(serde::Deserialize)]
struct Placed {
    new: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The api did not answer (down, restarting): try again later.
    #[error("the api is unreachable")]
    Unreachable(#[source] reqwest::Error),
    /// The api answered with a refusal that trying again will not change.
    #[error("the api refused: {status} {code}: {detail}")]
    Refused {
        status: u16,
        code: String,
        detail: String,
    },
}

impl ClientError {
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable(_) => true,
            // The api is stopping or its store is briefly unavailable.
            ClientError::Refused { status, .. } => *status == 503 || *status >= 500,
        }
    }
}

#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl ApiClient {
    pub fn new(base: &str, token: Option<String>) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req
            .timeout(timeout)
            .send()
            .await
            .map_err(ClientError::Unreachable)?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(ClientError::Unreachable)?;
        let refused = |code: &str, detail: String| ClientError::Refused {
            status,
            code: code.to_string(),
            detail,
        };
        let envelope: Envelope<T> = serde_json::from_slice(&bytes)
            .map_err(|e| refused("BAD_ANSWER", format!("not the expected envelope: {e}")))?;
        match (envelope.data, envelope.error) {
            (Some(data), _) if envelope.success => Ok(data),
            (_, Some(err)) => Err(refused(&err.code, err.detail)),
            _ => Err(refused("BAD_ANSWER", envelope.message)),
        }
    }

    /// Saves a failed attempt's screenshot or page with the api, under the job.
    pub async fn put_artifact(
        &self,
        job: ferry_shared::job::JobId,
        name: &str,
        bytes: Vec<u8>,
    ) -> Result<(), ClientError> {
        let req = self
            .http
            .put(format!("{}/worker/artifacts/{job}/{name}", self.base))
            .header("content-type", "application/octet-stream")
            .body(bytes);
        self.call::<serde::de::IgnoredAny>(req, Duration::from_secs(30))
            .await
            .map(|_| ())
    }

    pub async fn config(&self) -> Result<WorkerConfig, ClientError> {
        let req = self.http.get(format!("{}/worker/config", self.base));
        self.call(req, Duration::from_secs(10)).await
    }

    pub async fn lease(&self, body: &LeaseRequest) -> Result<LeaseResponse, ClientError> {
        let req = self
            .http
            .post(format!("{}/worker/lease", self.base))
            .json(body);
        let timeout = Duration::from_millis(body.wait_ms) + Duration::from_secs(10);
        self.call(req, timeout).await
    }

    /// Sends a report already encoded as JSON (the reporter sizes it to the api's limit).
    pub async fn report(&self, body: Vec<u8>) -> Result<ReportResponse, ClientError> {
        let req = self
            .http
            .post(format!("{}/worker/report", self.base))
            .header("content-type", "application/json")
            .body(body);
        self.call(req, Duration::from_secs(30)).await
    }

    pub async fn heartbeat(
        &self,
        body: &HeartbeatRequest,
    ) -> Result<HeartbeatResponse, ClientError> {
        let req = self
            .http
            .post(format!("{}/worker/heartbeat", self.base))
            .json(body);
        self.call(req, Duration::from_secs(10)).await
    }

    /// Waits up to `wait_ms` until more source polls were asked for than `seen`.
    pub async fn source_wait(&self, seen: u64, wait_ms: u64) -> Result<SourcePolls, ClientError> {
        let req = self
            .http
            .post(format!("{}/worker/source/wait", self.base))
            .json(&SourceWait { seen, wait_ms });
        self.call(
            req,
            Duration::from_millis(wait_ms) + Duration::from_secs(10),
        )
        .await
    }

    /// Reports a poll of the source.
    pub async fn source_status(&self, status: &SourceStatus) -> Result<SourceStatus, ClientError> {
        let req = self
            .http
            .post(format!("{}/worker/source/status", self.base))
            .json(status);
        self.call(req, Duration::from_secs(10)).await
    }

    /// Places a booking with the api; answers whether it was new.
    pub async fn place_booking(&self, booking: &serde_json::Value) -> Result<bool, ClientError> {
        let req = self
            .http
            .post(format!("{}/bookings", self.base))
            .json(booking);
        self.call::<Placed>(req, Duration::from_secs(30))
            .await
            .map(|p| p.new)
    }

    /// An OAuth2 access token; `stale` names one the target refused.
    pub async fn oauth_token(
        &self,
        stale: Option<&str>,
    ) -> Result<ferry_shared::oauth2::AccessToken, ClientError> {
        let req = self
            .http
            .post(format!("{}/worker/oauth/token", self.base))
            .json(&ferry_shared::oauth2::TokenAsk {
                stale: stale.map(String::from),
            });
        self.call(req, Duration::from_secs(30)).await
    }

    /// Places a page of a source's records; answers whether it was new.
    pub async fn place_records(&self, records: &serde_json::Value) -> Result<bool, ClientError> {
        let req = self
            .http
            .post(format!("{}/worker/records", self.base))
            .json(records);
        self.call::<Placed>(req, Duration::from_secs(60))
            .await
            .map(|p| p.new)
    }

    /// Connector state (`version` 0 and `value` null when absent).
    pub async fn state(&self, key: &str) -> Result<StateValue, ClientError> {
        let req = self.http.get(format!("{}/worker/state/{key}", self.base));
        self.call(req, Duration::from_secs(10)).await
    }

    /// Writes connector state if it is still at `version`; a `STATE_CONFLICT` refusal otherwise.
    pub async fn put_state(
        &self,
        key: &str,
        value: serde_json::Value,
        version: u64,
    ) -> Result<StateValue, ClientError> {
        let req = self
            .http
            .put(format!("{}/worker/state/{key}", self.base))
            .json(&StatePut { value, version });
        self.call(req, Duration::from_secs(10)).await
    }
}
