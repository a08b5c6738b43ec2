//! `Manager::reload` under load: connectors added, removed and changed with no failed call
//! on the ones that stay, handles kept from before following the new pool, and a bad
//! reload (invalid, or a connector that cannot connect) changing nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use connhub::redis::AsyncCommands;
use connhub::testkit::{EtcdServer, RedisServer};
use connhub::{Error, EtcdConfig, Manager, ManagerConfig, RedisConfig, State};

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    first_failure: std::sync::Mutex<Option<String>>,
}

impl Tally {
    fn record(&self, r: Result<(), Error>) {
        match r {
            Ok(()) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.first_failure
                    .lock()
                    .unwrap()
                    .get_or_insert_with(|| e.to_string());
            }
        }
    }
}

fn redis(server: &RedisServer, pool_size: u32) -> RedisConfig {
    let mut c = server.config();
    c.pool_size = pool_size;
    c
}

fn config(redis: &[(&str, RedisConfig)], etcd: &[(&str, EtcdConfig)]) -> ManagerConfig {
    ManagerConfig {
        redis: redis
            .iter()
            .map(|(n, c)| (n.to_string(), c.clone()))
            .collect::<BTreeMap<_, _>>(),
        etcd: etcd
            .iter()
            .map(|(n, c)| (n.to_string(), c.clone()))
            .collect(),
        ..ManagerConfig::default()
    }
}

/// How many `INCR`s the server counted on `key`.
async fn hits(server: &RedisServer, key: &str) -> i64 {
    let client = connhub::redis::Client::open(format!("redis://{}", server.addr())).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    c.get::<_, Option<i64>>(key).await.unwrap().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_adds_removes_and_changes_with_no_failed_call() {
    let a = RedisServer::start().unwrap();
    let b = RedisServer::start().unwrap();
    let etcd = EtcdServer::start().unwrap();
    let first = config(
        &[
            ("stay", redis(&a, 4)),
            ("change", redis(&a, 4)),
            ("gone", redis(&a, 4)),
        ],
        &[],
    );
    let manager = Manager::from_config(first).await.unwrap();
    let mut events = manager.subscribe();

    // 16 tasks that retry without sleeping, on 8 connections: half keep the handle they
    // got at the start, half look it up on every call.
    let stop = Arc::new(AtomicBool::new(false));
    let tallies: BTreeMap<&str, Arc<Tally>> =
        [("stay", Arc::default()), ("change", Arc::default())]
            .into_iter()
            .collect();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let name = if i % 2 == 0 { "stay" } else { "change" };
            let kept = (i % 4 < 2).then(|| manager.redis(name).unwrap());
            let (manager, stop, tally) = (manager.clone(), stop.clone(), tallies[name].clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let call = async {
                        let pool = match &kept {
                            Some(p) => p.clone(),
                            None => manager.redis(name)?,
                        };
                        let mut c = pool.get().await?;
                        let _: i64 = c.incr(format!("hits:{name}"), 1).await.map_err(|e| {
                            Error::Backend {
                                origin: connhub::backend::Origin::new(name, connhub::Kind::REDIS),
                                source: Arc::new(e),
                            }
                        })?;
                        Ok(())
                    };
                    tally.record(call.await);
                }
            })
        })
        .collect();
    let kept_change = manager.redis("change").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = tallies["change"].ok.load(Ordering::Relaxed);
    assert!(before > 0, "load runs");

    // Change one, remove one, add a Redis and an etcd connector.
    let second = config(
        &[
            ("stay", redis(&a, 4)),
            ("change", redis(&b, 6)),
            ("new", redis(&b, 4)),
        ],
        &[("registry", EtcdConfig::new([etcd.endpoint()]))],
    );
    let report = manager.reload(second.clone()).await.unwrap();
    assert_eq!(report.added, ["new", "registry"]);
    assert_eq!(report.replaced, ["change"]);
    assert_eq!(report.removed, ["gone"]);
    assert_eq!(report.unchanged, ["stay"]);
    assert_eq!(manager.names(), ["change", "new", "registry", "stay"]);
    assert!(matches!(manager.redis("gone"), Err(Error::NotFound { .. })));
    let status = manager.redis("change").unwrap().status();
    assert!(
        status.endpoint.contains(&b.port().to_string()),
        "{status:?}"
    );
    assert_eq!(status.pool.max_size, 6);
    let kept = kept_change.status();
    assert_eq!(
        (kept.endpoint, kept.pool.max_size, kept.state),
        (status.endpoint.clone(), 6, State::Healthy),
        "a kept handle follows the new pool"
    );
    manager.redis("new").unwrap().get().await.unwrap();
    manager.etcd("registry").unwrap().get().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let on_b = hits(&b, "hits:change").await;
    assert!(
        on_b > 0,
        "calls on the changed connector reach its new server"
    );

    // The last event of the replaced connector is the new pool's, not the old one's close.
    let mut last = None;
    while let Ok(e) = events.try_recv() {
        if e.connector == "change" {
            last = Some(e.to);
        }
    }
    assert_eq!(last, Some(State::Healthy));

    // An invalid config is refused whole, every problem listed, and changes nothing.
    let mut bad = second.clone();
    bad.redis.get_mut("change").unwrap().pool_size = 0;
    bad.redis.get_mut("new").unwrap().addr = "not an address".into();
    let err = manager.reload(bad).await.unwrap_err();
    let Error::InvalidConfig(problems) = &err else {
        panic!("{err:?}")
    };
    assert!(problems.has_key("redis.change.pool_size"), "{err}");
    assert!(problems.has_key("redis.new.addr"), "{err}");

    // A connector that cannot connect refuses the reload; nothing is swapped.
    let mut down = second.clone();
    let port = connhub::testkit::free_port().unwrap();
    down.redis
        .insert("down".into(), RedisConfig::new(format!("127.0.0.1:{port}")));
    down.redis.insert("change".into(), redis(&a, 4));
    let err = manager.reload(down).await.unwrap_err();
    assert_eq!(err.connector(), Some("down"), "{err:?}");
    assert_eq!(manager.names(), ["change", "new", "registry", "stay"]);
    let status = manager.redis("change").unwrap().status();
    assert!(
        status.endpoint.contains(&b.port().to_string()),
        "{status:?}"
    );

    // The same config again changes nothing.
    assert!(manager.reload(second).await.unwrap().is_empty());

    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    for (name, t) in &tallies {
        let (ok, failed) = (
            t.ok.load(Ordering::Relaxed),
            t.failed.load(Ordering::Relaxed),
        );
        println!(
            "{name}: {ok} calls through four reloads (one applied, two refused, one a no-op), {failed} failed"
        );
        assert_eq!(
            failed,
            0,
            "{name}: {failed} failed of {}, first: {:?}",
            ok + failed,
            t.first_failure.lock().unwrap()
        );
    }
    assert!(tallies["change"].ok.load(Ordering::Relaxed) > before);
    assert!(
        hits(&b, "hits:change").await > on_b,
        "still served by the new pool"
    );
    manager.close().await.unwrap();
}

