//! `ferry-libsim`: simulated LibCal (room bookings), Alma (patron lookup) and PassagePoint
//! (visitor pre-registration) for a library tenant's tests and demo, behaving as the real
//! services are known to.
//!
//! LibCal: `POST /1.1/oauth/token` (client credentials, JSON or form; `--libcal-client id:secret`)
//! → `{"access_token", "expires_in": 3600}`; tokens stop working when told
//! (`POST /_sim/libcal/expire`: the next call answers 401). `GET /1.1/space/bookings?lid=&limit=
//! &page=&formAnswers=` answers a bare array of the loaded bookings of that location
//! (`PUT /_sim/libcal/bookings` with an array), a page at a time; the `q<id>` form answers only
//! with `formAnswers=1`. `POST /_sim/libcal/down {"down": true}` makes it answer 503.
//!
//! Alma, `GET /almaws/v1/users/{primary_id}` with `Authorization: apikey K`:
//! - each key of `--alma-keys k1,k2` is an institution zone; a patron lives in one zone
//!   (`PUT /_sim/alma/users/{id}` `{"zone": 1, "barcode": "2282…" | null, "group": "gw und"}`);
//! - unknown in the key's zone: `400` with `errorList.error` code `401861` (a single object, not
//!   an array, every other time, as real clients have seen); a bad key: `401`;
//! - more than `--alma-per-second` calls in a second on one key: `429 PER_SECOND_THRESHOLD`;
//!   past the daily budget (`POST /_sim/alma/daily {"remaining": N}`): `429 DAILY_THRESHOLD`;
//! - every answer carries `X-Exl-Api-Remaining`.
//!
//! PassagePoint, under `/pp/api/v2`, with the `token` header from `POST /auth/login`:
//! - tokens expire when told (`POST /_sim/pp/expire`): the next call answers `401`;
//! - `POST /person/createVisitor?category=&firstName=&lastName=&email=&mobilePhoneNo=&uniqueId=`
//!   (query string, no body) → `{"data":[{"id"}]}`, or `400` with `ALREADY_EXIST_UNIQUE_ID`;
//! - `GET /person/byUniqueId?uniqueId=` → a bare array of visitors;
//! - `POST /visit/createPreReg` `{"startTime","endTime" (epoch-second strings),"visitorId",
//!   "destination"}` → `{"data":[{"id"}]}`; never de-duplicated; the destination must exist
//!   (`--pp-destinations`).
//! - Faults on the next createVisitor or createPreReg calls: `POST /_sim/pp/faults`
//!   `{"call": "createPreReg", "count": 1, "status": 503, "delay_ms": 2000}` (a delayed call still
//!   takes effect, as a real server's would).
//!
//! Inspection: `GET /_sim/state` (visitors, pre-registrations, Alma calls per key, logins, and per
//! PassagePoint call how many were started and answered, so a test can act while one is delayed
//! and know when it has landed).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::web;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer};
use clap::Parser;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Parser)]
#[command(
    name = "ferry-libsim",
    about = "Simulated Alma and PassagePoint for Ferry's library tests and demo"
)]
struct Cli {
    /// Port on 127.0.0.1 (0 picks a free one; the address is printed).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Alma API keys, one per institution zone, in zone order.
    #[arg(long, default_value = "iz1-key,iz2-key", value_delimiter = ',')]
    alma_keys: Vec<String>,
    /// Calls a second one key may make before 429 PER_SECOND_THRESHOLD.
    #[arg(long, default_value_t = 25)]
    alma_per_second: usize,
    /// PassagePoint's login.
    #[arg(long, default_value = "ferry:pp-secret")]
    pp_login: String,
    /// LibCal's client credentials.
    #[arg(long, default_value = "ferry-client:libcal-secret")]
    libcal_client: String,
    /// The destinations PassagePoint knows.
    #[arg(
        long,
        default_value = "LibCal Gelman,LibCal VSTCL",
        value_delimiter = ','
    )]
    pp_destinations: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct Patron {
    zone: usize,
    barcode: Option<String>,
    group: String,
}

#[derive(Debug, Clone, Deserialize)]
struct PpFault {
    call: String,
    #[serde(default = "one")]
    count: u32,
    status: Option<u16>,
    delay_ms: Option<u64>,
}

