//! Connectors turn a leased job into calls on the tenant's target and classify what happened as
//! created / retry / failed with a stable reason code. Only this crate talks to targets.

pub mod erp_rest;

use ferry_shared::protocol::{AttemptDetail, LeasedJob, Outcome};
use ferry_shared::target::Target;

pub enum Connector {
    ErpRest(erp_rest::ErpRestConnector),
}

impl Connector {
    pub fn new(target: Target) -> Result<Self, reqwest::Error> {
        match target {
            Target::ErpRest(cfg) => Ok(Connector::ErpRest(erp_rest::ErpRestConnector::new(cfg)?)),
        }
    }

    pub async fn deliver(&self, job: &LeasedJob) -> (Outcome, AttemptDetail) {
        match self {
            Connector::ErpRest(c) => c.deliver(job).await,
        }
    }
}

/// A job of a kind the connector does not deliver. The api refuses such jobs at intake, so this
/// is a job placed before the tenant's target changed: it fails, visibly, rather than waits.
pub fn not_taken(job: &LeasedJob, connector: &str) -> (Outcome, AttemptDetail) {
    (
        Outcome::Failed {
            reason_code: "KIND_NOT_TAKEN".into(),
            reason_text: format!(
                "the {connector} target does not take {} jobs",
                job.payload.kind().as_str()
            ),
        },
        AttemptDetail::default(),
    )
}
