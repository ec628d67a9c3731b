//! The store conformance suite: what every engine behind [`Kv`](super::Kv) must do, run against
//! each of them through the real writer. FIFO by due time, idempotency, leases and their expiry,
//! the oldest waiting job, fencing of stale reports, heartbeats, clear, retry, the retry policy, pruning, the queue limit,
//! listing, and recovery after a restart.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use ferry_shared::config::RetryConfig;
use ferry_shared::job::{JobId, OrderLine, Payload, Status};
use ferry_shared::protocol::{AttemptDetail, LeasedJob, Outcome, ReportItem};

use super::machine::{Answer, Command, MAX_HELD, Machine, NewJob};
use super::read::{Cursor, ListQuery};
use super::{
    CreateOutcome, Engine, Limits, PruneBefore, RetryOutcome, Store, StoreError, WriterHandle,
};

fn limits() -> Limits {
    Limits {
        retry: RetryConfig {
            max_attempts: 3,
            base_ms: 10,
            max_backoff_ms: 20,
            max_age_hours: 48,
        },
        max_queue: 1_000,
    }
}

/// Opens the store. Within one process, sled releases its file lock from a background thread
/// after the previous handle is dropped, so a reopen waits (at most 2 s) for it; a new process,
/// as in a real restart, never meets this.
fn open(engine: Engine, dir: &Path) -> (Store, WriterHandle) {
    waiting_for_lock(|| Store::open(engine, dir, limits(), 0))
}

/// What `open` answers, tried again while sled's lock is still held (at most 2 s).
pub(super) fn waiting_for_lock<T>(open: impl Fn() -> Result<T, StoreError>) -> T {
    for _ in 0..100 {
        match open() {
            Err(e) if format!("{e:?}").contains("could not acquire lock") => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other.expect("the store opens"),
        }
    }
    panic!("the store's lock was not released in 2 s")
}

async fn close(store: Store, writer: WriterHandle) {
    store.close().await.expect("close");
    writer.join();
}

fn order(uniqueid: &str) -> OrderLine {
    OrderLine {
        uniqueid: uniqueid.into(),
        workshop: "Bennys Auto".into(),
        dealer: None,
        worksheet: "558".into(),
        product_nr: "10".into(),
        amount: 5.0,
        username: None,
        password: None,
    }
}

async fn create(store: &Store, uniqueid: &str) -> JobId {
    match store
        .create(Payload::OrderLine(order(uniqueid)), None)
        .await
        .unwrap()
    {
        CreateOutcome::New(job) => job.id,
        _ => panic!("{uniqueid} was not new"),
    }
}

async fn lease(store: &Store, max: u32, lease_ms: u64) -> Vec<LeasedJob> {
    store.lease("w".into(), max, lease_ms).await.unwrap().0
}

async fn report(store: &Store, job: &LeasedJob, outcome: Outcome) -> (bool, Option<String>) {
    let item = ReportItem {
        job_id: job.job_id,
        lease_id: job.lease_id,
        outcome,
        detail: AttemptDetail::default(),
    };
    let ack = store
        .report("w".into(), vec![item])
        .await
        .unwrap()
        .remove(0);
    (ack.accepted, ack.error)
}

fn retry(after_ms: Option<u64>) -> Outcome {
    Outcome::Retry {
        reason_code: "ERP_UNAVAILABLE".into(),
        reason_text: "503".into(),
        after_ms,
    }
}

fn created() -> Outcome {
    Outcome::Created {
        target_ref: "L-1".into(),
    }
}

fn status(store: &Store, id: JobId) -> Status {
    store.job(id).unwrap().expect("job exists").status
}

pub async fn jobs_are_leased_first_in_first_out_by_due_time(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let (store, writer) = open(engine, dir.path());
    let ids = [
        create(&store, "a").await,
        create(&store, "b").await,
        create(&store, "c").await,
    ];
    let first = lease(&store, 1, 30_000).await;
    assert_eq!(first[0].job_id, ids[0]);
    // `a` fails and is due again in 10 s: b and c, then a newer d, come before it.
    report(&store, &first[0], retry(Some(10_000))).await;
    let d = create(&store, "d").await;
    let next: Vec<JobId> = lease(&store, 10, 30_000)
        .await
        .iter()
        .map(|j| j.job_id)
        .collect();
    assert_eq!(next, vec![ids[1], ids[2], d]);
    let (jobs, next_due) = store.lease("w".into(), 10, 30_000).await.unwrap();
    assert!(jobs.is_empty());
    assert!(next_due.is_some_and(|due| due > ferry_shared::now_ms() + 5_000));
    close(store, writer).await;
}

pub async fn the_oldest_waiting_job_is_found_behind_newer_ones(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let (store, writer) = open(engine, dir.path());
    assert_eq!(store.oldest_waiting_ms().unwrap(), None);
    let first = create(&store, "first").await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    create(&store, "second").await;
    // `first` fails and is due again later: it now sits behind `second` in the due index.
    let leased = lease(&store, 1, 30_000).await.remove(0);
    assert_eq!(leased.job_id, first);
    report(&store, &leased, retry(Some(10_000))).await;
    let created_ms = store.job(first).unwrap().unwrap().created_ms;
    let oldest = store.oldest_waiting_ms().unwrap().expect("jobs wait");
    assert!(
        (created_ms - oldest).abs() <= 1,
        "{oldest} is the first job's creation, {created_ms}"
    );
    for job in lease(&store, 10, 30_000).await {
        report(&store, &job, created()).await;
    }
    assert_eq!(status(&store, first), Status::Placed, "still waiting");
    assert_eq!(store.oldest_waiting_ms().unwrap(), Some(oldest));
    close(store, writer).await;
}

