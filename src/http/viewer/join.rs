//! The viewer's pure parts: joining frames with their results by sequence number, and keeping a
//! slow browser on the newest frame.

use std::collections::VecDeque;

use bytes::Bytes;
use serde::Serialize;

use crate::protocol::{DetectionsMessage, GapReason, OutputMessage};

/// What a viewer has seen of its stream since it connected.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct Counters {
    /// Frames read from the frames channel.
    pub frames: u64,
    /// Results with detections.
    pub detected: u64,
    /// Sequence numbers in `gap` messages, by reason.
    pub dropped: u64,
    pub failed: u64,
    pub lost: u64,
    pub missing: u64,
    /// Messages on the error channel (refusals and source reports).
    pub errors: u64,
    /// Joined frames not sent because the browser was still busy (it gets the newest instead).
    pub skipped: u64,
    /// Results whose frame this viewer never saw (it connected mid-stream, or the frame aged out).
    pub unmatched: u64,
}

/// Holds recent frames until their results arrive, then hands back the pair.
pub(crate) struct Joiner {
    /// (seq, JPEG), oldest first.
    frames: VecDeque<(u64, Bytes)>,
    capacity: usize,
    pub counters: Counters,
}

impl Joiner {
    /// Keep at most `capacity` frames waiting (results come within a few hundred ms).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            frames: VecDeque::with_capacity(capacity),
            capacity: capacity.max(1),
            counters: Counters::default(),
        }
    }

    pub(crate) fn frame(&mut self, seq: u64, jpeg: Bytes) {
        self.counters.frames += 1;
        if self.frames.back().is_some_and(|(last, _)| seq <= *last) {
            self.frames.clear(); // the publisher restarted its numbering
        }
        if self.frames.len() == self.capacity {
            self.frames.pop_front();
        }
        self.frames.push_back((seq, jpeg));
    }

    /// A result: the frame it belongs to, for detections whose frame is held.
    pub(crate) fn result(&mut self, result: OutputMessage) -> Option<(DetectionsMessage, Bytes)> {
        match result {
            OutputMessage::Detections(d) => {
                self.counters.detected += 1;
                let jpeg = self.take_through(d.seq, d.seq);
                match jpeg {
                    Some(jpeg) => Some((d, jpeg)),
                    None => {
                        self.counters.unmatched += 1;
                        None
                    }
                }
            }
            OutputMessage::Gap(g) => {
                let counter = match g.reason {
                    GapReason::Dropped => &mut self.counters.dropped,
                    GapReason::Failed => &mut self.counters.failed,
                    GapReason::Lost => &mut self.counters.lost,
                    GapReason::Missing => &mut self.counters.missing,
                };
                *counter += g.count;
                let last = g.seq.saturating_add(g.count.saturating_sub(1));
                self.take_through(g.seq, last);
                None
            }
        }
    }

    pub(crate) fn error(&mut self) {
        self.counters.errors += 1;
    }

    /// Forget frames up to `last` (results come in order, so none of them will be wanted), and
    /// return frame `seq` if it was held.
    fn take_through(&mut self, seq: u64, last: u64) -> Option<Bytes> {
        let mut found = None;
        while self.frames.front().is_some_and(|(s, _)| *s <= last) {
            let (s, jpeg) = self.frames.pop_front().expect("front exists");
            if s == seq {
                found = Some(jpeg);
            }
        }
        found
    }
}

/// Sends to a browser only while it has credit (it acknowledges each frame it has drawn); what
/// comes meanwhile replaces what waits, so a slow browser always gets the newest frame.
pub(crate) struct Pacer<T> {
    credit: u32,
    max_credit: u32,
    waiting: Option<T>,
    /// Items replaced before they could be sent.
    pub skipped: u64,
}

impl<T> Pacer<T> {
    pub(crate) fn new(max_credit: u32) -> Self {
        Self {
            credit: max_credit,
            max_credit,
            waiting: None,
            skipped: 0,
        }
    }

    /// A new item: returned if it may be sent now, else kept as the one to send next.
    pub(crate) fn offer(&mut self, item: T) -> Option<T> {
        if self.credit > 0 {
            self.credit -= 1;
            return Some(item);
        }
        if self.waiting.replace(item).is_some() {
            self.skipped += 1;
        }
        None
    }

    /// The browser drew a frame: the waiting item, if any, may go.
    pub(crate) fn ack(&mut self) -> Option<T> {
        self.credit = (self.credit + 1).min(self.max_credit);
        let item = self.waiting.take()?;
        self.credit -= 1;
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::GapMessage;

    fn detections(seq: u64) -> OutputMessage {
        OutputMessage::Detections(DetectionsMessage {
            width: 4,
            height: 4,
            ..DetectionsMessage::without_boxes("cam", seq)
        })
    }

    fn gap(seq: u64, count: u64, reason: GapReason) -> OutputMessage {
        OutputMessage::Gap(GapMessage {
            stream: "cam".into(),
            seq,
            count,
            reason,
            detail: None,
            epoch: 0,
        })
    }

    fn jpeg(seq: u64) -> Bytes {
        Bytes::from(seq.to_be_bytes().to_vec())
    }

    #[test]
    fn results_meet_their_frames_by_seq() {
        let mut j = Joiner::new(8);
        for seq in 0..5 {
            j.frame(seq, jpeg(seq));
        }
        let (d, frame) = j.result(detections(0)).unwrap();
        assert_eq!((d.seq, frame), (0, jpeg(0)));
        assert!(j.result(gap(1, 2, GapReason::Dropped)).is_none());
        let (d, frame) = j.result(detections(3)).unwrap();
        assert_eq!((d.seq, frame), (3, jpeg(3)));
        assert_eq!(j.counters.dropped, 2);
        assert_eq!(j.counters.detected, 2);
        assert_eq!(j.counters.frames, 5);
        // Frame 4 is still held; frames 1 and 2 went with their gap.
        assert_eq!(j.frames.len(), 1);
    }

    #[test]
    fn results_without_a_frame_are_counted_not_shown() {
        let mut j = Joiner::new(2);
        for seq in 10..15 {
            j.frame(seq, jpeg(seq));
        }
        assert!(j.result(detections(11)).is_none(), "aged out");
        assert!(j.result(detections(99)).is_none(), "never seen");
        assert_eq!(j.counters.unmatched, 2);
        assert!(j.frames.is_empty(), "everything up to 99 is forgotten");
    }

    #[test]
    fn a_restarted_publisher_starts_over() {
        let mut j = Joiner::new(8);
        j.frame(50, jpeg(50));
        j.frame(0, jpeg(0));
        assert!(j.result(detections(0)).is_some());
    }

    #[test]
    fn a_slow_browser_gets_the_newest_frame_and_the_rest_are_skipped() {
        let mut p = Pacer::new(2);
        assert_eq!(p.offer(1), Some(1));
        assert_eq!(p.offer(2), Some(2));
        assert_eq!(p.offer(3), None);
        assert_eq!(p.offer(4), None);
        assert_eq!(p.offer(5), None);
        assert_eq!(p.ack(), Some(5));
        assert_eq!(p.skipped, 2);
        assert_eq!(p.ack(), None, "nothing waits; credit comes back");
        assert_eq!(p.ack(), None);
        assert_eq!(p.offer(6), Some(6));
        assert_eq!(p.offer(7), Some(7));
        assert_eq!(p.offer(8), None);
    }
}
