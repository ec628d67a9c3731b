//! `TestApi`: one real `ferry-api` process and a client with a method per endpoint.

use std::process::ExitStatus;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::procs::Proc;

#[derive(Debug, Clone)]
pub struct ApiOptions {
    pub workshop: String,
    /// Extra environment, e.g. `("FERRY_MAX_QUEUE", "3")`.
    pub env: Vec<(String, String)>,
    /// The API key the client sends (and the api requires, unless `env` says otherwise).
    pub api_key: Option<String>,
    /// Start with the legacy positional form `ferry-api PORT WORKSHOP`.
    pub legacy_form: bool,
    /// A directory copied into the tenant's directory before the first start (a store written
    /// by an earlier release, say).
    pub tenant_dir_from: Option<std::path::PathBuf>,
    /// `--data-dir`, when not the test's own temporary directory (a small filesystem, say); the
    /// process's output stays in the temporary directory.
    pub data_dir: Option<std::path::PathBuf>,
}

impl Default for ApiOptions {
    fn default() -> Self {
        Self {
            workshop: "Bennys Auto".into(),
            env: Vec::new(),
            api_key: None,
            legacy_form: false,
            tenant_dir_from: None,
            data_dir: None,
        }
    }
}

impl ApiOptions {
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
    /// Delivers to the `ferry-sim` at `base_url` with the default mapping.
    pub fn target(self, base_url: &str) -> Self {
        self.env("FERRY_TARGET__KIND", "erp_rest")
            .env("FERRY_TARGET__BASE_URL", base_url)
    }

    /// A library tenant delivering bookings to the `ferry-libsim` at `base_url` (PassagePoint
    /// and Alma both), locations 8827 and 10332 mapped: its target is written to `dir`.
    pub fn library(self, base_url: &str, dir: &std::path::Path) -> Self {
        let config = dir.join("library.toml");
        std::fs::write(
            &config,
            format!(
                "[target]\nkind = \"passagepoint\"\nbase_url = \"{base_url}\"\n\
                 username = \"ferry\"\npassword_env = \"PP_PASSWORD\"\ntimeout_ms = 1000\n\
                 destinations = {{ \"8827\" = \"LibCal Gelman\", \"10332\" = \"LibCal VSTCL\" }}\n\
                 categories = {{ \"gw und\" = \"Student\", \"gw fac\" = \"Faculty\" }}\n\
                 [target.alma]\nbase_url = \"{base_url}\"\n\
                 api_keys_env = [\"ALMA_KEY_IZ1\", \"ALMA_KEY_IZ2\"]\nper_second = 25\n"
            ),
        )
        .expect("library config");
        self.env("FERRY_CONFIG", config.to_str().expect("utf-8 path"))
            .env("PP_PASSWORD", "pp-secret")
            .env("ALMA_KEY_IZ1", "iz1-key")
            .env("ALMA_KEY_IZ2", "iz2-key")
    }

