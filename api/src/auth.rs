//! API-key checks. `/alive`, `/metrics`, `/openapi.json`, `/docs` and `/oauth/*` are open; `/worker/*` takes the worker token (by default the API key);
//! everything else takes the API key, from `x-api-key` or `Authorization: Bearer`, compared in
//! constant time. With no key configured the api listens on loopback only (see `startup`).

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{Error, web};

use crate::error::ApiError;
use crate::state::AppState;

pub async fn require_key(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let path = req.path();
    let required = match req.app_data::<web::Data<AppState>>() {
        Some(_) if is_open(path) => None,
        Some(state) if path.starts_with("/worker/") => state.settings.worker_secret().cloned(),
        // The worker's source places bookings with the worker's token.
        Some(state) if path == "/bookings" => {
            let worker = state.settings.worker_secret();
            match (presented_key(&req), &state.settings.api_key, worker) {
                (Some(given), _, Some(w))
                    if constant_time_eq(given.as_bytes(), w.expose().as_bytes()) =>
                {
                    None
                }
                _ => state.settings.api_key.clone(),
            }
        }
        Some(state) => state.settings.api_key.clone(),
        None => None,
    };
    if let Some(key) = required {
        let given = presented_key(&req);
        if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), key.expose().as_bytes())) {
            return Err(ApiError::Unauthorized.into());
        }
    }
    next.call(req).await
}

/// Health, metrics, the API's own description and the dashboard's files need no key: they hold
/// no tenant data (the dashboard reads through the other routes, with the key). Nor
/// does consent: `/oauth/start` only leads to the provider's sign-in, and the provider sends a
/// person's browser back to `/oauth/callback`, which checks its single-use `state`; and a signed
/// alert link (`/alerts/retry`) is its own proof.
fn is_open(path: &str) -> bool {
    matches!(
        path,
        "/alive"
            | "/metrics"
            | "/openapi.json"
            | "/docs"
            | "/oauth/start"
            | "/oauth/callback"
            | "/"
            | "/ui"
            | "/ui/app.js"
            | "/ui/app.css"
            | "/ui/session"
            | "/alerts/retry"
    ) || path.starts_with("/docs/")
}

fn presented_key(req: &ServiceRequest) -> Option<&str> {
    let headers = req.headers();
    if let Some(v) = headers.get("x-api-key") {
        return v.to_str().ok();
    }
    let auth = headers
        .get(actix_web::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    auth.strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("bearer "))
}

/// Compares without an early exit (`subtle`), so the time taken does not reveal how much of a
/// guess matched; only a wrong length answers sooner.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn keys_match_only_when_equal() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