pub async fn the_same_uniqueid_is_one_job_across_restarts(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let (store, writer) = open(engine, dir.path());
    let id = create(&store, "once").await;
    assert!(
        matches!(store.create(Payload::OrderLine(order("once")), None).await.unwrap(), CreateOutcome::Duplicate(j) if j.id == id)
    );
    let mut relabelled = order("once");
    relabelled.dealer = Some("Gygag".into());
    assert!(
        matches!(store.create(Payload::OrderLine(relabelled), None).await.unwrap(), CreateOutcome::Duplicate(j) if j.id == id),
        "the dealer label is not part of the order"
    );
    let mut other = order("once");
    other.amount = 6.0;
    assert!(matches!(
        store.create(Payload::OrderLine(other.clone()), None).await.unwrap(),
        CreateOutcome::Conflict(_, fields) if fields == ["amount"]
    ));
    close(store, writer).await;
    let (store, writer) = open(engine, dir.path());
    assert!(
        matches!(store.create(Payload::OrderLine(order("once")), None).await.unwrap(), CreateOutcome::Duplicate(j) if j.id == id)
    );
    assert!(matches!(
        store.create(Payload::OrderLine(other), None).await.unwrap(),
        CreateOutcome::Conflict(_, _)
    ));
    assert_eq!(store.count(Status::Placed), 1);
    close(store, writer).await;
}

pub async fn an_expired_lease_returns_the_job_and_fences_the_old_report(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let (store, writer) = open(engine, dir.path());
    let id = create(&store, "slow").await;
    let stale = lease(&store, 1, 50).await.remove(0);
    assert_eq!(store.expire_leases().await.unwrap(), 0, "not yet expired");
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(store.expire_leases().await.unwrap(), 1);
    let job = store.job(id).unwrap().unwrap();
    assert_eq!(
        (job.status, job.reason_code.as_deref()),
        (Status::Placed, Some("LEASE_EXPIRED"))
    );
    tokio::time::sleep(Duration::from_millis(30)).await; // past the backoff
    let fresh = lease(&store, 1, 30_000).await.remove(0);
    assert_eq!(fresh.attempt, 2);
    assert_eq!(
        report(&store, &stale, created()).await,
        (false, Some("STALE_LEASE".into()))
    );
    assert_eq!(status(&store, id), Status::Processing);
    assert_eq!(report(&store, &fresh, created()).await, (true, None));
    assert_eq!(status(&store, id), Status::Created);
    assert_eq!(
        report(&store, &fresh, created()).await.1.as_deref(),
        Some("STALE_LEASE")
    );
    close(store, writer).await;
}

pub async fn heartbeats_extend_leases_and_name_lost_ones(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let (store, writer) = open(engine, dir.path());
    let id = create(&store, "beat").await;
    let job = lease(&store, 1, 100).await.remove(0);
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (extended, lost) = store
            .heartbeat("w".into(), vec![job.lease_id])
            .await
            .unwrap();
        assert_eq!((extended.len(), lost.len()), (1, 0));
        assert_eq!(store.expire_leases().await.unwrap(), 0);
    }
    let (extended, lost) = store
        .heartbeat("someone-else".into(), vec![job.lease_id])
        .await
        .unwrap();
    assert_eq!(
        (extended.len(), lost.len()),
        (0, 1),
        "a lease is its worker's"
    );
    assert_eq!(status(&store, id), Status::Processing);
    close(store, writer).await;
}

pub async fn clear_moves_only_waiting_jobs_to_cleared(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let (store, writer) = open(engine, dir.path());
    for u in ["a", "b", "c", "d"] {
        create(&store, u).await;
    }
    let held = lease(&store, 1, 30_000).await.remove(0);
    assert_eq!(store.clear().await.unwrap(), 3);
    assert_eq!(store.counts(), [0, 1, 0, 0, 3]);
    assert_eq!(status(&store, held.job_id), Status::Processing);
    assert_eq!(store.clear().await.unwrap(), 0);
    close(store, writer).await;
}

pub async fn a_failed_job_can_be_retried_and_attempts_are_bounded(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let (store, writer) = open(engine, dir.path());
    let id = create(&store, "f").await;
    let job = lease(&store, 1, 30_000).await.remove(0);
    let failed = Outcome::Failed {
        reason_code: "ERP_REJECTED".into(),
        reason_text: "no".into(),
    };
    report(&store, &job, failed).await;
    assert_eq!(status(&store, id), Status::Error);
    assert!(matches!(store.retry(id).await.unwrap(), RetryOutcome::Retried(j) if j.attempts == 0));
    assert!(matches!(
        store.retry(id).await.unwrap(),
        RetryOutcome::NotInError(Status::Placed)
    ));
    assert!(matches!(
        store.retry(JobId::new()).await.unwrap(),
        RetryOutcome::NotFound
    ));
    // max_attempts = 3: the third retryable failure ends in error.
    for attempt in 1..=3 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let job = lease(&store, 1, 30_000).await.remove(0);
        assert_eq!(job.attempt, attempt);
        report(&store, &job, retry(None)).await;
    }
    let job = store.job(id).unwrap().unwrap();
    assert_eq!(job.status, Status::Error);
    assert_eq!(job.reason_code.as_deref(), Some("MAX_ATTEMPTS_EXCEEDED"));
    close(store, writer).await;
}

