//! The delivery target: `[target]` in a tenant's config as written (`TargetConfig`), and the
//! resolved form the api hands its worker over `GET /worker/config` (`Target`), secrets included.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Secret;
use crate::job::JobKind;
use crate::passagepoint::{PassagePoint, PassagePointConfig};

/// `[target]` as written in the tenant's config.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TargetConfig {
    ErpRest(ErpRestConfig),
    ErpBrowser(ErpBrowserConfig),
    Passagepoint(PassagePointConfig),
    Postgres(PostgresConfig),
}

impl TargetConfig {
    pub fn kind_name(&self) -> &'static str {
        match self {
            TargetConfig::ErpRest(_) => "erp_rest",
            TargetConfig::ErpBrowser(_) => "erp_browser",
            TargetConfig::Passagepoint(_) => "passagepoint",
            TargetConfig::Postgres(_) => "postgres",
        }
    }

    /// The kinds of job this target takes; intake refuses the others.
    pub fn takes(&self) -> &'static [JobKind] {
        match self {
            TargetConfig::ErpRest(_) | TargetConfig::ErpBrowser(_) => &[JobKind::OrderLine],
            TargetConfig::Passagepoint(_) => &[JobKind::Booking],
            TargetConfig::Postgres(_) => &[JobKind::Records],
        }
    }

    /// For a target that maps LibCal locations: whether `lid` has a destination. `None` when
    /// the target maps none.
    pub fn maps_location(&self, lid: u64) -> Option<bool> {
        match self {
            TargetConfig::Passagepoint(p) => Some(p.destination(lid).is_some()),
            _ => None,
        }
    }

    /// Whether it sends OAuth2 bearer tokens (and so needs the tenant's `[oauth2]`).
    pub fn uses_oauth2(&self) -> bool {
        matches!(self, TargetConfig::ErpRest(c) if matches!(c.auth, AuthConfig::Oauth2))
    }

    /// Resolves a relative recipe path against the directory of the config file that named it.
    pub fn relative_to(&mut self, dir: &std::path::Path) {
        if let TargetConfig::ErpBrowser(c) = self
            && c.recipe.is_relative()
        {
            c.recipe = dir.join(&c.recipe);
        }
    }
}

/// `kind = "erp_browser"`: an ERP with only a web UI, driven in headless Chromium by a recipe.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErpBrowserConfig {
    pub base_url: String,
    /// The recipe file (relative to the config file's directory).
    pub recipe: std::path::PathBuf,
    /// How the connector logs in: `basic` (the tenant's username and password) or `job` (the
    /// order's own).
    pub auth: AuthConfig,
    /// Browser sessions at most, each logged in once and reused.
    #[serde(default = "default_sessions")]
    pub concurrency: u32,
    /// A browser without work for this long is closed (0: after every job, as the original did).
    #[serde(default = "default_idle_secs")]
    pub idle_secs: u64,
    /// A page that has not loaded after this long fails the attempt with ERP_TIMEOUT (retried).
    #[serde(default = "default_page_timeout_ms")]
    pub page_timeout_ms: u64,
    #[serde(default = "default_chromium")]
    pub chromium: String,
    #[serde(default = "default_chromedriver")]
    pub chromedriver: String,
}

