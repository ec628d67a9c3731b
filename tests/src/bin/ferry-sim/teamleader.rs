//! A Teamleader Focus simulator: OAuth2 (authorization code with rotating refresh tokens) and
//! `<resource>.list`, for the `teamleader` source, the OAuth2 resolver and their tests.
//!
//! - `GET /oauth2/authorize?client_id=&redirect_uri=&state=&response_type=code`: a page with an
//!   "Allow" link (`/oauth2/authorize/allow?...`, which redirects to `redirect_uri?code=&state=`)
//!   and a "Deny" link (`redirect_uri?error=access_denied&state=`).
//! - `POST /oauth2/access_token` (form): `authorization_code` (a code is good once, for 10
//!   minutes), `refresh_token` (a refresh token is good once: the answer is a new pair; a spent or
//!   revoked one is refused with Teamleader's own body), `client_credentials`. The client secret
//!   must be `tl-secret`.
//! - `POST /{resource}.list` with `{"filter": {"updated_since"}, "page": {"size", "number"}}` and
//!   a bearer token: `{"data": [...]}` ordered by id, records changed at or after
//!   `updated_since`. Every answer has `X-RateLimit-Limit`, `-Remaining` and `-Reset`; over the
//!   limit (200 calls in a sliding minute) the answer is 429.
//! - `POST /_sim/teamleader` sets knobs: `access_ttl_secs` (3600), `rate_limit` (200),
//!   `rate_window_ms` (60000), `fail_lists` (the next N list calls answer 500),
//!   `expire_after_lists` (access tokens stop working after N more list calls),
//!   `list_delay_ms`, and `revoke: true` (every refresh and access token is revoked).
//!   `POST /_sim/teamleader/records` `{"resource", "count"}` adds records changed a day ago;
//!   `POST /_sim/teamleader/touch` `{"resource", "ids"}` changes them now. `GET /_sim/teamleader`
//!   shows the counters (refreshes, refused and reused refresh tokens, 401s, 429s, list calls).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Sim;

pub const CLIENT_SECRET: &str = "tl-secret";
const CODE_TTL: Duration = Duration::from_secs(600);

pub struct Teamleader {
    codes: HashMap<String, Instant>,
    /// Refresh tokens that may be used (once).
    refresh: HashSet<String>,
    /// Refresh tokens used or revoked, with why they are refused.
    spent: HashMap<String, &'static str>,
    access: HashMap<String, Instant>,
    records: BTreeMap<String, BTreeMap<String, Value>>,
    calls: VecDeque<Instant>,
    knobs: Knobs,
    stats: Stats,
    next: u64,
}

#[derive(Debug, Clone, Deserialize)]
struct Knobs {
    access_ttl_secs: u64,
    rate_limit: usize,
    rate_window_ms: u64,
    fail_lists: u32,
    expire_after_lists: Option<u32>,
    list_delay_ms: u64,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
struct Stats {
    codes_exchanged: u64,
    refreshes: u64,
    refresh_refused: u64,
    /// Refresh tokens presented a second time: a client that lost track of rotation.
    refresh_reused: u64,
    client_credentials: u64,
    list_calls: u64,
    unauthorized: u64,
    rate_limited: u64,
    records_listed: u64,
}

impl Default for Teamleader {
    fn default() -> Self {
        Self {
            codes: HashMap::new(),
            refresh: HashSet::new(),
            spent: HashMap::new(),
            access: HashMap::new(),
            records: BTreeMap::new(),
            calls: VecDeque::new(),
            knobs: Knobs {
                access_ttl_secs: 3600,
                rate_limit: 200,
                rate_window_ms: 60_000,
                fail_lists: 0,
                expire_after_lists: None,
                list_delay_ms: 0,
            },
            stats: Stats::default(),
            next: 0,
        }
    }
}

impl Teamleader {
    fn token(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}-{}-{}", self.next, uuid_ish(self.next))
    }

    fn issue(&mut self, with_refresh: bool) -> Value {
        let access = self.token("at");
        let ttl = self.knobs.access_ttl_secs;
        self.access
            .insert(access.clone(), Instant::now() + Duration::from_secs(ttl));
        let mut answer = json!({"token_type": "Bearer", "expires_in": ttl, "access_token": access});
        if with_refresh {
            let refresh = self.token("rt");
            self.refresh.insert(refresh.clone());
            answer["refresh_token"] = json!(refresh);
        }
        answer
    }

