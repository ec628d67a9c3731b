//! Alerts by e-mail through a real SMTP conversation with `ferry-sim`'s mail sink: batched per
//! window, durable before sent, one bad address failing alone, the mail server down then up, and
//! the signed retry link.

use std::time::Duration;

use ferry_tests::{ApiOptions, TestApi, TestSim, TestWorker, eventually, order_on};
use reqwest::StatusCode;
use serde_json::Value;

const KEY: &str = "k-alerts";

/// A tenant delivering to `sim` (each job tried once), alerting `to` through the mail sink on
/// `smtp_port`, and its worker.
async fn alerting(
    sim: &TestSim,
    smtp_port: u16,
    to: &[&str],
    every_mins: f64,
    dir: &std::path::Path,
) -> (TestApi, TestWorker) {
    let config = dir.join("alerts.toml");
    let to: Vec<String> = to.iter().map(|t| format!("\"{t}\"")).collect();
    std::fs::write(
        &config,
        format!(
            "[target]\nkind = \"erp_rest\"\nbase_url = \"{}\"\n\
             [alerts]\nto = [{}]\nfrom = \"ferry@example.org\"\nevery_mins = {every_mins}\n\
             check_secs = 0.2\nexpires_hours = 0.005\n\
             [alerts.smtp]\nhost = \"127.0.0.1\"\nport = {smtp_port}\ntls = \"none\"\n",
            sim.base(),
            to.join(", ")
        ),
    )
    .unwrap();
    let api = TestApi::with(
        ApiOptions::default()
            .env("FERRY_CONFIG", config.to_str().unwrap())
            .env("FERRY_RETRY__MAX_ATTEMPTS", "1")
            .key(KEY),
    )
    .await;
    let worker = TestWorker::start(
        &api.base(),
        &["--poll-ms", "200"],
        &[("FERRY_API_KEY", KEY)],
    );
    (api, worker)
}

/// Messages the sink took for `to`.
async fn mail_for(sim: &TestSim, to: &str) -> Vec<String> {
    sim.mail()
        .await
        .into_iter()
        .filter(|m| {
            m["to"]
                .as_array()
                .is_some_and(|t| t.iter().any(|a| a == to))
        })
        .map(|m| m["data"].as_str().unwrap_or("").to_string())
        .collect()
}

