//! The worker protocol: JSON bodies of `/worker/lease`, `/worker/report` and `/worker/heartbeat`,
//! spoken over loopback HTTP between ferry-worker and its ferry-api.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::strict;

use crate::job::{JobId, LeaseId, Payload, Status};

pub const DEFAULT_LEASE_MAX: u32 = 32;
pub const MAX_LEASE_MAX: u32 = 512;
/// A killed worker's jobs come back within this, the api's 1 s expiry tick and the first retry
/// backoff (up to 1 s): under 30 s.
pub const DEFAULT_LEASE_MS: u64 = 25_000;
pub const MIN_LEASE_MS: u64 = 1_000;
pub const MAX_LEASE_MS: u64 = 600_000;
pub const MAX_WAIT_MS: u64 = 60_000;
/// The largest JSON body the api takes (`PAYLOAD_TOO_LARGE` above it); the worker splits its
/// reports to stay under it.
pub const MAX_BODY: usize = 64 * 1024;
/// Characters kept of a reason's text or an attempt's excerpt; of a reason code
/// [`MAX_REASON_CODE`], of a target's reference [`MAX_TARGET_REF`].
pub const MAX_TEXT: usize = 1_000;
pub const MAX_REASON_CODE: usize = 64;
pub const MAX_TARGET_REF: usize = 256;

/// What the api tells a worker to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Directive {
    /// Lease and deliver.
    Run,
    /// Finish what you hold, lease nothing more, ask again later (`PUT /stop_worker`).
    Pause,
    /// Finish what you hold, report it, exit 0 (`PUT /kill`).
    Exit,
}

fn default_max() -> u32 {
    DEFAULT_LEASE_MAX
}
fn default_lease_ms() -> u64 {
    DEFAULT_LEASE_MS
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LeaseRequest {
    /// Names the worker in job logs and fences its reports: 1 to 128 characters.
    #[schema(min_length = 1, max_length = 128, pattern = "\\S")]
    pub worker_id: String,
    /// The most jobs to lease at once.
    #[serde(default = "default_max")]
    #[schema(default = 32, minimum = 1, maximum = 512)]
    pub max: u32,
    /// Long-poll: wait up to this long for work when none is ready (woken at once by new work).
    /// The api waits at most half of `lease_ms`.
    #[serde(default)]
    #[schema(default = 0, minimum = 0, maximum = 60000)]
    pub wait_ms: u64,
    /// How long the worker holds each job before it goes back to the queue; heartbeats extend it.
    #[serde(default = "default_lease_ms")]
    #[schema(default = 25000, minimum = 1000, maximum = 600000)]
    pub lease_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LeasedJob {
    pub job_id: JobId,
    pub lease_id: LeaseId,
    #[schema(format = DateTime)]
    pub lease_expires_at: String,
    /// 1 on the first delivery attempt.
    pub attempt: u32,
    /// What to deliver, tagged with its kind. Unlike [`crate::job::JobView`], an order carries
    /// its ERP password: only the worker may use it.
    pub payload: Payload,
    /// When an operator last put the job back from `error` (ms since the epoch): a connector
    /// that stopped for a person to check something takes it as the go-ahead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retried_at_ms: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LeaseResponse {
    pub jobs: Vec<LeasedJob>,
    pub directive: Directive,
}

/// How one delivery attempt ended, as the connector's `classify` decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    Created {
        target_ref: String,
    },
    Retry {
        reason_code: String,
        reason_text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after_ms: Option<u64>,
    },
    Failed {
        reason_code: String,
        reason_text: String,
    },
    /// Nothing the job can do will help until something outside it changes (a person must give
    /// OAuth2 consent again): back to `placed` without spending an attempt, until `after_ms`
    /// (at most an hour) or until the api learns it changed.
    Wait {
        reason_code: String,
        reason_text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after_ms: Option<u64>,
    },
}

/// What the attempt looked like on the wire, for the job log.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AttemptDetail {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excerpt: Option<String>,
    /// What the connector saved of a failed attempt (a screenshot, the page), by name: served
    /// at `GET /jobs/{id}/artifacts/{name}`. The first 8 valid names are kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<String>,
}

/// Artifacts kept per attempt at most.
pub const MAX_ARTIFACTS: usize = 8;

