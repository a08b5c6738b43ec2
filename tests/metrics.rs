//! Metrics read back from a recorder.

use connhub::Manager;
use connhub::redis::AsyncCommands;
use connhub::testkit::RedisServer;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

/// A metric's name, labels and value.
type Recorded = (String, Vec<(String, String)>, DebugValue);

#[tokio::test]
async fn pool_state_and_counters_are_recorded() {
    let server = RedisServer::start().unwrap();
    let manager = Manager::new();
    let mut cfg = server.config();
    cfg.pool_size = 4;
    let pool = manager.add_redis("cache", cfg).await.unwrap();
    for _ in 0..5 {
        let mut c = pool.get().await.unwrap();
        let _: () = c.set("k", 1).await.unwrap();
    }
    let held = pool.get().await.unwrap();

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || manager.record_metrics());
    let values: Vec<Recorded> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let labels = key
                .key()
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            (key.key().name().to_owned(), labels, value)
        })
        .collect();
    let find = |name: &str, label: (&str, &str)| {
        values
            .iter()
            .find(|(n, labels, _)| {
                n == name
                    && labels
                        .iter()
                        .any(|(k, v)| (k.as_str(), v.as_str()) == label)
            })
            .map(|(_, _, v)| match v {
                DebugValue::Gauge(g) => g.into_inner(),
                DebugValue::Counter(c) => *c as f64,
                DebugValue::Histogram(_) => f64::NAN,
            })
            .unwrap_or_else(|| panic!("no {name} with {label:?} in {values:?}"))
    };
    // connhub's own, by connector.
    let own = ("connector", "cache");
    assert_eq!(find("connhub.up", own), 1.0);
    assert_eq!(find("connhub.state", own), 1.0);
    assert!(find("connhub.checkouts", own) >= 6.0);
    assert!(find("connhub.connections.created", own) >= 1.0);
    assert!(
        values
            .iter()
            .any(|(n, l, _)| n == "connhub.connections.closed"
                && l.iter().any(|(k, v)| k == "reason" && v == "broken"))
    );
    assert!(find("connhub.health_check.duration", own) > 0.0);
    assert_eq!(find("connhub.reconnect_attempts", own), 0.0);
    assert_eq!(find("connhub.streams", own), 0.0);
    assert_eq!(
        find("connhub.connections.limit", own),
        4.0,
        "no cap: the pool's size"
    );
    // OpenTelemetry's, by pool.
    let pool_name = ("db.client.connection.pool.name", "cache");
    assert_eq!(find("db.client.connection.max", pool_name), 4.0);
    assert_eq!(find("db.client.connection.idle.min", pool_name), 0.0);
    assert_eq!(
        find("db.client.connection.pending_requests", pool_name),
        0.0
    );
    let used = values.iter().find(|(n, l, _)| {
        n == "db.client.connection.count"
            && l.iter()
                .any(|(k, v)| k == "db.client.connection.state" && v == "used")
            && l.iter()
                .any(|(k, v)| k == "db.client.connection.pool.name" && v == "cache")
    });
    assert!(
        matches!(used, Some((_, _, DebugValue::Gauge(g))) if g.into_inner() == 1.0),
        "{used:?}"
    );
    assert!(values.iter().any(|(n, l, _)| {
        n == "db.client.connection.count"
            && l.iter()
                .any(|(k, v)| k == "db.client.connection.state" && v == "idle")
    }));
    drop(held);
    manager.close().await.unwrap();
}
