//! Membership: who is in the cluster, what each node runs, and when it was last heard from.
//!
//! Every `heartbeat_ms` each node sends a [`NodeInfo`] to every other node's membership actor.
//! The heartbeat lists the peers its sender is connected to, so a node that joined through one
//! seed dials the rest by itself (ractor_cluster's own transitive mode would not use TLS).
//! Addresses that stop answering are dialled again with backoff, so a node that restarts
//! rejoins with no one's help.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor::message::{BoxedDowncastErr, SerializedMessage};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, Message, RpcReplyPort};
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::{NodeEventSubscription, NodeServerMessage};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::tls::Tls;
use super::{wire, MEMBERS};
use crate::backoff::Backoff;
use crate::config::{Config, Role};
use crate::log_budget::{self, LogBudget, Verdict};
use crate::model::Backend;
use crate::node_stats::Stats;
use crate::protocol::now_us;
use crate::task::TaskSet;

/// What a node says about itself in each heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct NodeInfo {
    pub name: String,
    /// `host:port` peers dial.
    pub address: String,
    /// Its admin API.
    pub admin: String,
    pub roles: Vec<Role>,
    /// Detectors its pool runs, and how many are busy now.
    pub detectors: u64,
    pub busy: u64,
    /// Frames its dispatcher has at detectors anywhere, and waiting (source nodes).
    pub in_flight: u64,
    pub queued: u64,
    /// Frames its detectors have finished since it started.
    pub inferences: u64,
    pub started_at_us: u64,
    /// Addresses of the peers it is connected to.
    pub peers: Vec<String>,
    /// What runs its detectors (provider, precision, CPU); none on a node without detectors.
    #[serde(default)]
    pub backend: Option<Backend>,
    /// Frames its detectors finished per second, over the last heartbeat interval.
    #[serde(default)]
    pub detect_fps: f64,
    /// Streams whose lease it holds (`cluster.stream_leases`).
    #[serde(default)]
    pub streams_held: u64,
}

/// One node as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct MemberView {
    #[serde(flatten)]
    pub info: NodeInfo,
    /// `up`: heard from within three heartbeats; `silent`: not, but its session is open;
    /// `down`: its session closed (it is kept in the view for a minute).
    pub status: &'static str,
    /// Milliseconds since its last heartbeat (0 for this node).
    pub last_heartbeat_ms: u64,
    /// This is the node answering.
    pub local: bool,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct ClusterView {
    pub node: String,
    pub members: Vec<MemberView>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct JoinState {
    /// The first peer a session became ready with.
    pub joined: Option<String>,
    /// What went wrong dialling, per address, most recent first.
    pub problems: Vec<String>,
}

impl JoinState {
    fn problem(&mut self, problem: String) {
        self.problems.retain(|p| *p != problem);
        self.problems.insert(0, problem);
        self.problems.truncate(8);
    }
}

pub(crate) enum MembershipMsg {
    /// From a peer.
    Heartbeat(Box<NodeInfo>),
    Tick,
    Dialled {
        address: String,
        result: Result<(), String>,
    },
    SessionReady {
        name: String,
    },
    SessionClosed {
        name: Option<String>,
        peer_addr: String,
        authenticated: bool,
    },
    Snapshot(RpcReplyPort<ClusterView>),
    JoinState(RpcReplyPort<JoinState>),
    Malformed(String),
}

impl Message for MembershipMsg {
    fn serializable() -> bool {
        true
    }

    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        match self {
            Self::Heartbeat(info) => wire::cast_json("heartbeat", &info),
            _ => Err(BoxedDowncastErr),
        }
    }

    fn deserialize(msg: SerializedMessage) -> Result<Self, BoxedDowncastErr> {
        let decoded = wire::open_cast(msg).and_then(|(variant, args)| match variant.as_str() {
            "heartbeat" => {
                wire::from_json(&variant, &args).map(|info| Self::Heartbeat(Box::new(info)))
            }
            other => Err(format!("unknown membership message {other:?}")),
        });
        Ok(decoded.unwrap_or_else(Self::Malformed))
    }
}

