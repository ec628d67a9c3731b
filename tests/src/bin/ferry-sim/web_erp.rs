//! The web ERP: an ERP with only a web UI, for the `erp_browser` connector and its recipe
//! (`deploy/recipes/ferry-sim-web.toml`).
//!
//! - `GET /web/login`, `POST /web/login` (form: `username`, `password`; a session cookie on
//!   success, the form again with `.login-error` otherwise).
//! - `GET /web/worksheets`: a table of worksheets (`#worksheets`, `td.number`, a link per row).
//! - `GET /web/worksheets/{ws}`: its lines (`#lines`, `td.product`, `td.amount`, `td.name`) and
//!   the add-line form (`#product`, `#amount`, `#name`, `#save`); `POST` to `.../lines` adds one,
//!   kept beside the REST ERP's lines (so `GET /_sim/lines` shows both), and answers the page
//!   again with "Line saved".
//! - Knobs, `POST /_sim/web` with any of: `password`, `session_ttl_ms` (sessions expire),
//!   `slow_ms` (every page answers that much later), `render_ms` (a worksheet's lines and form
//!   appear by script that much after the page loads), `layout_changed` (the worksheet page's ids
//!   are renamed), `fail_saves` (the next N saves answer 500 and save nothing),
//!   `hold_after_save_ms` (a save is made, then answered that much later), and
//!   `expire_sessions: true` ends every session at once. `GET /_sim/web` shows
//!   them with the count of logins and refused logins.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use crate::Sim;

pub const USERNAME: &str = "ferry";
const WORKSHEETS: [&str; 5] = ["558", "559", "560", "561", "1001"];

pub struct Web {
    password: String,
    sessions: HashMap<String, Instant>,
    next_session: u64,
    knobs: Knobs,
    logins: u64,
    refused_logins: u64,
}

impl Default for Web {
    fn default() -> Self {
        Self {
            password: "oil-secret".into(),
            sessions: HashMap::new(),
            next_session: 0,
            knobs: Knobs::default(),
            logins: 0,
            refused_logins: 0,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
pub struct Knobs {
    session_ttl_ms: Option<u64>,
    #[serde(default)]
    slow_ms: u64,
    #[serde(default)]
    render_ms: u64,
    #[serde(default)]
    layout_changed: bool,
    #[serde(default)]
    fail_saves: u32,
    #[serde(default)]
    hold_after_save_ms: u64,
}

#[derive(Deserialize)]
pub struct KnobsUpdate {
    password: Option<String>,
    /// Ends every session now (as if each had expired).
    #[serde(default)]
    expire_sessions: bool,
    #[serde(flatten)]
    knobs: Knobs,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/web/login", web::get().to(login_page))
        .route("/web/login", web::post().to(login))
        .route("/web/worksheets", web::get().to(worksheets))
        .route("/web/worksheets/{ws}", web::get().to(worksheet))
        .route("/web/worksheets/{ws}/lines", web::post().to(add_line))
        .route("/_sim/web", web::post().to(set_knobs))
        .route("/_sim/web", web::get().to(show));
}

fn page(title: &str, body: &str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
             <body><h1>{title}</h1>{body}</body></html>"
        ))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn to_login() -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header(("Location", "/web/login"))
        .finish()
}

/// Waits as the `slow_ms` knob says, and answers whether the request's session is valid.
async fn enter(sim: &Sim, req: &HttpRequest) -> (bool, Knobs) {
    let knobs = sim.erp.lock().expect("lock").web.knobs.clone();
    if knobs.slow_ms > 0 {
        tokio::time::sleep(Duration::from_millis(knobs.slow_ms)).await;
    }
    let sid = session_cookie(req);
    let mut erp = sim.erp.lock().expect("lock");
    let ttl = knobs.session_ttl_ms.map(Duration::from_millis);
    let web = &mut erp.web;
    let valid = match sid.and_then(|s| web.sessions.get(&s).map(|at| (s, *at))) {
        Some((sid, since)) if ttl.is_some_and(|ttl| since.elapsed() > ttl) => {
            web.sessions.remove(&sid);
            false
        }
        Some(_) => true,
        None => false,
    };
    (valid, knobs)
}

fn login_form(error: bool) -> HttpResponse {
    let error = if error {
        "<p class=\"login-error\">Wrong username or password</p>"
    } else {
        ""
    };
    page(
        "Log in",
        &format!(
            "{error}<form id=\"login-form\" method=\"post\" action=\"/web/login\">\
             <label>User <input id=\"username\" name=\"username\"></label>\
             <label>Password <input id=\"password\" name=\"password\" type=\"password\"></label>\
             <button id=\"login\" type=\"submit\">Log in</button></form>"
        ),
    )
}

async fn login_page(sim: web::Data<Sim>, req: HttpRequest) -> HttpResponse {
    enter(&sim, &req).await;
    login_form(false)
}

async fn login(
    sim: web::Data<Sim>,
    req: HttpRequest,
    form: web::Form<HashMap<String, String>>,
) -> HttpResponse {
    enter(&sim, &req).await;
    let mut erp = sim.erp.lock().expect("lock");
    let web = &mut erp.web;
    let ok = form.get("username").map(String::as_str) == Some(USERNAME)
        && form.get("password") == Some(&web.password);
    if !ok {
        web.refused_logins += 1;
        return login_form(true);
    }
    web.logins += 1;
    web.next_session += 1;
    let sid = format!("s{}-{}", web.next_session, std::process::id());
    web.sessions.insert(sid.clone(), Instant::now());
    HttpResponse::SeeOther()
        .insert_header(("Location", "/web/worksheets"))
        .insert_header(("Set-Cookie", format!("sid={sid}; Path=/web; HttpOnly")))
        .finish()
}

/// The `sid` cookie the request carries.
fn session_cookie(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get_all("cookie")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("sid=").map(str::to_string))
}

