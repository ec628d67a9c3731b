//! ferryctl: the operator's command line. `fleet` starts, stops and surveys an api+worker pair
//! for every active tenant of a tenants file (and `fleet serve` shows them in a browser); the other commands act on one tenant's api.

pub mod client;
pub mod fleet;
pub mod page;
pub mod table;
