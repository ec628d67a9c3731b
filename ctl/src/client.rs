//! Calls to one tenant's api, answers unwrapped from the envelope into the api's own types
//! (`ferry_shared::answer`, `JobView`), so a change to an answer breaks this build, not a table.

use std::time::Duration;

use ferry_shared::envelope::Envelope;
use serde::de::DeserializeOwned;

pub struct Api {
    http: reqwest::Client,
    pub base: String,
    key: Option<String>,
}

/// One HTTP client for every api ferryctl talks to (a fleet of a thousand shares its pool).
fn shared_client() -> reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default()
        })
        .clone()
}

impl Api {
    pub fn new(base: &str, key: Option<String>) -> Self {
        Self {
            http: shared_client(),
            base: base.trim_end_matches('/').to_string(),
            key,
        }
    }

    /// `data` of a successful answer; the envelope's message otherwise.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> anyhow::Result<T> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(k) = &self.key {
            req = req.header("x-api-key", k);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{} is not answering: {e}", self.base))?;
        let status = resp.status();
        let body: Envelope<T> = resp.json().await.map_err(|e| {
            anyhow::anyhow!(
                "{} answered {status} with an unexpected body: {e}",
                self.base
            )
        })?;
        match (body.data, body.error) {
            (Some(data), _) if body.success => Ok(data),
            (_, error) => {
                let detail = error.map(|e| e.detail).unwrap_or_default();
                anyhow::bail!(
                    "{status}: {} {}",
                    body.message,
                    if detail.is_empty() {
                        String::new()
                    } else {
                        format!("({detail})")
                    }
                )
            }
        }
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call(reqwest::Method::GET, path).await
    }

    pub async fn put<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call(reqwest::Method::PUT, path).await
    }

    pub async fn post<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call(reqwest::Method::POST, path).await
    }

    /// Whether the api answers `/alive`.
    pub async fn is_up(&self) -> bool {
        self.get::<serde::de::IgnoredAny>("/alive").await.is_ok()
    }
}
