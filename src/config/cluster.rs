//! `[cluster]`: how nodes find, authenticate and hear from each other.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::{Problems, Secret};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Where this node listens for other nodes. Loopback unless configured.
    pub listen: SocketAddr,
    /// The host other nodes dial to reach this one (at `listen`'s port); defaults to
    /// `listen`'s address. Needed when listening on 0.0.0.0.
    pub advertise_host: Option<String>,
    /// Shared secret every node must present; `KADR_CLUSTER_COOKIE` overrides it.
    pub cookie: Secret,
    /// Nodes to join at start (`host:port`); the rest of the cluster is learned from them.
    pub seeds: Vec<String>,
    /// How long start-up waits to join at least one seed before giving up.
    pub join_timeout_ms: u64,
    /// How often a node tells the others it is alive (and what it runs).
    pub heartbeat_ms: u64,
    /// How long a source node's claim on the frames channels lasts without renewal: a
    /// standby source node takes over within this after the active one dies.
    pub source_lease_ms: u64,
    /// A lease per stream (the default), the streams spread over every live source node
    /// (`crate::placement`); `false`: one node-wide source lease, one source node reading
    /// every stream while the others stand by.
    pub stream_leases: bool,
    /// TLS between nodes; plaintext when absent.
    pub tls: Option<TlsConfig>,
    /// A connection to `listen` that has not authenticated (TLS and cookie) within this is
    /// closed.
    pub handshake_timeout_ms: u64,
    /// Connections to `listen` waiting to authenticate at once; one more is closed at accept.
    pub max_pending_handshakes: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7400)),
            advertise_host: None,
            cookie: Secret::default(),
            seeds: Vec::new(),
            join_timeout_ms: 10_000,
            heartbeat_ms: 1_000,
            source_lease_ms: 3_000,
            stream_leases: true,
            tls: None,
            handshake_timeout_ms: 5_000,
            max_pending_handshakes: 64,
        }
    }
}

impl ClusterConfig {
    /// The host other nodes dial.
    pub fn advertised_host(&self) -> String {
        self.advertise_host
            .clone()
            .unwrap_or_else(|| self.listen.ip().to_string())
    }

    /// `host:port`, as other nodes dial it.
    pub fn advertised(&self) -> String {
        let host = self.advertised_host();
        if host.contains(':') {
            format!("[{host}]:{}", self.listen.port())
        } else {
            format!("{host}:{}", self.listen.port())
        }
    }
}

/// Mutual TLS: every node presents a certificate signed by `ca` and checks its peer's.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// This node's certificate chain (PEM).
    pub cert: PathBuf,
    /// This node's private key (PEM).
    pub key: PathBuf,
    /// The cluster's certificate authority (PEM); peers must present a certificate it signed.
    pub ca: PathBuf,
    /// The name every node's certificate carries (a DNS subject alternative name).
    #[serde(default = "default_tls_server_name")]
    pub server_name: String,
}

fn default_tls_server_name() -> String {
    "kadr".into()
}

impl ClusterConfig {
    pub(super) fn check(&self, p: &mut Problems) {
        if self.cookie.expose().len() < 8 {
            p.add(
                "cluster.cookie",
                "must be set, at least 8 characters (or set KADR_CLUSTER_COOKIE); every node of a cluster shares it",
            );
        }
        for seed in &self.seeds {
            if !is_host_port(seed) {
                p.add("cluster.seeds", format!("{seed:?} is not host:port"));
            }
        }
        let host = self.advertised_host();
        if host.is_empty() || host == "0.0.0.0" || host == "::" {
            p.add(
                "cluster.advertise_host",
                format!("{host:?} is not an address other nodes can dial; set it to this node's host name or IP"),
            );
        }
        if self.listen.port() == 0 {
            p.add("cluster.listen", "needs a port (not 0): peers dial it");
        }
        p.range(
            "cluster.join_timeout_ms",
            self.join_timeout_ms,
            100,
            600_000,
        );
        p.range("cluster.heartbeat_ms", self.heartbeat_ms, 50, 60_000);
        p.range(
            "cluster.handshake_timeout_ms",
            self.handshake_timeout_ms,
            100,
            600_000,
        );
        p.range(
            "cluster.max_pending_handshakes",
            self.max_pending_handshakes as u64,
            1,
            10_000,
        );
        if let Some(tls) = &self.tls {
            for (field, path) in [
                ("cluster.tls.cert", &tls.cert),
                ("cluster.tls.key", &tls.key),
                ("cluster.tls.ca", &tls.ca),
            ] {
                if !path.is_file() {
                    p.add(field, format!("{} is not a file", path.display()));
                }
            }
        }
    }
}

fn is_host_port(s: &str) -> bool {
    matches!(s.rsplit_once(':'), Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0))
}
