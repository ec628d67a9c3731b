//! Alerts by e-mail, from the api's own background task (see `ferry_shared::alerts`).
//!
//! Every `check_secs` each rule is looked at. A rule that has something to say, and has not said
//! anything for `every_mins`, writes one message (plain text and HTML) into its record in the
//! tenant's store (connector state `alerts:rule:<n>`, with the rule's watermark in the same
//! write): durable first, sent after. Then every recipient still pending is sent its copy, one
//! SMTP transaction per address, so a refused address fails alone; a mail server that cannot be
//! reached (or answers 4xx) is tried again with a doubling backoff, an address it refuses for
//! good (5xx) is marked failed with its answer. `GET /alerts` shows them all. Nothing here is on
//! the path of intake or delivery.
//!
//! `job_error` reads the jobs that finished in `error` since the rule's watermark from the
//! store's index, so a restart neither loses nor repeats them. The other rules watch a
//! condition and speak once when it begins (and again after `every_mins` while it lasts).
//!
//! A message's "retry these jobs" link is signed: HMAC-SHA256, with a secret made for the tenant
//! at first start and kept in its store, over the action, the expiry and the job ids. It shows
//! a confirmation first; acting spends it (`alerts:used:<signature>`).

use std::fmt::Write as _;
use std::time::Duration;

use ferry_shared::alerts::{Alerts, RuleConfig, Tls, When};
use ferry_shared::job::{JobId, Status};
use hmac::{KeyInit, Mac};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::html::escape;
use crate::state::AppState;
use crate::store::{StateWrite, StoreError};

pub const RESERVED_PREFIX: &str = "alerts:";
const SECRET_KEY: &str = "alerts:secret";
/// Jobs listed in a message, and covered by its retry link, at most.
const LISTED: usize = 10;
const LINKED: usize = 50;
/// Failed jobs one look reads at most.
const FAILED_PER_LOOK: usize = 10_000;
/// A recipient is tried this many times before it is marked failed.
const MAX_ATTEMPTS: u32 = 12;
/// Records kept per rule (the newest), and for how long once settled.
const KEPT: usize = 100;
const KEPT_MS: i64 = 7 * 24 * 3_600_000;

type Hmac = hmac::Hmac<sha2::Sha256>;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RuleState {
    /// `job_error`: jobs that finished at or before this are told.
    #[serde(default)]
    pub watermark_ms: i64,
    /// When this rule last wrote a message.
    #[serde(default)]
    pub last_ms: i64,
    /// A condition rule: the condition held at the last look.
    #[serde(default)]
    pub firing: bool,
    #[serde(default)]
    pub records: Vec<Record>,
}

/// One message and what became of each copy.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Record {
    pub id: String,
    pub rule: String,
    pub created_ms: i64,
    pub subject: String,
    pub text: String,
    /// The same as HTML.
    #[serde(default)]
    pub html: String,
    pub recipients: Vec<Recipient>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Recipient {
    pub to: String,
    /// `pending`, `sent` or `failed`.
    pub status: String,
    pub attempts: u32,
    /// When the next try is due (ms since the epoch), while pending.
    #[serde(default)]
    pub next_ms: i64,
    /// The mail server's last answer, when it was not a plain yes.
    #[serde(default)]
    pub answer: Option<String>,
}

pub struct Alerter {
    pub cfg: Alerts,
    mailer: AsyncSmtpTransport<Tokio1Executor>,
    /// Woken to send at once (`POST /alerts/test`).
    pub wake: tokio::sync::Notify,
    /// `store_refusing` cannot write its record (the store refuses): remembered here.
    refusing_told_ms: std::sync::atomic::AtomicI64,
    /// The signing secret, read (or made) when the task starts.
    pub secret: std::sync::OnceLock<Vec<u8>>,
}

/// Why a copy was not sent.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("{0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
    /// Not an address lettre can write (permanent).
    #[error("{0}")]
    Address(String),
}

