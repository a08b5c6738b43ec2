//! The same outages through connhub and through what a user would pick instead, in one
//! run: Redis killed under 32 tasks and restarted on the same port 2 s later (connhub vs
//! bb8-redis), and one member of a three-member etcd cluster lost under 16 writers
//! (connhub vs raw etcd-client). Prints one table.
//!
//! `cargo run --release --example outage_compare --features testkit`

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use connhub::redis::AsyncCommands;
use connhub::testkit::{EtcdCluster, RedisServer};
use tokio::sync::Mutex;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Call = Arc<dyn Fn(usize) -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;
/// (started, finished, ok)
type Log = Arc<Mutex<Vec<(Instant, Instant, bool)>>>;

const TIMEOUT: Duration = Duration::from_secs(5);

async fn load(
    call: Call,
    tasks: usize,
    stop: Arc<AtomicBool>,
    log: Log,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..tasks)
        .map(|t| {
            let (call, stop, log) = (call.clone(), stop.clone(), log.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let ok = call(t).await;
                    log.lock().await.push((started, Instant::now(), ok));
                    if !ok {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            })
        })
        .collect()
}

fn pct(mut v: Vec<Duration>, p: usize) -> String {
    if v.is_empty() {
        return "-".into();
    }
    v.sort();
    format!("{:.1?}", v[(v.len() * p / 100).min(v.len() - 1)])
}

async fn redis_outage(label: &str, call: Call, server: &mut RedisServer) -> Result<(), BoxError> {
    let log: Log = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(call, 32, stop.clone(), log.clone()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.kill();
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.restart()?;
    let restarted = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    let log = log.lock().await;
    let started_down: Vec<_> = log
        .iter()
        .filter(|(s, _, _)| *s > killed && *s < restarted)
        .collect();
    let failed = started_down.iter().filter(|(_, _, ok)| !ok).count();
    let took: Vec<Duration> = started_down.iter().map(|(s, d, _)| *d - *s).collect();
    let first_ok = log
        .iter()
        .filter(|(s, d, ok)| *ok && *s >= restarted && *d > restarted)
        .map(|(_, d, _)| *d - restarted)
        .min();
    let late = log
        .iter()
        .filter(|(s, _, ok)| !ok && *s > restarted + Duration::from_secs(1))
        .count();
    println!(
        "| {label:<22} | {:>9} | {:>9} | {:>9} | {:>9} | {:>12} | {:>11} |",
        started_down.len(),
        failed,
        pct(took.clone(), 50),
        pct(took, 99),
        first_ok.map(|d| format!("{d:.0?}")).unwrap_or("-".into()),
        late
    );
    Ok(())
}

async fn etcd_member_loss(
    label: &str,
    call: Call,
    cluster: &mut EtcdCluster,
    member: usize,
) -> Result<(), BoxError> {
    let log: Log = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(call, 16, stop.clone(), log.clone()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    if let Some(m) = cluster.member(member) {
        m.kill();
    }
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    if let Some(m) = cluster.member(member) {
        m.restart()?;
    }
    let log = log.lock().await;
    let after: Vec<_> = log.iter().filter(|(_, d, _)| *d > killed).collect();
    let failed = after.iter().filter(|(_, _, ok)| !ok).count();
    let late = after
        .iter()
        .filter(|(s, _, ok)| !ok && *s > killed + Duration::from_millis(500))
        .count();
    println!(
        "| {label:<22} | {:>9} | {:>9} | {:>22} |",
        after.len(),
        failed,
        late
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let mut server = RedisServer::start()?;
    let manager = connhub::Manager::new();
    let mut cfg = server.config();
    cfg.pool_size = 16;
    cfg.connector.connect_timeout = TIMEOUT;
    cfg.connector.reconnect_interval = Duration::from_millis(250);
    cfg.connector.reconnect_backoff_max = Duration::from_millis(500);
    let pool = manager.add_redis("cache", cfg).await?;
    let bb8_pool = bb8::Pool::builder()
        .max_size(16)
        .connection_timeout(TIMEOUT)
        .build(bb8_redis::RedisConnectionManager::new(format!(
            "redis://{}",
            server.addr()
        ))?)
        .await?;

    println!(
        "Redis killed under 32 tasks, restarted on the same port 2 s later (timeouts {TIMEOUT:?})\n"
    );
    println!(
        "Calls started while the server was down: how many, how many failed, how long they took.\n"
    );
    println!(
        "| {:<22} | {:>9} | {:>9} | {:>9} | {:>9} | {:>12} | {:>11} |",
        "client", "calls", "failed", "p50", "p99", "1st ok after", "fails >1 s"
    );
    println!(
        "|{:-<24}|{:-<11}|{:-<11}|{:-<11}|{:-<11}|{:-<14}|{:-<13}|",
        "", "", "", "", "", "", ""
    );
    let p = pool.clone();
    let call: Call = Arc::new(move |t| {
        let p = p.clone();
        Box::pin(async move {
            match p.get().await {
                Ok(mut c) => c.set::<_, _, ()>(format!("k{t}"), t).await.is_ok(),
                Err(_) => false,
            }
        })
    });
    redis_outage("connhub get()", call, &mut server).await?;
    let b = bb8_pool.clone();
    let call: Call = Arc::new(move |t| {
        let b = b.clone();
        Box::pin(async move {
            match b.get().await {
                Ok(mut c) => c.set::<_, _, ()>(format!("k{t}"), t).await.is_ok(),
                Err(_) => false,
            }
        })
    });
    redis_outage("bb8-redis get()", call, &mut server).await?;
    manager.close().await?;

    println!("\netcd: one member of three killed under 16 writers, 3 s\n");
    println!(
        "| {:<22} | {:>9} | {:>9} | {:>22} |",
        "client", "writes", "failed", "started >0.5 s, failed"
    );
    println!("|{:-<24}|{:-<11}|{:-<11}|{:-<24}|", "", "", "", "");
    let mut cluster = EtcdCluster::start(3)?;
    let mut cfg = cluster.config();
    cfg.connector.connect_timeout = TIMEOUT;
    cfg.command_timeout = Some(Duration::from_secs(2));
    let etcd = manager_etcd(cfg).await?;
    let e = etcd.clone();
    let call: Call = Arc::new(move |t| {
        let e = e.clone();
        Box::pin(async move {
            match e.get().await {
                Ok(mut c) => c.put(format!("w{t}"), "v", None).await.is_ok(),
                Err(_) => false,
            }
        })
    });
    // Kill a follower-or-leader alike: member 1 for connhub, member 2 for the raw client.
    etcd_member_loss("connhub get()", call, &mut cluster, 1).await?;
    let raw = etcd_client::Client::connect(
        cluster.endpoints(),
        Some(
            etcd_client::ConnectOptions::new()
                .with_timeout(Duration::from_secs(2))
                .with_connect_timeout(Duration::from_secs(1)),
        ),
    )
    .await?;
    let call: Call = Arc::new(move |t| {
        let mut c = raw.clone();
        Box::pin(async move { c.put(format!("w{t}"), "v", None).await.is_ok() })
    });
    etcd_member_loss("raw etcd-client", call, &mut cluster, 2).await?;
    Ok(())
}

async fn manager_etcd(cfg: connhub::EtcdConfig) -> Result<connhub::EtcdPool, BoxError> {
    let manager = connhub::Manager::new();
    Ok(manager.add_etcd("cluster", cfg).await?)
}
