//! One kadr node: joins the cluster and starts the actors of its roles.
//!
//! - `detector`: the local [`Pool`](crate::pipeline::pool::Pool) of detectors, which serve every source in the cluster.
//! - `source` + `sequencer`: the [`Source`](crate::pipeline::source::Source) reading Redis, the
//!   [`Dispatcher`](crate::pipeline::dispatch::Dispatcher) sending its frames to detectors anywhere, and
//!   the [`Sequencer`](crate::pipeline::sequencer::Sequencer) publishing results in order.
//!
//! They run under one supervision tree ([`crate::supervisor`]). Every node also runs the
//! cluster membership and the admin API.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::cluster::placement::LiveSources;
use crate::cluster::{self, Cluster};
use crate::config::{Config, Role};
use crate::http::admin::{self, AdminHandles};
use crate::model::Backend;
use crate::node_stats::Stats;
use crate::pipeline::lease::Lease;
use crate::pipeline::pool::{PoolArgs, PoolMsg, PoolStatus};
use crate::pipeline::stream_leases::StreamLeases;
use crate::supervisor::{self, IngressArgs, NodeArgs, NodeMsg, Parts};
use crate::task::OwnedTask;

/// A running node and handles to its actors.
pub struct Node {
    name: String,
    /// What runs this node's detectors; `None` without the detector role.
    backend: Option<Backend>,
    stats: Arc<Stats>,
    cluster: Cluster,
    /// The node's actors as they are now (a restart replaces them).
    parts: Parts,
    supervisor: ActorRef<NodeMsg>,
    supervisor_done: tokio::task::JoinHandle<()>,
    stopping: Arc<AtomicBool>,
    failed: watch::Receiver<Option<String>>,
    /// The source lease (source role), released once a shutdown has published everything.
    lease: Option<Lease>,
    /// With `cluster.stream_leases`, the streams' leases instead, released the same way.
    stream_leases: Option<Arc<StreamLeases>>,
    /// The source role's Redis connection, for the admin API (streams' lines and zones).
    redis: Option<crate::redis_conn::RedisConn>,
    admin: Option<admin::Server>,
    /// Hands the memory a burst freed back to the system.
    _give_back_memory: crate::task::OwnedTask,
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
            // What the model file is, before any detector loads it: one kadr cannot read stops
            // the node here, with the reason, rather than serving wrong boxes.
            let model =
                crate::model::ModelInfo::read(&cfg.model.path, cfg.model_options().class_names)?;
            info!(model = %model.summary(), "model recognised");
            Some(b)
        } else {
            None
        };
        let live_sources = LiveSources::default();
        let ingress = if cfg.node.has(Role::Source) {
            let (client, conn) = connect_redis(cfg).await?;
            let lease = Lease::new(
                conn.clone(),
                cfg.channels().source_lease_key(),
                &cfg.node.name,
                cfg.source_lease(),
            );
            let stream_leases = cfg.cluster.stream_leases.then(|| {
                Arc::new(StreamLeases::new(
                    conn.clone(),
                    cfg.channels(),
                    &cfg.node.name,
                    cfg.source_lease(),
                    live_sources.clone(),
                    stats.clone(),
                ))
            });
            Some(IngressArgs {
                cfg: Arc::new(cfg.clone()),
                node: name.clone(),
                scope: scope.clone(),
                client,
                conn,
                lease,
                stream_leases,
                stats: stats.clone(),
            })
        } else {
            None
        };
        let lease = ingress.as_ref().map(|i| i.lease.clone());
        let redis = ingress.as_ref().map(|i| i.conn.clone());
        let stream_leases = ingress.as_ref().and_then(|i| i.stream_leases.clone());
        let (failed_tx, failed) = watch::channel(None);
        let cluster = Cluster::start(
            cfg,
            stats.clone(),
            backend.clone(),
            failed_tx.clone(),
            live_sources,
        )
        .await?;
        let pool = cfg.node.has(Role::Detector).then(|| PoolArgs {
            node: name.clone(),
            scope: scope.clone(),
            size: cfg.pool_size(),
            model: Arc::new(cfg.model_options()),
            stats: stats.clone(),
        });

        let (running, parts) = supervisor::running_channel();
        let stopping = Arc::new(AtomicBool::new(false));
        let (supervisor, supervisor_done) = supervisor::start(NodeArgs {
            pool,
            ingress,
            running,
            stopping: stopping.clone(),
            failed: failed_tx,
            stats: stats.clone(),
        })
        .await?;

        let mut node = Node {
            backend,
            name: cfg.node.name.clone(),
            stats,
            cluster,
            parts,
            supervisor,
            supervisor_done,
            stopping,
            failed,
            lease,
            stream_leases,
            redis,
            admin: None,
            _give_back_memory: crate::memory::give_back_periodically(),
        };
        if let Some(listener) = admin_listener {
            node.admin = Some(admin::Server::start(listener, cfg, node.admin_handles()).await?);
        }
        info!(
            node = %cfg.node.name,
            roles = ?cfg.node.roles,
            detectors = if cfg.node.has(Role::Detector) { cfg.pool_size() } else { 0 },
            "node started"
        );
        Ok(node)
    }

    /// The node's counters, as `/metrics` shows them.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// The detector pool now (detector role), to send it a [`PoolMsg`].
    pub fn pool(&self) -> Option<ActorRef<PoolMsg>> {
        self.parts.pool()
    }

    pub(crate) fn admin_handles(&self) -> AdminHandles {
        AdminHandles {
            node: self.name.clone(),
            backend: self.backend.clone(),
            stats: self.stats.clone(),
            membership: self.cluster.membership_watch(),
            parts: self.parts.clone(),
            stream_leases: self.stream_leases.clone(),
            redis: self.redis.clone(),
        }
    }

    pub async fn pool_status(&self) -> anyhow::Result<Option<PoolStatus>> {
        match self.parts.pool() {
            Some(pool) => Ok(Some(ractor::call!(pool, PoolMsg::Status)?)),
            None => Ok(None),
        }
    }

    /// Resolves when the node has given up: a part kept failing past its restart budget. The
    /// process should exit non-zero so that its own supervisor starts it afresh.
    pub async fn failed(&self) -> String {
        let mut failed = self.failed.clone();
        let why = match failed.wait_for(|f| f.is_some()).await {
            Ok(why) => why.clone().unwrap_or_default(),
            // The supervisor is gone without saying why: that is a failure too.
            Err(_) => "the node's supervisor stopped".into(),
        };
        why
    }

    /// Test hook: kill one of the node's actors as a crash would (`"source"`, `"dispatcher"`,
    /// `"sequencer"` or `"pool"`); the supervision tree restarts it.
    pub fn inject_crash(&self, part: &'static str) {
        let _ = self.supervisor.cast(NodeMsg::Kill(part));
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
        // From here a stopping part is not restarted.
        self.stopping.store(true, Ordering::SeqCst);
        if let Some(admin) = &self.admin {
            admin.stop().await;
        }
        let running = self.parts.now();
        if let Some(leases) = self.stream_leases.as_ref().filter(|l| l.has_peers()) {
            // Hand the streams over while still reading: the other source nodes stop placing
            // streams here at this node's next heartbeat, its placer hands each over (it stops
            // taking its frames, lets those inside finish, releases), and each new holder takes
            // its stream at the next frame. Bounded by the drain.
            self.stats.source_leaving.set(1);
            leases.leave();
            let deadline = tokio::time::Instant::now() + drain.min(leases.ttl() * 3);
            while !leases.held().is_empty() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if let Some(ingress) = &running.ingress {
            // Hold the lease while the frames inside are finished and published, then give it
            // up so that a standby takes over at once, after the last of them.
            // Owned: if this shutdown times out, dropping it stops the renewing too.
            let renewing = match &self.stream_leases {
                Some(leases) => {
                    let leases = leases.clone();
                    Some(OwnedTask::spawn(async move {
                        let mut tick = tokio::time::interval(leases.ttl() / 3);
                        loop {
                            tick.tick().await;
                            leases.renew_held().await;
                        }
                    }))
                }
                None => self.lease.clone().map(|l| {
                    OwnedTask::spawn(async move {
                        l.renew_until_lost().await;
                    })
                }),
            };
            ingress.drain_and_stop(None, drain).await;
            if let Some(task) = renewing {
                task.stop().await;
            }
            if let Some(leases) = &self.stream_leases {
                leases.release_all().await;
            } else if let Some(mut lease) = self.lease.clone() {
                lease.release().await;
            }
        }
        if let Some(pool) = &running.pool {
            // Detectors leave their group as they stop; other nodes' dispatchers send what
            // they held elsewhere.
            let _ = pool.stop_and_wait(None, Some(drain)).await;
        }
        self.supervisor.stop(None);
        let _ = self.supervisor_done.await;
        self.cluster.shutdown().await;
    }
}

/// Time a shutdown may take beyond its drain: flushing results and leaving the cluster.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

async fn connect_redis(
    cfg: &Config,
) -> anyhow::Result<(
    crate::redis_conn::RedisClients,
    crate::redis_conn::RedisConn,
)> {
    let unusable = || crate::redis_conn::unusable(&cfg.redis.url);
    if cfg.redis.cluster {
        let urls = cfg.redis.urls();
        crate::redis_conn::connect_cluster(&urls, &cfg.redis.tls_files(), unusable).await
    } else {
        crate::redis_conn::connect(&cfg.redis.url, &cfg.redis.tls_files(), unusable).await
    }
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
