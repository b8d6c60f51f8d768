//! The wire format: frame messages in, JSON results out. `docs/protocol.md` is the reference;
//! this module is its only implementation, and everything here is pure (no I/O).
//!
//! Frame message (binary, big-endian), published on `{prefix}:frames:{stream}`:
//!
//! ```text
//! offset size field
//!  0     4    magic "KADR"
//!  4     1    version (1)
//!  5     1    flags (bit 0: KEEP, never drop this frame)
//!  6     2    stream id length L (1..=max_stream_id_bytes)
//!  8     8    sequence number
//! 16     8    capture timestamp, microseconds since the Unix epoch
//! 24     L    stream id, UTF-8
//! 24+L   ..   JPEG bytes, to the end of the message
//! ```

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub const MAGIC: [u8; 4] = *b"KADR";
pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 24;
/// Largest sequence number accepted: 2^53 - 1, the largest integer every JSON client (a
/// JavaScript viewer included) reads exactly. It also leaves the sequencer's `seq + count`
/// arithmetic far from overflow.
pub const MAX_SEQ: u64 = (1 << 53) - 1;
/// Flag bit: the publisher asks that this frame is never dropped (files, not live cameras).
pub const FLAG_KEEP: u8 = 0b0000_0001;

/// How frames reach a node, and results a client: both at once, on the same names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// PUBLISH on a channel: nothing kept, nothing waits.
    #[default]
    PubSub,
    /// XADD to a Redis Stream of the same name: kept until trimmed, read through a consumer
    /// group and acknowledged once the frame's result is out, so no node loss costs a frame.
    Streams,
    /// Produced to a Kafka topic, keyed by the stream id (clients only, so far: docs/protocol.md).
    Kafka,
}

impl std::str::FromStr for Transport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pubsub" => Ok(Self::PubSub),
            "streams" => Ok(Self::Streams),
            "kafka" => Ok(Self::Kafka),
            other => Err(format!(
                "unknown transport {other:?}: pubsub, streams or kafka"
            )),
        }
    }
}

/// Field of a frames stream entry holding the frame message.
pub const FRAME_FIELD: &str = "frame";
/// Fields of a results or errors stream entry: protocol version, and the JSON message.
pub const VERSION_FIELD: &str = "v";
pub const JSON_FIELD: &str = "json";
/// Version of the results and errors entries (the `v` field).
pub const RESULTS_VERSION: u32 = 1;
/// The consumer group the source nodes read frames streams through.
pub const CONSUMER_GROUP: &str = "kadr";
const KNOWN_FLAGS: u8 = FLAG_KEEP;

/// A frame as published, validated. `jpeg` shares the message buffer (no copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub stream: String,
    pub seq: u64,
    pub capture_ts_us: u64,
    pub flags: u8,
    pub jpeg: Bytes,
}

impl Frame {
    pub fn keep(&self) -> bool {
        self.flags & FLAG_KEEP != 0
    }
}

