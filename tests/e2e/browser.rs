//! The `erp_browser` connector in real headless Chromium (Debian's `chromium` and
//! `chromium-driver`, which `scripts/test` installs) against ferry-sim's web ERP, with the
//! shipped recipe.

use std::time::Duration;

use ferry_tests::{
    ApiOptions, TestApi, TestSim, TestWorker, descendants, eventually, order_on, run_to_end,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A browser tenant: the simulator, the api and a worker (browsers idle for `idle_secs`).
struct Tenant {
    sim: TestSim,
    api: TestApi,
    worker: TestWorker,
    _dir: tempfile::TempDir,
}

async fn tenant(idle_secs: u64, worker_args: &[&str], env: &[(&str, &str)]) -> Tenant {
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists()
            && std::path::Path::new("/usr/bin/chromedriver").exists(),
        "these tests need Debian's chromium and chromium-driver: scripts/test installs them"
    );
    let sim = TestSim::start();
    let dir = tempfile::tempdir().unwrap();
    let mut opts = ApiOptions::default().browser(&sim.base(), dir.path(), idle_secs);
    for (k, v) in env {
        opts = opts.env(k, v);
    }
    let api = TestApi::with(opts).await;
    let worker = TestWorker::start(&api.base(), worker_args, &[]);
    Tenant {
        sim,
        api,
        worker,
        _dir: dir,
    }
}

/// Waits until the job for `uniqueid` is in `status`; answers its status view.
async fn settled(api: &TestApi, uniqueid: &str, status: &str, within: Duration) -> Value {
    eventually(&format!("{uniqueid} {status}"), within, || async {
        let (code, body) = api.status_of(uniqueid).await;
        (code == StatusCode::OK && body["data"]["status"] == status).then(|| body["data"].clone())
    })
    .await
}

fn browsers_of(worker: &TestWorker) -> Vec<(u32, String)> {
    descendants(worker.pid().expect("worker running"))
        .into_iter()
        .filter(|(_, name)| name.contains("chrom"))
        .collect()
}

#[tokio::test]
async fn lines_are_made_through_one_logged_in_browser_which_closes_when_idle() {
    let t = tenant(2, &[], &[]).await;
    let mut body = order_on("web-1", "558");
    body["product_nr"] = json!("OIL-5W30");
    body["amount"] = json!(4.5);
    t.api.create_ok(&body).await;
    let view = settled(&t.api, "web-1", "created", Duration::from_secs(60)).await;
    assert_eq!(view["target_ref"], "OilMat:web-1");
    t.api.create_ok(&order_on("web-2", "559")).await;
    settled(&t.api, "web-2", "created", Duration::from_secs(30)).await;

    let lines = t.sim.lines().await;
    assert_eq!(lines["count"], 2, "{lines}");
    let first = &lines["lines"][0];
    assert_eq!(first["worksheet"], "558");
    assert_eq!(first["product_nr"], "OIL-5W30");
    assert_eq!(first["amount"], 4.5);
    assert_eq!(first["reference"], "OilMat:web-1");
    assert_eq!(first["via"], "web");
    assert_eq!(lines["duplicates"], 0);
    assert_eq!(
        t.sim.web_state().await["logins"],
        1,
        "one session, logged in once, for both jobs"
    );

    // An idle tenant costs no browser.
    eventually(
        "the browser closed after idle_secs",
        Duration::from_secs(15),
        || async { browsers_of(&t.worker).is_empty().then_some(()) },
    )
    .await;
    // And the next job starts one again.
    t.api.create_ok(&order_on("web-3", "558")).await;
    settled(&t.api, "web-3", "created", Duration::from_secs(60)).await;
    assert_eq!(t.sim.web_state().await["logins"], 2);
}

#[tokio::test]
async fn a_worker_killed_after_the_save_is_replaced_and_the_line_is_not_made_twice() {
    let mut t = tenant(60, &["--lease-ms", "4000"], &[]).await;
    // The ERP saves the line, then takes 5 s to answer: the worker dies in between.
    t.sim.web(json!({"hold_after_save_ms": 5000})).await;
    t.api.create_ok(&order_on("replay-1", "558")).await;
    eventually("the line saved", Duration::from_secs(60), || async {
        (t.sim.lines().await["count"] == 1).then_some(())
    })
    .await;
    t.worker.kill9();
    t.sim.web(json!({})).await;
    let _next = TestWorker::start(&t.api.base(), &["--lease-ms", "4000"], &[]);
    let view = settled(&t.api, "replay-1", "created", Duration::from_secs(60)).await;
    let id = view["id"].as_str().unwrap();
    let log = t.api.log(id).await;
    assert_eq!(view["attempts"], 2, "{view}\n{log:#?}");
    let lines = t.sim.lines().await;
    assert_eq!(lines["count"], 1, "nothing added on the replay: {lines}");
    assert!(
        log.iter().any(|e| e["excerpt"]
            .as_str()
            .is_some_and(|x| x.contains("already on worksheet 558"))),
        "{log:?}"
    );
}

