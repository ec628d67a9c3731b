use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_tests::{TestApi, order};
use reqwest::StatusCode;

#[tokio::test]
async fn a_restart_keeps_the_queue_the_statuses_and_the_worker_state() {
    let mut api = TestApi::start().await;
    for i in 0..5 {
        api.create_ok(&order(&format!("keep-{i}"))).await;
    }
    let leased = api.lease("w", 1, 0, 60_000).await;
    let id = leased["jobs"][0]["job_id"].as_str().unwrap().to_string();
    let lease = leased["jobs"][0]["lease_id"].as_str().unwrap().to_string();
    api.report(
        "w",
        serde_json::json!([{"job_id": id, "lease_id": lease,
            "outcome": {"kind": "failed", "reason_code": "ERP_REJECTED", "reason_text": "bad product"}}]),
    )
    .await;
    api.put("/stop_worker").await;
    let before = api
        .get("/queue?status=placed,processing,created,error,cleared")
        .await
        .1["data"]["counts"]
        .clone();

    for graceful in [false, true] {
        if graceful {
            let (status, _) = api.put("/kill").await;
            assert_eq!(status, StatusCode::OK);
            assert!(api.wait_exit(Duration::from_secs(20)).success());
            api.start_again();
        } else {
            api.restart();
        }
        let alive = api.alive().await;
        assert_eq!(
            alive["queue"], before,
            "after restart (graceful: {graceful})"
        );
        assert_eq!(alive["worker"]["desired"], "stopped");
        let job = api.job(&id).await;
        assert_eq!(job["status"], "error");
        assert_eq!(job["reason_code"], "ERP_REJECTED");
        assert_eq!(api.log(&id).await.len(), 3);
        assert_eq!(api.lease("w", 5, 0, 30_000).await["directive"], "pause");
    }
    api.put("/start_worker").await;
    api.restart();
    assert_eq!(api.alive().await["worker"]["desired"], "running");
    assert_eq!(
        api.lease("w", 10, 0, 30_000).await["jobs"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
}

/// Cheap, seedable randomness for kill moments (no extra dependency).
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[tokio::test]
async fn with_sled_every_job_acknowledged_before_a_kill_9_is_there_after_restart() {
    kill_9_rounds("sled").await;
}

#[tokio::test]
async fn with_redb_every_job_acknowledged_before_a_kill_9_is_there_after_restart() {
    kill_9_rounds("redb").await;
}

#[tokio::test]
async fn a_tenant_stays_with_the_engine_that_holds_its_data() {
    let mut api =
        TestApi::with(ferry_tests::ApiOptions::default().env("FERRY_STORE", "sled")).await;
    api.create_ok(&order("kept")).await;
    api.kill9();
    let (status, out) = ferry_tests::run_to_end(
        "ferry-api",
        &[
            "--port",
            "0",
            "--workshop",
            "Bennys Auto",
            "--data-dir",
            api.data.path().to_str().unwrap(),
            "--store",
            "redb",
        ],
        &[],
    );
    assert!(!status.success(), "{out}");
    assert!(out.contains("choose sled"), "{out}");
}

/// 16 clients post while the api is killed at a random moment, 10 rounds on one data dir.
async fn kill_9_rounds(store: &str) {
    const ROUNDS: usize = 10;
    const CLIENTS: usize = 16;
    let mut api = TestApi::with(ferry_tests::ApiOptions::default().env("FERRY_STORE", store)).await;
    let mut seed = std::process::id() as u64 * 0x9E37_79B9 + 1;
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    for round in 0..ROUNDS {
        let base = api.base();
        let mut clients = Vec::new();
        for c in 0..CLIENTS {
            let (http, base, acked) = (api.http.clone(), base.clone(), acked.clone());
            clients.push(tokio::spawn(async move {
                for i in 0.. {
                    let uid = format!("r{round}-c{c}-{i}");
                    let sent = http
                        .post(format!("{base}/create"))
                        .json(&order(&uid))
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status().is_success() => {
                            acked.lock().unwrap().insert(uid);
                        }
                        Ok(r) => panic!("unexpected answer {}", r.status()),
                        Err(_) => return, // the api died under us
                    }
                }
            }));
        }
        let pause = 50 + next(&mut seed) % 400;
        tokio::time::sleep(Duration::from_millis(pause)).await;
        api.kill9();
        for c in clients {
            c.await.expect("client task");
        }
        api.restart();

        let stored: HashSet<String> = api.all_uniqueids("placed").await.into_iter().collect();
        let acked = acked.lock().unwrap().clone();
        let lost: Vec<_> = acked.difference(&stored).collect();
        assert!(
            lost.is_empty(),
            "round {round}: {} acknowledged job(s) lost, e.g. {:?}",
            lost.len(),
            lost.iter().take(5).collect::<Vec<_>>()
        );
        // A job may be stored without its 2xx having arrived (the kill came in between); never
        // the reverse. The counters agree with the listing.
        let alive = api.alive().await;
        assert_eq!(
            alive["queue"]["placed"].as_u64().unwrap() as usize,
            stored.len()
        );
        assert!(stored.len() >= acked.len());
    }
    assert!(
        acked.lock().unwrap().len() > ROUNDS * 10,
        "the load was too light to mean anything"
    );
}
