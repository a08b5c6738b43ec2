//! A Redis connector on a Redis Cluster with `read_from_replicas`, against a real cluster
//! (testkit): a replica or a master frozen under readers that retry without sleeping,
//! default settings otherwise, on a 2-worker runtime. Bounds are generous; the figures
//! are printed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use connhub::redis::AsyncCommands;
use connhub::testkit::{RedisCluster, RedisServer};
use connhub::{Manager, RedisPool, State};

/// Cluster tests start six processes each: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const KEYS: usize = 1000;

fn key(i: usize) -> String {
    format!("replica-read:{i}")
}

/// A cluster whose every replica is in the slot map, and a pool on it reading from
/// replicas, with every key written.
async fn reading_from_replicas() -> (RedisCluster, Manager, RedisPool) {
    let cluster = RedisCluster::start().unwrap();
    // The pool reads the slot map when it connects: with every replica in it.
    cluster
        .wait_replicas_listed(Duration::from_secs(30))
        .unwrap();
    let mut config = cluster.config();
    config.cluster.as_mut().unwrap().read_from_replicas = true;
    let manager = Manager::new();
    let pool = manager.add_redis("replicas", config).await.unwrap();
    let mut writer = pool.clone();
    for i in 0..KEYS {
        let _: () = writer.set(key(i), i).await.unwrap();
    }
    cluster.wait_synced(Duration::from_secs(10)).unwrap();
    (cluster, manager, pool)
}

