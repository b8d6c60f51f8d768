//! The cluster: kadr nodes joined by `ractor_cluster`.
//!
//! Each node runs a `NodeServer` (cookie-authenticated, optionally mutual TLS) and a
//! [`membership`] actor that dials the seeds, learns the rest of the cluster from heartbeats,
//! and keeps the view the admin API shows. Actors find each other through process groups,
//! scoped by the channel prefix ([`scope`]) so two clusters (or two test nodes in one process)
//! never see each other: `members` holds every node's membership actor (heartbeats go to them);
//! the pipeline's groups are in [`crate::pipeline`].

pub mod acceptor;
pub mod membership;
pub mod tls;
pub mod wire;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use ractor::{Actor, ActorRef};
use ractor_cluster::{NodeServer, NodeServerMessage};
use tracing::info;

use crate::config::Config;
use crate::stats::Stats;
use membership::{Membership, MembershipArgs, MembershipMsg};

pub const MEMBERS: &str = "members";

/// The process-group scope of a cluster: its channel prefix.
pub fn scope(channel_prefix: &str) -> String {
    format!("kadr:{channel_prefix}")
}

/// This node's place in the cluster.
pub struct Cluster {
    pub server: ActorRef<NodeServerMessage>,
    pub membership: ActorRef<MembershipMsg>,
    acceptor: tokio::task::JoinHandle<()>,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

impl Cluster {
    /// Listen for peers, dial the seeds and wait until one of them lets us in. Fails with a
    /// sentence naming the config field when the port is taken or no seed can be joined.
    /// `backend`: what runs this node's detectors, told to the others in every heartbeat.
    pub async fn start(
        cfg: &Config,
        stats: Arc<Stats>,
        backend: Option<crate::model::Backend>,
    ) -> anyhow::Result<Cluster> {
        let c = &cfg.cluster;
        let tls = match &c.tls {
            Some(t) => Some(tls::Tls::load(t).context("cluster.tls")?),
            None => None,
        };
        // Peers may send frames of up to max_payload_bytes plus our own few header bytes.
        let max_frame = cfg.limits.max_payload_bytes as u64 + 64 * 1024;
        // Our own acceptor holds the cluster port (see [`acceptor`]); ractor_cluster's own
        // listener, which every NodeServer starts, goes to an ephemeral loopback port with the
        // same authentication that no peer is told of.
        let listener = std::net::TcpListener::bind(c.listen)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(tokio::net::TcpListener::from_std)
            .with_context(|| format!("cluster.listen {} cannot be used", c.listen))?;
        let server = NodeServer::new(
            0,
            c.cookie.expose().to_string(),
            cfg.node.name.clone(),
            c.advertised_host(),
            tls.as_ref().map(|t| t.incoming()),
            Some(ractor_cluster::node::NodeConnectionMode::Isolated),
        )
        .with_listen_addr(std::net::Ipv4Addr::LOCALHOST.into())
        .with_max_inbound_frame_size(max_frame);
        let (server, server_handle) = Actor::spawn(None, server, ())
            .await
            .map_err(|e| anyhow!("the cluster's node server did not start: {e}"))?;
        let pending = Arc::new(acceptor::Pending::default());
        server.cast(NodeServerMessage::SubscribeToEvents {
            id: "kadr-acceptor".into(),
            subscription: Box::new(acceptor::HandshakeWatch(pending.clone())),
        })?;
        let acceptor = tokio::spawn(acceptor::run(
            listener,
            server.clone(),
            tls.as_ref().map(|t| t.acceptor()),
            pending,
            acceptor::AcceptorLimits {
                handshake_timeout: Duration::from_millis(c.handshake_timeout_ms),
                max_pending: c.max_pending_handshakes,
            },
            stats.clone(),
        ));

        let (membership, membership_handle) = Actor::spawn(
            None,
            Membership,
            MembershipArgs {
                cfg: cfg.clone(),
                scope: scope(&cfg.redis.channel_prefix),
                server: server.clone(),
                tls,
                stats,
                backend,
            },
        )
        .await?;
        info!(
            node = %cfg.node.name,
            listen = %c.listen,
            address = %c.advertised(),
            tls = c.tls.is_some(),
            seeds = ?c.seeds,
            "cluster node listening"
        );
        let cluster = Cluster {
            server,
            membership,
            acceptor,
            handles: vec![server_handle, membership_handle],
        };
        if !c.seeds.is_empty() {
            cluster.join(cfg.join_timeout()).await?;
        }
        Ok(cluster)
    }

    /// Wait until a session with some peer is ready.
    async fn join(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let view = ractor::call!(self.membership, MembershipMsg::JoinState)?;
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

    pub async fn shutdown(self) {
        self.acceptor.abort();
        self.membership.stop(None);
        self.server.stop(None);
        for h in self.handles {
            let _ = h.await;
        }
    }
}
