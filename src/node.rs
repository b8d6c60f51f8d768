//! One kadr node: joins the cluster and starts the actors of its roles.
//!
//! - `detector`: the local [`Pool`] of detectors, which serve every source in the cluster.
//! - `source` + `sequencer`: the [`Source`] reading Redis, the [`Dispatcher`] sending its frames
//!   to detectors anywhere, and the [`Sequencer`] publishing results in order.
//!
//! Every node runs the cluster membership and the admin API.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use ractor::{Actor, ActorRef};
use tracing::{info, warn};

use crate::admin::{self, AdminHandles};
use crate::cluster::{self, Cluster};
use crate::config::{Config, Role};
use crate::dispatch::{DispatchArgs, DispatchMsg, DispatchStatus, Dispatcher};
use crate::egress::Egress;
use crate::lease::Lease;
use crate::model::Backend;
use crate::pool::{Pool, PoolArgs, PoolMsg, PoolStatus};
use crate::protocol::Channels;
use crate::sequencer::{Sequencer, SequencerArgs, SequencerMsg};
use crate::source::{Source, SourceArgs, SourceMsg};
use crate::stats::Stats;

/// The actors of the `source` and `sequencer` roles.
pub struct Ingress {
    pub source: ActorRef<SourceMsg>,
    pub dispatcher: ActorRef<DispatchMsg>,
    pub sequencer: ActorRef<SequencerMsg>,
}

/// A running node and handles to its actors.
pub struct Node {
    pub name: String,
    /// What runs this node's detectors; `None` without the detector role.
    pub backend: Option<Backend>,
    pub stats: Arc<Stats>,
    pub cluster: Cluster,
    pub pool: Option<ActorRef<PoolMsg>>,
    pub ingress: Option<Ingress>,
    admin: Option<admin::Server>,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

impl Node {
    /// Start every actor of the node's roles. Fails with a one-sentence reason if the runtime,
    /// the model, Redis, the ports or the seeds are not usable, before any frame is taken in.
    pub async fn start(cfg: &Config) -> anyhow::Result<Node> {
        Self::start_with(cfg, true).await
    }

    /// As [`Node::start`]; `with_admin: false` skips the HTTP API (in-process tests).
    pub async fn start_with(cfg: &Config, with_admin: bool) -> anyhow::Result<Node> {
        // Every port first: a node that cannot serve must fail before it takes any work (the
        // source lease among it), not hold it for its whole term.
        let admin_listener = with_admin.then(|| admin::bind(cfg)).transpose()?;
        let stats = Arc::new(Stats::default());
        let scope = cluster::scope(&cfg.redis.channel_prefix);
        let name: Arc<str> = Arc::from(cfg.node.name.as_str());
        let backend = if cfg.node.has(Role::Detector) {
            let b = Backend::resolve(&cfg.model_options())?;
            info!(
                provider = %b.provider,
                precision = %b.precision,
                dct_scaling = b.dct_scaling,
                cpu = %b.cpu,
                library = %b.library.display(),
                why = %b.reason,
                "model backend chosen"
            );
            Some(b)
        } else {
            None
        };
        let redis = if cfg.node.has(Role::Source) {
            Some(connect_redis(cfg).await?)
        } else {
            None
        };
        let cluster = Cluster::start(cfg, stats.clone(), backend.clone()).await?;
        let mut handles = Vec::new();

        let pool = if cfg.node.has(Role::Detector) {
            let (pool, handle) = Actor::spawn(
                None,
                Pool,
                PoolArgs {
                    node: name.clone(),
                    scope: scope.clone(),
                    size: cfg.pool_size(),
                    model: Arc::new(cfg.model_options()),
                    stats: stats.clone(),
                },
            )
            .await
            .map_err(|e| anyhow!("{}", root_cause(&e.to_string())))?;
            handles.push(handle);
            Some(pool)
        } else {
            None
        };

        let ingress = match redis {
            Some((client, conn)) => {
                let channels = Channels::new(cfg.redis.channel_prefix.clone());
                let lease_conn = conn.clone();
                let (sequencer, h) = Actor::spawn(
                    None,
                    Sequencer,
                    SequencerArgs {
                        egress: Egress::new(conn, channels.clone(), stats.clone()),
                        stats: stats.clone(),
                        gap_wait: cfg.gap_wait(),
                        frame_timeout: cfg.frame_timeout(),
                    },
                )
                .await?;
                handles.push(h);
                let (dispatcher, h) = Actor::spawn(
                    None,
                    Dispatcher,
                    DispatchArgs {
                        node: name.clone(),
                        scope: scope.clone(),
                        max_in_flight: cfg.detector.max_in_flight,
                        queue_capacity: cfg.limits.queue_capacity,
                        frame_timeout: cfg.frame_timeout(),
                        sequencer: sequencer.clone(),
                        stats: stats.clone(),
                    },
                )
                .await?;
                handles.push(h);
                let lease = Lease::new(
                    lease_conn,
                    channels.source_lease_key(),
                    &cfg.node.name,
                    cfg.source_lease(),
                );
                let (source, h) = Actor::spawn(
                    None,
                    Source,
                    SourceArgs {
                        redis: client,
                        lease,
                        channels,
                        limits: cfg.frame_limits(),
                        keep_all_frames: cfg.limits.keep_all_frames,
                        max_streams: cfg.limits.max_streams,
                        max_seq_jump: cfg.limits.max_seq_jump,
                        max_kept_frames: cfg.limits.max_kept_frames,
                        max_pixels: cfg.limits.max_pixels,
                        dispatcher: dispatcher.clone(),
                        sequencer: sequencer.clone(),
                        stats: stats.clone(),
                    },
                )
                .await
                .with_context(|| unreachable_redis(cfg))?;
                handles.push(h);
                Some(Ingress {
                    source,
                    dispatcher,
                    sequencer,
                })
            }
            None => None,
        };

        let mut node = Node {
            backend,
            name: cfg.node.name.clone(),
            stats,
            cluster,
            pool,
            ingress,
            admin: None,
            handles,
        };
        if let Some(listener) = admin_listener {
            node.admin = Some(admin::Server::start(listener, cfg, node.admin_handles()).await?);
        }
        info!(
            node = %cfg.node.name,
            roles = ?cfg.node.roles,
            detectors = node.pool.as_ref().map_or(0, |_| cfg.pool_size()),
            "node started"
        );
        Ok(node)
    }

