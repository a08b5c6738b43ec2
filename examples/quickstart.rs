//! The shortest useful connhub program: declare Redis and etcd in a config, get typed
//! pools by name, use them, close.
//!
//! `cargo run --example quickstart --features testkit` starts its own redis-server and etcd
//! (testkit); in your service the addresses come from your config file.

use connhub::redis::AsyncCommands;
use connhub::testkit::{EtcdServer, RedisServer};
use connhub::{Manager, ManagerConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let redis = RedisServer::start()?;
    let etcd = EtcdServer::start()?;

    let config = ManagerConfig::from_yaml_str(&format!(
        r#"
defaults:
  connect_timeout: 2s
redis:
  cache:
    addr: {}
    pool_size: 8
etcd:
  registry:
    endpoints: [{}]
"#,
        redis.addr(),
        etcd.endpoint()
    ))?;
    let manager = Manager::from_config(config).await?;

    // A checkout: exclusive use of one pooled connection, no round trip to get it.
    let mut conn = manager.redis("cache")?.get().await?;
    let _: () = conn.set("greeting", "hello").await?;
    let greeting: String = conn.get("greeting").await?;
    drop(conn);
    println!("redis: greeting = {greeting}");

    // Stateless commands can share one pipelined connection instead.
    let visits: i64 = manager
        .redis("cache")?
        .multiplexed()
        .await?
        .incr("visits", 1)
        .await?;
    println!("redis: visits = {visits}");

    let mut etcd_client = manager.etcd("registry")?.get().await?;
    etcd_client
        .put("service/api", "10.0.0.7:8080", None)
        .await?;
    let resp = etcd_client.get("service/api", None).await?;
    drop(etcd_client);
    let addr = resp.kvs().first().map(|kv| kv.value_str()).transpose()?;
    println!("etcd: service/api = {addr:?}");

    for s in manager.status() {
        println!(
            "{} ({}) {} at {}: {} connections, {} idle",
            s.name, s.kind, s.state, s.endpoint, s.pool.connections, s.pool.idle
        );
    }
    manager.close().await?;
    assert_eq!(greeting, "hello");
    assert_eq!(addr, Some("10.0.0.7:8080"));
    println!("quickstart: ok");
    Ok(())
}
