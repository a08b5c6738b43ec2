//! Memory of a manager holding four connectors with 16 idle connections each (two Redis,
//! two etcd), against servers the testkit starts. Prints resident set size before, after,
//! and at peak (Linux `/proc/self/status`).
//!
//! `cargo run --release --example footprint --features testkit`

use std::time::Duration;

use connhub::testkit::{EtcdServer, RedisServer};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let redis = RedisServer::start()?;
    let etcd = EtcdServer::start()?;
    let before = kib("VmRSS:");

    let manager = connhub::Manager::new();
    for name in ["cache-a", "cache-b"] {
        let mut c = redis.config();
        c.pool_size = 16;
        c.min_idle_conns = 16;
        manager.add_redis(name, c).await?;
    }
    for name in ["registry-a", "registry-b"] {
        let mut c = etcd.config();
        c.pool_size = 16;
        let pool = manager.add_etcd(name, c).await?;
        // Open all 16 at once, then let them go back idle.
        let mut held = Vec::new();
        for _ in 0..16 {
            held.push(pool.get().await?);
        }
    }
    let ready = |m: &connhub::Manager| m.status().iter().all(|s| s.pool.idle == 16);
    for _ in 0..100 {
        if ready(&manager) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = kib("VmRSS:");
    println!("connectors: {}", manager.names().join(", "));
    for s in manager.status() {
        println!(
            "  {:<11} {:<5} idle {:>2} of {:>2}",
            s.name,
            s.kind.to_string(),
            s.pool.idle,
            s.pool.max_size
        );
    }
    println!(
        "RSS before {} KiB, after {} KiB (+{} KiB for 64 idle connections), peak {} KiB",
        before,
        after,
        after.saturating_sub(before),
        kib("VmHWM:")
    );
    manager.close().await?;
    Ok(())
}
