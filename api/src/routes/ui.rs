//! The dashboard's page, script and style, compiled into the binary: `/` and `/ui` serve the
//! page, which reads and acts through the api's JSON routes with the key the person gives it.
//! The files hold no tenant data, so they are open, like `/docs`.

use actix_web::{HttpResponse, web};

const PAGE: &str = include_str!("../../ui/index.html");
const SCRIPT: &str = include_str!("../../ui/app.js");
const STYLE: &str = include_str!("../../ui/app.css");

pub fn configure(cfg: &mut web::ServiceConfig) {
    use actix_web::http::Method;
    cfg.service(super::route(Method::GET, "/", page))
        .service(super::route(Method::GET, "/ui", page))
        .service(super::route(Method::GET, "/ui/app.js", script))
        .service(super::route(Method::GET, "/ui/app.css", style))
        .service(super::route(Method::GET, "/ui/session", session));
}

/// Whether this tenant needs a key, and whether the one presented (`x-api-key`) is it: the
/// sign-in form asks here, so a wrong key is told without a refused request in the console.
async fn session(
    state: web::Data<crate::state::AppState>,
    req: actix_web::HttpRequest,
) -> HttpResponse {
    let required = state.settings.api_key.as_ref();
    let given = req.headers().get("x-api-key").and_then(|v| v.to_str().ok());
    let valid = match (required, given) {
        (None, _) => true,
        (Some(k), Some(g)) => crate::auth::constant_time_eq(g.as_bytes(), k.expose().as_bytes()),
        (Some(_), None) => false,
    };
    let mut answer = super::ok(
        actix_web::http::StatusCode::OK,
        if valid {
            "signed in"
        } else {
            "a key is needed"
        },
        serde_json::json!({ "key_required": required.is_some(), "key_valid": valid }),
    );
    answer.headers_mut().insert(
        actix_web::http::header::CACHE_CONTROL,
        actix_web::http::header::HeaderValue::from_static("no-store"),
    );
    answer
}

fn file(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(("X-Content-Type-Options", "nosniff"))
        // The page and its script only, from this origin; no frames of it elsewhere.
        .insert_header((
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' blob: data:; frame-ancestors 'none'",
        ))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .body(body)
}

async fn page() -> HttpResponse {
    file("text/html; charset=utf-8", PAGE)
}

async fn script() -> HttpResponse {
    file("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> HttpResponse {
    file("text/css; charset=utf-8", STYLE)
}
