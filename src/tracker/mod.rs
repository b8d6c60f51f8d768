//! Multi-object tracking: an id that follows each object from frame to frame.
//!
//! ByteTrack (Zhang et al., 2022), class-aware, with pure functions and no runtime, so the node
//! (one tracker per stream, after the sequencer has put frames back in order) and
//! `kadr track --mot` (offline, on MOTChallenge files) run the very same code. Each frame:
//!
//! 1. every track's box is predicted one frame on (a Kalman filter, [`kalman`]);
//! 2. detections scoring at least `high_score` are matched to the followed and lost tracks by
//!    overlap times score (an optimal assignment, not greedy);
//! 3. detections between `low_score` and `high_score` are matched to the tracks left (an
//!    object partly hidden scores low: it keeps its track instead of losing it);
//! 4. new (tentative) tracks get the detections left that score at least `new_track_score`,
//!    and are matched in turn; one seen `confirm_frames` frames in a row is confirmed and gets
//!    the next id, one missed is dropped;
//! 5. a followed track left unmatched is lost; a lost one is found again (same id) or, after
//!    `lost_frames` frames, forgotten.
//!
//! Where it differs from ByteTrack, measured on the benchmark's sequences (BENCHMARKS.md): low
//! detections also find tracks lost for up to a second, at an overlap of 0.3 rather than 0.5;
//! tracks start from `new_track_score` (0.3), also below `high_score`; a tie goes to the track
//! seen last; and two tracks both seen at once are never taken for duplicates.
//!
//! Ids start at 1, are given in the order tracks are confirmed, and never repeat within one
//! tracker, also across a new epoch of the stream (its tracks end, its ids go on).
//! A frame that never got detections (a gap) moves every track on one frame without a match
//! ([`Tracker::skip`]), so a track survives a few dropped frames.

mod kalman;
pub mod mot;

use pathfinding::kuhn_munkres::kuhn_munkres;
use pathfinding::matrix::Matrix;
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use crate::config::tracker::TrackerConfig;
use crate::protocol::Detection;
use kalman::Motion;

/// Low-score detections need this much plain overlap with a followed track (ByteTrack's 0.5).
const LOW_MATCH_IOU: f32 = 0.3;
/// A track lost for at most this many frames can be found again by a low-scoring detection.
const LOW_RECOVERY_FRAMES: u64 = 30;
/// A tentative track needs this much overlap times score (ByteTrack's 0.3).
const TENTATIVE_MATCH_IOU: f32 = 0.3;
/// A track started while another was lost, overlapping it this much, is that object twice.
const DUPLICATE_IOU: f32 = 0.85;
/// Tracks held at most (a frame has at most 300 detections after NMS); past it, no new track
/// starts until some end, so a state read back from Redis stays small.
pub const MAX_TRACKS: usize = 2048;
/// Tracks saved for another node at most (about 275 bytes each): the followed ones, then as
/// many lost ones as fit.
pub const MAX_SAVED_TRACKS: usize = 256;
/// Assignment weights are integers: overlap in millionths.
const WEIGHT_SCALE: f32 = 1e6;

/// A detection as the tracker sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// Corners `[x1, y1, x2, y2]`, pixels.
    pub bbox: [f32; 4],
    pub score: f32,
    pub class_id: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Phase {
    /// Seen this many frames in a row, not yet confirmed: no id.
    #[serde(rename = "t")]
    Tentative(u32),
    /// Matched in the latest frame.
    #[serde(rename = "f")]
    Followed,
    /// Confirmed, not matched lately.
    #[serde(rename = "l")]
    Lost,
}

/// Saved with short names: a stream's tracks are written to Redis with every result.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Track {
    /// 0 while tentative.
    id: u64,
    #[serde(rename = "c")]
    class_id: u32,
    #[serde(rename = "p")]
    phase: Phase,
    #[serde(rename = "m")]
    motion: Motion,
    /// Tracker frames at which it started and was last matched.
    #[serde(rename = "b")]
    born: u64,
    #[serde(rename = "s")]
    seen: u64,
    /// The detection it matched in the current frame.
    #[serde(skip)]
    matched: Option<usize>,
}

