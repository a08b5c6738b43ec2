//! Checkout cost and Redis GET throughput: connhub next to bb8-redis and a raw
//! multiplexed connection, against a redis-server started by the testkit.

use std::sync::Arc;

use connhub::redis::AsyncCommands;
use connhub::testkit::RedisServer;
use criterion::{Criterion, criterion_group, criterion_main};

fn checkout(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let server = RedisServer::start().expect("redis-server");
    let (pool, bb8_redis_pool, raw) = rt.block_on(async {
        let manager = connhub::Manager::new();
        let mut cfg = server.config();
        cfg.pool_size = 16;
        let pool = manager.add_redis("bench", cfg).await.expect("connhub pool");
        let m = bb8_redis::RedisConnectionManager::new(format!("redis://{}", server.addr()))
            .expect("bb8-redis manager");
        let b = bb8::Pool::builder()
            .max_size(16)
            .build(m)
            .await
            .expect("bb8-redis pool");
        let raw = connhub::redis::Client::open(format!("redis://{}", server.addr()))
            .expect("client")
            .get_multiplexed_async_connection()
            .await
            .expect("raw connection");
        {
            let mut conn = pool.get().await.expect("checkout");
            let _: () = conn.set("bench:key", "value").await.expect("SET");
        }
        (pool, Arc::new(b), raw)
    });

    let mut g = c.benchmark_group("checkout");
    g.bench_function("connhub get()", |b| {
        b.to_async(&rt)
            .iter(|| async { drop(pool.get().await.expect("checkout")) })
    });
    g.bench_function("bb8-redis get() (PING per checkout)", |b| {
        b.to_async(&rt)
            .iter(|| async { drop(bb8_redis_pool.get().await.expect("checkout")) })
    });
    g.finish();

    let mut g = c.benchmark_group("redis GET, 1 task");
    g.bench_function("connhub", |b| {
        b.to_async(&rt).iter(|| async {
            let mut conn = pool.get().await.expect("checkout");
            let _: String = conn.get("bench:key").await.expect("GET");
        })
    });
    g.bench_function("bb8-redis", |b| {
        b.to_async(&rt).iter(|| async {
            let mut conn = bb8_redis_pool.get().await.expect("checkout");
            let _: String = conn.get("bench:key").await.expect("GET");
        })
    });
    g.bench_function("raw multiplexed", |b| {
        b.to_async(&rt).iter(|| {
            let mut conn = raw.clone();
            async move {
                let _: String = conn.get("bench:key").await.expect("GET");
            }
        })
    });
    g.finish();
}

criterion_group!(benches, checkout);
criterion_main!(benches);
