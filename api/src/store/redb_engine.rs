//! The redb engine: a pure-Rust embedded database with ACID transactions, made durable through
//! a journal (see `journal`). Each group the writer flushes is framed into one record and written
//! to the journal (one small overwrite of a preallocated file); after the journal's `fdatasync`
//! the group's writes join [`Recent`], the journaled writes redb's tables do not hold yet, and
//! the group is visible and answered. redb is written only after that, in [`Kv::tidy`], off the
//! answers' path: once [`RECENT_BYTES`] of writes wait, they are applied to redb in one write
//! transaction with `Durability::None` (redb may write pages to its file but does not sync it);
//! once the journal has less room left than [`BIG_GROUP`], everything waiting is committed
//! instead with `Durability::Immediate` (redb's checkpoint: every page written, a checksummed
//! commit slot, one `fsync`), with the last record's number beside it, and the journal starts
//! again at its first byte. A group that does not fit the journal even so is checkpointed by its
//! flush. Opening replays the records newer than that number and checkpoints; a clean close
//! checkpoints too. Reads look in [`Recent`] first and otherwise in redb's table as its last
//! commit left it (one read transaction, shared until the next commit): they see the last
//! flushed group.
//!
//! The file is reached through [`Watched`], which notes which call failed: redb reports every I/O
//! failure alike (and refuses all later calls until reopened), but a `write` or `set_len` that
//! found no space means the commit never happened, while a failed `sync_data` leaves the outcome
//! unknown. The writer acts on the difference (see `writer`); the journal's own failures are told
//! apart the same way.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use redb::backends::FileBackend;
use redb::{
    BackendError, Durability, ReadableDatabase, StorageBackend, TableDefinition, WriteTransaction,
};

use super::disk::is_no_space;
use super::journal::{Journal, JournalError, frame, framed_len};
use super::{Batch, Kv, StoreError, Visitor};

const DATA: TableDefinition<&[u8], &[u8]> = TableDefinition::new("ferry");
/// The number of the last journal record the database holds durably, under [`SEQ`].
const JOURNAL: TableDefinition<&str, u64> = TableDefinition::new("ferry-journal");
const SEQ: &str = "seq";
/// redb's page cache (its default is 1 GiB); a tenant is small.
const CACHE_BYTES: usize = 16 * 1024 * 1024;
pub const FILE_NAME: &str = "ferry.redb";
pub const JOURNAL_FILE: &str = "ferry.journal";
/// The journal's size: a checkpoint about every three quarters of this many bytes of records
/// (about 550 orders), when less than [`BIG_GROUP`] is left. Larger
/// journals made rarer but longer checkpoints: measured with `scripts/bench`, 2 MiB gave the same
/// throughput with a p99 of 7 ms at 16 connections, 512 KiB 2.8 ms (ARCHITECTURE.md).
const JOURNAL_BYTES: u64 = 512 * 1024;
/// A group with more bytes of records than this is checkpointed at once rather than journaled:
/// its pages are written once, not twice. The journal is checkpointed after the answers when it
/// has less room than this, so that the next group nearly always fits.
const BIG_GROUP: usize = JOURNAL_BYTES as usize / 4;
/// How many bytes of journaled writes wait in [`Recent`] before they are applied to redb's
/// tables in one transaction (about 13 orders at one connection, a group or two at 64). 64 KiB
/// did a little more at one connection and raised the p99 at 64 connections (ARCHITECTURE.md).
const RECENT_BYTES: usize = 16 * 1024;

/// What [`Watched`] saw fail, the worst so far: nothing, a write that found no space, or a
/// failure whose outcome is unknown.
const FINE: u8 = 0;
const NO_SPACE: u8 = 1;
const UNKNOWN: u8 = 2;

pub struct RedbKv {
    db: redb::Database,
    fault: Arc<AtomicU8>,
    /// `None` over a backend that is not a file (tests): every group is then committed durably.
    journal: Option<Mutex<Logged>>,
    /// The writes the journal holds that redb's tables do not yet; reads look here first.
    recent: RwLock<Recent>,
}

