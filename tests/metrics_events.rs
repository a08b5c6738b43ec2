//! The OpenTelemetry pool metrics recorded as things happen (connection create time,
//! checkout wait and use time, timeouts), on a global recorder installed before the
//! connector is registered.

use std::time::Duration;

use connhub::Manager;
use connhub::redis::AsyncCommands;
use connhub::testkit::RedisServer;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

#[tokio::test]
async fn every_pool_metric_is_recorded_under_its_opentelemetry_name() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let server = RedisServer::start().unwrap();
    let manager = Manager::new();
    let mut cfg = server.config();
    cfg.pool_size = 1;
    cfg.connector.connect_timeout = Duration::from_millis(200);
    let pool = manager.add_redis("cache", cfg).await.unwrap();
    for _ in 0..3 {
        let mut c = pool.get().await.unwrap();
        let _: () = c.set("k", 1).await.unwrap();
    }
    // One checkout times out while the only connection is held.
    let held = pool.get().await.unwrap();
    assert!(matches!(
        pool.get().await,
        Err(connhub::Error::Timeout { .. })
    ));
    drop(held);
    manager.record_metrics();

    let snapshot = snapshotter.snapshot().into_vec();
    let for_cache = |name: &str| {
        snapshot
            .iter()
            .find(|(key, _, _, _)| {
                key.key().name() == name
                    && key.key().labels().any(|l| {
                        l.key() == "db.client.connection.pool.name" && l.value() == "cache"
                    })
            })
            .map(|(_, _, _, v)| v)
            .unwrap_or_else(|| panic!("no {name}"))
    };
    for name in [
        "db.client.connection.create_time",
        "db.client.connection.wait_time",
        "db.client.connection.use_time",
    ] {
        match for_cache(name) {
            DebugValue::Histogram(samples) => assert!(!samples.is_empty(), "{name} empty"),
            other => panic!("{name}: {other:?}"),
        }
    }
    assert!(matches!(
        for_cache("db.client.connection.timeouts"),
        DebugValue::Counter(1)
    ));
    for name in [
        "db.client.connection.count",
        "db.client.connection.max",
        "db.client.connection.idle.min",
        "db.client.connection.pending_requests",
    ] {
        assert!(matches!(for_cache(name), DebugValue::Gauge(_)), "{name}");
    }
    manager.close().await.unwrap();
}
