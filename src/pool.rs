//! The detector pool: supervises N detector actors and dispatches frames to them.
//!
//! Each detector takes at most `max_in_flight` frames at a time (its credits); the rest wait in
//! one bounded queue. When the queue is full, the oldest droppable frame is dropped and reported
//! (live video wants the newest frame, not a growing delay); frames marked `keep` are never
//! dropped, and are bounded instead by the source's semaphore. A detector that fails is restarted
//! and the frames it held are reported as failed, so the stream goes on.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tracing::{error, info, warn};

use crate::detector::{Detector, DetectorArgs, DetectorMsg, Job};
use crate::model::ModelOptions;
use crate::protocol::{ErrorMessage, GapReason};
use crate::sequencer::{Outcome, SequencerMsg};
use crate::stats::Stats;

pub enum PoolMsg {
    Submit(Job),
    /// A detector finished a frame (its outcome went to the sequencer directly).
    Done {
        slot: usize,
        stream: Arc<str>,
        seq: u64,
    },
    /// A replacement detector is ready (or could not be started).
    Respawned {
        slot: usize,
        result: Result<ActorRef<DetectorMsg>, String>,
    },
    Status(RpcReplyPort<PoolStatus>),
    /// Test hook: make one detector panic on its next frame.
    InjectFault,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    pub detectors: usize,
    pub alive: usize,
    pub in_flight: usize,
    pub queued: usize,
}

#[derive(Clone)]
pub struct PoolArgs {
    pub size: usize,
    pub max_in_flight: usize,
    pub queue_capacity: usize,
    pub model: Arc<ModelOptions>,
    pub sequencer: ActorRef<SequencerMsg>,
    pub stats: Arc<Stats>,
}

struct Slot {
    actor: Option<ActorRef<DetectorMsg>>,
    in_flight: Vec<(Arc<str>, u64)>,
}

pub struct PoolState {
    args: PoolArgs,
    slots: Vec<Slot>,
    queue: VecDeque<Job>,
    /// Where the search for a free detector starts, so ties rotate.
    next_slot: usize,
}

pub struct Pool;

impl Pool {
    async fn spawn_detector(
        myself: &ActorRef<PoolMsg>,
        args: &PoolArgs,
        slot: usize,
    ) -> Result<ActorRef<DetectorMsg>, String> {
        let detector_args = DetectorArgs {
            slot,
            model: args.model.clone(),
            pool: myself.clone(),
            sequencer: args.sequencer.clone(),
        };
        Actor::spawn_linked(None, Detector, detector_args, myself.get_cell())
            .await
            .map(|(actor, _)| actor)
            .map_err(|e| e.to_string())
    }
}

impl Actor for Pool {
    type Msg = PoolMsg;
    type State = PoolState;
    type Arguments = PoolArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: PoolArgs,
    ) -> Result<PoolState, ActorProcessingErr> {
        let mut slots = Vec::with_capacity(args.size);
        for slot in 0..args.size {
            // The first failure (bad model, missing runtime) stops the node at start-up.
            let actor = Self::spawn_detector(&myself, &args, slot).await?;
            slots.push(Slot {
                actor: Some(actor),
                in_flight: Vec::new(),
            });
        }
        info!(
            detectors = args.size,
            max_in_flight = args.max_in_flight,
            "detector pool ready"
        );
        Ok(PoolState {
            queue: VecDeque::with_capacity(args.queue_capacity),
            args,
            slots,
            next_slot: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: PoolMsg,
        state: &mut PoolState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            PoolMsg::Submit(job) => {
                state.enqueue(job);
                state.dispatch();
            }
            PoolMsg::Done { slot, stream, seq } => {
                if let Some(s) = state.slots.get_mut(slot) {
                    if let Some(i) = s
                        .in_flight
                        .iter()
                        .position(|(st, sq)| *sq == seq && *st == stream)
                    {
                        s.in_flight.swap_remove(i);
                    }
                }
                state.dispatch();
            }
            PoolMsg::Respawned { slot, result } => match result {
                Ok(actor) => {
                    info!(slot, "detector restarted");
                    state.slots[slot].actor = Some(actor);
                    state.dispatch();
                }
                Err(e) => {
                    error!(slot, error = %e, "detector could not be restarted; retrying in 1 s");
                    respawn_later(&myself, &state.args, slot, Duration::from_secs(1));
                }
            },
            PoolMsg::Status(reply) => {
                let _ = reply.send(state.status());
            }
            PoolMsg::InjectFault => {
                if let Some(actor) = state.slots.iter().find_map(|s| s.actor.as_ref()) {
                    let _ = actor.cast(DetectorMsg::PanicOnNextFrame);
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut PoolState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, err.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.unwrap_or_else(|| "stopped".into()))
            }
            _ => return Ok(()),
        };
        let Some(slot) = state.slot_of(cell.get_id()) else {
            return Ok(());
        };
        warn!(slot, reason = %why, "detector failed; restarting it");
        state.args.stats.detector_restarts.inc();
        state.slots[slot].actor = None;
        for (stream, seq) in std::mem::take(&mut state.slots[slot].in_flight) {
            state.report_gap(
                &stream,
                seq,
                GapReason::Failed,
                format!("detector crashed: {why}"),
            );
        }
        respawn_later(&myself, &state.args, slot, Duration::ZERO);
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut PoolState,
    ) -> Result<(), ActorProcessingErr> {
        for actor in state.slots.iter().filter_map(|s| s.actor.as_ref()) {
            actor.stop(None);
        }
        Ok(())
    }
}

