//! The job state machine, written once over [`Kv`] and run only on the writer thread, so its
//! read-then-write logic needs no transactions.
//!
//! Each command's writes go into an in-memory overlay that later commands of the same group read
//! through; at the end of the group the writer turns the overlay into one atomic batch and
//! flushes once. One batch per group, not per command: sled 0.34.7 rolls its IO buffer twice on
//! every `apply_batch` (`pin_log`), which measured 80 µs per create batched alone against 25 µs
//! batched 32 at a time. Index scans read committed state less the keys the group has removed
//! (so a second lease in a group looks past the jobs the first took); whatever they find is
//! re-checked through the overlay before it is acted on.
//!
//! ```text
//! placed ──lease──▶ processing ──created──▶ created
//!   ▲                  │ retry (attempts left) / lease expired
//!   └──────────────────┤
//!                      └──failed, or attempts/age used up──▶ error ──retry──▶ placed
//! placed ──clear──▶ cleared
//! ```

use std::collections::HashMap;
use std::mem;
use std::ops::ControlFlow;
use std::sync::Arc;

use tokio::sync::oneshot;

use ferry_shared::job::{JobId, JobKind, LeaseId, Payload, Status};
use ferry_shared::protocol::{
    AttemptDetail, LeasedJob, MAX_TEXT, Outcome, ReportAck, ReportItem, clip,
};
use ferry_shared::retry::{Decision, decide};
use ferry_shared::rfc3339;

use super::read::Get;
use super::record::{self, Event, Job, Lease, StoredMeta};
use super::{Batch, CreateOutcome, Kv, Limits, RetryOutcome, StoreError, keys, read};

pub const MAX_ATTEMPTS_EXCEEDED: &str = "MAX_ATTEMPTS_EXCEEDED";
pub const LEASE_EXPIRED: &str = "LEASE_EXPIRED";
/// Expired leases handed back per command, so one command never grows without bound.
const EXPIRE_CHUNK: usize = 1_000;
/// A job that waits (`Outcome::Wait`) is looked at again after this long at most, should the
/// api never learn that what held it is gone.
const MAX_WAIT_MS: u64 = 3_600_000;

/// Where a command's answer goes: each command has its own answer type, so the compiler checks
/// that every command is answered with what its caller expects.
pub type Answer<T> = oneshot::Sender<Result<T, StoreError>>;

/// What a lease call got: the jobs, and when the next job not yet due becomes due.
pub type Leased = (Vec<LeasedJob>, Option<i64>);
/// What a heartbeat did: the leases extended, and those no longer held.
pub type Beat = (Vec<LeaseId>, Vec<LeaseId>);

pub enum Command {
    Create(NewJob, Answer<CreateOutcome>),
    Lease {
        worker_id: String,
        max: u32,
        lease_ms: u64,
        answer: Answer<Leased>,
    },
    Report {
        worker_id: String,
        items: Vec<ReportItem>,
        answer: Answer<Vec<ReportAck>>,
    },
    Heartbeat {
        worker_id: String,
        lease_ids: Vec<LeaseId>,
        answer: Answer<Beat>,
    },
    /// Answers how many leases were handed back.
    ExpireLeases(Answer<u64>),
    /// Answers how many jobs were cleared.
    Clear(Answer<u64>),
    Retry(JobId, Answer<RetryOutcome>),
    /// Retries each of these jobs still in `error`; answers how many.
    RetryMany(Vec<JobId>, Answer<u64>),
    /// Makes every job waiting with this reason code due now; answers how many.
    Wake(String, Answer<u64>),
    SetWorker(bool, Answer<()>),
    /// Lease nothing more (the api is stopping). Every lease before it is counted when it is
    /// answered, so whoever waits for in-flight jobs sees them all.
    StopLeasing(Answer<()>),
    /// Answers how many jobs were pruned.
    Prune {
        before: PruneBefore,
        limit: usize,
        answer: Answer<u64>,
    },
    /// Writes (or, with `value` `None`, deletes) connector state if its version is still
    /// `expect` (0: absent): compare-and-swap.
    PutState {
        key: String,
        value: Option<serde_json::Value>,
        expect: u64,
        answer: Answer<StateWrite>,
    },
    /// Deletes up to `limit` connector state values whose `expires_ms` is before `now_ms`;
    /// answers how many.
    PruneState {
        now_ms: i64,
        limit: usize,
        answer: Answer<u64>,
    },
    /// Flush and stop the writer.
    Close(Answer<()>),
}

/// How a connector state write ended.
#[derive(Debug, Clone, PartialEq)]
pub enum StateWrite {
    /// Written: the new version (0 after a delete).
    Written(u64),
    /// Someone wrote first: the current version, for the caller to read again.
    Conflict(u64),
}

