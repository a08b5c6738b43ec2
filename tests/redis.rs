//! The Redis backend against a real redis-server started by the testkit.

mod common;

use std::time::{Duration, Instant};

use connhub::redis::AsyncCommands;
use connhub::testkit::RedisServer;
use connhub::{Error, Manager, RedisConfig, Secret, State};

fn config(server: &RedisServer) -> RedisConfig {
    let mut c = server.config();
    c.connector = common::quick();
    c
}

#[tokio::test]
async fn set_and_get_through_the_pool() {
    let server = RedisServer::start().unwrap();
    let manager = Manager::new();
    let pool = manager.add_redis("cache", config(&server)).await.unwrap();
    assert_eq!(pool.state(), State::Healthy);

    let mut conn = pool.get().await.unwrap();
    let _: () = conn.set("k", "v").await.unwrap();
    let v: String = conn.get("k").await.unwrap();
    assert_eq!(v, "v");
    let raw: String = connhub::redis::cmd("GET")
        .arg("k")
        .query_async(&mut *conn)
        .await
        .unwrap();
    assert_eq!(raw, "v");
    let (a, b): (i64, i64) = connhub::redis::pipe()
        .incr("n", 1)
        .incr("n", 2)
        .query_async(&mut *conn)
        .await
        .unwrap();
    assert_eq!((a, b), (1, 3));
    drop(conn);

    let looked_up = manager.redis("cache").unwrap();
    let mut conn = looked_up.get().await.unwrap();
    let n: i64 = conn.get("n").await.unwrap();
    assert_eq!(n, 3);
    drop(conn);
    manager.close().await.unwrap();
}

#[tokio::test]
async fn checkout_reuses_connections_without_a_round_trip() {
    let server = RedisServer::start().unwrap();
    let manager = Manager::new();
    let pool = manager.add_redis("cache", config(&server)).await.unwrap();
    for _ in 0..50 {
        let mut c = pool.get().await.unwrap();
        let _: () = c.set("x", 1).await.unwrap();
    }
    // Sequential checkouts reuse one connection: the probe's, or one made on demand.
    let status = pool.status();
    assert!(status.pool.connections_created <= 2, "{status:?}");
    // Checkouts send nothing of their own: the server saw only our SETs and the
    // health check's PINGs.
    let mut c = pool.get().await.unwrap();
    let info: String = connhub::redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut *c)
        .await
        .unwrap();
    let pings = info
        .lines()
        .find(|l| l.starts_with("cmdstat_ping:"))
        .and_then(|l| l.split("calls=").nth(1))
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(
        pings < 10,
        "checkouts must not ping: {pings} PINGs for 50 checkouts"
    );
    drop(c);
    manager.close().await.unwrap();
}

#[tokio::test]
async fn db_selection_applies() {
    let server = RedisServer::start().unwrap();
    let manager = Manager::new();
    let mut c3 = config(&server);
    c3.db = 3;
    let p3 = manager.add_redis("db3", c3).await.unwrap();
    let p0 = manager.add_redis("db0", config(&server)).await.unwrap();
    let mut a = p3.get().await.unwrap();
    let _: () = a.set("only-in-3", 1).await.unwrap();
    let mut b = p0.get().await.unwrap();
    let v: Option<i64> = b.get("only-in-3").await.unwrap();
    assert_eq!(v, None);
    drop((a, b));
    manager.close().await.unwrap();
}

#[tokio::test]
async fn wrong_password_is_auth_error_within_connect_timeout() {
    let server = RedisServer::builder()
        .password("right-pass")
        .start()
        .unwrap();
    let manager = Manager::new();
    let mut c = config(&server);
    c.password = Some(Secret::new("wrong-pass-xyz"));
    c.connector.connect_timeout = Duration::from_secs(5);
    let start = Instant::now();
    let err = manager.add_redis("cache", c).await.unwrap_err();
    let took = start.elapsed();
    assert!(matches!(err, Error::Auth { .. }), "{err:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let text = format!("{err} {err:?}");
    assert!(text.contains("cache"), "{text}");
    assert!(!text.contains("wrong-pass-xyz"), "{text}");
    assert!(matches!(
        manager.redis("cache"),
        Err(Error::NotFound { .. })
    ));

    // The right password works, also as an ACL user.
    let mut ok = config(&server);
    ok.password = Some(Secret::new("right-pass"));
    manager.add_redis("cache", ok).await.unwrap();
    manager.close().await.unwrap();
}

#[tokio::test]
async fn acl_user_authenticates() {
    let server = RedisServer::builder()
        .user("app", "app-secret")
        .start()
        .unwrap();
    let manager = Manager::new();
    let mut c = config(&server);
    c.username = Some("app".into());
    c.password = Some(Secret::new("app-secret"));
    let pool = manager.add_redis("acl", c.clone()).await.unwrap();
    let mut conn = pool.get().await.unwrap();
    let who: String = connhub::redis::cmd("ACL")
        .arg("WHOAMI")
        .query_async(&mut *conn)
        .await
        .unwrap();
    assert_eq!(who, "app");
    drop(conn);

    c.password = Some(Secret::new("nope"));
    let err = manager.add_redis("acl2", c).await.unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err:?}");
    manager.close().await.unwrap();
}

