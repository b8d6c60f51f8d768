//! Events on tracked objects: crossings of directed lines, and entries, exits and dwell in
//! zones, counted per class. Pure functions over each frame's tracked boxes, after the
//! tracker; no runtime.
//!
//! **Debounce.** A detector's box jitters by a few percent of its size from frame to frame, so
//! an object standing on a line would cross it back and forth every few frames. Each object's
//! anchor (the bottom centre of its box by default) is placed on a side of a line only when it
//! is farther from it than a band (`band` times the box's height, at least `min_band_px`);
//! inside the band it keeps the side it had. A crossing counts when the side changes and the
//! path from the last place on the old side to the first on the new one passes through the
//! segment (not around its ends). A crossing over frames where the object was not seen (a
//! dropped frame, an occlusion the tracker bridged) still counts: only the two ends matter.
//! Zones use the same band on their edges: an object enters once it is inside by more than the
//! band, and leaves once it is outside by more than it; its time inside runs from the first
//! frame its anchor was inside (capture time), so `dwell` is not late by the band.
//!
//! **Found again.** The tracker gives an object it lost for longer than its `lost_frames` a new
//! id when it comes back (behind a pillar, a passing truck). A new id that appears where a
//! vanished track of the same class was heading (`rejoin_frames`) takes that track's place:
//! its side of every line and, if not yet gone, its zone stays; so a crossing made while hidden
//! counts once, and a stay is not entered twice.
//!
//! `kadr track --analytics` runs it offline on a MOTChallenge file.

pub mod config;
pub mod geometry;
mod saved;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

pub use config::{AnalyticsConfig, AnalyticsError, Anchor, LineConfig, ZoneConfig};
use geometry::Point;
pub use saved::{saved_counts, RestoreError};

/// One tracked object in one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tracked {
    pub track_id: u64,
    pub class_id: u32,
    /// Corners `[x1, y1, x2, y2]`, pixels.
    pub bbox: [f32; 4],
}

/// Something that happened on a line or in a zone.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// `line` or `zone`.
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// The line's or zone's name.
    pub name: String,
    /// `in` / `out` for a line; `enter` / `exit` / `dwell` for a zone.
    pub event: &'static str,
    pub track_id: u64,
    pub class_id: u32,
    /// The frame it was seen in, and its capture time.
    pub seq: u64,
    pub capture_ts_us: u64,
    /// Zones: when the object's time inside began (capture time).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inside_since_us: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Line,
    Zone,
}

/// Crossings of one line, in each direction.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LineCounts {
    #[serde(rename = "in")]
    pub in_: u64,
    pub out: u64,
    /// The same, per class id.
    pub by_class: BTreeMap<u32, InOut>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InOut {
    #[serde(rename = "in")]
    pub in_: u64,
    pub out: u64,
}

/// One zone: objects inside now, and entries so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ZoneCounts {
    pub inside: u64,
    pub entered: u64,
    /// Objects inside now, per class id.
    pub inside_by_class: BTreeMap<u32, u64>,
}

/// Counts of every line and zone, by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    pub lines: BTreeMap<String, LineCounts>,
    pub zones: BTreeMap<String, ZoneCounts>,
}

/// Where a track stands towards one line: the side it was last placed on, and where.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct LineSide {
    positive: bool,
    at: Point,
}

/// Where a track stands towards one zone.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct ZoneStay {
    /// Counted inside (entered, not yet left).
    inside: bool,
    /// The capture time since which the anchor has been on its current side of the edge
    /// (raw, before the band): the start of a stay, backdated.
    raw_inside: bool,
    raw_since_us: u64,
    /// When the counted stay began, and whether `dwell` was said for it.
    since_us: u64,
    dwell_told: bool,
}

#[derive(Debug, Clone, Default)]
struct TrackState {
    class_id: u32,
    last_seq: u64,
    lines: Vec<Option<LineSide>>,
    zones: Vec<ZoneStay>,
    /// Where its anchor was last, how it moved (pixels a frame, smoothed), and its box's
    /// height: where to look for it when a new id appears (see `rejoin_frames`).
    anchor: Point,
    velocity: Point,
    height: f32,
    /// Not seen for `gone_after_frames`: it has left its zones, and is kept only to be
    /// found again under a new id.
    gone: bool,
}

