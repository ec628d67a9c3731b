//! The `teamleader` source: for each configured resource, the records changed since its cursor
//! (`POST <base>/<resource>.list` with `filter.updated_since`, page by page until a short page),
//! placed with the api as one `records` job per page (`POST /worker/records`, idempotent on a
//! key made from the page's ids and times).
//!
//! - **Cursor**: connector state `teamleader:cursor:<resource>`, `{"since": <time>}`. It is the
//!   server's clock (`Date`) at the first answer of the pass, less a second, so a record changed
//!   while the pass pages along is read again next time rather than missed; and it moves only
//!   after every page of the pass is acknowledged by the api, so a crash re-reads, never skips.
//!   A full resync (`PUT /source/poll?full=true`) reads without `updated_since`, and its pages'
//!   keys name the resync, so every record is written again (rows deleted by hand come back).
//! - **Rate limit**: Teamleader allows 200 calls a minute per client. The source reads
//!   `X-RateLimit-Remaining` and `X-RateLimit-Reset` on every answer and, with nothing left,
//!   waits until the reset before its next call; a 429 waits likewise and tries the same page
//!   again. No fixed sleeps.
//! - **Tokens** come from the api (OAuth2, authorization code); a 401 gets a new one, once.
//! - **Errors are errors**: any answer but a 2xx with a `data` list fails the poll, and the
//!   cursor stays where it was.

use std::time::Duration;

use chrono::{DateTime, FixedOffset, Utc};
use ferry_shared::source::Teamleader;
use serde_json::{Value, json};

use crate::client::ApiClient;
use crate::connector::auth::OAuthTokens;

/// Calls refused with 429 in a row before the poll gives up.
const MAX_LIMITED: u32 = 8;
/// A page whose JSON is larger is placed as two jobs (the api takes at most 4 MiB).
const MAX_JOB_BYTES: usize = 3 * 1024 * 1024;

pub struct TeamleaderClient {
    cfg: Teamleader,
    http: reqwest::Client,
    tokens: OAuthTokens,
    /// Calls left in the window, and when it resets, as the last answer said.
    remaining: Option<u64>,
    reset_at: Option<DateTime<Utc>>,
}

impl TeamleaderClient {
    pub fn new(cfg: Teamleader, api: ApiClient) -> Self {
        Self {
            cfg,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
            tokens: OAuthTokens::new(api),
            remaining: None,
            reset_at: None,
        }
    }

    /// One pass over every resource (`full`: a full resync, the number of the ask for it);
    /// answers the records read and how many were in new jobs.
    pub async fn poll(&mut self, api: &ApiClient, full: Option<u64>) -> Result<(u64, u64), String> {
        let (mut read, mut new) = (0, 0);
        for resource in self.cfg.resources.clone() {
            let (r, n) = self
                .sync(api, &resource, full)
                .await
                .map_err(|e| format!("{resource}: {e}"))?;
            read += r;
            new += n;
        }
        Ok((read, new))
    }

    async fn sync(
        &mut self,
        api: &ApiClient,
        resource: &str,
        full: Option<u64>,
    ) -> Result<(u64, u64), String> {
        let key = format!("teamleader:cursor:{resource}");
        let cursor = api
            .state(&key)
            .await
            .map_err(|e| format!("reading the cursor: {e}"))?;
        let since = match full {
            Some(_) => None,
            None => cursor.value["since"].as_str().map(String::from),
        };
        let tag = full.map(|ask| format!("full{ask}"));
        let (mut read, mut new, mut next_since) = (0, 0, None);
        for page in 1u32.. {
            let mut body = json!({ "page": { "size": self.cfg.page_size, "number": page } });
            if let Some(s) = &since {
                body["filter"] = json!({ "updated_since": s });
            }
            let (items, server_now) = self.list(resource, &body).await?;
            next_since.get_or_insert_with(|| {
                let at = server_now.unwrap_or_else(|| Utc::now() - chrono::Duration::seconds(60));
                (at - chrono::Duration::seconds(1))
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
            });
            let short = items.len() < self.cfg.page_size as usize;
            read += items.len() as u64;
            new += place(api, resource, tag.as_deref(), items).await?;
            if short {
                break;
            }
        }
        // Every page is acknowledged: only now may the cursor move.
        api.put_state(&key, json!({ "since": next_since }), cursor.version)
            .await
            .map_err(|e| format!("moving the cursor: {e}"))?;
        Ok((read, new))
    }

