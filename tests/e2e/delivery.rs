use std::time::Duration;

use ferry_tests::{ApiOptions, TestApi, TestSim, TestWorker, eventually, order, order_on};
use reqwest::StatusCode;
use serde_json::Value;

/// An api delivering to `sim`, with fast retries.
async fn api_for(sim: &TestSim) -> TestApi {
    TestApi::with(
        ApiOptions::default()
            .target(&sim.base())
            .env("FERRY_RETRY__BASE_MS", "50")
            .env("FERRY_RETRY__MAX_BACKOFF_MS", "200"),
    )
    .await
}

fn worker(api: &TestApi, extra: &[&str]) -> TestWorker {
    TestWorker::start(&api.base(), extra, &[])
}

async fn wait_status(api: &TestApi, uniqueid: &str, status: &str) -> Value {
    eventually(
        &format!("{uniqueid} to be {status}"),
        Duration::from_secs(20),
        || async {
            let (_, body) = api.status_of(uniqueid).await;
            (body["data"]["status"] == status).then(|| body["data"].clone())
        },
    )
    .await
}

/// Waits until every job is created; fails naming what is not.
async fn wait_all_created(api: &TestApi, n: usize, within: Duration) {
    eventually("every job to be created", within, || async {
        let alive = api.alive().await;
        (alive["queue"]["created"].as_u64() == Some(n as u64)).then_some(())
    })
    .await;
}

fn millis(rfc3339: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339.as_str().unwrap())
        .unwrap()
        .timestamp_millis()
}

#[tokio::test]
async fn an_order_becomes_exactly_one_line_in_the_erp_and_keeps_its_reference() {
    let sim = TestSim::start();
    let api = api_for(&sim).await;
    let _worker = worker(&api, &[]);
    api.create_ok(&order("happy-1")).await;
    let job = wait_status(&api, "happy-1", "created").await;
    assert_eq!(job["attempts"], 1);
    let lines = sim.lines().await;
    assert_eq!(lines["count"], 1);
    let line = &lines["lines"][0];
    assert_eq!(job["target_ref"], line["id"]);
    assert_eq!(line["worksheet"], "558");
    assert_eq!(line["product_nr"], "10");
    assert_eq!(line["amount"], 5.0, "amount is a JSON number");
    assert_eq!(line["reference"], "OilMat:happy-1");
    assert_eq!(line["idempotency_key"], "happy-1");
    let log = api.log(job["id"].as_str().unwrap()).await;
    let last = log.last().unwrap();
    assert_eq!(last["to"], "created");
    assert_eq!(last["http_status"], 201);
    assert!(last["duration_ms"].is_u64());
}

#[tokio::test]
async fn the_simulators_count_answers_when_the_lines_asked_for_arrive_or_its_wait_ends() {
    let sim = TestSim::start();
    let api = api_for(&sim).await;
    let waiting = sim.count_at_least(3, 60_000);
    tokio::pin!(waiting);
    let early = tokio::time::timeout(Duration::from_millis(200), &mut waiting).await;
    assert!(early.is_err(), "answered before any line: {early:?}");
    let _worker = worker(&api, &[]);
    for i in 0..3 {
        api.create_ok(&order(&format!("count-{i}"))).await;
    }
    // Well before its own 60 s wait ends: woken by the third line.
    let answer = tokio::time::timeout(Duration::from_secs(15), waiting)
        .await
        .expect("the count answers once the lines are there");
    assert_eq!(answer["count"], 3, "{answer}");

    let started = std::time::Instant::now();
    let answer = sim.count_at_least(4, 300).await;
    assert_eq!(answer["count"], 3, "{answer}");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "waited its wait_ms"
    );
}