/// How many `GET`s `node` has run, as its `INFO commandstats` says.
async fn gets_on(node: &RedisServer) -> u64 {
    let mut conn = redis::Client::open(format!("redis://{}", node.addr()))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_get:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// What a reader `GET`s through.
#[derive(Clone, Copy)]
enum Via {
    /// The pool itself, as a connection.
    Pool,
    /// A checkout of its own (`get()`), for each read.
    Checkout,
    /// The shared connection (`multiplexed()`), for each read.
    Multiplexed,
}

/// One `GET` of `key` through `via`.
async fn read(pool: &RedisPool, via: Via, key: String) -> redis::RedisResult<Option<usize>> {
    let unavailable = |e: connhub::Error| redis::RedisError::from(std::io::Error::other(e));
    match via {
        Via::Pool => AsyncCommands::get(&mut pool.clone(), key).await,
        Via::Checkout => pool.get().await.map_err(unavailable)?.get(key).await,
        Via::Multiplexed => {
            pool.multiplexed()
                .await
                .map_err(unavailable)?
                .get(key)
                .await
        }
    }
}

/// 16 tasks that `GET` every key in turn, without sleeping, and check each value: each
/// task through the first of `vias` it is given in turn.
struct Readers {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    longest_ms: Arc<AtomicU64>,
    /// How long each failed read took, and what it got.
    failures: Arc<Mutex<Vec<(Duration, String)>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Readers {
    fn start(pool: &RedisPool, vias: &[Via]) -> Readers {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let longest_ms = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..16)
            .map(|t| {
                let via = vias[t % vias.len()];
                let (pool, stop, ok, longest_ms, failures) = (
                    pool.clone(),
                    stop.clone(),
                    ok.clone(),
                    longest_ms.clone(),
                    failures.clone(),
                );
                tokio::spawn(async move {
                    let mut i = t;
                    while !stop.load(Ordering::Relaxed) {
                        i = (i + 16) % KEYS;
                        let started = Instant::now();
                        let read = read(&pool, via, key(i)).await;
                        let took = started.elapsed();
                        longest_ms.fetch_max(
                            u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
                            Ordering::Relaxed,
                        );
                        match read {
                            Ok(Some(v)) if v == i => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            other => failures.lock().unwrap().push((took, format!("{other:?}"))),
                        }
                    }
                })
            })
            .collect();
        Readers {
            stop,
            ok,
            longest_ms,
            failures,
            tasks,
        }
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops the readers: the failed reads, and the longest read in milliseconds.
    async fn stop(self) -> (Vec<(Duration, String)>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let failures = std::mem::take(&mut *self.failures.lock().unwrap());
        (failures, self.longest_ms.load(Ordering::Relaxed))
    }
}

/// A replica frozen (SIGSTOP) for 6 s under 16 tasks that `GET` through `vias` without
/// sleeping, on a cluster read from replicas. A frozen replica keeps its connections
/// open and answers nothing, and the redis crate keeps it in its slot map after the
/// cluster has marked it failed: without the node monitor no read at all succeeded for
/// 4 s, and 16 failed after `command_timeout`. Now reads keep away from it while it is
/// silent, and a read already waiting on it is given up after a second and sent again (a
/// read changes nothing): none fails, whatever it went through.
async fn freeze_a_replica(vias: &[Via], what: &str) {
    let _serial = SERIAL.lock().await;
    let (cluster, manager, pool) = reading_from_replicas().await;
    let readers = Readers::start(&pool, vias);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let masters = cluster.masters().unwrap();
    let victim = (0..cluster.nodes().len())
        .find(|i| !masters.contains(i))
        .expect("a replica");
    let read_there = gets_on(&cluster.nodes()[victim]).await;
    cluster.nodes()[victim].pause().unwrap();
    let frozen_at = readers.ok();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = readers.ok();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let late_in_freeze = readers.ok() - before;
    let in_freeze = readers.ok() - frozen_at;
    cluster.nodes()[victim].resume().unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ok = readers.ok();
    let (failures, longest_ms) = readers.stop().await;

    let retried = pool.status().retried_commands;
    println!(
        "frozen cluster replica, reads through {what}: {ok} reads ok ({in_freeze} in the \
         6 s freeze, {late_in_freeze} in its last 3 s), {} failed, longest {longest_ms} \
         ms, {retried} sent again; the replica had run {read_there} GETs before",
        failures.len(),
    );
    assert!(read_there > 0, "reads never went to the replica");
    assert!(failures.is_empty(), "reads failed: {failures:?}");
    assert!(longest_ms < 3000, "a read waited {longest_ms} ms");
    assert!(
        late_in_freeze > 1000,
        "only {late_in_freeze} reads in the last 3 s of the freeze"
    );
    assert!(
        retried > 0,
        "no read waiting on the frozen replica was given up and sent again"
    );
    assert_eq!(pool.state(), State::Healthy);
    manager.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_replica_holds_no_read_past_a_second_and_none_fails() {
    freeze_a_replica(&[Via::Pool], "the pool").await;
}

/// The same on the connections a caller holds: a read given up on the frozen replica is
/// sent again on the same cluster connection, which routes it elsewhere by then. Before,
/// the caller got the given-up read as an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_replica_fails_no_read_on_a_checkout_or_a_shared_connection() {
    freeze_a_replica(
        &[Via::Checkout, Via::Multiplexed],
        "checkouts and multiplexed()",
    )
    .await;
}

/// A master frozen for 3 s, with reads on replicas: its slots' reads are served by its
/// replica throughout, none refused (a write for its slots is refused while it is
/// silent; a read no longer is, since it does not go there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_master_costs_no_read_on_its_replica() {
    let _serial = SERIAL.lock().await;
    let (cluster, manager, pool) = reading_from_replicas().await;
    let readers = Readers::start(&pool, &[Via::Pool]);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let victim = cluster.masters().unwrap()[0];
    cluster.nodes()[victim].pause().unwrap();
    let frozen_at = readers.ok();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let in_freeze = readers.ok() - frozen_at;
    cluster.nodes()[victim].resume().unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (failures, longest_ms) = readers.stop().await;

    println!(
        "frozen cluster master, reads on replicas: {in_freeze} reads ok in the 3 s \
         freeze, {} failed, longest {longest_ms} ms",
        failures.len(),
    );
    assert!(failures.is_empty(), "reads failed: {failures:?}");
    assert!(longest_ms < 3000, "a read waited {longest_ms} ms");
    assert!(
        in_freeze > 1000,
        "only {in_freeze} reads in the 3 s of the freeze"
    );
    manager.close().await.unwrap();
}
