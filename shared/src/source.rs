//! Sources: tenants that pull their jobs. `[source]` as written (`SourceConfig`), resolved by the
//! api (secrets from `*_env`) into what its worker runs beside the lease loop (`Source`); and the
//! status the worker reports after each poll, shown in `/alive` and `/metrics`.
//!
//! ```toml
//! [source]
//! kind = "libcal"
//! base_url = "https://gwu.libcal.com"
//! client_id = "…"
//! client_secret_env = "LIBCAL_SECRET"
//! locations = [8827, 10332]
//! every_secs = 300
//! days = 1                                   # today and the next N days
//! statuses = ["Confirmed", "Mediated Approved"]
//! primary_id_field = "q12505"
//! primary_id_pattern = "^G[0-9]{8}$"
//! ```

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Secret;
use crate::target::{http_base_url, inline_or_env};

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceConfig {
    Libcal(LibcalConfig),
    Teamleader(TeamleaderConfig),
}

/// `kind = "teamleader"`: records of Teamleader Focus copied incrementally, with the tenant's
/// `[oauth2]` tokens.
///
/// ```toml
/// [source]
/// kind = "teamleader"
/// base_url = "https://api.focus.teamleader.eu"
/// resources = ["companies", "contacts", "deals", "invoices", "users", "departments"]
/// every_secs = 300
/// page_size = 100
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamleaderConfig {
    pub base_url: String,
    #[serde(default = "default_resources")]
    pub resources: Vec<String>,
    #[serde(default = "default_every_secs")]
    pub every_secs: u64,
    /// Records per page asked of Teamleader (at most 100), and per job.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
}

fn default_resources() -> Vec<String> {
    [
        "companies",
        "contacts",
        "deals",
        "invoices",
        "users",
        "departments",
    ]
    .map(String::from)
    .to_vec()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LibcalConfig {
    pub base_url: String,
    pub client_id: String,
    #[serde(default)]
    pub client_secret: Option<Secret<String>>,
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// LibCal location ids (`lid`) to poll.
    pub locations: Vec<u64>,
    #[serde(default = "default_every_secs")]
    pub every_secs: u64,
    /// Today and the next `days` days.
    #[serde(default = "default_days")]
    pub days: u32,
    /// Booking statuses that are registered; others are skipped.
    #[serde(default = "default_statuses")]
    pub statuses: Vec<String>,
    /// The form answer holding the patron's primary id (`q<question id>`).
    pub primary_id_field: String,
    /// A primary id must match this (after trimming and upper-casing), or it counts as missing.
    #[serde(default)]
    pub primary_id_pattern: Option<String>,
    /// Bookings per page asked of LibCal.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
}

fn default_every_secs() -> u64 {
    300
}
fn default_days() -> u32 {
    1
}
fn default_statuses() -> Vec<String> {
    vec!["Confirmed".into(), "Mediated Approved".into()]
}
fn default_page_size() -> u32 {
    100
}

/// The source as the worker receives it (secrets resolved; `Debug` hides them).
#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    Libcal(Libcal),
    Teamleader(Teamleader),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Teamleader {
    pub base_url: String,
    pub resources: Vec<String>,
    pub every_secs: u64,
    pub page_size: u32,
}

/// Whether `name` can be a Teamleader resource (and so part of a table name): 1 to 30
/// lower-case letters or `_`.
pub fn valid_resource(name: &str) -> bool {
    (1..=30).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Libcal {
    pub base_url: String,
    pub client_id: String,
    pub client_secret: String,
    pub locations: Vec<u64>,
    pub every_secs: u64,
    pub days: u32,
    pub statuses: Vec<String>,
    pub primary_id_field: String,
    pub primary_id_pattern: Option<String>,
    pub page_size: u32,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Libcal(l) => write!(
                f,
                "Libcal({}, client {}, ***, locations {:?}, every {} s)",
                l.base_url, l.client_id, l.locations, l.every_secs
            ),
            Source::Teamleader(t) => t.fmt(f),
        }
    }
}

