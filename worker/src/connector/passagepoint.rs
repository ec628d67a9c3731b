//! `passagepoint`: a booking becomes a visitor pre-registration at the door. The patron is looked
//! up in Alma (barcode, user group), the visitor is created in PassagePoint (or found by its
//! unique id, the barcode, when it exists), then the pre-registration is made.
//!
//! Exactly once, though PassagePoint never de-duplicates pre-registrations: the connector keeps
//! `bookId → pre-registration` and `primary id → visitor` in connector state, held by the api,
//! written before the job is reported. Before it asks PassagePoint for a pre-registration it
//! marks the booking `pending`; an error answer clears the mark, the answer's id replaces it. A
//! later attempt that finds the id reports it without calling PassagePoint again; one that finds
//! a mark without an id cannot know whether PassagePoint made the pre-registration (the worker
//! died, or the connection broke, while asking), so the job ends in `error` with
//! `PREREG_UNCERTAIN` for a person to check, never a second pre-registration.
//!
//! PassagePoint logs in once (`token` header) and again on a 401, and the renewed call's answer
//! is the one used.

use std::time::{Duration, Instant};

use ferry_shared::job::{Booking, Payload};
use ferry_shared::passagepoint::PassagePoint;
use ferry_shared::protocol::{AttemptDetail, LeasedJob, Outcome};
use serde_json::{Value, json};

use super::alma::{Alma, Lookup};
use crate::client::{ApiClient, ClientError};

/// Characters of an answer kept in the job log.
const EXCERPT_CHARS: usize = 300;

pub struct PassagePointConnector {
    cfg: PassagePoint,
    http: reqwest::Client,
    alma: Alma,
    api: ApiClient,
    timeout: Duration,
    token: tokio::sync::Mutex<Option<String>>,
    /// When `status:alma` was last written.
    alma_published: tokio::sync::Mutex<Option<Instant>>,
}

/// One PassagePoint call's answer.
#[derive(Debug)]
enum Answer {
    Http { status: u16, body: String },
    Transport(String),
}

/// A step that did not succeed: the job's outcome.
type Stop = Outcome;

fn retry(code: &str, text: impl Into<String>, after_ms: Option<u64>) -> Stop {
    Outcome::Retry {
        reason_code: code.into(),
        reason_text: text.into(),
        after_ms,
    }
}

fn failed(code: &str, text: impl Into<String>) -> Stop {
    Outcome::Failed {
        reason_code: code.into(),
        reason_text: text.into(),
    }
}