impl SendError {
    fn is_permanent(&self) -> bool {
        match self {
            SendError::Smtp(e) => e.is_permanent(),
            SendError::Address(_) => true,
        }
    }
}

fn rule_key(i: usize) -> String {
    format!("alerts:rule:{i}")
}
pub const TEST_KEY: &str = "alerts:rule:test";

impl Alerter {
    pub fn new(cfg: Alerts) -> Result<Self, String> {
        let s = &cfg.smtp;
        let builder = match s.tls {
            Tls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&s.host),
            Tls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&s.host)
                .map_err(|e| format!("alerts.smtp: {e}"))?,
            Tls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&s.host)
                .map_err(|e| format!("alerts.smtp: {e}"))?,
        };
        let mut builder = builder
            .port(s.port)
            .timeout(Some(Duration::from_secs(s.timeout_secs)));
        if let Some((user, password)) = &s.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(Self {
            mailer: builder.build(),
            cfg,
            wake: tokio::sync::Notify::new(),
            refusing_told_ms: std::sync::atomic::AtomicI64::new(0),
            secret: std::sync::OnceLock::new(),
        })
    }
}

/// The task: looks at the rules and sends what is pending, every `check_secs` (or at once when
/// woken), until the api stops.
pub fn spawn(state: actix_web::web::Data<AppState>) {
    let Some(alerter) = state.alerts.as_ref() else {
        return;
    };
    let every = Duration::from_millis(alerter.cfg.check_ms);
    actix_web::rt::spawn(async move {
        loop {
            let Some(a) = state.alerts.as_ref() else {
                return;
            };
            match secret(&state).await {
                Ok(s) => {
                    let _ = a.secret.set(s);
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "no alert secret yet; trying again");
                    tokio::time::sleep(every).await;
                }
            }
        }
        loop {
            let Some(a) = state.alerts.as_ref() else {
                return;
            };
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = a.wake.notified() => {}
                _ = state.shutdown.server_stopping() => return,
            }
            for (i, rule) in a.cfg.rules.iter().enumerate() {
                if let Err(e) = look(&state, a, i, rule).await {
                    tracing::warn!(error = %e, rule = rule.when.as_str(), "alert rule not looked at");
                }
            }
            for key in (0..a.cfg.rules.len())
                .map(rule_key)
                .chain([TEST_KEY.to_string()])
            {
                if let Err(e) = send_pending(&state, a, &key).await {
                    tracing::warn!(error = %e, "alerts not sent now; trying again later");
                }
            }
        }
    });
}

fn read(state: &AppState, key: &str) -> Result<(RuleState, u64), StoreError> {
    let (value, version) = state.store.state(key)?;
    Ok((serde_json::from_value(value).unwrap_or_default(), version))
}

async fn write(
    state: &AppState,
    key: &str,
    st: &RuleState,
    version: u64,
) -> Result<bool, StoreError> {
    let value = serde_json::to_value(st).unwrap_or(Value::Null);
    Ok(matches!(
        state
            .store
            .put_state(key.into(), Some(value), version)
            .await?,
        StateWrite::Written(_)
    ))
}

