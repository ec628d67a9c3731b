//! The `passagepoint` target of a library tenant: `[target]` as written (with its `[target.alma]`
//! lookup), checked and resolved into what the worker receives, secrets included.
//!
//! ```toml
//! [target]
//! kind = "passagepoint"
//! base_url = "https://passagepoint.example.edu:2444"
//! username = "ferry"
//! password_env = "PP_PASSWORD"
//! destinations = { "8827" = "LibCal Gelman", "10332" = "LibCal VSTCL" }
//! categories = { "gw und" = "Student", "gw fac" = "Faculty" }
//! default_category = "Visitor"
//! keep_days = 7
//! [target.alma]
//! base_url = "https://api-na.hosted.exlibrisgroup.com"
//! api_keys_env = ["ALMA_KEY_IZ1", "ALMA_KEY_IZ2"]
//! per_second = 25
//! cache_hours = 24
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Secret;
use crate::target::{from_env, http_base_url, inline_or_env};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassagePointConfig {
    pub base_url: String,
    pub username: String,
    #[serde(default)]
    pub password: Option<Secret<String>>,
    #[serde(default)]
    pub password_env: Option<String>,
    /// LibCal location id → PassagePoint destination name (which must exist in PassagePoint).
    pub destinations: BTreeMap<String, String>,
    /// Alma user group (its description, compared ignoring case) → PassagePoint category.
    #[serde(default)]
    pub categories: BTreeMap<String, String>,
    #[serde(default = "default_category")]
    pub default_category: String,
    /// How long after an appointment its id mappings are kept.
    #[serde(default = "default_keep_days")]
    pub keep_days: u32,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    pub alma: AlmaConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlmaConfig {
    pub base_url: String,
    /// One key per institution zone, tried in order.
    #[serde(default)]
    pub api_keys: Vec<Secret<String>>,
    #[serde(default)]
    pub api_keys_env: Vec<String>,
    /// Calls a second per key (Alma allows 25 per institution).
    #[serde(default = "default_per_second")]
    pub per_second: u32,
    /// How long a found patron (barcode, group) is remembered.
    #[serde(default = "default_cache_hours")]
    pub cache_hours: u32,
}

fn default_category() -> String {
    "Visitor".into()
}
fn default_keep_days() -> u32 {
    7
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_per_second() -> u32 {
    25
}
fn default_cache_hours() -> u32 {
    24
}

/// The target as the worker receives it: secrets resolved (`Debug` hides them).
#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PassagePoint {
    pub base_url: String,
    pub username: String,
    pub password: String,
    pub destinations: BTreeMap<String, String>,
    /// Keys lower-cased.
    pub categories: BTreeMap<String, String>,
    pub default_category: String,
    pub keep_days: u32,
    pub timeout_ms: u64,
    pub alma: Alma,
}

#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Alma {
    pub base_url: String,
    pub api_keys: Vec<String>,
    pub per_second: u32,
    pub cache_hours: u32,
}

impl std::fmt::Debug for PassagePoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PassagePoint({} as {}, ***; Alma {} with {} key(s))",
            self.base_url,
            self.username,
            self.alma.base_url,
            self.alma.api_keys.len()
        )
    }
}

impl std::fmt::Debug for Alma {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Alma({}, {} key(s))", self.base_url, self.api_keys.len())
    }
}

impl PassagePointConfig {
    /// The destination name of a LibCal location, if it has one.
    pub fn destination(&self, lid: u64) -> Option<&str> {
        self.destinations.get(&lid.to_string()).map(String::as_str)
    }

    /// Checks the config and resolves `*_env` secrets from `env`; errors name the key.
    pub fn resolve(&self, env: impl Fn(&str) -> Option<String>) -> Result<PassagePoint, String> {
        let password = inline_or_env(&self.password, &self.password_env, "target.password", &env)?;
        if self.destinations.is_empty() {
            return Err("target.destinations must map at least one LibCal location".into());
        }
        if let Some(bad) = self.destinations.keys().find(|k| k.parse::<u64>().is_err()) {
            return Err(format!(
                "target.destinations: '{bad}' is not a LibCal location id"
            ));
        }
        let mut api_keys: Vec<String> = self
            .alma
            .api_keys
            .iter()
            .map(|k| k.expose().clone())
            .collect();
        for var in &self.alma.api_keys_env {
            api_keys.push(from_env(var, "target.alma.api_keys_env", &env)?);
        }
        if api_keys.is_empty() {
            return Err("target.alma needs api_keys or api_keys_env".into());
        }
        if self.alma.per_second == 0 || self.timeout_ms == 0 {
            return Err("target.alma.per_second and target.timeout_ms must be positive".into());
        }
        Ok(PassagePoint {
            base_url: http_base_url(&self.base_url, "target.base_url")?,
            username: self.username.clone(),
            password,
            destinations: self.destinations.clone(),
            categories: self
                .categories
                .iter()
                .map(|(k, v)| (k.to_lowercase(), v.clone()))
                .collect(),
            default_category: self.default_category.clone(),
            keep_days: self.keep_days,
            timeout_ms: self.timeout_ms,
            alma: Alma {
                base_url: http_base_url(&self.alma.base_url, "target.alma.base_url")?,
                api_keys,
                per_second: self.alma.per_second,
                cache_hours: self.alma.cache_hours,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
base_url = "https://pp.example.edu:2444/"
username = "ferry"
password_env = "PP_PASSWORD"
destinations = { "8827" = "LibCal Gelman", "10332" = "LibCal VSTCL" }
categories = { "GW Und" = "Student" }
[alma]
base_url = "https://api-na.hosted.exlibrisgroup.com"
api_keys_env = ["ALMA_KEY_IZ1", "ALMA_KEY_IZ2"]
"#;

    fn env(var: &str) -> Option<String> {
        match var {
            "PP_PASSWORD" => Some("pp-secret".into()),
            "ALMA_KEY_IZ1" => Some("k1".into()),
            "ALMA_KEY_IZ2" => Some("k2".into()),
            _ => None,
        }
    }

    #[test]
    fn a_library_target_resolves_its_secrets_in_order_and_hides_them() {
        let cfg: PassagePointConfig = toml::from_str(CONFIG).unwrap();
        assert_eq!(cfg.destination(8827), Some("LibCal Gelman"));
        assert_eq!(cfg.destination(1), None);
        let t = cfg.resolve(env).unwrap();
        assert_eq!(t.base_url, "https://pp.example.edu:2444");
        assert_eq!(t.alma.api_keys, ["k1", "k2"]);
        assert_eq!(t.categories["gw und"], "Student");
        assert_eq!((t.default_category.as_str(), t.keep_days), ("Visitor", 7));
        let shown = format!("{t:?}");
        assert!(
            !shown.contains("pp-secret") && !shown.contains("k1"),
            "{shown}"
        );
    }

    #[test]
    fn a_missing_secret_or_a_bad_key_is_named() {
        let cfg: PassagePointConfig = toml::from_str(CONFIG).unwrap();
        let e = cfg
            .resolve(|v| (v != "ALMA_KEY_IZ2").then(|| "x".into()))
            .unwrap_err();
        assert!(e.contains("ALMA_KEY_IZ2"), "{e}");
        let bad = CONFIG.replace("\"8827\" =", "\"gelman\" =");
        let e = toml::from_str::<PassagePointConfig>(&bad)
            .unwrap()
            .resolve(env)
            .unwrap_err();
        assert!(e.contains("gelman"), "{e}");
        assert!(toml::from_str::<PassagePointConfig>(&format!("{CONFIG}\nbogus = 1")).is_err());
    }
}
