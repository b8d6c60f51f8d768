//! The source: takes frame messages in from Redis pub/sub, validates them, registers them with
//! the sequencer, and submits them to the dispatcher.
//!
//! A pump task owns the pub/sub connection (reconnecting with backoff) and hands each message to
//! the actor with a `call`, one at a time. Kept frames take a place ([`crate::pipeline::kept`]); one that
//! finds none (the node holds `limits.max_kept_frames` already, or its stream its fair share of
//! them) is shed as a `dropped` gap with the reason, since Redis's client reads on into a buffer
//! of its own whether we read or not. Nothing here is unbounded.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::jpeg;
use crate::log_budget::{LogBudget, Verdict};
use crate::model::{check_size, JpegDecoder};
use crate::node_stats::Stats;
use crate::pipeline::dispatch::{DispatchMsg, Job};
use crate::pipeline::egress::STREAM_IDLE_FORGET;
use crate::pipeline::kept::{KeptFrames, KeptPlace};
use crate::pipeline::lease::Lease;
use crate::pipeline::sequencer::{Outcome, SequencerMsg};
use crate::pipeline::stream_leases::StreamLeases;
use crate::protocol::{
    parse_frame, Channels, ErrorCode, ErrorMessage, Frame, FrameLimits, GapReason, FRAME_FIELD,
};
use crate::redis_conn;
use crate::task::OwnedTask;
use frames_stream::read_frames_streams;
pub(crate) use frames_stream::StreamsReading;
pub(crate) use kafka::KafkaReading;

/// The reader of frames streams: part of the source (it hands entries to this actor).
mod frames_stream;
/// The reader of Kafka's frames topic (`[kafka]`), likewise.
mod kafka;

pub(crate) enum SourceMsg {
    /// One frame message: the channel it came on (or the frames stream it was read from, of
    /// the same name) and its payload.
    Message {
        channel: Vec<u8>,
        payload: Bytes,
        /// Read from a frames stream: the entry, acknowledged once its frame is accounted for.
        entry: Option<StreamEntry>,
        /// Heard by this node alone (read from Kafka, whose consumer group gives each
        /// partition to one node): the node answers it, and takes its stream if free, whatever
        /// the placement says. Over pub/sub every source node hears every message.
        only_here: bool,
        done: RpcReplyPort<Taken>,
    },
    /// This node no longer reads the stream (`cluster.stream_leases`): forget where it stood.
    Forget(Arc<str>),
    /// A frames stream entry without a `frame` field: refused (its entry is acknowledged).
    BadEntry {
        channel: Vec<u8>,
        id: String,
        done: RpcReplyPort<()>,
    },
    /// Something found about a frames stream that its publisher must hear: refused with
    /// `code` on the stream's error channel (with `RedisState`, counted as such too).
    Refuse {
        channel: Vec<u8>,
        code: ErrorCode,
        message: String,
        done: RpcReplyPort<()>,
    },
}

/// A frame read from a Redis Stream.
#[derive(Debug)]
pub(crate) struct StreamEntry {
    pub id: Arc<str>,
    /// Claimed from the pending entries of a node that stopped (or of this node's previous
    /// reader): it may be a frame this node has inside already.
    pub claimed: bool,
    /// A kept frame's place, taken by the reader before it read on: over Streams a kept frame
    /// waits in Redis for room, it is never shed for it.
    pub place: Option<KeptPlace>,
}

/// What became of a frame message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Taken {
    /// Registered with the sequencer: its entry is acknowledged when its result is published.
    Accepted,
    /// Refused (an error was published): its entry can be acknowledged now.
    Refused,
    /// A claimed entry of a frame this node holds already: its result will acknowledge it.
    Inside,
    /// A frame of a stream another node reads (`cluster.stream_leases`): left alone.
    Elsewhere,
}

impl ractor::Message for SourceMsg {}

