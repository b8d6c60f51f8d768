//! Egress: publishing results and errors to Redis.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use serde::Serialize;
use tracing::warn;

use super::lease::Fence;
use crate::node_stats::Stats;
use crate::protocol::{Channels, ErrorMessage, OutputMessage};

/// A stream with nothing outstanding and no new frame for this long is forgotten by the
/// sequencer, and its last published sequence number expires in Redis, so streams that come and
/// go do not use memory for ever.
pub const STREAM_IDLE_FORGET: Duration = Duration::from_secs(300);

/// Publish a result and record the stream's last published sequence number, only while this
/// node holds the source lease (taking it if it is free: Redis restarted and forgot it).
/// KEYS: lease, last-seq. ARGV: token, lease ttl ms, channel, payload, seq, last-seq expiry s.
const PUBLISH_FENCED: &str = r#"
local holder = redis.call("GET", KEYS[1])
if holder == false then
  redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2])
elseif holder ~= ARGV[1] then
  return 0
end
redis.call("PUBLISH", ARGV[3], ARGV[4])
redis.call("SET", KEYS[2], ARGV[5], "EX", ARGV[6])
return 1
"#;

/// A Redis connection that reconnects by itself, the source lease's fence, and one reused
/// serialization buffer.
pub struct Egress {
    conn: ConnectionManager,
    channels: Channels,
    fence: Fence,
    publish_fenced: redis::Script,
    stats: Arc<Stats>,
    buf: Vec<u8>,
}

impl Egress {
    pub fn new(
        conn: ConnectionManager,
        channels: Channels,
        fence: Fence,
        stats: Arc<Stats>,
    ) -> Self {
        Self {
            conn,
            channels,
            fence,
            publish_fenced: redis::Script::new(PUBLISH_FENCED),
            stats,
            buf: Vec::with_capacity(4096),
        }
    }

    /// Publish a result, and record the stream's last published sequence number beside it (same
    /// step) for a source node that may take over; not if another node holds the lease now.
    pub async fn publish_output(&mut self, stream: &str, msg: &OutputMessage) {
        let last = match msg {
            OutputMessage::Detections(d) => d.seq,
            OutputMessage::Gap(g) => g.seq + g.count.saturating_sub(1),
        };
        if !self.serialize(msg) {
            return;
        }
        let mut invocation = self.publish_fenced.prepare_invoke();
        invocation
            .key(&self.fence.key)
            .key(self.channels.last_seq_key(stream))
            .arg(&self.fence.token)
            .arg(self.fence.ttl_ms)
            .arg(self.channels.detections(stream))
            .arg(&self.buf[..])
            .arg(last)
            .arg(STREAM_IDLE_FORGET.as_secs());
        let mut result: redis::RedisResult<i64> = invocation.invoke_async(&mut self.conn).await;
        if connection_lost(&result) {
            result = invocation.invoke_async(&mut self.conn).await;
        }
        match result {
            Ok(1) => {}
            Ok(_) => {
                self.stats.fenced.inc();
                warn!(%stream, seq = last, "result not published: another node holds the source lease now (its gap covers this frame)");
            }
            Err(e) => {
                self.stats.publish_errors.inc();
                warn!(error = %e, "publish to Redis failed");
            }
        }
    }

    /// The last sequence number published for `stream` by any source node, if recent.
    pub async fn last_published(&mut self, stream: &str) -> Option<u64> {
        let key = self.channels.last_seq_key(stream);
        let got: redis::RedisResult<Option<u64>> =
            redis::cmd("GET").arg(key).query_async(&mut self.conn).await;
        let last = got.unwrap_or_else(|e| {
            warn!(error = %e, "could not read the last published sequence number");
            None
        });
        // Written by a node, but anyone with the key could set it: only a valid number counts.
        last.filter(|&seq| seq <= crate::protocol::MAX_SEQ)
    }

    /// `channel_stream` is the raw suffix of the channel the bad message came on. Refusals are
    /// not fenced: any node may say a message was bad.
    pub async fn publish_error(&mut self, channel_stream: &[u8], msg: &ErrorMessage) {
        let mut channel = self.channels.errors("").into_bytes();
        channel.extend_from_slice(channel_stream);
        if !self.serialize(msg) {
            return;
        }
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(channel).arg(&self.buf[..]);
        let mut result: redis::RedisResult<()> = cmd.query_async(&mut self.conn).await;
        if connection_lost(&result) {
            result = cmd.query_async(&mut self.conn).await;
        }
        if let Err(e) = result {
            self.stats.publish_errors.inc();
            warn!(error = %e, "publish to Redis failed");
        }
    }

    /// Serialize `msg` into the reused buffer; false (and logged) if it cannot be.
    fn serialize<T: Serialize>(&mut self, msg: &T) -> bool {
        self.buf.clear();
        match serde_json::to_writer(&mut self.buf, msg) {
            Ok(()) => true,
            Err(e) => {
                warn!(error = %e, "could not serialize a message");
                false
            }
        }
    }
}

/// The connection manager notices a lost connection on the first command after it and
/// reconnects: a command that failed so is worth one more try, so a Redis restart costs no
/// result.
fn connection_lost<T>(result: &redis::RedisResult<T>) -> bool {
    result
        .as_ref()
        .is_err_and(|e| e.is_io_error() || e.is_connection_dropped())
}
