//! The redb engine: a pure-Rust embedded database with ACID transactions. Each group the writer
//! applies is one write transaction committed with `Durability::Immediate` (redb's default
//! one-phase commit: checksummed commit slot, then one `fsync`), so by the time `apply` returns the
//! group is durable and `flush` has nothing left to do. Reads open their own read transaction and
//! see the last committed group.
//!
//! The file is reached through [`Watched`], which notes which call failed: redb reports every I/O
//! failure alike (and refuses all later calls until reopened), but a `write` or `set_len` that
//! found no space means the commit never happened, while a failed `sync_data` leaves the outcome
//! unknown. The writer acts on the difference (see `writer`).

use std::fs::OpenOptions;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use redb::backends::FileBackend;
use redb::{BackendError, ReadableDatabase, StorageBackend, TableDefinition};

use super::disk::is_no_space;
use super::{Batch, Kv, StoreError, Visitor};

const DATA: TableDefinition<&[u8], &[u8]> = TableDefinition::new("ferry");
/// redb's page cache (its default is 1 GiB); a tenant is small.
const CACHE_BYTES: usize = 16 * 1024 * 1024;
pub const FILE_NAME: &str = "ferry.redb";

/// What [`Watched`] saw fail, the worst so far: nothing, a write that found no space, or a
/// failure whose outcome is unknown.
const FINE: u8 = 0;
const NO_SPACE: u8 = 1;
const UNKNOWN: u8 = 2;

pub struct RedbKv {
    db: redb::Database,
    fault: Arc<AtomicU8>,
}

impl RedbKv {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Engine(Box::new(e)))?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(FILE_NAME))
            .map_err(|e| StoreError::Engine(Box::new(e)))?;
        Self::over(FileBackend::new(file).map_err(|e| StoreError::Engine(Box::new(e)))?)
    }

    /// A database over `backend` (a file, or a failing one in tests).
    pub fn over(backend: impl StorageBackend) -> Result<Self, StoreError> {
        let fault = Arc::new(AtomicU8::new(FINE));
        let watched = Watched {
            inner: backend,
            fault: fault.clone(),
        };
        let db = redb::Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create_with_backend(watched)
            .map_err(|e| classify(&fault, e))?;
        // Reads of a table never written fail; create it once.
        let txn = db.begin_write().map_err(|e| classify(&fault, e))?;
        txn.open_table(DATA).map_err(|e| classify(&fault, e))?;
        txn.commit().map_err(|e| classify(&fault, e))?;
        Ok(Self { db, fault })
    }

    fn err(&self, e: impl Into<redb::Error>) -> StoreError {
        classify(&self.fault, e)
    }
}

/// An error of redb, as the writer must treat it: no space when the failed call was a write that
/// found none (and nothing worse happened), any other failure otherwise.
fn classify(fault: &AtomicU8, e: impl Into<redb::Error>) -> StoreError {
    let e: redb::Error = e.into();
    match fault.load(Ordering::Acquire) {
        NO_SPACE => StoreError::NoSpace(Box::new(e)),
        _ => StoreError::Engine(Box::new(e)),
    }
}

impl Kv for RedbKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(DATA).map_err(|e| self.err(e))?;
        Ok(table
            .get(key)
            .map_err(|e| self.err(e))?
            .map(|v| v.value().to_vec()))
    }

    fn scan(&self, from: &[u8], to: &[u8], visit: &mut Visitor<'_>) -> Result<(), StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(DATA).map_err(|e| self.err(e))?;
        for item in table.range(from..to).map_err(|e| self.err(e))? {
            let (k, v) = item.map_err(|e| self.err(e))?;
            if visit(k.value(), v.value()).is_break() {
                break;
            }
        }
        Ok(())
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut table = txn.open_table(DATA).map_err(|e| self.err(e))?;
            for (k, v) in &batch.ops {
                match v {
                    Some(v) => {
                        table
                            .insert(k.as_slice(), v.as_slice())
                            .map_err(|e| self.err(e))?;
                    }
                    None => {
                        table.remove(k.as_slice()).map_err(|e| self.err(e))?;
                    }
                }
            }
        }
        txn.commit().map_err(|e| self.err(e))
    }

    fn flush(&self) -> Result<(), StoreError> {
        // `apply` committed with Durability::Immediate.
        Ok(())
    }
}

