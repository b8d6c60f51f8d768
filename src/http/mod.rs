//! The HTTP side of a node: the admin API ([`admin`]: health, cluster view, streams, pool
//! resizing), its `/metrics` ([`metrics`]) and the browser viewer ([`viewer`]) on the same port.

pub(crate) mod admin;
pub(crate) mod metrics;
pub(crate) mod viewer;
