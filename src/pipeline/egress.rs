//! Egress: publishing results and errors to Redis.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::redis_conn::RedisConn;
use serde::Serialize;
use tracing::warn;

use super::lease::Fence;
use crate::analytics::Event;
use crate::backoff::Backoff;
use crate::node_stats::Stats;
use crate::protocol::{Channels, ErrorMessage, OutputMessage, CONSUMER_GROUP};

/// A stream with nothing outstanding and no new frame for this long is forgotten by the
/// sequencer, and its last published sequence number expires in Redis, so streams that come and
/// go do not use memory for ever.
pub(crate) const STREAM_IDLE_FORGET: Duration = Duration::from_secs(300);

/// Publish a result and record the stream's last published `epoch:seq`, only while this node
/// holds the source lease (taking it if it is free: Redis restarted and forgot it), and only if
/// the result comes after the last one published: a publish retried after its reply was lost
/// (Redis stalled, then answered) is not published twice, and no node publishes out of order.
/// In the same step: append it to the results stream (bounded, and expiring with the stream's
/// last-seq), and acknowledge the frames-stream entries it accounts for, so a frame is
/// acknowledged exactly when its result is out. A key of the wrong type (someone else's) costs
/// the append or the acknowledgement, never the publish.
/// The stream's tracker and analytics are saved in the same step too, so they always match the
/// last result, and the result's events are published with it (channel and events stream):
/// each once, in order, whichever node publishes.
/// KEYS: lease, last-seq, results stream, frames stream, tracker, analytics, events stream.
/// ARGV: token, lease ttl ms, channel, payload, epoch, first seq, last seq, expiry s, results
/// maxlen (0: none), consumer group, tracker state ("": none), "1" to publish whatever last-seq
/// says (it was found forged), analytics state ("": none), events channel, event count n, n
/// events, entry ids to acknowledge... Returns 1 published, 0 fenced, 2 already published.
const PUBLISH_FENCED: &str = r#"
local holder = redis.call("GET", KEYS[1])
if holder == false then
  redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2])
elseif holder ~= ARGV[1] then
  return 0
end
local events = tonumber(ARGV[15])
local function ack()
  local i = 16 + events
  while i <= #ARGV do
    local j = math.min(i + 499, #ARGV)
    redis.pcall("XACK", KEYS[4], ARGV[10], unpack(ARGV, i, j))
    i = j + 1
  end
end
local prev = redis.call("GET", KEYS[2])
if prev and ARGV[12] ~= "1" then
  local e, s = string.match(prev, "^(%d+):(%d+)$")
  if e == nil then e, s = "0", prev end
  e, s = tonumber(e), tonumber(s)
  local epoch, first = tonumber(ARGV[5]), tonumber(ARGV[6])
  if e and s and (epoch < e or (epoch == e and first <= s)) then
    ack()
    return 2
  end
end
redis.call("PUBLISH", ARGV[3], ARGV[4])
if tonumber(ARGV[9]) > 0 then
  redis.pcall("XADD", KEYS[3], "MAXLEN", "~", ARGV[9], "*", "v", "1", "json", ARGV[4])
  redis.pcall("EXPIRE", KEYS[3], ARGV[8])
end
redis.call("SET", KEYS[2], ARGV[5] .. ":" .. ARGV[7], "EX", ARGV[8])
if ARGV[11] ~= "" then
  redis.call("SET", KEYS[5], ARGV[11], "EX", ARGV[8])
end
if ARGV[13] ~= "" then
  redis.call("SET", KEYS[6], ARGV[13], "EX", ARGV[8])
end
for i = 16, 15 + events do
  redis.call("PUBLISH", ARGV[14], ARGV[i])
  if tonumber(ARGV[9]) > 0 then
    redis.pcall("XADD", KEYS[7], "MAXLEN", "~", ARGV[9], "*", "v", "1", "json", ARGV[i])
  end
end
if events > 0 and tonumber(ARGV[9]) > 0 then
  redis.pcall("EXPIRE", KEYS[7], ARGV[8])
end
ack()
return 1
"#;

/// An error: published on the stream's error channel and appended to its errors stream.
/// KEYS: errors stream. ARGV: channel, payload, results maxlen, expiry s.
const PUBLISH_ERROR: &str = r#"
redis.call("PUBLISH", ARGV[1], ARGV[2])
if tonumber(ARGV[3]) > 0 then
  redis.pcall("XADD", KEYS[1], "MAXLEN", "~", ARGV[3], "*", "v", "1", "json", ARGV[2])
  redis.pcall("EXPIRE", KEYS[1], ARGV[4])
end
return 1
"#;

/// Where a stream's published output stands in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LastPublished {
    pub epoch: u64,
    pub seq: u64,
}

