//! An axum service with a Redis cache and etcd configuration behind HTTP routes, health
//! and readiness from connhub, and Prometheus metrics. This is `make demo`.
//!
//! With no argument it starts its own redis-server and etcd (testkit), serves on a free
//! port, calls its own routes, kills Redis and shows the state change and the recovery in
//! the event log and in the probes (`/livez` stays 200, `/readyz` is 503 until Redis is
//! back), reloads a changed config on SIGHUP, then exits. With a config file it uses
//! your servers and calls the routes once; add `--serve` to keep serving until Ctrl-C,
//! reloading the file on every SIGHUP (`kill -HUP <pid>`).
//!
//! ```text
//! cargo run --example axum_service --features testkit,axum,metrics [-- connhub.yaml [--serve]]
//! ```
//!
//! Routes: `GET|PUT /cache/{key}` (Redis), `GET|PUT /config/{key}` (etcd), `GET /livez`,
//! `GET /readyz`, `GET /healthz`, `GET /metrics`.

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{FromRef, Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use connhub::redis::AsyncCommands;
use connhub::testkit::{EtcdServer, RedisServer};
use connhub::{EtcdPool, Manager, ManagerConfig, RedisPool};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone, FromRef)]
struct App {
    manager: Manager,
    cache: RedisPool,
    config: EtcdPool,
    metrics: PrometheusHandle,
}

/// connhub errors as HTTP: a backend that is down is 503, anything else 500.
fn failure(e: impl std::fmt::Display, down: bool) -> (StatusCode, String) {
    let code = if down {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    (code, format!("{e}\n"))
}

fn from_connhub(e: connhub::Error) -> (StatusCode, String) {
    let down = matches!(
        e,
        connhub::Error::Unavailable { .. }
            | connhub::Error::Timeout { .. }
            | connhub::Error::Closed { .. }
    );
    failure(e, down)
}

async fn cache_get(State(cache): State<RedisPool>, Path(key): Path<String>) -> impl IntoResponse {
    let mut conn = cache.multiplexed().await.map_err(from_connhub)?;
    let value: Option<String> = conn.get(&key).await.map_err(|e| failure(e, true))?;
    value.ok_or((StatusCode::NOT_FOUND, format!("no {key}\n")))
}

async fn cache_put(
    State(cache): State<RedisPool>,
    Path(key): Path<String>,
    body: String,
) -> Result<StatusCode, (StatusCode, String)> {
    let mut conn = cache.multiplexed().await.map_err(from_connhub)?;
    let _: () = conn.set(&key, body).await.map_err(|e| failure(e, true))?;
    Ok(StatusCode::NO_CONTENT)
}

async fn config_get(State(config): State<EtcdPool>, Path(key): Path<String>) -> impl IntoResponse {
    let mut client = config.client().await.map_err(from_connhub)?;
    let resp = client
        .get(format!("config/{key}"), None)
        .await
        .map_err(|e| failure(e, true))?;
    match resp.kvs().first() {
        Some(kv) => Ok(String::from_utf8_lossy(kv.value()).into_owned()),
        None => Err((StatusCode::NOT_FOUND, format!("no {key}\n"))),
    }
}

async fn config_put(
    State(config): State<EtcdPool>,
    Path(key): Path<String>,
    body: String,
) -> Result<StatusCode, (StatusCode, String)> {
    let mut client = config.client().await.map_err(from_connhub)?;
    client
        .put(format!("config/{key}"), body, None)
        .await
        .map_err(|e| failure(e, true))?;
    Ok(StatusCode::NO_CONTENT)
}

async fn metrics(State(app): State<App>) -> String {
    app.manager.record_metrics();
    app.metrics.render()
}

fn router(app: App) -> Router {
    Router::new()
        .route("/cache/{key}", get(cache_get).put(cache_put))
        .route("/config/{key}", get(config_get).put(config_put))
        .route("/metrics", get(metrics))
        .merge(connhub::axum::router())
        .with_state(app)
}

/// A minimal HTTP/1.1 client for the demo: method, path and body in, status and body out.
async fn call(port: u16, method: &str, path: &str, body: &str) -> Result<(u16, String), BoxError> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: demo\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).await?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.trim().to_owned()))
}

async fn show(port: u16, method: &str, path: &str, body: &str) -> Result<(u16, String), BoxError> {
    let start = Instant::now();
    let (code, text) = call(port, method, path, body).await?;
    let shown: String = text.chars().take(160).collect();
    println!(
        "  {method} {path} -> {code} in {:.1?}  {shown}",
        start.elapsed()
    );
    Ok((code, text))
}

/// Reloads the manager with what `load` returns on every SIGHUP; an invalid or
/// unreachable config is logged and the running one kept.
async fn reload_on_sighup(
    manager: Manager,
    done: tokio::sync::mpsc::UnboundedSender<()>,
    load: impl Fn() -> connhub::Result<ManagerConfig>,
) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup())?;
    while hangups.recv().await.is_some() {
        match load() {
            Ok(config) => match manager.reload(config).await {
                Ok(r) => println!(
                    "  reloaded: added {:?}, replaced {:?}, removed {:?}",
                    r.added, r.replaced, r.removed
                ),
                Err(e) => println!("  reload refused, running config kept: {e}"),
            },
            Err(e) => println!("  reload refused, running config kept: {e}"),
        }
        let _ = done.send(());
    }
    Ok(())
}