fn one() -> u32 {
    1
}

#[derive(Default)]
struct State {
    patrons: HashMap<String, Patron>,
    alma_calls: HashMap<usize, u64>,
    alma_recent: HashMap<usize, VecDeque<Instant>>,
    alma_daily_left: Option<u64>,
    not_found_answers: u64,
    tokens: Vec<String>,
    logins: u64,
    visitors: Vec<Value>,
    preregs: Vec<Value>,
    faults: Vec<PpFault>,
    /// Per PassagePoint call: [started, answered].
    calls: HashMap<String, [u64; 2]>,
    libcal_bookings: Vec<Value>,
    libcal_tokens: Vec<String>,
    libcal_tokens_issued: u64,
    libcal_requests: u64,
    libcal_down: bool,
}

struct Sim {
    cli: Cli,
    state: Mutex<State>,
}

fn error_list(code: &str, message: &str, single: bool) -> Value {
    let error = json!({"errorCode": code, "errorMessage": message, "trackingId": "E01-SIM"});
    let error = if single { error } else { json!([error]) };
    json!({"errorsExist": true, "errorList": {"error": error}, "result": null})
}

async fn alma_user(sim: web::Data<Sim>, req: HttpRequest, id: web::Path<String>) -> HttpResponse {
    let key = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("apikey "))
        .unwrap_or("");
    let Some(zone) = sim
        .cli
        .alma_keys
        .iter()
        .position(|k| k == key)
        .map(|i| i + 1)
    else {
        return HttpResponse::Unauthorized().json(error_list(
            "UNAUTHORIZED",
            "API-key not defined or not configured to allow this API.",
            false,
        ));
    };
    let mut st = sim.state.lock().expect("lock");
    *st.alma_calls.entry(zone).or_default() += 1;
    let now = Instant::now();
    let recent = st.alma_recent.entry(zone).or_default();
    while recent
        .front()
        .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
    {
        recent.pop_front();
    }
    let over = recent.len() >= sim.cli.alma_per_second;
    recent.push_back(now);
    let remaining = st.alma_daily_left.unwrap_or(100_000);
    let resp = |status: u16| {
        let mut r =
            HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("status"));
        r.insert_header(("X-Exl-Api-Remaining", remaining.to_string()));
        r
    };
    if st.alma_daily_left == Some(0) {
        return resp(429).json(error_list(
            "DAILY_THRESHOLD",
            "Daily API threshold exceeded",
            false,
        ));
    }
    if over {
        return resp(429).json(error_list(
            "PER_SECOND_THRESHOLD",
            "HTTP requests are more than allowed per second",
            false,
        ));
    }
    if let Some(left) = st.alma_daily_left.as_mut() {
        *left -= 1;
    }
    match st
        .patrons
        .get(id.as_str())
        .filter(|p| p.zone == zone)
        .cloned()
    {
        Some(p) => {
            let identifiers: Vec<Value> = p
                .barcode
                .iter()
                .map(|b| json!({"id_type": {"value": "BARCODE", "desc": "Barcode"}, "value": b, "status": "ACTIVE"}))
                .collect();
            resp(200).json(json!({
                "record_type": {"value": "PUBLIC", "desc": "Public"},
                "primary_id": id.as_str(), "first_name": "Ann", "last_name": "Lee",
                "user_group": {"value": "G", "desc": p.group},
                "user_identifier": identifiers,
            }))
        }
        None => {
            st.not_found_answers += 1;
            let single = st.not_found_answers.is_multiple_of(2);
            resp(400).json(error_list(
                "401861",
                &format!("User with identifier {id} was not found."),
                single,
            ))
        }
    }
}

async fn put_patron(
    sim: web::Data<Sim>,
    id: web::Path<String>,
    patron: web::Json<Patron>,
) -> HttpResponse {
    let mut st = sim.state.lock().expect("lock");
    st.patrons.insert(id.into_inner(), patron.into_inner());
    HttpResponse::Ok().json(json!({"ok": true}))
}

#[derive(Deserialize)]
struct Daily {
    remaining: Option<u64>,
}

