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
