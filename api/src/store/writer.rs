//! The single writer thread and its group commit: block for one command, drain whatever else is
//! waiting (up to [`MAX_GROUP`]), run each through the state machine (and, when the group made
//! work ready, the leases parked for it), apply the group's writes as one atomic batch, flush
//! once, then answer all of them. Nothing is acknowledged before the flush that makes it durable.
//!
//! After the answers the engine may do work it left for later ([`Kv::tidy`](super::Kv::tidy):
//! redb applies the journaled writes to its tables there), off the answers' path; it fails as a
//! flush would, with nothing left to answer. While commands stream in, the writer then looks for
//! the next one for a moment before it sleeps ([`next`]): being woken for each order cost a
//! single client a fifth of its rate.
//!
//! A group whose write fails is answered with the failure, and what the writer does next depends
//! on what failed:
//! - **No space** (the engine's write found none; nothing of the group happened): the engine is
//!   reopened and the machine rebuilt from what is on disk (both engines refuse every call after
//!   an I/O error), using the room of the released [`Reserve`]. Until space comes back, intake is
//!   refused with [`StoreError::DiskFull`] while the worker's leases and reports, which the
//!   reserve has room for, go on. Every [`RECHECK`] the writer looks for space and resumes.
//! - **Anything else** (a failed `fsync` above all): what was written may or may not be on disk,
//!   and after a failed `fsync` the kernel may have dropped the dirty pages, so carrying on could
//!   acknowledge writes that are lost. Every later command is refused with [`StoreError::Failed`]
//!   and the api is told to stop; its supervisor restarts it and opening the store recovers the
//!   last commit, as PostgreSQL does after an `fsync` failure.

use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use super::disk::Reserve;
use super::machine::{Command, Machine, Pending};
use super::{Health, Kv, KvSlot, Limits, Opener, Published, StoreError};

/// Commands per group: bounds the latency one flush adds to the first command of a group.
const MAX_GROUP: usize = 1024;
/// How often a writer refusing intake for want of space looks for space again.
const RECHECK: Duration = Duration::from_secs(1);
/// How often a reopen of the engine is tried while it fails.
const REOPEN_EVERY: Duration = Duration::from_millis(200);
/// How long reopening may fail for another reason than space (a lock let go late) before the
/// store is failed and the api stops, to be restarted.
const OTHER_FAILURE_GRACE: Duration = Duration::from_secs(10);
/// How long a reopen waits for readers to let go of the old engine.
const READERS_GRACE: Duration = Duration::from_secs(5);

/// What the writer needs to reopen the engine after a full disk.
pub struct Reopen {
    pub open: Opener,
    pub reserve: Reserve,
    pub limits: Limits,
    pub slot: Arc<KvSlot>,
}

pub fn spawn(
    machine: Machine,
    reopen: Reopen,
    published: Arc<Published>,
) -> Result<(mpsc::Sender<Command>, std::thread::JoinHandle<()>), StoreError> {
    publish(&machine, &published);
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("ferry-store-writer".into())
        .spawn(move || run(machine, reopen, rx, published))
        .map_err(|e| StoreError::Engine(Box::new(e)))?;
    Ok((tx, handle))
}

fn publish(machine: &Machine, published: &Published) {
    published.set_tally(machine.counts(), machine.kinds());
    published
        .worker_running
        .store(machine.worker_running(), Ordering::Relaxed);
    let live = machine.holds_leases();
    if published.leases_live.swap(live, Ordering::Relaxed) != live && live {
        published.leased.notify_one();
    }
}

/// Applies the group's writes as one batch and flushes, when there were any.
fn write_and_flush(machine: &mut Machine) -> Result<(), StoreError> {
    if machine.write_group()? {
        machine.flush()?;
    }
    Ok(())
}

/// Refuses `cmd` for the store's present `health`, counting the refusal. A close is answered
/// as closed: there is nothing left to flush.
fn refuse(cmd: Command, health: Health, published: &Published) {
    if cmd.is_close() {
        return cmd.refuse(StoreError::Closed);
    }
    published.refused(health);
    cmd.refuse(match health {
        Health::DiskFull => StoreError::DiskFull,
        _ => StoreError::Failed,
    });
}

