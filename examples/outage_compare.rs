//! The same outages through connhub and through what a user would pick instead, in one
//! run, every client with its **default** settings (pool size 16 for both Redis pools; a
//! 5 s request timeout for the raw etcd client, which has none by default) and callers
//! that retry at once, without sleeping: Redis killed under 32 tasks and restarted on the
//! same port 2 s later (connhub vs bb8-redis); Redis frozen (`SIGSTOP`: nothing closed,
//! nothing answered) for 12 s under 32 tasks, and its connections gone silent through a
//! relay (closing neither end, as a NAT that dropped their flows) for 12 s under 32 tasks
//! (both connhub vs bb8-redis, deadpool-redis and fred); and a follower of a three-member etcd cluster lost under 16 writers (connhub vs
//! raw etcd-client). Prints the tables.
//!
//! `cargo run --release --example outage_compare --features testkit`

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use connhub::redis::AsyncCommands;
use connhub::testkit::{EtcdCluster, RedisServer, Relay};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Call = Arc<dyn Fn(usize) -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;
/// (started, finished, ok)
type Log = Vec<(Instant, Instant, bool)>;
type Tasks = Vec<tokio::task::JoinHandle<Log>>;

/// A [`Call`] that checks a connection out of `pool` (connhub, bb8 or deadpool) and sends
/// one `SET` on it: false when either fails.
macro_rules! set_on_checkout {
    ($pool:expr) => {{
        let pool = $pool;
        Arc::new(move |t: usize| {
            let pool = pool.clone();
            Box::pin(async move {
                match pool.get().await {
                    Ok(mut c) => c.set::<_, _, ()>(format!("k{t}"), t).await.is_ok(),
                    Err(_) => false,
                }
            }) as Pin<Box<dyn Future<Output = bool> + Send>>
        }) as Call
    }};
}

/// How long a call may take before it is given up on.
const GIVE_UP: Duration = Duration::from_secs(20);

/// `tasks` callers of `call`, each retrying at once; each keeps its own log (no lock on
/// the hot path).
fn load(call: Call, tasks: usize, stop: Arc<AtomicBool>) -> Tasks {
    (0..tasks)
        .map(|t| {
            let (call, stop) = (call.clone(), stop.clone());
            tokio::spawn(async move {
                let mut log = Log::new();
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    // A client that would wait forever (no timeout of its own) is given
                    // up on, and the call counted failed.
                    let ok = tokio::time::timeout(GIVE_UP, call(t))
                        .await
                        .unwrap_or(false);
                    log.push((started, Instant::now(), ok));
                }
                log
            })
        })
        .collect()
}

async fn finish(stop: &AtomicBool, tasks: Tasks) -> Result<Log, BoxError> {
    stop.store(true, Ordering::Relaxed);
    let mut all = Log::new();
    for t in tasks {
        all.extend(t.await?);
    }
    Ok(all)
}

fn pct(mut v: Vec<Duration>, p: usize) -> String {
    if v.is_empty() {
        return "-".into();
    }
    v.sort();
    format!("{:.1?}", v[(v.len() * p / 100).min(v.len() - 1)])
}