#[tokio::test]
async fn server_errors_are_retried_and_every_attempt_is_in_the_log() {
    let sim = TestSim::start();
    sim.fault(serde_json::json!({"count": 2, "status": 500}))
        .await;
    let api = api_for(&sim).await;
    let _worker = worker(&api, &[]);
    api.create_ok(&order("flaky")).await;
    let job = wait_status(&api, "flaky", "created").await;
    assert_eq!(job["attempts"], 3);
    let log = api.log(job["id"].as_str().unwrap()).await;
    let failures: Vec<&Value> = log.iter().filter(|e| e["http_status"] == 500).collect();
    assert_eq!(failures.len(), 2, "{log:#?}");
    assert!(
        failures[0]["message"]
            .as_str()
            .unwrap()
            .contains("ERP_UNAVAILABLE")
    );
    assert!(
        failures[0]["excerpt"]
            .as_str()
            .unwrap()
            .contains("injected 500")
    );
    assert_eq!(sim.lines().await["count"], 1);
}

#[tokio::test]
async fn a_429_is_retried_no_sooner_than_its_retry_after() {
    let sim = TestSim::start();
    sim.fault(serde_json::json!({"count": 1, "status": 429, "retry_after": 2}))
        .await;
    let api = api_for(&sim).await;
    let _worker = worker(&api, &[]);
    api.create_ok(&order("busy")).await;
    let job = wait_status(&api, "busy", "created").await;
    assert_eq!(job["attempts"], 2);
    let log = api.log(job["id"].as_str().unwrap()).await;
    let limited = log
        .iter()
        .find(|e| e["http_status"] == 429)
        .expect("the 429 attempt");
    assert!(
        limited["message"]
            .as_str()
            .unwrap()
            .contains("ERP_RATE_LIMITED")
    );
    let second_lease = log
        .iter()
        .filter(|e| e["to"] == "processing")
        .nth(1)
        .expect("a second attempt");
    let waited = millis(&second_lease["at"]) - millis(&limited["at"]);
    assert!(
        waited >= 2_000,
        "retried after {waited} ms despite Retry-After: 2"
    );
}

#[tokio::test]
async fn a_missing_worksheet_ends_in_error_at_once_without_retries() {
    let sim = TestSim::start();
    sim.missing("999").await;
    let api = api_for(&sim).await;
    let _worker = worker(&api, &[]);
    api.create_ok(&order_on("lost-sheet", "999")).await;
    let job = wait_status(&api, "lost-sheet", "error").await;
    assert_eq!(job["reason_code"], "ERP_WORKSHEET_NOT_FOUND");
    assert_eq!(job["attempts"], 1);
    assert_eq!(sim.lines().await["requests"], 1, "no retries");
}

#[tokio::test]
async fn stop_worker_stops_deliveries_and_start_worker_resumes_them() {
    let sim = TestSim::start();
    let api = api_for(&sim).await;
    let w = worker(&api, &["--poll-ms", "500"]);
    api.create_ok(&order("before")).await;
    wait_status(&api, "before", "created").await;

    let (status, _) = api.put("/stop_worker").await;
    assert_eq!(status, StatusCode::OK);
    api.create_ok(&order("held")).await;
    let held_at = std::time::Instant::now();
    // The worker heard the pause, and has asked for work since "held" was placed: it was not
    // given it.
    eventually(
        "the paused worker to poll again",
        Duration::from_secs(10),
        || async {
            let alive = api.alive().await;
            let since_contact = alive["worker"]["last_seen_ms_ago"].as_u64()?;
            (w.output().contains("paused=true")
                && u128::from(since_contact) < held_at.elapsed().as_millis())
            .then_some(())
        },
    )
    .await;
    assert_eq!(api.status_of("held").await.1["data"]["status"], "placed");
    assert_eq!(sim.lines().await["count"], 1);

    api.put("/start_worker").await;
    wait_status(&api, "held", "created").await;
    assert_eq!(sim.lines().await["count"], 2);
}

