//! Each stream's analytics on the sequencer's way out (see [`crate::analytics`]): after the
//! tracker has given a result's objects their ids, its line crossings and zone visits are
//! found, and published with the result in one fenced step (see the egress), beside the
//! analytics' saved state. A stream's lines and zones come from `[streams."ID".analytics]` in
//! `cluster.toml`, or, once set through the admin API, from Redis (`{prefix}:geometry:{stream}`),
//! where every node holding the stream finds them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::analytics::{Analytics, AnalyticsConfig, Event, Tracked};
use crate::protocol::OutputMessage;
use crate::stream_stats::AnalyticsReport;

/// How often the streams' lines and zones set in Redis are read again: a change through the
/// admin API takes effect within this.
pub(crate) const GEOMETRY_REFRESH: Duration = Duration::from_secs(1);

/// The lines and zones set through the admin API, as stored in Redis: checked again when read
/// (anyone who can write to Redis could have written them).
pub(crate) fn parse_geometry(json: &[u8]) -> Result<AnalyticsConfig, String> {
    let cfg: AnalyticsConfig = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

/// Which lines and zones a stream counts with, and where they came from.
#[derive(Debug, PartialEq)]
pub(crate) enum Geometry<'a> {
    /// Set through the admin API (kept in Redis): wins over `cluster.toml`.
    Admin(AnalyticsConfig),
    /// `[streams."ID".analytics]` of `cluster.toml` (nothing set in Redis).
    Configured(&'a AnalyticsConfig),
    /// Neither: the stream counts nothing.
    Nothing,
    /// Something in Redis that is not usable (not written by the admin API): what to say.
    Unusable(String),
}

/// The one rule for a stream's lines and zones, for the node counting, the viewer drawing and
/// the admin API showing them: Redis's value if any (checked again), else `cluster.toml`'s.
/// Each caller decides what an unusable value means for it.
pub(crate) fn choose_geometry<'a>(
    in_redis: Option<&[u8]>,
    configured: Option<&'a AnalyticsConfig>,
) -> Geometry<'a> {
    match (in_redis.map(parse_geometry), configured) {
        (Some(Ok(cfg)), _) => Geometry::Admin(cfg),
        (Some(Err(e)), _) => Geometry::Unusable(e),
        (None, Some(cfg)) => Geometry::Configured(cfg),
        (None, None) => Geometry::Nothing,
    }
}

pub(crate) struct StreamsAnalytics {
    /// `[streams."ID".analytics]` of `cluster.toml`, by stream.
    configured: HashMap<String, AnalyticsConfig>,
    /// Analytics need track ids: off when `[tracker]` is.
    tracker_on: bool,
    streams: HashMap<Arc<str>, Analytics>,
    /// Each stream's lines and zones in Redis as last read (None: none set), so that only a
    /// change is acted on.
    in_redis: HashMap<Arc<str>, Option<Vec<u8>>>,
    /// The objects of the result being analysed, its events, and the analytics saved after it
    /// (reused).
    objects: Vec<Tracked>,
    pub(crate) events: Vec<Event>,
    pub(crate) saved: Vec<u8>,
    refreshed_at: Instant,
}

impl StreamsAnalytics {
    pub(crate) fn new(configured: HashMap<String, AnalyticsConfig>, tracker_on: bool) -> Self {
        Self {
            configured,
            tracker_on,
            streams: HashMap::new(),
            in_redis: HashMap::new(),
            objects: Vec::new(),
            events: Vec::new(),
            saved: Vec::new(),
            refreshed_at: Instant::now(),
        }
    }

    /// A stream comes to this node: its lines and zones (Redis's if set there, else
    /// `cluster.toml`'s), going on from the analytics saved with its last result. What could
    /// not be used is returned, to be told on the stream's error channel.
    pub(crate) fn take_over(
        &mut self,
        stream: &Arc<str>,
        saved: Option<&[u8]>,
        geometry: Option<Vec<u8>>,
    ) -> Option<String> {
        let mut problem = None;
        let configured = self.configured.get(&**stream);
        let cfg = match choose_geometry(geometry.as_deref(), configured) {
            Geometry::Admin(cfg) => Some(cfg),
            Geometry::Configured(cfg) => Some(cfg.clone()),
            Geometry::Nothing => None,
            Geometry::Unusable(e) => {
                // Nothing counted yet on this node: go on with cluster.toml's.
                problem = Some(self.refused_geometry(stream, &e));
                configured.cloned()
            }
        };
        self.in_redis.insert(stream.clone(), geometry);
        let Some(cfg) = cfg else {
            return problem;
        };
        if !self.tracker_on {
            warn!(%stream, "the stream has lines or zones, but [tracker] is off: nothing is counted");
            return problem;
        }
        let analytics = match saved.map(|saved| Analytics::restore(cfg.clone(), saved)) {
            Some(Ok(a)) => a,
            Some(Err(e)) => {
                warn!(%stream, error = %e, "the stream's saved analytics are not usable: its counts start at zero");
                Analytics::new(cfg)
            }
            None => Analytics::new(cfg),
        };
        self.streams.insert(stream.clone(), analytics);
        problem
    }

