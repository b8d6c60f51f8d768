//! The HTTP side of a node: the admin API ([`admin`]: health, cluster view, streams, metrics,
//! pool resizing) and the browser viewer ([`viewer`]) on the same port.

pub mod admin;
pub mod viewer;
