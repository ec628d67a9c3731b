use std::time::Duration;

use ferry_tests::{ApiOptions, TestApi, TestLibSim, TestWorker, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A booking as LibCal lists it (form answers included).
fn listed(book_id: &str, lid: u64, status: &str, gwid: Option<&str>) -> Value {
    let mut b = json!({
        "bookId": book_id, "id": 123, "eid": 71489, "cid": 18578, "lid": lid,
        "fromDate": "2026-12-01T13:15:00-05:00", "toDate": "2026-12-01T13:30:00-05:00",
        "created": "2026-11-20T09:00:00-05:00", "firstName": "Ann", "lastName": "Lee",
        "email": "ann@gwu.edu", "account": "", "status": status, "seat_id": 68162,
    });
    if let Some(g) = gwid {
        b["q12505"] = json!(g);
    }
    b
}

/// A library tenant pulling from LibCal, with an API key that is not the worker's token.
async fn pulling(sim: &TestLibSim, dir: &std::path::Path) -> (TestApi, TestWorker) {
    let api = TestApi::with(
        ApiOptions {
            workshop: "Gelman Library".into(),
            ..ApiOptions::default()
        }
        .library(&sim.base(), dir)
        .libcal(&sim.base(), dir, 300)
        .key("k-upstream")
        .env("FERRY_WORKER_TOKEN", "k-worker")
        .env("FERRY_RETRY__BASE_MS", "50"),
    )
    .await;
    let worker = TestWorker::start(&api.base(), &[], &[("FERRY_WORKER_TOKEN", "k-worker")]);
    (api, worker)
}

async fn source(api: &TestApi) -> Value {
    api.alive().await["source"].clone()
}

#[tokio::test]
async fn libcal_bookings_become_pre_registrations_once_each_and_none_is_dropped() {
    let sim = TestLibSim::start(&[]);
    sim.patron("G00000002", 1, Some("22820012345678"), "gw und")
        .await;
    sim.libcal_bookings(json!([
        // One person in two seats: listed twice, registered once.
        listed("cs_seats", 8827, "Mediated Approved", Some(" g00000002 ")),
        listed("cs_seats", 8827, "Mediated Approved", Some(" g00000002 ")),
        listed("cs_denied", 8827, "Mediated Denied", Some("G00000002")),
        listed("cs_noform", 10332, "Confirmed", None),
        listed("cs_badid", 10332, "Confirmed", Some("12345")),
    ]))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (api, _worker) = pulling(&sim, dir.path()).await;

    let status = eventually("the first poll", Duration::from_secs(20), || async {
        let s = source(&api).await;
        (s["polls"].as_u64() >= Some(1)).then_some(s)
    })
    .await;
    assert_eq!(status["last_error"], Value::Null, "{status}");
    assert_eq!(
        status["bookings_seen"], 3,
        "deduplicated, denied skipped: {status}"
    );
    eventually("the pre-registration", Duration::from_secs(20), || async {
        (sim.state().await["preregs"].as_array()?.len() == 1).then_some(())
    })
    .await;
    for book_id in ["cs_noform", "cs_badid"] {
        let (_, b) = api
            .get(&format!("/get_booking_status?bookId={book_id}"))
            .await;
        assert_eq!(b["data"]["status"], "error", "kept, not dropped: {b}");
        assert_eq!(b["data"]["reason_code"], "BOOKING_MISSING_PRIMARY_ID");
    }
    let (status, _) = api.get("/get_booking_status?bookId=cs_denied").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not a status to register");
    let pp = sim.state().await;
    assert_eq!(pp["preregs"][0]["destination"], "LibCal Gelman");
    // Two locations, each a short page (page_size 2 pages through the first).
    assert!(pp["libcal_requests"].as_u64() >= Some(3), "{pp}");
}

#[tokio::test]
async fn a_failing_poll_is_reported_never_stops_the_worker_and_a_poll_can_be_asked_for() {
    let sim = TestLibSim::start(&[]);
    sim.patron("G00000003", 1, Some("2282003"), "gw und").await;
    sim.libcal_down(true).await;
    let dir = tempfile::tempdir().unwrap();
    let (api, mut worker) = pulling(&sim, dir.path()).await;
    let failed = eventually("a failed poll", Duration::from_secs(20), || async {
        let s = source(&api).await;
        (s["polls_failed"].as_u64() >= Some(1)).then_some(s)
    })
    .await;
    assert!(
        failed["last_error"].as_str().unwrap().contains("503"),
        "{failed}"
    );
    assert!(worker.running(), "a failed poll never stops the worker");
    let metrics = api.metrics().await;
    assert!(
        metrics.contains("ferry_source_polls_failed_total{tenant=\"gelman-library\"} 1"),
        "{metrics}"
    );

    // LibCal is back with a booking, and its token expired meanwhile. The next tick is five
    // minutes away: only the asked-for poll can place the booking now.
    sim.libcal_down(false).await;
    sim.libcal_expire().await;
    sim.libcal_bookings(json!([listed(
        "cs_now",
        8827,
        "Confirmed",
        Some("G00000003")
    )]))
    .await;
    let (status, body) = api.put("/source/poll").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    eventually("the asked-for poll", Duration::from_secs(20), || async {
        (sim.state().await["preregs"].as_array()?.len() == 1).then_some(())
    })
    .await;
    let ok = source(&api).await;
    assert_eq!(ok["last_error"], Value::Null, "{ok}");
    assert_eq!(ok["bookings_new"], 1, "{ok}");
    assert_eq!(
        sim.state().await["libcal_tokens_issued"],
        2,
        "a fresh token after the 401"
    );
}

#[tokio::test]
async fn a_tenant_without_a_source_says_so() {
    let api = TestApi::start().await;
    let (status, body) = api.put("/source/poll").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "NO_SOURCE");
    assert!(api.alive().await["source"].is_null());
}

