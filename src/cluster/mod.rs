//! The cluster: kadr nodes joined by `ractor_cluster`.
//!
//! Each node runs a `NodeServer` (cookie-authenticated, optionally mutual TLS) and a
//! [`membership`] actor that dials the seeds, learns the rest of the cluster from heartbeats,
//! and keeps the view the admin API shows. Actors find each other through process groups,
//! scoped by the channel prefix ([`scope`]) so two clusters (or two test nodes in one process)
//! never see each other: `members` holds every node's membership actor (heartbeats go to them);
//! the pipeline's groups are in [`crate::pipeline`].

pub(crate) mod acceptor;
pub(crate) mod membership;
pub mod placement;
pub(crate) mod tls;
pub(crate) mod wire;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use ractor_cluster::{NodeServer, NodeServerMessage};
use tokio::sync::watch;
use tracing::{error, info};

use crate::config::Config;
use crate::node_stats::Stats;
use crate::task::{stopped_child, OwnedTask, RestartBudget, MAX_RESTARTS, RESTART_WINDOW};
use membership::{Membership, MembershipArgs, MembershipMsg};

pub(crate) const MEMBERS: &str = "members";

/// The process-group scope of a cluster: its channel prefix.
pub(crate) fn scope(channel_prefix: &str) -> String {
    format!("kadr:{channel_prefix}")
}

/// This node's place in the cluster: the node server, the acceptor in front of it and the
/// membership actor, all owned by a [`ClusterSupervisor`]. Dropping it (a node that fails to
/// start after joining, say) stops them all.
pub(crate) struct Cluster {
    supervisor: ActorRef<ClusterMsg>,
    supervisor_done: Option<tokio::task::JoinHandle<()>>,
    membership: watch::Receiver<ActorRef<MembershipMsg>>,
    stopping: Arc<AtomicBool>,
}

impl Cluster {
    /// Listen for peers, dial the seeds and wait until one of them lets us in. Fails with a
    /// sentence naming the config field when the port is taken or no seed can be joined.
    /// `backend`: what runs this node's detectors, told to the others in every heartbeat.
    /// `failed` is told why if the cluster's part of the node fails past repair (the node then
    /// gives up, as it does for its other parts).
    pub(crate) async fn start(
        cfg: &Config,
        stats: Arc<Stats>,
        backend: Option<crate::model::Backend>,
        failed: watch::Sender<Option<String>>,
        live_sources: placement::LiveSources,
    ) -> anyhow::Result<Cluster> {
        let c = &cfg.cluster;
        let tls = match &c.tls {
            Some(t) => Some(tls::Tls::load(t).context("cluster.tls")?),
            None => None,
        };
        // Our own acceptor holds the cluster port (see [`acceptor`]); ractor_cluster's own
        // listener, which every NodeServer starts, goes to an ephemeral loopback port with the
        // same authentication that no peer is told of.
        let listener = std::net::TcpListener::bind(c.listen)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(tokio::net::TcpListener::from_std)
            .with_context(|| format!("cluster.listen {} cannot be used", c.listen))?;
        let stopping = Arc::new(AtomicBool::new(false));
        let (supervisor, supervisor_done) = Actor::spawn(
            None,
            ClusterSupervisor,
            ClusterArgs {
                cfg: cfg.clone(),
                listener: std::sync::Mutex::new(Some(listener)),
                tls,
                stats,
                backend,
                failed,
                stopping: stopping.clone(),
                live_sources,
            },
        )
        .await
        .map_err(|e| anyhow!("the cluster's node server did not start: {e}"))?;
        let membership = ractor::call!(supervisor, ClusterMsg::Membership)
            .map_err(|e| anyhow!("the cluster's membership did not start: {e}"))?;
        info!(
            node = %cfg.node.name,
            listen = %c.listen,
            address = %c.advertised(),
            tls = c.tls.is_some(),
            seeds = ?c.seeds,
            "cluster node listening"
        );
        let cluster = Cluster {
            supervisor,
            supervisor_done: Some(supervisor_done),
            membership,
            stopping,
        };
        if !c.seeds.is_empty() {
            cluster.join(cfg.join_timeout()).await?;
        }
        Ok(cluster)
    }

    /// The membership actor as it is now (a restart replaces it).
    pub(crate) fn membership(&self) -> ActorRef<MembershipMsg> {
        self.membership.borrow().clone()
    }

    /// A live view of [`Cluster::membership`], for the admin API.
    pub(crate) fn membership_watch(&self) -> watch::Receiver<ActorRef<MembershipMsg>> {
        self.membership.clone()
    }

