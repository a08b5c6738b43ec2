//! Outages against real servers: kill -9 and restart, SIGSTOP, giving up and coming back.
//! Bounds are generous; the figures are printed for the record.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use connhub::redis::AsyncCommands;
use connhub::testkit::RedisServer;
use connhub::{Error, Manager, RedisConfig, State};
use tokio::sync::Mutex;

fn config(server: &RedisServer) -> RedisConfig {
    let mut c = server.config();
    c.connector = common::quick();
    c.connector.connect_timeout = Duration::from_secs(2);
    c.command_timeout = Some(Duration::from_millis(500));
    c.pool_size = 16;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_and_restart_under_load_fails_fast_and_recovers() {
    let mut server = RedisServer::start().unwrap();
    let manager = Manager::new();
    let cfg = config(&server);
    let connect_timeout = cfg.connector.connect_timeout;
    let pool = manager.add_redis("cache", cfg).await.unwrap();

    // (finished at, took, ok)
    let log = Arc::new(Mutex::new(Vec::<(Instant, Duration, bool)>::new()));
    let stop = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..32 {
        let pool = pool.clone();
        let log = log.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            while stop.load(Ordering::Relaxed) == 0 {
                let start = Instant::now();
                let ok = match pool.get().await {
                    Ok(mut c) => c.set::<_, _, ()>(format!("k{t}"), t).await.is_ok(),
                    Err(_) => false,
                };
                log.lock().await.push((Instant::now(), start.elapsed(), ok));
                if !ok {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.kill();
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.restart_async().await.unwrap();
    let restarted = Instant::now();
    let healthy =
        common::eventually(Duration::from_secs(10), || pool.state() == State::Healthy).await;
    let recovered_after = restarted.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(1, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    assert!(healthy, "not healthy again: {:?}", pool.status());

    let log = log.lock().await;
    let down: Vec<_> = log
        .iter()
        .filter(|(at, _, ok)| !ok && *at > killed + Duration::from_millis(300) && *at < restarted)
        .collect();
    assert!(!down.is_empty(), "calls failed while the server was down");
    let mut lat: Vec<Duration> = down.iter().map(|(_, d, _)| *d).collect();
    lat.sort();
    let p99 = lat[lat.len() * 99 / 100];
    let late_failures = log
        .iter()
        .filter(|(at, _, ok)| !ok && *at > restarted + Duration::from_secs(1))
        .count();
    let ok_after = log
        .iter()
        .filter(|(at, _, ok)| *ok && *at > restarted)
        .count();
    eprintln!(
        "figures: {} failed calls while down, p50 {:?}, p99 {:?}, max {:?}; healthy {:?} after restart; {} failures later than 1s after restart; {} successes after restart",
        down.len(),
        lat[lat.len() / 2],
        p99,
        lat[lat.len() - 1],
        recovered_after,
        late_failures,
        ok_after
    );
    assert!(p99 < connect_timeout / 4, "fail-fast p99 {p99:?}");
    assert!(
        recovered_after < Duration::from_secs(3),
        "{recovered_after:?}"
    );
    assert_eq!(late_failures, 0);
    assert!(ok_after > 100);
    manager.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_server_never_hangs_a_caller() {
    let server = RedisServer::start().unwrap();
    let manager = Manager::new();
    let cfg = config(&server);
    let bound =
        cfg.connector.connect_timeout + cfg.command_timeout.unwrap() + Duration::from_secs(1);
    let pool = manager.add_redis("cache", cfg).await.unwrap();

    server.pause().unwrap();
    let paused = Instant::now();
    let mut worst = Duration::ZERO;
    let mut tasks = Vec::new();
    for t in 0..8 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            while paused.elapsed() < Duration::from_secs(3) {
                let start = Instant::now();
                if let Ok(mut c) = pool.get().await {
                    let _ = c.set::<_, _, ()>(format!("p{t}"), t).await;
                }
                worst = worst.max(start.elapsed());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            worst
        }));
    }
    for t in tasks {
        worst = worst.max(t.await.unwrap());
    }
    server.resume().unwrap();
    eprintln!("figures: slowest call while paused {worst:?} (bound {bound:?})");
    assert!(worst < bound, "a call took {worst:?}");
    let back = common::eventually(Duration::from_secs(10), || pool.state() == State::Healthy).await;
    assert!(back, "{:?}", pool.status());
    assert!(common::redis_serves(&pool).await);
    manager.close().await.unwrap();
}

#[tokio::test]
async fn gives_up_to_failed_then_comes_back_with_events_in_order() {
    let mut server = RedisServer::start().unwrap();
    let manager = Manager::new();
    let mut events = manager.subscribe();
    let mut cfg = config(&server);
    cfg.connector.max_reconnect_attempts = 2;
    let pool = manager.add_redis("cache", cfg).await.unwrap();
    let e = events.recv().await.unwrap();
    assert_eq!((e.from, e.to), (State::Connecting, State::Healthy));

    server.kill();
    let report = manager.health_check().await;
    assert!(!report.is_healthy());
    let e = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((e.from, e.to), (State::Healthy, State::Reconnecting));
    assert!(e.error.is_some());
    match pool.get().await {
        Err(Error::Unavailable {
            last_error: Some(_),
            ..
        }) => {}
        other => panic!("expected Unavailable with the last error, got {other:?}"),
    }
    let e = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (e.from, e.to),
        (State::Reconnecting, State::Failed),
        "{e:?}"
    );
    let status = pool.status();
    assert_eq!(status.state, State::Failed);
    assert_eq!(status.reconnect_attempts, 2);
    assert!(status.last_error.is_some());
    assert!(status.last_check_latency.is_some());

    server.restart_async().await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((e.from, e.to), (State::Failed, State::Healthy), "{e:?}");
    let mut conn = pool.get().await.unwrap();
    let _: () = conn.set("back", 1).await.unwrap();
    drop(conn);
    assert_eq!(pool.status().reconnect_attempts, 0);
    assert!(pool.status().last_error.is_none());
    manager.close().await.unwrap();
    let e = events.recv().await.unwrap();
    assert_eq!((e.from, e.to), (State::Healthy, State::Closed));
}

#[tokio::test]
async fn without_fail_fast_a_checkout_times_out_with_the_real_error() {
    let mut server = RedisServer::start().unwrap();
    let manager = Manager::new();
    let mut cfg = config(&server);
    cfg.connector.fail_fast = false;
    cfg.connector.connect_timeout = Duration::from_millis(500);
    cfg.connector.reconnect_interval = Duration::from_secs(30);
    cfg.connector.reconnect_backoff_max = Duration::from_secs(30);
    let pool = manager.add_redis("cache", cfg).await.unwrap();
    server.kill();
    let _ = manager.health_check().await;
    let err = loop {
        match pool.get().await {
            Err(e) => break e,
            Ok(mut c) => {
                let _ = c.set::<_, _, ()>("x", 1).await;
            }
        }
    };
    match &err {
        Error::Timeout {
            last_error: Some(last),
            ..
        } => {
            assert!(last.to_string().contains("cache"), "{err}")
        }
        other => panic!("expected Timeout with the last error, got {other:?}"),
    }
    manager.close().await.unwrap();
}

#[tokio::test]
async fn after_recovery_no_connection_from_before_the_outage_is_checked_or_used() {
    let mut server = RedisServer::start().unwrap();
    let manager = Manager::new();
    let mut cfg = config(&server);
    cfg.min_idle_conns = 4;
    let pool = manager.add_redis("cache", cfg).await.unwrap();
    // Several idle connections from before the outage.
    common::eventually(Duration::from_secs(5), || pool.status().pool.idle >= 4).await;
    let mut events = manager.subscribe();
    server.kill();
    server.restart_async().await.unwrap();
    let _ = manager.health_check().await;
    let back = common::eventually(Duration::from_secs(10), || pool.state() == State::Healthy).await;
    assert!(back);
    // Three more health checks: none may pick a stale connection and flap.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen.push((e.from, e.to));
    }
    // The server was back before the check: it may find the idle connections closed and
    // a fresh one working (no outage at all), or notice the outage and recover; never a
    // flap after recovery.
    let outage = [
        (State::Healthy, State::Reconnecting),
        (State::Reconnecting, State::Healthy),
    ];
    assert!(seen.is_empty() || seen == outage, "{seen:?}");
    for _ in 0..20 {
        let mut c = pool.get().await.unwrap();
        let _: () = c.set("k", 1).await.unwrap();
    }
    manager.close().await.unwrap();
}

/// A server frozen (SIGSTOP) under 16 tasks writing through the pool as a connection,
/// default settings. It closes nothing, so only the commands' timeouts show it: the first
/// one makes the health engine check at once, the connector is down within
/// `command_timeout` plus the check's bound (5 s each by default), and callers then fail
/// fast until the server answers again. (It used to stay `Healthy` through a 12 s freeze,
/// every caller waiting at least 5 s a call.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_is_found_down_and_callers_then_fail_fast() {
    let server = RedisServer::start().unwrap();
    let manager = Manager::new();
    let pool = manager.add_redis("cache", server.config()).await.unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let (pool, stop) = (pool.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let mut conn = pool.clone();
                    let _ = conn.set::<_, _, ()>(format!("f{t}"), t).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;

    server.pause().unwrap();
    let paused = Instant::now();
    let found = common::until_down(paused, || pool.state()).await;
    let started = Instant::now();
    let refused = pool.clone().set::<_, _, ()>("f", 1).await;
    let took = started.elapsed();
    assert!(refused.is_err(), "a write while frozen");
    assert!(
        took < Duration::from_secs(1),
        "a call took {took:?} once down"
    );

    server.resume().unwrap();
    let back = common::until_a_write_succeeds(&pool, Duration::from_secs(10)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    eprintln!(
        "figures: frozen server found down after {found:?}; a call then refused in {took:?}; a write succeeded {back:?} after the resume"
    );
    assert!(common::eventually(Duration::from_secs(5), || pool.state() == State::Healthy).await);
    manager.close().await.unwrap();
}

/// A check in flight on a frozen server (started by a command that timed out) does not
/// hold `close()`: closing ends it, and the connection it took comes back at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_does_not_wait_for_a_check_on_a_frozen_server() {
    let server = RedisServer::start().unwrap();
    let manager = Manager::new();
    let pool = manager.add_redis("cache", server.config()).await.unwrap();
    pool.clone().set::<_, _, ()>("c", 1).await.unwrap();

    server.pause().unwrap();
    // Its timeout (`command_timeout`, 5 s) starts a check, which waits up to
    // `connect_timeout` (5 s) for the frozen server.
    let timed_out = pool.clone().set::<_, _, ()>("c", 2).await;
    assert!(timed_out.is_err(), "a write to a frozen server");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    manager.close().await.unwrap();
    let took = started.elapsed();
    server.resume().unwrap();
    assert!(
        took < Duration::from_secs(2),
        "close() took {took:?} with a check in flight"
    );
}
