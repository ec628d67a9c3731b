use std::time::{Duration, Instant};

use ferry_tests::{ApiOptions, TestApi, eventually, order};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Fast retries, so a test sees several attempts in well under a second.
fn quick_retries() -> ApiOptions {
    ApiOptions::default()
        .env("FERRY_RETRY__BASE_MS", "20")
        .env("FERRY_RETRY__MAX_BACKOFF_MS", "40")
}

/// Long-polls until exactly one job is leased; returns (job_id, lease_id, attempt).
async fn lease_one(api: &TestApi, worker: &str, lease_ms: u64) -> (String, String, u64) {
    let data = api.lease(worker, 1, 5_000, lease_ms).await;
    let jobs = data["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{data}");
    let j = &jobs[0];
    (
        j["job_id"].as_str().unwrap().into(),
        j["lease_id"].as_str().unwrap().into(),
        j["attempt"].as_u64().unwrap(),
    )
}

fn result(job: &str, lease: &str, outcome: Value) -> Value {
    json!([{ "job_id": job, "lease_id": lease, "outcome": outcome,
             "detail": {"http_status": 503, "duration_ms": 12, "excerpt": "upstream said no"} }])
}

#[tokio::test]
async fn a_job_goes_through_every_state_and_its_log_tells_the_whole_story() {
    let api = TestApi::with(quick_retries()).await;
    let mut o = order("story");
    o["password"] = json!("pw-in-flight");
    let id = api.create_ok(&o).await["id"].as_str().unwrap().to_string();

    let data = api.lease("w1", 8, 1_000, 30_000).await;
    assert_eq!(data["directive"], "run");
    let leased = &data["jobs"][0];
    assert_eq!(leased["job_id"], id.as_str());
    assert_eq!(leased["attempt"], 1);
    assert_eq!(
        leased["payload"]["password"], "pw-in-flight",
        "the worker needs the job's credentials"
    );
    let lease = leased["lease_id"].as_str().unwrap().to_string();
    assert_eq!(api.job(&id).await["status"], "processing");

    let retry = json!({"kind": "retry", "reason_code": "ERP_UNAVAILABLE", "reason_text": "503 from the ERP"});
    let acks = api.report("w1", result(&id, &lease, retry)).await;
    assert_eq!(acks["results"][0]["accepted"], true, "{acks}");
    assert_eq!(acks["results"][0]["status"], "placed");
    let job = api.job(&id).await;
    assert_eq!(job["reason_code"], "ERP_UNAVAILABLE");
    assert_eq!(job["attempts"], 1);
    assert!(job["next_attempt_at"].is_string(), "{job}");

    let (_, lease, attempt) = lease_one(&api, "w1", 30_000).await;
    assert_eq!(attempt, 2);
    let failed = json!({"kind": "failed", "reason_code": "ERP_WORKSHEET_NOT_FOUND", "reason_text": "worksheet 558 does not exist"});
    api.report("w1", result(&id, &lease, failed)).await;
    let (_, status) = api.status_of("story").await;
    assert_eq!(status["data"]["status"], "error");
    assert_eq!(status["data"]["reason_code"], "ERP_WORKSHEET_NOT_FOUND");
    assert_eq!(
        status["data"]["reason_text"],
        "worksheet 558 does not exist"
    );

    let (code, body) = api.put(&format!("/jobs/{id}/retry")).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["status"], "placed");
    assert_eq!(body["data"]["attempts"], 0);

    let (_, lease, _) = lease_one(&api, "w1", 30_000).await;
    let created = json!({"kind": "created", "target_ref": "LINE-42"});
    api.report("w1", result(&id, &lease, created)).await;
    let (_, status) = api.status_of("story").await;
    assert_eq!(status["data"]["status"], "created");
    assert_eq!(status["data"]["target_ref"], "LINE-42");

    let log = api.log(&id).await;
    let steps: Vec<(Value, Value)> = log
        .iter()
        .map(|e| (e["from"].clone(), e["to"].clone()))
        .collect();
    let expected = [
        (Value::Null, "placed"),
        (json!("placed"), "processing"),
        (json!("processing"), "placed"),
        (json!("placed"), "processing"),
        (json!("processing"), "error"),
        (json!("error"), "placed"),
        (json!("placed"), "processing"),
        (json!("processing"), "created"),
    ];
    let expected: Vec<(Value, Value)> = expected.into_iter().map(|(f, t)| (f, json!(t))).collect();
    assert_eq!(steps, expected, "{log:#?}");
    assert_eq!(log[2]["http_status"], 503);
    assert_eq!(log[2]["duration_ms"], 12);
    assert_eq!(log[2]["excerpt"], "upstream said no");
    assert_eq!(log[1]["worker_id"], "w1");
    assert!(
        !serde_json::to_string(&log)
            .unwrap()
            .contains("pw-in-flight")
    );
}