/// Journaled writes not yet applied to redb's tables: the latest value of each key (`None`:
/// removed). Applying each group to redb on its own cost a transaction a group, most of the
/// writer's CPU when groups are small (at one connection, a group of one order: the writer
/// spent 68–102 µs of CPU an order that way, 32–40 gathering them here); a key written by
/// several groups is applied once and the transaction's cost is shared.
///
/// Readers take the read lock while they read this and take redb's table (`table`), so what
/// they see is one state: the writer adds a group's writes under the write lock (all of
/// them at once), and removes applied ones under it only after the transaction holding them
/// committed.
#[derive(Default)]
struct Recent {
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// The keys' and values' bytes, to know when to apply them.
    bytes: usize,
    /// redb's table as its last commit left it, opened by the first read after that commit and
    /// shared by the reads until the next: opening a read transaction and its table cost the
    /// writer's check of an order's `uniqueid` more than the lookup itself. A new `Recent`
    /// starts without one, and every commit of redb's tables is followed by a new `Recent`
    /// (under the write lock, so a read never pairs a table older than the commit with the
    /// writes left after it).
    table: Mutex<Option<Arc<Table>>>,
}

/// redb's table of Ferry's keys, as a read sees it.
type Table = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

impl Recent {
    fn add(&mut self, batch: Batch) {
        for (k, v) in batch.ops {
            let (key, value) = (k.len(), v.as_ref().map_or(0, Vec::len));
            match self.writes.insert(k, v) {
                Some(old) => self.bytes = self.bytes - old.map_or(0, |v| v.len()) + value,
                None => self.bytes += key + value,
            }
        }
    }

    fn ops(&self) -> impl Iterator<Item = Op<'_>> {
        self.writes
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_deref()))
    }
}

/// One write: a key and its new value, or `None` to remove it.
type Op<'a> = (&'a [u8], Option<&'a [u8]>);

/// The writes of `groups`, in order.
fn ops(groups: &[Batch]) -> impl Iterator<Item = Op<'_>> {
    groups
        .iter()
        .flat_map(|g| g.ops.iter().map(|(k, v)| (k.as_slice(), v.as_deref())))
}

