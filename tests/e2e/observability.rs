use std::time::Duration;

use ferry_tests::{ApiOptions, TestApi, TestSim, TestWorker, eventually, order};
use reqwest::StatusCode;
use serde_json::Value;

const PASSWORD: &str = "Sup3r-S3cret-9f2";

#[tokio::test]
async fn a_jobs_password_reaches_the_erp_and_appears_in_no_log_answer_or_metric() {
    let sim = TestSim::with_args(&["--basic", &format!("ann:{PASSWORD}")]);
    let api = TestApi::with(
        ApiOptions::default()
            .target(&sim.base())
            .env("FERRY_TARGET__AUTH__KIND", "job")
            .env("FERRY_LOG_LEVEL", "trace"),
    )
    .await;
    let worker = TestWorker::start(&api.base(), &["--log-level", "trace"], &[]);
    let mut o = order("secretive");
    o["username"] = "ann".into();
    o["password"] = PASSWORD.into();
    let id = api.create_ok(&o).await["id"].as_str().unwrap().to_string();
    let mut wrong = order("mistyped");
    wrong["username"] = "ann".into();
    wrong["password"] = format!("{PASSWORD}-typo").into();
    api.create_ok(&wrong).await;
    eventually("both jobs to finish", Duration::from_secs(20), || async {
        let alive = api.alive().await;
        (alive["queue"]["created"] == 1 && alive["queue"]["error"] == 1).then_some(())
    })
    .await;
    assert_eq!(
        sim.lines().await["count"],
        1,
        "the password was used at the ERP"
    );
    assert_eq!(
        api.status_of("mistyped").await.1["data"]["reason_code"],
        "ERP_AUTH_FAILED"
    );

    let mut seen = vec![
        ("api stdout".to_string(), api.output()),
        ("worker output".to_string(), worker.output()),
        (
            "api.log".to_string(),
            std::fs::read_to_string(api.data.path().join("bennys-auto/api.log")).unwrap(),
        ),
    ];
    for path in [
        "/queue?status=placed,processing,created,error,cleared".to_string(),
        "/queue?type=error".to_string(),
        "/get_order_status?uniqueid=secretive".to_string(),
        "/check_order_status?unique_id=mistyped".to_string(),
        format!("/jobs/{id}"),
        format!("/jobs/{id}/log"),
    ] {
        seen.push((path.clone(), api.get(&path).await.1.to_string()));
    }
    let metrics = reqwest::get(format!("{}/metrics", api.base()))
        .await
        .unwrap();
    seen.push(("/metrics".into(), metrics.text().await.unwrap()));
    for (place, text) in &seen {
        assert!(
            !text.is_empty(),
            "{place} is empty: the check would prove nothing"
        );
        assert!(!text.contains(PASSWORD), "the password appears in {place}");
    }
}

#[tokio::test]
async fn metrics_count_intake_deliveries_and_errors_by_reason_for_the_tenant() {
    let sim = TestSim::start();
    sim.missing("404").await;
    let api = TestApi::with(ApiOptions::default().target(&sim.base())).await;
    let _worker = TestWorker::start(&api.base(), &[], &[]);
    api.create_ok(&order("fine")).await;
    api.create_ok(&order("fine")).await;
    let mut bad = order("nowhere");
    bad["worksheet"] = "404".into();
    api.create_ok(&bad).await;
    eventually("both jobs to finish", Duration::from_secs(20), || async {
        (api.alive().await["queue"]["placed"] == 0 && api.alive().await["queue"]["processing"] == 0)
            .then_some(())
    })
    .await;
    let resp = reqwest::get(format!("{}/metrics", api.base()))
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "open without a key, like /alive"
    );
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = resp.text().await.unwrap();
    for line in [
        r#"ferry_jobs{tenant="bennys-auto",status="created"} 1"#,
        r#"ferry_jobs{tenant="bennys-auto",status="error"} 1"#,
        r#"ferry_intake_total{tenant="bennys-auto",kind="order_line",result="created"} 2"#,
        r#"ferry_intake_total{tenant="bennys-auto",kind="order_line",result="duplicate"} 1"#,
        r#"ferry_deliveries_total{tenant="bennys-auto",outcome="created"} 1"#,
        r#"ferry_target_errors_total{tenant="bennys-auto",reason_code="ERP_WORKSHEET_NOT_FOUND"} 1"#,
        r#"ferry_delivery_duration_seconds_count{tenant="bennys-auto"} 2"#,
        r#"ferry_queue_depth{tenant="bennys-auto"} 0"#,
        r#"ferry_worker_connected{tenant="bennys-auto"} 1"#,
        r#"ferry_attempts_total{tenant="bennys-auto"} 2"#,
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
    }
}

#[tokio::test]
async fn every_request_has_an_id_that_its_log_lines_carry() {
    let api = TestApi::with(ApiOptions::default().env("FERRY_LOG_LEVEL", "debug")).await;
    let resp = api
        .http
        .post(format!("{}/create", api.base()))
        .header("x-request-id", "rid-from-oilmat-42")
        .json(&order("traced"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "rid-from-oilmat-42");
    let fresh = api
        .http
        .get(format!("{}/alive", api.base()))
        .send()
        .await
        .unwrap();
    assert!(
        fresh.headers()["x-request-id"].len() >= 16,
        "a new id when none is given"
    );
    let log = std::fs::read_to_string(api.data.path().join("bennys-auto/api.log")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("rid-from-oilmat-42") && l.contains("job placed")),
        "{log}"
    );
}

#[tokio::test]
async fn json_logs_are_one_object_a_line() {
    let api = TestApi::with(
        ApiOptions::default()
            .env("FERRY_LOG_FORMAT", "json")
            .env("FERRY_LOG_LEVEL", "debug"),
    )
    .await;
    api.create_ok(&order("json")).await;
    let log = std::fs::read_to_string(api.data.path().join("bennys-auto/api.log")).unwrap();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(lines.len() >= 3);
    assert!(lines.iter().any(|l| l["fields"]["message"] == "job placed"));
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["timestamp"].is_string())
    );
}