/// One command through the state machine at `now`: its group written and flushed, its answer
/// taken.
fn step<T>(m: &mut Machine, now: i64, make: impl FnOnce(Answer<T>) -> Command) -> T {
    let (answer, mut rx) = tokio::sync::oneshot::channel();
    let pending = m.apply(make(answer), now);
    m.write_group().unwrap();
    m.flush().unwrap();
    pending.send(Ok(()));
    rx.try_recv().unwrap().unwrap()
}

pub async fn an_operator_retry_restarts_the_age_limit(engine: Engine) {
    // Driven through the state machine with explicit times: hours pass in an instant.
    let dir = tempfile::tempdir().unwrap();
    let mut m = Machine::recover(engine.open(dir.path()).unwrap(), limits()).unwrap();
    let hour = 3_600_000;
    let t0 = ferry_shared::now_ms();
    let lease = |m: &mut Machine, now: i64| -> LeasedJob {
        step(m, now, |answer| Command::Lease {
            worker_id: "w".into(),
            max: 1,
            lease_ms: 30_000,
            answer,
        })
        .0
        .remove(0)
    };
    let fail = |m: &mut Machine, job: &LeasedJob, now: i64| -> Option<Status> {
        let items = vec![ReportItem {
            job_id: job.job_id,
            lease_id: job.lease_id,
            outcome: retry(None),
            detail: AttemptDetail::default(),
        }];
        step(m, now, |answer| Command::Report {
            worker_id: "w".into(),
            items,
            answer,
        })
        .remove(0)
        .status
    };
    step(&mut m, t0, |a| {
        Command::Create(
            NewJob {
                payload: Payload::OrderLine(order("old")),
                refused: None,
            },
            a,
        )
    });
    let job = lease(&mut m, t0);
    // 49 hours later the first failure is past max_age_hours (48): error.
    assert_eq!(fail(&mut m, &job, t0 + 49 * hour), Some(Status::Error));
    // An operator puts it back; its next failure is retried, not given up.
    step(&mut m, t0 + 50 * hour, |a| Command::Retry(job.job_id, a));
    let job = lease(&mut m, t0 + 50 * hour);
    assert_eq!(
        fail(&mut m, &job, t0 + 50 * hour + 1_000),
        Some(Status::Placed)
    );
}

pub async fn open_jobs_the_writer_keeps_decoded_are_what_the_store_holds(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Machine::recover(engine.open(dir.path()).unwrap(), limits()).unwrap();
    let t0 = ferry_shared::now_ms();
    // Every job kept decoded is open and equal to its record; answers how many.
    let check = |m: &Machine| {
        let held = m.held_and_stored();
        for (job, stored) in &held {
            assert!(job.status.is_open(), "{:?}", job.status);
            assert_eq!(Some(job), stored.as_ref(), "job {}", job.id);
        }
        held.len()
    };
    let create = |m: &mut Machine, uniqueid: String| {
        m.apply(
            Command::Create(
                NewJob {
                    payload: Payload::OrderLine(order(&uniqueid)),
                    refused: None,
                },
                tokio::sync::oneshot::channel().0,
            ),
            t0,
        )
    };
    for i in 0..6 {
        create(&mut m, format!("held-{i}"));
    }
    m.write_group().unwrap();
    m.flush().unwrap();
    assert_eq!(check(&m), 6, "placed jobs are kept");
    let lease = |m: &mut Machine, now: i64| {
        step(m, now, |answer| Command::Lease {
            worker_id: "w".into(),
            max: 6,
            lease_ms: 30_000,
            answer,
        })
        .0
    };
    let jobs = lease(&mut m, t0);
    assert_eq!(check(&m), 6);
    let lease_ids = jobs[..3].iter().map(|j| j.lease_id).collect();
    let (extended, _) = step(&mut m, t0 + 1_000, |answer| Command::Heartbeat {
        worker_id: "w".into(),
        lease_ids,
        answer,
    });
    assert_eq!(extended.len(), 3);
    assert_eq!(check(&m), 6, "heartbeats keep the extended leases");
    let item = |job: &LeasedJob, outcome: Outcome| ReportItem {
        job_id: job.job_id,
        lease_id: job.lease_id,
        outcome,
        detail: AttemptDetail::default(),
    };
    let mut stale = item(&jobs[3], created());
    stale.lease_id = jobs[4].lease_id;
    let failed = Outcome::Failed {
        reason_code: "REJECTED".into(),
        reason_text: "422".into(),
    };
    let items = vec![
        item(&jobs[0], created()),
        item(&jobs[1], retry(None)),
        item(&jobs[2], failed),
        stale,
    ];
    let acks = step(&mut m, t0 + 2_000, |answer| Command::Report {
        worker_id: "w".into(),
        items,
        answer,
    });
    let accepted: Vec<bool> = acks.iter().map(|a| a.accepted).collect();
    assert_eq!(accepted, [true, true, true, false]);
    assert_eq!(
        check(&m),
        3,
        "created and failed jobs leave, the retried one waits, a refused report reads it again"
    );
    // The refused one, read from the store, reports as it should.
    let acks = step(&mut m, t0 + 3_000, |answer| Command::Report {
        worker_id: "w".into(),
        items: vec![item(&jobs[3], created())],
        answer,
    });
    assert_eq!(acks[0].status, Some(Status::Created));
    assert_eq!(check(&m), 3);
    // The last two expire back to the queue (due after a backoff of at most 20 ms), and are
    // leased again with the retried one.
    step(&mut m, t0 + 60_000, Command::ExpireLeases);
    assert_eq!(check(&m), 3);
    assert_eq!(lease(&mut m, t0 + 61_000).len(), 3);
    assert_eq!(check(&m), 3);
    // No more than MAX_HELD are kept; the others are read from the store.
    for i in 0..MAX_HELD {
        create(&mut m, format!("more-{i}"));
    }
    m.write_group().unwrap();
    m.flush().unwrap();
    assert_eq!(check(&m), MAX_HELD);
    let leased = lease(&mut m, t0 + 62_000);
    assert_eq!(leased.len(), 6);
    assert_eq!(check(&m), MAX_HELD);
}

