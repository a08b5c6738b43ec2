//! The Manager's registry: lookups, errors, remove, close, custom backends, status, events.

mod common;

use std::time::Duration;

use connhub::testkit::{EtcdServer, RedisServer};
use connhub::{Error, Manager, ManagerConfig, PoolConfig, State};

#[tokio::test]
async fn from_config_registers_every_connector() {
    let redis = RedisServer::start().unwrap();
    let etcd = EtcdServer::start().unwrap();
    let cfg = ManagerConfig::from_yaml_str(&format!(
        "defaults:\n  health_check_interval: 1s\nredis:\n  cache:\n    addr: {}\n  sessions:\n    addr: {}\n    db: 1\netcd:\n  registry:\n    endpoints: [{}]\n",
        redis.addr(),
        redis.addr(),
        etcd.endpoint()
    ))
    .unwrap();
    let manager = Manager::from_config(cfg).await.unwrap();
    assert_eq!(manager.names(), ["cache", "registry", "sessions"]);
    let status = manager.status();
    assert_eq!(status.len(), 3);
    assert!(
        status.iter().all(|s| s.state == State::Healthy),
        "{status:?}"
    );

    let report = manager.health_check().await;
    assert!(report.is_healthy(), "{report:?}");
    assert_eq!(report.checks.len(), 3);
    let status = manager.status();
    assert!(
        status.iter().all(|s| s.last_check_latency.is_some()),
        "{status:?}"
    );
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json[0]["name"], "cache");
    assert_eq!(json[0]["state"], "healthy");
    assert_eq!(json[0]["kind"], "redis");
    manager.close().await.unwrap();
}

#[tokio::test]
async fn from_config_fails_cleanly_when_a_backend_is_down() {
    let redis = RedisServer::start().unwrap();
    let port = connhub::testkit::free_port().unwrap();
    let cfg = ManagerConfig::from_yaml_str(&format!(
        "defaults:\n  connect_timeout: 2s\nredis:\n  up:\n    addr: {}\n  down:\n    addr: 127.0.0.1:{port}\n",
        redis.addr()
    ))
    .unwrap();
    let err = Manager::from_config(cfg).await.unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert_eq!(err.connector(), Some("down"));
}

#[tokio::test]
async fn lookups_report_not_found_and_wrong_type() {
    let redis = RedisServer::start().unwrap();
    let manager = Manager::new();
    manager.add_redis("cache", redis.config()).await.unwrap();

    assert!(matches!(manager.redis("nope"), Err(Error::NotFound { .. })));
    assert!(matches!(
        manager.connector("nope"),
        Err(Error::NotFound { .. })
    ));
    let err = manager.etcd("cache").unwrap_err();
    assert!(matches!(err, Error::WrongType { .. }), "{err:?}");
    assert!(err.to_string().contains("redis"), "{err}");
    let err = manager
        .pool::<bb8_redis::RedisConnectionManager>("cache")
        .unwrap_err();
    assert!(matches!(err, Error::WrongType { .. }), "{err:?}");

    let c = manager.connector("cache").unwrap();
    assert_eq!(c.name(), "cache");
    assert_eq!(c.kind().to_string(), "redis");
    assert!(c.is_connected());
    assert_eq!(c.config().connect_timeout, Duration::from_secs(5));
    assert!(c.as_any().downcast_ref::<connhub::RedisPool>().is_some());

    let err = manager
        .add_redis("cache", redis.config())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AlreadyRegistered { .. }), "{err:?}");
    manager.close().await.unwrap();
}

#[tokio::test]
async fn names_are_unique_across_kinds_at_registration() {
    let redis = RedisServer::start().unwrap();
    let etcd = EtcdServer::start().unwrap();
    let manager = Manager::new();
    manager.add_redis("x", redis.config()).await.unwrap();
    let err = manager.add_etcd("x", etcd.config()).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyRegistered { .. }), "{err:?}");
    manager.close().await.unwrap();
}

