//! The sequencer: puts results back in frame order, per stream, and publishes them.
//!
//! Every frame the source accepts is registered here first; detectors (or the pool, for drops
//! and failures) then report its outcome. Results leave in sequence order. A frame that has been
//! at a detector for longer than the gap wait while a later frame is finished is skipped and
//! reported as a gap (and so is a run of sequence numbers that never arrived, once a later
//! result has waited the gap wait): no stream stalls behind a lost frame for longer than that
//! wait, and every sequence number leaves exactly once. On the way out, each stream's tracker
//! gives its detections their track ids (the tracker needs frames in order: here they are), and
//! its lines and zones find the result's events (`[streams."ID".analytics]`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::warn;

use crate::analytics::AnalyticsConfig;
use crate::config::TrackerConfig;
use crate::node_stats::Stats;
use crate::pipeline::analytics::StreamsAnalytics;
use crate::pipeline::egress::{Egress, WithResult, STREAM_IDLE_FORGET};
use crate::protocol::{
    DetectionsMessage, ErrorCode, ErrorMessage, GapMessage, GapReason, OutputMessage,
};
use crate::stream_stats::{StreamReport, StreamStats};
use crate::tracker::Tracker;

/// What became of one frame.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    Detected(DetectionsMessage),
    Gap {
        reason: GapReason,
        detail: Option<String>,
    },
}

#[derive(Debug)]
enum Slot {
    /// `dispatched_at`: when a detector took it. A frame still queued is never skipped for
    /// lateness; the pool either processes it or reports it dropped. A `kept` frame is not
    /// given up for the gap wait either, only after `limits.frame_timeout_ms` (its copies go
    /// to other detectors meanwhile): over Redis Streams giving it up would lose it for good.
    Pending {
        dispatched_at: Option<Instant>,
        kept: bool,
    },
    Done {
        outcome: Outcome,
        done_at: Instant,
    },
}

/// The detail of a `missing` gap in a stream read from a Redis Stream.
pub(crate) const TRIMMED: &str =
    "never read: trimmed from the frames stream (its MAXLEN) before a node read it, or never published";

/// Ordering state of one stream. Pure: time is passed in.
#[derive(Debug)]
pub(crate) struct StreamOrder {
    next: Option<u64>,
    slots: BTreeMap<u64, Slot>,
    /// The numbering the stream is in (see [`DetectionsMessage::epoch`]).
    epoch: u64,
    /// When the numbering restarts, accepted frames past a hole wider than this are abandoned.
    max_hole: u64,
    /// Outcomes that arrived after their frame was already skipped.
    pub late: u64,
    /// Accepted frames abandoned when the numbering restarted.
    pub abandoned: u64,
    /// Its frames come from a Redis Stream: numbers never seen were most likely trimmed.
    pub(crate) read_from_stream: bool,
    /// When a frame of this stream was last accepted.
    last_active: Option<Instant>,
}

impl StreamOrder {
    /// `max_hole`: `limits.max_seq_jump`, the widest move a publisher makes unconfirmed.
    pub(crate) fn new(epoch: u64, max_hole: u64) -> Self {
        Self {
            next: None,
            slots: BTreeMap::new(),
            epoch,
            max_hole,
            late: 0,
            abandoned: 0,
            read_from_stream: false,
            last_active: None,
        }
    }

    /// Register an accepted frame (`kept`: flagged KEEP, see [`Slot::Pending`]). `restarted`
    /// (the source confirmed the publisher's numbering restarted), or a number before the next
    /// one due, starts a new epoch: what the old one still holds leaves first, into `out`.
    pub(crate) fn accept(
        &mut self,
        seq: u64,
        kept: bool,
        restarted: bool,
        now: Instant,
        stream: &str,
        out: &mut Vec<OutputMessage>,
    ) {
        match self.next {
            None => self.next = Some(seq),
            Some(next) if restarted || seq < next => {
                self.close_epoch(stream, out);
                self.epoch += 1;
                self.next = Some(seq);
            }
            Some(_) => {}
        }
        self.slots.entry(seq).or_insert(Slot::Pending {
            dispatched_at: None,
            kept,
        });
        self.last_active = Some(now);
    }

