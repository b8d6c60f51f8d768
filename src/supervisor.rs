//! The node's supervision tree: every actor of a node has a supervisor, and the node's own
//! supervisor is the process's (systemd, Docker, Kubernetes).
//!
//! ```text
//! NodeSupervisor ─────────────── gives up past its budget: the process exits non-zero
//!  ├── Pool                       detector role; restarted if it fails
//!  │    └── Detector × pool_size  restarted one by one by the pool
//!  └── IngressSupervisor          source and sequencer roles
//!       ├── Sequencer             ┐ one for all: the three share every frame's story, so a
//!       ├── Dispatcher            │ failure of one restarts the three, the way a standby
//!       └── Source                ┘ source node takes a stream over
//! ```
//!
//! When an ingress actor fails, the survivors are stopped (the sequencer first publishes what it
//! can, reporting frames still at detectors as `lost`), and a new source, dispatcher and
//! sequencer start with the same source lease. The new sequencer finds each stream's last
//! published sequence number in Redis and reports the frames between it and the next one it sees
//! as a `missing` gap, so every frame is still accounted for. `/health` answers 503
//! `restarting` meanwhile. More than [`MAX_RESTARTS`] restarts of one part within
//! [`RESTART_WINDOW`] mean something is wrong that a restart will not mend: the node supervisor
//! stops and [`Node::failed`](crate::node::Node::failed) says why.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use redis::aio::ConnectionManager;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::pipeline::dispatch::{DispatchArgs, DispatchMsg, Dispatcher};
use crate::pipeline::egress::Egress;
use crate::pipeline::lease::Lease;
use crate::pipeline::pool::{Pool, PoolArgs, PoolMsg};
use crate::pipeline::sequencer::{Sequencer, SequencerArgs, SequencerMsg};
use crate::pipeline::source::{Source, SourceArgs, SourceMsg};
use crate::protocol::Channels;
use crate::stats::Stats;

/// Restarts of one part allowed within [`RESTART_WINDOW`] before the node gives up.
pub const MAX_RESTARTS: usize = 5;
pub const RESTART_WINDOW: Duration = Duration::from_secs(60);
/// How long a restart waits for a surviving actor to stop or the sequencer to flush.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// The actors of the `source` and `sequencer` roles.
#[derive(Clone)]
pub struct Ingress {
    pub source: ActorRef<SourceMsg>,
    pub dispatcher: ActorRef<DispatchMsg>,
    pub sequencer: ActorRef<SequencerMsg>,
}

impl Ingress {
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
pub struct Running {
    pub pool: Option<ActorRef<PoolMsg>>,
    pub ingress: Option<Ingress>,
}

/// A live view of [`Running`].
#[derive(Clone)]
pub struct Parts(watch::Receiver<Running>);

impl Parts {
    pub fn now(&self) -> Running {
        self.0.borrow().clone()
    }
    pub fn pool(&self) -> Option<ActorRef<PoolMsg>> {
        self.0.borrow().pool.clone()
    }
    pub fn ingress(&self) -> Option<Ingress> {
        self.0.borrow().ingress.clone()
    }
    pub fn dispatcher(&self) -> Option<ActorRef<DispatchMsg>> {
        self.0
            .borrow()
            .ingress
            .as_ref()
            .map(|i| i.dispatcher.clone())
    }
    pub fn sequencer(&self) -> Option<ActorRef<SequencerMsg>> {
        self.0
            .borrow()
            .ingress
            .as_ref()
            .map(|i| i.sequencer.clone())
    }
}

/// At most `max` restarts in any `window`.
#[derive(Debug)]
pub struct RestartBudget {
    max: usize,
    window: Duration,
    recent: VecDeque<Instant>,
}

impl RestartBudget {
    pub fn new(max: usize, window: Duration) -> Self {
        Self {
            max,
            window,
            recent: VecDeque::new(),
        }
    }

    /// Spend one restart at `now`; false once the budget is spent.
    pub fn spend(&mut self, now: Instant) -> bool {
        while self
            .recent
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) > self.window)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.max {
            return false;
        }
        self.recent.push_back(now);
        true
    }
}

/// Everything the ingress actors are made from, kept to make them again.
#[derive(Clone)]
pub struct IngressArgs {
    pub cfg: Arc<Config>,
    pub node: Arc<str>,
    pub scope: String,
    pub client: redis::Client,
    pub conn: ConnectionManager,
    /// Kept across restarts: the new source renews the old one's lease instead of waiting
    /// for it to run out (or losing the stream to a standby).
    pub lease: Lease,
    pub stats: Arc<Stats>,
}

