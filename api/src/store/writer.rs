//! The single writer thread and its group commit: block for one command, drain whatever else is
//! waiting (up to [`MAX_GROUP`]), run each through the state machine, apply the group's writes as
//! one atomic batch, flush once, then answer all of them. Nothing is acknowledged before the
//! flush that makes it durable.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;

use super::machine::{Command, Machine, Pending};
use super::{Kv, Published, StoreError};

/// Commands per group: bounds the latency one flush adds to the first command of a group.
const MAX_GROUP: usize = 1024;

pub fn spawn(
    machine: Machine,
    kv: Arc<dyn Kv>,
    published: Arc<Published>,
) -> Result<(mpsc::Sender<Command>, std::thread::JoinHandle<()>), StoreError> {
    publish(&machine, &published);
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("ferry-store-writer".into())
        .spawn(move || run(machine, kv, rx, published))
        .map_err(|e| StoreError::Engine(Box::new(e)))?;
    Ok((tx, handle))
}

fn publish(machine: &Machine, published: &Published) {
    for (slot, n) in published.counts.iter().zip(machine.counts()) {
        slot.store(n, Ordering::Relaxed);
    }
    published
        .worker_running
        .store(machine.worker_running(), Ordering::Relaxed);
}

/// Applies the group's writes as one batch and flushes, when there were any.
fn write_and_flush(machine: &mut Machine, kv: &dyn Kv) -> Result<(), StoreError> {
    if machine.write_group()? {
        kv.flush()?;
    }
    Ok(())
}

fn run(
    mut machine: Machine,
    kv: Arc<dyn Kv>,
    rx: mpsc::Receiver<Command>,
    published: Arc<Published>,
) {
    let mut failed = false;
    let mut group: Vec<Command> = Vec::with_capacity(MAX_GROUP);
    let mut closing = false;
    while !closing {
        let Ok(first) = rx.recv() else { break };
        group.push(first);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(req) => group.push(req),
                Err(_) => break,
            }
        }
        let now = ferry_shared::now_ms();
        let mut answers: Vec<Pending> = Vec::with_capacity(group.len());
        for cmd in group.drain(..) {
            closing |= cmd.is_close();
            if failed {
                cmd.refuse(StoreError::Failed);
            } else {
                answers.push(machine.apply(cmd, now));
            }
        }
        let woke = machine.take_woke();
        let mut flushed = Ok(());
        if !failed && let Err(e) = write_and_flush(&mut machine, &*kv) {
            // What was applied may or may not be on disk: refuse everything from now on rather
            // than acknowledge writes whose durability is unknown.
            tracing::error!(error = ?e, "store write or flush failed; the store now refuses writes");
            failed = true;
            published.failed.store(true, Ordering::Relaxed);
            flushed = Err(());
        }
        publish(&machine, &published);
        if woke {
            published.work.notify_waiters();
        }
        for answer in answers {
            answer.send(flushed.map_err(|()| StoreError::Failed));
        }
    }
    if let Err(e) = kv.flush() {
        tracing::error!(error = ?e, "final store flush failed");
    }
    published.work.notify_waiters();
}
