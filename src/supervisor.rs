//! The node's supervision tree: every actor of a node has a supervisor, and the node's own
//! supervisor is the process's (systemd, Docker, Kubernetes).
//!
//! ```text
//! NodeSupervisor ─────────────── gives up past its budget: the process exits non-zero
//!  ├── Pool                       detector role; restarted if it fails
//!  │    └── Detector × pool_size  restarted one by one by the pool
//!  ├── Sequencer                  ┐ source and sequencer roles, one for all: the three share
//!  ├── Dispatcher                 │ every frame's story, so a failure of one restarts the
//!  └── Source                     ┘ three, the way a standby source node takes a stream over
//!
//! ClusterSupervisor (crate::cluster) ─ gives up the same way
//!  ├── NodeServer                 ractor_cluster's sessions with the peers: not restarted
//!  └── Membership                 restarted within the same budget
//! ```
//!
//! Background tasks have owners too ([`crate::task`]): each dies with the actor or value that
//! spawned it.
//!
//! When an ingress actor fails, the survivors are drained and stopped by the same routine a
//! shutdown uses ([`Ingress::drain_and_stop`]: the sequencer publishes what it can, reporting
//! frames still at detectors as `lost`), and a new source, dispatcher and sequencer start with
//! the same source lease. The new sequencer finds each stream's last published sequence number
//! in Redis and reports the frames between it and the next one it sees as a `missing` gap, so
//! every frame is still accounted for. `/health` answers 503 `restarting` meanwhile. More than
//! [`MAX_RESTARTS`] restarts of one part within [`RESTART_WINDOW`] mean something is wrong that
//! a restart will not mend: the node supervisor stops and
//! [`Node::failed`](crate::node::Node::failed) says why.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::log_budget::LogBudget;
use crate::node_stats::Stats;
use crate::pipeline::dispatch::{DispatchArgs, DispatchMsg, Dispatcher};
use crate::pipeline::egress::Egress;
use crate::pipeline::lease::Lease;
use crate::pipeline::pool::{Pool, PoolArgs, PoolMsg};
use crate::pipeline::sequencer::{Sequencer, SequencerArgs, SequencerMsg};
use crate::pipeline::source::{KafkaReading, StreamsReading};
use crate::pipeline::source::{Source, SourceArgs, SourceMsg};
use crate::pipeline::stream_leases::StreamLeases;
use crate::task::{stopped_child, RestartBudget, MAX_RESTARTS, RESTART_WINDOW};

/// How long a restart waits for a surviving actor to stop or the sequencer to flush.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// The actors of the `source` and `sequencer` roles.
#[derive(Clone)]
pub(crate) struct Ingress {
    pub source: ActorRef<SourceMsg>,
    pub dispatcher: ActorRef<DispatchMsg>,
    pub sequencer: ActorRef<SequencerMsg>,
}

impl Ingress {
    /// The one drain routine, for a shutdown and for a restart after the part `gone` failed
    /// (what is gone is skipped): stop taking frames in, let the frames at detectors finish if
    /// their results can still be taken (up to `drain`), publish everything outstanding (what
    /// cannot finish becomes `lost` gaps), then stop the dispatcher and the sequencer.
    pub(crate) async fn drain_and_stop(&self, gone: Option<&ActorCell>, drain: Duration) {
        let alive = |cell: &ActorCell| gone.is_none_or(|g| g.get_id() != cell.get_id());
        let (source, dispatcher, sequencer) = (
            self.source.get_cell(),
            self.dispatcher.get_cell(),
            self.sequencer.get_cell(),
        );
        if alive(&source) {
            let _ = source.stop_and_wait(None, Some(STOP_WAIT)).await;
        }
        if alive(&dispatcher) && alive(&sequencer) {
            let _ = ractor::call_t!(
                self.dispatcher,
                DispatchMsg::Drained,
                drain.as_millis() as u64
            );
        }
        if alive(&sequencer) {
            let _ = ractor::call_t!(
                self.sequencer,
                SequencerMsg::Flush,
                STOP_WAIT.as_millis() as u64
            );
        }
        for cell in [dispatcher, sequencer] {
            if alive(&cell) {
                let _ = cell.stop_and_wait(None, Some(STOP_WAIT)).await;
            }
        }
    }

    fn owns(&self, cell: &ActorCell) -> Option<&'static str> {
        let id = cell.get_id();
        if id == self.source.get_id() {
            Some("source")
        } else if id == self.dispatcher.get_id() {
            Some("dispatcher")
        } else if id == self.sequencer.get_id() {
            Some("sequencer")
        } else {
            None
        }
    }
}

