//! The dispatcher: hands a source's frames to detectors anywhere in the cluster.
//!
//! Every detector in the cluster-wide `detectors` process group gets `max_in_flight` credits.
//! A frame goes to the detector with the most free credits, so a faster node, which hands its
//! credits back sooner, takes more frames. Frames wait in one queue and leave round robin
//! between streams. A live (droppable) frame waits only while it is fresh ([`live`]; the rule
//! and its reasons are there): a newer
//! frame of its stream arriving past the stream's `queue_depth` makes the oldest stale, and an
//! age limit, where set, drops one that waited too long; either way it is reported `dropped`
//! with the reason. `limits.queue_capacity` bounds the live frames of all streams together
//! (memory); past it the stream with the most waiting loses its oldest, so a flooding stream
//! loses its own frames, not others'. Frames marked `keep` are never dropped, bounded instead
//! by the source.
//!
//! When a detector leaves the group (it crashed, its pool shrank, or its node went away) the
//! frames it held are sent again, once; a frame whose second detector is lost too is reported
//! `failed`. A frame with no result after `frame_timeout` is given up (the sequencer has
//! reported it `lost` by then) so a silent peer cannot hold credits for ever.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::pg::GroupChangeMessage;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use tracing::{debug, info, warn};

use crate::config::live::{self, LiveConfig};
use crate::node_stats::Stats;
use crate::pipeline::messages::{DetectRequest, DetectResult, DetectorMsg, Finished};
pub(crate) use crate::pipeline::messages::{DispatchMsg, DispatchStatus, Job};
use crate::pipeline::sequencer::{Outcome, SequencerMsg};
use crate::protocol::{ErrorCode, ErrorMessage, GapReason};

pub(crate) struct DispatchArgs {
    pub node: Arc<str>,
    pub scope: String,
    pub max_in_flight: usize,
    pub queue_capacity: usize,
    /// How long each stream's live frames may wait (`[live]`).
    pub live: LiveConfig,
    pub frame_timeout: Duration,
    /// `limits.max_attempts`: detectors a frame is sent to in turn before it is given up.
    pub max_attempts: u8,
    /// The sequencer's gap wait: a silent detector's kept frame is sent again well within it.
    pub gap_wait: Duration,
    /// `limits.resend_after_ms`; `None` (0): worked out from the detection time.
    pub resend_after: Option<Duration>,
    pub sequencer: ActorRef<SequencerMsg>,
    pub stats: Arc<Stats>,
}

struct Target {
    actor: ActorRef<DetectorMsg>,
    /// Frames it holds.
    held: usize,
}

struct Waiting {
    job: Job,
    attempts: u8,
    /// The node of the detector that left holding it: another node's detector is tried first
    /// (its node's other detectors may be gone too, not yet heard of).
    avoid_node: Option<u64>,
}

impl Waiting {
    /// A frame not yet sent to any detector.
    fn new(job: Job) -> Self {
        Self {
            job,
            attempts: 0,
            avoid_node: None,
        }
    }
}

struct InFlight {
    job: Job,
    attempts: u8,
    detector: ActorId,
    since: Instant,
    /// A kept frame sent again to a second detector because the first stayed silent: the
    /// first result wins.
    resent_to: Option<ActorId>,
}

pub(crate) struct DispatchState {
    args: DispatchArgs,
    /// Detectors in the group, in the order they joined.
    targets: Vec<Target>,
    queue: VecDeque<Waiting>,
    in_flight: HashMap<(Arc<str>, u64), InFlight>,
    /// Where the search for a free detector starts, so ties rotate.
    next: usize,
    /// Droppable frames waiting per stream, counted when the queue is full (reused).
    counts: HashMap<Arc<str>, usize>,
    /// When each stream last had a frame dispatched (a count of dispatches): frames go out
    /// round robin between streams, not first come first served.
    served: HashMap<Arc<str>, u64>,
    dispatches: u64,
    /// Time at a detector per frame, a running average: how long a live frame may wait once a
    /// newer one of its stream is behind it.
    detect_time: Option<Duration>,
    /// Waiting for the dispatcher to hold no frame.
    drained: Vec<RpcReplyPort<()>>,
    /// Whether any stream has an age limit (`live.max_wait_ms`); worked out once.
    age_limited: bool,
}

/// Round robin between streams: the first waiting frame of the stream served least recently
/// (a stream never served, or not lately, first). A flood cannot make a camera's frames wait
/// behind its own, and each stream's frames still leave in order.
fn fair_next(queue: &VecDeque<Waiting>, served: &HashMap<Arc<str>, u64>) -> Option<usize> {
    let mut best: Option<(usize, u64)> = None;
    for (i, w) in queue.iter().enumerate() {
        let at = served.get(&w.job.stream).copied().unwrap_or(0);
        if best.is_none_or(|(_, b)| at < b) {
            best = Some((i, at));
            if at == 0 {
                break;
            }
        }
    }
    best.map(|(i, _)| i)
}

