//! A Redis connector on Sentinel, against real sentinels (testkit): failover under load
//! with default settings and callers that retry without sleeping, on a 2-worker runtime;
//! bad credentials. Bounds are generous; the figures are printed for the record.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use connhub::redis::AsyncCommands;
use connhub::testkit::RedisSentinel;
use connhub::{Error, Manager, RedisPool, Secret, State};

/// Sentinel tests start six processes each: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One acknowledged write: which server took it (its port), and when it was acknowledged.
#[derive(Debug, Clone)]
struct Ack {
    key: String,
    value: u64,
    port: u16,
    at: Instant,
}

#[derive(Default)]
struct Log {
    acks: Vec<Ack>,
    /// When each failed call ended.
    failures: Vec<Instant>,
}

/// `SET` then `WAIT 1 0` (acknowledged means replicated), and `CONFIG GET port` on the
/// same connection: which server took the write.
async fn write(pool: &RedisPool, key: &str, value: u64) -> connhub::Result<u16> {
    let mut conn = pool.get().await?;
    let (_, replicas, port): ((), i64, HashMap<String, String>) = connhub::redis::pipe()
        .set(key, value)
        .cmd("WAIT")
        .arg(1)
        .arg(0)
        .cmd("CONFIG")
        .arg("GET")
        .arg("port")
        .query_async(&mut *conn)
        .await
        .map_err(|e| Error::Backend {
            origin: connhub::backend::Origin::new("s", connhub::Kind::REDIS),
            source: Arc::new(e),
        })?;
    assert!(replicas >= 1, "WAIT 1 0 returned {replicas}");
    Ok(port.get("port").and_then(|p| p.parse().ok()).unwrap_or(0))
}

