//! The messages of the two actors that talk across nodes: a source node's dispatcher sends
//! frames to detectors anywhere ([`DetectorMsg::Detect`]), and each detector sends its result
//! back to the frame's dispatcher ([`DispatchMsg::Finished`]). Only those two variants cross the
//! network, encoded here with [`wire`](super::wire); the others are local (ractor gives an actor
//! one message type), so a peer cannot send them. Anything a peer sends that does not decode
//! arrives as `Malformed` and is counted, never trusted.
//!
//! Both actors depend on this module and not on each other.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use ractor::message::{BoxedDowncastErr, SerializedMessage};
use ractor::{Message, RpcReplyPort};
use serde::{Deserialize, Serialize};

use crate::cluster::wire;
use crate::pipeline::kept::KeptPlace;
use crate::protocol::{DetectionsMessage, Frame};

/// A frame this node's source accepted, on its way to a detector.
#[derive(Debug)]
pub(crate) struct Job {
    pub stream: Arc<str>,
    pub frame: Frame,
    /// Never dropped for lateness.
    pub keep: bool,
    /// Held while the frame is inside the node; bounds kept frames (`limits.max_kept_frames`).
    /// Never read: dropping it frees the place.
    #[allow(dead_code)]
    pub permit: Option<KeptPlace>,
    /// When the source accepted it: a live frame's age in the node counts from here.
    pub accepted_at: Instant,
}

/// One frame to detect, as it crosses nodes.
#[derive(Debug, Clone)]
pub struct DetectRequest {
    /// The node whose dispatcher sent it (and wants the result).
    pub origin: Arc<str>,
    pub stream: Arc<str>,
    pub seq: u64,
    pub capture_ts_us: u64,
    pub jpeg: Bytes,
}

impl DetectRequest {
    fn encode(&self) -> Vec<u8> {
        let mut w = wire::Writer::with_capacity(self.jpeg.len() + 64);
        w.short_str(&self.origin)
            .short_str(&self.stream)
            .u64(self.seq)
            .u64(self.capture_ts_us)
            .tail(&self.jpeg);
        w.finish()
    }

    fn decode(args: Vec<u8>) -> Result<Self, String> {
        let mut r = wire::Reader::new(args);
        Ok(Self {
            origin: r.short_str("origin")?.into(),
            stream: r.short_str("stream")?.into(),
            seq: r.u64("seq")?,
            capture_ts_us: r.u64("capture timestamp")?,
            jpeg: r.tail(),
        })
    }
}

/// What a detector made of a frame, sent back to the frame's dispatcher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Finished {
    pub stream: String,
    pub seq: u64,
    /// The node whose detector did it, for the logs and the admin API.
    pub node: String,
    pub result: DetectResult,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum DetectResult {
    Detected(DetectionsMessage),
    /// The frame could not be detected (a JPEG that does not decode, say); `code` is one of
    /// the error codes in docs/protocol.md.
    Failed {
        code: String,
        message: String,
    },
}

pub enum DetectorMsg {
    Detect(DetectRequest),
    /// Test hook for supervision: panic while holding the next frame, as a crashing
    /// inference would. Local only: it cannot be sent over the network.
    PanicOnNextFrame,
    /// A message from a peer that could not be decoded.
    Malformed(String),
}

impl Message for DetectorMsg {
    fn serializable() -> bool {
        true
    }

    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        match self {
            Self::Detect(request) => Ok(wire::cast("detect", request.encode())),
            Self::PanicOnNextFrame | Self::Malformed(_) => Err(BoxedDowncastErr),
        }
    }

    fn deserialize(msg: SerializedMessage) -> Result<Self, BoxedDowncastErr> {
        let decoded = wire::open_cast(msg).and_then(|(variant, args)| match variant.as_str() {
            "detect" => DetectRequest::decode(args).map(Self::Detect),
            other => Err(format!("unknown detector message {other:?}")),
        });
        Ok(decoded.unwrap_or_else(Self::Malformed))
    }
}

pub(crate) enum DispatchMsg {
    /// From the local source.
    Submit(Job),
    /// From a detector, local or remote.
    Finished(Finished),
    /// Periodic: give up frames a silent detector has held past the frame timeout.
    Tick,
    Status(RpcReplyPort<DispatchStatus>),
    /// Reply once no frame is waiting or at a detector (shutdown drains by this).
    Drained(RpcReplyPort<()>),
    /// A message from a peer that could not be decoded.
    Malformed(String),
}

impl Message for DispatchMsg {
    fn serializable() -> bool {
        true
    }

    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        match self {
            Self::Finished(finished) => wire::cast_json("finished", &finished),
            _ => Err(BoxedDowncastErr),
        }
    }

    fn deserialize(msg: SerializedMessage) -> Result<Self, BoxedDowncastErr> {
        let decoded = wire::open_cast(msg).and_then(|(variant, args)| match variant.as_str() {
            "finished" => wire::from_json(&variant, &args).map(Self::Finished),
            other => Err(format!("unknown dispatcher message {other:?}")),
        });
        Ok(decoded.unwrap_or_else(Self::Malformed))
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct DispatchStatus {
    /// Detectors in the cluster this dispatcher can send to.
    pub detectors: usize,
    pub in_flight: usize,
    pub queued: usize,
}
