//! Redis GET throughput through connhub's `get()` at 64 tasks, sweeping the pool size
//! (1, 2, 4, … 64) against a redis-server started by the testkit. Criterion's throughput
//! per size shows where more connections stop helping; `examples/pool_sizing.rs` prints
//! the same sweep with p50/p99 latency and a recommendation.
//!
//! `make bench` (or `cargo bench --features testkit --bench pool_sizing`).

use std::time::Duration;

use connhub::redis::AsyncCommands;
use connhub::testkit::RedisServer;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

mod common;
use common::{runtime, spread};

const TASKS: usize = 64;
const SIZES: [u32; 7] = [1, 2, 4, 8, 16, 32, 64];
const KEY: &str = "bench:sizing";

fn benches(c: &mut Criterion) {
    let rt = runtime();
    let server = RedisServer::start().expect("redis-server");
    let manager = connhub::Manager::new();

    let mut g = c.benchmark_group(format!("pool size, GET, {TASKS} tasks"));
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10)
        .throughput(Throughput::Elements(1));
    for size in SIZES {
        let pool = rt.block_on(async {
            let mut cfg = server.config();
            cfg.pool_size = size;
            cfg.min_idle_conns = size;
            let pool = manager
                .add_redis(&format!("size-{size}"), cfg)
                .await
                .expect("connhub pool");
            let mut c = pool.get().await.expect("checkout");
            let _: () = c.set(KEY, "value").await.expect("SET");
            pool
        });
        g.bench_with_input(BenchmarkId::from_parameter(size), &pool, |b, pool| {
            b.to_async(&rt).iter_custom(|iters| {
                let pool = pool.clone();
                async move {
                    spread(TASKS, iters, move || {
                        let pool = pool.clone();
                        async move {
                            let mut c = pool.get().await.expect("checkout");
                            let _: String = c.get(KEY).await.expect("GET");
                        }
                    })
                    .await
                }
            })
        });
        rt.block_on(pool.close()).expect("close");
    }
    g.finish();
    rt.block_on(manager.close()).expect("close");
}

criterion_group!(pool_sizing, benches);
criterion_main!(pool_sizing);
