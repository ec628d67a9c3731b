//! Alma's patron lookup for the `passagepoint` connector: `GET /almaws/v1/users/{primary_id}` with
//! each institution zone's key in turn (the next only when the patron is unknown in this one),
//! at most `per_second` calls a second per key, found patrons cached for `cache_hours`. Failures
//! are never cached, and an error answer is never read as "no such patron".

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ferry_shared::passagepoint::Alma as AlmaConfig;
use serde_json::Value;

/// What the connector needs of a patron.
#[derive(Debug, Clone, PartialEq)]
pub struct Patron {
    pub barcode: String,
    /// The user group's description (`gw und`), mapped to a PassagePoint category.
    pub group: Option<String>,
}

/// How a lookup ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    Found(Patron),
    /// Will not change by trying again (a reason code and its text).
    Failed(&'static str, String),
    /// Try again after `after_ms`.
    Retry(&'static str, String, u64),
}

/// One answer of Alma, classified (a pure function of status and body).
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Found {
        barcode: Option<String>,
        group: Option<String>,
    },
    /// Unknown in this key's zone (`401861`, `401890`).
    NotHere,
    PerSecond,
    Daily,
    Other {
        retry: bool,
        text: String,
    },
}

pub fn classify(status: u16, body: &str) -> Answer {
    let json: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    if (200..300).contains(&status) && json.get("record_type").is_some() {
        let barcode = json["user_identifier"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| i["id_type"]["value"] == "BARCODE")
            .and_then(|i| i["value"].as_str())
            .map(str::to_string)
            .filter(|b| !b.trim().is_empty());
        let group = json["user_group"]["desc"].as_str().map(str::to_string);
        return Answer::Found { barcode, group };
    }
    // `errorList.error` is an array, or (as clients have seen) a single object.
    let errors: Vec<&Value> = match &json["errorList"]["error"] {
        Value::Array(a) => a.iter().collect(),
        Value::Null => Vec::new(),
        one => vec![one],
    };
    let codes: Vec<&str> = errors
        .iter()
        .filter_map(|e| e["errorCode"].as_str())
        .collect();
    let text = errors
        .iter()
        .filter_map(|e| e["errorMessage"].as_str())
        .collect::<Vec<_>>()
        .join("; ");
    let text = if text.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {text}")
    };
    if codes.contains(&"PER_SECOND_THRESHOLD") {
        Answer::PerSecond
    } else if codes.contains(&"DAILY_THRESHOLD") {
        Answer::Daily
    } else if codes.iter().any(|c| ["401861", "401890"].contains(c)) {
        Answer::NotHere
    } else {
        Answer::Other {
            retry: status == 429 || status >= 500 || status == 408,
            text,
        }
    }
}

/// Milliseconds until the next midnight (UTC), when Alma's daily budget is renewed.
fn until_midnight_ms() -> u64 {
    let now = chrono::Utc::now();
    let tomorrow = (now.date_naive() + chrono::Days::new(1))
        .and_hms_opt(0, 0, 0)
        .unwrap_or_default()
        .and_utc();
    (tomorrow - now).num_milliseconds().max(1_000) as u64
}

pub struct Alma {
    cfg: AlmaConfig,
    http: reqwest::Client,
    timeout: Duration,
    /// Per key: when its calls of the last second were made.
    recent: Vec<tokio::sync::Mutex<VecDeque<Instant>>>,
    cache: Mutex<HashMap<String, (Patron, Instant)>>,
    /// One lookup at a time per patron: ten bookings of one patron delivered at once wait for
    /// the first lookup and take its answer from the cache (one call, not ten).
    inflight: Mutex<HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>,
    /// The last `X-Exl-Api-Remaining` Alma sent.
    pub remaining: Mutex<Option<u64>>,
}

impl Alma {
    pub fn new(cfg: AlmaConfig, http: reqwest::Client, timeout: Duration) -> Self {
        let recent = cfg
            .api_keys
            .iter()
            .map(|_| tokio::sync::Mutex::new(VecDeque::new()))
            .collect();
        Self {
            cfg,
            http,
            timeout,
            recent,
            cache: Mutex::default(),
            inflight: Mutex::default(),
            remaining: Mutex::default(),
        }
    }

    /// Waits until key `i` may make a call within `per_second`.
    async fn throttle(&self, i: usize) {
        let mut recent = self.recent[i].lock().await;
        let second = Duration::from_secs(1);
        loop {
            let now = Instant::now();
            while recent
                .front()
                .is_some_and(|t| now.duration_since(*t) >= second)
            {
                recent.pop_front();
            }
            if recent.len() < self.cfg.per_second as usize {
                recent.push_back(now);
                return;
            }
            if let Some(oldest) = recent.front() {
                tokio::time::sleep(second.saturating_sub(now.duration_since(*oldest))).await;
            }
        }
    }

    fn cached(&self, primary_id: &str) -> Option<Patron> {
        let ttl = Duration::from_secs(u64::from(self.cfg.cache_hours) * 3600);
        let (patron, at) = self.cache.lock().ok()?.get(primary_id).cloned()?;
        (at.elapsed() < ttl).then_some(patron)
    }