    /// Wait until a session with some peer is ready.
    async fn join(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let view = ractor::call!(self.membership(), MembershipMsg::JoinState)?;
            if let Some(peer) = view.joined {
                info!(%peer, "joined the cluster");
                return Ok(());
            }
            if Instant::now() >= deadline {
                let why = if view.problems.is_empty() {
                    "no answer".to_string()
                } else {
                    view.problems.join("; ")
                };
                bail!(
                    "could not join the cluster: no seed in cluster.seeds let this node in within {} ms ({why})",
                    timeout.as_millis()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Leave the cluster: stop the acceptor, the membership and the node server.
    pub(crate) async fn shutdown(mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.supervisor.stop(None);
        if let Some(done) = self.supervisor_done.take() {
            let _ = done.await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.supervisor.stop(None);
    }
}

/// What the cluster supervisor is started with.
struct ClusterArgs {
    cfg: Config,
    /// Taken by the acceptor at start.
    listener: std::sync::Mutex<Option<tokio::net::TcpListener>>,
    tls: Option<tls::Tls>,
    stats: Arc<Stats>,
    backend: Option<crate::model::Backend>,
    failed: watch::Sender<Option<String>>,
    stopping: Arc<AtomicBool>,
    live_sources: placement::LiveSources,
}

enum ClusterMsg {
    /// A live view of the membership actor.
    Membership(RpcReplyPort<watch::Receiver<ActorRef<MembershipMsg>>>),
}

impl ractor::Message for ClusterMsg {}

/// Owns the cluster's part of a node: the `NodeServer` and the membership actor, linked to it,
/// and the acceptor task. The membership is restarted when it fails (within the node's restart
/// budget); the node server holds every session with the peers, so if it fails the node gives
/// up and its process supervisor starts it afresh, which is what restarting it would amount to.
struct ClusterSupervisor;

struct ClusterState {
    server: ActorRef<NodeServerMessage>,
    membership: watch::Sender<ActorRef<MembershipMsg>>,
    membership_args: MembershipArgs,
    budget: RestartBudget,
    failed: watch::Sender<Option<String>>,
    stopping: Arc<AtomicBool>,
    /// Accepts peers on the cluster port; ends with this actor.
    _acceptor: OwnedTask,
}

impl Actor for ClusterSupervisor {
    type Msg = ClusterMsg;
    type State = ClusterState;
    type Arguments = ClusterArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ClusterMsg>,
        args: ClusterArgs,
    ) -> Result<ClusterState, ActorProcessingErr> {
        let c = &args.cfg.cluster;
        // Peers may send frames of up to max_payload_bytes plus our own few header bytes.
        let max_frame = args.cfg.limits.max_payload_bytes as u64 + 64 * 1024;
        let server = NodeServer::new(
            0,
            c.cookie.expose().to_string(),
            args.cfg.node.name.clone(),
            c.advertised_host(),
            args.tls.as_ref().map(|t| t.incoming()),
            Some(ractor_cluster::node::NodeConnectionMode::Isolated),
        )
        .with_listen_addr(std::net::Ipv4Addr::LOCALHOST.into())
        .with_max_inbound_frame_size(max_frame);
        let (server, _) = Actor::spawn_linked(None, server, (), myself.get_cell()).await?;
        let pending = Arc::new(acceptor::Pending::default());
        server.cast(NodeServerMessage::SubscribeToEvents {
            id: "kadr-acceptor".into(),
            subscription: Box::new(acceptor::HandshakeWatch(pending.clone())),
        })?;
        let listener = args
            .listener
            .lock()
            .map_err(|_| "cluster listener lock poisoned")?
            .take()
            .ok_or("cluster listener already taken")?;
        let acceptor = OwnedTask::spawn(acceptor::run(
            listener,
            server.clone(),
            args.tls.as_ref().map(|t| t.acceptor()),
            pending,
            acceptor::AcceptorLimits {
                handshake_timeout: Duration::from_millis(c.handshake_timeout_ms),
                max_pending: c.max_pending_handshakes,
            },
            args.stats.clone(),
        ));
        let membership_args = MembershipArgs {
            scope: scope(&args.cfg.redis.channel_prefix),
            server: server.clone(),
            tls: args.tls,
            stats: args.stats,
            backend: args.backend,
            live_sources: args.live_sources,
            cfg: args.cfg,
        };
        let (membership, _) =
            Actor::spawn_linked(None, Membership, membership_args.clone(), myself.get_cell())
                .await?;
        Ok(ClusterState {
            server,
            membership: watch::channel(membership).0,
            membership_args,
            budget: RestartBudget::new(MAX_RESTARTS, RESTART_WINDOW),
            failed: args.failed,
            stopping: args.stopping,
            _acceptor: acceptor,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<ClusterMsg>,
        msg: ClusterMsg,
        state: &mut ClusterState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ClusterMsg::Membership(reply) => {
                let _ = reply.send(state.membership.subscribe());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<ClusterMsg>,
        event: SupervisionEvent,
        state: &mut ClusterState,
    ) -> Result<(), ActorProcessingErr> {
        let Some((cell, why)) = stopped_child(event) else {
            return Ok(());
        };
        if state.stopping.load(Ordering::SeqCst) {
            return Ok(());
        }
        if cell.get_id() == state.server.get_id() {
            return Err(give_up(
                &state.failed,
                format!("the cluster's node server {why}"),
            ));
        }
        if cell.get_id() != state.membership.borrow().get_id() {
            return Ok(());
        }
        error!(%why, "cluster membership stopped; restarting it");
        if !state.budget.spend(Instant::now()) {
            return Err(give_up(
                &state.failed,
                format!(
                    "the cluster membership failed more than {MAX_RESTARTS} times within {}s",
                    RESTART_WINDOW.as_secs()
                ),
            ));
        }
        let (membership, _) = Actor::spawn_linked(
            None,
            Membership,
            state.membership_args.clone(),
            myself.get_cell(),
        )
        .await?;
        state.membership.send_replace(membership);
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ClusterMsg>,
        state: &mut ClusterState,
    ) -> Result<(), ActorProcessingErr> {
        state.stopping.store(true, Ordering::SeqCst);
        let membership = state.membership.borrow().clone();
        let _ = membership.stop_and_wait(None, Some(STOP_WAIT)).await;
        let _ = state.server.stop_and_wait(None, Some(STOP_WAIT)).await;
        Ok(())
    }
}

/// How long leaving the cluster waits for each of its actors to stop.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// Say why the node gives up, for the process to exit with it.
fn give_up(failed: &watch::Sender<Option<String>>, why: String) -> ActorProcessingErr {
    let why = format!("{why}; giving up");
    error!("{why}");
    failed.send_replace(Some(why.clone()));
    why.into()
}