    /// The numbering restarted: the old epoch ends now. Its frames leave in order as a flush
    /// does, up to a hole wider than `max_hole`: frames past it belong to a numbering the stream
    /// never reached (forged, say) and are abandoned, counted, not published.
    fn close_epoch(&mut self, stream: &str, out: &mut Vec<OutputMessage>) {
        let Some(next) = self.next else { return };
        let mut end = next;
        for &seq in self.slots.keys() {
            if seq - end > self.max_hole {
                break;
            }
            end = seq + 1;
        }
        let beyond = self.slots.split_off(&end);
        if !beyond.is_empty() {
            self.abandoned += beyond.len() as u64;
            warn!(
                %stream,
                first = beyond.keys().next(),
                count = beyond.len(),
                "frames abandoned: the stream's numbering restarted before their turn"
            );
        }
        self.flush(stream, out);
    }

    /// A detector took the frame: from now on, the gap wait applies to it. A frame sent again
    /// (its detector left, or stayed silent) waits the gap wait anew, so the second detector's
    /// result is not given up before it could come.
    pub(crate) fn dispatched(&mut self, seq: u64, now: Instant) {
        if let Some(Slot::Pending { dispatched_at, .. }) = self.slots.get_mut(&seq) {
            *dispatched_at = Some(now);
        }
    }

    /// Record an outcome. Unknown or already-skipped frames count as late.
    pub(crate) fn complete(&mut self, seq: u64, outcome: Outcome, now: Instant) {
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
    pub(crate) fn poll(
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
                    let detail = self.read_from_stream.then(|| TRIMMED.to_string());
                    push_gap(
                        out,
                        stream,
                        self.epoch,
                        next,
                        seq - next,
                        GapReason::Missing,
                        detail,
                    );
                    next = seq;
                    continue;
                }
                break;
            }
            let skip = match slot {
                Slot::Done { .. } => false,
                Slot::Pending {
                    dispatched_at,
                    kept,
                } => {
                    let at_detector = dispatched_at.map(|d| now.duration_since(d));
                    (!kept
                        && at_detector.is_some_and(|t| t >= gap_wait)
                        && newest_done.is_some_and(|d| d > seq))
                        || at_detector.is_some_and(|t| t >= frame_timeout)
                }
            };
            if !skip && matches!(slot, Slot::Pending { .. }) {
                break;
            }
            let (_, slot) = self.slots.pop_first().expect("first exists");
            emit(out, stream, self.epoch, seq, slot);
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
                push_gap(
                    out,
                    stream,
                    self.epoch,
                    next,
                    seq - next,
                    GapReason::Missing,
                    None,
                );
            }
            emit(out, stream, self.epoch, seq, slot);
            next = seq + 1;
        }
        self.next = Some(next);
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.slots.is_empty()
    }

    /// Nothing outstanding and no frame accepted for `for_at_least`: safe to forget.
    pub(crate) fn is_stale(&self, now: Instant, for_at_least: Duration) -> bool {
        self.is_idle()
            && self
                .last_active
                .is_none_or(|t| now.duration_since(t) >= for_at_least)
    }
}

/// Emit one frame leaving the sequencer: its result, or a gap (lost if it never had one).
fn emit(out: &mut Vec<OutputMessage>, stream: &str, epoch: u64, seq: u64, slot: Slot) {
    match slot {
        Slot::Done {
            outcome: Outcome::Detected(mut d),
            ..
        } => {
            d.epoch = epoch;
            out.push(OutputMessage::Detections(d))
        }
        Slot::Done {
            outcome: Outcome::Gap { reason, detail },
            ..
        } => push_gap(out, stream, epoch, seq, 1, reason, detail),
        Slot::Pending { .. } => push_gap(out, stream, epoch, seq, 1, GapReason::Lost, None),
    }
}

