//! A stream's analytics as saved with each of its results (beside its tracker), so that a
//! source node taking the stream over goes on with the same counts and each object's place
//! towards every line and zone: no crossing is counted twice, no entry said again.
//!
//! Lines and zones are saved by name with a fingerprint of their geometry: restored under other
//! lines and zones (the admin API replaced them, or a node with another `cluster.toml` took the
//! stream), those unchanged go on and the others start at zero.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::geometry::Point;
use super::{
    Analytics, AnalyticsConfig, Counts, LineCounts, LineSide, TrackState, ZoneCounts, ZoneStay,
};

/// More tracks than a tracker ever follows on one stream: a saved state with more was not
/// written by a node.
const MAX_SAVED_TRACKS: usize = 10_000;

#[derive(Debug, Error)]
pub enum RestoreError {
    #[error("saved analytics unreadable: {0}")]
    Unreadable(#[from] serde_json::Error),
    #[error("saved analytics invalid: {0}")]
    Invalid(&'static str),
}

#[derive(Serialize, Deserialize)]
struct Saved<L, Z, T> {
    epoch: u64,
    #[serde(default)]
    capture_us: u64,
    lines: Vec<L>,
    zones: Vec<Z>,
    tracks: T,
}

#[derive(Serialize, Deserialize)]
struct Named<C> {
    name: String,
    geometry: u64,
    counts: C,
}

#[derive(Serialize, Deserialize)]
struct SavedTrack {
    id: u64,
    class_id: u32,
    last_seq: u64,
    lines: Vec<Option<LineSide>>,
    zones: Vec<ZoneStay>,
    #[serde(default)]
    anchor: Point,
    #[serde(default)]
    velocity: Point,
    #[serde(default)]
    height: f32,
    #[serde(default)]
    gone: bool,
}

/// The same, borrowed, for writing without a copy.
#[derive(Serialize)]
struct NamedRef<'a, C> {
    name: &'a str,
    geometry: u64,
    counts: &'a C,
}

#[derive(Serialize)]
struct TrackRef<'a> {
    id: u64,
    class_id: u32,
    last_seq: u64,
    lines: &'a [Option<LineSide>],
    zones: &'a [ZoneStay],
    anchor: Point,
    velocity: Point,
    height: f32,
    gone: bool,
}

struct Tracks<'a>(&'a HashMap<u64, TrackState>);

impl Serialize for Tracks<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|(id, t)| TrackRef {
            id: *id,
            class_id: t.class_id,
            last_seq: t.last_seq,
            lines: &t.lines,
            zones: &t.zones,
            anchor: t.anchor,
            velocity: t.velocity,
            height: t.height,
            gone: t.gone,
        }))
    }
}

/// FNV-1a of a line's or zone's settings as JSON: the same on every node and build.
fn fingerprint<T: Serialize>(settings: &T) -> u64 {
    let json = serde_json::to_vec(settings).expect("settings serialize");
    json.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Only the counts of a saved state, by line and zone name (for the viewer, which draws them).
pub fn saved_counts(saved: &[u8]) -> Result<Counts, RestoreError> {
    #[derive(Deserialize)]
    struct OnlyCounts {
        lines: Vec<Named<LineCounts>>,
        zones: Vec<Named<ZoneCounts>>,
    }
    let s: OnlyCounts = serde_json::from_slice(saved)?;
    Ok(Counts {
        lines: s.lines.into_iter().map(|n| (n.name, n.counts)).collect(),
        zones: s.zones.into_iter().map(|n| (n.name, n.counts)).collect(),
    })
}

impl Analytics {
    /// The state another node needs to carry on, as JSON, into `out` (cleared first).
    pub fn save(&self, out: &mut Vec<u8>) {
        let lines: Vec<NamedRef<LineCounts>> = self
            .cfg
            .lines
            .iter()
            .map(|l| NamedRef {
                name: &l.name,
                geometry: fingerprint(l),
                counts: &self.counts.lines[&l.name],
            })
            .collect();
        let zones: Vec<NamedRef<ZoneCounts>> = self
            .cfg
            .zones
            .iter()
            .map(|z| NamedRef {
                name: &z.name,
                geometry: fingerprint(z),
                counts: &self.counts.zones[&z.name],
            })
            .collect();
        out.clear();
        serde_json::to_writer(
            &mut *out,
            &Saved {
                epoch: self.epoch,
                capture_us: self.last_capture_us,
                lines,
                zones,
                tracks: Tracks(&self.tracks),
            },
        )
        .expect("analytics serialize");
    }

    /// Carry on under `cfg` (checked) from a saved state. Anyone who can write to Redis could
    /// have written it: its shape is checked; counts of lines and zones not in `cfg`, or with
    /// another geometry there, are left behind.
    pub fn restore(cfg: AnalyticsConfig, saved: &[u8]) -> Result<Self, RestoreError> {
        let s: Saved<Named<LineCounts>, Named<ZoneCounts>, Vec<SavedTrack>> =
            serde_json::from_slice(saved)?;
        if s.epoch > crate::protocol::MAX_SEQ {
            return Err(RestoreError::Invalid("an epoch out of range"));
        }
        if s.tracks.len() > MAX_SAVED_TRACKS {
            return Err(RestoreError::Invalid("too many tracks"));
        }
        for t in &s.tracks {
            if t.lines.len() != s.lines.len() || t.zones.len() != s.zones.len() {
                return Err(RestoreError::Invalid("a track of other lines or zones"));
            }
            let finite = t
                .lines
                .iter()
                .flatten()
                .all(|l| l.at.iter().all(|v| v.is_finite()));
            if !finite {
                return Err(RestoreError::Invalid("a place that is not a number"));
            }
        }
        // Where each of `cfg`'s lines and zones was in the saved ones (same name, same geometry).
        let line_was: Vec<Option<usize>> = cfg
            .lines
            .iter()
            .map(|l| {
                let g = fingerprint(l);
                s.lines
                    .iter()
                    .position(|n| n.name == l.name && n.geometry == g)
            })
            .collect();
        let zone_was: Vec<Option<usize>> = cfg
            .zones
            .iter()
            .map(|z| {
                let g = fingerprint(z);
                s.zones
                    .iter()
                    .position(|n| n.name == z.name && n.geometry == g)
            })
            .collect();
        let mut a = Analytics::new(cfg);
        a.epoch = s.epoch;
        a.last_capture_us = s.capture_us;
        let mut counts = Counts::default();
        for (l, was) in a.cfg.lines.iter().zip(&line_was) {
            let c = was.map(|j| s.lines[j].counts.clone()).unwrap_or_default();
            counts.lines.insert(l.name.clone(), c);
        }
        for (z, was) in a.cfg.zones.iter().zip(&zone_was) {
            let c = was.map(|j| s.zones[j].counts.clone()).unwrap_or_default();
            counts.zones.insert(z.name.clone(), c);
        }
        a.counts = counts;
        for t in s.tracks {
            let state = TrackState {
                class_id: t.class_id,
                last_seq: t.last_seq,
                lines: line_was
                    .iter()
                    .map(|w| w.and_then(|j| t.lines[j]))
                    .collect(),
                zones: zone_was
                    .iter()
                    .map(|w| w.map(|j| t.zones[j]).unwrap_or_default())
                    .collect(),
                anchor: t.anchor,
                velocity: t.velocity,
                height: t.height,
                gone: t.gone,
            };
            a.tracks.insert(t.id, state);
        }
        Ok(a)
    }
}
