//! Losing one member of a three-member etcd cluster under 16 concurrent writers: requests
//! stop going to the dead member within half a second, and go back once it returns.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use connhub::testkit::EtcdCluster;
use connhub::{Manager, State};
use tokio::sync::Mutex;

/// (started, finished, error) per write.
type Log = Arc<Mutex<Vec<(Instant, Instant, Option<String>)>>>;

async fn writers(
    pool: &connhub::EtcdPool,
    n: usize,
    stop: &Arc<AtomicBool>,
    log: &Log,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..n)
        .map(|t| {
            let pool = pool.clone();
            let stop = stop.clone();
            let log = log.clone();
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let started = Instant::now();
                    let error = match pool.get().await {
                        Ok(mut c) => c
                            .put(format!("w{t}"), i.to_string(), None)
                            .await
                            .err()
                            .map(|e| e.to_string()),
                        Err(e) => Some(e.to_string()),
                    };
                    let ok = error.is_none();
                    log.lock().await.push((started, Instant::now(), error));
                    if !ok {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_one_member_of_three_fails_no_write_after_half_a_second() {
    let mut cluster = EtcdCluster::start(3).unwrap();
    let manager = Manager::new();
    let mut cfg = cluster.config();
    cfg.connector = common::quick();
    cfg.command_timeout = Some(Duration::from_secs(2));
    // One client per writer: a write stuck on the lost member holds only its own client.
    cfg.pool_size = 16;
    let pool = manager.add_etcd("cluster", cfg).await.unwrap();

    let log: Log = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = writers(&pool, 16, &stop, &log).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.member(0).unwrap().kill();
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.member(0).unwrap().restart().unwrap();
    let restarted = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }

    let log = log.lock().await;
    // A write in flight on the member when it died may fail; one started later may not.
    let failed: Vec<Duration> = log
        .iter()
        .filter(|(_, done, e)| e.is_some() && *done > killed)
        .map(|(started, _, _)| started.saturating_duration_since(killed))
        .collect();
    let late: Vec<_> = log
        .iter()
        .filter(|(started, _, e)| e.is_some() && *started > killed + Duration::from_millis(500))
        .map(|(started, done, e)| (*started - killed, *done - killed, e))
        .collect();
    let ok_while_down = log
        .iter()
        .filter(|(_, done, e)| e.is_none() && *done > killed && *done < restarted)
        .count();
    let ok_after = log
        .iter()
        .filter(|(_, done, e)| e.is_none() && *done > restarted)
        .count();
    eprintln!(
        "figures: {} writes, {} failed after the loss (latest started {:?} after it), {} started later than 0.5 s after it; {} ok while the member was down, {} ok after it returned",
        log.len(),
        failed.len(),
        failed.iter().max(),
        late.len(),
        ok_while_down,
        ok_after
    );
    assert!(
        late.is_empty(),
        "writes started later than 0.5 s after the loss failed (started, finished, error): {late:?}"
    );
    assert!(
        ok_while_down > 100,
        "the cluster kept serving: {ok_while_down}"
    );
    assert!(ok_after > 100);
    assert_eq!(pool.state(), State::Healthy);
    manager.close().await.unwrap();
}
