use std::time::Duration;

use ferry_tests::{ApiOptions, TestApi, TestLibSim, TestWorker, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A booking of `primary_id` at location `lid`, 13:15–13:30 New York time.
fn booking(book_id: &str, primary_id: &str, lid: u64) -> Value {
    json!({
        "bookId": book_id, "fromDate": "2026-12-01T13:15:00-05:00",
        "toDate": "2026-12-01T13:30:00-05:00", "firstName": "Ann", "lastName": "Lee",
        "email": "ann@gwu.edu", "lid": lid, "primary_id": primary_id,
    })
}

struct Library {
    sim: TestLibSim,
    api: TestApi,
    _config: tempfile::TempDir,
}

async fn library(worker_args: &[&str]) -> (Library, TestWorker) {
    library_with(&[], worker_args).await
}

async fn library_with(sim_args: &[&str], worker_args: &[&str]) -> (Library, TestWorker) {
    library_env(sim_args, &[], worker_args).await
}

async fn library_env(
    sim_args: &[&str],
    api_env: &[(&str, &str)],
    worker_args: &[&str],
) -> (Library, TestWorker) {
    let sim = TestLibSim::start(sim_args);
    let config = tempfile::tempdir().unwrap();
    let mut opts = ApiOptions {
        workshop: "Gelman Library".into(),
        ..ApiOptions::default()
    }
    .library(&sim.base(), config.path())
    .env("FERRY_RETRY__BASE_MS", "50")
    .env("FERRY_RETRY__MAX_BACKOFF_MS", "200");
    for (k, v) in api_env {
        opts = opts.env(k, v);
    }
    let api = TestApi::with(opts).await;
    let worker = TestWorker::start(&api.base(), worker_args, &[]);
    (
        Library {
            sim,
            api,
            _config: config,
        },
        worker,
    )
}

impl Library {
    async fn book(&self, b: &Value) -> Value {
        let (status, body) = self.api.post("/bookings", b).await;
        assert!(status.is_success(), "{status} {body}");
        body["data"].clone()
    }

    /// Waits until PassagePoint has received `call` (and, a fault delaying it, is holding it).
    async fn call_started(&self, call: &str) {
        self.call_count(call, "started").await
    }

    /// Waits until PassagePoint has answered `call` (a delayed one has taken effect, or not).
    async fn call_answered(&self, call: &str) {
        self.call_count(call, "answered").await
    }

    async fn call_count(&self, call: &str, which: &str) {
        eventually(
            &format!("{call} {which}"),
            Duration::from_secs(20),
            || async {
                (self.sim.state().await["calls"][call][which].as_u64() >= Some(1)).then_some(())
            },
        )
        .await
    }

    /// Waits until the booking is `status`; answers the job.
    async fn settled(&self, book_id: &str, status: &str) -> Value {
        eventually(
            &format!("{book_id} to be {status}"),
            Duration::from_secs(20),
            || async {
                let (_, b) = self
                    .api
                    .get(&format!("/get_booking_status?bookId={book_id}"))
                    .await;
                (b["data"]["status"] == status).then(|| b["data"].clone())
            },
        )
        .await
    }
}

#[tokio::test]
async fn a_booking_becomes_one_pre_registration_with_its_times_destination_and_category() {
    let (lib, _worker) = library(&[]).await;
    lib.sim
        .patron("G00000002", 1, Some("22820012345678"), "gw und")
        .await;
    lib.book(&booking("cs_a", "g00000002", 8827)).await;
    let job = lib.settled("cs_a", "created").await;

    let pp = lib.sim.state().await;
    assert_eq!(pp["preregs"].as_array().unwrap().len(), 1, "{pp}");
    let prereg = &pp["preregs"][0];
    assert_eq!(job["target_ref"], prereg["id"], "the pre-registration's id");
    assert_eq!(
        prereg["startTime"], 1_796_148_900,
        "13:15 -05:00 in epoch seconds"
    );
    assert_eq!(prereg["endTime"], 1_796_149_800);
    assert_eq!(prereg["destination"], "LibCal Gelman");
    let visitor = &pp["visitors"][0];
    assert_eq!(prereg["visitorId"], visitor["id"]);
    assert_eq!(visitor["category"], "Student", "from the Alma group");
    assert_eq!(visitor["uniqueId"], "22820012345678", "the barcode");
    assert_eq!(
        visitor["mobilePhoneNo"], "G00000002",
        "the GWID, as PassagePoint keeps it"
    );

    // The same booking again (LibCal lists it on every poll) is the same job, delivered once.
    let again = lib.book(&booking("cs_a", "G00000002", 8827)).await;
    assert_eq!(again["new"], false);
    assert_eq!(
        lib.sim.state().await["preregs"].as_array().unwrap().len(),
        1
    );
}

#[tokio::test]
async fn ten_bookings_of_one_patron_cost_one_alma_call_and_one_visitor() {
    let (lib, _worker) = library(&[]).await;
    lib.sim
        .patron("G00000003", 2, Some("2282003"), "gw fac")
        .await;
    for i in 0..10 {
        lib.book(&booking(&format!("cs_{i}"), "G00000003", 10332))
            .await;
    }
    for i in 0..10 {
        lib.settled(&format!("cs_{i}"), "created").await;
    }
    let pp = lib.sim.state().await;
    assert_eq!(pp["preregs"].as_array().unwrap().len(), 10, "{pp}");
    assert_eq!(pp["visitors"].as_array().unwrap().len(), 1, "{pp}");
    assert_eq!(pp["visitors"][0]["category"], "Faculty");
    // Only in the second zone: the first key is asked once, then the second.
    assert_eq!(pp["alma_calls"], json!({"iz1": 1, "iz2": 1}), "{pp}");
}

#[tokio::test]
async fn unknown_patrons_patrons_without_a_barcode_and_unmapped_locations_end_in_error() {
    let (lib, _worker) = library(&[]).await;
    lib.sim.patron("G00000005", 1, None, "gw und").await;
    lib.book(&booking("cs_nobody", "G09999999", 8827)).await;
    lib.book(&booking("cs_nobarcode", "G00000005", 8827)).await;
    let unmapped = lib.book(&booking("cs_where", "G00000005", 4242)).await;
    assert_eq!(unmapped["status"], "error", "refused at intake: {unmapped}");
    assert_eq!(unmapped["reason_code"], "DESTINATION_UNMAPPED");

    let nobody = lib.settled("cs_nobody", "error").await;
    assert_eq!(nobody["reason_code"], "USER_NOT_FOUND", "{nobody}");
    assert_eq!(nobody["attempts"], 1, "not retried");
    let nobarcode = lib.settled("cs_nobarcode", "error").await;
    assert_eq!(nobarcode["reason_code"], "ALMA_NO_BARCODE");
    let pp = lib.sim.state().await;
    assert_eq!(pp["preregs"], json!([]));
    assert_eq!(pp["alma_calls"], json!({"iz1": 2, "iz2": 1}), "{pp}");
}

#[tokio::test]
async fn an_existing_visitor_is_found_and_an_expired_token_is_renewed_and_its_answer_used() {
    let (lib, _worker) = library(&[]).await;
    lib.sim
        .patron("G00000006", 1, Some("2282006"), "gw und")
        .await;
    lib.book(&booking("cs_first", "G00000006", 8827)).await;
    lib.settled("cs_first", "created").await;
    lib.sim.expire_tokens().await;
    // A second worker's view: the visitor exists in PassagePoint but not in this booking's path.
    lib.book(&booking("cs_second", "G00000006", 10332)).await;
    let job = lib.settled("cs_second", "created").await;
    assert_eq!(
        job["attempts"], 1,
        "the renewed call's answer was used: {job}"
    );
    let pp = lib.sim.state().await;
    assert_eq!(pp["logins"], 2, "{pp}");
    assert_eq!(pp["preregs"].as_array().unwrap().len(), 2);
    assert_eq!(
        pp["visitors"].as_array().unwrap().len(),
        1,
        "one visitor, two visits"
    );
}

#[tokio::test]
async fn a_passagepoint_error_is_retried_and_makes_one_pre_registration() {
    let (lib, _worker) = library(&[]).await;
    lib.sim
        .patron("G00000007", 1, Some("2282007"), "gw und")
        .await;
    lib.sim
        .pp_fault(json!({"call": "createPreReg", "count": 2, "status": 503}))
        .await;
    lib.book(&booking("cs_flaky", "G00000007", 8827)).await;
    let job = lib.settled("cs_flaky", "created").await;
    assert_eq!(job["attempts"], 3, "{job}");
    assert_eq!(
        lib.sim.state().await["preregs"].as_array().unwrap().len(),
        1
    );
}

#[tokio::test]
async fn a_worker_killed_while_creating_the_visitor_leaves_no_duplicate() {
    let (lib, mut first) = library(&["--lease-ms", "2000"]).await;
    lib.sim
        .patron("G00000008", 1, Some("2282008"), "gw und")
        .await;
    // PassagePoint makes the visitor, but only after the worker is gone.
    lib.sim
        .pp_fault(json!({"call": "createVisitor", "count": 1, "delay_ms": 1500}))
        .await;
    lib.book(&booking("cs_kill1", "G00000008", 8827)).await;
    lib.call_started("createVisitor").await;
    first.kill9();
    let _second = TestWorker::start(&lib.api.base(), &[], &[]);
    let job = lib.settled("cs_kill1", "created").await;
    let pp = lib.sim.state().await;
    assert_eq!(pp["visitors"].as_array().unwrap().len(), 1, "{pp}");
    assert_eq!(pp["preregs"].as_array().unwrap().len(), 1, "{pp}");
    assert_eq!(job["target_ref"], pp["preregs"][0]["id"]);
}

#[tokio::test]
async fn a_worker_killed_while_pre_registering_never_makes_a_second_one() {
    let (lib, mut first) = library(&["--lease-ms", "2000"]).await;
    lib.sim
        .patron("G00000009", 1, Some("2282009"), "gw und")
        .await;
    lib.sim
        .pp_fault(json!({"call": "createPreReg", "count": 1, "delay_ms": 1500}))
        .await;
    lib.book(&booking("cs_kill2", "G00000009", 8827)).await;
    lib.call_started("createPreReg").await;
    first.kill9();
    let _second = TestWorker::start(&lib.api.base(), &[], &[]);
    // PassagePoint made it after the worker died; nobody can know from here: a person checks.
    let job = lib.settled("cs_kill2", "error").await;
    assert_eq!(job["reason_code"], "PREREG_UNCERTAIN", "{job}");
    lib.call_answered("createPreReg").await; // the delayed call lands
    assert_eq!(
        lib.sim.state().await["preregs"].as_array().unwrap().len(),
        1,
        "never a second pre-registration"
    );
}

#[tokio::test]
async fn an_unanswered_pre_registration_waits_for_a_person_whose_retry_makes_it_once() {
    let (lib, _worker) = library(&[]).await;
    lib.sim
        .patron("G00000010", 1, Some("2282010"), "gw und")
        .await;
    // No answer within the connector's timeout (PassagePoint fails it later, making nothing).
    lib.sim
        .pp_fault(json!({"call": "createPreReg", "count": 1, "delay_ms": 1500, "status": 503}))
        .await;
    lib.book(&booking("cs_silent", "G00000010", 8827)).await;
    let job = lib.settled("cs_silent", "error").await;
    assert_eq!(job["reason_code"], "PREREG_UNCERTAIN", "{job}");
    assert_eq!(job["attempts"], 1);
    lib.call_answered("createPreReg").await;
    assert_eq!(
        lib.sim.state().await["preregs"],
        json!([]),
        "a person checks: none"
    );

    let (status, body) = lib
        .api
        .put(&format!("/jobs/{}/retry", job["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let job = lib.settled("cs_silent", "created").await;
    let pp = lib.sim.state().await;
    assert_eq!(pp["preregs"].as_array().unwrap().len(), 1, "{pp}");
    assert_eq!(job["target_ref"], pp["preregs"][0]["id"]);
}

#[tokio::test]
async fn alma_over_its_per_second_limit_is_retried_soon_and_every_booking_is_made() {
    // Alma allows one call a second here; the connector is configured for 25.
    let (lib, _worker) = library_with(&["--alma-per-second", "1"], &[]).await;
    for i in 0..3 {
        let id = format!("G0000010{i}");
        lib.sim
            .patron(&id, 1, Some(&format!("22821{i}")), "gw und")
            .await;
        lib.book(&booking(&format!("cs_rate{i}"), &id, 8827)).await;
    }
    let mut retried = 0;
    for i in 0..3 {
        let job = lib.settled(&format!("cs_rate{i}"), "created").await;
        let log = lib.api.log(job["id"].as_str().unwrap()).await;
        if log.iter().any(|e| {
            e["message"]
                .as_str()
                .unwrap_or("")
                .contains("ALMA_RATE_LIMITED")
        }) {
            retried += 1;
        }
    }
    assert!(retried >= 1, "some lookup met the limit and was retried");
    assert_eq!(
        lib.sim.state().await["preregs"].as_array().unwrap().len(),
        3
    );
}

#[tokio::test]
async fn alma_out_of_its_daily_budget_puts_bookings_off_until_midnight() {
    let (lib, _worker) = library(&[]).await;
    lib.sim
        .patron("G00000011", 1, Some("2282011"), "gw und")
        .await;
    lib.sim.alma_daily(0).await;
    lib.book(&booking("cs_daily", "G00000011", 8827)).await;
    let job = eventually(
        "the daily limit to be met",
        Duration::from_secs(20),
        || async {
            let (_, b) = lib.api.get("/get_booking_status?bookId=cs_daily").await;
            (b["data"]["reason_code"] == "ALMA_DAILY_LIMIT").then(|| b["data"].clone())
        },
    )
    .await;
    assert_eq!(job["status"], "placed", "waiting, not failed: {job}");
    let alive = lib.api.alive().await;
    let notes = alive["notes"].as_array().unwrap();
    assert!(
        notes
            .iter()
            .any(|n| n.as_str().unwrap().contains("daily API budget")),
        "/alive says so: {alive}"
    );
    let metrics = lib.api.metrics().await;
    assert!(
        metrics
            .contains(r#"ferry_target_gauge{tenant="gelman-library",name="alma_api_remaining"} 0"#),
        "{metrics}"
    );
    let next =
        chrono::DateTime::parse_from_rfc3339(job["next_attempt_at"].as_str().unwrap()).unwrap();
    // The retry policy caps a backoff (here at 200 ms) unless the target says when: Alma's
    // budget comes back at midnight (UTC), so the next attempt is then, however far away.
    use chrono::Timelike;
    let secs = next.with_timezone(&chrono::Utc).num_seconds_from_midnight();
    assert!(
        secs <= 5 || secs >= 86_395,
        "next attempt {next} is not at midnight"
    );
    assert!(
        next.with_timezone(&chrono::Utc) > chrono::Utc::now() - chrono::Duration::seconds(5),
        "next attempt {next} is not ahead"
    );
    assert_eq!(lib.sim.state().await["preregs"], json!([]));
}

#[tokio::test]
async fn mappings_are_pruned_keep_days_after_the_appointment() {
    let (lib, _worker) = library_env(
        &[],
        &[
            ("FERRY_TARGET__KEEP_DAYS", "0"),
            ("FERRY_PRUNE_EVERY_MS", "200"),
        ],
        &[],
    )
    .await;
    lib.sim
        .patron("G00000012", 1, Some("2282012"), "gw und")
        .await;
    let mut past = booking("cs_past", "G00000012", 8827);
    past["fromDate"] = json!("2026-01-05T10:00:00-05:00");
    past["toDate"] = json!("2026-01-05T11:00:00-05:00");
    lib.book(&past).await;
    lib.settled("cs_past", "created").await;
    let state = |key: &'static str| {
        let url = format!("{}/worker/state/{key}", lib.api.base());
        let api = &lib.api;
        async move { api.send(api.http.get(url)).await.1["data"]["version"].clone() }
    };
    eventually(
        "the mappings to be pruned",
        Duration::from_secs(10),
        || async {
            (state("prereg:cs_past").await == 0 && state("visitor:G00000012").await == 0)
                .then_some(())
        },
    )
    .await;
    // The job itself stays, with its reference.
    let (_, b) = lib.api.get("/get_booking_status?bookId=cs_past").await;
    assert_eq!(b["data"]["status"], "created");
}

#[tokio::test]
async fn a_booking_whose_pre_registration_was_kept_but_not_reported_is_not_made_again() {
    // What a worker killed right after the pre-registration leaves: the id kept in connector
    // state, the job not reported (its lease expires and it is leased again).
    let (lib, _worker) = library(&[]).await;
    lib.sim
        .patron("G00000013", 1, Some("2282013"), "gw und")
        .await;
    let url = format!("{}/worker/state/prereg:cs_kept", lib.api.base());
    let (status, body) = lib
        .api
        .send(
            lib.api
                .http
                .put(&url)
                .json(&json!({"value": {"id": "PR-77"}, "version": 0})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    lib.book(&booking("cs_kept", "G00000013", 8827)).await;
    let job = lib.settled("cs_kept", "created").await;
    assert_eq!(job["target_ref"], "PR-77");
    let pp = lib.sim.state().await;
    assert_eq!(
        pp["preregs"],
        json!([]),
        "nothing asked of PassagePoint: {pp}"
    );
    assert_eq!(pp["alma_calls_total"], 0, "nor of Alma");
    let log = lib.api.log(job["id"].as_str().unwrap()).await;
    assert!(
        log.iter().any(|e| e["excerpt"]
            .as_str()
            .unwrap_or("")
            .contains("connector state")),
        "the log says why: {log:?}"
    );
}
