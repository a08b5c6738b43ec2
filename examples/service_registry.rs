//! The service-registry pattern on etcd: instances register under a prefix with a lease
//! connhub keeps alive; a client watches the prefix and keeps an up-to-date list of
//! instances. Dropping a registration deregisters at once.
//!
//! `cargo run --example service_registry --features testkit` starts its own etcd (testkit).

use std::collections::BTreeMap;
use std::time::Duration;

use connhub::backend::etcd::{WatchItem, WatchSpec};
use connhub::etcd_client::{EventType, GetOptions};
use connhub::testkit::EtcdServer;
use connhub::{Manager, ManagerConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let etcd = EtcdServer::start()?;
    let config = ManagerConfig::from_yaml_str(&format!(
        "etcd:\n  registry:\n    endpoints: [{}]\n",
        etcd.endpoint()
    ))?;
    let manager = Manager::from_config(config).await?;
    let registry = manager.etcd("registry")?;

    // A client: read the instances now, then watch from the next revision, so no change
    // between the read and the watch is missed.
    let mut client = registry.client().await?;
    let now = client
        .get("services/api/", Some(GetOptions::new().with_prefix()))
        .await?;
    let mut instances: BTreeMap<String, String> = BTreeMap::new();
    let from = now.header().map_or(0, |h| h.revision()) + 1;
    let mut watch = registry
        .watch(
            "services/api/",
            WatchSpec::new().prefix().from_revision(from),
        )
        .await?;

    // Two instances register, each with a 5 s lease kept alive by connhub.
    let a = registry
        .register("services/api/a", "10.0.0.1:8080", Duration::from_secs(5))
        .await?;
    let b = registry
        .register("services/api/b", "10.0.0.2:8080", Duration::from_secs(5))
        .await?;
    println!(
        "registered a (lease {:x}) and b (lease {:x})",
        a.lease().id(),
        b.lease().id()
    );
    println!("status: {:?}", registry.status().streams);

    // b shuts down: dropping its registration revokes its lease, so it leaves at once.
    drop(b);

    let mut b_left = false;
    while !b_left {
        let Some(item) = tokio::time::timeout(Duration::from_secs(10), watch.next()).await? else {
            break;
        };
        match item {
            WatchItem::Event(ev) => {
                let Some(kv) = ev.kv() else { continue };
                let key = kv.key_str()?.to_owned();
                match ev.event_type() {
                    EventType::Put => {
                        println!("joined: {key} at {}", kv.value_str()?);
                        instances.insert(key, kv.value_str()?.to_owned());
                    }
                    EventType::Delete => {
                        println!("left:   {key}");
                        b_left |= key == "services/api/b";
                        instances.remove(&key);
                    }
                }
            }
            WatchItem::Compacted { revision } => {
                println!("history compacted at {revision}: read the list again");
            }
            _ => {}
        }
    }
    println!("instances now: {instances:?}");
    assert_eq!(instances.keys().collect::<Vec<_>>(), ["services/api/a"]);
    drop(a);
    manager.close().await?;
    Ok(())
}
