//! The axum router, driven in-process.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRef, State};
use axum::http::{Request, StatusCode};
use axum::routing::get;
use connhub::redis::AsyncCommands;
use connhub::testkit::RedisServer;
use connhub::{Manager, RedisPool};
use http_body_util::BodyExt;
use tower::ServiceExt;

#[derive(Clone, FromRef)]
struct App {
    manager: Manager,
    cache: RedisPool,
}

async fn counter(State(cache): State<RedisPool>) -> String {
    let mut c = cache.get().await.expect("checkout");
    let n: i64 = c.incr("hits", 1).await.expect("INCR");
    n.to_string()
}

async fn call(app: &axum::Router, path: &str) -> (StatusCode, serde_json::Value) {
    let resp = app
        .clone()
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::String(
        String::from_utf8_lossy(&bytes).into_owned(),
    ));
    (status, json)
}

#[tokio::test]
async fn healthz_and_readyz_follow_the_connectors() {
    let mut server = RedisServer::builder()
        .password("pw-in-body?")
        .start()
        .unwrap();
    let manager = Manager::new();
    let mut cfg = server.config();
    cfg.connector = common::quick();
    let cache = manager.add_redis("cache", cfg).await.unwrap();
    let app = axum::Router::new()
        .route("/hits", get(counter))
        .merge(connhub::axum::router())
        .with_state(App {
            manager: manager.clone(),
            cache,
        });

    let (code, body) = call(&app, "/hits").await;
    assert_eq!((code, body), (StatusCode::OK, serde_json::json!(1)));

    let (code, body) = call(&app, "/healthz").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["healthy"], true);
    assert_eq!(body["connectors"][0]["name"], "cache");
    assert_eq!(body["connectors"][0]["state"], "healthy");
    assert_eq!(body["connectors"][0]["kind"], "redis");
    assert!(!body.to_string().contains("pw-in-body"), "{body}");
    let (code, body) = call(&app, "/readyz").await;
    assert_eq!(
        (code, body["ready"].clone()),
        (StatusCode::OK, serde_json::json!(true))
    );

    server.kill();
    let _ = manager.health_check().await;
    let (code, body) = call(&app, "/healthz").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["healthy"], false);
    assert_eq!(body["connectors"][0]["state"], "reconnecting");
    assert!(
        body["connectors"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("cache")
    );

    server.restart_async().await.unwrap();
    let back = common::eventually(Duration::from_secs(10), || {
        manager.status()[0].state == connhub::State::Healthy
    })
    .await;
    assert!(back);
    assert_eq!(call(&app, "/healthz").await.0, StatusCode::OK);

    manager.close().await.unwrap();
    assert_eq!(
        call(&app, "/healthz").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        call(&app, "/readyz").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

/// Polls `path` every `every` until `done` says yes, running `between` after each miss;
/// returns the last body and how long it took, or panics after `limit`.
async fn poll<F: std::future::Future<Output = ()>>(
    app: &axum::Router,
    path: &str,
    (limit, every): (Duration, Duration),
    between: impl Fn() -> F,
    done: impl Fn(StatusCode, &serde_json::Value) -> bool,
) -> (serde_json::Value, Duration) {
    let start = std::time::Instant::now();
    loop {
        let (code, body) = call(app, path).await;
        if done(code, &body) {
            return (body, start.elapsed());
        }
        assert!(start.elapsed() < limit, "{path} stayed {code}: {body}");
        between().await;
        tokio::time::sleep(every).await;
    }
}

/// Polls `path` until it answers `want`, checking the connectors meanwhile (as callers
/// would); panics after 15 s.
async fn until_status(
    app: &axum::Router,
    manager: &Manager,
    path: &str,
    want: StatusCode,
) -> serde_json::Value {
    let check = || async {
        let _ = manager.health_check().await;
    };
    let timing = (Duration::from_secs(15), Duration::from_millis(50));
    poll(app, path, timing, check, |code, _| code == want)
        .await
        .0
}

/// Two Redis servers behind default settings: `cache` required, `sessions` optional;
/// the probe routes over a manager of both.
async fn required_and_optional() -> (RedisServer, RedisServer, Manager, axum::Router) {
    let cache_server = RedisServer::start().unwrap();
    let sessions_server = RedisServer::start().unwrap();
    let manager = Manager::new();
    let cache = manager
        .add_redis("cache", cache_server.config())
        .await
        .unwrap();
    let mut optional = sessions_server.config();
    optional.connector.required = false;
    manager.add_redis("sessions", optional).await.unwrap();
    let app = axum::Router::new()
        .merge(connhub::axum::router())
        .with_state(App {
            manager: manager.clone(),
            cache,
        });
    (cache_server, sessions_server, manager, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_mean_what_kubernetes_means() {
    let (mut cache_server, mut sessions_server, manager, app) = required_and_optional().await;
    assert_eq!(call(&app, "/livez").await.0, StatusCode::OK);
    assert_eq!(call(&app, "/readyz").await.0, StatusCode::OK);

    // A required connector down: not ready, still alive.
    cache_server.kill();
    let body = until_status(&app, &manager, "/readyz", StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(body["waiting_for"], serde_json::json!(["cache"]));
    assert_eq!(call(&app, "/livez").await.0, StatusCode::OK);
    assert_eq!(
        call(&app, "/healthz").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    cache_server.restart_async().await.unwrap();
    until_status(&app, &manager, "/readyz", StatusCode::OK).await;

    // An optional connector down: reported, still ready, still alive.
    sessions_server.kill();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let _ = manager.health_check().await;
        let (code, body) = call(&app, "/readyz").await;
        assert_eq!(code, StatusCode::OK, "{body}");
        if body["degraded"] == serde_json::json!(["sessions"]) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(call(&app, "/livez").await.0, StatusCode::OK);
    sessions_server.restart_async().await.unwrap();
    let body = until_status(&app, &manager, "/healthz", StatusCode::OK).await;
    assert_eq!(body["connectors"][1]["required"], false);

    // Closed: not alive any more.
    manager.close().await.unwrap();
    assert_eq!(
        call(&app, "/livez").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

/// Polls `/readyz` every 10 ms, with no other call and no manual check, until `done`
/// says yes; returns how long that took, or panics after `limit`.
async fn readyz_until(
    app: &axum::Router,
    limit: Duration,
    done: impl Fn(StatusCode, &serde_json::Value) -> bool,
) -> Duration {
    let timing = (limit, Duration::from_millis(10));
    poll(app, "/readyz", timing, || async {}, done).await.1
}

/// Default settings (a 10 s `health_check_interval`): a server that dies while nobody
/// calls is seen within moments, because its connections tell; a probe polled through an
/// outage sees the server back within `reconnect_interval`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_while_idle_is_seen_at_once_with_default_settings() {
    let (mut cache_server, mut sessions_server, manager, app) = required_and_optional().await;
    let reconnect_interval = connhub::ConnectorConfig::default().reconnect_interval;
    // Quiet for a while: nothing calls.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(call(&app, "/readyz").await.0, StatusCode::OK);

    sessions_server.kill();
    let degraded = readyz_until(&app, Duration::from_secs(1), |code, body| {
        assert_eq!(
            code,
            StatusCode::OK,
            "an optional connector never fails readiness"
        );
        body["degraded"] == serde_json::json!(["sessions"])
    })
    .await;
    sessions_server.restart_async().await.unwrap();
    let optional_back = readyz_until(
        &app,
        reconnect_interval + Duration::from_millis(200),
        |_, body| body["degraded"] == serde_json::json!([]),
    )
    .await;

    tokio::time::sleep(Duration::from_millis(300)).await;
    cache_server.kill();
    let not_ready = readyz_until(&app, Duration::from_secs(1), |code, _| {
        code == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    assert_eq!(call(&app, "/livez").await.0, StatusCode::OK);
    // A longer outage: the timer backoff alone would wait longer than reconnect_interval.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(call(&app, "/livez").await.0, StatusCode::OK);
    cache_server.restart_async().await.unwrap();
    let ready = readyz_until(
        &app,
        reconnect_interval + Duration::from_millis(200),
        |code, _| code == StatusCode::OK,
    )
    .await;
    println!(
        "default settings, idle: optional listed as degraded {degraded:?} after its kill, \
         back {optional_back:?} after its restart; required: /readyz 503 {not_ready:?} after \
         its kill, 200 {ready:?} after its restart (reconnect_interval {reconnect_interval:?})"
    );
    manager.close().await.unwrap();
}
