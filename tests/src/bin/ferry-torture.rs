//! `ferry-torture`: tortures one store engine through the real `ferry-api`.
//!
//! `--cycles N`: each cycle runs concurrent intake and simulated workers (lease, random outcome,
//! report) and `kill -9`s the api at a random moment, restarts it, and checks: the database
//! opens; every job acknowledged with a 2xx exists; every accepted `created` report stuck; no job
//! is in two states; the per-status counts equal the listing; and, with no worker, every job in
//! flight comes back from its lease (no lease lost).
//!
//! `--churn N`: N jobs through the queue (intake, delivery, pruning with zero retention), sampling
//! the api's resident memory and disk size; fails on growth that does not level off, or when no
//! job finishes for 30 s (a watchdog, not a wait forever).

// A torture test that cannot unwrap should fail loudly.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use ferry_tests::{ApiOptions, TestApi, order};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(
    name = "ferry-torture",
    about = "kill -9 and churn tests of a ferry-api store engine"
)]
struct Cli {
    /// sled or redb.
    #[arg(long, default_value = "sled")]
    store: String,
    /// kill -9 cycles to run.
    #[arg(long, default_value_t = 0)]
    cycles: u32,
    /// Jobs to push through the queue in the churn run.
    #[arg(long, default_value_t = 0)]
    churn: u64,
    /// Give up (and fail) after this many seconds.
    #[arg(long, default_value_t = 600)]
    seconds: u64,
}

type Seen = Arc<Mutex<HashSet<String>>>;

fn rand(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let deadline = Instant::now() + Duration::from_secs(cli.seconds);
    tokio::spawn(async move {
        tokio::time::sleep_until(deadline.into()).await;
        eprintln!("FAILED: ferry-torture ran past --seconds (a hang?)");
        std::process::exit(2);
    });
    if cli.cycles > 0 {
        cycles(&cli.store, cli.cycles).await;
    }
    if cli.churn > 0 {
        churn(&cli.store, cli.churn).await;
    }
}

fn api_options(store: &str) -> ApiOptions {
    ApiOptions::default()
        .env("FERRY_STORE", store)
        .env("FERRY_MAX_QUEUE", "100000000")
        .env("FERRY_RETRY__BASE_MS", "10")
        .env("FERRY_RETRY__MAX_BACKOFF_MS", "50")
        .env("FERRY_RETRY__MAX_ATTEMPTS", "1000")
}

async fn cycles(store: &str, n: u32) {
    let mut api = TestApi::with(api_options(store)).await;
    let acked: Seen = Arc::default();
    let done: Seen = Arc::default();
    let mut seed = u64::from(std::process::id()) * 0x9E37_79B9 + 7;
    println!("torture {store}: {n} cycles of intake, leasing and reporting with kill -9");
    for cycle in 0..n {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for c in 0..8 {
            let (http, base, acked, stop) =
                (api.http.clone(), api.base(), acked.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let uid = format!("t{cycle}-{c}-{i}");
                    i += 1;
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
                        _ => return,
                    }
                }
            }));
        }
        for w in 0..2 {
            let (http, base, done, stop) =
                (api.http.clone(), api.base(), done.clone(), stop.clone());
            let mut wseed = seed ^ (w + 1);
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if work_once(&http, &base, &format!("w{w}"), &done, &mut wseed)
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(100 + rand(&mut seed) % 500)).await;
        api.kill9();
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.expect("task");
        }
        api.restart();
        let jobs = check(&api, &acked, &done).await;
        leases_come_back(&api).await;
        println!(
            "  cycle {:>3}: {} jobs, {} acknowledged, {} reported created, no lease lost: ok",
            cycle + 1,
            jobs,
            acked.lock().unwrap().len(),
            done.lock().unwrap().len()
        );
    }
    check(&api, &acked, &done).await;
    println!("torture {store}: ok");
}

