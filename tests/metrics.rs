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
    let find = |name: &str| {
        values
            .iter()
            .find(|(n, labels, _)| {
                n == name && labels.iter().any(|(k, v)| k == "connector" && v == "cache")
            })
            .map(|(_, _, v)| match v {
                DebugValue::Gauge(g) => g.into_inner(),
                DebugValue::Counter(c) => *c as f64,
                DebugValue::Histogram(_) => f64::NAN,
            })
            .unwrap_or_else(|| panic!("no {name} in {values:?}"))
    };
    assert_eq!(find("connhub_up"), 1.0);
    assert_eq!(find("connhub_state"), 1.0);
    assert_eq!(find("connhub_connections_in_use"), 1.0);
    assert_eq!(find("connhub_pool_max_size"), 4.0);
    assert!(find("connhub_checkouts_total") >= 6.0);
    assert!(find("connhub_connections_created_total") >= 1.0);
    assert!(
        values
            .iter()
            .any(|(n, l, _)| n == "connhub_connections_closed_total"
                && l.iter().any(|(k, v)| k == "reason" && v == "broken"))
    );
    assert!(find("connhub_health_check_seconds") > 0.0);
    drop(held);
    manager.close().await.unwrap();
}