#[tokio::test]
async fn unreachable_server_is_a_connect_error_naming_the_connector() {
    let port = connhub::testkit::free_port().unwrap();
    let manager = Manager::new();
    let mut c = RedisConfig::new(format!("127.0.0.1:{port}"));
    c.connector = common::quick();
    let err = manager.add_redis("nowhere", c).await.unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains("nowhere"), "{err}");
    assert!(err.to_string().contains(&port.to_string()), "{err}");
}

#[tokio::test]
async fn a_broken_connection_is_never_handed_out_again() {
    let mut server = RedisServer::start().unwrap();
    let manager = Manager::new();
    let mut c = config(&server);
    c.pool_size = 1;
    // No background check may notice the restart first: this is about the checkout.
    c.connector.health_check_interval = Duration::from_secs(60);
    let pool = manager.add_redis("cache", c).await.unwrap();
    {
        let mut conn = pool.get().await.unwrap();
        let _: () = conn.set("a", 1).await.unwrap();
    }
    server.restart_async().await.unwrap();
    {
        // The redis crate reports the closed connection through its push sender, so the
        // checkout normally skips it and opens a fresh one. If that report has not
        // arrived yet, the command fails and marks the old connection broken. The same
        // report makes the health engine check at once: it may have found the server
        // gone mid-restart, and then refuses checkouts until its next trial
        // (`reconnect_interval`) finds it back.
        let started = std::time::Instant::now();
        let mut conn = loop {
            match pool.get().await {
                Ok(conn) => break conn,
                Err(Error::Unavailable { .. }) if started.elapsed() < Duration::from_secs(5) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("{e}"),
            }
        };
        let r: Result<(), _> = conn.set("a", 2).await;
        if r.is_err() {
            assert!(conn.is_broken(), "a failed connection is marked broken");
        }
    }
    assert_eq!(
        pool.status().pool.connections_closed_broken,
        1,
        "the one connection from before the restart was dropped, and counted once"
    );
    // The pool recovers by itself and never returns the dead connection again.
    let ok = common::eventually(Duration::from_secs(10), || pool.state() == State::Healthy).await;
    assert!(ok, "state {:?}", pool.state());
    assert!(common::redis_serves(&pool).await);
    manager.close().await.unwrap();
}

#[tokio::test]
async fn multiplexed_shares_connections_fails_fast_and_recovers() {
    let mut server = RedisServer::start().unwrap();
    let manager = Manager::new();
    let mut c = config(&server);
    c.multiplexed_connections = 2;
    let pool = manager.add_redis("cache", c).await.unwrap();

    let mut tasks = Vec::new();
    for t in 0..32 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = pool.multiplexed().await.unwrap();
            let _: () = conn.set(format!("m{t}"), t).await.unwrap();
            let v: i64 = conn.get(format!("m{t}")).await.unwrap();
            assert_eq!(v, t);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // 32 tasks, two shared connections, none taken from the pool.
    let mut probe = pool.get().await.unwrap();
    let list: String = connhub::redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut *probe)
        .await
        .unwrap();
    drop(probe);
    assert!(list.lines().count() <= 4, "{list}");
    assert_eq!(pool.status().pool.in_use, 0);

    server.kill();
    let _ = manager.health_check().await;
    match pool.multiplexed().await {
        Err(Error::Unavailable { .. }) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
    server.restart_async().await.unwrap();
    let back = common::eventually(Duration::from_secs(10), || pool.state() == State::Healthy).await;
    assert!(back);
    let mut conn = pool.multiplexed().await.unwrap();
    let _: () = conn.set("after", 1).await.unwrap();
    drop(conn);

    manager.close().await.unwrap();
    assert!(matches!(
        pool.multiplexed().await,
        Err(Error::Closed { .. })
    ));
}

/// `close()` hangs up every idle connection at once, not when bb8's reaper next runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_hangs_up_the_idle_connections() {
    let server = RedisServer::start().unwrap();
    let manager = Manager::new();
    let mut c = server.config();
    c.pool_size = 4;
    let pool = manager.add_redis("cache", c).await.unwrap();
    let held: Vec<_> = futures::future::join_all((0..4).map(|_| pool.get())).await;
    drop(held);
    let client = connhub::redis::Client::open(format!("redis://{}", server.addr())).unwrap();
    let mut watcher = client.get_multiplexed_async_connection().await.unwrap();
    let count = |list: String| list.lines().count();
    let list: String = connhub::redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut watcher)
        .await
        .unwrap();
    assert!(
        count(list) >= 4,
        "the pool's connections are open before close"
    );
    pool.close().await.unwrap();
    // The server sees the hang-ups a moment later.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let list: String = connhub::redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut watcher)
            .await
            .unwrap();
        if count(list.clone()) == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still connected after close: {list}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
