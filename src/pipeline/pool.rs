//! The local detector pool: supervises this node's detector actors.
//!
//! The pool starts `pool_size` detectors, restarts any that fails (a panicking inference, a
//! model that stops loading), and grows or shrinks on request (`POST /pool`). It does not route
//! frames: each detector joins the cluster-wide `detectors` group and every source's dispatcher
//! sends to it directly. A detector that fails leaves the group; the dispatchers that had
//! frames on it send them elsewhere.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use serde::Serialize;
use tracing::{error, info, warn};

use crate::model::ModelOptions;
use crate::node_stats::Stats;
use crate::pipeline::detector::{Detector, DetectorArgs, DetectorMsg};
use crate::task::{stopped_child, TaskSet};

/// Most detectors one node may run (also the bound `POST /pool` enforces).
pub(crate) const MAX_POOL_SIZE: usize = 256;

pub enum PoolMsg {
    /// A replacement or additional detector is ready (or could not be started).
    Spawned {
        slot: usize,
        generation: u64,
        result: Result<ActorRef<DetectorMsg>, String>,
    },
    /// Grow or shrink to this many detectors; replies once the change is under way.
    Resize(usize, RpcReplyPort<PoolStatus>),
    Status(RpcReplyPort<PoolStatus>),
    /// Test hook: make one detector panic on its next frame.
    InjectFault,
}