/// Which frame goes when the queue is full and `incoming` arrives.
#[derive(Debug, PartialEq, Eq)]
enum Victim {
    Queued(usize),
    Incoming,
    None,
}

/// Fair share under overload: the stream with the most droppable frames waiting (counting
/// `incoming`) loses its oldest, so a flooding stream loses its own frames, not others'. Among
/// streams with as many, the one whose oldest frame is oldest. Kept frames are never chosen.
fn fair_victim(
    queue: &VecDeque<Waiting>,
    incoming: &Job,
    counts: &mut HashMap<Arc<str>, usize>,
) -> Victim {
    counts.clear();
    let droppable = queue
        .iter()
        .map(|w| &w.job)
        .chain(std::iter::once(incoming))
        .filter(|j| !j.keep);
    for job in droppable {
        *counts.entry(job.stream.clone()).or_default() += 1;
    }
    let Some(most) = counts.values().copied().max() else {
        return Victim::None;
    };
    // The first droppable frame, oldest first, of a stream with `most` frames.
    match queue
        .iter()
        .position(|w| !w.job.keep && counts.get(&w.job.stream) == Some(&most))
    {
        Some(i) => Victim::Queued(i),
        None => Victim::Incoming,
    }
}

/// The waiting frame that a new live frame of `stream` makes stale (see [`live`]): the
/// stream's oldest live frame, once `depth` of them are waiting already, or once it has waited
/// `stale_after` (about one inference: a detector would finish the newer frame as soon).
fn superseded(
    queue: &VecDeque<Waiting>,
    stream: &str,
    depth: usize,
    now: Instant,
    stale_after: Option<Duration>,
) -> Option<usize> {
    let mut oldest = None;
    let mut waiting = 0;
    for (i, w) in queue.iter().enumerate() {
        if !w.job.keep && *w.job.stream == *stream {
            waiting += 1;
            oldest.get_or_insert(i);
        }
    }
    let i = oldest?;
    let waited = now.saturating_duration_since(queue[i].job.accepted_at);
    (waiting >= depth || stale_after.is_some_and(|t| waited >= t)).then_some(i)
}

pub(crate) struct Dispatcher;