#[tokio::test]
async fn attempts_exhausted_end_in_error_with_the_last_reason() {
    let api = TestApi::with(quick_retries().env("FERRY_RETRY__MAX_ATTEMPTS", "2")).await;
    let id = api.create_ok(&order("tired")).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    for _ in 0..2 {
        let (_, lease, _) = lease_one(&api, "w", 30_000).await;
        let retry = json!({"kind": "retry", "reason_code": "ERP_TIMEOUT", "reason_text": "no answer in 10 s", "after_ms": 10});
        api.report("w", result(&id, &lease, retry)).await;
    }
    let job = api.job(&id).await;
    assert_eq!(job["status"], "error");
    assert_eq!(job["reason_code"], "MAX_ATTEMPTS_EXCEEDED");
    let text = job["reason_text"].as_str().unwrap();
    assert!(
        text.contains("2 attempts") && text.contains("ERP_TIMEOUT"),
        "{text}"
    );
    let (_, q) = api.get("/queue?type=error").await;
    assert_eq!(q["data"]["jobs"][0]["id"], id.as_str());
}

#[tokio::test]
async fn an_expired_lease_returns_the_job_and_the_stale_report_is_refused() {
    let api = TestApi::start().await;
    let id = api.create_ok(&order("slow")).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, stale, _) = lease_one(&api, "slow-worker", 1_000).await;

    eventually("the lease to expire", Duration::from_secs(10), || async {
        (api.job(&id).await["status"] == "placed").then_some(())
    })
    .await;
    let log = api.log(&id).await;
    assert!(
        log.last().unwrap()["message"]
            .as_str()
            .unwrap()
            .contains("LEASE_EXPIRED"),
        "{log:#?}"
    );

    let (_, fresh, attempt) = lease_one(&api, "fast-worker", 30_000).await;
    assert_eq!(attempt, 2);
    assert_ne!(fresh, stale);
    let created = json!({"kind": "created", "target_ref": "L-1"});
    let acks = api
        .report("slow-worker", result(&id, &stale, created.clone()))
        .await;
    assert_eq!(acks["results"][0]["accepted"], false, "{acks}");
    assert_eq!(acks["results"][0]["error"], "STALE_LEASE");
    assert_eq!(api.job(&id).await["status"], "processing");

    let acks = api
        .report("fast-worker", result(&id, &fresh, created))
        .await;
    assert_eq!(acks["results"][0]["accepted"], true, "{acks}");
    assert_eq!(api.job(&id).await["status"], "created");
}

#[tokio::test]
async fn heartbeats_keep_a_lease_alive_and_name_the_leases_that_are_lost() {
    let api = TestApi::start().await;
    let id = api.create_ok(&order("beat")).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, lease, _) = lease_one(&api, "w", 1_000).await;
    let until = Instant::now() + Duration::from_millis(2_500);
    while Instant::now() < until {
        let (status, body) = api
            .post(
                "/worker/heartbeat",
                &json!({"worker_id": "w", "lease_ids": [lease, "01a20000-0000-7000-8000-000000000000"]}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["data"]["extended"], json!([lease]));
        assert_eq!(body["data"]["lost"].as_array().unwrap().len(), 1);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(api.job(&id).await["status"], "processing");
    assert_eq!(api.job(&id).await["attempts"], 1);
}

#[tokio::test]
async fn a_long_poll_wakes_as_soon_as_work_arrives() {
    let api = TestApi::start().await;
    let empty = api.lease("w", 4, 0, 30_000).await;
    assert_eq!(empty["jobs"], json!([]));

    let started = Instant::now();
    let (leased, _) = tokio::join!(api.lease("w", 4, 20_000, 30_000), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        api.create_ok(&order("wake")).await
    });
    assert_eq!(leased["jobs"][0]["payload"]["uniqueid"], "wake", "{leased}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the long-poll waited for its deadline instead of waking"
    );
}

