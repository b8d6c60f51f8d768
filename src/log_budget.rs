//! Logs an attacker cannot fill. A warning that anyone on the network can cause once per
//! message (a junk frame, a junk connection) is logged for the first few of each kind in a
//! window; the rest are only counted, and the next one logged after the window says how many
//! were left out. The counters in `/metrics` keep the exact totals.
//!
//! The cluster library (ractor_cluster) logs about four lines of its own per junk connection
//! to the cluster port, and the redis crate's cluster client one per failed try while a Redis
//! Cluster's master is down (hundreds a second); [`LibraryLogBudget`] holds those to the same
//! budget per line of its source, and membership reports how many it left out.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines logged per kind and window.
const PER_WINDOW: u32 = 5;
pub(crate) const WINDOW: Duration = Duration::from_secs(10);
/// Kinds followed at once: past this, the oldest window is forgotten (keys could be made up).
const MAX_KINDS: usize = 1024;

#[derive(Debug)]
struct Spent {
    since: Instant,
    logged: u32,
    left_out: u64,
}

/// Per kind `K` (a reason, a reason and a peer address...), whether to log now.
#[derive(Debug)]
pub(crate) struct LogBudget<K> {
    kinds: Mutex<HashMap<K, Spent>>,
}

/// What to do with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Log it; `left_out` like it were not logged since the last one that was.
    Log { left_out: u64 },
    /// Only count it.
    Quiet,
}

impl<K: Hash + Eq + Clone> LogBudget<K> {
    pub(crate) fn new() -> Self {
        Self {
            kinds: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn check(&self, kind: &K) -> Verdict {
        self.check_at(kind, Instant::now())
    }

    fn check_at(&self, kind: &K, now: Instant) -> Verdict {
        let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        if !kinds.contains_key(kind) && kinds.len() >= MAX_KINDS {
            kinds.retain(|_, s| now.duration_since(s.since) < WINDOW);
            if kinds.len() >= MAX_KINDS {
                return Verdict::Quiet;
            }
        }
        let spent = kinds.entry(kind.clone()).or_insert(Spent {
            since: now,
            logged: 0,
            left_out: 0,
        });
        if now.duration_since(spent.since) >= WINDOW {
            spent.since = now;
            spent.logged = 0;
        }
        if spent.logged < PER_WINDOW {
            spent.logged += 1;
            Verdict::Log {
                left_out: std::mem::take(&mut spent.left_out),
            }
        } else {
            spent.left_out += 1;
            Verdict::Quiet
        }
    }
}

/// Log lines of the cluster library left out, since the process started.
static LIBRARY_LEFT_OUT: AtomicU64 = AtomicU64::new(0);

pub(crate) fn library_lines_left_out() -> u64 {
    LIBRARY_LEFT_OUT.load(Ordering::Relaxed)
}

/// A `tracing` filter that holds the cluster library's events to a log budget per line of its
/// source (the library's messages name a peer, so the text would make each one a new kind).
/// Put it after the level filter, so that only events that would be written are counted:
///
/// ```no_run
/// use tracing_subscriber::{filter::FilterExt, layer::SubscriberExt, util::SubscriberInitExt, Layer};
/// let levels = tracing_subscriber::EnvFilter::new("info");
/// tracing_subscriber::registry()
///     .with(tracing_subscriber::fmt::layer().with_filter(levels.and(kadr::LibraryLogBudget::new())))
///     .init();
/// ```
pub struct LibraryLogBudget {
    budget: LogBudget<tracing::callsite::Identifier>,
}

impl LibraryLogBudget {
    /// The libraries held to the budget (log targets start with these).
    const TARGETS: [&'static str; 3] = ["ractor_cluster", "redis", "librdkafka"];

    pub fn new() -> Self {
        Self {
            budget: LogBudget::new(),
        }
    }

    fn from_library(meta: &tracing::Metadata<'_>) -> bool {
        meta.is_event() && Self::TARGETS.iter().any(|t| meta.target().starts_with(t))
    }
}

impl Default for LibraryLogBudget {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> tracing_subscriber::layer::Filter<S> for LibraryLogBudget {
    fn enabled(
        &self,
        meta: &tracing::Metadata<'_>,
        _: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        if !Self::from_library(meta) {
            return true;
        }
        match self.budget.check(&meta.callsite()) {
            Verdict::Log { .. } => true,
            Verdict::Quiet => {
                LIBRARY_LEFT_OUT.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    fn callsite_enabled(
        &self,
        meta: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if Self::from_library(meta) {
            // Asked per event, so that each one is counted.
            tracing::subscriber::Interest::sometimes()
        } else {
            tracing::subscriber::Interest::always()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_logs_a_few_lines_per_window_and_says_how_many_it_left_out() {
        let budget = LogBudget::new();
        let t0 = Instant::now();
        let logged = (0..15_000)
            .filter(|_| budget.check_at(&"bad_magic", t0) != Verdict::Quiet)
            .count();
        assert_eq!(logged, PER_WINDOW as usize);
        // Another kind has its own budget.
        assert_eq!(
            budget.check_at(&"bad_image", t0),
            Verdict::Log { left_out: 0 }
        );
        // The next window's first line counts what the last one left out.
        assert_eq!(
            budget.check_at(&"bad_magic", t0 + WINDOW),
            Verdict::Log {
                left_out: 15_000 - PER_WINDOW as u64
            }
        );
    }

    #[test]
    fn made_up_kinds_cannot_grow_it_without_bound() {
        let budget = LogBudget::new();
        let t0 = Instant::now();
        for i in 0..MAX_KINDS * 3 {
            budget.check_at(&i, t0);
        }
        assert!(budget.kinds.lock().unwrap().len() <= MAX_KINDS);
        assert_eq!(budget.check_at(&usize::MAX, t0), Verdict::Quiet);
        assert!(budget.check_at(&usize::MAX, t0 + WINDOW) != Verdict::Quiet);
    }
}