    /// One page: its records and the server's clock when it answered.
    async fn list(
        &mut self,
        resource: &str,
        body: &Value,
    ) -> Result<(Vec<Value>, Option<DateTime<Utc>>), String> {
        let url = format!("{}/{resource}.list", self.cfg.base_url);
        let (mut renewed, mut limited) = (false, 0);
        loop {
            self.wait_for_budget().await;
            let token = self.tokens.token().await.map_err(|e| e.to_string())?;
            let resp = self
                .http
                .post(&url)
                .bearer_auth(&token)
                .json(body)
                .send()
                .await
                .map_err(|e| format!("Teamleader unreachable: {e}"))?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            self.note_limits(&headers);
            let text = resp
                .text()
                .await
                .map_err(|e| format!("reading Teamleader's answer: {e}"))?;
            match status {
                401 if !renewed => {
                    renewed = true;
                    self.tokens
                        .refused(&token)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                429 if limited < MAX_LIMITED => {
                    limited += 1;
                    let wait = self.until_reset(&headers, limited);
                    tracing::info!(
                        wait_ms = wait.as_millis() as u64,
                        "Teamleader's rate limit: waiting for the window to reset"
                    );
                    tokio::time::sleep(wait).await;
                }
                200..=299 => {
                    let value: Value = serde_json::from_str(&text)
                        .map_err(|e| format!("Teamleader's answer is not JSON: {e}"))?;
                    let Some(Value::Array(items)) = value.get("data").cloned() else {
                        return Err(format!(
                            "Teamleader answered {resource}.list without a data list: {}",
                            excerpt(&text)
                        ));
                    };
                    let server_now = headers
                        .get(reqwest::header::DATE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| DateTime::parse_from_rfc2822(v).ok())
                        .map(|t| t.with_timezone(&Utc));
                    return Ok((items, server_now));
                }
                _ => {
                    return Err(format!(
                        "Teamleader answered {status} to {resource}.list: {}",
                        excerpt(&text)
                    ));
                }
            }
        }
    }

    fn note_limits(&mut self, headers: &reqwest::header::HeaderMap) {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if let Some(r) = header("x-ratelimit-remaining").and_then(|v| v.trim().parse().ok()) {
            self.remaining = Some(r);
        }
        if let Some(at) = header("x-ratelimit-reset").and_then(parse_reset) {
            self.reset_at = Some(at);
        }
    }

    /// With no calls left in the window, waits until it resets.
    async fn wait_for_budget(&mut self) {
        if self.remaining == Some(0)
            && let Some(at) = self.reset_at
        {
            let wait = (at - Utc::now()).to_std().unwrap_or_default();
            if !wait.is_zero() {
                tracing::debug!(
                    wait_ms = wait.as_millis() as u64,
                    "no Teamleader calls left in this window: waiting for its reset"
                );
                tokio::time::sleep(wait).await;
            }
            self.remaining = None;
        }
    }

    /// How long a 429 waits: until the window resets, else `Retry-After`, else doubling from
    /// one second (a server that says nothing).
    fn until_reset(&self, headers: &reqwest::header::HeaderMap, limited: u32) -> Duration {
        let reset = self.reset_at.and_then(|at| (at - Utc::now()).to_std().ok());
        let after = headers
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        reset
            .or(after)
            .unwrap_or_else(|| Duration::from_secs(1 << limited.min(6)))
            .max(Duration::from_millis(50))
    }
}

/// `X-RateLimit-Reset`: ISO 8601, with an offset written `+0100` or `+01:00`.
fn parse_reset(v: &str) -> Option<DateTime<Utc>> {
    let v = v.trim();
    DateTime::parse_from_rfc3339(v)
        .or_else(|_| DateTime::<FixedOffset>::parse_from_str(v, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Places a page's records with the api (split while too large for one job); answers how many
/// were in new jobs.
async fn place(
    api: &ApiClient,
    resource: &str,
    tag: Option<&str>,
    records: Vec<Value>,
) -> Result<u64, String> {
    if records.is_empty() {
        return Ok(0);
    }
    let key = match tag {
        Some(t) => format!("{t}:{}", page_key(resource, &records)),
        None => page_key(resource, &records),
    };
    let body = json!({ "key": key, "resource": resource, "records": records });
    if records.len() > 1 && body.to_string().len() > MAX_JOB_BYTES {
        let mut first = records;
        let second = first.split_off(first.len() / 2);
        return Ok(Box::pin(place(api, resource, tag, first)).await?
            + Box::pin(place(api, resource, tag, second)).await?);
    }
    match api.place_records(&body).await {
        Ok(true) => Ok(records.len() as u64),
        Ok(false) => Ok(0),
        Err(e) => Err(format!("placing records: {e}")),
    }
}

/// The same records at the same versions make the same key: a page read again is a repeat.
fn page_key(resource: &str, records: &[Value]) -> String {
    // FNV-1a over each record's id and updated_at.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for r in records {
        for part in [&r["id"], &r["updated_at"]] {
            for b in part.as_str().unwrap_or("").bytes().chain([0]) {
                hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    let first = records.first().and_then(|r| r["id"].as_str()).unwrap_or("");
    let first: String = first.chars().take(64).collect();
    format!("{resource}:{first}:{}:{hash:016x}", records.len())
}

fn excerpt(s: &str) -> String {
    s.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reset_header_reads_with_either_offset_form() {
        let a = parse_reset("2021-06-15T10:51:23.035+0100").unwrap();
        let b = parse_reset("2021-06-15T09:51:23.035Z").unwrap();
        assert_eq!(a, b);
        assert!(parse_reset("soon").is_none());
    }

    #[test]
    fn a_page_key_changes_with_any_version() {
        let page = |at: &str| {
            vec![
                json!({"id": "a", "updated_at": at}),
                json!({"id": "b", "updated_at": "t"}),
            ]
        };
        let k1 = page_key("companies", &page("2026-12-01T10:00:00+00:00"));
        assert_eq!(
            k1,
            page_key("companies", &page("2026-12-01T10:00:00+00:00"))
        );
        assert_ne!(
            k1,
            page_key("companies", &page("2026-12-01T10:00:01+00:00"))
        );
        assert!(k1.starts_with("companies:a:2:"));
    }
}
