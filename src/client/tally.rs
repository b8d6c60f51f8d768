//! A client's tally of one output stream: what `kadr subscribe` prints at the end and what
//! `kadr-loadtest` and the container fault suite judge a run by.
//!
//! Every sequence number a node accepted comes back once, in order, as detections or inside a
//! gap (docs/protocol.md). The tally checks exactly that from the outside: the next expected
//! number, numbers seen twice, numbers out of order, and the longest silence between two
//! messages (a stall, as a viewer would see it).
//!
//! ```
//! use std::time::{Duration, Instant};
//! use kadr::protocol::{GapMessage, GapReason, OutputMessage};
//! use kadr::client::tally::StreamTally;
//!
//! let mut t = StreamTally::default();
//! let gap = |seq, count| OutputMessage::Gap(GapMessage {
//!     stream: "cam".into(), seq, count, reason: GapReason::Missing, detail: None, epoch: 0,
//! });
//! let start = Instant::now();
//! t.record(&gap(0, 5), 0, start);
//! t.record(&gap(5, 2), 0, start + Duration::from_millis(300));
//! t.record(&gap(3, 1), 0, start + Duration::from_millis(400)); // seen before
//! let s = t.summary();
//! assert_eq!((s.frames, s.next_seq, s.duplicates), (7, Some(7), 1));
//! assert_eq!(s.longest_stall_ms, 300.0);
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use serde::Serialize;

use crate::protocol::OutputMessage;
use crate::stream_stats::percentiles;

/// The running tally of one stream's output messages.
#[derive(Debug, Default)]
pub struct StreamTally {
    summary: TallySummary,
    latencies_ms: VecDeque<f64>,
    first_at: Option<Instant>,
    last_at: Option<Instant>,
    first_detection_at: Option<Instant>,
    last_detection_at: Option<Instant>,
}

/// What a stream's output came to.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct TallySummary {
    /// Sequence numbers accounted for, each once: detected plus in gaps.
    pub frames: u64,
    pub detected: u64,
    /// Boxes, over all detected frames.
    pub detections: u64,
    pub gap_frames: u64,
    pub gaps_by_reason: BTreeMap<String, u64>,
    /// Messages on the stream's error channel.
    pub errors: u64,
    /// Messages that did not start where the previous one ended.
    pub order_violations: u64,
    /// Sequence numbers that came back a second time (a frame detected twice, say).
    pub duplicates: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// The sequence number the next message should start at (in the current epoch).
    pub next_seq: Option<u64>,
    /// The stream's numbering now (`epoch` of the messages), and how many times it restarted
    /// while this tally watched.
    pub epoch: u64,
    pub restarts: u64,
    /// Longest time between two messages of the stream (0 with fewer than two).
    pub longest_stall_ms: f64,
    /// Detected frames per second, first detection to last.
    pub fps: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p95: f64,
    pub latency_ms_p99: f64,
}

impl StreamTally {
    /// Count one output message, received at `received`; `now_us` is the wall clock then (for
    /// latency from the frame's capture timestamp).
    pub fn record(&mut self, msg: &OutputMessage, now_us: u64, received: Instant) {
        let s = &mut self.summary;
        let (seq, count) = match msg {
            OutputMessage::Detections(d) => (d.seq, 1),
            OutputMessage::Gap(g) => (g.seq, g.count.max(1)),
        };
        if let Some(last) = self.last_at {
            let stall = received.saturating_duration_since(last).as_secs_f64() * 1000.0;
            s.longest_stall_ms = s.longest_stall_ms.max(round1(stall));
        }
        let epoch = msg.epoch();
        if self.first_at.is_none() {
            s.epoch = epoch;
        } else if epoch > s.epoch {
            // The publisher's numbering restarted: a new epoch counts afresh from its first.
            s.epoch = epoch;
            s.restarts += 1;
            s.next_seq = None;
        } else if epoch < s.epoch {
            // A message of a numbering already left behind: out of order, and counted before.
            s.order_violations += 1;
            s.duplicates += count;
            self.last_at = Some(received);
            return;
        }
        self.first_at.get_or_insert(received);
        self.last_at = Some(received);
        let next = s.next_seq.unwrap_or(seq);
        if seq != next {
            s.order_violations += 1;
        }
        // Numbers below the expected next one were accounted for already.
        let repeated = next.saturating_sub(seq).min(count);
        s.duplicates += repeated;
        let fresh = count - repeated;
        s.first_seq.get_or_insert(seq);
        s.next_seq = Some(next.max(seq + count));
        s.last_seq = s.next_seq.map(|n| n - 1);
        s.frames += fresh;
        match msg {
            OutputMessage::Detections(d) => {
                if fresh == 0 {
                    return;
                }
                s.detected += 1;
                s.detections += d.detections.len() as u64;
                self.latencies_ms
                    .push_back(now_us.saturating_sub(d.capture_ts_us) as f64 / 1000.0);
                self.first_detection_at.get_or_insert(received);
                self.last_detection_at = Some(received);
            }
            OutputMessage::Gap(g) => {
                s.gap_frames += fresh;
                *s.gaps_by_reason
                    .entry(format!("{:?}", g.reason).to_lowercase())
                    .or_default() += fresh;
            }
        }
    }

    /// Count one message from the stream's error channel.
    pub fn record_error(&mut self) {
        self.summary.errors += 1;
    }

