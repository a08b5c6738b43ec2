//! Redis GET throughput through connhub (a checkout, the pool itself as a connection, the
//! shared `multiplexed()` handle) next to bb8-redis, deadpool-redis, one raw multiplexed
//! connection and fred, measured in interleaved rounds: each round runs every client for
//! two seconds in turn, starting with the next client each round. The table shows each
//! client's median round; each ratio is the median of that ratio within a round, between
//! clients run seconds apart. On a shared or noisy machine this gives steadier ratios
//! than running each client once.
//!
//! ```text
//! cargo run --release --example redis_throughput --features testkit              # 64 tasks, 5 rounds
//! cargo run --release --example redis_throughput --features testkit -- 16 9     # 16 tasks, 9 rounds
//! cargo run --release --example redis_throughput --features testkit -- 64 5 10.0.0.5:6379
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use connhub::redis::AsyncCommands;
use connhub::testkit::RedisServer;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Call =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>> + Send + Sync>;

const POOL: u32 = 16;
const KEY: &str = "throughput:key";
const WARM_UP: Duration = Duration::from_millis(300);
const ROUND: Duration = Duration::from_secs(2);

/// Wraps one GET through a client as a [`Call`].
macro_rules! call {
    ($client:expr, |$c:ident| $checkout:expr) => {{
        let client = $client;
        Arc::new(move || {
            let $c = client.clone();
            Box::pin(async move {
                let mut conn = $checkout;
                let _: String = conn.get(KEY).await?;
                Ok(())
            }) as Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>
        }) as Call
    }};
}

/// GET/s of `call` on `tasks` tasks, over one round after a warm-up.
async fn round(call: &Call, tasks: usize) -> Result<f64, BoxError> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (call, stop, done) = (call.clone(), stop.clone(), done.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    call().await?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, BoxError>(())
            })
        })
        .collect();
    tokio::time::sleep(WARM_UP).await;
    let (before, start) = (done.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(ROUND).await;
    let per_sec = (done.load(Ordering::Relaxed) - before) as f64 / start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.await??;
    }
    Ok(per_sec)
}

fn parse<T: std::str::FromStr>(arg: Option<String>, default: T, what: &str) -> Result<T, BoxError> {
    match arg {
        Some(a) => a
            .parse()
            .map_err(|_| format!("{what} {a:?} is not a number").into()),
        None => Ok(default),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let tasks: usize = parse(args.next(), 64, "concurrency")?;
    let rounds: usize = parse(args.next(), 5, "rounds")?;
    if tasks == 0 || rounds == 0 {
        return Err("concurrency and rounds must be at least 1".into());
    }
    let (_server, addr) = match args.next() {
        Some(addr) => (None, addr),
        None => {
            let s = RedisServer::start()?;
            let addr = s.addr();
            (Some(s), addr)
        }
    };
    let url = format!("redis://{addr}");

    let manager = connhub::Manager::new();
    let mut cfg = connhub::RedisConfig::new(&addr);
    cfg.pool_size = POOL;
    cfg.min_idle_conns = POOL;
    let pool = manager.add_redis("cache", cfg).await?;
    let bb8_redis = bb8::Pool::builder()
        .max_size(POOL)
        .min_idle(POOL)
        .build(bb8_redis::RedisConnectionManager::new(url.clone())?)
        .await?;
    let mut dp = deadpool_redis::Config::from_url(url.clone());
    dp.pool = Some(deadpool_redis::PoolConfig::new(POOL as usize));
    let deadpool = dp.create_pool(Some(deadpool_redis::Runtime::Tokio1))?;
    let raw = connhub::redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    pool.get().await?.set::<_, _, ()>(KEY, "value").await?;

    // `get()` on a pool is the checkout: the command goes by its trait path.
    let as_connection: Call = {
        let pool = pool.clone();
        Arc::new(move || {
            let mut pool = pool.clone();
            Box::pin(async move {
                let _: String = AsyncCommands::get(&mut pool, KEY).await?;
                Ok(())
            })
        })
    };
    // fred: one client (its own multiplexed connection), auto-pipelining by default.
    let fred = fred::prelude::Builder::from_config(fred::prelude::Config::from_url(&format!(
        "redis://{addr}"
    ))?)
    .build()?;
    fred::prelude::ClientLike::init(&fred).await?;
    let fred_call: Call = Arc::new(move || {
        let fred = fred.clone();
        Box::pin(async move {
            let _: String = fred::prelude::KeysInterface::get(&fred, KEY).await?;
            Ok(())
        })
    });
    let clients: [(&str, Call); 7] = [
        ("connhub get()", call!(pool.clone(), |p| p.get().await?)),
        ("connhub pool as connection", as_connection),
        (
            "connhub multiplexed()",
            call!(pool.clone(), |p| p.multiplexed().await?),
        ),
        ("bb8-redis", call!(bb8_redis, |p| p.get().await?)),
        ("deadpool-redis", call!(deadpool, |p| p.get().await?)),
        ("raw multiplexed connection", call!(raw, |c| c)),
        ("fred", fred_call),
    ];
    let mut results = vec![Vec::with_capacity(rounds); clients.len()];
    for r in 1..=rounds {
        eprint!("round {r}/{rounds}\r");
        // Each round starts with another client, so none always runs first or after the
        // same one.
        for i in 0..clients.len() {
            let c = (i + r) % clients.len();
            results[c].push(round(&clients[c].1, tasks).await?);
        }
    }
    // Each ratio is the median of the ratios within a round, of clients run seconds
    // apart: a machine that slows down for a while slows both sides of a ratio alike.
    let ratio = |a: usize, b: usize| {
        let mut r: Vec<f64> = results[a]
            .iter()
            .zip(&results[b])
            .map(|(x, y)| x / y)
            .collect();
        r.sort_by(f64::total_cmp);
        r[r.len() / 2]
    };
    let ratios = [
        ratio(0, 3),
        ratio(0, 4),
        ratio(1, 5),
        ratio(2, 5),
        ratio(1, 6),
    ];
    let median: Vec<f64> = results
        .iter_mut()
        .map(|v| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        })
        .collect();

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "Redis GET/s, {tasks} tasks, pools of {POOL}, {cores} cores, {addr}, median of {rounds} interleaved rounds\n"
    );
    println!("| client                     |    GET/s |");
    println!("|----------------------------|---------:|");
    for ((name, _), m) in clients.iter().zip(&median) {
        println!("| {name:<26} | {m:>8.0} |");
    }
    println!(
        "\nmedian ratio within a round: get() / bb8-redis {:.2}×, get() / deadpool-redis {:.2}×, pool as connection / raw {:.2}×, multiplexed() / raw {:.2}×, pool as connection / fred {:.2}×",
        ratios[0], ratios[1], ratios[2], ratios[3], ratios[4],
    );
    manager.close().await?;
    Ok(())
}