/// A job to place: its payload, and why it cannot be delivered, when intake already knows
/// (it is then kept in `error` with that reason, never dropped).
#[derive(Debug, Clone)]
pub struct NewJob {
    pub payload: Payload,
    pub refused: Option<Refusal>,
}

/// A reason code and its text.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub code: &'static str,
    pub text: String,
}

/// Which finished jobs pruning removes: those finished before these times.
#[derive(Debug, Clone, Copy)]
pub struct PruneBefore {
    /// `created` and `cleared` jobs.
    pub done_ms: i64,
    /// `error` jobs; `None` keeps them until an operator retries or clears them.
    pub error_ms: Option<i64>,
}

impl Command {
    pub fn is_close(&self) -> bool {
        matches!(self, Command::Close(_))
    }

    /// Whether the command takes in a new job (refused while the disk is full; everything else
    /// is bounded by the jobs already taken in).
    pub fn is_intake(&self) -> bool {
        matches!(self, Command::Create(..))
    }

    /// Answers `error` without running the command.
    pub fn refuse(self, error: StoreError) {
        fn no<T>(answer: Answer<T>, error: StoreError) {
            // A caller that gave up waiting is not an error.
            let _ = answer.send(Err(error));
        }
        match self {
            Command::Create(_, a) => no(a, error),
            Command::Lease { answer, .. } => no(answer, error),
            Command::Report { answer, .. } => no(answer, error),
            Command::Heartbeat { answer, .. } => no(answer, error),
            Command::ExpireLeases(a) | Command::Clear(a) | Command::Wake(_, a) => no(a, error),
            Command::Prune { answer, .. } => no(answer, error),
            Command::PutState { answer, .. } => no(answer, error),
            Command::PruneState { answer, .. } => no(answer, error),
            Command::Retry(_, a) => no(a, error),
            Command::RetryMany(_, a) => no(a, error),
            Command::SetWorker(_, a) | Command::StopLeasing(a) | Command::Close(a) => no(a, error),
        }
    }
}

/// A command's answer, held until the group's flush decides whether it stands.
pub struct Pending(Box<dyn FnOnce(Result<(), StoreError>) + Send>);

impl Pending {
    fn new<T: Send + 'static>(answer: Answer<T>, result: Result<T, StoreError>) -> Self {
        if let Err(e) = &result
            && !matches!(e, StoreError::Failed | StoreError::DiskFull)
        {
            tracing::error!(error = ?e, "store command failed");
        }
        Pending(Box::new(move |flushed| {
            // A caller that gave up waiting is not an error.
            let _ = answer.send(flushed.and(result));
        }))
    }

    /// Sends the answer, or the flush's failure in its place.
    pub fn send(self, flushed: Result<(), StoreError>) {
        (self.0)(flushed)
    }
}

/// What an event says beyond its transition.
#[derive(Default)]
struct Note {
    message: String,
    detail: AttemptDetail,
    worker_id: Option<String>,
}

impl Note {
    fn says(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            ..Self::default()
        }
    }
}

/// A command's writes plus the status counts they change, applied together.
#[derive(Default)]
struct Tx {
    batch: Batch,
    delta: [i64; 5],
    /// Jobs kept, by kind (each holds its kind's idempotency key until pruned).
    kinds: [i64; JobKind::ALL.len()],
    /// Jobs this command placed.
    placed: Vec<JobId>,
    /// The jobs this command wrote, for [`Machine::held`]: a copy while it is open and `held`
    /// has room for it, `None` otherwise (or deleted). Copies are made only for the room there
    /// is: when `held` is full (a backlog no worker takes), a create copies nothing to drop it.
    written: Vec<(JobId, Option<Job>)>,
    /// How many of `written` are copies.
    copies: usize,
}

/// Open jobs the writer keeps decoded ([`Machine::held`]), about a kilobyte each: under load
/// a worker leases what was placed a moment ago, and reports what it leased.
pub const MAX_HELD: usize = 512;

pub struct Machine {
    kv: Arc<dyn Kv>,
    limits: Limits,
    counts: [u64; 5],
    /// Jobs kept, by [`JobKind`]: the keys of each kind's idempotency index.
    kinds: [u64; JobKind::ALL.len()],
    /// Which job each live lease belongs to (heartbeats name only the lease).
    leases: HashMap<LeaseId, JobId>,
    /// Open jobs as this machine last wrote them, decoded: a lease, report or heartbeat takes
    /// them from here instead of decoding the record again (decoding was a fifth of a drain's
    /// instructions). It always equals what the store holds (kept in step in
    /// [`Machine::commit`]), holds only jobs in `placed` or `processing`, at most [`MAX_HELD`]
    /// (a job written while it is full is read from the store when next needed), so a tenant
    /// whose queue is empty holds none; it starts empty after a restart.
    held: HashMap<JobId, Job>,
    worker_running: bool,
    stopping: bool,
    rng: u64,
    /// This group's writes, not yet applied to the engine (`None` deletes).
    overlay: HashMap<Vec<u8>, Option<Vec<u8>>>,
    /// Whether something became leasable since the last flush (wakes long-polls).
    woke: bool,
    /// Jobs placed in this group, in order: a lease later in the group finds them here, as the
    /// committed index it scans does not hold them yet.
    fresh: Vec<JobId>,
}

