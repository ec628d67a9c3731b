//! Reads, straight from the engine on the caller's thread: one job, and the queue listing (status
//! filter, text search, cursor paging over bounded scans).

use std::ops::ControlFlow;

use ferry_shared::job::{JobId, JobKind, Status};

use super::record::{self, Job};
use super::{Kv, StoreError, keys};

/// Index entries one listing request may examine before it answers with a cursor, so a search
/// over a large queue costs a bounded amount per request.
pub const SCAN_BUDGET: usize = 5_000;

/// Reads a key: the engine's committed state, or the writer's view through its overlay.
pub trait Get {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
}

impl Get for dyn Kv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Kv::get(self, key)
    }
}

pub fn job(from: &(impl Get + ?Sized), id: JobId) -> Result<Option<Job>, StoreError> {
    from.get(&keys::job(id))?
        .map(|b| record::decode_job(&b))
        .transpose()
}

/// The job of `kind` with this idempotency key (`uniqueid`, `bookId`).
pub fn job_by_key(
    from: &(impl Get + ?Sized),
    kind: JobKind,
    key: &str,
) -> Result<Option<Job>, StoreError> {
    match from.get(&keys::unique(kind, key))? {
        Some(id) => match <[u8; 16]>::try_from(id.as_slice()) {
            Ok(bytes) => job(from, JobId::from_bytes(bytes)),
            Err(_) => Ok(None),
        },
        None => Ok(None),
    }
}

/// A connector state value and its version; `(Null, 0)` when absent.
pub fn state(
    from: &(impl Get + ?Sized),
    key: &str,
) -> Result<(serde_json::Value, u64), StoreError> {
    match from.get(&keys::state(key))? {
        None => Ok((serde_json::Value::Null, 0)),
        Some(bytes) => match serde_json::from_slice(&bytes).map_err(StoreError::Decode)? {
            record::StoredState::V1 { value, version, .. } => Ok((value, version)),
        },
    }
}

/// Every connector state value whose key starts with `prefix`, in key order.
pub fn states(from: &dyn Kv, prefix: &str) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
    let start = keys::state(prefix);
    let mut found = Vec::new();
    from.scan(&start, &keys::prefix_end(&start), &mut |k, v| {
        if let Ok(record::StoredState::V1 { value, .. }) = serde_json::from_slice(v) {
            found.push((String::from_utf8_lossy(&k[1..]).into_owned(), value));
        }
        ControlFlow::Continue(())
    })?;
    Ok(found)
}

pub fn state_version(from: &(impl Get + ?Sized), key: &str) -> Result<u64, StoreError> {
    state(from, key).map(|(_, version)| version)
}

/// Due jobs examined for the oldest waiting one: a retried job is due later than it was created,
/// so the first due is not always the oldest; a bounded look is close enough for a gauge.
pub const OLDEST_SCAN: usize = 10_000;