pub async fn pruning_removes_finished_jobs_and_frees_their_uniqueids(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let (store, writer) = open(engine, dir.path());
    let done = create(&store, "done").await;
    let failed = create(&store, "failed").await;
    let open_job = create(&store, "open").await;
    let jobs = lease(&store, 2, 30_000).await;
    assert_eq!((jobs[0].job_id, jobs[1].job_id), (done, failed));
    report(&store, &jobs[0], created()).await;
    let rejected = Outcome::Failed {
        reason_code: "ERP_REJECTED".into(),
        reason_text: "no such worksheet".into(),
    };
    report(&store, &jobs[1], rejected).await;
    let now = ferry_shared::now_ms;
    let before = |done_ms: i64, error_ms: Option<i64>| PruneBefore { done_ms, error_ms };
    assert_eq!(
        store
            .prune(before(now() - 60_000, Some(now() - 60_000)), 100)
            .await
            .unwrap(),
        0,
        "too recent"
    );
    assert_eq!(
        store.prune(before(now() + 1, None), 100).await.unwrap(),
        1,
        "errors kept until retried or cleared"
    );
    assert!(store.job(done).unwrap().is_none());
    assert!(
        store
            .job_by_key(ferry_shared::job::JobKind::OrderLine, "done")
            .unwrap()
            .is_none()
    );
    assert_eq!(status(&store, failed), Status::Error);
    assert_eq!(
        store
            .prune(before(now() + 1, Some(now() - 60_000)), 100)
            .await
            .unwrap(),
        0,
        "errors have their own, longer retention"
    );
    assert_eq!(
        store
            .prune(before(now() + 1, Some(now() + 1)), 100)
            .await
            .unwrap(),
        1
    );
    assert!(store.job(failed).unwrap().is_none());
    assert!(
        store.job(open_job).unwrap().is_some(),
        "open jobs are never pruned"
    );
    assert_eq!(store.count(Status::Created), 0);
    assert_eq!(store.count(Status::Error), 0);
    assert_eq!(
        store.counts_and_kinds().1[0],
        1,
        "only the open job is kept"
    );
    assert!(matches!(
        store
            .create(Payload::OrderLine(order("done")), None)
            .await
            .unwrap(),
        CreateOutcome::New(_)
    ));
    close(store, writer).await;
}

pub async fn a_full_queue_refuses_new_jobs(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let (store, writer) = Store::open(
        engine,
        dir.path(),
        Limits {
            max_queue: 2,
            ..limits()
        },
        0,
    )
    .unwrap();
    create(&store, "a").await;
    create(&store, "b").await;
    assert!(matches!(
        store
            .create(Payload::OrderLine(order("c")), None)
            .await
            .unwrap(),
        CreateOutcome::QueueFull
    ));
    assert!(matches!(
        store
            .create(Payload::OrderLine(order("a")), None)
            .await
            .unwrap(),
        CreateOutcome::Duplicate(_)
    ));
    close(store, writer).await;
}