/// One stream's analytics: its lines and zones, each track's place towards them, the counts.
#[derive(Debug, Clone)]
pub struct Analytics {
    cfg: AnalyticsConfig,
    /// The stream's numbering the tracks belong to (see [`Analytics::start_epoch`]).
    epoch: u64,
    /// The capture time of the last frame seen: a gap's, which has none of its own.
    last_capture_us: u64,
    tracks: HashMap<u64, TrackState>,
    counts: Counts,
}

impl Analytics {
    /// `cfg` must have passed [`AnalyticsConfig::validate`].
    pub fn new(cfg: AnalyticsConfig) -> Self {
        let mut counts = Counts::default();
        for l in &cfg.lines {
            counts.lines.insert(l.name.clone(), LineCounts::default());
        }
        for z in &cfg.zones {
            counts.zones.insert(z.name.clone(), ZoneCounts::default());
        }
        Self {
            cfg,
            epoch: 0,
            last_capture_us: 0,
            tracks: HashMap::new(),
            counts,
        }
    }

    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    pub fn config(&self) -> &AnalyticsConfig {
        &self.cfg
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The capture time of the last frame seen (0 before any).
    pub fn last_capture_us(&self) -> u64 {
        self.last_capture_us
    }

    /// The stream's numbering restarted (a camera rebooted): the tracker ends its tracks, so
    /// every object leaves the zones it was in (an `exit` with this frame); the counts go on.
    pub fn start_epoch(
        &mut self,
        epoch: u64,
        seq: u64,
        capture_ts_us: u64,
        events: &mut Vec<Event>,
    ) {
        self.forget(seq, capture_ts_us, events, |_| true);
        self.tracks.clear();
        self.epoch = epoch;
    }

    /// Go on with other lines and zones (the admin API replaced them): the counts of those
    /// whose name and geometry are unchanged go on, each object keeps its place towards them;
    /// the others start at zero.
    pub fn replace_config(&mut self, cfg: AnalyticsConfig) {
        let mut buf = Vec::new();
        self.save(&mut buf);
        *self = Self::restore(cfg, &buf).expect("what this analytics saved restores");
    }

    /// One frame's tracked objects (those with a track id), in sequence order; the events
    /// they make go into `events`, in order.
    pub fn update(
        &mut self,
        seq: u64,
        capture_ts_us: u64,
        objects: &[Tracked],
        events: &mut Vec<Event>,
    ) {
        self.last_capture_us = capture_ts_us;
        let (n_lines, n_zones) = (self.cfg.lines.len(), self.cfg.zones.len());
        for o in objects {
            let p = self.cfg.anchor.of(&o.bbox);
            let height = (o.bbox[3] - o.bbox[1]).abs();
            if !self.tracks.contains_key(&o.track_id) {
                if let Some(old) = self.rejoinable(o, p, height, seq, objects) {
                    let found = self.tracks.remove(&old).expect("listed");
                    self.tracks.insert(o.track_id, found);
                }
            }
            let state = self.tracks.entry(o.track_id).or_insert_with(|| TrackState {
                class_id: o.class_id,
                last_seq: seq,
                lines: vec![None; n_lines],
                zones: vec![ZoneStay::default(); n_zones],
                anchor: p,
                velocity: [0.0, 0.0],
                height,
                gone: false,
            });
            let frames = seq.saturating_sub(state.last_seq);
            if frames > 0 {
                let moved = |k: usize| (p[k] - state.anchor[k]) / frames as f32;
                state.velocity = [0, 1].map(|k| 0.5 * state.velocity[k] + 0.5 * moved(k));
            }
            (state.anchor, state.height, state.gone) = (p, height, false);
            state.class_id = o.class_id;
            state.last_seq = seq;
            let band = (self.cfg.band * (o.bbox[3] - o.bbox[1]).abs()).max(self.cfg.min_band_px);
            let at = Frame {
                seq,
                capture_ts_us,
                track_id: o.track_id,
                class_id: o.class_id,
            };
            for (i, line) in self.cfg.lines.iter().enumerate() {
                if !counts_class(&line.classes, o.class_id) {
                    continue;
                }
                if let Some(inward) = cross(&mut state.lines[i], line, p, band) {
                    let c = self.counts.lines.get_mut(&line.name).expect("every line");
                    let by = c.by_class.entry(o.class_id).or_default();
                    if inward {
                        (c.in_, by.in_) = (c.in_ + 1, by.in_ + 1);
                    } else {
                        (c.out, by.out) = (c.out + 1, by.out + 1);
                    }
                    events.push(at.event(
                        EventKind::Line,
                        &line.name,
                        if inward { "in" } else { "out" },
                        None,
                    ));
                }
            }
            for (i, zone) in self.cfg.zones.iter().enumerate() {
                if !counts_class(&zone.classes, o.class_id) {
                    continue;
                }
                let stay = &mut state.zones[i];
                let c = self.counts.zones.get_mut(&zone.name).expect("every zone");
                for (what, since) in visit(stay, zone, p, band, capture_ts_us) {
                    match what {
                        "enter" => {
                            c.entered += 1;
                            c.inside += 1;
                            *c.inside_by_class.entry(o.class_id).or_default() += 1;
                        }
                        "exit" => leave(c, o.class_id),
                        _ => {}
                    }
                    events.push(at.event(EventKind::Zone, &zone.name, what, Some(since)));
                }
            }
        }
        self.forget_gone(seq, capture_ts_us, events);
    }

    /// Frames that never came (a gap): nothing moves, but tracks may be gone after them.
    pub fn skip(&mut self, seq: u64, capture_ts_us: u64, events: &mut Vec<Event>) {
        self.forget_gone(seq, capture_ts_us, events);
    }

    /// The vanished track that a new id `o` (anchor `p`) is: of its class, not in this frame,
    /// unseen for at most `rejoin_frames`, and within half a box height of the path its last
    /// motion would have taken it on (with a quarter of that path as slack); the nearest one.
    fn rejoinable(
        &self,
        o: &Tracked,
        p: Point,
        height: f32,
        seq: u64,
        objects: &[Tracked],
    ) -> Option<u64> {
        let within = self.cfg.rejoin_frames;
        self.tracks
            .iter()
            .filter(|(id, t)| {
                t.class_id == o.class_id && !objects.iter().any(|x| x.track_id == **id)
            })
            .filter_map(|(id, t)| {
                let unseen = seq
                    .checked_sub(t.last_seq)
                    .filter(|f| (1..=within).contains(f))?;
                let path = t.velocity.map(|v| v * unseen as f32);
                let ahead = [t.anchor[0] + path[0], t.anchor[1] + path[1]];
                let slack = 0.5 * t.height.max(height) + 0.25 * path[0].hypot(path[1]);
                let off = geometry::distance_to_segment(t.anchor, ahead, p);
                (off <= slack).then_some((off, *id))
            })
            .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
            .map(|(_, id)| id)
    }

    /// Tracks not seen for `gone_after_frames` leave the zones they were in (an `exit` with
    /// the frame that found them gone); they are forgotten once they can no longer be found
    /// again under a new id (`rejoin_frames`).
    fn forget_gone(&mut self, seq: u64, capture_ts_us: u64, events: &mut Vec<Event>) {
        let after = self.cfg.gone_after_frames;
        let unseen = |t: &TrackState| seq.saturating_sub(t.last_seq);
        self.forget(seq, capture_ts_us, events, |t| unseen(t) >= after);
        let keep = after.max(self.cfg.rejoin_frames);
        self.tracks.retain(|_, t| unseen(t) < keep);
    }

    /// The tracks `gone` says are gone leave the zones they were in, and are marked gone.
    fn forget(
        &mut self,
        seq: u64,
        capture_ts_us: u64,
        events: &mut Vec<Event>,
        gone: impl Fn(&TrackState) -> bool,
    ) {
        let mut newly_gone: Vec<u64> = self
            .tracks
            .iter()
            .filter(|(_, t)| !t.gone && gone(t))
            .map(|(id, _)| *id)
            .collect();
        newly_gone.sort_unstable();
        for id in newly_gone {
            let t = self.tracks.get_mut(&id).expect("listed above");
            t.gone = true;
            for (i, stay) in t.zones.iter_mut().enumerate() {
                let was = std::mem::take(stay);
                if !was.inside {
                    continue;
                }
                let zone = &self.cfg.zones[i];
                leave(
                    self.counts.zones.get_mut(&zone.name).expect("every zone"),
                    t.class_id,
                );
                let at = Frame {
                    seq,
                    capture_ts_us,
                    track_id: id,
                    class_id: t.class_id,
                };
                events.push(at.event(EventKind::Zone, &zone.name, "exit", Some(was.since_us)));
            }
        }
    }
}

/// The frame and object an event is about.
struct Frame {
    seq: u64,
    capture_ts_us: u64,
    track_id: u64,
    class_id: u32,
}

impl Frame {
    fn event(
        &self,
        kind: EventKind,
        name: &str,
        event: &'static str,
        inside_since_us: Option<u64>,
    ) -> Event {
        Event {
            kind,
            name: name.to_string(),
            event,
            track_id: self.track_id,
            class_id: self.class_id,
            seq: self.seq,
            capture_ts_us: self.capture_ts_us,
            inside_since_us,
        }
    }
}

fn counts_class(classes: &Option<Vec<u32>>, class_id: u32) -> bool {
    classes.as_ref().is_none_or(|c| c.contains(&class_id))
}

fn leave(c: &mut ZoneCounts, class_id: u32) {
    c.inside = c.inside.saturating_sub(1);
    if let Some(n) = c.inside_by_class.get_mut(&class_id) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            c.inside_by_class.remove(&class_id);
        }
    }
}

