//! The HTTP side of a node: the admin API ([`admin`]: health, cluster view, streams, pool
//! resizing), its `/metrics` ([`metrics`]) and the browser viewer ([`viewer`]) on the same port.

pub mod admin;
pub mod metrics;
pub mod viewer;