#[tokio::test]
async fn an_unknown_worksheet_and_a_refused_login_fail_at_once_with_their_reasons() {
    let t = tenant(60, &[], &[]).await;
    t.api.create_ok(&order_on("nowhere-1", "999")).await;
    let view = settled(&t.api, "nowhere-1", "error", Duration::from_secs(60)).await;
    assert_eq!(view["reason_code"], "ERP_WORKSHEET_NOT_FOUND", "{view}");
    assert_eq!(view["attempts"], 1);

    // The ERP's password changes under the tenant: its session expires, the login is refused.
    t.sim
        .web(json!({"password": "changed", "session_ttl_ms": 1}))
        .await;
    t.api.create_ok(&order_on("refused-1", "558")).await;
    let view = settled(&t.api, "refused-1", "error", Duration::from_secs(60)).await;
    assert_eq!(view["reason_code"], "ERP_LOGIN_FAILED", "{view}");
    assert_eq!(view["attempts"], 1);
    assert!(t.sim.web_state().await["refused_logins"].as_u64() >= Some(1));
    // The saved page shows the refusal, never the password.
    let id = view["id"].as_str().unwrap();
    let html = artifact_named(&t.api, id, ".html").await;
    let (status, page) = fetch(&t.api, id, &html).await;
    assert_eq!(status, StatusCode::OK);
    let page = String::from_utf8_lossy(&page);
    assert!(page.contains("Wrong username or password"), "{page}");
    assert!(!page.contains("oil-secret"));
    assert!(!t.api.output().contains("oil-secret"));
    let log = t.api.log(id).await;
    assert!(!serde_json::to_string(&log).unwrap().contains("oil-secret"));
    assert!(!t.worker.output().contains("oil-secret"));
    assert_eq!(t.sim.lines().await["count"], 0);
}

#[tokio::test]
async fn slow_pages_and_an_expired_session_still_make_each_line_once() {
    let t = tenant(60, &[], &[]).await;
    // Pages answer 700 ms late, and the worksheet's table and form appear 700 ms after load.
    let slow = json!({"slow_ms": 700, "render_ms": 700});
    t.sim.web(slow.clone()).await;
    t.api.create_ok(&order_on("slow-1", "558")).await;
    settled(&t.api, "slow-1", "created", Duration::from_secs(90)).await;
    assert_eq!(t.sim.web_state().await["logins"], 1);
    // The session expires before the next job: the connector logs in again.
    let mut expire = slow.clone();
    expire["expire_sessions"] = json!(true);
    t.sim.web(expire).await;
    t.api.create_ok(&order_on("slow-2", "558")).await;
    let view = settled(&t.api, "slow-2", "created", Duration::from_secs(90)).await;
    assert_eq!(view["attempts"], 1, "the expiry cost no attempt: {view}");
    assert_eq!(t.sim.web_state().await["logins"], 2);
    let lines = t.sim.lines().await;
    assert_eq!(
        (lines["count"].clone(), lines["duplicates"].clone()),
        (json!(2), json!(0))
    );
}

