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
