//! `ferry-worker`: parse the command line, start logging, run until told to stop.

use anyhow::Context;
use clap::Parser;
use ferry_worker::Settings;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "ferry-worker",
    version,
    about = "One tenant's Ferry worker: leases jobs from its ferry-api and delivers them.",
    long_about = "One tenant's Ferry worker: leases jobs from its ferry-api and delivers them to the \
tenant's target (the api hands it the connector settings). It holds no state: kill it or run two, \
nothing is lost or delivered twice.\n\nThe token comes from FERRY_WORKER_TOKEN (or FERRY_API_KEY).",
    after_help = "Example:\n  FERRY_WORKER_TOKEN=s3cret ferry-worker --api http://127.0.0.1:8001 --concurrency 32"
)]
struct Cli {
    /// The tenant's ferry-api.
    #[arg(long, value_name = "URL", env = "FERRY_API_URL")]
    api: String,
    /// Jobs delivered at the same time (no more than a browser target's sessions).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=512))]
    concurrency: u32,
    /// Jobs leased ahead of a free delivery slot, so that a delivery that ends is followed at
    /// once rather than after the next lease. They wait in the worker, their leases
    /// heartbeated, and count as processing [default: as many as are delivered at once].
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=512))]
    prefetch: Option<u32>,
    /// This worker's name in leases and job logs [default: <host>-<pid>].
    #[arg(long)]
    worker_id: Option<String>,
    /// How long a lease lasts without a heartbeat; a killed worker's jobs return after it.
    #[arg(long, default_value_t = ferry_shared::protocol::DEFAULT_LEASE_MS)]
    lease_ms: u64,
    /// How long one lease call waits for work. The api answers at once when work arrives or
    /// its directive changes, so a long wait costs no latency, and an idle worker stays quiet.
    #[arg(long, default_value_t = 10_000)]
    poll_ms: u64,
    /// After SIGTERM or the api's exit directive, how long jobs in flight may take.
    #[arg(long, default_value_t = 20_000)]
    grace_ms: u64,
    /// error, warn, info, debug or trace.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// text (for people) or json (one object a line).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let level: tracing_subscriber::filter::LevelFilter =
        cli.log_level.parse().context("--log-level")?;
    let logs = tracing_subscriber::fmt()
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_max_level(level);
    if cli.log_format == "json" {
        logs.json().init();
    } else {
        logs.init();
    }
    let token = std::env::var("FERRY_WORKER_TOKEN")
        .or_else(|_| std::env::var("FERRY_API_KEY"))
        .ok()
        .filter(|t| !t.is_empty());
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_else(|_| "worker".into());
    let settings = Settings {
        api: cli.api,
        token,
        worker_id: cli
            .worker_id
            .unwrap_or_else(|| format!("{}-{}", host.trim(), std::process::id())),
        concurrency: cli.concurrency as usize,
        prefetch: cli.prefetch.map(|p| p as usize),
        lease_ms: cli.lease_ms,
        poll_ms: cli.poll_ms,
        grace_ms: cli.grace_ms,
    };
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: finishing the jobs in hand (a second signal exits at once)"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: finishing the jobs in hand (a second signal exits at once)"),
        }
        on_signal.cancel();
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        // Nothing is lost: the api hands the jobs in flight out again when their leases expire.
        tracing::warn!(
            "second signal: exiting at once; jobs in flight return to the queue when their leases expire"
        );
        std::process::exit(1);
    });
    tracing::info!(worker_id = %settings.worker_id, api = %settings.api, "ferry-worker starting");
    ferry_worker::run_until_stopped(settings, shutdown)
        .await
        .context("ferry-worker stopped")?;
    Ok(())
}
