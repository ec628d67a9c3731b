//! Calls to one tenant's api, answers unwrapped from the envelope.

use std::time::Duration;

use serde_json::Value;

pub struct Api {
    http: reqwest::Client,
    pub base: String,
    key: Option<String>,
}

impl Api {
    pub fn new(base: &str, key: Option<String>) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            base: base.trim_end_matches('/').to_string(),
            key,
        }
    }

    /// `data` of a successful answer; the envelope's message otherwise.
    pub async fn call(&self, method: reqwest::Method, path: &str) -> anyhow::Result<Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(k) = &self.key {
            req = req.header("x-api-key", k);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{} is not answering: {e}", self.base))?;
        let status = resp.status();
        let body: Value = resp
            .json()
            .await
            .map_err(|e| anyhow::anyhow!("{} answered {status} without JSON: {e}", self.base))?;
        if body["success"] == true {
            Ok(body["data"].clone())
        } else {
            let detail = body["error"]["detail"].as_str().unwrap_or("");
            anyhow::bail!(
                "{status}: {} {}",
                body["message"].as_str().unwrap_or("refused"),
                if detail.is_empty() {
                    String::new()
                } else {
                    format!("({detail})")
                }
            )
        }
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path).await
    }

    pub async fn put(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::PUT, path).await
    }
}
