//! `on_connect` hooks and `client_name`: run once on every new connection before any
//! caller gets it; a failing hook fails that connection, not the connector.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use connhub::testkit::RedisServer;
use connhub::{Error, EtcdConnection, Manager, OnConnect, RedisConnection, State};

/// A hook that names the connection `hooked` and records its id.
fn naming_hook(hooked: Arc<Mutex<Vec<i64>>>) -> OnConnect<RedisConnection> {
    OnConnect::new(move |conn: &mut RedisConnection| {
        let hooked = hooked.clone();
        Box::pin(async move {
            let ((), id): ((), i64) = connhub::redis::pipe()
                .cmd("CLIENT")
                .arg("SETNAME")
                .arg("hooked")
                .cmd("CLIENT")
                .arg("ID")
                .query_async(conn)
                .await?;
            hooked.lock().unwrap().push(id);
            Ok(())
        })
    })
}

/// 16 tasks, 4 connections: every checkout sees the hook's name; returns the connection
/// ids seen.
async fn load(pool: &connhub::RedisPool) -> HashSet<i64> {
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let pool = pool.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                for _ in 0..50 {
                    let mut conn = pool.get().await.expect("checkout");
                    let (name, id): (Option<String>, i64) = connhub::redis::pipe()
                        .cmd("CLIENT")
                        .arg("GETNAME")
                        .cmd("CLIENT")
                        .arg("ID")
                        .query_async(&mut *conn)
                        .await
                        .expect("CLIENT GETNAME, CLIENT ID");
                    assert_eq!(
                        name.as_deref(),
                        Some("hooked"),
                        "a caller got a connection before its hook ran"
                    );
                    seen.lock().unwrap().insert(id);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    seen.lock().unwrap().clone()
}

/// Each connection ran the hook once, and every one callers got ran it.
fn once_each(hooked: &Mutex<Vec<i64>>, seen: &HashSet<i64>) {
    let hooked = hooked.lock().unwrap().clone();
    let distinct: HashSet<i64> = hooked.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        hooked.len(),
        "a connection ran its hook twice: {hooked:?}"
    );
    assert!(
        seen.is_subset(&distinct),
        "seen {seen:?}, hooked {hooked:?}"
    );
    assert!(
        !hooked.is_empty() && hooked.len() <= 4,
        "pool_size 4: {hooked:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_connect_hook_runs_once_on_every_new_connection() {
    let mut server = RedisServer::start().unwrap();
    let hooked = Arc::new(Mutex::new(Vec::new()));
    let manager = Manager::new();
    manager.on_connect("cache", naming_hook(hooked.clone()));
    let mut config = server.config();
    config.pool_size = 4;
    let pool = manager.add_redis("cache", config).await.unwrap();

    let seen = load(&pool).await;
    once_each(&hooked, &seen);
    assert_eq!(
        hooked.lock().unwrap().len() as u64,
        pool.status().pool.connections_created,
        "every connection made ran the hook"
    );

    // After a restart every connection is new (and ids start again): each runs the hook.
    hooked.lock().unwrap().clear();
    server.restart_async().await.unwrap();
    common::until_a_write_succeeds(&pool, std::time::Duration::from_secs(20)).await;
    let seen = load(&pool).await;
    once_each(&hooked, &seen);
    manager.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_hook_fails_that_connection_not_the_connector() {
    let server = RedisServer::start().unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    let manager = Manager::new();
    // Fails on its first run only: the connection registration made.
    manager.on_connect(
        "cache",
        OnConnect::new(move |_conn: &mut RedisConnection| {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                if n == 0 {
                    return Err("tracking is not allowed here".into());
                }
                Ok(())
            })
        }),
    );
    let pool = manager.add_redis("cache", server.config()).await.unwrap();

    let err = pool.get().await.unwrap_err();
    assert!(matches!(err, Error::Hook { .. }), "{err:?}");
    assert_eq!(err.connector(), Some("cache"));
    let text = err.to_string();
    assert!(text.contains("tracking is not allowed here"), "{text}");
    let source = std::error::Error::source(&err).expect("the hook's error as source");
    assert_eq!(source.to_string(), "tracking is not allowed here");
    assert_eq!(pool.state(), State::Healthy, "the connector stays up");

    // The failed connection was dropped; the next one passes its hook and serves.
    let mut conn = pool.get().await.expect("the next connection serves");
    let pong: String = connhub::redis::cmd("PING")
        .query_async(&mut *conn)
        .await
        .unwrap();
    assert_eq!(pong, "PONG");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    drop(conn);
    manager.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_hook_fails_its_connection_like_an_error() {
    let server = RedisServer::start().unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    let manager = Manager::new();
    // Panics on its first run only: the connection registration made.
    manager.on_connect(
        "cache",
        OnConnect::new(move |_conn: &mut RedisConnection| {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                assert!(n > 0, "no tracking today");
                Ok(())
            })
        }),
    );
    let mut config = server.config();
    config.pool_size = 1;
    let pool = manager.add_redis("cache", config).await.unwrap();
    let err = pool.get().await.unwrap_err();
    assert!(matches!(err, Error::Hook { .. }), "{err:?}");
    assert!(err.to_string().contains("no tracking today"), "{err}");
    // The pool's one slot is free again: the next connection passes and serves.
    for _ in 0..3 {
        drop(pool.get().await.expect("served after the panic"));
    }
    assert_eq!(pool.state(), State::Healthy);
    manager.close().await.unwrap();
}

#[tokio::test]
async fn a_hook_for_another_connection_type_is_refused_before_connecting() {
    let manager = Manager::new();
    manager.on_connect(
        "cache",
        OnConnect::new(|_conn: &mut EtcdConnection| Box::pin(async { Ok(()) })),
    );
    // Nothing listens there: the hook is refused before any connection is tried.
    let port = connhub::testkit::free_port().unwrap();
    let err = manager
        .add_redis(
            "cache",
            connhub::RedisConfig::new(format!("127.0.0.1:{port}")),
        )
        .await
        .unwrap_err();
    let Error::InvalidConfig(errors) = &err else {
        panic!("{err:?}")
    };
    assert!(errors.has_key("cache"), "{err}");
    assert!(err.to_string().contains("EtcdConnection"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_name_names_pooled_and_shared_connections() {
    let server = RedisServer::start().unwrap();
    let mut config = server.config();
    config.client_name = Some("checkout-api".into());
    let manager = Manager::new();
    let pool = manager.add_redis("cache", config).await.unwrap();

    let mut conn = pool.get().await.unwrap();
    let name: Option<String> = connhub::redis::cmd("CLIENT")
        .arg("GETNAME")
        .query_async(&mut *conn)
        .await
        .unwrap();
    assert_eq!(name.as_deref(), Some("checkout-api"));
    drop(conn);

    let mut shared = pool.multiplexed().await.unwrap();
    let name: Option<String> = connhub::redis::cmd("CLIENT")
        .arg("GETNAME")
        .query_async(&mut shared)
        .await
        .unwrap();
    assert_eq!(name.as_deref(), Some("checkout-api"));

    let list: String = connhub::redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut shared)
        .await
        .unwrap();
    assert!(
        list.lines()
            .filter(|l| l.contains("name=checkout-api"))
            .count()
            >= 2,
        "{list}"
    );
    manager.close().await.unwrap();
}
