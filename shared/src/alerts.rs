//! `[alerts]`: who hears of what, how often, and through which mail server.
//!
//! ```toml
//! [alerts]
//! to = ["workshop@example.org"]
//! from = "ferry@example.org"
//! every_mins = 15                  # at most one message per rule per window
//! link_base = "https://ferry.example.org/bennys/"   # where readers reach the dashboard
//! expires_hours = 72               # signed "retry these jobs" links
//! [alerts.smtp]
//! host = "smtp.example.org"
//! port = 587
//! tls = "starttls"                 # or "tls" (implicit, port 465) or "none" (loopback only)
//! username = "ferry"
//! password_env = "SMTP_PASSWORD"
//! [[alerts.rules]]
//! when = "job_error"               # a job entered error
//! exclude = ["MAX_ATTEMPTS_EXCEEDED"]
//! [[alerts.rules]]
//! when = "oldest_waiting"          # also: no_worker, store_refusing, consent_needed, source_failing
//! minutes = 30
//! ```

use serde::Deserialize;

use crate::Secret;
use crate::target::inline_or_env;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    pub to: Vec<String>,
    pub from: String,
    /// At most one message per rule per this many minutes (fractions allowed).
    #[serde(default = "default_every_mins")]
    pub every_mins: f64,
    /// The dashboard's address as the readers reach it, for the links in messages; default
    /// `http://127.0.0.1:<port>/`.
    #[serde(default)]
    pub link_base: Option<String>,
    /// Signed links stop working after this many hours (fractions allowed).
    #[serde(default = "default_expires_hours")]
    pub expires_hours: f64,
    /// How often rules are looked at, in seconds.
    #[serde(default = "default_check_secs")]
    pub check_secs: f64,
    pub smtp: SmtpConfig,
    /// Without rules: one, every job that enters `error`.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

fn default_every_mins() -> f64 {
    15.0
}
fn default_expires_hours() -> f64 {
    72.0
}
fn default_check_secs() -> f64 {
    10.0
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: Tls,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret<String>>,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default = "default_smtp_timeout")]
    pub timeout_secs: u64,
}

fn default_smtp_timeout() -> u64 {
    20
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tls {
    /// Plain SMTP upgraded with STARTTLS (required), port 587 by default.
    #[default]
    Starttls,
    /// TLS from the first byte, port 465 by default.
    Tls,
    /// No TLS (a relay on loopback), port 25 by default.
    None,
}

/// What a rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    /// Jobs that entered `error` (filtered by `include` / `exclude` reason codes).
    JobError,
    /// The oldest waiting job is older than `minutes`.
    OldestWaiting,
    /// No worker has been heard from for `minutes`.
    NoWorker,
    /// The store refuses writes (a full disk, a failed write).
    StoreRefusing,
    /// OAuth2 consent must be given again.
    ConsentNeeded,
    /// The source failed `polls` polls in a row.
    SourceFailing,
}

impl When {
    pub fn as_str(self) -> &'static str {
        match self {
            When::JobError => "job_error",
            When::OldestWaiting => "oldest_waiting",
            When::NoWorker => "no_worker",
            When::StoreRefusing => "store_refusing",
            When::ConsentNeeded => "consent_needed",
            When::SourceFailing => "source_failing",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub when: When,
    /// `job_error`: only these reason codes (all when empty), and never these.
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    /// `oldest_waiting`, `no_worker`: how long, in minutes.
    #[serde(default)]
    pub minutes: Option<f64>,
    /// `source_failing`: polls in a row.
    #[serde(default)]
    pub polls: Option<u64>,
    /// Other recipients than `alerts.to`.
    #[serde(default)]
    pub to: Option<Vec<String>>,
}

/// `[alerts]` resolved: the password read, defaults filled, checked.
#[derive(Debug, Clone)]
pub struct Alerts {
    pub to: Vec<String>,
    pub from: String,
    pub every_ms: u64,
    pub link_base: String,
    pub expires_secs: i64,
    pub check_ms: u64,
    pub smtp: Smtp,
    pub rules: Vec<RuleConfig>,
}

#[derive(Clone)]
pub struct Smtp {
    pub host: String,
    pub port: u16,
    pub tls: Tls,
    pub credentials: Option<(String, String)>,
    pub timeout_secs: u64,
}

impl std::fmt::Debug for Smtp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Smtp({}:{}, {:?}, user {:?}, ***)",
            self.host,
            self.port,
            self.tls,
            self.credentials.as_ref().map(|c| &c.0)
        )
    }
}