#[tokio::test]
async fn a_stopped_worker_is_told_to_pause_and_start_worker_wakes_it() {
    let api = TestApi::start().await;
    api.create_ok(&order("held")).await;
    let (status, _) = api.put("/stop_worker").await;
    assert_eq!(status, StatusCode::OK);
    let paused = api.lease("w", 4, 0, 30_000).await;
    assert_eq!(paused["directive"], "pause");
    assert_eq!(paused["jobs"], json!([]));

    let (leased, _) = tokio::join!(api.lease("w", 4, 20_000, 30_000), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        api.put("/start_worker").await
    });
    assert_eq!(leased["directive"], "run");
    assert_eq!(leased["jobs"][0]["payload"]["uniqueid"], "held", "{leased}");
}

#[tokio::test]
async fn bad_protocol_requests_are_refused_with_the_field_named() {
    let api = TestApi::start().await;
    for (body, field) in [
        (json!({"worker_id": "w", "max": 0}), "max"),
        (json!({"worker_id": "", "max": 1}), "worker_id"),
        (json!({"worker_id": "w", "lease_ms": 5}), "lease_ms"),
        (json!({"worker_id": "w", "wait_ms": 3_600_000}), "wait_ms"),
    ] {
        let (status, answer) = api.post("/worker/lease", &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(answer["error"]["fields"][field].is_string(), "{answer}");
    }
    let (status, answer) = api.post("/worker/report", &json!({"worker_id": "w"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"]["code"], "INVALID_BODY");

    let unknown = "01a20000-0000-7000-8000-000000000000";
    let acks = api
        .report(
            "w",
            result(
                unknown,
                unknown,
                json!({"kind": "created", "target_ref": "x"}),
            ),
        )
        .await;
    assert_eq!(acks["results"][0]["error"], "JOB_NOT_FOUND");

    let id = api.create_ok(&order("placed")).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body) = api.put(&format!("/jobs/{id}/retry")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "NOT_IN_ERROR");
    let (status, _) = api.put(&format!("/jobs/{unknown}/retry")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = api.get("/jobs/not-a-uuid").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "INVALID_JOB_ID");
    let (status, _) = api.get(&format!("/jobs/{unknown}/log")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn connector_state_is_compare_and_swap_needs_the_worker_token_and_survives_a_crash() {
    let mut api = TestApi::with(
        ferry_tests::ApiOptions::default()
            .env("FERRY_API_KEY", "k-up")
            .env("FERRY_WORKER_TOKEN", "k-worker"),
    )
    .await;
    let url = format!("{}/worker/state/prereg:cs_1", api.base());
    let get = |token: &'static str| api.http.get(&url).bearer_auth(token);
    let put = |body: serde_json::Value| api.http.put(&url).bearer_auth("k-worker").json(&body);

    let (status, _) = api.send(get("k-up")).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the worker's token, not the API key"
    );
    let (status, body) = api.send(get("k-worker")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["data"],
        json!({"key": "prereg:cs_1", "value": null, "version": 0})
    );

    let (status, body) = api
        .send(put(json!({"value": {"id": "P-1"}, "version": 0})))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["version"], 1);
    // A second worker that read the absent value loses the race and is told so.
    let (status, body) = api
        .send(put(json!({"value": {"id": "P-2"}, "version": 0})))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "STATE_CONFLICT");

    api.restart(); // kill -9: an acknowledged write is on disk
    let url = format!("{}/worker/state/prereg:cs_1", api.base());
    let (_, body) = api.send(api.http.get(&url).bearer_auth("k-worker")).await;
    assert_eq!(body["data"]["value"], json!({"id": "P-1"}));
    assert_eq!(body["data"]["version"], 1);
    let (status, body) = api
        .send(
            api.http
                .put(&url)
                .bearer_auth("k-worker")
                .json(&json!({"value": null, "version": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["version"], 0, "deleted");

    let bad = format!("{}/worker/state/no%20spaces", api.base());
    let (status, body) = api.send(api.http.get(&bad).bearer_auth("k-worker")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"]["fields"]["key"].is_string(), "{body}");
}
