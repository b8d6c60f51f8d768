//! Frames from Redis Streams: the second way in, beside pub/sub, for publishers that want no
//! frame lost (`kadr publish --transport streams`).
//!
//! A camera appends each frame message to the stream `{prefix}:frames:{stream}` (the name of
//! its pub/sub channel) in the field `frame`. While this node holds the source lease, the
//! reader here finds those streams (SCAN, every `redis.frames_scan_ms`), reads them through the
//! consumer group `kadr` and hands each entry to the source actor, exactly as a pub/sub message.
//! An entry is acknowledged only once its frame is accounted for: a refused one at once, an
//! accepted one by the sequencer's publish of its result or gap (the same Lua step). So the
//! entries a node that stops leaves pending are exactly its frames without a published result,
//! and the next lease holder claims them first (XAUTOCLAIM) and carries on from there.
//!
//! Kept frames wait in Redis rather than being shed: each takes its place among
//! `limits.max_kept_frames` here, before it is handed on. One that finds no room stays pending,
//! with the entries after it; the stream is "held back" there and taken up again from that
//! entry once room frees (the pub/sub path must shed instead, since Redis's client reads on into
//! a buffer of its own whether we read or not). A stream that keeps frames is also read only as
//! far as it has room, so holding back is the exception.
//!
//! Each stream's last entry handed on is remembered: a consumer group rewound (`XGROUP SETID`)
//! or destroyed and so created again would otherwise replay up to `MAXLEN` frames already
//! published, as a new epoch. Entries at or before it are acknowledged and not read again, a
//! group is created again after it, and the stream's publisher is told (`redis_state`).
//!
//! At most `limits.max_streams` streams are read at once. A stream that has sent no valid frame
//! lately gives its place to a stream with entries waiting, so streams of junk (whose keys
//! never expire) cannot lock a new camera out; a camera that finds every place taken by
//! streams that are sending is told so on its error channel, and its frames wait in Redis.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ractor::ActorRef;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo};
use redis::Value;
use tracing::{debug, info, warn};

use super::{SourceMsg, StreamEntry, Taken, STREAM_EVICT_IDLE};
use crate::backoff::Backoff;
use crate::log_budget::{LogBudget, Verdict};
use crate::pipeline::kept::KeptFrames;
use crate::pipeline::stream_leases::StreamLeases;
use crate::protocol::ErrorCode;
use crate::protocol::{Channels, CONSUMER_GROUP, FLAG_KEEP, FRAME_FIELD};
use crate::redis_conn::{RedisClients, RedisConn};

/// How the reader reads: entries per stream per read, how often it looks for new streams, and
/// at most how many streams it reads (`limits.max_streams`).
#[derive(Debug, Clone)]
pub(crate) struct StreamsReading {
    pub consumer: String,
    pub count: usize,
    pub scan_every: Duration,
    pub max_streams: usize,
    /// `limits.keep_all_frames`: every frame is kept, whatever its flags.
    pub keep_all: bool,
    /// `limits.max_payload_bytes`: an entry larger is refused, and the connection that read
    /// it replaced (its read buffer grew to the entry's size and would stay so).
    pub max_payload: usize,
}

/// How long one read waits for new entries before it looks for new streams again.
const BLOCK: Duration = Duration::from_millis(100);
/// On a Redis Cluster, where one blocking read cannot span streams (each has its own slot):
/// every stream is read at once without blocking, and again after this pause if none had
/// anything.
const CLUSTER_POLL: Duration = Duration::from_millis(10);
/// On a Redis Cluster: how long a read waits for one stream's shard, and how long a stream
/// whose shard did not answer is left out before it is tried again.
const SHARD_WAIT: Duration = Duration::from_millis(250);
const SHARD_PAUSE: Duration = Duration::from_millis(500);
/// The longest a connection or a look for new frames streams may take before the reader starts
/// afresh (see [`within`]).
const DISCOVER_WAIT: Duration = Duration::from_secs(15);