    fn refused_geometry(&self, stream: &str, error: &str) -> String {
        warn!(%stream, %error, "the stream's lines and zones in Redis are not usable (not written by the admin API): refused, the stream goes on with what it had");
        format!("the stream's lines and zones in Redis are not usable: {error}; the stream goes on with what it had")
    }

    pub(crate) fn forget(&mut self, stream: &str) {
        self.streams.remove(stream);
        self.in_redis.remove(stream);
    }

    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.streams.retain(|s, _| keep(s));
        self.in_redis.retain(|s, _| keep(s));
    }

    /// The events of one outgoing message (its tracks given already), into `self.events`, and
    /// the stream's analytics saved after it into `self.saved`; both left empty for a stream
    /// without lines or zones.
    pub(crate) fn analyse(&mut self, stream: &str, msg: &OutputMessage) {
        self.events.clear();
        self.saved.clear();
        let Some(a) = self.streams.get_mut(stream) else {
            return;
        };
        let (first, last) = msg.seqs();
        let capture_us = match msg {
            OutputMessage::Detections(d) => d.capture_ts_us,
            OutputMessage::Gap(_) => a.last_capture_us(),
        };
        if msg.epoch() != a.epoch() {
            a.start_epoch(msg.epoch(), first, capture_us, &mut self.events);
        }
        match msg {
            OutputMessage::Detections(d) => {
                self.objects.clear();
                self.objects.extend(d.detections.iter().filter_map(|d| {
                    Some(Tracked {
                        track_id: d.track_id?,
                        class_id: d.class_id,
                        bbox: d.bbox,
                    })
                }));
                a.update(d.seq, capture_us, &self.objects, &mut self.events);
            }
            OutputMessage::Gap(_) => a.skip(last, capture_us, &mut self.events),
        }
        a.save(&mut self.saved);
    }

    pub(crate) fn report(&self, stream: &str) -> Option<AnalyticsReport> {
        let a = self.streams.get(stream)?;
        Some(AnalyticsReport {
            config: a.config().clone(),
            counts: a.counts().clone(),
        })
    }

    /// Whether the lines and zones in Redis are due to be read again (and, if so, the time
    /// is taken: the next read is a refresh later).
    pub(crate) fn refresh_due(&mut self, now: Instant) -> bool {
        if now.duration_since(self.refreshed_at) < GEOMETRY_REFRESH {
            return false;
        }
        self.refreshed_at = now;
        true
    }

    /// What Redis holds now for a stream this node sequences: a change is applied (lines and
    /// zones unchanged keep their counts, see [`Analytics::replace_config`]); a value gone
    /// brings `cluster.toml`'s back. A problem is returned to be told on the error channel.
    pub(crate) fn geometry_read(
        &mut self,
        stream: &Arc<str>,
        geometry: Option<Vec<u8>>,
    ) -> Option<String> {
        if self.in_redis.get(stream) == Some(&geometry) {
            return None;
        }
        let cfg = match choose_geometry(geometry.as_deref(), self.configured.get(&**stream)) {
            Geometry::Admin(cfg) => Some(cfg),
            Geometry::Configured(cfg) => Some(cfg.clone()),
            Geometry::Nothing => None,
            Geometry::Unusable(e) => {
                // Counting already: go on with what the stream had.
                let problem = self.refused_geometry(stream, &e);
                self.in_redis.insert(stream.clone(), geometry);
                return Some(problem);
            }
        };
        self.in_redis.insert(stream.clone(), geometry);
        match (cfg, self.streams.get_mut(stream)) {
            (Some(cfg), Some(a)) => {
                info!(%stream, lines = cfg.lines.len(), zones = cfg.zones.len(), "the stream's lines and zones replaced");
                a.replace_config(cfg);
            }
            (Some(cfg), None) if self.tracker_on => {
                info!(%stream, lines = cfg.lines.len(), zones = cfg.zones.len(), "the stream's lines and zones set");
                self.streams.insert(stream.clone(), Analytics::new(cfg));
            }
            (Some(_), None) => {
                warn!(%stream, "lines or zones set, but [tracker] is off: nothing is counted");
            }
            (None, _) => {
                if self.streams.remove(stream).is_some() {
                    info!(%stream, "the stream's lines and zones removed");
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::LineConfig;
    use crate::protocol::{Detection, DetectionsMessage};

    fn gate(y: f32) -> AnalyticsConfig {
        AnalyticsConfig {
            lines: vec![LineConfig {
                name: "gate".into(),
                from: [0.0, y],
                to: [1280.0, y],
                classes: None,
            }],
            ..AnalyticsConfig::default()
        }
    }

    #[test]
    fn redis_s_lines_and_zones_win_over_cluster_toml_s_and_are_checked_again() {
        let configured = gate(100.0);
        let set = serde_json::to_vec(&gate(200.0)).unwrap();
        assert_eq!(
            choose_geometry(Some(&set), Some(&configured)),
            Geometry::Admin(gate(200.0))
        );
        assert_eq!(
            choose_geometry(None, Some(&configured)),
            Geometry::Configured(&configured)
        );
        assert_eq!(choose_geometry(None, None), Geometry::Nothing);
        let mut bad = gate(200.0);
        bad.lines[0].to = bad.lines[0].from;
        let bad = serde_json::to_vec(&bad).unwrap();
        assert!(matches!(
            choose_geometry(Some(&bad), Some(&configured)),
            Geometry::Unusable(e) if e.contains("lines[0]")
        ));
    }

    fn frame(seq: u64, y: f32) -> OutputMessage {
        let mut d = DetectionsMessage::without_boxes("cam", seq);
        d.capture_ts_us = 1_000 + seq;
        d.detections.push(Detection {
            class_id: 2,
            class: "car".into(),
            score: 0.9,
            bbox: [600.0, y - 80.0, 640.0, y],
            track_id: Some(7),
        });
        OutputMessage::Detections(d)
    }

    /// A car going down through y = 400: its events, frame by frame.
    fn drive(a: &mut StreamsAnalytics, seqs: std::ops::Range<u64>) -> Vec<&'static str> {
        let mut told = Vec::new();
        for seq in seqs {
            a.analyse("cam", &frame(seq, 300.0 + 20.0 * seq as f32));
            told.extend(a.events.iter().map(|e| e.event));
        }
        told
    }

    #[test]
    fn lines_from_redis_replace_the_config_s_and_their_removal_brings_them_back() {
        let cam: Arc<str> = Arc::from("cam");
        let configured = HashMap::from([("cam".to_string(), gate(400.0))]);
        let mut a = StreamsAnalytics::new(configured, true);
        assert_eq!(a.take_over(&cam, None, None), None);
        assert_eq!(
            drive(&mut a, 0..10),
            ["in"],
            "cluster.toml's gate at y = 400"
        );
        // Set through the admin API: a gate at y = 600, crossed later.
        let moved = serde_json::to_vec(&gate(600.0)).unwrap();
        assert_eq!(a.geometry_read(&cam, Some(moved.clone())), None);
        assert_eq!(a.report("cam").unwrap().config, gate(600.0));
        assert_eq!(drive(&mut a, 10..20), ["in"], "the new gate at y = 600");
        // Junk in Redis is refused; the stream goes on with what it had.
        let problem = a.geometry_read(&cam, Some(b"{\"lines\":[{\"name\":\"x\"}]}".to_vec()));
        assert!(problem.is_some_and(|p| p.contains("not usable")));
        assert_eq!(a.report("cam").unwrap().config, gate(600.0));
        // Removed: cluster.toml's again.
        assert_eq!(a.geometry_read(&cam, None), None);
        assert_eq!(a.report("cam").unwrap().config, gate(400.0));
    }

    #[test]
    fn a_stream_without_lines_has_no_events_and_no_saved_state() {
        let mut a = StreamsAnalytics::new(HashMap::new(), true);
        a.take_over(&Arc::from("cam"), None, None);
        a.analyse("cam", &frame(0, 300.0));
        assert!(a.events.is_empty() && a.saved.is_empty());
        assert!(a.report("cam").is_none());
        // With the tracker off, lines set in Redis count nothing.
        let mut off = StreamsAnalytics::new(HashMap::new(), false);
        let set = serde_json::to_vec(&gate(400.0)).unwrap();
        off.geometry_read(&Arc::from("cam"), Some(set));
        assert!(off.report("cam").is_none());
    }
}