async fn redis_outage(label: &str, call: Call, server: &mut RedisServer) -> Result<(), BoxError> {
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(call, 32, stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.kill();
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.restart_async().await?;
    let restarted = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let log = finish(&stop, tasks).await?;
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

/// How long the server stays frozen.
const FROZEN: Duration = Duration::from_secs(12);

/// What goes wrong for [`FROZEN`]: the server stops (`SIGSTOP`) and then resumes, or the
/// connections made so far through a relay go silent for good (a NAT dropped their flows).
#[derive(Clone, Copy)]
enum Fault<'a> {
    Freeze(&'a RedisServer),
    Silence(&'a Relay),
}

impl<'a> Fault<'a> {
    /// A silence of `relay`'s connections if there is one, else a freeze of `server`.
    fn on(server: &'a RedisServer, relay: &'a Option<Relay>) -> Fault<'a> {
        match relay {
            Some(relay) => Fault::Silence(relay),
            None => Fault::Freeze(server),
        }
    }
}

/// `call` on 32 tasks while `fault` lasts.
async fn redis_fault(label: &str, call: Call, fault: Fault<'_>) -> Result<(), BoxError> {
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(call, 32, stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    match fault {
        Fault::Freeze(server) => server.pause()?,
        Fault::Silence(relay) => relay.silence(),
    }
    let began = Instant::now();
    tokio::time::sleep(FROZEN).await;
    // A silence is not lifted: the first success counts from its start.
    let ended = match fault {
        Fault::Freeze(server) => {
            server.resume()?;
            Instant::now()
        }
        Fault::Silence(_) => began,
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = finish(&stop, tasks).await?;
    let during: Vec<_> = log
        .iter()
        .filter(|(s, d, _)| *d > began && *s < began + FROZEN)
        .collect();
    let failed = during.iter().filter(|(_, _, ok)| !ok).count();
    let ok = during.len() - failed;
    let took: Vec<Duration> = during.iter().map(|(s, d, _)| *d - *s).collect();
    // The last call under way that failed slowly: how long callers waited to be told
    // before the fault was known.
    let last_slow_failure = during
        .iter()
        .filter(|(s, d, ok)| !ok && *d - *s > Duration::from_millis(100))
        .map(|(_, d, _)| *d - began)
        .max();
    let first_ok = log
        .iter()
        .filter(|(s, d, ok)| *ok && *s > ended && *d > ended)
        .map(|(_, d, _)| *d - ended)
        .min();
    println!(
        "| {label:<22} | {:>9} | {:>9} | {:>9} | {:>9} | {:>9} | {:>14} | {:>12} |",
        during.len(),
        ok,
        failed,
        pct(took.clone(), 50),
        pct(took, 100),
        last_slow_failure
            .map(|d| format!("{d:.1?}"))
            .unwrap_or("-".into()),
        first_ok.map(|d| format!("{d:.0?}")).unwrap_or("-".into()),
    );
    Ok(())
}

async fn etcd_member_loss(
    label: &str,
    call: Call,
    cluster: &mut EtcdCluster,
    member: usize,
) -> Result<(), BoxError> {
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(call, 16, stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    if let Some(m) = cluster.member(member) {
        m.kill();
    }
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = finish(&stop, tasks).await?;
    if let Some(m) = cluster.member(member) {
        m.restart_async().await?;
    }
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
    let pool = manager.add_redis("cache", cfg).await?;
    let bb8_pool = bb8::Pool::builder()
        .max_size(16)
        .build(bb8_redis::RedisConnectionManager::new(format!(
            "redis://{}",
            server.addr()
        ))?)
        .await?;

    println!(
        "Redis killed under 32 tasks, restarted on the same port 2 s later (default settings)\n"
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
    let call = set_on_checkout!(pool);
    redis_outage("connhub get()", call, &mut server).await?;
    let call = set_on_checkout!(bb8_pool);
    redis_outage("bb8-redis get()", call, &mut server).await?;
    manager.close().await?;

    redis_faults(&server, false).await?;
    redis_faults(&server, true).await?;

    println!("\netcd: one member of three killed under 16 writers, 3 s\n");
    println!(
        "| {:<22} | {:>9} | {:>9} | {:>22} |",
        "client", "writes", "failed", "started >0.5 s, failed"
    );
    println!("|{:-<24}|{:-<11}|{:-<11}|{:-<24}|", "", "", "", "");
    let mut cluster = EtcdCluster::start(3)?;
    let etcd = manager_etcd(cluster.config()).await?;
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
    // A follower each time (losing the leader can stall every writer whose proposal was
    // forwarded to it for the whole request timeout, whichever client sends it).
    let follower = (cluster.leader().await? + 1) % cluster.len();
    etcd_member_loss("connhub get()", call, &mut cluster, follower).await?;
    let raw = etcd_client::Client::connect(
        cluster.endpoints(),
        Some(etcd_client::ConnectOptions::new().with_timeout(Duration::from_secs(5))),
    )
    .await?;
    let call: Call = Arc::new(move |t| {
        let mut c = raw.clone();
        Box::pin(async move { c.put(format!("w{t}"), "v", None).await.is_ok() })
    });
    let follower = (cluster.leader().await? + 1) % cluster.len();
    etcd_member_loss("raw etcd-client", call, &mut cluster, follower).await?;
    Ok(())
}

async fn manager_etcd(cfg: connhub::EtcdConfig) -> Result<connhub::EtcdPool, BoxError> {
    let manager = connhub::Manager::new();
    Ok(manager.add_etcd("cluster", cfg).await?)
}

/// The fault through each client, each on its own connections to the same server
/// (through a relay of its own when they go silent).
async fn redis_faults(server: &RedisServer, silence: bool) -> Result<(), BoxError> {
    if silence {
        println!(
            "\nRedis connections gone silent (a relay drops what they carry, closing \
             neither end, as a NAT does) under 32 tasks, for {FROZEN:?} (default settings)\n"
        );
    } else {
        println!(
            "\nRedis frozen (SIGSTOP) for {FROZEN:?} under 32 tasks, then resumed (default \
             settings)\n"
        );
    }
    println!(
        "Calls under way during the fault: how many, how many succeeded and failed, how \
         long they took; when the last slow failure came (after the fault began); the \n\
         first success after the resume (for a silence, of a call started after it began). \n\
         A call still waiting after {GIVE_UP:?} is given up on and counted failed.\n"
    );
    println!(
        "| {:<22} | {:>9} | {:>9} | {:>9} | {:>9} | {:>9} | {:>14} | {:>12} |",
        "client", "calls", "ok", "failed", "p50", "longest", "last slow fail", "1st ok after"
    );
    println!(
        "|{:-<24}|{:-<11}|{:-<11}|{:-<11}|{:-<11}|{:-<11}|{:-<16}|{:-<14}|",
        "", "", "", "", "", "", "", ""
    );
    // A relay of its own for each client when the fault is a silence.
    let route = || -> Result<(String, Option<Relay>), BoxError> {
        if silence {
            let relay = Relay::start(server.addr())?;
            Ok((relay.addr(), Some(relay)))
        } else {
            Ok((server.addr(), None))
        }
    };

    let (addr, relay) = route()?;
    let manager = connhub::Manager::new();
    let mut cfg = server.config();
    cfg.addr = addr;
    cfg.pool_size = 16;
    let pool = manager.add_redis("cache", cfg).await?;
    let call = set_on_checkout!(pool);
    redis_fault("connhub get()", call, Fault::on(server, &relay)).await?;
    manager.close().await?;

    let (addr, relay) = route()?;
    let bb8_pool = bb8::Pool::builder()
        .max_size(16)
        .build(bb8_redis::RedisConnectionManager::new(format!(
            "redis://{addr}"
        ))?)
        .await?;
    let call = set_on_checkout!(bb8_pool);
    redis_fault("bb8-redis get()", call, Fault::on(server, &relay)).await?;

    let (addr, relay) = route()?;
    let mut dp = deadpool_redis::Config::from_url(format!("redis://{addr}"));
    dp.pool = Some(deadpool_redis::PoolConfig::new(16));
    let deadpool = dp.create_pool(Some(deadpool_redis::Runtime::Tokio1))?;
    let call = set_on_checkout!(deadpool);
    redis_fault("deadpool-redis get()", call, Fault::on(server, &relay)).await?;

    let (addr, relay) = route()?;
    let url = format!("redis://{addr}");
    let fred =
        fred::prelude::Builder::from_config(fred::prelude::Config::from_url(&url)?).build()?;
    fred::prelude::ClientLike::init(&fred).await?;
    let call: Call = Arc::new(move |t| {
        let f = fred.clone();
        Box::pin(async move {
            fred::prelude::KeysInterface::set::<(), _, _>(
                &f,
                format!("k{t}"),
                t as i64,
                None,
                None,
                false,
            )
            .await
            .is_ok()
        })
    });
    redis_fault("fred", call, Fault::on(server, &relay)).await?;
    Ok(())
}
