//! `[kafka]`: frames read from a Kafka topic as well as from Redis (issue 31, first part).
//! Empty `brokers`, the default: the node reads no Kafka. Results still go out over Redis.

use serde::Deserialize;

use super::Problems;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Brokers asked first, each `host:port` (the rest are learned from them). Empty: no Kafka.
    pub brokers: Vec<String>,
    /// Topic of the frames, keyed by stream id (docs/protocol.md, "Kafka").
    pub frames_topic: String,
    /// Consumer group of the source nodes: Kafka gives each of the topic's partitions to one
    /// of them, and moves a partition when its node leaves or fails.
    pub group_id: String,
    /// A node not heard from this long loses its partitions to the others.
    pub session_timeout_ms: u64,
    /// Where a group with no committed offset for a partition starts reading it: `latest`
    /// (the frames published from then on: live video) or `earliest` (every frame the topic
    /// still keeps).
    pub start_at: StartAt,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    #[default]
    Latest,
    Earliest,
}

impl StartAt {
    /// As Kafka's clients name it (`auto.offset.reset`).
    pub fn as_str(self) -> &'static str {
        match self {
            StartAt::Latest => "latest",
            StartAt::Earliest => "earliest",
        }
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: Vec::new(),
            frames_topic: crate::kafka::FRAMES_TOPIC.into(),
            group_id: "kadr".into(),
            session_timeout_ms: 10_000,
            start_at: StartAt::Latest,
        }
    }
}

impl KafkaConfig {
    pub fn enabled(&self) -> bool {
        !self.brokers.is_empty()
    }

    pub(super) fn check(&self, p: &mut Problems) {
        for (i, b) in self.brokers.iter().enumerate() {
            let port_ok = b
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !port_ok {
                p.add(
                    &format!("kafka.brokers[{i}]"),
                    format!("is {b:?}, want host:port"),
                );
            }
        }
        // Kafka's own rule for topic names.
        let t = &self.frames_topic;
        let legal = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
        if t.is_empty() || t.len() > 249 || !t.chars().all(legal) || t == "." || t == ".." {
            p.add(
                "kafka.frames_topic",
                format!("is {t:?}: a Kafka topic is 1..=249 of a-z A-Z 0-9 . _ -"),
            );
        }
        if self.group_id.is_empty() || self.group_id.len() > 255 {
            p.add("kafka.group_id", "must be 1..=255 bytes");
        }
        p.range(
            "kafka.session_timeout_ms",
            self.session_timeout_ms,
            1000,
            300_000,
        );
    }
}
