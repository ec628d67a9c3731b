//! The key layout of the store: one keyspace, a one-byte prefix per kind of record, big-endian
//! numbers so that byte order is time order. Only this module knows it.
//!
//! | prefix | key                                  | value              | holds                      |
//! |--------|--------------------------------------|--------------------|----------------------------|
//! | `j`    | job id (16)                          | `StoredJob`        | every job                  |
//! | `d`    | due ms (8) · job id (16)             | empty              | `placed` jobs, by due time |
//! | `l`    | lease expiry ms (8) · job id (16)    | empty              | `processing` jobs          |
//! | `s`    | status (1) · job id (16)             | empty              | every job, by status       |
//! | `u`    | uniqueid (utf-8)                     | job id (16)        | idempotency index          |
//! | `e`    | job id (16) · sequence (4)           | `StoredEvent`      | per-job event log          |
//! | `f`    | finished ms (8) · job id (16)        | empty              | finished jobs, for pruning |
//! | `m`    | name                                 | `StoredMeta`       | tenant meta                |

use ferry_shared::job::{JobId, Status};

pub const JOB: u8 = b'j';
pub const DUE: u8 = b'd';
pub const LEASE: u8 = b'l';
pub const STATUS: u8 = b's';
pub const UNIQUE: u8 = b'u';
pub const EVENT: u8 = b'e';
pub const FINISHED: u8 = b'f';
pub const META: u8 = b'm';

/// The meta record holding the worker's desired state (`PUT /start_worker`, `/stop_worker`).
pub const META_WORKER: &[u8] = b"mworker";

pub fn job(id: JobId) -> Vec<u8> {
    cat(&[&[JOB], id.as_bytes()])
}

fn timed(prefix: u8, ms: i64, id: JobId) -> Vec<u8> {
    cat(&[&[prefix], &(ms.max(0) as u64).to_be_bytes(), id.as_bytes()])
}

pub fn due(ms: i64, id: JobId) -> Vec<u8> {
    timed(DUE, ms, id)
}

pub fn lease(ms: i64, id: JobId) -> Vec<u8> {
    timed(LEASE, ms, id)
}

pub fn finished(ms: i64, id: JobId) -> Vec<u8> {
    timed(FINISHED, ms, id)
}

/// The first key of a time-ordered prefix that is later than `ms`: scanning `[prefix, upto(ms))`
/// visits everything due at or before `ms`.
pub fn upto(prefix: u8, ms: i64) -> Vec<u8> {
    cat(&[&[prefix], &(ms.max(0) as u64 + 1).to_be_bytes()])
}

pub fn status(st: Status, id: JobId) -> Vec<u8> {
    cat(&[&[STATUS, st.index() as u8], id.as_bytes()])
}

pub fn status_prefix(st: Status) -> Vec<u8> {
    vec![STATUS, st.index() as u8]
}

pub fn unique(uniqueid: &str) -> Vec<u8> {
    cat(&[&[UNIQUE], uniqueid.as_bytes()])
}

pub fn event(id: JobId, seq: u32) -> Vec<u8> {
    cat(&[&[EVENT], id.as_bytes(), &seq.to_be_bytes()])
}

pub fn events_of(id: JobId) -> Vec<u8> {
    cat(&[&[EVENT], id.as_bytes()])
}

/// The job id at the end of a `d`, `l`, `f` or `s` key.
pub fn trailing_id(key: &[u8]) -> Option<JobId> {
    let tail: [u8; 16] = key.get(key.len().checked_sub(16)?..)?.try_into().ok()?;
    Some(JobId::from_bytes(tail))
}

/// The end (exclusive) of every key starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    vec![u8::MAX; prefix.len() + 1]
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_keys_sort_by_time_then_id() {
        let (a, b) = (JobId::new(), JobId::new());
        assert!(due(5, b) < due(6, a));
        assert!(due(5, a) < due(5, b));
        assert!(due(5, a) < upto(DUE, 5) && upto(DUE, 5) <= due(6, a));
        assert_eq!(trailing_id(&due(7, a)), Some(a));
    }

    #[test]
    fn prefix_end_bounds_exactly_the_prefix() {
        assert_eq!(prefix_end(b"ab"), b"ac".to_vec());
        assert_eq!(prefix_end(&[1, 255]), vec![2]);
    }
}
