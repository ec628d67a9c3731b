//! ferry-api: one tenant's intake, status, queue control and worker protocol, on a store that
//! never loses an acknowledged job. `main.rs` only parses flags and calls [`startup`].

pub mod alerts;
pub mod auth;
pub mod cli;
pub mod error;
pub mod html;
pub mod metrics;
pub mod oauth;
pub mod routes;
pub mod shutdown;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
