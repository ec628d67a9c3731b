//! How the api stops: one path, whatever the cause.
//!
//! - `PUT /kill` ([`Stop::Pair`]): the pair stops; the worker is told to exit.
//! - SIGTERM or SIGINT ([`Stop::Api`]): the api stops (a restart or an upgrade); its worker is told
//!   to pause and waits for it to come back, where no supervisor would start it again.
//!
//! Either way, [`begin`]: intake is refused at once (503 `SHUTTING_DOWN`) and long-polling workers
//! are woken to hear the new directive; then the drain: the writer stops granting leases, a
//! connected worker has up to `kill_grace_ms` to report what it holds (so no job waits for a lease
//! to expire), and the HTTP server stops, finishing requests in flight. `run_until_stopped` then
//! closes the store with a final flush. A second signal skips the wait for the worker.
//!
//! A store that failed (a write of unknown outcome, see `store::writer`) stops the api at once,
//! as a signal would but without waiting for the worker (the store can record nothing more), and
//! the process exits non-zero so that its supervisor restarts it.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::web;
use ferry_shared::job::Status;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// Why the api stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Stop {
    /// A signal: the api stops, its worker pauses until it is back.
    Api = 1,
    /// `PUT /kill`: the pair stops; the worker is told to exit.
    Pair = 2,
}

/// The api's stop state, shared by every handler through [`AppState`].
#[derive(Debug, Default)]
pub struct Shutdown {
    /// 0 while running, then a [`Stop`]; it only rises, so a stop of the pair is never
    /// downgraded to a stop of the api alone.
    reason: AtomicU8,
    /// Fired when the server is to stop: the drain is over (or was cut short).
    server: CancellationToken,
}

impl Shutdown {
    pub fn reason(&self) -> Option<Stop> {
        match self.reason.load(Ordering::Relaxed) {
            0 => None,
            r if r == Stop::Api as u8 => Some(Stop::Api),
            _ => Some(Stop::Pair),
        }
    }

    pub fn is_stopping(&self) -> bool {
        self.reason().is_some()
    }

    /// Completes when the server is to stop; tasks that end with it wait on this.
    pub async fn server_stopping(&self) {
        self.server.cancelled().await
    }

    pub fn is_server_stopping(&self) -> bool {
        self.server.is_cancelled()
    }
}

/// The one way in: refuse intake, wake long-polls, and (the first time) start the drain.
pub fn begin(state: &web::Data<AppState>, stop: Stop) {
    let before = state
        .shutdown
        .reason
        .fetch_max(stop as u8, Ordering::Relaxed);
    state.store.work_notify().notify_waiters();
    if before == 0 {
        let st = state.clone();
        actix_web::rt::spawn(async move { drain(&st).await });
    }
}

/// Stops leasing, gives a connected worker up to `kill_grace_ms` to report the jobs it holds,
/// then lets the server stop.
async fn drain(state: &AppState) {
    // A lease already past its directive check may still be granting jobs: after this, none is,
    // and the processing count includes whatever it granted.
    if let Err(e) = state.store.stop_leasing().await {
        tracing::error!(error = ?e, "could not stop leasing");
    }
    let grace = Duration::from_millis(state.settings.kill_grace_ms);
    let started = Instant::now();
    while started.elapsed() < grace
        && state.store.count(Status::Processing) > 0
        && state.worker_connected()
        && !state.shutdown.is_server_stopping()
    {
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::info!("stopping: intake closed, worker released");
    state.shutdown.server.cancel();
}

/// Wires the causes to [`begin`] and its end to the server: signals, and the server's stop when
/// the drain is over.
pub fn spawn(state: web::Data<AppState>, server: ServerHandle) {
    let st = state.clone();
    actix_web::rt::spawn(async move {
        tokio::select! {
            _ = st.store.failed() => {}
            _ = st.shutdown.server_stopping() => return,
        }
        tracing::error!("the store failed: stopping now, so that a restart recovers it");
        begin(&st, Stop::Api);
        st.shutdown.server.cancel();
    });
    let st = state.clone();
    actix_web::rt::spawn(async move {
        st.shutdown.server_stopping().await;
        server.stop(true).await;
    });
    actix_web::rt::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = ?e, "cannot watch SIGTERM");
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping; a connected worker may report first (a second signal stops at once)"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping; a connected worker may report first (a second signal stops at once)"),
            _ = state.shutdown.server_stopping() => return,
        }
        begin(&state, Stop::Api);
        tokio::select! {
            _ = state.shutdown.server_stopping() => {}
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        if !state.shutdown.is_server_stopping() {
            tracing::warn!("second signal: stopping at once; leases still held expire later");
            state.shutdown.server.cancel();
        }
    });
}
