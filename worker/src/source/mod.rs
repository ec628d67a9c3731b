//! Sources: a task beside the lease loop, for tenants that pull their jobs. Each polls every
//! `every_secs` (or at once when `PUT /source/poll` asks) and reports every poll to the api.
//!
//! The `libcal` source keeps the bookings of the configured statuses, one per `bookId`, and
//! places each with its own api (`POST /bookings`, idempotent, with the worker's token). The
//! `teamleader` source copies records changed since its cursors (see [`teamleader`]).
//!
//! Unlike the integrations they replace, an error is never read as "nothing new": a poll whose
//! token, listing or answer fails is reported as failed (and retried at the next tick), and a
//! booking without a usable primary id is placed anyway, to be kept in `error` by the api.

pub mod teamleader;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use ferry_shared::source::{Libcal, Source, SourceStatus};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::client::{ApiClient, ClientError};

/// A token is fetched again this long before LibCal says it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);

/// One kind of source, polled by [`run`].
enum Poller {
    Libcal(LibcalClient),
    Teamleader(teamleader::TeamleaderClient),
}

pub async fn run(source: Source, api: ApiClient, shutdown: CancellationToken) {
    let (mut poller, every) = match source {
        Source::Libcal(cfg) => {
            let every = cfg.every_secs;
            (Poller::Libcal(LibcalClient::new(cfg)), every)
        }
        Source::Teamleader(cfg) => {
            let every = cfg.every_secs;
            let client = teamleader::TeamleaderClient::new(cfg, api.clone());
            (Poller::Teamleader(client), every)
        }
    };
    let mut status = SourceStatus::default();
    // Asks made before this worker started are not ours to answer.
    let mut seen = api
        .source_wait(0, 0)
        .await
        .map(|p| p.requested)
        .unwrap_or(0);
    // The number of the ask for a full resync this poll answers, if it does.
    let mut full = None;
    loop {
        let polled = match &mut poller {
            Poller::Libcal(libcal) => tokio::select! {
                r = libcal.poll(&api) => r.map(|(found, new)| {
                    (status.bookings_seen, status.bookings_new) = (found, new);
                    tracing::info!(found, new, "libcal polled");
                }),
                _ = shutdown.cancelled() => return,
            },
            Poller::Teamleader(tl) => tokio::select! {
                r = tl.poll(&api, full) => r.map(|(read, new)| {
                    (status.records_seen, status.records_new) = (read, new);
                    tracing::info!(read, new, full = full.is_some(), "teamleader polled");
                }),
                _ = shutdown.cancelled() => return,
            },
        };
        match polled {
            Ok(()) => status.last_error = None,
            Err(e) => {
                status.polls_failed += 1;
                status.last_error = Some(e.clone());
                tracing::warn!(error = %e, "source poll failed; trying again at the next tick");
            }
        }
        status.polls += 1;
        status.last_poll_at = Some(ferry_shared::rfc3339(ferry_shared::now_ms()));
        if let Err(e) = api.source_status(&status).await {
            tracing::warn!(error = %e, "could not report the poll to the api");
        }
        let tick = tokio::time::sleep(Duration::from_secs(every));
        full = None;
        tokio::select! {
            _ = tick => {}
            (asked, full_at) = asked_after(&api, seen) => {
                full = (full_at > seen).then_some(full_at);
                seen = asked;
            }
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Waits until the api has been asked for a poll after ask number `seen`; answers the latest
/// ask's number and that of the latest full resync.
async fn asked_after(api: &ApiClient, seen: u64) -> (u64, u64) {
    loop {
        match api.source_wait(seen, 25_000).await {
            Ok(p) if p.requested > seen => return (p.requested, p.full),
            // Nothing asked (the wait ran out, or the api is stopping and answered early).
            Ok(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

struct LibcalClient {
    cfg: Libcal,
    http: reqwest::Client,
    pattern: Option<regex_lite::Regex>,
    token: Option<(String, Instant)>,
}

impl LibcalClient {
    fn new(cfg: Libcal) -> Self {
        let pattern = cfg
            .primary_id_pattern
            .as_deref()
            .and_then(|p| regex_lite::Regex::new(p).ok());
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
            cfg,
            pattern,
            token: None,
        }
    }

    /// One poll: every location's bookings placed with the api. Answers how many were found
    /// and how many of them were new.
    async fn poll(&mut self, api: &ApiClient) -> Result<(u64, u64), String> {
        let mut seen = HashSet::new();
        let mut bookings = Vec::new();
        for lid in self.cfg.locations.clone() {
            for b in self.bookings(lid).await? {
                let status = b["status"].as_str().unwrap_or("");
                let Some(id) = b["bookId"].as_str().map(str::to_string) else {
                    continue;
                };
                // One booking in several seats is listed once per seat: one registration.
                if self.cfg.statuses.iter().any(|s| s == status) && seen.insert(id) {
                    bookings.push(b);
                }
            }
        }
        let (mut new, mut refused) = (0, Vec::new());
        for b in &bookings {
            match api.place_booking(&self.to_booking(b)).await {
                Ok(true) => new += 1,
                Ok(false) => {}
                Err(ClientError::Refused { code, detail, .. }) => {
                    tracing::warn!(book_id = %b["bookId"], %code, %detail, "booking refused by the api");
                    refused.push(format!("{}: {code}", b["bookId"].as_str().unwrap_or("?")));
                }
                Err(e) => return Err(format!("placing bookings: {e}")),
            }
        }
        if refused.is_empty() {
            Ok((bookings.len() as u64, new))
        } else {
            Err(format!(
                "{} booking(s) refused by the api: {}",
                refused.len(),
                refused.join(", ")
            ))
        }
    }

    /// What `POST /bookings` takes, from one LibCal booking.
    fn to_booking(&self, b: &Value) -> Value {
        let primary = match &b[&self.cfg.primary_id_field] {
            Value::String(s) => Some(s.trim().to_uppercase()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
        .filter(|p| !p.is_empty())
        .filter(|p| self.pattern.as_ref().is_none_or(|r| r.is_match(p)));
        json!({
            "bookId": b["bookId"], "fromDate": b["fromDate"], "toDate": b["toDate"],
            "firstName": b["firstName"], "lastName": b["lastName"], "email": b["email"],
            "lid": b["lid"], "primary_id": primary,
        })
    }

    /// Every booking of `lid` from today for `days` days, page by page until a short page.
    async fn bookings(&mut self, lid: u64) -> Result<Vec<Value>, String> {
        let date = chrono::Utc::now().format("%Y-%m-%d").to_string();
        let mut all = Vec::new();
        for page in 1.. {
            let url = format!(
                "{}/1.1/space/bookings?lid={lid}&date={date}&days={}&limit={}&page={page}&formAnswers=1",
                self.cfg.base_url, self.cfg.days, self.cfg.page_size
            );
            let body = self.get(&url).await?;
            let Value::Array(items) = body else {
                return Err(format!(
                    "LibCal answered location {lid} with something not a list"
                ));
            };
            let short = items.len() < self.cfg.page_size as usize;
            all.extend(items);
            if short {
                break;
            }
        }
        Ok(all)
    }

    /// A GET with the token, fetched again once on a 401.
    async fn get(&mut self, url: &str) -> Result<Value, String> {
        for fresh in [false, true] {
            let token = self.token(fresh).await?;
            let resp = self
                .http
                .get(url)
                .bearer_auth(&token)
                .send()
                .await
                .map_err(|e| format!("LibCal unreachable: {e}"))?;
            let status = resp.status().as_u16();
            if status == 401 && !fresh {
                continue;
            }
            let text = resp.text().await.unwrap_or_default();
            if !(200..300).contains(&status) {
                let excerpt: String = text.chars().take(200).collect();
                return Err(format!("LibCal answered {status}: {excerpt}"));
            }
            return serde_json::from_str(&text)
                .map_err(|e| format!("LibCal's answer is not JSON: {e}"));
        }
        unreachable!("the loop returns on its second pass")
    }

    /// The access token, kept until shortly before it expires; `fresh` fetches a new one.
    async fn token(&mut self, fresh: bool) -> Result<String, String> {
        if let (Some((t, until)), false) = (&self.token, fresh)
            && Instant::now() < *until
        {
            return Ok(t.clone());
        }
        self.token = None;
        let resp = self
            .http
            .post(format!("{}/1.1/oauth/token", self.cfg.base_url))
            .json(&json!({
                "client_id": self.cfg.client_id, "client_secret": self.cfg.client_secret,
                "grant_type": "client_credentials",
            }))
            .send()
            .await
            .map_err(|e| format!("LibCal unreachable: {e}"))?;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        match (body["access_token"].as_str(), body.get("error")) {
            (Some(t), None) if (200..300).contains(&status) => {
                let lasts = Duration::from_secs(body["expires_in"].as_u64().unwrap_or(3600));
                let until = Instant::now() + lasts.saturating_sub(TOKEN_MARGIN);
                self.token = Some((t.to_string(), until));
                Ok(t.to_string())
            }
            _ => Err(format!(
                "LibCal refused the client credentials ({status}): {body}"
            )),
        }
    }
}
