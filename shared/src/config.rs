//! One settings tree for a tenant: built-in defaults (`deploy/config/default.toml`, compiled in),
//! then the tenant's TOML file, then `FERRY_SECTION__KEY` environment variables. Flags are applied
//! on top by the binary. Validated once, at start-up, with errors that name the key.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::Secret;

pub const DEFAULT_TOML: &str = include_str!("../../deploy/config/default.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("invalid configuration")]
    Shape(#[source] Box<toml::de::Error>),
    #[error("invalid configuration: `{key}` {problem}")]
    Invalid { key: &'static str, problem: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub workshop: String,
    pub bind: String,
    pub port: u16,
    pub data_dir: PathBuf,
    pub workers: usize,
    #[serde(deserialize_with = "non_empty_secret")]
    pub api_key: Option<Secret<String>>,
    #[serde(deserialize_with = "non_empty_secret")]
    pub worker_token: Option<Secret<String>>,
    pub max_queue: u64,
    pub retention_hours: u64,
    /// How long jobs in `error` are kept; 0: until retried or cleared.
    pub error_retention_hours: u64,
    pub prune_every_ms: u64,
    pub kill_grace_ms: u64,
    pub worker_seen_ms: u64,
    pub log_level: String,
    /// `text` (for people) or `json` (one object a line, for collectors).
    pub log_format: String,
    /// The storage engine: `sled` or `redb`.
    pub store: String,
    /// Space kept free beside the store, released when the disk fills (MiB; 0: none).
    pub disk_reserve_mb: u64,
    /// Free space under which the api warns (log, `/alive`, `/metrics`), in MiB.
    pub disk_warn_mb: u64,
    pub retry: RetryConfig,
    /// The delivery target; the worker reads it through the api (`GET /worker/config`).
    #[serde(default)]
    pub target: Option<crate::target::TargetConfig>,
    /// A pulled source (LibCal), for tenants that fetch their jobs; its worker runs it.
    #[serde(default)]
    pub source: Option<crate::source::SourceConfig>,
    /// OAuth2 for a target or source that accepts only it (the api keeps its tokens).
    #[serde(default)]
    pub oauth2: Option<crate::oauth2::OAuth2Config>,
    /// Who hears by e-mail of what goes wrong, and how often.
    #[serde(default)]
    pub alerts: Option<crate::alerts::AlertsConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    pub max_attempts: u32,
    pub base_ms: u64,
    pub max_backoff_ms: u64,
    pub max_age_hours: u64,
}

fn non_empty_secret<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Secret<String>>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    Ok(s.filter(|s| !s.is_empty()).map(Secret::new))
}

impl Settings {
    /// Defaults, then `file`, then the `FERRY_*` variables of `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table = DEFAULT_TOML
            .parse()
            .expect("the built-in default.toml is valid");
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            let overlay: toml::Table = text.parse().map_err(|e| ConfigError::Parse {
                path: path.to_owned(),
                source: Box::new(e),
            })?;
            merge(&mut table, overlay);
        }
        apply_env(&mut table, env);
        let mut settings: Settings = table
            .try_into()
            .map_err(|e| ConfigError::Shape(Box::new(e)))?;
        if let (Some(target), Some(dir)) = (&mut settings.target, file.and_then(Path::parent)) {
            target.relative_to(dir);
        }
        Ok(settings)
    }

    /// Checks what serde cannot; call after flags are applied.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, problem: &str| {
            Err(ConfigError::Invalid {
                key,
                problem: problem.to_string(),
            })
        };
        if self.workshop.trim().is_empty() {
            return invalid(
                "workshop",
                "is required (--workshop, FERRY_WORKSHOP or the config file)",
            );
        }
        if TenantSlug::from_name(&self.workshop).as_str().is_empty() {
            return invalid("workshop", "needs at least one letter or digit");
        }
        if !(1..=64).contains(&self.workers) {
            return invalid("workers", "must be between 1 and 64");
        }
        if self.prune_every_ms == 0 {
            return invalid("prune_every_ms", "must be at least 1");
        }
        if self.max_queue == 0 {
            return invalid("max_queue", "must be at least 1");
        }
        if self.retry.max_attempts == 0 {
            return invalid("retry.max_attempts", "must be at least 1");
        }
        if self.retry.base_ms == 0 || self.retry.max_backoff_ms < self.retry.base_ms {
            return invalid(
                "retry.base_ms",
                "must be at least 1 and no larger than retry.max_backoff_ms",
            );
        }
        if !["text", "json"].contains(&self.log_format.as_str()) {
            return invalid("log_format", "must be text or json");
        }
        if !["sled", "redb"].contains(&self.store.as_str()) {
            return invalid("store", "must be sled or redb");
        }
        if !["error", "warn", "info", "debug", "trace"].contains(&self.log_level.as_str()) {
            return invalid("log_level", "must be error, warn, info, debug or trace");
        }
        Ok(())
    }

    pub fn slug(&self) -> TenantSlug {
        TenantSlug::from_name(&self.workshop)
    }

    /// `<data_dir>/<tenant-slug>/`
    pub fn tenant_dir(&self) -> PathBuf {
        self.data_dir.join(self.slug().as_str())
    }

    /// `[oauth2]` resolved, if the tenant has it; refused when the target or source needs it
    /// and it is missing. `port` gives the default redirect URI.
    pub fn resolve_oauth2(
        &self,
        port: u16,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<crate::oauth2::OAuth2>, String> {
        let needs = self.target.as_ref().is_some_and(|t| t.uses_oauth2())
            || matches!(
                self.source,
                Some(crate::source::SourceConfig::Teamleader(_))
            );
        match &self.oauth2 {
            Some(o) => o.resolve(port, env).map(Some),
            None if needs => Err("[oauth2] is required: the target or source uses OAuth2".into()),
            None => Ok(None),
        }
    }

    /// The token the worker protocol requires: its own, or else the api key.
    pub fn worker_secret(&self) -> Option<&Secret<String>> {
        self.worker_token.as_ref().or(self.api_key.as_ref())
    }
}

