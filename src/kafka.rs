//! Kafka, beside Redis (issue 31): what clients use. `kadr publish --transport kafka` produces
//! frame messages to a topic, keyed by the stream id, so that one partition holds each camera's
//! frames in order (docs/protocol.md, "Kafka"); nodes read that topic through
//! `pipeline::source::kafka`.
//!
//! The client is librdkafka (the `rdkafka` crate), Kafka's reference client in C: it does the
//! consumer group protocol, the idempotent producer and TLS/SASL, and is tested against Kafka
//! itself by its makers; a pure-Rust client either lacks consumer groups (`rskafka`) or is
//! little kept.

use std::time::Duration;

use anyhow::Context;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

/// Topic the frames of every camera go to by default (keyed by stream id).
pub const FRAMES_TOPIC: &str = "kadr.frames";
/// Topic of the publishers' reports (`source_outage`, `source_resumed`), keyed by stream id.
pub const ERRORS_TOPIC: &str = "kadr.errors";
/// Largest frame message produced: a 1280x720 JPEG is about 150 KB; Kafka's default limit
/// on a message batch is 1 MB.
pub const MAX_MESSAGE_BYTES: usize = 1_000_000;

/// Where a client finds Kafka.
#[derive(Debug, Clone)]
pub struct KafkaOptions {
    /// `host:port,host:port`: the brokers asked first (the rest are learned from them).
    pub brokers: String,
    pub frames_topic: String,
    pub errors_topic: String,
    /// How long a message may wait to be taken (retries included) before it counts as failed.
    pub delivery_timeout: Duration,
}

impl KafkaOptions {
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            frames_topic: FRAMES_TOPIC.into(),
            errors_topic: ERRORS_TOPIC.into(),
            delivery_timeout: Duration::from_secs(10),
        }
    }

    /// An idempotent producer: a message retried after a lost answer is written once, and a
    /// partition's messages stay in the order they were sent.
    pub fn producer(&self) -> anyhow::Result<KafkaProducer> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.max.bytes", MAX_MESSAGE_BYTES.to_string())
            .set(
                "message.timeout.ms",
                self.delivery_timeout.as_millis().max(1).to_string(),
            )
            // One frame at a time, each waited for: nothing to batch, so no waiting to batch.
            .set("linger.ms", "0")
            // Frames are JPEG already: compressing them again costs CPU for nothing.
            .set("compression.type", "none")
            .create()
            .with_context(|| format!("a Kafka producer for {}", self.brokers))?;
        Ok(KafkaProducer {
            producer,
            timeout: self.delivery_timeout,
        })
    }
}

/// A producer that waits for each message to be taken.
pub struct KafkaProducer {
    producer: FutureProducer,
    timeout: Duration,
}

/// Where a message was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub partition: i32,
    pub offset: i64,
}

impl KafkaProducer {
    /// Produce `value` keyed by `key` and wait until the brokers took it.
    pub async fn send(&self, topic: &str, key: &str, value: &[u8]) -> anyhow::Result<Written> {
        let delivered = self
            .producer
            .send(
                FutureRecord::to(topic).key(key).payload(value),
                Timeout::After(self.timeout),
            )
            .await
            .map_err(|(e, _)| e)
            .with_context(|| format!("producing to Kafka topic {topic}"))?;
        Ok(Written {
            partition: delivered.partition,
            offset: delivered.offset,
        })
    }
}
