//! End-to-end suites: each starts the real binaries and talks HTTP, as users do.

// A test that cannot unwrap should fail loudly.
#![allow(clippy::unwrap_used)]

/// Alerts by e-mail through a mail sink: batching, retries, the signed retry link.
mod alerts;
/// The benchmark's own servers: its floor writes before it answers.
mod bench;
/// POST /bookings and GET /get_booking_status: booking jobs beside order lines.
mod bookings;
/// The erp_browser connector in headless Chromium against the simulated web ERP.
mod browser;
/// The dashboard and the fleet page in headless Chromium.
mod dashboard;
/// The worker delivers to the simulated ERP: retries, faults, kills, two workers.
mod delivery;
/// The disk fills under intake and delivery: honest refusals, probes told, back by itself.
mod diskfull;
/// Restarts and kill -9 under load: nothing acknowledged is lost.
mod durability;
/// ferryctl runs a fleet of tenants.
mod fleet;
/// POST /create: validation, idempotency, the legacy client, limits.
mod intake;
/// The deployed OilMat client and its pollers, byte for byte, beside a current client.
mod legacy;
/// A library tenant's libcal source: polled bookings are placed, failures reported.
mod libcal;
/// A library tenant: bookings become PassagePoint pre-registrations, exactly once.
mod library;
/// Metrics, logs and request ids; secrets never shown.
mod observability;
/// The worker protocol drives a job through every state.
mod protocol;
/// GET /queue, PUT /clear_queue, start and stop of the worker.
mod queue;
/// Routing, auth, the command line, and PUT /kill.
mod surface;
/// OAuth2 consent and rotation, and the Teamleader → PostgreSQL sync, with a real PostgreSQL.
mod teamleader;
/// Stores written by the previous release open and keep working.
mod upgrade;
