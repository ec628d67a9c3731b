//! `erp_browser`: an ERP with only a web UI, driven in headless Chromium by the tenant's recipe
//! (see `ferry_shared::recipe`). Per job, on a reused, logged-in session:
//!
//! 1. `open_worksheet`, then `read_lines`: when the job's reference (`OilMat:<uniqueid>`) is
//!    already on the worksheet, an earlier attempt saved it, and the job is `created` without
//!    adding a line (exactly once across crashes and retries).
//! 2. `add_line`, then `read_lines` again (and once more after `open_worksheet`): `created` only
//!    when the line is there.
//!
//! A page showing the recipe's `logged_out` selector means the session expired: the connector
//! logs in again and starts over, once. Failures are classified: `ERP_LOGIN_FAILED` (the login
//! page shows `login_failed`), `ERP_WORKSHEET_NOT_FOUND` (no row matches in a `pick_row`),
//! `ERP_UI_CHANGED` (a selector never appears on a page that finished loading), all permanent;
//! `ERP_TIMEOUT` (a page that did not load in time), `ERP_SAVE_UNCONFIRMED` (the save was sent
//! but the line is not there), `ERP_SESSION_EXPIRED` (the session expired again during the job,
//! right after a login) and `ERP_BROWSER_FAILED` (the browser or chromedriver crashed or could
//! not start), retried. Every failure with a page to show saves a screenshot and the page's
//! HTML (passwords blanked out) with the api, named in the job's log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fantoccini::error::CmdError;
use fantoccini::{Client, Locator};
use ferry_shared::job::{OrderLine, Payload};
use ferry_shared::protocol::{AttemptDetail, LeasedJob, Outcome};
use ferry_shared::recipe::{Action, Step, render};
use ferry_shared::target::{Auth, ErpBrowser};

use super::browser::{Browser, Lent};

/// How often a step looks again for what it waits for.
const POLL: Duration = Duration::from_millis(50);
/// Characters of a failure's text kept in the job log.
const EXCERPT_CHARS: usize = 300;

pub struct ErpBrowserConnector {
    cfg: ErpBrowser,
    ctx: super::Ctx,
    browser: Arc<Browser>,
}

/// Why an attempt stopped short.
#[derive(Debug)]
enum Fail {
    /// Trying again will not help: an operator must look.
    Permanent(String, String),
    Retry(String, String),
    /// The page asks to log in: the session expired.
    LoggedOut,
    /// The browser or chromedriver is gone: the session cannot be used again.
    Crashed(String),
}

impl Fail {
    fn code(&self) -> &str {
        match self {
            Fail::Permanent(code, _) | Fail::Retry(code, _) => code,
            Fail::LoggedOut => "ERP_SESSION_EXPIRED",
            Fail::Crashed(_) => "ERP_BROWSER_FAILED",
        }
    }
}

/// Whether `e` says an element belonged to a page that has since been replaced: Chrome answers
/// `stale element reference`, or an `unknown error` that the node "does not belong to the
/// document" when the navigation lands between finding an element and reading it.
fn page_left(e: &CmdError) -> bool {
    use fantoccini::error::ErrorStatus;
    matches!(e, CmdError::Standard(w) if w.error == ErrorStatus::StaleElementReference
        || (w.error == ErrorStatus::UnknownError
            && w.message.contains("does not belong to the document")))
}

/// A WebDriver error: the browser is gone, or the page did not do what was asked.
fn driver_error(e: CmdError) -> Fail {
    use fantoccini::error::ErrorStatus;
    match &e {
        CmdError::Standard(w) if w.error == ErrorStatus::Timeout => Fail::Retry(
            "ERP_TIMEOUT".into(),
            format!("the page did not load in time: {e}"),
        ),
        CmdError::Standard(w)
            if matches!(
                w.error,
                ErrorStatus::NoSuchElement
                    | ErrorStatus::StaleElementReference
                    | ErrorStatus::ElementNotInteractable
                    | ErrorStatus::ElementClickIntercepted
                    | ErrorStatus::InvalidSelector
                    | ErrorStatus::JavascriptError
            ) =>
        {
            Fail::Permanent("ERP_UI_CHANGED".into(), e.to_string())
        }
        CmdError::Standard(_) | CmdError::NotJson(_) | CmdError::NotW3C(_) => {
            Fail::Crashed(e.to_string())
        }
        _ => Fail::Crashed(e.to_string()),
    }
}