#[tokio::test]
async fn bad_config_is_refused_before_connecting() {
    let manager = Manager::new();
    let mut c = connhub::RedisConfig::new("127.0.0.1:1");
    c.pool_size = 0;
    let err = manager.add_redis("cache", c).await.unwrap_err();
    match err {
        Error::InvalidConfig(e) => assert!(e.has_key("redis.cache.pool_size"), "{e}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn remove_closes_the_connector() {
    let redis = RedisServer::start().unwrap();
    let manager = Manager::new();
    let pool = manager.add_redis("cache", redis.config()).await.unwrap();
    let mut events = manager.subscribe();
    manager.remove("cache").await.unwrap();
    assert!(matches!(
        manager.redis("cache"),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(pool.get().await, Err(Error::Closed { .. })));
    assert_eq!(pool.state(), State::Closed);
    let e = events.recv().await.unwrap();
    assert_eq!((e.from, e.to), (State::Healthy, State::Closed));
    assert!(matches!(
        manager.remove("cache").await,
        Err(Error::NotFound { .. })
    ));
    // The name is free again.
    manager.add_redis("cache", redis.config()).await.unwrap();
    manager.close().await.unwrap();
}

#[tokio::test]
async fn close_refuses_everything_afterwards_and_is_idempotent() {
    let redis = RedisServer::start().unwrap();
    let etcd = EtcdServer::start().unwrap();
    let manager = Manager::new();
    let r = manager.add_redis("cache", redis.config()).await.unwrap();
    let e = manager.add_etcd("registry", etcd.config()).await.unwrap();
    manager.close().await.unwrap();
    manager.close().await.unwrap();
    assert!(manager.is_closed());
    assert!(matches!(r.get().await, Err(Error::Closed { .. })));
    assert!(matches!(e.get().await, Err(Error::Closed { .. })));
    assert!(matches!(manager.redis("cache"), Err(Error::Closed { .. })));
    assert!(matches!(
        manager.add_redis("again", redis.config()).await,
        Err(Error::Closed { .. })
    ));
    assert!(manager.status().is_empty());
    // Idle connections were dropped.
    assert_eq!(r.status().pool.idle, 0, "{:?}", r.status());
}

#[tokio::test]
async fn close_waits_for_checked_out_connections() {
    let redis = RedisServer::start().unwrap();
    let tasks_before = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let manager = Manager::new();
    let pool = manager.add_redis("cache", redis.config()).await.unwrap();
    let mut conn = pool.get().await.unwrap();
    let worker = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let r: Result<(), _> = connhub::redis::AsyncCommands::set(&mut *conn, "k", "v").await;
        r
    });
    manager.close().await.unwrap();
    // close returned after the in-flight work finished, and that work succeeded.
    assert!(worker.is_finished());
    worker.await.unwrap().unwrap();
    assert!(matches!(pool.get().await, Err(Error::Closed { .. })));
    // No task outlives the pool: health task, bb8's reaper, connection drivers.
    drop(pool);
    drop(manager);
    let metrics = tokio::runtime::Handle::current().metrics();
    let settled = common::eventually(Duration::from_secs(5), || {
        metrics.num_alive_tasks() <= tasks_before
    })
    .await;
    assert!(
        settled,
        "{} tasks alive, {tasks_before} before",
        metrics.num_alive_tasks()
    );
}

#[tokio::test]
async fn any_bb8_manager_registers_with_add_pool() {
    let redis = RedisServer::start().unwrap();
    let manager = Manager::new();
    let backend =
        bb8_redis::RedisConnectionManager::new(format!("redis://{}", redis.addr())).unwrap();
    let pool_config = PoolConfig {
        max_size: 4,
        kind: Some("bb8-redis".into()),
        endpoint: redis.addr(),
        ..PoolConfig::default()
    };
    let pool = manager
        .add_pool("custom", backend, common::quick(), pool_config)
        .await
        .unwrap();
    let mut conn = pool.get().await.unwrap();
    let _: () = connhub::redis::AsyncCommands::set(&mut *conn, "c", 1)
        .await
        .unwrap();
    drop(conn);

    let typed = manager
        .pool::<bb8_redis::RedisConnectionManager>("custom")
        .unwrap();
    assert_eq!(typed.status().kind.to_string(), "bb8-redis");
    assert!(matches!(
        manager.redis("custom"),
        Err(Error::WrongType { .. })
    ));
    let report = manager.health_check().await;
    assert!(report.is_healthy(), "{report:?}");

    // Without a kind, the kind comes from the manager's type name.
    let backend =
        bb8_redis::RedisConnectionManager::new(format!("redis://{}", redis.addr())).unwrap();
    let p = manager
        .add_pool("named", backend, common::quick(), PoolConfig::default())
        .await
        .unwrap();
    assert_eq!(p.status().kind.to_string(), "redis");

    let bad = PoolConfig {
        max_size: 0,
        ..PoolConfig::default()
    };
    let backend =
        bb8_redis::RedisConnectionManager::new(format!("redis://{}", redis.addr())).unwrap();
    let err = manager
        .add_pool("bad", backend, common::quick(), bad)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)), "{err:?}");
    manager.close().await.unwrap();
}