/// What one rule has to say now, if anything: (subject, lines of text, jobs to list).
async fn look(
    state: &AppState,
    a: &Alerter,
    i: usize,
    rule: &RuleConfig,
) -> Result<(), StoreError> {
    let now = ferry_shared::now_ms();
    let tenant = &state.settings.workshop;
    if rule.when == When::StoreRefusing {
        return store_refusing(state, a, rule, now).await;
    }
    let key = rule_key(i);
    let (mut st, version) = read(state, &key)?;
    let window_open = now - st.last_ms >= a.cfg.every_ms as i64;
    let message = match rule.when {
        When::JobError => {
            if !window_open {
                return Ok(());
            }
            // A rule never looked at before starts from when this api started: jobs that
            // failed before it was configured are not news.
            if version == 0 {
                st.watermark_ms = now - state.started.elapsed().as_millis() as i64;
            }
            let failed = state.store.finished_between(
                Status::Error,
                st.watermark_ms,
                now,
                FAILED_PER_LOOK,
            )?;
            // More than one look can read: the rest are told in the next message.
            st.watermark_ms = match failed.len() == FAILED_PER_LOOK {
                true => failed.last().and_then(|j| j.finished_ms).unwrap_or(now),
                false => now,
            };
            let read_any = !failed.is_empty();
            let told: Vec<_> = failed
                .into_iter()
                .filter(|j| {
                    let code = j.reason_code.as_deref().unwrap_or("");
                    (rule.include.is_empty() || rule.include.iter().any(|c| c == code))
                        && !rule.exclude.iter().any(|c| c == code)
                })
                .collect();
            if told.is_empty() {
                // Nothing to tell. Failures this rule leaves out move the watermark past them,
                // so they are not read again at every look; an empty range needs no write.
                if read_any {
                    write(state, &key, &st, version).await?;
                }
                return Ok(());
            }
            Some(job_errors(a, tenant, &told))
        }
        _ => {
            let (holds, what) = condition(state, rule, now);
            match (holds, st.firing) {
                (true, false) => {
                    st.firing = true;
                    Some((format!("[Ferry] {tenant}: {what}"), vec![what], Vec::new()))
                }
                (true, true) if window_open && st.last_ms > 0 => Some((
                    format!("[Ferry] {tenant}: still {what}"),
                    vec![format!("Still so: {what}")],
                    Vec::new(),
                )),
                (false, true) => {
                    st.firing = false;
                    write(state, &key, &st, version).await?;
                    return Ok(());
                }
                _ => return Ok(()),
            }
        }
    };
    let Some((subject, lines, jobs)) = message else {
        return Ok(());
    };
    let to = rule.to.clone().unwrap_or_else(|| a.cfg.to.clone());
    let record = compose(
        state,
        a,
        rule.when.as_str(),
        subject,
        lines,
        &jobs,
        &to,
        now,
    )?;
    st.last_ms = now;
    st.records.push(record);
    prune(&mut st, now);
    write(state, &key, &st, version).await?;
    a.wake.notify_one();
    Ok(())
}

/// Whether a condition rule's condition holds, and how to say it.
fn condition(state: &AppState, rule: &RuleConfig, now: i64) -> (bool, String) {
    let minutes = rule.minutes.unwrap_or(0.0);
    match rule.when {
        When::OldestWaiting => {
            let oldest = state.store.oldest_waiting_ms().ok().flatten();
            let age_min = oldest.map_or(0.0, |c| (now - c) as f64 / 60_000.0);
            (
                oldest.is_some() && age_min > minutes,
                format!(
                    "the oldest waiting job has waited {age_min:.0} min (more than {minutes} min)"
                ),
            )
        }
        When::NoWorker => {
            let quiet = state
                .last_worker_contact()
                .unwrap_or_else(|| state.started.elapsed());
            let quiet_min = quiet.as_secs_f64() / 60.0;
            (
                quiet_min > minutes,
                format!("no worker has been heard from for {quiet_min:.0} min"),
            )
        }
        When::ConsentNeeded => match state.oauth.as_ref().map(|o| o.status()) {
            Some(s) if s.needs_consent => (
                true,
                format!(
                    "OAuth2 consent is needed ({}): give it at /oauth/start",
                    s.reason.unwrap_or_default()
                ),
            ),
            _ => (false, String::new()),
        },
        When::SourceFailing => {
            let n = state
                .source
                .failed_in_row
                .load(std::sync::atomic::Ordering::Relaxed);
            let polls = rule.polls.unwrap_or(1);
            let last = state
                .source
                .status
                .lock()
                .ok()
                .and_then(|s| s.as_ref().and_then(|s| s.last_error.clone()))
                .unwrap_or_default();
            (
                n >= polls,
                format!("the source failed {n} polls in a row; the last: {last}"),
            )
        }
        When::JobError | When::StoreRefusing => (false, String::new()),
    }
}

