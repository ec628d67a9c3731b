//! The tenant's store: the only code that opens the database (an Architecture Invariant).
//!
//! Layers, bottom up:
//! - [`Kv`]: the narrow trait an engine implements (get, ordered scan, atomic batch, flush).
//!   Two engines: [`sled_engine`] and [`redb_engine`], chosen with `store = "sled" | "redb"`.
//! - [`machine`]: the job state machine (create, lease, report, expire, clear, retry, prune) written
//!   once over `Kv`, so every engine behaves the same.
//! - [`writer`]: the single writer thread. It drains waiting commands, applies each as one atomic
//!   batch, flushes once for the whole group, and only then answers (group commit). It also
//!   decides what a failed write means: no space (refuse intake, reopen, resume by itself) or an
//!   unknown outcome (refuse everything; the api exits to be restarted).
//! - [`disk`]: free space, and the reserve released when the disk fills.
//! - [`Store`]: the cloneable handle routes use: async commands through the writer, reads straight
//!   from the engine on the caller's thread.

#[cfg(test)]
mod conformance;
pub mod disk;
pub mod journal;
pub mod keys;
pub mod machine;
pub mod read;
pub mod record;
pub mod redb_engine;
pub mod sled_engine;
pub mod writer;

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use ferry_shared::config::RetryConfig;
use ferry_shared::job::{JobId, JobKind, LeaseId, Payload, Status};
use ferry_shared::protocol::{LeasedJob, ReportAck, ReportItem};
use tokio::sync::oneshot;

use machine::Answer;
pub use machine::{Command, NewJob, PruneBefore, Refusal, StateWrite};
use record::Job;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage engine error")]
    Engine(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("a stored record cannot be decoded")]
    Decode(#[source] serde_json::Error),
    /// An engine's write found no space (ENOSPC, EDQUOT): it did not happen. The writer alone
    /// meets this; it answers [`StoreError::DiskFull`].
    #[error("the disk is full")]
    NoSpace(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the store is closed")]
    Closed,
    #[error("the disk is full: the store refuses this write until space comes back")]
    DiskFull,
    #[error("a write of the store failed with an unknown outcome; the api stops to be restarted")]
    Failed,
    #[error("store = \"{chosen}\" but this tenant's data is in {found} ({dir}); choose {found}")]
    OtherEngine {
        chosen: &'static str,
        found: &'static str,
        dir: String,
    },
}

/// The storage engines; see ARCHITECTURE.md for the evidence behind the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sled,
    Redb,
}

impl Engine {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "sled" => Some(Engine::Sled),
            "redb" => Some(Engine::Redb),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Engine::Sled => "sled",
            Engine::Redb => "redb",
        }
    }

    fn other(self) -> Self {
        match self {
            Engine::Sled => Engine::Redb,
            Engine::Redb => Engine::Sled,
        }
    }

    /// Opens this engine's database in `dir`.
    pub fn open(self, dir: &Path) -> Result<Arc<dyn Kv>, StoreError> {
        Ok(match self {
            Engine::Sled => Arc::new(sled_engine::SledKv::open(dir)?),
            Engine::Redb => Arc::new(redb_engine::RedbKv::open(dir)?),
        })
    }

    /// Where this engine keeps a tenant's data.
    pub fn dir(self, tenant_dir: &Path) -> std::path::PathBuf {
        match self {
            Engine::Sled => tenant_dir.join("store-sled"),
            Engine::Redb => tenant_dir.join("store-redb"),
        }
    }
}