/// Every code a client can receive on `{prefix}:errors:{stream}` (docs/protocol.md lists each;
/// a test keeps the two in step). Serialized in snake_case, as [`ErrorCode::as_str`] gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    Truncated,
    BadMagic,
    BadVersion,
    BadFlags,
    TooLarge,
    BadStreamId,
    StreamMismatch,
    EmptyPayload,
    BadSeq,
    StaleSeq,
    SeqJump,
    SeqRestart,
    BadEntry,
    TooManyStreams,
    ZeroSize,
    ImageTooLarge,
    BadImage,
    DetectorFailed,
    InferenceFailed,
    /// From `kadr publish` about a live source (any publisher may send these).
    SourceOutage,
    SourceResumed,
    /// A frame on a version 1 channel (no braces) at a node on a Redis Cluster, which reads
    /// only version 2 names; told on the version 1 error channel.
    UntaggedChannel,
    /// A stream's state in Redis that cannot be right (its last-seq ahead of anything
    /// published): found, said, and not believed.
    RedisState,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 23] = [
        Self::Truncated,
        Self::BadMagic,
        Self::BadVersion,
        Self::BadFlags,
        Self::TooLarge,
        Self::BadStreamId,
        Self::StreamMismatch,
        Self::EmptyPayload,
        Self::BadSeq,
        Self::StaleSeq,
        Self::SeqJump,
        Self::SeqRestart,
        Self::BadEntry,
        Self::TooManyStreams,
        Self::ZeroSize,
        Self::ImageTooLarge,
        Self::BadImage,
        Self::DetectorFailed,
        Self::InferenceFailed,
        Self::SourceOutage,
        Self::SourceResumed,
        Self::UntaggedChannel,
        Self::RedisState,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::BadMagic => "bad_magic",
            Self::BadVersion => "bad_version",
            Self::BadFlags => "bad_flags",
            Self::TooLarge => "too_large",
            Self::BadStreamId => "bad_stream_id",
            Self::StreamMismatch => "stream_mismatch",
            Self::EmptyPayload => "empty_payload",
            Self::BadSeq => "bad_seq",
            Self::StaleSeq => "stale_seq",
            Self::SeqJump => "seq_jump",
            Self::SeqRestart => "seq_restart",
            Self::BadEntry => "bad_entry",
            Self::TooManyStreams => "too_many_streams",
            Self::ZeroSize => "zero_size",
            Self::ImageTooLarge => "image_too_large",
            Self::BadImage => "bad_image",
            Self::DetectorFailed => "detector_failed",
            Self::InferenceFailed => "inference_failed",
            Self::SourceOutage => "source_outage",
            Self::SourceResumed => "source_resumed",
            Self::UntaggedChannel => "untagged_channel",
            Self::RedisState => "redis_state",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a frame message was refused. Each has a stable `code` for the error channel.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FrameError {
    #[error("message is {len} bytes, shorter than the {HEADER_LEN}-byte header")]
    Truncated { len: usize },
    #[error("bad magic {found:02x?}, expected \"KADR\"")]
    BadMagic { found: [u8; 4] },
    #[error("unsupported version {found}, this node speaks version {VERSION}")]
    BadVersion { found: u8 },
    #[error("unknown flag bits {found:#04x}")]
    BadFlags { found: u8 },
    #[error("message is {len} bytes, over the limit of {limit}")]
    TooLarge { len: usize, limit: usize },
    #[error("stream id is {len} bytes, must be 1..={limit}")]
    BadStreamIdLength { len: usize, limit: usize },
    #[error("stream id is not valid UTF-8")]
    StreamIdNotUtf8,
    #[error("stream id {header:?} does not match the channel's stream {channel:?}")]
    StreamMismatch { header: String, channel: String },
    #[error("message has no JPEG payload")]
    EmptyPayload,
    #[error("sequence number {seq} is over the largest accepted, 2^53 - 1")]
    SeqTooLarge { seq: u64 },
}

impl FrameError {
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::Truncated { .. } => ErrorCode::Truncated,
            FrameError::BadMagic { .. } => ErrorCode::BadMagic,
            FrameError::BadVersion { .. } => ErrorCode::BadVersion,
            FrameError::BadFlags { .. } => ErrorCode::BadFlags,
            FrameError::TooLarge { .. } => ErrorCode::TooLarge,
            FrameError::BadStreamIdLength { .. } => ErrorCode::BadStreamId,
            FrameError::StreamIdNotUtf8 => ErrorCode::BadStreamId,
            FrameError::StreamMismatch { .. } => ErrorCode::StreamMismatch,
            FrameError::EmptyPayload => ErrorCode::EmptyPayload,
            FrameError::SeqTooLarge { .. } => ErrorCode::BadSeq,
        }
    }
}

/// Limits applied while parsing; every size read from the network is checked against one.
#[derive(Debug, Clone, Copy)]
pub struct FrameLimits {
    pub max_message_bytes: usize,
    pub max_stream_id_bytes: usize,
}

