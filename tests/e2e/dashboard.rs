//! The dashboard and the fleet page in real headless Chromium: what an operator sees and does.
//! Each page's screenshot is saved under `target/screenshots/`; no page may meet an error.

use std::time::Duration;

use ferry_tests::chrome::TestBrowser;
use ferry_tests::{ApiOptions, TestApi, TestSim, TestWorker, eventually, order_on};
use reqwest::StatusCode;
use serde_json::Value;

const KEY: &str = "k-dashboard";

async fn no_errors(b: &TestBrowser, page: &str) {
    let errors = b.errors().await;
    assert!(errors.is_empty(), "{page}: {errors:?}");
}

/// Posts `n` orders with uniqueids `<prefix>-0`… through ferry-load.
fn load(api: &TestApi, prefix: &str, n: usize) {
    let (status, out) = ferry_tests::run_to_end(
        "ferry-load",
        &[
            "--api",
            &api.base(),
            "--n",
            &n.to_string(),
            "--conns",
            "8",
            "--prefix",
            prefix,
            "--workshop",
            "Bennys Auto",
            "--key",
            KEY,
        ],
        &[],
    );
    assert!(status.success() && out.contains(", 0 failed"), "{out}");
}

#[tokio::test]
async fn an_operator_signs_in_watches_searches_opens_a_timeline_and_fixes_failures_in_bulk() {
    let sim = TestSim::start();
    let api = TestApi::with(
        ApiOptions::default()
            .target(&sim.base())
            .key(KEY)
            .env("FERRY_RETRY__MAX_ATTEMPTS", "1"),
    )
    .await;
    let _worker = TestWorker::start(
        &api.base(),
        &["--poll-ms", "200"],
        &[("FERRY_API_KEY", KEY)],
    );
    let b = TestBrowser::start().await;

    // Without the key, only the sign-in form; a wrong key is refused.
    b.goto(&api.base()).await;
    b.find("#login").await;
    assert!(
        b.client
            .find(fantoccini::Locator::Css("#overview"))
            .await
            .is_err()
    );
    b.screenshot("dashboard-login").await;
    b.fill("#api-key", "wrong").await;
    b.click("#login button").await;
    b.text_of("#login-problem", "refused").await;
    b.fill("#api-key", KEY).await;
    b.click("#login button").await;
    b.text_of("#tenant", "Bennys Auto").await;
    b.text_of("#target-kind", "erp_rest").await;
    let url = b.client.current_url().await.unwrap();
    assert!(
        !url.as_str().contains(KEY),
        "the key is never in a URL: {url}"
    );

    // The worker stops from the page; posted jobs appear without a reload.
    b.click("#stop-worker").await;
    b.text_of("#worker-state", "stopped").await;
    for id in ["live-1", "live-2", "live-3"] {
        api.create_ok(&ferry_tests::order(id)).await;
    }
    b.text_of("#jobs-table", "live-3").await;
    b.text_of("#count-placed", "3").await;
    b.click("#start-worker").await;
    b.text_of("#worker-state", "running").await;
    b.text_of("#count-created", "3").await;
    no_errors(&b, "overview").await;

    // One among thousands, found by the server.
    load(&api, "bulk", 3000);
    eventually("3,003 created", Duration::from_secs(60), || async {
        (api.alive().await["queue"]["created"] == 3003).then_some(())
    })
    .await;
    b.click("#filters select[name=status] option[value='placed,processing,created,error,cleared']")
        .await;
    b.fill("#search", "bulk-2718").await;
    b.click("#apply").await;
    b.text_of("#exact", "bulk-2718").await;
    b.text_of("#jobs-table", "bulk-2718").await;
    b.screenshot("dashboard-search").await;
    no_errors(&b, "search").await;

    // Its timeline.
    b.click("#exact a").await;
    b.text_of("#timeline", "created at the target").await;
    b.text_of("#job-status", "created").await;
    b.text_of("#timeline", "leased").await;
    b.screenshot("dashboard-job").await;
    no_errors(&b, "job").await;
    b.click("a[href='#/']").await;

    // Failures, fixed in bulk after a filter.
    sim.missing("900").await;
    for i in 0..4 {
        api.create_ok(&order_on(&format!("gone-{i}"), "900")).await;
    }
    eventually("four failed", Duration::from_secs(20), || async {
        (api.alive().await["queue"]["error"] == 4).then_some(())
    })
    .await;
    // One failure of another kind, which the filter leaves alone.
    sim.fault(serde_json::json!({"count": 1, "status": 422}))
        .await;
    api.create_ok(&order_on("other-fail", "558")).await;
    eventually("five failed", Duration::from_secs(20), || async {
        (api.alive().await["queue"]["error"] == 5).then_some(())
    })
    .await;
    b.click("#filters select[name=status] option[value='error']")
        .await;
    b.fill("#search", "").await;
    b.fill("#filters input[name=reason]", "ERP_WORKSHEET_NOT_FOUND")
        .await;
    b.click("#apply").await;
    b.text_of("#jobs-table", "gone-3").await;
    b.click("#retry-matching").await;
    let asked = b.text_of("#confirm-text", "Retry 4 failed jobs").await;
    assert!(asked.contains("matching this filter"), "{asked}");
    b.screenshot("dashboard-retry").await;
    b.click("#confirm-yes").await;
    b.text_of("#action-done", "4 job(s) retried").await;
    for i in 0..4 {
        let (_, s) = api.status_of(&format!("gone-{i}")).await;
        let log = api.log(s["data"]["id"].as_str().unwrap()).await;
        assert!(
            log.iter().any(|e| e["message"]
                .as_str()
                .unwrap_or("")
                .contains("retried by an operator")),
            "{log:?}"
        );
    }
    let (_, other) = api.status_of("other-fail").await;
    assert_eq!(
        other["data"]["status"], "error",
        "not matched, not retried: {other}"
    );
    assert_eq!(other["data"]["reason_code"], "ERP_REJECTED");
    no_errors(&b, "bulk retry").await;

    // The key is not in the api's log.
    assert!(!api.output().contains(KEY));
}