/// Append a gap, merging with the previous one when it continues it with the same reason.
fn push_gap(
    out: &mut Vec<OutputMessage>,
    stream: &str,
    epoch: u64,
    seq: u64,
    count: u64,
    reason: GapReason,
    detail: Option<String>,
) {
    if let Some(OutputMessage::Gap(g)) = out.last_mut() {
        if g.reason == reason && g.seq + g.count == seq && g.detail == detail && g.epoch == epoch {
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
        epoch,
    }));
}

/// Messages the sequencer actor takes.
#[derive(Debug)]
pub(crate) enum SequencerMsg {
    /// The source accepted this frame; its outcome will follow. `kept`: flagged KEEP (or the
    /// node keeps every frame). `restarted`: the source confirmed that the publisher's
    /// numbering restarted with it.
    Accepted {
        stream: Arc<str>,
        seq: u64,
        kept: bool,
        restarted: bool,
        /// Its entry, when it was read from a frames stream: acknowledged with the message that
        /// accounts for it.
        entry: Option<Arc<str>>,
    },
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
    /// This node no longer reads the stream (`cluster.stream_leases`; its lease is gone): forget
    /// it, publishing nothing more, so that taking it again starts from what Redis says.
    Forget(Arc<str>),
    /// Per-stream statistics, for the admin API.
    Streams(ractor::RpcReplyPort<Vec<StreamReport>>),
}

impl ractor::Message for SequencerMsg {}

pub(crate) struct SequencerArgs {
    pub egress: Egress,
    pub stats: Arc<Stats>,
    pub gap_wait: Duration,
    pub frame_timeout: Duration,
    /// `limits.max_seq_jump`: see [`StreamOrder::new`].
    pub max_seq_jump: u64,
    /// `[tracker]`, if enabled: each stream's detections get track ids on their way out.
    pub tracker: Option<TrackerConfig>,
    /// `[streams."ID".analytics]`, by stream.
    pub analytics: HashMap<String, AnalyticsConfig>,
}

/// A frames-stream entry of an accepted frame: `(epoch, seq, entry id)`.
type Unacked = (u64, u64, Arc<str>);

pub(crate) struct SequencerState {
    args: SequencerArgs,
    streams: HashMap<Arc<str>, StreamOrder>,
    /// Frames-stream entries of accepted frames not yet accounted for, per stream, in the
    /// order accepted: `(epoch, seq, entry id)`.
    unacked: HashMap<Arc<str>, VecDeque<Unacked>>,
    /// Entry ids to acknowledge with the message being published (reused).
    acks: Vec<Arc<str>>,
    stats: HashMap<Arc<str>, StreamStats>,
    /// Each stream's tracker (when `[tracker]` is enabled), and its saved state (reused).
    trackers: HashMap<Arc<str>, Tracker>,
    saved_tracker: Vec<u8>,
    /// Each stream's lines and zones, and the events of the message being published.
    analytics: StreamsAnalytics,
    out: Vec<OutputMessage>,
}

