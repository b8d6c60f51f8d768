//! Egress: publishing results and errors to Redis.

use std::sync::Arc;

use redis::aio::ConnectionManager;
use serde::Serialize;
use tracing::warn;

use crate::protocol::{Channels, ErrorMessage, OutputMessage};
use crate::sequencer::STREAM_IDLE_FORGET;
use crate::stats::Stats;

/// A Redis connection that reconnects by itself, and one reused serialization buffer.
pub struct Egress {
    conn: ConnectionManager,
    channels: Channels,
    stats: Arc<Stats>,
    buf: Vec<u8>,
}

impl Egress {
    pub fn new(conn: ConnectionManager, channels: Channels, stats: Arc<Stats>) -> Self {
        Self {
            conn,
            channels,
            stats,
            buf: Vec::with_capacity(4096),
        }
    }

    /// Publish a result, and record the stream's last published sequence number beside it
    /// (same round trip) for a source node that may take over.
    pub async fn publish_output(&mut self, stream: &str, msg: &OutputMessage) {
        let channel = self.channels.detections(stream);
        let last = match msg {
            OutputMessage::Detections(d) => d.seq,
            OutputMessage::Gap(g) => g.seq + g.count.saturating_sub(1),
        };
        let key = self.channels.last_seq_key(stream);
        self.publish(channel.into_bytes(), msg, Some((key, last)))
            .await;
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

    /// `channel_stream` is the raw suffix of the channel the bad message came on.
    pub async fn publish_error(&mut self, channel_stream: &[u8], msg: &ErrorMessage) {
        let mut channel = self.channels.errors("").into_bytes();
        channel.extend_from_slice(channel_stream);
        self.publish(channel, msg, None).await;
    }

    async fn publish<T: Serialize>(
        &mut self,
        channel: Vec<u8>,
        msg: &T,
        last_seq: Option<(String, u64)>,
    ) {
        self.buf.clear();
        if let Err(e) = serde_json::to_writer(&mut self.buf, msg) {
            warn!(error = %e, "could not serialize a message");
            return;
        }
        let mut cmd = redis::pipe();
        cmd.cmd("PUBLISH").arg(channel).arg(&self.buf[..]).ignore();
        if let Some((key, seq)) = last_seq {
            cmd.cmd("SET")
                .arg(key)
                .arg(seq)
                .arg("EX")
                .arg(STREAM_IDLE_FORGET.as_secs())
                .ignore();
        }
        let mut result: redis::RedisResult<()> = cmd.query_async(&mut self.conn).await;
        // The connection manager notices a lost connection on the first command after it and
        // reconnects; try once more so a Redis restart costs no result.
        if result
            .as_ref()
            .is_err_and(|e| e.is_io_error() || e.is_connection_dropped())
        {
            result = cmd.query_async(&mut self.conn).await;
        }
        if let Err(e) = result {
            self.stats.publish_errors.inc();
            warn!(error = %e, "publish to Redis failed");
        }
    }
}
