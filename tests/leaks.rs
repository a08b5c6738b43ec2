//! Leak detection: a checkout held past `leak_detection_threshold` is reported once (a
//! warning naming the connector and the line that called `get()`, a metric), and again
//! when it comes back. Its own test binary: it installs a global log subscriber and a
//! global metrics recorder.

mod common;

use std::time::Duration;

use connhub::Manager;
use connhub::testkit::RedisServer;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_connection_is_reported_past_the_threshold_and_on_return() {
    let lines = common::Captured::default();
    let sink = lines.clone();
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .with_max_level(tracing::Level::INFO)
        .init();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let server = RedisServer::start().unwrap();
    let manager = Manager::new();
    let mut config = server.config();
    config.pool_size = 4;
    config.connector.leak_detection_threshold = Some(Duration::from_millis(300));
    let pool = manager.add_redis("cache", config).await.unwrap();

    // 16 tasks of short checkouts: none is a leak.
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for _ in 0..100 {
                    let mut c = pool.get().await.unwrap();
                    let _: String = connhub::redis::cmd("PING")
                        .query_async(&mut *c)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(pool.status().pool.leaks, 0);

    let line = line!() + 1;
    let held = pool.get().await.unwrap();
    let at = format!("tests/leaks.rs:{line}");
    let reported = common::eventually(Duration::from_secs(10), || {
        !lines.lines_with("possible leak").is_empty()
    })
    .await;
    assert!(reported, "no leak warning within 10 s");
    let warnings = lines.lines_with("possible leak");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("WARN"), "{warnings:?}");
    assert!(
        warnings[0].contains("cache"),
        "names the connector: {warnings:?}"
    );
    assert!(
        warnings[0].contains(&at),
        "names the line of get(), {at}: {warnings:?}"
    );
    assert_eq!(pool.status().pool.leaks, 1);

    // Still held: not reported again.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(lines.lines_with("possible leak").len(), 1);
    assert!(lines.lines_with("was returned").is_empty());

    drop(held);
    let returned = lines.lines_with("was returned");
    assert_eq!(returned.len(), 1, "reported on return: {returned:?}");
    assert!(returned[0].contains(&at), "{returned:?}");
    assert_eq!(pool.status().pool.leaks, 1, "counted once");

    let leaked: Vec<_> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, _, _, _)| key.key().name() == "connhub.connections.leaked")
        .collect();
    assert_eq!(leaked.len(), 1, "{leaked:?}");
    let (key, _, _, value) = &leaked[0];
    assert!(
        key.key()
            .labels()
            .any(|l| l.key() == "connector" && l.value() == "cache"),
        "{key:?}"
    );
    assert_eq!(*value, DebugValue::Counter(1));
    manager.close().await.unwrap();
}
