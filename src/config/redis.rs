//! `[redis]`: where frames come from and results go.

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
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            channel_prefix: "kadr".into(),
            results_maxlen: 3000,
            frames_read_count: 8,
            frames_scan_ms: 1000,
        }
    }
}

impl RedisConfig {
    pub(super) fn check(&self, p: &mut Problems) {
        if self.url.starts_with("rediss://") {
            // Said here rather than as "unreachable" at start: this build has no TLS to Redis.
            p.add(
                "redis.url",
                "rediss:// (TLS to Redis) is not supported by this build yet; reach Redis over a TLS tunnel (stunnel, a service mesh) with redis://",
            );
        } else if !self.url.starts_with("redis://") && !self.url.starts_with("unix://") {
            p.add(
                "redis.url",
                format!(
                    "{:?} is not a redis:// URL",
                    crate::redis_conn::redact(&self.url)
                ),
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