/// The text/plain part of a message, quoted-printable undone (soft breaks and `=XX`).
fn plain(data: &str) -> String {
    let part = data.split("Content-Type: text/plain").nth(1).unwrap_or("");
    let text = part
        .split_once("\n\n")
        .map_or("", |(_, body)| body)
        .split("\n--")
        .next()
        .unwrap_or("");
    let joined = text.replace("=\n", "");
    let mut out = Vec::new();
    let bytes = joined.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && let Ok(b) = u8::from_str_radix(joined.get(i + 1..i + 3).unwrap_or("zz"), 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn retry_link(text: &str) -> String {
    text.lines()
        .find(|l| l.contains("/alerts/retry?"))
        .map(|l| l.trim().to_string())
        .unwrap_or_else(|| panic!("no retry link in {text}"))
}

#[tokio::test]
async fn failures_make_one_batched_message_per_window_and_its_signed_link_acts_once() {
    let sim = TestSim::with_args(&["--smtp-port", "0"]);
    let dir = tempfile::tempdir().unwrap();
    let (api, _worker) = alerting(
        &sim,
        sim.smtp_port(),
        &["ops@example.org", "desk@example.org"],
        0.08,
        dir.path(),
    )
    .await;
    sim.missing("900").await;

    // The first failure is told at once.
    api.create_ok(&order_on("first", "900")).await;
    let first = eventually("the first message", Duration::from_secs(20), || async {
        mail_for(&sim, "ops@example.org").await.into_iter().next()
    })
    .await;
    let first = plain(&first);
    assert!(first.contains("1 job entered error"), "{first}");

    // Three more inside the window: one message for all three, after it.
    for i in 0..3 {
        api.create_ok(&order_on(&format!("batch-{i}"), "900")).await;
    }
    let second = eventually("the second message", Duration::from_secs(30), || async {
        mail_for(&sim, "ops@example.org").await.get(1).cloned()
    })
    .await;
    assert!(
        second.contains("Subject: [Ferry] Bennys Auto: 3 jobs failed (ERP_WORKSHEET_NOT_FOUND"),
        "{second}"
    );
    assert!(second.contains("text/html"), "{second}");
    let text = plain(&second);
    for i in 0..3 {
        assert!(
            text.contains(&format!("batch-{i} (order_line) ERP_WORKSHEET_NOT_FOUND")),
            "{text}"
        );
    }
    assert!(text.contains("no worksheet 900"), "the reason text: {text}");
    assert!(text.contains(&format!("{}/#/jobs/", api.base())), "{text}");
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        mail_for(&sim, "ops@example.org").await.len(),
        2,
        "never one per job"
    );
    assert_eq!(mail_for(&sim, "desk@example.org").await.len(), 2);
    // No secret in any message.
    for m in sim.mail().await {
        let data = m["data"].as_str().unwrap();
        assert!(!data.contains(KEY), "{data}");
    }

    // The second's asks first, refuses a changed job list, acts once.
    let link = retry_link(&text);
    let (status, page) = get(&link).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Retry 3 job(s)?"), "{page}");
    let tampered = {
        let (head, sig) = link.split_once("&sig=").unwrap();
        let (base, jobs) = head.split_once("&jobs=").unwrap();
        let fewer = jobs.split(',').skip(1).collect::<Vec<_>>().join(",");
        format!("{base}&jobs={fewer}&sig={sig}")
    };
    let (status, page) = get(&tampered).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("changed after it was sent"), "{page}");
    // As a person does it: the link in a browser, the button on its page.
    let browser = ferry_tests::chrome::TestBrowser::start().await;
    browser.goto(&link).await;
    browser.click("#retry").await;
    browser.text_of("h1", "3 job(s) retried").await;
    let errors = browser.errors().await;
    assert!(errors.is_empty(), "{errors:?}");
    let (status, page) = post(&link).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("already used"), "{page}");
    for i in 0..3 {
        let (_, s) = api.status_of(&format!("batch-{i}")).await;
        let log = api.log(s["data"]["id"].as_str().unwrap()).await;
        assert!(
            log.iter()
                .any(|e| e["message"].as_str().unwrap_or("").contains("retried")),
            "{log:?}"
        );
    }
    let (_, first_job) = api.status_of("first").await;
    assert_eq!(
        first_job["data"]["status"], "error",
        "not in the link: not retried"
    );

    // The first message's link expires 18 s after it was made (0.005 h here): refused then.
    let first_link = retry_link(&first);
    let page = eventually(
        "the first link expired",
        Duration::from_secs(30),
        || async {
            let (status, page) = get(&first_link).await;
            (status == StatusCode::BAD_REQUEST).then_some(page)
        },
    )
    .await;
    assert!(page.contains("expired"), "{page}");

    // GET /alerts shows every copy sent.
    let (status, body) = api.get("/alerts").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let copies: Vec<&Value> = body["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| a["recipients"].as_array().unwrap())
        .collect();
    assert!(copies.len() >= 4);
    assert!(copies.iter().all(|c| c["status"] == "sent"), "{body}");
}

async fn get(url: &str) -> (StatusCode, String) {
    let r = reqwest::get(url).await.unwrap();
    (r.status(), r.text().await.unwrap())
}

async fn post(url: &str) -> (StatusCode, String) {
    let r = reqwest::Client::new().post(url).send().await.unwrap();
    (r.status(), r.text().await.unwrap())
}