/// A name an artifact may have: a PNG or an HTML file, lower-case letters, digits, `-`, `_` and
/// `.`, at most 100 characters, not starting with a dot.
pub fn is_artifact_name(name: &str) -> bool {
    name.len() <= 100
        && !name.starts_with('.')
        && (name.ends_with(".png") || name.ends_with(".html"))
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReportItem {
    pub job_id: JobId,
    pub lease_id: LeaseId,
    #[serde(deserialize_with = "strict::object")]
    pub outcome: Outcome,
    #[serde(default, deserialize_with = "strict::object")]
    pub detail: AttemptDetail,
}

impl ReportItem {
    /// The item as the api keeps it: texts clipped, only valid artifact names and at most
    /// [`MAX_ARTIFACTS`] of them. A clipped item's JSON is a few KiB at most, far under
    /// [`MAX_BODY`].
    pub fn clip(&mut self) {
        match &mut self.outcome {
            Outcome::Created { target_ref } => clip(target_ref, MAX_TARGET_REF),
            Outcome::Retry {
                reason_code,
                reason_text,
                ..
            }
            | Outcome::Failed {
                reason_code,
                reason_text,
            }
            | Outcome::Wait {
                reason_code,
                reason_text,
                ..
            } => {
                clip(reason_code, MAX_REASON_CODE);
                clip(reason_text, MAX_TEXT);
            }
        }
        if let Some(excerpt) = &mut self.detail.excerpt {
            clip(excerpt, MAX_TEXT);
        }
        let artifacts = &mut self.detail.artifacts;
        artifacts.retain(|n| is_artifact_name(n));
        artifacts.truncate(MAX_ARTIFACTS);
    }
}

/// Cuts `s` to `max` characters, ending it with `…` when something was cut.
pub fn clip(s: &mut String, max: usize) {
    if s.len() <= max {
        return; // no more characters than bytes
    }
    if let Some((i, _)) = s.char_indices().nth(max) {
        s.truncate(i);
        s.push('…');
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReportRequest {
    #[schema(min_length = 1, max_length = 128, pattern = "\\S")]
    pub worker_id: String,
    #[serde(deserialize_with = "strict::objects")]
    pub results: Vec<ReportItem>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReportAck {
    pub job_id: JobId,
    pub accepted: bool,
    /// The job's status after the report (or now, when refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// `STALE_LEASE` or `JOB_NOT_FOUND` when refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReportResponse {
    pub results: Vec<ReportAck>,
    pub directive: Directive,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatRequest {
    #[schema(min_length = 1, max_length = 128, pattern = "\\S")]
    pub worker_id: String,
    #[serde(default)]
    pub lease_ids: Vec<LeaseId>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatResponse {
    pub extended: Vec<LeaseId>,
    /// Leases this worker no longer holds (expired and handed back): stop reporting on them.
    pub lost: Vec<LeaseId>,
    pub directive: Directive,
}

/// Connector state: a small value the worker keeps in its api (OAuth tokens, id maps, cursors),
/// so a restarted or second worker never acts on a stale one. `GET /worker/state/{key}` answers
/// it; an absent key has `version` 0 and `value` `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StateValue {
    pub key: String,
    /// Any JSON; `null` when absent.
    pub value: serde_json::Value,
    /// 1 after the first write, +1 after each; 0 when absent.
    pub version: u64,
}

/// `PUT /worker/state/{key}`: compare-and-swap. Written only if the key is still at `version`
/// (0: still absent); `value` `null` deletes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatePut {
    /// Any JSON; `null` deletes the key.
    pub value: serde_json::Value,
    #[schema(minimum = 0)]
    pub version: u64,
}

/// `POST /worker/source/wait`: wait up to `wait_ms` for more polls to be asked for than `seen`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SourceWait {
    #[schema(minimum = 0)]
    pub seen: u64,
    #[serde(default)]
    #[schema(default = 0, minimum = 0, maximum = 60000)]
    pub wait_ms: u64,
}

/// The longest state key: ASCII letters, digits and `._:-`.
pub const MAX_STATE_KEY: usize = 200;

/// Whether `key` is a usable state key.
pub fn valid_state_key(key: &str) -> bool {
    (1..=MAX_STATE_KEY).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

#[cfg(test)]
mod tests {
    use utoipa::PartialSchema;

    use super::*;

    /// The document states the bounds as literals (utoipa takes no constants there): they must be
    /// the bounds the api enforces.
    #[test]
    fn the_documented_lease_bounds_are_the_enforced_ones() {
        let doc = serde_json::to_value(LeaseRequest::schema()).unwrap();
        let p = &doc["properties"];
        assert_eq!(p["max"]["minimum"], 1);
        assert_eq!(p["max"]["maximum"], MAX_LEASE_MAX);
        assert_eq!(p["max"]["default"], DEFAULT_LEASE_MAX);
        assert_eq!(p["wait_ms"]["maximum"], MAX_WAIT_MS);
        assert_eq!(p["lease_ms"]["minimum"], MIN_LEASE_MS);
        assert_eq!(p["lease_ms"]["maximum"], MAX_LEASE_MS);
        assert_eq!(p["lease_ms"]["default"], DEFAULT_LEASE_MS);
    }

    #[test]
    fn clip_cuts_on_characters_and_once() {
        let mut s = "é".repeat(MAX_TEXT + 5);
        clip(&mut s, MAX_TEXT);
        assert_eq!(s, format!("{}…", "é".repeat(MAX_TEXT)));
        let once = s.clone();
        clip(&mut s, MAX_TEXT);
        assert_eq!(s, once, "clipping what the worker clipped changes nothing");
        let mut short = "é".repeat(MAX_TEXT);
        clip(&mut short, MAX_TEXT);
        assert_eq!(short, "é".repeat(MAX_TEXT));
    }

    /// The worst a connector can send (every text long, every character escaped in JSON) fits
    /// many times over in one body once clipped: a report of one item is never refused.
    #[test]
    fn a_clipped_item_is_far_under_the_body_limit() {
        let valid = format!("{}.png", "a".repeat(96));
        let mut item = ReportItem {
            job_id: JobId::new(),
            lease_id: LeaseId::new(),
            outcome: Outcome::Failed {
                reason_code: "\u{1}".repeat(10_000),
                reason_text: "\u{1}".repeat(100_000),
            },
            detail: AttemptDetail {
                http_status: Some(500),
                duration_ms: Some(1),
                excerpt: Some("\u{1}".repeat(100_000)),
                artifacts: [vec!["../x.png".to_string()], vec![valid.clone(); 20]].concat(),
            },
        };
        item.clip();
        let Outcome::Failed {
            reason_code,
            reason_text,
        } = &item.outcome
        else {
            unreachable!()
        };
        assert_eq!(reason_code.chars().count(), MAX_REASON_CODE + 1);
        assert_eq!(reason_text.chars().count(), MAX_TEXT + 1);
        assert_eq!(item.detail.artifacts, vec![valid; MAX_ARTIFACTS]);
        let json = serde_json::to_vec(&item).unwrap();
        assert!(json.len() < MAX_BODY / 4, "{} bytes", json.len());
    }
}
