//! `[redis]`: where frames come from and results go.

use serde::Deserialize;

use super::Problems;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    pub url: String,
    /// Every channel is named `{channel_prefix}:...`.
    pub channel_prefix: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            channel_prefix: "kadr".into(),
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