impl Machine {
    /// Rebuilds the in-memory state (counts, live leases, worker state) from the store.
    pub fn recover(kv: Arc<dyn Kv>, limits: Limits) -> Result<Self, StoreError> {
        let mut counts = [0u64; 5];
        for st in Status::ALL {
            let prefix = keys::index_prefix(st);
            kv.scan(&prefix, &keys::prefix_end(&prefix), &mut |_, _| {
                counts[st.index()] += 1;
                ControlFlow::Continue(())
            })?;
        }
        let mut kinds = [0u64; JobKind::ALL.len()];
        for kind in JobKind::ALL {
            let prefix = keys::unique(kind, "");
            kv.scan(&prefix, &keys::prefix_end(&prefix), &mut |_, _| {
                kinds[kind as usize] += 1;
                ControlFlow::Continue(())
            })?;
        }
        let mut leases = HashMap::new();
        let prefix = keys::index_prefix(Status::Processing);
        for id in scan_ids(
            &*kv,
            &HashMap::new(),
            &prefix,
            &keys::prefix_end(&prefix),
            usize::MAX,
        )? {
            if let Some(lease) = read::job(&*kv, id)?.and_then(|j| j.lease) {
                leases.insert(lease.lease_id, id);
            }
        }
        let worker_running = match kv.get(keys::META_WORKER)? {
            Some(bytes) => match serde_json::from_slice(&bytes).map_err(StoreError::Decode)? {
                StoredMeta::V1 { worker_running } => worker_running,
            },
            None => true,
        };
        let seed = ferry_shared::now_ms() as u64 ^ (u64::from(std::process::id()) << 32);
        Ok(Self {
            kv,
            limits,
            counts,
            kinds,
            leases,
            held: HashMap::new(),
            worker_running,
            stopping: false,
            rng: seed,
            overlay: HashMap::new(),
            woke: worker_running,
            fresh: Vec::new(),
        })
    }

    pub fn counts(&self) -> [u64; 5] {
        self.counts
    }

    pub fn kinds(&self) -> [u64; JobKind::ALL.len()] {
        self.kinds
    }

    pub fn worker_running(&self) -> bool {
        self.worker_running
    }

    /// Whether any lease is live (something may expire).
    pub fn holds_leases(&self) -> bool {
        !self.leases.is_empty()
    }

    pub fn stopping(&self) -> bool {
        self.stopping
    }

    /// Carries [`Command::StopLeasing`] over to a machine rebuilt after a reopen.
    pub fn set_stopping(&mut self, stopping: bool) {
        self.stopping = stopping;
    }

