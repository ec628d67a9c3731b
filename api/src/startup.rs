//! Builds the application from settings: opens the store, binds, starts the server and the
//! maintenance tasks (lease expiry, pruning), and hands the server to [`crate::shutdown`].

use std::net::{IpAddr, TcpListener};
use std::time::Duration;

use crate::state::AppState;
use crate::store::{Engine, Health, Limits, PruneBefore, Store, StoreError, WriterHandle, disk};
use crate::{auth, routes, shutdown, telemetry};
use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use ferry_shared::config::Settings;
use ferry_shared::target::WorkerConfig;

/// How often expired leases are handed back.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);
/// How often free space on the data dir's filesystem is looked at.
const DISK_EVERY: Duration = Duration::from_secs(10);
/// How long an idle kept-alive connection stays open: longer than the worker's pool keeps an
/// idle socket (30 s) and than most clients' pools, so the client closes it first. With
/// actix-web's default of 5 s a request sent just as the api closed the socket failed through no
/// fault of either. Idle sockets cost a few KB each and do not hold up a graceful stop.
const KEEP_ALIVE: Duration = Duration::from_secs(75);
/// Finished jobs pruned per store command (a pass repeats until a chunk comes back short).
const PRUNE_CHUNK: usize = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(
        "refusing to listen on {0} without an API key: set FERRY_API_KEY (or api_key), or bind to 127.0.0.1"
    )]
    OpenBind(String),
    #[error("invalid configuration: {0}")]
    Target(String),
    #[error("cannot create the tenant directory {0}")]
    DataDir(String, #[source] std::io::Error),
    #[error("cannot open the store in {0}")]
    Store(String, #[source] StoreError),
    #[error("cannot listen on {0}")]
    Bind(String, #[source] std::io::Error),
    #[error("the server failed")]
    Server(#[source] std::io::Error),
    #[error("the store failed (a write of unknown outcome); restart the api to recover it")]
    StoreFailed,
}

pub struct Application {
    server: Server,
    port: u16,
    state: web::Data<AppState>,
    writer: WriterHandle,
}

/// Whether `bind` is a loopback address (or `localhost`).
fn is_loopback(bind: &str) -> bool {
    bind == "localhost" || bind.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        if settings.api_key.is_none() {
            if !is_loopback(&settings.bind) {
                return Err(StartupError::OpenBind(settings.bind.clone()));
            }
            tracing::warn!("no API key configured: listening on loopback only, without auth");
        }
        let worker_config = match &settings.target {
            Some(t) => Some(WorkerConfig {
                tenant: settings.workshop.clone(),
                target: t
                    .resolve(|var| std::env::var(var).ok())
                    .map_err(StartupError::Target)?,
                source: settings
                    .source
                    .as_ref()
                    .map(|s| s.resolve(|var| std::env::var(var).ok()))
                    .transpose()
                    .map_err(StartupError::Target)?,
            }),
            None => {
                tracing::warn!("no [target] configured: a worker has nowhere to deliver");
                None
            }
        };
        let dir = settings.tenant_dir();
        std::fs::create_dir_all(&dir)
            .map_err(|e| StartupError::DataDir(dir.display().to_string(), e))?;
        let engine = Engine::parse(&settings.store).ok_or_else(|| {
            StartupError::Target(format!(
                "store must be sled or redb, not '{}'",
                settings.store
            ))
        })?;
        let store_dir = engine.dir(&dir);
        let limits = Limits {
            retry: settings.retry,
            max_queue: settings.max_queue,
        };
        let reserve_bytes = settings.disk_reserve_mb.saturating_mul(1 << 20);
        let (store, writer) = Store::open(engine, &dir, limits, reserve_bytes)
            .map_err(|e| StartupError::Store(store_dir.display().to_string(), e))?;
        tracing::info!(engine = engine.name(), dir = %store_dir.display(), "store open");

        let addr = format!("{}:{}", settings.bind, settings.port);
        let listener = TcpListener::bind(&addr).map_err(|e| StartupError::Bind(addr.clone(), e))?;
        let port = listener
            .local_addr()
            .map_err(|e| StartupError::Bind(addr.clone(), e))?
            .port();
        let workers = settings.workers;
        let oauth = settings
            .resolve_oauth2(port, |var| std::env::var(var).ok())
            .map_err(StartupError::Target)?;
        let alerts = match &settings.alerts {
            Some(cfg) => Some(
                cfg.resolve(port, |var| std::env::var(var).ok())
                    .and_then(crate::alerts::Alerter::new)
                    .map_err(StartupError::Target)?,
            ),
            None => None,
        };
        let state = web::Data::new(AppState::new(store, settings, worker_config, oauth, alerts));
        let app_state = state.clone();
        let document = web::Data::new(routes::DocumentJson::default());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(app_state.clone())
                .app_data(document.clone())
                .wrap(from_fn(auth::require_key))
                .wrap(from_fn(telemetry::request_id))
                .configure(routes::configure)
        })
        .workers(workers)
        .keep_alive(KEEP_ALIVE)
        .disable_signals()
        .shutdown_timeout(10)
        .listen(listener)
        .map_err(|e| StartupError::Bind(addr.clone(), e))?
        .run();

        shutdown::spawn(state.clone(), server.handle());
        spawn_maintenance(state.clone());
        crate::alerts::spawn(state.clone());
        let c = state.store.counts();
        tracing::info!(
            tenant = %state.settings.workshop, %port, placed = c[0], processing = c[1],
            created = c[2], error = c[3], "ferry-api listening on {}:{port}", state.settings.bind
        );
        Ok(Self {
            server,
            port,
            state,
            writer,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until `PUT /kill` or a signal, then drains requests and flushes the store.
    pub async fn run_until_stopped(self) -> Result<(), StartupError> {
        let served = self.server.await;
        if let Err(e) = self.state.store.close().await {
            tracing::error!(error = ?e, "closing the store failed");
        }
        self.writer.join();
        if self.state.store.health() == Health::Failed {
            return Err(StartupError::StoreFailed);
        }
        tracing::info!("ferry-api stopped; store flushed");
        served.map_err(StartupError::Server)
    }
}

fn spawn_maintenance(state: web::Data<AppState>) {
    let st = state.clone();
    actix_web::rt::spawn(async move {
        let dir = st.settings.tenant_dir();
        let mut tick = actix_web::rt::time::interval(DISK_EVERY);
        let mut was_low = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = st.shutdown.server_stopping() => return,
            }
            let free = match disk::free_bytes(&dir) {
                Ok(free) => free,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the free space of the data dir");
                    continue;
                }
            };
            st.disk_free
                .store(free, std::sync::atomic::Ordering::Relaxed);
            let low = st.disk_low().is_some();
            if low && !was_low {
                tracing::warn!(
                    free_mib = free >> 20, warn_under_mib = st.settings.disk_warn_mb,
                    dir = %dir.display(), "the disk is nearly full"
                );
            } else if was_low && !low {
                tracing::info!(free_mib = free >> 20, "disk space is no longer low");
            }
            was_low = low;
        }
    });
    let st = state.clone();
    actix_web::rt::spawn(async move {
        loop {
            if !st.store.holds_leases() {
                // Nothing can expire until a lease is granted: an idle tenant does not tick.
                tokio::select! {
                    _ = st.store.leases_granted() => {}
                    _ = st.shutdown.server_stopping() => return,
                }
            }
            tokio::select! {
                _ = actix_web::rt::time::sleep(EXPIRE_EVERY) => {}
                _ = st.shutdown.server_stopping() => return,
            }
            match st.store.expire_leases().await {
                Ok(0) => {}
                Ok(n) => {
                    st.metrics.expired(n);
                    tracing::warn!(count = n, "leases expired; jobs handed back");
                }
                Err(e) => tracing::error!(error = ?e, "lease expiry failed"),
            }
        }
    });
    actix_web::rt::spawn(async move {
        const HOUR_MS: i64 = 3_600_000;
        let retention_ms = state.settings.retention_hours as i64 * HOUR_MS;
        let error_retention_ms = match state.settings.error_retention_hours {
            0 => None,
            h => Some(h as i64 * HOUR_MS),
        };
        let every = Duration::from_millis(state.settings.prune_every_ms);
        let mut tick = actix_web::rt::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = state.shutdown.server_stopping() => return,
            }
            let now = ferry_shared::now_ms();
            let before = PruneBefore {
                done_ms: now - retention_ms,
                error_ms: error_retention_ms.map(|r| now - r),
            };
            let mut total = 0;
            loop {
                match state.store.prune(before, PRUNE_CHUNK).await {
                    Ok(n) => {
                        total += n;
                        if n < PRUNE_CHUNK as u64 || state.shutdown.is_server_stopping() {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = ?e, "pruning failed");
                        break;
                    }
                }
            }
            if total > 0 {
                tracing::info!(count = total, "pruned finished jobs past retention");
                let st = state.clone();
                if let Ok(n @ 1..) = web::block(move || routes::prune_artifacts(&st)).await {
                    tracing::info!(jobs = n, "removed the artifacts of pruned jobs");
                }
            }
            // Connector state that says when it is no longer needed (id maps past keep_days).
            match state.store.prune_state(now, PRUNE_CHUNK).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(count = n, "pruned expired connector state"),
                Err(e) => tracing::error!(error = ?e, "pruning connector state failed"),
            }
        }
    });
}