/// The node's actors as they are now (a restart replaces them): what the admin API, the viewer
/// and shutdown talk to.
#[derive(Clone, Default)]
pub(crate) struct Running {
    pub pool: Option<ActorRef<PoolMsg>>,
    pub ingress: Option<Ingress>,
}

/// A live view of [`Running`].
#[derive(Clone)]
pub(crate) struct Parts(watch::Receiver<Running>);

impl Parts {
    pub(crate) fn now(&self) -> Running {
        self.0.borrow().clone()
    }
    pub(crate) fn pool(&self) -> Option<ActorRef<PoolMsg>> {
        self.0.borrow().pool.clone()
    }
    pub(crate) fn dispatcher(&self) -> Option<ActorRef<DispatchMsg>> {
        self.0
            .borrow()
            .ingress
            .as_ref()
            .map(|i| i.dispatcher.clone())
    }
    pub(crate) fn sequencer(&self) -> Option<ActorRef<SequencerMsg>> {
        self.0
            .borrow()
            .ingress
            .as_ref()
            .map(|i| i.sequencer.clone())
    }
}

/// Everything the ingress actors are made from, kept to make them again.
#[derive(Clone)]
pub(crate) struct IngressArgs {
    pub cfg: Arc<Config>,
    pub node: Arc<str>,
    pub scope: String,
    pub client: crate::redis_conn::RedisClients,
    pub conn: crate::redis_conn::RedisConn,
    /// Kept across restarts: the new source renews the old one's lease instead of waiting
    /// for it to run out (or losing the stream to a standby).
    pub lease: Lease,
    /// With `cluster.stream_leases`: a lease per stream instead (kept across restarts too).
    pub stream_leases: Option<Arc<StreamLeases>>,
    pub stats: Arc<Stats>,
}

/// What the node supervisor is started with.
pub(crate) struct NodeArgs {
    pub pool: Option<PoolArgs>,
    pub ingress: Option<IngressArgs>,
    pub running: watch::Sender<Running>,
    /// Set by shutdown: children stopping are then not restarted.
    pub stopping: Arc<AtomicBool>,
    /// Why the node gave up, for the process to exit with.
    pub failed: watch::Sender<Option<String>>,
    pub stats: Arc<Stats>,
}