    /// Makes everything written so far durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.kv.flush()
    }

    /// The engine's work left for after a group's answers ([`Kv::tidy`]).
    pub fn tidy(&self) -> Result<(), StoreError> {
        self.kv.tidy()
    }

    /// Whether something became leasable in this group so far.
    pub fn woke(&self) -> bool {
        self.woke
    }

    /// Whether something became leasable since the last call.
    pub fn take_woke(&mut self) -> bool {
        mem::take(&mut self.woke)
    }

    /// Applies this group's writes as one atomic batch; answers whether there were any (and so
    /// whether a flush is owed).
    pub fn write_group(&mut self) -> Result<bool, StoreError> {
        self.fresh.clear();
        if self.overlay.is_empty() {
            return Ok(false);
        }
        let ops = self.overlay.drain().collect();
        self.kv.apply(Batch { ops })?;
        Ok(true)
    }

    /// Runs one command; its answer waits for the group's flush.
    pub fn apply(&mut self, cmd: Command, now: i64) -> Pending {
        match cmd {
            Command::Create(new, a) => Pending::new(a, self.run(|m, tx| m.create(tx, new, now))),
            Command::Lease {
                worker_id,
                max,
                lease_ms,
                answer,
            } => Pending::new(
                answer,
                self.run(|m, tx| m.lease(tx, worker_id, max, lease_ms, now)),
            ),
            Command::Report {
                worker_id,
                items,
                answer,
            } => Pending::new(
                answer,
                self.run(|m, tx| m.report(tx, &worker_id, items, now)),
            ),
            Command::Heartbeat {
                worker_id,
                lease_ids,
                answer,
            } => Pending::new(
                answer,
                self.run(|m, tx| m.heartbeat(tx, &worker_id, lease_ids, now)),
            ),
            Command::ExpireLeases(a) => Pending::new(a, self.run(|m, tx| m.expire(tx, now))),
            Command::Clear(a) => Pending::new(a, self.run(|m, tx| m.clear(tx, now))),
            Command::Retry(id, a) => Pending::new(a, self.run(|m, tx| m.retry(tx, id, now))),
            Command::RetryMany(mut ids, a) => Pending::new(
                a,
                self.run(|m, tx| {
                    // One write per job: a job named twice is retried once.
                    ids.sort();
                    ids.dedup();
                    let mut n = 0;
                    for id in ids {
                        if matches!(m.retry(tx, id, now)?, RetryOutcome::Retried(_)) {
                            n += 1;
                        }
                    }
                    Ok(n)
                }),
            ),
            Command::Wake(code, a) => Pending::new(a, self.run(|m, tx| m.wake(tx, &code, now))),
            Command::SetWorker(running, a) => Pending::new(
                a,
                self.run(|m, tx| {
                    tx.batch.put(
                        keys::META_WORKER.to_vec(),
                        record::encode(&StoredMeta::V1 {
                            worker_running: running,
                        }),
                    );
                    m.worker_running = running;
                    m.woke = true;
                    Ok(())
                }),
            ),
            Command::Prune {
                before,
                limit,
                answer,
            } => Pending::new(answer, self.run(|m, tx| m.prune(tx, before, limit))),
            Command::PutState {
                key,
                value,
                expect,
                answer,
            } => Pending::new(
                answer,
                self.run(|m, tx| m.put_state(tx, &key, value, expect, now)),
            ),
            Command::PruneState {
                now_ms,
                limit,
                answer,
            } => Pending::new(answer, self.run(|m, tx| m.prune_state(tx, now_ms, limit))),
            Command::StopLeasing(a) => {
                self.stopping = true;
                Pending::new(a, Ok(()))
            }
            Command::Close(a) => Pending::new(a, Ok(())),
        }
    }

    /// Runs one command's logic; its writes join the group only if it succeeded.
    fn run<T>(
        &mut self,
        f: impl FnOnce(&mut Self, &mut Tx) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut tx = Tx::default();
        let out = f(self, &mut tx)?;
        self.commit(tx);
        Ok(out)
    }

    /// A finished command's writes join the group; a command that failed halfway never gets
    /// here, so it leaves nothing behind.
    fn commit(&mut self, tx: Tx) {
        self.overlay.extend(tx.batch.ops);
        self.fresh.extend(tx.placed);
        // `put_job` made copies only for the room there is.
        for (id, job) in tx.written {
            match job {
                Some(job) => self.held.insert(id, job),
                None => self.held.remove(&id),
            };
        }
        for (count, d) in self.counts.iter_mut().zip(tx.delta) {
            *count = count.saturating_add_signed(d);
        }
        for (count, d) in self.kinds.iter_mut().zip(tx.kinds) {
            *count = count.saturating_add_signed(d);
        }
    }

    /// Writes the job's record, and notes it for [`Machine::held`].
    fn put_job(&self, tx: &mut Tx, job: &Job) {
        tx.batch.put(keys::job(job.id), record::encode_job(job));
        let room = self.held.len() + tx.copies < MAX_HELD;
        let copy = (room && job.status.is_open()).then(|| job.clone());
        tx.copies += usize::from(copy.is_some());
        tx.written.push((job.id, copy));
    }

    /// Every job [`Machine::held`] keeps, beside what the store holds for it.
    #[cfg(test)]
    pub fn held_and_stored(&self) -> Vec<(Job, Option<Job>)> {
        self.held
            .values()
            .map(|job| (job.clone(), read::job(self, job.id).ok().flatten()))
            .collect()
    }

    /// The job as the store holds it. Taken from [`Machine::held`] when it is there: a command
    /// that writes it puts it back, one that fails halfway leaves it to be read again.
    fn load(&mut self, id: JobId) -> Result<Option<Job>, StoreError> {
        match self.held.remove(&id) {
            Some(job) => Ok(Some(job)),
            None => read::job(self, id),
        }
    }

    fn create(&mut self, tx: &mut Tx, new: NewJob, now: i64) -> Result<CreateOutcome, StoreError> {
        let NewJob { payload, refused } = new;
        let (kind, key) = (payload.kind(), payload.key().to_string());
        if let Some(existing) = read::job_by_key(self, kind, &key)? {
            let differing = existing.payload.differences(&payload);
            return Ok(if differing.is_empty() {
                CreateOutcome::Duplicate(existing)
            } else {
                CreateOutcome::Conflict(existing, differing)
            });
        }
        let open = self.counts[Status::Placed.index()] + self.counts[Status::Processing.index()];
        if refused.is_none() && open >= self.limits.max_queue {
            return Ok(CreateOutcome::QueueFull);
        }
        let mut job = Job {
            id: JobId::new(),
            payload,
            status: Status::Placed,
            attempts: 0,
            created_ms: now,
            updated_ms: now,
            due_ms: Some(now),
            lease: None,
            reason_code: None,
            reason_text: None,
            target_ref: None,
            finished_ms: None,
            log: Vec::new(),
            log_elided: 0,
            retried_ms: None,
        };
        tx.batch
            .put(keys::unique(kind, &key), job.id.as_bytes().to_vec());
        tx.kinds[kind as usize] += 1;
        append_event(&mut job, None, Note::says("received"), now);
        if let Some(Refusal { code, text }) = refused {
            job.status = Status::Error;
            job.due_ms = None;
            job.finished_ms = Some(now);
            job.reason_code = Some(code.to_string());
            let mut reason = text.clone();
            clip(&mut reason, MAX_TEXT);
            job.reason_text = Some(reason);
            append_event(
                &mut job,
                Some(Status::Placed),
                Note::says(format!("{code}: {text}")),
                now,
            );
        } else {
            self.woke = true;
            tx.placed.push(job.id);
        }
        index(tx, &job);
        tx.delta[job.status.index()] += 1;
        self.put_job(tx, &job);
        Ok(CreateOutcome::New(job))
    }

    /// `due` (from the committed index) and, up to `max` in all, the jobs placed earlier in this
    /// group, each named once.
    fn with_fresh(&self, mut due: Vec<JobId>, max: usize) -> Vec<JobId> {
        if due.len() >= max || self.fresh.is_empty() {
            return due;
        }
        let mut seen: std::collections::HashSet<JobId> = due.iter().copied().collect();
        for &id in &self.fresh {
            if due.len() >= max {
                break;
            }
            if seen.insert(id) {
                due.push(id);
            }
        }
        due
    }

    /// Moves `job` to the status `change` sets, keeping every index and the counts in step, and
    /// logs the transition.
    fn transition(
        &mut self,
        tx: &mut Tx,
        mut job: Job,
        now: i64,
        note: Note,
        change: impl FnOnce(&mut Job),
    ) -> Job {
        let from = job.status;
        unindex(tx, &job);
        if let Some(lease) = &job.lease {
            self.leases.remove(&lease.lease_id);
        }
        change(&mut job);
        job.updated_ms = now;
        if job.status != Status::Placed {
            job.due_ms = None;
        }
        if job.status != Status::Processing {
            job.lease = None;
        }
        job.finished_ms = (!job.status.is_open()).then_some(now);
        index(tx, &job);
        if let Some(lease) = &job.lease {
            self.leases.insert(lease.lease_id, job.id);
        }
        if job.status == Status::Placed {
            self.woke = true;
            tx.placed.push(job.id);
        }
        tx.delta[from.index()] -= 1;
        tx.delta[job.status.index()] += 1;
        append_event(&mut job, Some(from), note, now);
        self.put_job(tx, &job);
        job
    }

    fn lease(
        &mut self,
        tx: &mut Tx,
        worker_id: String,
        max: u32,
        lease_ms: u64,
        now: i64,
    ) -> Result<Leased, StoreError> {
        if !self.worker_running || self.stopping {
            return Ok((Vec::new(), None));
        }
        let max = max as usize;
        let placed = keys::index_prefix(Status::Placed);
        let now_key = keys::upto(Status::Placed, now);
        let due = scan_ids(&*self.kv, &self.overlay, &placed, &now_key, max)?;
        let committed = due.len();
        let due = self.with_fresh(due, max);
        let mut jobs = Vec::with_capacity(due.len());
        for (i, id) in due.into_iter().enumerate() {
            let job = self
                .load(id)?
                .filter(|j| j.status == Status::Placed && j.due_ms.is_some_and(|d| d <= now));
            let Some(job) = job else {
                // One placed earlier in this group may be leased or due later by now.
                if i < committed {
                    tracing::warn!(%id, "due index names a job that is not placed; skipped");
                }
                continue;
            };
            let lease = Lease {
                lease_id: LeaseId::new(),
                worker_id: worker_id.clone(),
                expires_ms: now + lease_ms as i64,
                lease_ms,
            };
            let note = Note {
                message: "leased".into(),
                worker_id: Some(worker_id.clone()),
                ..Note::default()
            };
            let job = self.transition(tx, job, now, note, |j| {
                j.status = Status::Processing;
                j.attempts += 1;
                j.lease = Some(lease);
            });
            let lease = job
                .lease
                .as_ref()
                .expect("a processing job holds its lease");
            jobs.push(LeasedJob {
                job_id: job.id,
                lease_id: lease.lease_id,
                lease_expires_at: rfc3339(lease.expires_ms),
                attempt: job.attempts,
                payload: job.payload.clone(),
                retried_at_ms: job.retried_ms,
            });
        }
        let mut next_due_ms = None;
        if jobs.len() < max {
            let end = keys::prefix_end(&placed);
            self.kv.scan(&now_key, &end, &mut |k, _| {
                next_due_ms = keys::index_ms(Status::Placed, k);
                ControlFlow::Break(())
            })?;
        }
        Ok((jobs, next_due_ms))
    }

    fn report(
        &mut self,
        tx: &mut Tx,
        worker_id: &str,
        items: Vec<ReportItem>,
        now: i64,
    ) -> Result<Vec<ReportAck>, StoreError> {
        let mut acks = Vec::with_capacity(items.len());
        for mut item in items {
            let refuse = |status, error: &str| ReportAck {
                job_id: item.job_id,
                accepted: false,
                status,
                error: Some(error.to_string()),
            };
            let Some(job) = self.load(item.job_id)? else {
                acks.push(refuse(None, "JOB_NOT_FOUND"));
                continue;
            };
            let holds_lease = job.status == Status::Processing
                && job.lease.as_ref().map(|l| l.lease_id) == Some(item.lease_id);
            if !holds_lease {
                acks.push(refuse(Some(job.status), "STALE_LEASE"));
                continue;
            }
            item.clip();
            let detail = item.detail;
            let note = |message: String| Note {
                message,
                detail: detail.clone(),
                worker_id: Some(worker_id.to_string()),
            };
            let job = match item.outcome {
                Outcome::Created { target_ref } => {
                    let msg = format!("created at the target as {target_ref}");
                    self.transition(tx, job, now, note(msg), |j| {
                        j.status = Status::Created;
                        j.target_ref = Some(target_ref);
                        j.reason_code = None;
                        j.reason_text = None;
                    })
                }
                Outcome::Retry {
                    reason_code: code,
                    reason_text: text,
                    after_ms,
                } => self.retry_or_give_up(tx, job, now, code, text, after_ms, note(String::new())),
                Outcome::Wait {
                    reason_code: code,
                    reason_text: text,
                    after_ms,
                } => {
                    let ms = after_ms.unwrap_or(MAX_WAIT_MS).min(MAX_WAIT_MS);
                    let msg = format!("waiting: {code}: {text}; this attempt not counted");
                    self.transition(tx, job, now, note(msg), |j| {
                        j.status = Status::Placed;
                        j.attempts = j.attempts.saturating_sub(1);
                        j.due_ms = Some(now + ms as i64);
                        j.reason_code = Some(code);
                        j.reason_text = Some(text);
                    })
                }
                Outcome::Failed {
                    reason_code: code,
                    reason_text: text,
                } => {
                    let msg = format!("failed: {code}: {text}");
                    self.transition(tx, job, now, note(msg), |j| {
                        j.status = Status::Error;
                        j.reason_code = Some(code);
                        j.reason_text = Some(text);
                    })
                }
            };
            acks.push(ReportAck {
                job_id: job.id,
                accepted: true,
                status: Some(job.status),
                error: None,
            });
        }
        Ok(acks)
    }

    /// Applies the tenant's retry policy to a failed attempt.
    #[allow(clippy::too_many_arguments)]
    fn retry_or_give_up(
        &mut self,
        tx: &mut Tx,
        job: Job,
        now: i64,
        code: String,
        text: String,
        after_ms: Option<u64>,
        mut note: Note,
    ) -> Job {
        let age = (now - job.retried_ms.unwrap_or(job.created_ms)).max(0) as u64;
        let unit = self.next_unit();
        match decide(&self.limits.retry, job.attempts, age, unit, after_ms) {
            Decision::RetryIn(ms) => {
                note.message = format!("{code}: {text}; retry in {ms} ms");
                self.transition(tx, job, now, note, |j| {
                    j.status = Status::Placed;
                    j.due_ms = Some(now + ms as i64);
                    j.reason_code = Some(code);
                    j.reason_text = Some(text);
                })
            }
            Decision::GiveUp => {
                let text = format!(
                    "gave up after {} attempts; last: {code}: {text}",
                    job.attempts
                );
                note.message = format!("{MAX_ATTEMPTS_EXCEEDED}: {text}");
                self.transition(tx, job, now, note, |j| {
                    j.status = Status::Error;
                    j.reason_code = Some(MAX_ATTEMPTS_EXCEEDED.to_string());
                    j.reason_text = Some(text);
                })
            }
        }
    }

    fn heartbeat(
        &mut self,
        tx: &mut Tx,
        worker_id: &str,
        lease_ids: Vec<LeaseId>,
        now: i64,
    ) -> Result<Beat, StoreError> {
        let (mut extended, mut lost) = (Vec::new(), Vec::new());
        for lease_id in lease_ids {
            let job = match self.leases.get(&lease_id) {
                Some(id) => self.load(*id)?,
                None => None,
            };
            let Some(mut job) = job.filter(|j| {
                j.status == Status::Processing
                    && j.lease
                        .as_ref()
                        .is_some_and(|l| l.lease_id == lease_id && l.worker_id == worker_id)
            }) else {
                lost.push(lease_id);
                continue;
            };
            unindex(tx, &job);
            if let Some(lease) = job.lease.as_mut() {
                lease.expires_ms = now + lease.lease_ms as i64;
            }
            index(tx, &job);
            self.put_job(tx, &job);
            extended.push(lease_id);
        }
        Ok((extended, lost))
    }

    fn expire(&mut self, tx: &mut Tx, now: i64) -> Result<u64, StoreError> {
        let leased = keys::index_prefix(Status::Processing);
        let ids = scan_ids(
            &*self.kv,
            &self.overlay,
            &leased,
            &keys::upto(Status::Processing, now),
            EXPIRE_CHUNK,
        )?;
        let expired = |j: &Job| {
            j.status == Status::Processing && j.lease.as_ref().is_some_and(|l| l.expires_ms <= now)
        };
        let mut n = 0;
        for id in ids {
            let Some(job) = self.load(id)?.filter(expired) else {
                continue;
            };
            let worker = job.lease.as_ref().map(|l| l.worker_id.clone());
            let text = format!(
                "the lease of worker {} expired before it reported",
                worker.as_deref().unwrap_or("?")
            );
            let note = Note {
                worker_id: worker,
                ..Note::default()
            };
            self.retry_or_give_up(tx, job, now, LEASE_EXPIRED.into(), text, None, note);
            n += 1;
        }
        Ok(n)
    }

    fn clear(&mut self, tx: &mut Tx, now: i64) -> Result<u64, StoreError> {
        let prefix = keys::index_prefix(Status::Placed);
        let ids = scan_ids(
            &*self.kv,
            &self.overlay,
            &prefix,
            &keys::prefix_end(&prefix),
            usize::MAX,
        )?;
        let mut n = 0;
        for id in ids {
            if let Some(job) = self.load(id)?.filter(|j| j.status == Status::Placed) {
                self.transition(tx, job, now, Note::says("cleared by an operator"), |j| {
                    j.status = Status::Cleared;
                });
                n += 1;
            }
        }
        Ok(n)
    }

    /// Jobs that wait (`Outcome::Wait`) with `code` become due now: what held them is gone.
    fn wake(&mut self, tx: &mut Tx, code: &str, now: i64) -> Result<u64, StoreError> {
        let prefix = keys::index_prefix(Status::Placed);
        let ids = scan_ids(
            &*self.kv,
            &self.overlay,
            &keys::upto(Status::Placed, now),
            &keys::prefix_end(&prefix),
            usize::MAX,
        )?;
        let mut n = 0;
        for id in ids {
            let Some(job) = self
                .load(id)?
                .filter(|j| j.status == Status::Placed && j.reason_code.as_deref() == Some(code))
            else {
                continue;
            };
            let note = Note::says(format!("{code} no longer holds it: due now"));
            self.transition(tx, job, now, note, |j| j.due_ms = Some(now));
            n += 1;
        }
        Ok(n)
    }

    fn retry(&mut self, tx: &mut Tx, id: JobId, now: i64) -> Result<RetryOutcome, StoreError> {
        let Some(job) = self.load(id)? else {
            return Ok(RetryOutcome::NotFound);
        };
        if job.status != Status::Error {
            return Ok(RetryOutcome::NotInError(job.status));
        }
        let was = job.reason_code.clone().unwrap_or_default();
        let note = Note::says(format!(
            "retried by an operator (was {was}); attempts start again"
        ));
        let job = self.transition(tx, job, now, note, |j| {
            j.status = Status::Placed;
            j.attempts = 0;
            j.due_ms = Some(now);
            j.reason_code = None;
            j.reason_text = None;
            j.retried_ms = Some(now);
        });
        Ok(RetryOutcome::Retried(job))
    }

    fn prune(&mut self, tx: &mut Tx, before: PruneBefore, limit: usize) -> Result<u64, StoreError> {
        let before_ms = |st: Status| match st {
            Status::Error => before.error_ms,
            _ => Some(before.done_ms),
        };
        let mut ids = Vec::new();
        for st in [Status::Created, Status::Error, Status::Cleared] {
            let Some(until) = before_ms(st) else { continue };
            let prefix = keys::index_prefix(st);
            let left = limit.saturating_sub(ids.len());
            ids.extend(scan_ids(
                &*self.kv,
                &self.overlay,
                &prefix,
                &keys::upto(st, until),
                left,
            )?);
        }
        let finished = |j: &Job| {
            !j.status.is_open()
                && before_ms(j.status).is_some_and(|b| j.finished_ms.is_some_and(|f| f <= b))
        };
        let mut n = 0;
        for id in ids {
            let Some(job) = self.load(id)?.filter(finished) else {
                continue;
            };
            unindex(tx, &job);
            tx.batch.delete(keys::job(id));
            tx.written.push((id, None));
            let unique = keys::unique(job.kind(), job.payload.key());
            if self.get(&unique)?.as_deref() == Some(id.as_bytes().as_slice()) {
                tx.batch.delete(unique);
                tx.kinds[job.kind() as usize] -= 1;
            }
            tx.delta[job.status.index()] -= 1;
            n += 1;
        }
        Ok(n)
    }

    fn put_state(
        &mut self,
        tx: &mut Tx,
        key: &str,
        value: Option<serde_json::Value>,
        expect: u64,
        now: i64,
    ) -> Result<StateWrite, StoreError> {
        let current = read::state_version(self, key)?;
        if current != expect {
            return Ok(StateWrite::Conflict(current));
        }
        let k = keys::state(key);
        Ok(match value {
            Some(value) => {
                let version = current + 1;
                tx.batch.put(
                    k,
                    record::encode(&record::StoredState::V1 {
                        value,
                        version,
                        updated_ms: now,
                    }),
                );
                StateWrite::Written(version)
            }
            None => {
                tx.batch.delete(k);
                StateWrite::Written(0)
            }
        })
    }

    fn prune_state(&mut self, tx: &mut Tx, now_ms: i64, limit: usize) -> Result<u64, StoreError> {
        let expired = |v: &serde_json::Value| v["expires_ms"].as_i64().is_some_and(|e| e < now_ms);
        let mut keys = Vec::new();
        let prefix = [keys::STATE];
        self.kv
            .scan(&prefix, &keys::prefix_end(&prefix), &mut |k, v| {
                let stale = serde_json::from_slice::<record::StoredState>(v)
                    .is_ok_and(|record::StoredState::V1 { value, .. }| expired(&value));
                if stale {
                    keys.push(String::from_utf8_lossy(&k[1..]).into_owned());
                }
                if keys.len() >= limit {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })?;
        let mut n = 0;
        for key in keys {
            // Read again through this group's writes: a value just rewritten may not be expired.
            let (value, _) = read::state(self, &key)?;
            if expired(&value) {
                tx.batch.delete(keys::state(&key));
                n += 1;
            }
        }
        Ok(n)
    }

    /// A uniform number in [0, 1) for backoff jitter (splitmix64; quality needs are modest).
    fn next_unit(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The writer reads through this group's writes to the engine.
impl read::Get for Machine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.overlay.get(key) {
            Some(v) => Ok(v.clone()),
            None => self.kv.get(key),
        }
    }
}