/// The leases taken before the kill were for 1 s; with no worker now, every job in flight must
/// come back to the queue.
async fn leases_come_back(api: &TestApi) {
    let started = Instant::now();
    loop {
        let alive = api.alive().await;
        if alive["queue"]["processing"] == 0 {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "FAILED: jobs stuck in processing after their leases expired: {alive}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One worker step over HTTP: lease, pick an outcome, report. Err when the api is gone.
async fn work_once(
    http: &reqwest::Client,
    base: &str,
    worker: &str,
    done: &Seen,
    seed: &mut u64,
) -> Result<(), ()> {
    let lease = json!({"worker_id": worker, "max": 16, "wait_ms": 100, "lease_ms": 1000});
    let answer: Value = post(http, &format!("{base}/worker/lease"), &lease).await?;
    let jobs = answer["data"]["jobs"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if jobs.is_empty() {
        return Ok(());
    }
    let mut results = Vec::new();
    let mut created = HashMap::new();
    for j in &jobs {
        let outcome = match rand(seed) % 10 {
            0..=6 => json!({"kind": "created", "target_ref": "L"}),
            7 | 8 => {
                json!({"kind": "retry", "reason_code": "ERP_UNAVAILABLE", "reason_text": "503", "after_ms": 0})
            }
            _ => json!({"kind": "failed", "reason_code": "ERP_REJECTED", "reason_text": "400"}),
        };
        if outcome["kind"] == "created" {
            created.insert(j["job_id"].clone(), j["payload"]["uniqueid"].clone());
        }
        results.push(json!({"job_id": j["job_id"], "lease_id": j["lease_id"], "outcome": outcome}));
    }
    let report = json!({"worker_id": worker, "results": results});
    let answer: Value = post(http, &format!("{base}/worker/report"), &report).await?;
    for ack in answer["data"]["results"].as_array().into_iter().flatten() {
        if ack["accepted"] == true
            && let Some(uid) = created.get(&ack["job_id"]).and_then(Value::as_str)
        {
            done.lock().unwrap().insert(uid.to_string());
        }
    }
    Ok(())
}

async fn post(http: &reqwest::Client, url: &str, body: &Value) -> Result<Value, ()> {
    let resp = http
        .post(url)
        .json(body)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|_| ())?;
    if !resp.status().is_success() {
        return Err(());
    }
    resp.json().await.map_err(|_| ())
}

/// The invariants after a restart; answers how many jobs there are.
async fn check(api: &TestApi, acked: &Seen, done: &Seen) -> usize {
    // Leases expiring in the api move jobs while we look: compare counts with a listing taken
    // between two equal readings of them.
    let statuses = ["placed", "processing", "created", "error", "cleared"];
    let mut attempts = 0;
    let status_of = loop {
        attempts += 1;
        let before = api.alive().await["queue"].clone();
        let mut status_of: HashMap<String, &str> = HashMap::new();
        for st in statuses {
            for uid in api.all_uniqueids(st).await {
                if let Some(other) = status_of.insert(uid.clone(), st) {
                    panic!("FAILED: job {uid} is both {other} and {st}");
                }
            }
        }
        let after = api.alive().await["queue"].clone();
        if before != after {
            assert!(attempts < 50, "FAILED: the counts never settled");
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        for st in statuses {
            let listed = status_of.values().filter(|s| **s == st).count() as u64;
            assert_eq!(
                after[st].as_u64(),
                Some(listed),
                "FAILED: the {st} count disagrees with the listing"
            );
        }
        break status_of;
    };
    let missing: Vec<_> = acked
        .lock()
        .unwrap()
        .iter()
        .filter(|u| !status_of.contains_key(*u))
        .cloned()
        .collect();
    assert!(
        missing.is_empty(),
        "FAILED: {} acknowledged job(s) lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let reverted: Vec<_> = done
        .lock()
        .unwrap()
        .iter()
        .filter(|u| status_of.get(*u) != Some(&"created"))
        .cloned()
        .collect();
    assert!(
        reverted.is_empty(),
        "FAILED: {} accepted created report(s) lost, e.g. {:?}",
        reverted.len(),
        &reverted[..reverted.len().min(5)]
    );
    status_of.len()
}

fn dir_bytes(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

async fn churn(store: &str, n: u64) {
    let api = TestApi::with(
        api_options(store)
            .env("FERRY_RETENTION_HOURS", "0")
            .env("FERRY_PRUNE_EVERY_MS", "1000"),
    )
    .await;
    let pid = api.pid().expect("api running");
    println!("churn {store}: {n} jobs through the queue, finished jobs pruned every second");
    let posted = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (http, base, posted) = (api.http.clone(), api.base(), posted.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = posted.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                let body = order(&format!("c{i}"));
                let ok = http
                    .post(format!("{base}/create"))
                    .json(&body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                assert!(ok, "FAILED: intake refused job {i}");
            }
        }));
    }
    for w in 0..2 {
        let (http, base, finished) = (api.http.clone(), api.base(), finished.clone());
        tasks.push(tokio::spawn(async move {
            let worker = format!("w{w}");
            while finished.load(Ordering::Relaxed) < n {
                let lease =
                    json!({"worker_id": worker, "max": 256, "wait_ms": 200, "lease_ms": 30000});
                let Ok(answer) = post(&http, &format!("{base}/worker/lease"), &lease).await else {
                    continue;
                };
                let jobs = answer["data"]["jobs"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                if jobs.is_empty() {
                    continue;
                }
                let results: Vec<Value> = jobs
                    .iter()
                    .map(|j| {
                        json!({"job_id": j["job_id"], "lease_id": j["lease_id"],
                                     "outcome": {"kind": "created", "target_ref": "L"}})
                    })
                    .collect();
                let report = json!({"worker_id": worker, "results": results});
                if post(&http, &format!("{base}/worker/report"), &report)
                    .await
                    .is_ok()
                {
                    finished.fetch_add(jobs.len() as u64, Ordering::Relaxed);
                }
            }
        }));
    }
    let started = Instant::now();
    let mut samples: Vec<(f64, u64, u64, u64)> = Vec::new();
    let (mut last_done, mut last_progress) = (0, Instant::now());
    println!(
        "  {:>7}  {:>9}  {:>8}  {:>8}",
        "seconds", "finished", "RSS MB", "disk MB"
    );
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let done = finished.load(Ordering::Relaxed).min(n);
        let (rss, disk) = (rss_kb(pid), dir_bytes(api.data.path()));
        let secs = started.elapsed().as_secs_f64();
        samples.push((secs, done, rss, disk));
        println!(
            "  {secs:>7.0}  {done:>9}  {:>8.1}  {:>8.1}",
            rss as f64 / 1024.0,
            disk as f64 / 1048576.0
        );
        if done > last_done {
            (last_done, last_progress) = (done, Instant::now());
        }
        assert!(
            last_progress.elapsed() < Duration::from_secs(30),
            "FAILED: no job finished for 30 s (hang)"
        );
        if done >= n {
            break;
        }
    }
    for t in tasks {
        t.await.expect("task");
    }
    // Growth must level off: the peak of the last half stays within 2x (plus slack) of the
    // peak of the second quarter, when the queue had reached its working size.
    let q = samples.len() / 4;
    if q >= 1 {
        let peak = |range: &[(f64, u64, u64, u64)], f: fn(&(f64, u64, u64, u64)) -> u64| {
            range.iter().map(f).max().unwrap_or(0)
        };
        let early = &samples[q..2 * q];
        let late = &samples[samples.len() / 2..];
        for (what, f, slack) in [
            (
                "resident memory",
                (|s: &(f64, u64, u64, u64)| s.2) as fn(&_) -> u64,
                20 * 1024,
            ),
            ("disk", |s: &(f64, u64, u64, u64)| s.3 / 1024, 64 * 1024),
        ] {
            let (e, l) = (peak(early, f), peak(late, f));
            assert!(
                l <= 2 * e + slack,
                "FAILED: {what} kept growing: {} MB early, {} MB late",
                e / 1024,
                l / 1024
            );
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "churn {store}: ok, {n} jobs in {secs:.0} s ({:.0} jobs/s), peak RSS {:.0} MB, peak disk {:.0} MB",
        n as f64 / secs,
        samples.iter().map(|s| s.2).max().unwrap_or(0) as f64 / 1024.0,
        samples.iter().map(|s| s.3).max().unwrap_or(0) as f64 / 1048576.0
    );
}
