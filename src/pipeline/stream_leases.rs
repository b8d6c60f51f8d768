//! A lease per stream (`cluster.stream_leases`): every source node reads, sequences and
//! publishes the streams it holds, and the streams are spread over the live source nodes by
//! [`crate::placement`], instead of one node reading them all while the others stand by.
//!
//! Each stream's lease is a Redis key, `{prefix}:lease:{stream}`, holding the node's token, as
//! the node-wide source lease does ([`super::lease`]), and the egress fences each publish with
//! its stream's key. A node:
//! - takes a stream the first time it sees one of its frames, if it ranks first for it among
//!   the live source nodes and nobody holds it (every node sees the frame and computes the
//!   same answer; the lease settles any disagreement);
//! - every third of the lease's lifetime ([`StreamLeases::tick`]): renews what it holds, reads
//!   who holds every stream it has seen, places them again, takes the free streams the
//!   placement gives it (a node that died leaves its streams free once their leases run out),
//!   asks for the streams the placement gives it that another node holds
//!   (`{prefix}:want:{stream}`), and hands over the streams the placement gives to another
//!   live node that asks for them: it stops taking their frames, lets the ones inside finish
//!   (about a second), then releases them, and the new node takes each at its next frame.
//!
//! Nodes place from what each has seen, and two that have seen different streams (one
//! restarted and forgot the others) can place a stream on each other. So a stream is handed
//! over only to a node that asks for it (else its holder keeps it), and a stream that stays
//! free for two ticks is taken by whichever node sees it (the lease decides): no placement
//! can leave a stream unread;
//! - releases everything it holds when it stops, after publishing what it has.
//!
//! A stream whose lease was lost or handed over is forgotten by the source and the sequencer,
//! so that taking it again later starts from what Redis says, like any takeover.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::log_budget::{LogBudget, Verdict};
use crate::redis_conn::RedisConn;
use tracing::{debug, info, warn};

// The same compare-and-extend and compare-and-delete steps as the node-wide lease.
use super::lease::{delete_if_not_renewed, Fence, RELEASE, RENEW};
use crate::cluster::placement::{self, LiveSources, LOAD_FACTOR};
use crate::node_stats::Stats;
use crate::protocol::{Channels, ErrorCode, ErrorMessage};

/// A stream seen on no channel and in no frames stream for this long is no longer placed.
const FORGET_SEEN_AFTER: Duration = Duration::from_secs(300);
/// Streams followed at most (seen anywhere, held or not): a bound on what junk stream ids
/// could make this node remember.
const MAX_SEEN: usize = 100_000;
/// How often a frame of a stream being handed over to this node tries to take its lease.
const RETRY_WANTED: Duration = Duration::from_millis(200);
/// How long a node handing a stream over lets the frames inside finish before it releases the
/// lease (results after that are fenced, and the new holder reports them as a gap).
const HANDOVER_DRAIN: Duration = Duration::from_millis(900);
/// How late past its due renewal the lease of a node that is no longer live may be before
/// another node takes it over, rather than waiting for it to run out.
const RENEWAL_SLACK: Duration = Duration::from_millis(250);

/// What [`StreamLeases::tick`] found: the streams this node no longer holds, and how soon it
/// should look again (sooner than a third of the lease's life when a departed node's lease
/// will be overdue before then).
pub(crate) struct Ticked {
    pub gone: Vec<Arc<str>>,
    pub look_again_in: Duration,
}

#[derive(Debug)]
struct Held {
    /// Handing over to another node since then: no new frames are taken.
    leaving_since: Option<Instant>,
    /// When the last take or renewal that Redis confirmed was sent: the lease runs at least
    /// `ttl` from then, and cannot be taken over as abandoned before it is overdue.
    renewed_at: Instant,
}

#[derive(Default)]
struct State {
    held: HashMap<Arc<str>, Held>,
    /// Every stream seen, and when last.
    seen: HashMap<Arc<str>, Instant>,
    /// Who held each seen stream at the last tick (node names).
    holders: HashMap<Arc<str>, String>,
    /// Streams the last tick placed on this node that another node still held (being handed
    /// over), and when this node last tried to take each: a frame of one tries again.
    wanted: HashMap<Arc<str>, Instant>,
    /// Streams seen that nobody held at the last ticks, and since when.
    free_since: HashMap<Arc<str>, Instant>,
    /// Streams heard by this node alone (from Kafka) that another node held when this node
    /// last tried to take them, and when it tried.
    claim_tried: HashMap<Arc<str>, Instant>,
}