pub(crate) struct SourceArgs {
    pub redis: redis_conn::RedisClients,
    /// Only the holder of this lease reads the frames channels.
    pub lease: Lease,
    /// With `cluster.stream_leases`: only the streams this node holds, instead.
    pub stream_leases: Option<Arc<StreamLeases>>,
    pub channels: Channels,
    pub limits: FrameLimits,
    pub keep_all_frames: bool,
    pub max_streams: usize,
    /// A sequence number further than this ahead of its stream's last is refused until it is
    /// confirmed by consecutive frames (`limits.max_seq_jump`).
    pub max_seq_jump: u64,
    /// Kept frames the node holds at most (`limits.max_kept_frames`).
    pub max_kept_frames: usize,
    /// Largest frame accepted, width x height, read from the JPEG header (`limits.max_pixels`).
    pub max_pixels: u64,
    /// How frames streams are read (`[redis]`).
    pub streams: StreamsReading,
    /// Frames from Kafka as well (`[kafka]`; needs a lease per stream).
    pub kafka: Option<KafkaReading>,
    pub dispatcher: ActorRef<DispatchMsg>,
    pub sequencer: ActorRef<SequencerMsg>,
    pub stats: Arc<Stats>,
    /// How many refusals are logged (the rest are counted).
    pub refusals: LogBudget<ErrorCode>,
}

pub(crate) struct SourceState {
    args: SourceArgs,
    /// Where each stream's numbering stands.
    last_seq: HashMap<Arc<str>, StreamSeen>,
    /// Reused for every header check.
    jpeg: JpegDecoder,
    /// One per kept frame inside the node (`max_kept_frames` in all, shared fairly by
    /// stream); a frame's job holds its place until the frame is done.
    kept: Arc<KeptFrames>,
    /// Owned: a source killed by its supervisor runs no `post_stop`, and its pump must not
    /// outlive it, holding the subscription and renewing the lease its successor is taking.
    pump: Option<OwnedTask>,
    /// The Kafka reader, owned likewise (its consumer leaves the group when it is dropped).
    kafka: Option<OwnedTask>,
}

pub(crate) struct Source;

