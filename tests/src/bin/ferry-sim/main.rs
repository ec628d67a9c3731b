//! `ferry-sim`: a simulated REST ERP speaking Ferry's default `erp_rest` mapping, for the tests,
//! the demo and the benchmark.
//!
//! - `POST /worksheets/{ws}/lines` `{"product_nr", "amount" (a number), "reference"}` with
//!   `Idempotency-Key` → `201 {"id"}`; the same key again → `200` with the same id.
//! - Faults, applied to the next line requests in order: `POST /_sim/faults`
//!   `{"count": N, "status": 500, "retry_after": 2}`, `{"delay_ms": 3000}`, `{"drop": true}`
//!   (the connection breaks before the line is made), `{"after_create": true, "status": 500}`
//!   (the line is made, then the answer is an error). `DELETE /_sim/faults` clears them.
//! - `PUT /_sim/worksheets/{ws}/missing` makes a worksheet answer 404.
//! - `GET /_sim/lines[?worksheet=]` lists the lines with a count of duplicated references.
//! - `GET /_sim/count[?at_least=N&wait_ms=M]` counts lines and line requests; with `at_least`, it
//!   answers once there are N lines or M ms (default 60,000) have passed, so a benchmark waits
//!   for the last line without polling (a `curl` every 20 ms took 39 % of a core here).
//! - `--basic user:pass` requires basic auth; `--oauth` a bearer token from the Teamleader
//!   simulator.
//! - A web ERP under `/web`, for the `erp_browser` connector: see `web_erp.rs`.
//! - A mail sink (`--smtp-port`) for alerts: see `smtp.rs`.
//! - Teamleader Focus (OAuth2 and `<resource>.list`), for the `teamleader` source: see
//!   `teamleader.rs`.

mod smtp;
mod teamleader;
mod web_erp;

use std::collections::{HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Notify;

use actix_web::body::{BodySize, MessageBody};
use actix_web::web::{self, Bytes};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer};
use clap::Parser;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Parser)]
#[command(
    name = "ferry-sim",
    about = "A simulated REST ERP for Ferry's tests, demo and benchmark"
)]
struct Cli {
    /// Port on 127.0.0.1 (0 picks a free one; the address is printed).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Require basic auth with these credentials (`user:pass`).
    #[arg(long, value_name = "USER:PASS")]
    basic: Option<String>,
    /// Require an OAuth2 bearer token issued by the Teamleader simulator (`/oauth2/...`).
    #[arg(long)]
    oauth: bool,
    /// Also take mail on this port (SMTP; 0 picks a free one): see `smtp.rs`.
    #[arg(long)]
    smtp_port: Option<u16>,
    /// actix-web worker threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct Fault {
    #[serde(default = "one")]
    count: u32,
    status: Option<u16>,
    retry_after: Option<u64>,
    delay_ms: Option<u64>,
    #[serde(default)]
    drop: bool,
    #[serde(default)]
    after_create: bool,
}

fn one() -> u32 {
    1
}

#[derive(Default)]
struct Erp {
    lines: Vec<Value>,
    by_key: HashMap<String, String>,
    missing: HashSet<String>,
    faults: VecDeque<Fault>,
    requests: u64,
    replays: u64,
    web: web_erp::Web,
}

struct Sim {
    erp: Mutex<Erp>,
    /// Lines [`count`] waits for (the least asked, `usize::MAX` with none), and its wake-up.
    want: AtomicUsize,
    grew: Notify,
    basic: Option<String>,
    /// The Teamleader simulator; with `--oauth`, also the issuer of the ERP's bearer tokens.
    tl: Mutex<teamleader::Teamleader>,
    oauth: bool,
}

/// A body that fails at once: the client sees the connection break mid-answer.
struct Broken;

impl MessageBody for Broken {
    type Error = std::io::Error;
    fn size(&self) -> BodySize {
        BodySize::Stream
    }
    fn poll_next(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Poll::Ready(Some(Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "ferry-sim dropped the connection",
        ))))
    }
}

fn authorized(sim: &Sim, req: &HttpRequest) -> bool {
    if sim.oauth {
        return sim.tl.lock().expect("lock").authorized(req);
    }
    let Some(expected) = &sim.basic else {
        return true;
    };
    let given = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(decode_base64);
    given.as_deref() == Some(expected.as_str())
}

fn decode_base64(s: &str) -> Option<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.trim_end_matches('=').bytes() {
        bits = (bits << 6) | ALPHABET.iter().position(|&a| a == c)? as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    String::from_utf8(out).ok()
}

