//! Freshness for live frames: how many of a stream's droppable frames may wait for a detector,
//! and for how long (`[live]` in cluster.toml).
//!
//! The rule: **a waiting live frame is stale once a newer frame of its own stream arrives and
//! either the stream already has `queue_depth` live frames waiting (default 2), or the waiting
//! frame has already waited as long as a detection takes** (a running average the dispatcher
//! measures): a detector would then finish the newer frame about as soon. A stream faster than
//! its detectors so gets results about one inference old instead of a queue's length behind.
//! Two frames rather than one keep a frame ready for each detector that frees up between two
//! arrivals (measured: one frame cost up to 11% of a saturated node's throughput), and the age
//! rule keeps the second from adding latency when frames come slowly. Frames are never shed
//! because *other* streams fill the queue: a hundred slow cameras that publish in step each
//! keep their one frame until a detector takes it. `KEEP` frames are never dropped here. A
//! camera that wants more smoothing can wait deeper (`queue_depth`), one that wants only the
//! very newest frame can set it to 1, and one that wants no result rather than a late one can
//! set an age limit (`max_wait_ms`), per stream.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// `[live]`: the default for every stream, and per-stream overrides in `[live.streams."name"]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LiveConfig {
    /// Live frames of one stream waiting for a detector; a newer one makes the oldest stale.
    pub queue_depth: usize,
    /// A live frame that has waited this long in the node is dropped as stale (0: no limit).
    pub max_wait_ms: u64,
    /// Overrides by stream id.
    pub streams: BTreeMap<String, LiveOverride>,
}

/// One stream's settings; what is left out comes from `[live]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LiveOverride {
    pub queue_depth: Option<usize>,
    pub max_wait_ms: Option<u64>,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            queue_depth: 2,
            max_wait_ms: 0,
            streams: BTreeMap::new(),
        }
    }
}

/// The most a stream may queue: past it, its frames would outlast any sensible latency.
const MAX_QUEUE_DEPTH: usize = 1024;
/// An hour: a longer age limit is no limit.
const MAX_WAIT_MS: u64 = 3_600_000;

/// What one stream's live frames may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LivePolicy {
    pub queue_depth: usize,
    pub max_wait: Option<Duration>,
}

impl LiveConfig {
    /// Every problem, each with the key's path (`live.streams."cam1".queue_depth`).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut check = |key: String, depth: Option<usize>, wait: Option<u64>| {
            if let Some(d) = depth {
                if !(1..=MAX_QUEUE_DEPTH).contains(&d) {
                    problems.push((
                        format!("{key}queue_depth"),
                        format!("is {d}, must be 1..={MAX_QUEUE_DEPTH}"),
                    ));
                }
            }
            if let Some(w) = wait {
                if w > MAX_WAIT_MS {
                    problems.push((
                        format!("{key}max_wait_ms"),
                        format!("is {w}, must be 0..={MAX_WAIT_MS} (0: no limit)"),
                    ));
                }
            }
        };
        check(
            "live.".into(),
            Some(self.queue_depth),
            Some(self.max_wait_ms),
        );
        for (stream, o) in &self.streams {
            check(
                format!("live.streams.{stream:?}."),
                o.queue_depth,
                o.max_wait_ms,
            );
        }
        problems
    }

    /// Whether any stream has an age limit (if none, there is nothing to check).
    pub fn any_age_limit(&self) -> bool {
        self.max_wait_ms > 0
            || self
                .streams
                .values()
                .any(|o| o.max_wait_ms.unwrap_or(0) > 0)
    }

    /// The policy for `stream`: its override where it has one, else the default.
    pub fn policy(&self, stream: &str) -> LivePolicy {
        let o = self.streams.get(stream);
        let depth = o.and_then(|o| o.queue_depth).unwrap_or(self.queue_depth);
        let wait = o.and_then(|o| o.max_wait_ms).unwrap_or(self.max_wait_ms);
        LivePolicy {
            queue_depth: depth.max(1),
            max_wait: (wait > 0).then(|| Duration::from_millis(wait)),
        }
    }
}

impl LivePolicy {
    /// Whether a live frame that has waited `waited` is too old to be worth detecting.
    pub fn too_old(&self, waited: Duration) -> bool {
        self.max_wait.is_some_and(|limit| waited >= limit)
    }
}

/// Why a live frame was dropped, as the `detail` of its `dropped` gap.
pub(crate) const SUPERSEDED: &str = "superseded: a newer frame of the stream was waiting";

/// The detail of a gap for a frame dropped past its age limit.
pub(crate) fn too_old_detail(waited: Duration, policy: &LivePolicy) -> String {
    format!(
        "stale: waited {} ms, over live.max_wait_ms = {}",
        waited.as_millis(),
        policy.max_wait.map_or(0, |w| w.as_millis())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> LiveConfig {
        toml::from_str(text).expect("valid")
    }

    #[test]
    fn the_default_keeps_two_fresh_frames_and_no_age_limit() {
        let live = LiveConfig::default();
        let p = live.policy("anything");
        assert_eq!(p.queue_depth, 2);
        assert_eq!(p.max_wait, None);
        assert!(!p.too_old(Duration::from_secs(3600)));
        assert!(live.problems().is_empty());
    }

    #[test]
    fn a_stream_override_takes_what_it_names_and_inherits_the_rest() {
        let live = parse(
            "queue_depth = 2\nmax_wait_ms = 0\n\
             [streams.\"lobby cam\"]\nmax_wait_ms = 300\n\
             [streams.dock]\nqueue_depth = 8\n",
        );
        let lobby = live.policy("lobby cam");
        assert_eq!(lobby.queue_depth, 2);
        assert_eq!(lobby.max_wait, Some(Duration::from_millis(300)));
        assert!(lobby.too_old(Duration::from_millis(300)));
        assert!(!lobby.too_old(Duration::from_millis(299)));
        assert_eq!(live.policy("dock").queue_depth, 8);
        assert_eq!(live.policy("dock").max_wait, None);
        assert_eq!(live.policy("other").queue_depth, 2);
    }

    #[test]
    fn every_bad_value_is_reported_with_its_key() {
        let live = parse(
            "queue_depth = 0\n[streams.a]\nqueue_depth = 5000\nmax_wait_ms = 99999999\n\
             [streams.b]\nqueue_depth = 3\n",
        );
        let keys: Vec<String> = live.problems().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "live.queue_depth",
                "live.streams.\"a\".queue_depth",
                "live.streams.\"a\".max_wait_ms",
            ]
        );
        assert!(toml::from_str::<LiveConfig>("queue_dept = 1").is_err());
        assert!(toml::from_str::<LiveConfig>("[streams.a]\ndepth = 1").is_err());
    }
}