#[tokio::test]
async fn kill_stops_both_processes_with_exit_0_and_loses_nothing() {
    let sim = TestSim::start();
    sim.fault(serde_json::json!({"count": 5, "delay_ms": 300}))
        .await;
    let mut api = api_for(&sim).await;
    let mut worker = worker(&api, &["--concurrency", "4"]);
    let n = 40;
    for i in 0..n {
        api.create_ok(&order(&format!("k-{i}"))).await;
    }
    eventually("some deliveries", Duration::from_secs(10), || async {
        (sim.lines().await["count"].as_u64() > Some(0)).then_some(())
    })
    .await;
    let (status, _) = api.put("/kill").await;
    assert_eq!(status, StatusCode::OK);
    let w = worker.wait_exit(Duration::from_secs(30));
    let a = api.wait_exit(Duration::from_secs(30));
    assert!(w.success(), "worker exit {w}:\n{}", worker.output());
    assert!(a.success(), "api exit {a}");

    api.start_again();
    let alive = api.alive().await;
    let (created, placed) = (
        alive["queue"]["created"].as_u64().unwrap(),
        alive["queue"]["placed"].as_u64().unwrap(),
    );
    assert_eq!(created + placed, n, "{alive}");
    assert_eq!(
        alive["queue"]["processing"], 0,
        "the worker reported what it held"
    );
    let lines = sim.lines().await;
    assert_eq!(lines["count"].as_u64(), Some(created));
    assert_eq!(lines["duplicates"], 0);
}

#[tokio::test]
async fn a_worker_killed_mid_delivery_leaves_exactly_one_line_after_the_job_is_leased_again() {
    let sim = TestSim::start();
    sim.fault(serde_json::json!({"count": 1, "delay_ms": 1_500}))
        .await;
    let api = api_for(&sim).await;
    // A poll longer than the lease: the api waits at most half a lease, so the killed worker's
    // parked long-poll ends before its lease expires and cannot take the job once more.
    let mut first = worker(&api, &["--lease-ms", "2000", "--poll-ms", "5000"]);
    let id = api.create_ok(&order("orphan")).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    eventually("the delivery to start", Duration::from_secs(10), || async {
        (sim.lines().await["requests"] == 1).then_some(())
    })
    .await;
    let first_log = first.output();
    first.kill9();
    assert_eq!(api.job(&id).await["status"], "processing");

    let _second = worker(&api, &[]);
    let job = wait_status(&api, "orphan", "created").await;
    let log = api.log(&id).await;
    assert_eq!(job["attempts"], 2, "{log:#?}\nfirst worker:\n{first_log}");
    assert!(
        log.iter()
            .any(|e| e["message"].as_str().unwrap().contains("LEASE_EXPIRED")),
        "{log:#?}"
    );
    // The slow first request makes its line when its delay is over, whichever came first; the
    // Idempotency-Key makes the other a replay. Wait until both requests were answered.
    let lines = eventually(
        "both requests to finish",
        Duration::from_secs(10),
        || async {
            let lines = sim.lines().await;
            let done = lines["count"].as_u64()? + lines["replays"].as_u64()?;
            (lines["requests"] == 2 && done == 2).then_some(lines)
        },
    )
    .await;
    assert_eq!(lines["count"], 1, "{lines}");
    assert_eq!(lines["replays"], 1, "{lines}");
}

/// A worker at its largest concurrency holds 512 outcomes while its api is down; their JSON is
/// over the api's 64 KiB body limit, so it reports them in several bodies, each taken: no job
/// waits for its lease to expire, none is delivered twice.
#[tokio::test]
async fn outcomes_held_through_an_api_outage_are_reported_in_bodies_the_api_takes() {
    let sim = TestSim::start();
    let n = 512;
    sim.fault(serde_json::json!({"count": n, "delay_ms": 1500}))
        .await;
    let mut api = api_for(&sim).await;
    for i in 0..n {
        api.create_ok(&order(&format!("held-{i}"))).await;
    }
    let worker = worker(&api, &["--concurrency", "512", "--lease-ms", "60000"]);
    eventually("every job at the ERP", Duration::from_secs(20), || async {
        (sim.lines().await["requests"].as_u64() == Some(n as u64)).then_some(())
    })
    .await;
    api.kill9();
    eventually("every line made", Duration::from_secs(20), || async {
        (sim.lines().await["count"].as_u64() == Some(n as u64)).then_some(())
    })
    .await;
    api.start_again();
    // The leases last a minute: only reports can make the jobs `created` in time.
    wait_all_created(&api, n, Duration::from_secs(20)).await;
    let out = worker.output();
    assert!(out.contains("cannot report yet"), "{out}");
    assert!(!out.contains("report refused"), "{out}");
    let lines = sim.lines().await;
    assert_eq!(lines["requests"], n, "{lines}");
    assert_eq!(lines["duplicates"], 0);
}