async fn add_line(
    sim: web::Data<Sim>,
    req: HttpRequest,
    ws: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let fault = {
        let mut erp = sim.erp.lock().expect("lock");
        erp.requests += 1;
        let fault = erp.faults.front_mut().map(|f| {
            f.count -= 1;
            f.clone()
        });
        if erp.faults.front().is_some_and(|f| f.count == 0) {
            erp.faults.pop_front();
        }
        fault
    };
    let fault = fault.unwrap_or_default();
    if let Some(ms) = fault.delay_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if fault.drop {
        return HttpResponse::Created().body(Broken);
    }
    if let (Some(status), false) = (fault.status, fault.after_create) {
        return injected(status, fault.retry_after);
    }
    if !authorized(&sim, &req) {
        return HttpResponse::Unauthorized().json(json!({"error": "bad credentials"}));
    }
    let line: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return HttpResponse::BadRequest().json(json!({"error": e.to_string()})),
    };
    if !line["amount"].as_f64().is_some_and(|a| a > 0.0) || !line["product_nr"].is_string() {
        return HttpResponse::BadRequest()
            .json(json!({"error": "product_nr (string) and amount (positive number) required"}));
    }
    let key = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (status, id, lines) = {
        let mut erp = sim.erp.lock().expect("lock");
        if erp.missing.contains(ws.as_str()) {
            return HttpResponse::NotFound().json(json!({"error": format!("no worksheet {ws}")}));
        }
        match key.as_ref().and_then(|k| erp.by_key.get(k)).cloned() {
            Some(id) => {
                erp.replays += 1;
                (200, id, erp.lines.len())
            }
            None => {
                let id = format!("L-{}", erp.lines.len() + 1);
                erp.lines.push(json!({
                    "id": id, "worksheet": ws.as_str(), "product_nr": line["product_nr"],
                    "amount": line["amount"], "reference": line["reference"], "idempotency_key": key,
                }));
                if let Some(k) = key {
                    erp.by_key.insert(k, id.clone());
                }
                (201, id, erp.lines.len())
            }
        }
    };
    sim.grew_to(lines);
    if let (Some(status), true) = (fault.status, fault.after_create) {
        return injected(status, fault.retry_after);
    }
    let code = actix_web::http::StatusCode::from_u16(status).expect("valid status");
    HttpResponse::build(code).json(json!({ "id": id }))
}

fn injected(status: u16, retry_after: Option<u64>) -> HttpResponse {
    let code = actix_web::http::StatusCode::from_u16(status)
        .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = HttpResponse::build(code);
    if let Some(secs) = retry_after {
        resp.insert_header(("Retry-After", secs.to_string()));
    }
    resp.json(json!({"error": format!("injected {status}")}))
}

async fn add_faults(sim: web::Data<Sim>, fault: web::Json<Fault>) -> HttpResponse {
    let fault = fault.into_inner();
    if fault.count > 0 {
        sim.erp.lock().expect("lock").faults.push_back(fault);
    }
    HttpResponse::Ok().json(json!({"ok": true}))
}

async fn clear_faults(sim: web::Data<Sim>) -> HttpResponse {
    sim.erp.lock().expect("lock").faults.clear();
    HttpResponse::Ok().json(json!({"ok": true}))
}

async fn missing(sim: web::Data<Sim>, ws: web::Path<String>) -> HttpResponse {
    sim.erp
        .lock()
        .expect("lock")
        .missing
        .insert(ws.into_inner());
    HttpResponse::Ok().json(json!({"ok": true}))
}

#[derive(Deserialize)]
struct LinesQuery {
    worksheet: Option<String>,
}

async fn lines(sim: web::Data<Sim>, q: web::Query<LinesQuery>) -> HttpResponse {
    let erp = sim.erp.lock().expect("lock");
    let shown: Vec<&Value> = erp
        .lines
        .iter()
        .filter(|l| q.worksheet.as_deref().is_none_or(|ws| l["worksheet"] == ws))
        .collect();
    let mut seen = HashSet::new();
    let duplicates = erp
        .lines
        .iter()
        .filter(|l| !seen.insert(l["reference"].to_string()))
        .count();
    HttpResponse::Ok().json(json!({
        "count": erp.lines.len(),
        "duplicates": duplicates,
        "requests": erp.requests,
        "replays": erp.replays,
        "lines": shown,
    }))
}

impl Sim {
    /// Wakes the waiting [`count`]s once the lines reach what one of them asks.
    fn grew_to(&self, lines: usize) {
        if lines >= self.want.load(Ordering::SeqCst) {
            self.want.store(usize::MAX, Ordering::SeqCst);
            self.grew.notify_waiters();
        }
    }
}

#[derive(Deserialize)]
struct CountQuery {
    at_least: Option<usize>,
    wait_ms: Option<u64>,
}

async fn count(sim: web::Data<Sim>, q: web::Query<CountQuery>) -> HttpResponse {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(q.wait_ms.unwrap_or(60_000));
    let at_least = q.at_least.unwrap_or(0);
    loop {
        // Registered before the look, so a line added after it wakes this one.
        let grew = sim.grew.notified();
        sim.want.fetch_min(at_least, Ordering::SeqCst);
        {
            let erp = sim.erp.lock().expect("lock");
            if erp.lines.len() >= at_least || tokio::time::Instant::now() >= deadline {
                return HttpResponse::Ok()
                    .json(json!({"count": erp.lines.len(), "requests": erp.requests}));
            }
        }
        tokio::select! {
            _ = grew => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let cli = Cli::parse();
    let sim = web::Data::new(Sim {
        erp: Mutex::default(),
        want: AtomicUsize::new(usize::MAX),
        grew: Notify::new(),
        basic: cli.basic,
        tl: Mutex::default(),
        oauth: cli.oauth,
    });
    let sink = web::Data::new(smtp::Sink::default());
    if let Some(port) = cli.smtp_port {
        actix_web::rt::spawn(smtp::listen(port, sink.clone()));
    }
    let server = HttpServer::new(move || {
        App::new()
            .app_data(sim.clone())
            .app_data(sink.clone())
            .route("/_sim/mail", web::get().to(smtp::mail))
            .route("/worksheets/{ws}/lines", web::post().to(add_line))
            .route("/_sim/faults", web::post().to(add_faults))
            .route("/_sim/faults", web::delete().to(clear_faults))
            .route("/_sim/worksheets/{ws}/missing", web::put().to(missing))
            .route("/_sim/lines", web::get().to(lines))
            .route("/_sim/count", web::get().to(count))
            .configure(web_erp::routes)
            .configure(teamleader::routes)
    })
    .workers(cli.workers)
    .bind(("127.0.0.1", cli.port))?;
    let addr = server.addrs()[0];
    println!("ferry-sim listening on {addr}");
    server.run().await
}