/// A track's anchor `p` against one line: `Some(true)` when it crossed `in`, `Some(false)`
/// `out`, `None` when it did not cross (see the module's doc).
fn cross(side: &mut Option<LineSide>, line: &LineConfig, p: Point, band: f32) -> Option<bool> {
    let d = geometry::signed_distance(line.from, line.to, p);
    if d.abs() <= band {
        return None;
    }
    let positive = d > 0.0;
    let was = side.replace(LineSide { positive, at: p })?;
    if was.positive == positive || !geometry::passes_through(line.from, line.to, was.at, p) {
        return None;
    }
    Some(positive)
}

/// A track's anchor `p` against one zone at `now_us`: what happened (`enter`, `exit`, `dwell`),
/// each with when the stay began.
fn visit(
    stay: &mut ZoneStay,
    zone: &ZoneConfig,
    p: Point,
    band: f32,
    now_us: u64,
) -> Vec<(&'static str, u64)> {
    let mut happened = Vec::new();
    let raw_inside = geometry::inside(&zone.polygon, p);
    if raw_inside != stay.raw_inside || stay.raw_since_us == 0 {
        stay.raw_inside = raw_inside;
        stay.raw_since_us = now_us;
    }
    let clear = geometry::distance_to_edge(&zone.polygon, p) > band;
    if clear && raw_inside != stay.inside {
        if raw_inside {
            stay.inside = true;
            stay.since_us = stay.raw_since_us;
            stay.dwell_told = false;
            happened.push(("enter", stay.since_us));
        } else {
            stay.inside = false;
            happened.push(("exit", stay.since_us));
        }
    }
    if let (true, false, Some(dwell_s)) = (stay.inside, stay.dwell_told, zone.dwell_s) {
        if now_us.saturating_sub(stay.since_us) as f64 >= dwell_s * 1e6 {
            stay.dwell_told = true;
            happened.push(("dwell", stay.since_us));
        }
    }
    happened
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME_US: u64 = 100_000;

    fn gate() -> AnalyticsConfig {
        AnalyticsConfig {
            lines: vec![LineConfig {
                name: "gate".into(),
                from: [100.0, 400.0],
                to: [1100.0, 400.0],
                classes: None,
            }],
            ..AnalyticsConfig::default()
        }
    }

    /// A 40x80 box whose bottom centre is at (x, y).
    fn at(track_id: u64, x: f32, y: f32) -> Tracked {
        Tracked {
            track_id,
            class_id: 2,
            bbox: [x - 20.0, y - 80.0, x + 20.0, y],
        }
    }

    /// Run frames of (seq, objects); the events' (name, event, track, seq).
    fn run(
        a: &mut Analytics,
        frames: &[(u64, Vec<Tracked>)],
    ) -> Vec<(String, &'static str, u64, u64)> {
        let mut events = Vec::new();
        for (seq, objects) in frames {
            a.update(*seq, seq * FRAME_US, objects, &mut events);
        }
        events
            .into_iter()
            .map(|e| (e.name, e.event, e.track_id, e.seq))
            .collect()
    }

    #[test]
    fn a_car_crossing_a_line_once_with_jitter_on_the_line_counts_once() {
        let mut a = Analytics::new(gate());
        // Down the image through y = 400, dithering +/- 5 px around the line for 10 frames
        // (the band is 8 px: 10% of the box's 80).
        let mut frames = Vec::new();
        for (i, y) in [
            360.0, 380.0, 395.0, 404.0, 397.0, 405.0, 396.0, 403.0, 399.0,
        ]
        .into_iter()
        .chain([420.0, 440.0])
        .enumerate()
        {
            frames.push((i as u64, vec![at(1, 500.0, y)]));
        }
        let events = run(&mut a, &frames);
        assert_eq!(events, [("gate".to_string(), "in", 1, 9)]);
        let c = &a.counts().lines["gate"];
        assert_eq!((c.in_, c.out), (1, 0));
        assert_eq!(c.by_class[&2].in_, 1);
    }

    #[test]
    fn an_object_that_turns_back_before_the_line_counts_nothing() {
        let mut a = Analytics::new(gate());
        let ys = [340.0, 370.0, 390.0, 396.0, 390.0, 370.0, 340.0];
        let frames: Vec<_> = ys
            .iter()
            .enumerate()
            .map(|(i, y)| (i as u64, vec![at(1, 500.0, *y)]))
            .collect();
        assert!(run(&mut a, &frames).is_empty());
        // One that crosses and comes back counts both ways.
        let ys = [340.0, 420.0, 340.0];
        let frames: Vec<_> = ys
            .iter()
            .enumerate()
            .map(|(i, y)| (10 + i as u64, vec![at(2, 500.0, *y)]))
            .collect();
        let events = run(&mut a, &frames);
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!((events[0].1, events[1].1), ("in", "out"));
    }

    #[test]
    fn a_crossing_during_a_dropped_frame_still_counts_and_one_around_the_end_does_not() {
        let mut a = Analytics::new(gate());
        let mut events = Vec::new();
        a.update(0, 0, &[at(1, 500.0, 360.0)], &mut events);
        // Frames 1..=3 never came (a gap); the object is past the line at frame 4.
        a.skip(3, 3 * FRAME_US, &mut events);
        a.update(4, 4 * FRAME_US, &[at(1, 510.0, 450.0)], &mut events);
        assert_eq!(events.len(), 1);
        assert_eq!((events[0].event, events[0].seq), ("in", 4));
        // Past the segment's end (x > 1100): the side changes, but no crossing.
        a.update(5, 5 * FRAME_US, &[at(3, 1200.0, 360.0)], &mut events);
        a.update(6, 6 * FRAME_US, &[at(3, 1200.0, 450.0)], &mut events);
        assert_eq!(events.len(), 1, "{events:?}");
    }

    #[test]
    fn a_class_filter_counts_only_its_classes() {
        let mut cfg = gate();
        cfg.lines[0].classes = Some(vec![0]);
        let mut a = Analytics::new(cfg);
        let frames = [
            (0, vec![at(1, 500.0, 300.0)]),
            (1, vec![at(1, 500.0, 500.0)]),
        ];
        assert!(run(&mut a, &frames).is_empty(), "class 2 is not counted");
    }

    fn lot(dwell_s: Option<f64>) -> AnalyticsConfig {
        AnalyticsConfig {
            zones: vec![ZoneConfig {
                name: "lot".into(),
                polygon: vec![
                    [200.0, 200.0],
                    [600.0, 200.0],
                    [600.0, 600.0],
                    [200.0, 600.0],
                ],
                classes: None,
                dwell_s,
            }],
            ..AnalyticsConfig::default()
        }
    }

    #[test]
    fn a_zone_says_enter_dwell_and_exit_once_each_with_the_stay_backdated() {
        let mut a = Analytics::new(lot(Some(0.5)));
        // Walks in along x (y = 400), jittering on the edge at x = 200, stays, walks out.
        let xs = [
            150.0, 195.0, 203.0, 198.0, 204.0, 215.0, 300.0, 300.0, 300.0, 300.0, 300.0,
        ];
        let mut frames: Vec<_> = xs
            .iter()
            .enumerate()
            .map(|(i, x)| (i as u64, vec![at(1, *x, 400.0)]))
            .collect();
        frames.push((11, vec![at(1, 650.0, 400.0)]));
        let mut events = Vec::new();
        for (seq, objects) in &frames {
            a.update(*seq, seq * FRAME_US, objects, &mut events);
            if *seq == 7 {
                assert_eq!(a.counts().zones["lot"].inside, 1);
            }
        }
        let told: Vec<(&str, u64, Option<u64>)> = events
            .iter()
            .map(|e| (e.event, e.seq, e.inside_since_us))
            .collect();
        // Inside (raw) since frame 4 (x = 204, after 198 was outside); counted at frame 5,
        // when past the band; dwell 0.5 s after frame 4: frame 9.
        let since = Some(4 * FRAME_US);
        assert_eq!(
            told,
            [
                ("enter", 5, since),
                ("dwell", 9, since),
                ("exit", 11, since)
            ]
        );
        let c = &a.counts().zones["lot"];
        assert_eq!((c.inside, c.entered), (0, 1));
        assert!(c.inside_by_class.is_empty());
    }

    #[test]
    fn a_track_gone_from_inside_a_zone_exits_it() {
        let mut a = Analytics::new(lot(None));
        let mut events = Vec::new();
        a.update(0, 0, &[at(1, 300.0, 400.0)], &mut events);
        assert_eq!(a.counts().zones["lot"].inside, 1);
        for seq in 1..=30 {
            a.update(seq, seq * FRAME_US, &[], &mut events);
        }
        assert_eq!(events.last().map(|e| (e.event, e.seq)), Some(("exit", 30)));
        assert_eq!(a.counts().zones["lot"].inside, 0);
    }

    /// Lines, a zone with dwell, three objects moving through them for 60 frames.
    fn busy_scene() -> (AnalyticsConfig, Vec<(u64, Vec<Tracked>)>) {
        let mut cfg = lot(Some(0.3));
        cfg.lines = gate().lines;
        let frames = (0..60u64)
            .map(|i| {
                let f = i as f32;
                let objects = vec![
                    at(1, 500.0, 300.0 + 6.0 * f),
                    at(2, 150.0 + 8.0 * f, 400.0),
                    at(
                        3,
                        700.0,
                        600.0 - 5.0 * f + if i % 2 == 0 { 3.0 } else { -3.0 },
                    ),
                ];
                (i, objects)
            })
            .collect();
        (cfg, frames)
    }

    /// The takeover's promise: a state saved after any frame and restored elsewhere gives the
    /// very events and counts that one node running throughout gives, none twice, none missed.
    #[test]
    fn saved_and_restored_after_any_frame_it_says_what_one_run_says() {
        let (cfg, frames) = busy_scene();
        let mut whole = Analytics::new(cfg.clone());
        let expected = run(&mut whole, &frames);
        assert!(expected.len() >= 5, "the scene makes events: {expected:?}");
        for cut in [1, 13, 30, 47] {
            let mut first = Analytics::new(cfg.clone());
            let mut events = run(&mut first, &frames[..cut]);
            let mut saved = Vec::new();
            first.save(&mut saved);
            let mut second = Analytics::restore(cfg.clone(), &saved).unwrap();
            events.extend(run(&mut second, &frames[cut..]));
            assert_eq!(events, expected, "cut after frame {cut}");
            assert_eq!(second.counts(), whole.counts(), "cut after frame {cut}");
            assert_eq!(&saved_counts(&saved).unwrap(), first.counts());
        }
    }

    #[test]
    fn replaced_lines_and_zones_start_at_zero_and_unchanged_ones_go_on() {
        let (cfg, frames) = busy_scene();
        let mut whole = Analytics::new(cfg.clone());
        let gate_after_40: Vec<_> = run(&mut whole, &frames)
            .into_iter()
            .filter(|(name, _, _, seq)| name == "gate" && *seq >= 40)
            .collect();
        assert!(!gate_after_40.is_empty(), "track 3 crosses after frame 40");
        let mut a = Analytics::new(cfg.clone());
        run(&mut a, &frames[..40]);
        let gate_before = a.counts().lines["gate"].clone();
        assert!(gate_before.in_ > 0);
        assert_eq!(a.counts().zones["lot"].entered, 2);
        let mut moved = cfg.clone();
        moved.zones[0].polygon[2] = [650.0, 600.0];
        moved.lines.push(LineConfig {
            name: "new".into(),
            from: [0.0, 100.0],
            to: [1280.0, 100.0],
            classes: None,
        });
        a.replace_config(moved);
        assert_eq!(a.counts().lines["gate"], gate_before, "unchanged: goes on");
        assert_eq!(
            a.counts().zones["lot"],
            ZoneCounts::default(),
            "moved: anew"
        );
        assert_eq!(a.counts().lines["new"], LineCounts::default());
        // Objects keep their side of the unchanged line: it says what it would have said.
        let later: Vec<_> = run(&mut a, &frames[40..])
            .into_iter()
            .filter(|(name, ..)| name == "gate")
            .collect();
        assert_eq!(later, gate_after_40);
    }

    #[test]
    fn a_saved_state_that_no_node_wrote_is_refused() {
        let (cfg, frames) = busy_scene();
        let mut a = Analytics::new(cfg.clone());
        run(&mut a, &frames[..10]);
        let mut saved = Vec::new();
        a.save(&mut saved);
        let text = String::from_utf8(saved).unwrap();
        for junk in [
            "".to_string(),
            "[]".to_string(),
            text.replacen("\"epoch\":0", "\"epoch\":9007199254740993", 1),
            text.replacen("\"lines\":[{", "\"lines\":[{\"name\":\"x\",\"geometry\":1,\"counts\":{\"in\":0,\"out\":0,\"by_class\":{}}},{", 1),
        ] {
            assert!(
                Analytics::restore(cfg.clone(), junk.as_bytes()).is_err(),
                "{junk}"
            );
        }
    }

    #[test]
    fn a_new_epoch_ends_every_stay_and_keeps_the_counts() {
        let mut a = Analytics::new(lot(None));
        let mut events = Vec::new();
        a.update(0, 0, &[at(1, 300.0, 400.0)], &mut events);
        a.start_epoch(1, 0, FRAME_US, &mut events);
        assert_eq!(a.epoch(), 1);
        assert_eq!(
            events.last().map(|e| (e.event, e.track_id)),
            Some(("exit", 1))
        );
        let c = &a.counts().zones["lot"];
        assert_eq!((c.inside, c.entered), (0, 1));
    }

    /// Down through the gate at 4 px a frame, hidden from frame 21 to 60 (behind a pillar, past
    /// the tracker's `lost_frames`): it comes back as track 2. Frames: (seq, objects).
    fn hidden_crossing(new_class: u32, new_x: f32) -> Vec<(u64, Vec<Tracked>)> {
        let mut frames: Vec<_> = (0..=20u64)
            .map(|i| (i, vec![at(1, 500.0, 300.0 + 4.0 * i as f32)]))
            .collect();
        for i in 61..=70u64 {
            let mut o = at(2, new_x, 300.0 + 4.0 * i as f32);
            o.class_id = new_class;
            frames.push((i, vec![o]));
        }
        frames
    }

    #[test]
    fn an_object_found_again_under_a_new_id_keeps_its_side_and_its_hidden_crossing_counts() {
        let mut a = Analytics::new(gate());
        let events = run(&mut a, &hidden_crossing(2, 500.0));
        assert_eq!(events, [("gate".to_string(), "in", 2, 61)]);
        // Not with rejoining off, nor for another class, nor far from where it was going.
        let off = AnalyticsConfig {
            rejoin_frames: 0,
            ..gate()
        };
        assert!(run(&mut Analytics::new(off), &hidden_crossing(2, 500.0)).is_empty());
        assert!(run(&mut Analytics::new(gate()), &hidden_crossing(0, 500.0)).is_empty());
        assert!(run(&mut Analytics::new(gate()), &hidden_crossing(2, 800.0)).is_empty());
    }

    #[test]
    fn an_object_found_again_in_a_zone_does_not_enter_it_twice() {
        let mut a = Analytics::new(lot(None));
        let mut events = Vec::new();
        for seq in 0..10 {
            a.update(seq, seq * FRAME_US, &[at(1, 300.0, 400.0)], &mut events);
        }
        // The tracker lost it for 5 frames (noise) and gave it a new id.
        for seq in 15..20 {
            a.update(seq, seq * FRAME_US, &[at(9, 302.0, 401.0)], &mut events);
        }
        let told: Vec<_> = events.iter().map(|e| (e.event, e.track_id)).collect();
        assert_eq!(told, [("enter", 1)]);
        assert_eq!(a.counts().zones["lot"].entered, 1);
    }
}