fn writers(
    pool: &RedisPool,
    n: usize,
    stop: &Arc<AtomicBool>,
    log: &Arc<Mutex<Log>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..n)
        .map(|t| {
            let (pool, stop, log) = (pool.clone(), stop.clone(), log.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let key = format!("w{t}:{i}");
                    match write(&pool, &key, i).await {
                        Ok(port) => log.lock().unwrap().acks.push(Ack {
                            key,
                            value: i,
                            port,
                            at: Instant::now(),
                        }),
                        // Retry at once: no sleep.
                        Err(_) => log.lock().unwrap().failures.push(Instant::now()),
                    }
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_under_sixteen_writers_loses_no_acknowledged_write() {
    let _serial = SERIAL.lock().await;
    // Two replicas: after the failover the new master still has one, so `WAIT 1 0`
    // acknowledges writes while the old master is down.
    let mut set = RedisSentinel::builder().replicas(2).start().unwrap();
    let manager = Manager::new();
    let pool = manager.add_redis("s", set.config()).await.unwrap();
    let first = set.master().unwrap();
    let first_port = set.nodes()[first].port();
    assert!(
        pool.status().endpoint.contains(&first_port.to_string()),
        "status names the master: {}",
        pool.status().endpoint
    );

    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Log::default()));
    let tasks = writers(&pool, 16, &stop, &log);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let killed_at = Instant::now();
    let old = set.kill_master().unwrap();
    let new = set
        .wait_for_failover_from(old, Duration::from_secs(30))
        .unwrap();
    let failover = killed_at.elapsed();
    let new_port = set.nodes()[new].port();

    // Writes flow again, to the new master.
    let deadline = Instant::now() + Duration::from_secs(20);
    let first_ok_after = loop {
        let ack = log
            .lock()
            .unwrap()
            .acks
            .iter()
            .find(|a| a.at > killed_at && a.port == new_port)
            .cloned();
        if let Some(a) = ack {
            break a.at - killed_at;
        }
        assert!(
            Instant::now() < deadline,
            "no write succeeded after the failover"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };

    // The old master comes back; the sentinels make it a replica of the new one.
    let restarted_at = Instant::now();
    set.restart(old).unwrap();
    set.wait_replica(old, Duration::from_secs(60)).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }

    let log = std::mem::take(&mut *log.lock().unwrap());
    let before: Vec<&Ack> = log.acks.iter().filter(|a| a.at < killed_at).collect();
    let after: Vec<&Ack> = log.acks.iter().filter(|a| a.at > killed_at).collect();
    let failed_after = log.failures.iter().filter(|f| **f > killed_at).count();
    println!(
        "sentinel failover: {} writes acknowledged before the kill, {} after; {failed_after} failed calls after; \
         sentinels agreed on the new master {:?} after the kill; first acknowledged write {:?} after the kill",
        before.len(),
        after.len(),
        failover,
        first_ok_after
    );
    assert!(!before.is_empty() && !after.is_empty());
    assert!(
        first_ok_after <= failover + Duration::from_secs(1),
        "writes came back {first_ok_after:?} after the kill; failover took {failover:?}"
    );
    // No write landed on the old master once it came back.
    let on_old: Vec<&&Ack> = after
        .iter()
        .filter(|a| a.at > restarted_at && a.port == first_port)
        .collect();
    assert!(on_old.is_empty(), "writes on the old master: {on_old:?}");
    assert!(
        after
            .iter()
            .filter(|a| a.at > restarted_at)
            .all(|a| a.port == new_port),
        "every write after the restart went to the new master"
    );
    // Every acknowledged write is there.
    let mut conn = pool.get().await.unwrap();
    let mut missing = Vec::new();
    let all: Vec<&&Ack> = before.iter().chain(after.iter()).collect();
    for chunk in all.chunks(1000) {
        let keys: Vec<&str> = chunk.iter().map(|a| a.key.as_str()).collect();
        let values: Vec<Option<u64>> = conn.mget(&keys).await.unwrap();
        for (a, v) in chunk.iter().zip(values) {
            if v != Some(a.value) {
                missing.push((a.key.clone(), v));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} acknowledged writes lost: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    // Status names the master the sentinels name now: the new one, unless on a machine
    // this loaded the new master missed `down-after-milliseconds` after the writers
    // stopped and the sentinels failed over once more (which the test then reports).
    let named_now = || set.master().ok().map(|i| set.nodes()[i].port());
    let agreed = common::eventually(Duration::from_secs(10), || {
        named_now().is_some_and(|p| {
            pool.status()
                .endpoint
                .starts_with(&format!("127.0.0.1:{p} "))
        })
    })
    .await;
    let now = named_now();
    if now != Some(new_port) {
        println!("the sentinels failed over again, to {now:?}");
    }
    assert!(
        agreed,
        "status names the master the sentinels name ({now:?}; the first failover went from \
         {first_port} to {new_port}): {}",
        pool.status().endpoint
    );
    assert_eq!(pool.state(), State::Healthy);
    manager.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_are_auth_errors_at_once() {
    let _serial = SERIAL.lock().await;
    let set = RedisSentinel::builder()
        .password("data-secret")
        .sentinel_password("sentinel-secret")
        .start()
        .unwrap();
    let manager = Manager::new();

    // The sentinels refuse us.
    let mut config = set.config();
    if let Some(s) = config.sentinel.as_mut() {
        s.password = Some(Secret::new("not-the-sentinel-password"));
    }
    let started = Instant::now();
    let err = manager.add_redis("bad-sentinel", config).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, Error::Auth { .. }), "{err:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(
        !err.to_string().contains("not-the-sentinel-password"),
        "{err}"
    );

    // The master refuses us.
    let mut config = set.config();
    config.password = Some(Secret::new("not-the-data-password"));
    let started = Instant::now();
    let err = manager.add_redis("bad-data", config).await.unwrap_err();
    let took2 = started.elapsed();
    assert!(matches!(err, Error::Auth { .. }), "{err:?}");
    assert!(took2 < Duration::from_secs(3), "took {took2:?}");
    assert!(!err.to_string().contains("not-the-data-password"), "{err}");
    println!("wrong sentinel password refused in {took:?}, wrong data password in {took2:?}");

    // The right ones work, and nothing prints them.
    let pool = manager.add_redis("good", set.config()).await.unwrap();
    let mut conn = pool.get().await.unwrap();
    let _: () = conn.set("k", 1).await.unwrap();
    let shown = format!(
        "{:?} {:?} {:?}",
        set.config(),
        pool.status(),
        manager.status()
    );
    assert!(!shown.contains("secret"), "{shown}");
    manager.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_no_master_answers_calls_fail_fast_then_recover_by_themselves() {
    let _serial = SERIAL.lock().await;
    let mut set = RedisSentinel::start().unwrap();
    let manager = Manager::new();
    let pool = manager.add_redis("s", set.config()).await.unwrap();
    let mut events = manager.subscribe();
    let killed_at = Instant::now();
    let old = set.kill_master().unwrap();
    // Until the sentinels promote the replica (down-after 1 s), no master answers:
    // callers are refused at once instead of waiting on timeouts.
    let deadline = Instant::now() + Duration::from_secs(30);
    let refusal = loop {
        let started = Instant::now();
        match pool.get().await {
            Err(Error::Unavailable { .. }) => break started.elapsed(),
            Ok(mut c) => {
                let _ = c.set::<_, _, ()>("k", 1).await;
            }
            Err(_) => {}
        }
        assert!(Instant::now() < deadline, "never refused");
        tokio::task::yield_now().await;
    };
    assert!(
        refusal < Duration::from_millis(100),
        "a refusal took {refusal:?}"
    );
    let ev = events.recv().await.unwrap();
    assert_eq!(ev.to, State::Reconnecting);
    // The replica is promoted: served again with no restart and no caller sleeping.
    let new = set
        .wait_for_failover_from(old, Duration::from_secs(30))
        .unwrap();
    let promoted = killed_at.elapsed();
    common::until_a_write_succeeds(&pool, Duration::from_secs(10)).await;
    let back = killed_at.elapsed();
    println!(
        "no master: refused in {refusal:?}; replica promoted {promoted:?} after the kill, served again after {back:?}"
    );
    assert!(
        back <= promoted + Duration::from_secs(1),
        "served again {back:?} after the kill, promoted after {promoted:?}"
    );
    let port = set.nodes()[new].port().to_string();
    // The event of the recovery names the new master.
    let healthy = loop {
        let ev = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("a Healthy event")
            .unwrap();
        if ev.to == State::Healthy {
            break ev;
        }
    };
    assert!(
        healthy.endpoint.starts_with(&format!("127.0.0.1:{port} ")),
        "{healthy:?}"
    );
    assert!(
        pool.status().endpoint.contains(&port),
        "{}",
        pool.status().endpoint
    );
    assert_eq!(pool.state(), State::Healthy);
    manager.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_with_the_old_master_alive_moves_every_connection() {
    let _serial = SERIAL.lock().await;
    let set = RedisSentinel::start().unwrap();
    let manager = Manager::new();
    let mut config = set.config();
    // Connections kept open to the old master, idle, through the failover.
    config.min_idle_conns = 4;
    let pool = manager.add_redis("s", config).await.unwrap();
    let old = set.master().unwrap();
    let old_port = set.nodes()[old].port();
    let mut shared = pool.multiplexed().await.unwrap();
    let _: () = shared.set("before", 1).await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Log::default()));
    let tasks = writers(&pool, 16, &stop, &log);
    tokio::time::sleep(Duration::from_millis(500)).await;
    set.failover().unwrap();
    let new = set
        .wait_for_failover_from(old, Duration::from_secs(30))
        .unwrap();
    let switched_at = Instant::now();
    let new_port = set.nodes()[new].port();
    set.wait_replica(old, Duration::from_secs(30)).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }

    let log = std::mem::take(&mut *log.lock().unwrap());
    // A write acknowledged after the switch went to the new master: none to the demoted
    // one, idle connections included.
    let late: Vec<&Ack> = log.acks.iter().filter(|a| a.at > switched_at).collect();
    let stray: Vec<&&Ack> = late.iter().filter(|a| a.port != new_port).collect();
    println!(
        "manual failover: {} writes acknowledged after the switch, {} to the old master",
        late.len(),
        stray.len()
    );
    assert!(!late.is_empty());
    assert!(
        stray.is_empty(),
        "writes after the switch on {old_port}: {stray:?}"
    );
    // The shared connection follows too, and so does a handle to it kept from before
    // the failover.
    let _: () = shared.set("after", 1).await.unwrap();
    let port: HashMap<String, String> = connhub::redis::cmd("CONFIG")
        .arg("GET")
        .arg("port")
        .query_async(&mut shared)
        .await
        .unwrap();
    assert_eq!(port.get("port"), Some(&new_port.to_string()));
    assert!(
        pool.status()
            .endpoint
            .starts_with(&format!("127.0.0.1:{new_port} "))
    );
    manager.close().await.unwrap();
}