/// The journal and the groups applied since the last flush (only the writer thread applies and
/// flushes; the lock is never contended).
struct Logged {
    journal: Journal,
    /// The number the next record gets.
    next: u64,
    /// Framed records of the groups not yet flushed, and the groups themselves.
    frames: Vec<u8>,
    groups: Vec<Batch>,
    /// Whether the groups not yet flushed are too big for the journal: they are then not
    /// framed, and the flush checkpoints.
    too_big: bool,
    /// Cleared by any failure: a failed engine is not checkpointed on close.
    healthy: bool,
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
        Self::over(FileBackend::new(file).map_err(|e| StoreError::Engine(Box::new(e)))?)?
            .journaled(dir)
    }

    /// This database made durable through the journal in `dir`, after replaying the records it
    /// holds that the database does not.
    fn journaled(mut self, dir: &Path) -> Result<Self, StoreError> {
        let (journal, found) =
            Journal::open(&dir.join(JOURNAL_FILE), JOURNAL_BYTES).map_err(io_error)?;
        let durable = self.durable_seq()?;
        let mut groups = Vec::new();
        let mut last = durable;
        for (seq, batch) in found.into_iter().filter(|(seq, _)| *seq > durable) {
            if seq != last + 1 {
                return Err(StoreError::Engine(
                    format!(
                        "the journal ({JOURNAL_FILE}) misses records {} to {}: it cannot be replayed",
                        last + 1,
                        seq - 1
                    )
                    .into(),
                ));
            }
            last = seq;
            groups.push(batch);
        }
        if !groups.is_empty() {
            tracing::info!(
                groups = groups.len(),
                "replaying the journal's groups written since the last checkpoint"
            );
            self.commit(ops(&groups), true, Some(last))?;
        }
        self.journal = Some(Mutex::new(Logged {
            journal,
            next: last + 1,
            frames: Vec::new(),
            groups: Vec::new(),
            too_big: false,
            healthy: true,
        }));
        Ok(self)
    }

    /// A database over `backend` (a file, or a failing one in tests), without a journal.
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
        // Reads of a table never written fail; create them once.
        let txn = db.begin_write().map_err(|e| classify(&fault, e))?;
        txn.open_table(DATA).map_err(|e| classify(&fault, e))?;
        txn.open_table(JOURNAL).map_err(|e| classify(&fault, e))?;
        txn.commit().map_err(|e| classify(&fault, e))?;
        Ok(Self {
            db,
            fault,
            journal: None,
            recent: RwLock::default(),
        })
    }

    fn err(&self, e: impl Into<redb::Error>) -> StoreError {
        classify(&self.fault, e)
    }

    /// The number of the last journal record the database holds durably (0: none).
    fn durable_seq(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(JOURNAL).map_err(|e| self.err(e))?;
        Ok(table
            .get(SEQ)
            .map_err(|e| self.err(e))?
            .map_or(0, |v| v.value()))
    }

    /// Writes `groups` in one transaction, durably or in memory only; a checkpoint records
    /// `seq`, the last journal record it holds.
    fn commit<'a>(
        &self,
        writes: impl Iterator<Item = Op<'a>>,
        durable: bool,
        seq: Option<u64>,
    ) -> Result<(), StoreError> {
        let txn = self.stage(writes, durable, seq)?;
        txn.commit().map_err(|e| self.err(e))
    }

    /// A transaction holding `writes`, not committed: nothing of it is visible yet.
    fn stage<'a>(
        &self,
        writes: impl Iterator<Item = Op<'a>>,
        durable: bool,
        seq: Option<u64>,
    ) -> Result<WriteTransaction, StoreError> {
        let mut txn = self.db.begin_write().map_err(|e| self.err(e))?;
        if !durable {
            txn.set_durability(Durability::None)
                .map_err(|e| StoreError::Engine(Box::new(e)))?;
        }
        {
            let mut table = txn.open_table(DATA).map_err(|e| self.err(e))?;
            for (k, v) in writes {
                match v {
                    Some(v) => {
                        table.insert(k, v).map_err(|e| self.err(e))?;
                    }
                    None => {
                        table.remove(k).map_err(|e| self.err(e))?;
                    }
                }
            }
        }
        if let Some(seq) = seq {
            let mut table = txn.open_table(JOURNAL).map_err(|e| self.err(e))?;
            table.insert(SEQ, seq).map_err(|e| self.err(e))?;
        }
        Ok(txn)
    }

    /// Makes the groups applied since the last flush durable and visible (see the module's doc).
    fn flush_logged(&self, logged: &mut Logged) -> Result<(), StoreError> {
        if logged.groups.is_empty() {
            return Ok(());
        }
        let groups = std::mem::take(&mut logged.groups);
        let frames = std::mem::take(&mut logged.frames);
        let too_big = std::mem::take(&mut logged.too_big);
        if too_big || !logged.journal.fits(frames.len()) {
            // The checkpoint: what waits in `recent`, then these groups.
            return self.checkpoint(logged, &groups);
        }
        // Durable first, then visible: readers never see a group that could still be lost.
        logged.journal.write(&frames).map_err(journal_failed)?;
        if let Err(e) = logged.journal.sync() {
            // The groups are answered as failed: on disk or not, their records must not be
            // replayed on the next open as if they had happened. Should that fail too, what the
            // next open finds is unknown.
            logged
                .journal
                .unwrite(frames.len())
                .map_err(journal_failed)?;
            return Err(journal_failed(e));
        }
        let mut recent = self.recent_mut();
        for group in groups {
            recent.add(group);
        }
        Ok(())
    }

    /// Commits what waits in `recent`, then `groups`, durably with the number of the last record
    /// journaled, and starts the journal again at its first byte.
    fn checkpoint(&self, logged: &mut Logged, groups: &[Batch]) -> Result<(), StoreError> {
        let last = Some(logged.next - 1);
        self.commit(self.recent().ops().chain(ops(groups)), true, last)?;
        *self.recent_mut() = Recent::default();
        logged.journal.restart();
        Ok(())
    }

    /// The work a flush leaves for after its answers (see [`Kv::tidy`]): a checkpoint when the
    /// journal has less room than a big group, else the waiting writes applied to redb's tables
    /// once [`RECENT_BYTES`] of them wait. Nothing while groups wait for their flush: a
    /// checkpoint now would be numbered past records the journal does not hold yet.
    fn tidy_logged(&self, logged: &mut Logged) -> Result<(), StoreError> {
        if !logged.groups.is_empty() {
            return Ok(());
        }
        if !logged.journal.fits(BIG_GROUP) {
            return self.checkpoint(logged, &[]);
        }
        if self.recent().bytes < RECENT_BYTES {
            return Ok(());
        }
        self.commit(self.recent().ops(), false, None)?;
        *self.recent_mut() = Recent::default();
        Ok(())
    }

    /// Runs `step` on the journal (nothing without one); a failure leaves the engine unhealthy,
    /// so that it is not checkpointed on close.
    fn with_journal(
        &self,
        step: impl FnOnce(&Self, &mut Logged) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let Some(logged) = &self.journal else {
            return Ok(());
        };
        let mut logged = logged.lock().unwrap_or_else(PoisonError::into_inner);
        let done = step(self, &mut logged);
        logged.healthy &= done.is_ok();
        done
    }

    /// redb's table as it is now, to be read with `recent` (whose read lock the caller holds).
    fn table(&self, recent: &Recent) -> Result<Arc<Table>, StoreError> {
        let mut cached = recent.table.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(table) = &*cached {
            return Ok(table.clone());
        }
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = Arc::new(txn.open_table(DATA).map_err(|e| self.err(e))?);
        *cached = Some(table.clone());
        Ok(table)
    }

    fn recent(&self) -> std::sync::RwLockReadGuard<'_, Recent> {
        self.recent.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn recent_mut(&self) -> std::sync::RwLockWriteGuard<'_, Recent> {
        self.recent.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A failed journal write (no space: it did not happen) or sync (the outcome is unknown).
