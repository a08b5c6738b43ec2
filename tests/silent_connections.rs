//! Idle connections that go silent (a NAT or load balancer drops flows it judged idle
//! without closing either end; the client's requests vanish, no reply and no reset comes
//! back) are no outage: the health check finds a fresh connection answering, retires the
//! silent ones, and callers after it meet none of them.

mod common;

use std::time::Duration;

use connhub::backend::Bb8Manager;
use connhub::redis::AsyncCommands;
use connhub::redis::aio::ConnectionLike;
use connhub::testkit::{RedisServer, Relay};
use connhub::{Manager, Pool, RedisConfig, RedisPool, State};

/// 32 concurrent `get()` + SET, then 32 SETs on the pool itself (its shared connection):
/// how many failed, each error printed.
async fn burst(pool: &RedisPool) -> usize {
    let calls: Vec<_> = (0..32)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut failed = 0;
                match pool.get().await {
                    Ok(mut c) => {
                        if let Err(e) = c.set::<_, _, ()>(format!("silent:{i}"), i).await {
                            eprintln!("get() + SET: {e}");
                            failed += 1;
                        }
                    }
                    Err(e) => {
                        eprintln!("get(): {e}");
                        failed += 1;
                    }
                }
                let mut shared = pool.clone();
                if let Err(e) = shared.set::<_, _, ()>(format!("shared:{i}"), i).await {
                    eprintln!("SET on the pool: {e}");
                    failed += 1;
                }
                failed
            })
        })
        .collect();
    let mut failed = 0;
    for c in calls {
        failed += c.await.expect("a burst task");
    }
    failed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_gone_silent_are_no_outage() {
    let server = RedisServer::start().unwrap();
    let relay = Relay::start(server.addr()).unwrap();
    let manager = Manager::new();
    let pool = manager
        .add_redis("cache", RedisConfig::new(relay.addr()))
        .await
        .unwrap();
    assert_eq!(burst(&pool).await, 0, "before the relay went silent");
    let made = pool.status().pool.connections_created;
    let mut events = manager.subscribe();

    relay.silence();
    let report = manager.health_check().await;
    assert!(
        report.is_healthy(),
        "a fresh connection answers, so the server is up: {:?}",
        report.failures().collect::<Vec<_>>()
    );
    assert_eq!(pool.status().state, State::Healthy);

    // Every connection made before the check was as silent as the one it tried.
    let failed = tokio::time::timeout(Duration::from_secs(30), burst(&pool))
        .await
        .expect("the burst after the check");
    assert_eq!(failed, 0, "a caller met a silent connection");
    let changes: Vec<_> = std::iter::from_fn(|| events.try_recv().ok()).collect();
    assert!(changes.is_empty(), "no state change: {changes:?}");
    let s = pool.status();
    assert!(
        s.pool.connections_created > made,
        "the silent connections were replaced: {s:?}"
    );
    manager.close().await.unwrap();
}

/// A server that takes three clients, behind a relay.
fn capped() -> (RedisServer, Relay) {
    let server = RedisServer::builder()
        .args(["--maxclients", "3"])
        .start()
        .unwrap();
    let relay = Relay::start(server.addr()).unwrap();
    (server, relay)
}

/// At a connection cap the check runs on the pool's own connections (a fresh one would be
/// refused). One of them gone silent is no outage either: the check tries another beside
/// it, and the silent one is retired, so no caller after the check meets it.
async fn silent_at_a_cap<M>(manager: &Manager, pool: Pool<M>, relay: &Relay)
where
    M: Bb8Manager,
    M::Connection: ConnectionLike + Send + Sync,
{
    // The pool's first connection goes silent.
    let silent = pool.get().await.unwrap();
    relay.silence();
    // Two more fill the server; the next is refused, and the pool stops at three.
    let others = [pool.get().await.unwrap(), pool.get().await.unwrap()];
    let refused = tokio::time::timeout(Duration::from_secs(10), async {
        while pool.status().pool.limit.is_none() {
            let _ = tokio::time::timeout(Duration::from_millis(200), pool.get()).await;
        }
    });
    refused.await.expect("the server's cap limits the pool");
    assert_eq!(pool.status().pool.limit, Some(3));
    // Back in line first, so the check takes it first.
    drop(silent);
    drop(others);
    let mut events = manager.subscribe();

    let report = manager.health_check().await;
    assert!(
        report.is_healthy(),
        "another of the pool's connections answers: {:?}",
        report.failures().collect::<Vec<_>>()
    );
    let changes: Vec<_> = std::iter::from_fn(|| events.try_recv().ok()).collect();
    assert!(changes.is_empty(), "no state change: {changes:?}");
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut c = pool.get().await.map_err(|e| e.to_string())?;
                c.set::<_, _, ()>(format!("capped:{i}"), i)
                    .await
                    .map_err(|e| e.to_string())
            })
        })
        .collect();
    for c in calls {
        let done = tokio::time::timeout(Duration::from_secs(30), c).await;
        done.expect("a call after the check").unwrap().unwrap();
    }
    manager.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_at_a_connection_cap_is_no_outage() {
    let (_server, relay) = capped();
    let manager = Manager::new();
    let pool = manager
        .add_redis("cache", RedisConfig::new(relay.addr()))
        .await
        .unwrap();
    silent_at_a_cap(&manager, pool, &relay).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_at_a_connection_cap_is_no_outage_for_a_plain_bb8_manager() {
    let (_server, relay) = capped();
    let manager = Manager::new();
    let pool = common::add_bb8_redis_at(&manager, &relay.addr(), 16).await;
    silent_at_a_cap(&manager, pool, &relay).await;
}