pub async fn listing_pages_through_each_status_once(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let (store, writer) = open(engine, dir.path());
    for i in 0..7 {
        create(&store, &format!("j{i}")).await;
    }
    lease(&store, 3, 30_000).await;
    let mut after: Option<Cursor> = None;
    let mut seen = Vec::new();
    loop {
        let page = store
            .list(&ListQuery {
                statuses: vec![Status::Placed, Status::Processing],
                after,
                limit: 2,
                needle: None,
                budget: super::read::SCAN_BUDGET,
                ..ListQuery::default()
            })
            .unwrap();
        seen.extend(page.jobs.iter().map(|j| j.payload.key().to_string()));
        match page.next_cursor {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, (0..7).map(|i| format!("j{i}")).collect::<Vec<_>>());
    let found = store
        .list(&ListQuery {
            statuses: vec![Status::Placed],
            after: None,
            limit: 10,
            needle: Some("j6".into()),
            budget: super::read::SCAN_BUDGET,
            ..ListQuery::default()
        })
        .unwrap();
    assert_eq!(found.jobs.len(), 1);

    // A search that spends its budget before filling a page answers with a cursor; following
    // the cursors finds every match exactly once.
    let mut after: Option<Cursor> = None;
    let (mut found, mut pages) = (Vec::new(), 0);
    loop {
        let page = store
            .list(&ListQuery {
                statuses: vec![Status::Placed, Status::Processing],
                after,
                limit: 10,
                needle: Some("j".into()),
                budget: 3,
                ..ListQuery::default()
            })
            .unwrap();
        pages += 1;
        assert!(page.jobs.len() <= 3);
        found.extend(page.jobs.iter().map(|j| j.payload.key().to_string()));
        match page.next_cursor {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    found.sort();
    assert_eq!(found, (0..7).map(|i| format!("j{i}")).collect::<Vec<_>>());
    assert!(pages >= 3, "the budget cut the scan into pages");
    close(store, writer).await;
}

pub async fn nothing_is_leased_after_leasing_stops(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let (store, writer) = open(engine, dir.path());
    create(&store, "a").await;
    let held = lease(&store, 1, 30_000).await;
    create(&store, "b").await;
    store.stop_leasing().await.unwrap();
    assert_eq!(
        store.count(Status::Processing),
        1,
        "earlier leases are counted"
    );
    assert!(lease(&store, 5, 30_000).await.is_empty());
    assert_eq!(
        report(&store, &held[0], created()).await,
        (true, None),
        "reports still land"
    );
    close(store, writer).await;
}

pub async fn counts_read_while_jobs_move_add_up_to_the_jobs(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let (store, writer) = open(engine, dir.path());
    // Each group places jobs or moves them between statuses; a reader must never count a job
    // in its old status and its new one (or in neither), nor by status and not yet by kind.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = std::thread::spawn({
        let (store, done) = (store.clone(), done.clone());
        move || {
            let mut torn = Vec::new();
            while !done.load(Ordering::Relaxed) {
                let (counts, kinds) = store.counts_and_kinds();
                if counts.iter().sum::<u64>() != kinds.iter().sum::<u64>() {
                    torn.push((counts, kinds));
                }
            }
            torn
        }
    });
    let n = 200u64;
    for i in 0..n {
        create(&store, &format!("j{i}")).await;
    }
    for _ in 0..n / 2 {
        for job in lease(&store, 2, 60_000).await {
            report(&store, &job, created()).await;
        }
    }
    done.store(true, Ordering::Relaxed);
    let torn = reader.join().unwrap();
    assert!(
        torn.is_empty(),
        "{} torn reads: {:?}",
        torn.len(),
        &torn[..torn.len().min(5)]
    );
    assert_eq!(store.count(Status::Created), n);
    close(store, writer).await;
}

pub async fn a_restart_recovers_jobs_counts_leases_and_worker_state(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let (store, writer) = open(engine, dir.path());
    for u in ["a", "b", "c", "d", "e"] {
        create(&store, u).await;
    }
    let held = lease(&store, 2, 60_000).await;
    report(&store, &held[0], created()).await;
    store.set_worker_running(false).await.unwrap();
    let counts = store.counts();
    close(store, writer).await;

    let (store, writer) = open(engine, dir.path());
    assert_eq!(store.counts(), counts);
    assert!(!store.worker_running());
    let (extended, _) = store
        .heartbeat("w".into(), vec![held[1].lease_id])
        .await
        .unwrap();
    assert_eq!(
        extended,
        vec![held[1].lease_id],
        "live leases survive a restart"
    );
    assert_eq!(report(&store, &held[1], created()).await, (true, None));
    assert!(
        lease(&store, 5, 30_000).await.is_empty(),
        "a stopped worker gets nothing"
    );
    store.set_worker_running(true).await.unwrap();
    assert_eq!(lease(&store, 5, 30_000).await.len(), 3);
    close(store, writer).await;
}

pub async fn a_bookid_never_meets_a_uniqueid_and_a_job_refused_at_intake_is_kept(engine: Engine) {
    use super::Refusal;
    use ferry_shared::job::{Booking, JobKind};
    let dir = tempfile::tempdir().unwrap();
    let (store, writer) = open(engine, dir.path());
    let order_id = create(&store, "same-key").await;
    let booking = Booking {
        book_id: "same-key".into(),
        from_date: "2026-12-01T13:15:00-05:00".into(),
        to_date: "2026-12-01T13:30:00-05:00".into(),
        first_name: "Ann".into(),
        last_name: "Lee".into(),
        email: "ann@gwu.edu".into(),
        lid: 8827,
        primary_id: None,
    };
    let refusal = Refusal {
        code: "BOOKING_MISSING_PRIMARY_ID",
        text: "no primary id".into(),
    };
    let CreateOutcome::New(job) = store
        .create(Payload::Booking(booking.clone()), Some(refusal.clone()))
        .await
        .unwrap()
    else {
        panic!("a booking is not an order, whatever its key")
    };
    assert_ne!(job.id, order_id);
    assert_eq!(job.status, Status::Error);
    assert_eq!(
        job.reason_code.as_deref(),
        Some("BOOKING_MISSING_PRIMARY_ID")
    );
    assert!(
        lease(&store, 10, 30_000)
            .await
            .iter()
            .all(|j| j.job_id != job.id)
    );
    close(store, writer).await;

    let (store, writer) = open(engine, dir.path());
    let found = |kind| store.job_by_key(kind, "same-key").unwrap().unwrap().id;
    assert_eq!(found(JobKind::OrderLine), order_id);
    assert_eq!(found(JobKind::Booking), job.id);
    assert!(matches!(
        store.create(Payload::Booking(booking), Some(refusal)).await.unwrap(),
        CreateOutcome::Duplicate(j) if j.id == job.id
    ));
    assert_eq!(store.count(Status::Error), 1);
    // Jobs kept by kind, counted again when the store opens, moved by creates (not repeats).
    assert_eq!(store.counts_and_kinds().1, [1, 1, 0]);
    create(&store, "another-order").await;
    assert_eq!(store.counts_and_kinds().1, [2, 1, 0]);
    close(store, writer).await;
}

pub async fn connector_state_is_compare_and_swap_and_survives_restarts(engine: Engine) {
    use super::StateWrite;
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let (store, writer) = open(engine, dir.path());
    assert_eq!(store.state("prereg:cs_1").unwrap(), (json!(null), 0));
    let put = |value, expect| store.put_state("prereg:cs_1".into(), value, expect);
    assert_eq!(
        put(Some(json!("P-1")), 0).await.unwrap(),
        StateWrite::Written(1)
    );
    // A second writer that read the absent value loses, and is told the current version.
    assert_eq!(
        put(Some(json!("P-2")), 0).await.unwrap(),
        StateWrite::Conflict(1)
    );
    assert_eq!(
        put(Some(json!("P-3")), 1).await.unwrap(),
        StateWrite::Written(2)
    );
    assert_eq!(store.state("prereg:cs_1").unwrap(), (json!("P-3"), 2));
    close(store, writer).await;

    let (store, writer) = open(engine, dir.path());
    assert_eq!(store.state("prereg:cs_1").unwrap(), (json!("P-3"), 2));
    let put = |value, expect| store.put_state("prereg:cs_1".into(), value, expect);
    assert_eq!(put(None, 1).await.unwrap(), StateWrite::Conflict(2));
    assert_eq!(put(None, 2).await.unwrap(), StateWrite::Written(0));
    assert_eq!(store.state("prereg:cs_1").unwrap(), (json!(null), 0));
    assert_eq!(store.count(Status::Placed), 0, "state is not a job");

    // Values that say when they are no longer needed are pruned after that, and only those.
    let now = ferry_shared::now_ms();
    for (key, value) in [
        ("prereg:old", json!({"id": "P-9", "expires_ms": now - 1})),
        (
            "prereg:new",
            json!({"id": "P-10", "expires_ms": now + 60_000}),
        ),
        ("cursor", json!({"at": 5})),
    ] {
        store.put_state(key.into(), Some(value), 0).await.unwrap();
    }
    assert_eq!(store.prune_state(now, 100).await.unwrap(), 1);
    assert_eq!(store.state("prereg:old").unwrap().1, 0);
    assert_eq!(store.state("prereg:new").unwrap().1, 1);
    assert_eq!(store.state("cursor").unwrap().1, 1);
    let keys: Vec<String> = store
        .states("prereg:")
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, ["prereg:new"]);
    close(store, writer).await;
}

