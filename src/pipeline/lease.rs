//! The source lease: one source node at a time reads a cluster's frames channels.
//!
//! Redis pub/sub delivers every message to every subscriber, so two source nodes reading the
//! same channels would detect every frame twice. Source nodes therefore compete for a Redis key
//! (`{prefix}:source-lease`, `SET NX PX`); the holder renews it every third of its lifetime and
//! reads the channels, the others wait as standbys. If the holder dies, its lease runs out and
//! a standby takes over within `cluster.source_lease_ms`; a holder that leaves releases it at
//! once, after publishing what it holds.
//!
//! A Redis restart forgets the key (and every stream's last published sequence number). The
//! holder takes it back at its next renewal; a standby takes a free lease only when it has
//! found it free twice in a row, a third of its lifetime apart (or at its very first look), so
//! the holder, which still knows where each stream stands, keeps the stream. A standby taking
//! over then could not tell which frames were lost.

use std::time::Duration;

use crate::redis_conn::RedisConn;

/// Renew if we still hold it, or take it back if nobody does (Redis restarted): compare and
/// extend in one step.
pub(super) const RENEW: &str = r#"
local holder = redis.call("GET", KEYS[1])
if holder == ARGV[1] then
  return redis.call("PEXPIRE", KEYS[1], ARGV[2])
elseif holder == false then
  redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2])
  return 1
end
return 0
"#;
pub(super) const RELEASE: &str = r#"if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) else return 0 end"#;

#[derive(Clone)]
pub(crate) struct Lease {
    conn: RedisConn,
    key: String,
    /// Who holds it: the node's name and a random tag, so a restarted node with the same name
    /// does not mistake its predecessor's lease for its own.
    token: String,
    ttl: Duration,
}

impl Lease {
    pub(crate) fn new(conn: RedisConn, key: String, node: &str, ttl: Duration) -> Self {
        let tag: u64 = rand_tag();
        Self {
            conn,
            key,
            token: format!("{node}/{tag:016x}"),
            ttl,
        }
    }

    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Whether no node holds the lease.
    pub(crate) async fn is_free(&mut self) -> redis::RedisResult<bool> {
        let exists: i64 = redis::cmd("EXISTS")
            .arg(&self.key)
            .query_async(&mut self.conn)
            .await?;
        Ok(exists == 0)
    }

    /// Extend the lease, or take it if it is free; false if another node holds it. Errors are
    /// Redis being unreachable.
    pub(crate) async fn renew(&mut self) -> redis::RedisResult<bool> {
        let renewed: i64 = redis::Script::new(RENEW)
            .key(&self.key)
            .arg(&self.token)
            .arg(self.ttl.as_millis() as u64)
            .invoke_async(&mut self.conn)
            .await?;
        Ok(renewed == 1)
    }

    pub(crate) async fn release(&mut self) {
        let _: redis::RedisResult<i64> = redis::Script::new(RELEASE)
            .key(&self.key)
            .arg(&self.token)
            .invoke_async(&mut self.conn)
            .await;
    }

    /// What the egress needs to publish only while this lease is held.
    pub(crate) fn fence(&self) -> Fence {
        Fence {
            key: self.key.clone(),
            per_stream: None,
            token: self.token.clone(),
            ttl_ms: self.ttl.as_millis() as u64,
        }
    }

    /// Renew every third of the lease's lifetime until that fails; then say why. The source
    /// runs this while it reads, and a leaving node while it drains.
    pub(crate) async fn renew_until_lost(mut self) -> String {
        let mut tick = tokio::time::interval(self.ttl / 3);
        tick.tick().await;
        loop {
            tick.tick().await;
            match self.renew().await {
                Ok(true) => continue,
                Ok(false) => return "another node holds it".to_string(),
                Err(e) => return format!("Redis: {e}"),
            }
        }
    }

    /// A lease no kadr node writes: no expiry, or more than ten times this node's lifetime
    /// (forged; obeyed, it would stop every source node for as long as it lasts). Deleted if
    /// it still holds the same token; returns who it named and how long it had left (ms, -1:
    /// forever).
    pub(crate) async fn clear_if_forged(&mut self) -> Option<(String, i64)> {
        let holder: Option<String> = redis::cmd("GET")
            .arg(&self.key)
            .query_async(&mut self.conn)
            .await
            .ok()?;
        let holder = holder?;
        let left_ms =
            delete_if_outliving(&mut self.conn, &self.key, &holder, 10 * self.ttl).await?;
        Some((holder, left_ms))
    }

    /// Who holds it now (for the standby's log line).
    pub(crate) async fn holder(&mut self) -> Option<String> {
        redis::cmd("GET")
            .arg(&self.key)
            .query_async(&mut self.conn)
            .await
            .ok()
            .flatten()
    }
}