/// Start a replacement in the background; loading a model takes a while and the pool keeps
/// dispatching to the other detectors meanwhile.
fn respawn_later(myself: &ActorRef<PoolMsg>, args: &PoolArgs, slot: usize, delay: Duration) {
    let myself = myself.clone();
    let args = args.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let result = Pool::spawn_detector(&myself, &args, slot).await;
        let _ = myself.cast(PoolMsg::Respawned { slot, result });
    });
}

impl PoolState {
    fn slot_of(&self, id: ActorId) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.actor.as_ref().is_some_and(|a| a.get_id() == id))
    }

    fn status(&self) -> PoolStatus {
        PoolStatus {
            detectors: self.slots.len(),
            alive: self.slots.iter().filter(|s| s.actor.is_some()).count(),
            in_flight: self.slots.iter().map(|s| s.in_flight.len()).sum(),
            queued: self.queue.len(),
        }
    }

    /// Queue a job; when full, drop the oldest droppable frame (or this one).
    fn enqueue(&mut self, job: Job) {
        if self.queue.len() >= self.args.queue_capacity {
            if let Some(i) = self.queue.iter().position(|j| !j.keep) {
                let old = self.queue.remove(i).expect("index from position");
                self.report_gap(
                    &old.stream,
                    old.frame.seq,
                    GapReason::Dropped,
                    String::new(),
                );
            } else if !job.keep {
                self.report_gap(
                    &job.stream,
                    job.frame.seq,
                    GapReason::Dropped,
                    String::new(),
                );
                return;
            }
            // Only kept frames are waiting and this one is kept too: the source's semaphore
            // bounds how many there can be, so queue it.
        }
        self.queue.push_back(job);
    }

    /// Hand queued frames to detectors with free credits, least loaded first.
    fn dispatch(&mut self) {
        while !self.queue.is_empty() {
            let n = self.slots.len();
            let free = (0..n)
                .map(|k| (self.next_slot + k) % n)
                .filter(|&i| {
                    self.slots[i].actor.is_some()
                        && self.slots[i].in_flight.len() < self.args.max_in_flight
                })
                .min_by_key(|&i| self.slots[i].in_flight.len());
            let Some(i) = free else { return };
            self.next_slot = (i + 1) % n;
            let job = self.queue.pop_front().expect("queue not empty");
            let key = (job.stream.clone(), job.frame.seq);
            let actor = self.slots[i].actor.as_ref().expect("filtered on alive");
            match actor.cast(DetectorMsg::Detect(job)) {
                Ok(()) => {
                    let _ = self.args.sequencer.cast(SequencerMsg::Dispatched {
                        stream: key.0.clone(),
                        seq: key.1,
                    });
                    self.slots[i].in_flight.push(key);
                }
                Err(_) => {
                    // It died between its failure and our hearing of it; the supervision
                    // event will restart it.
                    self.slots[i].actor = None;
                    self.report_gap(
                        &key.0,
                        key.1,
                        GapReason::Failed,
                        "detector unavailable".into(),
                    );
                }
            }
        }
    }

    fn report_gap(&self, stream: &Arc<str>, seq: u64, reason: GapReason, detail: String) {
        let sequencer = &self.args.sequencer;
        if reason == GapReason::Failed {
            let error = ErrorMessage::new(stream, Some(seq), "detector_failed", detail.clone());
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
