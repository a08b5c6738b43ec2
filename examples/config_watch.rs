//! Live configuration from etcd: load every key under a prefix, then apply each change as
//! it comes, in order, across member losses and reconnects. If the history the watch
//! needed was compacted meanwhile, connhub says so, and the service loads everything again.
//!
//! `cargo run --example config_watch --features testkit` starts its own etcd (testkit).

use std::collections::BTreeMap;
use std::time::Duration;

use connhub::backend::etcd::{WatchItem, WatchSpec};
use connhub::etcd_client::{EventType, GetOptions};
use connhub::testkit::EtcdServer;
use connhub::{EtcdPool, Manager, ManagerConfig};

/// Every key under `prefix`, and the revision to watch from after it.
async fn load(
    pool: &EtcdPool,
    prefix: &str,
) -> Result<(BTreeMap<String, String>, i64), Box<dyn std::error::Error>> {
    let mut client = pool.client().await?;
    let resp = client
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await?;
    let map = resp
        .kvs()
        .iter()
        .map(|kv| {
            (
                kv.key_str().unwrap_or_default().to_owned(),
                kv.value_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    Ok((map, resp.header().map_or(0, |h| h.revision()) + 1))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut etcd = EtcdServer::start()?;
    let config = ManagerConfig::from_yaml_str(&format!(
        "etcd:\n  config:\n    endpoints: [{}]\n",
        etcd.endpoint()
    ))?;
    let manager = Manager::from_config(config).await?;
    let pool = manager.etcd("config")?;
    let mut admin = pool.client().await?;
    admin.put("app/log_level", "info", None).await?;
    admin.put("app/rate_limit", "100", None).await?;

    let (mut settings, from) = load(&pool, "app/").await?;
    println!("loaded: {settings:?}");
    let mut watch = pool
        .watch("app/", WatchSpec::new().prefix().from_revision(from))
        .await?;

    // An operator changes settings; etcd restarts in the middle.
    let writer = tokio::spawn({
        let pool = pool.clone();
        async move {
            for (i, level) in ["debug", "warn", "error"].into_iter().enumerate() {
                loop {
                    if let Ok(mut c) = pool.client().await
                        && c.put("app/log_level", level, None).await.is_ok()
                    {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                if i == 0 {
                    tokio::time::sleep(Duration::from_millis(800)).await;
                }
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    etcd.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    etcd.restart_async().await?;
    writer.await?;

    while settings.get("app/log_level").map(String::as_str) != Some("error") {
        match tokio::time::timeout(Duration::from_secs(10), watch.next()).await? {
            Some(WatchItem::Event(ev)) => {
                let Some(kv) = ev.kv() else { continue };
                let key = kv.key_str()?.to_owned();
                if ev.event_type() == EventType::Delete {
                    settings.remove(&key);
                } else {
                    println!("applied: {key} = {}", kv.value_str()?);
                    settings.insert(key, kv.value_str()?.to_owned());
                }
            }
            Some(WatchItem::Compacted { .. }) => {
                settings = load(&pool, "app/").await?.0;
                println!("history compacted: reloaded {settings:?}");
            }
            Some(_) => {}
            None => break,
        }
    }
    println!("settings now: {settings:?}");
    manager.close().await?;
    Ok(())
}