/// Whether `s` looks like an address: one `@`, something on each side, no spaces or controls.
pub fn is_address(s: &str) -> bool {
    let mut parts = s.split('@');
    matches!((parts.next(), parts.next(), parts.next()), (Some(a), Some(b), None)
        if !a.is_empty() && b.contains('.') || b == "localhost")
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

impl AlertsConfig {
    pub fn resolve(
        &self,
        port: u16,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Alerts, String> {
        let all = self
            .to
            .iter()
            .chain(self.rules.iter().flat_map(|r| r.to.iter().flatten()))
            .chain(std::iter::once(&self.from));
        if let Some(bad) = all.into_iter().find(|a| !is_address(a)) {
            return Err(format!("alerts: '{bad}' is not an e-mail address"));
        }
        if self.to.is_empty() {
            return Err("alerts.to must name at least one address".into());
        }
        if !(self.every_mins >= 0.0 && self.check_secs > 0.0 && self.expires_hours > 0.0) {
            return Err(
                "alerts.every_mins must be 0 or more, check_secs and expires_hours positive".into(),
            );
        }
        for r in &self.rules {
            let needs = match r.when {
                When::OldestWaiting | When::NoWorker => r.minutes.is_none().then_some("minutes"),
                When::SourceFailing => r.polls.is_none().then_some("polls"),
                _ => None,
            };
            if let Some(key) = needs {
                return Err(format!(
                    "alerts.rules: a {} rule needs {key}",
                    r.when.as_str()
                ));
            }
        }
        let password = match (&self.smtp.password, &self.smtp.password_env) {
            (None, None) => None,
            _ => Some(inline_or_env(
                &self.smtp.password,
                &self.smtp.password_env,
                "alerts.smtp.password",
                &env,
            )?),
        };
        let credentials = match (&self.smtp.username, password) {
            (Some(u), Some(p)) => Some((u.clone(), p)),
            (None, None) => None,
            _ => {
                return Err("alerts.smtp.username and a password go together".into());
            }
        };
        let port_default = match self.smtp.tls {
            Tls::Starttls => 587,
            Tls::Tls => 465,
            Tls::None => 25,
        };
        let link_base = match &self.link_base {
            Some(b) if b.starts_with("http://") || b.starts_with("https://") => {
                format!("{}/", b.trim_end_matches('/'))
            }
            Some(_) => return Err("alerts.link_base must start with http:// or https://".into()),
            None => format!("http://127.0.0.1:{port}/"),
        };
        let rules = match self.rules.is_empty() {
            true => vec![RuleConfig {
                when: When::JobError,
                include: Vec::new(),
                exclude: Vec::new(),
                minutes: None,
                polls: None,
                to: None,
            }],
            false => self.rules.clone(),
        };
        Ok(Alerts {
            to: self.to.clone(),
            from: self.from.clone(),
            every_ms: (self.every_mins * 60_000.0) as u64,
            link_base,
            expires_secs: (self.expires_hours * 3600.0).max(1.0) as i64,
            check_ms: (self.check_secs * 1000.0).max(100.0) as u64,
            smtp: Smtp {
                host: self.smtp.host.clone(),
                port: self.smtp.port.unwrap_or(port_default),
                tls: self.smtp.tls,
                credentials,
                timeout_secs: self.smtp.timeout_secs.max(1),
            },
            rules,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_take_defaults_and_hide_the_password() {
        let cfg: AlertsConfig = toml::from_str(
            "to = [\"ops@example.org\"]\nfrom = \"ferry@example.org\"\n\
             [smtp]\nhost = \"smtp.example.org\"\nusername = \"u\"\npassword_env = \"SMTP_PW\"\n",
        )
        .unwrap();
        assert!(cfg.resolve(8001, |_| None).unwrap_err().contains("SMTP_PW"));
        let a = cfg.resolve(8001, |_| Some("hunter2".into())).unwrap();
        assert_eq!((a.smtp.port, a.every_ms), (587, 900_000));
        assert_eq!(a.link_base, "http://127.0.0.1:8001/");
        assert_eq!(a.rules.len(), 1);
        assert!(!format!("{a:?}").contains("hunter2"));
    }

    #[test]
    fn bad_addresses_and_incomplete_rules_are_named() {
        let base = "from = \"ferry@example.org\"\n[smtp]\nhost = \"h\"\n";
        let bad: AlertsConfig =
            toml::from_str(&format!("to = [\"not an address\"]\n{base}")).unwrap();
        assert!(
            bad.resolve(1, |_| None)
                .unwrap_err()
                .contains("not an address")
        );
        let rule: AlertsConfig = toml::from_str(&format!(
            "to = [\"a@b.org\"]\n{base}[[rules]]\nwhen = \"oldest_waiting\"\n"
        ))
        .unwrap();
        assert!(rule.resolve(1, |_| None).unwrap_err().contains("minutes"));
    }
}