fn default_sessions() -> u32 {
    1
}
fn default_idle_secs() -> u64 {
    300
}
fn default_page_timeout_ms() -> u64 {
    30_000
}
fn default_chromium() -> String {
    "/usr/bin/chromium".into()
}
fn default_chromedriver() -> String {
    "/usr/bin/chromedriver".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErpRestConfig {
    pub base_url: String,
    #[serde(default = "default_method")]
    pub method: String,
    /// `{worksheet}`, `{product_nr}`, `{uniqueid}`, `{amount}`, `{workshop}` are filled in
    /// (URL-encoded).
    #[serde(default = "default_path")]
    pub path: String,
    /// A JSON template; a string that is exactly `"{amount}"` becomes a JSON number.
    #[serde(default = "default_body")]
    pub body: serde_json::Value,
    #[serde(default = "default_headers")]
    pub headers: BTreeMap<String, String>,
    /// A JSON pointer to the new line's id in the answer.
    #[serde(default = "default_id_pointer")]
    pub id_pointer: String,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    #[default]
    None,
    /// From the config (`password` or `password_env`).
    Basic {
        username: String,
        #[serde(default)]
        password: Option<Secret<String>>,
        #[serde(default)]
        password_env: Option<String>,
    },
    Bearer {
        #[serde(default)]
        token: Option<Secret<String>>,
        #[serde(default)]
        token_env: Option<String>,
    },
    /// Basic auth with the job's own `username` and `password` (as the legacy client sends them).
    Job,
    /// A bearer token from the tenant's `[oauth2]`, which the api keeps fresh.
    Oauth2,
}

/// `kind = "postgres"`: records upserted into a table per resource (`<table_prefix><resource>`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// `postgresql://user:password@host:port/database` (or `url_env` naming a variable with it).
    #[serde(default)]
    pub url: Option<Secret<String>>,
    #[serde(default)]
    pub url_env: Option<String>,
    #[serde(default = "default_table_prefix")]
    pub table_prefix: String,
    /// Connections at most.
    #[serde(default = "default_pool_size")]
    pub pool_size: u32,
    #[serde(default = "default_pg_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_table_prefix() -> String {
    "teamleader_".into()
}
fn default_pool_size() -> u32 {
    4
}
fn default_pg_timeout_ms() -> u64 {
    10_000
}

/// A `postgres` target as the worker receives it (`Debug` hides the URL, which holds a password).
#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Postgres {
    pub url: String,
    pub table_prefix: String,
    pub pool_size: u32,
    pub timeout_ms: u64,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Postgres(***, tables {}*, pool {})",
            self.table_prefix, self.pool_size
        )
    }
}

impl PostgresConfig {
    fn resolve(&self, env: impl Fn(&str) -> Option<String>) -> Result<Postgres, String> {
        let url = inline_or_env(&self.url, &self.url_env, "target.url", &env)?;
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err("target.url must start with postgresql:// or postgres://".into());
        }
        let p = &self.table_prefix;
        if p.len() > 30
            || !p
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit())
            || p.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err("target.table_prefix must be at most 30 lower-case letters, digits or _, not starting with a digit".into());
        }
        if self.pool_size == 0 || self.timeout_ms == 0 {
            return Err("target.pool_size and target.timeout_ms must be positive".into());
        }
        Ok(Postgres {
            url,
            table_prefix: p.clone(),
            pool_size: self.pool_size,
            timeout_ms: self.timeout_ms,
        })
    }
}

fn default_method() -> String {
    "POST".into()
}
fn default_path() -> String {
    "/worksheets/{worksheet}/lines".into()
}
fn default_body() -> serde_json::Value {
    serde_json::json!({
        "product_nr": "{product_nr}",
        "amount": "{amount}",
        "reference": "OilMat:{uniqueid}",
    })
}
fn default_headers() -> BTreeMap<String, String> {
    BTreeMap::from([("Idempotency-Key".to_string(), "{uniqueid}".to_string())])
}
fn default_id_pointer() -> String {
    "/id".into()
}
fn default_connect_timeout_ms() -> u64 {
    2_000
}
fn default_timeout_ms() -> u64 {
    10_000
}

/// The target as the worker receives it: secrets resolved and in the clear (the worker protocol
/// is token-protected; `Debug` still hides them).
#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    ErpRest(ErpRest),
    ErpBrowser(ErpBrowser),
    Passagepoint(PassagePoint),
    Postgres(Postgres),
}

/// An `erp_browser` target as the worker receives it: the recipe parsed, secrets resolved.
#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErpBrowser {
    pub base_url: String,
    #[schema(value_type = Object)]
    pub recipe: crate::recipe::Recipe,
    /// `basic` or `job`.
    pub auth: Auth,
    pub concurrency: u32,
    pub idle_secs: u64,
    pub page_timeout_ms: u64,
    pub chromium: String,
    pub chromedriver: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErpRest {
    pub base_url: String,
    pub method: String,
    pub path: String,
    pub body: serde_json::Value,
    pub headers: BTreeMap<String, String>,
    pub id_pointer: String,
    pub auth: Auth,
    pub connect_timeout_ms: u64,
    pub timeout_ms: u64,
}