impl ErpBrowserConnector {
    pub fn new(cfg: ErpBrowser, ctx: super::Ctx) -> Self {
        let browser = Browser::new(cfg.clone());
        Self { cfg, ctx, browser }
    }

    /// Browser sessions at most, each driving one job.
    pub fn sessions(&self) -> usize {
        self.cfg.concurrency as usize
    }

    pub async fn deliver(&self, job: &LeasedJob) -> (Outcome, AttemptDetail) {
        let started = Instant::now();
        let Payload::OrderLine(order) = &job.payload else {
            return super::not_taken(job, "erp_browser");
        };
        let Some((username, password)) = self.credentials(order) else {
            return (
                Outcome::Failed {
                    reason_code: "ERP_LOGIN_FAILED".into(),
                    reason_text: "auth = job, but the order carries no username and password"
                        .into(),
                },
                AttemptDetail::default(),
            );
        };
        let vars = Vars {
            base_url: &self.cfg.base_url,
            order,
            reference: format!("OilMat:{}", order.uniqueid),
            username: &username,
            password: &password,
        };
        let result = match self.browser.lend().await {
            Err(broken) => Err((Fail::Crashed(broken.0), None)),
            Ok(mut lent) => {
                let result = self.run(&mut lent, &vars).await;
                let healthy = !matches!(result, Err(Fail::Crashed(_)));
                let artifacts = match &result {
                    Err(fail) if healthy => self.save_artifacts(&lent, job, fail, &password).await,
                    _ => Vec::new(),
                };
                self.browser.give_back(lent, healthy).await;
                result.map_err(|f| (f, Some(artifacts)))
            }
        };
        let mut detail = AttemptDetail {
            duration_ms: Some(started.elapsed().as_millis() as u64),
            ..AttemptDetail::default()
        };
        let outcome = match result {
            Ok(Done::Added) => Outcome::Created {
                target_ref: vars.reference.clone(),
            },
            Ok(Done::AlreadyThere) => {
                detail.excerpt = Some(format!(
                    "{} was already on worksheet {}: no line added",
                    vars.reference, order.worksheet
                ));
                Outcome::Created {
                    target_ref: vars.reference.clone(),
                }
            }
            Err((fail, artifacts)) => {
                let code = fail.code().to_string();
                let text = match &fail {
                    Fail::Permanent(_, t) | Fail::Retry(_, t) | Fail::Crashed(t) => t.clone(),
                    Fail::LoggedOut => {
                        "the ERP's session expired again during the job, right after a login".into()
                    }
                };
                let text = excerpt(&scrub(&text, &password));
                detail.excerpt = Some(text.clone());
                detail.artifacts = artifacts.unwrap_or_default();
                match fail {
                    Fail::Permanent(..) => Outcome::Failed {
                        reason_code: code,
                        reason_text: text,
                    },
                    Fail::Retry(..) | Fail::Crashed(_) | Fail::LoggedOut => Outcome::Retry {
                        reason_code: code,
                        reason_text: text,
                        after_ms: None,
                    },
                }
            }
        };
        (outcome, detail)
    }

    fn credentials(&self, order: &OrderLine) -> Option<(String, String)> {
        match &self.cfg.auth {
            Auth::Basic { username, password } => Some((username.clone(), password.clone())),
            _ => match super::auth::job_credentials(order) {
                Some((user, Some(password))) => Some((user.to_string(), password.to_string())),
                _ => None,
            },
        }
    }

    /// Logs in when the session is not (or not as this user), then the job; after a logout
    /// seen on the way, logs in again and starts over, once.
    async fn run(&self, lent: &mut Lent, vars: &Vars<'_>) -> Result<Done, Fail> {
        let session = &mut lent.session;
        for first in [true, false] {
            if session.logged_in_as.as_deref() != Some(vars.username) {
                session.logged_in_as = None;
                self.login(&session.client, vars).await?;
                session.logged_in_as = Some(vars.username.to_string());
            }
            match self.line(&session.client, vars).await {
                Err(Fail::LoggedOut) if first => {
                    tracing::info!("the ERP session expired; logging in again");
                    session.logged_in_as = None;
                }
                other => return other,
            }
        }
        Err(Fail::LoggedOut)
    }