async fn alma_daily(sim: web::Data<Sim>, d: web::Json<Daily>) -> HttpResponse {
    sim.state.lock().expect("lock").alma_daily_left = d.remaining;
    HttpResponse::Ok().json(json!({"ok": true}))
}

#[derive(Deserialize)]
struct Login {
    username: String,
    password: String,
}

async fn pp_login(sim: web::Data<Sim>, body: web::Json<Login>) -> HttpResponse {
    if format!("{}:{}", body.username, body.password) != sim.cli.pp_login {
        return HttpResponse::Unauthorized().json(json!({"error": "invalid credentials"}));
    }
    let mut st = sim.state.lock().expect("lock");
    st.logins += 1;
    let token = format!("t-{}", st.logins);
    st.tokens.push(token.clone());
    HttpResponse::Ok().json(json!({"token": token}))
}

fn authorized(st: &State, req: &HttpRequest) -> bool {
    req.headers()
        .get("token")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| st.tokens.iter().any(|k| k == t))
}

/// The next fault for `call`, if any; it is used up.
fn take_fault(st: &mut State, call: &str) -> Option<PpFault> {
    let i = st.faults.iter().position(|f| f.call == call)?;
    let f = st.faults[i].clone();
    st.faults[i].count -= 1;
    if st.faults[i].count == 0 {
        st.faults.remove(i);
    }
    Some(f)
}

/// Applies a fault's delay; answers its status, if it has one, instead of the call.
async fn fault(sim: &Sim, call: &str) -> Option<HttpResponse> {
    let f = take_fault(&mut sim.state.lock().expect("lock"), call)?;
    if let Some(ms) = f.delay_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    f.status.map(|s| {
        HttpResponse::build(actix_web::http::StatusCode::from_u16(s).expect("status"))
            .json(json!({"error": format!("injected {s}")}))
    })
}

fn unauthorized() -> HttpResponse {
    HttpResponse::Unauthorized().json(json!({"error": "token expired"}))
}

/// Counts a PassagePoint call as started, runs it, counts it as answered.
async fn counted(
    sim: &Sim,
    call: &str,
    answer: impl std::future::Future<Output = HttpResponse>,
) -> HttpResponse {
    let bump = |i: usize| {
        sim.state
            .lock()
            .expect("lock")
            .calls
            .entry(call.into())
            .or_default()[i] += 1;
    };
    bump(0);
    let resp = answer.await;
    bump(1);
    resp
}

async fn create_visitor(
    sim: web::Data<Sim>,
    req: HttpRequest,
    q: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    counted(
        &sim,
        "createVisitor",
        create_visitor_call(sim.clone(), req, q),
    )
    .await
}

async fn create_prereg(
    sim: web::Data<Sim>,
    req: HttpRequest,
    body: web::Json<Value>,
) -> HttpResponse {
    counted(
        &sim,
        "createPreReg",
        create_prereg_call(sim.clone(), req, body),
    )
    .await
}

async fn create_visitor_call(
    sim: web::Data<Sim>,
    req: HttpRequest,
    q: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    if !authorized(&sim.state.lock().expect("lock"), &req) {
        return unauthorized();
    }
    if let Some(resp) = fault(&sim, "createVisitor").await {
        return resp;
    }
    let mut st = sim.state.lock().expect("lock");
    let unique = q.get("uniqueId").cloned().unwrap_or_default();
    if unique.is_empty()
        || ["category", "firstName", "lastName"]
            .iter()
            .any(|k| !q.contains_key(*k))
    {
        return HttpResponse::BadRequest()
            .json(json!({"error": "category, firstName, lastName and uniqueId are required"}));
    }
    if st.visitors.iter().any(|v| v["uniqueId"] == unique.as_str()) {
        return HttpResponse::BadRequest()
            .json(json!({"error": {"code": "ALREADY_EXIST_UNIQUE_ID", "message": "a visitor with this uniqueId exists"}}));
    }
    let id = format!("1375057645{:05}", st.visitors.len() + 1);
    st.visitors.push(json!({
        "id": id, "uniqueId": unique, "category": q.get("category"),
        "firstName": q.get("firstName"), "lastName": q.get("lastName"),
        "email": q.get("email"), "mobilePhoneNo": q.get("mobilePhoneNo"),
    }));
    HttpResponse::Ok().json(json!({"data": [{"id": id}]}))
}

