//! etcd leases, registrations and watches through member losses, reconnects, outages
//! longer than a lease's TTL and compactions, against real etcd (testkit), default
//! settings. Bounds are generous; the figures are printed for the record.

use std::time::{Duration, Instant};

use connhub::backend::etcd::{LeaseEvent, WatchItem, WatchSpec};
use connhub::testkit::{EtcdCluster, EtcdServer};
use connhub::{EtcdPool, Manager};

/// Three-member clusters one at a time: two at once measure the machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The key's value now, read through the pool; `None` when absent, `Err` when the read
/// failed.
async fn read(pool: &EtcdPool, key: &str) -> Result<Option<String>, String> {
    let mut c = pool.get().await.map_err(|e| e.to_string())?;
    let resp = c.get(key, None).await.map_err(|e| e.to_string())?;
    Ok(resp
        .kvs()
        .first()
        .map(|kv| kv.value_str().unwrap_or_default().to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_stays_while_a_member_is_lost_and_dropping_it_deregisters() {
    let _serial = SERIAL.lock().await;
    let mut cluster = EtcdCluster::start(3).unwrap();
    let manager = Manager::new();
    let pool = manager
        .add_etcd("registry", cluster.config())
        .await
        .unwrap();
    let me = pool
        .register("services/api/a", "10.0.0.1:80", Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(pool.status().streams.leases, 1);
    let mut events = me.lease().events();

    let victim = cluster.leader().await.unwrap();
    cluster.member(victim).unwrap().kill();
    let until = Instant::now() + Duration::from_secs(4);
    let (mut present, mut failed) = (0, 0);
    while Instant::now() < until {
        match read(&pool, "services/api/a").await {
            Ok(Some(_)) => present += 1,
            Ok(None) => panic!("the registration vanished while a member was down"),
            Err(_) => failed += 1,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster
        .member(victim)
        .unwrap()
        .restart_async()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        read(&pool, "services/api/a").await,
        Ok(Some("10.0.0.1:80".into()))
    );
    let mut kept = 0;
    while let Ok(ev) = events.try_recv() {
        match ev {
            LeaseEvent::Kept { .. } => kept += 1,
            other => panic!("the lease was not kept: {other:?}"),
        }
    }
    println!(
        "registration, leader lost 4 s: key present in {present} reads ({failed} reads failed); {kept} keep-alives"
    );
    assert!(kept >= 3, "{kept} keep-alives in 7 s of a 2 s lease");

    // Dropping the handle deletes the key at once, not after the TTL.
    let dropped = Instant::now();
    drop(me);
    loop {
        if read(&pool, "services/api/a").await == Ok(None) {
            break;
        }
        assert!(
            dropped.elapsed() < Duration::from_secs(1),
            "still registered after the drop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("deregistered {:?} after the drop", dropped.elapsed());
    manager.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_ttl_loses_the_lease_and_the_key_comes_back() {
    let etcd = EtcdServer::start().unwrap();
    let manager = Manager::new();
    let pool = manager.add_etcd("registry", etcd.config()).await.unwrap();
    let me = pool
        .register("services/api/b", "10.0.0.2:80", Duration::from_secs(2))
        .await
        .unwrap();
    let first = me.lease().id();
    let mut events = me.lease().events();

    // The whole cluster stops answering for longer than the TTL.
    etcd.pause().unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    etcd.resume().unwrap();
    let answering = Instant::now();

    let mut lost = None;
    let regranted = loop {
        match tokio::time::timeout(Duration::from_secs(15), events.recv()).await {
            Ok(Ok(LeaseEvent::Lost { id, reason })) => lost = Some((id, reason)),
            Ok(Ok(LeaseEvent::Regranted { old, new })) => break (old, new),
            Ok(Ok(_)) => {}
            other => panic!("no re-grant: {other:?}"),
        }
    };
    let (lost_id, reason) = lost.expect("Lost before Regranted");
    assert_eq!(lost_id, first);
    assert_eq!(regranted.0, first);
    assert_ne!(regranted.1, first);
    assert_eq!(me.lease().id(), regranted.1);
    loop {
        if read(&pool, "services/api/b").await == Ok(Some("10.0.0.2:80".into())) {
            break;
        }
        assert!(
            answering.elapsed() < Duration::from_secs(5),
            "the key never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let back = answering.elapsed();
    println!("lease lost ({reason}); key back {back:?} after etcd answered again");
    assert!(back < Duration::from_secs(1), "{back:?}");
    manager.close().await.unwrap();
}

/// Puts `1..=n` to `key`, one at a time, through `pool`, retrying each until it is done.
async fn count_to(pool: EtcdPool, key: &'static str, n: u32, pace: Duration) {
    for i in 1..=n {
        loop {
            if let Ok(mut c) = pool.get().await
                && c.put(key, i.to_string(), None).await.is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(pace).await;
    }
}

/// The values the watch delivers, until `n` or a `Compacted` item. Each event must come
/// once, in order: its revision is above the last one's. A value written twice in a row
/// is counted once: [`count_to`] sends a put again when its reply was lost, and the first
/// one may have been applied (two changes, two revisions, one value).
async fn collect(watch: &mut connhub::backend::etcd::Watch, n: u32) -> (Vec<u32>, Option<i64>) {
    let mut seen = Vec::new();
    let mut last_revision = 0;
    while seen.last() != Some(&n) {
        match tokio::time::timeout(Duration::from_secs(30), watch.next()).await {
            Ok(Some(WatchItem::Event(ev))) => {
                let kv = ev.kv();
                let revision = kv.map_or(0, |kv| kv.mod_revision());
                assert!(
                    revision > last_revision,
                    "after {seen:?}: revision {revision} delivered after {last_revision}"
                );
                last_revision = revision;
                let v = kv.and_then(|kv| kv.value_str().ok()).unwrap_or("?");
                let v = v.parse().unwrap_or(0);
                if seen.last() != Some(&v) {
                    seen.push(v);
                }
            }
            Ok(Some(WatchItem::Compacted { revision })) => return (seen, Some(revision)),
            other => panic!("after {seen:?}: {other:?}"),
        }
    }
    (seen, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_sees_every_change_once_in_order_through_a_member_loss() {
    let _serial = SERIAL.lock().await;
    let mut cluster = EtcdCluster::start(3).unwrap();
    let manager = Manager::new();
    let pool = manager.add_etcd("config", cluster.config()).await.unwrap();
    let mut watch = pool.watch("config/x", WatchSpec::new()).await.unwrap();
    assert_eq!(pool.status().streams.watches, 1);
    const N: u32 = 200;
    let writer = tokio::spawn(count_to(
        pool.clone(),
        "config/x",
        N,
        Duration::from_millis(10),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    for victim in 0..2 {
        cluster.member(victim).unwrap().kill();
        tokio::time::sleep(Duration::from_millis(700)).await;
        cluster
            .member(victim)
            .unwrap()
            .restart_async()
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (seen, compacted) = collect(&mut watch, N).await;
    writer.await.unwrap();
    assert_eq!(compacted, None);
    // The truth: the key's whole history, read afterwards by a watch that met no failure.
    // (A put retried after its answer was lost with a member is two changes, and both
    // are in the history.)
    let mut reference = pool
        .watch("config/x", WatchSpec::new().from_revision(1))
        .await
        .unwrap();
    let (history, _) = collect(&mut reference, N).await;
    println!(
        "watch through two member restarts: {} changes seen, {} in the history, identical: {}",
        seen.len(),
        history.len(),
        seen == history
    );
    assert_eq!(seen, history);
    let mut deduped = seen.clone();
    deduped.dedup();
    assert_eq!(deduped, (1..=N).collect::<Vec<_>>());
    manager.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumes_after_its_connector_reconnects_or_says_what_was_compacted() {
    let mut etcd = EtcdServer::start().unwrap();
    let manager = Manager::new();
    let pool = manager.add_etcd("config", etcd.config()).await.unwrap();
    let mut watch = pool
        .watch("config/", WatchSpec::new().prefix())
        .await
        .unwrap();

    // A restart: the connector goes down and comes back; the watch resumes.
    let writer = tokio::spawn(count_to(
        pool.clone(),
        "config/y",
        50,
        Duration::from_millis(20),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    etcd.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    etcd.restart_async().await.unwrap();
    writer.await.unwrap();
    let (seen, compacted) = collect(&mut watch, 50).await;
    assert_eq!(compacted, None);
    assert_eq!(seen, (1..=50).collect::<Vec<_>>());

    // A watch from a compacted revision says so, then goes on.
    let mut c = pool.get().await.unwrap();
    let rev = c
        .put("config/z", "1", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    c.put("config/z", "2", None).await.unwrap();
    let last = c
        .put("config/z", "3", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    c.compact(last, None).await.unwrap();
    drop(c);
    let mut old = pool
        .watch("config/z", WatchSpec::new().from_revision(rev))
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(5), old.next()).await {
        Ok(Some(WatchItem::Compacted { revision })) => assert_eq!(revision, last),
        other => panic!("{other:?}"),
    }
    let mut c = pool.get().await.unwrap();
    c.put("config/z", "4", None).await.unwrap();
    drop(c);
    let (seen, _) = collect(&mut old, 4).await;
    assert_eq!(seen.last(), Some(&4));
    manager.close().await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(5), async {
            while watch.next().await.is_some() {}
        })
        .await
        .is_ok(),
        "the watch outlived close()"
    );
}