    pub async fn lookup(&self, primary_id: &str) -> Lookup {
        if let Some(p) = self.cached(primary_id) {
            return Lookup::Found(p);
        }
        let gate = match self.inflight.lock() {
            Ok(mut m) => m.entry(primary_id.to_string()).or_default().clone(),
            Err(_) => std::sync::Arc::default(),
        };
        let _turn = gate.lock().await;
        if let Some(p) = self.cached(primary_id) {
            return Lookup::Found(p);
        }
        let answer = self.call(primary_id).await;
        if let Ok(mut m) = self.inflight.lock() {
            m.remove(primary_id);
        }
        answer
    }

    /// Asks each zone in turn; caches what it finds.
    async fn call(&self, primary_id: &str) -> Lookup {
        let url = format!(
            "{}/almaws/v1/users/{}",
            self.cfg.base_url,
            percent_encoding::utf8_percent_encode(primary_id, percent_encoding::NON_ALPHANUMERIC)
        );
        for (i, key) in self.cfg.api_keys.iter().enumerate() {
            self.throttle(i).await;
            let resp = self
                .http
                .get(&url)
                .timeout(self.timeout)
                .header("Authorization", format!("apikey {key}"))
                .header("Accept", "application/json")
                .send()
                .await;
            let resp = match resp {
                Ok(r) => r,
                Err(e) => return Lookup::Retry("ALMA_UNAVAILABLE", e.to_string(), 0),
            };
            if let Some(left) = resp
                .headers()
                .get("x-exl-api-remaining")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                && let Ok(mut r) = self.remaining.lock()
            {
                *r = Some(left);
            }
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            match classify(status, &body) {
                Answer::Found {
                    barcode: Some(barcode),
                    group,
                } => {
                    let patron = Patron { barcode, group };
                    if let Ok(mut c) = self.cache.lock() {
                        c.insert(primary_id.to_string(), (patron.clone(), Instant::now()));
                    }
                    return Lookup::Found(patron);
                }
                Answer::Found { barcode: None, .. } => {
                    return Lookup::Failed(
                        "ALMA_NO_BARCODE",
                        format!("Alma has patron {primary_id} but no barcode for them"),
                    );
                }
                Answer::NotHere => continue,
                Answer::PerSecond => {
                    return Lookup::Retry(
                        "ALMA_RATE_LIMITED",
                        "Alma: more calls than allowed per second".into(),
                        1_000,
                    );
                }
                Answer::Daily => {
                    return Lookup::Retry(
                        "ALMA_DAILY_LIMIT",
                        "Alma's daily call budget is used up; trying after midnight".into(),
                        until_midnight_ms(),
                    );
                }
                Answer::Other { retry: true, text } => {
                    return Lookup::Retry("ALMA_UNAVAILABLE", text, 0);
                }
                Answer::Other { retry: false, text } => {
                    return Lookup::Failed("ALMA_REJECTED", text);
                }
            }
        }
        Lookup::Failed(
            "USER_NOT_FOUND",
            format!(
                "no patron {primary_id} in any of Alma's {} institution zone(s)",
                self.cfg.api_keys.len()
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alma_answers_are_classified_whatever_the_shape_of_their_error_list() {
        let found = r#"{"record_type":{"value":"PUBLIC"},"user_group":{"desc":"gw und"},"user_identifier":[{"id_type":{"value":"OTHER"},"value":"x"},{"id_type":{"value":"BARCODE"},"value":"2282"}]}"#;
        let no_barcode = r#"{"record_type":{"value":"PUBLIC"},"user_identifier":[]}"#;
        let array = r#"{"errorsExist":true,"errorList":{"error":[{"errorCode":"401861","errorMessage":"User with identifier X was not found."}]}}"#;
        let single = r#"{"errorsExist":true,"errorList":{"error":{"errorCode":"401861","errorMessage":"not found"}}}"#;
        let per_second = r#"{"errorList":{"error":[{"errorCode":"PER_SECOND_THRESHOLD"}]}}"#;
        let daily = r#"{"errorList":{"error":{"errorCode":"DAILY_THRESHOLD"}}}"#;
        let table = [
            (
                200,
                found,
                Answer::Found {
                    barcode: Some("2282".into()),
                    group: Some("gw und".into()),
                },
            ),
            (
                200,
                no_barcode,
                Answer::Found {
                    barcode: None,
                    group: None,
                },
            ),
            (400, array, Answer::NotHere),
            (400, single, Answer::NotHere),
            (429, per_second, Answer::PerSecond),
            (429, daily, Answer::Daily),
            (
                503,
                "<html>busy</html>",
                Answer::Other {
                    retry: true,
                    text: "HTTP 503".into(),
                },
            ),
            (
                401,
                r#"{"errorList":{"error":[{"errorCode":"UNAUTHORIZED","errorMessage":"bad key"}]}}"#,
                Answer::Other {
                    retry: false,
                    text: "HTTP 401: bad key".into(),
                },
            ),
            (
                200,
                "{}",
                Answer::Other {
                    retry: false,
                    text: "HTTP 200".into(),
                },
            ),
        ];
        for (status, body, want) in table {
            assert_eq!(classify(status, body), want, "{status} {body}");
        }
    }

    #[test]
    fn the_daily_budget_comes_back_within_a_day() {
        let ms = until_midnight_ms();
        assert!((1_000..=86_400_000).contains(&ms), "{ms}");
    }
}
