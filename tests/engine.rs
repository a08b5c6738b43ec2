//! The health engine end to end against real Redis, with **default** settings and callers
//! that retry **without sleeping**, on a 2-worker runtime. Bounds are generous; the
//! figures are printed for the record.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use connhub::redis::AsyncCommands;
use connhub::testkit::RedisServer;
use connhub::{Manager, RedisConfig, RedisPool};

/// A 10 ms heartbeat; returns the longest gap it saw between beats, in microseconds.
fn heartbeat(stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Duration> {
    tokio::spawn(async move {
        let mut worst = Duration::ZERO;
        let mut last = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let now = Instant::now();
            worst = worst.max(now - last);
            last = now;
        }
        worst
    })
}

struct Load {
    stop: Arc<AtomicBool>,
    /// Longest single call (checkout + command), in microseconds.
    longest: Arc<AtomicU64>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    /// Microseconds since `t0` of the last failure and the first success after it.
    last_success_us: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    t0: Instant,
}

/// How a caller sends its command.
#[derive(Debug, Clone, Copy)]
enum Via {
    /// `get()`, then the command on the checkout.
    Checkout,
    /// The command on the pool itself (the shared connection).
    Pool,
}

/// One `SET` through `pool` by `via`: whether it succeeded.
async fn set(pool: &RedisPool, via: Via, key: &str) -> bool {
    match via {
        Via::Checkout => match pool.get().await {
            Ok(mut c) => c.set::<_, _, ()>(key, 1).await.is_ok(),
            Err(_) => false,
        },
        Via::Pool => {
            let mut pool = pool.clone();
            AsyncCommands::set::<_, _, ()>(&mut pool, key, 1)
                .await
                .is_ok()
        }
    }
}