/// What is carried from one node to another when a stream changes source node.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Saved {
    epoch: u64,
    frame: u64,
    next_id: u64,
    tracks: Vec<Track>,
}

/// Why a saved tracker was not taken back.
#[derive(Debug, Error)]
pub enum RestoreError {
    #[error("not a saved tracker: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("a saved tracker with impossible contents: {0}")]
    Invalid(&'static str),
}

/// One stream's tracker.
#[derive(Debug, Clone)]
pub struct Tracker {
    cfg: TrackerConfig,
    /// The stream's epoch whose frames it follows (see `OutputMessage::epoch`).
    epoch: u64,
    /// Frames seen (updates and skips); 0 before the first.
    frame: u64,
    next_id: u64,
    tracks: Vec<Track>,
    // Reused per frame.
    observations: Vec<Observation>,
    ids: Vec<Option<u64>>,
    predicted: Vec<[f32; 4]>,
}

impl Tracker {
    pub fn new(cfg: TrackerConfig) -> Self {
        Self {
            cfg,
            epoch: 0,
            frame: 0,
            next_id: 1,
            tracks: Vec::new(),
            observations: Vec::new(),
            ids: Vec::new(),
            predicted: Vec::new(),
        }
    }

    /// The tracker of a stream that ran before, whose saved tracker is gone or not usable: its
    /// tracks start afresh, their ids from `first_id` on (a new range, so that no id given
    /// before is given again).
    pub fn starting_ids_at(cfg: TrackerConfig, first_id: u64) -> Self {
        Self {
            next_id: first_id.clamp(1, crate::protocol::MAX_SEQ),
            ..Self::new(cfg)
        }
    }

    /// The tracker a stream goes on with when it comes to a node: the one it saved if that is
    /// usable; else, if it ran before (`ran_before`), a fresh one whose ids start at
    /// `fresh_ids_from` (the time in microseconds: above any id a stream has given out in its
    /// life), and why; a new stream's starts at 1.
    pub fn taken_over(
        cfg: &TrackerConfig,
        saved: Option<&[u8]>,
        ran_before: bool,
        fresh_ids_from: u64,
    ) -> (Self, Option<String>) {
        match saved.map(|saved| Self::restore(cfg.clone(), saved)) {
            Some(Ok(tracker)) => (tracker, None),
            Some(Err(e)) => (
                Self::starting_ids_at(cfg.clone(), fresh_ids_from),
                Some(e.to_string()),
            ),
            None if ran_before => (
                Self::starting_ids_at(cfg.clone(), fresh_ids_from),
                Some("no saved tracker".to_string()),
            ),
            None => (Self::new(cfg.clone()), None),
        }
    }