/// An atomic group of writes: `None` deletes the key.
#[derive(Debug, Default)]
pub struct Batch {
    pub ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push((key, Some(value)));
    }
    pub fn delete(&mut self, key: Vec<u8>) {
        self.ops.push((key, None));
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Called for each key and value of a scan; `Break` ends the scan.
pub type Visitor<'a> = dyn FnMut(&[u8], &[u8]) -> ControlFlow<()> + 'a;

/// What a storage engine must provide. Reads may come from any thread; `apply` and `flush` come
/// only from the writer thread.
pub trait Kv: Send + Sync + 'static {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Visits the keys in `[from, to)` in byte order until `visit` breaks.
    fn scan(&self, from: &[u8], to: &[u8], visit: &mut Visitor<'_>) -> Result<(), StoreError>;
    /// Applies every write of `batch` or none of them. Reads see them only once they are
    /// durable, at the latest after the next `flush`: no reader sees a write a crash could still
    /// take away.
    fn apply(&self, batch: Batch) -> Result<(), StoreError>;
    /// Makes everything applied so far durable and visible (blocking).
    fn flush(&self) -> Result<(), StoreError>;
    /// Work a flush may leave for after the group is answered (redb: applying journaled writes
    /// to its tables, checkpoints). Nothing acknowledged depends on it; a failure is treated as
    /// a failed flush.
    fn tidy(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Whether the store takes writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Ok,
    /// A write found no space: intake is refused until space comes back (by itself).
    DiskFull,
    /// A write's outcome is unknown: everything is refused and the api stops.
    Failed,
}

impl Health {
    pub const REFUSALS: [Health; 2] = [Health::DiskFull, Health::Failed];

    /// The reason code (`/alive`, metrics); `None` when healthy.
    pub fn code(self) -> Option<&'static str> {
        match self {
            Health::Ok => None,
            Health::DiskFull => Some("DISK_FULL"),
            Health::Failed => Some("STORE_FAILED"),
        }
    }

    pub fn describe(self) -> Option<&'static str> {
        match self {
            Health::Ok => None,
            Health::DiskFull => Some(
                "DISK_FULL: the disk is full; intake is refused and resumes by itself when space \
                 comes back",
            ),
            Health::Failed => Some(
                "STORE_FAILED: a write's outcome is unknown; the api stops so that a restart \
                 recovers the store",
            ),
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What the writer publishes for readers on other threads.
#[derive(Debug, Default)]
pub struct Published {
    /// Jobs per status and per kind, replaced together once a group is flushed: read one
    /// number at a time, a reader could add one job's old status to its new one.
    tally: Mutex<Tally>,
    worker_running: AtomicBool,
    /// A [`Health`] as its index.
    health: AtomicU8,
    /// Commands refused, by the [`Health`] that refused them (index 1 and 2).
    refused: [AtomicU64; 3],
    /// Woken after a flush that made work ready (long-polling leases wait on it).
    pub work: tokio::sync::Notify,
    /// Notified once when the store fails (see [`Health::Failed`]).
    failed: tokio::sync::Notify,
    /// Whether any lease is live, and a permit when leases appear where there were none: the
    /// lease-expiry task sleeps while there is nothing to expire.
    leases_live: AtomicBool,
    leased: tokio::sync::Notify,
    /// Leases that found nothing, left for the writer to serve in the group that next makes
    /// work ready (see [`Store::park_lease`]).
    parked: Mutex<Vec<ParkedLease>>,
    next_ticket: AtomicU64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    counts: [u64; 5],
    kinds: [u64; ferry_shared::job::JobKind::ALL.len()],
}

/// A lease waiting in [`Published::parked`], numbered so that its caller can withdraw it.
#[derive(Debug)]
pub struct ParkedLease {
    ticket: u64,
    worker_id: String,
    max: u32,
    lease_ms: u64,
    answer: Answer<machine::Leased>,
}

impl ParkedLease {
    /// The lease command it stands for.
    pub fn into_command(self) -> Command {
        Command::Lease {
            worker_id: self.worker_id,
            max: self.max,
            lease_ms: self.lease_ms,
            answer: self.answer,
        }
    }
}

impl Published {
    fn health(&self) -> Health {
        match self.health.load(Ordering::Relaxed) {
            0 => Health::Ok,
            1 => Health::DiskFull,
            _ => Health::Failed,
        }
    }

    fn set_health(&self, health: Health) {
        self.health.store(health as u8, Ordering::Relaxed);
        if health == Health::Failed {
            self.failed.notify_one();
        }
    }

    fn refused(&self, by: Health) {
        self.refused[by.index()].fetch_add(1, Ordering::Relaxed);
    }

    fn tally(&self) -> Tally {
        *self.tally.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_tally(&self, counts: [u64; 5], kinds: [u64; JobKind::ALL.len()]) {
        *self.tally.lock().unwrap_or_else(PoisonError::into_inner) = Tally { counts, kinds };
    }

    fn parked(&self) -> std::sync::MutexGuard<'_, Vec<ParkedLease>> {
        self.parked.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The parked leases whose callers still wait, for the writer to serve.
    fn take_parked(&self) -> Vec<ParkedLease> {
        let mut parked = std::mem::take(&mut *self.parked());
        parked.retain(|p| !p.answer.is_closed());
        parked
    }
}

/// A parked lease, from its caller's side: [`Parked::served`] completes when the writer has
/// served it; dropped or [`Parked::withdraw`]n, it leaves the writer's list.
pub struct Parked {
    ticket: u64,
    answer: Option<oneshot::Receiver<Result<machine::Leased, StoreError>>>,
    published: Arc<Published>,
}

impl Parked {
    /// Completes when the writer has served the lease (perhaps with no jobs, when another lease
    /// of the same group took them). Cancel-safe; not to be awaited again once complete.
    pub async fn served(&mut self) -> Result<machine::Leased, StoreError> {
        let rx = self.answer.as_mut().ok_or(StoreError::Closed)?;
        let served = rx.await;
        self.answer = None;
        served.map_err(|_| StoreError::Closed)?
    }

    /// Takes the lease back from the writer's list; when the writer has already taken it, waits
    /// for its answer, which follows the group's flush.
    pub async fn withdraw(mut self) -> Option<Result<machine::Leased, StoreError>> {
        let rx = self.answer.take()?;
        if self.remove() {
            return None;
        }
        Some(rx.await.map_err(|_| StoreError::Closed).and_then(|r| r))
    }

    /// Whether the lease was still in the list (and so is out of it now, unserved).
    fn remove(&self) -> bool {
        let mut parked = self.published.parked();
        let before = parked.len();
        parked.retain(|p| p.ticket != self.ticket);
        parked.len() != before
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        if self.answer.is_some() {
            self.remove();
        }
    }
}

/// The engine readers use. The writer swaps it when it reopens the engine after a full disk; in
/// between, reads answer [`StoreError::DiskFull`].
pub struct KvSlot(RwLock<Arc<dyn Kv>>);

impl KvSlot {
    fn new(kv: Arc<dyn Kv>) -> Self {
        Self(RwLock::new(kv))
    }

    fn get(&self) -> Arc<dyn Kv> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn replace(&self, kv: Arc<dyn Kv>) -> Arc<dyn Kv> {
        std::mem::replace(
            &mut *self.0.write().unwrap_or_else(PoisonError::into_inner),
            kv,
        )
    }
}

/// Opens the engine again (after a full disk).
pub type Opener = Box<dyn Fn() -> Result<Arc<dyn Kv>, StoreError> + Send>;

/// Tunables of the state machine, taken from the tenant's settings.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub retry: RetryConfig,
    pub max_queue: u64,
}

/// The cloneable handle to the store.
#[derive(Clone)]
pub struct Store {
    tx: std::sync::mpsc::Sender<Command>,
    kv: Arc<KvSlot>,
    published: Arc<Published>,
}

/// Joins the writer thread once every command has been answered and the last flush is done.
pub struct WriterHandle(std::thread::JoinHandle<()>);

impl WriterHandle {
    pub fn join(self) {
        if self.0.join().is_err() {
            tracing::error!("the store's writer thread panicked");
        }
    }
}

// Moved once per request; boxing the job would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum CreateOutcome {
    New(Job),
    Duplicate(Job),
    /// The key is known with a different payload: the fields that differ.
    Conflict(Job, Vec<&'static str>),
    QueueFull,
}

#[allow(clippy::large_enum_variant)]
pub enum RetryOutcome {
    Retried(Job),
    NotFound,
    NotInError(Status),
}

impl Store {
    /// Opens (or creates) the tenant's store with `engine` under `tenant_dir`, with a disk
    /// reserve of `reserve_bytes` beside it, and starts its writer. Refuses to create an empty
    /// store beside the other engine's data: switching engines must never look like an empty
    /// queue.
    pub fn open(
        engine: Engine,
        tenant_dir: &Path,
        limits: Limits,
        reserve_bytes: u64,
    ) -> Result<(Store, WriterHandle), StoreError> {
        let (mine, other) = (engine.dir(tenant_dir), engine.other().dir(tenant_dir));
        if !mine.exists() && other.exists() {
            return Err(StoreError::OtherEngine {
                chosen: engine.name(),
                found: engine.other().name(),
                dir: other.display().to_string(),
            });
        }
        let open: Opener = Box::new(move || engine.open(&mine));
        Self::start(open, disk::Reserve::new(tenant_dir, reserve_bytes), limits)
    }

    /// Starts the store over the engine `open` opens (again after a full disk).
    pub fn start(
        open: Opener,
        reserve: disk::Reserve,
        limits: Limits,
    ) -> Result<(Store, WriterHandle), StoreError> {
        let published = Arc::new(Published::default());
        let kv = open()?;
        if let Err(e) = reserve.ensure() {
            // Not fatal: the store starts refusing intake, as after a full disk.
            tracing::warn!(error = %e, path = %reserve.dir().display(), "cannot allocate the disk reserve");
            published.set_health(Health::DiskFull);
        }
        let machine = machine::Machine::recover(kv.clone(), limits)?;
        let slot = Arc::new(KvSlot::new(kv));
        let reopen = writer::Reopen {
            open,
            reserve,
            limits,
            slot: slot.clone(),
        };
        let (tx, handle) = writer::spawn(machine, reopen, published.clone())?;
        Ok((
            Store {
                tx,
                kv: slot,
                published,
            },
            WriterHandle(handle),
        ))
    }

    /// Sends the command `make` builds around its answer channel, and waits for the answer.
    async fn call<T>(&self, make: impl FnOnce(Answer<T>) -> Command) -> Result<T, StoreError> {
        let (answer, rx) = oneshot::channel();
        self.tx.send(make(answer)).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Places a job; with `refused`, keeps it in `error` with that reason at once.
    pub async fn create(
        &self,
        payload: Payload,
        refused: Option<Refusal>,
    ) -> Result<CreateOutcome, StoreError> {
        self.call(|a| Command::Create(NewJob { payload, refused }, a))
            .await
    }

    /// Leases up to `max` due jobs. Also answers when the next not-yet-due job becomes due.
    pub async fn lease(
        &self,
        worker_id: String,
        max: u32,
        lease_ms: u64,
    ) -> Result<(Vec<LeasedJob>, Option<i64>), StoreError> {
        self.call(|answer| Command::Lease {
            worker_id,
            max,
            lease_ms,
            answer,
        })
        .await
    }

    pub async fn report(
        &self,
        worker_id: String,
        items: Vec<ReportItem>,
    ) -> Result<Vec<ReportAck>, StoreError> {
        self.call(|answer| Command::Report {
            worker_id,
            items,
            answer,
        })
        .await
    }

    /// Leaves a lease that found nothing with the writer, which serves it within the group that
    /// next makes work ready: the jobs that group places are leased in it, with no group of
    /// their own for the lease. The caller still bounds the wait ([`Parked::withdraw`]).
    pub fn park_lease(&self, worker_id: String, max: u32, lease_ms: u64) -> Parked {
        let (answer, rx) = oneshot::channel();
        let ticket = self.published.next_ticket.fetch_add(1, Ordering::Relaxed);
        self.published.parked().push(ParkedLease {
            ticket,
            worker_id,
            max,
            lease_ms,
            answer,
        });
        Parked {
            ticket,
            answer: Some(rx),
            published: self.published.clone(),
        }
    }

    /// Extends the leases still held; answers those extended and those lost.
    pub async fn heartbeat(
        &self,
        worker_id: String,
        lease_ids: Vec<LeaseId>,
    ) -> Result<(Vec<LeaseId>, Vec<LeaseId>), StoreError> {
        self.call(|answer| Command::Heartbeat {
            worker_id,
            lease_ids,
            answer,
        })
        .await
    }

    /// Hands expired leases back to the queue (or to `error` when attempts are used up).
    pub async fn expire_leases(&self) -> Result<u64, StoreError> {
        self.call(Command::ExpireLeases).await
    }

    /// Moves every `placed` job to `cleared`; answers how many.
    pub async fn clear(&self) -> Result<u64, StoreError> {
        self.call(Command::Clear).await
    }

    /// Deletes up to `limit` jobs that finished before `before`, with their logs.
    pub async fn prune(&self, before: PruneBefore, limit: usize) -> Result<u64, StoreError> {
        self.call(|answer| Command::Prune {
            before,
            limit,
            answer,
        })
        .await
    }

    pub async fn set_worker_running(&self, running: bool) -> Result<(), StoreError> {
        self.call(|a| Command::SetWorker(running, a)).await
    }

    pub async fn retry(&self, id: JobId) -> Result<RetryOutcome, StoreError> {
        self.call(|a| Command::Retry(id, a)).await
    }

    /// Retries each of `ids` still in `error`, in one write; answers how many.
    pub async fn retry_many(&self, ids: Vec<JobId>) -> Result<u64, StoreError> {
        self.call(|a| Command::RetryMany(ids, a)).await
    }

    /// Makes every job waiting with `reason_code` due now; answers how many.
    pub async fn wake(&self, reason_code: &str) -> Result<u64, StoreError> {
        let code = reason_code.to_string();
        self.call(|a| Command::Wake(code, a)).await
    }

    /// Writes connector state if its version is still `expect` (0: absent); `None` deletes it.
    pub async fn put_state(
        &self,
        key: String,
        value: Option<serde_json::Value>,
        expect: u64,
    ) -> Result<StateWrite, StoreError> {
        self.call(|answer| Command::PutState {
            key,
            value,
            expect,
            answer,
        })
        .await
    }

    /// Deletes up to `limit` connector state values past their `expires_ms`.
    pub async fn prune_state(&self, now_ms: i64, limit: usize) -> Result<u64, StoreError> {
        self.call(|answer| Command::PruneState {
            now_ms,
            limit,
            answer,
        })
        .await
    }

    /// Every connector state value whose key starts with `prefix`.
    pub fn states(&self, prefix: &str) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        read::states(&*self.kv.get(), prefix)
    }

    /// A connector state value and its version; `(Null, 0)` when absent.
    pub fn state(&self, key: &str) -> Result<(serde_json::Value, u64), StoreError> {
        read::state(&*self.kv.get(), key)
    }

    /// Leases nothing from now on; when this returns, every lease granted before is counted.
    pub async fn stop_leasing(&self) -> Result<(), StoreError> {
        self.call(Command::StopLeasing).await
    }

    /// Asks the writer to flush and stop; later commands answer `Closed`.
    pub async fn close(&self) -> Result<(), StoreError> {
        match self.call(Command::Close).await {
            Ok(()) | Err(StoreError::Closed) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub fn job(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        read::job(&*self.kv.get(), id)
    }

    pub fn job_by_key(&self, kind: JobKind, key: &str) -> Result<Option<Job>, StoreError> {
        read::job_by_key(&*self.kv.get(), kind, key)
    }

    /// When the oldest job waiting to be leased was created (among the first
    /// [`read::OLDEST_SCAN`] due), if any waits.
    pub fn oldest_waiting_ms(&self) -> Result<Option<i64>, StoreError> {
        read::oldest_waiting_ms(&*self.kv.get())
    }

    pub fn list(&self, query: &read::ListQuery) -> Result<read::Page, StoreError> {
        read::list(&*self.kv.get(), query)
    }

    /// Jobs per status, in `Status::ALL` order, as of the last flush.
    pub fn counts(&self) -> [u64; 5] {
        self.published.tally().counts
    }

    /// Jobs of status `st` that finished in `(after_ms, until_ms]`, oldest first.
    pub fn finished_between(
        &self,
        st: Status,
        after_ms: i64,
        until_ms: i64,
        limit: usize,
    ) -> Result<Vec<Job>, StoreError> {
        read::finished_between(&*self.kv.get(), st, after_ms, until_ms, limit)
    }

    /// [`Store::counts`] and the jobs kept by kind (indexed by `JobKind as usize`), from one
    /// reading, so that they add up alike.
    pub fn counts_and_kinds(&self) -> ([u64; 5], [u64; JobKind::ALL.len()]) {
        let tally = self.published.tally();
        (tally.counts, tally.kinds)
    }

    pub fn count(&self, st: Status) -> u64 {
        self.published.tally().counts[st.index()]
    }

    pub fn worker_running(&self) -> bool {
        self.published.worker_running.load(Ordering::Relaxed)
    }

    /// Whether any lease is live, as of the last flush.
    pub fn holds_leases(&self) -> bool {
        self.published.leases_live.load(Ordering::Relaxed)
    }

    /// Completes when leases appear where there were none (at once if they did since the last
    /// call).
    pub async fn leases_granted(&self) {
        self.published.leased.notified().await
    }

    pub fn health(&self) -> Health {
        self.published.health()
    }

    /// Commands refused because the store was in `by` (disk full, failed).
    pub fn refused(&self, by: Health) -> u64 {
        self.published.refused[by.index()].load(Ordering::Relaxed)
    }

    /// Completes when the store has failed (a write of unknown outcome).
    pub async fn failed(&self) {
        self.published.failed.notified().await
    }

    pub fn work_notify(&self) -> &tokio::sync::Notify {
        &self.published.work
    }
}