pub(crate) struct Sequencer;

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
        let analytics = StreamsAnalytics::new(args.analytics.clone(), args.tracker.is_some());
        Ok(SequencerState {
            args,
            analytics,
            streams: HashMap::new(),
            unacked: HashMap::new(),
            acks: Vec::new(),
            stats: HashMap::new(),
            trackers: HashMap::new(),
            saved_tracker: Vec::new(),
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
            SequencerMsg::Accepted {
                stream,
                seq,
                kept,
                restarted,
                entry,
            } => {
                if !state.streams.contains_key(&stream) {
                    let order = take_over(state, &stream, seq).await;
                    state.streams.insert(stream.clone(), order);
                }
                state.stats.entry(stream.clone()).or_default().accepted();
                let order = state.streams.get_mut(&stream).expect("inserted above");
                let abandoned_before = order.abandoned;
                order.accept(seq, kept, restarted, now, &stream, &mut state.out);
                state
                    .args
                    .stats
                    .abandoned
                    .add(order.abandoned - abandoned_before);
                if let Some(id) = entry {
                    order.read_from_stream = true;
                    let epoch = order.epoch;
                    state
                        .unacked
                        .entry(stream.clone())
                        .or_default()
                        .push_back((epoch, seq, id));
                }
                poll_stream(state, &stream, now).await;
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
                // Counted (and kept in Redis) per stream only for streams already known: a
                // flood of made-up stream names must not grow this map, nor Redis.
                let known = std::str::from_utf8(&channel_stream)
                    .ok()
                    .and_then(|name| state.stats.get_mut(name));
                let is_known = known.is_some();
                if let Some(s) = known {
                    s.error();
                }
                state
                    .args
                    .egress
                    .publish_error(&channel_stream, &error, is_known)
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
                state.trackers.retain(|s, _| streams.contains_key(s));
                state.analytics.retain(|s| streams.contains_key(s));
                state
                    .args
                    .egress
                    .retain_streams(|s| streams.contains_key(s));
                state
                    .unacked
                    .retain(|s, entries| !entries.is_empty() && streams.contains_key(s));
                if state.analytics.refresh_due(now) {
                    refresh_geometry(state).await;
                }
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
            SequencerMsg::Forget(stream) => {
                // Nothing more is published for it: the lease is gone already (lost, or
                // released after the handover's drain, during which results were published as
                // usual). What is still outstanding is the next holder's to account for: over
                // Redis Streams its entries stay pending, and the next holder claims and detects
                // them; over pub/sub they fall in its `missing` gap. Publishing them as `lost`
                // here acknowledged kept frames over Streams (lost for good), and a publish
                // after the release took the free lease back, keeping the next holder out for
                // a whole lease.
                state.streams.remove(&stream);
                state.stats.remove(&stream);
                state.trackers.remove(&stream);
                state.analytics.forget(&stream);
                state.unacked.remove(&stream);
                state.args.egress.retain_streams(|s| *s != *stream);
            }
            SequencerMsg::Streams(reply) => {
                let mut reports: Vec<StreamReport> = state
                    .stats
                    .iter_mut()
                    .map(|(name, s)| {
                        let late = state.streams.get(name).map_or(0, |o| o.late);
                        let mut report = s.report(name, late, now);
                        report.analytics = state.analytics.report(name);
                        report
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
/// left): carry on in its epoch, after the last number it published, with its tracker. Frames
/// between that one and `first` never came out: report them as one gap. A `first` at or before
/// it is a publisher that restarted meanwhile: a new epoch.
async fn take_over(state: &mut SequencerState, stream: &Arc<str>, first: u64) -> StreamOrder {
    let max_hole = state.args.max_seq_jump;
    let found = state.args.egress.taken_over(stream).await;
    if let Some(cfg) = &state.args.tracker {
        let fresh_ids_from = crate::protocol::now_us();
        let (tracker, why) = Tracker::taken_over(
            cfg,
            found.tracker.as_deref(),
            found.last.is_some(),
            fresh_ids_from,
        );
        if let Some(why) = why {
            warn!(%stream, error = %why, first_id = fresh_ids_from, "the stream's saved tracker is not usable: its tracks start afresh, with ids in a new range so that none repeats");
        }
        state.trackers.insert(stream.clone(), tracker);
    }
    let problem = state
        .analytics
        .take_over(stream, found.analytics.as_deref(), found.geometry);
    if let Some(problem) = problem {
        tell_redis_state(state, stream, problem).await;
    }
    let Some(last) = found.last else {
        return StreamOrder::new(0, max_hole);
    };
    if first <= last.seq {
        return StreamOrder::new(last.epoch + 1, max_hole);
    }
    if first > last.seq + 1 {
        let (seq, count) = (last.seq + 1, first - last.seq - 1);
        warn!(%stream, seq, count, "frames lost while the stream changed source node");
        state.out.push(OutputMessage::Gap(GapMessage {
            stream: stream.to_string(),
            seq,
            count,
            reason: GapReason::Missing,
            detail: Some("not published before the stream's source node changed".into()),
            epoch: last.epoch,
        }));
        state.stats.entry(stream.clone()).or_default();
    }
    StreamOrder::new(last.epoch, max_hole)
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
    let mut tracker = state.trackers.get_mut(stream);
    for mut msg in state.out.drain(..) {
        state.saved_tracker.clear();
        if let Some(t) = tracker.as_deref_mut() {
            track(t, &mut msg);
            t.save(&mut state.saved_tracker);
        }
        state.analytics.analyse(stream, &msg);
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
        // The frames-stream entries this message accounts for: accepted before it, in order.
        state.acks.clear();
        if let Some(entries) = state.unacked.get_mut(stream) {
            let upto = (msg.epoch(), msg.seqs().1);
            while entries.front().is_some_and(|(e, s, _)| (*e, *s) <= upto) {
                let (_, _, id) = entries.pop_front().expect("front exists");
                state.acks.push(id);
            }
        }
        state
            .args
            .egress
            .publish_output(
                stream,
                &msg,
                &state.acks,
                WithResult {
                    tracker: &state.saved_tracker,
                    analytics: &state.analytics.saved,
                    events: &state.analytics.events,
                },
            )
            .await;
    }
}

/// Read the lines and zones set through the admin API for the streams this node sequences, and
/// apply what changed.
async fn refresh_geometry(state: &mut SequencerState) {
    let streams: Vec<Arc<str>> = state.streams.keys().cloned().collect();
    let found = match state.args.egress.geometries(&streams).await {
        Ok(found) => found,
        Err(e) => {
            warn!(error = %e, "could not read the streams' lines and zones from Redis");
            return;
        }
    };
    for (stream, geometry) in streams.iter().zip(found) {
        if let Some(problem) = state.analytics.geometry_read(stream, geometry) {
            tell_redis_state(state, stream, problem).await;
        }
    }
}

/// Something of the stream's in Redis that this node refused: told on its error channel.
async fn tell_redis_state(state: &mut SequencerState, stream: &str, problem: String) {
    state.args.stats.redis_state_refused.inc();
    let error = ErrorMessage::new(stream, None, ErrorCode::RedisState, problem);
    state
        .args
        .egress
        .publish_error(stream.as_bytes(), &error, true)
        .await;
}

/// Give a result's detections their track ids, or move the tracks on over a gap's frames. A
/// message of a new epoch (the publisher's numbering restarted) ends the old epoch's tracks.
fn track(tracker: &mut Tracker, msg: &mut OutputMessage) {
    if msg.epoch() != tracker.epoch() {
        tracker.start_epoch(msg.epoch());
    }
    match msg {
        OutputMessage::Detections(d) => tracker.track(&mut d.detections),
        OutputMessage::Gap(g) => tracker.skip(g.count),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_millis(100);
    /// A frame not flagged KEEP.
    const LIVE: bool = false;
    const TIMEOUT: Duration = Duration::from_secs(10);

    fn detected(seq: u64) -> Outcome {
        Outcome::Detected(DetectionsMessage::without_boxes("s", seq))
    }

    /// Sequence numbers emitted, with gaps as (seq, count, reason).
    fn describe(out: &[OutputMessage]) -> Vec<String> {
        out.iter()
            .map(|m| match m {
                OutputMessage::Detections(d) if d.epoch > 0 => format!("{}/{}", d.epoch, d.seq),
                OutputMessage::Detections(d) => format!("{}", d.seq),
                OutputMessage::Gap(g) if g.epoch > 0 => {
                    format!("gap {}/{}+{} {:?}", g.epoch, g.seq, g.count, g.reason)
                }
                OutputMessage::Gap(g) => format!("gap {}+{} {:?}", g.seq, g.count, g.reason),
            })
            .collect()
    }

    #[test]
    fn reorders_results() {
        let t0 = Instant::now();
        let mut o = StreamOrder::new(0, 300);
        let mut out = vec![];
        for s in 0..4 {
            o.accept(s, LIVE, false, t0, "s", &mut out);
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
        let mut o = StreamOrder::new(0, 300);
        let mut out = vec![];
        for s in 0..3 {
            o.accept(s, LIVE, false, t0, "s", &mut out);
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
        let mut o = StreamOrder::new(0, 300);
        let mut out = vec![];
        for s in 0..4 {
            o.accept(s, LIVE, false, t0, "s", &mut out);
            o.dispatched(s, t0);
        }
        o.complete(3, detected(3), t0);
        o.poll(t0 + WAIT, WAIT, TIMEOUT, "s", &mut out);
        assert_eq!(describe(&out), ["gap 0+3 Lost", "3"]);
    }

    #[test]
    fn queued_frames_are_never_skipped_for_a_later_fast_failure() {
        let t0 = Instant::now();
        let mut o = StreamOrder::new(0, 300);
        let mut out = vec![];
        for s in 0..3 {
            o.accept(s, LIVE, false, t0, "s", &mut out);
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
        let mut o = StreamOrder::new(0, 300);
        let mut out = vec![];
        o.accept(10, LIVE, false, t0, "s", &mut out);
        o.complete(10, detected(10), t0);
        o.poll(t0, WAIT, TIMEOUT, "s", &mut out);
        o.accept(15, LIVE, false, t0, "s", &mut out);
        o.complete(15, detected(15), t0);
        o.poll(t0, WAIT, TIMEOUT, "s", &mut out);
        assert_eq!(describe(&out), ["10"]);
        o.poll(t0 + WAIT, WAIT, TIMEOUT, "s", &mut out);
        assert_eq!(describe(&out), ["10", "gap 11+4 Missing", "15"]);
    }

    #[test]
    fn drops_and_failures_leave_in_order_without_waiting() {
        let t0 = Instant::now();
        let mut o = StreamOrder::new(0, 300);
        let mut out = vec![];
        for s in 0..4 {
            o.accept(s, LIVE, false, t0, "s", &mut out);
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
        let mut o = StreamOrder::new(0, 300);
        let mut out = vec![];
        o.accept(0, LIVE, false, t0, "s", &mut out);
        o.poll(t0 + TIMEOUT * 2, WAIT, TIMEOUT, "s", &mut out);
        assert!(out.is_empty(), "a queued frame is never timed out");
        o.dispatched(0, t0);
        o.poll(t0 + TIMEOUT / 2, WAIT, TIMEOUT, "s", &mut out);
        assert!(out.is_empty());
        o.poll(t0 + TIMEOUT, WAIT, TIMEOUT, "s", &mut out);
        assert_eq!(describe(&out), ["gap 0+1 Lost"]);
    }

    #[test]
    fn a_restarted_numbering_is_a_new_epoch_after_the_old_one_leaves() {
        let t0 = Instant::now();
        let mut o = StreamOrder::new(0, 300);
        let mut out = vec![];
        for s in 5000..5003 {
            o.accept(s, LIVE, false, t0, "s", &mut out);
        }
        o.complete(5000, detected(5000), t0);
        o.complete(5002, detected(5002), t0);
        o.poll(t0, WAIT, TIMEOUT, "s", &mut out);
        assert_eq!(describe(&out), ["5000"]);
        o.accept(2, LIVE, true, t0, "s", &mut out);
        assert_eq!(describe(&out), ["5000", "gap 5001+1 Lost", "5002"]);
        o.complete(2, detected(2), t0);
        o.poll(t0, WAIT, TIMEOUT, "s", &mut out);
        assert_eq!(describe(&out), ["5000", "gap 5001+1 Lost", "5002", "1/2"]);
        // The old epoch's result arriving now is late, not published.
        o.complete(5001, detected(5001), t0);
        assert_eq!(o.late, 1);
    }

    #[test]
    fn results_held_past_a_far_hole_are_abandoned_when_the_numbering_restarts() {
        // Three forged frames 100,000 ahead were believed; the genuine numbering carries on
        // below them and is confirmed as a restart: the forged results are never published.
        let t0 = Instant::now();
        let mut o = StreamOrder::new(0, 300);
        let mut out = vec![];
        for s in [10, 11, 100_010, 100_011, 100_012] {
            o.accept(s, LIVE, false, t0, "s", &mut out);
            o.complete(s, detected(s), t0);
        }
        o.poll(t0, WAIT, TIMEOUT, "s", &mut out);
        assert_eq!(describe(&out), ["10", "11"]);
        o.accept(14, LIVE, true, t0, "s", &mut out);
        o.complete(14, detected(14), t0);
        o.poll(t0 + WAIT * 10, WAIT, TIMEOUT, "s", &mut out);
        assert_eq!(describe(&out), ["10", "11", "1/14"]);
        assert_eq!(o.abandoned, 3);
    }

    #[test]
    fn a_number_before_the_next_due_starts_a_new_epoch() {
        let t0 = Instant::now();
        let mut o = StreamOrder::new(0, 300);
        let mut out = vec![];
        o.accept(5000, LIVE, false, t0, "s", &mut out);
        o.accept(0, LIVE, false, t0, "s", &mut out);
        assert_eq!(describe(&out), ["gap 5000+1 Lost"]);
        o.complete(0, detected(0), t0);
        o.poll(t0, WAIT, TIMEOUT, "s", &mut out);
        assert_eq!(describe(&out), ["gap 5000+1 Lost", "1/0"]);
    }

    #[test]
    fn numbers_never_read_from_a_frames_stream_are_missing_as_trimmed() {
        let t0 = Instant::now();
        let mut o = StreamOrder::new(0, 300);
        o.read_from_stream = true;
        let mut out = vec![];
        for s in [0, 5] {
            o.accept(s, LIVE, false, t0, "s", &mut out);
            o.complete(s, detected(s), t0);
        }
        o.poll(t0 + WAIT, WAIT, TIMEOUT, "s", &mut out);
        assert_eq!(describe(&out), ["0", "gap 1+4 Missing", "5"]);
        let OutputMessage::Gap(g) = &out[1] else {
            unreachable!()
        };
        assert_eq!(g.detail.as_deref(), Some(TRIMMED));
    }

    #[test]
    fn a_frame_sent_again_waits_the_gap_wait_anew() {
        let t0 = Instant::now();
        let mut o = StreamOrder::new(0, 300);
        let mut out = vec![];
        for s in 0..2 {
            o.accept(s, LIVE, false, t0, "s", &mut out);
            o.dispatched(s, t0);
        }
        o.complete(1, detected(1), t0);
        // Sent to a second detector just before the wait ran out: it has a wait of its own.
        o.dispatched(0, t0 + WAIT * 9 / 10);
        o.poll(t0 + WAIT * 3 / 2, WAIT, TIMEOUT, "s", &mut out);
        assert!(out.is_empty(), "{:?}", describe(&out));
        o.complete(0, detected(0), t0 + WAIT * 3 / 2);
        o.poll(t0 + WAIT * 3 / 2, WAIT, TIMEOUT, "s", &mut out);
        assert_eq!(describe(&out), ["0", "1"]);
    }

    #[test]
    fn a_kept_frame_is_waited_for_until_the_frame_timeout_not_given_up_for_the_gap_wait() {
        let t0 = Instant::now();
        let mut o = StreamOrder::new(0, 300);
        let mut out = vec![];
        o.accept(0, true, false, t0, "s", &mut out);
        o.accept(1, LIVE, false, t0, "s", &mut out);
        o.dispatched(0, t0);
        o.dispatched(1, t0);
        o.complete(1, detected(1), t0);
        // Long past the gap wait: a live frame would be `lost` by now; the kept one is waited for.
        o.poll(t0 + WAIT * 5, WAIT, TIMEOUT, "s", &mut out);
        assert!(out.is_empty(), "{:?}", describe(&out));
        o.complete(0, detected(0), t0 + WAIT * 5);
        o.poll(t0 + WAIT * 5, WAIT, TIMEOUT, "s", &mut out);
        assert_eq!(describe(&out), ["0", "1"]);
        // Until the frame timeout: then it is given up, with what came after it.
        o.accept(2, true, false, t0, "s", &mut out);
        o.accept(3, LIVE, false, t0, "s", &mut out);
        o.dispatched(2, t0);
        o.dispatched(3, t0);
        o.complete(3, detected(3), t0);
        o.poll(t0 + TIMEOUT, WAIT, TIMEOUT, "s", &mut out);
        assert_eq!(describe(&out), ["0", "1", "gap 2+1 Lost", "3"]);
    }
}
