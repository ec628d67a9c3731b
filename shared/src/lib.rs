//! Ferry's shared vocabulary: the job model, input validation, the JSON envelope, tenant config,
//! the retry policy and the worker-protocol types.
//!
//! Both binaries speak these types, so they live here; this crate depends on neither actix-web,
//! sled nor reqwest (an Architecture Invariant), which keeps it cheap to build and easy to test.

pub mod alerts;
pub mod answer;
pub mod booking;
pub mod config;
pub mod envelope;
pub mod job;
pub mod oauth2;
pub mod passagepoint;
pub mod protocol;
pub mod recipe;
pub mod records;
pub mod retry;
pub mod secret;
pub mod source;
pub mod strict;
pub mod target;
pub mod validate;

pub use secret::Secret;

/// Milliseconds since the Unix epoch: the one clock every stored time is written in.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Whether `s` is an RFC 3339 date-time with an offset.
pub fn is_rfc3339(s: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

/// An RFC 3339 date-time as ms since the epoch.
pub fn rfc3339_ms(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// Renders a stored millisecond time for people and JSON clients (RFC 3339, UTC).
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
