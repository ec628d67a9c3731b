//! ferry-worker: the stateless client that leases jobs from its ferry-api and delivers them.