    /// Whether `req` carries a live access token.
    pub fn authorized(&self, req: &HttpRequest) -> bool {
        let token = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        token
            .and_then(|t| self.access.get(t))
            .is_some_and(|until| *until > Instant::now())
    }
}

fn uuid_ish(n: u64) -> String {
    let mut x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5851_f42d_4c95_7f2d;
    x ^= x >> 29;
    format!("{x:016x}")
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/oauth2/authorize", web::get().to(authorize))
        .route("/oauth2/authorize/allow", web::get().to(allow))
        .route("/oauth2/access_token", web::post().to(access_token))
        .route("/_sim/teamleader", web::post().to(set_knobs))
        .route("/_sim/teamleader", web::get().to(show))
        .route("/_sim/teamleader/records", web::post().to(add_records))
        .route("/_sim/teamleader/touch", web::post().to(touch))
        .route("/{resource}.list", web::post().to(list));
}

fn query(req: &HttpRequest) -> HashMap<String, String> {
    web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .map(|q| q.into_inner())
        .unwrap_or_default()
}

fn with_query(base: &str, pairs: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let q: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect();
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}{}", q.join("&"))
}

async fn authorize(req: HttpRequest) -> HttpResponse {
    let q = query(&req);
    let (Some(redirect), Some(state)) = (q.get("redirect_uri"), q.get("state")) else {
        return HttpResponse::BadRequest().body("redirect_uri and state are required");
    };
    let allow = with_query(
        "/oauth2/authorize/allow",
        &[("redirect_uri", redirect), ("state", state)],
    );
    let deny = with_query(redirect, &[("error", "access_denied"), ("state", state)]);
    let esc = |s: &str| s.replace('&', "&amp;").replace('"', "&quot;");
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(format!(
            "<!doctype html><html><body><h1>Allow Ferry to read your Teamleader?</h1>\
             <a id=\"allow\" href=\"{}\">Allow</a> <a id=\"deny\" href=\"{}\">Deny</a></body></html>",
            esc(&allow),
            esc(&deny)
        ))
}

async fn allow(sim: web::Data<Sim>, req: HttpRequest) -> HttpResponse {
    let q = query(&req);
    let (Some(redirect), Some(state)) = (q.get("redirect_uri"), q.get("state")) else {
        return HttpResponse::BadRequest().body("redirect_uri and state are required");
    };
    let code = {
        let mut tl = sim.tl.lock().expect("lock");
        let code = tl.token("code");
        tl.codes.insert(code.clone(), Instant::now() + CODE_TTL);
        code
    };
    HttpResponse::Found()
        .insert_header((
            "Location",
            with_query(redirect, &[("code", &code), ("state", state)]),
        ))
        .finish()
}

fn invalid(title: &str, hint: &str) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({"errors": [{
        "code": 8, "title": title, "status": 400,
        "meta": {"type": "invalid_request", "hint": hint},
    }]}))
}

async fn access_token(
    sim: web::Data<Sim>,
    form: web::Form<HashMap<String, String>>,
) -> HttpResponse {
    let f = form.into_inner();
    let get = |k: &str| f.get(k).map(String::as_str).unwrap_or("");
    if get("client_secret") != CLIENT_SECRET {
        return HttpResponse::Unauthorized()
            .json(json!({"errors": [{"title": "Client authentication failed", "status": 401}]}));
    }
    let mut tl = sim.tl.lock().expect("lock");
    match get("grant_type") {
        "authorization_code" => match tl.codes.remove(get("code")) {
            Some(until) if until > Instant::now() => {
                tl.stats.codes_exchanged += 1;
                HttpResponse::Ok().json(tl.issue(true))
            }
            Some(_) => invalid(
                "The authorization code has expired.",
                "Authorization code has expired",
            ),
            None => invalid(
                "The authorization code is invalid.",
                "Authorization code has been revoked",
            ),
        },
        "refresh_token" => {
            let token = get("refresh_token").to_string();
            if tl.refresh.remove(&token) {
                tl.stats.refreshes += 1;
                tl.spent.insert(token, "used");
                return HttpResponse::Ok().json(tl.issue(true));
            }
            tl.stats.refresh_refused += 1;
            if tl.spent.get(&token) == Some(&"used") {
                tl.stats.refresh_reused += 1;
            }
            invalid("The refresh token is invalid.", "Token has been revoked")
        }
        "client_credentials" => {
            tl.stats.client_credentials += 1;
            HttpResponse::Ok().json(tl.issue(false))
        }
        other => invalid(
            &format!("Unsupported grant type {other}."),
            "unsupported_grant_type",
        ),
    }
}