#[tokio::test]
async fn the_worker_reconnects_after_the_api_is_killed_and_every_job_finishes() {
    let sim = TestSim::start();
    let mut api = api_for(&sim).await;
    let mut worker = worker(&api, &["--lease-ms", "2000", "--concurrency", "8"]);
    let n = 200;
    for i in 0..n {
        api.create_ok(&order(&format!("crash-{i}"))).await;
        if i == n / 2 {
            api.restart(); // kill -9, then start again on the same port
        }
    }
    wait_all_created(&api, n, Duration::from_secs(60)).await;
    assert!(worker.running(), "the worker survived its api's crash");
    let lines = sim.lines().await;
    assert_eq!(
        lines["count"].as_u64(),
        Some(n as u64),
        "{}",
        lines["count"]
    );
    assert_eq!(lines["duplicates"], 0);
}

#[tokio::test]
async fn two_workers_on_one_api_deliver_every_job_once() {
    let sim = TestSim::start();
    let api = api_for(&sim).await;
    let _a = worker(&api, &["--worker-id", "wa", "--concurrency", "8"]);
    let _b = worker(&api, &["--worker-id", "wb", "--concurrency", "8"]);
    let n = 300;
    for i in 0..n {
        api.create_ok(&order(&format!("pair-{i}"))).await;
    }
    wait_all_created(&api, n, Duration::from_secs(60)).await;
    let lines = sim.lines().await;
    assert_eq!(lines["count"].as_u64(), Some(n as u64));
    assert_eq!(lines["duplicates"], 0);
    assert_eq!(lines["replays"], 0, "no job was delivered twice");
}

#[tokio::test]
async fn two_workers_share_a_backlog_they_start_on_together() {
    // Started together on a backlog, their leases meet in the api's groups: each must be given
    // jobs, not only the first to ask (the second found nothing and waited out its poll).
    let sim = TestSim::start();
    let api = api_for(&sim).await;
    api.put("/stop_worker").await;
    let n = 600;
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(api.create_ok(&order(&format!("backlog-{i}"))).await["id"].clone());
    }
    let args = |id| ["--worker-id", id, "--concurrency", "8", "--poll-ms", "1000"];
    let (a, b) = (worker(&api, &args("wa")), worker(&api, &args("wb")));
    // Each has heard the pause at the end of a poll, and so is waiting in its next one.
    eventually(
        "both workers to hear the pause",
        Duration::from_secs(10),
        || async {
            [&a, &b]
                .iter()
                .all(|w| w.output().contains("paused=true"))
                .then_some(())
        },
    )
    .await;
    api.put("/start_worker").await;
    wait_all_created(&api, n, Duration::from_secs(60)).await;
    let mut by = std::collections::HashMap::<String, usize>::new();
    for id in &ids {
        let log = api.log(id.as_str().expect("an id")).await;
        let leased = log
            .iter()
            .find(|e| e["message"] == "leased")
            .expect("leased");
        let by_whom = leased["worker_id"].as_str().unwrap_or("nobody");
        *by.entry(by_whom.to_string()).or_default() += 1;
    }
    for w in ["wa", "wb"] {
        let share = by.get(w).copied().unwrap_or(0);
        assert!(share >= n / 5, "{w} leased {share} of {n}: {by:?}");
    }
    assert_eq!(sim.lines().await["duplicates"], 0);
}

