//! Owners for background work: a task lives no longer than the value that owns it.
//!
//! Every `tokio::spawn` in the node goes through [`OwnedTask`] (one task) or [`TaskSet`] (many
//! short ones: dials, handshakes). Dropping the owner aborts the work, so an actor that is
//! killed, a node whose shutdown times out, or a start-up that fails half-way leaves nothing
//! running behind it (a lease renewed for ever, a detector started for a pool that is gone).
//! [`RestartBudget`] is the rule every supervisor applies before restarting a child.

use std::collections::VecDeque;
use std::future::Future;
use std::time::{Duration, Instant};

use ractor::{ActorCell, SupervisionEvent};
use tokio::task::{JoinHandle, JoinSet};

/// One background task, aborted when this is dropped.
#[derive(Debug)]
#[must_use = "dropping an OwnedTask aborts it"]
pub struct OwnedTask(JoinHandle<()>);

impl OwnedTask {
    pub fn spawn(work: impl Future<Output = ()> + Send + 'static) -> Self {
        Self(tokio::spawn(work))
    }

    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }

    /// Abort it and wait until it has stopped.
    pub async fn stop(mut self) {
        self.0.abort();
        let _ = (&mut self.0).await;
    }

    /// Wait for it to end by itself.
    pub async fn join(mut self) {
        let _ = (&mut self.0).await;
    }
}

impl Drop for OwnedTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Many short tasks with one owner; finished ones are reaped as new ones start, so the set
/// holds only what still runs. Dropping it aborts them all.
#[derive(Debug, Default)]
pub(crate) struct TaskSet(JoinSet<()>);

impl TaskSet {
    pub(crate) fn spawn(&mut self, work: impl Future<Output = ()> + Send + 'static) {
        while self.0.try_join_next().is_some() {}
        self.0.spawn(work);
    }

    /// Tasks still running (or finished and not yet reaped).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

/// Restarts of one part allowed within [`RESTART_WINDOW`] before a supervisor gives up.
pub const MAX_RESTARTS: usize = 5;
pub(crate) const RESTART_WINDOW: Duration = Duration::from_secs(60);

/// A child that stopped or failed, and why, from a supervision event; `None` for the other
/// events. How every supervisor of the node reads its children's ends.
pub(crate) fn stopped_child(event: SupervisionEvent) -> Option<(ActorCell, String)> {
    match event {
        SupervisionEvent::ActorTerminated(cell, _, reason) => {
            Some((cell, reason.unwrap_or_else(|| "stopped".into())))
        }
        SupervisionEvent::ActorFailed(cell, e) => Some((cell, format!("failed: {e}"))),
        _ => None,
    }
}

/// At most `max` restarts in any `window`: past it, a supervisor gives up instead of
/// restarting a child whose failure a restart will not mend.
#[derive(Debug)]
pub(crate) struct RestartBudget {
    max: usize,
    window: Duration,
    recent: VecDeque<Instant>,
}

impl RestartBudget {
    pub(crate) fn new(max: usize, window: Duration) -> Self {
        Self {
            max,
            window,
            recent: VecDeque::new(),
        }
    }

    /// Spend one restart at `now`; false once the budget is spent.
    pub(crate) fn spend(&mut self, now: Instant) -> bool {
        while self
            .recent
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) > self.window)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.max {
            return false;
        }
        self.recent.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// Sets its flag when dropped: tells whether a task's future was dropped (aborted).
    struct Flag(Arc<AtomicBool>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    async fn forever(flag: Flag) {
        let _flag = flag;
        std::future::pending::<()>().await;
    }

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn dropping_the_owner_aborts_the_task() {
        let dropped = Arc::new(AtomicBool::new(false));
        let task = OwnedTask::spawn(forever(Flag(dropped.clone())));
        settle().await;
        assert!(!dropped.load(Ordering::SeqCst), "still running while owned");
        drop(task);
        settle().await;
        assert!(dropped.load(Ordering::SeqCst), "aborted with its owner");
    }

    #[tokio::test]
    async fn a_task_set_reaps_finished_tasks_and_aborts_the_rest_when_dropped() {
        let mut set = TaskSet::default();
        for _ in 0..5 {
            set.spawn(async {});
        }
        settle().await;
        let dropped = Arc::new(AtomicBool::new(false));
        set.spawn(forever(Flag(dropped.clone())));
        assert_eq!(set.len(), 1, "the five finished ones were reaped");
        drop(set);
        settle().await;
        assert!(dropped.load(Ordering::SeqCst));
    }

    #[test]
    fn the_budget_allows_so_many_restarts_per_window() {
        let t0 = Instant::now();
        let mut b = RestartBudget::new(2, Duration::from_secs(10));
        assert!(b.spend(t0));
        assert!(b.spend(t0 + Duration::from_secs(1)));
        assert!(
            !b.spend(t0 + Duration::from_secs(2)),
            "third within the window"
        );
        assert!(
            b.spend(t0 + Duration::from_secs(12)),
            "the first has aged out"
        );
    }
}
