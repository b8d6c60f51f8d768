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
//! Pure parts (wire format, letterbox, post-processing, ordering) are in [`protocol`],
//! [`model`] and [`pipeline::sequencer::StreamOrder`], tested without a runtime; the actors are
//! in [`pipeline`], under the [`supervisor`] tree a [`node`] starts; membership and the
//! node-to-node wire are in [`cluster`]; the admin API and viewer in [`http`]; publishers
//! (camera, file, folder, video), the client-side tally of a stream's output and
//! `kadr bench-model` are in [`client`]; the node's counters in [`node_stats`], its per-stream
//! figures in [`stream_stats`].

pub mod backoff;
pub mod client;
pub mod cluster;
pub mod config;
pub mod http;
pub mod jpeg;
pub mod model;
pub mod node;
pub mod node_stats;
pub mod pipeline;
pub mod protocol;
pub mod redis_conn;
pub mod runtime;
pub mod stream_stats;
pub mod supervisor;
pub mod task;