    /// Adds a `libcal` source polling the `ferry-libsim` at `base_url` (locations 8827 and
    /// 10332, every `every_secs`) to the library config in `dir` ([`Self::library`] first).
    pub fn libcal(self, base_url: &str, dir: &std::path::Path, every_secs: u64) -> Self {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join("library.toml"))
            .expect("library config");
        write!(
            file,
            "[source]\nkind = \"libcal\"\nbase_url = \"{base_url}\"\nclient_id = \"ferry-client\"\n\
             client_secret_env = \"LIBCAL_SECRET\"\nlocations = [8827, 10332]\n\
             every_secs = {every_secs}\nprimary_id_field = \"q12505\"\n\
             primary_id_pattern = \"^G[0-9]{{8}}$\"\npage_size = 2\n"
        )
        .expect("write");
        self.env("LIBCAL_SECRET", "libcal-secret")
    }

    /// Delivers through headless Chromium to the web ERP of the `ferry-sim` at `base_url`, with
    /// the shipped recipe; browsers close after `idle_secs` without work. The config is written
    /// to `dir`.
    pub fn browser(self, base_url: &str, dir: &std::path::Path, idle_secs: u64) -> Self {
        let recipe = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/recipes/ferry-sim-web.toml");
        let config = dir.join("browser.toml");
        std::fs::write(
            &config,
            format!(
                "[target]\nkind = \"erp_browser\"\nbase_url = \"{base_url}\"\nrecipe = \"{}\"\n\
                 auth = {{ kind = \"basic\", username = \"ferry\", password_env = \"ERP_PASSWORD\" }}\n\
                 idle_secs = {idle_secs}\npage_timeout_ms = 8000\n",
                recipe.display()
            ),
        )
        .expect("browser config");
        self.env("FERRY_CONFIG", config.to_str().expect("utf-8 path"))
            .env("ERP_PASSWORD", "oil-secret")
    }

    /// OAuth2 against the Teamleader simulator of the `ferry-sim` at `sim` (authorization code),
    /// written to `dir/oauth.toml` with `extra` appended (a `[target]`, a `[source]`).
    pub fn oauth(self, sim: &str, dir: &std::path::Path, extra: &str) -> Self {
        let config = dir.join("oauth.toml");
        std::fs::write(
            &config,
            format!(
                "[oauth2]\ngrant = \"authorization_code\"\nauthorize_url = \"{sim}/oauth2/authorize\"\n\
                 token_url = \"{sim}/oauth2/access_token\"\nclient_id = \"ferry-tl\"\n\
                 client_secret_env = \"TL_SECRET\"\n{extra}"
            ),
        )
        .expect("oauth config");
        self.env("FERRY_CONFIG", config.to_str().expect("utf-8 path"))
            .env("TL_SECRET", "tl-secret")
    }

    /// A Teamleader → PostgreSQL tenant: the `teamleader` source polling the simulator at `sim`
    /// every `every_secs` (pages of 20), the `postgres` target at `pg_url`.
    pub fn teamleader(
        self,
        sim: &str,
        pg_url: &str,
        dir: &std::path::Path,
        every_secs: u64,
    ) -> Self {
        self.oauth(
            sim,
            dir,
            &format!(
                "[source]\nkind = \"teamleader\"\nbase_url = \"{sim}\"\nevery_secs = {every_secs}\n\
                 page_size = 20\n[target]\nkind = \"postgres\"\nurl_env = \"SYNC_DATABASE_URL\"\n\
                 timeout_ms = 2000\n"
            ),
        )
        .env("SYNC_DATABASE_URL", pg_url)
    }

    pub fn key(mut self, key: &str) -> Self {
        self.api_key = Some(key.into());
        self.env("FERRY_API_KEY", key)
    }
}

pub struct TestApi {
    pub opts: ApiOptions,
    pub data: tempfile::TempDir,
    pub port: u16,
    proc: Option<Proc>,
    pub http: reqwest::Client,
    /// Restarts so far (each gets its own stdout file).
    starts: u32,
}

impl TestApi {
    pub async fn start() -> Self {
        Self::with(ApiOptions::default()).await
    }

    pub async fn with(opts: ApiOptions) -> Self {
        let data = tempfile::tempdir().expect("tempdir");
        if let Some(from) = &opts.tenant_dir_from {
            let slug: String = opts
                .workshop
                .to_lowercase()
                .split(|c: char| !c.is_ascii_alphanumeric())
                .filter(|w| !w.is_empty())
                .collect::<Vec<_>>()
                .join("-");
            copy_dir(from, &data.path().join(slug));
        }
        let mut api = TestApi {
            opts,
            data,
            port: 0,
            proc: None,
            http: reqwest::Client::new(),
            starts: 0,
        };
        api.launch();
        api
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().and_then(Proc::pid)
    }

