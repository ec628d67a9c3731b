//! The dashboard's page, script and style, compiled into the binary: `/` and `/ui` serve the
//! page, which reads and acts through the api's JSON routes with the key the person gives it.
//! The files hold no tenant data, so they are open, like `/docs`.

use actix_web::{HttpResponse, web};

const PAGE: &str = include_str!("../../ui/index.html");
const SCRIPT: &str = include_str!("../../ui/app.js");
const STYLE: &str = include_str!("../../ui/app.css");

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::route(actix_web::http::Method::GET, "/", page))
        .service(super::route(actix_web::http::Method::GET, "/ui", page))
        .service(super::route(
            actix_web::http::Method::GET,
            "/ui/app.js",
            script,
        ))
        .service(super::route(
            actix_web::http::Method::GET,
            "/ui/app.css",
            style,
        ));
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