#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Auth {
    None,
    Basic { username: String, password: String },
    Bearer { token: String },
    Job,
    Oauth2,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Auth::Bearer { .. } => f.write_str("Bearer(***)"),
            Auth::Job => f.write_str("Job"),
            Auth::Oauth2 => f.write_str("Oauth2"),
        }
    }
}

impl std::fmt::Debug for ErpBrowser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErpBrowser")
            .field("base_url", &self.base_url)
            .field("recipe", &self.recipe.name)
            .field("auth", &self.auth)
            .field("concurrency", &self.concurrency)
            .field("idle_secs", &self.idle_secs)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::ErpRest(t) => t.fmt(f),
            Target::ErpBrowser(t) => t.fmt(f),
            Target::Passagepoint(t) => t.fmt(f),
            Target::Postgres(t) => t.fmt(f),
        }
    }
}

/// What `GET /worker/config` answers.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkerConfig {
    pub tenant: String,
    pub target: Target,
    /// The source the worker runs beside its lease loop, if the tenant pulls its jobs.
    #[serde(default)]
    pub source: Option<crate::source::Source>,
}

/// A secret given inline (`key`) or by the name of an environment variable (`key_env`), as every
/// target and source setting takes it; `key` is the setting's full name, for errors.
pub(crate) fn inline_or_env(
    inline: &Option<Secret<String>>,
    var: &Option<String>,
    key: &str,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    match (inline, var) {
        (Some(s), _) => Ok(s.expose().clone()),
        (None, Some(v)) => from_env(v, &format!("{key}_env"), env),
        (None, None) => Err(format!("{key} or {key}_env is required")),
    }
}

/// The value of the variable `var` that the setting `key` names.
pub(crate) fn from_env(
    var: &str,
    key: &str,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    env(var).ok_or_else(|| format!("{key} names {var}, which is not set"))
}

/// A base URL (`key` names the setting): http or https, without a trailing slash.
pub(crate) fn http_base_url(url: &str, key: &str) -> Result<String, String> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(url.trim_end_matches('/').to_string())
    } else {
        Err(format!("{key} must start with http:// or https://"))
    }
}

impl TargetConfig {
    /// Checks the config and resolves `*_env` secrets from `env`; errors name the key.
    pub fn resolve(&self, env: impl Fn(&str) -> Option<String>) -> Result<Target, String> {
        let c = match self {
            TargetConfig::ErpRest(c) => c,
            TargetConfig::ErpBrowser(c) => return c.resolve(env).map(Target::ErpBrowser),
            TargetConfig::Passagepoint(p) => return p.resolve(env).map(Target::Passagepoint),
            TargetConfig::Postgres(p) => return p.resolve(env).map(Target::Postgres),
        };
        let base_url = http_base_url(&c.base_url, "target.base_url")?;
        if !["GET", "POST", "PUT", "PATCH"].contains(&c.method.to_ascii_uppercase().as_str()) {
            return Err("target.method must be GET, POST, PUT or PATCH".into());
        }
        if !c.id_pointer.is_empty() && !c.id_pointer.starts_with('/') {
            return Err("target.id_pointer must be a JSON pointer such as /id".into());
        }
        if c.timeout_ms == 0 || c.connect_timeout_ms == 0 {
            return Err("target.timeout_ms and target.connect_timeout_ms must be positive".into());
        }
        let auth = c.auth.resolve(&env)?;
        Ok(Target::ErpRest(ErpRest {
            base_url,
            method: c.method.to_ascii_uppercase(),
            path: c.path.clone(),
            body: c.body.clone(),
            headers: c.headers.clone(),
            id_pointer: c.id_pointer.clone(),
            auth,
            connect_timeout_ms: c.connect_timeout_ms,
            timeout_ms: c.timeout_ms,
        }))
    }
}

