//! Redis beyond one server: a connector on Sentinel and one on a Redis Cluster, declared in
//! one config and used through the same `manager.redis(name)?.get()` as a single node.
//! Then each loses a master, and callers carry on.
//!
//! `cargo run --example topologies --features testkit` starts its own sentinels and
//! cluster (testkit); in your service the addresses come from your config file.

use std::time::{Duration, Instant};

use connhub::redis::AsyncCommands;
use connhub::testkit::{RedisCluster, RedisSentinel};
use connhub::{Manager, ManagerConfig, RedisPool};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut sentinels = RedisSentinel::start()?;
    let mut cluster = RedisCluster::start()?;
    let list = |addrs: Vec<String>| addrs.join(", ");
    let config = ManagerConfig::from_yaml_str(&format!(
        r#"
redis:
  cache:                      # the master a set of sentinels names
    sentinel:
      master_name: {}
      addrs: [{}]
  sessions:                   # a Redis Cluster
    cluster:
      nodes: [{}]
"#,
        sentinels.master_name(),
        list(sentinels.sentinel_addrs()),
        list(cluster.addrs()),
    ))?;
    let manager = Manager::from_config(config).await?;
    let cache = manager.redis("cache")?;
    let sessions = manager.redis("sessions")?;
    println!("cache:    {}", cache.status().endpoint);
    println!("sessions: {}", sessions.status().endpoint);

    // The same API for both: a checkout derefs to a redis connection.
    let mut conn = sessions.get().await?;
    for user in 0..100 {
        let _: () = conn.set(format!("session:{user}"), user).await?;
    }
    drop(conn);
    println!("sessions: 100 keys written across the cluster's slots");

    // Sentinel: the master dies; the sentinels promote its replica, and the connector
    // follows it with no restart.
    let started = Instant::now();
    sentinels.kill_master()?;
    let back = until_a_write_succeeds(&cache).await;
    println!(
        "cache:    master killed; writes succeed again after {:?} (sentinels' failover included), now {}",
        back,
        cache.status().endpoint
    );
    assert!(started.elapsed() < Duration::from_secs(30));

    // Cluster: a master dies; its replica takes its slots over.
    let victim = cluster.masters()?[0];
    cluster.kill(victim);
    let back = until_a_write_succeeds(&sessions).await;
    let mut conn = sessions.get().await?;
    let mut found = 0;
    for user in 0..100 {
        let v: Option<u32> = conn.get(format!("session:{user}")).await?;
        found += usize::from(v == Some(user));
    }
    println!("sessions: a master killed; served again after {back:?}; {found}/100 keys read back");

    manager.close().await?;
    Ok(())
}

/// Writes until one write succeeds, retrying at once (calls fail fast while no master
/// answers); returns how long that took.
async fn until_a_write_succeeds(pool: &RedisPool) -> Duration {
    let started = Instant::now();
    loop {
        if let Ok(mut c) = pool.get().await
            && c.set::<_, _, ()>("probe", 1).await.is_ok()
        {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never recovered"
        );
        tokio::task::yield_now().await;
    }
}