    /// Ids of the objects in one frame's detections, in their order (`None`: not followed:
    /// too low a score, or a track not yet confirmed).
    pub fn update(&mut self, detections: &[Observation]) -> &[Option<u64>] {
        self.frame += 1;
        let first_frame = self.frame == 1;
        for t in &mut self.tracks {
            t.motion.predict(t.phase != Phase::Lost);
            t.matched = None;
        }
        self.predicted.clear();
        self.predicted
            .extend(self.tracks.iter().map(|t| t.motion.bbox()));
        let cfg = &self.cfg;
        let mut used = vec![false; detections.len()];
        let high: Vec<usize> = (0..detections.len())
            .filter(|&d| detections[d].score >= cfg.high_score)
            .collect();
        let low: Vec<usize> = (0..detections.len())
            .filter(|&d| (cfg.low_score..cfg.high_score).contains(&detections[d].score))
            .collect();

        // 1. High detections against every confirmed track.
        let confirmed: Vec<usize> = (0..self.tracks.len())
            .filter(|&t| !matches!(self.tracks[t].phase, Phase::Tentative(_)))
            .collect();
        for (t, d) in self.associate(&confirmed, &high, detections, true, cfg.match_iou) {
            self.matched(t, d, detections, &mut used);
        }
        // 2. Low detections against the tracks left: followed ones, and (unlike ByteTrack)
        // those lost for at most `LOW_RECOVERY_FRAMES`.
        let frame = self.frame;
        let left: Vec<usize> = confirmed
            .iter()
            .copied()
            .filter(|&t| {
                let track = &self.tracks[t];
                track.matched.is_none()
                    && (track.phase == Phase::Followed || frame - track.seen <= LOW_RECOVERY_FRAMES)
            })
            .collect();
        for (t, d) in self.associate(&left, &low, detections, false, LOW_MATCH_IOU) {
            self.matched(t, d, detections, &mut used);
        }
        let followed_left: Vec<usize> = confirmed
            .iter()
            .copied()
            .filter(|&t| {
                self.tracks[t].matched.is_none() && self.tracks[t].phase == Phase::Followed
            })
            .collect();
        for t in followed_left {
            if self.tracks[t].matched.is_none() {
                self.tracks[t].phase = Phase::Lost;
            }
        }
        // 3. Tentative tracks against the detections left that could start a track.
        let tentative: Vec<usize> = (0..self.tracks.len())
            .filter(|&t| matches!(self.tracks[t].phase, Phase::Tentative(_)))
            .collect();
        let starters: Vec<usize> = (0..detections.len())
            .filter(|&d| {
                let score = detections[d].score;
                !used[d] && score >= self.cfg.new_track_score && score >= self.cfg.low_score
            })
            .collect();
        for (t, d) in self.associate(
            &tentative,
            &starters,
            detections,
            false,
            TENTATIVE_MATCH_IOU,
        ) {
            self.matched(t, d, detections, &mut used);
        }
        // 4. New tracks from those still left.
        for &d in &starters {
            if used[d] || self.tracks.len() >= MAX_TRACKS {
                continue;
            }
            let det = &detections[d];
            self.tracks.push(Track {
                id: 0,
                class_id: det.class_id,
                phase: Phase::Tentative(0),
                motion: Motion::new(det.bbox),
                born: self.frame,
                seen: self.frame,
                matched: Some(d),
            });
            // A stream's very first frame has nothing to confirm against: as ByteTrack, its
            // objects are followed at once.
            let t = self.tracks.len() - 1;
            self.seen_again(t, first_frame);
        }
        // 5. Forget tentative tracks missed once, and lost tracks missed too long.
        let (frame, lost_frames) = (self.frame, u64::from(self.cfg.lost_frames));
        self.tracks.retain(|t| match t.phase {
            Phase::Tentative(_) => t.matched.is_some(),
            Phase::Followed => true,
            Phase::Lost => frame - t.seen <= lost_frames,
        });
        self.drop_duplicates();

        self.ids.clear();
        self.ids.resize(detections.len(), None);
        for t in &self.tracks {
            if let (Some(d), Phase::Followed) = (t.matched, t.phase) {
                self.ids[d] = Some(t.id);
            }
        }
        &self.ids
    }

    /// Give `detections` their `track_id`s (a node's frame).
    pub fn track(&mut self, detections: &mut [Detection]) {
        let mut observations = std::mem::take(&mut self.observations);
        observations.clear();
        observations.extend(detections.iter().map(|d| Observation {
            bbox: d.bbox,
            score: d.score,
            class_id: d.class_id,
        }));
        let ids = self.update(&observations);
        for (d, id) in detections.iter_mut().zip(ids) {
            d.track_id = *id;
        }
        self.observations = observations;
    }

    /// `frames` frames went by with no detections known (a gap): every track moves on, none is
    /// matched or lost for it. A gap longer than the lost-track buffer ends every track.
    pub fn skip(&mut self, frames: u64) {
        if frames > u64::from(self.cfg.lost_frames) {
            self.frame += frames;
            self.tracks.clear();
            return;
        }
        for _ in 0..frames {
            self.frame += 1;
            for t in &mut self.tracks {
                t.motion.predict(t.phase != Phase::Lost);
            }
        }
    }

