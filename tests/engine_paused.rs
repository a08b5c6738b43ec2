//! The health engine through a whole pool, with a backend of the test's own (a bb8
//! manager whose "server" is a flag) and tokio's clock paused: deterministic, no server.
//! The same behaviour is tested against real Redis and etcd in `engine.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use connhub::{ConnectorConfig, Error, Manager, PoolConfig, State};
use tokio::time::Instant;

/// The "server": up or down; counts connection attempts and how many run at once.
#[derive(Debug, Default)]
struct Server {
    up: AtomicBool,
    attempts: AtomicU32,
    in_flight: AtomicU32,
    most_in_flight: AtomicU32,
    /// Connections numbered up to this one fail validation (gone stale).
    stale_up_to: AtomicU32,
    /// Validations asked for (`is_valid`).
    validations: AtomicU32,
}

/// What a dead server answers a dial with: the connection is refused.
#[derive(Debug, thiserror::Error)]
#[error("server down")]
struct Down(#[source] std::io::Error);

impl Down {
    fn refused() -> Self {
        Down(std::io::ErrorKind::ConnectionRefused.into())
    }
}

#[derive(Debug, Clone)]
struct Dialer(Arc<Server>);

impl bb8::ManageConnection for Dialer {
    /// Numbered in the order they were made, from 1.
    type Connection = u32;
    type Error = Down;

    async fn connect(&self) -> Result<u32, Down> {
        let s = &self.0;
        let id = s.attempts.fetch_add(1, Ordering::SeqCst) + 1;
        let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        s.most_in_flight.fetch_max(now, Ordering::SeqCst);
        // A dial to a dead server takes a while to fail.
        let up = s.up.load(Ordering::SeqCst);
        if !up {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        s.in_flight.fetch_sub(1, Ordering::SeqCst);
        if up { Ok(id) } else { Err(Down::refused()) }
    }

    async fn is_valid(&self, id: &mut u32) -> Result<(), Down> {
        let s = &self.0;
        s.validations.fetch_add(1, Ordering::SeqCst);
        if s.up.load(Ordering::SeqCst) && *id > s.stale_up_to.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(Down::refused())
        }
    }

    fn has_broken(&self, _: &mut u32) -> bool {
        false
    }
}

async fn setup() -> (Manager, connhub::Pool<Dialer>, Arc<Server>) {
    setup_with(PoolConfig::default()).await
}

async fn setup_with(pool: PoolConfig) -> (Manager, connhub::Pool<Dialer>, Arc<Server>) {
    let server = Arc::new(Server::default());
    server.up.store(true, Ordering::SeqCst);
    let manager = Manager::new();
    let pool = manager
        .add_pool(
            "db",
            Dialer(server.clone()),
            ConnectorConfig::default(),
            pool,
        )
        .await
        .unwrap();
    assert_eq!(pool.state(), State::Healthy);
    (manager, pool, server)
}

/// Callers that retry every 10 ms (simulated) until `until`; returns when the first
/// checkout succeeded, if one did.
async fn callers(pool: &connhub::Pool<Dialer>, until: Instant) -> Option<Instant> {
    while Instant::now() < until {
        for _ in 0..10 {
            if pool.get().await.is_ok() {
                return Some(Instant::now());
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

#[tokio::test(start_paused = true)]
async fn down_refuses_at_once_and_probes_once_per_interval_on_demand() {
    let (manager, pool, server) = setup().await;
    let mut events = manager.subscribe();
    let interval = ConnectorConfig::default().reconnect_interval;

    server.up.store(false, Ordering::SeqCst);
    // The periodic check (every 10 s by default) finds the server gone.
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(pool.state(), State::Reconnecting);
    let e = events.recv().await.unwrap();
    assert_eq!((e.from, e.to), (State::Healthy, State::Reconnecting));

    // Ten seconds of callers asking with no server: refused at once every time, one
    // trial at a time, at most one per reconnect_interval.
    let before = server.attempts.load(Ordering::SeqCst);
    let start = Instant::now();
    let err = pool.get().await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    assert_eq!(Instant::now(), start, "refused without waiting");
    assert_eq!(callers(&pool, start + Duration::from_secs(10)).await, None);
    // A trial against the dead server takes 300 ms to fail; the next may start once
    // reconnect_interval has passed since the last one started.
    let period = interval.max(Duration::from_millis(300));
    let expected = (Duration::from_secs(10).as_millis() / period.as_millis()) as u32;
    let trials = server.attempts.load(Ordering::SeqCst) - before;
    assert!(
        (expected - 1..=expected + 1).contains(&trials),
        "{trials} trials in 10 s, expected about {expected}"
    );
    assert_eq!(server.most_in_flight.load(Ordering::SeqCst), 1);

    // The server comes back: the first caller after the next trial is served, within
    // reconnect_interval however long the outage was.
    server.up.store(true, Ordering::SeqCst);
    let back = Instant::now();
    let served = callers(&pool, back + Duration::from_secs(5)).await.unwrap();
    assert!(
        served - back <= interval + Duration::from_millis(50),
        "{:?}",
        served - back
    );
    assert_eq!(pool.state(), State::Healthy);
    manager.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn with_nobody_asking_the_timer_backs_off() {
    let (manager, pool, server) = setup().await;
    server.up.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(pool.state(), State::Reconnecting);
    let before = server.attempts.load(Ordering::SeqCst);
    // Timer alone: 250 ms doubling with jitter, capped at 30 s: about 6 trials from 11 s
    // to 71 s.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let trials = server.attempts.load(Ordering::SeqCst) - before;
    assert!(
        (4..=7).contains(&trials),
        "{trials} trials in 60 s with nobody asking"
    );
    assert!(pool.status().reconnect_attempts >= 5);
    manager.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_stale_connection_is_no_outage() {
    let (manager, pool, server) = setup().await;
    let mut events = manager.subscribe();
    // Hold a few connections so several are pooled, then let every one of them go stale
    // (as a server closing idle connections does); fresh ones work.
    let held: Vec<_> = futures::future::join_all((0..4).map(|_| pool.get())).await;
    drop(held);
    // A connection just made (or validated) is handed out again without a round trip
    // for 100 ms (HikariCP's alive-bypass window, shorter).
    let validations = server.validations.load(Ordering::SeqCst);
    for _ in 0..100 {
        drop(pool.get().await.unwrap());
    }
    assert_eq!(server.validations.load(Ordering::SeqCst), validations);
    let made = server.attempts.load(Ordering::SeqCst);
    assert!(pool.status().pool.idle >= 2);
    server.stale_up_to.store(made, Ordering::SeqCst);
    // Idle for a second, as a server's idle timeout takes: every checkout validates.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for _ in 0..100 {
        let conn = pool.get().await.unwrap();
        assert!(*conn > made, "a stale connection was handed out");
    }
    // Health checks over a minute see no outage either.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(events.try_recv().is_err(), "no state change");
    assert_eq!(pool.state(), State::Healthy);
    manager.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn close_from_every_state_refuses_with_closed() {
    // Healthy.
    let (manager, pool, _server) = setup().await;
    manager.close().await.unwrap();
    assert_eq!(pool.state(), State::Closed);
    assert!(matches!(pool.get().await, Err(Error::Closed { .. })));
    // Reconnecting, and mid-trial.
    let (manager, pool, server) = setup().await;
    server.up.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(pool.state(), State::Reconnecting);
    tokio::time::sleep(Duration::from_millis(900)).await;
    let _ = pool.get().await; // starts a trial
    tokio::time::sleep(Duration::from_millis(100)).await;
    manager.close().await.unwrap();
    assert_eq!(pool.state(), State::Closed);
    assert!(matches!(pool.get().await, Err(Error::Closed { .. })));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        pool.state(),
        State::Closed,
        "a trial finishing late changes nothing"
    );
}

#[tokio::test(start_paused = true)]
async fn waiting_past_the_checkout_timeout_says_the_pool_was_exhausted() {
    let (manager, pool, _server) = setup_with(PoolConfig {
        max_size: 1,
        ..PoolConfig::default()
    })
    .await;
    let held = pool.get().await.unwrap();
    let (a, b) = tokio::join!(pool.get(), pool.get());
    for r in [a, b] {
        match r {
            Err(Error::Timeout { detail, after, .. }) => {
                assert_eq!(after, ConnectorConfig::default().connect_timeout);
                let detail = detail.unwrap();
                assert!(
                    detail.contains("pool exhausted: all 1 connections in use"),
                    "{detail}"
                );
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
    }
    drop(held);
    // First come, first served: after the holder returns it, the next caller gets it.
    assert!(pool.get().await.is_ok());
    manager.close().await.unwrap();
}

/// A "server" that takes at most `cap` connections at once, as `maxclients` does: one
/// more is accepted and hung up on (the client sees a reset).
#[derive(Debug, Default)]
struct CappedServer {
    cap: AtomicU32,
    open: AtomicU32,
}

#[derive(Debug)]
struct CappedConn(Arc<CappedServer>);

impl Drop for CappedConn {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Debug, Clone)]
struct CappedDialer(Arc<CappedServer>);

impl bb8::ManageConnection for CappedDialer {
    type Connection = CappedConn;
    type Error = std::io::Error;

    async fn connect(&self) -> Result<CappedConn, std::io::Error> {
        let s = &self.0;
        tokio::time::sleep(Duration::from_millis(1)).await;
        if s.open.fetch_add(1, Ordering::SeqCst) >= s.cap.load(Ordering::SeqCst) {
            s.open.fetch_sub(1, Ordering::SeqCst);
            return Err(std::io::ErrorKind::ConnectionReset.into());
        }
        Ok(CappedConn(s.clone()))
    }

    async fn is_valid(&self, _: &mut CappedConn) -> Result<(), std::io::Error> {
        Ok(())
    }

    fn has_broken(&self, _: &mut CappedConn) -> bool {
        false
    }
}

#[tokio::test(start_paused = true)]
async fn a_connection_cap_limits_the_pool_and_it_grows_back() {
    let server = Arc::new(CappedServer::default());
    server.cap.store(4, Ordering::SeqCst);
    let manager = Manager::new();
    let pool = manager
        .add_pool(
            "capped",
            CappedDialer(server.clone()),
            ConnectorConfig::default(),
            PoolConfig {
                max_size: 16,
                ..PoolConfig::default()
            },
        )
        .await
        .unwrap();
    let mut events = manager.subscribe();
    // 32 callers, each holding its connection 1 ms, for 30 s (simulated).
    let until = Instant::now() + Duration::from_secs(30);
    let callers: Vec<_> = (0..32)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u32, 0u32);
                while Instant::now() < until {
                    match pool.get().await {
                        Ok(_conn) => {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                            ok += 1;
                        }
                        Err(_) => failed += 1,
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let (mut ok, mut failed) = (0, 0);
    for c in callers {
        let (o, f) = c.await.unwrap();
        ok += o;
        failed += f;
    }
    let status = pool.status();
    assert_eq!(failed, 0, "{status:?}");
    assert!(ok > 10_000, "{ok} calls in 30 s on 4 connections");
    assert!(events.try_recv().is_err(), "no state change");
    assert_eq!(status.state, State::Healthy);
    assert_eq!(status.pool.limit, Some(4), "{status:?}");
    assert!(server.open.load(Ordering::SeqCst) <= 4);
    assert!(status.last_connect_error.is_some());
    // The server takes more: the pool grows back to its size without a caller asking,
    // within one health check interval.
    server.cap.store(100, Ordering::SeqCst);
    tokio::time::sleep(ConnectorConfig::default().health_check_interval).await;
    let status = pool.status();
    assert_eq!(status.pool.limit, None, "{status:?}");
    assert_eq!(status.pool.connections, 16, "{status:?}");
    assert_eq!(status.last_connect_error, None);
    assert!(events.try_recv().is_err(), "no state change");
    manager.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn close_waits_for_checkouts_and_ends_as_the_last_comes_back() {
    let (manager, pool, _server) = setup().await;
    let held = pool.get().await.unwrap();
    let start = Instant::now();
    let closing = tokio::spawn({
        let manager = manager.clone();
        async move { manager.close().await }
    });
    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert!(!closing.is_finished(), "close waits for the checkout");
    drop(held);
    closing.await.unwrap().unwrap();
    // Told as the connection came back, not at a later look.
    assert!(
        start.elapsed() < Duration::from_millis(1100),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(pool.state(), State::Closed);

    // A checkout never given back: close gives up at `drain_timeout`.
    let (manager, pool, _server) = setup().await;
    let _kept = pool.get().await.unwrap();
    let start = Instant::now();
    manager.close().await.unwrap();
    assert_eq!(
        start.elapsed(),
        ConnectorConfig::default().drain_timeout,
        "gave up at the drain timeout"
    );
}
