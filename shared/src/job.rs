//! The job: its identity, its states and what people and workers are shown of it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Secret;

/// A job's public id: a UUID v7, so ids sort by creation time (the queue listing relies on it).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(transparent)]
pub struct JobId(uuid::Uuid);

impl JobId {
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7())
    }
    pub fn from_bytes(b: [u8; 16]) -> Self {
        Self(uuid::Uuid::from_bytes(b))
    }
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
    pub fn parse(s: &str) -> Option<Self> {
        uuid::Uuid::parse_str(s).ok().map(Self)
    }

    /// When the id was made, in ms since the epoch: a UUID v7 starts with it. That is the job's
    /// creation (within a millisecond), read without its record.
    pub fn created_ms(&self) -> Option<i64> {
        if self.0.get_version_num() != 7 {
            return None;
        }
        let b = self.0.as_bytes();
        Some(i64::from_be_bytes([
            0, 0, b[0], b[1], b[2], b[3], b[4], b[5],
        ]))
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A lease's id: fences reports, so a worker whose lease expired cannot overwrite a newer attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
pub struct LeaseId(pub uuid::Uuid);

impl LeaseId {
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7())
    }
}

impl Default for LeaseId {
    fn default() -> Self {
        Self::new()
    }
}

/// The statuses upstream systems already know, plus `cleared` for jobs an operator removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Placed,
    Processing,
    Created,
    Error,
    Cleared,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Placed,
        Status::Processing,
        Status::Created,
        Status::Error,
        Status::Cleared,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Placed => "placed",
            Status::Processing => "processing",
            Status::Created => "created",
            Status::Error => "error",
            Status::Cleared => "cleared",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// A dense index, used for per-status counters and as the status byte in store keys.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Waiting or in flight: what counts against the queue's maximum.
    pub fn is_open(self) -> bool {
        matches!(self, Status::Placed | Status::Processing)
    }
}

/// What a job asks the target to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    OrderLine,
}

/// What an OilMat pumping asks for: `amount` of `product_nr` on `worksheet` in `workshop`'s ERP.
/// Built only by [`crate::validate::parse_create`], so its fields are always valid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderLine {
    pub uniqueid: String,
    /// The tenant's workshop: the one the order named, or this api's when it named none.
    pub workshop: String,
    /// The legacy client's `dealer`: a label it sends with every order (a fixed value such as
    /// "Gygag"), kept with the job for people to see and search, never compared with the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dealer: Option<String>,
    pub worksheet: String,
    pub product_nr: String,
    pub amount: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Some ERPs take the operator's own credentials per job (the legacy client sends them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret<String>>,
}

/// One transition in a job's history, as `GET /jobs/{id}/log` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    #[schema(format = DateTime)]
    pub at: String,
    pub from: Option<Status>,
    pub to: Status,
    pub attempt: u32,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excerpt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
}

/// A job as people and upstream systems see it: never a password.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    pub id: JobId,
    pub kind: JobKind,
    pub uniqueid: String,
    pub status: Status,
    pub workshop: String,
    /// The label the legacy client sent as `dealer`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dealer: Option<String>,
    pub worksheet: String,
    pub product_nr: String,
    pub amount: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    pub attempts: u32,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub next_attempt_at: Option<String>,
    /// Why a `placed` job is not being delivered now, when something holds it back (a stopped
    /// worker, no worker connected, a backoff before its next attempt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<String>,
}

/// How many jobs are in each status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Counts {
    pub placed: u64,
    pub processing: u64,
    pub created: u64,
    pub error: u64,
    pub cleared: u64,
}

impl Counts {
    /// From counters indexed by [`Status::index`].
    pub fn from_indexed(c: [u64; 5]) -> Self {
        Self {
            placed: c[Status::Placed.index()],
            processing: c[Status::Processing.index()],
            created: c[Status::Created.index()],
            error: c[Status::Error.index()],
            cleared: c[Status::Cleared.index()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_id_tells_when_it_was_made() {
        let before = crate::now_ms();
        let id = JobId::new();
        let after = crate::now_ms();
        let made = id.created_ms().unwrap();
        assert!(
            (before..=after).contains(&made),
            "{before} <= {made} <= {after}"
        );
        assert_eq!(JobId::from_bytes([0; 16]).created_ms(), None, "not a v7");
    }
}