impl AuthConfig {
    fn resolve(&self, env: &impl Fn(&str) -> Option<String>) -> Result<Auth, String> {
        Ok(match self {
            AuthConfig::None => Auth::None,
            AuthConfig::Job => Auth::Job,
            AuthConfig::Oauth2 => Auth::Oauth2,
            AuthConfig::Basic {
                username,
                password,
                password_env,
            } => Auth::Basic {
                username: username.clone(),
                password: inline_or_env(password, password_env, "target.auth.password", env)?,
            },
            AuthConfig::Bearer { token, token_env } => Auth::Bearer {
                token: inline_or_env(token, token_env, "target.auth.token", env)?,
            },
        })
    }
}

impl ErpBrowserConfig {
    fn resolve(&self, env: impl Fn(&str) -> Option<String>) -> Result<ErpBrowser, String> {
        let base_url = http_base_url(&self.base_url, "target.base_url")?;
        let text = std::fs::read_to_string(&self.recipe)
            .map_err(|e| format!("target.recipe: cannot read {}: {e}", self.recipe.display()))?;
        let recipe = crate::recipe::Recipe::parse(&text)
            .map_err(|e| format!("target.recipe {}: {e}", self.recipe.display()))?;
        let auth = match self.auth.resolve(&env)? {
            a @ (Auth::Basic { .. } | Auth::Job) => a,
            _ => {
                return Err(
                    "target.auth of an erp_browser target must be basic (the tenant's \
                            username and password) or job (the order's own)"
                        .into(),
                );
            }
        };
        if self.concurrency == 0 || self.page_timeout_ms == 0 {
            return Err("target.concurrency and target.page_timeout_ms must be positive".into());
        }
        Ok(ErpBrowser {
            base_url,
            recipe,
            auth,
            concurrency: self.concurrency,
            idle_secs: self.idle_secs,
            page_timeout_ms: self.page_timeout_ms,
            chromium: self.chromium.clone(),
            chromedriver: self.chromedriver.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<TargetConfig, toml::de::Error> {
        toml::from_str(toml_text)
    }

    #[test]
    fn a_minimal_erp_rest_target_takes_the_default_mapping() {
        let t = parse("kind = \"erp_rest\"\nbase_url = \"http://erp.local/api/\"\n")
            .unwrap()
            .resolve(|_| None)
            .unwrap();
        let Target::ErpRest(t) = t else {
            panic!("an erp_rest target")
        };
        assert_eq!(t.base_url, "http://erp.local/api");
        assert_eq!(t.path, "/worksheets/{worksheet}/lines");
        assert_eq!(t.headers["Idempotency-Key"], "{uniqueid}");
        assert_eq!(t.body["amount"], "{amount}");
        assert_eq!(t.auth, Auth::None);
    }

    #[test]
    fn secrets_resolve_from_the_environment_and_never_print() {
        let cfg = parse(
            "kind = \"erp_rest\"\nbase_url = \"https://x\"\nauth = { kind = \"basic\", username = \"ferry\", password_env = \"ERP_PW\" }\n",
        )
        .unwrap();
        let err = cfg.resolve(|_| None).unwrap_err();
        assert!(err.contains("ERP_PW"), "{err}");
        let t = cfg
            .resolve(|v| (v == "ERP_PW").then(|| "hunter2".to_string()))
            .unwrap();
        assert!(!format!("{t:?}").contains("hunter2"));
        assert!(serde_json::to_string(&t).unwrap().contains("hunter2"));
    }

    #[test]
    fn bad_targets_are_refused_naming_the_key() {
        assert!(parse("kind = \"erp_rest\"\nbase_url = \"x\"\nbogus = 1\n").is_err());
        assert!(parse("kind = \"carrier_pigeon\"\n").is_err());
        let e = parse("kind = \"erp_rest\"\nbase_url = \"ftp://x\"\n")
            .unwrap()
            .resolve(|_| None)
            .unwrap_err();
        assert!(e.contains("base_url"), "{e}");
    }
}