impl LastPublished {
    /// `epoch:seq`, or a bare `seq` (epoch 0, as written before epochs); anything else, or a
    /// number over the protocol's largest, is no record (anyone with the key could set it).
    fn parse(text: &str) -> Option<Self> {
        let (epoch, seq) = text.split_once(':').unwrap_or(("0", text));
        let (epoch, seq) = (epoch.parse().ok()?, seq.parse().ok()?);
        let max = crate::protocol::MAX_SEQ;
        (epoch <= max && seq <= max).then_some(Self { epoch, seq })
    }
}

/// What a source node finds in Redis for a stream new to it.
#[derive(Debug, Default)]
pub(crate) struct TakenOver {
    pub last: Option<LastPublished>,
    /// The tracker saved with the last result (see `Tracker::save`), unchecked.
    pub tracker: Option<Vec<u8>>,
    /// The analytics saved with it (see `Analytics::save`), unchecked.
    pub analytics: Option<Vec<u8>>,
    /// Lines and zones set through the admin API (JSON), unchecked.
    pub geometry: Option<Vec<u8>>,
}

/// What goes out with a result besides it: the stream's state after it, and its events.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct WithResult<'a> {
    /// The saved tracker (empty: none).
    pub tracker: &'a [u8],
    /// The saved analytics (empty: none).
    pub analytics: &'a [u8],
    pub events: &'a [Event],
}

/// An event as published: the stream and its numbering's epoch beside it.
#[derive(Serialize)]
struct PublishedEvent<'a> {
    stream: &'a str,
    epoch: u64,
    #[serde(flatten)]
    event: &'a Event,
}

/// A Redis connection that reconnects by itself, the source lease's fence, and one reused
/// serialization buffer.
pub(crate) struct Egress {
    conn: RedisConn,
    channels: Channels,
    fence: Fence,
    publish_fenced: redis::Script,
    publish_error: redis::Script,
    /// `redis.results_maxlen`: entries a results or errors stream keeps (0: none written).
    results_maxlen: u64,
    stats: Arc<Stats>,
    buf: Vec<u8>,
    /// The events of the result being published, serialized one after another, and where
    /// each ends (reused).
    events_buf: Vec<u8>,
    event_ends: Vec<usize>,
    /// Where each stream stands in Redis as far as this node knows: read when it took the
    /// stream over, then what it published. A last-seq in Redis that differs was written by
    /// someone else.
    known: HashMap<Arc<str>, LastPublished>,
}

impl Egress {
    pub(crate) fn new(
        conn: RedisConn,
        channels: Channels,
        fence: Fence,
        results_maxlen: u64,
        stats: Arc<Stats>,
    ) -> Self {
        Self {
            conn,
            channels,
            fence,
            publish_fenced: redis::Script::new(PUBLISH_FENCED),
            publish_error: redis::Script::new(PUBLISH_ERROR),
            results_maxlen,
            stats,
            buf: Vec::with_capacity(4096),
            events_buf: Vec::new(),
            event_ends: Vec::new(),
            known: HashMap::new(),
        }
    }