#[tokio::test]
async fn a_worker_leases_ahead_but_delivers_no_more_than_its_concurrency_at_once() {
    let sim = TestSim::start();
    // The first two deliveries hang for a while; the others are answered at once.
    sim.fault(serde_json::json!({"count": 2, "delay_ms": 3000}))
        .await;
    let api = api_for(&sim).await;
    for i in 0..8 {
        api.create_ok(&order(&format!("ahead-{i}"))).await;
    }
    let _w = worker(&api, &["--concurrency", "2", "--prefetch", "3"]);
    // Two at the ERP, three more leased and waiting in the worker, three still placed.
    let queue = eventually("five jobs in hand", Duration::from_secs(10), || async {
        let queue = api.alive().await["queue"].clone();
        (queue["processing"] == 5).then_some(queue)
    })
    .await;
    assert_eq!(queue["placed"], 3, "{queue}");
    let lines = sim.lines().await;
    assert_eq!(lines["requests"], 2, "only two deliveries at once: {lines}");
    wait_all_created(&api, 8, Duration::from_secs(30)).await;
    let lines = sim.lines().await;
    assert_eq!(
        (lines["count"].as_u64(), lines["duplicates"].as_u64()),
        (Some(8), Some(0))
    );
}

#[tokio::test]
async fn heartbeats_keep_deliveries_longer_than_the_lease_from_being_leased_again() {
    let sim = TestSim::start();
    // Each of the first two deliveries takes three leases' time.
    sim.fault(serde_json::json!({"count": 2, "delay_ms": 4_500}))
        .await;
    let api = api_for(&sim).await;
    let _w = worker(&api, &["--lease-ms", "1500"]);
    // The worker idles first (nothing in hand: its heartbeat waits without a timer), then takes
    // a job, finishes it, idles again and takes the next.
    eventually("the worker connected", Duration::from_secs(10), || async {
        (api.alive().await["worker"]["connected"] == true).then_some(())
    })
    .await;
    for id in ["long-1", "long-2"] {
        api.create_ok(&order(id)).await;
        let job = wait_status(&api, id, "created").await;
        let log = api.log(job["id"].as_str().unwrap()).await;
        assert_eq!(job["attempts"], 1, "the lease never expired: {log:#?}");
    }
    let lines = sim.lines().await;
    assert_eq!(
        (lines["requests"].as_u64(), lines["duplicates"].as_u64()),
        (Some(2), Some(0))
    );
}

/// An api and a worker with the job `in-hand` on its way to an ERP that takes 800 ms to answer.
async fn delivering_in_hand() -> (TestSim, TestApi, TestWorker) {
    let sim = TestSim::start();
    sim.fault(serde_json::json!({"count": 1, "delay_ms": 800}))
        .await;
    let api = api_for(&sim).await;
    let worker = worker(&api, &[]);
    api.create_ok(&order("in-hand")).await;
    eventually("the delivery to start", Duration::from_secs(10), || async {
        (sim.lines().await["requests"] == 1).then_some(())
    })
    .await;
    (sim, api, worker)
}

fn sigterm(pid: u32) {
    let sent = std::process::Command::new("kill")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(sent.success(), "kill {pid}: {sent}");
}

#[tokio::test]
async fn sigterm_lets_the_worker_finish_what_it_holds_and_exit_0() {
    let (_sim, api, mut worker) = delivering_in_hand().await;
    sigterm(worker.pid().unwrap());
    let status = worker.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status}:\n{}", worker.output());
    assert_eq!(
        api.status_of("in-hand").await.1["data"]["status"],
        "created"
    );
}