/// `n` tasks that loop a `SET` by `via` with no sleep at all.
fn hammer(pool: &RedisPool, n: usize, via: Via) -> Load {
    let load = Load {
        stop: Arc::default(),
        longest: Arc::default(),
        ok: Arc::default(),
        failed: Arc::default(),
        last_success_us: Arc::default(),
        tasks: Vec::new(),
        t0: Instant::now(),
    };
    let mut tasks = Vec::new();
    for t in 0..n {
        let pool = pool.clone();
        let (stop, longest, ok, failed, last_ok) = (
            load.stop.clone(),
            load.longest.clone(),
            load.ok.clone(),
            load.failed.clone(),
            load.last_success_us.clone(),
        );
        let t0 = load.t0;
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                let r = set(&pool, via, &format!("engine:{t}")).await;
                let took = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
                longest.fetch_max(took, Ordering::Relaxed);
                if r {
                    ok.fetch_add(1, Ordering::Relaxed);
                    let at = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
                    last_ok.fetch_max(at, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    Load { tasks, ..load }
}

impl Load {
    async fn finish(self) -> (Duration, u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        (
            Duration::from_micros(self.longest.load(Ordering::Relaxed)),
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }

    fn successes(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }
}

/// Waits until `pool` serves a SET by `via` again, asking again at once; returns how long
/// that took.
async fn first_success(pool: &RedisPool, via: Via, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if set(pool, via, "engine:probe").await {
            return Some(start.elapsed());
        }
        tokio::task::yield_now().await;
    }
    None
}

/// `tasks` callers by `via`; the server killed or frozen for 3 s.
async fn stall_under_no_sleep_retries(kill: bool, via: Via, tasks: usize) {
    let mut server = RedisServer::start().unwrap();
    let manager = Manager::new();
    let cfg: RedisConfig = server.config();
    let bound = cfg.connector.connect_timeout + cfg.command_timeout.unwrap();
    let pool = manager.add_redis("cache", cfg).await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let beat = heartbeat(stop.clone());
    let load = hammer(&pool, tasks, via);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(load.successes() > 0, "served before the outage");
    if kill {
        server.kill();
    } else {
        server.pause().unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    if kill {
        server.restart_async().await.unwrap();
    } else {
        server.resume().unwrap();
    }
    let back = Instant::now();
    let recovered = first_success(&pool, via, Duration::from_secs(15)).await;
    let (longest, ok, failed) = load.finish().await;
    stop.store(true, Ordering::Relaxed);
    let worst_gap = beat.await.unwrap();
    println!(
        "{} ({tasks} tasks by {via:?}): heartbeat worst gap {worst_gap:?}, longest call \
         {longest:?} (bound {bound:?}), recovered {recovered:?} after the server was back, \
         {ok} ok / {failed} refused",
        if kill { "kill" } else { "SIGSTOP" }
    );
    assert!(
        worst_gap < Duration::from_millis(500),
        "the runtime stalled for {worst_gap:?}"
    );
    assert!(
        longest <= bound + Duration::from_secs(1),
        "a call took {longest:?}, more than connect_timeout + command_timeout ({bound:?})"
    );
    let recovered = recovered.expect("the pool serves again after the outage");
    assert!(
        recovered < Duration::from_secs(5),
        "took {recovered:?} to serve again ({:?} since back)",
        back.elapsed()
    );
    manager.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_with_no_sleep_retries_never_stalls_the_runtime() {
    stall_under_no_sleep_retries(false, Via::Checkout, 16).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_with_no_sleep_retries_never_stalls_the_runtime() {
    stall_under_no_sleep_retries(true, Via::Checkout, 16).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_with_no_sleep_retries_on_the_pool_itself_never_stalls_the_runtime() {
    stall_under_no_sleep_retries(false, Via::Pool, 64).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_with_no_sleep_retries_on_the_pool_itself_never_stalls_the_runtime() {
    stall_under_no_sleep_retries(true, Via::Pool, 64).await;
}

/// Kill, wait `outage`, restart; callers keep asking. The first success must come within
/// `reconnect_interval` (+ slack) of the server answering, however long the outage was.
async fn recovery_after(outage: Duration, via: Via) {
    let mut server = RedisServer::start().unwrap();
    let manager = Manager::new();
    let cfg: RedisConfig = server.config();
    let interval = cfg.connector.reconnect_interval;
    let pool = manager.add_redis("cache", cfg).await.unwrap();
    let load = hammer(&pool, 4, via);
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.kill();
    tokio::time::sleep(outage).await;
    server.restart_async().await.unwrap();
    // `restart` returns once the server answers a PING.
    let recovered = first_success(&pool, via, Duration::from_secs(10)).await;
    let (_, ok, failed) = load.finish().await;
    println!(
        "outage {outage:?}, by {via:?}: first success {recovered:?} after the server answered \
         (reconnect_interval {interval:?}); {ok} ok / {failed} refused"
    );
    let recovered = recovered.expect("serves again");
    assert!(
        recovered <= interval + Duration::from_millis(600),
        "recovery took {recovered:?} after the server answered"
    );
    manager.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_after_a_2s_outage_is_bounded_by_reconnect_interval() {
    recovery_after(Duration::from_secs(2), Via::Checkout).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_on_the_pool_itself_after_a_2s_outage_is_bounded_by_reconnect_interval() {
    recovery_after(Duration::from_secs(2), Via::Pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_after_a_10s_outage_is_bounded_by_reconnect_interval() {
    recovery_after(Duration::from_secs(10), Via::Checkout).await;
}

/// Counts the server's clients, from a connection of its own.
async fn client_count(server: &RedisServer) -> usize {
    let client = connhub::redis::Client::open(format!("redis://{}", server.addr())).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let list: String = connhub::redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut conn)
        .await
        .unwrap();
    // Minus this connection.
    list.lines().count() - 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_drops_every_idle_connection() {
    let server = RedisServer::start().unwrap();
    let manager = Manager::new();
    let pool = manager.add_redis("cache", server.config()).await.unwrap();
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(pool.get().await.unwrap());
    }
    for c in &mut held {
        let _: () = c.set("engine:close", 1).await.unwrap();
    }
    drop(held);
    assert_eq!(pool.status().pool.idle, 8);
    assert_eq!(client_count(&server).await, 8);
    manager.close().await.unwrap();
    let mut left = usize::MAX;
    for _ in 0..100 {
        left = client_count(&server).await;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(left, 0, "connections left open after close()");
}
