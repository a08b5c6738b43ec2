//! Redis through connhub next to what a user would pick instead (bb8-redis, deadpool-redis,
//! a raw redis-rs connection, fred), in the same run, against
//! a redis-server started by the testkit: checkout cost at one task, and GET throughput at
//! 1, 16, 64 and 512 tasks with pools of 16.
//!
//! `make bench` (or `cargo bench --features testkit --bench redis`).

use std::sync::Arc;
use std::time::Duration;

use connhub::redis::AsyncCommands;
use connhub::testkit::RedisServer;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

mod common;
use common::{runtime, spread};

const POOL: u32 = 16;
const KEY: &str = "bench:key";

struct Clients {
    connhub: connhub::RedisPool,
    bb8_redis: bb8::Pool<bb8_redis::RedisConnectionManager>,
    bb8_no_ping: bb8::Pool<bb8_redis::RedisConnectionManager>,
    deadpool: deadpool_redis::Pool,
    raw: connhub::redis::aio::MultiplexedConnection,
    fred: fred::prelude::Client,
    _manager: connhub::Manager,
}

async fn clients(server: &RedisServer) -> Clients {
    let url = format!("redis://{}", server.addr());
    let manager = connhub::Manager::new();
    let mut cfg = server.config();
    cfg.pool_size = POOL;
    cfg.min_idle_conns = POOL;
    let connhub = manager.add_redis("bench", cfg).await.expect("connhub pool");
    let bb8_redis = bb8::Pool::builder()
        .max_size(POOL)
        .min_idle(POOL)
        .build(bb8_redis::RedisConnectionManager::new(url.clone()).expect("url"))
        .await
        .expect("bb8-redis pool");
    let bb8_no_ping = bb8::Pool::builder()
        .max_size(POOL)
        .min_idle(POOL)
        .test_on_check_out(false)
        .build(bb8_redis::RedisConnectionManager::new(url.clone()).expect("url"))
        .await
        .expect("bb8 pool");
    let mut dp = deadpool_redis::Config::from_url(url.clone());
    dp.pool = Some(deadpool_redis::PoolConfig::new(POOL as usize));
    let deadpool = dp
        .create_pool(Some(deadpool_redis::Runtime::Tokio1))
        .expect("deadpool");
    let mut raw = connhub::redis::Client::open(url)
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection");
    let _: () = raw.set(KEY, "value").await.expect("SET");
    let fred = fred::prelude::Builder::from_config(
        fred::prelude::Config::from_url(&format!("redis://{}", server.addr())).expect("url"),
    )
    .build()
    .expect("fred client");
    fred::prelude::ClientLike::init(&fred)
        .await
        .expect("fred connects");
    Clients {
        connhub,
        bb8_redis,
        bb8_no_ping,
        deadpool,
        raw,
        fred,
        _manager: manager,
    }
}

fn benches(c: &mut Criterion) {
    let rt = runtime();
    let server = RedisServer::start().expect("redis-server");
    let cl = Arc::new(rt.block_on(clients(&server)));

    let mut g = c.benchmark_group("checkout, 1 task");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    g.bench_function("connhub get()", |b| {
        b.to_async(&rt)
            .iter(|| async { drop(cl.connhub.get().await.expect("checkout")) })
    });
    g.bench_function("bb8, no PING (raw bb8)", |b| {
        b.to_async(&rt)
            .iter(|| async { drop(cl.bb8_no_ping.get().await.expect("checkout")) })
    });
    g.bench_function("bb8 get_owned(), no PING", |b| {
        b.to_async(&rt)
            .iter(|| async { drop(cl.bb8_no_ping.get_owned().await.expect("checkout")) })
    });
    g.bench_function("bb8-redis (PING per checkout)", |b| {
        b.to_async(&rt)
            .iter(|| async { drop(cl.bb8_redis.get().await.expect("checkout")) })
    });
    g.bench_function("deadpool-redis (PING per checkout)", |b| {
        b.to_async(&rt)
            .iter(|| async { drop(cl.deadpool.get().await.expect("checkout")) })
    });
    g.finish();

    for tasks in [1usize, 16, 64, 512] {
        let mut g = c.benchmark_group(format!("GET, {tasks} tasks, pool {POOL}"));
        g.warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(5))
            .sample_size(10)
            .throughput(Throughput::Elements(1));
        macro_rules! case {
            ($name:expr, |$cl:ident| $body:block) => {
                g.bench_function($name, |b| {
                    b.to_async(&rt).iter_custom(|iters| {
                        let cl = cl.clone();
                        async move {
                            spread(tasks, iters, move || {
                                let $cl = cl.clone();
                                async move { $body }
                            })
                            .await
                        }
                    })
                });
            };
        }
        case!("connhub get()", |cl| {
            let mut c = cl.connhub.get().await.expect("checkout");
            let _: String = c.get(KEY).await.expect("GET");
        });
        case!("connhub pool as a connection", |cl| {
            let mut c = cl.connhub.clone();
            let _: String = AsyncCommands::get(&mut c, KEY).await.expect("GET");
        });
        case!("connhub multiplexed()", |cl| {
            let mut c = cl.connhub.multiplexed().await.expect("multiplexed");
            let _: String = c.get(KEY).await.expect("GET");
        });
        case!("bb8-redis", |cl| {
            let mut c = cl.bb8_redis.get().await.expect("checkout");
            let _: String = c.get(KEY).await.expect("GET");
        });
        case!("deadpool-redis", |cl| {
            let mut c = cl.deadpool.get().await.expect("checkout");
            let _: String = c.get(KEY).await.expect("GET");
        });
        case!("bb8, no PING", |cl| {
            let mut c = cl.bb8_no_ping.get().await.expect("checkout");
            let _: String = c.get(KEY).await.expect("GET");
        });
        case!("raw multiplexed connection", |cl| {
            let mut c = cl.raw.clone();
            let _: String = c.get(KEY).await.expect("GET");
        });
        case!("fred", |cl| {
            let _: String = fred::prelude::KeysInterface::get(&cl.fred, KEY)
                .await
                .expect("GET");
        });
        g.finish();
    }
}

criterion_group!(redis, benches);
criterion_main!(redis);