impl Actor for Dispatcher {
    type Msg = DispatchMsg;
    type State = DispatchState;
    type Arguments = DispatchArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: DispatchArgs,
    ) -> Result<DispatchState, ActorProcessingErr> {
        // Detectors reply to the dispatcher their frame names; this group is how they find it.
        ractor::pg::join_scoped(
            args.scope.clone(),
            super::dispatcher_group(&args.node),
            vec![myself.get_cell()],
        );
        ractor::pg::monitor_scope(args.scope.clone(), myself.get_cell());
        // Often enough to time out frames, and to send a silent detector's kept frame again
        // well within the gap wait.
        let period = (args.frame_timeout / 4)
            .min(args.gap_wait / 8)
            .clamp(Duration::from_millis(20), Duration::from_secs(1));
        myself.send_interval(period, || DispatchMsg::Tick);
        let mut state = DispatchState::new(args);
        let members =
            ractor::pg::get_scoped_members(&state.args.scope, &super::DETECTORS.to_string());
        state.join(members);
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: DispatchMsg,
        state: &mut DispatchState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            DispatchMsg::Submit(job) => {
                state.enqueue(Waiting::new(job));
                state.dispatch();
            }
            DispatchMsg::Finished(finished) => {
                state.finish(finished);
                state.dispatch();
            }
            DispatchMsg::Tick => {
                let now = Instant::now();
                state.expire(now);
                state.resend_silent(now);
                state.dispatch();
            }
            DispatchMsg::Status(reply) => {
                let _ = reply.send(state.status());
            }
            DispatchMsg::Drained(reply) => state.drained.push(reply),
            DispatchMsg::Malformed(why) => {
                warn!(%why, "malformed message from a peer ignored");
                state.args.stats.malformed.inc();
            }
        }
        if state.queue.is_empty() && state.in_flight.is_empty() {
            for reply in state.drained.drain(..) {
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut DispatchState,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ProcessGroupChanged(change) = event {
            if change.get_group() != super::DETECTORS {
                return Ok(());
            }
            match change {
                GroupChangeMessage::Join(_, _, cells) => state.join(cells),
                GroupChangeMessage::Leave(_, _, cells) => {
                    for cell in cells {
                        state.leave(cell.get_id());
                    }
                }
            }
            state.dispatch();
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut DispatchState,
    ) -> Result<(), ActorProcessingErr> {
        ractor::pg::demonitor_scope(state.args.scope.clone(), myself.get_id());
        Ok(())
    }
}

impl DispatchState {
    fn new(args: DispatchArgs) -> Self {
        DispatchState {
            queue: VecDeque::with_capacity(args.queue_capacity),
            served: HashMap::new(),
            dispatches: 0,
            detect_time: None,
            drained: Vec::new(),
            age_limited: args.live.any_age_limit(),
            args,
            targets: Vec::new(),
            in_flight: HashMap::new(),
            next: 0,
            counts: HashMap::new(),
        }
    }

    fn join(&mut self, cells: Vec<ActorCell>) {
        for cell in cells {
            if self
                .targets
                .iter()
                .any(|t| t.actor.get_id() == cell.get_id())
            {
                continue;
            }
            debug!(detector = %cell.get_id(), "detector joined");
            self.targets.push(Target {
                actor: ActorRef::from(cell),
                held: 0,
            });
        }
        self.args
            .stats
            .cluster_detectors
            .set(self.targets.len() as u64);
    }

    /// A detector is gone: send what it held again (once), or report it failed.
    fn leave(&mut self, id: ActorId) {
        let Some(i) = self.targets.iter().position(|t| t.actor.get_id() == id) else {
            return;
        };
        let target = self.targets.remove(i);
        self.args
            .stats
            .cluster_detectors
            .set(self.targets.len() as u64);
        if target.held == 0 {
            debug!(detector = %id, "detector left");
            return;
        }
        // A frame sent to a second detector too stays with the one still there.
        for f in self.in_flight.values_mut() {
            if f.resent_to == Some(id) {
                f.resent_to = None;
            } else if f.detector == id {
                if let Some(other) = f.resent_to.take() {
                    f.detector = other;
                }
            }
        }
        let lost: Vec<(Arc<str>, u64)> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.detector == id)
            .map(|(k, _)| k.clone())
            .collect();
        info!(detector = %id, frames = lost.len(), "detector left holding frames; sending them again");
        // Oldest first, at the front: they have waited longest.
        let mut lost: Vec<InFlight> = lost
            .iter()
            .filter_map(|k| self.in_flight.remove(k))
            .collect();
        lost.sort_by_key(|f| std::cmp::Reverse(f.job.frame.seq));
        let max = self.args.max_attempts;
        for f in lost {
            if f.attempts >= max {
                self.report_gap(
                    &f.job.stream,
                    f.job.frame.seq,
                    GapReason::Failed,
                    format!("lost with {max} detectors in turn (limits.max_attempts)"),
                );
            } else {
                self.args.stats.redispatched.inc();
                self.queue.push_front(Waiting {
                    job: f.job,
                    attempts: f.attempts,
                    avoid_node: Some(id.node()),
                });
            }
        }
    }

    fn finish(&mut self, finished: Finished) {
        let key = (Arc::<str>::from(finished.stream.as_str()), finished.seq);
        let Some(f) = self.in_flight.remove(&key) else {
            // Sent again after its detector was thought lost, and the first answer came after
            // all; or given up after the frame timeout. The frame is already accounted for.
            debug!(stream = %key.0, seq = key.1, node = %finished.node, "late result ignored");
            self.args.stats.late_results.inc();
            return;
        };
        // Which of two detectors answered is not known: both are counted free again (the
        // other one's late answer is ignored), so a frozen detector costs at most one more
        // frame, itself sent again in turn.
        for t in self.targets.iter_mut().filter(|t| {
            let id = t.actor.get_id();
            id == f.detector || Some(id) == f.resent_to
        }) {
            t.held = t.held.saturating_sub(1);
        }
        let stream = f.job.stream;
        let outcome = match finished.result {
            DetectResult::Detected(mut d) => {
                // Measured here, on one clock, whatever the detector's node says.
                let ms = |d: Duration| (d.as_secs_f64() * 10_000.0).round() / 10.0;
                d.queued_ms = Some(ms(f.since.saturating_duration_since(f.job.accepted_at)));
                let took = f.since.elapsed();
                d.detect_ms = Some(ms(took));
                // A running average over about the last eight frames.
                self.detect_time = Some(match self.detect_time {
                    Some(avg) => (avg * 7 + took) / 8,
                    None => took,
                });
                Outcome::Detected(d)
            }
            DetectResult::Failed { code, message } => {
                let error = ErrorMessage::with_code(&stream, Some(key.1), &code, message.clone());
                let _ = self.args.sequencer.cast(SequencerMsg::Error {
                    channel_stream: stream.as_bytes().to_vec(),
                    error,
                });
                Outcome::Gap {
                    reason: GapReason::Failed,
                    detail: Some(message),
                }
            }
        };
        let _ = self.args.sequencer.cast(SequencerMsg::Completed {
            stream,
            seq: key.1,
            outcome,
        });
        // f.job.permit drops here: a kept frame's place is free again.
    }

    fn expire(&mut self, now: Instant) {
        let timeout = self.args.frame_timeout;
        let expired: Vec<(Arc<str>, u64)> = self
            .in_flight
            .iter()
            .filter(|(_, f)| now.duration_since(f.since) >= timeout)
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            let f = self.in_flight.remove(&key).expect("listed above");
            if let Some(t) = self
                .targets
                .iter_mut()
                .find(|t| t.actor.get_id() == f.detector)
            {
                t.held = t.held.saturating_sub(1);
            }
            warn!(stream = %key.0, seq = key.1, detector = %f.detector, "no result within the frame timeout");
            self.report_gap(
                &key.0,
                key.1,
                GapReason::Lost,
                "no result within the frame timeout".into(),
            );
        }
    }

    /// How long a kept frame may stay at a detector without an answer before a second detector
    /// gets it too: `limits.resend_after_ms`, or (0) three running-average detection times,
    /// at least 100 ms; never more than half the gap wait, so the copy's result comes before
    /// the sequencer gives the frame up as lost.
    fn resend_after(&self) -> Duration {
        let half_gap = self.args.gap_wait / 2;
        let wait = match (self.args.resend_after, self.detect_time) {
            (Some(fixed), _) => fixed,
            (None, Some(avg)) => (avg * 3).max(Duration::from_millis(100)),
            (None, None) => half_gap,
        };
        wait.min(half_gap)
    }

    /// Send each kept frame whose detector has been silent too long to another detector with
    /// room (once): a frozen or cut-off detector node then costs no kept frame. Live frames are
    /// not sent again: a newer frame of their stream is on its way.
    fn resend_silent(&mut self, now: Instant) {
        let after = self.resend_after();
        let limit = self.args.max_in_flight;
        let mut silent: Vec<(Arc<str>, u64)> = self
            .in_flight
            .iter()
            .filter(|(_, f)| {
                f.job.keep && f.resent_to.is_none() && now.duration_since(f.since) >= after
            })
            .map(|(k, _)| k.clone())
            .collect();
        silent.sort_by_key(|(_, seq)| *seq);
        for key in silent {
            let f = self.in_flight.get_mut(&key).expect("listed above");
            // A detector on another node first: when a node freezes, all its detectors fall
            // silent together, and a copy sent to its neighbour would be lost with it. A copy
            // may go one over a detector's limit: it must not wait for a free credit, which
            // the queue takes first (after a takeover, a backlog fills every credit as soon as
            // it frees, and the kept frame was given up as lost before a copy could go).
            let silent_node = f.detector.node();
            let Some(target) = self
                .targets
                .iter_mut()
                .filter(|t| t.actor.get_id() != f.detector && t.held <= limit)
                .min_by_key(|t| (t.actor.get_id().node() == silent_node, t.held))
            else {
                return; // every other detector one over its limit: the next tick tries again
            };
            let request = DetectRequest {
                origin: self.args.node.clone(),
                stream: f.job.stream.clone(),
                seq: f.job.frame.seq,
                capture_ts_us: f.job.frame.capture_ts_us,
                jpeg: f.job.frame.jpeg.clone(),
            };
            if target.actor.cast(DetectorMsg::Detect(request)).is_ok() {
                target.held += 1;
                f.resent_to = Some(target.actor.get_id());
                let _ = self.args.sequencer.cast(SequencerMsg::Dispatched {
                    stream: key.0.clone(),
                    seq: key.1,
                });
                self.args.stats.resent.inc();
                debug!(stream = %key.0, seq = key.1, "silent detector: kept frame sent to another one too");
            }
        }
    }

    fn status(&self) -> DispatchStatus {
        DispatchStatus {
            detectors: self.targets.len(),
            in_flight: self.in_flight.len(),
            queued: self.queue.len(),
        }
    }

    /// Queue a frame. A live one first makes its stream's oldest waiting live frame stale if
    /// the stream has its `queue_depth` waiting already. Then, when the queue is full, drop a
    /// droppable frame of the stream with the most waiting (its oldest, or this one). Only
    /// droppable frames count against `queue_capacity`: kept ones are bounded by the source's
    /// places (`limits.max_kept_frames`), and a kept flood filling the queue must not make
    /// every live camera's frame the one dropped.
    fn enqueue(&mut self, waiting: Waiting) {
        if !waiting.job.keep {
            let depth = self.args.live.policy(&waiting.job.stream).queue_depth;
            let now = Instant::now();
            while let Some(i) = superseded(
                &self.queue,
                &waiting.job.stream,
                depth,
                now,
                self.detect_time,
            ) {
                let old = self.queue.remove(i).expect("index from superseded");
                self.args.stats.superseded.inc();
                self.report_gap(
                    &old.job.stream,
                    old.job.frame.seq,
                    GapReason::Dropped,
                    live::SUPERSEDED.into(),
                );
            }
        }
        let full = !waiting.job.keep
            && self.queue.len() >= self.args.queue_capacity
            && self.queue.iter().filter(|w| !w.job.keep).count() >= self.args.queue_capacity;
        if full {
            match fair_victim(&self.queue, &waiting.job, &mut self.counts) {
                Victim::Queued(i) => {
                    let old = self.queue.remove(i).expect("index from fair_victim");
                    self.report_gap(
                        &old.job.stream,
                        old.job.frame.seq,
                        GapReason::Dropped,
                        String::new(),
                    );
                }
                Victim::Incoming => {
                    self.report_gap(
                        &waiting.job.stream,
                        waiting.job.frame.seq,
                        GapReason::Dropped,
                        String::new(),
                    );
                    return;
                }
                // Not reached: the incoming frame is droppable itself.
                Victim::None => {}
            }
        }
        self.queue.push_back(waiting);
    }

    /// Drop live frames that have waited past their stream's age limit (`live.max_wait_ms`).
    fn drop_too_old(&mut self, now: Instant) {
        if !self.age_limited {
            return;
        }
        let mut i = 0;
        while i < self.queue.len() {
            let job = &self.queue[i].job;
            let policy = self.args.live.policy(&job.stream);
            let waited = now.saturating_duration_since(job.accepted_at);
            if job.keep || !policy.too_old(waited) {
                i += 1;
                continue;
            }
            let old = self.queue.remove(i).expect("index in range");
            self.args.stats.too_old.inc();
            self.report_gap(
                &old.job.stream,
                old.job.frame.seq,
                GapReason::Dropped,
                live::too_old_detail(waited, &policy),
            );
        }
    }

    /// Hand waiting frames to detectors with free credits, least loaded first.
    fn dispatch(&mut self) {
        self.dispatch_waiting();
        let stats = &self.args.stats;
        stats.dispatch_in_flight.set(self.in_flight.len() as u64);
        stats.dispatch_queued.set(self.queue.len() as u64);
    }

    fn dispatch_waiting(&mut self) {
        // Frames past their age limit are not worth a detector's time.
        self.drop_too_old(Instant::now());
        while !self.queue.is_empty() {
            let n = self.targets.len();
            let limit = self.args.max_in_flight;
            let at = fair_next(&self.queue, &self.served).expect("queue not empty");
            let avoid = self.queue[at].avoid_node;
            // The least busy detector with room, on another node than `avoid` if one has room.
            let free = (0..n)
                .map(|k| (self.next + k) % n)
                .filter(|&i| self.targets[i].held < limit)
                .min_by_key(|&i| {
                    let same_node = avoid == Some(self.targets[i].actor.get_id().node());
                    (same_node, self.targets[i].held)
                });
            let Some(i) = free else { return };
            self.next = (i + 1) % n;
            let Waiting { job, attempts, .. } =
                self.queue.remove(at).expect("index from fair_next");
            self.dispatches += 1;
            if self.served.len() > 4 * self.queue.len() + 64 {
                // Forget streams with nothing waiting: they come first again, as new ones do.
                let waiting: std::collections::HashSet<&Arc<str>> =
                    self.queue.iter().map(|w| &w.job.stream).collect();
                self.served.retain(|s, _| waiting.contains(s));
            }
            self.served.insert(job.stream.clone(), self.dispatches);
            let request = DetectRequest {
                origin: self.args.node.clone(),
                stream: job.stream.clone(),
                seq: job.frame.seq,
                capture_ts_us: job.frame.capture_ts_us,
                jpeg: job.frame.jpeg.clone(),
            };
            let target = &mut self.targets[i];
            match target.actor.cast(DetectorMsg::Detect(request)) {
                Ok(()) => {
                    target.held += 1;
                    let key = (job.stream.clone(), job.frame.seq);
                    let _ = self.args.sequencer.cast(SequencerMsg::Dispatched {
                        stream: key.0.clone(),
                        seq: key.1,
                    });
                    self.in_flight.insert(
                        key,
                        InFlight {
                            job,
                            attempts: attempts + 1,
                            detector: target.actor.get_id(),
                            since: Instant::now(),
                            resent_to: None,
                        },
                    );
                }
                Err(_) => {
                    // It stopped between leaving and our hearing of it: forget it, try another.
                    let id = target.actor.get_id();
                    self.queue.push_front(Waiting {
                        job,
                        attempts,
                        avoid_node: Some(id.node()),
                    });
                    self.leave(id);
                }
            }
        }
    }

    fn report_gap(&self, stream: &Arc<str>, seq: u64, reason: GapReason, detail: String) {
        let sequencer = &self.args.sequencer;
        if reason == GapReason::Failed {
            let error =
                ErrorMessage::new(stream, Some(seq), ErrorCode::DetectorFailed, detail.clone());
            let _ = sequencer.cast(SequencerMsg::Error {
                channel_stream: stream.as_bytes().to_vec(),
                error,
            });
        }
        let detail = (!detail.is_empty()).then_some(detail);
        let _ = sequencer.cast(SequencerMsg::Completed {
            stream: stream.clone(),
            seq,
            outcome: Outcome::Gap { reason, detail },
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Frame;
    use bytes::Bytes;

    fn job(stream: &str, seq: u64, keep: bool) -> Job {
        Job {
            stream: Arc::from(stream),
            frame: Frame {
                stream: stream.into(),
                seq,
                capture_ts_us: 0,
                flags: 0,
                jpeg: Bytes::new(),
            },
            keep,
            permit: None,
            accepted_at: Instant::now(),
        }
    }

    fn queue(jobs: Vec<Job>) -> VecDeque<Waiting> {
        jobs.into_iter().map(Waiting::new).collect()
    }

    #[test]
    fn frames_go_out_round_robin_between_streams_in_order_within_each() {
        let q = queue(vec![
            job("flood", 1, true),
            job("flood", 2, true),
            job("flood", 3, true),
            job("cam", 7, false),
            job("cam", 8, false),
        ]);
        let mut served = HashMap::new();
        assert_eq!(
            fair_next(&q, &served),
            Some(0),
            "nobody served yet: the oldest"
        );
        served.insert(Arc::from("flood"), 1);
        assert_eq!(
            fair_next(&q, &served),
            Some(3),
            "cam's first frame, not flood's second"
        );
        served.insert(Arc::from("cam"), 2);
        assert_eq!(fair_next(&q, &served), Some(0));
        assert_eq!(fair_next(&VecDeque::new(), &served), None);
    }

    #[test]
    fn a_flooding_stream_loses_its_own_frames() {
        let mut counts = HashMap::new();
        // cam's frame is the oldest, but flood has the most waiting: flood's oldest goes.
        let q = queue(vec![
            job("cam", 1, false),
            job("flood", 1, false),
            job("flood", 2, false),
        ]);
        assert_eq!(
            fair_victim(&q, &job("flood", 3, false), &mut counts),
            Victim::Queued(1)
        );
        // cam with its new frame has as many as flood: equal shares, the oldest frame goes.
        assert_eq!(
            fair_victim(&q, &job("cam", 2, false), &mut counts),
            Victim::Queued(0)
        );
        // The incoming frame's stream has the most, and none of it is queued droppable.
        let q = queue(vec![job("a", 1, true), job("b", 1, false)]);
        assert_eq!(
            fair_victim(&q, &job("a", 2, false), &mut counts),
            Victim::Queued(1),
            "a tie goes to the oldest frame"
        );
        let q = queue(vec![job("a", 1, true), job("a", 2, true)]);
        assert_eq!(
            fair_victim(&q, &job("b", 1, false), &mut counts),
            Victim::Incoming
        );
        assert_eq!(
            fair_victim(&q, &job("a", 3, true), &mut counts),
            Victim::None,
            "kept frames are never dropped"
        );
    }

    #[test]
    fn a_new_live_frame_makes_its_own_streams_oldest_stale_past_the_depth() {
        let q = queue(vec![
            job("cam", 1, false),
            job("other", 1, false),
            job("cam", 2, true),
            job("cam", 3, false),
        ]);
        let now = Instant::now();
        // Two live frames of cam wait (the kept one does not count): depth 1 and 2 are full.
        assert_eq!(superseded(&q, "cam", 1, now, None), Some(0));
        assert_eq!(superseded(&q, "cam", 2, now, None), Some(0));
        assert_eq!(
            superseded(&q, "cam", 3, now, None),
            None,
            "room for a third"
        );
        // Another stream's waiting frames never make room for this one.
        assert_eq!(superseded(&q, "other", 2, now, None), None);
        assert_eq!(superseded(&q, "new", 1, now, None), None);
        let kept_only = queue(vec![job("cam", 1, true), job("cam", 2, true)]);
        assert_eq!(
            superseded(&kept_only, "cam", 1, now, None),
            None,
            "kept frames are never stale"
        );
        // Room in the depth, but the oldest has waited as long as an inference takes.
        let later = now + Duration::from_millis(50);
        let took = Some(Duration::from_millis(40));
        assert_eq!(superseded(&q, "cam", 3, later, took), Some(0));
        assert_eq!(
            superseded(&q, "cam", 3, now, took),
            None,
            "fresh enough to wait"
        );
    }

    /// An actor that hands every message it gets to a channel: a real detector or sequencer
    /// stand-in for the dispatcher's own logic, with a real ractor runtime behind it.
    struct Probe<M>(std::marker::PhantomData<fn() -> M>);

    impl<M: ractor::Message> Actor for Probe<M> {
        type Msg = M;
        type State = tokio::sync::mpsc::UnboundedSender<M>;
        type Arguments = tokio::sync::mpsc::UnboundedSender<M>;

        async fn pre_start(
            &self,
            _myself: ActorRef<M>,
            tx: Self::Arguments,
        ) -> Result<Self::State, ActorProcessingErr> {
            Ok(tx)
        }

        async fn handle(
            &self,
            _myself: ActorRef<M>,
            msg: M,
            tx: &mut Self::State,
        ) -> Result<(), ActorProcessingErr> {
            let _ = tx.send(msg);
            Ok(())
        }
    }

    async fn probe<M: ractor::Message>() -> (ActorRef<M>, tokio::sync::mpsc::UnboundedReceiver<M>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (actor, _) = Actor::spawn(None, Probe::<M>(std::marker::PhantomData), tx)
            .await
            .unwrap();
        (actor, rx)
    }

    /// A dispatcher's state with `detectors` probe detectors and a probe sequencer.
    async fn state_with(
        detectors: usize,
    ) -> (
        DispatchState,
        Vec<tokio::sync::mpsc::UnboundedReceiver<DetectorMsg>>,
        tokio::sync::mpsc::UnboundedReceiver<SequencerMsg>,
    ) {
        let (sequencer, seq_rx) = probe::<SequencerMsg>().await;
        let mut cells = Vec::new();
        let mut rxs = Vec::new();
        for _ in 0..detectors {
            let (d, rx) = probe::<DetectorMsg>().await;
            cells.push(d.get_cell());
            rxs.push(rx);
        }
        let mut state = DispatchState::new(DispatchArgs {
            node: Arc::from("n1"),
            scope: "test".into(),
            max_in_flight: 1,
            queue_capacity: 8,
            live: LiveConfig::default(),
            frame_timeout: Duration::from_secs(30),
            max_attempts: 2,
            gap_wait: Duration::from_secs(1),
            resend_after: None,
            sequencer,
            stats: Arc::new(Stats::default()),
        });
        state.join(cells);
        (state, rxs, seq_rx)
    }

    /// The next message a probe got, or none within a second.
    async fn next<M>(rx: &mut tokio::sync::mpsc::UnboundedReceiver<M>) -> Option<M> {
        tokio::time::timeout(Duration::from_secs(1), rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// Drop the sequencer's `Dispatched` notes; the next other message.
    async fn next_outcome(
        rx: &mut tokio::sync::mpsc::UnboundedReceiver<SequencerMsg>,
    ) -> SequencerMsg {
        loop {
            match next(rx).await.expect("a message for the sequencer") {
                SequencerMsg::Dispatched { .. } => continue,
                other => return other,
            }
        }
    }

    fn detected(seq: u64) -> Finished {
        Finished {
            stream: "cam".into(),
            seq,
            node: "n2".into(),
            result: DetectResult::Detected(crate::protocol::DetectionsMessage::without_boxes(
                "cam", seq,
            )),
        }
    }

    #[tokio::test]
    async fn a_finished_frame_frees_its_credit_and_goes_to_the_sequencer_timed() {
        let (mut state, mut detectors, mut sequencer) = state_with(1).await;
        state.enqueue(Waiting::new(job("cam", 1, true)));
        state.enqueue(Waiting::new(job("cam", 2, true)));
        state.dispatch();
        assert_eq!(
            (state.in_flight.len(), state.queue.len()),
            (1, 1),
            "one credit"
        );
        assert!(
            matches!(next(&mut detectors[0]).await, Some(DetectorMsg::Detect(r)) if r.seq == 1)
        );
        state.finish(detected(1));
        state.dispatch();
        match next_outcome(&mut sequencer).await {
            SequencerMsg::Completed {
                seq: 1,
                outcome: Outcome::Detected(d),
                ..
            } => {
                assert!(
                    d.queued_ms.is_some() && d.detect_ms.is_some(),
                    "timed by the dispatcher"
                );
            }
            _ => panic!("frame 1 detected"),
        }
        assert!(
            matches!(next(&mut detectors[0]).await, Some(DetectorMsg::Detect(r)) if r.seq == 2)
        );
        // A second answer for frame 1 (a detector thought lost, after all) changes nothing.
        state.finish(detected(1));
        assert_eq!(state.args.stats.late_results.get(), 1);
        assert_eq!(state.in_flight.len(), 1);
    }

    /// A kept frame at a silent detector goes to a second one after the resend wait; the first
    /// answer is the frame's result, the other is ignored and counted; live frames are never
    /// sent again.
    #[tokio::test]
    async fn a_kept_frame_at_a_silent_detector_is_sent_to_another_and_the_first_answer_wins() {
        let (mut state, mut detectors, mut sequencer) = state_with(2).await;
        state.args.resend_after = Some(Duration::from_millis(200));
        state.enqueue(Waiting::new(job("cam", 7, true)));
        state.enqueue(Waiting::new(job("live", 3, false)));
        state.dispatch();
        assert_eq!(state.in_flight.len(), 2);
        let t0 = state.in_flight.values().map(|f| f.since).min().unwrap();
        let silent = state.in_flight[&(Arc::from("cam"), 7)].detector;
        let (silent_i, other_i) = if silent == state.targets[0].actor.get_id() {
            (0, 1)
        } else {
            (1, 0)
        };
        // Each detector has one frame, its limit: the copy goes one over it rather than wait
        // for a credit that queued frames would take first.
        state.resend_silent(t0 + Duration::from_millis(100));
        assert_eq!(state.args.stats.resent.get(), 0, "not before the wait");
        state.resend_silent(t0 + Duration::from_millis(500));
        assert_eq!(state.args.stats.resent.get(), 1);
        assert_eq!(state.targets[other_i].held, 2, "one over its limit");
        state.finish(Finished {
            result: detected(3).result,
            stream: "live".into(),
            ..detected(3)
        });
        let mut got = vec![];
        while let Some(DetectorMsg::Detect(r)) = next(&mut detectors[other_i]).await {
            got.push((r.stream.to_string(), r.seq));
        }
        assert!(got.contains(&("cam".to_string(), 7)), "{got:?}");
        // Sent once only, and never the live frame.
        state.resend_silent(t0 + Duration::from_millis(900));
        assert_eq!(state.args.stats.resent.get(), 1);
        assert!(
            next(&mut detectors[silent_i]).await.is_some(),
            "the first send"
        );

        // The copy answers first: that is the result; the silent one's later answer is late.
        state.finish(detected(7));
        state.finish(detected(7));
        assert_eq!(state.args.stats.late_results.get(), 1);
        assert!(state.in_flight.is_empty());
        assert!(state.targets.iter().all(|t| t.held == 0));
        let mut completed = vec![];
        while let Some(msg) = next(&mut sequencer).await {
            if let SequencerMsg::Completed { stream, seq, .. } = msg {
                completed.push((stream.to_string(), seq));
            }
        }
        assert_eq!(completed, [("live".to_string(), 3), ("cam".to_string(), 7)]);
    }

    #[tokio::test]
    async fn a_detector_that_leaves_has_its_frame_sent_again_once_then_reported_failed() {
        let (mut state, mut detectors, mut sequencer) = state_with(2).await;
        state.enqueue(Waiting::new(job("cam", 7, true)));
        state.dispatch();
        let first = state.in_flight.values().next().unwrap().detector;
        let (gone, other) = if first == state.targets[0].actor.get_id() {
            (0, 1)
        } else {
            (1, 0)
        };
        assert!(next(&mut detectors[gone]).await.is_some());
        state.leave(first);
        state.dispatch();
        assert_eq!(state.args.stats.redispatched.get(), 1);
        assert!(
            matches!(next(&mut detectors[other]).await, Some(DetectorMsg::Detect(r)) if r.seq == 7),
            "sent again to the other detector"
        );
        let second = state.in_flight.values().next().unwrap().detector;
        state.leave(second);
        assert!(state.in_flight.is_empty() && state.queue.is_empty());
        // Lost with two detectors in turn: an error for the stream, then the frame's gap.
        assert!(matches!(
            next_outcome(&mut sequencer).await,
            SequencerMsg::Error { .. }
        ));
        assert!(matches!(
            next_outcome(&mut sequencer).await,
            SequencerMsg::Completed {
                seq: 7,
                outcome: Outcome::Gap {
                    reason: GapReason::Failed,
                    ..
                },
                ..
            }
        ));
    }

    #[tokio::test]
    async fn a_frame_past_the_frame_timeout_is_reported_lost_and_its_credit_freed() {
        let (mut state, _detectors, mut sequencer) = state_with(1).await;
        state.enqueue(Waiting::new(job("cam", 3, false)));
        state.dispatch();
        let since = state.in_flight.values().next().unwrap().since;
        state.expire(since + Duration::from_secs(29));
        assert_eq!(state.in_flight.len(), 1, "not yet");
        state.expire(since + Duration::from_secs(30));
        assert!(state.in_flight.is_empty());
        assert_eq!(state.targets[0].held, 0, "its credit is free again");
        assert!(matches!(
            next_outcome(&mut sequencer).await,
            SequencerMsg::Completed {
                seq: 3,
                outcome: Outcome::Gap {
                    reason: GapReason::Lost,
                    ..
                },
                ..
            }
        ));
    }

    #[tokio::test]
    async fn a_newer_live_frame_supersedes_the_waiting_one_with_the_reason() {
        let (mut state, _detectors, mut sequencer) = state_with(1).await;
        state.args.live.queue_depth = 1;
        for seq in 1..=3 {
            state.enqueue(Waiting::new(job("cam", seq, false)));
            state.dispatch();
        }
        // 1 went to the detector; 2 waited and was made stale by 3.
        assert_eq!(state.queue.len(), 1);
        assert_eq!(state.queue[0].job.frame.seq, 3);
        assert_eq!(state.args.stats.superseded.get(), 1);
        match next_outcome(&mut sequencer).await {
            SequencerMsg::Completed {
                seq: 2,
                outcome: Outcome::Gap { reason, detail },
                ..
            } => {
                assert_eq!(reason, GapReason::Dropped);
                assert_eq!(detail.as_deref(), Some(live::SUPERSEDED));
            }
            _ => panic!("frame 2 dropped"),
        }
    }
}