    pub fn admin_handles(&self) -> AdminHandles {
        AdminHandles {
            node: self.name.clone(),
            backend: self.backend.clone(),
            stats: self.stats.clone(),
            membership: self.cluster.membership.clone(),
            pool: self.pool.clone(),
            dispatcher: self.ingress.as_ref().map(|i| i.dispatcher.clone()),
            sequencer: self.ingress.as_ref().map(|i| i.sequencer.clone()),
        }
    }

    pub async fn pool_status(&self) -> anyhow::Result<Option<PoolStatus>> {
        match &self.pool {
            Some(pool) => Ok(Some(ractor::call!(pool, PoolMsg::Status)?)),
            None => Ok(None),
        }
    }

    pub async fn dispatch_status(&self) -> anyhow::Result<Option<DispatchStatus>> {
        match &self.ingress {
            Some(i) => Ok(Some(ractor::call!(i.dispatcher, DispatchMsg::Status)?)),
            None => Ok(None),
        }
    }

    /// Stop taking frames in, let the detectors finish what they hold (up to `drain`), publish
    /// everything outstanding, then leave the cluster.
    pub async fn shutdown(self, drain: Duration) {
        let stats = self.stats.clone();
        // Whatever Redis or a peer does (a flush to a Redis that is down waits on its
        // time-outs), the node is gone within its drain time and a little more.
        let limit = drain + SHUTDOWN_GRACE;
        match tokio::time::timeout(limit, self.stop_everything(drain)).await {
            Ok(()) => info!(stats = %stats, "node stopped"),
            Err(_) => warn!(
                stats = %stats,
                "node did not stop within {limit:?} (Redis or a peer not answering); leaving anyway"
            ),
        }
    }

    async fn stop_everything(self, drain: Duration) {
        if let Some(admin) = &self.admin {
            admin.stop().await;
        }
        if let Some(ingress) = &self.ingress {
            ingress.source.stop(None);
            let deadline = Instant::now() + drain;
            while Instant::now() < deadline {
                match ractor::call!(ingress.dispatcher, DispatchMsg::Status) {
                    Ok(s) if s.in_flight + s.queued > 0 => {
                        tokio::time::sleep(Duration::from_millis(20)).await
                    }
                    _ => break,
                }
            }
            let _ = ractor::call!(ingress.sequencer, SequencerMsg::Flush);
            ingress.dispatcher.stop(None);
            ingress.sequencer.stop(None);
        }
        if let Some(pool) = &self.pool {
            // Detectors leave their group as they stop; other nodes' dispatchers send what
            // they held elsewhere.
            pool.stop(None);
        }
        for h in self.handles {
            let _ = h.await;
        }
        self.cluster.shutdown().await;
    }
}

/// Time a shutdown may take beyond its drain: flushing results and leaving the cluster.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

fn unreachable_redis(cfg: &Config) -> String {
    format!(
        "Redis at {} cannot be used; start redis-server or set redis.url",
        crate::redis_conn::redact(&cfg.redis.url)
    )
}

async fn connect_redis(
    cfg: &Config,
) -> anyhow::Result<(redis::Client, redis::aio::ConnectionManager)> {
    crate::redis_conn::connect(&cfg.redis.url, || unreachable_redis(cfg)).await
}

/// Raise this process's soft limit on open files to its hard limit, and return the limit now in
/// force. A node holds a socket per peer, viewer, Redis connection and connection being
/// authenticated, and the usual soft limit (1024) is the first thing a connection flood
/// exhausts.
pub fn raise_open_files_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(limit.rlim_cur)
}

/// ractor wraps start-up errors in its own words, once per actor level; keep the sentence that
/// says what to do.
fn root_cause(message: &str) -> String {
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

#[cfg(test)]
mod tests {
    #[test]
    fn start_up_errors_are_said_once() {
        let nested = "Actor panicked during startup 'Actor panicked during startup 'model x could not be loaded''";
        assert_eq!(super::root_cause(nested), "model x could not be loaded");
        assert_eq!(super::root_cause("plain"), "plain");
    }
}
