//! A server that closes idle connections (`timeout` in redis.conf; NAT and load balancers
//! do the same) is no outage: the closed connections are replaced without a caller
//! seeing them, for connhub's Redis backend and for a plain bb8 manager alike, and a
//! handle kept on a closed shared connection moves on to a fresh one.

mod common;

use std::time::Duration;

use connhub::backend::Bb8Manager;
use connhub::redis::AsyncCommands;
use connhub::redis::aio::ConnectionLike;
use connhub::testkit::RedisServer;
use connhub::{Manager, Pool, PoolConfig, Status};

const RUN: Duration = Duration::from_secs(30);

fn server() -> RedisServer {
    RedisServer::builder()
        .args(["--timeout", "1"])
        .start()
        .unwrap()
}

/// A server that closes idle connections and takes at most four clients.
fn capped_server() -> RedisServer {
    RedisServer::builder()
        .args(["--timeout", "1", "--maxclients", "4"])
        .start()
        .unwrap()
}

/// Bursts of 32 concurrent `get()` + SET through `pool`, with pauses longer than the
/// server's idle timeout, for half a minute: no call may fail and the connector may not
/// change state. Returns the pool's status at the end.
async fn bursts_without_outage<M>(manager: &Manager, pool: Pool<M>, what: &str) -> Status
where
    M: Bb8Manager,
    M::Connection: ConnectionLike + Send + Sync,
{
    let mut events = manager.subscribe();
    let start = std::time::Instant::now();
    let (mut calls, mut failed) = (0u64, 0u64);
    while start.elapsed() < RUN {
        let burst: Vec<_> = (0..32)
            .map(|i| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    match pool.get().await {
                        Ok(mut c) => c.set::<_, _, ()>(format!("idle:{i}"), i).await.is_ok(),
                        Err(e) => {
                            eprintln!("{e}");
                            false
                        }
                    }
                })
            })
            .collect();
        for b in burst {
            calls += 1;
            if !b.await.unwrap() {
                failed += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(2500)).await;
    }
    let mut changes = Vec::new();
    while let Ok(e) = events.try_recv() {
        changes.push(e);
    }
    let s = pool.status();
    println!(
        "{what}, server timeout 1s: {calls} calls, {failed} failed, {} state changes, {} \
         connections made",
        changes.len(),
        s.pool.connections_created,
    );
    assert_eq!(failed, 0, "{what}");
    assert!(changes.is_empty(), "{what}: {changes:?}");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_closed_idle_connections_are_no_outage() {
    let server = server();
    let manager = Manager::new();
    let pool = manager.add_redis("cache", server.config()).await.unwrap();
    let s = bursts_without_outage(&manager, pool, "connhub redis").await;
    assert!(
        s.pool.connections_closed_broken > 0,
        "the server did close idle connections"
    );
    manager.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_closed_idle_connections_are_no_outage_for_a_plain_bb8_manager() {
    let server = server();
    let manager = Manager::new();
    let pool = common::add_bb8_redis(&manager, &server, PoolConfig::default().max_size).await;
    bursts_without_outage(&manager, pool, "bb8-redis via add_pool").await;
    manager.close().await.unwrap();
}

/// At a connection cap the health engine checks the pool's own connections, not fresh
/// ones. When the server closes them all for idleness, the check meets dead connections:
/// they are dropped and the check goes on to the next, then to a fresh one (the server
/// has room again), and finds the server up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_closed_idle_connections_at_a_connection_cap_are_no_outage() {
    let server = capped_server();
    let manager = Manager::new();
    let mut cfg = server.config();
    cfg.pool_size = 16;
    let pool = manager.add_redis("cache", cfg).await.unwrap();
    let s = bursts_without_outage(&manager, pool, "connhub redis at maxclients 4").await;
    assert!(
        s.pool.connections_closed_broken > 0,
        "the server did close idle connections"
    );
    assert!(
        s.last_connect_error.is_some(),
        "the server did refuse a connection at its cap: {s:?}"
    );
    manager.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_closed_idle_connections_at_a_connection_cap_are_no_outage_for_a_plain_bb8_manager()
{
    let server = capped_server();
    let manager = Manager::new();
    let pool = common::add_bb8_redis(&manager, &server, 16).await;
    let s = bursts_without_outage(&manager, pool, "bb8-redis via add_pool at maxclients 4").await;
    assert!(
        s.last_connect_error.is_some(),
        "the server did refuse a connection at its cap: {s:?}"
    );
    manager.close().await.unwrap();
}

/// Handles a service keeps (a `multiplexed()` handle, the pool itself as a connection)
/// across pauses longer than the server's idle timeout: the server closes their shared
/// connection while nobody uses it, and the next command on each goes to a fresh one,
/// with nothing failed, nothing applied twice, and no state change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_handles_outlive_server_closed_idle_connections() {
    let server = server();
    let manager = Manager::new();
    let pool = manager.add_redis("cache", server.config()).await.unwrap();
    let mut events = manager.subscribe();
    let mut kept = pool.multiplexed().await.unwrap();
    let mut as_connection = pool.clone();
    let mut ids = Vec::new();
    const ROUNDS: i64 = 4;
    for round in 1..=ROUNDS {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let a: i64 = kept.incr("kept:a", 1).await.unwrap();
        let b: i64 = as_connection.incr("kept:b", 1).await.unwrap();
        let v: Option<String> = kept.get("kept:missing").await.unwrap();
        assert_eq!((a, b, v), (round, round, None), "round {round}");
        let id: i64 = connhub::redis::cmd("CLIENT")
            .arg("ID")
            .query_async(&mut kept)
            .await
            .unwrap();
        ids.push(id);
    }
    ids.dedup();
    assert!(
        ids.len() > 1,
        "the server did close the kept handle's idle connection: {ids:?}"
    );
    let mut changes = Vec::new();
    while let Ok(e) = events.try_recv() {
        changes.push(e);
    }
    assert!(changes.is_empty(), "{changes:?}");
    manager.close().await.unwrap();
}
