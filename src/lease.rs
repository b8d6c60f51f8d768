//! The source lease: one source node at a time reads a cluster's frames channels.
//!
//! Redis pub/sub delivers every message to every subscriber, so two source nodes reading the
//! same channels would detect every frame twice. Source nodes therefore compete for a Redis key
//! (`{prefix}:source-lease`, `SET NX PX`); the holder renews it every third of its lifetime and
//! reads the channels, the others wait as standbys. If the holder dies, its lease runs out and
//! a standby takes over within `cluster.source_lease_ms`; a holder that leaves releases it at
//! once.

use std::time::Duration;

use redis::aio::ConnectionManager;

/// Renew only if we still hold it: compare and extend in one step.
const RENEW: &str = r#"if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("PEXPIRE", KEYS[1], ARGV[2]) else return 0 end"#;
const RELEASE: &str = r#"if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) else return 0 end"#;

#[derive(Clone)]
pub struct Lease {
    conn: ConnectionManager,
    key: String,
    /// Who holds it: the node's name and a random tag, so a restarted node with the same name
    /// does not mistake its predecessor's lease for its own.
    token: String,
    ttl: Duration,
}

impl Lease {
    pub fn new(conn: ConnectionManager, key: String, node: &str, ttl: Duration) -> Self {
        let tag: u64 = rand_tag();
        Self {
            conn,
            key,
            token: format!("{node}/{tag:016x}"),
            ttl,
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Take the lease if it is free. Errors are Redis being unreachable.
    pub async fn try_acquire(&mut self) -> redis::RedisResult<bool> {
        let set: Option<String> = redis::cmd("SET")
            .arg(&self.key)
            .arg(&self.token)
            .arg("NX")
            .arg("PX")
            .arg(self.ttl.as_millis() as u64)
            .query_async(&mut self.conn)
            .await?;
        Ok(set.is_some())
    }

    /// Extend the lease; false if it is no longer ours.
    pub async fn renew(&mut self) -> redis::RedisResult<bool> {
        let renewed: i64 = redis::Script::new(RENEW)
            .key(&self.key)
            .arg(&self.token)
            .arg(self.ttl.as_millis() as u64)
            .invoke_async(&mut self.conn)
            .await?;
        Ok(renewed == 1)
    }

    pub async fn release(&mut self) {
        let _: redis::RedisResult<i64> = redis::Script::new(RELEASE)
            .key(&self.key)
            .arg(&self.token)
            .invoke_async(&mut self.conn)
            .await;
    }

    /// Who holds it now (for the standby's log line).
    pub async fn holder(&mut self) -> Option<String> {
        redis::cmd("GET")
            .arg(&self.key)
            .query_async(&mut self.conn)
            .await
            .ok()
            .flatten()
    }
}

fn rand_tag() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS; good enough to tell two processes apart.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}