#[test]
fn check_config_names_a_library_tenants_missing_secrets() {
    let dir = tempfile::tempdir().unwrap();
    // The library config the other tests use, written to `dir` (no process is started).
    let _ = ApiOptions::default()
        .library("http://127.0.0.1:9", dir.path())
        .libcal("http://127.0.0.1:9", dir.path(), 300);
    let config = dir.path().join("library.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("workshop = \"Gelman Library\"\n{text}")).unwrap();
    let args = ["--config", config.to_str().unwrap(), "--check-config"];
    let all = [
        ("PP_PASSWORD", "p"),
        ("ALMA_KEY_IZ1", "k1"),
        ("ALMA_KEY_IZ2", "k2"),
        ("LIBCAL_SECRET", "s"),
    ];
    let (status, out) = ferry_tests::run_to_end("ferry-api", &args, &all);
    assert!(status.success(), "{out}");
    assert!(out.contains("target passagepoint, source libcal"), "{out}");
    for missing in ["PP_PASSWORD", "ALMA_KEY_IZ2", "LIBCAL_SECRET"] {
        let env: Vec<(&str, &str)> = all.iter().copied().filter(|(k, _)| *k != missing).collect();
        let (status, out) = ferry_tests::run_to_end("ferry-api", &args, &env);
        assert!(!status.success(), "{missing}: {out}");
        assert!(out.contains(missing), "{missing} is named: {out}");
    }
}

#[tokio::test]
async fn kill_stops_a_pulling_tenant_at_once() {
    let sim = TestLibSim::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let (mut api, mut worker) = pulling(&sim, dir.path()).await;
    eventually("the first poll", Duration::from_secs(20), || async {
        (source(&api).await["polls"].as_u64() >= Some(1)).then_some(())
    })
    .await;
    let (status, _) = api.put("/kill").await;
    assert_eq!(status, StatusCode::OK);
    // Its source's long-poll answers at once: neither process waits out a 25 s poll.
    let w = worker.wait_exit(Duration::from_secs(8));
    let a = api.wait_exit(Duration::from_secs(8));
    assert!(w.success(), "worker: {w}\n{}", worker.output());
    assert!(a.success(), "api: {a}");
}
