//! ferry-worker: the stateless client that leases jobs from its ferry-api, delivers them to the
//! tenant's target through a connector, and reports each outcome. It holds no database: kill it
//! at any moment and its leases expire and the jobs are leased again.

pub mod client;
pub mod connector;
pub mod runner;
pub mod source;

pub use runner::{Settings, Worker, run_until_stopped};