/// Engine level: what `apply` wrote stays written across a reopen, whatever the size of the groups
/// before it (a one-write group after a larger one touching the same key must not be undone).
pub async fn every_applied_group_survives_reopening(engine: Engine) {
    use super::Batch;
    let dir = tempfile::tempdir().unwrap();
    let put = |k: &str, v: &str| (k.as_bytes().to_vec(), Some(v.as_bytes().to_vec()));
    {
        let kv = waiting_for_lock(|| engine.open(dir.path()));
        kv.apply(Batch {
            ops: vec![put("k", "v1"), put("x", "1")],
        })
        .unwrap();
        kv.apply(Batch {
            ops: vec![put("k", "v2")],
        })
        .unwrap();
        kv.apply(Batch {
            ops: vec![put("y", "1"), (b"x".to_vec(), None)],
        })
        .unwrap();
        kv.apply(Batch {
            ops: vec![put("y", "2")],
        })
        .unwrap();
        kv.flush().unwrap();
    }
    for _ in 0..2 {
        let kv = waiting_for_lock(|| engine.open(dir.path()));
        assert_eq!(kv.get(b"k").unwrap().as_deref(), Some(&b"v2"[..]));
        assert_eq!(kv.get(b"x").unwrap(), None);
        assert_eq!(kv.get(b"y").unwrap().as_deref(), Some(&b"2"[..]));
    }
}