impl Actor for Source {
    type Msg = SourceMsg;
    type State = SourceState;
    type Arguments = SourceArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SourceArgs,
    ) -> Result<SourceState, ActorProcessingErr> {
        let kept = KeptFrames::new(args.max_kept_frames);
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let pump = OwnedTask::spawn(pump(
            myself.clone(),
            args.redis.clone(),
            args.lease.clone(),
            ready_tx,
            args.stats.clone(),
            FramesStreams {
                source: myself.clone(),
                channels: args.channels.clone(),
                reading: args.streams.clone(),
                kept: kept.clone(),
                leases: args.stream_leases.clone(),
            },
        ));
        // Return once subscribed (or standing by), so frames published after start-up are seen.
        let _ = tokio::time::timeout(Duration::from_secs(5), ready).await;
        let kafka = args.kafka.clone().map(|reading| {
            OwnedTask::spawn(kafka::read_kafka(
                myself.clone(),
                args.channels.clone(),
                reading,
                args.stats.clone(),
            ))
        });
        Ok(SourceState {
            kept,
            jpeg: JpegDecoder::with_max_pixels(args.max_pixels)?,
            args,
            last_seq: HashMap::new(),
            pump: Some(pump),
            kafka,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: SourceMsg,
        state: &mut SourceState,
    ) -> Result<(), ActorProcessingErr> {
        state.args.stats.received.inc();
        match msg {
            SourceMsg::Message {
                channel,
                payload,
                entry,
                only_here,
                done,
            } => {
                let taken = state.take_in(&channel, payload, entry, only_here).await;
                let _ = done.send(taken);
            }
            SourceMsg::Forget(stream) => {
                state.last_seq.remove(&stream);
                let _ = state.args.sequencer.cast(SequencerMsg::Forget(stream));
            }
            SourceMsg::BadEntry { channel, id, done } => {
                let channel_stream = state.args.channels.stream_of(&channel).unwrap_or_default();
                refuse(
                    &state.args,
                    channel_stream,
                    None,
                    ErrorCode::BadEntry,
                    format!(
                        "frames stream entry {id} has no `{FRAME_FIELD}` field holding a frame message"
                    ),
                );
                let _ = done.send(());
            }
            SourceMsg::Refuse {
                channel,
                code,
                message,
                done,
            } => {
                let channel_stream = state.args.channels.stream_of(&channel).unwrap_or_default();
                if code == ErrorCode::RedisState {
                    state.args.stats.redis_state_refused.inc();
                }
                refuse(&state.args, channel_stream, None, code, message);
                let _ = done.send(());
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut SourceState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(pump) = state.pump.take() {
            pump.stop().await;
        }
        if let Some(kafka) = state.kafka.take() {
            kafka.stop().await;
        }
        // The lease is kept: the node releases it once the frames inside are published (a
        // standby taking over sooner would report them as missing, and they would be fenced).
        Ok(())
    }
}

/// What the frames streams reader needs, started while the lease is held.
struct FramesStreams {
    source: ActorRef<SourceMsg>,
    channels: Channels,
    reading: StreamsReading,
    kept: Arc<KeptFrames>,
    leases: Option<Arc<StreamLeases>>,
}

/// Hold the source lease and, while holding it, read pub/sub messages and frames streams;
/// reconnect with backoff when Redis goes away; stand by while another node holds the lease.
async fn pump(
    source: ActorRef<SourceMsg>,
    redis: redis_conn::RedisClients,
    mut lease: Lease,
    ready: tokio::sync::oneshot::Sender<()>,
    stats: Arc<Stats>,
    streams: FramesStreams,
) {
    let pattern = streams.channels.frames_pattern();
    const FIRST_BACKOFF: Duration = Duration::from_millis(250);
    let mut ready = Some(ready);
    let mut signal_ready = || {
        if let Some(r) = ready.take() {
            let _ = r.send(());
        }
    };
    let mut backoff = Backoff::new(FIRST_BACKOFF, redis_conn::RETRY_DELAY);
    let mut outage = Outage::default();
    let mut standing_by = false;
    // Whether this node held the lease when it last looked, whether this is its first look,
    // and whether (standing by) it found the lease free last time: see `lease`'s module doc.
    let (mut held_last, mut first_look, mut seen_free) = (false, true, false);
    loop {
        let per_stream = streams.leases.clone();
        let held = if per_stream.is_some() {
            // Each stream has its lease: every source node reads.
            Ok(true)
        } else if held_last || first_look || seen_free {
            // Still ours (the pub/sub connection dropped, not the lease), taken back after a
            // Redis restart, or free to take.
            lease.renew().await
        } else {
            lease.is_free().await.map(|free| {
                seen_free = free;
                false
            })
        };
        if held.is_ok() {
            first_look = false;
        }
        match held {
            Ok(true) => {
                (standing_by, held_last, seen_free) = (false, true, false);
            }
            Ok(false) => {
                held_last = false;
                outage.over(&stats);
                if let Some((holder, left_ms)) = lease.clear_if_forged().await {
                    stats.redis_state_refused.inc();
                    warn!(%holder, left_ms, "the source lease named a holder for longer than any node holds it (forged): deleted; taking it");
                    seen_free = true;
                    continue;
                }
                if !standing_by {
                    let holder = lease.holder().await.unwrap_or_default();
                    info!(%holder, "standing by: another source node reads the frames");
                    standing_by = true;
                }
                signal_ready();
                tokio::time::sleep(lease.ttl() / 3).await;
                continue;
            }
            Err(e) => {
                let wait = backoff.next_wait();
                outage.failed(&stats, &e.to_string(), wait);
                signal_ready();
                tokio::time::sleep(wait).await;
                continue;
            }
        }
        let mut conn = match redis.subscribe(&[], &[&pattern]).await {
            Ok(c) => c,
            Err(e) => {
                let wait = backoff.next_wait();
                outage.failed(&stats, &e.to_string(), wait);
                if per_stream.is_none() {
                    lease.release().await;
                }
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        outage.over(&stats);
        backoff.reset();
        info!(%pattern, "source holds the lease and reads frames");
        signal_ready();
        // Renew from a task of its own, so no slow message can make the lease run out.
        let (lost_tx, mut lost) = tokio::sync::oneshot::channel::<String>();
        let _renewer = match per_stream.clone() {
            // The streams' leases are renewed, taken and handed over by the placer; the
            // channel stays open as long as it runs.
            Some(leases) => OwnedTask::spawn(place_streams(
                leases,
                source.clone(),
                stats.clone(),
                lost_tx,
            )),
            None => {
                let renewing = lease.clone();
                OwnedTask::spawn(async move {
                    let _ = lost_tx.send(renewing.renew_until_lost().await);
                })
            }
        };
        // Frames streams are read only while the lease is held, like the channels: the reader
        // is dropped (aborted) with this loop.
        let _streams_reader = OwnedTask::spawn(read_frames_streams(
            streams.source.clone(),
            redis.clone(),
            streams.channels.clone(),
            streams.reading.clone(),
            streams.kept.clone(),
            per_stream,
        ));
        let mut messages = conn.on_message();
        loop {
            tokio::select! {
                msg = messages.next() => {
                    let Some(msg) = msg else {
                        // Redis closes a subscriber whose output buffer passes its
                        // `client-output-buffer-limit pubsub` (one frame bigger than the limit
                        // does it), and on restart. We keep the lease and subscribe again now.
                        warn!("Redis closed the pub/sub connection (its client-output-buffer-limit for pubsub clients, or a restart); subscribing again");
                        stats.pubsub_disconnects.inc();
                        break;
                    };
                    let channel: Vec<u8> = msg.get_channel().unwrap_or_default();
                    // Every source node receives every frame over pub/sub: one of a stream
                    // another node reads is let go here, before it is copied or handed on.
                    if let Some(leases) = &streams.leases {
                        let elsewhere = streams
                            .channels
                            .stream_of(&channel)
                            .and_then(|s| std::str::from_utf8(s).ok())
                            .is_some_and(|s| leases.elsewhere(s));
                        if elsewhere {
                            stats.received.inc();
                            stats.frames_elsewhere.inc();
                            continue;
                        }
                    }
                    let payload = Bytes::copy_from_slice(msg.get_payload_bytes());
                    if !hand_over(&source, channel, payload, false).await {
                        return; // the source stopped
                    }
                }
                why = &mut lost => {
                    warn!(reason = %why.unwrap_or_default(), "source lease lost; stopped reading");
                    break;
                }
            }
        }
    }
}

/// Hand a frame message heard (over pub/sub, or from Kafka: `only_here`) to the source and
/// wait until it has taken it in; false once the source has stopped.
async fn hand_over(
    source: &ActorRef<SourceMsg>,
    channel: Vec<u8>,
    payload: Bytes,
    only_here: bool,
) -> bool {
    source
        .call(
            |done| SourceMsg::Message {
                channel,
                payload,
                entry: None,
                only_here,
                done,
            },
            None,
        )
        .await
        .is_ok()
}

/// With `cluster.stream_leases`: every third of the lease's lifetime, renew, place, take and
/// hand over streams ([`StreamLeases::tick`]); the source forgets the streams given up.
async fn place_streams(
    leases: Arc<StreamLeases>,
    source: ActorRef<SourceMsg>,
    stats: Arc<Stats>,
    _open: tokio::sync::oneshot::Sender<String>,
) {
    let mut held_before = Vec::new();
    loop {
        // Renewals are due every third of the lease's life however long a tick takes.
        let started = tokio::time::Instant::now();
        let super::stream_leases::Ticked {
            gone,
            look_again_in,
        } = leases.tick().await;
        let held = leases.held();
        stats.streams_held.set(held.len() as u64);
        if held != held_before {
            log_held_change(&held_before, &held);
            held_before = held;
        }
        for stream in gone {
            if source.cast(SourceMsg::Forget(stream)).is_err() {
                return;
            }
        }
        tokio::time::sleep_until(started + look_again_in).await;
    }
}

/// Names listed at most in one "streams this node reads" line: thousands of streams (junk ids
/// among them) must not make one line of tens of kilobytes. `/streams` lists them all.
const HELD_NAMES_LOGGED: usize = 10;

/// One line per change of the streams this node reads: how many, which came and went (the
/// first few of each).
fn log_held_change(before: &[String], now: &[String]) {
    let (was, is): (HashSet<&String>, HashSet<&String>) =
        (before.iter().collect(), now.iter().collect());
    let came: Vec<&String> = now.iter().filter(|s| !was.contains(s)).collect();
    let went: Vec<&String> = before.iter().filter(|s| !is.contains(s)).collect();
    let first = |v: &[&String]| -> Vec<String> {
        v.iter()
            .take(HELD_NAMES_LOGGED)
            .map(|s| s.to_string())
            .collect()
    };
    info!(
        streams = now.len(),
        taken = came.len(),
        taken_first = ?first(&came),
        given_up = went.len(),
        given_up_first = ?first(&went),
        "streams this node reads"
    );
}

/// The source's view of Redis: logged once when it goes and once when it is back, counted, and
/// shown by `/health` while it lasts.
#[derive(Default)]
struct Outage {
    since: Option<Instant>,
}

impl Outage {
    fn failed(&mut self, stats: &Stats, error: &str, retry_in: Duration) {
        if self.since.is_none() {
            self.since = Some(Instant::now());
            stats.redis_outages.inc();
            stats.redis_down.set(1);
            warn!(%error, ?retry_in, "Redis unreachable; retrying every second until it is back");
        } else {
            debug!(%error, ?retry_in, "Redis still unreachable");
        }
    }

    fn over(&mut self, stats: &Stats) {
        if let Some(since) = self.since.take() {
            stats.redis_down.set(0);
            info!(after = ?since.elapsed(), "Redis reachable again");
        }
    }
}

impl SourceState {
    /// A version 1 frames channel at a node that reads version 2 names (on a Redis Cluster):
    /// its publisher is told what to change, on the error channel it knows (answered by one
    /// node only, as a bad stream id is).
    fn refuse_untagged(&self, stream: &[u8]) -> Taken {
        if let Some(leases) = &self.args.stream_leases {
            if !leases.ranks_first(&String::from_utf8_lossy(stream)) {
                return Taken::Elsewhere;
            }
        }
        let name = String::from_utf8_lossy(stream);
        let channel = self.args.channels.frames(&name);
        refuse(
            &self.args,
            stream,
            None,
            ErrorCode::UntaggedChannel,
            format!(
                "this node reads version 2 names on a Redis Cluster: publish to {channel:?} (the stream in braces, see docs/protocol.md)"
            ),
        );
        Taken::Refused
    }

    async fn take_in(
        &mut self,
        channel: &[u8],
        payload: Bytes,
        mut entry: Option<StreamEntry>,
        only_here: bool,
    ) -> Taken {
        let Some(channel_stream) = self.args.channels.stream_of(channel) else {
            if let Some(stream) = self.args.channels.untagged_stream_of(channel) {
                return self.refuse_untagged(stream);
            }
            debug!("message on an unexpected channel ignored");
            return Taken::Refused;
        };
        let args = &self.args;
        let refuse = |seq: Option<u64>, code: ErrorCode, message: String| {
            refuse(args, channel_stream, seq, code, message)
        };
        // With a lease per stream, every source node sees a message whose stream id is no
        // good: only the one ranked first for that name answers it, so the error comes once.
        let valid_id = std::str::from_utf8(channel_stream)
            .is_ok_and(|name| !name.is_empty() && name.len() <= args.limits.max_stream_id_bytes);
        if let Some(leases) = args.stream_leases.as_ref().filter(|_| !only_here) {
            if !valid_id && !leases.ranks_first(&String::from_utf8_lossy(channel_stream)) {
                return Taken::Elsewhere;
            }
        }
        // The stream named by the channel must itself be a valid stream id.
        let Ok(stream_name) = std::str::from_utf8(channel_stream) else {
            refuse(
                None,
                ErrorCode::BadStreamId,
                "stream id is not valid UTF-8".into(),
            );
            return Taken::Refused;
        };
        if stream_name.is_empty() || stream_name.len() > args.limits.max_stream_id_bytes {
            refuse(
                None,
                ErrorCode::BadStreamId,
                format!(
                    "stream id is {} bytes, must be 1..={}",
                    stream_name.len(),
                    args.limits.max_stream_id_bytes
                ),
            );
            return Taken::Refused;
        }
        // Junk is refused before the stream's lease is looked at: messages on new ids that
        // are not frames must leave no lease (nor a log line, nor stream state) behind. With a
        // lease per stream, one node answers them.
        let answers = |args: &SourceArgs| {
            only_here
                || args
                    .stream_leases
                    .as_ref()
                    .is_none_or(|l| l.answers_refusals(stream_name))
        };
        let frame = match parse_frame(payload, stream_name, args.limits) {
            Ok(f) => f,
            Err(_) if !answers(args) => return Taken::Elsewhere,
            Err(e) => {
                refuse(None, e.code(), e.to_string());
                return Taken::Refused;
            }
        };
        // The header is checked before the stream is registered: a burst of junk on new
        // stream ids must not fill `max_streams` and lock real cameras out.
        let header = check_jpeg_header(&mut self.jpeg, &frame.jpeg);
        if let Err((code, message)) = &header {
            if !self.last_seq.contains_key(frame.stream.as_str()) {
                if !answers(args) {
                    return Taken::Elsewhere;
                }
                refuse(Some(frame.seq), *code, message.clone());
                return Taken::Refused;
            }
        }
        if let Some(leases) = &args.stream_leases {
            let admitted = if only_here {
                leases.claims(stream_name).await
            } else {
                leases.admits(stream_name).await
            };
            if !admitted {
                args.stats.frames_elsewhere.inc();
                return Taken::Elsewhere;
            }
        }
        let args = &self.args;
        let limits = OrderLimits {
            max_streams: args.max_streams,
            max_seq_jump: args.max_seq_jump,
        };
        let (stream, numbering) =
            match check_order(&mut self.last_seq, limits, &frame, Instant::now()) {
                Ok(accepted) => accepted,
                // Claimed back from the stream's pending entries, and already inside: its
                // result is on its way.
                Err((ErrorCode::StaleSeq, _)) if entry.as_ref().is_some_and(|e| e.claimed) => {
                    return Taken::Inside;
                }
                Err((code, message)) => {
                    refuse(Some(frame.seq), code, message);
                    return Taken::Refused;
                }
            };
        args.stats.accepted.inc();
        let seq = frame.seq;
        let reserved = entry.as_mut().and_then(|e| e.place.take());
        let keep = frame.keep() || args.keep_all_frames;
        let _ = args.sequencer.cast(SequencerMsg::Accepted {
            stream: stream.clone(),
            seq,
            kept: keep,
            restarted: numbering == Numbering::Restarted,
            entry: entry.map(|e| e.id),
        });
        // A header that is not a usable JPEG fails here, cheaply, instead of in a detector; on a
        // known stream its sequence number is accounted as a `failed` gap.
        if let Err((code, message)) = header {
            refuse(Some(seq), code, message.clone());
            let _ = args.sequencer.cast(SequencerMsg::Completed {
                stream,
                seq,
                outcome: Outcome::Gap {
                    reason: GapReason::Failed,
                    detail: Some(message),
                },
            });
            return Taken::Accepted;
        }
        let permit = if keep {
            // Waiting for room would not stop Redis's client from reading on into its own
            // unbounded buffer: memory grew without limit under KEEP overload. So a kept frame
            // that finds the node full is shed, and says why.
            // A stream past its fair share sheds its own frames, not other streams'.
            // A frame read from a Redis Stream brings the place its reader took for it.
            match reserved.map_or_else(|| self.kept.take(&stream, Instant::now()), Ok) {
                Ok(place) => Some(place),
                Err(no_place) => {
                    let _ = args.sequencer.cast(SequencerMsg::Completed {
                        stream,
                        seq,
                        outcome: Outcome::Gap {
                            reason: GapReason::Dropped,
                            detail: Some(no_place.to_string()),
                        },
                    });
                    return Taken::Accepted;
                }
            }
        } else {
            None
        };
        let job = Job {
            stream,
            frame,
            keep,
            permit,
            accepted_at: Instant::now(),
        };
        if let Err(e) = args.dispatcher.cast(DispatchMsg::Submit(job)) {
            warn!(error = %e, "dispatcher unavailable");
        }
        Taken::Accepted
    }
}

/// Refuse a message: logged, counted, and published on its stream's error channel.
fn refuse(
    args: &SourceArgs,
    channel_stream: &[u8],
    seq: Option<u64>,
    code: ErrorCode,
    message: String,
) {
    let name = String::from_utf8_lossy(channel_stream);
    // Anyone who can publish can make one of these per message: a few lines per code and
    // window, the rest counted (`kadr_frames_refused_by_code_total`).
    if let Verdict::Log { left_out } = args.refusals.check(&code) {
        warn!(stream = %name, ?seq, %code, %message, left_out, "frame refused (left_out: like refusals not logged since the last line)");
    }
    args.stats.refused(code);
    let error = ErrorMessage::new(&name, seq, code, message);
    let _ = args.sequencer.cast(SequencerMsg::Error {
        channel_stream: channel_stream.to_vec(),
        error,
    });
}

/// Where one stream's numbering stands at the source.
#[derive(Debug, Clone, Copy)]
struct StreamSeen {
    last: u64,
    seen: Instant,
    /// A far move not yet believed: the next sequence number that would confirm it, how many
    /// consecutive frames have so far, and whether it goes back.
    unconfirmed: Option<Unconfirmed>,
}

#[derive(Debug, Clone, Copy)]
struct Unconfirmed {
    expected: u64,
    frames: u32,
    back: bool,
}

impl StreamSeen {
    fn at(seq: u64, now: Instant) -> Self {
        Self {
            last: seq,
            seen: now,
            unconfirmed: None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct OrderLimits {
    max_streams: usize,
    max_seq_jump: u64,
}

/// How an accepted frame's number relates to its stream's last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Numbering {
    /// After the last one (or the stream is new to this node).
    Continues,
    /// The publisher's numbering restarted (confirmed): a new epoch of the stream.
    Restarted,
}

/// Consecutive frames that make a far move of a stream's numbering believed.
const JUMP_CONFIRMATIONS: u32 = 3;
/// When `max_streams` are tracked, streams silent this long give up their place first.
pub(super) const STREAM_EVICT_IDLE: Duration = Duration::from_secs(30);

/// Sequence numbers increase per stream, by at most `max_seq_jump` at a time. A move further
/// than that, ahead or back (0 counts as far back: a restarted publisher), is believed only
/// after [`JUMP_CONFIRMATIONS`] consecutive frames, so one forged message can neither take a
/// stream's numbering over nor send it backwards. A confirmed move back is a new epoch.
fn check_order(
    streams: &mut HashMap<Arc<str>, StreamSeen>,
    limits: OrderLimits,
    frame: &Frame,
    now: Instant,
) -> Result<(Arc<str>, Numbering), (ErrorCode, String)> {
    if let Some((stream, seen)) = streams.get_key_value(frame.stream.as_str()) {
        let (stream, mut seen) = (stream.clone(), *seen);
        let (seq, last) = (frame.seq, seen.last);
        let far_back = seq < last && (seq == 0 || last - seq > limits.max_seq_jump);
        let far_ahead = seq > last && seq - last > limits.max_seq_jump;
        // The next frame of a far move seen before, which may now be near `last` (a restart
        // from 0 is confirmed by 1 and 2).
        let confirming = seen.unconfirmed.filter(|u| u.expected == seq);
        let back = confirming.map_or(far_back, |u| u.back);
        if seq <= last && !far_back && confirming.is_none() {
            return Err((
                ErrorCode::StaleSeq,
                format!("sequence number {seq} is not after {last}"),
            ));
        }
        if far_back || far_ahead || confirming.is_some() {
            let frames = confirming.map_or(1, |u| u.frames + 1);
            if frames < JUMP_CONFIRMATIONS {
                seen.unconfirmed = Some(Unconfirmed {
                    expected: seq + 1,
                    frames,
                    back,
                });
                streams.insert(stream, seen);
                let (code, how) = if back {
                    (ErrorCode::SeqRestart, "a move back from")
                } else {
                    (ErrorCode::SeqJump, "more than max_seq_jump after")
                };
                return Err((
                    code,
                    format!(
                        "sequence number {seq} is {how} {last}; {} more consecutive frames start a new numbering",
                        JUMP_CONFIRMATIONS - frames
                    ),
                ));
            }
        }
        streams.insert(stream.clone(), StreamSeen::at(seq, now));
        let numbering = if back {
            Numbering::Restarted
        } else {
            Numbering::Continues
        };
        return Ok((stream, numbering));
    }
    if streams.len() >= limits.max_streams {
        streams.retain(|_, s| now.duration_since(s.seen) < STREAM_IDLE_FORGET);
    }
    if streams.len() >= limits.max_streams {
        // Still full: the longest silent stream goes, if it has been silent for a while.
        let idlest = streams
            .iter()
            .filter(|(_, s)| now.duration_since(s.seen) >= STREAM_EVICT_IDLE)
            .min_by_key(|(_, s)| s.seen)
            .map(|(k, _)| k.clone());
        if let Some(k) = idlest {
            streams.remove(&k);
        }
    }
    if streams.len() >= limits.max_streams {
        return Err((
            ErrorCode::TooManyStreams,
            format!("this node already serves {} streams", limits.max_streams),
        ));
    }
    let stream: Arc<str> = Arc::from(frame.stream.as_str());
    streams.insert(stream.clone(), StreamSeen::at(frame.seq, now));
    Ok((stream, Numbering::Continues))
}

/// Read only the JPEG headers: refuse what no decoder could use before it costs a detector.
fn check_jpeg_header(decoder: &mut JpegDecoder, jpeg: &[u8]) -> Result<(), (ErrorCode, String)> {
    let header = jpeg::frame_header(jpeg).ok_or((
        ErrorCode::BadImage,
        "not a JPEG: no frame header".to_string(),
    ))?;
    check_size(header.width, header.height, decoder.max_pixels())
        .map_err(|e| (e.code(), e.to_string()))?;
    if let Some(why) = header.unsupported() {
        return Err((ErrorCode::BadImage, why));
    }
    // Decoders paint a truncated scan grey without complaint; truncation in transit is the
    // corruption that happens, so insist on the end-of-image marker (a little padding after it
    // is tolerated, as some cameras add it).
    let tail = &jpeg[jpeg.len().saturating_sub(64)..];
    if !tail.windows(2).any(|w| w == [0xFF, 0xD9]) {
        return Err((
            ErrorCode::BadImage,
            "JPEG is truncated: no end-of-image marker".into(),
        ));
    }
    decoder
        .check_header(jpeg)
        .map_err(|e| (ErrorCode::BadImage, e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(stream: &str, seq: u64) -> Frame {
        Frame {
            stream: stream.into(),
            seq,
            capture_ts_us: 0,
            flags: 0,
            jpeg: Bytes::new(),
        }
    }

    const LIMITS: OrderLimits = OrderLimits {
        max_streams: 2,
        max_seq_jump: 300,
    };

    fn accept(
        streams: &mut HashMap<Arc<str>, StreamSeen>,
        seq: u64,
    ) -> Result<Numbering, ErrorCode> {
        check_order(streams, LIMITS, &frame("a", seq), Instant::now())
            .map(|(_, numbering)| numbering)
            .map_err(|(code, _)| code)
    }

    #[test]
    fn sequence_numbers_increase_and_a_confirmed_restart_is_a_new_epoch() {
        let mut streams = HashMap::new();
        assert_eq!(accept(&mut streams, 5), Ok(Numbering::Continues));
        assert_eq!(accept(&mut streams, 6), Ok(Numbering::Continues));
        assert_eq!(accept(&mut streams, 6), Err(ErrorCode::StaleSeq));
        assert_eq!(accept(&mut streams, 2), Err(ErrorCode::StaleSeq));
        // A publisher that restarted from 0: believed on its third consecutive frame.
        assert_eq!(accept(&mut streams, 0), Err(ErrorCode::SeqRestart));
        assert_eq!(accept(&mut streams, 1), Err(ErrorCode::SeqRestart));
        assert_eq!(accept(&mut streams, 2), Ok(Numbering::Restarted));
        assert_eq!(accept(&mut streams, 3), Ok(Numbering::Continues));
    }

    #[test]
    fn one_forged_frame_cannot_send_a_stream_backwards() {
        let mut streams = HashMap::new();
        for seq in 5000..5010 {
            accept(&mut streams, seq).unwrap();
        }
        // Forged 0 and a forged number 2,000 back, between genuine frames: refused, and the
        // genuine numbering carries on unaffected.
        for (k, forged) in [0, 3000, 0, 3001].into_iter().enumerate() {
            assert_eq!(accept(&mut streams, forged), Err(ErrorCode::SeqRestart));
            assert_eq!(
                accept(&mut streams, 5010 + k as u64),
                Ok(Numbering::Continues)
            );
        }
    }

    #[test]
    fn one_far_jump_cannot_take_a_stream_over_but_consecutive_frames_can() {
        let mut streams = HashMap::new();
        accept(&mut streams, 100).unwrap();
        // A forged frame 900 ahead is refused, and the genuine numbering carries on.
        assert_eq!(accept(&mut streams, 1000), Err(ErrorCode::SeqJump));
        for seq in 101..110 {
            accept(&mut streams, seq).unwrap();
        }
        // Within the window is fine.
        accept(&mut streams, 409).unwrap();
        // A publisher that really jumped: believed on its third consecutive frame.
        assert!(accept(&mut streams, 5000).is_err());
        assert!(accept(&mut streams, 5001).is_err());
        assert_eq!(accept(&mut streams, 5002), Ok(Numbering::Continues));
        accept(&mut streams, 5003).unwrap();
        // Interleaved forgeries never confirm each other.
        for k in 0..5 {
            assert!(accept(&mut streams, 9000 + 2 * k).is_err());
            accept(&mut streams, 5004 + k).unwrap();
        }
    }

    #[test]
    fn a_full_table_makes_room_from_its_longest_silent_stream() {
        let (mut streams, t0) = (HashMap::new(), Instant::now());
        check_order(&mut streams, LIMITS, &frame("a", 1), t0).unwrap();
        check_order(
            &mut streams,
            LIMITS,
            &frame("b", 1),
            t0 + Duration::from_secs(5),
        )
        .unwrap();
        let soon = t0 + Duration::from_secs(10);
        assert_eq!(
            check_order(&mut streams, LIMITS, &frame("c", 1), soon)
                .unwrap_err()
                .0,
            ErrorCode::TooManyStreams
        );
        let later = t0 + STREAM_EVICT_IDLE + Duration::from_secs(1);
        check_order(&mut streams, LIMITS, &frame("c", 1), later).unwrap();
        assert!(!streams.contains_key("a") && streams.contains_key("b"));
    }
}
