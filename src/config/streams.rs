//! `[streams."ID"]`: settings of one stream. For now its analytics: the lines and zones its
//! tracked objects are counted on (`[streams."ID".analytics]`, see [`crate::analytics`]); the
//! admin API can replace them at run time (kept in Redis, they win over these).

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use super::Problems;
use crate::analytics::AnalyticsConfig;

/// One stream's section.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    pub analytics: Option<AnalyticsConfig>,
}

/// Every stream's section, by stream id.
pub type StreamsConfig = BTreeMap<String, StreamConfig>;

/// Each stream's analytics, every problem with its key's path (`streams."gate".analytics.lines[0].to`).
/// `max_id_bytes`: `limits.max_stream_id_bytes` (a longer id names no stream a node takes).
pub(crate) fn check(
    streams: &StreamsConfig,
    tracker_on: bool,
    max_id_bytes: usize,
    p: &mut Problems,
) {
    for (id, s) in streams {
        let key = format!("streams.{id:?}");
        if id.is_empty() || id.len() > max_id_bytes {
            p.add(
                &key,
                format!(
                    "a stream id of {} bytes, want 1..={max_id_bytes} (limits.max_stream_id_bytes)",
                    id.len()
                ),
            );
        }
        let Some(analytics) = &s.analytics else {
            continue;
        };
        if let Err(e) = analytics.validate() {
            p.add(&format!("{key}.analytics.{}", e.key), e.problem);
        }
        if !tracker_on {
            p.add(
                &format!("{key}.analytics"),
                "counts tracked objects: needs [tracker] enabled = true",
            );
        }
    }
}

/// The streams that have analytics, and theirs.
pub(crate) fn analytics_by_stream(streams: &StreamsConfig) -> HashMap<String, AnalyticsConfig> {
    streams
        .iter()
        .filter_map(|(id, s)| Some((id.clone(), s.analytics.clone()?)))
        .collect()
}