async fn by_unique_id(
    sim: web::Data<Sim>,
    req: HttpRequest,
    q: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    let st = sim.state.lock().expect("lock");
    if !authorized(&st, &req) {
        return unauthorized();
    }
    let unique = q.get("uniqueId").cloned().unwrap_or_default();
    let found: Vec<&Value> = st
        .visitors
        .iter()
        .filter(|v| v["uniqueId"] == unique.as_str())
        .collect();
    HttpResponse::Ok().json(found)
}

async fn create_prereg_call(
    sim: web::Data<Sim>,
    req: HttpRequest,
    body: web::Json<Value>,
) -> HttpResponse {
    if !authorized(&sim.state.lock().expect("lock"), &req) {
        return unauthorized();
    }
    if let Some(resp) = fault(&sim, "createPreReg").await {
        return resp;
    }
    let mut st = sim.state.lock().expect("lock");
    let epoch = |k: &str| body[k].as_str().and_then(|s| s.parse::<i64>().ok());
    let (Some(start), Some(end)) = (epoch("startTime"), epoch("endTime")) else {
        return HttpResponse::BadRequest()
            .json(json!({"error": "startTime and endTime must be epoch seconds as strings"}));
    };
    let destination = body["destination"].as_str().unwrap_or("");
    if !sim.cli.pp_destinations.iter().any(|d| d == destination) {
        return HttpResponse::BadRequest()
            .json(json!({"error": format!("no destination '{destination}'")}));
    }
    let visitor = body["visitorId"].as_str().unwrap_or("");
    if !st.visitors.iter().any(|v| v["id"] == visitor) {
        return HttpResponse::BadRequest().json(json!({"error": format!("no visitor {visitor}")}));
    }
    let id = format!("PR-{}", st.preregs.len() + 1);
    st.preregs.push(json!({
        "id": id, "visitorId": visitor, "startTime": start, "endTime": end, "destination": destination,
    }));
    HttpResponse::Ok().json(json!({"data": [{"id": id}]}))
}