#[tokio::test]
async fn the_dashboard_files_are_open_and_state_changes_still_need_the_key() {
    let api = TestApi::with(ApiOptions::default().key(KEY)).await;
    let http = reqwest::Client::new();
    for (path, kind) in [
        ("/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        let resp = http
            .get(format!("{}{path}", api.base()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with(kind), "{path}: {ct}");
        assert!(resp.headers().contains_key("content-security-policy"));
    }
    // A page elsewhere cannot act for the operator: no key, no action; no cookie to ride on.
    for (method, path) in [
        ("PUT", "/stop_worker"),
        ("POST", "/jobs/retry"),
        ("PUT", "/clear_queue"),
    ] {
        let resp = http
            .request(method.parse().unwrap(), format!("{}{path}", api.base()))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
        assert!(!resp.headers().contains_key("set-cookie"));
    }
    // The sign-in form asks whether a key is right without being refused.
    let session = |key: Option<&'static str>| {
        let mut req = http.get(format!("{}/ui/session", api.base()));
        if let Some(k) = key {
            req = req.header("x-api-key", k);
        }
        async move { req.send().await.unwrap().json::<Value>().await.unwrap()["data"].clone() }
    };
    assert_eq!(
        session(None).await,
        serde_json::json!({"key_required": true, "key_valid": false})
    );
    assert_eq!(session(Some("nope")).await["key_valid"], false);
    assert_eq!(session(Some(KEY)).await["key_valid"], true);
    let (status, body) = api.get("/stats").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["minutes"].as_array().unwrap().len(), 60);
    let (status, body) = api
        .post("/jobs/retry", &serde_json::json!({"dry_run": true}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["matched"], 0);
}

#[tokio::test]
async fn the_fleet_page_lists_every_tenant_and_shows_the_one_that_is_down() {
    let sim = TestSim::start();
    let a = TestApi::with(ApiOptions {
        workshop: "Alpha Garage".into(),
        ..ApiOptions::default().target(&sim.base())
    })
    .await;
    let b_api = TestApi::with(ApiOptions {
        workshop: "Beta Garage".into(),
        ..ApiOptions::default().target(&sim.base())
    })
    .await;
    let _wa = TestWorker::start(&a.base(), &[], &[]);
    let down_port = ferry_tests::free_port();
    let dir = tempfile::tempdir().unwrap();
    let tenants = dir.path().join("tenants.toml");
    std::fs::write(
        &tenants,
        format!(
            "[[tenant]]\nname = \"Alpha Garage\"\nport = {}\n[[tenant]]\nname = \"Beta Garage\"\n\
             port = {}\n[[tenant]]\nname = \"Gamma Garage\"\nport = {down_port}\n",
            a.port, b_api.port
        ),
    )
    .unwrap();
    let mut serve = ferry_tests::procs::Proc::spawn(
        "ferryctl",
        &[
            "fleet".into(),
            "serve".into(),
            tenants.display().to_string(),
            "--port".into(),
            "0".into(),
        ],
        &[],
        &dir.path().join("serve.log"),
    );
    let port = serve.wait_listening("ferryctl fleet serve");
    let mut order = ferry_tests::order("fleet-1");
    order["workshop"] = "Alpha Garage".into();
    a.create_ok(&order).await;

    let browser = TestBrowser::start().await;
    browser.goto(&format!("http://127.0.0.1:{port}/")).await;
    browser.text_of("#updated", "3 tenants").await;
    browser
        .text_of("tr[data-tenant='Gamma Garage']", "down")
        .await;
    browser
        .text_of("tr[data-tenant='Alpha Garage']", "running")
        .await;
    let beta = browser.text_of("tr[data-tenant='Beta Garage']", "up").await;
    assert!(
        beta.contains("no-worker") || beta.contains("starting"),
        "{beta}"
    );
    let link = browser
        .find("tr[data-tenant='Alpha Garage'] a")
        .await
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(link, format!("http://127.0.0.1:{}/", a.port));
    browser.screenshot("fleet").await;
    no_errors(&browser, "fleet").await;

    // Live: a tenant that goes down is shown down without a reload.
    drop(b_api);
    browser
        .text_of("tr[data-tenant='Beta Garage']", "down")
        .await;
    let json: Value = reqwest::get(format!("http://127.0.0.1:{port}/fleet.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(json["tenants"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn a_job_page_shows_the_screenshot_its_failed_attempt_saved() {
    let api = TestApi::start().await;
    let b = TestBrowser::start().await;
    // A real PNG, as the browser connector saves them: a page the ERP might have shown.
    b.goto("data:text/html,<h1>Worksheet 558</h1><p>Lines</p><table><tr><td>10</td><td>5</td></tr></table>")
        .await;
    let png = b.client.screenshot().await.unwrap();
    let placed = api.create_ok(&ferry_tests::order("shot-1")).await;
    let id = placed["id"].as_str().unwrap().to_string();
    let leased = api.lease("w-test", 1, 0, 25_000).await;
    let lease_id = leased["jobs"][0]["lease_id"].clone();
    let resp = api
        .http
        .put(format!(
            "{}/worker/artifacts/{id}/attempt-1.png",
            api.base()
        ))
        .header("content-type", "application/octet-stream")
        .body(png)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    api.report(
        "w-test",
        serde_json::json!([{"job_id": id, "lease_id": lease_id,
            "outcome": {"kind": "failed", "reason_code": "ERP_UI_CHANGED", "reason_text": "no #save"},
            "detail": {"artifacts": ["attempt-1.png"], "duration_ms": 812}}]),
    )
    .await;

    b.goto(&format!("{}/#/jobs/{id}", api.base())).await;
    b.text_of("#job-status", "error").await;
    b.text_of("#timeline", "ERP_UI_CHANGED").await;
    let img = b.find("#timeline img.artifact").await;
    let loaded = eventually("the screenshot drawn", Duration::from_secs(10), || async {
        let w = b
            .client
            .execute(
                "return arguments[0].naturalWidth;",
                vec![serde_json::to_value(&img).unwrap()],
            )
            .await
            .ok()?;
        (w.as_u64()? > 0).then_some(w)
    })
    .await;
    assert!(loaded.as_u64().unwrap() > 100);
    b.screenshot("dashboard-job-screenshot").await;
    no_errors(&b, "job with a screenshot").await;
    // The operator retries it from its page.
    b.click("#retry-one").await;
    b.text_of("#job-status", "placed").await;
}