#[derive(Clone)]
pub(crate) struct MembershipArgs {
    pub cfg: Config,
    pub scope: String,
    pub server: ActorRef<NodeServerMessage>,
    pub tls: Option<Tls>,
    pub stats: Arc<Stats>,
    /// What runs this node's detectors, if it has any.
    pub backend: Option<Backend>,
    /// Written each heartbeat: the live source nodes (for per-stream leases).
    pub live_sources: super::placement::LiveSources,
}

struct Peer {
    info: NodeInfo,
    heard: Instant,
    /// Set when its session closed.
    down_since: Option<Instant>,
    /// When this node last closed its sessions with the peer for silence.
    closed_silent: Option<Instant>,
}

struct Address {
    seed: bool,
    dialling: bool,
    next_dial: Instant,
    backoff: Backoff,
    /// Last time a node at this address was heard from (or when it was learned).
    seen: Instant,
}

pub(crate) struct MembershipState {
    args: MembershipArgs,
    me: NodeInfo,
    peers: BTreeMap<String, Peer>,
    addresses: HashMap<String, Address>,
    join: JoinState,
    /// Inferences counted at the last refresh, and when: for `detect_fps`.
    last_rate_sample: (u64, Instant),
    /// Dials in progress; they end with this actor.
    dials: TaskSet,
    /// Failed handshakes logged, per peer IP address.
    handshake_logs: LogBudget<String>,
    /// ractor_cluster's log lines left out so far, and when that was last reported.
    library_left_out: (u64, Instant),
}

pub(crate) struct Membership;

/// Forgotten after this long without a heartbeat (seeds are never forgotten).
const FORGET_AFTER: Duration = Duration::from_secs(60);
/// Heartbeats a peer may miss while its session stays open before that session is closed.
///
/// A session that carries no heartbeat is useless, and it is worse than none: ractor_cluster
/// refuses every new connection from a peer it still has an authenticated session with, so
/// after a freeze (a paused container, a stalled VM) the two sides could each keep a session
/// the other had given up, and refuse each other's fresh ones for minutes. Closing it lets the
/// next dial form a working one.
const SILENT_SESSION_HEARTBEATS: u32 = 10;
const MAX_BACKOFF: Duration = Duration::from_secs(5);

fn dial_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(250), MAX_BACKOFF)
}