/// When the oldest of the first [`OLDEST_SCAN`] waiting jobs was created. Read from the index
/// keys alone: a job id is a UUID v7, which starts with its creation time, so no record is read
/// (a record only for an id that is not v7).
pub fn oldest_waiting_ms(kv: &dyn Kv) -> Result<Option<i64>, StoreError> {
    let prefix = keys::index_prefix(Status::Placed);
    let mut oldest: Option<i64> = None;
    let mut other_ids = Vec::new();
    let mut seen = 0;
    kv.scan(&prefix, &keys::prefix_end(&prefix), &mut |k, _| {
        if let Some(id) = keys::trailing_id(k) {
            match id.created_ms() {
                Some(ms) => oldest = Some(oldest.map_or(ms, |o| o.min(ms))),
                None => other_ids.push(id),
            }
        }
        seen += 1;
        if seen >= OLDEST_SCAN {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    for id in other_ids {
        if let Some(j) = job(kv, id)? {
            oldest = Some(oldest.map_or(j.created_ms, |o| o.min(j.created_ms)));
        }
    }
    Ok(oldest)
}

/// Jobs of status `st` that finished after `after_ms` and at or before `until_ms`, oldest
/// first, at most `limit`.
pub fn finished_between(
    kv: &dyn Kv,
    st: Status,
    after_ms: i64,
    until_ms: i64,
    limit: usize,
) -> Result<Vec<Job>, StoreError> {
    let mut ids = Vec::new();
    kv.scan(
        &keys::upto(st, after_ms),
        &keys::upto(st, until_ms),
        &mut |k, _| {
            ids.extend(keys::trailing_id(k));
            match ids.len() >= limit {
                true => ControlFlow::Break(()),
                false => ControlFlow::Continue(()),
            }
        },
    )?;
    let mut jobs = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(j) = job(kv, id)?.filter(|j| j.status == st) {
            jobs.push(j);
        }
    }
    Ok(jobs)
}

/// Where a listing stopped: a status and the last index key it handed out. Opaque to clients:
/// `<status>.<hex key>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    status: Status,
    key: Vec<u8>,
}

impl Cursor {
    pub fn status(&self) -> Status {
        self.status
    }

    pub fn encode(&self) -> String {
        let hex: String = self.key.iter().map(|b| format!("{b:02x}")).collect();
        format!("{}.{hex}", self.status.as_str())
    }

    pub fn parse(s: &str) -> Option<Self> {
        let (status, hex) = s.split_once('.')?;
        let status = Status::parse(status)?;
        if hex.len() % 2 != 0 || !hex.is_ascii() {
            return None;
        }
        let key = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        key.starts_with(&keys::index_prefix(status))
            .then_some(Self { status, key })
    }
}

#[derive(Debug, Clone)]
pub struct ListQuery {
    /// Listed one after the other, each in its index order (placed by due time, in flight by
    /// lease expiry, finished by when they finished).
    pub statuses: Vec<Status>,
    pub after: Option<Cursor>,
    pub limit: usize,
    /// Lower-case text to find in the job's searchable fields.
    pub needle: Option<String>,
    /// Only jobs of this kind, with this reason code, made in this time range (ms, inclusive).
    pub kind: Option<JobKind>,
    pub reason: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// Index entries to examine before answering with a cursor ([`SCAN_BUDGET`]).
    pub budget: usize,
}

impl Default for ListQuery {
    fn default() -> Self {
        Self {
            statuses: vec![Status::Placed, Status::Processing],
            after: None,
            limit: 100,
            needle: None,
            kind: None,
            reason: None,
            since_ms: None,
            until_ms: None,
            budget: SCAN_BUDGET,
        }
    }
}

impl ListQuery {
    /// Whether `job` passes every filter but the status.
    pub fn admits(&self, job: &Job) -> bool {
        self.kind.is_none_or(|k| job.kind() == k)
            && self
                .reason
                .as_deref()
                .is_none_or(|r| job.reason_code.as_deref() == Some(r))
            && self.since_ms.is_none_or(|s| job.created_ms >= s)
            && self.until_ms.is_none_or(|u| job.created_ms <= u)
            && self.needle.as_deref().is_none_or(|n| job.matches(n))
    }
}

#[derive(Debug)]
pub struct Page {
    pub jobs: Vec<Job>,
    pub next_cursor: Option<Cursor>,
}

pub fn list(kv: &dyn Kv, q: &ListQuery) -> Result<Page, StoreError> {
    let first = match &q.after {
        Some(c) => q.statuses.iter().position(|s| *s == c.status).unwrap_or(0),
        None => 0,
    };
    // One more than asked for, to know whether a next page exists.
    let mut found: Vec<(Vec<u8>, Status, Job)> = Vec::new();
    let mut scanned = 0usize;
    let mut stopped_at: Option<Cursor> = None;
    let mut failure = None;
    for &st in &q.statuses[first..] {
        let prefix = keys::index_prefix(st);
        let from = match &q.after {
            Some(c) if c.status == st => [c.key.as_slice(), &[0]].concat(),
            _ => prefix.clone(),
        };
        kv.scan(&from, &keys::prefix_end(&prefix), &mut |k, _| {
            scanned += 1;
            let loaded = match keys::trailing_id(k) {
                Some(id) => job(kv, id),
                None => Ok(None),
            };
            match loaded {
                Ok(Some(j)) if j.status == st && q.admits(&j) => {
                    found.push((k.to_vec(), st, j));
                }
                Ok(_) => {}
                Err(e) => {
                    failure = Some(e);
                    return ControlFlow::Break(());
                }
            }
            if found.len() > q.limit {
                return ControlFlow::Break(());
            }
            if scanned >= q.budget {
                stopped_at = Some(Cursor {
                    status: st,
                    key: k.to_vec(),
                });
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        if found.len() > q.limit || stopped_at.is_some() {
            break;
        }
    }
    let next_cursor = if found.len() > q.limit {
        found.truncate(q.limit);
        found.last().map(|(key, status, _)| Cursor {
            status: *status,
            key: key.clone(),
        })
    } else {
        stopped_at
    };
    Ok(Page {
        jobs: found.into_iter().map(|(_, _, j)| j).collect(),
        next_cursor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_what_they_did_not_make() {
        let c = Cursor {
            status: Status::Error,
            key: keys::index(Status::Error, 77, JobId::new()),
        };
        assert_eq!(Cursor::parse(&c.encode()), Some(c));
        for bad in ["", "error", "error.zz", "error.0", "lost.00", "placed.6600"] {
            assert_eq!(Cursor::parse(bad), None, "{bad}");
        }
    }
}