/// Parse and validate a frame message. Never panics, whatever the bytes.
///
/// `channel_stream` is the stream named by the channel the message came on; the header must agree
/// with it, so that errors always land on the channel a publisher listens to.
pub fn parse_frame(
    message: Bytes,
    channel_stream: &str,
    limits: FrameLimits,
) -> Result<Frame, FrameError> {
    let len = message.len();
    if len > limits.max_message_bytes {
        return Err(FrameError::TooLarge {
            len,
            limit: limits.max_message_bytes,
        });
    }
    if len < HEADER_LEN {
        return Err(FrameError::Truncated { len });
    }
    let h = &message[..HEADER_LEN];
    let magic: [u8; 4] = h[0..4].try_into().expect("4 bytes");
    if magic != MAGIC {
        return Err(FrameError::BadMagic { found: magic });
    }
    if h[4] != VERSION {
        return Err(FrameError::BadVersion { found: h[4] });
    }
    let flags = h[5];
    if flags & !KNOWN_FLAGS != 0 {
        return Err(FrameError::BadFlags { found: flags });
    }
    let id_len = u16::from_be_bytes([h[6], h[7]]) as usize;
    if id_len == 0 || id_len > limits.max_stream_id_bytes {
        return Err(FrameError::BadStreamIdLength {
            len: id_len,
            limit: limits.max_stream_id_bytes,
        });
    }
    let seq = u64::from_be_bytes(h[8..16].try_into().expect("8 bytes"));
    if seq > MAX_SEQ {
        return Err(FrameError::SeqTooLarge { seq });
    }
    let capture_ts_us = u64::from_be_bytes(h[16..24].try_into().expect("8 bytes"));
    if len < HEADER_LEN + id_len {
        return Err(FrameError::Truncated { len });
    }
    let stream = std::str::from_utf8(&message[HEADER_LEN..HEADER_LEN + id_len])
        .map_err(|_| FrameError::StreamIdNotUtf8)?;
    if stream != channel_stream {
        return Err(FrameError::StreamMismatch {
            header: stream.to_owned(),
            channel: channel_stream.to_owned(),
        });
    }
    let stream = stream.to_owned();
    let jpeg = message.slice(HEADER_LEN + id_len..);
    if jpeg.is_empty() {
        return Err(FrameError::EmptyPayload);
    }
    Ok(Frame {
        stream,
        seq,
        capture_ts_us,
        flags,
        jpeg,
    })
}

/// Write a frame message into `out` (cleared first), so publishers can reuse one buffer.
pub fn encode_frame(
    out: &mut Vec<u8>,
    stream: &str,
    seq: u64,
    capture_ts_us: u64,
    flags: u8,
    jpeg: &[u8],
) {
    let id = stream.as_bytes();
    let id_len = u16::try_from(id.len()).expect("stream id longer than 65535 bytes");
    out.clear();
    out.reserve(HEADER_LEN + id.len() + jpeg.len());
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(flags);
    out.extend_from_slice(&id_len.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&capture_ts_us.to_be_bytes());
    out.extend_from_slice(id);
    out.extend_from_slice(jpeg);
}

/// Channel and key names, all under one configurable prefix. A Redis Stream carries the same
/// name as its channel (keys and channels are apart in Redis): `{prefix}:frames:{stream}` is
/// both the channel and the stream a camera may publish to.
///
/// Version 2 names ([`Channels::tagged`], used against a Redis Cluster) put the stream in
/// braces, `kadr:frames:{cam-1}`: a Redis Cluster hashes only what is inside the first braces,
/// so every key of one stream lands on one shard, and a step that touches several of them (the
/// sequencer's publish) is allowed. Version 1 names (the default, one Redis) have no braces.
#[derive(Debug, Clone)]
pub struct Channels {
    prefix: String,
    tagged: bool,
}