impl ractor::Message for PoolMsg {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PoolStatus {
    /// Detectors wanted.
    pub size: usize,
    /// Detectors running (the rest are starting or restarting).
    pub alive: usize,
    /// Frames being detected right now.
    pub busy: u64,
}

#[derive(Clone)]
pub(crate) struct PoolArgs {
    pub node: Arc<str>,
    pub scope: String,
    pub size: usize,
    pub model: Arc<ModelOptions>,
    pub stats: Arc<Stats>,
}

struct Slot {
    actor: Option<ActorRef<DetectorMsg>>,
    /// Bumped when the slot is retired, so a late start for it is stopped, not installed.
    generation: u64,
}

pub(crate) struct PoolState {
    args: PoolArgs,
    slots: Vec<Slot>,
    next_generation: u64,
    /// Detectors being started.
    starting: TaskSet,
}

pub(crate) struct Pool;

impl Pool {
    async fn spawn_detector(
        myself: &ActorRef<PoolMsg>,
        args: &PoolArgs,
    ) -> Result<ActorRef<DetectorMsg>, String> {
        let detector_args = DetectorArgs {
            node: args.node.clone(),
            scope: args.scope.clone(),
            model: args.model.clone(),
            stats: args.stats.clone(),
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
        for _ in 0..args.size {
            // The first failure (bad model, missing runtime) stops the node at start-up.
            let actor = Self::spawn_detector(&myself, &args).await?;
            slots.push(Slot {
                actor: Some(actor),
                generation: 0,
            });
        }
        args.stats.detectors.set(args.size as u64);
        info!(detectors = args.size, "detector pool ready");
        Ok(PoolState {
            args,
            slots,
            next_generation: 1,
            starting: TaskSet::default(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: PoolMsg,
        state: &mut PoolState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            PoolMsg::Spawned {
                slot,
                generation,
                result,
            } => match (state.slots.get_mut(slot), result) {
                (Some(s), Ok(actor)) if s.generation == generation => {
                    info!(slot, "detector started");
                    s.actor = Some(actor);
                }
                (_, Ok(actor)) => actor.stop(Some("pool shrank".into())),
                (Some(s), Err(e)) if s.generation == generation => {
                    error!(slot, error = %e, "detector could not be started; retrying in 1 s");
                    state.start_later(&myself, slot, generation, Duration::from_secs(1));
                }
                (_, Err(_)) => {}
            },
            PoolMsg::Resize(size, reply) => {
                state.resize(&myself, size);
                let _ = reply.send(state.status());
            }
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
        let Some((cell, why)) = stopped_child(event) else {
            return Ok(());
        };
        let Some(slot) = state.slot_of(cell.get_id()) else {
            return Ok(()); // one we retired
        };
        warn!(slot, reason = %why, "detector failed; restarting it");
        state.args.stats.detector_restarts.inc();
        state.slots[slot].actor = None;
        let generation = state.slots[slot].generation;
        state.start_later(&myself, slot, generation, Duration::ZERO);
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

impl PoolState {
    /// Start a detector in the background; loading a model takes a while and the other
    /// detectors keep working meanwhile. The task is the pool's: it ends if the pool stops.
    fn start_later(
        &mut self,
        myself: &ActorRef<PoolMsg>,
        slot: usize,
        generation: u64,
        delay: Duration,
    ) {
        let myself = myself.clone();
        let args = self.args.clone();
        self.starting.spawn(async move {
            tokio::time::sleep(delay).await;
            let result = Pool::spawn_detector(&myself, &args).await;
            let _ = myself.cast(PoolMsg::Spawned {
                slot,
                generation,
                result,
            });
        });
    }

    fn slot_of(&self, id: ActorId) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.actor.as_ref().is_some_and(|a| a.get_id() == id))
    }

    fn status(&self) -> PoolStatus {
        PoolStatus {
            size: self.slots.len(),
            alive: self.slots.iter().filter(|s| s.actor.is_some()).count(),
            busy: self.args.stats.busy.get(),
        }
    }

    fn resize(&mut self, myself: &ActorRef<PoolMsg>, size: usize) {
        let size = size.min(MAX_POOL_SIZE);
        while self.slots.len() > size {
            let slot = self.slots.pop().expect("len > size >= 0");
            if let Some(actor) = slot.actor {
                // Frames queued in its mailbox are dropped with it; their dispatchers see it
                // leave the group and send them elsewhere.
                actor.stop(Some("pool shrank".into()));
            }
        }
        while self.slots.len() < size {
            let slot = self.slots.len();
            // Generations keep rising across shrink and regrow of the same slot index.
            let generation = self.next_generation;
            self.next_generation += 1;
            self.slots.push(Slot {
                actor: None,
                generation,
            });
            self.start_later(myself, slot, generation, Duration::ZERO);
        }
        self.args.stats.detectors.set(size as u64);
        info!(detectors = size, "detector pool resized");
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Instant;

    use super::*;

    /// The random-weight model `scripts/setup.sh` generates: real ONNX Runtime, real sessions.
    fn model() -> Arc<ModelOptions> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("models/yolov7-tiny-random-384x640.onnx");
        assert!(
            path.exists(),
            "{} missing: run scripts/setup.sh",
            path.display()
        );
        Arc::new(ModelOptions::exact(path))
    }

    async fn status_until(
        pool: &ActorRef<PoolMsg>,
        what: &str,
        done: impl Fn(PoolStatus) -> bool,
    ) -> PoolStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = ractor::call!(pool, PoolMsg::Status).unwrap();
            if done(status) {
                return status;
            }
            assert!(Instant::now() < deadline, "{what}: {status:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A detector that dies is replaced in its slot and counted; a resize grows and shrinks
    /// the pool; a stopped pool takes its detectors with it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_detector_is_replaced_and_the_pool_resizes() {
        let stats = Arc::new(Stats::default());
        let args = PoolArgs {
            node: Arc::from("n1"),
            scope: "pool-test".into(),
            size: 2,
            model: model(),
            stats: stats.clone(),
        };
        let (pool, handle) = Actor::spawn(None, Pool, args).await.unwrap();
        let children = pool.get_children();
        assert_eq!(children.len(), 2);
        assert_eq!(stats.detectors.get(), 2);

        children[0].kill();
        let status = status_until(&pool, "replaced", |s| {
            s.alive == 2 && stats.detector_restarts.get() == 1
        })
        .await;
        assert_eq!(status.size, 2);
        let now: Vec<ActorId> = pool.get_children().iter().map(|c| c.get_id()).collect();
        assert!(!now.contains(&children[0].get_id()) && now.contains(&children[1].get_id()));

        let grown = ractor::call!(pool, PoolMsg::Resize, 3).unwrap();
        assert_eq!(grown.size, 3);
        status_until(&pool, "grown", |s| s.alive == 3).await;
        let shrunk = ractor::call!(pool, PoolMsg::Resize, 1).unwrap();
        assert_eq!((shrunk.size, shrunk.alive), (1, 1));
        assert_eq!(stats.detectors.get(), 1);
        // Retired detectors are stopped, not restarted.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(stats.detector_restarts.get(), 1);
        let alive = pool.get_children();
        pool.stop(None);
        handle.await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(alive
            .iter()
            .all(|c| c.get_status() == ractor::ActorStatus::Stopped));
    }
}
