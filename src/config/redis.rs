//! `[redis]`: where frames come from and results go.

use std::path::PathBuf;

use serde::Deserialize;

use super::Problems;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    pub url: String,
    /// Every channel is named `{channel_prefix}:...`.
    pub channel_prefix: String,
    /// Results and errors are also appended to Redis Streams of their channels' names, each
    /// kept to about this many entries (0: pub/sub only).
    pub results_maxlen: u64,
    /// Frames streams: entries read per stream at a time, and how often (ms) the node looks
    /// for new frames streams.
    pub frames_read_count: usize,
    pub frames_scan_ms: u64,
    /// For `rediss://`: the CA that signed Redis's certificate (PEM; default: the system's
    /// trusted roots), and a client certificate and key (PEM) where Redis asks for one.
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Redis is a Redis Cluster: `url` is one of its nodes, `cluster_nodes` more of them (tried
    /// at start, and for pub/sub when one is down), and names are version 2 (hash-tagged).
    pub cluster: bool,
    pub cluster_nodes: Vec<String>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            channel_prefix: "kadr".into(),
            results_maxlen: 3000,
            frames_read_count: 8,
            frames_scan_ms: 1000,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            cluster: false,
            cluster_nodes: Vec::new(),
        }
    }
}

impl RedisConfig {
    /// The files for `rediss://`, as the connection code takes them.
    pub(crate) fn tls_files(&self) -> crate::redis_conn::TlsFiles<'_> {
        crate::redis_conn::TlsFiles {
            ca: self.tls_ca.as_deref(),
            cert: self.tls_cert.as_deref(),
            key: self.tls_key.as_deref(),
        }
    }

    /// Every Redis node named: `url`, then `cluster_nodes`.
    pub(crate) fn urls(&self) -> Vec<String> {
        std::iter::once(self.url.clone())
            .chain(self.cluster_nodes.iter().cloned())
            .collect()
    }

    pub(super) fn check(&self, p: &mut Problems) {
        let tls = self.url.starts_with("rediss://");
        if !tls && !self.url.starts_with("redis://") && !self.url.starts_with("unix://") {
            p.add(
                "redis.url",
                format!(
                    "{:?} is not a redis://, rediss:// or unix:// URL",
                    crate::redis_conn::redact(&self.url)
                ),
            );
        }
        if !self.cluster_nodes.is_empty() && !self.cluster {
            p.add("redis.cluster_nodes", "is set, but redis.cluster is false");
        }
        if self.cluster_nodes.len() > 64 {
            p.add("redis.cluster_nodes", "names more than 64 nodes");
        }
        for url in &self.cluster_nodes {
            // One scheme for all: TLS is on or off for the whole cluster.
            let scheme_ok = if tls {
                url.starts_with("rediss://")
            } else {
                url.starts_with("redis://")
            };
            if !scheme_ok {
                p.add(
                    "redis.cluster_nodes",
                    format!(
                        "{:?} is not a {} URL like redis.url",
                        crate::redis_conn::redact(url),
                        if tls { "rediss://" } else { "redis://" }
                    ),
                );
            }
        }
        if self.cluster && self.url.starts_with("unix://") {
            p.add(
                "redis.cluster",
                "a Redis Cluster is reached over TCP, not unix://",
            );
        }
        for (key, path) in [
            ("redis.tls_ca", &self.tls_ca),
            ("redis.tls_cert", &self.tls_cert),
            ("redis.tls_key", &self.tls_key),
        ] {
            let Some(path) = path else { continue };
            if !tls {
                p.add(key, "is set, but redis.url is not rediss:// (TLS)");
            } else if !path.is_file() {
                p.add(key, format!("{} is not a readable file", path.display()));
            }
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            p.add(
                "redis.tls_cert",
                "and redis.tls_key go together: set both or neither",
            );
        }
        p.range("redis.results_maxlen", self.results_maxlen, 0, 10_000_000);
        p.range(
            "redis.frames_read_count",
            self.frames_read_count as u64,
            1,
            1024,
        );
        p.range("redis.frames_scan_ms", self.frames_scan_ms, 10, 60_000);
        let prefix_ok = !self.channel_prefix.is_empty()
            && !self.channel_prefix.contains(['*', '?', '[', ']', ' ']);
        if !prefix_ok {
            p.add(
                "redis.channel_prefix",
                "must be non-empty, without spaces or glob characters",
            );
        }
    }
}