/// Later tables win key by key; nested tables merge rather than replace.
fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (k, v) in overlay {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// `FERRY_RETRY__MAX_ATTEMPTS=5` sets `retry.max_attempts`. A variable is typed like the default it
/// replaces (so a numeric API key stays a string). Variables naming no known key are left alone:
/// the worker's variables share the tenant's environment file.
fn apply_env(table: &mut toml::Table, env: impl IntoIterator<Item = (String, String)>) {
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix("FERRY_") else {
            continue;
        };
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        let free_form = matches!(path[0].as_str(), "target" | "source" | "oauth2" | "alerts");
        set_path(table, &path, raw, free_form);
    }
}

fn set_path(node: &mut toml::Table, path: &[String], raw: String, free_form: bool) {
    let (key, rest) = (&path[0], &path[1..]);
    if !rest.is_empty() {
        if free_form && !node.contains_key(key) {
            node.insert(key.clone(), toml::Value::Table(toml::Table::new()));
        }
        if let Some(toml::Value::Table(child)) = node.get_mut(key) {
            set_path(child, rest, raw, free_form);
        }
        return;
    }
    let value = match node.get(key) {
        Some(toml::Value::Integer(_)) => raw.parse().ok().map(toml::Value::Integer),
        Some(toml::Value::Float(_)) => raw.parse().ok().map(toml::Value::Float),
        Some(toml::Value::Boolean(_)) => raw.parse().ok().map(toml::Value::Boolean),
        Some(_) => None,
        // A free-form key has no default to take its type from: numbers and booleans as such.
        None if free_form => raw
            .parse()
            .ok()
            .map(toml::Value::Integer)
            .or_else(|| raw.parse().ok().map(toml::Value::Boolean)),
        None => return,
    };
    // Strings stay strings; an unparseable number is kept as a string too, so deserializing
    // fails naming the key.
    node.insert(key.clone(), value.unwrap_or(toml::Value::String(raw)));
}

/// A tenant's name made safe for paths and labels: `Bennys Auto` → `bennys-auto`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TenantSlug(String);

impl TenantSlug {
    pub fn from_name(name: &str) -> Self {
        let mut slug = String::with_capacity(name.len());
        for c in name.trim().chars().flat_map(char::to_lowercase) {
            if c.is_ascii_alphanumeric() {
                slug.push(c);
            } else if !slug.is_empty() && !slug.ends_with('-') {
                slug.push('-');
            }
        }
        while slug.ends_with('-') {
            slug.pop();
        }
        Self(slug)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn slugs_are_lowercase_and_dashed() {
        assert_eq!(
            TenantSlug::from_name(" Bennys Auto ").as_str(),
            "bennys-auto"
        );
        assert_eq!(TenantSlug::from_name("A/B  c!").as_str(), "a-b-c");
        assert_eq!(TenantSlug::from_name("../..").as_str(), "");
    }

    #[test]
    fn defaults_file_and_environment_layer_in_that_order() {
        let dir = std::env::temp_dir().join(format!("ferry-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t.toml");
        std::fs::write(
            &file,
            "workshop = \"From File\"\nport = 9000\n[retry]\nmax_attempts = 3\n",
        )
        .unwrap();
        let s = Settings::load(
            Some(&file),
            env(&[
                ("FERRY_PORT", "9100"),
                ("FERRY_API_KEY", "12345"),
                ("FERRY_RETRY__BASE_MS", "50"),
                ("FERRY_API_URL", "ignored: not a key of the api"),
                ("OTHER", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(s.workshop, "From File");
        assert_eq!(s.port, 9100);
        assert_eq!(s.retry.max_attempts, 3);
        assert_eq!(s.retry.base_ms, 50);
        assert_eq!(s.retry.max_backoff_ms, 300_000);
        assert_eq!(
            s.api_key.as_ref().map(|k| k.expose().as_str()),
            Some("12345")
        );
        assert!(s.worker_token.is_none());
        assert_eq!(s.worker_secret().unwrap().expose(), "12345");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_missing_workshop_and_bad_values_are_named() {
        let s = Settings::load(None, env(&[])).unwrap();
        assert!(s.validate().unwrap_err().to_string().contains("`workshop`"));
        let err = Settings::load(None, env(&[("FERRY_PORT", "eighty")])).unwrap_err();
        assert!(format!("{:?}", err).contains("port"), "{err:?}");
    }

    #[test]
    fn unknown_keys_in_a_file_are_refused() {
        let dir = std::env::temp_dir().join(format!("ferry-cfg2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t.toml");
        std::fs::write(&file, "workshop = \"x\"\nmax_qeue = 5\n").unwrap();
        let err = Settings::load(Some(&file), env(&[])).unwrap_err();
        assert!(format!("{err:?}").contains("max_qeue"), "{err:?}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