/// Engine level: what `apply` wrote is seen by reads only once `flush` made it durable, so that
/// nobody reads a state a crash could still take away (a status that goes back after a restart).
pub async fn a_group_is_seen_only_once_it_is_durable(engine: Engine) {
    use super::Batch;
    let dir = tempfile::tempdir().unwrap();
    let kv = waiting_for_lock(|| engine.open(dir.path()));
    let seen = |kv: &dyn super::Kv| {
        let mut keys = Vec::new();
        kv.scan(b"", b"\xff", &mut |k, _| {
            keys.push(k.to_vec());
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
        (kv.get(b"k").unwrap(), keys)
    };
    for (group, ops) in [
        (1, vec![(b"k".to_vec(), Some(b"v1".to_vec()))]),
        (
            2,
            vec![(b"k".to_vec(), None), (b"x".to_vec(), Some(b"1".to_vec()))],
        ),
    ] {
        let before = seen(&*kv);
        kv.apply(Batch { ops }).unwrap();
        assert_eq!(seen(&*kv), before, "group {group} seen before its flush");
        kv.flush().unwrap();
    }
    assert_eq!(seen(&*kv), (None, vec![b"x".to_vec()]));
}

/// An engine that fails its next writes as armed and counts its flushes.
struct Failing {
    inner: Arc<dyn super::Kv>,
    probe: Arc<Probe>,
}

#[derive(Default)]
struct Probe {
    /// 1: writes find no space; 2: writes fail with an unknown outcome.
    armed: AtomicU8,
    flushes: AtomicU64,
}

impl super::Kv for Failing {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(key)
    }
    fn scan(
        &self,
        from: &[u8],
        to: &[u8],
        visit: &mut super::Visitor<'_>,
    ) -> Result<(), StoreError> {
        self.inner.scan(from, to, visit)
    }
    fn apply(&self, batch: super::Batch) -> Result<(), StoreError> {
        match self.probe.armed.load(Ordering::Relaxed) {
            1 => Err(StoreError::NoSpace(Box::new(
                std::io::Error::from_raw_os_error(28),
            ))),
            2 => Err(StoreError::Engine(Box::new(
                std::io::Error::from_raw_os_error(5),
            ))),
            _ => self.inner.apply(batch),
        }
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.probe.flushes.fetch_add(1, Ordering::Relaxed);
        self.inner.flush()
    }
}

/// A store whose engine fails as its probe is armed, reopened like the real one (with retries while
/// sled lets go of its lock), with a disk reserve of 1 MiB.
fn failing(engine: Engine, dir: &Path) -> (Store, WriterHandle, Arc<Probe>) {
    let probe = Arc::new(Probe::default());
    let (dir2, probe2) = (engine.dir(dir), probe.clone());
    let open: super::Opener = Box::new(move || {
        let inner = engine.open(&dir2)?;
        Ok(Arc::new(Failing {
            inner,
            probe: probe2.clone(),
        }))
    });
    let (store, writer) =
        Store::start(open, super::disk::Reserve::new(dir, 1 << 20), limits()).unwrap();
    (store, writer, probe)
}

/// One command applied to the machine's group and its answer taken (the group is written later).
fn applied<T>(m: &mut Machine, make: impl FnOnce(Answer<T>) -> Command) -> T {
    let (answer, mut rx) = tokio::sync::oneshot::channel();
    m.apply(make(answer), ferry_shared::now_ms()).send(Ok(()));
    rx.try_recv().unwrap().unwrap()
}

/// An order placed in the machine's group: its job's id.
fn placed_in(m: &mut Machine, key: &str) -> JobId {
    let new = NewJob {
        payload: Payload::OrderLine(order(key)),
        refused: None,
    };
    match applied(m, |a| Command::Create(new, a)) {
        CreateOutcome::New(job) => job.id,
        _ => panic!("{key} not created"),
    }
}

/// At most `max` jobs leased in the machine's group: their ids.
fn leased_in(m: &mut Machine, max: u32) -> Vec<JobId> {
    let (jobs, _) = applied(m, |answer| Command::Lease {
        worker_id: "w".into(),
        max,
        lease_ms: 30_000,
        answer,
    });
    jobs.iter().map(|j| j.job_id).collect()
}

pub async fn a_parked_lease_is_served_in_the_group_that_places_work(engine: Engine) {
    // In the machine: a lease finds the jobs placed earlier in its group, after the committed
    // ones, each once.
    let dir = tempfile::tempdir().unwrap();
    let mut m = Machine::recover(engine.open(dir.path()).unwrap(), limits()).unwrap();
    let old = placed_in(&mut m, "old");
    m.write_group().unwrap();
    m.flush().unwrap();
    let (a, b) = (placed_in(&mut m, "a"), placed_in(&mut m, "b"));
    assert_eq!(leased_in(&mut m, 1), [old]);
    assert_eq!(leased_in(&mut m, 5), [a, b]);
    assert!(leased_in(&mut m, 5).is_empty(), "nothing leased twice");
    m.write_group().unwrap();
    m.flush().unwrap();
    assert!(leased_in(&mut m, 5).is_empty());
    drop(m);

    // Through the writer: a parked lease is served in the new job's own group, made durable
    // by its one flush.
    let dir = tempfile::tempdir().unwrap();
    let (store, writer, probe) = failing(engine, dir.path());
    let mut parked = store.park_lease("w".into(), 2, 30_000);
    let flushes = probe.flushes.load(Ordering::Relaxed);
    let a = create(&store, "a").await;
    let (jobs, _) = tokio::time::timeout(Duration::from_secs(5), parked.served())
        .await
        .expect("served")
        .unwrap();
    assert_eq!(jobs.iter().map(|j| j.job_id).collect::<Vec<_>>(), [a]);
    assert_eq!(probe.flushes.load(Ordering::Relaxed) - flushes, 1);
    assert_eq!(status(&store, a), Status::Processing);

    // Withdrawn or dropped, a parked lease takes nothing.
    let parked = store.park_lease("w".into(), 1, 30_000);
    assert!(parked.withdraw().await.is_none());
    drop(store.park_lease("w".into(), 1, 30_000));
    let b = create(&store, "b").await;
    assert_eq!(status(&store, b), Status::Placed);
    // Leasing what was already placed serves no parked lease.
    let mut parked = store.park_lease("w".into(), 1, 30_000);
    assert_eq!(lease(&store, 1, 30_000).await[0].job_id, b);
    let waited = tokio::time::timeout(Duration::from_millis(100), parked.served()).await;
    assert!(waited.is_err(), "served without new work: {waited:?}");
    assert!(parked.withdraw().await.is_none());
    close(store, writer).await;
}

pub async fn leases_in_one_group_take_different_committed_jobs(engine: Engine) {
    // Two workers' leases often meet in one group. The second must not stop at the committed
    // index keys the first has just taken (their removal is only in the group's overlay): it
    // would find nothing while work waits, and its worker would be parked until its poll ended.
    let dir = tempfile::tempdir().unwrap();
    let mut m = Machine::recover(engine.open(dir.path()).unwrap(), limits()).unwrap();
    let ids: Vec<JobId> = ["a", "b", "c", "d"]
        .into_iter()
        .map(|key| placed_in(&mut m, key))
        .collect();
    m.write_group().unwrap();
    m.flush().unwrap();
    assert_eq!(leased_in(&mut m, 1), ids[..1]);
    assert_eq!(
        leased_in(&mut m, 2),
        ids[1..3],
        "the second lease of the group"
    );
    assert_eq!(leased_in(&mut m, 5), ids[3..]);
    assert!(leased_in(&mut m, 5).is_empty(), "nothing leased twice");
}

pub async fn a_full_disk_refuses_intake_and_resumes_when_space_comes_back(engine: Engine) {
    use super::Health;
    let dir = tempfile::tempdir().unwrap();
    let (store, writer, probe) = failing(engine, dir.path());
    let kept = create(&store, "kept").await;
    probe.armed.store(1, Ordering::Relaxed);
    let refused = store
        .create(Payload::OrderLine(order("lost")), None)
        .await
        .err();
    assert!(matches!(refused, Some(StoreError::DiskFull)), "{refused:?}");
    assert_eq!(store.health(), Health::DiskFull);
    assert!(
        !dir.path().join(super::disk::Reserve::FILE_NAME).exists(),
        "the reserve was released"
    );
    // Space comes back; until the writer has seen it, intake is refused while the worker's
    // leases and reports go on, on the reopened engine.
    probe.armed.store(0, Ordering::Relaxed);
    let mut leased = Vec::new();
    for _ in 0..100 {
        match store.lease("w".into(), 10, 60_000).await {
            Ok((jobs, _)) => {
                leased = jobs;
                break;
            }
            Err(StoreError::DiskFull) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(leased.len(), 1, "the job acknowledged before is there");
    assert_eq!(leased[0].job_id, kept);
    assert_eq!(report(&store, &leased[0], created()).await, (true, None));
    let during = store
        .create(Payload::OrderLine(order("early")), None)
        .await
        .err();
    assert!(matches!(during, Some(StoreError::DiskFull)), "{during:?}");
    assert!(store.refused(Health::DiskFull) >= 1);
    let started = std::time::Instant::now();
    while store.health() != Health::Ok {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "intake never resumed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    create(&store, "after").await;
    assert!(
        dir.path().join(super::disk::Reserve::FILE_NAME).exists(),
        "the reserve is back"
    );
    assert_eq!(status(&store, kept), Status::Created);
    assert!(
        store
            .job_by_key(ferry_shared::job::JobKind::OrderLine, "lost")
            .unwrap()
            .is_none()
    );
    close(store, writer).await;
}

pub async fn a_write_of_unknown_outcome_fails_the_store_for_good(engine: Engine) {
    use super::Health;
    let dir = tempfile::tempdir().unwrap();
    let (store, writer, probe) = failing(engine, dir.path());
    create(&store, "kept").await;
    probe.armed.store(2, Ordering::Relaxed);
    let refused = store
        .create(Payload::OrderLine(order("unknown")), None)
        .await
        .err();
    assert!(matches!(refused, Some(StoreError::Failed)), "{refused:?}");
    tokio::time::timeout(Duration::from_secs(1), store.failed())
        .await
        .expect("the api is told to stop");
    assert_eq!(store.health(), Health::Failed);
    // Even with the engine well again, nothing more is written by this process.
    probe.armed.store(0, Ordering::Relaxed);
    let again = store
        .create(Payload::OrderLine(order("later")), None)
        .await
        .err();
    assert!(matches!(again, Some(StoreError::Failed)), "{again:?}");
    assert!(matches!(
        store.lease("w".into(), 1, 1000).await,
        Err(StoreError::Failed)
    ));
    assert!(store.refused(Health::Failed) >= 2);
    close(store, writer).await;
}

macro_rules! conformance {
    ($engine:ident, $($name:ident),* $(,)?) => {
        #[allow(non_snake_case)]
        mod $engine {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Engine::$engine).await;
                }
            )*
        }
    };
}

macro_rules! suite {
    ($($engine:ident),*) => {$(
        conformance!(
            $engine,
            jobs_are_leased_first_in_first_out_by_due_time,
            the_oldest_waiting_job_is_found_behind_newer_ones,
            the_same_uniqueid_is_one_job_across_restarts,
            an_expired_lease_returns_the_job_and_fences_the_old_report,
            heartbeats_extend_leases_and_name_lost_ones,
            clear_moves_only_waiting_jobs_to_cleared,
            a_failed_job_can_be_retried_and_attempts_are_bounded,
            an_operator_retry_restarts_the_age_limit,
            open_jobs_the_writer_keeps_decoded_are_what_the_store_holds,
            pruning_removes_finished_jobs_and_frees_their_uniqueids,
            a_full_queue_refuses_new_jobs,
            listing_pages_through_each_status_once,
            counts_read_while_jobs_move_add_up_to_the_jobs,
            a_restart_recovers_jobs_counts_leases_and_worker_state,
            nothing_is_leased_after_leasing_stops,
            a_parked_lease_is_served_in_the_group_that_places_work,
            leases_in_one_group_take_different_committed_jobs,
            every_applied_group_survives_reopening,
            a_group_is_seen_only_once_it_is_durable,
            a_bookid_never_meets_a_uniqueid_and_a_job_refused_at_intake_is_kept,
            connector_state_is_compare_and_swap_and_survives_restarts,
            a_full_disk_refuses_intake_and_resumes_when_space_comes_back,
            a_write_of_unknown_outcome_fails_the_store_for_good,
        );
    )*};
}

suite!(Sled, Redb);
