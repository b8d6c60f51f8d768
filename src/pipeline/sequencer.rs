//! The sequencer: puts results back in frame order, per stream, and publishes them.
//!
//! Every frame the source accepts is registered here first; detectors (or the pool, for drops
//! and failures) then report its outcome. Results leave in sequence order. A frame that has been
//! at a detector for longer than the gap wait while a later frame is finished is skipped and
//! reported as a gap (and so is a run of sequence numbers that never arrived, once a later
//! result has waited the gap wait): no stream stalls behind a lost frame for longer than that
//! wait, and every sequence number leaves exactly once.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::{debug, warn};

use crate::node_stats::Stats;
use crate::pipeline::egress::{Egress, STREAM_IDLE_FORGET};
use crate::protocol::{DetectionsMessage, ErrorMessage, GapMessage, GapReason, OutputMessage};
use crate::stream_stats::{StreamReport, StreamStats};

/// What became of one frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Detected(DetectionsMessage),
    Gap {
        reason: GapReason,
        detail: Option<String>,
    },
}

#[derive(Debug)]
enum Slot {
    /// `dispatched_at`: when a detector took it. A frame still queued is never skipped for
    /// lateness; the pool either processes it or reports it dropped.
    Pending {
        dispatched_at: Option<Instant>,
    },
    Done {
        outcome: Outcome,
        done_at: Instant,
    },
}

/// A sequence jump backwards larger than this is a publisher restart, not a late frame.
pub const PUBLISHER_RESTART_DISTANCE: u64 = 1024;

/// Ordering state of one stream. Pure: time is passed in.
#[derive(Debug, Default)]
pub struct StreamOrder {
    next: Option<u64>,
    slots: BTreeMap<u64, Slot>,
    /// Outcomes that arrived after their frame was already skipped.
    pub late: u64,
    /// When a frame of this stream was last accepted.
    last_active: Option<Instant>,
}

impl StreamOrder {
    /// Register an accepted frame. A frame far behind the stream restarts it (flushing what is
    /// outstanding as lost into `out`); a frame just behind is late and ignored (returns false).
    pub fn accept(
        &mut self,
        seq: u64,
        now: Instant,
        stream: &str,
        out: &mut Vec<OutputMessage>,
    ) -> bool {
        match self.next {
            None => self.next = Some(seq),
            Some(next) if seq < next => {
                if next - seq <= PUBLISHER_RESTART_DISTANCE && seq != 0 {
                    return false;
                }
                self.flush(stream, out);
                self.next = Some(seq);
            }
            Some(_) => {}
        }
        self.slots.entry(seq).or_insert(Slot::Pending {
            dispatched_at: None,
        });
        self.last_active = Some(now);
        true
    }

    /// A detector took the frame: from now on, the gap wait applies to it.
    pub fn dispatched(&mut self, seq: u64, now: Instant) {
        if let Some(Slot::Pending { dispatched_at, .. }) = self.slots.get_mut(&seq) {
            dispatched_at.get_or_insert(now);
        }
    }

    /// Record an outcome. Unknown or already-skipped frames count as late.
    pub fn complete(&mut self, seq: u64, outcome: Outcome, now: Instant) {
        match self.slots.get_mut(&seq) {
            Some(slot @ Slot::Pending { .. }) => {
                *slot = Slot::Done {
                    outcome,
                    done_at: now,
                }
            }
            _ => self.late += 1,
        }
    }