impl Actor for Membership {
    type Msg = MembershipMsg;
    type State = MembershipState;
    type Arguments = MembershipArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: MembershipArgs,
    ) -> Result<MembershipState, ActorProcessingErr> {
        ractor::pg::join_scoped(
            args.scope.clone(),
            MEMBERS.to_string(),
            vec![myself.get_cell()],
        );
        args.server.cast(NodeServerMessage::SubscribeToEvents {
            id: "kadr-membership".into(),
            subscription: Box::new(Events(myself.clone(), Mutex::default())),
        })?;
        let cfg = &args.cfg;
        let me = NodeInfo {
            name: cfg.node.name.clone(),
            address: cfg.cluster.advertised(),
            admin: cfg.admin.listen.to_string(),
            roles: cfg.node.roles.clone(),
            detectors: 0,
            busy: 0,
            in_flight: 0,
            queued: 0,
            inferences: 0,
            started_at_us: now_us(),
            peers: Vec::new(),
            backend: args.backend.clone(),
            detect_fps: 0.0,
            streams_held: 0,
        };
        let now = Instant::now();
        let addresses = cfg
            .cluster
            .seeds
            .iter()
            .filter(|s| **s != me.address)
            .map(|s| {
                let a = Address {
                    seed: true,
                    dialling: false,
                    next_dial: now,
                    backoff: dial_backoff(),
                    seen: now,
                };
                (s.clone(), a)
            })
            .collect();
        myself.send_interval(cfg.heartbeat(), || MembershipMsg::Tick);
        let mut state = MembershipState {
            me,
            peers: BTreeMap::new(),
            addresses,
            join: JoinState::default(),
            args,
            last_rate_sample: (0, now),
            dials: TaskSet::default(),
            handshake_logs: LogBudget::new(),
            library_left_out: (log_budget::library_lines_left_out(), now),
        };
        state.dial_due(&myself, now);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: MembershipMsg,
        state: &mut MembershipState,
    ) -> Result<(), ActorProcessingErr> {
        let now = Instant::now();
        match msg {
            MembershipMsg::Heartbeat(info) => state.heard(*info, now),
            MembershipMsg::Tick => {
                state.refresh_me();
                state.send_heartbeats();
                state.expire(now);
                state.publish_live_sources(now);
                state.close_silent_sessions(now).await;
                state.report_library_left_out(now);
                state.dial_due(&myself, now);
            }
            MembershipMsg::Dialled { address, result } => {
                if let Some(a) = state.addresses.get_mut(&address) {
                    a.dialling = false;
                    if let Err(e) = result {
                        warn!(%address, error = %e, "cannot reach peer");
                        state.join.problem(format!("{address}: {e}"));
                    }
                }
            }
            MembershipMsg::SessionReady { name } => {
                // The peer's address (and its dial backoff) is learned from its heartbeat: the
                // session's own address names ractor_cluster's inner listener, not the peer's
                // cluster port.
                info!(peer = %name, "peer connected");
                if state.join.joined.is_none() {
                    state.join.joined = Some(name.clone());
                }
                // Tell it about us at once rather than at the next tick.
                state.refresh_me();
                state.send_heartbeats();
            }
            MembershipMsg::SessionClosed {
                name,
                peer_addr,
                authenticated,
            } => {
                if authenticated {
                    warn!(peer = ?name, %peer_addr, "peer disconnected");
                } else {
                    // Anyone who can reach the cluster port can cause this once per
                    // connection: counted always, logged a few times a window per address.
                    state.args.stats.cluster_handshakes_failed.inc();
                    let problem = format!(
                        "{peer_addr}: closed the connection during the handshake (a different cluster.cookie, or TLS on one side only)"
                    );
                    let ip = peer_addr
                        .rsplit_once(':')
                        .map_or(peer_addr.as_str(), |(ip, _)| ip);
                    if let Verdict::Log { left_out } = state.handshake_logs.check(&ip.to_string()) {
                        warn!(left_out, "{problem}");
                    }
                    state.join.problem(problem);
                }
                // ractor_cluster names a peer `{name}@{host}`.
                let name = name.as_deref().map(|n| n.split('@').next().unwrap_or(n));
                if let Some(p) = name.and_then(|n| state.peers.get_mut(n)) {
                    p.down_since.get_or_insert(now);
                    // At once, not at the next heartbeat: the stream leases it held can be
                    // taken over as soon as it misses a renewal.
                    state.publish_live_sources(now);
                }
            }
            MembershipMsg::Snapshot(reply) => {
                state.refresh_me();
                let _ = reply.send(state.view(now));
            }
            MembershipMsg::JoinState(reply) => {
                let _ = reply.send(state.join.clone());
            }
            MembershipMsg::Malformed(why) => {
                warn!(%why, "malformed message from a peer ignored");
                state.args.stats.malformed.inc();
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut MembershipState,
    ) -> Result<(), ActorProcessingErr> {
        let _ = state
            .args
            .server
            .cast(NodeServerMessage::UnsubscribeToEvents(
                "kadr-membership".into(),
            ));
        Ok(())
    }
}

impl MembershipState {
    fn refresh_me(&mut self) {
        let s = &self.args.stats;
        // A source node handing its streams over to stop is no longer one to place streams on.
        if s.source_leaving.get() == 1 {
            self.me.roles.retain(|r| *r != Role::Source);
        }
        self.me.detectors = s.detectors.get();
        self.me.busy = s.busy.get();
        self.me.in_flight = s.dispatch_in_flight.get();
        self.me.queued = s.dispatch_queued.get();
        self.me.inferences = s.inferences.get();
        self.me.streams_held = s.streams_held.get();
        let (before, since) = self.last_rate_sample;
        let elapsed = since.elapsed().as_secs_f64();
        if elapsed >= 0.5 {
            let fps = self.me.inferences.saturating_sub(before) as f64 / elapsed;
            let tenths = (fps * 10.0).round() as u64;
            s.detect_fps_tenths.set(tenths);
            self.me.detect_fps = tenths as f64 / 10.0;
            self.last_rate_sample = (self.me.inferences, Instant::now());
        }
        self.me.peers = self
            .peers
            .values()
            .filter(|p| p.down_since.is_none())
            .map(|p| p.info.address.clone())
            .collect();
    }

    fn send_heartbeats(&self) {
        let members = ractor::pg::get_scoped_members(&self.args.scope, &MEMBERS.to_string());
        for cell in members.into_iter().filter(|c| !c.get_id().is_local()) {
            let peer: ActorRef<MembershipMsg> = cell.into();
            let _ = peer.cast(MembershipMsg::Heartbeat(Box::new(self.me.clone())));
        }
    }

    fn heard(&mut self, info: NodeInfo, now: Instant) {
        if info.name == self.me.name {
            return;
        }
        // Learn the addresses it knows: that is how the whole cluster is found from one seed.
        for address in std::iter::once(&info.address).chain(&info.peers) {
            if *address == self.me.address {
                continue;
            }
            let a = self
                .addresses
                .entry(address.clone())
                .or_insert_with(|| Address {
                    seed: false,
                    dialling: false,
                    next_dial: now,
                    backoff: dial_backoff(),
                    seen: now,
                });
            if *address == info.address {
                a.seen = now;
                a.backoff.reset();
            }
        }
        if !self.peers.contains_key(&info.name) {
            info!(peer = %info.name, address = %info.address, roles = ?info.roles, "node joined the cluster");
        }
        self.peers.insert(
            info.name.clone(),
            Peer {
                info,
                heard: now,
                down_since: None,
                closed_silent: None,
            },
        );
    }

    fn expire(&mut self, now: Instant) {
        self.peers
            .retain(|_, p| now.duration_since(p.heard) < FORGET_AFTER);
        self.addresses
            .retain(|_, a| a.seed || now.duration_since(a.seen) < FORGET_AFTER);
    }

    /// The source nodes heard from within three heartbeats, this one included if it is one.
    fn publish_live_sources(&self, now: Instant) {
        let heartbeat = self.args.cfg.heartbeat();
        let mut live: Vec<String> = self
            .peers
            .values()
            .filter(|p| p.down_since.is_none() && now.duration_since(p.heard) <= heartbeat * 3)
            .filter(|p| p.info.roles.contains(&Role::Source))
            .map(|p| p.info.name.clone())
            .collect();
        if self.me.roles.contains(&Role::Source) {
            live.push(self.me.name.clone());
        }
        live.sort();
        *self
            .args
            .live_sources
            .write()
            .unwrap_or_else(|e| e.into_inner()) = live;
    }

    /// Close ractor_cluster's sessions with peers that have sent no heartbeat for
    /// [`SILENT_SESSION_HEARTBEATS`] intervals (once per such interval).
    async fn close_silent_sessions(&mut self, now: Instant) {
        let limit = self.args.cfg.heartbeat() * SILENT_SESSION_HEARTBEATS;
        let silent: Vec<String> = self
            .peers
            .iter_mut()
            .filter(|(_, p)| now.duration_since(p.heard) >= limit)
            .filter(|(_, p)| {
                p.closed_silent
                    .is_none_or(|t| now.duration_since(t) >= limit)
            })
            .map(|(name, p)| {
                p.closed_silent = Some(now);
                name.clone()
            })
            .collect();
        if silent.is_empty() {
            return;
        }
        let Ok(sessions) = ractor::call_t!(self.args.server, NodeServerMessage::GetSessions, 500)
        else {
            return;
        };
        for session in sessions.values() {
            let Some(peer) = &session.peer_name else {
                continue;
            };
            // ractor_cluster names a peer `{name}@{host}`.
            let name = peer.name.split('@').next().unwrap_or(&peer.name);
            if silent.iter().any(|s| s == name) {
                warn!(peer = %name, addr = %session.peer_addr, silent_s = limit.as_secs(),
                      "closing the session of a peer that sends no heartbeat, so a new one can form");
                session.actor.stop(Some("no heartbeat".into()));
                self.args.stats.silent_sessions_closed.inc();
            }
        }
    }

    /// Say, at most once per log window, how many of ractor_cluster's lines were left out
    /// ([`log_budget::LibraryLogBudget`]): junk connections make several each.
    fn report_library_left_out(&mut self, now: Instant) {
        let (reported, at) = self.library_left_out;
        if now.duration_since(at) < log_budget::WINDOW {
            return;
        }
        let total = log_budget::library_lines_left_out();
        if total > reported {
            warn!(
                left_out = total - reported,
                "cluster library log lines left out (repeated lines, as junk connections to the cluster port cause); kadr_log_lines_left_out_total counts them"
            );
        }
        self.library_left_out = (total, now);
    }

    /// Dial every known address that has no live node behind it.
    fn dial_due(&mut self, myself: &ActorRef<MembershipMsg>, now: Instant) {
        let heartbeat = self.args.cfg.heartbeat();
        let live: Vec<String> = self
            .peers
            .values()
            .filter(|p| p.down_since.is_none() && now.duration_since(p.heard) <= heartbeat * 3)
            .map(|p| p.info.address.clone())
            .collect();
        for (address, a) in self.addresses.iter_mut() {
            if a.dialling || now < a.next_dial || live.contains(address) {
                continue;
            }
            a.dialling = true;
            a.next_dial = now + a.backoff.next_wait();
            let server = self.args.server.clone();
            let tls = self.args.tls.clone();
            let myself = myself.clone();
            let address = address.clone();
            self.dials.spawn(async move {
                let result = match tls {
                    Some(tls) => ractor_cluster::client_connect_enc(
                        &server,
                        address.as_str(),
                        tls.connector(),
                        tls.server_name(),
                    )
                    .await
                    .map_err(|e| describe(&e)),
                    None => ractor_cluster::client_connect(&server, address.as_str())
                        .await
                        .map_err(|e| describe(&e)),
                };
                let _ = myself.cast(MembershipMsg::Dialled { address, result });
            });
        }
    }

    fn view(&self, now: Instant) -> ClusterView {
        let heartbeat = self.args.cfg.heartbeat();
        let mut members = vec![MemberView {
            info: self.me.clone(),
            status: "up",
            last_heartbeat_ms: 0,
            local: true,
        }];
        for p in self.peers.values() {
            let since = now.duration_since(p.heard);
            let status = if p.down_since.is_some() {
                "down"
            } else if since <= heartbeat * 3 {
                "up"
            } else {
                "silent"
            };
            members.push(MemberView {
                info: p.info.clone(),
                status,
                last_heartbeat_ms: since.as_millis() as u64,
                local: false,
            });
        }
        ClusterView {
            node: self.me.name.clone(),
            members,
        }
    }
}

fn describe(e: &ractor_cluster::ClientConnectErr) -> String {
    match e {
        ractor_cluster::ClientConnectErr::Socket(io) => io.to_string(),
        other => format!("{other:?}"),
    }
}

/// Forwards ractor_cluster's session events to the membership actor.
struct Events(ActorRef<MembershipMsg>, Mutex<HashSet<ActorId>>);

impl NodeEventSubscription for Events {
    fn node_session_opened(&self, _ses: NodeServerSessionInformation) {}

    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        if let Ok(mut set) = self.1.lock() {
            set.insert(ses.actor.get_id());
        }
    }

    fn node_session_ready(&self, ses: NodeServerSessionInformation) {
        if let Some(peer) = ses.peer_name {
            let _ = self.0.cast(MembershipMsg::SessionReady { name: peer.name });
        }
    }

    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        let authenticated = self
            .1
            .lock()
            .map(|mut set| set.remove(&ses.actor.get_id()))
            .unwrap_or(false);
        let _ = self.0.cast(MembershipMsg::SessionClosed {
            name: ses.peer_name.map(|p| p.name),
            peer_addr: ses.peer_addr,
            authenticated,
        });
    }
}