/// How long the writer looks for the next command before it sleeps, once commands stream in.
const SPIN: Duration = Duration::from_micros(150);
/// How many commands in a row must each come within [`SPIN`] for the writer to look for the
/// next one before sleeping. An idle tenant's commands come in ones and twos (a worker's lease
/// poll, a heartbeat), and looking for a third that does not come cost the idle fleet CPU.
const STREAM: u8 = 3;

/// The next command. Sleeping on the channel and being woken by the HTTP thread adds a wake-up
/// to the round trip of each order; so while commands stream in (`streak`: how many in a row
/// came within `spin` of the writer asking), the writer first looks for the next one for up to
/// `spin` ([`SPIN`]), yielding the CPU between looks.
fn next<T>(rx: &mpsc::Receiver<T>, streak: &mut u8, spin: Duration) -> Result<T, mpsc::RecvError> {
    let start = Instant::now();
    while *streak >= STREAM && start.elapsed() < spin {
        match rx.try_recv() {
            Ok(cmd) => return Ok(cmd),
            Err(mpsc::TryRecvError::Disconnected) => return Err(mpsc::RecvError),
            Err(mpsc::TryRecvError::Empty) => std::thread::yield_now(),
        }
    }
    let cmd = rx.recv();
    *streak = match start.elapsed() < spin {
        true => streak.saturating_add(1),
        false => 0,
    };
    cmd
}

fn run(
    mut machine: Machine,
    reopen: Reopen,
    rx: mpsc::Receiver<Command>,
    published: Arc<Published>,
) {
    let mut group: Vec<Command> = Vec::with_capacity(MAX_GROUP);
    let mut closing = false;
    let mut streak = 0;
    let mut recheck = Instant::now() + RECHECK;
    while !closing {
        let first = match published.health() {
            Health::DiskFull => {
                match rx.recv_timeout(recheck.saturating_duration_since(Instant::now())) {
                    Ok(cmd) => Some(cmd),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
            _ => match next(&rx, &mut streak, SPIN) {
                Ok(cmd) => Some(cmd),
                Err(_) => break,
            },
        };
        if published.health() == Health::DiskFull && Instant::now() >= recheck {
            recheck = Instant::now() + RECHECK;
            if reopen.reserve.space_is_back() {
                tracing::info!("disk space is back: intake resumes");
                published.set_health(Health::Ok);
            }
        }
        let Some(first) = first else { continue };
        group.push(first);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(req) => group.push(req),
                Err(_) => break,
            }
        }
        let now = ferry_shared::now_ms();
        let state = published.health();
        let mut answers: Vec<Pending> = Vec::with_capacity(group.len());
        for cmd in group.drain(..) {
            closing |= cmd.is_close();
            match state {
                Health::Failed => refuse(cmd, state, &published),
                Health::DiskFull if cmd.is_intake() => refuse(cmd, state, &published),
                _ => answers.push(machine.apply(cmd, now)),
            }
        }
        // Leases parked for work are served in the group that made it ready.
        if state != Health::Failed && machine.woke() {
            for parked in published.take_parked() {
                answers.push(machine.apply(parked.into_command(), now));
            }
        }
        let woke = machine.take_woke();
        let written = if state == Health::Failed {
            Ok(())
        } else {
            write_and_flush(&mut machine)
        };
        // Once answered, the engine's own work (see `Kv::tidy`): it fails as a flush would,
        // with nothing left to answer.
        let written = written.and_then(|()| {
            publish(&machine, &published);
            if woke {
                published.work.notify_waiters();
            }
            for answer in answers.drain(..) {
                answer.send(Ok(()));
            }
            match state {
                Health::Failed => Ok(()),
                _ => machine.tidy(),
            }
        });
        match written {
            Ok(()) => {}
            Err(StoreError::NoSpace(e)) => {
                tracing::error!(error = %e, "disk full: a store write found no space; refusing intake until space comes back");
                // The state first: whoever hears the refusal and looks finds it.
                published.set_health(Health::DiskFull);
                reopen.reserve.release();
                for answer in answers {
                    answer.send(Err(StoreError::DiskFull));
                }
                recheck = Instant::now() + RECHECK;
                machine = match reopen.reopen(machine, &rx, &published) {
                    Some(m) => m,
                    None => {
                        published.work.notify_waiters();
                        return;
                    }
                };
                publish(&machine, &published);
                published.work.notify_waiters();
            }
            Err(e) => {
                tracing::error!(error = ?e, "a store write failed with an unknown outcome; refusing everything and stopping the api");
                published.set_health(Health::Failed);
                for answer in answers {
                    answer.send(Err(StoreError::Failed));
                }
            }
        }
    }
    if published.health() != Health::Failed
        && let Err(e) = machine.flush()
    {
        tracing::error!(error = ?e, "final store flush failed");
    }
    published.work.notify_waiters();
}

