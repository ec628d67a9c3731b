use std::time::Duration;

use ferry_tests::{ApiOptions, TestApi, order, run_to_end};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn unknown_routes_and_wrong_methods_answer_in_the_envelope() {
    let api = TestApi::start().await;
    let (status, body) = api.get("/nothing/here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["success"], false);
    assert_eq!(body["error"]["code"], "NOT_FOUND");

    for (method, path) in [
        ("GET", "/create"),
        ("POST", "/queue"),
        ("GET", "/kill"),
        ("DELETE", "/alive"),
        ("GET", "/worker/lease"),
    ] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let (status, body) = api
            .send(api.http.request(m, format!("{}{path}", api.base())))
            .await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_eq!(body["error"]["code"], "METHOD_NOT_ALLOWED");
    }
    let resp = api
        .http
        .delete(format!("{}/alive", api.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["allow"],
        "GET, HEAD",
        "a 405 says what the route takes"
    );
    let resp = api
        .http
        .head(format!("{}/alive", api.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "HEAD goes with GET");
    assert!(resp.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_openapi_document_describes_every_route_and_the_docs_work_offline() {
    let api = TestApi::with(ApiOptions::default().key("k-doc")).await;
    let url = |p: &str| format!("{}{p}", api.base());

    // Open, like /alive: the document holds no tenant data.
    let resp = api.http.get(url("/openapi.json")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let doc: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "ferry-api: Bennys Auto");
    let documented: Vec<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(|m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    assert!(
        documented.contains(&("POST".into(), "/create".into())) && documented.len() > 10,
        "{documented:?}"
    );

    // Each documented operation reaches a handler: no route-level 404 or 405.
    for (method, path) in documented.iter().filter(|(_, p)| p != "/kill") {
        let path = path
            .replace("{id}", "0190f2c4-1a2b-7c3d-8e4f-0123456789ab")
            .replace("{key}", "a-key");
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let resp = api
            .http
            .request(m, url(&path))
            .header("x-api-key", "k-doc")
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.text().await.unwrap();
        assert!(
            !matches!(
                status,
                StatusCode::METHOD_NOT_ALLOWED | StatusCode::UNAUTHORIZED
            ) && !body.contains("\"NOT_FOUND\""),
            "{method} {path}: {status} {body}"
        );
    }
    // And each documented path serves exactly its documented methods: what a wrong method's 405
    // allows is what the server routes there.
    for (_, path) in &documented {
        let concrete = path
            .replace("{id}", "0190f2c4-1a2b-7c3d-8e4f-0123456789ab")
            .replace("{key}", "a-key");
        let resp = api
            .http
            .delete(url(&concrete))
            .header("x-api-key", "k-doc")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}");
        let mut allowed = Vec::new();
        for m in ["GET", "PUT", "POST"] {
            if documented.contains(&(m.to_string(), path.clone())) {
                allowed.push(m);
                if m == "GET" {
                    allowed.push("HEAD");
                }
            }
        }
        assert_eq!(resp.headers()["allow"], allowed.join(", "), "{path}");
    }

    // Swagger UI, served from the binary: /docs leads to it, and it loads our document.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = no_redirects.get(url("/docs")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(resp.headers()["location"], "/docs/");
    let page = api.http.get(url("/docs/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("swagger-ui"));
    for asset in ["swagger-ui.css", "swagger-ui-bundle.js"] {
        let resp = api
            .http
            .get(url(&format!("/docs/{asset}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{asset}");
        assert!(
            resp.bytes().await.unwrap().len() > 10_000,
            "{asset} is bundled"
        );
    }
    let init = api
        .http
        .get(url("/docs/swagger-initializer.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(init.contains("/openapi.json"), "{init}");
}

#[tokio::test]
async fn alive_reports_tenant_worker_and_queue_counts() {
    let api = TestApi::start().await;
    api.create_ok(&order("a")).await;
    let alive = api.alive().await;
    assert_eq!(alive["tenant"], "Bennys Auto");
    assert_eq!(alive["slug"], "bennys-auto");
    assert_eq!(alive["queue"]["placed"], 1);
    assert_eq!(alive["worker"]["desired"], "running");
    assert_eq!(alive["worker"]["connected"], false);
    api.lease("w-7", 1, 0, 30_000).await;
    assert_eq!(api.alive().await["worker"]["connected"], true);
    assert!(api.data.path().join("bennys-auto/api.log").exists());
    assert!(
        api.data.path().join("bennys-auto/store-redb").is_dir(),
        "redb is the default"
    );
}

#[tokio::test]
async fn with_a_key_every_call_but_alive_needs_it_and_the_worker_has_its_own_token() {
    let api = TestApi::with(
        ApiOptions::default()
            .env("FERRY_API_KEY", "k-upstream")
            .env("FERRY_WORKER_TOKEN", "k-worker"),
    )
    .await;
    let url = |p: &str| format!("{}{p}", api.base());
    let (status, body) = api.send(api.http.get(url("/queue"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "UNAUTHORIZED");
    let (status, _) = api
        .send(api.http.get(url("/queue")).header("x-api-key", "wrong"))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = api
        .send(
            api.http
                .get(url("/queue"))
                .header("x-api-key", "k-upstream"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = api
        .send(
            api.http
                .post(url("/create"))
                .bearer_auth("k-upstream")
                .json(&order("x")),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = api.send(api.http.get(url("/alive"))).await;
    assert_eq!(status, StatusCode::OK);

    let lease = json!({"worker_id": "w", "max": 1});
    let (status, _) = api
        .send(
            api.http
                .post(url("/worker/lease"))
                .header("x-api-key", "k-upstream")
                .json(&lease),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the API key is not the worker token"
    );
    let (status, body) = api
        .send(
            api.http
                .post(url("/worker/lease"))
                .bearer_auth("k-worker")
                .json(&lease),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["jobs"].as_array().unwrap().len(), 1);
}

#[test]
fn without_a_key_it_refuses_to_listen_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let (status, out) = run_to_end(
        "ferry-api",
        &[
            "--port",
            "0",
            "--workshop",
            "X",
            "--data-dir",
            data,
            "--bind",
            "0.0.0.0",
        ],
        &[],
    );
    assert!(!status.success());
    assert!(out.contains("without an API key"), "{out}");
}

#[test]
fn help_answers_and_bad_settings_are_named() {
    let (status, out) = run_to_end("ferry-api", &["--help"], &[]);
    assert!(status.success());
    for needle in [
        "--port",
        "--workshop",
        "--data-dir",
        "--config",
        "FERRY_",
        "legacy",
    ] {
        assert!(out.contains(needle), "--help lacks {needle}:\n{out}");
    }
    let (status, out) = run_to_end("ferry-api", &["--port", "0"], &[]);
    assert!(!status.success());
    assert!(out.contains("workshop"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("t.toml");
    std::fs::write(&cfg, "workshop = \"X\"\nmax_qeue = 3\n").unwrap();
    let (status, out) = run_to_end("ferry-api", &["--config", cfg.to_str().unwrap()], &[]);
    assert!(!status.success());
    assert!(out.contains("max_qeue"), "{out}");

    let target = "workshop = \"X\"\n[target]\nkind = \"erp_rest\"\nbase_url = \"https://erp\"\nauth = { kind = \"bearer\", token_env = \"ERP_TOKEN\" }\n";
    std::fs::write(&cfg, target).unwrap();
    let args = ["--config", cfg.to_str().unwrap(), "--check-config"];
    let (status, out) = run_to_end("ferry-api", &args, &[]);
    assert!(!status.success());
    assert!(
        out.contains("ERP_TOKEN"),
        "a missing secret is named: {out}"
    );
    let (status, out) = run_to_end("ferry-api", &args, &[("ERP_TOKEN", "t")]);
    assert!(status.success(), "{out}");
    assert!(out.contains("config ok"), "{out}");
}

#[tokio::test]
async fn the_legacy_positional_form_and_a_config_file_both_start_a_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("tenant.toml");
    std::fs::write(
        &cfg,
        "workshop = \"From File\"\nmax_queue = 1\n[retry]\nmax_attempts = 3\n",
    )
    .unwrap();
    let api = TestApi::with(
        ApiOptions {
            workshop: "Legacy Garage".into(),
            legacy_form: true,
            ..ApiOptions::default()
        }
        .env("FERRY_CONFIG", cfg.to_str().unwrap()),
    )
    .await;
    // The flag (here the legacy positional WORKSHOP) wins over the file.
    assert_eq!(api.alive().await["tenant"], "Legacy Garage");
    // The rest of the file took effect: a queue of one.
    let mut o = order("first");
    o["workshop"] = json!("Legacy Garage");
    api.create_ok(&o).await;
    o["uniqueid"] = json!("second");
    let (status, body) = api.create(&o).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "QUEUE_FULL");
}

#[tokio::test]
async fn kill_answers_first_then_the_worker_is_told_to_exit_and_the_api_exits_0() {
    let mut api = TestApi::start().await;
    api.create_ok(&order("in-flight")).await;
    let leased = api.lease("w", 1, 0, 30_000).await;
    let job = leased["jobs"][0].clone();

    let (status, body) = api.put("/kill").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = api.create(&order("too-late")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "SHUTTING_DOWN");
    let directive = api.lease("w", 1, 0, 30_000).await;
    assert_eq!(directive["directive"], "exit");
    assert_eq!(directive["jobs"], json!([]));
    let acks = api
        .report(
            "w",
            json!([{"job_id": job["job_id"], "lease_id": job["lease_id"],
                    "outcome": {"kind": "created", "target_ref": "L-9"}}]),
        )
        .await;
    assert_eq!(acks["results"][0]["accepted"], true);
    assert_eq!(acks["directive"], "exit");

    let status = api.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "exit status {status}");
    api.start_again();
    assert_eq!(
        api.status_of("in-flight").await.1["data"]["status"],
        "created"
    );
    assert_eq!(api.status_of("too-late").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_kept_alive_connection_idle_past_five_seconds_is_still_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let api = TestApi::start().await;
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", api.port))
        .await
        .unwrap();
    // One whole answer (its headers, then `content-length` bytes), or what came before the
    // socket closed.
    let ask = async |conn: &mut tokio::net::TcpStream| {
        conn.write_all(b"GET /alive HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let mut chunk = [0; 16 * 1024];
        loop {
            let text = String::from_utf8_lossy(&answer).to_lowercase();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .expect("a content-length");
                if answer.len() >= end + 4 + length {
                    break;
                }
            }
            let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut chunk))
                .await
                .expect("an answer")
                .unwrap();
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8_lossy(&answer).into_owned()
    };
    assert!(ask(&mut conn).await.starts_with("HTTP/1.1 200"));
    // Idle longer than actix-web's default keep-alive (5 s), shorter than a worker's pool keeps
    // a socket (30 s): the worker may send its next call on this socket.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let again = ask(&mut conn).await;
    assert!(
        again.starts_with("HTTP/1.1 200"),
        "the socket was closed: {again:?}"
    );
}

/// Context switches so far of the api's HTTP worker threads (`actix-rt|system:N|arbiter:N`).
fn http_thread_switches(pid: u32) -> u64 {
    let mut total = 0;
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the api's threads");
    for task in tasks.flatten() {
        let dir = task.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.starts_with("actix-rt") {
            continue;
        }
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        total += status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
            .sum::<u64>();
    }
    total
}

#[tokio::test]
async fn an_idle_api_does_not_wake_and_its_date_header_is_current() {
    let api = TestApi::start().await;
    let pid = api.pid().expect("running");
    assert_eq!(api.get("/alive").await.0, StatusCode::OK);
    // actix-http as released refreshes the Date header every 500 ms on each HTTP worker, which
    // woke an idle api about 4.7 times a second (14 or more in these 3 s); Ferry's patch makes
    // the header when an answer needs it. Nothing else runs on these threads while no one asks.
    let before = http_thread_switches(pid);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let woke = http_thread_switches(pid) - before;
    assert!(
        woke <= 2,
        "the idle api's HTTP threads woke {woke} times in 3 s"
    );

    // The first answer after the idle spell carries the present time, not the start's.
    let resp = api
        .http
        .get(format!("{}/alive", api.base()))
        .send()
        .await
        .unwrap();
    let date = resp.headers()["date"].to_str().unwrap().to_string();
    let sent = chrono::DateTime::parse_from_rfc2822(&date.replace("GMT", "+0000"))
        .unwrap_or_else(|e| panic!("Date: {date:?}: {e}"));
    let off = (chrono::Utc::now() - sent.to_utc()).num_milliseconds();
    assert!(
        (0..2_000).contains(&off),
        "Date: {date} is {off} ms from now"
    );
}