/// A storage backend that notes the worst failure it passed on (see the module's doc).
#[derive(Debug)]
struct Watched<B> {
    inner: B,
    fault: Arc<AtomicU8>,
}

impl<B> Watched<B> {
    /// Notes a failure: "no space" only for a write that did not happen.
    fn watch<T>(&self, result: std::io::Result<T>, writes: bool) -> std::io::Result<T> {
        if let Err(e) = &result {
            let seen = if writes && is_no_space(e) {
                NO_SPACE
            } else {
                UNKNOWN
            };
            self.fault.fetch_max(seen, Ordering::AcqRel);
        }
        result
    }
}

impl<B: StorageBackend> StorageBackend for Watched<B> {
    fn len(&self) -> std::io::Result<u64> {
        self.watch(self.inner.len(), false)
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.watch(self.inner.read(offset, out), false)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.watch(self.inner.set_len(len), true)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.watch(self.inner.sync_data(), false)
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.watch(self.inner.write(offset, data), true)
    }
    fn close(&self) -> std::io::Result<()> {
        self.inner.close()
    }
    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }
    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }
    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }
    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }
    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }
    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::backends::InMemoryBackend;
    use std::sync::atomic::AtomicBool;

    /// Memory that fails the next write or sync with the error given, once armed.
    #[derive(Debug, Default)]
    struct Failing {
        inner: InMemoryBackend,
        write: AtomicBool,
        sync: AtomicBool,
        errno: std::sync::atomic::AtomicI32,
    }

    impl Failing {
        fn fail(&self, flag: &AtomicBool) -> std::io::Result<()> {
            match flag.load(Ordering::Relaxed) {
                true => Err(std::io::Error::from_raw_os_error(
                    self.errno.load(Ordering::Relaxed),
                )),
                false => Ok(()),
            }
        }
    }

    /// The database owns its backend; the test keeps a handle to arm it.
    #[derive(Debug)]
    struct Shared(Arc<Failing>);

    impl StorageBackend for Shared {
        fn len(&self) -> std::io::Result<u64> {
            self.0.inner.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
            self.0.inner.read(offset, out)
        }
        fn set_len(&self, len: u64) -> std::io::Result<()> {
            self.0.fail(&self.0.write)?;
            self.0.inner.set_len(len)
        }
        fn sync_data(&self) -> std::io::Result<()> {
            self.0.fail(&self.0.sync)?;
            self.0.inner.sync_data()
        }
        fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
            self.0.fail(&self.0.write)?;
            self.0.inner.write(offset, data)
        }
    }

    fn put(kv: &RedbKv) -> Result<(), StoreError> {
        kv.apply(Batch {
            ops: vec![(b"k".to_vec(), Some(vec![7; 64 * 1024]))],
        })
    }

    #[test]
    fn a_write_without_space_is_told_apart_from_a_failed_sync() {
        const ENOSPC: i32 = 28;
        for (failing_call, errno, no_space) in [
            ("write", ENOSPC, true),
            ("write", 5, false),
            ("sync", ENOSPC, false),
        ] {
            let backend = Arc::new(Failing::default());
            let kv = RedbKv::over(Shared(backend.clone())).unwrap();
            put(&kv).unwrap();
            backend.errno.store(errno, Ordering::Relaxed);
            let flag = match failing_call {
                "write" => &backend.write,
                _ => &backend.sync,
            };
            flag.store(true, Ordering::Relaxed);
            let e = put(&kv).unwrap_err();
            assert_eq!(
                matches!(e, StoreError::NoSpace(_)),
                no_space,
                "{failing_call} failing with errno {errno}: {e:?}"
            );
        }
    }
}