/// The store refuses writes, so this message has no record: it is sent at once, from memory,
/// at most once per window.
async fn store_refusing(
    state: &AppState,
    a: &Alerter,
    rule: &RuleConfig,
    now: i64,
) -> Result<(), StoreError> {
    use std::sync::atomic::Ordering::Relaxed;
    let Some(problem) = state.store.health().describe() else {
        a.refusing_told_ms.store(0, Relaxed);
        return Ok(());
    };
    let told = a.refusing_told_ms.load(Relaxed);
    if told != 0 && now - told < a.cfg.every_ms as i64 {
        return Ok(());
    }
    a.refusing_told_ms.store(now, Relaxed);
    let tenant = &state.settings.workshop;
    let what = format!("the store refuses writes: {problem}");
    let to = rule.to.clone().unwrap_or_else(|| a.cfg.to.clone());
    let record = compose(
        state,
        a,
        "store_refusing",
        format!("[Ferry] {tenant}: {what}"),
        vec![what],
        &[],
        &to,
        now,
    )?;
    for r in &record.recipients {
        if let Err(e) = send_one(a, &record, &r.to).await {
            tracing::warn!(to = %r.to, error = %e, "store alert not sent");
        }
    }
    Ok(())
}

/// The subject and lines of a `job_error` message, and the jobs it lists.
fn job_errors(
    a: &Alerter,
    tenant: &str,
    jobs: &[crate::store::record::Job],
) -> (String, Vec<String>, Vec<crate::store::record::Job>) {
    let mut by_code: std::collections::BTreeMap<&str, usize> = Default::default();
    for j in jobs {
        *by_code
            .entry(j.reason_code.as_deref().unwrap_or("?"))
            .or_default() += 1;
    }
    let counts: Vec<String> = by_code.iter().map(|(c, n)| format!("{c} ×{n}")).collect();
    let n = jobs.len();
    let subject = format!(
        "[Ferry] {tenant}: {n} job{} failed ({})",
        if n == 1 { "" } else { "s" },
        counts.join(", ")
    );
    let window = (a.cfg.every_ms as f64 / 60_000.0).max(0.0);
    let lines = vec![format!(
        "{n} job{} entered error since the last message (at most one every {window} min): {}.",
        if n == 1 { "" } else { "s" },
        counts.join(", ")
    )];
    (subject, lines, jobs.to_vec())
}

/// A signed, expiring link that retries `ids`.
pub fn retry_link(a: &Alerter, secret: &[u8], ids: &[JobId], now: i64) -> String {
    let exp = now / 1000 + a.cfg.expires_secs;
    let jobs: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    let jobs = jobs.join(",");
    let sig = sign(secret, exp, &jobs);
    format!(
        "{}alerts/retry?exp={exp}&jobs={jobs}&sig={sig}",
        a.cfg.link_base
    )
}

