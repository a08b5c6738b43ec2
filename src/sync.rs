//! [`lock`], [`read`] and [`write`]: a `std` lock's data, poisoned or not; [`every`]: a
//! periodic task that ends with what it serves.
//!
//! A poisoned lock only means another thread panicked while holding it; the data connhub
//! keeps under its locks (bookkeeping changed by whole assignments) is still usable, and a
//! panic elsewhere must not take every later caller down with it.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::Duration;

/// Locks `m`, poisoned or not.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Takes `l` for reading, poisoned or not.
pub(crate) fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

/// Takes `l` for writing, poisoned or not.
pub(crate) fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

/// Runs `tick` on `target` every `interval` (a late tick delays the next, none bunch up),
/// the first at once, until `target` is dropped. Holds it only weakly between ticks, so it
/// never keeps it alive.
pub(crate) async fn every<T, F, Fut>(target: Weak<T>, interval: Duration, tick: F)
where
    F: Fn(Arc<T>) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(target) = target.upgrade() else {
            return;
        };
        tick(target).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    /// Ticks at once and then each interval, and ends once its target is dropped.
    #[tokio::test(start_paused = true)]
    async fn a_periodic_task_ticks_each_interval_and_ends_with_its_target() {
        let target = Arc::new(AtomicU32::new(0));
        let task = tokio::spawn(super::every(
            Arc::downgrade(&target),
            Duration::from_millis(250),
            |t| async move {
                t.fetch_add(1, Ordering::Relaxed);
            },
        ));
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        // At 0, 250, 500, 750 and 1000 ms.
        assert_eq!(target.load(Ordering::Relaxed), 5);
        drop(target);
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("the task ends at its next tick once its target is gone")
            .expect("no panic");
    }
}