    async fn login(&self, client: &Client, vars: &Vars<'_>) -> Result<(), Fail> {
        let recipe = &self.cfg.recipe;
        match Steps::login(client, vars, recipe).run(&recipe.login).await {
            Ok(_) => Ok(()),
            Err(Fail::Crashed(e)) => Err(Fail::Crashed(e)),
            Err(_) if present(client, &recipe.login_failed).await => Err(Fail::Permanent(
                "ERP_LOGIN_FAILED".into(),
                format!("the ERP refused the login of {}", vars.username),
            )),
            Err(Fail::LoggedOut) => Err(Fail::Permanent(
                "ERP_UI_CHANGED".into(),
                "the login page did not lead past itself".into(),
            )),
            Err(other) => Err(other),
        }
    }

    /// The job on a logged-in session: exactly once by reading the worksheet before and after.
    async fn line(&self, client: &Client, vars: &Vars<'_>) -> Result<Done, Fail> {
        let recipe = &self.cfg.recipe;
        let steps = Steps::new(client, vars, recipe);
        steps.run(&recipe.open_worksheet).await?;
        if steps.holds_reference(&recipe.read_lines).await? {
            return Ok(Done::AlreadyThere);
        }
        let added = steps.run(&recipe.add_line).await;
        if let Err(Fail::Crashed(e)) = added {
            return Err(Fail::Crashed(e));
        }
        // Whatever the save's page said, the worksheet decides.
        if added.is_ok()
            && steps
                .holds_reference(&recipe.read_lines)
                .await
                .unwrap_or(false)
        {
            return Ok(Done::Added);
        }
        let failure = added.err();
        if !steps.clicked() {
            // The form could not even be filled in: nothing was sent.
            return Err(failure.unwrap_or(Fail::Retry(
                "ERP_SAVE_UNCONFIRMED".into(),
                "the line is not on the worksheet after the save".into(),
            )));
        }
        steps.run(&recipe.open_worksheet).await?;
        if steps.holds_reference(&recipe.read_lines).await? {
            return Ok(Done::Added);
        }
        let why = match failure {
            Some(f) => format!("{}: {}", f.code(), describe(&f)),
            None => "the ERP confirmed the save".into(),
        };
        Err(Fail::Retry(
            "ERP_SAVE_UNCONFIRMED".into(),
            format!(
                "the save was sent but {} is not on worksheet {} ({why})",
                vars.reference, vars.order.worksheet
            ),
        ))
    }

    /// Saves a screenshot and the page's HTML with the api; answers their names.
    async fn save_artifacts(
        &self,
        lent: &Lent,
        job: &LeasedJob,
        fail: &Fail,
        password: &str,
    ) -> Vec<String> {
        let client = &lent.session.client;
        let stem = format!("attempt-{}-{}", job.attempt, fail.code().to_lowercase());
        let mut saved = Vec::new();
        let png = client.screenshot().await.ok();
        let html = client
            .source()
            .await
            .ok()
            .map(|h| scrub(&h, password).into_bytes());
        for (ext, bytes) in [("png", png), ("html", html)] {
            let Some(bytes) = bytes else { continue };
            let name = format!("{stem}.{ext}");
            match self.ctx.api.put_artifact(job.job_id, &name, bytes).await {
                Ok(()) => saved.push(name),
                Err(e) => tracing::warn!(error = %e, %name, "could not save a failure's artifact"),
            }
        }
        saved
    }
}

enum Done {
    Added,
    AlreadyThere,
}

fn describe(f: &Fail) -> String {
    match f {
        Fail::Permanent(_, t) | Fail::Retry(_, t) | Fail::Crashed(t) => t.clone(),
        Fail::LoggedOut => "the ERP asked to log in".into(),
    }
}

/// The HTML of a page with the password blanked out, wherever it appears.
fn scrub(html: &str, password: &str) -> String {
    if password.is_empty() {
        html.to_string()
    } else {
        html.replace(password, "***")
    }
}

fn excerpt(s: &str) -> String {
    s.chars().take(EXCERPT_CHARS).collect()
}

/// What the recipe's templates are filled from.
struct Vars<'a> {
    base_url: &'a str,
    order: &'a OrderLine,
    reference: String,
    username: &'a str,
    password: &'a str,
}