/// A lease looked at in one step: deleted if it still holds the token (ARGV[1]) and either no
/// kadr node wrote it (no expiry, or more left than ARGV[2] ms) or its holder has stopped
/// renewing it (less left than ARGV[3] ms: a renewal is overdue; 0: never). Returns
/// `{deleted, ms left}` (-1: no expiry), or `{0, -2}` when it holds another token or is gone.
const DELETE_IF_NOT_RENEWED_AS_KADR_DOES: &str = r#"
if redis.call("GET", KEYS[1]) ~= ARGV[1] then return {0, -2} end
local left = redis.call("PTTL", KEYS[1])
if left == -1 or left > tonumber(ARGV[2]) or left < tonumber(ARGV[3]) then
  redis.call("DEL", KEYS[1])
  return {1, left}
end
return {0, left}
"#;

/// Delete the lease at `key` held by `token` if it has more than `longest` left (or no expiry:
/// no node writes such a lease) or less than `overdue_below` (its holder missed a renewal).
/// `(deleted, ms left)`; `None` if Redis did not answer.
pub(super) async fn delete_if_not_renewed(
    conn: &mut RedisConn,
    key: &str,
    token: &str,
    longest: Duration,
    overdue_below: Duration,
) -> Option<(bool, i64)> {
    let (deleted, left_ms): (i64, i64) = redis::Script::new(DELETE_IF_NOT_RENEWED_AS_KADR_DOES)
        .key(key)
        .arg(token)
        .arg(longest.as_millis() as u64)
        .arg(overdue_below.as_millis() as u64)
        .invoke_async(conn)
        .await
        .ok()?;
    Some((deleted == 1, left_ms))
}

/// Delete the lease at `key` if it has more than `longest` left (or no expiry: no node writes
/// such a lease) and still holds `token`; how long it had left (ms, -1: forever) if deleted.
pub(super) async fn delete_if_outliving(
    conn: &mut RedisConn,
    key: &str,
    token: &str,
    longest: Duration,
) -> Option<i64> {
    match delete_if_not_renewed(conn, key, token, longest, Duration::ZERO).await? {
        (true, left_ms) => Some(left_ms),
        (false, _) => None,
    }
}

/// A lease's key and token: results are published only by the node that holds it, checked by
/// Redis in the same step as the publish. A node frozen past its lease (a long GC pause, a
/// `docker pause`, a VM migration) that wakes up with results in hand cannot publish them over
/// the stream its successor has taken on: those frames are in the successor's `missing` gap.
#[derive(Debug, Clone)]
pub(crate) struct Fence {
    /// The node-wide source lease's key; unused with `per_stream`.
    pub key: String,
    /// With `cluster.stream_leases`: each stream's own lease key, under these channels.
    pub per_stream: Option<crate::protocol::Channels>,
    pub token: String,
    /// A free lease (Redis restarted and lost it) is taken for this long.
    pub ttl_ms: u64,
}

impl Fence {
    /// The lease key a publish of `stream` is checked against.
    pub(crate) fn key_for(&self, stream: &str) -> String {
        match &self.per_stream {
            Some(channels) => channels.stream_lease_key(stream),
            None => self.key.clone(),
        }
    }
}

pub(crate) fn rand_tag() -> u64 {
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

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_redis::TestRedis;

    #[tokio::test]
    async fn one_node_holds_the_lease_until_it_releases_it_or_it_runs_out() {
        let redis = TestRedis::start();
        let ttl = Duration::from_millis(300);
        let mut a = Lease::new(redis.conn().await, "t:lease".into(), "a", ttl);
        let mut b = Lease::new(redis.conn().await, "t:lease".into(), "b", ttl);
        assert!(a.is_free().await.unwrap());
        assert!(a.renew().await.unwrap(), "a free lease is taken");
        assert!(!b.renew().await.unwrap(), "held by a");
        assert!(!b.is_free().await.unwrap());
        assert!(b.holder().await.unwrap().starts_with("a/"));
        // b's release is not a's: nothing changes.
        b.release().await;
        assert!(a.renew().await.unwrap());
        a.release().await;
        assert!(b.is_free().await.unwrap());
        assert!(b.renew().await.unwrap(), "b takes it once a lets go");
        assert!(!a.renew().await.unwrap());
        // b stops renewing: its lease runs out and a may take it.
        tokio::time::sleep(ttl + Duration::from_millis(100)).await;
        assert!(a.renew().await.unwrap(), "an expired lease is free");
    }

    #[tokio::test]
    async fn the_holder_takes_its_lease_back_after_redis_forgets_it() {
        let redis = TestRedis::start();
        let mut a = Lease::new(
            redis.conn().await,
            "t:lease".into(),
            "a",
            Duration::from_secs(5),
        );
        assert!(a.renew().await.unwrap());
        let mut admin = redis.conn().await;
        let _: () = redis::cmd("FLUSHALL")
            .query_async(&mut admin)
            .await
            .unwrap();
        assert!(
            a.renew().await.unwrap(),
            "renewal takes a forgotten lease back"
        );
        assert!(a.holder().await.unwrap().starts_with("a/"));
        // A node restarted under the same name is another holder.
        let mut a_again = Lease::new(
            redis.conn().await,
            "t:lease".into(),
            "a",
            Duration::from_secs(5),
        );
        assert!(!a_again.renew().await.unwrap());
        let fence = a.fence();
        assert_eq!((fence.key.as_str(), fence.ttl_ms), ("t:lease", 5000));
        assert!(fence.token.starts_with("a/"));
    }
}
