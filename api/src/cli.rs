//! The command line: flags override the config file and the environment.

use std::path::PathBuf;

use clap::Parser;
use ferry_shared::config::{ConfigError, Settings};

#[derive(Debug, Parser)]
#[command(
    name = "ferry-api",
    version,
    about = "One tenant's Ferry api: job intake, status, queue control and the worker protocol.",
    long_about = "One tenant's Ferry api: job intake (POST /create), status, queue control and the \
worker protocol, on an embedded store that never loses an acknowledged job. Run one per tenant, \
beside one ferry-worker.\n\nSettings come from built-in defaults, then --config FILE, then \
FERRY_* environment variables (FERRY_RETRY__MAX_ATTEMPTS=5 sets [retry] max_attempts), then flags.",
    after_help = "Examples:\n  ferry-api --port 8001 --workshop \"Bennys Auto\"\n  \
ferry-api 8001 \"Bennys Auto\"                  (the legacy form)\n  \
FERRY_API_KEY=s3cret ferry-api --config /etc/ferry/bennys.toml --bind 0.0.0.0\n\n\
Data and log: <data-dir>/<tenant-slug>/ (store-redb/ or store-sled/, api.log). Without an API key the api listens \
on loopback only."
)]
pub struct Cli {
    /// Legacy form: the port (same as --port).
    #[arg(value_name = "PORT")]
    legacy_port: Option<u16>,
    /// Legacy form: the workshop (same as --workshop).
    #[arg(value_name = "WORKSHOP")]
    legacy_workshop: Option<String>,
    /// Port to listen on (0 picks a free one) [default: 8001].
    #[arg(long)]
    port: Option<u16>,
    /// The tenant this api serves; orders for another workshop are refused.
    #[arg(long)]
    workshop: Option<String>,
    /// Where tenants' stores and logs live [default: ./data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// A tenant's TOML config file.
    #[arg(long, value_name = "FILE", env = "FERRY_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1]; anything but loopback needs an API key.
    #[arg(long, value_name = "ADDR")]
    bind: Option<String>,
    /// actix-web worker threads [default: 1].
    #[arg(long)]
    workers: Option<usize>,
    /// error, warn, info, debug or trace [default: info].
    #[arg(long)]
    log_level: Option<String>,
    /// text or json [default: text].
    #[arg(long, value_parser = ["text", "json"])]
    log_format: Option<String>,
    /// The storage engine: redb or sled [default: redb].
    #[arg(long, value_parser = ["sled", "redb"])]
    store: Option<String>,
    /// Check the settings (and the target's secrets) and exit, without opening the store.
    #[arg(long)]
    pub check_config: bool,
}

impl Cli {
    /// The settings this command line asks for, validated.
    pub fn settings(self) -> Result<Settings, ConfigError> {
        let check = self.check_config;
        let mut s = Settings::load(self.config.as_deref(), std::env::vars())?;
        let port = one_of("port", self.port, self.legacy_port)?;
        let workshop = one_of("workshop", self.workshop, self.legacy_workshop)?;
        if let Some(p) = port {
            s.port = p;
        }
        if let Some(w) = workshop {
            s.workshop = w;
        }
        if let Some(d) = self.data_dir {
            s.data_dir = d;
        }
        if let Some(b) = self.bind {
            s.bind = b;
        }
        if let Some(w) = self.workers {
            s.workers = w;
        }
        if let Some(l) = self.log_level {
            s.log_level = l;
        }
        if let Some(f) = self.log_format {
            s.log_format = f;
        }
        if let Some(e) = self.store {
            s.store = e;
        }
        s.validate()?;
        if check && let Some(target) = &s.target {
            target
                .resolve(|var| std::env::var(var).ok())
                .map_err(|problem| ConfigError::Invalid {
                    key: "target",
                    problem,
                })?;
        }
        if check && let Some(source) = &s.source {
            source
                .resolve(|var| std::env::var(var).ok())
                .map_err(|problem| ConfigError::Invalid {
                    key: "source",
                    problem,
                })?;
        }
        if check {
            s.resolve_oauth2(s.port, |var| std::env::var(var).ok())
                .map_err(|problem| ConfigError::Invalid {
                    key: "oauth2",
                    problem,
                })?;
        }
        if check && let Some(alerts) = &s.alerts {
            alerts
                .resolve(s.port, |var| std::env::var(var).ok())
                .map_err(|problem| ConfigError::Invalid {
                    key: "alerts",
                    problem,
                })?;
        }
        Ok(s)
    }
}

/// The flag or its legacy positional twin; both at once must agree.
fn one_of<T: PartialEq>(
    key: &'static str,
    flag: Option<T>,
    positional: Option<T>,
) -> Result<Option<T>, ConfigError> {
    match (flag, positional) {
        (Some(a), Some(b)) if a != b => Err(ConfigError::Invalid {
            key,
            problem: "is given twice (flag and position) with different values".into(),
        }),
        (a, b) => Ok(a.or(b)),
    }
}
