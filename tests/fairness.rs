//! Checkout is first come, first served: with many more tasks than connections and no
//! outage at all, nobody waits past a 1 s checkout timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use connhub::backend::Bb8Manager;
use connhub::redis::AsyncCommands;
use connhub::testkit::{EtcdServer, RedisServer};
use connhub::{Error, EtcdConfig, Manager, Pool, PooledConnection, RedisConfig};

const RUN: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    timeouts: AtomicU64,
    other: AtomicU64,
    worst_us: AtomicU64,
}

impl Tally {
    fn record<T>(&self, r: &Result<T, Error>, took: Duration) {
        self.worst_us.fetch_max(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        match r {
            Ok(_) => self.ok.fetch_add(1, Ordering::Relaxed),
            Err(Error::Timeout { .. }) => self.timeouts.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                eprintln!("unexpected: {e}");
                self.other.fetch_add(1, Ordering::Relaxed)
            }
        };
    }

    fn report(&self, what: &str) {
        let (ok, timeouts, other) = (
            self.ok.load(Ordering::Relaxed),
            self.timeouts.load(Ordering::Relaxed),
            self.other.load(Ordering::Relaxed),
        );
        println!(
            "{what}: {ok} checkouts in {RUN:?} ({:.0}/s), {timeouts} timeouts, {other} other \
             errors, slowest checkout {:?}",
            ok as f64 / RUN.as_secs_f64(),
            Duration::from_micros(self.worst_us.load(Ordering::Relaxed)),
        );
        assert!(ok > 0);
        assert_eq!(timeouts, 0, "{what}: checkouts timed out with no outage");
        assert_eq!(other, 0, "{what}: checkouts failed with no outage");
    }
}

/// `tasks` tasks check out from `pool` in a loop for [`RUN`], each doing `work` with its
/// connection; then the tally must show no timeout and no other error.
async fn soak<M, F, Fut>(pool: Pool<M>, tasks: usize, what: &str, work: F)
where
    M: Bb8Manager,
    F: Fn(PooledConnection<M>, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (pool, tally, stop, work) =
                (pool.clone(), tally.clone(), stop.clone(), work.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    let r = pool.get().await;
                    tally.record(&r, start.elapsed());
                    if let Ok(c) = r {
                        work(c, t).await;
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(RUN).await;
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.await.unwrap();
    }
    tally.report(what);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_tasks_on_sixteen_redis_connections_never_time_out() {
    let server = RedisServer::start().unwrap();
    let manager = Manager::new();
    let mut cfg: RedisConfig = server.config();
    cfg.pool_size = 16;
    cfg.connector.connect_timeout = Duration::from_secs(1);
    let pool = manager.add_redis("cache", cfg).await.unwrap();
    soak(
        pool,
        64,
        "redis, 64 tasks on a pool of 16",
        |mut c, t| async move {
            let _: () = c.set(format!("fair:{t}"), t).await.unwrap();
        },
    )
    .await;
    manager.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_etcd_writers_on_the_default_pool_never_time_out() {
    let server = EtcdServer::start().unwrap();
    let manager = Manager::new();
    let mut cfg: EtcdConfig = server.config();
    cfg.connector.connect_timeout = Duration::from_secs(1);
    let pool = manager.add_etcd("registry", cfg).await.unwrap();
    soak(
        pool,
        16,
        "etcd, 16 writers on the default pool",
        |mut c, t| async move {
            c.put(format!("fair/{t}"), "v", None).await.unwrap();
        },
    )
    .await;
    manager.close().await.unwrap();
}
