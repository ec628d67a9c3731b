use std::time::Duration;

use ferry_tests::{ApiOptions, TestApi, TestSim, TestWorker, eventually, order, order_on};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// What the deployed OilMat client sends for one pumping: `requests.post(url,
/// json=json.dumps(data))` with Python's default separators, so the body is a JSON string holding
/// the object. Its `dealer` is a fixed label, not the workshop.
const ORIGINAL_BODY: &str = r#""{\"dealer\": \"Gygag\", \"case_nr\": \"558\", \"product_nr\": \"10\", \"product_amount\": \"2.5\", \"unique_id\": \"oilmat-1001\", \"username\": \"ann\", \"password\": \"s3cret\"}""#;

async fn delivering_pair() -> (TestSim, TestApi, TestWorker) {
    let sim = TestSim::start();
    let api = TestApi::with(
        ApiOptions::default()
            .target(&sim.base())
            .env("FERRY_RETRY__BASE_MS", "50"),
    )
    .await;
    let worker = TestWorker::start(&api.base(), &[], &[]);
    (sim, api, worker)
}

/// Polls the original status path until `unique_id` is `status`; answers the last body.
async fn poll_old_path(api: &TestApi, unique_id: &str, status: &str) -> Value {
    let url = format!("{}/check_order_status?unique_id={unique_id}", api.base());
    eventually(
        &format!("{unique_id} to be {status} on the old path"),
        Duration::from_secs(20),
        || async {
            let resp = api.http.get(&url).send().await.ok()?;
            let code = resp.status();
            let body: Value = resp.json().await.ok()?;
            (code == StatusCode::OK && body["status"] == status).then_some(body)
        },
    )
    .await
}

#[tokio::test]
async fn the_deployed_clients_exact_request_is_answered_200_and_its_poller_sees_completed() {
    let (sim, api, _worker) = delivering_pair().await;
    let resp = api
        .http
        .post(format!("{}/create", api.base()))
        .header("content-type", "application/json")
        .header("user-agent", "python-requests/2.31.0")
        .body(ORIGINAL_BODY)
        .send()
        .await
        .unwrap();
    // The client's whole check: `if response.status_code == 200`.
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["data"]["new"], true, "{body}");
    assert_eq!(
        body["data"]["workshop"], "Bennys Auto",
        "the api is the workshop"
    );
    assert_eq!(body["data"]["dealer"], "Gygag", "the label is kept");
    assert!(!body.to_string().contains("s3cret"), "{body}");

    let done = poll_old_path(&api, "oilmat-1001", "completed").await;
    assert_eq!(
        done,
        json!({"unique_id": "oilmat-1001", "status": "completed", "reason": null}),
        "exactly the original's shape"
    );
    let lines = sim.lines().await;
    assert_eq!(lines["count"], 1);
    assert_eq!(lines["lines"][0]["amount"], 2.5);

    // The client sends the same pumping again after a timeout: still 200, still one line.
    let again = api
        .http
        .post(format!("{}/create", api.base()))
        .header("content-type", "application/json")
        .body(ORIGINAL_BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["data"]["new"], false, "{again}");
    assert_eq!(again["data"]["id"], body["data"]["id"]);
    assert_eq!(sim.lines().await["count"], 1);

    // The label is searchable.
    let (_, found) = api.get("/queue?status=created&q=gygag").await;
    assert_eq!(found["data"]["length"], 1, "{found}");
}

#[tokio::test]
async fn a_current_client_on_the_documented_path_sees_placed_then_created() {
    let (_sim, api, _worker) = delivering_pair().await;
    let (status, body) = api.create(&order("doc-1")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["new"], true);
    assert_eq!(body["data"]["status"], "placed");
    assert!(
        body["data"].get("dealer").is_none(),
        "no label sent: {body}"
    );
    let job = eventually("doc-1 to be created", Duration::from_secs(20), || async {
        let (_, b) = api.status_of("doc-1").await;
        (b["data"]["status"] == "created").then_some(b)
    })
    .await;
    assert_eq!(job["success"], true, "the envelope: {job}");
    assert_eq!(job["message"], "created");
    assert!(job["data"]["target_ref"].is_string(), "{job}");
}

#[tokio::test]
async fn the_old_status_path_speaks_the_originals_names_and_errors() {
    let (sim, api, _worker) = delivering_pair().await;
    sim.missing("999").await;
    api.create_ok(&order_on("lost-1", "999")).await;
    let failed = poll_old_path(&api, "lost-1", "failed").await;
    let reason = failed["reason"].as_str().unwrap();
    assert!(reason.starts_with("ERP_WORKSHEET_NOT_FOUND: "), "{failed}");

    let resp = api
        .http
        .get(format!("{}/check_order_status?unique_id=nope", api.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"error": "Order not found"})
    );
    let resp = api
        .http
        .get(format!("{}/check_order_status", api.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(
        resp.json::<Value>().await.unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("unique_id")
    );

    // An order waiting behind a stopped worker is `received`; one cleared will never be done.
    api.put("/stop_worker").await;
    api.create_ok(&order("waits")).await;
    poll_old_path(&api, "waits", "received").await;
    api.put("/clear_queue").await;
    let cleared = poll_old_path(&api, "waits", "failed").await;
    assert!(
        cleared["reason"].as_str().unwrap().contains("cleared"),
        "{cleared}"
    );
}

#[tokio::test]
async fn a_documented_workshop_naming_another_tenant_is_still_refused() {
    let api = TestApi::start().await;
    let mut misrouted = order("wrong-door");
    misrouted["workshop"] = json!("Other Garage");
    misrouted["dealer"] = json!("Bennys Auto");
    let (status, body) = api.create(&misrouted).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "VALIDATION_FAILED");
    assert!(
        body["error"]["fields"]["workshop"]
            .as_str()
            .unwrap()
            .contains("Other Garage")
    );
    let (_, q) = api.get("/queue").await;
    assert_eq!(q["data"]["length"], 0, "{q}");
}
