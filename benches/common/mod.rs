//! What the benches share.

use std::future::Future;
use std::time::{Duration, Instant};

/// Runs `total` calls of `op` spread over `tasks` tasks; returns the wall time.
pub async fn spread<F, Fut>(tasks: usize, total: u64, op: F) -> Duration
where
    F: Fn() -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = ()> + Send,
{
    let per_task = total.div_ceil(tasks as u64).max(1);
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let op = op.clone();
            tokio::spawn(async move {
                for _ in 0..per_task {
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