#[tokio::test]
async fn an_idle_worker_exits_on_sigterm_without_waiting_out_its_poll() {
    let sim = TestSim::start();
    let api = api_for(&sim).await;
    let mut worker = worker(&api, &["--poll-ms", "30000"]);
    // It has asked for work and finds none: its poll would last up to half a lease (15 s).
    eventually("the worker to poll", Duration::from_secs(10), || async {
        api.alive().await["worker"]["last_seen_ms_ago"]
            .as_u64()
            .map(|_| ())
    })
    .await;
    let signalled = std::time::Instant::now();
    sigterm(worker.pid().unwrap());
    let status = worker.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{status}:\n{}", worker.output());
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "exited {:?} after the signal: it waited out its poll",
        signalled.elapsed()
    );
}

#[tokio::test]
async fn a_second_sigterm_stops_the_worker_at_once_and_its_job_is_delivered_later() {
    let sim = TestSim::start();
    sim.fault(serde_json::json!({"count": 1, "delay_ms": 60_000}))
        .await;
    let api = api_for(&sim).await;
    let mut w = worker(&api, &["--grace-ms", "60000", "--lease-ms", "2000"]);
    api.create_ok(&order("stuck")).await;
    eventually("the delivery to start", Duration::from_secs(10), || async {
        (sim.lines().await["requests"] == 1).then_some(())
    })
    .await;
    sigterm(w.pid().unwrap());
    eventually(
        "the first signal to be heard",
        Duration::from_secs(10),
        || async {
            w.output()
                .contains("a second signal exits at once")
                .then_some(())
        },
    )
    .await;
    assert!(w.running(), "the first signal waits for the job in hand");
    sigterm(w.pid().unwrap());
    // Far less than the 60 s the ERP and the grace would take.
    let status = w.wait_exit(Duration::from_secs(10));
    assert!(!status.success(), "{status}");
    assert!(w.output().contains("second signal"), "{}", w.output());

    let _next = worker(&api, &[]);
    wait_status(&api, "stuck", "created").await;
    assert_eq!(sim.lines().await["count"], 1, "one line, not two");
}

/// A restart of the api alone (SIGTERM, as systemd or an upgrade sends it) waits for the worker
/// to report what it holds, and tells it to pause rather than exit: it is there when the api
/// comes back, though `Restart=on-failure` would not have started it again.
#[tokio::test]
async fn sigterm_to_the_api_takes_the_workers_report_and_keeps_the_worker() {
    let (_sim, mut api, mut worker) = delivering_in_hand().await;
    sigterm(api.pid().unwrap());
    let status = api.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status}");
    assert!(
        worker.running(),
        "the worker waits for its api:\n{}",
        worker.output()
    );

    api.start_again();
    assert_eq!(
        api.status_of("in-hand").await.1["data"]["status"],
        "created",
        "reported before the api stopped, not left to a lease's expiry"
    );
    api.create_ok(&order("after-restart")).await;
    wait_status(&api, "after-restart", "created").await;
    assert!(worker.running());
}

#[tokio::test]
async fn a_worker_with_the_wrong_token_says_so_and_exits_non_zero() {
    let sim = TestSim::start();
    let api = TestApi::with(ApiOptions::default().target(&sim.base()).key("right")).await;
    let mut worker = TestWorker::start(&api.base(), &[], &[("FERRY_WORKER_TOKEN", "wrong")]);
    let status = worker.wait_exit(Duration::from_secs(20));
    assert!(!status.success());
    assert!(
        worker.output().contains("UNAUTHORIZED"),
        "{}",
        worker.output()
    );
    let mut good = TestWorker::start(&api.base(), &[], &[("FERRY_WORKER_TOKEN", "right")]);
    api.create_ok(&order("authed")).await;
    wait_status(&api, "authed", "created").await;
    assert!(good.running());
}