pub(crate) enum NodeMsg {
    /// Start the ingress again (after a failure, or a start that did not succeed).
    RestartIngress,
    /// Start the pool again.
    RestartPool,
    /// Test hook: kill one of the node's actors as a crash would ("source", "dispatcher",
    /// "sequencer", "pool").
    Kill(&'static str),
}

impl ractor::Message for NodeMsg {}

pub(crate) struct NodeState {
    args: NodeArgs,
    pool_budget: RestartBudget,
    ingress_budget: RestartBudget,
}

pub(crate) struct NodeSupervisor;

/// Start the tree; returns once every part runs (a part that cannot start fails the start).
pub(crate) async fn start(
    args: NodeArgs,
) -> anyhow::Result<(ActorRef<NodeMsg>, tokio::task::JoinHandle<()>)> {
    Actor::spawn(None, NodeSupervisor, args)
        .await
        .map_err(|e| anyhow!("{}", root_cause(&e.to_string())))
}

impl Actor for NodeSupervisor {
    type Msg = NodeMsg;
    type State = NodeState;
    type Arguments = NodeArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<NodeMsg>,
        args: NodeArgs,
    ) -> Result<NodeState, ActorProcessingErr> {
        let mut running = Running::default();
        if let Some(pool) = &args.pool {
            running.pool = Some(spawn_pool(&myself, pool).await?);
        }
        if let Some(ingress) = &args.ingress {
            running.ingress = Some(spawn_ingress(&myself, ingress).await?);
        }
        args.running.send_replace(running);
        Ok(NodeState {
            args,
            pool_budget: RestartBudget::new(MAX_RESTARTS, RESTART_WINDOW),
            ingress_budget: RestartBudget::new(MAX_RESTARTS, RESTART_WINDOW),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<NodeMsg>,
        msg: NodeMsg,
        state: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        if state.args.stopping.load(Ordering::SeqCst) {
            return Ok(());
        }
        match msg {
            NodeMsg::RestartIngress => state.restart_ingress(&myself).await,
            NodeMsg::RestartPool => state.restart_pool(&myself).await,
            NodeMsg::Kill(part) => {
                let running = state.args.running.borrow().clone();
                let cell = match (part, &running.ingress) {
                    ("pool", _) => running.pool.map(|p| p.get_cell()),
                    ("source", Some(i)) => Some(i.source.get_cell()),
                    ("dispatcher", Some(i)) => Some(i.dispatcher.get_cell()),
                    ("sequencer", Some(i)) => Some(i.sequencer.get_cell()),
                    _ => None,
                };
                if let Some(cell) = cell {
                    warn!(part, "killing a part of the node (fault injection)");
                    cell.kill();
                }
                Ok(())
            }
        }
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<NodeMsg>,
        event: SupervisionEvent,
        state: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        let Some((cell, why)) = stopped_child(event) else {
            return Ok(());
        };
        if state.args.stopping.load(Ordering::SeqCst) {
            return Ok(());
        }
        let running = state.args.running.borrow().clone();
        if running.pool.as_ref().map(|p| p.get_id()) == Some(cell.get_id()) {
            error!(%why, "the detector pool stopped; restarting it");
            state.args.stats.parts_down.inc();
            state.args.running.send_modify(|r| r.pool = None);
            myself.send_message(NodeMsg::RestartPool)?;
        } else if let Some(part) = running.ingress.as_ref().and_then(|i| i.owns(&cell)) {
            error!(part, %why, "an ingress actor stopped; restarting source, dispatcher and sequencer");
            state.args.stats.parts_down.inc();
            state.args.running.send_modify(|r| r.ingress = None);
            if let Some(ingress) = &running.ingress {
                ingress.drain_and_stop(Some(&cell), STOP_WAIT).await;
            }
            myself.send_message(NodeMsg::RestartIngress)?;
        }
        Ok(())
    }
}

impl NodeState {
    async fn restart_ingress(
        &mut self,
        myself: &ActorRef<NodeMsg>,
    ) -> Result<(), ActorProcessingErr> {
        let Some(args) = &self.args.ingress else {
            return Ok(());
        };
        if !self.ingress_budget.spend(Instant::now()) {
            return self.give_up("ingress (source, dispatcher, sequencer)");
        }
        match spawn_ingress(myself, args).await {
            Ok(ingress) => {
                self.args.running.send_modify(|r| r.ingress = Some(ingress));
                self.args.stats.parts_down.sub(1);
                self.args.stats.ingress_restarts.inc();
                info!("source, dispatcher and sequencer restarted");
            }
            Err(e) => {
                warn!(error = %e, "the ingress could not start again; retrying in 1 s");
                myself.send_after(Duration::from_secs(1), || NodeMsg::RestartIngress);
            }
        }
        Ok(())
    }

    async fn restart_pool(&mut self, myself: &ActorRef<NodeMsg>) -> Result<(), ActorProcessingErr> {
        let Some(args) = &self.args.pool else {
            return Ok(());
        };
        if !self.pool_budget.spend(Instant::now()) {
            return self.give_up("detector pool");
        }
        match spawn_pool(myself, args).await {
            Ok(pool) => {
                self.args.running.send_modify(|r| r.pool = Some(pool));
                self.args.stats.parts_down.sub(1);
                self.args.stats.pool_restarts.inc();
                info!("detector pool restarted");
            }
            Err(e) => {
                warn!(error = %e, "the detector pool could not start again; retrying in 1 s");
                myself.send_after(Duration::from_secs(1), || NodeMsg::RestartPool);
            }
        }
        Ok(())
    }

    /// Past the budget: stop the node, saying why, so that the process exits non-zero.
    fn give_up(&mut self, part: &str) -> Result<(), ActorProcessingErr> {
        let why = format!(
            "the {part} failed more than {MAX_RESTARTS} times within {}s; giving up",
            RESTART_WINDOW.as_secs()
        );
        error!("{why}");
        self.args.failed.send_replace(Some(why.clone()));
        Err(why.into())
    }
}

async fn spawn_pool(
    myself: &ActorRef<NodeMsg>,
    args: &PoolArgs,
) -> Result<ActorRef<PoolMsg>, ActorProcessingErr> {
    let (pool, _) = Actor::spawn_linked(None, Pool, args.clone(), myself.get_cell()).await?;
    Ok(pool)
}

async fn spawn_ingress(
    myself: &ActorRef<NodeMsg>,
    args: &IngressArgs,
) -> Result<Ingress, ActorProcessingErr> {
    let cfg = &args.cfg;
    let channels = cfg.channels();
    let supervisor = myself.get_cell();
    let (sequencer, _) = Actor::spawn_linked(
        None,
        Sequencer,
        SequencerArgs {
            egress: Egress::new(
                args.conn.clone(),
                channels.clone(),
                match &args.stream_leases {
                    Some(leases) => leases.fence(),
                    None => args.lease.fence(),
                },
                cfg.redis.results_maxlen,
                args.stats.clone(),
            ),
            stats: args.stats.clone(),
            gap_wait: cfg.gap_wait(),
            frame_timeout: cfg.frame_timeout(),
            max_seq_jump: cfg.limits.max_seq_jump,
            tracker: cfg.tracker.enabled.then(|| cfg.tracker.clone()),
            analytics: cfg.analytics_by_stream(),
        },
        supervisor.clone(),
    )
    .await?;
    let (dispatcher, _) = Actor::spawn_linked(
        None,
        Dispatcher,
        DispatchArgs {
            node: args.node.clone(),
            scope: args.scope.clone(),
            max_in_flight: cfg.detector.max_in_flight,
            queue_capacity: cfg.limits.queue_capacity,
            live: cfg.live.clone(),
            frame_timeout: cfg.frame_timeout(),
            max_attempts: cfg.limits.max_attempts,
            gap_wait: cfg.gap_wait(),
            resend_after: (cfg.limits.resend_after_ms > 0)
                .then(|| Duration::from_millis(cfg.limits.resend_after_ms)),
            sequencer: sequencer.clone(),
            stats: args.stats.clone(),
        },
        supervisor.clone(),
    )
    .await
    .inspect_err(|_| sequencer.stop(None))?;
    let (source, _) = Actor::spawn_linked(
        None,
        Source,
        SourceArgs {
            redis: args.client.clone(),
            lease: args.lease.clone(),
            stream_leases: args.stream_leases.clone(),
            channels,
            limits: cfg.frame_limits(),
            keep_all_frames: cfg.limits.keep_all_frames,
            max_streams: cfg.limits.max_streams,
            max_seq_jump: cfg.limits.max_seq_jump,
            max_kept_frames: cfg.limits.max_kept_frames,
            max_pixels: cfg.limits.max_pixels,
            streams: StreamsReading {
                consumer: cfg.node.name.clone(),
                count: cfg.redis.frames_read_count,
                scan_every: Duration::from_millis(cfg.redis.frames_scan_ms),
                max_streams: cfg.limits.max_streams,
                keep_all: cfg.limits.keep_all_frames,
                max_payload: cfg.limits.max_payload_bytes,
            },
            kafka: cfg.kafka.enabled().then(|| KafkaReading {
                config: cfg.kafka.clone(),
                client_id: cfg.node.name.clone(),
                max_message_bytes: cfg.limits.max_payload_bytes,
            }),
            dispatcher: dispatcher.clone(),
            sequencer: sequencer.clone(),
            stats: args.stats.clone(),
            refusals: LogBudget::new(),
        },
        supervisor,
    )
    .await
    .map_err(|e| {
        dispatcher.stop(None);
        sequencer.stop(None);
        let why = root_cause(&e.to_string());
        format!("{}: {why}", crate::redis_conn::unusable(&cfg.redis.url))
    })?;
    Ok(Ingress {
        source,
        dispatcher,
        sequencer,
    })
}

/// One ingress actor stopped: stop the other two so the three start again together. The source
/// goes first (no frame is taken in meanwhile); frames at detectors are waited for while the
/// dispatcher and sequencer live; a surviving sequencer publishes what it holds.
/// Killed, not stopped: a stopping source would give the lease away, and its successor is about
/// to renew it.
/// ractor wraps start-up errors in its own words, once per actor level; keep the sentence that
/// says what to do.
pub(crate) fn root_cause(message: &str) -> String {
    let mut m = message.trim();
    loop {
        if let Some(inner) = m
            .strip_prefix("Actor panicked during startup '")
            .and_then(|r| r.strip_suffix('\''))
        {
            m = inner.trim();
        } else if let Some(inner) = m.strip_prefix("Actor panicked during pre_start: ") {
            m = inner.trim();
        } else {
            return m.to_string();
        }
    }
}

/// Create the channel the supervisor publishes the running actors on.
pub(crate) fn running_channel() -> (watch::Sender<Running>, Parts) {
    let (tx, rx) = watch::channel(Running::default());
    (tx, Parts(rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_up_errors_are_said_once() {
        let nested = "Actor panicked during startup 'Actor panicked during startup 'model x could not be loaded''";
        assert_eq!(root_cause(nested), "model x could not be loaded");
        assert_eq!(root_cause("plain"), "plain");
    }
}
