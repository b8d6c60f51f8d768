//! The Kafka reader (`[kafka]`): frames from a topic, keyed by stream id, handed to the source
//! as frames heard over pub/sub are. The source nodes form one consumer group: Kafka gives each
//! partition (and so each camera, whose frames share a key) to one node, and moves it when that
//! node leaves or fails. A frame read from Kafka is heard by its node alone, so that node
//! answers it (a refusal goes to the stream's error channel on Redis, as for any frame) and
//! takes the stream's lease whenever it is free: results stay fenced as over Redis.
//!
//! Not yet (issue 31): offsets are committed as frames are read (every 5 s, by the client),
//! not once their results are out, so the frames inside a node that fails are reported
//! `missing` by the node that gets its partitions, as over pub/sub; results go out over Redis.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ractor::ActorRef;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::{ClientContext, Message, TopicPartitionList};
use tracing::{info, warn};

use super::{hand_over, SourceMsg};
use crate::backoff::Backoff;
use crate::config::kafka::KafkaConfig;
use crate::log_budget::{LogBudget, Verdict};
use crate::node_stats::Stats;
use crate::protocol::Channels;

/// What the Kafka reader needs.
#[derive(Debug, Clone)]
pub(crate) struct KafkaReading {
    pub config: KafkaConfig,
    /// The node's name: the consumer's client id, as brokers log it.
    pub client_id: String,
    /// `limits.max_payload_bytes`: the largest frame message (a larger one is refused by the
    /// source, as over Redis).
    pub max_message_bytes: usize,
}

impl KafkaReading {
    fn consumer(&self) -> rdkafka::error::KafkaResult<StreamConsumer<Rebalances>> {
        let c = &self.config;
        // A fetch may bring one message over its limit (Kafka's rule), and the source refuses
        // that one: room for a few frames per partition, not more.
        let fetch_bytes = (self.max_message_bytes * 4).clamp(1 << 20, 1 << 30);
        ClientConfig::new()
            .set("bootstrap.servers", c.brokers.join(","))
            .set("group.id", &c.group_id)
            .set("client.id", &self.client_id)
            .set("session.timeout.ms", c.session_timeout_ms.to_string())
            // Live video: by default a new group starts at the newest frames.
            .set("auto.offset.reset", c.start_at.as_str())
            .set("enable.auto.commit", "true")
            // The node that gets a failed node's partitions reads on from the last commit:
            // commit often, so that it reads again few frames already published.
            .set("auto.commit.interval.ms", "200")
            // A broker may hold a fetch this long waiting for data (tansu does, Kafka answers
            // as soon as there is some): a frame must not wait for it.
            .set("fetch.wait.max.ms", "10")
            .set("max.partition.fetch.bytes", fetch_bytes.to_string())
            .set(
                "fetch.max.bytes",
                (fetch_bytes * 4).min(1 << 30).to_string(),
            )
            // Frames waiting in the client, all partitions together (KiB).
            .set(
                "queued.max.messages.kbytes",
                (fetch_bytes / 1024).to_string(),
            )
            .create_with_context(Rebalances)
    }
}

/// Says which partitions Kafka gives this node and takes from it.
struct Rebalances;

impl ClientContext for Rebalances {}

impl ConsumerContext for Rebalances {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                info!(partitions = %partitions(list), "Kafka gave this node partitions of the frames topic")
            }
            Rebalance::Revoke(list) => {
                info!(partitions = %partitions(list), "Kafka took partitions of the frames topic from this node")
            }
            Rebalance::Error(e) => {
                warn!(error = %e, "Kafka: the consumer group failed to rebalance")
            }
        }
    }
}

/// `topic[0] topic[2]` for a partition list.
fn partitions(list: &TopicPartitionList) -> String {
    let mut parts: Vec<String> = list
        .elements()
        .iter()
        .map(|e| format!("{}[{}]", e.topic(), e.partition()))
        .collect();
    parts.sort();
    parts.join(" ")
}

/// Kinds of trouble logged within a budget (the rest counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Trouble {
    Unkeyed,
    Client,
}

/// Read frames from Kafka for as long as the source runs; Kafka's client reconnects by itself,
/// errors are counted and logged within a budget.
pub(super) async fn read_kafka(
    source: ActorRef<SourceMsg>,
    channels: Channels,
    reading: KafkaReading,
    stats: Arc<Stats>,
) {
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
    let troubles = LogBudget::new();
    let topic = reading.config.frames_topic.clone();
    let consumer = loop {
        match reading
            .consumer()
            .and_then(|c| c.subscribe(&[&topic]).map(|()| c))
        {
            Ok(c) => break c,
            Err(e) => {
                stats.kafka_errors.inc();
                warn!(error = %e, "cannot read Kafka; trying again");
                tokio::time::sleep(backoff.next_wait()).await;
            }
        }
    };
    info!(%topic, group = %reading.config.group_id, brokers = %reading.config.brokers.join(","), "reading frames from Kafka");
    loop {
        let message = match consumer.recv().await {
            Ok(m) => m,
            Err(e) => {
                // A broker away, the topic deleted, a message over the client's limits: the
                // client goes on by itself; so does the node's Redis side.
                stats.kafka_errors.inc();
                if let Verdict::Log { left_out } = troubles.check(&Trouble::Client) {
                    warn!(error = %e, left_out, "Kafka: reading frames failed; going on");
                }
                tokio::time::sleep(backoff.next_wait()).await;
                continue;
            }
        };
        backoff.reset();
        stats.kafka_messages.inc();
        let key = message.key().unwrap_or_default();
        if key.is_empty() {
            // No stream id: there is no stream to tell (its error channel is named by it).
            stats.kafka_unkeyed.inc();
            if let Verdict::Log { left_out } = troubles.check(&Trouble::Unkeyed) {
                warn!(
                    partition = message.partition(),
                    offset = message.offset(),
                    left_out,
                    "Kafka message without a stream id as its key: let go"
                );
            }
            continue;
        }
        let channel = channels.frames_of_bytes(key);
        let payload = Bytes::copy_from_slice(message.payload().unwrap_or_default());
        if !hand_over(&source, channel, payload, true).await {
            return; // the source stopped
        }
    }
}
