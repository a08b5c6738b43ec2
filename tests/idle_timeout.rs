//! A server that closes idle connections (`timeout` in redis.conf; NAT and load balancers
//! do the same) is no outage: the closed connections are replaced without a caller
//! seeing them, for connhub's Redis backend and for a plain bb8 manager alike.

use std::time::Duration;

use connhub::redis::AsyncCommands;
use connhub::testkit::RedisServer;
use connhub::{ConnectorConfig, Manager, PoolConfig, RedisConfig};

const RUN: Duration = Duration::from_secs(60);

/// Bursts of 32 concurrent calls, with pauses longer than the server's idle timeout.
/// Returns (calls, failed calls).
async fn bursts<F, Fut>(call: F) -> (u64, u64)
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let start = std::time::Instant::now();
    let (mut calls, mut failed) = (0, 0);
    while start.elapsed() < RUN {
        let burst: Vec<_> = (0..32).map(|i| tokio::spawn((call.clone())(i))).collect();
        for b in burst {
            calls += 1;
            if !b.await.unwrap() {
                failed += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(2500)).await;
    }
    (calls, failed)
}

fn server() -> RedisServer {
    RedisServer::builder()
        .args(["--timeout", "1"])
        .start()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_closed_idle_connections_are_no_outage() {
    let server = server();
    let manager = Manager::new();
    let mut events = manager.subscribe();
    let cfg: RedisConfig = server.config();
    let pool = manager.add_redis("cache", cfg).await.unwrap();
    while events.try_recv().is_ok() {}
    let p = pool.clone();
    let (calls, failed) = bursts(move |i| {
        let pool = p.clone();
        async move {
            match pool.get().await {
                Ok(mut c) => c.set::<_, _, ()>(format!("idle:{i}"), i).await.is_ok(),
                Err(e) => {
                    eprintln!("{e}");
                    false
                }
            }
        }
    })
    .await;
    let mut changes = Vec::new();
    while let Ok(e) = events.try_recv() {
        changes.push(e);
    }
    let s = pool.status();
    println!(
        "connhub redis, server timeout 1s: {calls} calls, {failed} failed, {} state changes, \
         {} connections made, {} closed as broken",
        changes.len(),
        s.pool.connections_created,
        s.pool.connections_closed_broken
    );
    assert_eq!(failed, 0);
    assert!(changes.is_empty(), "{changes:?}");
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
    let mut events = manager.subscribe();
    let bb8_manager =
        bb8_redis::RedisConnectionManager::new(format!("redis://{}", server.addr())).unwrap();
    let pool = manager
        .add_pool(
            "bb8-redis",
            bb8_manager,
            ConnectorConfig::default(),
            PoolConfig::default(),
        )
        .await
        .unwrap();
    while events.try_recv().is_ok() {}
    let p = pool.clone();
    let (calls, failed) = bursts(move |i| {
        let pool = p.clone();
        async move {
            match pool.get().await {
                Ok(mut c) => c.set::<_, _, ()>(format!("idle:{i}"), i).await.is_ok(),
                Err(e) => {
                    eprintln!("{e}");
                    false
                }
            }
        }
    })
    .await;
    let mut changes = Vec::new();
    while let Ok(e) = events.try_recv() {
        changes.push(e);
    }
    println!(
        "bb8-redis via add_pool, server timeout 1s: {calls} calls, {failed} failed, {} state \
         changes",
        changes.len()
    );
    assert_eq!(failed, 0);
    assert!(changes.is_empty(), "{changes:?}");
    manager.close().await.unwrap();
}