    /// The counts so far, without the rate and latency percentiles (cheap enough for every
    /// message; [`StreamTally::summary`] works those out too).
    pub fn counts(&self) -> &TallySummary {
        &self.summary
    }

    /// When the first and the last detection arrived.
    pub fn detection_span(&self) -> Option<(Instant, Instant)> {
        Some((self.first_detection_at?, self.last_detection_at?))
    }

    /// The tally so far, with rate and latency percentiles worked out (sorts every latency).
    pub fn summary(&self) -> TallySummary {
        let mut s = self.summary.clone();
        if let Some((a, b)) = self.detection_span() {
            let secs = (b - a).as_secs_f64();
            if secs > 0.0 {
                s.fps = round1(s.detected.saturating_sub(1) as f64 / secs);
            }
        }
        if let Some(p) = percentiles(&self.latencies_ms) {
            (s.latency_ms_p50, s.latency_ms_p95, s.latency_ms_p99) = (p.p50, p.p95, p.p99);
        }
        s
    }

    /// Latencies (ms) of the last `n` detections.
    pub fn recent_latencies(&self, n: usize) -> impl Iterator<Item = f64> + '_ {
        self.latencies_ms.iter().rev().take(n).copied()
    }

    /// When the last message arrived.
    pub fn last_message_at(&self) -> Option<Instant> {
        self.last_at
    }
}

impl TallySummary {
    /// Add another stream's figures (for a total over streams). Rates, latencies and stalls
    /// are not additive: the caller works those out over all streams.
    pub fn add(&mut self, other: &TallySummary) {
        self.frames += other.frames;
        self.detected += other.detected;
        self.detections += other.detections;
        self.gap_frames += other.gap_frames;
        for (k, v) in &other.gaps_by_reason {
            *self.gaps_by_reason.entry(k.clone()).or_default() += v;
        }
        self.errors += other.errors;
        self.order_violations += other.order_violations;
        self.duplicates += other.duplicates;
        self.restarts += other.restarts;
        self.longest_stall_ms = self.longest_stall_ms.max(other.longest_stall_ms);
    }
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::protocol::{DetectionsMessage, GapMessage, GapReason};

    fn det(seq: u64, capture_ts_us: u64) -> OutputMessage {
        OutputMessage::Detections(DetectionsMessage {
            capture_ts_us,
            ..DetectionsMessage::without_boxes("s", seq)
        })
    }

    fn gap(seq: u64, count: u64, reason: GapReason) -> OutputMessage {
        OutputMessage::Gap(GapMessage {
            stream: "s".into(),
            seq,
            count,
            reason,
            detail: None,
            epoch: 0,
        })
    }

    #[test]
    fn an_orderly_stream_has_no_violations() {
        let mut t = StreamTally::default();
        let t0 = Instant::now();
        t.record(&det(10, 0), 5_000, t0);
        t.record(
            &gap(11, 3, GapReason::Dropped),
            0,
            t0 + Duration::from_millis(40),
        );
        t.record(&det(14, 1_000), 5_000, t0 + Duration::from_millis(100));
        let s = t.summary();
        assert_eq!(s.frames, 5);
        assert_eq!((s.detected, s.gap_frames), (2, 3));
        assert_eq!(s.gaps_by_reason["dropped"], 3);
        assert_eq!((s.order_violations, s.duplicates), (0, 0));
        assert_eq!(
            (s.first_seq, s.last_seq, s.next_seq),
            (Some(10), Some(14), Some(15))
        );
        assert_eq!(s.longest_stall_ms, 60.0);
        assert_eq!(s.fps, 10.0);
        assert_eq!(s.latency_ms_p99, 5.0);
    }

    #[test]
    fn a_hole_and_a_repeat_are_both_seen() {
        let mut t = StreamTally::default();
        let t0 = Instant::now();
        t.record(&det(0, 0), 0, t0);
        t.record(&det(2, 0), 0, t0); // 1 never came
        t.record(&det(2, 0), 0, t0); // detected twice
        t.record(&gap(0, 4, GapReason::Lost), 0, t0); // overlaps 0..=2, adds 3
        let s = t.summary();
        assert_eq!(s.order_violations, 3);
        assert_eq!(s.duplicates, 1 + 3);
        assert_eq!((s.frames, s.detected, s.gap_frames), (3, 2, 1));
        assert_eq!(s.next_seq, Some(4));
    }

    #[test]
    fn a_new_epoch_restarts_the_count_and_an_old_one_is_out_of_order() {
        let mut t = StreamTally::default();
        let t0 = Instant::now();
        let in_epoch = |epoch, seq| {
            let mut m = det(seq, 0);
            if let OutputMessage::Detections(d) = &mut m {
                d.epoch = epoch;
            }
            m
        };
        t.record(&in_epoch(0, 500), 0, t0);
        t.record(&in_epoch(0, 501), 0, t0);
        t.record(&in_epoch(1, 2), 0, t0);
        t.record(&in_epoch(1, 3), 0, t0);
        let s = t.summary();
        assert_eq!((s.frames, s.order_violations, s.duplicates), (4, 0, 0));
        assert_eq!((s.epoch, s.restarts, s.next_seq), (1, 1, Some(4)));
        t.record(&in_epoch(0, 502), 0, t0);
        let s = t.summary();
        assert_eq!((s.frames, s.order_violations, s.duplicates), (4, 1, 1));
    }
}
