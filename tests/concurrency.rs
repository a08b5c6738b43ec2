//! 16 tasks registering, removing, looking up and checking out at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use connhub::redis::AsyncCommands;
use connhub::testkit::RedisServer;
use connhub::{Error, Manager};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn register_remove_lookup_and_checkout_concurrently() {
    let server = RedisServer::start().unwrap();
    let manager = Manager::new();
    let ops = Arc::new(AtomicU64::new(0));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut tasks = Vec::new();
    for t in 0..16u32 {
        let manager = manager.clone();
        let ops = ops.clone();
        let mut config = server.config();
        config.pool_size = 4;
        tasks.push(tokio::spawn(async move {
            let name = format!("c{}", t % 4);
            while tokio::time::Instant::now() < deadline {
                match t % 4 {
                    0 => match manager.add_redis(name.clone(), config.clone()).await {
                        Ok(_) | Err(Error::AlreadyRegistered { .. }) => {}
                        Err(e) => panic!("register: {e}"),
                    },
                    1 => match manager.remove(&name).await {
                        Ok(()) | Err(Error::NotFound { .. }) => {}
                        Err(e) => panic!("remove: {e}"),
                    },
                    _ => match manager.redis(&name) {
                        Ok(pool) => match pool.get().await {
                            Ok(mut conn) => {
                                let _: () = conn.set(&name, t).await.unwrap();
                            }
                            // Removed between lookup and checkout.
                            Err(Error::Closed { .. }) => {}
                            Err(e) => panic!("checkout: {e}"),
                        },
                        Err(Error::NotFound { .. }) => {}
                        Err(e) => panic!("lookup: {e}"),
                    },
                }
                ops.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let all = tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(tasks))
        .await
        .expect("no deadlock");
    for r in all {
        r.expect("no panic");
    }
    assert!(
        ops.load(Ordering::Relaxed) > 100,
        "{} ops",
        ops.load(Ordering::Relaxed)
    );

    // Nothing leaked: every pool still registered closes; after close none remains and
    // the server sees only its own connection.
    let weak: Vec<_> = manager
        .names()
        .iter()
        .map(|n| manager.redis(n).unwrap())
        .collect();
    manager.close().await.unwrap();
    assert!(manager.names().is_empty());
    for p in &weak {
        assert!(matches!(p.get().await, Err(Error::Closed { .. })));
    }
    drop(weak);
    let mut probe = connhub::redis::Client::open(format!("redis://{}", server.addr()))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut clients = usize::MAX;
    for _ in 0..100 {
        let list: String = connhub::redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut probe)
            .await
            .unwrap();
        clients = list.lines().count();
        if clients == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(clients, 1, "connections left open after close");
}
