//! The pipeline: the actors a frame passes through, in its order.
//!
//! ```text
//! Redis ─► source ─► dispatcher ─► detector (any node, in a pool) ─► dispatcher ─► sequencer ─► egress ─► Redis
//! ```
//!
//! - [`source`]: holds the [`lease`] (one source node reads at a time), or with
//!   `cluster.stream_leases` the [`stream_leases`] of the streams placed on this node, validates each message
//!   (from pub/sub, or from Redis Streams through its frames-stream reader), bounds kept frames
//!   ([`kept`]).
//! - [`dispatch`]: sends frames to detectors anywhere, by credits, with a bounded queue;
//!   [`crate::config::live`] says how long a live frame may wait there.
//! - [`pool`] and [`detector`]: a node's detectors, one ONNX Runtime session each.
//! - [`sequencer`]: puts results back in order per stream, gives their objects track ids and
//!   finds their events ([`analytics`]); [`egress`] publishes them.
//! - [`messages`]: what crosses nodes between dispatchers and detectors.
//!
//! Dispatchers and detectors find each other through process groups in the cluster's scope
//! ([`crate::cluster::scope`]): `detectors` holds every detector on every node, and
//! `dispatcher.{node}` the dispatcher of the node a frame came from (results go back to it).

pub(crate) mod analytics;
pub(crate) mod detector;
pub(crate) mod dispatch;
pub(crate) mod egress;
pub(crate) mod kept;
pub(crate) mod lease;
pub(crate) mod messages;
pub(crate) mod pool;
pub(crate) mod sequencer;
pub(crate) mod source;
pub(crate) mod stream_leases;

use ractor::ActorRef;

use messages::DispatchMsg;

/// The group of every detector in the cluster.
pub(crate) const DETECTORS: &str = "detectors";

/// The group of one node's dispatcher.
pub(crate) fn dispatcher_group(node: &str) -> String {
    format!("dispatcher.{node}")
}

/// The dispatcher of `node`, local or remote, if it is in the cluster.
pub(crate) fn dispatcher_of(scope: &str, node: &str) -> Option<ActorRef<DispatchMsg>> {
    ractor::pg::get_scoped_members(&scope.to_string(), &dispatcher_group(node))
        .into_iter()
        .next()
        .map(ActorRef::from)
}