#[tokio::test]
async fn the_mail_server_down_then_up_loses_nothing_and_a_bad_address_fails_alone() {
    let erp = TestSim::start();
    let smtp_port = ferry_tests::free_port();
    let dir = tempfile::tempdir().unwrap();
    let (api, _worker) = alerting(
        &erp,
        smtp_port,
        &["ops@example.org", "bad-address@example.org"],
        0.0,
        dir.path(),
    )
    .await;
    erp.missing("900").await;
    api.create_ok(&order_on("while-down", "900")).await;
    let (status, body) = api.post("/alerts/test", &serde_json::json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");

    // Nothing reaches a mail server that is down: every copy waits, saying why.
    let waiting = eventually("copies waiting", Duration::from_secs(20), || async {
        let (_, body) = api.get("/alerts").await;
        let alerts = body["data"]["alerts"].as_array()?.clone();
        let tried = alerts.len() == 2
            && alerts.iter().all(|a| {
                a["recipients"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|r| r["status"] == "pending" && r["attempts"].as_u64() >= Some(1))
            });
        tried.then_some(alerts)
    })
    .await;
    assert!(
        waiting[0]["recipients"][0]["answer"]
            .as_str()
            .unwrap()
            .len()
            > 3
    );
    // Intake and delivery go on meanwhile.
    api.create_ok(&order_on("still-taken", "558")).await;
    eventually(
        "delivered while mail waits",
        Duration::from_secs(20),
        || async {
            let (_, s) = api.status_of("still-taken").await;
            (s["data"]["status"] == "created").then_some(())
        },
    )
    .await;

    // The mail server comes up on that port.
    let sink = TestSim::with_args(&["--smtp-port", &smtp_port.to_string()]);
    assert_eq!(sink.smtp_port(), smtp_port);
    let alerts = eventually("every copy settled", Duration::from_secs(60), || async {
        let (_, body) = api.get("/alerts").await;
        let alerts = body["data"]["alerts"].as_array()?.clone();
        let settled = alerts.iter().all(|a| {
            a["recipients"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["status"] != "pending")
        });
        settled.then_some(alerts)
    })
    .await;
    for a in &alerts {
        let r = a["recipients"].as_array().unwrap();
        assert_eq!(r[0]["to"], "ops@example.org");
        assert_eq!(r[0]["status"], "sent", "{a}");
        assert_eq!(r[1]["status"], "failed", "{a}");
        assert!(
            r[1]["answer"].as_str().unwrap().contains("550"),
            "the server's answer: {a}"
        );
    }
    let ops = mail_for(&sink, "ops@example.org").await;
    assert_eq!(ops.len(), 2, "the failure and the test, each once");
    assert!(ops.iter().any(|m| m.contains("a test message")));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        mail_for(&sink, "ops@example.org").await.len(),
        2,
        "nothing twice"
    );
}

#[tokio::test]
async fn conditions_are_told_once_when_they_begin() {
    let sim = TestSim::with_args(&["--smtp-port", "0"]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("alerts.toml");
    std::fs::write(
        &config,
        format!(
            "[target]\nkind = \"erp_rest\"\nbase_url = \"{}\"\n\
             [alerts]\nto = [\"ops@example.org\"]\nfrom = \"ferry@example.org\"\n\
             every_mins = 10\ncheck_secs = 0.2\n\
             [alerts.smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
             [[alerts.rules]]\nwhen = \"no_worker\"\nminutes = 0.01\n\
             [[alerts.rules]]\nwhen = \"oldest_waiting\"\nminutes = 0.01\n",
            sim.base(),
            sim.smtp_port()
        ),
    )
    .unwrap();
    let api =
        TestApi::with(ApiOptions::default().env("FERRY_CONFIG", config.to_str().unwrap())).await;
    api.create_ok(&ferry_tests::order("nobody-takes-it")).await;
    let subjects = eventually("both conditions told", Duration::from_secs(20), || async {
        let subjects: Vec<String> = mail_for(&sim, "ops@example.org")
            .await
            .iter()
            .filter_map(|m| {
                m.lines()
                    .find(|l| l.starts_with("Subject:"))
                    .map(String::from)
            })
            .collect();
        (subjects.len() >= 2).then_some(subjects)
    })
    .await;
    assert!(
        subjects
            .iter()
            .any(|s| s.contains("no worker has been heard from")),
        "{subjects:?}"
    );
    assert!(
        subjects
            .iter()
            .any(|s| s.contains("the oldest waiting job has waited")),
        "{subjects:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        mail_for(&sim, "ops@example.org").await.len(),
        2,
        "once, not every check"
    );

    // Setting a tenant up: a test message, and whether it went.
    let base = api.base();
    let (status, out) =
        ferry_tests::run_to_end("ferryctl", &["--api", &base, "alerts", "test"], &[]);
    assert!(status.success(), "{out}");
    assert!(
        out.contains("ops@example.org") && out.contains("every copy sent"),
        "{out}"
    );
    let (status, out) =
        ferry_tests::run_to_end("ferryctl", &["--api", &base, "alerts", "list"], &[]);
    assert!(status.success(), "{out}");
    assert!(
        out.contains("a test message") && out.contains("no worker"),
        "{out}"
    );
    assert_eq!(mail_for(&sim, "ops@example.org").await.len(), 3);
}
