//! The client side: what publishes frames to a cluster and reads its results back, beside the
//! node (`pipeline`, `cluster`, `http`). It serves the `kadr publish`, `kadr subscribe` and
//! `kadr bench-model` commands and the load generator; a node runs none of it.
//!
//! - [`publish`]: publishers (camera, file, folder, video through FFmpeg).
//! - [`tally`]: a client's tally of one stream's output (order, gaps, latency).
//! - [`bench`]: the model alone with a node's settings (`kadr bench-model`).

pub mod bench;
pub mod publish;
pub mod tally;
