//! `[admin]`: the admin HTTP API and the viewer.

use std::net::SocketAddr;

use serde::Deserialize;

use super::{Problems, Secret};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// The admin HTTP API's address. Loopback unless configured.
    pub listen: SocketAddr,
    /// Bearer token for mutating calls; `KADR_ADMIN_TOKEN` overrides it. Unset: mutations refused.
    pub token: Secret,
    /// Live viewer pages open at once (each reads its stream's frames from Redis).
    pub max_viewers: usize,
    /// Host names (beside IP addresses and `localhost`) that requests may name in `Host`;
    /// `"*"` allows any. Others are refused, against DNS rebinding.
    pub allowed_hosts: Vec<String>,
}

/// Most viewers a config may allow: each costs a Redis connection and a stream's bandwidth.
pub(crate) const MAX_VIEWERS: usize = 64;

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7500)),
            token: Secret::default(),
            max_viewers: 8,
            allowed_hosts: Vec::new(),
        }
    }
}

impl AdminConfig {
    pub(super) fn check(&self, p: &mut Problems) {
        p.range(
            "admin.max_viewers",
            self.max_viewers as u64,
            0,
            MAX_VIEWERS as u64,
        );
    }
}