    /// Starts the binary (on the last port, or a free one the first time) and waits until it
    /// listens.
    fn launch(&mut self) {
        self.starts += 1;
        // A fresh connection pool: kept-alive sockets belong to the previous process.
        self.http = crate::http_client()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        let mut args: Vec<String> = if self.opts.legacy_form {
            vec![self.port.to_string(), self.opts.workshop.clone()]
        } else {
            vec![
                "--port".into(),
                self.port.to_string(),
                "--workshop".into(),
                self.opts.workshop.clone(),
            ]
        };
        let data_dir = self.opts.data_dir.as_deref().unwrap_or(self.data.path());
        args.extend(["--data-dir".into(), data_dir.display().to_string()]);
        let out = self.data.path().join(format!("stdout-{}.log", self.starts));
        let mut proc = Proc::spawn("ferry-api", &args, &self.opts.env, &out);
        self.port = proc.wait_listening("ferry-api");
        self.proc = Some(proc);
    }

    /// Everything the current process wrote to stdout and stderr.
    pub fn output(&self) -> String {
        self.proc.as_ref().map(Proc::output).unwrap_or_default()
    }

    /// SIGKILL: no chance to flush, exactly the crash the store must survive.
    pub fn kill9(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill9();
        }
    }

    /// Waits for the process to exit by itself (after `PUT /kill`).
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        self.proc.take().expect("api running").wait_exit(within)
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.launch();
    }

    /// Starts again after the process exited by itself.
    pub fn start_again(&mut self) {
        assert!(self.proc.is_none(), "still running");
        self.launch();
    }

    fn auth(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.opts.api_key {
            Some(k) => rb.header("x-api-key", k),
            None => rb,
        }
    }

    pub async fn send(&self, rb: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = self.auth(rb).send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {status} {text:?}"));
        (status, body)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.http.get(format!("{}{path}", self.base())))
            .await
    }

    pub async fn put(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.http.put(format!("{}{path}", self.base())))
            .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.send(self.http.post(format!("{}{path}", self.base())).json(body))
            .await
    }

    pub async fn create(&self, order: &Value) -> (StatusCode, Value) {
        self.post("/create", order).await
    }

    /// `data` of a 2xx answer, failing the test otherwise.
    pub async fn create_ok(&self, order: &Value) -> Value {
        let (status, body) = self.create(order).await;
        assert!(status.is_success(), "create: {status} {body}");
        body["data"].clone()
    }

    pub async fn status_of(&self, uniqueid: &str) -> (StatusCode, Value) {
        self.get(&format!("/get_order_status?uniqueid={uniqueid}"))
            .await
    }

    pub async fn job(&self, id: &str) -> Value {
        let (status, body) = self.get(&format!("/jobs/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["data"].clone()
    }

    pub async fn log(&self, id: &str) -> Vec<Value> {
        let (status, body) = self.get(&format!("/jobs/{id}/log")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["data"]["events"].as_array().expect("events").clone()
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        let resp = self
            .http
            .get(format!("{}/metrics", self.base()))
            .send()
            .await
            .expect("metrics");
        resp.text().await.expect("metrics text")
    }

    pub async fn alive(&self) -> Value {
        let (status, body) = self.get("/alive").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["data"].clone()
    }

    pub async fn lease(&self, worker_id: &str, max: u32, wait_ms: u64, lease_ms: u64) -> Value {
        let (status, body) = self
            .post(
                "/worker/lease",
                &json!({"worker_id": worker_id, "max": max, "wait_ms": wait_ms, "lease_ms": lease_ms}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["data"].clone()
    }

    pub async fn report(&self, worker_id: &str, results: Value) -> Value {
        let (status, body) = self
            .post(
                "/worker/report",
                &json!({"worker_id": worker_id, "results": results}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["data"].clone()
    }

    /// Every uniqueid in the given statuses, following cursors.
    pub async fn all_uniqueids(&self, statuses: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut cursor = String::new();
        loop {
            let (status, body) = self
                .get(&format!(
                    "/queue?status={statuses}&limit=500&cursor={cursor}"
                ))
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            for j in body["data"]["jobs"].as_array().expect("jobs") {
                out.push(j["uniqueid"].as_str().expect("uniqueid").to_string());
            }
            match body["data"]["next_cursor"].as_str() {
                Some(c) => cursor = c.to_string(),
                None => return out,
            }
        }
    }
}

/// Copies the directory `from` to `to`, recursively.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir").flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}