impl Channels {
    /// Version 1 names: `{prefix}:frames:{stream}` with the stream as it is.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            tagged: false,
        }
    }
    /// Version 2 names: the stream in braces, a Redis Cluster hash tag.
    pub fn tagged(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            tagged: true,
        }
    }
    /// Version 2 names if `tagged`, else version 1.
    pub fn with_tags(prefix: impl Into<String>, tagged: bool) -> Self {
        Self {
            prefix: prefix.into(),
            tagged,
        }
    }
    pub fn is_tagged(&self) -> bool {
        self.tagged
    }
    fn name(&self, kind: &str, stream: &str) -> String {
        if self.tagged {
            format!("{}:{kind}:{{{stream}}}", self.prefix)
        } else {
            format!("{}:{kind}:{stream}", self.prefix)
        }
    }
    /// Pattern the source subscribes to (both protocols' names match it).
    pub fn frames_pattern(&self) -> String {
        format!("{}:frames:*", self.prefix)
    }
    pub fn frames(&self, stream: &str) -> String {
        self.name("frames", stream)
    }
    pub fn detections(&self, stream: &str) -> String {
        self.name("detections", stream)
    }
    pub fn errors(&self, stream: &str) -> String {
        self.name("errors", stream)
    }
    /// A stream's line crossings and zone visits (`[streams."ID".analytics]`), in order: a
    /// pub/sub channel, and over Redis Streams also a Redis stream of the same name.
    pub fn events(&self, stream: &str) -> String {
        self.name("events", stream)
    }
    /// The error channel of a stream named by raw bytes (a channel need not be UTF-8);
    /// `untagged`: the version 1 name whatever these names are, for a publisher of version 1 names.
    pub fn errors_of_bytes(&self, stream: &[u8], untagged: bool) -> Vec<u8> {
        self.name_of_bytes("errors", stream, untagged)
    }
    /// The frames channel of a stream named by raw bytes (a Kafka message's key), as the
    /// source takes frames in: [`Channels::stream_of`] gives the bytes back.
    pub fn frames_of_bytes(&self, stream: &[u8]) -> Vec<u8> {
        self.name_of_bytes("frames", stream, false)
    }
    fn name_of_bytes(&self, kind: &str, stream: &[u8], untagged: bool) -> Vec<u8> {
        let mut name = format!("{}:{kind}:", self.prefix).into_bytes();
        let tagged = self.tagged && !untagged;
        if tagged {
            name.push(b'{');
        }
        name.extend_from_slice(stream);
        if tagged {
            name.push(b'}');
        }
        name
    }
    /// Key holding the last sequence number published for a stream, so a source node that
    /// takes over can report what was lost in between.
    pub fn last_seq_key(&self, stream: &str) -> String {
        self.name("last-seq", stream)
    }
    /// Pattern of every stream's last-seq key, and the stream of one such key.
    pub fn last_seq_pattern(&self) -> String {
        format!("{}:last-seq:*", self.prefix)
    }
    pub fn stream_of_last_seq_key<'a>(&self, key: &'a str) -> Option<&'a str> {
        let rest = key
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(":last-seq:")?;
        if self.tagged {
            rest.strip_prefix('{')?.strip_suffix('}')
        } else {
            Some(rest)
        }
    }
    /// Key holding a stream's tracker (its tracks and next id), written with each result, so
    /// a source node that takes over carries on with the same track ids.
    pub fn tracker_key(&self, stream: &str) -> String {
        self.name("tracker", stream)
    }
    /// Key holding a stream's analytics (counts, each object's place towards its lines and
    /// zones), written with each result beside its tracker.
    pub fn analytics_key(&self, stream: &str) -> String {
        self.name("analytics", stream)
    }
    /// Key holding a stream's lines and zones as set through the admin API (JSON), which
    /// replace its `cluster.toml` ones on whichever node holds the stream.
    pub fn geometry_key(&self, stream: &str) -> String {
        self.name("geometry", stream)
    }
    /// Key of the lease that lets one source node at a time read the frames channels.
    pub fn source_lease_key(&self) -> String {
        format!("{}:source-lease", self.prefix)
    }
    /// Key of a stream's own lease (with `cluster.stream_leases`): the source node holding it
    /// reads and sequences the stream.
    pub fn stream_lease_key(&self, stream: &str) -> String {
        self.name("lease", stream)
    }
    /// Key naming the source node that asks for a stream another node holds (with
    /// `cluster.stream_leases`): the holder hands a stream over only to a node that asks.
    pub fn stream_want_key(&self, stream: &str) -> String {
        self.name("want", stream)
    }
    /// The stream part of a frames channel, as raw bytes (a channel need not be UTF-8); with
    /// version 2 names, what is inside the braces (a name without them is not one of ours:
    /// see [`Channels::untagged_stream_of`]).
    pub fn stream_of<'a>(&self, channel: &'a [u8]) -> Option<&'a [u8]> {
        let rest = channel
            .strip_prefix(self.prefix.as_bytes())?
            .strip_prefix(b":frames:")?;
        if self.tagged {
            untag(rest)
        } else {
            Some(rest)
        }
    }
    /// With version 2 names: the stream of a version 1 frames channel (no braces), whose
    /// publisher must be told to use the new name. None with version 1 names.
    pub fn untagged_stream_of<'a>(&self, channel: &'a [u8]) -> Option<&'a [u8]> {
        let rest = channel
            .strip_prefix(self.prefix.as_bytes())?
            .strip_prefix(b":frames:")?;
        (self.tagged && untag(rest).is_none()).then_some(rest)
    }
    /// Which kind of output channel `channel` is, and its stream (for clients that subscribe
    /// to a pattern).
    pub fn output_stream_of<'a>(&self, channel: &'a [u8]) -> Option<(OutputChannel, &'a [u8])> {
        let rest = channel.strip_prefix(self.prefix.as_bytes())?;
        let (kind, stream) = if let Some(stream) = rest.strip_prefix(b":detections:") {
            (OutputChannel::Detections, stream)
        } else {
            (OutputChannel::Errors, rest.strip_prefix(b":errors:")?)
        };
        // An error for a version 1 publisher is on the untagged name, even here.
        let stream = if self.tagged {
            untag(stream).unwrap_or(stream)
        } else {
            stream
        };
        Some((kind, stream))
    }
}