impl SourceConfig {
    pub fn kind_name(&self) -> &'static str {
        match self {
            SourceConfig::Libcal(_) => "libcal",
            SourceConfig::Teamleader(_) => "teamleader",
        }
    }

    /// Checks the config and resolves `*_env` secrets from `env`; errors name the key.
    pub fn resolve(&self, env: impl Fn(&str) -> Option<String>) -> Result<Source, String> {
        let c = match self {
            SourceConfig::Libcal(c) => c,
            SourceConfig::Teamleader(t) => {
                let base_url = http_base_url(&t.base_url, "source.base_url")?;
                if t.resources.is_empty() || !t.resources.iter().all(|r| valid_resource(r)) {
                    return Err("source.resources must name Teamleader resources (companies, contacts, ...)".into());
                }
                if t.every_secs == 0 || !(1..=100).contains(&t.page_size) {
                    return Err("source.every_secs must be positive, page_size 1 to 100".into());
                }
                return Ok(Source::Teamleader(Teamleader {
                    base_url,
                    resources: t.resources.clone(),
                    every_secs: t.every_secs,
                    page_size: t.page_size,
                }));
            }
        };
        let base_url = http_base_url(&c.base_url, "source.base_url")?;
        let client_secret = inline_or_env(
            &c.client_secret,
            &c.client_secret_env,
            "source.client_secret",
            &env,
        )?;
        if c.locations.is_empty() {
            return Err("source.locations must name at least one LibCal location".into());
        }
        if c.every_secs == 0 || !(1..=500).contains(&c.page_size) || c.days > 365 {
            return Err(
                "source.every_secs must be positive, page_size 1 to 500, days at most 365".into(),
            );
        }
        if let Some(p) = &c.primary_id_pattern {
            regex_lite::Regex::new(p)
                .map_err(|e| format!("source.primary_id_pattern is not a pattern: {e}"))?;
        }
        Ok(Source::Libcal(Libcal {
            base_url,
            client_id: c.client_id.clone(),
            client_secret,
            locations: c.locations.clone(),
            every_secs: c.every_secs,
            days: c.days,
            statuses: c.statuses.clone(),
            primary_id_field: c.primary_id_field.clone(),
            primary_id_pattern: c.primary_id_pattern.clone(),
            page_size: c.page_size,
        }))
    }
}

/// What the worker reports after each poll (`POST /worker/source/status`), and `/alive` shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SourceStatus {
    /// When the last poll ended.
    #[schema(format = DateTime)]
    pub last_poll_at: Option<String>,
    /// Why the last poll failed; `null` when it succeeded.
    pub last_error: Option<String>,
    /// Bookings the last poll found (after the status filter and de-duplication).
    pub bookings_seen: u64,
    /// Of those, the ones the api placed as new.
    pub bookings_new: u64,
    /// Records the last poll read (a `teamleader` source), and of those, the ones in new jobs.
    #[serde(default)]
    pub records_seen: u64,
    #[serde(default)]
    pub records_new: u64,
    /// Polls since the worker started, and how many failed.
    pub polls: u64,
    pub polls_failed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
kind = "libcal"
base_url = "https://gwu.libcal.com/"
client_id = "42"
client_secret_env = "LIBCAL_SECRET"
locations = [8827, 10332]
primary_id_field = "q12505"
primary_id_pattern = "^G[0-9]{8}$"
"#;

    #[test]
    fn a_libcal_source_takes_its_defaults_and_hides_its_secret() {
        let cfg: SourceConfig = toml::from_str(CONFIG).unwrap();
        let Source::Libcal(l) = cfg
            .resolve(|v| (v == "LIBCAL_SECRET").then(|| "s3cret".into()))
            .unwrap()
        else {
            panic!("a libcal source")
        };
        assert_eq!(l.base_url, "https://gwu.libcal.com");
        assert_eq!((l.every_secs, l.days, l.page_size), (300, 1, 100));
        assert_eq!(l.statuses, ["Confirmed", "Mediated Approved"]);
        let shown = format!("{:?}", Source::Libcal(l));
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn a_missing_secret_or_a_bad_pattern_is_named() {
        let cfg: SourceConfig = toml::from_str(CONFIG).unwrap();
        assert!(cfg.resolve(|_| None).unwrap_err().contains("LIBCAL_SECRET"));
        let bad: SourceConfig = toml::from_str(&CONFIG.replace("^G[0-9]{8}$", "^G[0-9")).unwrap();
        let e = bad.resolve(|_| Some("x".into())).unwrap_err();
        assert!(e.contains("primary_id_pattern"), "{e}");
        assert!(toml::from_str::<SourceConfig>(&format!("{CONFIG}bogus = 1\n")).is_err());
    }
}
