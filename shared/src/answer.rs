//! The `data` of ferry-api's answers to operators and the management system (jobs themselves are
//! [`crate::job::JobView`]; the worker's answers are in [`crate::protocol`]).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::job::{Counts, EventView, JobId, JobView, Status};

/// `GET /alive`: is this tenant's pair healthy, and how far behind is it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Alive {
    /// The workshop this api serves.
    pub tenant: String,
    /// The tenant's name as used in paths and metric labels.
    pub slug: String,
    pub version: String,
    pub uptime_s: u64,
    /// `PUT /kill` or a signal was received: intake is refused.
    pub stopping: bool,
    /// `false` while the store refuses writes; `/alive` then answers 503 with this same body.
    pub store_ok: bool,
    /// Why the store refuses writes: `DISK_FULL: …` (intake resumes by itself when space comes
    /// back) or `STORE_FAILED: …` (the api stops to be restarted).
    #[serde(default)]
    pub store_problem: Option<String>,
    pub worker: WorkerStatus,
    pub queue: Counts,
    /// Age of the oldest job waiting for delivery, or `null` when none waits.
    pub oldest_waiting_s: Option<i64>,
    /// Why waiting jobs are not being delivered, when jobs wait and something holds them back
    /// (a stopped worker, no worker connected, the api stopping).
    #[serde(default)]
    pub waiting_for: Option<String>,
    /// What the tenant's connector says of its target now, when it says anything (Alma's daily
    /// budget used up until midnight, say).
    #[serde(default)]
    pub notes: Vec<String>,
    /// The source's last poll, for a tenant that pulls its jobs (`null` for the others).
    #[serde(default)]
    pub source: Option<crate::source::SourceStatus>,
    /// OAuth2 consent, for a tenant with `[oauth2]` (`null` for the others).
    #[serde(default)]
    pub oauth: Option<crate::oauth2::OAuthStatus>,
    /// When the last line was made at the target (since this api started).
    #[schema(format = DateTime)]
    pub last_delivery_at: Option<String>,
}

/// What the api knows of its worker.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkerStatus {
    /// Set by `PUT /start_worker` and `PUT /stop_worker`.
    pub desired: Desired,
    pub running: bool,
    /// A worker was heard from recently (within `worker_seen_ms`).
    pub connected: bool,
    pub last_seen_ms_ago: Option<u64>,
}

/// Whether the worker should lease jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Desired {
    Running,
    Stopped,
}

impl Desired {
    pub fn from_running(running: bool) -> Self {
        if running {
            Desired::Running
        } else {
            Desired::Stopped
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Desired::Running => "running",
            Desired::Stopped => "stopped",
        }
    }
}

/// `POST /create`: the job, and whether this request placed it. Both answers are `200`, as the
/// deployed client and the documented contract expect; `new` tells them apart.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Placed {
    /// `true` when this request placed the job; `false` when the same order was placed before.
    pub new: bool,
    #[serde(flatten)]
    pub job: JobView,
}

/// `GET /check_order_status`: the original service's answer, in its shape (not the envelope),
/// for the pollers deployed against it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LegacyStatus {
    pub unique_id: String,
    pub status: LegacyStatusName,
    /// Why it failed, or why it waits for another attempt; `null` otherwise.
    pub reason: Option<String>,
}

/// The original service's status names: `received` is `placed`, `completed` is `created`, and
/// `failed` is `error` (or `cleared`: an order an operator removed will not be done either).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LegacyStatusName {
    Received,
    Processing,
    Completed,
    Failed,
}

impl From<Status> for LegacyStatusName {
    fn from(s: Status) -> Self {
        match s {
            Status::Placed => LegacyStatusName::Received,
            Status::Processing => LegacyStatusName::Processing,
            Status::Created => LegacyStatusName::Completed,
            Status::Error | Status::Cleared => LegacyStatusName::Failed,
        }
    }
}

/// The original service's refusals on its status path: `{"error": "..."}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LegacyError {
    pub error: String,
}

/// `GET /queue`: one page of jobs, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueuePage {
    /// How many jobs are in the statuses asked for (all pages).
    pub length: u64,
    pub counts: Counts,
    pub jobs: Vec<JobView>,
    /// On a first page with `q`: the job whose idempotency key (uniqueid, bookId, key) is
    /// exactly `q`, found through its index however many jobs there are, when it passes the
    /// filters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<JobView>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// `GET /jobs/{id}/log`: a job's history, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobLog {
    pub job_id: JobId,
    pub status: Status,
    pub events: Vec<EventView>,
    /// How many older events were dropped: the log keeps the newest.
    pub earlier_events_not_kept: u32,
}

/// `PUT /clear_queue`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Cleared {
    /// Waiting jobs moved to `cleared`.
    pub cleared: u64,
}

/// `PUT /start_worker` and `PUT /stop_worker`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkerSwitch {
    pub worker: Desired,
    pub connected: bool,
}

/// `PUT /source/poll` and `POST /worker/source/wait`: polls asked for so far.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SourcePolls {
    /// The latest ask's number: one more per ask, never lower after a restart of the api (it
    /// starts from the api's start time in ms).
    pub requested: u64,
    /// The number of the latest ask for a full resync (`PUT /source/poll?full=true`); 0: none.
    #[serde(default)]
    pub full: u64,
}

/// `PUT /kill`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Stopping {
    pub stopping: bool,
}
