//! kadr: YOLOv7 object detection for live video, as ractor actors spread over a cluster,
//! around Redis pub/sub.
//!
//! ```text
//!  Redis {prefix}:frames:{stream}
//!         │
//!   ┌ source node ───────────────────────────────────────────────────────────────┐
//!   │ [source] ── validates, registers each frame ──► [sequencer] ──► Redis      │
//!   │     │                                                ▲    {prefix}:detections:{stream}
//!   │     ▼                                                │    {prefix}:errors:{stream}
//!   │ [dispatcher] ── credits, bounded queue ───┐          │                     │
//!   └───────────────────────────────────────────┼──────────┼─────────────────────┘
//!                   frames (ractor_cluster)     ▼          │ results
//!   any node:   [pool] ─supervises─ [detector]×N ──────────┘ (ONNX Runtime, one session each)
//! ```
//!
//! The public API is small, in the style of tokio's mini-redis: what the `kadr` command, the
//! load generator and the tests use. The node's own modules are private to the crate.
//!
//! - [`Node`]: start a node from a [`Config`]; its counters and parts, for tests and the CLI.
//! - [`protocol`]: the wire format on Redis (frames in, results, gaps and errors out).
//! - [`model`]: YOLOv7 through ONNX Runtime, with its pure parts (letterbox, post-processing)
//!   that the conformance suite checks against the reference.
//! - [`client`]: publishers (camera, file, folder, video), a client's tally of a stream's output,
//!   and `kadr bench-model`.
//! - [`jpeg`]: JPEG markers, read without decoding.
//! - [`placement`]: which source node reads which stream (pure; simulated in `loadtest/`).
//! - [`tracker`] and [`analytics`]: track ids per stream, and line crossings and zone visits
//!   on the tracks (pure).
//!
//! Inside the crate: the actors are in `pipeline`, under the `supervisor` tree a `node` starts;
//! membership and the node-to-node wire are in `cluster`; the admin API and viewer in `http`;
//! `config` has one module per section of cluster.toml; `task` owns background work.

#![warn(unreachable_pub)]

pub mod analytics;
pub mod client;
pub mod jpeg;
pub mod kafka;
pub mod model;
pub mod protocol;
pub mod tracker;

mod backoff;
mod cluster;
mod config;
mod http;
mod log_budget;
mod memory;
mod node;
mod node_stats;
mod pipeline;
mod redis_conn;
mod runtime;
mod stream_stats;
mod supervisor;
mod task;
#[cfg(test)]
mod test_redis;

pub use cluster::placement;
pub use config::{Config, ConfigError, Purpose, StreamConfig, StreamsConfig, TrackerConfig};
pub use log_budget::LibraryLogBudget;
pub use node::{raise_open_files_limit, Node};
pub use node_stats::Stats;
pub use pipeline::pool::PoolMsg;
pub use redis_conn::{redact, subscribe, RedisClients, RedisConn, RedisTls};
pub use stream_stats::{percentiles, Percentiles};
pub use task::{OwnedTask, MAX_RESTARTS};
