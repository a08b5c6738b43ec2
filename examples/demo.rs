//! `make demo`: connhub end to end.
//!
//! With no argument it starts its own redis-server and etcd (testkit) on free ports and
//! points `examples/connhub.yaml` at them; with a path it loads that config and uses your
//! servers. It prints a health table, does real work on both backends, shows a Redis
//! outage (fail-fast, then recovery) when it runs its own servers, and closes.

use std::time::{Duration, Instant};

use connhub::redis::AsyncCommands;
use connhub::testkit::{EtcdServer, RedisServer};
use connhub::{Error, Manager, ManagerConfig, Status};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn table(status: &[Status]) {
    println!(
        "  {:<10} {:<6} {:<13} {:<22} {:>5} {:>5} {:>6} {:>7} {:>9}",
        "NAME", "KIND", "STATE", "ENDPOINT", "CONNS", "IDLE", "IN USE", "GETS", "LAST CHECK"
    );
    for s in status {
        let latency = s
            .last_check_latency
            .map(|d| format!("{:.2?}", d))
            .unwrap_or_else(|| "-".into());
        println!(
            "  {:<10} {:<6} {:<13} {:<22} {:>5} {:>5} {:>6} {:>7} {:>9}",
            s.name,
            s.kind.to_string(),
            s.state.to_string(),
            s.endpoint,
            s.pool.connections,
            s.pool.idle,
            s.pool.in_use,
            s.pool.gets,
            latency
        );
        if let Some(e) = &s.last_error {
            println!("  {:<10} last error: {e}", "");
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let path = std::env::args().nth(1).filter(|a| !a.is_empty());
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/connhub.yaml");
    let (mut servers, config) = match &path {
        Some(p) => {
            println!("connhub demo: loading {p}");
            (None, ManagerConfig::from_file(p)?)
        }
        None => {
            println!("connhub demo: starting redis-server and etcd on free ports (testkit)");
            let redis = RedisServer::start()?;
            let etcd = EtcdServer::start()?;
            let mut config = ManagerConfig::from_file(example)?;
            for c in config.redis.values_mut() {
                c.addr = redis.addr();
                c.connector.health_check_interval = Duration::from_secs(1);
                c.connector.reconnect_interval = Duration::from_millis(250);
                c.connector.reconnect_backoff_max = Duration::from_millis(500);
            }
            for c in config.etcd.values_mut() {
                c.endpoints = vec![etcd.endpoint()];
            }
            (Some((redis, etcd)), config)
        }
    };

    let manager = Manager::from_config(config).await?;
    let mut events = manager.subscribe();
    println!("\nregistered: {}", manager.names().join(", "));
    let report = manager.health_check().await;
    println!(
        "health check: {}",
        if report.is_healthy() {
            "all healthy"
        } else {
            "some failed"
        }
    );
    table(&manager.status());

    for name in manager.names() {
        if let Ok(pool) = manager.redis(&name) {
            let mut conn = pool.get().await?;
            let _: () = conn.set("connhub:demo", "hello from connhub").await?;
            let v: String = conn.get("connhub:demo").await?;
            let n: i64 = conn.incr("connhub:demo:counter", 1).await?;
            println!("\nredis {name}: GET connhub:demo = {v:?}, INCR counter = {n}");
        }
        if let Ok(pool) = manager.etcd(&name) {
            let mut client = pool.get().await?;
            client
                .put("connhub/demo", "hello from connhub", None)
                .await?;
            let resp = client.get("connhub/demo", None).await?;
            let v = resp
                .kvs()
                .first()
                .map(|kv| kv.value_str().unwrap_or("?").to_owned());
            println!("etcd {name}: get connhub/demo = {v:?}");
        }
    }

    if let Some((redis, _)) = servers.as_mut() {
        let cache = manager.redis("cache")?;
        println!("\nkilling redis-server (SIGKILL) ...");
        redis.kill();
        let _ = manager.health_check().await;
        let start = Instant::now();
        match cache.get().await {
            Err(e @ Error::Unavailable { .. }) => {
                println!("get() failed fast in {:.2?}: {e}", start.elapsed())
            }
            Err(e) => println!("get() failed in {:.2?}: {e}", start.elapsed()),
            Ok(_) => println!("get() still succeeded"),
        }
        table(&manager.status());
        println!("\nrestarting redis-server on the same port ...");
        redis.restart()?;
        let start = Instant::now();
        while !cache.is_connected() && start.elapsed() < Duration::from_secs(15) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!(
            "connector healthy again {:.2?} after the restart",
            start.elapsed()
        );
        let mut conn = cache.get().await?;
        let n: i64 = conn.incr("connhub:demo:counter", 1).await?;
        println!("INCR after recovery = {n} (the server restarted empty)");
        drop(conn);
    }

    println!("\nstate changes seen by subscribe():");
    while let Ok(e) = events.try_recv() {
        let why = e.error.map(|e| format!(" ({e})")).unwrap_or_default();
        println!("  {} {}: {} -> {}{why}", e.kind, e.connector, e.from, e.to);
    }
    println!();
    table(&manager.status());
    manager.close().await?;
    println!(
        "\nclosed; a checkout now gives: {}",
        match manager.redis("cache") {
            Err(e) => e.to_string(),
            Ok(_) => "a pool (unexpected)".into(),
        }
    );
    Ok(())
}
