//! The sled 0.34.7 engine. Shaped by what is known of sled (see ARCHITECTURE.md): prefixed
//! big-endian keys in one tree, no multi-tree transactions, and the blocking `flush()` called only
//! from the writer thread (never `flush_async`).
//!
//! Atomic groups without `apply_batch`: sled's batch rolls the IO buffer twice (`pin_log`), two
//! extra synced writes that cost about 100 µs a group here. Instead each group is first written
//! as one redo record (a single insert, which sled applies atomically) into the `redo` tree, then
//! key by key into the data tree, then flushed once. sled recovers a prefix of its log, so after
//! a crash either the redo record is whole (and replaying it completes the group) or neither it
//! nor anything after it survived. Opening replays the last record; replaying is idempotent.
//!
//! A group of one write needs no redo record (sled applies one insert atomically), but it must
//! not leave an older group's record behind: replayed on the next open, that record would undo
//! this write. So the first one-write group after a larger one removes the record before its own
//! write (in log order, so a surviving write implies a surviving removal); later one-write groups
//! find nothing to remove and cost nothing extra.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use super::disk::is_no_space;
use super::{Batch, Kv, StoreError, Visitor, journal};

/// sled's page cache; it does not bound memory (rust-stack.md §1.5), but a small one keeps an
/// idle tenant small.
const CACHE_BYTES: u64 = 16 * 1024 * 1024;
const REDO_TREE: &[u8] = b"redo";
const REDO_KEY: &[u8] = b"last-group";

pub struct SledKv {
    db: sled::Db,
    redo: sled::Tree,
    /// Whether the redo tree holds a record (only the writer thread applies, so no race).
    redo_held: AtomicBool,
}

/// sled reports its I/O failures as they happened; one that found no space is told apart (see
/// `writer`). sled cannot say whether it came from a write or from its `fsync`: on the local
/// filesystems Ferry runs on, no space is found when blocks are allocated, at the write.
fn engine(e: sled::Error) -> StoreError {
    match e {
        sled::Error::Io(io) if is_no_space(&io) => StoreError::NoSpace(Box::new(io)),
        e => StoreError::Engine(Box::new(e)),
    }
}

impl SledKv {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(engine)?;
        let redo = db.open_tree(REDO_TREE).map_err(engine)?;
        let kv = Self {
            db,
            redo,
            redo_held: AtomicBool::new(false),
        };
        if let Some(record) = kv.redo.get(REDO_KEY).map_err(engine)? {
            let batch = journal::decode(&record).ok_or_else(|| {
                StoreError::Engine("the store's redo record is unreadable".into())
            })?;
            kv.write_each(batch)?;
            kv.redo_held.store(true, Ordering::Relaxed);
            kv.db.flush().map_err(engine)?;
        }
        Ok(kv)
    }

    fn write_each(&self, batch: Batch) -> Result<(), StoreError> {
        for (k, v) in batch.ops {
            match v {
                Some(v) => self.db.insert(k, v),
                None => self.db.remove(k),
            }
            .map_err(engine)?;
        }
        Ok(())
    }
}

impl Kv for SledKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get(key).map_err(engine)?.map(|v| v.to_vec()))
    }

    fn scan(&self, from: &[u8], to: &[u8], visit: &mut Visitor<'_>) -> Result<(), StoreError> {
        for item in self.db.range(from..to) {
            let (k, v) = item.map_err(engine)?;
            if visit(&k, &v).is_break() {
                break;
            }
        }
        Ok(())
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        if batch.ops.len() > 1 {
            let mut record = Vec::new();
            journal::encode(&batch, &mut record);
            self.redo.insert(REDO_KEY, record).map_err(engine)?;
            self.redo_held.store(true, Ordering::Relaxed);
        } else if self.redo_held.load(Ordering::Relaxed) {
            self.redo.remove(REDO_KEY).map_err(engine)?;
            self.redo_held.store(false, Ordering::Relaxed);
        }
        self.write_each(batch)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(engine)
    }
}

#[cfg(test)]
mod tests {
    use super::super::conformance::waiting_for_lock;
    use super::*;

    fn batch() -> Batch {
        Batch {
            ops: vec![
                (b"ja".to_vec(), Some(b"{\"v\":\"1\"}".to_vec())),
                (b"d1".to_vec(), None),
                (b"u".to_vec(), Some(Vec::new())),
            ],
        }
    }

    #[test]
    fn a_one_write_group_after_a_larger_one_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let put = |k: &[u8], v: &[u8]| (k.to_vec(), Some(v.to_vec()));
        {
            let kv = SledKv::open(dir.path()).unwrap();
            kv.apply(Batch {
                ops: vec![put(b"k", b"v1"), put(b"x", b"1")],
            })
            .unwrap();
            kv.apply(Batch {
                ops: vec![put(b"k", b"v2")],
            })
            .unwrap();
            kv.flush().unwrap();
        }
        let kv = waiting_for_lock(|| SledKv::open(dir.path()));
        assert_eq!(kv.get(b"k").unwrap().as_deref(), Some(&b"v2"[..]));
        assert_eq!(kv.redo.get(REDO_KEY).unwrap(), None, "the record went");
    }

    #[test]
    fn opening_replays_a_group_that_was_cut_short() {
        let dir = tempfile::tempdir().unwrap();
        {
            let kv = SledKv::open(dir.path()).unwrap();
            kv.db.insert(b"d1", b"old".to_vec()).unwrap();
            // A crash after the redo record but before the group's keys were written.
            let mut record = Vec::new();
            journal::encode(&batch(), &mut record);
            kv.redo.insert(REDO_KEY, record).unwrap();
            kv.db.flush().unwrap();
        }
        let kv = waiting_for_lock(|| SledKv::open(dir.path()));
        assert_eq!(
            kv.get(b"ja").unwrap().as_deref(),
            Some(&b"{\"v\":\"1\"}"[..])
        );
        assert_eq!(kv.get(b"d1").unwrap(), None);
        assert_eq!(kv.get(b"u").unwrap().as_deref(), Some(&b""[..]));
    }
}