async fn libcal_token(sim: web::Data<Sim>, body: web::Bytes) -> HttpResponse {
    let fields: HashMap<String, String> = serde_json::from_slice::<HashMap<String, Value>>(&body)
        .map(|m| {
            m.into_iter()
                .map(|(k, v)| {
                    (
                        k,
                        v.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect()
        })
        .unwrap_or_else(|_| {
            String::from_utf8_lossy(&body)
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        });
    let given = format!(
        "{}:{}",
        fields.get("client_id").map_or("", String::as_str),
        fields.get("client_secret").map_or("", String::as_str)
    );
    if given != sim.cli.libcal_client
        || fields.get("grant_type").map(String::as_str) != Some("client_credentials")
    {
        return HttpResponse::BadRequest().json(json!({"error": "invalid_client", "error_description": "The client credentials are invalid"}));
    }
    let mut st = sim.state.lock().expect("lock");
    st.libcal_tokens_issued += 1;
    let token = format!("lc-{}", st.libcal_tokens_issued);
    st.libcal_tokens.push(token.clone());
    HttpResponse::Ok().json(
        json!({"access_token": token, "expires_in": 3600, "token_type": "Bearer", "scope": "sp_r"}),
    )
}

async fn libcal_bookings(
    sim: web::Data<Sim>,
    req: HttpRequest,
    q: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    let mut st = sim.state.lock().expect("lock");
    st.libcal_requests += 1;
    if st.libcal_down {
        return HttpResponse::ServiceUnavailable().json(json!({"error": "maintenance"}));
    }
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !st.libcal_tokens.iter().any(|t| t == bearer) {
        return HttpResponse::Unauthorized().json(json!({"error": "invalid_token"}));
    }
    let num = |k: &str, default: usize| q.get(k).and_then(|v| v.parse().ok()).unwrap_or(default);
    let (limit, page) = (num("limit", 20).clamp(1, 500), num("page", 1).max(1));
    let lid: u64 = num("lid", 0) as u64;
    let answers = q.get("formAnswers").map(String::as_str) == Some("1");
    let page_items: Vec<Value> = st
        .libcal_bookings
        .iter()
        .filter(|b| b["lid"].as_u64() == Some(lid))
        .skip((page - 1) * limit)
        .take(limit)
        .map(|b| {
            let mut b = b.clone();
            if !answers && let Some(o) = b.as_object_mut() {
                o.retain(|k, _| {
                    !(k.starts_with('q') && k[1..].chars().all(|c| c.is_ascii_digit()))
                });
            }
            b
        })
        .collect();
    HttpResponse::Ok().json(page_items)
}

async fn libcal_load(sim: web::Data<Sim>, bookings: web::Json<Vec<Value>>) -> HttpResponse {
    sim.state.lock().expect("lock").libcal_bookings = bookings.into_inner();
    HttpResponse::Ok().json(json!({"ok": true}))
}

async fn libcal_expire(sim: web::Data<Sim>) -> HttpResponse {
    sim.state.lock().expect("lock").libcal_tokens.clear();
    HttpResponse::Ok().json(json!({"ok": true}))
}

#[derive(Deserialize)]
struct Down {
    down: bool,
}

async fn libcal_down(sim: web::Data<Sim>, d: web::Json<Down>) -> HttpResponse {
    sim.state.lock().expect("lock").libcal_down = d.down;
    HttpResponse::Ok().json(json!({"ok": true}))
}

async fn expire(sim: web::Data<Sim>) -> HttpResponse {
    sim.state.lock().expect("lock").tokens.clear();
    HttpResponse::Ok().json(json!({"ok": true}))
}

async fn add_fault(sim: web::Data<Sim>, f: web::Json<PpFault>) -> HttpResponse {
    sim.state.lock().expect("lock").faults.push(f.into_inner());
    HttpResponse::Ok().json(json!({"ok": true}))
}

async fn inspect(sim: web::Data<Sim>) -> HttpResponse {
    let st = sim.state.lock().expect("lock");
    let calls: HashMap<String, u64> = st
        .alma_calls
        .iter()
        .map(|(z, n)| (format!("iz{z}"), *n))
        .collect();
    HttpResponse::Ok().json(json!({
        "visitors": st.visitors, "preregs": st.preregs, "alma_calls": calls,
        "alma_calls_total": st.alma_calls.values().sum::<u64>(), "logins": st.logins,
        "calls": st.calls.iter().map(|(k, [s, a])| (k.clone(), json!({"started": s, "answered": a})))
            .collect::<serde_json::Map<String, Value>>(),
        "libcal_requests": st.libcal_requests, "libcal_tokens_issued": st.libcal_tokens_issued,
    }))
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let cli = Cli::parse();
    let port = cli.port;
    let sim = web::Data::new(Sim {
        cli,
        state: Mutex::default(),
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(sim.clone())
            .route("/1.1/oauth/token", web::post().to(libcal_token))
            .route("/1.1/space/bookings", web::get().to(libcal_bookings))
            .route("/_sim/libcal/bookings", web::put().to(libcal_load))
            .route("/_sim/libcal/expire", web::post().to(libcal_expire))
            .route("/_sim/libcal/down", web::post().to(libcal_down))
            .route("/almaws/v1/users/{id}", web::get().to(alma_user))
            .route("/pp/api/v2/auth/login", web::post().to(pp_login))
            .route(
                "/pp/api/v2/person/createVisitor",
                web::post().to(create_visitor),
            )
            .route("/pp/api/v2/person/byUniqueId", web::get().to(by_unique_id))
            .route(
                "/pp/api/v2/visit/createPreReg",
                web::post().to(create_prereg),
            )
            .route("/_sim/alma/users/{id}", web::put().to(put_patron))
            .route("/_sim/alma/daily", web::post().to(alma_daily))
            .route("/_sim/pp/expire", web::post().to(expire))
            .route("/_sim/pp/faults", web::post().to(add_fault))
            .route("/_sim/state", web::get().to(inspect))
    })
    .workers(2)
    .bind(("127.0.0.1", port))?;
    let addr = server.addrs()[0];
    println!("ferry-libsim listening on {addr}");
    server.run().await
}
