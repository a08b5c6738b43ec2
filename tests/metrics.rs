//! Metrics read back from a recorder.

use connhub::Manager;
use connhub::redis::AsyncCommands;
use connhub::testkit::RedisServer;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

/// A metric's name, labels and value.
type Recorded = (String, Vec<(String, String)>, DebugValue);

/// A metric's labels, as pairs of strings.
fn labels(key: &metrics::Key) -> Vec<(String, String)> {
    key.labels()
        .map(|l| (l.key().to_owned(), l.value().to_owned()))
        .collect()
}

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
        .map(|(key, _, _, value)| (key.key().name().to_owned(), labels(key.key()), value))
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

/// With no `tracing` subscriber, a plain command goes the short way (no span to run
/// under) and still leaves its `db.client.operation.duration` sample, failures with the
/// Redis error prefix, and no argument.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_with_no_subscriber_still_leaves_its_duration_sample() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::set_global_recorder(recorder).unwrap();
    let server = RedisServer::start().unwrap();
    let manager = Manager::new();
    let mut cache = manager.add_redis("plain", server.config()).await.unwrap();
    let _: () = cache.set("user:7", "private-value").await.unwrap();
    for _ in 0..3 {
        let v: Option<String> = AsyncCommands::get(&mut cache, "user:7").await.unwrap();
        assert_eq!(v.as_deref(), Some("private-value"));
    }
    let wrong: Result<i64, _> = cache.incr("user:7", 1).await;
    assert!(wrong.is_err());

    let samples: Vec<(Vec<(String, String)>, usize)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == "db.client.operation.duration")
        .map(|(key, _, _, value)| match value {
            DebugValue::Histogram(h) => (labels(key.key()), h.len()),
            other => panic!("not a histogram: {other:?}"),
        })
        .collect();
    let has = |labels: &[(String, String)], k: &str, v: &str| {
        labels.iter().any(|(lk, lv)| lk == k && lv == v)
    };
    let gets = samples
        .iter()
        .find(|(l, _)| has(l, "db.operation.name", "GET"))
        .unwrap_or_else(|| panic!("no GET sample in {samples:?}"));
    assert_eq!(gets.1, 3, "one sample a GET: {samples:?}");
    assert!(has(&gets.0, "db.system.name", "redis"));
    assert!(has(&gets.0, "db.client.connection.pool.name", "plain"));
    assert!(!gets.0.iter().any(|(k, _)| k == "error.type"));
    let failed = samples
        .iter()
        .find(|(l, _)| has(l, "db.operation.name", "INCRBY"))
        .unwrap_or_else(|| panic!("no INCRBY sample in {samples:?}"));
    assert!(has(&failed.0, "error.type", "ERR"), "{samples:?}");
    assert!(has(&failed.0, "db.response.status_code", "ERR"));
    let printed = format!("{samples:?}");
    for secret in ["user:7", "private-value"] {
        assert!(!printed.contains(secret), "{secret} in a sample: {printed}");
    }
}
