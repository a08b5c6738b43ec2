//! The futures of the hot calls stay small: callers keep them inside their own futures
//! (an axum handler's, boxed per request), so connecting code must not be inlined there.

use connhub::Manager;
use connhub::testkit::{EtcdServer, RedisServer};

/// Bytes a checkout future may take: about bb8's own (480 bytes for connhub's Redis
/// manager), which a wait in line needs; connecting inline would take kilobytes.
const SMALL: usize = 512;

#[tokio::test]
async fn checkout_futures_do_not_carry_connecting_code() {
    let redis = RedisServer::start().unwrap();
    let etcd = EtcdServer::start().unwrap();
    let manager = Manager::new();
    let cache = manager.add_redis("cache", redis.config()).await.unwrap();
    let registry = manager.add_etcd("registry", etcd.config()).await.unwrap();

    let sizes = [
        ("RedisPool::get", size_of_val(&cache.get())),
        ("RedisPool::multiplexed", size_of_val(&cache.multiplexed())),
        ("EtcdPool::get", size_of_val(&registry.get())),
        ("EtcdPool::client", size_of_val(&registry.client())),
    ];
    for (call, size) in sizes {
        assert!(size <= SMALL, "{call}() future is {size} bytes");
    }
    // They still work.
    drop(cache.multiplexed().await.unwrap());
    drop(registry.client().await.unwrap());
    manager.close().await.unwrap();
}