pub(crate) struct StreamLeases {
    conn: RedisConn,
    channels: Channels,
    node: String,
    token: String,
    ttl: Duration,
    live: LiveSources,
    /// Stopping: this node places nothing on itself, so its ticks hand every stream over.
    leaving: std::sync::atomic::AtomicBool,
    state: Mutex<State>,
    stats: Arc<Stats>,
    /// Anyone may start streams: a few "now reads" lines per window, the rest counted.
    take_lines: LogBudget<()>,
    /// Streams taken so far: the frames-stream reader looks for its new streams at once
    /// when this moves, rather than at its next scan.
    takes: std::sync::atomic::AtomicU64,
}

impl StreamLeases {
    pub(crate) fn new(
        conn: RedisConn,
        channels: Channels,
        node: &str,
        ttl: Duration,
        live: LiveSources,
        stats: Arc<Stats>,
    ) -> Self {
        Self {
            conn,
            channels,
            node: node.to_string(),
            token: format!("{node}/{:016x}", super::lease::rand_tag()),
            ttl,
            live,
            leaving: std::sync::atomic::AtomicBool::new(false),
            state: Mutex::new(State::default()),
            stats,
            take_lines: LogBudget::new(),
            takes: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// What the egress checks each publish against: the stream's own lease.
    pub(crate) fn fence(&self) -> Fence {
        Fence {
            key: String::new(),
            per_stream: Some(self.channels.clone()),
            token: self.token.clone(),
            ttl_ms: self.ttl.as_millis() as u64,
        }
    }

    /// Whether this node reads `stream` now (held and not being handed over).
    pub(crate) fn reads(&self, stream: &str) -> bool {
        self.state()
            .held
            .get(stream)
            .is_some_and(|h| h.leaving_since.is_none())
    }

    /// Whether this node may read new entries of `stream` from its frames stream in a read that
    /// lasts up to `blocking`: it reads the stream (see [`StreamLeases::reads`]) and its lease
    /// is surely still its own until that read ends. A node that was frozen past its lease
    /// wakes up believing it holds it until its next tick; entries it read meanwhile would sit
    /// among its pending entries, unseen by the node that took the stream over (which reported
    /// their numbers `missing`, and the frozen node detected them later: counted twice). The
    /// others take a lease over only once a renewal is overdue (see `overdue_below`), so a read
    /// that ends before then is safe.
    pub(crate) fn may_read(&self, stream: &str, blocking: Duration) -> bool {
        let safe_for = self.ttl.saturating_sub(self.overdue_below());
        self.state().held.get(stream).is_some_and(|h| {
            h.leaving_since.is_none() && h.renewed_at.elapsed() + blocking < safe_for
        })
    }

    /// Who reads each stream seen, as the last tick found the leases (node names, by stream).
    pub(crate) fn holders(&self) -> std::collections::BTreeMap<String, String> {
        self.state()
            .holders
            .iter()
            .map(|(s, n)| (s.to_string(), n.clone()))
            .collect()
    }

    /// The streams this node holds, sorted.
    pub(crate) fn held(&self) -> Vec<String> {
        let mut v: Vec<String> = self.state().held.keys().map(|s| s.to_string()).collect();
        v.sort();
        v
    }

    fn live_nodes(&self) -> Vec<String> {
        let mut live = self.live.read().unwrap_or_else(|e| e.into_inner()).clone();
        let leaving = self.leaving.load(std::sync::atomic::Ordering::Relaxed);
        live.retain(|n| !(leaving && *n == self.node));
        if !leaving && !live.contains(&self.node) {
            live.push(self.node.clone());
        }
        live
    }

    /// Whether another live source node could take this node's streams.
    pub(crate) fn has_peers(&self) -> bool {
        self.live
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|n| *n != self.node)
    }

    /// The node is stopping: from the next tick on, hand every stream over to the other live
    /// source nodes (those it is the last one for are kept, and released at the end).
    pub(crate) fn leave(&self) {
        self.leaving
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// How many streams this node has taken so far (it moves when one more is read here).
    pub(crate) fn takes(&self) -> u64 {
        self.takes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether a frame of `stream` has been seen lately (it is placed and its lease looked at).
    pub(crate) fn has_seen(&self, stream: &str) -> bool {
        self.state().seen.contains_key(stream)
    }

    /// A frame of `stream` came in: true if it is plainly another node's (seen before, not
    /// held here, no take due), so the caller can let it go without further work; false when
    /// [`StreamLeases::admits`] must decide. Keeps the stream's seen time current either way.
    pub(crate) fn elsewhere(&self, stream: &str) -> bool {
        let mut st = self.state();
        let now = Instant::now();
        let Some(at) = st.seen.get_mut(stream) else {
            return false;
        };
        *at = now;
        if st.held.contains_key(stream) {
            return false;
        }
        st.wanted
            .get(stream)
            .is_none_or(|tried| now.duration_since(*tried) < RETRY_WANTED)
    }

    /// A frame of `stream` came in: whether this node reads it. A stream seen for the first time
    /// is taken at once if the placement gives it to this node and nobody holds it.
    pub(crate) async fn admits(&self, stream: &str) -> bool {
        let (first_sight, wanted) = {
            let mut st = self.state();
            let now = Instant::now();
            let first_sight = if let Some(at) = st.seen.get_mut(stream) {
                *at = now;
                false
            } else if st.seen.len() < MAX_SEEN {
                st.seen.insert(Arc::from(stream), now);
                true
            } else {
                false
            };
            if let Some(h) = st.held.get(stream) {
                return h.leaving_since.is_none();
            }
            // Handed over to this node: take it as soon as the other node lets it go.
            let wanted = st.wanted.get_mut(stream).is_some_and(|tried| {
                let due = now.duration_since(*tried) >= RETRY_WANTED;
                if due {
                    *tried = now;
                }
                due
            });
            (first_sight, wanted)
        };
        if !(wanted || first_sight && self.ranks_first(stream)) {
            return false;
        }
        let taken = self.take(stream).await;
        if taken {
            self.state().wanted.remove(stream);
        }
        taken
    }

    /// A frame of `stream` heard by this node alone (read from a Kafka partition its consumer
    /// group gave this node): there Kafka, not the placement, decides which node reads a
    /// stream, so the node takes the stream's lease whenever it is free. Held by another node
    /// (which had the partition before, until it lets the stream go or its lease runs out), it
    /// is tried again at most every [`RETRY_WANTED`].
    pub(crate) async fn claims(&self, stream: &str) -> bool {
        {
            let mut st = self.state();
            let now = Instant::now();
            if let Some(at) = st.seen.get_mut(stream) {
                *at = now;
            } else if st.seen.len() < MAX_SEEN {
                st.seen.insert(Arc::from(stream), now);
            }
            if let Some(h) = st.held.get(stream) {
                return h.leaving_since.is_none();
            }
            let room = st.claim_tried.len() < MAX_SEEN;
            match st.claim_tried.get_mut(stream) {
                Some(tried) if now.duration_since(*tried) < RETRY_WANTED => return false,
                Some(tried) => *tried = now,
                None if room => {
                    st.claim_tried.insert(Arc::from(stream), now);
                }
                None => return false,
            }
        }
        let taken = self.take(stream).await;
        if taken {
            self.state().claim_tried.remove(stream);
        }
        taken
    }

    /// Whether this node answers a message of `stream` that is refused before the stream's
    /// lease is looked at (junk must not take a lease): the node that reads it, or for a
    /// stream nobody holds, the one ranked first. So the error comes once.
    pub(crate) fn answers_refusals(&self, stream: &str) -> bool {
        self.reads(stream)
            || (!self.state().holders.contains_key(stream) && self.ranks_first(stream))
    }

    /// Whether this node ranks first for `stream` among the live source nodes. A stream's
    /// first frame is seen by every node at once, and this answer needs no other stream, so
    /// all of them agree (the capped placement, which depends on every stream seen so far,
    /// could differ between nodes that have seen different streams yet, and leave a new stream
    /// unread until the next tick, its first frames unaccounted for). The next tick moves it
    /// if its node is over the cap.
    pub(crate) fn ranks_first(&self, stream: &str) -> bool {
        self.live_nodes()
            .iter()
            .max_by_key(|n| (placement::score(n, stream), n.as_str()))
            .is_some_and(|n| *n == self.node)
    }

    /// Renewals are due every third of the lease's life: a lease with less than two thirds
    /// left (less a little slack) has missed one.
    fn overdue_below(&self) -> Duration {
        (self.ttl * 2 / 3).saturating_sub(RENEWAL_SLACK)
    }

    /// The lease of `stream`, held by `token` of a node that is not a live source node:
    /// - **forged**, or left by a node misconfigured (no expiry, or longer than the lease's
    ///   lifetime): no kadr node writes that. Obeyed, it would stall the stream for as long as
    ///   it lasts, unread and unreported. Deleted, said in the log and on the stream's error
    ///   channel, and counted;
    /// - **abandoned**: its node has left the cluster (killed: its session closed) or fell
    ///   silent, and has missed a renewal. Deleted at once instead of waited out, which saves
    ///   up to two thirds of a lease's life on every takeover. Safe: each publish is fenced by
    ///   this key, so a holder that was only slow cannot publish over the next one; and a node
    ///   cut off from the others but not from Redis keeps renewing, so it keeps its streams;
    /// - otherwise left alone, with the time until it would be overdue.
    ///
    /// Returns whether it was deleted (the stream is then placed as a free one), else when to
    /// look again.
    async fn look_at_foreign(
        &self,
        conn: &mut RedisConn,
        stream: &Arc<str>,
        token: &str,
    ) -> Result<(), Option<Duration>> {
        let key = self.channels.stream_lease_key(stream);
        let overdue_below = self.overdue_below();
        let Some((deleted, left_ms)) =
            delete_if_not_renewed(conn, &key, token, self.ttl, overdue_below).await
        else {
            return Err(None);
        };
        if !deleted {
            // Just past the moment it becomes overdue.
            let overdue_in =
                Duration::from_millis(left_ms.max(0) as u64 + 25).checked_sub(overdue_below);
            return Err(overdue_in);
        }
        if left_ms >= 0 && left_ms < overdue_below.as_millis() as i64 {
            info!(%stream, holder = %token, left_ms,
                "the stream's holder has left the cluster and missed a renewal: its lease is taken over now");
            return Ok(());
        }
        self.stats.redis_state_refused.inc();
        let message = format!(
            "{key} was held by {token:?}, no live source node, for {}: no kadr node writes such a lease; deleted, the stream is read again",
            if left_ms == -1 { "ever".to_string() } else { format!("{left_ms} ms more") }
        );
        warn!(%stream, %message, "forged stream lease deleted");
        let error = ErrorMessage::new(stream, None, ErrorCode::RedisState, message);
        if let Ok(json) = serde_json::to_vec(&error) {
            let _: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                .arg(self.channels.errors(stream))
                .arg(json)
                .query_async(conn)
                .await;
        }
        Ok(())
    }

    /// Take a free stream's lease.
    async fn take(&self, stream: &str) -> bool {
        let key = self.channels.stream_lease_key(stream);
        let mut conn = self.conn.clone();
        let sent_at = Instant::now();
        let taken: redis::RedisResult<Option<String>> = redis::cmd("SET")
            .arg(&key)
            .arg(&self.token)
            .arg("NX")
            .arg("PX")
            .arg(self.ttl.as_millis() as u64)
            .query_async(&mut conn)
            .await;
        match taken {
            Ok(Some(_)) => {
                self.takes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Verdict::Log { left_out } = self.take_lines.check(&()) {
                    info!(%stream, left_out, "this node now reads the stream (left_out: streams taken since the last line)");
                }
                self.state().held.insert(
                    Arc::from(stream),
                    Held {
                        leaving_since: None,
                        renewed_at: sent_at,
                    },
                );
                true
            }
            Ok(None) => false,
            Err(e) => {
                warn!(%stream, error = %e, "cannot take the stream's lease");
                false
            }
        }
    }

    /// Say in Redis that this node asks for `streams` (held by other nodes), for a lease's
    /// lifetime: their holders hand them over only then.
    async fn ask_for(&self, conn: &mut RedisConn, streams: &[Arc<str>]) {
        let ask = |s: &Arc<str>| {
            let mut cmd = redis::cmd("SET");
            cmd.arg(self.channels.stream_want_key(s))
                .arg(&self.node)
                .arg("PX")
                .arg(self.ttl.as_millis() as u64);
            cmd
        };
        // On a Redis Cluster each key on its own, all at once: a pipeline across slots is
        // refused.
        if let RedisConn::Cluster(cluster) = conn {
            let sets = streams.iter().map(|s| {
                let (mut c, cmd) = (cluster.clone(), ask(s));
                async move { cmd.query_async::<()>(&mut c).await }
            });
            let asked: redis::RedisResult<Vec<()>> = futures_util::future::join_all(sets)
                .await
                .into_iter()
                .collect();
            if let Err(e) = asked {
                warn!(error = %e, "cannot ask for the streams placed on this node");
            }
            return;
        }
        for chunk in streams.chunks(500) {
            let mut pipe = redis::pipe();
            for s in chunk {
                pipe.add_command(ask(s)).ignore();
            }
            let asked: redis::RedisResult<()> = pipe.query_async(conn).await;
            if let Err(e) = asked {
                warn!(error = %e, "cannot ask for the streams placed on this node");
                return;
            }
        }
    }

    /// Of the held streams placed on other nodes (`(stream, node)`), those their node asks for.
    async fn asked_by(
        &self,
        conn: &mut RedisConn,
        handing: &[(Arc<str>, String)],
    ) -> std::collections::HashSet<Arc<str>> {
        let mut asked = std::collections::HashSet::new();
        for chunk in handing.chunks(500) {
            let keys: Vec<String> = chunk
                .iter()
                .map(|(s, _)| self.channels.stream_want_key(s))
                .collect();
            let askers: redis::RedisResult<Vec<Option<String>>> =
                redis::cmd("MGET").arg(&keys).query_async(conn).await;
            let Ok(askers) = askers else {
                return asked;
            };
            for ((s, to), asker) in chunk.iter().zip(askers) {
                if asker.as_deref() == Some(to.as_str()) {
                    asked.insert(s.clone());
                }
            }
        }
        asked
    }

    async fn release(&self, stream: &str) {
        let mut conn = self.conn.clone();
        let _: redis::RedisResult<i64> = redis::Script::new(RELEASE)
            .key(self.channels.stream_lease_key(stream))
            .arg(&self.token)
            .invoke_async(&mut conn)
            .await;
    }

    /// Release every stream (the node stops, after publishing what it holds).
    pub(crate) async fn release_all(&self) {
        let held: Vec<Arc<str>> = self.state().held.drain().map(|(s, _)| s).collect();
        for s in held {
            self.release(&s).await;
        }
    }

    /// Renew every lease held, all at once, each within a third of the lease's life (on a
    /// Redis Cluster a shard that is down must not hold up the others' renewals); returns those
    /// lost, and whether Redis answered for every one.
    pub(crate) async fn renew_held(&self) -> (Vec<Arc<str>>, bool) {
        let held: Vec<Arc<str>> = self.state().held.keys().cloned().collect();
        let renewals = held.iter().map(|s| {
            let mut conn = self.conn.clone();
            let key = self.channels.stream_lease_key(s);
            async move {
                let script = redis::Script::new(RENEW);
                let mut renew = script.key(key);
                renew.arg(&self.token).arg(self.ttl.as_millis() as u64);
                tokio::time::timeout(self.ttl / 3, renew.invoke_async::<i64>(&mut conn)).await
            }
        });
        let sent_at = Instant::now();
        let results = futures_util::future::join_all(renewals).await;
        let mut gone = Vec::new();
        let mut answered = true;
        for (s, renewed) in held.into_iter().zip(results) {
            match renewed {
                Ok(Ok(1)) => {
                    if let Some(h) = self.state().held.get_mut(&s) {
                        h.renewed_at = sent_at;
                    }
                }
                Ok(Ok(_)) => {
                    warn!(stream = %s, "stream lease lost: another node reads it now");
                    self.state().held.remove(&s);
                    gone.push(s);
                }
                // Redis (or this stream's shard) away: keep it; the fence stops any publish if
                // it runs out meanwhile.
                _ => answered = false,
            }
        }
        (gone, answered)
    }

    /// Renew, look, place, take and hand over (see the module's doc). Returns the streams this
    /// node no longer holds, for the source and the sequencer to forget, and when to tick next.
    pub(crate) async fn tick(&self) -> Ticked {
        let mut look_again_in = self.ttl / 3;
        let (mut gone, answered) = self.renew_held().await;
        if !answered {
            return Ticked {
                gone,
                look_again_in,
            };
        }
        let mut conn = self.conn.clone();
        // Look: who holds every stream seen. A stream silent for FORGET_SEEN_AFTER is no longer
        // placed, and given up if held (the sequencer forgets it too).
        let now = Instant::now();
        let (seen, silent) = {
            let mut st = self.state();
            let State {
                seen,
                held,
                claim_tried,
                ..
            } = &mut *st;
            let silent: Vec<Arc<str>> = held
                .keys()
                .filter(|s| {
                    seen.get(*s)
                        .is_none_or(|at| now.duration_since(*at) >= FORGET_SEEN_AFTER)
                })
                .cloned()
                .collect();
            for s in &silent {
                held.remove(s);
            }
            seen.retain(|_, at| now.duration_since(*at) < FORGET_SEEN_AFTER);
            // Tries at streams no longer heard are forgotten with them: the map is bounded,
            // and a full one would let no new stream from Kafka be claimed.
            claim_tried.retain(|s, _| seen.contains_key(s));
            (seen.keys().cloned().collect::<Vec<_>>(), silent)
        };
        for s in silent {
            info!(stream = %s, "stream silent: its lease is given up");
            self.release(&s).await;
            gone.push(s);
        }
        let live = self.live_nodes();
        let mut holders = HashMap::with_capacity(seen.len());
        let mut foreign = Vec::new();
        for chunk in seen.chunks(500) {
            let keys: Vec<String> = chunk
                .iter()
                .map(|s| self.channels.stream_lease_key(s))
                .collect();
            let tokens: redis::RedisResult<Vec<Option<String>>> =
                redis::cmd("MGET").arg(&keys).query_async(&mut conn).await;
            let Ok(tokens) = tokens else {
                return Ticked {
                    gone,
                    look_again_in,
                };
            };
            for (s, token) in chunk.iter().zip(tokens) {
                if let Some(t) = token {
                    let node = t.rsplit_once('/').map_or(t.as_str(), |(n, _)| n);
                    if !live.iter().any(|n| n == node) {
                        foreign.push((s.clone(), t.clone()));
                    }
                    holders.insert(s.clone(), node.to_string());
                }
            }
        }
        for (s, token) in foreign {
            match self.look_at_foreign(&mut conn, &s, &token).await {
                Ok(()) => {
                    holders.remove(&s);
                }
                // Look again just as it becomes overdue (not sooner than every 50 ms).
                Err(Some(overdue_in)) => {
                    look_again_in = look_again_in.min(overdue_in.max(Duration::from_millis(50)));
                }
                Err(None) => {}
            }
        }
        // Place.
        let owners: HashMap<Arc<str>, String> = {
            let held: HashMap<&str, &str> = holders
                .iter()
                .map(|(s, n): (&Arc<str>, &String)| (s.as_ref(), n.as_str()))
                .collect();
            let streams: Vec<&str> = seen.iter().map(|s| s.as_ref()).collect();
            let nodes: Vec<&str> = live.iter().map(String::as_str).collect();
            placement::assign(&held, &streams, &nodes, LOAD_FACTOR)
                .into_iter()
                .map(|(s, n)| (Arc::from(s), n.to_string()))
                .collect()
        };
        let (asked_for, free_long) = {
            let mut st = self.state();
            st.holders = holders.clone();
            let State {
                wanted,
                held,
                free_since,
                seen: seen_at,
                ..
            } = &mut *st;
            let mut now_wanted: HashMap<Arc<str>, Instant> = HashMap::new();
            for (s, n) in &owners {
                if *n == self.node && !held.contains_key(s) && holders.contains_key(s) {
                    let tried = wanted.get(s).copied().unwrap_or(now - RETRY_WANTED);
                    now_wanted.insert(s.clone(), tried);
                }
            }
            *wanted = now_wanted;
            free_since.retain(|s, _| !holders.contains_key(s) && seen_at.contains_key(s));
            let mut free_long = std::collections::HashSet::new();
            for s in seen.iter().filter(|s| !holders.contains_key(*s)) {
                let since = *free_since.entry(s.clone()).or_insert(now);
                if now.duration_since(since) >= self.ttl * 2 / 3 {
                    free_long.insert(s.clone());
                }
            }
            (wanted.keys().cloned().collect::<Vec<_>>(), free_long)
        };
        self.ask_for(&mut conn, &asked_for).await;
        // Take what is free and ours, and what has stayed free for two ticks whoever it is
        // placed on (that node has not seen it, or places it elsewhere).
        for s in &seen {
            let free = !holders.contains_key(s);
            if free && owners.get(s) == Some(&self.node) {
                self.take(s).await;
            } else if free && free_long.contains(s) && self.take(s).await {
                debug!(stream = %s, "took a stream that stayed free for two ticks (the nodes placed it differently)");
            }
        }
        // Hand over what is another live node's now, once that node asks for it (a node that
        // is leaving hands everything over without being asked); release what has been handed
        // over.
        let handing: Vec<(Arc<str>, String)> = self
            .state()
            .held
            .iter()
            .filter(|(_, h)| h.leaving_since.is_none())
            .filter_map(|(s, _)| {
                let to = owners.get(s)?;
                (*to != self.node && live.contains(to)).then(|| (s.clone(), to.clone()))
            })
            .collect();
        let leaving = self.leaving.load(std::sync::atomic::Ordering::Relaxed);
        let asked = if leaving {
            handing.iter().map(|(s, _)| s.clone()).collect()
        } else {
            self.asked_by(&mut conn, &handing).await
        };
        let handover = HANDOVER_DRAIN.min(self.ttl);
        let mut release = Vec::new();
        {
            let mut st = self.state();
            for (s, h) in st.held.iter_mut() {
                match h.leaving_since {
                    None if asked.contains(s) => {
                        info!(stream = %s, to = %owners[s], "handing the stream over");
                        h.leaving_since = Some(now);
                    }
                    Some(since) if now.duration_since(since) >= handover => release.push(s.clone()),
                    _ => {}
                }
            }
            for s in &release {
                st.held.remove(s);
            }
        }
        for s in release {
            self.release(&s).await;
            gone.push(s);
        }
        Ticked {
            gone,
            look_again_in,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_redis::TestRedis;

    async fn node(redis: &TestRedis, name: &str, live: &LiveSources) -> StreamLeases {
        StreamLeases::new(
            redis.conn().await,
            Channels::new("t".to_string()),
            name,
            Duration::from_millis(2000),
            live.clone(),
            Arc::new(Stats::default()),
        )
    }

    #[tokio::test]
    async fn each_stream_is_read_by_one_node_and_a_dead_node_s_streams_move_to_the_living() {
        let redis = TestRedis::start();
        let live: LiveSources = Arc::new(std::sync::RwLock::new(vec!["a".into(), "b".into()]));
        let (a, b) = (
            node(&redis, "a", &live).await,
            node(&redis, "b", &live).await,
        );
        let streams: Vec<String> = (0..10).map(|i| format!("cam{i}")).collect();
        // Both see every stream's first frame: exactly one takes each.
        for s in &streams {
            let (in_a, in_b) = (a.admits(s).await, b.admits(s).await);
            assert!(in_a != in_b, "{s}: a {in_a}, b {in_b}");
            // Later frames: the same answer, no second take.
            assert_eq!((a.admits(s).await, b.admits(s).await), (in_a, in_b));
        }
        // Ticks settle the placement (within the cap: 5 +/- 1 each), every stream held once.
        for _ in 0..4 {
            a.tick().await;
            b.tick().await;
            tokio::time::sleep(HANDOVER_DRAIN).await;
        }
        for s in &streams {
            a.admits(s).await;
            b.admits(s).await;
        }
        let (ha, hb) = (a.held(), b.held());
        assert_eq!(ha.len() + hb.len(), 10, "{ha:?} {hb:?}");
        assert!(ha.iter().all(|s| !hb.contains(s)));
        assert!((4..=6).contains(&ha.len()), "{ha:?} {hb:?}");
        // b dies: once its leases run out, a takes every stream at its next tick.
        *live.write().unwrap() = vec!["a".into()];
        drop(b);
        tokio::time::sleep(Duration::from_millis(2100)).await;
        a.tick().await;
        assert_eq!(a.held().len(), 10, "{:?}", a.held());
        // And releases them all when it stops.
        a.release_all().await;
        let mut conn = redis.conn().await;
        let left: Vec<String> = redis::cmd("KEYS")
            .arg("t:lease:*")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(left.is_empty(), "{left:?}");
    }

    /// A node that has left (killed) has its streams taken as soon as it misses a renewal,
    /// not when its leases run out; one that others cannot hear but that still renews keeps
    /// them (no tug of war while the cluster is cut in two).
    #[tokio::test]
    async fn a_departed_node_s_leases_are_taken_once_overdue_and_a_renewing_one_s_never() {
        let redis = TestRedis::start();
        let seen_by_a: LiveSources = Arc::new(std::sync::RwLock::new(vec!["a".into()]));
        let seen_by_b: LiveSources = Arc::new(std::sync::RwLock::new(vec!["b".into()]));
        let a = node(&redis, "a", &seen_by_a).await;
        let b = node(&redis, "b", &seen_by_b).await;
        let streams: Vec<String> = (0..4).map(|i| format!("cam{i}")).collect();
        for s in &streams {
            assert!(
                b.admits(s).await,
                "b, alone in its view, takes every stream"
            );
            assert!(!a.admits(s).await, "held by b");
        }
        // Cut off from a but renewing: a looks for three lease lifetimes and takes nothing.
        let until = Instant::now() + Duration::from_millis(6000);
        while Instant::now() < until {
            let looked = a.tick().await;
            assert!(a.held().is_empty(), "{:?}", a.held());
            assert!(looked.look_again_in <= Duration::from_millis(2000) / 3);
            assert!(b.tick().await.gone.is_empty());
            tokio::time::sleep(looked.look_again_in.min(Duration::from_millis(300))).await;
        }
        // b dies right after a renewal. Ticking as its ticks say, a takes b's streams once
        // b's renewal is overdue (0.9 s after the last), well before they run out (2 s).
        b.renew_held().await;
        let died = Instant::now();
        drop(b);
        loop {
            let looked = a.tick().await;
            if !a.held().is_empty() {
                break;
            }
            assert!(
                died.elapsed() < Duration::from_millis(2000),
                "waited them out"
            );
            tokio::time::sleep(looked.look_again_in).await;
        }
        assert_eq!(a.held().len(), 4, "{:?}", a.held());
        let took = died.elapsed();
        assert!(
            took >= Duration::from_millis(800) && took < Duration::from_millis(1400),
            "{took:?}"
        );
        assert_eq!(
            a.stats.redis_state_refused.get(),
            0,
            "a takeover, not a forgery"
        );
    }

    #[tokio::test]
    async fn a_node_that_joins_gets_streams_handed_over_and_the_giver_forgets_them() {
        let redis = TestRedis::start();
        let live: LiveSources = Arc::new(std::sync::RwLock::new(vec!["a".into()]));
        let a = node(&redis, "a", &live).await;
        let streams: Vec<String> = (0..8).map(|i| format!("cam{i}")).collect();
        for s in &streams {
            assert!(a.admits(s).await, "the only node takes every stream");
        }
        let b = node(&redis, "b", &live).await;
        *live.write().unwrap() = vec!["a".into(), "b".into()];
        for s in &streams {
            assert!(!b.admits(s).await, "held by a");
        }
        // a's tick marks b's share as leaving: a stops reading them at once.
        b.tick().await;
        assert!(a.tick().await.gone.is_empty());
        let leaving: Vec<&String> = streams.iter().filter(|s| !a.reads(s)).collect();
        assert!((3..=5).contains(&leaving.len()), "{leaving:?}");
        // After the drain a releases them and says so; b takes each at its next frame.
        tokio::time::sleep(HANDOVER_DRAIN).await;
        let forgotten = a.tick().await.gone;
        assert_eq!(forgotten.len(), leaving.len());
        b.tick().await;
        for s in &leaving {
            assert!(b.admits(s).await, "{s} handed to b");
        }
        assert_eq!(a.held().len() + b.held().len(), 8);
    }

    #[tokio::test]
    async fn a_node_frozen_past_its_renewal_reads_nothing_until_it_has_renewed() {
        let redis = TestRedis::start();
        let live: LiveSources = Arc::new(std::sync::RwLock::new(vec!["a".into()]));
        let a = node(&redis, "a", &live).await;
        assert!(a.admits("cam").await);
        let read = Duration::from_millis(100);
        assert!(a.may_read("cam", read), "just taken");
        assert!(a.reads("cam"));
        // No tick for longer than another node waits before taking an abandoned lease (a
        // frozen process): it still believes it reads the stream, but may not read from it.
        tokio::time::sleep(a.ttl() - a.overdue_below()).await;
        assert!(a.reads("cam"));
        assert!(!a.may_read("cam", Duration::ZERO));
        // Its next tick renews the lease: it reads again.
        assert!(a.tick().await.gone.is_empty());
        assert!(a.may_read("cam", read));
        assert!(!a.may_read("other", read), "never taken");
    }

    /// Node "a", the only live source node, holding twelve streams it took.
    async fn a_alone_holding_twelve(redis: &TestRedis) -> (StreamLeases, LiveSources, Vec<String>) {
        let live: LiveSources = Arc::new(std::sync::RwLock::new(vec!["a".into()]));
        let a = node(redis, "a", &live).await;
        let streams: Vec<String> = (0..12).map(|i| format!("cam{i}")).collect();
        for s in &streams {
            assert!(a.admits(s).await);
        }
        (a, live, streams)
    }

    #[tokio::test]
    async fn nodes_that_place_a_stream_on_each_other_leave_it_read() {
        let redis = TestRedis::start();
        let (a, live, streams) = a_alone_holding_twelve(&redis).await;
        // b joins having seen one stream only (it restarted: the others are silent now). a,
        // which has seen all twelve, places about half on b; b places its one stream with its
        // holder. Pick one that a gives b and that b, finding it free, would place on a.
        let seen_by_a: Vec<&str> = streams.iter().map(String::as_str).collect();
        let held: HashMap<&str, &str> = seen_by_a.iter().map(|s| (*s, "a")).collect();
        let a_places = placement::assign(&held, &seen_by_a, &["a", "b"], LOAD_FACTOR);
        let x = streams
            .iter()
            .find(|s| {
                a_places[s.as_str()] == "b" && placement::score("a", s) > placement::score("b", s)
            })
            .expect("twelve names give one such stream")
            .clone();
        *live.write().unwrap() = vec!["a".into(), "b".into()];
        let b = node(&redis, "b", &live).await;
        assert!(!b.admits(&x).await, "held by a");
        for _ in 0..4 {
            b.tick().await;
            a.tick().await;
            tokio::time::sleep(HANDOVER_DRAIN).await;
            // Frames of x keep coming: both nodes see them.
            let (in_a, in_b) = (a.admits(&x).await, b.admits(&x).await);
            assert!(
                in_a || in_b || a.held().contains(&x) || b.held().contains(&x),
                "{x} read by nobody"
            );
        }
        let mut conn = redis.conn().await;
        let holder: Option<String> = redis::cmd("GET")
            .arg(format!("t:lease:{x}"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(holder.is_some(), "{x} has no lease");
    }

    #[tokio::test]
    async fn a_free_stream_both_nodes_place_on_the_other_is_taken_within_two_ticks() {
        let redis = TestRedis::start();
        let (a, live, streams) = a_alone_holding_twelve(&redis).await;
        // x's lease ran out (its holder gave it up unheard, say): a, holding eleven, places it
        // on b (well under its share); b, which has seen x alone, on a (it ranks first).
        let x = streams
            .iter()
            .find(|s| placement::score("a", s) > placement::score("b", s))
            .expect("one of twelve")
            .clone();
        a.release(&x).await;
        a.state().held.remove(x.as_str());
        *live.write().unwrap() = vec!["a".into(), "b".into()];
        let b = node(&redis, "b", &live).await;
        assert!(!b.admits(&x).await, "a ranks first");
        assert!(!a.admits(&x).await, "placed on b");
        for _ in 0..3 {
            b.tick().await;
            a.tick().await;
            tokio::time::sleep(a.ttl() / 3).await;
        }
        assert!(
            a.held().contains(&x) || b.held().contains(&x),
            "{x} read by nobody"
        );
    }
}