fn journal_failed(e: JournalError) -> StoreError {
    match e {
        JournalError::Write(e) => io_error(e),
        JournalError::Sync(e) => StoreError::Engine(Box::new(e)),
    }
}

/// An I/O error of the journal: no space for a write that did not happen, else an engine error.
fn io_error(e: std::io::Error) -> StoreError {
    match is_no_space(&e) {
        true => StoreError::NoSpace(Box::new(e)),
        false => StoreError::Engine(Box::new(e)),
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
        let table = {
            let recent = self.recent();
            if let Some(value) = recent.writes.get(key) {
                return Ok(value.clone());
            }
            self.table(&recent)?
        };
        Ok(table
            .get(key)
            .map_err(|e| self.err(e))?
            .map(|v| v.value().to_vec()))
    }

    /// The keys of the range in redb's tables, with those in `recent` over them (a newer value,
    /// or removed), in order.
    fn scan(&self, from: &[u8], to: &[u8], visit: &mut Visitor<'_>) -> Result<(), StoreError> {
        if from >= to {
            return Ok(());
        }
        let (mine, table) = {
            let recent = self.recent();
            let mine: Vec<(Vec<u8>, Option<Vec<u8>>)> = recent
                .writes
                .range::<[u8], _>((Bound::Included(from), Bound::Excluded(to)))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            (mine, self.table(&recent)?)
        };
        let mut theirs = table.range(from..to).map_err(|e| self.err(e))?;
        let mut next = theirs.next().transpose().map_err(|e| self.err(e))?;
        let mut mine = mine.into_iter().peekable();
        loop {
            let mine_first = match (mine.peek(), &next) {
                (None, None) => return Ok(()),
                (Some((k, _)), Some((t, _))) => k.as_slice() <= t.value(),
                (mine, _) => mine.is_some(),
            };
            let flow = match mine_first {
                true => {
                    let (k, v) = mine.next().expect("peeked");
                    if next
                        .as_ref()
                        .is_some_and(|(t, _)| t.value() == k.as_slice())
                    {
                        next = theirs.next().transpose().map_err(|e| self.err(e))?;
                    }
                    match v {
                        Some(v) => visit(&k, &v),
                        None => continue,
                    }
                }
                false => {
                    let (k, v) = next.take().expect("matched");
                    let flow = visit(k.value(), v.value());
                    next = theirs.next().transpose().map_err(|e| self.err(e))?;
                    flow
                }
            };
            if flow.is_break() {
                return Ok(());
            }
        }
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        let Some(logged) = &self.journal else {
            self.commit(ops(std::slice::from_ref(&batch)), true, None)?;
            *self.recent_mut() = Recent::default();
            return Ok(());
        };
        let mut logged = logged.lock().unwrap_or_else(PoisonError::into_inner);
        let logged = &mut *logged;
        // A bulk operation (a retry of thousands of jobs) is not copied into a frame only to be
        // checkpointed.
        logged.too_big |= logged.frames.len() + framed_len(&batch) > BIG_GROUP;
        match logged.too_big {
            true => logged.frames.clear(),
            false => frame(logged.next, &batch, &mut logged.frames),
        }
        logged.next += 1;
        logged.groups.push(batch);
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.with_journal(Self::flush_logged)
    }

    fn tidy(&self) -> Result<(), StoreError> {
        self.with_journal(Self::tidy_logged)
    }
}

