//! `[limits]`: every size and time a node accepts, so that no input can exhaust it.

use serde::Deserialize;

use super::Problems;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest frame message accepted, header included.
    pub max_payload_bytes: usize,
    pub max_stream_id_bytes: usize,
    /// Live frames waiting for a detector, all streams together: the memory bound. Past it,
    /// the stream with the most waiting loses its oldest. Freshness is `[live]`'s business.
    pub queue_capacity: usize,
    /// How long a finished result may wait behind a missing earlier frame before that frame
    /// is reported as a gap. The sequencer never holds a stream longer than this.
    pub gap_wait_ms: u64,
    /// A frame with no result after this long is reported lost even if nothing waits behind it.
    pub frame_timeout_ms: u64,
    /// A kept frame whose detector has not answered within this long also goes to another
    /// detector (0: three running-average detection times, at least 100 ms); never more than
    /// half of `gap_wait_ms`.
    pub resend_after_ms: u64,
    /// Detectors a frame is sent to in turn when each one leaves (stops, crashes, its node
    /// goes) before it is given up as `failed`; the frame timeout bounds it too.
    pub max_attempts: u8,
    /// Never drop frames for lateness, on any stream (a publisher can ask per frame too).
    pub keep_all_frames: bool,
    /// Streams tracked at once; frames of further streams are refused with an error.
    pub max_streams: usize,
    /// A frame numbered more than this after its stream's last is refused (`seq_jump`) until
    /// consecutive frames confirm the new numbering.
    pub max_seq_jump: u64,
    /// `KEEP` frames a source node holds at once (waiting and at detectors); one more is shed as
    /// a `dropped` gap. With `max_payload_bytes`, the bound on memory under KEEP overload.
    pub max_kept_frames: usize,
    /// Largest frame, width x height as its JPEG header declares; a larger one is refused
    /// (`image_too_large`) before any pixel is decoded. Bounds each detector's decode buffer.
    pub max_pixels: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_payload_bytes: 8 * 1024 * 1024,
            max_stream_id_bytes: 128,
            queue_capacity: 256,
            gap_wait_ms: 1000,
            frame_timeout_ms: 30_000,
            resend_after_ms: 0,
            max_attempts: 5,
            keep_all_frames: false,
            max_streams: 1024,
            max_seq_jump: 300,
            max_kept_frames: 288,
            max_pixels: crate::model::DEFAULT_MAX_PIXELS,
        }
    }
}

impl LimitsConfig {
    /// The upper bounds catch typos that would exhaust memory.
    pub(super) fn check(&self, p: &mut Problems) {
        p.range(
            "limits.max_payload_bytes",
            self.max_payload_bytes as u64,
            64,
            512 << 20,
        );
        p.range(
            "limits.max_stream_id_bytes",
            self.max_stream_id_bytes as u64,
            1,
            u16::MAX as u64,
        );
        p.range(
            "limits.queue_capacity",
            self.queue_capacity as u64,
            1,
            100_000,
        );
        p.range("limits.gap_wait_ms", self.gap_wait_ms, 1, 3_600_000);
        p.range("limits.resend_after_ms", self.resend_after_ms, 0, 3_600_000);
        p.range(
            "limits.frame_timeout_ms",
            self.frame_timeout_ms,
            1,
            86_400_000,
        );
        p.range("limits.max_attempts", u64::from(self.max_attempts), 1, 100);
        p.range("limits.max_streams", self.max_streams as u64, 1, 1_000_000);
        p.range("limits.max_seq_jump", self.max_seq_jump, 1, 1 << 40);
        p.range(
            "limits.max_kept_frames",
            self.max_kept_frames as u64,
            1,
            100_000,
        );
        p.range(
            "limits.max_pixels",
            self.max_pixels,
            1,
            crate::model::MAX_IMAGE_PIXELS,
        );
    }
}