/// `{name}` to `name`; None if not in braces (or empty inside).
fn untag(s: &[u8]) -> Option<&[u8]> {
    s.strip_prefix(b"{")?
        .strip_suffix(b"}")
        .filter(|inner| !inner.is_empty())
}

/// The two channels a node publishes on for each stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputChannel {
    Detections,
    Errors,
}

/// One detected object, in source-frame pixels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub class_id: u32,
    pub class: String,
    pub score: f32,
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// The object's id on this stream, from the node's tracker (`[tracker]`): the same object
    /// keeps it from frame to frame. Left out for a detection no track follows (a low score,
    /// an object seen once) and when the tracker is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_id: Option<u64>,
}

/// Everything published on a stream's detections channel, in sequence order.
/// Every accepted sequence number appears exactly once, as `detections` or inside a `gap`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputMessage {
    Detections(DetectionsMessage),
    Gap(GapMessage),
}

impl OutputMessage {
    /// The sequence numbers this message accounts for: first and last.
    pub fn seqs(&self) -> (u64, u64) {
        match self {
            Self::Detections(d) => (d.seq, d.seq),
            Self::Gap(g) => (g.seq, g.seq + g.count.saturating_sub(1)),
        }
    }

    pub fn epoch(&self) -> u64 {
        match self {
            Self::Detections(d) => d.epoch,
            Self::Gap(g) => g.epoch,
        }
    }

