//! `TestSim` (a `ferry-sim` process) and `TestWorker` (a `ferry-worker` process).

use std::process::ExitStatus;
use std::time::Duration;

use serde_json::{Value, json};

use crate::procs::Proc;

pub struct TestSim {
    pub port: u16,
    proc: Proc,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl TestSim {
    pub fn start() -> Self {
        Self::with_args(&[])
    }

    pub fn with_args(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut args = vec!["--port".to_string(), "0".to_string()];
        args.extend(extra.iter().map(|a| a.to_string()));
        let mut proc = Proc::spawn("ferry-sim", &args, &[], &dir.path().join("sim.log"));
        let port = proc.wait_listening("ferry-sim");
        Self {
            port,
            proc,
            http: crate::http_client().build().expect("client"),
            _dir: dir,
        }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Queues a fault for the next line requests, e.g. `{"count": 2, "status": 500}`.
    pub async fn fault(&self, fault: Value) {
        self.post("/_sim/faults", &fault).await;
    }

    /// POSTs `body` to one of the simulator's control paths, which must take it.
    async fn post(&self, path: &str, body: &Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.base()))
            .json(body)
            .send()
            .await
            .expect("sim");
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
    }

    pub async fn missing(&self, worksheet: &str) {
        let url = format!("{}/_sim/worksheets/{worksheet}/missing", self.base());
        assert!(
            self.http
                .put(url)
                .send()
                .await
                .expect("sim")
                .status()
                .is_success()
        );
    }

    /// `{"count", "duplicates", "requests", "replays", "lines": [...]}`
    pub async fn lines(&self) -> Value {
        self.get("/_sim/lines").await
    }

    /// `{"count", "requests"}` once there are `n` lines or `wait_ms` have passed (the
    /// benchmark's way to wait for the last line without polling).
    pub async fn count_at_least(&self, n: usize, wait_ms: u64) -> Value {
        self.get(&format!("/_sim/count?at_least={n}&wait_ms={wait_ms}"))
            .await
    }

