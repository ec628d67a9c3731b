//! The few pages the api answers a person's browser with (OAuth2 consent's callback, a signed
//! alert link): one shape, every text escaped.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;

/// `s` made safe as HTML text and attribute values.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A small page: `title` (plain text) and `body` (HTML the caller escaped). No script runs; a
/// form may post back to this origin.
pub fn page(status: StatusCode, title: &str, body: &str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .insert_header((
            "Content-Security-Policy",
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
        ))
        .body(format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Ferry: {}</title></head>\
             <body style=\"font-family:sans-serif;max-width:44rem;margin:2rem auto\">\
             <h1>{}</h1>{body}</body></html>\n",
            escape(title),
            escape(title)
        ))
}