    /// The stream's numbering restarted (a camera rebooted): its tracks end, its ids go on.
    pub fn start_epoch(&mut self, epoch: u64) {
        self.epoch = epoch;
        self.frame = 0;
        self.tracks.clear();
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Tracks followed or lost, with ids (for tests and the admin API).
    pub fn confirmed_tracks(&self) -> usize {
        self.tracks
            .iter()
            .filter(|t| !matches!(t.phase, Phase::Tentative(_)))
            .count()
    }

    /// The state another node needs to carry on: its tracks and its next id, as JSON. Written
    /// with every result, so it is kept small: tentative tracks are left out (they have no id
    /// yet; another node starts them again), and of the others at most [`MAX_SAVED_TRACKS`],
    /// followed ones first.
    pub fn save(&self, out: &mut Vec<u8>) {
        struct Kept<'a>(&'a [Track]);
        impl Serialize for Kept<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let of = |phase: Phase| self.0.iter().filter(move |t| t.phase == phase);
                s.collect_seq(
                    of(Phase::Followed)
                        .chain(of(Phase::Lost))
                        .take(MAX_SAVED_TRACKS),
                )
            }
        }
        #[derive(Serialize)]
        struct SavedRef<'a> {
            epoch: u64,
            frame: u64,
            next_id: u64,
            tracks: Kept<'a>,
        }
        out.clear();
        serde_json::to_writer(
            &mut *out,
            &SavedRef {
                epoch: self.epoch,
                frame: self.frame,
                next_id: self.next_id,
                tracks: Kept(&self.tracks),
            },
        )
        .expect("a tracker serializes");
    }

    /// Carry on from a saved state. Anyone who can write to Redis could have written it: every
    /// number is checked.
    pub fn restore(cfg: TrackerConfig, saved: &[u8]) -> Result<Self, RestoreError> {
        let s: Saved = serde_json::from_slice(saved)?;
        let max = crate::protocol::MAX_SEQ;
        if s.next_id == 0 || s.next_id > max || s.epoch > max || s.frame > max {
            return Err(RestoreError::Invalid("a number out of range"));
        }
        if s.tracks.len() > MAX_TRACKS {
            return Err(RestoreError::Invalid("too many tracks"));
        }
        for t in &s.tracks {
            let id_ok = match t.phase {
                Phase::Tentative(_) => t.id == 0,
                _ => t.id >= 1 && t.id < s.next_id,
            };
            if !id_ok || t.seen > s.frame || t.born > t.seen || !t.motion.is_finite() {
                return Err(RestoreError::Invalid("a track that cannot be"));
            }
        }
        let mut tracker = Self::new(cfg);
        tracker.epoch = s.epoch;
        tracker.frame = s.frame;
        tracker.next_id = s.next_id;
        tracker.tracks = s.tracks;
        Ok(tracker)
    }

    /// Track `t` matched detection `d` in this frame.
    fn matched(&mut self, t: usize, d: usize, detections: &[Observation], used: &mut [bool]) {
        used[d] = true;
        let track = &mut self.tracks[t];
        track.motion.update(detections[d].bbox);
        track.matched = Some(d);
        track.seen = self.frame;
        self.seen_again(t, false);
    }

    /// Track `t` was seen once more: a tentative one may be confirmed (with the next id), a lost
    /// one is followed again.
    fn seen_again(&mut self, t: usize, confirm_now: bool) {
        let track = &mut self.tracks[t];
        track.phase = match track.phase {
            Phase::Tentative(hits) if confirm_now || hits + 1 >= self.cfg.confirm_frames => {
                track.id = self.next_id;
                self.next_id += 1;
                Phase::Followed
            }
            Phase::Tentative(hits) => Phase::Tentative(hits + 1),
            Phase::Followed | Phase::Lost => Phase::Followed,
        };
    }

    /// The optimal matching of `tracks` to `dets` (indices), pairs under `least` overlap left
    /// out. `fuse`: overlap times the detection's score, as ByteTrack does for confident ones.
    fn associate(
        &self,
        tracks: &[usize],
        dets: &[usize],
        detections: &[Observation],
        fuse: bool,
        least: f32,
    ) -> Vec<(usize, usize)> {
        if tracks.is_empty() || dets.is_empty() {
            return Vec::new();
        }
        let weight = |t: usize, d: usize| -> i64 {
            let det = &detections[d];
            if self.cfg.class_aware && self.tracks[t].class_id != det.class_id {
                return 0;
            }
            let mut similarity = iou(&self.predicted[t], &det.bbox);
            if fuse {
                similarity *= det.score;
            }
            // Maximising the total of (similarity - least) over matched pairs is ByteTrack's
            // assignment with its cost limit; a pair at or under `least` is never chosen.
            let weight = ((similarity - least).max(0.0) * WEIGHT_SCALE) as i64;
            // A tie (two objects crossing: a lost track predicted right onto a followed one)
            // goes to the track that was seen in the last frame.
            let followed = self.tracks[t].phase == Phase::Followed;
            if weight > 0 && followed {
                weight + 1
            } else {
                weight
            }
        };
        // The solver wants no more rows than columns.
        let transpose = tracks.len() > dets.len();
        let (rows, cols) = if transpose {
            (dets, tracks)
        } else {
            (tracks, dets)
        };
        let weights = Matrix::from_fn(rows.len(), cols.len(), |(r, c)| {
            if transpose {
                weight(cols[c], rows[r])
            } else {
                weight(rows[r], cols[c])
            }
        });
        let (_, assignment) = kuhn_munkres(&weights);
        assignment
            .iter()
            .enumerate()
            .filter(|&(r, &c)| weights[(r, c)] > 0)
            .map(|(r, &c)| {
                if transpose {
                    (cols[c], rows[r])
                } else {
                    (rows[r], cols[c])
                }
            })
            .collect()
    }

    /// A track started while another was lost, now overlapping it almost entirely, follows
    /// the lost one's object a second time: it goes (ByteTrack keeps the longer-lived of two
    /// such tracks), and the lost track takes the object back with its own id in the next
    /// frame. Two tracks that were both seen at once are two objects, however close they pass.
    fn drop_duplicates(&mut self) {
        let mut gone = vec![false; self.tracks.len()];
        for (a, ta) in self.tracks.iter().enumerate() {
            if ta.phase != Phase::Followed {
                continue;
            }
            gone[a] = self.tracks.iter().any(|tb| {
                tb.phase == Phase::Lost
                    && ta.born > tb.seen
                    && iou(&ta.motion.bbox(), &tb.motion.bbox()) > DUPLICATE_IOU
            });
        }
        let mut i = 0;
        self.tracks.retain(|_| {
            i += 1;
            !gone[i - 1]
        });
    }
}

