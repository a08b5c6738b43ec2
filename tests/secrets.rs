//! Passwords never appear in Debug, Display, errors, status, events or log lines.

mod common;

use std::time::Duration;

use connhub::testkit::{EtcdServer, RedisServer};
use connhub::{Manager, Secret};

const REDIS_PW: &str = "redis-pw-Zq81";
const ETCD_PW: &str = "etcd-pw-Xk42";

#[tokio::test]
async fn no_password_in_any_output() {
    let logs = common::Captured::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut redis = RedisServer::builder().password(REDIS_PW).start().unwrap();
    let etcd = EtcdServer::start().unwrap();
    etcd.enable_auth(ETCD_PW).await.unwrap();

    let manager = Manager::new();
    let mut events = manager.subscribe();
    let mut rc = redis.config();
    rc.connector = common::quick();
    let pool = manager.add_redis("cache", rc.clone()).await.unwrap();
    let mut ec = etcd.config();
    ec.connector = common::quick();
    ec.username = Some("root".into());
    ec.password = Some(Secret::new(ETCD_PW));
    manager.add_etcd("registry", ec.clone()).await.unwrap();

    let mut texts = vec![
        format!("{rc:?}"),
        format!("{ec:?}"),
        format!("{manager:?}"),
        format!("{pool:?}"),
        format!(
            "{:?}",
            connhub::backend::redis::RedisConnectionManager::new("x", &rc).unwrap()
        ),
        format!(
            "{:?}",
            connhub::backend::etcd::EtcdConnectionManager::new("y", &ec).unwrap()
        ),
        format!("{:?}", pool.get().await.unwrap()),
        serde_json::to_string(&rc).unwrap(),
        serde_json::to_string(&ec).unwrap(),
    ];

    // Errors: wrong passwords on both backends.
    let mut wrong = rc.clone();
    wrong.password = Some(Secret::new(format!("{REDIS_PW}-wrong")));
    let e = manager.add_redis("wrong", wrong).await.unwrap_err();
    texts.push(format!("{e} {e:?}"));
    let mut wrong = ec.clone();
    wrong.password = Some(Secret::new(format!("{ETCD_PW}-wrong")));
    let e = manager.add_etcd("wrong2", wrong).await.unwrap_err();
    texts.push(format!("{e} {e:?}"));

    // An outage: state changes, failed checks and their errors in status and events.
    redis.kill();
    let _ = manager.health_check().await;
    let _ = pool
        .get()
        .await
        .map_err(|e| texts.push(format!("{e} {e:?}")));
    redis.restart_async().await.unwrap();
    common::eventually(Duration::from_secs(10), || pool.is_connected()).await;
    texts.push(serde_json::to_string(&manager.status()).unwrap());
    texts.push(format!("{:?}", manager.status()));
    texts.push(format!("{:?}", manager.health_check().await));
    while let Ok(e) = events.try_recv() {
        texts.push(format!("{e:?}"));
    }
    manager.close().await.unwrap();
    texts.push(logs.text());

    for t in &texts {
        assert!(!t.contains(REDIS_PW), "redis password leaked: {t}");
        assert!(!t.contains(ETCD_PW), "etcd password leaked: {t}");
    }
    let log = texts.last().unwrap();
    // Connects, failed checks, state changes and reconnects are traced with name and kind.
    for expected in [
        "connected",
        "health check failed",
        "connector state changed",
        "connector=cache",
        "kind=redis",
        "kind=etcd",
    ] {
        assert!(log.contains(expected), "no {expected:?} in the log: {log}");
    }
}