/// Read every frames stream until dropped (the source lease was lost): the owner aborts it.
/// Redis errors are retried with backoff; a stream deleted or changed under it is found again.
pub(crate) async fn read_frames_streams(
    source: ActorRef<SourceMsg>,
    redis: RedisClients,
    channels: Channels,
    reading: StreamsReading,
    kept: Arc<KeptFrames>,
    leases: Option<Arc<StreamLeases>>,
) {
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(2));
    let (mut previous, mut untagged_told) = (Vec::new(), HashSet::new());
    let mut read_up_to = HashMap::new();
    loop {
        let mut reader = Reader {
            source: source.clone(),
            channels: channels.clone(),
            reading: reading.clone(),
            kept: kept.clone(),
            leases: leases.clone(),
            keys: Vec::new(),
            live: HashSet::new(),
            held_back: Vec::new(),
            refused: Vec::new(),
            warned_full: false,
            paused: HashMap::new(),
            shard_warnings: LogBudget::new(),
            new_stream_lines: LogBudget::new(),
            untagged_told: std::mem::take(&mut untagged_told),
            no_room_told: HashSet::new(),
            previous: std::mem::take(&mut previous),
            read_up_to: std::mem::take(&mut read_up_to),
            replay_told: HashSet::new(),
            read_oversized: false,
        };
        match reader.run(&redis, &mut backoff).await {
            Ok(()) => return, // the source stopped
            Err(e) => {
                previous = if reader.keys.is_empty() {
                    reader.previous
                } else {
                    reader.keys.into_iter().map(|k| k.key).collect()
                };
                untagged_told = reader.untagged_told;
                read_up_to = reader.read_up_to;
                let wait = backoff.next_wait();
                warn!(error = %e, ?wait, "reading frames streams failed; trying again");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

struct Reader {
    source: ActorRef<SourceMsg>,
    channels: Channels,
    reading: StreamsReading,
    kept: Arc<KeptFrames>,
    /// With `cluster.stream_leases`: only the streams this node holds are read.
    leases: Option<Arc<StreamLeases>>,
    /// The frames streams read.
    keys: Vec<ReadKey>,
    /// Streams whose last frame was live (not KEEP): read without asking for room. Any other
    /// (a new stream, or one that keeps frames) is read only as far as it has room.
    live: HashSet<Arc<str>>,
    /// Streams whose entry (key, id) found no room for a kept frame: it and the entries after
    /// it wait, pending, until the stream has room again; oldest first.
    held_back: Vec<(String, String)>,
    /// Entries refused (key, id), to acknowledge after each read.
    refused: Vec<(String, String)>,
    warned_full: bool,
    /// On a Redis Cluster: streams left out until then (their shard did not answer).
    paused: HashMap<String, Instant>,
    shard_warnings: LogBudget<()>,
    new_stream_lines: LogBudget<()>,
    /// Frames streams under version 1 names whose publishers were told.
    untagged_told: HashSet<String>,
    /// Frames streams told that this node reads `max_streams` streams already.
    no_room_told: HashSet<String>,
    /// The keys the reader before this one read (it failed): looked for first.
    previous: Vec<String>,
    /// The last entry handed on, per frames stream read: what a rewound group would replay.
    read_up_to: HashMap<String, EntryId>,
    /// Streams whose publishers were told of a replay.
    replay_told: HashSet<String>,
    /// An entry over `max_payload` was read: the connection is replaced after this read.
    read_oversized: bool,
}

/// A stream entry id, `ms-seq`.
type EntryId = (u64, u64);

fn entry_id(id: &str) -> Option<EntryId> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// One frames stream being read.
struct ReadKey {
    key: String,
    stream: Arc<str>,
    /// When it was first read: a stream read at least once may give way to another.
    added: Instant,
    /// When it last gave the source a frame it accepted.
    last_frame: Option<Instant>,
}

impl ReadKey {
    /// It may give its place to another stream: read at least once, and no valid frame for a
    /// while.
    fn idle(&self, now: Instant) -> bool {
        now.duration_since(self.added) >= 2 * BLOCK
            && self
                .last_frame
                .is_none_or(|at| now.duration_since(at) >= STREAM_EVICT_IDLE)
    }
}

/// The source actor stopped: nothing more to read for.
struct SourceGone;

impl Reader {
    async fn run(&mut self, redis: &RedisClients, backoff: &mut Backoff) -> redis::RedisResult<()> {
        let mut conn = within(DISCOVER_WAIT, redis.own_connection()).await?;
        let mut next_scan = Instant::now();
        let mut takes_seen = 0;
        loop {
            // A stream this node has just taken (a dead node's, one handed over) is read at
            // once, not at the next scan: a takeover's stall is shorter by up to a scan.
            let takes = self.leases.as_ref().map_or(0, |l| l.takes());
            if Instant::now() >= next_scan || takes != takes_seen {
                takes_seen = takes;
                if within(DISCOVER_WAIT, self.discover(&mut conn))
                    .await?
                    .is_err()
                {
                    return Ok(());
                }
                next_scan = Instant::now() + self.reading.scan_every;
            }
            backoff.reset();
            if self.resume_held_back(&mut conn).await?.is_err() {
                return Ok(());
            }
            let Some((keys, count)) = self.readable() else {
                tokio::time::sleep(BLOCK.min(self.reading.scan_every)).await;
                continue;
            };
            let replies = if redis.is_cluster() {
                self.read_each(&conn, &keys, count).await
            } else {
                let cmd = self.read_command(&keys, count, Some(BLOCK));
                vec![cmd.query_async::<Value>(&mut conn).await]
            };
            let mut read_any = false;
            for reply in replies {
                let reply = match reply {
                    Ok(v) => v,
                    // A stream deleted (or Redis restarted and forgot the groups), or a key
                    // that is no longer a stream: look again now, and create the groups again.
                    Err(e) if matches!(e.code(), Some("NOGROUP") | Some("WRONGTYPE")) => {
                        info!(error = %e, "frames streams changed; looking for them again");
                        self.keys.clear();
                        self.held_back.clear();
                        next_scan = Instant::now();
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                for (key, entries) in streams_of(&reply) {
                    read_any |= !entries.is_empty();
                    if self.take(&key, entries, false).await.is_err() {
                        return Ok(());
                    }
                }
            }
            self.acknowledge_refused(&mut conn).await?;
            if std::mem::take(&mut self.read_oversized) {
                // Its read buffer is as large as the entry now, for as long as it lives.
                debug!("an oversized entry was read: a fresh connection for the next reads");
                conn = redis.own_connection().await?;
            }
            if redis.is_cluster() && !read_any {
                tokio::time::sleep(CLUSTER_POLL).await;
            }
        }
    }

    /// On a Redis Cluster: each stream read on its own (its own slot), all at once, without
    /// blocking. A stream whose shard does not answer within [`SHARD_WAIT`] (its master down,
    /// the replica not yet promoted) is left out for [`SHARD_PAUSE`], so the streams of the
    /// other shards are read on at their usual pace.
    async fn read_each(
        &mut self,
        conn: &RedisConn,
        keys: &[String],
        count: usize,
    ) -> Vec<redis::RedisResult<Value>> {
        let now = Instant::now();
        self.paused.retain(|_, until| *until > now);
        let keys: Vec<&String> = keys
            .iter()
            .filter(|k| !self.paused.contains_key(*k))
            .collect();
        let reads = keys.iter().map(|key| {
            let mut conn = conn.clone();
            let cmd = self.read_command(std::slice::from_ref(*key), count, None);
            async move {
                match tokio::time::timeout(SHARD_WAIT, cmd.query_async::<Value>(&mut conn)).await {
                    Ok(reply) => reply,
                    Err(_) => Err(redis::RedisError::from((
                        redis::ErrorKind::IoError,
                        "no answer from the stream's shard",
                    ))),
                }
            }
        });
        let replies = futures_util::future::join_all(reads).await;
        let mut out = Vec::with_capacity(replies.len());
        let mut first_error = None;
        for (key, reply) in keys.into_iter().zip(replies) {
            match reply {
                Err(e) if e.code().is_none() || e.is_cluster_error() => {
                    let until = Instant::now() + SHARD_PAUSE;
                    self.paused.insert(key.clone(), until);
                    first_error.get_or_insert(e);
                }
                reply => out.push(reply),
            }
        }
        // The cluster client reconnects by itself: a shard that does not answer is tried
        // again after its pause, however long the outage (every shard down included).
        if let Some(e) = first_error {
            if let Verdict::Log { left_out } = self.shard_warnings.check(&()) {
                warn!(error = %e, left_out, "a frames stream's Redis Cluster shard does not answer; its streams wait, the others are read");
            }
        }
        out
    }

    /// XREADGROUP of new entries from `keys`, blocking up to `block` if given.
    fn read_command(&self, keys: &[String], count: usize, block: Option<Duration>) -> redis::Cmd {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(CONSUMER_GROUP)
            .arg(&self.reading.consumer)
            .arg("COUNT")
            .arg(count);
        if let Some(block) = block {
            cmd.arg("BLOCK").arg(block.as_millis() as u64);
        }
        cmd.arg("STREAMS");
        for key in keys {
            cmd.arg(key);
        }
        for _ in keys {
            cmd.arg(">");
        }
        cmd
    }

    /// Find frames streams not yet read: create the group (from the stream's start, so frames
    /// published before any node ran are read too), then claim what another reader left
    /// pending, oldest first, before anything new is read.
    async fn discover(
        &mut self,
        conn: &mut RedisConn,
    ) -> redis::RedisResult<Result<(), SourceGone>> {
        // Streams handed over or lost are no longer read; taken again, they are claimed anew.
        if let Some(leases) = &self.leases {
            self.keys.retain(|k| leases.reads(&k.stream));
            let keys = &self.keys;
            self.held_back
                .retain(|(key, _)| keys.iter().any(|k| k.key == *key));
        }
        let mut found = match scan_streams(conn, &self.channels.frames_pattern()).await {
            Ok(found) => found,
            // A Redis Cluster with a shard down: the streams found so far are read on, new
            // ones are looked for at the next scan.
            Err(e) if matches!(conn, RedisConn::Cluster(_)) && !self.keys.is_empty() => {
                if let Verdict::Log { left_out } = self.shard_warnings.check(&()) {
                    warn!(error = %e, left_out, "cannot look for new frames streams on every Redis Cluster shard; reading those found");
                }
                Vec::new()
            }
            Err(e) => return Err(e),
        };
        // The streams the previous reader read are looked for whatever the scan saw (on a
        // Redis Cluster, a scan during a failover may miss a shard's keys).
        for key in &self.previous {
            let key = key.as_bytes();
            if !found.iter().any(|k| k == key) {
                found.push(key.to_vec());
            }
        }
        let mut new_streams: Vec<(String, Arc<str>)> = Vec::new();
        for key in found {
            // Names that are not UTF-8 or not under the prefix are refused by the source when
            // read; here they are skipped: only a readable name can be followed.
            let Ok(key) = String::from_utf8(key) else {
                continue;
            };
            if self.keys.iter().any(|k| k.key == key) {
                continue;
            }
            let Some(stream) = self.channels.stream_of(key.as_bytes()) else {
                if self.channels.untagged_stream_of(key.as_bytes()).is_some()
                    && self.tell_untagged(&key).await.is_err()
                {
                    return Ok(Err(SourceGone));
                }
                continue;
            };
            let stream: Arc<str> = Arc::from(String::from_utf8_lossy(stream).as_ref());
            new_streams.push((key, stream));
        }
        let idle = match &self.leases {
            Some(leases) => idle_unseen(conn, leases, &new_streams).await,
            None => HashSet::new(),
        };
        for (key, stream) in new_streams {
            if let Some(leases) = &self.leases {
                // Nothing to read: no lease for it (a junk stream whose entries were refused
                // and acknowledged, a camera gone quiet, once every node has forgotten it).
                if idle.contains(&key) || !leases.admits(&stream).await {
                    continue;
                }
            }
            if self.keys.len() >= self.reading.max_streams {
                match self.make_room(conn, &key).await? {
                    Room::Made => {}
                    Room::NotNeeded | Room::Later => continue,
                    Room::None => {
                        if self.tell_no_room(&key).await.is_err() {
                            return Ok(Err(SourceGone));
                        }
                        continue;
                    }
                }
            }
            // From the stream's start, or, for a stream read before whose group is gone, after
            // what was read.
            let start = self
                .read_up_to
                .get(&key)
                .map_or_else(|| "0".to_string(), |(ms, seq)| format!("{ms}-{seq}"));
            let created: redis::RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&key)
                .arg(CONSUMER_GROUP)
                .arg(&start)
                .query_async(conn)
                .await;
            match created {
                // Anyone may create frames streams: a few lines per window, the rest counted.
                Ok(()) => {
                    if let Verdict::Log { left_out } = self.new_stream_lines.check(&()) {
                        info!(%key, left_out, "reading a new frames stream (left_out: new streams not logged since the last line)");
                    }
                }
                Err(e) if e.code() == Some("BUSYGROUP") => {}
                Err(e) => {
                    warn!(%key, error = %e, "cannot read this frames stream");
                    continue;
                }
            }
            // Registered before the claim, so claimed KEEP frames count towards the stream's
            // room for kept frames like read ones; unregistered again if the claim fails, so
            // the next scan claims it anew.
            self.keys.push(ReadKey {
                key: key.clone(),
                stream,
                added: Instant::now(),
                last_frame: None,
            });
            match self.claim(conn, &key, "0-0").await {
                Ok(Ok(())) => {}
                Ok(Err(gone)) => return Ok(Err(gone)),
                Err(e) => {
                    self.keys.pop();
                    return Err(e);
                }
            }
        }
        // Only the streams read keep their marks (a bound: `max_streams`).
        let keys = &self.keys;
        self.read_up_to
            .retain(|key, _| keys.iter().any(|k| k.key == *key));
        Ok(Ok(()))
    }

    /// A frames stream under a version 1 name on a Redis Cluster: its publisher is told, once
    /// per reader, on its error channel (the source refuses it as it refuses such a channel);
    /// its entries are left alone.
    async fn tell_untagged(&mut self, key: &str) -> Result<(), SourceGone> {
        if self.untagged_told.contains(key) || self.untagged_told.len() >= self.reading.max_streams
        {
            return Ok(());
        }
        self.untagged_told.insert(key.to_string());
        let told = self
            .source
            .call(
                |done| SourceMsg::Message {
                    channel: key.as_bytes().to_vec(),
                    payload: Bytes::new(),
                    entry: None,
                    only_here: false,
                    done,
                },
                None,
            )
            .await;
        told.map(|_| ()).map_err(|_| SourceGone)
    }

    /// Take over every entry of `key` still pending from `start` on (read by a node that
    /// stopped, by this node's previous reader, or held back here for want of room) and hand
    /// them to the source in order, until one finds no room.
    async fn claim(
        &mut self,
        conn: &mut RedisConn,
        key: &str,
        start: &str,
    ) -> redis::RedisResult<Result<(), SourceGone>> {
        let mut start = start.to_string();
        let mut claimed = 0usize;
        loop {
            let reply: Value = redis::cmd("XAUTOCLAIM")
                .arg(key)
                .arg(CONSUMER_GROUP)
                .arg(&self.reading.consumer)
                .arg(0)
                .arg(&start)
                .arg("COUNT")
                .arg(100)
                .query_async(conn)
                .await?;
            let parts = reply.as_sequence().unwrap_or(&[]);
            let next = parts.first().and_then(text).unwrap_or_else(|| "0-0".into());
            let entries = parts.get(1).and_then(Value::as_sequence).unwrap_or(&[]);
            claimed += entries.len();
            if self.take(key, entries, true).await.is_err() {
                return Ok(Err(SourceGone));
            }
            self.acknowledge_refused(conn).await?;
            if next == "0-0" || self.is_held_back(key) {
                break;
            }
            start = next;
        }
        if claimed > 0 && start == "0-0" {
            info!(%key, claimed, "frames left pending by another reader taken over");
        }
        Ok(Ok(()))
    }

    fn is_held_back(&self, key: &str) -> bool {
        self.held_back.iter().any(|(k, _)| k == key)
    }

    /// Take up again, oldest first, the streams held back for want of room that have room now.
    async fn resume_held_back(
        &mut self,
        conn: &mut RedisConn,
    ) -> redis::RedisResult<Result<(), SourceGone>> {
        let now = Instant::now();
        let mut i = 0;
        while i < self.held_back.len() {
            let (key, _) = &self.held_back[i];
            let has_room = self.keys.iter().find(|k| k.key == *key).is_some_and(|k| {
                self.kept.room(&k.stream, now) > 0
                    && self
                        .leases
                        .as_ref()
                        .is_none_or(|l| l.may_read(&k.stream, Duration::ZERO))
            });
            if !has_room {
                i += 1;
                continue;
            }
            let (key, id) = self.held_back.remove(i);
            if let Err(gone) = self.claim(conn, &key, &id).await? {
                return Ok(Err(gone));
            }
        }
        Ok(Ok(()))
    }

    /// Every place is taken: make room for `key` by letting the idlest stream go, if `key`
    /// has anything to read and some stream has sent no valid frame for a while.
    async fn make_room(&mut self, conn: &mut RedisConn, key: &str) -> redis::RedisResult<Room> {
        let now = Instant::now();
        let idlest = self
            .keys
            .iter()
            .enumerate()
            .filter(|(_, k)| k.idle(now) && !self.is_held_back(&k.key))
            .min_by_key(|(_, k)| k.last_frame)
            .map(|(i, _)| i);
        // Streams taken on but not yet read may turn out idle: the stream waits for the next
        // look, untold (and unasked).
        let all_sending = self.keys.iter().all(|k| {
            k.last_frame
                .is_some_and(|at| now.duration_since(at) < STREAM_EVICT_IDLE)
        });
        if idlest.is_none() && !all_sending {
            return Ok(Room::Later);
        }
        let waiting = has_entries_waiting(conn, key).await?;
        Ok(match (waiting, idlest) {
            (false, _) => Room::NotNeeded,
            (true, None) => {
                if !self.warned_full {
                    warn!(
                        max = self.reading.max_streams,
                        "more frames streams sending than limits.max_streams; the rest wait in Redis and are told so"
                    );
                    self.warned_full = true;
                }
                Room::None
            }
            (true, Some(i)) => {
                let gone = self.keys.swap_remove(i);
                self.live.remove(&gone.stream);
                Room::Made
            }
        })
    }

    /// A stream that has frames waiting and finds every place taken: its publisher is told, once
    /// per reader, on its error channel. Its entries wait in Redis.
    async fn tell_no_room(&mut self, key: &str) -> Result<(), SourceGone> {
        if self.no_room_told.contains(key) || self.no_room_told.len() >= self.reading.max_streams {
            return Ok(());
        }
        self.no_room_told.insert(key.to_string());
        let max = self.reading.max_streams;
        let message = format!(
            "this node reads limits.max_streams = {max} frames streams already, each sending; this stream's frames wait in Redis until one falls silent"
        );
        self.refuse_stream(key, ErrorCode::TooManyStreams, message)
            .await
    }

    /// Tell the publisher of frames stream `key`, on its error channel, through the source.
    async fn refuse_stream(
        &self,
        key: &str,
        code: ErrorCode,
        message: String,
    ) -> Result<(), SourceGone> {
        let told = self
            .source
            .call(
                |done| SourceMsg::Refuse {
                    channel: key.as_bytes().to_vec(),
                    code,
                    message,
                    done,
                },
                None,
            )
            .await;
        told.map(|_| ()).map_err(|_| SourceGone)
    }

    /// Entry `at` of `key` was handed on: the group must never give it again.
    fn mark_read(&mut self, key: &str, at: Option<EntryId>) {
        let Some(at) = at else { return };
        match self.read_up_to.get_mut(key) {
            Some(up_to) => *up_to = (*up_to).max(at),
            None => {
                self.read_up_to.insert(key.to_string(), at);
            }
        }
    }

    /// A rewound consumer group: said once per stream per reader, in the log and on the
    /// stream's error channel.
    async fn tell_replay(&mut self, key: &str, id: &str, up_to: EntryId) -> Result<(), SourceGone> {
        if !self.replay_told.insert(key.to_string()) {
            return Ok(());
        }
        let message = format!(
            "the consumer group `{CONSUMER_GROUP}` of {key} was rewound or created again: entry {id} is at or before {}-{}, read already; entries read already are acknowledged, not read again",
            up_to.0, up_to.1
        );
        warn!(%key, %message, "frames stream replayed");
        self.refuse_stream(key, ErrorCode::RedisState, message)
            .await
    }

    /// The streams to read now and how many entries each: a stream that may keep frames only
    /// as far as it has room for them, a held-back one not at all. The list starts at a
    /// different stream each time, so all are read when only some have room.
    fn readable(&mut self) -> Option<(Vec<String>, usize)> {
        let now = Instant::now();
        let mut count = self.reading.count;
        let mut keys = Vec::with_capacity(self.keys.len());
        if !self.keys.is_empty() {
            self.keys.rotate_left(1);
        }
        for k in &self.keys {
            // Only while the lease is surely this node's until the read ends (a node that
            // was frozen past it reads nothing until its next renewal says it still holds it).
            if self
                .leases
                .as_ref()
                .is_some_and(|l| !l.may_read(&k.stream, BLOCK))
            {
                continue;
            }
            if self.is_held_back(&k.key) {
                continue;
            }
            if self.reading.keep_all || !self.live.contains(&k.stream) {
                let room = self.kept.room(&k.stream, now);
                if room == 0 {
                    continue;
                }
                count = count.min(room);
            }
            keys.push(k.key.clone());
        }
        (!keys.is_empty()).then_some((keys, count.max(1)))
    }

    /// Hand entries to the source one at a time, in order. A kept frame takes its place here
    /// first; one that finds none holds the stream back from that entry on.
    async fn take(
        &mut self,
        key: &str,
        entries: &[Value],
        claimed: bool,
    ) -> Result<(), SourceGone> {
        let Some(index) = self.keys.iter().position(|k| k.key == key) else {
            return Ok(());
        };
        let stream = self.keys[index].stream.clone();
        for entry in entries {
            // A claimed entry trimmed away meanwhile comes back as nil: nothing to read.
            let Some((id, fields)) = entry_of(entry) else {
                continue;
            };
            let (at, up_to) = (entry_id(&id), self.read_up_to.get(key).copied());
            if let (false, Some(at), Some(up_to)) = (claimed, at, up_to) {
                if at <= up_to {
                    // Read before, yet new to the group: the group was rewound.
                    self.refused.push((key.to_string(), id.clone()));
                    if self.tell_replay(key, &id, up_to).await.is_err() {
                        return Err(SourceGone);
                    }
                    continue;
                }
            }
            let payload = fields
                .chunks_exact(2)
                .find(|kv| bytes_of(&kv[0]).is_some_and(|f| f == FRAME_FIELD.as_bytes()))
                .and_then(|kv| bytes_of(&kv[1]))
                .map(Bytes::copy_from_slice);
            self.read_oversized |= payload
                .as_ref()
                .is_some_and(|p| p.len() > self.reading.max_payload);
            let channel = key.as_bytes().to_vec();
            let Some(payload) = payload else {
                let sent = self
                    .source
                    .call(
                        |done| SourceMsg::BadEntry {
                            channel,
                            id: id.clone(),
                            done,
                        },
                        None,
                    )
                    .await;
                if sent.is_err() {
                    return Err(SourceGone);
                }
                self.mark_read(key, at);
                self.refused.push((key.to_string(), id));
                continue;
            };
            // Byte 5 of a frame message is its flags.
            let keep = self.reading.keep_all || payload.get(5).is_some_and(|f| f & FLAG_KEEP != 0);
            let place = if keep {
                match self.kept.take(&stream, Instant::now()) {
                    Ok(place) => Some(place),
                    Err(_) => {
                        self.live.remove(&stream);
                        self.held_back.push((key.to_string(), id));
                        return Ok(());
                    }
                }
            } else {
                None
            };
            if keep {
                self.live.remove(&stream);
            } else {
                self.live.insert(stream.clone());
            }
            let entry = StreamEntry {
                id: Arc::from(id.as_str()),
                claimed,
                place,
            };
            let taken = self
                .source
                .call(
                    |done| SourceMsg::Message {
                        channel,
                        payload,
                        entry: Some(entry),
                        only_here: false,
                        done,
                    },
                    None,
                )
                .await;
            self.mark_read(key, at);
            match taken {
                Ok(ractor::rpc::CallResult::Success(Taken::Refused)) => {
                    self.refused.push((key.to_string(), id))
                }
                Ok(ractor::rpc::CallResult::Success(Taken::Accepted | Taken::Inside)) => {
                    self.keys[index].last_frame = Some(Instant::now());
                }
                Ok(ractor::rpc::CallResult::Success(Taken::Elsewhere)) => {}
                _ => return Err(SourceGone),
            }
        }
        Ok(())
    }

    async fn acknowledge_refused(&mut self, conn: &mut RedisConn) -> redis::RedisResult<()> {
        // Refused entries of one read may span streams: each is acknowledged on its own key.
        let mut refused = std::mem::take(&mut self.refused);
        refused.sort();
        for chunk in refused.chunk_by(|a, b| a.0 == b.0) {
            let mut cmd = redis::cmd("XACK");
            cmd.arg(&chunk[0].0).arg(CONSUMER_GROUP);
            for (_, id) in chunk {
                cmd.arg(id);
            }
            let _: i64 = cmd.query_async(conn).await?;
        }
        Ok(())
    }
}

/// Whether a stream needs a place among `max_streams` to be read.
enum Room {
    /// Another stream gave its place.
    Made,
    /// It has nothing to read.
    NotNeeded,
    /// No stream can give way yet; some may at the next look.
    Later,
    /// Every place is taken by a stream that is sending.
    None,
}

/// Of the frames streams no node holds or has looked at lately (new, or forgotten after a long
/// silence), those with nothing waiting: taking their lease would only hold it for nothing. A
/// stream is taken only once it has entries to read. Asked in one round trip; if Redis cannot
/// say, none is idle (they are read, as before).
async fn idle_unseen(
    conn: &mut RedisConn,
    leases: &StreamLeases,
    streams: &[(String, Arc<str>)],
) -> HashSet<String> {
    let unseen: Vec<&String> = streams
        .iter()
        .filter(|(_, stream)| !leases.has_seen(stream))
        .map(|(key, _)| key)
        .collect();
    if unseen.is_empty() {
        return HashSet::new();
    }
    if matches!(conn, RedisConn::Cluster(_)) {
        // Each stream in its own slot: asked one by one, each of its own shard.
        let mut idle = HashSet::new();
        for key in unseen {
            if matches!(has_entries_waiting(conn, key).await, Ok(false)) {
                idle.insert(key.clone());
            }
        }
        return idle;
    }
    let mut pipe = redis::pipe();
    for key in &unseen {
        pipe.cmd("XINFO").arg("GROUPS").arg(*key);
    }
    let Ok(replies) = pipe.query_async::<Vec<Value>>(conn).await else {
        return HashSet::new();
    };
    unseen
        .into_iter()
        .zip(replies)
        .filter(|(_, groups)| !entries_waiting(groups))
        .map(|(key, _)| key.clone())
        .collect()
}

/// Whether `key` has entries the consumer group has not read, or read and not acknowledged
/// (a stream without the group, new, has: everything in it).
async fn has_entries_waiting(conn: &mut RedisConn, key: &str) -> redis::RedisResult<bool> {
    let groups: Value = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(key)
        .query_async(conn)
        .await?;
    Ok(entries_waiting(&groups))
}

/// [`has_entries_waiting`] from `XINFO GROUPS`'s reply.
fn entries_waiting(groups: &Value) -> bool {
    let Some(group) = groups
        .as_sequence()
        .into_iter()
        .flatten()
        .map(fields_of)
        .find(|f| f.get("name").and_then(|v| text(v)).as_deref() == Some(CONSUMER_GROUP))
    else {
        return true;
    };
    let number = |name: &str| match group.get(name) {
        Some(Value::Int(n)) => Some(*n),
        _ => None,
    };
    // `lag` is nil where Redis cannot tell (entries deleted in the middle): assume some wait.
    number("pending") != Some(0) || number("lag") != Some(0)
}

/// The fields of a reply that is a map in RESP3 and a flat `[name, value, ...]` array in RESP2.
fn fields_of(v: &Value) -> HashMap<String, &Value> {
    match v {
        Value::Map(pairs) => pairs
            .iter()
            .filter_map(|(k, v)| Some((text(k)?, v)))
            .collect(),
        _ => v
            .as_sequence()
            .unwrap_or(&[])
            .chunks_exact(2)
            .filter_map(|kv| Some((text(&kv[0])?, &kv[1])))
            .collect(),
    }
}

/// `step`, or an error if it takes longer than `wait`: a reader that hangs on Redis (seen once on
/// a Redis Cluster after a master was killed: no new frames stream was ever read again) starts
/// afresh, with a new connection, instead of stalling for good without a word.
async fn within<T>(
    wait: Duration,
    step: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    tokio::time::timeout(wait, step).await.unwrap_or_else(|_| {
        Err(redis::RedisError::from((
            redis::ErrorKind::IoError,
            "no answer from Redis while looking for frames streams",
        )))
    })
}

/// The names of every stream key matching `pattern`: on a Redis Cluster, from each master.
async fn scan_streams(conn: &mut RedisConn, pattern: &str) -> redis::RedisResult<Vec<Vec<u8>>> {
    let scan = |cursor: u64| {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .arg("TYPE")
            .arg("stream");
        cmd
    };
    let mut found = Vec::new();
    let RedisConn::Cluster(cluster) = conn else {
        let mut cursor = 0;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = scan(cursor).query_async(conn).await?;
            found.extend(keys);
            if next == 0 {
                return Ok(found);
            }
            cursor = next;
        }
    };
    // Each master has its own cursor: the first page from all at once, the rest from each.
    let all = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
    let first = cluster.route_command(&scan(0), all).await?;
    let Value::Map(pages) = first else {
        return Ok(found);
    };
    for (address, page) in pages {
        let (mut cursor, keys): (u64, Vec<Vec<u8>>) = redis::from_redis_value(&page)?;
        found.extend(keys);
        let Some((host, port)) = text(&address)
            .as_deref()
            .and_then(|a| a.rsplit_once(':'))
            .and_then(|(h, p)| Some((h.to_string(), p.parse().ok()?)))
        else {
            continue;
        };
        while cursor != 0 {
            let at = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                host: host.clone(),
                port,
            });
            let page = cluster.route_command(&scan(cursor), at).await?;
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::from_redis_value(&page)?;
            found.extend(keys);
            cursor = next;
        }
    }
    Ok(found)
}

/// `[key, [entry...]]` pairs of an XREADGROUP reply (an array in RESP2, a map in RESP3; nil when
/// nothing came).
fn streams_of(reply: &Value) -> Vec<(String, &[Value])> {
    let mut out = Vec::new();
    if let Some(items) = reply.as_sequence() {
        for item in items {
            if let Some([k, v]) = item.as_sequence() {
                if let (Some(key), Some(entries)) = (text(k), v.as_sequence()) {
                    out.push((key, entries));
                }
            }
        }
    } else if let Value::Map(items) = reply {
        for (k, v) in items {
            if let (Some(key), Some(entries)) = (text(k), v.as_sequence()) {
                out.push((key, entries));
            }
        }
    }
    out
}

/// An entry `[id, [field, value, ...]]`.
fn entry_of(entry: &Value) -> Option<(String, &[Value])> {
    let parts = entry.as_sequence()?;
    let id = text(parts.first()?)?;
    let fields = parts.get(1)?.as_sequence()?;
    Some((id, fields))
}

fn bytes_of(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn text(v: &Value) -> Option<String> {
    bytes_of(v).and_then(|b| String::from_utf8(b.to_vec()).ok())
}
