//! ferryctl: the operator's command line. `fleet` starts, stops and surveys an api+worker pair
//! for every active tenant of a tenants file; the other commands act on one tenant's api.

pub mod client;
pub mod fleet;
pub mod table;
