//! Leak detection: checkouts held longer than `leak_detection_threshold` are reported
//! once when they pass it and again when they come back, as HikariCP does.
//!
//! Off by default, and then it costs nothing: no registry, no task. When on, a checkout
//! takes a ticket (one short lock), and a task per pool looks over the tickets a few
//! times per threshold.

use std::collections::HashMap;
use std::panic::Location;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use crate::sync::lock;
use tokio::time::Instant;

/// The checkouts of one pool, while leak detection is on.
pub(crate) struct Leaks {
    connector: String,
    kind: String,
    threshold: Duration,
    held: Mutex<HashMap<u64, Held>>,
    next: AtomicU64,
    /// Checkouts reported so far.
    reported: AtomicU64,
}

struct Held {
    since: Instant,
    at: &'static Location<'static>,
    reported: bool,
}

/// One checkout's entry; returning the connection drops it.
pub(crate) struct Ticket {
    leaks: Arc<Leaks>,
    id: u64,
}

impl Leaks {
    /// A registry, and the task that watches it (it ends with the registry).
    pub(crate) fn start(connector: &str, kind: &str, threshold: Duration) -> Arc<Leaks> {
        let leaks = Arc::new(Leaks {
            connector: connector.to_owned(),
            kind: kind.to_owned(),
            threshold,
            held: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            reported: AtomicU64::new(0),
        });
        tokio::spawn(watch(Arc::downgrade(&leaks), tick(threshold)));
        leaks
    }

    /// Registers a checkout made at `at`.
    pub(crate) fn checkout(self: &Arc<Self>, at: &'static Location<'static>) -> Ticket {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let held = Held {
            since: Instant::now(),
            at,
            reported: false,
        };
        self.lock().insert(id, held);
        Ticket {
            leaks: self.clone(),
            id,
        }
    }

    /// Checkouts reported as possible leaks so far.
    pub(crate) fn reported(&self) -> u64 {
        self.reported.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Held>> {
        // Every change is one insert, remove or flag: a panic elsewhere leaves it whole.
        lock(&self.held)
    }

    /// Reports every checkout past the threshold that was not reported yet.
    fn sweep(&self, now: Instant) {
        let mut late = Vec::new();
        for held in self.lock().values_mut() {
            let for_ = now.saturating_duration_since(held.since);
            if !held.reported && for_ >= self.threshold {
                held.reported = true;
                late.push((held.at, for_));
            }
        }
        for (at, for_) in late {
            self.reported.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                connector = %self.connector,
                kind = %self.kind,
                checked_out_at = %at,
                held_for = ?for_,
                threshold = ?self.threshold,
                "connection held past leak_detection_threshold: possible leak"
            );
            #[cfg(feature = "metrics")]
            metrics::counter!(
                "connhub.connections.leaked",
                "connector" => self.connector.clone(),
                "kind" => self.kind.clone()
            )
            .increment(1);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let held = self.leaks.lock().remove(&self.id);
        if let Some(held) = held
            && held.reported
        {
            tracing::info!(
                connector = %self.leaks.connector,
                kind = %self.leaks.kind,
                checked_out_at = %held.at,
                held_for = ?held.since.elapsed(),
                "connection reported as a possible leak was returned"
            );
        }
    }
}

/// How often the task looks: a quarter of the threshold, between 5 ms and 1 s.
fn tick(threshold: Duration) -> Duration {
    (threshold / 4).clamp(Duration::from_millis(5), Duration::from_secs(1))
}

async fn watch(leaks: Weak<Leaks>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(leaks) = leaks.upgrade() else { return };
        leaks.sweep(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_checkout_is_reported_once_past_the_threshold() {
        let leaks = Leaks::start("cache", "redis", Duration::from_millis(100));
        let ticket = leaks.checkout(Location::caller());
        let quick = leaks.checkout(Location::caller());
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(quick);
        assert_eq!(leaks.reported(), 0, "not past the threshold yet");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(leaks.reported(), 1, "reported past the threshold");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(leaks.reported(), 1, "reported once only");
        drop(ticket);
        assert!(leaks.lock().is_empty(), "returned: forgotten");
    }

    #[test]
    fn the_task_looks_a_few_times_per_threshold() {
        assert_eq!(tick(Duration::from_millis(100)), Duration::from_millis(25));
        assert_eq!(tick(Duration::from_millis(1)), Duration::from_millis(5));
        assert_eq!(tick(Duration::from_secs(60)), Duration::from_secs(1));
    }
}