/// Runs the demo; a failure (a config that is refused, a server that cannot be reached)
/// is printed as the error says it, one problem a line, and the exit code is 1.
fn main() -> std::process::ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    match runtime
        .map_err(BoxError::from)
        .and_then(|rt| rt.block_on(run()))
    {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), BoxError> {
    let prometheus = PrometheusBuilder::new().install_recorder()?;
    let path = std::env::args().nth(1).filter(|a| !a.is_empty());
    let serve = std::env::args().any(|a| a == "--serve");
    let (mut servers, config) = match &path {
        Some(p) => (None, ManagerConfig::from_file(p)?),
        None => {
            println!("starting redis-server and etcd on free ports (testkit)");
            let redis = RedisServer::start()?;
            let etcd = EtcdServer::start()?;
            let mut config = ManagerConfig::from_file(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/examples/connhub.yaml"
            ))?;
            for c in config.redis.values_mut() {
                c.addr = redis.addr();
                c.connector.health_check_interval = Duration::from_millis(500);
                c.connector.reconnect_interval = Duration::from_millis(250);
                c.connector.reconnect_backoff_max = Duration::from_millis(500);
            }
            for c in config.etcd.values_mut() {
                c.endpoints = vec![etcd.endpoint()];
            }
            (Some((redis, etcd)), config)
        }
    };
    let cache_name = config
        .redis
        .keys()
        .next()
        .cloned()
        .ok_or("the config has no redis connector")?;
    let etcd_name = config
        .etcd
        .keys()
        .next()
        .cloned()
        .ok_or("the config has no etcd connector")?;

    let manager = Manager::from_config(config.clone()).await?;
    // What SIGHUP loads: the file again, or (in the demo) the running config with a
    // bigger cache pool.
    let reload_from = path.clone();
    let demo_config = config;
    let (reloads, mut reloaded) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(reload_on_sighup(
        manager.clone(),
        reloads,
        move || match &reload_from {
            Some(p) => ManagerConfig::from_file(p),
            None => {
                let mut next = demo_config.clone();
                for c in next.redis.values_mut() {
                    c.pool_size *= 2;
                }
                Ok(next)
            }
        },
    ));
    let mut events = manager.subscribe();
    let event_log = tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            let why = e.error.map(|e| format!(" ({e})")).unwrap_or_default();
            println!(
                "  event: {} {}: {} -> {}{why}",
                e.kind, e.connector, e.from, e.to
            );
        }
    });
    let app = App {
        cache: manager.redis(&cache_name)?,
        config: manager.etcd(&etcd_name)?,
        manager: manager.clone(),
        metrics: prometheus,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, router(app))
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    println!("serving on http://127.0.0.1:{port}\n");

    show(port, "PUT", "/cache/greeting", "hello from connhub").await?;
    show(port, "GET", "/cache/greeting", "").await?;
    show(port, "PUT", "/config/feature-x", "on").await?;
    show(port, "GET", "/config/feature-x", "").await?;
    show(port, "GET", "/readyz", "").await?;
    show(port, "GET", "/healthz", "").await?;

    if let Some((redis, _)) = servers.as_mut() {
        println!("\nkilling redis-server (SIGKILL)");
        redis.kill();
        let cache = manager.redis(&cache_name)?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while cache.is_connected() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        show(port, "GET", "/cache/greeting", "").await?;
        // Alive (do not restart the pod), not ready (send it no traffic), and why.
        show(port, "GET", "/livez", "").await?;
        show(port, "GET", "/readyz", "").await?;
        show(port, "GET", "/healthz", "").await?;
        show(port, "GET", "/config/feature-x", "").await?;

        println!("\nrestarting redis-server on the same port");
        redis.restart_async().await?;
        let start = Instant::now();
        while !cache.is_connected() && start.elapsed() < Duration::from_secs(15) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        println!("  healthy again {:.0?} after the restart", start.elapsed());
        show(port, "PUT", "/cache/greeting", "hello again").await?;
        show(port, "GET", "/cache/greeting", "").await?;
        show(port, "GET", "/readyz", "").await?;
        show(port, "GET", "/healthz", "").await?;

        println!("\nsending SIGHUP: reload with the cache pool doubled");
        std::process::Command::new("kill")
            .args(["-HUP", &std::process::id().to_string()])
            .status()?;
        reloaded.recv().await;
        println!(
            "  cache pool_size now {}",
            manager.redis(&cache_name)?.status().pool.max_size
        );
        show(port, "GET", "/cache/greeting", "").await?;
        show(port, "GET", "/readyz", "").await?;
    } else if serve {
        println!(
            "\nserving until Ctrl-C; `kill -HUP {}` reloads the config file",
            std::process::id()
        );
        tokio::signal::ctrl_c().await?;
    }

    let (_, metrics) = call(port, "GET", "/metrics", "").await?;
    println!("\n/metrics (connhub_up and connhub_state):");
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("connhub_up") || l.starts_with("connhub_state"))
    {
        println!("  {line}");
    }

    let _ = stop.send(());
    server.await??;
    manager.close().await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    event_log.abort();
    println!("\nclosed cleanly");
    Ok(())
}
