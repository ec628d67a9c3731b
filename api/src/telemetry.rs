//! Logs go to stdout and to the tenant's `api.log`, human-readable.

use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Mutex;

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

pub fn init(level: &str, log_file: &Path) -> std::io::Result<()> {
    let level: LevelFilter = level.parse().unwrap_or(LevelFilter::INFO);
    if let Some(dir) = log_file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_file)?;
    let stdout = fmt::layer()
        .with_target(false)
        .with_ansi(std::io::stdout().is_terminal())
        .with_filter(level);
    let file = fmt::layer()
        .with_target(false)
        .with_ansi(false)
        .with_writer(Mutex::new(file))
        .with_filter(level);
    // A second init (tests in one process) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(stdout)
        .with(file)
        .try_init();
    Ok(())
}
