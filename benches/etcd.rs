//! etcd GET throughput through connhub (exclusive `get()` and shared `client()`) next to
//! raw etcd-client, in the same run, against an etcd started by the testkit, at 1, 16 and 64 tasks.
//!
//! `make bench` (or `cargo bench --features testkit --bench etcd`).

use std::sync::Arc;
use std::time::Duration;

use connhub::testkit::EtcdServer;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

mod common;
use common::{runtime, spread};

const KEY: &str = "bench/key";

fn benches(c: &mut Criterion) {
    let rt = runtime();
    let server = EtcdServer::start().expect("etcd");
    let (manager, pool, raw) = rt.block_on(async {
        let manager = connhub::Manager::new();
        let pool = manager
            .add_etcd("bench", server.config())
            .await
            .expect("connhub pool");
        let mut raw = etcd_client::Client::connect([server.endpoint()], None)
            .await
            .expect("raw client");
        raw.put(KEY, "value", None).await.expect("put");
        (manager, pool, raw)
    });
    let pool = Arc::new(pool);

    for tasks in [1usize, 16, 64] {
        let mut g = c.benchmark_group(format!("etcd GET, {tasks} tasks"));
        g.warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(5))
            .sample_size(10)
            .throughput(Throughput::Elements(1));
        let p = pool.clone();
        g.bench_function("connhub get()", |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let p = p.clone();
                spread(tasks, iters, move || {
                    let p = p.clone();
                    async move {
                        let mut c = p.get().await.expect("checkout");
                        c.get(KEY, None).await.expect("get");
                    }
                })
            })
        });
        let p = pool.clone();
        g.bench_function("connhub client() (shared)", |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let p = p.clone();
                spread(tasks, iters, move || {
                    let p = p.clone();
                    async move {
                        let mut c = p.client().await.expect("client");
                        c.get(KEY, None).await.expect("get");
                    }
                })
            })
        });
        let r = raw.clone();
        g.bench_function("raw etcd-client (shared, cloned)", |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let r = r.clone();
                spread(tasks, iters, move || {
                    let mut r = r.clone();
                    async move {
                        r.get(KEY, None).await.expect("get");
                    }
                })
            })
        });
        g.finish();
    }
    drop(manager);
}

criterion_group!(etcd, benches);
criterion_main!(etcd);
