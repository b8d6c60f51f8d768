//! One kadr node: wires the source, the detector pool and the sequencer together.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use ractor::{Actor, ActorRef};
use tokio::sync::Semaphore;
use tracing::info;

use crate::config::Config;
use crate::egress::Egress;
use crate::pool::{Pool, PoolArgs, PoolMsg, PoolStatus};
use crate::protocol::Channels;
use crate::runtime;
use crate::sequencer::{Sequencer, SequencerArgs, SequencerMsg};
use crate::source::{Source, SourceArgs, SourceMsg};
use crate::stats::Stats;

/// A running node and handles to its actors.
pub struct Node {
    pub source: ActorRef<SourceMsg>,
    pub pool: ActorRef<PoolMsg>,
    pub sequencer: ActorRef<SequencerMsg>,
    pub stats: Arc<Stats>,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

impl Node {
    /// Start every actor. Fails with a one-sentence reason if the runtime, the model or Redis
    /// is not usable, before any frame is taken in.
    pub async fn start(cfg: &Config) -> anyhow::Result<Node> {
        runtime::environment(cfg.model.onnxruntime_library.as_deref())?;
        let stats = Arc::new(Stats::default());
        let channels = Channels::new(cfg.redis.channel_prefix.clone());
        let redis = redis::Client::open(cfg.redis.url.as_str())
            .with_context(|| format!("redis.url {:?} is not a valid Redis URL", cfg.redis.url))?;
        let unreachable = || {
            format!(
                "Redis at {} is unreachable; start redis-server or set redis.url",
                cfg.redis.url
            )
        };
        let conn = tokio::time::timeout(Duration::from_secs(5), redis.get_connection_manager())
            .await
            .map_err(|_| anyhow!("timed out"))
            .and_then(|r| r.map_err(anyhow::Error::from))
            .with_context(unreachable)?;

        let (sequencer, seq_handle) = Actor::spawn(
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

        let size = cfg.pool_size();
        let (pool, pool_handle) = Actor::spawn(
            None,
            Pool,
            PoolArgs {
                size,
                max_in_flight: cfg.detector.max_in_flight,
                queue_capacity: cfg.limits.queue_capacity,
                model: Arc::new(cfg.model_options()),
                sequencer: sequencer.clone(),
                stats: stats.clone(),
            },
        )
        .await
        .map_err(|e| anyhow!("{}", root_cause(&e.to_string())))?;

        let permits = cfg.limits.queue_capacity + size * cfg.detector.max_in_flight;
        let (source, source_handle) = Actor::spawn(
            None,
            Source,
            SourceArgs {
                redis,
                channels,
                limits: cfg.frame_limits(),
                keep_all_frames: cfg.limits.keep_all_frames,
                max_streams: cfg.limits.max_streams,
                permits: Arc::new(Semaphore::new(permits)),
                pool: pool.clone(),
                sequencer: sequencer.clone(),
                stats: stats.clone(),
            },
        )
        .await
        .with_context(unreachable)?;
        info!(node = %cfg.node.name, detectors = size, model = %cfg.model.path.display(), "node started");
        Ok(Node {
            source,
            pool,
            sequencer,
            stats,
            handles: vec![source_handle, pool_handle, seq_handle],
        })
    }

    pub async fn pool_status(&self) -> anyhow::Result<PoolStatus> {
        Ok(ractor::call!(self.pool, PoolMsg::Status)?)
    }

    /// Stop taking frames in, let the detectors finish what they hold (up to `drain`), publish
    /// everything outstanding, then stop.
    pub async fn shutdown(self, drain: Duration) {
        self.source.stop(None);
        let deadline = Instant::now() + drain;
        while Instant::now() < deadline {
            match self.pool_status().await {
                Ok(s) if s.in_flight + s.queued > 0 => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                _ => break,
            }
        }
        let _ = ractor::call!(self.sequencer, SequencerMsg::Flush);
        self.pool.stop(None);
        self.sequencer.stop(None);
        for h in self.handles {
            let _ = h.await;
        }
        info!(stats = %self.stats, "node stopped");
    }
}

/// ractor wraps start-up errors in its own words; keep the sentence that says what to do.
fn root_cause(message: &str) -> String {
    message
        .rsplit("Actor panicked during pre_start: ")
        .next()
        .unwrap_or(message)
        .trim()
        .to_string()
}
