//! The key layout of the store: one keyspace, a one-byte prefix per kind of record, big-endian
//! numbers so that byte order is time order. Only this module knows it.
//!
//! Every job has its record and exactly one index key, and the index key says its status:
//!
//! | prefix | key                                       | value       | holds                       |
//! |--------|-------------------------------------------|-------------|-----------------------------|
//! | `j`    | job id (16)                               | `StoredJob` | every job, with its log     |
//! | `d`    | due ms (8) · job id (16)                  | empty       | `placed`, by due time       |
//! | `l`    | lease expiry ms (8) · job id (16)         | empty       | `processing`, by expiry     |
//! | `f`    | status (1) · finished ms (8) · job id (16)| empty       | `created`/`error`/`cleared` |
//! | `u`    | an order's uniqueid (utf-8)               | job id (16) | idempotency index, orders   |
//! | `b`    | a booking's bookId (utf-8)                | job id (16) | idempotency index, bookings |
//! | `r`    | a page of records' key (utf-8)            | job id (16) | idempotency index, records  |
//! | `m`    | name                                      | `StoredMeta`| tenant meta                 |
//! | `s`    | connector state key (utf-8)               |`StoredState`| tokens, id maps, cursors    |
//!
//! Why so few keys: on the development machine each key sled writes costs about 5–7 µs, so a
//! create writes 3 keys and a transition 3 operations (see ARCHITECTURE.md, "Store").

use ferry_shared::job::{JobId, JobKind, Status};

pub const JOB: u8 = b'j';
pub const DUE: u8 = b'd';
pub const LEASE: u8 = b'l';
pub const FINISHED: u8 = b'f';
/// The idempotency index of order lines (as version 1 wrote it: stores keep working).
pub const UNIQUE: u8 = b'u';
/// The idempotency index of bookings: a prefix of its own, so a bookId never meets a uniqueid.
pub const UNIQUE_BOOKING: u8 = b'b';

/// The idempotency index of a source's pages of records.
pub const UNIQUE_RECORDS: u8 = b'r';

/// Connector state: small values the worker keeps in the api (see `/worker/state`).
pub const STATE: u8 = b's';

pub fn state(key: &str) -> Vec<u8> {
    [&[STATE], key.as_bytes()].concat()
}

/// The meta record holding the worker's desired state (`PUT /start_worker`, `/stop_worker`).
pub const META_WORKER: &[u8] = b"mworker";

pub fn job(id: JobId) -> Vec<u8> {
    [&[JOB], id.as_bytes().as_slice()].concat()
}

/// The prefix under which a status's index keys live.
pub fn index_prefix(st: Status) -> Vec<u8> {
    match st {
        Status::Placed => vec![DUE],
        Status::Processing => vec![LEASE],
        other => vec![FINISHED, other.index() as u8],
    }
}

/// A job's index key: its status's prefix, the time it is ordered by, its id.
pub fn index(st: Status, ms: i64, id: JobId) -> Vec<u8> {
    [
        index_prefix(st).as_slice(),
        &(ms.max(0) as u64).to_be_bytes(),
        id.as_bytes(),
    ]
    .concat()
}

/// The first key of `st`'s index later than `ms`: scanning `[index_prefix(st), upto(st, ms))`
/// visits every job whose time is at or before `ms`.
pub fn upto(st: Status, ms: i64) -> Vec<u8> {
    [
        index_prefix(st).as_slice(),
        &(ms.max(0) as u64 + 1).to_be_bytes(),
    ]
    .concat()
}

/// The time in an index key of `st`.
pub fn index_ms(st: Status, key: &[u8]) -> Option<i64> {
    let at = index_prefix(st).len();
    let bytes: [u8; 8] = key.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes) as i64)
}

/// A job's idempotency key: each kind has its own index, so keys of two kinds never collide.
pub fn unique(kind: JobKind, key: &str) -> Vec<u8> {
    let prefix = match kind {
        JobKind::OrderLine => UNIQUE,
        JobKind::Booking => UNIQUE_BOOKING,
        JobKind::Records => UNIQUE_RECORDS,
    };
    [&[prefix], key.as_bytes()].concat()
}

/// The job id at the end of an index key.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_keys_sort_by_time_then_id_and_stay_in_their_status() {
        let (a, b) = (JobId::new(), JobId::new());
        let placed = |ms, id| index(Status::Placed, ms, id);
        assert!(placed(5, b) < placed(6, a));
        assert!(placed(5, a) < placed(5, b));
        assert!(placed(5, a) < upto(Status::Placed, 5));
        assert!(upto(Status::Placed, 5) <= placed(6, a));
        assert_eq!(trailing_id(&placed(7, a)), Some(a));
        assert_eq!(
            index_ms(Status::Error, &index(Status::Error, 42, a)),
            Some(42)
        );
        let err = index(Status::Error, 1, a);
        assert!(err.starts_with(&index_prefix(Status::Error)));
        assert!(!err.starts_with(&index_prefix(Status::Created)));
    }

    #[test]
    fn prefix_end_bounds_exactly_the_prefix() {
        assert_eq!(prefix_end(b"ab"), b"ac".to_vec());
        assert_eq!(prefix_end(&[1, 255]), vec![2]);
    }
}