impl Vars<'_> {
    fn get(&self, name: &str) -> Option<String> {
        Some(match name {
            "base_url" => self.base_url.to_string(),
            "worksheet" => self.order.worksheet.clone(),
            "product_nr" => self.order.product_nr.clone(),
            "amount" => self.order.amount.to_string(),
            "reference" => self.reference.clone(),
            "uniqueid" => self.order.uniqueid.clone(),
            "workshop" => self.order.workshop.clone(),
            "username" => self.username.to_string(),
            "password" => self.password.to_string(),
            _ => return None,
        })
    }

    fn fill(&self, template: &str) -> String {
        render(template, |n| self.get(n))
    }
}

/// Runs steps on one page flow; remembers whether a click was sent (a save may have happened).
struct Steps<'a> {
    client: &'a Client,
    vars: &'a Vars<'a>,
    recipe: &'a ferry_shared::recipe::Recipe,
    clicked: std::sync::atomic::AtomicBool,
    /// Outside the login: a page asking to log in ends the wait at once.
    watch_logout: bool,
}

impl<'a> Steps<'a> {
    fn new(
        client: &'a Client,
        vars: &'a Vars<'a>,
        recipe: &'a ferry_shared::recipe::Recipe,
    ) -> Self {
        Self {
            client,
            vars,
            recipe,
            clicked: std::sync::atomic::AtomicBool::new(false),
            watch_logout: true,
        }
    }

    /// For the login itself, where the login page is expected.
    fn login(
        client: &'a Client,
        vars: &'a Vars<'a>,
        recipe: &'a ferry_shared::recipe::Recipe,
    ) -> Self {
        Self {
            watch_logout: false,
            ..Self::new(client, vars, recipe)
        }
    }

    /// Whether to stop waiting: the deadline passed, or (outside the login) the page asks to
    /// log in.
    async fn give_up(&self, deadline: Instant, what: &str) -> Option<Fail> {
        if self.watch_logout && present(self.client, &self.recipe.logged_out).await {
            return Some(Fail::LoggedOut);
        }
        if Instant::now() >= deadline {
            return Some(self.missing(what).await);
        }
        None
    }

