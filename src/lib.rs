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
//! [`model`] and [`sequencer::StreamOrder`], tested without a runtime; the actors are in
//! [`source`], [`dispatch`], [`pool`], [`detector`] and [`sequencer`]; membership and the
//! node-to-node wire are in [`cluster`]; the HTTP API is [`admin`].

pub mod admin;
pub mod bench;
pub mod cluster;
pub mod config;
pub mod detector;
pub mod dispatch;
pub mod egress;
pub mod kept;
pub mod lease;
pub mod model;
pub mod node;
pub mod pool;
pub mod protocol;
pub mod publish;
pub mod redis_conn;
pub mod runtime;
pub mod sequencer;
pub mod source;
pub mod stats;
pub mod stream_stats;
pub mod video;
pub mod viewer;
