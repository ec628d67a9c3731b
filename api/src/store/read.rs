//! Reads, straight from the engine on the caller's thread: one job, its log, and the queue
//! listing (status filter, text search, cursor paging over bounded scans).

use std::ops::ControlFlow;

use ferry_shared::job::{JobId, Status};

use super::record::{self, Event, Job};
use super::{Kv, StoreError, keys};

/// Index entries one listing request may examine per status before it answers with a cursor, so
/// a search over a large queue costs a bounded amount per request.
pub const SCAN_BUDGET: usize = 5_000;

pub fn job(kv: &dyn Kv, id: JobId) -> Result<Option<Job>, StoreError> {
    kv.get(&keys::job(id))?
        .map(|b| record::decode_job(&b))
        .transpose()
}

pub fn job_by_uniqueid(kv: &dyn Kv, uniqueid: &str) -> Result<Option<Job>, StoreError> {
    match kv.get(&keys::unique(uniqueid))? {
        Some(id) => match <[u8; 16]>::try_from(id.as_slice()) {
            Ok(bytes) => job(kv, JobId::from_bytes(bytes)),
            Err(_) => Ok(None),
        },
        None => Ok(None),
    }
}

pub fn events(kv: &dyn Kv, id: JobId) -> Result<Vec<Event>, StoreError> {
    let prefix = keys::events_of(id);
    let mut out = Vec::new();
    let mut failure = None;
    kv.scan(&prefix, &keys::prefix_end(&prefix), &mut |_, v| {
        match record::decode_event(v) {
            Ok(ev) => out.push(ev),
            Err(e) => {
                failure = Some(e);
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    })?;
    failure.map_or(Ok(out), Err)
}

#[derive(Debug, Clone)]
pub struct ListQuery {
    pub statuses: Vec<Status>,
    /// Only jobs created after this one (the previous page's `next_cursor`).
    pub after: Option<JobId>,
    pub limit: usize,
    /// Lower-case text to find in the job's searchable fields.
    pub needle: Option<String>,
}

#[derive(Debug)]
pub struct Page {
    /// Oldest first.
    pub jobs: Vec<Job>,
    pub next_cursor: Option<JobId>,
}

pub fn list(kv: &dyn Kv, q: &ListQuery) -> Result<Page, StoreError> {
    let mut found: Vec<Job> = Vec::new();
    // Every id at or below the horizon has been examined in every status.
    let mut horizon: Option<JobId> = None;
    for &st in &q.statuses {
        let prefix = keys::status_prefix(st);
        let from = match q.after {
            Some(after) => {
                let mut k = keys::status(st, after);
                k.push(0);
                k
            }
            None => prefix.clone(),
        };
        let (mut scanned, mut matched) = (0usize, 0usize);
        let mut failure = None;
        kv.scan(&from, &keys::prefix_end(&prefix), &mut |k, _| {
            let Some(id) = keys::trailing_id(k) else {
                return ControlFlow::Continue(());
            };
            scanned += 1;
            match job(kv, id) {
                Ok(Some(j)) if q.needle.as_deref().is_none_or(|n| j.matches(n)) => {
                    found.push(j);
                    matched += 1;
                }
                Ok(_) => {}
                Err(e) => {
                    failure = Some(e);
                    return ControlFlow::Break(());
                }
            }
            if matched > q.limit {
                return ControlFlow::Break(());
            }
            if scanned >= SCAN_BUDGET {
                horizon = Some(horizon.map_or(id, |h| h.min(id)));
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
    }
    found.sort_by_key(|j| j.id);
    if let Some(h) = horizon {
        found.retain(|j| j.id <= h);
    }
    let next_cursor = if found.len() > q.limit {
        found.truncate(q.limit);
        found.last().map(|j| j.id)
    } else {
        horizon
    };
    Ok(Page {
        jobs: found,
        next_cursor,
    })
}