/// The id in `{"data":[{"id"}]}` or a bare `[{"id"}]` (PassagePoint answers both); ids come as
/// strings or numbers.
pub fn extract_id(body: &str) -> Option<String> {
    let json: Value = serde_json::from_str(body).ok()?;
    let first = match &json {
        Value::Array(a) => a.first()?,
        other => other["data"].as_array()?.first()?,
    };
    match &first["id"] {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// What a PassagePoint answer means for the job: the new id, or the outcome.
fn classify(answer: &Answer, what: &str) -> Result<String, Stop> {
    match answer {
        Answer::Transport(e) => Err(retry("PP_UNAVAILABLE", format!("{what}: {e}"), None)),
        Answer::Http { status, body } if (200..300).contains(status) => extract_id(body)
            .ok_or_else(|| {
                failed(
                    "PP_BAD_ANSWER",
                    format!("{what}: no id in {}", excerpt(body)),
                )
            }),
        Answer::Http {
            status: 401 | 403,
            body,
        } => Err(failed(
            "PP_AUTH_FAILED",
            format!("{what}: refused after logging in again: {}", excerpt(body)),
        )),
        Answer::Http { status, body } if *status == 408 || *status == 429 || *status >= 500 => {
            Err(retry(
                "PP_UNAVAILABLE",
                format!("{what}: HTTP {status}: {}", excerpt(body)),
                None,
            ))
        }
        Answer::Http { status, body } => Err(failed(
            "PP_REJECTED",
            format!("{what}: HTTP {status}: {}", excerpt(body)),
        )),
    }
}

/// `k=v&k=v`, values percent-encoded (createVisitor takes its fields in the query string).
fn query_string(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn excerpt(s: &str) -> String {
    s.chars().take(EXCERPT_CHARS).collect()
}

/// A connector state key for `kind` and an id: ids keep the characters keys take, others are
/// written as hex, so two ids never share a key.
fn state_key(kind: &str, id: &str) -> String {
    if id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && id.len() < 180
    {
        format!("{kind}:{id}")
    } else {
        let hex: String = id.bytes().map(|b| format!("{b:02x}")).collect();
        format!("{kind}:x{}", &hex[..hex.len().min(360)])
    }
}

impl PassagePointConnector {
    pub fn new(cfg: PassagePoint, ctx: super::Ctx) -> Self {
        let timeout = Duration::from_millis(cfg.timeout_ms);
        Self {
            alma: Alma::new(cfg.alma.clone(), ctx.http.clone(), timeout),
            cfg,
            http: ctx.http,
            api: ctx.api,
            timeout,
            token: tokio::sync::Mutex::default(),
            alma_published: tokio::sync::Mutex::default(),
        }
    }

    pub async fn deliver(&self, job: &LeasedJob) -> (Outcome, AttemptDetail) {
        let started = Instant::now();
        let Payload::Booking(booking) = &job.payload else {
            return super::not_taken(job, "passagepoint");
        };
        let (outcome, excerpt) = match self.register(booking, job.retried_at_ms).await {
            Ok((id, note)) => (Outcome::Created { target_ref: id }, note),
            Err(stop) => (stop, None),
        };
        let detail = AttemptDetail {
            duration_ms: Some(started.elapsed().as_millis() as u64),
            excerpt,
            ..AttemptDetail::default()
        };
        (outcome, detail)
    }

    /// The pre-registration's id (and a note for the log), or why there is none.
    async fn register(
        &self,
        b: &Booking,
        retried_at_ms: Option<i64>,
    ) -> Result<(String, Option<String>), Stop> {
        let destination = self
            .cfg
            .destinations
            .get(&b.lid.to_string())
            .ok_or_else(|| {
                failed(
                    "DESTINATION_UNMAPPED",
                    format!("LibCal location {} has no PassagePoint destination", b.lid),
                )
            })?;
        let primary_id = b.primary_id.as_deref().ok_or_else(|| {
            failed(
                "BOOKING_MISSING_PRIMARY_ID",
                "the booking has no primary id",
            )
        })?;
        let (start, end) = b
            .epoch_secs()
            .ok_or_else(|| failed("BOOKING_BAD_TIMES", "fromDate or toDate is not a date-time"))?;

        let prereg_key = state_key("prereg", &b.book_id);
        let (mark, version) = self.read_state(&prereg_key).await?;
        if let Some(id) = mark["id"].as_str() {
            return Ok((
                id.to_string(),
                Some("already pre-registered: found in connector state".into()),
            ));
        }
        // An operator's retry after the mark was made is their word that there is none.
        let confirmed =
            retried_at_ms.is_some_and(|r| mark["at_ms"].as_i64().is_some_and(|at| r > at));
        if mark["pending"] == true && !confirmed {
            return Err(failed(
                "PREREG_UNCERTAIN",
                format!(
                    "an earlier attempt asked PassagePoint for this pre-registration (visitor {}) \
                     and stopped before its answer was kept; check PassagePoint, then retry the \
                     job if there is none (a retry is taken as that word)",
                    mark["visitor"].as_str().unwrap_or("?")
                ),
            ));
        }

        let lookup = self.alma.lookup(primary_id).await;
        self.publish_alma(&lookup).await;
        let patron = match lookup {
            Lookup::Found(p) => p,
            Lookup::Failed(code, text) => return Err(failed(code, text)),
            Lookup::Retry(code, text, after) => {
                return Err(retry(code, text, (after > 0).then_some(after)));
            }
        };
        let visitor = self.visitor(b, primary_id, &patron, end).await?;

        // From here until its answer is kept, PassagePoint may make a pre-registration we
        // would not know of: mark it, so no later attempt makes a second one.
        let pending = json!({"pending": true, "visitor": visitor, "at_ms": ferry_shared::now_ms()});
        let version = self.write_state(&prereg_key, pending, version).await?;
        let body = json!({
            "startTime": start.to_string(), "endTime": end.to_string(),
            "visitorId": visitor, "destination": destination,
        });
        let answer = self
            .call(|http, base| {
                http.post(format!("{base}/pp/api/v2/visit/createPreReg"))
                    .json(&body)
            })
            .await;
        let id = match (&answer, classify(&answer, "createPreReg")) {
            (_, Ok(id)) => id,
            (Answer::Http { .. }, Err(stop)) => {
                // PassagePoint answered with an error: nothing was made; clear the mark.
                self.write_state(&prereg_key, Value::Null, version).await?;
                return Err(stop);
            }
            (Answer::Transport(e), Err(_)) => {
                return Err(failed(
                    "PREREG_UNCERTAIN",
                    format!(
                        "the pre-registration request for visitor {visitor} got no answer ({e}); \
                         check PassagePoint, then retry the job if there is none"
                    ),
                ));
            }
        };
        // Kept `keep_days` past the appointment; the api prunes it after `expires_ms`.
        let expires_ms = end * 1000 + i64::from(self.cfg.keep_days) * 86_400_000;
        let done = json!({"id": id, "visitor": visitor, "expires_ms": expires_ms});
        self.keep(&prereg_key, done, version).await?;
        Ok((id, None))
    }

    /// The patron's visitor id: kept from before, made now, or found by its unique id (the
    /// barcode) when PassagePoint already has it.
    async fn visitor(
        &self,
        b: &Booking,
        primary_id: &str,
        patron: &super::alma::Patron,
        end: i64,
    ) -> Result<String, Stop> {
        let key = state_key("visitor", primary_id);
        let (known, version) = self.read_state(&key).await?;
        if let Some(id) = known["id"].as_str() {
            return Ok(id.to_string());
        }
        let category = patron
            .group
            .as_ref()
            .and_then(|g| self.cfg.categories.get(&g.to_lowercase()))
            .unwrap_or(&self.cfg.default_category);
        let query = [
            ("category", category.as_str()),
            ("firstName", b.first_name.as_str()),
            ("lastName", b.last_name.as_str()),
            ("email", b.email.as_str()),
            ("mobilePhoneNo", primary_id),
            ("uniqueId", patron.barcode.as_str()),
        ];
        let answer = self
            .call(|http, base| {
                http.post(format!(
                    "{base}/pp/api/v2/person/createVisitor?{}",
                    query_string(&query)
                ))
            })
            .await;
        let exists = matches!(&answer, Answer::Http { status, body }
            if !(200..300).contains(status) && body.contains("ALREADY_EXIST_UNIQUE_ID"));
        let id = if exists {
            let found = self
                .call(|http, base| {
                    http.get(format!(
                        "{base}/pp/api/v2/person/byUniqueId?{}",
                        query_string(&[("uniqueId", patron.barcode.as_str())])
                    ))
                })
                .await;
            classify(&found, "byUniqueId")?
        } else {
            classify(&answer, "createVisitor")?
        };
        // A lost race means another worker kept the same visitor: nothing to do.
        let expires_ms = end * 1000 + i64::from(self.cfg.keep_days) * 86_400_000;
        let mapping = json!({"id": id, "expires_ms": expires_ms});
        match self.write_state(&key, mapping, version).await {
            Ok(_) | Err(Outcome::Retry { .. }) => Ok(id),
            Err(other) => Err(other),
        }
    }

    /// Calls PassagePoint with the current token, logging in first when there is none and
    /// again (once) on a 401: the answer of the renewed call is the one returned.
    async fn call(
        &self,
        build: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    ) -> Answer {
        for fresh in [false, true] {
            let token = match self.token(fresh).await {
                Ok(t) => t,
                Err(answer) => return answer,
            };
            let answer = match build(&self.http, &self.cfg.base_url)
                .timeout(self.timeout)
                .header("token", &token)
                .send()
                .await
            {
                Ok(r) => {
                    let status = r.status().as_u16();
                    Answer::Http {
                        status,
                        body: r.text().await.unwrap_or_default(),
                    }
                }
                Err(e) => Answer::Transport(e.to_string()),
            };
            if !matches!(answer, Answer::Http { status: 401, .. }) || fresh {
                return answer;
            }
        }
        unreachable!("the loop returns on its second pass")
    }

    /// The session token; `fresh` logs in again.
    async fn token(&self, fresh: bool) -> Result<String, Answer> {
        let mut token = self.token.lock().await;
        if let (Some(t), false) = (token.as_ref(), fresh) {
            return Ok(t.clone());
        }
        let resp = self
            .http
            .post(format!("{}/pp/api/v2/auth/login", self.cfg.base_url))
            .timeout(self.timeout)
            .json(&json!({"username": self.cfg.username, "password": self.cfg.password}))
            .send()
            .await
            .map_err(|e| Answer::Transport(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        let t = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["token"].as_str().map(str::to_string))
            .filter(|_| (200..300).contains(&status));
        match t {
            Some(t) => {
                *token = Some(t.clone());
                Ok(t)
            }
            None => {
                *token = None;
                // A login refused is an auth failure; a server error stays one (retried).
                let status = if status >= 500 { status } else { 401 };
                Err(Answer::Http { status, body })
            }
        }
    }

    /// Tells the api what Alma said of its budget (`status:alma`, shown in `/alive` and
    /// `/metrics`): at once when the daily budget runs out, else at most once a minute.
    async fn publish_alma(&self, lookup: &Lookup) {
        let daily = matches!(lookup, Lookup::Retry("ALMA_DAILY_LIMIT", _, _));
        {
            let mut last = self.alma_published.lock().await;
            if !daily && last.is_some_and(|t| t.elapsed() < Duration::from_secs(60)) {
                return;
            }
            *last = Some(Instant::now());
        }
        let now = ferry_shared::now_ms();
        let mut status = json!({"expires_ms": now + 2 * 86_400_000, "gauges": {}});
        if let Some(left) = self.alma.remaining.lock().ok().and_then(|r| *r) {
            status["gauges"]["alma_api_remaining"] = json!(left);
        }
        if let Lookup::Retry("ALMA_DAILY_LIMIT", _, after) = lookup {
            let until = now + *after as i64;
            status["note"] = json!(format!(
                "Alma's daily API budget is used up: bookings wait until {}",
                ferry_shared::rfc3339(until)
            ));
            status["until_ms"] = json!(until);
        }
        // Best effort: the last writer wins; a failure here delays nothing.
        if let Ok((_, version)) = self.read_state("status:alma").await {
            let _ = self.write_state("status:alma", status, version).await;
        }
    }

    async fn read_state(&self, key: &str) -> Result<(Value, u64), Stop> {
        self.api
            .state(key)
            .await
            .map(|s| (s.value, s.version))
            .map_err(|e| retry("STATE_UNAVAILABLE", e.to_string(), None))
    }

    /// Compare-and-swap; a lost race is a retry (another worker is on this job's key).
    async fn write_state(&self, key: &str, value: Value, version: u64) -> Result<u64, Stop> {
        match self.api.put_state(key, value, version).await {
            Ok(s) => Ok(s.version),
            Err(ClientError::Refused { code, detail, .. }) if code == "STATE_CONFLICT" => {
                Err(retry("STATE_CONFLICT", detail, Some(1_000)))
            }
            Err(e) => Err(retry("STATE_UNAVAILABLE", e.to_string(), None)),
        }
    }

    /// Keeps a pre-registration's id, trying for a while when the api is briefly away: losing
    /// it would leave the booking `PREREG_UNCERTAIN`.
    async fn keep(&self, key: &str, value: Value, version: u64) -> Result<(), Stop> {
        let mut wait = Duration::from_millis(100);
        for _ in 0..8 {
            match self.write_state(key, value.clone(), version).await {
                Ok(_) => return Ok(()),
                Err(Outcome::Retry { reason_code, .. }) if reason_code == "STATE_UNAVAILABLE" => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                Err(other) => return Err(other),
            }
        }
        Err(failed(
            "PREREG_UNCERTAIN",
            format!(
                "pre-registration {} was made but could not be kept",
                value["id"]
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_read_from_both_answer_shapes() {
        assert_eq!(
            extract_id(r#"{"data":[{"id":"137505764541138"}]}"#).as_deref(),
            Some("137505764541138")
        );
        assert_eq!(
            extract_id(r#"[{"id":42,"uniqueId":"2282"}]"#).as_deref(),
            Some("42")
        );
        assert_eq!(extract_id(r#"{"data":[]}"#), None);
        assert_eq!(extract_id("[]"), None);
        assert_eq!(extract_id("not json"), None);
    }

    #[test]
    fn passagepoint_answers_are_classified() {
        let http = |status, body: &str| Answer::Http {
            status,
            body: body.into(),
        };
        let code = |r: Result<String, Stop>| match r {
            Ok(id) => format!("ok {id}"),
            Err(Outcome::Retry { reason_code, .. }) => format!("retry {reason_code}"),
            Err(Outcome::Failed { reason_code, .. }) => format!("failed {reason_code}"),
            Err(Outcome::Created { .. } | Outcome::Wait { .. }) => unreachable!(),
        };
        let table = [
            (http(200, r#"{"data":[{"id":"PR-1"}]}"#), "ok PR-1"),
            (http(200, r#"{"error":"x"}"#), "failed PP_BAD_ANSWER"),
            (http(401, "{}"), "failed PP_AUTH_FAILED"),
            (http(503, "busy"), "retry PP_UNAVAILABLE"),
            (http(429, ""), "retry PP_UNAVAILABLE"),
            (
                http(400, r#"{"error":"no destination"}"#),
                "failed PP_REJECTED",
            ),
            (Answer::Transport("reset".into()), "retry PP_UNAVAILABLE"),
        ];
        for (answer, want) in table {
            assert_eq!(code(classify(&answer, "call")), want, "{answer:?}");
        }
    }

    #[test]
    fn state_keys_never_merge_two_ids() {
        assert_eq!(state_key("prereg", "cs_lxjj8ycJ"), "prereg:cs_lxjj8ycJ");
        assert_eq!(state_key("visitor", "G00000002"), "visitor:G00000002");
        assert_eq!(state_key("prereg", "a b"), "prereg:x612062");
        assert_ne!(state_key("prereg", "a/b"), state_key("prereg", "a_b"));
    }
}
