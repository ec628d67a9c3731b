//! A tenant's data dir on a 16 MB filesystem that fills while orders arrive and the worker
//! delivers: intake is refused honestly, the probes hear of it, and when space comes back intake
//! resumes without a restart, with nothing acknowledged lost. Once per engine.
//!
//! The filesystem is a tmpfs the test mounts, which needs root (as in CI). Where it cannot mount,
//! each test says so on stderr and returns.

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_tests::{ApiOptions, TestApi, TestSim, TestWorker, eventually, order, run_to_end};
use reqwest::StatusCode;
use serde_json::Value;

/// A tmpfs of a few MB, unmounted when dropped.
struct SmallDisk {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(mb: u32) -> Option<Self> {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mb}m,mode=0700"),
                "ferry-test",
            ])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Self {
                path: dir.path().to_path_buf(),
                _dir: dir,
            }),
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                    Err(e) => e.to_string(),
                };
                eprintln!("SKIPPED: cannot mount a {mb} MB tmpfs here (root is needed): {why}");
                None
            }
        }
    }

    /// Writes a file until the filesystem is full; answers its path.
    fn fill(&self) -> PathBuf {
        let path = self.path.join("filler");
        let mut file = std::fs::File::create(&path).expect("filler");
        let chunk = vec![1u8; 64 * 1024];
        loop {
            if let Err(e) = file.write_all(&chunk) {
                assert_eq!(e.kind(), std::io::ErrorKind::StorageFull, "{e}");
                return path;
            }
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazy: the processes using it are killed as the test's other values drop.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

#[derive(Default)]
struct Intake {
    acked: Mutex<Vec<String>>,
    refused: AtomicU64,
    stop: AtomicBool,
}

impl Intake {
    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }
}

/// Posts orders one after another until told to stop, as an upstream does: every 2xx is
/// remembered; every other answer must be the envelope of a full disk with a Retry-After, and the
/// same order is sent again. (A refused order may have been kept all the same: with sled, a group
/// whose flush failed can survive the reopen. Sending it again then answers 200 for it, once.)
fn post_orders(
    base: String,
    prefix: &'static str,
    intake: Arc<Intake>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let http = ferry_tests::http_client().build().unwrap();
        let mut i = 1;
        while !intake.stop.load(Ordering::Relaxed) {
            let id = format!("{prefix}-{i}");
            let resp = http
                .post(format!("{base}/create"))
                .json(&order(&id))
                .send()
                .await
                .expect("the api answers");
            let status = resp.status();
            let retry_after = resp.headers().get("retry-after").is_some();
            let body: Value = resp.json().await.expect("a JSON envelope");
            if status.is_success() {
                intake.acked.lock().unwrap().push(id);
                i += 1;
                continue;
            }
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
            assert_eq!(body["success"], false, "{body}");
            assert_eq!(body["error"]["code"], "DISK_FULL", "{body}");
            assert!(retry_after, "a refusal says when to come back");
            intake.refused.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

async fn a_full_disk_refuses_intake_and_comes_back_by_itself(store: &'static str) {
    let Some(disk) = SmallDisk::mount(16) else {
        return;
    };
    let sim = TestSim::start();
    let mut api = TestApi::with(
        ApiOptions {
            data_dir: Some(disk.path.join("data")),
            ..ApiOptions::default()
        }
        .target(&sim.base())
        .env("FERRY_STORE", store)
        .env("FERRY_DISK_RESERVE_MB", "1")
        .env("FERRY_DISK_WARN_MB", "4"),
    )
    .await;
    let worker = TestWorker::start(&api.base(), &[], &[]);
    let intake = Arc::new(Intake::default());
    let posting = post_orders(api.base(), store, intake.clone());
    eventually("the first orders", Duration::from_secs(30), || async {
        (intake.acked() >= 100).then_some(())
    })
    .await;

    let filler = disk.fill();
    eventually(
        "intake refused for a full disk",
        Duration::from_secs(60),
        || async { (intake.refused.load(Ordering::Relaxed) >= 20).then_some(()) },
    )
    .await;
    let (status, alive) = api.get("/alive").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{alive}");
    assert_eq!(alive["data"]["store_ok"], false, "{alive}");
    let problem = alive["data"]["store_problem"].as_str().unwrap_or_default();
    assert!(problem.starts_with("DISK_FULL"), "{alive}");
    // Reads go on: an acknowledged order's status.
    let first = intake.acked.lock().unwrap()[0].clone();
    eventually(
        "reads while the disk is full",
        Duration::from_secs(10),
        || async { (api.status_of(&first).await.0 == StatusCode::OK).then_some(()) },
    )
    .await;
    eventually("the metrics say so", Duration::from_secs(15), || async {
        let text = api.metrics().await;
        let refusing = metric(&text, "ferry_store_refusing_writes{");
        let low = metric(&text, "ferry_disk_low{");
        let refusals = text
            .lines()
            .find(|l| l.starts_with("ferry_store_refusals_total{") && l.contains("DISK_FULL"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
        (refusing == Some(1.0) && low == Some(1.0) && refusals.is_some_and(|n| n >= 20.0))
            .then_some(())
    })
    .await;

    // The fleet's table shows it.
    let tenants = api.data.path().join("tenants.toml");
    std::fs::write(
        &tenants,
        format!(
            "[[tenant]]\nname = \"Bennys Auto\"\nport = {}\n[tenant.target]\nkind = \"erp_rest\"\nbase_url = \"{}\"\n",
            api.port,
            sim.base()
        ),
    )
    .unwrap();
    let (done, table) = run_to_end(
        "ferryctl",
        &["fleet", "status", tenants.to_str().unwrap()],
        &[],
    );
    assert!(done.success(), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("Bennys Auto") && l.contains("disk-full")),
        "{table}"
    );

    // Space comes back: intake resumes by itself.
    std::fs::remove_file(&filler).expect("free the space");
    let before = intake.acked();
    eventually(
        "intake resumes without a restart",
        Duration::from_secs(20),
        || async { (intake.acked() >= before + 50).then_some(()) },
    )
    .await;
    assert_eq!(api.get("/alive").await.0, StatusCode::OK);
    intake.stop.store(true, Ordering::Relaxed);
    posting.await.expect("intake task");

    // Everything acknowledged is delivered, once.
    let acked: HashSet<String> = intake.acked.lock().unwrap().iter().cloned().collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while sim.lines().await["count"].as_u64() != Some(acked.len() as u64) {
        if std::time::Instant::now() > deadline {
            let not_done = api.all_uniqueids("placed,processing,error").await;
            panic!(
                "{} lines for {} orders acknowledged; not done: {not_done:?}; lost: {:?}",
                sim.lines().await["count"],
                acked.len(),
                lost(&api, &acked).await
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sim.lines().await["duplicates"], 0);
    drop(worker);

    eprintln!(
        "{store}: {} orders acknowledged, {} refused while the disk was full",
        acked.len(),
        intake.refused.load(Ordering::Relaxed)
    );

    // And a restart loses nothing.
    api.restart();
    let lost = lost(&api, &acked).await;
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
}

/// The acknowledged orders the api does not have.
async fn lost(api: &TestApi, acked: &HashSet<String>) -> Vec<String> {
    let stored: HashSet<String> = api
        .all_uniqueids("placed,processing,created,error")
        .await
        .into_iter()
        .collect();
    acked.difference(&stored).cloned().collect()
}

#[tokio::test]
async fn a_full_disk_refuses_intake_and_comes_back_by_itself_with_redb() {
    a_full_disk_refuses_intake_and_comes_back_by_itself("redb").await;
}

#[tokio::test]
async fn a_full_disk_refuses_intake_and_comes_back_by_itself_with_sled() {
    a_full_disk_refuses_intake_and_comes_back_by_itself("sled").await;
}