impl Reopen {
    /// Closes the engine `machine` wrote to, opens it again and rebuilds the machine from what
    /// is on disk, refusing what arrives meanwhile. `None` when the store was closed meanwhile.
    fn reopen(
        &self,
        machine: Machine,
        rx: &mpsc::Receiver<Command>,
        published: &Published,
    ) -> Option<Machine> {
        let stopping = machine.stopping();
        let old = self.slot.replace(Arc::new(Unavailable));
        drop(machine);
        // Readers hold the engine only for one read; both engines lock their files until the
        // last handle is gone.
        let deadline = Instant::now() + READERS_GRACE;
        while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(old);
        let mut warned = false;
        // Since when reopening fails for another reason than space (none yet).
        let mut other_since: Option<Instant> = None;
        loop {
            match (self.open)().and_then(|kv| Ok((Machine::recover(kv.clone(), self.limits)?, kv)))
            {
                Ok((mut machine, kv)) => {
                    machine.set_stopping(stopping);
                    self.slot.replace(kv);
                    tracing::info!(
                        "store reopened after a full disk; reads and the worker's reports go on, intake waits for space"
                    );
                    return Some(machine);
                }
                Err(StoreError::NoSpace(_)) => other_since = None,
                Err(e) if other_since.is_some_and(|t| t.elapsed() > OTHER_FAILURE_GRACE) => {
                    // Not space, and not a lock let go late: waiting will not help.
                    tracing::error!(error = ?e, "the store cannot be reopened; stopping the api");
                    published.set_health(Health::Failed);
                    return None;
                }
                Err(_) => {
                    other_since.get_or_insert_with(Instant::now);
                }
            }
            if !warned {
                warned = true;
                tracing::warn!("cannot reopen the store yet; trying again until there is space");
            }
            let until = Instant::now() + REOPEN_EVERY;
            loop {
                match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                    Ok(cmd) if cmd.is_close() => {
                        refuse(cmd, Health::DiskFull, published);
                        return None;
                    }
                    Ok(cmd) => refuse(cmd, Health::DiskFull, published),
                    Err(mpsc::RecvTimeoutError::Timeout) => break,
                    Err(mpsc::RecvTimeoutError::Disconnected) => return None,
                }
            }
        }
    }
}

/// The engine readers see while the store reopens.
struct Unavailable;

impl Kv for Unavailable {
    fn get(&self, _: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Err(StoreError::DiskFull)
    }
    fn scan(&self, _: &[u8], _: &[u8], _: &mut super::Visitor<'_>) -> Result<(), StoreError> {
        Err(StoreError::DiskFull)
    }
    fn apply(&self, _: super::Batch) -> Result<(), StoreError> {
        Err(StoreError::DiskFull)
    }
    fn flush(&self) -> Result<(), StoreError> {
        Err(StoreError::DiskFull)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The writer looks for its next command before sleeping only while they stream in.
    #[test]
    fn the_writer_waits_busily_only_while_commands_stream_in() {
        // A spin long enough that a busy test machine cannot stretch a waiting command past it.
        let spin = Duration::from_millis(50);
        let (tx, rx) = mpsc::channel();
        let mut streak = 0;
        // Commands already waiting make a stream, after a few.
        for n in 1..=STREAM {
            tx.send(n).unwrap();
            assert_eq!(next(&rx, &mut streak, spin), Ok(n));
            assert_eq!(streak, n);
        }
        // One that comes well after the spin sleeps the writer, and ends the stream.
        let late = std::thread::spawn(move || {
            std::thread::sleep(4 * spin);
            tx.send(0).unwrap();
            tx
        });
        assert_eq!(next(&rx, &mut streak, spin), Ok(0));
        assert_eq!(streak, 0, "an idle writer sleeps on the channel");
        drop(late.join().unwrap());
        // A closed channel ends the writer, spinning or not.
        streak = STREAM;
        assert_eq!(next(&rx, &mut streak, spin), Err(mpsc::RecvError));
    }
}