impl Drop for RedbKv {
    /// A clean close checkpoints, so the database file holds everything without its journal.
    fn drop(&mut self) {
        let Some(logged) = self.journal.take() else {
            return;
        };
        let mut logged = logged.into_inner().unwrap_or_else(PoisonError::into_inner);
        if !logged.healthy || self.fault.load(Ordering::Acquire) != FINE {
            return;
        }
        logged.groups.clear();
        let recent = std::mem::take(
            self.recent
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner),
        );
        if let Err(e) = self.commit(recent.ops(), true, Some(logged.next - 1)) {
            tracing::warn!(error = %e, "checkpoint on close failed; the journal is replayed on the next open");
        }
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

    /// The files as a crash would leave them, with the database still open.
    fn copy_files(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for name in [FILE_NAME, JOURNAL_FILE] {
            std::fs::copy(from.join(name), to.join(name)).unwrap();
        }
    }

    #[test]
    fn a_crash_loses_no_flushed_group_before_or_after_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let (live, crashed) = (dir.path().join("live"), dir.path().join("crashed"));
        let kv = RedbKv::open(&live).unwrap();
        let value = vec![b'v'; 1000];
        // Enough groups for a checkpoint or two, each flushed as the writer does.
        let groups = 3 * JOURNAL_BYTES as usize / 1000;
        for i in 0..groups {
            let mut batch = Batch::default();
            batch.put(format!("k{i:06}").into_bytes(), value.clone());
            if i > 0 {
                batch.delete(format!("k{:06}", i - 1).into_bytes());
            }
            if i == 500 {
                // Too big for the journal: checkpointed at once.
                batch.put(b"big".to_vec(), vec![b'b'; BIG_GROUP + 1]);
            }
            kv.apply(batch).unwrap();
            kv.flush().unwrap();
            // The files as they are when the group is answered, before `tidy` writes redb.
            if i % 997 == 0 || i == groups - 1 {
                let _ = std::fs::remove_dir_all(&crashed);
                copy_files(&live, &crashed);
                let reopened = RedbKv::open(&crashed).unwrap();
                let mut keys = Vec::new();
                reopened
                    .scan(b"k", b"l", &mut |k, _| {
                        keys.push(String::from_utf8(k.to_vec()).unwrap());
                        std::ops::ControlFlow::Continue(())
                    })
                    .unwrap();
                assert_eq!(keys, [format!("k{i:06}")], "after group {i}");
                assert_eq!(reopened.get(b"big").unwrap().is_some(), i >= 500);
            }
            kv.tidy().unwrap();
        }
        assert!(kv.durable_seq().unwrap() > 0, "a checkpoint was made");
        drop(kv);
        // A clean close leaves nothing to replay.
        let kv = RedbKv::open(&live).unwrap();
        assert_eq!(kv.durable_seq().unwrap(), groups as u64);
    }

    #[test]
    fn no_space_in_redb_loses_nothing_acknowledged_and_a_refused_group_is_not_replayed() {
        const ENOSPC: i32 = 28;
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(Failing::default());
        let open = || {
            RedbKv::over(Shared(backend.clone()))
                .unwrap()
                .journaled(dir.path())
                .unwrap()
        };
        let group = |key: &[u8], len: usize| Batch {
            ops: vec![(key.to_vec(), Some(vec![7; len]))],
        };
        let no_space = |result: Result<(), StoreError>| {
            let e = result.unwrap_err();
            assert!(matches!(e, StoreError::NoSpace(_)), "{e:?}");
        };
        let kv = open();
        kv.apply(group(b"kept", 10)).unwrap();
        kv.flush().unwrap();
        kv.tidy().unwrap();
        backend.errno.store(ENOSPC, Ordering::Relaxed);
        backend.write.store(true, Ordering::Relaxed);
        // Journaled and acknowledged (it is under a quarter of the journal): redb's file is
        // written only after the answer, and has no room.
        kv.apply(group(b"waiting", 64 * 1024)).unwrap();
        kv.flush().unwrap();
        assert!(kv.get(b"waiting").unwrap().is_some());
        no_space(kv.tidy());
        drop(kv);
        backend.write.store(false, Ordering::Relaxed);
        // Reopened as the writer does once space is back: what was acknowledged is there.
        let kv = open();
        assert!(kv.get(b"kept").unwrap().is_some());
        assert!(
            kv.get(b"waiting").unwrap().is_some(),
            "an acknowledged group was lost"
        );
        // A group too big for the journal is checkpointed by its flush, which finds no room:
        // it is refused, and did not happen.
        backend.write.store(true, Ordering::Relaxed);
        kv.apply(group(b"refused", BIG_GROUP + 1)).unwrap();
        no_space(kv.flush());
        drop(kv);
        backend.write.store(false, Ordering::Relaxed);
        let kv = open();
        assert!(
            kv.get(b"refused").unwrap().is_none(),
            "the refused group was replayed"
        );
        assert!(kv.get(b"waiting").unwrap().is_some());
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

    /// Random writes and removals over 200 keys, values up to 3 KB (so that waiting writes are
    /// applied every few groups and the journal checkpoints every hundred or so), reopened now
    /// and then: after every group, gets and scans (whole, and stopped early) answer what a map
    /// of the latest writes holds.
    #[test]
    fn reads_see_waiting_writes_over_the_tables_as_one_state() {
        let dir = tempfile::tempdir().unwrap();
        let open = || RedbKv::open(dir.path()).unwrap();
        reads_follow_a_model(open(), Some(&open));
    }

    /// The same without a journal (every group committed to redb's tables at once): reads never
    /// see the tables as they were before a commit.
    #[test]
    fn reads_see_every_commit_without_a_journal() {
        reads_follow_a_model(RedbKv::over(InMemoryBackend::new()).unwrap(), None);
    }

    /// Writes at random, reads checked against a map of the latest writes, reopened every 250
    /// groups when it can be.
    fn reads_follow_a_model(mut kv: RedbKv, reopen: Option<&dyn Fn() -> RedbKv>) {
        use std::ops::ControlFlow;
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut rng = 11u64;
        let mut next = move || {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            rng >> 33
        };
        let key = |n: u64| format!("k{:03}", n % 200).into_bytes();
        for round in 0..800 {
            let mut batch = Batch { ops: Vec::new() };
            for _ in 0..1 + next() % 5 {
                let k = key(next());
                let v = (next() % 4 != 0)
                    .then(|| vec![b'a' + (round % 26) as u8; (next() % 3000) as usize]);
                match &v {
                    Some(v) => model.insert(k.clone(), v.clone()),
                    None => model.remove(&k),
                };
                batch.ops.push((k, v));
            }
            kv.apply(batch).unwrap();
            kv.flush().unwrap();
            // Reads are checked as the group is answered (before `tidy`) and after.
            if round % 2 == 0 {
                kv.tidy().unwrap();
            }
            if let Some(reopen) = reopen.filter(|_| round % 250 == 249) {
                drop(kv);
                kv = reopen();
            }
            let k = key(next());
            assert_eq!(kv.get(&k).unwrap().as_ref(), model.get(&k), "round {round}");
            let (a, b) = (key(next()), key(next()));
            let (from, to) = (a.clone().min(b.clone()), a.max(b));
            let stop = 1 + next() as usize % 20;
            for limit in [usize::MAX, stop] {
                let mut seen = Vec::new();
                kv.scan(&from, &to, &mut |k, v| {
                    seen.push((k.to_vec(), v.to_vec()));
                    match seen.len() < limit {
                        true => ControlFlow::Continue(()),
                        false => ControlFlow::Break(()),
                    }
                })
                .unwrap();
                let expected: Vec<_> = model
                    .range(from.clone()..to.clone())
                    .take(limit)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                assert_eq!(seen, expected, "round {round}, limit {limit}");
            }
        }
        kv.tidy().unwrap();
        assert!(
            kv.recent().bytes < RECENT_BYTES,
            "waiting writes are applied as they grow"
        );
    }
}