#[tokio::test]
async fn a_worker_leases_no_more_jobs_than_its_browsers_can_drive() {
    // One browser session (the config's default) and the worker's default --concurrency of 16:
    // one job at the browser and one leased ahead; the rest stay placed, where an operator
    // sees them as waiting, and a killed worker holds no more than two.
    let t = tenant(60, &[], &[]).await;
    t.sim.web(json!({"slow_ms": 300, "render_ms": 300})).await;
    for i in 0..5 {
        t.api.create_ok(&order_on(&format!("one-{i}"), "558")).await;
    }
    // Watched until all are made: never more than two in hand, and two while jobs wait.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let mut most = 0;
    loop {
        let queue = t.api.alive().await["queue"].clone();
        let in_hand = queue["processing"].as_u64().unwrap();
        assert!(in_hand <= 2, "{queue}");
        most = most.max(in_hand);
        if queue["created"] == 5 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not all made: {queue}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(most, 2, "a job leased ahead while one was at the browser");
    let lines = t.sim.lines().await;
    assert_eq!(
        (lines["count"].clone(), lines["duplicates"].clone()),
        (json!(5), json!(0))
    );
    // Each line through the one session, logged in once: no attempt lost its browser.
    let web = t.sim.web_state().await;
    let mut logs = String::new();
    for i in 0..5 {
        let view = t.api.status_of(&format!("one-{i}")).await.1;
        let log = t.api.log(view["data"]["id"].as_str().unwrap()).await;
        logs += &format!("{}\n", Value::from(log));
    }
    assert_eq!(web["logins"], 1, "{web}\n{logs}");
}

#[tokio::test]
async fn a_save_the_erp_fails_is_retried_and_made_once() {
    let t = tenant(60, &[], &[("FERRY_RETRY__BASE_MS", "200")]).await;
    t.sim.web(json!({"fail_saves": 1})).await;
    t.api.create_ok(&order_on("unsaved-1", "560")).await;
    let view = settled(&t.api, "unsaved-1", "created", Duration::from_secs(90)).await;
    let log = t.api.log(view["id"].as_str().unwrap()).await;
    assert_eq!(view["attempts"], 2, "{view}\n{log:#?}");
    assert!(
        log.iter().any(|e| e["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("ERP_SAVE_UNCONFIRMED"))),
        "{log:?}"
    );
    let lines = t.sim.lines().await;
    assert_eq!(
        (lines["count"].clone(), lines["duplicates"].clone()),
        (json!(1), json!(0))
    );
}

#[tokio::test]
async fn a_changed_layout_fails_as_ui_changed_with_a_screenshot_the_api_serves() {
    let t = tenant(60, &[], &[]).await;
    t.sim.web(json!({"layout_changed": true})).await;
    t.api.create_ok(&order_on("moved-1", "558")).await;
    let view = settled(&t.api, "moved-1", "error", Duration::from_secs(60)).await;
    assert_eq!(view["reason_code"], "ERP_UI_CHANGED", "{view}");
    assert!(
        view["reason_text"].as_str().unwrap().contains("#lines"),
        "names what is missing: {view}"
    );
    let id = view["id"].as_str().unwrap();
    let png = artifact_named(&t.api, id, ".png").await;
    let (status, bytes) = fetch(&t.api, id, &png).await;
    assert_eq!(status, StatusCode::OK);
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    let html = artifact_named(&t.api, id, ".html").await;
    let resp = t
        .api
        .http
        .get(format!("{}/jobs/{id}/artifacts/{html}", t.api.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["content-security-policy"],
        "sandbox",
        "a saved page never runs in the api's origin"
    );
    assert!(resp.text().await.unwrap().contains("positions"));
    let (status, body) = t
        .api
        .get(&format!("/jobs/{id}/artifacts/nothing-here.png"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn a_chromedriver_killed_mid_job_is_started_again_and_the_job_retried() {
    let t = tenant(
        60,
        &[],
        &[
            ("FERRY_RETRY__BASE_MS", "200"),
            ("FERRY_RETRY__MAX_BACKOFF_MS", "400"),
        ],
    )
    .await;
    t.sim.web(json!({"slow_ms": 1500})).await;
    t.api.create_ok(&order_on("crash-1", "558")).await;
    // Mid-job: the browser is up and the (slow) pages are loading.
    let driver = eventually(
        "chromedriver and its browser",
        Duration::from_secs(30),
        || async {
            let running = browsers_of(&t.worker);
            let browser = running.iter().any(|(_, name)| name.starts_with("chromium"));
            let driver = running.into_iter().find(|(_, name)| name == "chromedriver");
            driver.filter(|_| browser).map(|(pid, _)| pid)
        },
    )
    .await;
    std::process::Command::new("kill")
        .args(["-9", &driver.to_string()])
        .status()
        .unwrap();
    t.sim.web(json!({})).await;
    let view = settled(&t.api, "crash-1", "created", Duration::from_secs(90)).await;
    assert!(view["attempts"].as_u64() >= Some(2), "{view}");
    let log = t.api.log(view["id"].as_str().unwrap()).await;
    assert!(
        log.iter().any(|e| e["message"]
            .as_str()
            .is_some_and(|m| m.contains("ERP_BROWSER_FAILED"))),
        "{log:?}"
    );
    assert_eq!(t.sim.lines().await["count"], 1);
    let again = browsers_of(&t.worker);
    assert!(
        again
            .iter()
            .any(|(p, n)| n == "chromedriver" && *p != driver),
        "a new chromedriver: {again:?}"
    );
}

/// The name of the job's first artifact ending in `ext`, from its log.
async fn artifact_named(api: &TestApi, id: &str, ext: &str) -> String {
    let log = api.log(id).await;
    log.iter()
        .flat_map(|e| e["artifacts"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a.as_str().map(str::to_string))
        .find(|a| a.ends_with(ext))
        .unwrap_or_else(|| panic!("no {ext} artifact in the log: {log:?}"))
}

async fn fetch(api: &TestApi, id: &str, name: &str) -> (StatusCode, Vec<u8>) {
    let resp = api
        .http
        .get(format!("{}/jobs/{id}/artifacts/{name}", api.base()))
        .send()
        .await
        .unwrap();
    (resp.status(), resp.bytes().await.unwrap().to_vec())
}

#[test]
fn check_config_names_the_bad_step_of_a_recipe() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/recipes/ferry-sim-web.toml");
    let recipe = std::fs::read_to_string(shipped).unwrap().replacen(
        "{ click = \"#save\" }",
        "{ press = \"#save\" }",
        1,
    );
    std::fs::write(dir.path().join("erp.toml"), recipe).unwrap();
    let config = dir.path().join("tenant.toml");
    std::fs::write(
        &config,
        "workshop = \"Web Garage\"\n[target]\nkind = \"erp_browser\"\n\
         base_url = \"http://127.0.0.1:9\"\nrecipe = \"erp.toml\"\n\
         auth = { kind = \"basic\", username = \"ferry\", password = \"x\" }\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let (status, out) = run_to_end("ferry-api", &["--config", config, "--check-config"], &[]);
    assert!(!status.success(), "{out}");
    assert!(
        out.contains("add_line step 4: unknown step `press`"),
        "names the list and the step: {out}"
    );
}
