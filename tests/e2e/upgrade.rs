use std::path::PathBuf;
use std::time::Duration;

use ferry_tests::{ApiOptions, TestApi, TestSim, TestWorker, eventually, order};
use reqwest::StatusCode;
use serde_json::json;

/// A store the previous release wrote (records of version 1; see tests/fixtures/README.md).
fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/store-v1")
}

/// Opens the fixture with `engine`: every job is there as it was, old and new paths answer, the
/// waiting job is delivered with the credentials it was sent with, and new jobs join it.
async fn an_old_store_opens_and_keeps_working(engine: &str) {
    let sim = TestSim::with_args(&["--basic", "ann:s3cret"]);
    let mut api = TestApi::with(
        ApiOptions {
            tenant_dir_from: Some(fixture()),
            ..ApiOptions::default()
        }
        .target(&sim.base())
        .env("FERRY_STORE", engine)
        .env("FERRY_TARGET__AUTH__KIND", "job"),
    )
    .await;
    let alive = api.alive().await;
    assert_eq!(alive["queue"]["placed"], 1, "{alive}");
    assert_eq!(alive["queue"]["created"], 1, "{alive}");
    assert_eq!(alive["queue"]["error"], 1, "{alive}");
    assert_eq!(
        alive["worker"]["desired"], "stopped",
        "kept across the upgrade"
    );

    let (_, created) = api.status_of("fx-created").await;
    assert_eq!(created["data"]["kind"], "order_line");
    assert_eq!(created["data"]["target_ref"], "L-1");
    let (_, failed) = api.status_of("fx-error").await;
    assert_eq!(failed["data"]["reason_code"], "ERP_WORKSHEET_NOT_FOUND");
    let (_, legacy) = api.status_of("fx-legacy").await;
    assert_eq!(legacy["data"]["dealer"], "Gygag");
    assert_eq!(legacy["data"]["username"], "ann");
    let old_path = api
        .http
        .get(format!(
            "{}/check_order_status?unique_id=fx-created",
            api.base()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        old_path.json::<serde_json::Value>().await.unwrap(),
        json!({"unique_id": "fx-created", "status": "completed", "reason": null})
    );
    // The same order again is still the same job; its uniqueid is still taken.
    let mut again = order("fx-created");
    again["amount"] = json!(5);
    let (status, body) = api.create(&again).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["new"], false);

    // The waiting job is delivered with the password stored by the old release (the simulator
    // takes only ann's), and a new order joins it.
    let mut new = order("after-upgrade");
    new["username"] = json!("ann");
    new["password"] = json!("s3cret");
    api.create_ok(&new).await;
    api.put("/start_worker").await;
    let _worker = TestWorker::start(&api.base(), &[], &[]);
    for uniqueid in ["fx-legacy", "after-upgrade"] {
        eventually(
            &format!("{uniqueid} delivered"),
            Duration::from_secs(20),
            || async {
                let (_, b) = api.status_of(uniqueid).await;
                (b["data"]["status"] == "created").then_some(())
            },
        )
        .await;
    }
    // Rewritten records (version 2) and untouched ones (version 1) open together.
    api.restart();
    let alive = api.alive().await;
    assert_eq!(alive["queue"]["created"], 3, "{alive}");
    assert_eq!(alive["queue"]["error"], 1, "{alive}");
}

#[tokio::test]
async fn a_redb_store_written_by_the_previous_release_opens_and_keeps_working() {
    an_old_store_opens_and_keeps_working("redb").await;
}

#[tokio::test]
async fn a_sled_store_written_by_the_previous_release_opens_and_keeps_working() {
    an_old_store_opens_and_keeps_working("sled").await;
}