async fn worksheets(sim: web::Data<Sim>, req: HttpRequest) -> HttpResponse {
    if !enter(&sim, &req).await.0 {
        return to_login();
    }
    let rows: String = WORKSHEETS
        .iter()
        .map(|ws| {
            format!(
                "<tr><td class=\"number\">{ws}</td><td>Car {ws}</td>\
                 <td><a href=\"/web/worksheets/{ws}\">open</a></td></tr>"
            )
        })
        .collect();
    page(
        "Worksheets",
        &format!(
            "<table id=\"worksheets\"><thead><tr><th>Nr</th><th>Car</th><th></th></tr></thead><tbody>{rows}</tbody></table>"
        ),
    )
}

fn worksheet_page(sim: &Sim, ws: &str, knobs: &Knobs, saved: bool) -> HttpResponse {
    let ids = if knobs.layout_changed {
        ["positions", "article", "qty", "text", "store"]
    } else {
        ["lines", "product", "amount", "name", "save"]
    };
    let [table, product, amount, name, save] = ids;
    let rows: String = {
        let erp = sim.erp.lock().expect("lock");
        erp.lines
            .iter()
            .filter(|l| l["worksheet"] == ws)
            .map(|l| {
                format!(
                    "<tr><td class=\"product\">{}</td><td class=\"amount\">{}</td>\
                     <td class=\"name\">{}</td></tr>",
                    escape(l["product_nr"].as_str().unwrap_or_default()),
                    l["amount"],
                    escape(l["reference"].as_str().unwrap_or_default())
                )
            })
            .collect()
    };
    let content = format!(
        "<table id=\"{table}\"><thead><tr><th>Product</th><th>Amount</th><th>Name</th></tr></thead>\
         <tbody>{rows}</tbody></table>\
         <form id=\"add-line\" method=\"post\" action=\"/web/worksheets/{ws}/lines\">\
         <input id=\"{product}\" name=\"product\"><input id=\"{amount}\" name=\"amount\">\
         <input id=\"{name}\" name=\"name\"><button id=\"{save}\" type=\"submit\">Save</button></form>"
    );
    let flash = if saved {
        "<p class=\"flash\">Line saved</p>"
    } else {
        ""
    };
    let body = if knobs.render_ms > 0 {
        format!(
            "{flash}<div id=\"content\"></div><script>setTimeout(function () {{ \
             document.getElementById('content').innerHTML = {}; }}, {});</script>",
            json!(content),
            knobs.render_ms
        )
    } else {
        format!("{flash}{content}")
    };
    page(&format!("Worksheet {ws}"), &body)
}

async fn worksheet(sim: web::Data<Sim>, req: HttpRequest, ws: web::Path<String>) -> HttpResponse {
    let (valid, knobs) = enter(&sim, &req).await;
    if !valid {
        return to_login();
    }
    if !WORKSHEETS.contains(&ws.as_str()) {
        return HttpResponse::NotFound().body("no such worksheet");
    }
    worksheet_page(&sim, &ws, &knobs, false)
}

async fn add_line(
    sim: web::Data<Sim>,
    req: HttpRequest,
    ws: web::Path<String>,
    form: web::Form<HashMap<String, String>>,
) -> HttpResponse {
    let (valid, knobs) = enter(&sim, &req).await;
    if !valid {
        return to_login();
    }
    let field = |k: &str| {
        form.get(k)
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let amount: f64 = match field("amount").replace(',', ".").parse() {
        Ok(a) if a > 0.0 => a,
        _ => return HttpResponse::BadRequest().body("amount must be a positive number"),
    };
    {
        let mut erp = sim.erp.lock().expect("lock");
        erp.requests += 1;
        if erp.web.knobs.fail_saves > 0 {
            erp.web.knobs.fail_saves -= 1;
            return HttpResponse::InternalServerError()
                .content_type("text/html")
                .body("<h1>Internal error</h1><p>The line could not be saved.</p>");
        }
        let id = format!("L-{}", erp.lines.len() + 1);
        erp.lines.push(json!({
            "id": id, "worksheet": ws.as_str(), "product_nr": field("product"),
            "amount": amount, "reference": field("name"), "idempotency_key": null, "via": "web",
        }));
        let lines = erp.lines.len();
        drop(erp);
        sim.grew_to(lines);
    }
    if knobs.hold_after_save_ms > 0 {
        tokio::time::sleep(Duration::from_millis(knobs.hold_after_save_ms)).await;
    }
    worksheet_page(&sim, &ws, &knobs, true)
}

async fn set_knobs(sim: web::Data<Sim>, update: web::Json<KnobsUpdate>) -> HttpResponse {
    let update = update.into_inner();
    let mut erp = sim.erp.lock().expect("lock");
    if let Some(p) = update.password {
        erp.web.password = p;
    }
    erp.web.knobs = update.knobs;
    if update.expire_sessions {
        erp.web.sessions.clear();
    }
    HttpResponse::Ok().json(json!({"ok": true}))
}

async fn show(sim: web::Data<Sim>) -> HttpResponse {
    let erp = sim.erp.lock().expect("lock");
    HttpResponse::Ok().json(json!({
        "logins": erp.web.logins,
        "refused_logins": erp.web.refused_logins,
        "sessions": erp.web.sessions.len(),
        "knobs": erp.web.knobs,
    }))
}