/// What the node supervisor is started with.
pub struct NodeArgs {
    pub pool: Option<PoolArgs>,
    pub ingress: Option<IngressArgs>,
    pub running: watch::Sender<Running>,
    /// Set by shutdown: children stopping are then not restarted.
    pub stopping: Arc<AtomicBool>,
    /// Why the node gave up, for the process to exit with.
    pub failed: watch::Sender<Option<String>>,
    pub stats: Arc<Stats>,
}

pub enum NodeMsg {
    /// Start the ingress again (after a failure, or a start that did not succeed).
    RestartIngress,
    /// Start the pool again.
    RestartPool,
    /// Test hook: kill one of the node's actors as a crash would ("source", "dispatcher",
    /// "sequencer", "pool").
    Kill(&'static str),
}

impl ractor::Message for NodeMsg {}

pub struct NodeState {
    args: NodeArgs,
    pool_budget: RestartBudget,
    ingress_budget: RestartBudget,
}

pub struct NodeSupervisor;

/// Start the tree; returns once every part runs (a part that cannot start fails the start).
pub async fn start(
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
        let (cell, why) = match event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.unwrap_or_else(|| "stopped".into()))
            }
            SupervisionEvent::ActorFailed(cell, e) => (cell, format!("failed: {e}")),
            _ => return Ok(()),
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
            stop_survivors(running.ingress.as_ref().unwrap(), &cell).await;
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
    let channels = Channels::new(cfg.redis.channel_prefix.clone());
    let supervisor = myself.get_cell();
    let (sequencer, _) = Actor::spawn_linked(
        None,
        Sequencer,
        SequencerArgs {
            egress: Egress::new(
                args.conn.clone(),
                channels.clone(),
                args.lease.fence(),
                args.stats.clone(),
            ),
            stats: args.stats.clone(),
            gap_wait: cfg.gap_wait(),
            frame_timeout: cfg.frame_timeout(),
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
            frame_timeout: cfg.frame_timeout(),
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
            channels,
            limits: cfg.frame_limits(),
            keep_all_frames: cfg.limits.keep_all_frames,
            max_streams: cfg.limits.max_streams,
            max_seq_jump: cfg.limits.max_seq_jump,
            max_kept_frames: cfg.limits.max_kept_frames,
            max_pixels: cfg.limits.max_pixels,
            dispatcher: dispatcher.clone(),
            sequencer: sequencer.clone(),
            stats: args.stats.clone(),
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
async fn stop_survivors(ingress: &Ingress, gone: &ActorCell) {
    let alive = |cell: &ActorCell| cell.get_id() != gone.get_id();
    if alive(&ingress.source.get_cell()) {
        let _ = ingress.source.kill_and_wait(Some(STOP_WAIT)).await;
    }
    // Frames at detectors finish first if the dispatcher and sequencer can take their results.
    if alive(&ingress.dispatcher.get_cell()) && alive(&ingress.sequencer.get_cell()) {
        let _ = ractor::call_t!(
            ingress.dispatcher,
            DispatchMsg::Drained,
            STOP_WAIT.as_millis() as u64
        );
    }
    if alive(&ingress.sequencer.get_cell()) {
        let _ = ractor::call_t!(
            ingress.sequencer,
            SequencerMsg::Flush,
            STOP_WAIT.as_millis() as u64
        );
    }
    for cell in [ingress.dispatcher.get_cell(), ingress.sequencer.get_cell()] {
        if alive(&cell) {
            let _ = cell.kill_and_wait(Some(STOP_WAIT)).await;
        }
    }
}

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
pub fn running_channel() -> (watch::Sender<Running>, Parts) {
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

    #[test]
    fn the_budget_allows_so_many_restarts_per_window() {
        let mut b = RestartBudget::new(2, Duration::from_secs(60));
        let t0 = Instant::now();
        assert!(b.spend(t0));
        assert!(b.spend(t0 + Duration::from_secs(1)));
        assert!(
            !b.spend(t0 + Duration::from_secs(2)),
            "third within the window"
        );
        // The first has left the window.
        assert!(b.spend(t0 + Duration::from_secs(61)));
        assert!(!b.spend(t0 + Duration::from_secs(61)));
    }
}
