//! Node-wide counters: cheap atomics that every actor bumps and the node logs.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::protocol::{ErrorCode, GapReason};

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn sub(&self, n: u64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(n))
            });
    }
    pub fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }
    /// Saturates rather than wraps: a counter pinned at the top is visibly wrong, a wrapped
    /// one looks plausible.
    pub fn add(&self, n: u64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_add(n))
            });
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Every frame the node hears of ends in exactly one of: `errors` (refused before acceptance),
/// `detected`, or one of the gap counters.
#[derive(Debug, Default)]
pub struct Stats {
    /// Messages received on the frames channels.
    pub received: Counter,
    /// Frames accepted and registered with the sequencer.
    pub accepted: Counter,
    /// Messages refused (each also published on the stream's error channel), and by code, in
    /// the order of [`ErrorCode::ALL`].
    pub errors: Counter,
    pub errors_by_code: [Counter; ErrorCode::ALL.len()],
    pub detected: Counter,
    pub dropped: Counter,
    pub failed: Counter,
    pub lost: Counter,
    pub missing: Counter,
    pub detector_restarts: Counter,
    /// Times the source, dispatcher and sequencer were restarted together, and the pool.
    pub ingress_restarts: Counter,
    pub pool_restarts: Counter,
    /// Gauge: parts of the node down and being restarted now (`/health` is 503 while > 0).
    pub parts_down: Counter,
    pub publish_errors: Counter,
    /// Results not published because another node held the source lease by then (covered by
    /// that node's `missing` gap).
    pub fenced: Counter,
    /// Results not published again: Redis had them already (a publish whose reply was lost
    /// to a stall, then retried).
    pub already_published: Counter,
    /// Times Redis's record of a stream's last published result was found ahead of anything
    /// this node published (written by someone else), and not believed.
    pub redis_state_refused: Counter,
    /// Accepted frames of a numbering that restarted, numbered past a hole wider than
    /// `limits.max_seq_jump` (forged, or left behind): counted and logged, never published.
    pub abandoned: Counter,
    /// Times the source found Redis unreachable (one per outage), and whether it is now (0/1).
    pub redis_outages: Counter,
    pub redis_down: Counter,
    /// Times Redis closed the source's subscription while Redis itself stayed up.
    pub pubsub_disconnects: Counter,
    /// Frames read from Kafka (`[kafka]`); Kafka messages without a stream id as their key
    /// (nobody to tell: counted and logged); errors Kafka's client reported.
    pub kafka_messages: Counter,
    pub kafka_unkeyed: Counter,
    pub kafka_errors: Counter,
    /// Live frames dropped (within `dropped`) because a newer frame of their stream was
    /// waiting, and because they waited past their stream's `live.max_wait_ms`.
    pub superseded: Counter,
    pub too_old: Counter,
    /// Frames sent to another detector because the one holding them was lost.
    pub redispatched: Counter,
    /// Kept frames also sent to a second detector because the first stayed silent.
    pub resent: Counter,
    /// Results that came after their frame was accounted for (sent again, or timed out).
    pub late_results: Counter,
    /// Messages from peers that could not be decoded.
    pub malformed: Counter,
    /// Connections to the cluster port closed during the cookie handshake.
    pub cluster_handshakes_failed: Counter,
    /// Sessions with peers closed because no heartbeat came through them.
    pub silent_sessions_closed: Counter,
    /// Cluster port: connections closed unauthenticated at the handshake deadline, closed at
    /// accept because too many were waiting, and accept errors (out of descriptors).
    pub cluster_handshake_timeouts: Counter,
    pub cluster_connections_refused: Counter,
    pub cluster_accept_errors: Counter,
    /// Frames this node's detectors finished.
    pub inferences: Counter,
    /// 1 while this source node hands its streams over to stop: it no longer offers itself.
    pub source_leaving: Counter,
    /// Gauge: streams whose lease this node holds (`cluster.stream_leases`).
    pub streams_held: Counter,
    /// Frames of streams another source node reads, left alone (`cluster.stream_leases`).
    pub frames_elsewhere: Counter,
    /// Gauge: frames its detectors finished per second over the last heartbeat, in tenths.
    pub detect_fps_tenths: Counter,
    /// Gauges: this node's detectors, those busy now; detectors in the cluster this node's
    /// dispatcher can use; frames it has at detectors and waiting.
    pub detectors: Counter,
    pub busy: Counter,
    pub cluster_detectors: Counter,
    pub dispatch_in_flight: Counter,
    pub dispatch_queued: Counter,
    /// Objects this node's detectors found, per class name.
    pub objects: ClassCounts,
}

/// Objects found per class name. The names come from the model, so the map is as large as its
/// class list; past [`ClassCounts::MAX_CLASSES`] names (a graph emitting stray class ids) the
/// rest count as `other`.
#[derive(Debug, Default)]
pub struct ClassCounts(std::sync::Mutex<std::collections::BTreeMap<String, u64>>);

impl ClassCounts {
    pub const MAX_CLASSES: usize = 4096;

    pub fn add(&self, detections: &[crate::protocol::Detection]) {
        if detections.is_empty() {
            return;
        }
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for d in detections {
            if let Some(n) = counts.get_mut(&d.class) {
                *n += 1;
            } else if counts.len() < Self::MAX_CLASSES {
                counts.insert(d.class.clone(), 1);
            } else {
                *counts.entry("other".into()).or_default() += 1;
            }
        }
    }

    /// (class, count), by class name.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        let counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        counts.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

impl Stats {
    /// A message refused with `code`.
    pub(crate) fn refused(&self, code: ErrorCode) {
        self.errors.inc();
        if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code) {
            self.errors_by_code[i].inc();
        }
    }

    pub fn gap(&self, reason: GapReason, count: u64) {
        match reason {
            GapReason::Dropped => self.dropped.add(count),
            GapReason::Failed => self.failed.add(count),
            GapReason::Lost => self.lost.add(count),
            GapReason::Missing => self.missing.add(count),
        }
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "received={} accepted={} detected={} dropped={} failed={} lost={} missing={} errors={} restarts={} publish_errors={}",
            self.received.get(),
            self.accepted.get(),
            self.detected.get(),
            self.dropped.get(),
            self.failed.get(),
            self.lost.get(),
            self.missing.get(),
            self.errors.get(),
            self.detector_restarts.get(),
            self.publish_errors.get(),
        )
    }
}
