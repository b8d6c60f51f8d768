//! Egress: publishing results and errors to Redis.

use std::sync::Arc;

use redis::aio::ConnectionManager;
use serde::Serialize;
use tracing::warn;

use crate::protocol::{Channels, ErrorMessage, OutputMessage};
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

    pub async fn publish_output(&mut self, stream: &str, msg: &OutputMessage) {
        let channel = self.channels.detections(stream);
        self.publish(channel.into_bytes(), msg).await;
    }

    /// `channel_stream` is the raw suffix of the channel the bad message came on.
    pub async fn publish_error(&mut self, channel_stream: &[u8], msg: &ErrorMessage) {
        let mut channel = self.channels.errors("").into_bytes();
        channel.extend_from_slice(channel_stream);
        self.publish(channel, msg).await;
    }

    async fn publish<T: Serialize>(&mut self, channel: Vec<u8>, msg: &T) {
        self.buf.clear();
        if let Err(e) = serde_json::to_writer(&mut self.buf, msg) {
            warn!(error = %e, "could not serialize a message");
            return;
        }
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(channel).arg(&self.buf[..]);
        let mut result: redis::RedisResult<i64> = cmd.query_async(&mut self.conn).await;
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