    /// Emit everything that can leave now, in order, into `out`.
    pub fn poll(
        &mut self,
        now: Instant,
        gap_wait: Duration,
        frame_timeout: Duration,
        stream: &str,
        out: &mut Vec<OutputMessage>,
    ) {
        let Some(mut next) = self.next else { return };
        // The newest finished frame, and the newest one that has waited the gap wait already.
        let newest_done = self
            .slots
            .iter()
            .rev()
            .find(|(_, s)| matches!(s, Slot::Done { .. }))
            .map(|(&seq, _)| seq);
        let overdue = self
            .slots
            .iter()
            .filter_map(|(&seq, s)| match s {
                Slot::Done { done_at, .. } if now.duration_since(*done_at) >= gap_wait => Some(seq),
                _ => None,
            })
            .max();
        while let Some((&seq, slot)) = self.slots.first_key_value() {
            if seq > next {
                // Never accepted: skipped only when something behind them is overdue.
                if overdue.is_some_and(|o| o > next) {
                    push_gap(out, stream, next, seq - next, GapReason::Missing, None);
                    next = seq;
                    continue;
                }
                break;
            }
            let skip = match slot {
                Slot::Done { .. } => false,
                Slot::Pending { dispatched_at, .. } => {
                    let at_detector = dispatched_at.map(|d| now.duration_since(d));
                    (at_detector.is_some_and(|t| t >= gap_wait)
                        && newest_done.is_some_and(|d| d > seq))
                        || at_detector.is_some_and(|t| t >= frame_timeout)
                }
            };
            if !skip && matches!(slot, Slot::Pending { .. }) {
                break;
            }
            let (_, slot) = self.slots.pop_first().expect("first exists");
            emit(out, stream, seq, slot);
            next = seq + 1;
        }
        self.next = Some(next);
    }

    /// Emit every outstanding frame now, in order: finished ones as they are, the rest as lost,
    /// and unseen numbers in between as missing (shutdown, or a publisher restart).
    fn flush(&mut self, stream: &str, out: &mut Vec<OutputMessage>) {
        let Some(mut next) = self.next else { return };
        while let Some((seq, slot)) = self.slots.pop_first() {
            if seq > next {
                push_gap(out, stream, next, seq - next, GapReason::Missing, None);
            }
            emit(out, stream, seq, slot);
            next = seq + 1;
        }
        self.next = Some(next);
    }

    pub fn is_idle(&self) -> bool {
        self.slots.is_empty()
    }

    /// Nothing outstanding and no frame accepted for `for_at_least`: safe to forget.
    pub fn is_stale(&self, now: Instant, for_at_least: Duration) -> bool {
        self.is_idle()
            && self
                .last_active
                .is_none_or(|t| now.duration_since(t) >= for_at_least)
    }
}

/// Emit one frame leaving the sequencer: its result, or a gap (lost if it never had one).
fn emit(out: &mut Vec<OutputMessage>, stream: &str, seq: u64, slot: Slot) {
    match slot {
        Slot::Done {
            outcome: Outcome::Detected(d),
            ..
        } => out.push(OutputMessage::Detections(d)),
        Slot::Done {
            outcome: Outcome::Gap { reason, detail },
            ..
        } => push_gap(out, stream, seq, 1, reason, detail),
        Slot::Pending { .. } => push_gap(out, stream, seq, 1, GapReason::Lost, None),
    }
}

/// Append a gap, merging with the previous one when it continues it with the same reason.
fn push_gap(
    out: &mut Vec<OutputMessage>,
    stream: &str,
    seq: u64,
    count: u64,
    reason: GapReason,
    detail: Option<String>,
) {
    if let Some(OutputMessage::Gap(g)) = out.last_mut() {
        if g.reason == reason && g.seq + g.count == seq && g.detail == detail {
            g.count += count;
            return;
        }
    }
    out.push(OutputMessage::Gap(GapMessage {
        stream: stream.to_owned(),
        seq,
        count,
        reason,
        detail,
    }));
}

/// Messages the sequencer actor takes.
#[derive(Debug)]
pub enum SequencerMsg {
    /// The source accepted this frame; its outcome will follow.
    Accepted { stream: Arc<str>, seq: u64 },
    /// A detector took this frame.
    Dispatched { stream: Arc<str>, seq: u64 },
    /// The outcome of an accepted frame.
    Completed {
        stream: Arc<str>,
        seq: u64,
        outcome: Outcome,
    },
    /// A refused message, for the stream's error channel (raw channel suffix, maybe not UTF-8).
    Error {
        channel_stream: Vec<u8>,
        error: ErrorMessage,
    },
    /// Periodic: skip frames whose gap wait has passed.
    Tick,
    /// Emit everything outstanding (shutdown).
    Flush(ractor::RpcReplyPort<()>),
    /// Per-stream statistics, for the admin API.
    Streams(ractor::RpcReplyPort<Vec<StreamReport>>),
}

impl ractor::Message for SequencerMsg {}

pub struct SequencerArgs {
    pub egress: Egress,
    pub stats: Arc<Stats>,
    pub gap_wait: Duration,
    pub frame_timeout: Duration,
}