    fn clicked(&self) -> bool {
        self.clicked.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Runs `steps`; answers the texts the last `read_lines` read.
    async fn run(&self, steps: &[Step]) -> Result<Vec<String>, Fail> {
        let mut lines = Vec::new();
        for step in steps {
            if let Some(read) = self.step(step).await? {
                lines = read;
            }
        }
        Ok(lines)
    }

    /// Whether the lines `steps` read hold the job's reference.
    async fn holds_reference(&self, steps: &[Step]) -> Result<bool, Fail> {
        let lines = self.run(steps).await?;
        Ok(lines.iter().any(|l| l.contains(&self.vars.reference)))
    }

    async fn step(&self, step: &Step) -> Result<Option<Vec<String>>, Fail> {
        let deadline = Instant::now() + Duration::from_millis(step.timeout_ms);
        let c = self.client;
        match &step.action {
            Action::Open { url } => {
                let url = self.vars.fill(url);
                let url = if url.starts_with('/') {
                    format!("{}{url}", self.vars.base_url)
                } else {
                    url
                };
                c.goto(&url).await.map_err(driver_error)?;
            }
            Action::Fill { selector, value } => {
                let field = self.find(selector, deadline).await?;
                field.clear().await.map_err(driver_error)?;
                field
                    .send_keys(&self.vars.fill(value))
                    .await
                    .map_err(driver_error)?;
            }
            Action::Click { selector } => {
                let button = self.find(selector, deadline).await?;
                self.clicked
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                button.click().await.map_err(driver_error)?;
            }
            Action::Wait { selector } => {
                self.find(selector, deadline).await?;
            }
            Action::WaitText { text } => {
                let text = self.vars.fill(text);
                loop {
                    let body = match c.find(Locator::Css("body")).await {
                        Ok(body) => body.text().await,
                        Err(e) => Err(e),
                    };
                    match body {
                        Ok(body) if body.contains(&text) => break,
                        Ok(_) => {}
                        // The page the body was found in was left before its text was read
                        // (a save's answer arriving): look again in the new one.
                        Err(e) if page_left(&e) => {}
                        Err(e) => return Err(driver_error(e)),
                    }
                    if let Some(fail) = self
                        .give_up(deadline, &format!("the text \"{text}\""))
                        .await
                    {
                        return Err(fail);
                    }
                    tokio::time::sleep(POLL).await;
                }
            }
            Action::PickRow {
                rows,
                cell,
                equals,
                click,
                missing,
            } => {
                let want = self.vars.fill(equals);
                let found = self.all(rows, deadline).await?;
                let texts = self.cell_texts(rows, cell).await?;
                let picked = texts
                    .iter()
                    .position(|t| t.as_deref().map(str::trim) == Some(want.as_str()))
                    .and_then(|i| found.into_iter().nth(i));
                let Some(row) = picked else {
                    return Err(Fail::Permanent(
                        missing.clone(),
                        format!("no row of `{rows}` has `{cell}` equal to \"{want}\""),
                    ));
                };
                let link = row.find(Locator::Css(click)).await.map_err(driver_error)?;
                link.click().await.map_err(driver_error)?;
            }
            Action::ReadLines { rows, cell } => {
                let texts = self.cell_texts(rows, cell).await?;
                return Ok(Some(texts.into_iter().flatten().collect()));
            }
            Action::Assert { selector, contains } => {
                let want = self.vars.fill(contains);
                let text = self
                    .find(selector, deadline)
                    .await?
                    .text()
                    .await
                    .map_err(driver_error)?;
                if !text.contains(&want) {
                    return Err(Fail::Permanent(
                        "ERP_REJECTED".into(),
                        format!("`{selector}` says \"{}\", not \"{want}\"", excerpt(&text)),
                    ));
                }
            }
        }
        Ok(None)
    }

    /// The text a person sees in `cell` of each row `rows` finds (`None` where a row has no such
    /// cell), in one call: a worksheet with many lines costs one round trip, not two per line.
    async fn cell_texts(&self, rows: &str, cell: &str) -> Result<Vec<Option<String>>, Fail> {
        const SCRIPT: &str = "var rows = arguments[0], cell = arguments[1];\
            return Array.from(document.querySelectorAll(rows)).map(function (r) {\
              var c = r.querySelector(cell); return c ? c.innerText : null; });";
        let texts = self
            .client
            .execute(SCRIPT, vec![rows.into(), cell.into()])
            .await
            .map_err(driver_error)?;
        serde_json::from_value(texts)
            .map_err(|e| Fail::Crashed(format!("the browser answered rows oddly: {e}")))
    }

    /// The first element `selector` finds, waiting until `deadline`.
    async fn find(
        &self,
        selector: &str,
        deadline: Instant,
    ) -> Result<fantoccini::elements::Element, Fail> {
        loop {
            match self.client.find(Locator::Css(selector)).await {
                Ok(el) => return Ok(el),
                Err(CmdError::Standard(w))
                    if w.error == fantoccini::error::ErrorStatus::NoSuchElement => {}
                Err(e) => return Err(driver_error(e)),
            }
            if let Some(fail) = self.give_up(deadline, &format!("`{selector}`")).await {
                return Err(fail);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Every element `selector` finds, waiting until `deadline` for at least one.
    async fn all(
        &self,
        selector: &str,
        deadline: Instant,
    ) -> Result<Vec<fantoccini::elements::Element>, Fail> {
        loop {
            let found = self
                .client
                .find_all(Locator::Css(selector))
                .await
                .map_err(driver_error)?;
            if !found.is_empty() {
                return Ok(found);
            }
            if let Some(fail) = self.give_up(deadline, &format!("`{selector}`")).await {
                return Err(fail);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// What it means that `what` never appeared: a logged-out session, a page still loading, or
    /// a page that is not what the recipe expects.
    async fn missing(&self, what: &str) -> Fail {
        if present(self.client, &self.recipe.logged_out).await {
            return Fail::LoggedOut;
        }
        let loading = !matches!(
            self.client.execute("return document.readyState", vec![]).await,
            Ok(serde_json::Value::String(s)) if s == "complete"
        );
        let url = self
            .client
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default();
        if loading {
            Fail::Retry(
                "ERP_TIMEOUT".into(),
                format!("{what} did not appear: {url} was still loading"),
            )
        } else {
            Fail::Permanent(
                "ERP_UI_CHANGED".into(),
                format!("{what} never appeared on {url}: the page is not what the recipe expects"),
            )
        }
    }
}

/// Whether `selector` finds an element now.
async fn present(client: &Client, selector: &str) -> bool {
    client.find(Locator::Css(selector)).await.is_ok()
}