#[tokio::test]
async fn reload_leaves_connectors_registered_in_code_alone() {
    let server = RedisServer::start().unwrap();
    let manager = Manager::from_config(config(&[("cache", server.config())], &[]))
        .await
        .unwrap();
    manager.add_redis("code", server.config()).await.unwrap();

    // Not in the config: left alone.
    let report = manager
        .reload(config(&[("cache", server.config())], &[]))
        .await
        .unwrap();
    assert!(report.is_empty(), "{report:?}");
    assert_eq!(manager.names(), ["cache", "code"]);

    // Named by the config: refused, naming the key.
    let err = manager
        .reload(config(
            &[("cache", server.config()), ("code", server.config())],
            &[],
        ))
        .await
        .unwrap_err();
    let Error::InvalidConfig(problems) = &err else {
        panic!("{err:?}")
    };
    assert!(problems.has_key("redis.code"), "{err}");

    // Removing every declared connector leaves the one registered in code.
    let report = manager.reload(ManagerConfig::default()).await.unwrap();
    assert_eq!(report.removed, ["cache"]);
    assert_eq!(manager.names(), ["code"]);
    manager.close().await.unwrap();
    assert!(matches!(
        manager.reload(ManagerConfig::default()).await,
        Err(Error::Closed { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_move_to_the_replacing_pool_on_a_reload() {
    use connhub::backend::etcd::{LeaseEvent, WatchItem, WatchSpec};
    use connhub::backend::redis::{SubscriptionItem, Topics};

    let redis_server = RedisServer::start().unwrap();
    let etcd_server = EtcdServer::start().unwrap();
    let etcd = |pool_size| {
        let mut c = etcd_server.config();
        c.pool_size = pool_size;
        c
    };
    let first = config(
        &[("cache", redis(&redis_server, 4))],
        &[("registry", etcd(2))],
    );
    let manager = Manager::from_config(first).await.unwrap();
    let registry = manager.etcd("registry").unwrap();
    let cache = manager.redis("cache").unwrap();
    let me = registry
        .register("services/api/a", "10.0.0.1:80", Duration::from_secs(3))
        .await
        .unwrap();
    let mut lease_events = me.lease().events();
    let mut watch = registry
        .watch("config/", WatchSpec::new().prefix())
        .await
        .unwrap();
    let mut sub = cache
        .subscribe(Topics::new().channel("news"))
        .await
        .unwrap();

    let mut client = registry.client().await.unwrap();
    for i in 0..5 {
        client.put(format!("config/{i}"), "v", None).await.unwrap();
    }
    // Both connectors replaced (another pool size).
    let report = manager
        .reload(config(
            &[("cache", redis(&redis_server, 6))],
            &[("registry", etcd(3))],
        ))
        .await
        .unwrap();
    assert_eq!(report.replaced, ["cache", "registry"]);
    let mut client = manager.etcd("registry").unwrap().client().await.unwrap();
    for i in 5..10 {
        client.put(format!("config/{i}"), "v", None).await.unwrap();
    }

    // The watch saw every change once, in order, across the reload.
    let mut seen = Vec::new();
    while seen.len() < 10 {
        let item = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("the watch went quiet after the reload")
            .expect("the watch ended at the reload");
        match item {
            WatchItem::Event(e) => seen.push(e.kv().unwrap().key_str().unwrap().to_owned()),
            other => panic!("{other:?}"),
        }
    }
    let want: Vec<String> = (0..10).map(|i| format!("config/{i}")).collect();
    assert_eq!(seen, want);

    // The subscription says it resubscribed, then delivers what is published after.
    let mut publisher = manager.redis("cache").unwrap().multiplexed().await.unwrap();
    let gap = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("no gap reported")
        .expect("the subscription ended at the reload");
    assert!(matches!(gap, SubscriptionItem::Gap { .. }), "{gap:?}");
    let _: i64 = connhub::redis::cmd("PUBLISH")
        .arg("news")
        .arg("after")
        .query_async(&mut publisher)
        .await
        .unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .unwrap()
        .unwrap();
    let SubscriptionItem::Message(msg) = msg else {
        panic!("{msg:?}")
    };
    assert_eq!(msg.get_payload::<String>().unwrap(), "after");

    // The lease is kept through the new pool, and every stream is counted there.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    while let Ok(e) = lease_events.try_recv() {
        assert!(matches!(e, LeaseEvent::Kept { .. }), "{e:?}");
    }
    let resp = client.get("services/api/a", None).await.unwrap();
    assert_eq!(resp.kvs().len(), 1, "the registration stays");
    let streams = manager.etcd("registry").unwrap().status().streams;
    assert_eq!((streams.leases, streams.watches), (1, 1), "{streams:?}");
    assert_eq!(
        manager
            .redis("cache")
            .unwrap()
            .status()
            .streams
            .subscriptions,
        1
    );

    // Dropping the registration still deletes its key at once.
    drop(me);
    let mut gone = false;
    for _ in 0..100 {
        if client
            .get("services/api/a", None)
            .await
            .unwrap()
            .kvs()
            .is_empty()
        {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "the registration outlived its handle");
    drop((watch, sub));
    manager.close().await.unwrap();
}

/// Reloads that overlap take effect one after the other, each whole: the manager ends with
/// exactly one of the configs, every connector in it working, and every pool a losing
/// reload built closed (none is left connected behind the registry's back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_reloads_take_effect_whole_one_after_the_other() {
    let server = RedisServer::start().unwrap();
    let manager = Manager::new();
    let names = ["a", "b", "c", "d", "e", "f"];
    let reloads = names.iter().enumerate().map(|(i, name)| {
        let manager = manager.clone();
        let mut c = redis(&server, 2);
        c.db = u32::try_from(i).unwrap();
        let cfg = config(&[(name, c.clone()), ("shared", c)], &[]);
        tokio::spawn(async move { manager.reload(cfg).await })
    });
    for r in futures::future::join_all(reloads).await {
        r.unwrap().expect("every reload succeeds");
    }
    let mut left = manager.names();
    left.sort();
    assert_eq!(left.len(), 2, "one config's two connectors: {left:?}");
    assert!(left.contains(&"shared".to_string()), "{left:?}");
    let winner = left.iter().find(|n| *n != "shared").unwrap().clone();
    let i = names.iter().position(|n| **n == winner).unwrap();
    // `shared` runs with the same config as the winner: its db.
    let shared = manager.redis("shared").unwrap();
    let mut conn = shared.get().await.unwrap();
    let db: String = connhub::redis::cmd("CLIENT")
        .arg("INFO")
        .query_async(&mut *conn)
        .await
        .unwrap();
    assert!(db.contains(&format!(" db={i} ")), "{winner} won, but: {db}");
    drop(conn);
    // Only the two live pools hold connections (up to 2 each) beside this test's client.
    let clients = clients(&server).await;
    assert!(
        clients <= 5,
        "{clients} clients: a discarded pool is still connected"
    );
    manager.close().await.unwrap();
}

/// Client connections the server has now.
async fn clients(server: &RedisServer) -> usize {
    let client = connhub::redis::Client::open(format!("redis://{}", server.addr())).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let list: String = connhub::redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut c)
        .await
        .unwrap();
    list.lines().count()
}