/// The ids of the index keys in `[from, to)`, at most `limit` of them, leaving out the keys
/// `overlay` (the group's writes so far) removes: a limit spent on them would leave a second
/// lease in the group empty-handed behind the jobs the first took.
fn scan_ids(
    kv: &dyn Kv,
    overlay: &HashMap<Vec<u8>, Option<Vec<u8>>>,
    from: &[u8],
    to: &[u8],
    limit: usize,
) -> Result<Vec<JobId>, StoreError> {
    let mut ids = Vec::new();
    if limit == 0 {
        return Ok(ids);
    }
    kv.scan(from, to, &mut |k, _| {
        if matches!(overlay.get(k), Some(None)) {
            return ControlFlow::Continue(());
        }
        ids.extend(keys::trailing_id(k));
        if ids.len() >= limit {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    Ok(ids)
}

/// The one index key a job holds in its current status.
fn index_key(job: &Job) -> Option<Vec<u8>> {
    let ms = match job.status {
        Status::Placed => job.due_ms,
        Status::Processing => job.lease.as_ref().map(|l| l.expires_ms),
        _ => job.finished_ms,
    }?;
    Some(keys::index(job.status, ms, job.id))
}

fn index(tx: &mut Tx, job: &Job) {
    if let Some(key) = index_key(job) {
        tx.batch.put(key, Vec::new());
    }
}

fn unindex(tx: &mut Tx, job: &Job) {
    if let Some(key) = index_key(job) {
        tx.batch.delete(key);
    }
}

fn append_event(job: &mut Job, from: Option<Status>, note: Note, now: i64) {
    job.push_event(Event {
        at_ms: now,
        from,
        to: job.status,
        attempt: job.attempts,
        message: note.message,
        http_status: note.detail.http_status,
        duration_ms: note.detail.duration_ms,
        excerpt: note.detail.excerpt,
        worker_id: note.worker_id,
        artifacts: note.detail.artifacts,
    });
}