pub struct SequencerState {
    args: SequencerArgs,
    streams: HashMap<Arc<str>, StreamOrder>,
    stats: HashMap<Arc<str>, StreamStats>,
    out: Vec<OutputMessage>,
}

pub struct Sequencer;

impl Actor for Sequencer {
    type Msg = SequencerMsg;
    type State = SequencerState;
    type Arguments = SequencerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SequencerArgs,
    ) -> Result<SequencerState, ActorProcessingErr> {
        // Tick often enough that a gap is reported within a quarter of the wait after it is due.
        let period =
            (args.gap_wait / 4).clamp(Duration::from_millis(5), Duration::from_millis(250));
        myself.send_interval(period, || SequencerMsg::Tick);
        Ok(SequencerState {
            args,
            streams: HashMap::new(),
            stats: HashMap::new(),
            out: Vec::new(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: SequencerMsg,
        state: &mut SequencerState,
    ) -> Result<(), ActorProcessingErr> {
        let now = Instant::now();
        match msg {
            SequencerMsg::Accepted { stream, seq } => {
                if !state.streams.contains_key(&stream) {
                    account_for_takeover(state, &stream, seq).await;
                }
                state.stats.entry(stream.clone()).or_default().accepted();
                let order = state.streams.entry(stream.clone()).or_default();
                if order.accept(seq, now, &stream, &mut state.out) {
                    poll_stream(state, &stream, now).await;
                } else {
                    debug!(%stream, seq, "late frame ignored by the sequencer");
                }
                publish_pending(state, &stream).await;
            }
            SequencerMsg::Dispatched { stream, seq } => {
                if let Some(order) = state.streams.get_mut(&stream) {
                    order.dispatched(seq, now);
                }
            }
            SequencerMsg::Completed {
                stream,
                seq,
                outcome,
            } => {
                if let Some(order) = state.streams.get_mut(&stream) {
                    order.complete(seq, outcome, now);
                    poll_stream(state, &stream, now).await;
                }
            }
            SequencerMsg::Error {
                channel_stream,
                error,
            } => {
                // Counted per stream only for streams already known: a flood of made-up stream
                // names must not grow this map.
                if let Some(s) = std::str::from_utf8(&channel_stream)
                    .ok()
                    .and_then(|name| state.stats.get_mut(name))
                {
                    s.error();
                }
                state
                    .args
                    .egress
                    .publish_error(&channel_stream, &error)
                    .await;
            }
            SequencerMsg::Tick => {
                let busy: Vec<Arc<str>> = state
                    .streams
                    .iter()
                    .filter(|(_, o)| !o.is_idle())
                    .map(|(s, _)| s.clone())
                    .collect();
                for stream in busy {
                    poll_stream(state, &stream, now).await;
                }
                // Forget streams that went quiet; one that comes back starts afresh.
                state
                    .streams
                    .retain(|_, o| !o.is_stale(now, STREAM_IDLE_FORGET));
                let streams = &state.streams;
                state.stats.retain(|s, _| streams.contains_key(s));
            }
            SequencerMsg::Flush(reply) => {
                let names: Vec<Arc<str>> = state.streams.keys().cloned().collect();
                for stream in names {
                    if let Some(order) = state.streams.get_mut(&stream) {
                        order.flush(&stream, &mut state.out);
                    }
                    publish_pending(state, &stream).await;
                }
                let _ = reply.send(());
            }
            SequencerMsg::Streams(reply) => {
                let mut reports: Vec<StreamReport> = state
                    .stats
                    .iter_mut()
                    .map(|(name, s)| {
                        let late = state.streams.get(name).map_or(0, |o| o.late);
                        s.report(name, late, now)
                    })
                    .collect();
                reports.sort_by(|a, b| a.stream.cmp(&b.stream));
                let _ = reply.send(reports);
            }
        }
        Ok(())
    }
}

/// A stream new to this sequencer may have run on another source node before (which died or
/// left). Frames after the last one it published never came out: report them as one gap.
async fn account_for_takeover(state: &mut SequencerState, stream: &Arc<str>, first: u64) {
    let Some(last) = state.args.egress.last_published(stream).await else {
        return;
    };
    // A first frame at or before the last one published is a publisher that restarted.
    if first > last + 1 {
        let (seq, count) = (last + 1, first - last - 1);
        warn!(%stream, seq, count, "frames lost while the stream changed source node");
        state.out.push(OutputMessage::Gap(GapMessage {
            stream: stream.to_string(),
            seq,
            count,
            reason: GapReason::Missing,
            detail: Some("not published before the stream's source node changed".into()),
        }));
        state.stats.entry(stream.clone()).or_default();
    }
}

async fn poll_stream(state: &mut SequencerState, stream: &Arc<str>, now: Instant) {
    if let Some(order) = state.streams.get_mut(stream) {
        order.poll(
            now,
            state.args.gap_wait,
            state.args.frame_timeout,
            stream,
            &mut state.out,
        );
    }
    publish_pending(state, stream).await;
}

async fn publish_pending(state: &mut SequencerState, stream: &str) {
    let mut per_stream = state.stats.get_mut(stream);
    let now = Instant::now();
    let now_us = crate::protocol::now_us();
    for msg in state.out.drain(..) {
        match &msg {
            OutputMessage::Detections(d) => {
                state.args.stats.detected.inc();
                if let Some(s) = per_stream.as_deref_mut() {
                    let latency_ms = now_us.saturating_sub(d.capture_ts_us) as f64 / 1000.0;
                    s.published(latency_ms, d.queued_ms.zip(d.detect_ms), now);
                }
            }
            OutputMessage::Gap(g) => {
                state.args.stats.gap(g.reason, g.count);
                if let Some(s) = per_stream.as_deref_mut() {
                    s.gap(g.reason, g.count);
                }
                if g.reason != GapReason::Dropped {
                    warn!(stream, seq = g.seq, count = g.count, reason = ?g.reason, "gap");
                }
            }
        }
        state.args.egress.publish_output(stream, &msg).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_millis(100);
    const TIMEOUT: Duration = Duration::from_secs(10);

    fn detected(seq: u64) -> Outcome {
        Outcome::Detected(DetectionsMessage {
            stream: "s".into(),
            seq,
            capture_ts_us: 0,
            done_ts_us: 0,
            model: "m".into(),
            width: 1,
            height: 1,
            detections: vec![],
            queued_ms: None,
            detect_ms: None,
        })
    }

    /// Sequence numbers emitted, with gaps as (seq, count, reason).
    fn describe(out: &[OutputMessage]) -> Vec<String> {
        out.iter()
            .map(|m| match m {
                OutputMessage::Detections(d) => format!("{}", d.seq),
                OutputMessage::Gap(g) => format!("gap {}+{} {:?}", g.seq, g.count, g.reason),
            })
            .collect()
    }

    #[test]
    fn reorders_results() {
        let t0 = Instant::now();
        let mut o = StreamOrder::default();
        let mut out = vec![];
        for s in 0..4 {
            o.accept(s, t0, "s", &mut out);
        }
        for s in [2, 0, 3, 1] {
            o.complete(s, detected(s), t0);
            o.poll(t0, WAIT, TIMEOUT, "s", &mut out);
        }
        assert_eq!(describe(&out), ["0", "1", "2", "3"]);
        assert!(o.is_idle());
    }

    #[test]
    fn a_lost_frame_holds_the_stream_for_the_gap_wait_only() {
        let t0 = Instant::now();
        let mut o = StreamOrder::default();
        let mut out = vec![];
        for s in 0..3 {
            o.accept(s, t0, "s", &mut out);
            o.dispatched(s, t0);
        }
        o.complete(1, detected(1), t0);
        o.complete(2, detected(2), t0);
        o.poll(t0 + WAIT / 2, WAIT, TIMEOUT, "s", &mut out);
        assert!(out.is_empty(), "still inside the wait");
        o.poll(t0 + WAIT, WAIT, TIMEOUT, "s", &mut out);
        assert_eq!(describe(&out), ["gap 0+1 Lost", "1", "2"]);
        // The lost frame's result arriving late is counted, not emitted.
        o.complete(0, detected(0), t0 + WAIT * 2);
        assert_eq!(o.late, 1);
    }

    #[test]
    fn consecutive_lost_frames_cost_one_wait_not_one_each() {
        let t0 = Instant::now();
        let mut o = StreamOrder::default();
        let mut out = vec![];
        for s in 0..4 {
            o.accept(s, t0, "s", &mut out);
            o.dispatched(s, t0);
        }
        o.complete(3, detected(3), t0);
        o.poll(t0 + WAIT, WAIT, TIMEOUT, "s", &mut out);
        assert_eq!(describe(&out), ["gap 0+3 Lost", "3"]);
    }

    #[test]
    fn queued_frames_are_never_skipped_for_a_later_fast_failure() {
        let t0 = Instant::now();
        let mut o = StreamOrder::default();
        let mut out = vec![];
        for s in 0..3 {
            o.accept(s, t0, "s", &mut out);
        }
        o.dispatched(0, t0);
        let failed = Outcome::Gap {
            reason: GapReason::Failed,
            detail: None,
        };
        o.complete(2, failed, t0);
        o.poll(t0 + WAIT * 5, WAIT, TIMEOUT, "s", &mut out);
        // 0 has been at a detector too long and 2 is done: 0 is lost; 1 is still queued.
        assert_eq!(describe(&out), ["gap 0+1 Lost"]);
        o.dispatched(1, t0 + WAIT * 5);
        o.complete(1, detected(1), t0 + WAIT * 6);
        o.poll(t0 + WAIT * 6, WAIT, TIMEOUT, "s", &mut out);
        assert_eq!(describe(&out), ["gap 0+1 Lost", "1", "gap 2+1 Failed"]);
    }

    #[test]
    fn missing_sequence_numbers_become_one_gap() {
        let t0 = Instant::now();
        let mut o = StreamOrder::default();
        let mut out = vec![];
        o.accept(10, t0, "s", &mut out);
        o.complete(10, detected(10), t0);
        o.poll(t0, WAIT, TIMEOUT, "s", &mut out);
        o.accept(15, t0, "s", &mut out);
        o.complete(15, detected(15), t0);
        o.poll(t0, WAIT, TIMEOUT, "s", &mut out);
        assert_eq!(describe(&out), ["10"]);
        o.poll(t0 + WAIT, WAIT, TIMEOUT, "s", &mut out);
        assert_eq!(describe(&out), ["10", "gap 11+4 Missing", "15"]);
    }

    #[test]
    fn drops_and_failures_leave_in_order_without_waiting() {
        let t0 = Instant::now();
        let mut o = StreamOrder::default();
        let mut out = vec![];
        for s in 0..4 {
            o.accept(s, t0, "s", &mut out);
        }
        let gap = |reason| Outcome::Gap {
            reason,
            detail: None,
        };
        o.complete(0, gap(GapReason::Dropped), t0);
        o.complete(1, gap(GapReason::Dropped), t0);
        o.complete(2, gap(GapReason::Failed), t0);
        o.complete(3, detected(3), t0);
        o.poll(t0, WAIT, TIMEOUT, "s", &mut out);
        assert_eq!(describe(&out), ["gap 0+2 Dropped", "gap 2+1 Failed", "3"]);
    }

    #[test]
    fn frame_timeout_reports_a_lone_lost_frame() {
        let t0 = Instant::now();
        let mut o = StreamOrder::default();
        let mut out = vec![];
        o.accept(0, t0, "s", &mut out);
        o.poll(t0 + TIMEOUT * 2, WAIT, TIMEOUT, "s", &mut out);
        assert!(out.is_empty(), "a queued frame is never timed out");
        o.dispatched(0, t0);
        o.poll(t0 + TIMEOUT / 2, WAIT, TIMEOUT, "s", &mut out);
        assert!(out.is_empty());
        o.poll(t0 + TIMEOUT, WAIT, TIMEOUT, "s", &mut out);
        assert_eq!(describe(&out), ["gap 0+1 Lost"]);
    }

    #[test]
    fn restart_and_late_frames() {
        let t0 = Instant::now();
        let mut o = StreamOrder::default();
        let mut out = vec![];
        o.accept(5000, t0, "s", &mut out);
        assert!(!o.is_idle());
        assert!(!o.accept(4999, t0, "s", &mut out), "just behind: late");
        assert!(o.accept(0, t0, "s", &mut out), "back to zero: a restart");
        assert_eq!(describe(&out), ["gap 5000+1 Lost"]);
        o.complete(0, detected(0), t0);
        o.poll(t0, WAIT, TIMEOUT, "s", &mut out);
        assert_eq!(describe(&out), ["gap 5000+1 Lost", "0"]);
    }
}
