//! A Redis connector on a Redis Cluster, against a real cluster (testkit): a master
//! killed under load with default settings and callers that retry without sleeping, on a
//! 2-worker runtime; bad credentials; health. Bounds are generous; the figures are printed.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use connhub::redis::AsyncCommands;
use connhub::redis::cluster_routing::Slot;
use connhub::testkit::RedisCluster;
use connhub::{Connector, Error, Manager, RedisPool, Secret, State};

/// Cluster tests start six processes each: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One key for each of the 16384 slots, each starting with `prefix`.
fn key_per_slot(prefix: &str) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut keys = Vec::with_capacity(16384);
    let mut n = 0u64;
    while keys.len() < 16384 {
        let k = format!("{prefix}:{n}");
        if seen.insert(Slot::for_key(&k)) {
            keys.push(k);
        }
        n += 1;
    }
    keys
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    /// The longest call (checkout, SET, GET), in microseconds.
    longest_us: AtomicU64,
    wrong: AtomicU64,
    /// When each failed call ended.
    failures: Mutex<Vec<Instant>>,
}

/// `n` tasks each `SET` a key (spread over every slot) to a value of its own, then `GET`
/// it back on the same checkout: a reply for another key would show as a wrong value.
fn writers(
    pool: &RedisPool,
    n: usize,
    keys: &Arc<Vec<String>>,
    stop: &Arc<AtomicBool>,
    tally: &Arc<Tally>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..n)
        .map(|t| {
            let (pool, keys, stop, tally) =
                (pool.clone(), keys.clone(), stop.clone(), tally.clone());
            tokio::spawn(async move {
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    i = (i + n) % keys.len();
                    let key = &keys[i];
                    let value = format!("{key}={t}");
                    let started = Instant::now();
                    let r: connhub::Result<String> = async {
                        let mut conn = pool.get().await?;
                        let _: () = conn.set(key, &value).await.map_err(backend)?;
                        let got: String = conn.get(key).await.map_err(backend)?;
                        Ok(got)
                    }
                    .await;
                    let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                    tally.longest_us.fetch_max(took, Ordering::Relaxed);
                    match r {
                        Ok(got) if got == value => tally.ok.fetch_add(1, Ordering::Relaxed),
                        Ok(_) => tally.wrong.fetch_add(1, Ordering::Relaxed),
                        Err(_) => {
                            tally.failures.lock().unwrap().push(Instant::now());
                            tally.failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect()
}

fn backend(e: connhub::redis::RedisError) -> Error {
    Error::Backend {
        origin: connhub::backend::Origin::new("c", connhub::Kind::REDIS),
        source: Arc::new(e),
    }
}

/// Writes every key once, from 16 tasks each with its own checkout; returns how many
/// writes failed.
async fn sweep(pool: &RedisPool, keys: &Arc<Vec<String>>) -> usize {
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let (pool, keys) = (pool.clone(), keys.clone());
            tokio::spawn(async move {
                let Ok(mut conn) = pool.get().await else {
                    return keys.len() / 16;
                };
                let mut failed = 0;
                for k in keys.iter().skip(t).step_by(16) {
                    if conn.set::<_, _, ()>(k, 1).await.is_err() {
                        failed += 1;
                    }
                }
                failed
            })
        })
        .collect();
    let mut failed = 0;
    for t in tasks {
        failed += t.await.unwrap();
    }
    failed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_under_sixteen_writers_is_followed_to_its_replica() {
    let _serial = SERIAL.lock().await;
    let mut cluster = RedisCluster::start().unwrap();
    let manager = Manager::new();
    let pool = manager.add_redis("c", cluster.config()).await.unwrap();
    assert!(
        pool.status().endpoint.starts_with("cluster "),
        "{}",
        pool.status().endpoint
    );
    let keys = Arc::new(key_per_slot("w"));
    // The sweep's own keys: the writers check what they read back.
    let swept_keys = Arc::new(key_per_slot("s"));
    assert_eq!(
        sweep(&pool, &swept_keys).await,
        0,
        "every slot is served before the kill"
    );

    // A shared connection opened before the kill, then left idle through it.
    let shared = pool.multiplexed().await.unwrap();
    drop(shared);

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let tasks = writers(&pool, 16, &keys, &stop, &tally);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let victim = cluster.masters().unwrap()[0];
    let killed_at = Instant::now();
    cluster.kill(victim);
    // Node timeout 1 s, plus 2 s: every slot is served again by then.
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(killed_at.elapsed())).await;
    let sweep_at = killed_at.elapsed();
    let failed_sweep = sweep(&pool, &swept_keys).await;
    let swept = killed_at.elapsed();
    // The idle shared connection: a burst right after the failover may time out once (the
    // redis crate's cluster connection can stall on its stale slot map); the connection
    // is then replaced and the next burst is served.
    let burst = |round: usize| {
        let pool = pool.clone();
        async move {
            let calls = (0..512).map(|i| {
                let pool = pool.clone();
                async move {
                    let Ok(mut c) = pool.multiplexed().await else {
                        return false;
                    };
                    c.set::<_, _, ()>(format!("m{round}:{i}"), 1).await.is_ok()
                }
            });
            futures_util::future::join_all(calls)
                .await
                .into_iter()
                .filter(|ok| !ok)
                .count()
        }
    };
    let burst_at = Instant::now();
    let first_burst = burst(0).await;
    let first_burst_took = burst_at.elapsed();
    let second_burst = burst(1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }

    let last_failure = tally
        .failures
        .lock()
        .unwrap()
        .iter()
        .max()
        .map(|f| f.saturating_duration_since(killed_at));
    println!(
        "cluster failover: {} ok, {} failed, {} wrong, longest call {:?}; last failure {:?} after the kill; \
         sweep of 16384 slots started {sweep_at:?} after the kill: {failed_sweep} failed, done at {swept:?}; \
         idle multiplexed(): first burst {first_burst}/512 failed in {first_burst_took:?}, second {second_burst}/512",
        tally.ok.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
        tally.wrong.load(Ordering::Relaxed),
        Duration::from_micros(tally.longest_us.load(Ordering::Relaxed)),
        last_failure,
    );
    assert_eq!(second_burst, 0, "the shared connection was not replaced");
    assert_eq!(
        tally.wrong.load(Ordering::Relaxed),
        0,
        "a reply for the wrong key"
    );
    assert_eq!(failed_sweep, 0, "slots not served 3 s after the kill");
    if let Some(last) = last_failure {
        assert!(
            last <= Duration::from_secs(3),
            "a call failed {last:?} after the kill"
        );
    }
    assert!(tally.ok.load(Ordering::Relaxed) > 0);
    assert!(!cluster.masters().unwrap().contains(&victim));
    assert_eq!(pool.state(), State::Healthy);

    // The killed master comes back as a replica; nothing changes for callers.
    cluster.restart(victim).unwrap();
    cluster.wait_ok(Duration::from_secs(30)).unwrap();
    assert_eq!(sweep(&pool, &swept_keys).await, 0);
    assert!(pool.health_check().await.is_ok());
    manager.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_an_auth_error_at_once() {
    let _serial = SERIAL.lock().await;
    let cluster = RedisCluster::builder()
        .password("cluster-secret")
        .start()
        .unwrap();
    let manager = Manager::new();
    let mut config = cluster.config();
    config.password = Some(Secret::new("not-the-password"));
    let started = Instant::now();
    let err = manager.add_redis("bad", config).await.unwrap_err();
    let took = started.elapsed();
    println!("wrong cluster password refused in {took:?}: {err}");
    assert!(matches!(err, Error::Auth { .. }), "{err:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(!err.to_string().contains("not-the-password"));

    let pool = manager.add_redis("good", cluster.config()).await.unwrap();
    let mut conn = pool.get().await.unwrap();
    let _: () = conn.set("k", "v").await.unwrap();
    assert!(conn.cluster().is_some() && conn.multiplexed().is_none());
    let shown = format!("{:?} {:?}", cluster.config(), manager.status());
    assert!(!shown.contains("cluster-secret"), "{shown}");
    manager.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_lost_a_shard_is_down_and_comes_back() {
    let _serial = SERIAL.lock().await;
    // No replicas: killing a master leaves its slots uncovered (cluster_state:fail).
    let mut cluster = RedisCluster::builder().replicas(0).start().unwrap();
    let manager = Manager::new();
    let pool = manager.add_redis("c", cluster.config()).await.unwrap();
    let victim = cluster.masters().unwrap()[0];
    cluster.kill(victim);
    // The health check sees the cluster's state, not just one node answering.
    let deadline = Instant::now() + Duration::from_secs(30);
    while pool.health_check().await.is_ok() {
        assert!(Instant::now() < deadline, "the health check never failed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_ne!(pool.state(), State::Healthy);
    cluster.restart(victim).unwrap();
    cluster.wait_ok(Duration::from_secs(30)).unwrap();
    common::until_a_write_succeeds(&pool, Duration::from_secs(30)).await;
    assert_eq!(pool.state(), State::Healthy);
    manager.close().await.unwrap();
}

/// A master frozen (SIGSTOP) for 6 s under 16 tasks that `SET` through the pool as a
/// connection without sleeping. A frozen master keeps its connections open and answers
/// nothing: without the node monitor every task soon waited on one of its keys, and no
/// write at all succeeded until it was resumed. Now a call sent to it waits at most a
/// second (and says it may have been applied), a call for its slots once it is known
/// silent (a command or a pipeline) is refused at once (not sent), the other masters'
/// slots are served meanwhile, and once its replica has taken over, writes flow to every
/// slot while it is still frozen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_master_holds_no_call_past_a_second_and_writes_resume_after_failover() {
    let _serial = SERIAL.lock().await;
    let cluster = RedisCluster::start().unwrap();
    let manager = Manager::new();
    let pool = manager.add_redis("c", cluster.config()).await.unwrap();
    let keys = Arc::new(key_per_slot("f"));
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    // (how long it took, the error, whether it was a pipeline)
    let failures = Arc::new(Mutex::new(Vec::<(Duration, String, bool)>::new()));
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let (pool, keys, stop, ok, failures) = (
                pool.clone(),
                keys.clone(),
                stop.clone(),
                ok.clone(),
                failures.clone(),
            );
            tokio::spawn(async move {
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    i = (i + 16) % keys.len();
                    let mut conn = pool.clone();
                    let started = Instant::now();
                    // Half the writers send pipelines, which go whole to their slot.
                    let piped = t % 2 == 1;
                    let sent = if piped {
                        redis::pipe()
                            .set(&keys[i], t)
                            .ignore()
                            .get(&keys[i])
                            .ignore()
                            .query_async::<()>(&mut conn)
                            .await
                    } else {
                        conn.set::<_, _, ()>(&keys[i], t).await
                    };
                    match sent {
                        Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            failures.lock().unwrap().push((
                                started.elapsed(),
                                e.to_string(),
                                piped,
                            ));
                            0
                        }
                    };
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let victim = cluster.masters().unwrap()[0];
    cluster.nodes()[victim].pause().unwrap();
    let frozen_at = ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Before the failover is done, the other masters' slots are served.
    let early_in_freeze = ok.load(Ordering::Relaxed) - frozen_at;
    // Node timeout 1 s: the replica has taken over well within 3 s.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let late_in_freeze = ok.load(Ordering::Relaxed) - before;
    cluster.nodes()[victim].resume().unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }

    let failures = std::mem::take(&mut *failures.lock().unwrap());
    let (not_sent, given_up): (Vec<_>, Vec<_>) = failures
        .iter()
        .partition(|(_, e, _)| e.contains("was not sent"));
    let slowest = |f: &[&(Duration, String, bool)]| f.iter().map(|(took, ..)| *took).max();
    let piped = not_sent.iter().filter(|(.., piped)| *piped).count();
    println!(
        "frozen cluster master: {} writes ok, {early_in_freeze} in the first 2 s of the \
         freeze, {late_in_freeze} in the last 3 s; {} refused at once ({piped} pipelines, \
         slowest {:?}), {} given up (slowest {:?})",
        ok.load(Ordering::Relaxed),
        not_sent.len(),
        slowest(&not_sent),
        given_up.len(),
        slowest(&given_up),
    );
    assert!(
        piped > 0 && piped < not_sent.len(),
        "pipelines are refused up front as commands are: {piped} of {}",
        not_sent.len()
    );
    for (took, e, _) in &not_sent {
        assert!(
            *took < Duration::from_secs(1),
            "refused after {took:?}: {e}"
        );
    }
    for (took, e, _) in &given_up {
        assert!(
            *took < Duration::from_secs(3),
            "a call failed after {took:?}: {e}"
        );
        assert!(e.contains("may have been applied"), "{e}");
    }
    assert!(
        early_in_freeze > 1000,
        "only {early_in_freeze} writes in the first 2 s of the freeze"
    );
    assert!(
        late_in_freeze > 100,
        "only {late_in_freeze} writes in the last 3 s of the freeze"
    );
    assert_eq!(
        sweep(&pool, &keys).await,
        0,
        "slots not served after the resume"
    );
    assert_eq!(pool.state(), State::Healthy);
    manager.close().await.unwrap();
}