pub fn sign(secret: &[u8], exp: i64, jobs: &str) -> String {
    let mut mac = <Hmac as KeyInit>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(format!("retry\n{exp}\n{jobs}").as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Whether `sig` signs `exp` and `jobs` (compared in constant time).
pub fn verify(secret: &[u8], exp: i64, jobs: &str, sig: &str) -> bool {
    crate::auth::constant_time_eq(sign(secret, exp, jobs).as_bytes(), sig.as_bytes())
}

/// The tenant's signing secret, made at first start and kept in its store.
pub async fn secret(state: &AppState) -> Result<Vec<u8>, StoreError> {
    let (value, version) = state.store.state(SECRET_KEY)?;
    if let Some(s) = value.as_str() {
        return Ok(s.as_bytes().to_vec());
    }
    let made = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    state
        .store
        .put_state(SECRET_KEY.into(), Some(Value::String(made)), version)
        .await?;
    let (value, _) = state.store.state(SECRET_KEY)?;
    Ok(value.as_str().unwrap_or_default().as_bytes().to_vec())
}

/// A message's text and HTML, with a copy pending for each address.
#[allow(clippy::too_many_arguments)]
pub fn compose(
    state: &AppState,
    a: &Alerter,
    rule: &str,
    subject: String,
    lines: Vec<String>,
    jobs: &[crate::store::record::Job],
    to: &[String],
    now: i64,
) -> Result<Record, StoreError> {
    let tenant = &state.settings.workshop;
    let base = &a.cfg.link_base;
    let mut text = format!("Ferry, tenant {tenant}\n\n");
    let mut html = format!(
        "<!doctype html><html><body><p>Ferry, tenant <b>{}</b></p>",
        escape(tenant)
    );
    for l in &lines {
        let _ = writeln!(text, "{l}");
        let _ = write!(html, "<p>{}</p>", escape(l));
    }
    if !jobs.is_empty() {
        let _ = match jobs.len() {
            1 => writeln!(text, "\nThe job:"),
            n => writeln!(text, "\nThe first {}:", n.min(LISTED)),
        };
        html.push_str("<ul>");
        for j in jobs.iter().take(LISTED) {
            let link = format!("{base}#/jobs/{}", j.id);
            let why = format!(
                "{}: {}",
                j.reason_code.as_deref().unwrap_or(""),
                j.reason_text.as_deref().unwrap_or("")
            );
            let _ = writeln!(
                text,
                "- {} ({}) {why}\n  {link}",
                j.payload.key(),
                j.kind().as_str()
            );
            let _ = write!(
                html,
                "<li><a href=\"{}\">{}</a> ({}) {}</li>",
                escape(&link),
                escape(j.payload.key()),
                j.kind().as_str(),
                escape(&why)
            );
        }
        html.push_str("</ul>");
        if jobs.len() > LISTED {
            let _ = writeln!(text, "… and {} more.", jobs.len() - LISTED);
        }
        let secret = a.secret.get().cloned().unwrap_or_default();
        let ids: Vec<JobId> = jobs.iter().take(LINKED).map(|j| j.id).collect();
        let link = retry_link(a, &secret, &ids, now);
        let hours = a.cfg.expires_secs as f64 / 3600.0;
        let these = match ids.len() {
            1 => "Retry this job".to_string(),
            n => format!("Retry these {n} jobs"),
        };
        let _ = writeln!(
            text,
            "\n{these} (asks first; good once, for {hours} hours):\n{link}"
        );
        let _ = write!(
            html,
            "<p><a href=\"{}\">{these}</a> (asks first; good once, for {hours} hours)</p>",
            escape(&link)
        );
    }
    let _ = writeln!(text, "\nThe dashboard: {base}");
    let _ = write!(
        html,
        "<p><a href=\"{}\">The dashboard</a></p></body></html>",
        escape(base)
    );
    Ok(Record {
        id: uuid::Uuid::now_v7().to_string(),
        rule: rule.to_string(),
        created_ms: now,
        subject,
        text,
        html,
        recipients: to
            .iter()
            .map(|t| Recipient {
                to: t.clone(),
                status: "pending".into(),
                attempts: 0,
                next_ms: now,
                answer: None,
            })
            .collect(),
    })
}

/// Keeps the newest records, and settled ones for a week.
fn prune(st: &mut RuleState, now: i64) {
    st.records.retain(|r| {
        r.recipients.iter().any(|p| p.status == "pending") || now - r.created_ms < KEPT_MS
    });
    let over = st.records.len().saturating_sub(KEPT);
    st.records.drain(..over);
}

async fn send_one(a: &Alerter, record: &Record, to: &str) -> Result<(), SendError> {
    let address = |s: &str| {
        s.parse::<Mailbox>()
            .map_err(|e| SendError::Address(format!("'{s}' is not an address: {e}")))
    };
    let message = Message::builder()
        .from(address(&a.cfg.from)?)
        .to(address(to)?)
        .subject(record.subject.clone())
        .multipart(MultiPart::alternative_plain_html(
            record.text.clone(),
            record.html.clone(),
        ))
        .map_err(|e| SendError::Address(e.to_string()))?;
    a.mailer.send(message).await?;
    Ok(())
}

/// Sends every pending copy of `key`'s records that is due; writes what became of each.
async fn send_pending(state: &AppState, a: &Alerter, key: &str) -> Result<(), StoreError> {
    let (st, _) = read(state, key)?;
    let now = ferry_shared::now_ms();
    let due: Vec<(String, String)> = st
        .records
        .iter()
        .flat_map(|r| {
            r.recipients
                .iter()
                .filter(|p| p.status == "pending" && p.next_ms <= now)
                .map(|p| (r.id.clone(), p.to.clone()))
        })
        .collect();
    for (id, to) in due {
        let Some(record) = st.records.iter().find(|r| r.id == id).cloned() else {
            continue;
        };
        let result = send_one(a, &record, &to).await;
        // Read again: the rule may have written since (a new record); one write per copy.
        let (mut fresh, version) = read(state, key)?;
        let Some(p) = fresh
            .records
            .iter_mut()
            .find(|r| r.id == id)
            .and_then(|r| r.recipients.iter_mut().find(|p| p.to == to))
        else {
            continue;
        };
        p.attempts += 1;
        match result {
            Ok(()) => {
                p.status = "sent".into();
                p.answer = None;
                tracing::info!(%to, subject = %record.subject, "alert sent");
            }
            Err(e) if e.is_permanent() => {
                p.status = "failed".into();
                p.answer = Some(e.to_string());
                tracing::warn!(%to, error = %e, "alert refused for this address");
            }
            Err(e) => {
                let answer = e.to_string();
                if p.attempts >= MAX_ATTEMPTS {
                    p.status = "failed".into();
                    p.answer = Some(format!("gave up after {} attempts: {answer}", p.attempts));
                } else {
                    let backoff = (a.cfg.check_ms << p.attempts.min(10)).min(600_000);
                    p.next_ms = ferry_shared::now_ms() + backoff as i64;
                    p.answer = Some(answer);
                }
                tracing::warn!(%to, error = %e, "mail server unavailable; the alert waits");
            }
        }
        write(state, key, &fresh, version).await?;
    }
    Ok(())
}

/// A test message to every address (`POST /alerts/test`): its record's id.
pub async fn test_message(state: &AppState, a: &Alerter) -> Result<String, StoreError> {
    let now = ferry_shared::now_ms();
    let tenant = &state.settings.workshop;
    let record = compose(
        state,
        a,
        "test",
        format!("[Ferry] {tenant}: a test message"),
        vec!["This is a test of this tenant's alert mail settings. Nothing is wrong.".into()],
        &[],
        &a.cfg.to,
        now,
    )?;
    let id = record.id.clone();
    let (mut st, version) = read(state, TEST_KEY)?;
    st.records.push(record);
    prune(&mut st, now);
    write(state, TEST_KEY, &st, version).await?;
    a.wake.notify_one();
    Ok(id)
}

/// Every record, newest first.
pub fn records(state: &AppState, a: &Alerter) -> Result<Vec<Record>, StoreError> {
    let mut all = Vec::new();
    for key in (0..a.cfg.rules.len())
        .map(rule_key)
        .chain([TEST_KEY.to_string()])
    {
        all.extend(read(state, &key)?.0.records);
    }
    all.sort_by_key(|r| std::cmp::Reverse(r.created_ms));
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_covers_the_expiry_and_every_job() {
        let secret = b"tenant-secret";
        let jobs = "0190f2c4-1a2b-7c3d-8e4f-0123456789ab,0190f2c4-1a2b-7c3d-8e4f-0123456789ac";
        let sig = sign(secret, 1_800_000_000, jobs);
        assert_eq!(sig.len(), 64);
        assert!(verify(secret, 1_800_000_000, jobs, &sig));
        assert!(!verify(secret, 1_800_000_001, jobs, &sig), "another expiry");
        assert!(
            !verify(secret, 1_800_000_000, &jobs[..36], &sig),
            "fewer jobs"
        );
        assert!(
            !verify(b"other-tenant", 1_800_000_000, jobs, &sig),
            "another tenant"
        );
    }
}