#[tokio::test]
async fn basic_auth_from_the_config_reaches_the_erp_and_a_wrong_password_fails_as_auth() {
    let sim = TestSim::with_args(&["--basic", "ferry:s3cret"]);
    let opts = |password_env: &str| {
        ApiOptions::default()
            .target(&sim.base())
            .env("FERRY_TARGET__AUTH__KIND", "basic")
            .env("FERRY_TARGET__AUTH__USERNAME", "ferry")
            .env("FERRY_TARGET__AUTH__PASSWORD_ENV", password_env)
            .env("ERP_GOOD", "s3cret")
            .env("ERP_BAD", "guess")
    };
    let good = TestApi::with(opts("ERP_GOOD")).await;
    let _w1 = worker(&good, &[]);
    good.create_ok(&order("authed")).await;
    wait_status(&good, "authed", "created").await;

    let bad = TestApi::with(opts("ERP_BAD")).await;
    let _w2 = worker(&bad, &[]);
    bad.create_ok(&order("refused")).await;
    let job = wait_status(&bad, "refused", "error").await;
    assert_eq!(job["reason_code"], "ERP_AUTH_FAILED");
    assert_eq!(sim.lines().await["count"], 1);
    let config = good.get("/worker/config").await.1;
    assert_eq!(config["data"]["target"]["auth"]["kind"], "basic");
}

#[tokio::test]
async fn a_dropped_connection_and_a_failure_after_the_line_was_made_leave_one_line_each() {
    let sim = TestSim::start();
    let api = api_for(&sim).await;
    sim.fault(serde_json::json!({"count": 1, "drop": true}))
        .await;
    let _worker = worker(&api, &["--concurrency", "1"]);
    api.create_ok(&order_on("dropped", "701")).await;
    let job = wait_status(&api, "dropped", "created").await;
    assert_eq!(job["attempts"], 2);
    let log = api.log(job["id"].as_str().unwrap()).await;
    assert!(
        log.iter()
            .any(|e| e["message"].as_str().unwrap().contains("ERP_UNREACHABLE")),
        "{log:#?}"
    );

    sim.fault(serde_json::json!({"count": 1, "status": 500, "after_create": true}))
        .await;
    api.create_ok(&order_on("half-done", "702")).await;
    let job = wait_status(&api, "half-done", "created").await;
    assert_eq!(job["attempts"], 2);
    let lines = sim.lines().await;
    assert_eq!(lines["count"], 2);
    assert_eq!(
        lines["replays"], 1,
        "the retry replayed the idempotency key"
    );
    let on_702 = sim_lines_on(&sim, "702").await;
    assert_eq!(on_702.len(), 1);
    assert_eq!(job["target_ref"], on_702[0]["id"]);
}

async fn sim_lines_on(sim: &TestSim, worksheet: &str) -> Vec<Value> {
    reqwest::get(format!("{}/_sim/lines?worksheet={worksheet}", sim.base()))
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["lines"]
        .as_array()
        .unwrap()
        .clone()
}

/// `Key:   value` of a `/proc/<pid>/` file, as text without the unit.
fn proc_field(pid: u32, file: &str, key: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).expect("the process's file");
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(|v| v.trim().trim_end_matches(" kB").to_string())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/{file}"))
}

#[tokio::test]
async fn the_api_runs_on_small_pages_whatever_the_machine_says() {
    // Its allocator reserves memory 2 MiB-aligned: where huge pages are on for every mapping
    // (Debian's default), the pages it touches before `main` would be huge, 4 MiB an idle api.
    // It turns them off for itself and starts again, so none is ever touched.
    let sim = TestSim::start();
    let api = api_for(&sim).await;
    let _worker = worker(&api, &[]);
    api.create_ok(&order("small-pages-1")).await;
    wait_status(&api, "small-pages-1", "created").await;
    let pid = api.pid().expect("running");
    assert_eq!(proc_field(pid, "status", "THP_enabled"), "0");
    assert_eq!(proc_field(pid, "smaps_rollup", "AnonHugePages"), "0");
    // Started again in place: the same process, its arguments as given.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("the api's command line");
    assert!(cmdline.split(|b| *b == 0).any(|a| a == b"--port"));
}