/// Intersection over union of two corner boxes.
pub(crate) fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(x: f32, y: f32, score: f32) -> Observation {
        Observation {
            bbox: [x, y, x + 40.0, y + 80.0],
            score,
            class_id: 0,
        }
    }

    fn tracker() -> Tracker {
        Tracker::new(TrackerConfig::default())
    }

    #[test]
    fn two_objects_crossing_keep_their_ids() {
        let mut t = tracker();
        let mut first = Vec::new();
        // A walks right, B walks left, on the same line; they cross at frame 20 (A in front:
        // B is hidden for a few frames, then scores low as it comes out).
        for f in 0..40 {
            let (ax, bx) = (100.0 + 10.0 * f as f32, 500.0 - 10.0 * f as f32);
            let overlap = (ax - bx).abs() < 40.0;
            let mut dets = vec![obs(ax, 100.0, 0.9)];
            if !overlap {
                let score = if (ax - bx).abs() < 80.0 { 0.3 } else { 0.85 };
                dets.push(obs(bx, 100.0, score));
            }
            let ids = t.update(&dets).to_vec();
            if f == 5 {
                first = ids.clone();
                assert!(first.iter().all(Option::is_some), "{first:?}");
                assert_ne!(first[0], first[1]);
            }
            // B comes out from behind A scoring low: that is enough to find its lost track
            // again (ByteTrack would wait for a confident detection). A never loses its id,
            // and never takes B's.
            if f > 5 && dets.len() == 2 {
                assert_eq!(ids, first, "frame {f}");
            }
            if f > 5 && dets.len() == 1 {
                assert_eq!(ids, [first[0]], "frame {f}");
            }
        }
        assert_eq!(t.next_id, 3, "no id given twice for the same two objects");
    }

    #[test]
    fn an_object_hidden_for_ten_frames_is_found_with_its_id() {
        let mut t = tracker();
        let mut id = None;
        for f in 0..40 {
            let x = 100.0 + 5.0 * f as f32;
            let hidden = (15..25).contains(&f);
            let dets = if hidden {
                vec![]
            } else {
                vec![obs(x, 50.0, 0.8)]
            };
            let ids = t.update(&dets).to_vec();
            if f == 10 {
                id = ids[0];
                assert!(id.is_some());
            }
            if f >= 10 && !hidden {
                assert_eq!(ids[0], id, "frame {f}");
            }
        }
    }

    #[test]
    fn a_gap_in_the_sequence_moves_tracks_on_without_losing_them() {
        let mut t = tracker();
        let mut id = None;
        for f in 0..30u64 {
            let x = 100.0 + 12.0 * f as f32;
            if (10..16).contains(&f) {
                t.skip(1); // dropped frames: no detections known
                continue;
            }
            let ids = t.update(&[obs(x, 50.0, 0.9)]).to_vec();
            if f == 5 {
                id = ids[0];
            }
            if f >= 5 {
                assert_eq!(ids[0], id, "frame {f}");
            }
        }
        // A gap longer than the buffer ends the track; its id is not given again.
        t.skip(31);
        t.update(&[obs(500.0, 50.0, 0.9)]);
        let ids = t.update(&[obs(500.0, 50.0, 0.9)]).to_vec();
        assert!(ids[0].is_some() && ids[0] != id);
    }

    #[test]
    fn a_new_track_waits_for_confirmation_and_a_one_frame_blip_gets_no_id() {
        let mut t = tracker();
        assert_eq!(
            t.update(&[obs(0.0, 0.0, 0.9)]),
            [Some(1)],
            "first frame: at once"
        );
        // A false positive for one frame: tentative, dropped, no id used.
        assert_eq!(
            t.update(&[obs(0.0, 0.0, 0.9), obs(600.0, 0.0, 0.9)]),
            [Some(1), None]
        );
        assert_eq!(t.update(&[obs(0.0, 0.0, 0.9)]), [Some(1)]);
        // A real newcomer: no id on its first frame, the next id on its second.
        assert_eq!(
            t.update(&[obs(0.0, 0.0, 0.9), obs(300.0, 0.0, 0.9)]),
            [Some(1), None]
        );
        assert_eq!(
            t.update(&[obs(0.0, 0.0, 0.9), obs(300.0, 0.0, 0.9)]),
            [Some(1), Some(2)]
        );
        // Too low a score to start a track, even though it is seen every frame.
        for _ in 0..5 {
            assert_eq!(t.update(&[obs(800.0, 0.0, 0.2)]).to_vec(), [None]);
        }
    }

    #[test]
    fn classes_are_not_mixed_up() {
        let mut t = tracker();
        let person = obs(100.0, 100.0, 0.9);
        let bag = Observation {
            class_id: 26,
            ..obs(102.0, 102.0, 0.9)
        };
        t.update(&[person]);
        // Only the bag is seen where the person was: not the person's track.
        assert_eq!(t.update(&[bag]).to_vec(), [None]);
        let mut any_class = Tracker::new(TrackerConfig {
            class_aware: false,
            ..TrackerConfig::default()
        });
        any_class.update(&[person]);
        assert_eq!(any_class.update(&[bag]).to_vec(), [Some(1)]);
    }

    #[test]
    fn a_saved_tracker_carries_on_with_the_same_ids_and_junk_is_refused() {
        let mut t = tracker();
        for f in 0..10 {
            t.update(&[
                obs(10.0 * f as f32, 0.0, 0.9),
                obs(400.0, 10.0 * f as f32, 0.9),
            ]);
        }
        let mut saved = Vec::new();
        t.save(&mut saved);
        let mut other = Tracker::restore(TrackerConfig::default(), &saved).expect("restores");
        let dets = [obs(100.0, 0.0, 0.9), obs(400.0, 100.0, 0.9)];
        assert_eq!(other.update(&dets).to_vec(), t.update(&dets).to_vec());
        assert_eq!(other.update(&dets).to_vec(), [Some(1), Some(2)]);

        for junk in [
            &b"{}"[..],
            b"not json",
            br#"{"epoch":0,"frame":1,"next_id":0,"tracks":[]}"#,
        ] {
            assert!(Tracker::restore(TrackerConfig::default(), junk).is_err());
        }
        // A track whose id is not below next_id: ids would repeat.
        let text = String::from_utf8(saved)
            .unwrap()
            .replace("\"next_id\":3", "\"next_id\":2");
        assert!(Tracker::restore(TrackerConfig::default(), text.as_bytes()).is_err());
    }

    /// A corrupted saved tracker used to restart ids at 1, repeating ids already given; now a
    /// stream that ran before starts a new range, above any id it gave.
    #[test]
    fn a_stream_whose_saved_tracker_is_unusable_never_gives_an_id_twice() {
        let cfg = TrackerConfig::default();
        let two_objects = |t: &mut Tracker| {
            t.update(&[obs(10.0, 0.0, 0.9), obs(400.0, 10.0, 0.9)]);
            t.update(&[obs(10.0, 0.0, 0.9), obs(400.0, 10.0, 0.9)])
                .to_vec()
        };
        let from = 1_800_000_000_000_000;
        for (saved, ran_before) in [
            (Some(&b"not json"[..]), true),
            (
                Some(&br#"{"epoch":0,"frame":1,"next_id":0,"tracks":[]}"#[..]),
                true,
            ),
            (None, true),
        ] {
            let (mut t, why) = Tracker::taken_over(&cfg, saved, ran_before, from);
            assert!(why.is_some(), "{saved:?}: the log says why");
            assert_eq!(two_objects(&mut t), [Some(from), Some(from + 1)]);
        }
        // A new stream starts at 1; a usable saved tracker carries on.
        let (mut fresh, why) = Tracker::taken_over(&cfg, None, false, from);
        assert!(why.is_none());
        assert_eq!(two_objects(&mut fresh), [Some(1), Some(2)]);
        let mut saved = Vec::new();
        fresh.save(&mut saved);
        let (mut again, why) = Tracker::taken_over(&cfg, Some(&saved), true, from);
        assert!(why.is_none());
        again.update(&[obs(900.0, 300.0, 0.9)]);
        assert_eq!(again.update(&[obs(900.0, 300.0, 0.9)]).to_vec(), [Some(3)]);
    }

    #[test]
    fn a_saved_track_is_small() {
        let mut t = tracker();
        let dets: Vec<Observation> = (0..50)
            .map(|i| obs(1000.0 + 20.0 * i as f32, 300.0 + 7.5 * i as f32, 0.9))
            .collect();
        for _ in 0..5 {
            t.update(&dets);
        }
        let mut saved = Vec::new();
        t.save(&mut saved);
        let per_track = saved.len() / 50;
        assert!(per_track < 300, "{per_track} bytes a track");

        // However many tracks, the state saved stays bounded; the ids it keeps still restore.
        let mut many = tracker();
        let dets: Vec<Observation> = (0..300)
            .map(|i| obs(50.0 * (i % 20) as f32, 100.0 * (i / 20) as f32, 0.9))
            .collect();
        many.update(&dets);
        assert_eq!(many.confirmed_tracks(), 300);
        many.save(&mut saved);
        let restored = Tracker::restore(TrackerConfig::default(), &saved).expect("restores");
        assert_eq!(restored.confirmed_tracks(), MAX_SAVED_TRACKS);
        assert_eq!(restored.next_id, 301, "ids go on after the last given");
    }

    #[test]
    fn a_new_epoch_ends_the_tracks_and_keeps_counting_ids() {
        let mut t = tracker();
        t.update(&[obs(0.0, 0.0, 0.9)]);
        t.start_epoch(1);
        assert_eq!(t.epoch(), 1);
        assert_eq!(t.update(&[obs(0.0, 0.0, 0.9)]).to_vec(), [Some(2)]);
    }

    #[test]
    fn fifty_objects_at_once_are_followed() {
        let mut t = tracker();
        let grid = |f: usize| -> Vec<Observation> {
            (0..50)
                .map(|i| {
                    obs(
                        60.0 * (i % 10) as f32 + f as f32,
                        100.0 * (i / 10) as f32,
                        0.9,
                    )
                })
                .collect()
        };
        let first = t.update(&grid(0)).to_vec();
        for f in 1..20 {
            assert_eq!(t.update(&grid(f)), &first[..]);
        }
        assert_eq!(t.confirmed_tracks(), 50);
    }
}