async fn list(
    sim: web::Data<Sim>,
    req: HttpRequest,
    resource: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let delay = sim.tl.lock().expect("lock").knobs.list_delay_ms;
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let mut tl = sim.tl.lock().expect("lock");
    let now = Instant::now();
    let window = Duration::from_millis(tl.knobs.rate_window_ms);
    while tl
        .calls
        .front()
        .is_some_and(|t| now.duration_since(*t) >= window)
    {
        tl.calls.pop_front();
    }
    let limited = tl.calls.len() >= tl.knobs.rate_limit;
    if !limited {
        tl.calls.push_back(now);
    }
    let remaining = tl.knobs.rate_limit.saturating_sub(tl.calls.len());
    let reset_in = tl
        .calls
        .front()
        .map(|t| window.saturating_sub(now.duration_since(*t)))
        .unwrap_or_default();
    let reset = (chrono::Utc::now() + reset_in)
        .format("%Y-%m-%dT%H:%M:%S%.3f%z")
        .to_string();
    let limit = tl.knobs.rate_limit.to_string();
    let headers = |b: &mut actix_web::HttpResponseBuilder, remaining: usize| {
        b.insert_header(("X-RateLimit-Limit", limit.clone()))
            .insert_header(("X-RateLimit-Remaining", remaining.to_string()))
            .insert_header(("X-RateLimit-Reset", reset.clone()));
    };
    if limited {
        tl.stats.rate_limited += 1;
        let mut b = HttpResponse::TooManyRequests();
        headers(&mut b, 0);
        return b.json(json!({"errors": [{"title": "Too Many Requests", "status": 429}]}));
    }
    let mut b = HttpResponse::Ok();
    headers(&mut b, remaining);
    if !tl.authorized(&req) {
        tl.stats.unauthorized += 1;
        let mut b = HttpResponse::Unauthorized();
        headers(&mut b, remaining);
        return b.json(json!({"errors": [{"title": "Unauthorized", "status": 401}]}));
    }
    tl.stats.list_calls += 1;
    if let Some(n) = tl.knobs.expire_after_lists {
        if n <= 1 {
            tl.knobs.expire_after_lists = None;
            tl.access.clear();
        } else {
            tl.knobs.expire_after_lists = Some(n - 1);
        }
    }
    if tl.knobs.fail_lists > 0 {
        tl.knobs.fail_lists -= 1;
        let mut b = HttpResponse::InternalServerError();
        headers(&mut b, remaining);
        return b.json(json!({"errors": [{"title": "Internal Server Error", "status": 500}]}));
    }
    let q: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let since = q["filter"]["updated_since"]
        .as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
    let size = q["page"]["size"].as_u64().unwrap_or(20).clamp(1, 100) as usize;
    let number = q["page"]["number"].as_u64().unwrap_or(1).max(1) as usize;
    let data: Vec<Value> = tl
        .records
        .get(resource.as_str())
        .into_iter()
        .flat_map(|m| m.values())
        .filter(|r| {
            since.is_none_or(|s| {
                r["updated_at"]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .is_some_and(|t| t >= s)
            })
        })
        .skip((number - 1) * size)
        .take(size)
        .cloned()
        .collect();
    tl.stats.records_listed += data.len() as u64;
    b.json(json!({ "data": data }))
}

#[derive(Deserialize)]
struct KnobsIn {
    access_ttl_secs: Option<u64>,
    rate_limit: Option<usize>,
    rate_window_ms: Option<u64>,
    fail_lists: Option<u32>,
    expire_after_lists: Option<u32>,
    list_delay_ms: Option<u64>,
    #[serde(default)]
    revoke: bool,
}

async fn set_knobs(sim: web::Data<Sim>, k: web::Json<KnobsIn>) -> HttpResponse {
    let mut tl = sim.tl.lock().expect("lock");
    let k = k.into_inner();
    let knobs = &mut tl.knobs;
    if let Some(v) = k.access_ttl_secs {
        knobs.access_ttl_secs = v;
    }
    if let Some(v) = k.rate_limit {
        knobs.rate_limit = v;
    }
    if let Some(v) = k.rate_window_ms {
        knobs.rate_window_ms = v;
    }
    if let Some(v) = k.fail_lists {
        knobs.fail_lists = v;
    }
    if let Some(v) = k.expire_after_lists {
        knobs.expire_after_lists = Some(v);
    }
    if let Some(v) = k.list_delay_ms {
        knobs.list_delay_ms = v;
    }
    if k.revoke {
        let revoked: Vec<String> = tl.refresh.drain().collect();
        for t in revoked {
            tl.spent.insert(t, "revoked");
        }
        tl.access.clear();
    }
    show_locked(&tl)
}

