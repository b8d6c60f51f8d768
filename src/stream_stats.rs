//! Per-stream statistics for the admin API: frames in and out, delivered fps, latency
//! percentiles, drops, gaps and errors. Pure: time is passed in. Memory is bounded: the latency
//! window keeps the last [`LATENCY_WINDOW`] frames and the fps window the last five seconds.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::protocol::GapReason;

pub(crate) const LATENCY_WINDOW: usize = 1024;
const FPS_WINDOW: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub(crate) struct StreamStats {
    frames_in: u64,
    frames_out: u64,
    dropped: u64,
    failed: u64,
    lost: u64,
    missing: u64,
    errors: u64,
    /// Capture-to-publish latency of recent frames, in milliseconds.
    latencies_ms: VecDeque<f64>,
    /// Of the same frames: time waiting in the node for a detector, and time at one.
    queued_ms: VecDeque<f64>,
    detect_ms: VecDeque<f64>,
    /// When recent detections were published.
    published: VecDeque<Instant>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

/// One stream as `GET /streams` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct StreamReport {
    pub stream: String,
    /// Frames accepted.
    pub frames_in: u64,
    /// Frames published with detections.
    pub frames_out: u64,
    /// Detections published per second over the last five seconds.
    pub fps: f64,
    /// Capture timestamp to publication, over the last 1024 frames; null before the first.
    pub latency_ms: Option<Percentiles>,
    /// Of that: how long frames waited in the node for a detector (how stale the frames being
    /// detected are), and how long they were at a detector (transfer, decode, inference).
    pub queued_ms: Option<Percentiles>,
    pub detect_ms: Option<Percentiles>,
    pub dropped: u64,
    /// Frames in `gap` messages, by reason (`dropped` is counted above).
    pub failed: u64,
    pub lost: u64,
    pub missing: u64,
    /// Messages refused on this stream (each published on its error channel).
    pub errors: u64,
    /// Results that came after their frame had been reported as a gap.
    pub late: u64,
    /// Its lines and zones and their counts (`[streams."ID".analytics]`, or the admin API's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub analytics: Option<AnalyticsReport>,
}

/// A stream's lines and zones, and what they counted so far.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct AnalyticsReport {
    #[serde(flatten)]
    pub config: crate::analytics::AnalyticsConfig,
    pub counts: crate::analytics::Counts,
}

impl StreamStats {
    pub(crate) fn accepted(&mut self) {
        self.frames_in += 1;
    }

    pub(crate) fn error(&mut self) {
        self.errors += 1;
    }

    pub(crate) fn gap(&mut self, reason: GapReason, count: u64) {
        match reason {
            GapReason::Dropped => self.dropped = self.dropped.saturating_add(count),
            GapReason::Failed => self.failed = self.failed.saturating_add(count),
            GapReason::Lost => self.lost = self.lost.saturating_add(count),
            GapReason::Missing => self.missing = self.missing.saturating_add(count),
        }
    }

    /// A detection was published: its latency, and where the time went when known.
    pub(crate) fn published(&mut self, latency_ms: f64, timing: Option<(f64, f64)>, now: Instant) {
        self.frames_out += 1;
        push_bounded(&mut self.latencies_ms, latency_ms);
        if let Some((queued, detect)) = timing {
            push_bounded(&mut self.queued_ms, queued);
            push_bounded(&mut self.detect_ms, detect);
        }
        self.published.push_back(now);
        self.trim(now);
    }

    fn trim(&mut self, now: Instant) {
        while self
            .published
            .front()
            .is_some_and(|t| now.duration_since(*t) > FPS_WINDOW)
        {
            self.published.pop_front();
        }
    }

    pub(crate) fn report(&mut self, stream: &str, late: u64, now: Instant) -> StreamReport {
        self.trim(now);
        let n = self.published.len();
        let fps = match (self.published.front(), self.published.back()) {
            // A stream still flowing: the rate between its recent frames.
            (Some(first), Some(last))
                if n >= 2 && now.duration_since(*last) < Duration::from_secs(1) =>
            {
                (n - 1) as f64 / last.duration_since(*first).as_secs_f64().max(1e-3)
            }
            // One that paused: what the window holds, spread over the window.
            _ => n as f64 / FPS_WINDOW.as_secs_f64(),
        };
        StreamReport {
            stream: stream.to_string(),
            frames_in: self.frames_in,
            frames_out: self.frames_out,
            fps: (fps * 10.0).round() / 10.0,
            latency_ms: percentiles(&self.latencies_ms),
            queued_ms: percentiles(&self.queued_ms),
            detect_ms: percentiles(&self.detect_ms),
            dropped: self.dropped,
            failed: self.failed,
            lost: self.lost,
            missing: self.missing,
            errors: self.errors,
            late,
            analytics: None,
        }
    }
}

fn push_bounded(window: &mut VecDeque<f64>, value: f64) {
    if window.len() == LATENCY_WINDOW {
        window.pop_front();
    }
    window.push_back(value);
}

/// Nearest-rank percentiles.
pub fn percentiles(values: &VecDeque<f64>) -> Option<Percentiles> {
    if values.is_empty() {
        return None;
    }
    let mut sorted: Vec<f64> = values.iter().copied().collect();
    sorted.sort_by(f64::total_cmp);
    let at = |p: f64| {
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        let v = sorted[rank.clamp(1, sorted.len()) - 1];
        (v * 10.0).round() / 10.0
    };
    Some(Percentiles {
        p50: at(50.0),
        p95: at(95.0),
        p99: at(99.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: VecDeque<f64> = (1..=100).map(f64::from).collect();
        let p = percentiles(&v).unwrap();
        assert_eq!((p.p50, p.p95, p.p99), (50.0, 95.0, 99.0));
        assert_eq!(percentiles(&VecDeque::new()), None);
        let one: VecDeque<f64> = [7.0].into();
        assert_eq!(percentiles(&one).unwrap().p99, 7.0);
    }

    #[test]
    fn counts_rates_and_bounded_windows() {
        let t0 = Instant::now();
        let mut s = StreamStats::default();
        for i in 0..(LATENCY_WINDOW as u64 + 50) {
            s.accepted();
            // 25 fps
            s.published(40.0, Some((5.0, 30.0)), t0 + Duration::from_millis(40 * i));
        }
        s.gap(GapReason::Dropped, 2);
        s.gap(GapReason::Missing, 3);
        s.error();
        let now = t0 + Duration::from_millis(40 * (LATENCY_WINDOW as u64 + 49));
        let r = s.report("cam", 1, now);
        assert_eq!(r.frames_in, LATENCY_WINDOW as u64 + 50);
        assert_eq!(r.frames_out, LATENCY_WINDOW as u64 + 50);
        assert!((r.fps - 25.0).abs() < 1.0, "{}", r.fps);
        assert_eq!(s.latencies_ms.len(), LATENCY_WINDOW);
        assert_eq!(s.queued_ms.len(), LATENCY_WINDOW);
        assert_eq!(r.queued_ms.as_ref().map(|p| p.p99), Some(5.0));
        assert_eq!(r.detect_ms.as_ref().map(|p| p.p50), Some(30.0));
        assert!(s.published.len() <= 126);
        assert_eq!((r.dropped, r.missing, r.errors, r.late), (2, 3, 1, 1));
        // Quiet for longer than the window: no rate.
        let pausing = s.report("cam", 1, now + Duration::from_secs(2)).fps;
        assert!(pausing > 5.0 && pausing < 20.0, "{pausing}");
        let later = s.report("cam", 1, now + Duration::from_secs(6));
        assert_eq!(later.fps, 0.0);
    }
}
