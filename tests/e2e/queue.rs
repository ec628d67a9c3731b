use std::collections::HashSet;

use ferry_tests::{TestApi, order};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn the_queue_lists_waiting_and_in_flight_jobs_filters_searches_and_pages() {
    let api = TestApi::start().await;
    for i in 0..7 {
        let mut o = order(&format!("job-{i}"));
        o["worksheet"] = json!(format!("WS-{}", i % 2));
        o["password"] = json!("never-shown");
        api.create_ok(&o).await;
    }
    let leased = api.lease("w", 2, 0, 30_000).await;
    assert_eq!(leased["jobs"].as_array().unwrap().len(), 2);

    let (status, q) = api.get("/queue").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(q["data"]["length"], 7);
    assert_eq!(q["data"]["counts"]["placed"], 5);
    assert_eq!(q["data"]["counts"]["processing"], 2);
    assert_eq!(q["data"]["jobs"].as_array().unwrap().len(), 7);
    assert!(!q.to_string().contains("never-shown"), "{q}");
    assert!(!q.to_string().contains("password"), "{q}");

    let (_, q) = api.get("/queue?status=processing").await;
    assert_eq!(q["data"]["length"], 2);
    assert!(
        q["data"]["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["status"] == "processing")
    );

    let (_, q) = api.get("/queue?q=ws-1").await;
    let found: Vec<_> = q["data"]["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["worksheet"].clone())
        .collect();
    assert_eq!(found.len(), 3, "{q}");
    assert!(found.iter().all(|w| w == "WS-1"));

    let mut seen = HashSet::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let (status, q) = api.get(&format!("/queue?limit=3&cursor={cursor}")).await;
        assert_eq!(status, StatusCode::OK, "{q}");
        pages += 1;
        for j in q["data"]["jobs"].as_array().unwrap() {
            assert!(seen.insert(j["id"].to_string()), "a job on two pages");
        }
        match q["data"]["next_cursor"].as_str() {
            Some(c) => cursor = c.into(),
            None => break,
        }
    }
    assert_eq!((seen.len(), pages), (7, 3));

    for bad in [
        "status=lost",
        "type=nope",
        "limit=0",
        "limit=10000",
        "cursor=zzz",
        "limit=abc",
    ] {
        let (status, body) = api.get(&format!("/queue?{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(body["success"], false);
    }
}

#[tokio::test]
async fn clearing_the_queue_removes_only_waiting_jobs_which_keep_their_status_and_log() {
    let api = TestApi::start().await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(
            api.create_ok(&order(&format!("c-{i}"))).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let leased = api.lease("w", 1, 0, 30_000).await;
    let in_flight = leased["jobs"][0]["job_id"].as_str().unwrap().to_string();

    let (status, body) = api.put("/clear_queue").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["cleared"], 3);
    assert!(body["message"].as_str().unwrap().contains('3'));

    for id in &ids {
        let job = api.job(id).await;
        if *id == in_flight {
            assert_eq!(job["status"], "processing");
        } else {
            assert_eq!(job["status"], "cleared");
            let log = api.log(id).await;
            assert_eq!(log.last().unwrap()["to"], "cleared");
            assert_eq!(log.len(), 2);
        }
    }
    let (_, q) = api.get("/queue?status=cleared").await;
    assert_eq!(q["data"]["length"], 3);
    let (_, body) = api.put("/clear_queue").await;
    assert_eq!(body["data"]["cleared"], 0);
}

#[tokio::test]
async fn a_waiting_job_and_alive_say_why_it_waits() {
    let api = TestApi::start().await;
    api.create_ok(&order("waits")).await;
    let (_, body) = api.status_of("waits").await;
    assert_eq!(
        body["data"]["waiting_for"], "no worker is connected to deliver it",
        "{body}"
    );
    api.put("/stop_worker").await;
    let (_, body) = api.status_of("waits").await;
    let why = body["data"]["waiting_for"].as_str().unwrap();
    assert!(
        why.contains("worker is stopped") && why.contains("/start_worker"),
        "{body}"
    );
    assert_eq!(api.alive().await["waiting_for"], why);
    let (_, q) = api.get("/queue").await;
    assert_eq!(q["data"]["jobs"][0]["waiting_for"], why, "{q}");

    // Delivered jobs wait for nothing; a tenant with nothing waiting has nothing to explain.
    api.put("/start_worker").await;
    let leased = api.lease("w", 1, 0, 30_000).await;
    let job = &leased["jobs"][0];
    api.report(
        "w",
        serde_json::json!([{"job_id": job["job_id"], "lease_id": job["lease_id"],
                "outcome": {"kind": "created", "target_ref": "L-1"}}]),
    )
    .await;
    let (_, body) = api.status_of("waits").await;
    assert!(body["data"].get("waiting_for").is_none(), "{body}");
    assert!(api.alive().await["waiting_for"].is_null());
}