    /// Publish a result, and record the stream's last published sequence number beside it (same
    /// step) for a source node that may take over; not if another node holds the lease now, nor
    /// if it was published already. `acks`: the frames-stream entries it accounts for;
    /// `with`: the stream's state after this message, and its events.
    pub(crate) async fn publish_output(
        &mut self,
        stream: &str,
        msg: &OutputMessage,
        acks: &[Arc<str>],
        with: WithResult<'_>,
    ) {
        let (first, last) = msg.seqs();
        self.serialize_events(stream, msg.epoch(), with.events);
        if !self.serialize(msg) {
            return;
        }
        let (mut result, retried) = self
            .publish_serialized(stream, msg, acks, with, false)
            .await;
        // Only this node publishes the stream while it holds the lease, in order: Redis can
        // have this result already only if a try of this very call went through and its reply
        // was lost, or if this node published past it. Said on the first try, with a last-seq
        // this node did not write, someone else wrote it (forged, or a bug): not believed, or
        // the stream's results would be acknowledged and never published.
        if matches!(result, Ok(2)) && !retried && self.last_seq_is_foreign(stream).await {
            self.stats.redis_state_refused.inc();
            warn!(%stream, seq = first, epoch = msg.epoch(), "Redis's last-seq for the stream is ahead of anything this node published (written by someone else): not believed; publishing, and recording where the stream really stands");
            let error = ErrorMessage::new(
                stream,
                Some(first),
                crate::protocol::ErrorCode::RedisState,
                format!(
                    "{} in Redis was ahead of this stream's published results (written by someone else): not believed; results go on from {first}",
                    self.channels.last_seq_key(stream)
                ),
            );
            self.publish_error(stream.as_bytes(), &error, true).await;
            if !self.serialize(msg) {
                return;
            }
            (result, _) = self.publish_serialized(stream, msg, acks, with, true).await;
        }
        if matches!(result, Ok(1)) {
            let now = LastPublished {
                epoch: msg.epoch(),
                seq: last,
            };
            match self.known.get_mut(stream) {
                Some(known) => *known = now,
                None => {
                    self.known.insert(Arc::from(stream), now);
                }
            }
        }
        match result {
            Ok(1) => {}
            Ok(2) => {
                self.stats.already_published.inc();
                warn!(%stream, seq = first, "result not published again: Redis has it already (a retried publish)");
            }
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

    /// Run the fenced publish of the message in the buffer (`force`: whatever last-seq says),
    /// trying again while the connection is lost; the result, and whether it was tried again.
    async fn publish_serialized(
        &mut self,
        stream: &str,
        msg: &OutputMessage,
        acks: &[Arc<str>],
        with: WithResult<'_>,
        force: bool,
    ) -> (redis::RedisResult<i64>, bool) {
        let (first, last) = msg.seqs();
        let mut invocation = self.publish_fenced.prepare_invoke();
        invocation
            .key(self.fence.key_for(stream))
            .key(self.channels.last_seq_key(stream))
            .key(self.channels.detections(stream))
            .key(self.channels.frames(stream))
            .key(self.channels.tracker_key(stream))
            .key(self.channels.analytics_key(stream))
            .key(self.channels.events(stream))
            .arg(&self.fence.token)
            .arg(self.fence.ttl_ms)
            .arg(self.channels.detections(stream))
            .arg(&self.buf[..])
            .arg(msg.epoch())
            .arg(first)
            .arg(last)
            .arg(STREAM_IDLE_FORGET.as_secs())
            .arg(self.results_maxlen)
            .arg(CONSUMER_GROUP)
            .arg(with.tracker)
            .arg(if force { "1" } else { "0" })
            .arg(with.analytics)
            .arg(self.channels.events(stream))
            .arg(self.event_ends.len());
        let mut start = 0;
        for &end in &self.event_ends {
            invocation.arg(&self.events_buf[start..end]);
            start = end;
        }
        for id in acks {
            invocation.arg(&**id);
        }
        let mut result: redis::RedisResult<i64> = invocation.invoke_async(&mut self.conn).await;
        let mut retry = Retry::new();
        while connection_lost(&result) && retry.wait().await {
            result = invocation.invoke_async(&mut self.conn).await;
        }
        (result, retry.retried())
    }

    /// Whether the stream's last-seq in Redis is not what this node knows it wrote (or read).
    async fn last_seq_is_foreign(&mut self, stream: &str) -> bool {
        let got: redis::RedisResult<Option<String>> = redis::cmd("GET")
            .arg(self.channels.last_seq_key(stream))
            .query_async(&mut self.conn)
            .await;
        match got {
            Ok(text) => {
                text.as_deref().and_then(LastPublished::parse) != self.known.get(stream).copied()
            }
            Err(_) => false,
        }
    }

    /// This node no longer publishes these streams: forget where they stand.
    pub(crate) fn retain_streams(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.known.retain(|s, _| keep(s));
    }

    /// Where `stream` stands in Redis, as a source node that takes it over needs to know: the
    /// last epoch and sequence number published by any node (if recent), and the tracker
    /// saved with it.
    pub(crate) async fn taken_over(&mut self, stream: &str) -> TakenOver {
        type Found = (
            Option<String>,
            Option<Vec<u8>>,
            Option<Vec<u8>>,
            Option<Vec<u8>>,
        );
        let got: redis::RedisResult<Found> = redis::cmd("MGET")
            .arg(self.channels.last_seq_key(stream))
            .arg(self.channels.tracker_key(stream))
            .arg(self.channels.analytics_key(stream))
            .arg(self.channels.geometry_key(stream))
            .query_async(&mut self.conn)
            .await;
        let (last, tracker, analytics, geometry) = got.unwrap_or_else(|e| {
            warn!(error = %e, "could not read where the stream stands in Redis");
            (None, None, None, None)
        });
        let last = last.as_deref().and_then(LastPublished::parse);
        match last {
            Some(at) => {
                self.known.insert(Arc::from(stream), at);
            }
            None => {
                self.known.remove(stream);
            }
        }
        TakenOver {
            last,
            tracker,
            analytics,
            geometry,
        }
    }

    /// The lines and zones set through the admin API for each of `streams` (JSON, unchecked;
    /// None: none set), in their order.
    pub(crate) async fn geometries(
        &mut self,
        streams: &[Arc<str>],
    ) -> redis::RedisResult<Vec<Option<Vec<u8>>>> {
        let keys: Vec<String> = streams
            .iter()
            .map(|s| self.channels.geometry_key(s))
            .collect();
        crate::redis_conn::get_each(&self.conn, &keys).await
    }

    /// `channel_stream` is the raw suffix of the channel the bad message came on. Refusals are
    /// not fenced: any node may say a message was bad.
    /// `known_stream`: the stream has frames accepted; only then is the error also appended to
    /// its errors stream (junk on made-up stream names must not create keys in Redis).
    pub(crate) async fn publish_error(
        &mut self,
        channel_stream: &[u8],
        msg: &ErrorMessage,
        known_stream: bool,
    ) {
        let untagged = msg.code == crate::protocol::ErrorCode::UntaggedChannel.as_str();
        let channel = self.channels.errors_of_bytes(channel_stream, untagged);
        if !self.serialize(msg) {
            return;
        }
        let maxlen = if known_stream { self.results_maxlen } else { 0 };
        let mut invocation = self.publish_error.prepare_invoke();
        invocation
            .key(&channel[..])
            .arg(&channel[..])
            .arg(&self.buf[..])
            .arg(maxlen)
            .arg(STREAM_IDLE_FORGET.as_secs());
        let mut result: redis::RedisResult<i64> = invocation.invoke_async(&mut self.conn).await;
        let mut retry = Retry::new();
        while connection_lost(&result) && retry.wait().await {
            result = invocation.invoke_async(&mut self.conn).await;
        }
        if let Err(e) = result {
            self.stats.publish_errors.inc();
            warn!(error = %e, "publish to Redis failed");
        }
    }

    /// Serialize a result's events, one after another, into their reused buffer.
    fn serialize_events(&mut self, stream: &str, epoch: u64, events: &[Event]) {
        self.events_buf.clear();
        self.event_ends.clear();
        for event in events {
            let published = PublishedEvent {
                stream,
                epoch,
                event,
            };
            serde_json::to_writer(&mut self.events_buf, &published).expect("an event serializes");
            self.event_ends.push(self.events_buf.len());
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
/// reconnects: a command that failed so is tried again, from at once to every 500 ms, for up
/// to [`PUBLISH_RETRY_FOR`], so a Redis restart costs no result (the fenced script refuses a
/// result Redis already has, so a try whose answer was lost is harmless). Results wait in order
/// meanwhile; past it, the result is counted in `kadr_publish_errors_total` and, over Streams,
/// its frame's entry stays pending.
const PUBLISH_RETRY_FOR: Duration = Duration::from_secs(10);

struct Retry {
    until: tokio::time::Instant,
    tried_again: bool,
    backoff: Backoff,
}

impl Retry {
    fn new() -> Self {
        Self {
            until: tokio::time::Instant::now() + PUBLISH_RETRY_FOR,
            tried_again: false,
            backoff: Backoff::new(Duration::from_millis(50), Duration::from_millis(500)),
        }
    }

    /// Whether a try was made again.
    fn retried(&self) -> bool {
        self.tried_again
    }

    /// Wait before the next try (none before the first); false once the time is up.
    async fn wait(&mut self) -> bool {
        let wait = if self.tried_again {
            self.backoff.next_wait()
        } else {
            Duration::ZERO
        };
        self.tried_again = true;
        if tokio::time::Instant::now() + wait > self.until {
            return false;
        }
        tokio::time::sleep(wait).await;
        true
    }
}

/// A failure that passes: a lost connection, or a Redis Cluster between masters (a shard's
/// master down and its replica not yet promoted: the cluster client retries for a few seconds
/// by itself, then says so).
fn connection_lost<T>(result: &redis::RedisResult<T>) -> bool {
    use redis::ErrorKind::{
        Ask, ClusterConnectionNotFound, ClusterDown, MasterDown, Moved, TryAgain,
    };
    result.as_ref().is_err_and(|e| {
        e.is_io_error()
            || e.is_connection_dropped()
            || e.is_timeout()
            || matches!(
                e.kind(),
                ClusterDown | TryAgain | MasterDown | ClusterConnectionNotFound | Moved | Ask
            )
    })
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;
    use serde_json::Value;

    use super::*;
    use crate::pipeline::lease::Lease;
    use crate::protocol::{DetectionsMessage, GapMessage, GapReason};
    use crate::test_redis::TestRedis;

    fn detections(epoch: u64, seq: u64) -> OutputMessage {
        OutputMessage::Detections(DetectionsMessage {
            epoch,
            ..DetectionsMessage::without_boxes("cam", seq)
        })
    }

    fn with_tracker(saved: &[u8]) -> WithResult<'_> {
        WithResult {
            tracker: saved,
            ..WithResult::default()
        }
    }

    /// An egress of node "a", which holds the source lease, on channels prefixed `t`.
    async fn egress_holding_the_lease(redis: &TestRedis) -> (Egress, Channels, Arc<Stats>) {
        let channels = Channels::new("t");
        let mut lease = Lease::new(
            redis.conn().await,
            channels.source_lease_key(),
            "a",
            Duration::from_secs(5),
        );
        assert!(lease.renew().await.unwrap());
        let stats = Arc::new(Stats::default());
        let egress = Egress::new(
            redis.conn().await,
            channels.clone(),
            lease.fence(),
            100,
            stats.clone(),
        );
        (egress, channels, stats)
    }

    /// A publish retried after its reply was lost, a node publishing behind the last one
    /// published, or an older epoch: Redis refuses each; the next in order goes out.
    #[tokio::test]
    async fn nothing_is_published_twice_or_out_of_order() {
        let redis = TestRedis::start();
        let (mut egress, channels, stats) = egress_holding_the_lease(&redis).await;
        let mut pubsub = redis.client().get_async_pubsub().await.unwrap();
        pubsub.subscribe(channels.detections("cam")).await.unwrap();

        let gap = OutputMessage::Gap(GapMessage {
            stream: "cam".into(),
            seq: 11,
            count: 3,
            reason: GapReason::Lost,
            detail: None,
            epoch: 0,
        });
        for msg in [
            detections(0, 10),
            detections(0, 10), // retried
            gap.clone(),
            detections(0, 12), // inside the gap, published already
            detections(1, 2),  // the numbering restarted
            detections(0, 20), // an older epoch
            detections(1, 3),
        ] {
            egress
                .publish_output("cam", &msg, &[], WithResult::default())
                .await;
        }
        let published: Vec<OutputMessage> = pubsub
            .on_message()
            .take(4)
            .map(|m| serde_json::from_slice(m.get_payload_bytes()).unwrap())
            .collect()
            .await;
        assert_eq!(
            published,
            [detections(0, 10), gap, detections(1, 2), detections(1, 3)]
        );
        assert_eq!(stats.already_published.get(), 3);
        assert_eq!(
            egress.taken_over("cam").await.last,
            Some(LastPublished { epoch: 1, seq: 3 })
        );
        assert_eq!(egress.taken_over("cam").await.tracker, None);
        // A tracker saved with a result, and only with one that is published.
        egress
            .publish_output("cam", &detections(1, 4), &[], with_tracker(b"saved-4"))
            .await;
        egress
            .publish_output("cam", &detections(1, 4), &[], with_tracker(b"again-4"))
            .await;
        let now = egress.taken_over("cam").await;
        assert_eq!(now.last, Some(LastPublished { epoch: 1, seq: 4 }));
        assert_eq!(now.tracker.as_deref(), Some(&b"saved-4"[..]));
    }

    /// A last-seq written by someone else, ahead of the stream (`SET last-seq 0:5000000`, or
    /// epoch 99), used to make the node acknowledge and never publish the stream's next results
    /// (the audit: 80 of 120 gone, only a counter moved). Now it is found, said on the error
    /// channel and counted, and the results go on.
    #[tokio::test]
    async fn a_forged_last_seq_ahead_of_the_stream_is_not_believed() {
        let redis = TestRedis::start();
        let (mut egress, channels, stats) = egress_holding_the_lease(&redis).await;
        let mut pubsub = redis.client().get_async_pubsub().await.unwrap();
        pubsub.subscribe(channels.detections("cam")).await.unwrap();
        pubsub.subscribe(channels.errors("cam")).await.unwrap();
        let mut forger = redis.conn().await;
        assert_eq!(egress.taken_over("cam").await.last, None);
        egress
            .publish_output("cam", &detections(0, 1), &[], WithResult::default())
            .await;
        for (forged, seq) in [("0:5000000", 2), ("99:0", 3)] {
            let _: () = redis::cmd("SET")
                .arg(channels.last_seq_key("cam"))
                .arg(forged)
                .query_async(&mut forger)
                .await
                .unwrap();
            egress
                .publish_output("cam", &detections(0, seq), &[], WithResult::default())
                .await;
        }
        // Our own order still holds: an older result is not published again.
        egress
            .publish_output("cam", &detections(0, 2), &[], WithResult::default())
            .await;
        let mut published = Vec::new();
        let mut errors = Vec::new();
        let mut messages = pubsub.on_message();
        while published.len() < 3 || errors.len() < 2 {
            let m = tokio::time::timeout(Duration::from_secs(10), messages.next())
                .await
                .expect("every result and error comes")
                .unwrap();
            if m.get_channel_name().contains(":errors:") {
                let e: ErrorMessage = serde_json::from_slice(m.get_payload_bytes()).unwrap();
                errors.push(e.code);
            } else {
                let o: OutputMessage = serde_json::from_slice(m.get_payload_bytes()).unwrap();
                published.push(o);
            }
        }
        assert_eq!(
            published,
            [detections(0, 1), detections(0, 2), detections(0, 3)]
        );
        assert_eq!(errors, ["redis_state", "redis_state"]);
        assert_eq!(stats.redis_state_refused.get(), 2);
        assert_eq!(stats.already_published.get(), 1);
        assert_eq!(
            egress.taken_over("cam").await.last,
            Some(LastPublished { epoch: 0, seq: 3 }),
            "where the stream really stands, recorded again"
        );
    }

    /// A result's events go out with it, in order, on the events channel and the events
    /// stream; a publish tried again (its reply lost) says none of them twice. The analytics
    /// saved with it are there for the next node.
    #[tokio::test]
    async fn events_go_out_once_with_their_result_and_the_analytics_beside_it() {
        let redis = TestRedis::start();
        let (mut egress, channels, _) = egress_holding_the_lease(&redis).await;
        let mut pubsub = redis.client().get_async_pubsub().await.unwrap();
        pubsub.subscribe(channels.events("cam")).await.unwrap();
        let event = |seq: u64, event: &'static str| Event {
            kind: crate::analytics::EventKind::Line,
            name: "gate".into(),
            event,
            track_id: 7,
            class_id: 2,
            seq,
            capture_ts_us: 1000 + seq,
            inside_since_us: None,
        };
        let first = [event(1, "in"), event(1, "out")];
        let second = [event(2, "in")];
        for (seq, events, saved) in [
            (1, &first[..], &b"a-1"[..]),
            (1, &first[..], &b"again"[..]), // retried
            (2, &second[..], &b"a-2"[..]),
        ] {
            let with = WithResult {
                analytics: saved,
                events,
                ..WithResult::default()
            };
            egress
                .publish_output("cam", &detections(0, seq), &[], with)
                .await;
        }
        let told: Vec<Value> = pubsub
            .on_message()
            .take(3)
            .map(|m| serde_json::from_slice(m.get_payload_bytes()).unwrap())
            .collect()
            .await;
        let brief: Vec<(u64, &str, &str, u64)> = told
            .iter()
            .map(|e| {
                assert_eq!(
                    (e["stream"].as_str(), e["type"].as_str()),
                    (Some("cam"), Some("line"))
                );
                (
                    e["seq"].as_u64().unwrap(),
                    e["event"].as_str().unwrap(),
                    e["name"].as_str().unwrap(),
                    e["epoch"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            brief,
            [
                (1, "in", "gate", 0),
                (1, "out", "gate", 0),
                (2, "in", "gate", 0)
            ]
        );
        let mut conn = redis.conn().await;
        let entries: u64 = redis::cmd("XLEN")
            .arg(channels.events("cam"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(entries, 3, "the events stream holds each once");
        let now = egress.taken_over("cam").await;
        assert_eq!(now.analytics.as_deref(), Some(&b"a-2"[..]));
    }

    #[test]
    fn last_published_reads_epoch_and_seq_and_refuses_junk() {
        let parse = LastPublished::parse;
        assert_eq!(parse("7"), Some(LastPublished { epoch: 0, seq: 7 }));
        assert_eq!(parse("2:41"), Some(LastPublished { epoch: 2, seq: 41 }));
        for junk in ["", "x", "1:", ":5", "-1", "1:2:3", "9007199254740992"] {
            assert_eq!(parse(junk), None, "{junk:?}");
        }
    }
}