    pub fn stream(&self) -> &str {
        match self {
            Self::Detections(d) => &d.stream,
            Self::Gap(g) => &g.stream,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectionsMessage {
    pub stream: String,
    pub seq: u64,
    pub capture_ts_us: u64,
    pub done_ts_us: u64,
    pub model: String,
    pub width: u32,
    pub height: u32,
    pub detections: Vec<Detection>,
    /// How long the frame waited in the source node for a detector, and how long it was at
    /// one (transfer, decode, inference), in milliseconds; set by the node that accepted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detect_ms: Option<f64>,
    /// Which numbering of the stream `seq` belongs to: 0 at first, one more each time the
    /// publisher's numbering restarts (a camera rebooted). Left out while 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub epoch: u64,
}

impl DetectionsMessage {
    /// A result with no boxes (tests, examples).
    pub fn without_boxes(stream: &str, seq: u64) -> Self {
        Self {
            stream: stream.into(),
            seq,
            capture_ts_us: 0,
            done_ts_us: 0,
            model: String::new(),
            width: 0,
            height: 0,
            detections: Vec::new(),
            queued_ms: None,
            detect_ms: None,
            epoch: 0,
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Why sequence numbers have no detections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GapReason {
    /// Dropped by the node because the detectors fell behind a live stream.
    Dropped,
    /// The detector failed on it (undecodable image, inference error, crashed detector).
    Failed,
    /// Accepted but no result came back within the gap wait.
    Lost,
    /// Never received: the sequence numbers jumped over it.
    Missing,
}

/// `count` consecutive sequence numbers from `seq` that have no detections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GapMessage {
    pub stream: String,
    pub seq: u64,
    pub count: u64,
    pub reason: GapReason,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// As in [`DetectionsMessage::epoch`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub epoch: u64,
}

/// Published on `{prefix}:errors:{stream}` for a message the node refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorMessage {
    #[serde(rename = "type")]
    pub kind: String,
    pub stream: String,
    pub seq: Option<u64>,
    pub code: String,
    pub message: String,
}

impl ErrorMessage {
    pub fn new(stream: &str, seq: Option<u64>, code: ErrorCode, message: String) -> Self {
        Self::with_code(stream, seq, code.as_str(), message)
    }

    /// With a code as text: one a remote detector sent (a newer node may know more codes).
    pub fn with_code(stream: &str, seq: Option<u64>, code: &str, message: String) -> Self {
        Self {
            kind: "error".into(),
            stream: stream.into(),
            seq,
            code: code.into(),
            message,
        }
    }
}

pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_code_is_documented_and_serialized_as_documented() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/protocol.md"))
            .unwrap();
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{code}\""));
            // A row of one of the tables of error codes names it in backticks.
            let documented = doc
                .lines()
                .any(|l| l.starts_with("| `") && l.contains(&format!("`{code}`")));
            assert!(documented, "error code {code} is not in docs/protocol.md");
        }
    }

    const LIMITS: FrameLimits = FrameLimits {
        max_message_bytes: 1024,
        max_stream_id_bytes: 16,
    };

    fn message(stream: &str, jpeg: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(&mut out, stream, 42, 1_700_000_000_000_000, FLAG_KEEP, jpeg);
        out
    }

    #[test]
    fn sequence_numbers_past_json_safe_integers_are_refused() {
        let frame = |seq| {
            let mut out = Vec::new();
            encode_frame(&mut out, "cam1", seq, 0, 0, b"\xff\xd8jpeg");
            parse_frame(Bytes::from(out), "cam1", LIMITS)
        };
        assert_eq!(frame(MAX_SEQ).unwrap().seq, MAX_SEQ);
        for seq in [MAX_SEQ + 1, u64::MAX - 10, u64::MAX] {
            let err = frame(seq).unwrap_err();
            assert_eq!(err, FrameError::SeqTooLarge { seq });
            assert_eq!(err.code(), ErrorCode::BadSeq);
        }
    }

    #[test]
    fn round_trip() {
        let m = message("cam1", b"\xff\xd8jpeg");
        let f = parse_frame(Bytes::from(m), "cam1", LIMITS).unwrap();
        assert_eq!(f.stream, "cam1");
        assert_eq!(f.seq, 42);
        assert_eq!(f.capture_ts_us, 1_700_000_000_000_000);
        assert!(f.keep());
        assert_eq!(&f.jpeg[..], b"\xff\xd8jpeg");
    }

    #[test]
    fn refuses_every_malformed_header() {
        let good = message("cam1", b"x");
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (good[..10].to_vec(), "truncated"),
            (vec![], "truncated"),
            ([b"KADX".as_slice(), &good[4..]].concat(), "bad_magic"),
            (
                {
                    let mut m = good.clone();
                    m[4] = 2;
                    m
                },
                "bad_version",
            ),
            (
                {
                    let mut m = good.clone();
                    m[5] = 0x80;
                    m
                },
                "bad_flags",
            ),
            (
                {
                    let mut m = good.clone();
                    m[6] = 0;
                    m[7] = 0;
                    m
                },
                "bad_stream_id",
            ),
            (
                {
                    let mut m = good.clone();
                    m[6] = 0xff;
                    m
                },
                "bad_stream_id",
            ),
            (
                {
                    let mut m = good.clone();
                    m[7] = 5;
                    m
                },
                "stream_mismatch",
            ),
            (
                {
                    let mut m = good.clone();
                    m[24] = 0xff;
                    m
                },
                "bad_stream_id",
            ),
            (message("cam1", b""), "empty_payload"),
            (message("cam1", &[0u8; 1100]), "too_large"),
            (
                {
                    let mut m = good.clone();
                    m.truncate(26);
                    m[7] = 16;
                    m
                },
                "truncated",
            ),
        ];
        for (bytes, code) in cases {
            let err = parse_frame(Bytes::from(bytes.clone()), "cam1", LIMITS).unwrap_err();
            assert_eq!(err.code().as_str(), code, "{bytes:?} gave {err}");
        }
    }

    #[test]
    fn parse_never_panics_on_any_prefix_or_byte_flip() {
        let good = message("cam1", b"\xff\xd8\xff\xd9");
        for cut in 0..good.len() {
            let _ = parse_frame(Bytes::copy_from_slice(&good[..cut]), "cam1", LIMITS);
        }
        for i in 0..good.len() {
            for v in [0u8, 1, 0x7f, 0x80, 0xff] {
                let mut m = good.clone();
                m[i] = v;
                let _ = parse_frame(Bytes::from(m), "cam1", LIMITS);
            }
        }
    }

    #[test]
    fn channels() {
        let c = Channels::new("kadr");
        assert_eq!(c.frames("a"), "kadr:frames:a");
        assert_eq!(c.stream_of(b"kadr:frames:a:b"), Some(&b"a:b"[..]));
        assert_eq!(c.stream_of(b"other:frames:a"), None);
        assert_eq!(c.untagged_stream_of(b"kadr:frames:a"), None);

        // Protocol 3: every name of a stream hashes to one Redis Cluster slot.
        let t = Channels::tagged("kadr");
        assert_eq!(t.frames("cam-1"), "kadr:frames:{cam-1}");
        assert_eq!(t.detections("cam-1"), "kadr:detections:{cam-1}");
        assert_eq!(t.last_seq_key("cam-1"), "kadr:last-seq:{cam-1}");
        assert_eq!(t.stream_lease_key("cam-1"), "kadr:lease:{cam-1}");
        assert_eq!(t.stream_of(b"kadr:frames:{cam-1}"), Some(&b"cam-1"[..]));
        assert_eq!(t.stream_of(b"kadr:frames:cam-1"), None);
        assert_eq!(t.stream_of(b"kadr:frames:{}"), None);
        assert_eq!(
            t.untagged_stream_of(b"kadr:frames:cam-1"),
            Some(&b"cam-1"[..])
        );
        assert_eq!(t.untagged_stream_of(b"kadr:frames:{cam-1}"), None);
        assert_eq!(t.errors_of_bytes(b"c", false), b"kadr:errors:{c}");
        assert_eq!(t.errors_of_bytes(b"c", true), b"kadr:errors:c");
        for names in [&t, &Channels::new("kadr")] {
            let channel = names.frames_of_bytes(b"\xffcam");
            assert_eq!(names.stream_of(&channel), Some(&b"\xffcam"[..]));
        }
        assert_eq!(
            t.output_stream_of(b"kadr:detections:{c}"),
            Some((OutputChannel::Detections, &b"c"[..]))
        );
        assert_eq!(
            t.output_stream_of(b"kadr:errors:c"),
            Some((OutputChannel::Errors, &b"c"[..]))
        );
    }

    #[test]
    fn output_json_shape() {
        let m = OutputMessage::Gap(GapMessage {
            stream: "s".into(),
            seq: 3,
            count: 2,
            reason: GapReason::Dropped,
            detail: None,
            epoch: 0,
        });
        let j = serde_json::to_value(&m).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"type":"gap","stream":"s","seq":3,"count":2,"reason":"dropped"})
        );
    }
}
