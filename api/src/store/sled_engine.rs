//! The sled 0.34.7 engine. Shaped by what is known of sled (see ARCHITECTURE.md): prefixed
//! big-endian keys in one tree, no multi-tree transactions, and the blocking `flush()` called only
//! from the writer thread (never `flush_async`).
//!
//! Atomic groups without `apply_batch`: sled's batch rolls the IO buffer twice (`pin_log`), two
//! extra synced writes that cost about 100 µs a group here. Instead `apply` only gathers the
//! group's writes, and `flush` writes them as one redo record (a single insert, which sled
//! applies atomically) into the `redo` tree and flushes. The keys go into the data tree after
//! that, once the group is answered (`tidy`), or earlier by the first read that needs them: a
//! read waits for them (`show`), so a read after an answer sees the answered group, and no read
//! sees a group before it is durable (sled shows an insert at once: a status read before the
//! flush could go back after a crash). sled recovers a prefix of its log, so after a crash
//! either the last redo record is whole or nothing after the one before it survived; what was
//! written after a record is only its own group's keys, so opening replays the last record
//! (idempotent) and the store holds every flushed group. Every group that writes anything has
//! its record, so a record never outlives a later write it could undo.

use std::path::Path;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

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
    groups: Mutex<Groups>,
    /// Notified when a flushed group's writes are in the tree.
    shown: Condvar,
}

/// Writes on their way into the tree.
#[derive(Default)]
struct Groups {
    /// Applied since the last flush, in order.
    gathered: Batch,
    /// Flushed (its redo record is durable) and perhaps answered, not yet in the tree.
    flushed: Option<Batch>,
    /// Someone is writing the flushed group into the tree.
    showing: bool,
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
            groups: Mutex::default(),
            shown: Condvar::new(),
        };
        if let Some(record) = kv.redo.get(REDO_KEY).map_err(engine)? {
            let batch = journal::decode(&record).ok_or_else(|| {
                StoreError::Engine("the store's redo record is unreadable".into())
            })?;
            kv.write_each(&batch)?;
            kv.db.flush().map_err(engine)?;
        }
        Ok(kv)
    }

    fn groups(&self) -> MutexGuard<'_, Groups> {
        self.groups.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes the flushed group into the tree, or waits while another thread does: a read
    /// after an answer sees the answered group. Usually the writer does it once the group is
    /// answered ([`Kv::tidy`]); a read that comes first does it itself.
    fn show(&self) -> Result<(), StoreError> {
        let mut groups = self.groups();
        while groups.showing {
            groups = self
                .shown
                .wait(groups)
                .unwrap_or_else(PoisonError::into_inner);
        }
        let Some(batch) = groups.flushed.take() else {
            return Ok(());
        };
        groups.showing = true;
        drop(groups);
        let written = self.write_each(&batch);
        let mut groups = self.groups();
        groups.showing = false;
        if written.is_err() {
            // Kept for the next to try, and to fail: the next flush must not replace this
            // group's record while its keys are not all in the tree, and the writer must hear
            // of the failure even when a read met it first.
            groups.flushed = Some(batch);
        }
        drop(groups);
        self.shown.notify_all();
        written
    }

    fn write_each(&self, batch: &Batch) -> Result<(), StoreError> {
        for (k, v) in &batch.ops {
            match v {
                Some(v) => self.db.insert(k, v.as_slice()),
                None => self.db.remove(k),
            }
            .map_err(engine)?;
        }
        Ok(())
    }
}

impl Kv for SledKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.show()?;
        Ok(self.db.get(key).map_err(engine)?.map(|v| v.to_vec()))
    }

    fn scan(&self, from: &[u8], to: &[u8], visit: &mut Visitor<'_>) -> Result<(), StoreError> {
        self.show()?;
        for item in self.db.range(from..to) {
            let (k, v) = item.map_err(engine)?;
            if visit(&k, &v).is_break() {
                break;
            }
        }
        Ok(())
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        self.groups().gathered.ops.extend(batch.ops);
        Ok(())
    }

    /// The redo record of what was gathered, then the flush; the keys come after (`show`).
    /// Should a step fail, nothing is retried here: the writer reopens the engine, which replays
    /// the record if it reached the disk.
    fn flush(&self) -> Result<(), StoreError> {
        self.show()?;
        let gathered = std::mem::take(&mut self.groups().gathered);
        if !gathered.ops.is_empty() {
            let mut record = Vec::new();
            journal::encode(&gathered, &mut record);
            self.redo.insert(REDO_KEY, record).map_err(engine)?;
        }
        self.db.flush().map_err(engine)?;
        if !gathered.ops.is_empty() {
            self.groups().flushed = Some(gathered);
        }
        Ok(())
    }

    fn tidy(&self) -> Result<(), StoreError> {
        self.show()
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
            for ops in [
                vec![put(b"k", b"v1"), put(b"x", b"1")],
                vec![put(b"k", b"v2")],
            ] {
                kv.apply(Batch { ops }).unwrap();
                kv.flush().unwrap();
            }
        }
        let kv = waiting_for_lock(|| SledKv::open(dir.path()));
        assert_eq!(kv.get(b"k").unwrap().as_deref(), Some(&b"v2"[..]));
        assert_eq!(kv.get(b"x").unwrap().as_deref(), Some(&b"1"[..]));
        let record = kv
            .redo
            .get(REDO_KEY)
            .unwrap()
            .expect("the last group's record");
        let last = journal::decode(&record).unwrap();
        assert_eq!(
            last.ops,
            vec![put(b"k", b"v2")],
            "the last group's writes only"
        );
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
