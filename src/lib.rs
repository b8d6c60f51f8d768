//! kadr: YOLOv7 object detection for live video, as ractor actors around Redis pub/sub.
//!
//! ```text
//! Redis {prefix}:frames:{stream}
//!        │
//!   [source] ── validates, registers each frame ──► [sequencer] ──► Redis {prefix}:detections:{stream}
//!        │                                              ▲           Redis {prefix}:errors:{stream}
//!        ▼                                              │
//!   [pool] ── credits, bounded queue ──► [detector]×N ──┘  (ONNX Runtime, one session each)
//! ```
//!
//! Pure parts (wire format, letterbox, post-processing, ordering) are in [`protocol`],
//! [`model`] and [`sequencer::StreamOrder`], tested without a runtime; the actors are in
//! [`source`], [`pool`], [`detector`] and [`sequencer`].

pub mod config;
pub mod detector;
pub mod egress;
pub mod model;
pub mod node;
pub mod pool;
pub mod protocol;
pub mod runtime;
pub mod sequencer;
pub mod source;
pub mod stats;
pub mod video;