    /// The JSON one of the simulator's inspection paths answers.
    async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.base()))
            .send()
            .await
            .expect("sim")
            .json()
            .await
            .expect("json")
    }

    /// Sets the web ERP's knobs (`password`, `session_ttl_ms`, `slow_ms`, `render_ms`,
    /// `layout_changed`, `fail_saves`, `hold_after_save_ms`; those not given are reset) and, with
    /// `expire_sessions: true`, ends every session.
    pub async fn web(&self, knobs: Value) {
        self.post("/_sim/web", &knobs).await;
    }

    /// The web ERP's state: `logins`, `refused_logins`, `sessions`, `knobs`.
    pub async fn web_state(&self) -> Value {
        self.get("/_sim/web").await
    }

    /// Sets the Teamleader simulator's knobs (`access_ttl_secs`, `rate_limit`, `rate_window_ms`,
    /// `fail_lists`, `expire_after_lists`, `list_delay_ms`, `revoke: true`).
    pub async fn tl(&self, knobs: Value) {
        self.post("/_sim/teamleader", &knobs).await;
    }

    /// The Teamleader simulator's `stats` (refreshes, refused and reused refresh tokens, 401s,
    /// 429s, list calls, records listed), `records` per resource and `knobs`.
    pub async fn tl_state(&self) -> Value {
        self.get("/_sim/teamleader").await
    }

    /// Adds `count` records of `resource`, last changed a day ago (ids `<resource>-000000`...).
    pub async fn tl_records(&self, resource: &str, count: usize) {
        let body = json!({"resource": resource, "count": count});
        self.post("/_sim/teamleader/records", &body).await;
    }

    /// Changes records now (their `version` goes up); answers them as they are now.
    pub async fn tl_touch(&self, resource: &str, ids: &[&str]) -> Vec<Value> {
        let resp = self
            .http
            .post(format!("{}/_sim/teamleader/touch", self.base()))
            .json(&json!({"resource": resource, "ids": ids}))
            .send()
            .await
            .expect("sim");
        let body: Value = resp.json().await.expect("json");
        body["touched"].as_array().cloned().unwrap_or_default()
    }

    /// The port of the mail sink (`--smtp-port`), once it listens.
    pub fn smtp_port(&self) -> u16 {
        let needle = "ferry-sim smtp listening on 127.0.0.1:";
        for _ in 0..250 {
            let out = self.proc.output();
            if let Some(port) = out
                .split(needle)
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|p| p.parse().ok())
            {
                return port;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the mail sink never listened: {}", self.proc.output());
    }

    /// What the mail sink took: `[{"from", "to": [...], "data"}]`.
    pub async fn mail(&self) -> Vec<Value> {
        self.get("/_sim/mail").await["messages"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn running(&mut self) -> bool {
        self.proc.running()
    }

    /// The ERP goes down (SIGKILL).
    pub fn stop(&mut self) {
        self.proc.kill9();
    }
}

pub struct TestWorker {
    proc: Proc,
    _dir: tempfile::TempDir,
}

impl TestWorker {
    /// Starts `ferry-worker --api <api>` with `extra` arguments and environment.
    pub fn start(api: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut args = vec!["--api".to_string(), api.to_string()];
        args.extend(extra.iter().map(|a| a.to_string()));
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let proc = Proc::spawn("ferry-worker", &args, &env, &dir.path().join("worker.log"));
        Self { proc, _dir: dir }
    }

    pub fn output(&self) -> String {
        self.proc.output()
    }

    pub fn kill9(&mut self) {
        self.proc.kill9();
    }

    pub fn running(&mut self) -> bool {
        self.proc.running()
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        self.proc.wait_exit(within)
    }
}

/// An order body for `Bennys Auto` on a given worksheet.
pub fn order_on(uniqueid: &str, worksheet: &str) -> Value {
    json!({
        "uniqueid": uniqueid, "workshop": "Bennys Auto", "worksheet": worksheet,
        "product_nr": "10", "amount": 5,
    })
}

/// A `ferry-libsim` process: simulated Alma (zones keyed `iz1-key`, `iz2-key`) and PassagePoint
/// (login `ferry` / `pp-secret`).
pub struct TestLibSim {
    pub port: u16,
    _proc: Proc,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl TestLibSim {
    pub fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut args = vec!["--port".to_string(), "0".to_string()];
        args.extend(extra.iter().map(|a| a.to_string()));
        let mut proc = Proc::spawn("ferry-libsim", &args, &[], &dir.path().join("libsim.log"));
        let port = proc.wait_listening("ferry-libsim");
        Self {
            port,
            _proc: proc,
            http: crate::http_client().build().expect("client"),
            _dir: dir,
        }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Value {
        let resp = req.send().await.expect("libsim");
        assert!(resp.status().is_success(), "libsim: {}", resp.status());
        resp.json().await.expect("json")
    }

    /// A patron in Alma: `zone` 1 or 2, a barcode (or none), a user group.
    pub async fn patron(&self, primary_id: &str, zone: u32, barcode: Option<&str>, group: &str) {
        let url = format!("{}/_sim/alma/users/{primary_id}", self.base());
        let body = json!({"zone": zone, "barcode": barcode, "group": group});
        self.send(self.http.put(url).json(&body)).await;
    }

    /// Queues a PassagePoint fault: `{"call": "createPreReg", "count": 1, "status": 503}`.
    pub async fn pp_fault(&self, fault: Value) {
        let url = format!("{}/_sim/pp/faults", self.base());
        self.send(self.http.post(url).json(&fault)).await;
    }

    /// Leaves Alma `remaining` calls for today (then `429 DAILY_THRESHOLD`).
    pub async fn alma_daily(&self, remaining: u64) {
        let url = format!("{}/_sim/alma/daily", self.base());
        self.send(self.http.post(url).json(&json!({"remaining": remaining})))
            .await;
    }

    /// The bookings LibCal lists (each with its `lid`).
    pub async fn libcal_bookings(&self, bookings: Value) {
        let url = format!("{}/_sim/libcal/bookings", self.base());
        self.send(self.http.put(url).json(&bookings)).await;
    }

    /// Makes LibCal's tokens stale: its next answer is 401.
    pub async fn libcal_expire(&self) {
        let url = format!("{}/_sim/libcal/expire", self.base());
        self.send(self.http.post(url)).await;
    }

    /// Takes LibCal down (503) or brings it back.
    pub async fn libcal_down(&self, down: bool) {
        let url = format!("{}/_sim/libcal/down", self.base());
        self.send(self.http.post(url).json(&json!({"down": down})))
            .await;
    }

    /// Makes every PassagePoint token stale: the next call answers 401.
    pub async fn expire_tokens(&self) {
        let url = format!("{}/_sim/pp/expire", self.base());
        self.send(self.http.post(url)).await;
    }

    /// Visitors, pre-registrations, Alma calls per zone, logins.
    pub async fn state(&self) -> Value {
        self.send(self.http.get(format!("{}/_sim/state", self.base())))
            .await
    }
}