async fn show(sim: web::Data<Sim>) -> HttpResponse {
    show_locked(&sim.tl.lock().expect("lock"))
}

fn show_locked(tl: &Teamleader) -> HttpResponse {
    let counts: BTreeMap<&str, usize> = tl
        .records
        .iter()
        .map(|(k, v)| (k.as_str(), v.len()))
        .collect();
    HttpResponse::Ok().json(json!({
        "stats": tl.stats, "records": counts, "knobs": {
            "access_ttl_secs": tl.knobs.access_ttl_secs, "rate_limit": tl.knobs.rate_limit,
            "rate_window_ms": tl.knobs.rate_window_ms,
        },
        "live_refresh_tokens": tl.refresh.len(),
    }))
}

#[derive(Deserialize)]
struct AddRecords {
    resource: String,
    count: usize,
}

fn stamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

/// A record of `resource` as Teamleader shows it (the fields Ferry's tables read, and more).
fn record(resource: &str, id: &str, n: usize, version: u64, updated_at: &str) -> Value {
    let mut r = match resource {
        "companies" => json!({
            "name": format!("Company {n} v{version}"), "vat_number": format!("BE0{n:09}"),
            "emails": [{"type": "primary", "email": format!("info{n}@example.com")}],
            "website": format!("https://company{n}.example.com"), "status": "active",
        }),
        "contacts" => json!({
            "first_name": format!("First{n}"), "last_name": format!("Last{n} v{version}"),
            "emails": [{"type": "primary", "email": format!("contact{n}@example.com")}],
            "company": {"type": "company", "id": format!("companies-{}", n % 50)},
        }),
        "deals" => json!({
            "title": format!("Deal {n} v{version}"), "status": "open", "reference": format!("D{n}"),
            "lead": {"customer": {"type": "company", "id": format!("companies-{}", n % 50)}},
            "estimated_value": {"amount": 1000.5 + n as f64, "currency": "EUR"},
        }),
        "invoices" => json!({
            "invoice_number": format!("2026 / {n}"), "status": "draft", "invoice_date": "2026-11-30",
            "invoicee": {"customer": {"type": "company", "id": format!("companies-{}", n % 50)}},
            "total": {"payable": {"amount": 121.0 + n as f64, "currency": "EUR"}},
        }),
        "users" => json!({
            "first_name": format!("User{n}"), "last_name": format!("Last{n} v{version}"),
            "email": format!("user{n}@example.com"), "status": "active",
        }),
        _ => json!({"name": format!("{resource} {n} v{version}"), "status": "active"}),
    };
    r["id"] = json!(id);
    r["version"] = json!(version);
    r["added_at"] = json!("2026-01-01T00:00:00+00:00");
    r["updated_at"] = json!(updated_at);
    r
}

async fn add_records(sim: web::Data<Sim>, a: web::Json<AddRecords>) -> HttpResponse {
    let mut tl = sim.tl.lock().expect("lock");
    let day_ago = chrono::Utc::now() - chrono::Duration::days(1);
    let map = tl.records.entry(a.resource.clone()).or_default();
    let start = map.len();
    for n in start..start + a.count {
        let id = format!("{}-{n:06}", a.resource);
        let at = stamp(day_ago + chrono::Duration::seconds(n as i64 % 3600));
        map.insert(id.clone(), record(&a.resource, &id, n, 1, &at));
    }
    HttpResponse::Ok().json(json!({"resource": a.resource, "count": map.len()}))
}

#[derive(Deserialize)]
struct Touch {
    resource: String,
    ids: Vec<String>,
}

async fn touch(sim: web::Data<Sim>, t: web::Json<Touch>) -> HttpResponse {
    let mut tl = sim.tl.lock().expect("lock");
    let now = stamp(chrono::Utc::now());
    let Some(map) = tl.records.get_mut(&t.resource) else {
        return HttpResponse::NotFound().json(json!({"error": "no such resource"}));
    };
    let mut touched = Vec::new();
    for id in &t.ids {
        if let Some(r) = map.get_mut(id) {
            let version = r["version"].as_u64().unwrap_or(1) + 1;
            let n: usize = id
                .rsplit('-')
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            *r = record(&t.resource, id, n, version, &now);
            touched.push(r.clone());
        }
    }
    HttpResponse::Ok().json(json!({ "touched": touched }))
}
