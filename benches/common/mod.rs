//! What the benches share.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The runtime the benches run on: two workers, as in a small service.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Runs `total` calls of `op` on `tasks` tasks; returns the wall time.
///
/// The tasks take calls from one shared count until it is used up, so the time measures
/// throughput at that concurrency. (Fixed shares per task would measure the unluckiest
/// task instead: a pool hands a returned connection to whoever asks first, so some tasks
/// get ahead and the run would end on a few stragglers.)
pub async fn spread<F, Fut>(tasks: usize, total: u64, op: F) -> Duration
where
    F: Fn() -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = ()> + Send,
{
    let left = Arc::new(AtomicU64::new(total.max(1)));
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (op, left) = (op.clone(), left.clone());
            tokio::spawn(async move {
                while left
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok()
                {
                    op().await;
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("task");
    }
    start.elapsed()
}
