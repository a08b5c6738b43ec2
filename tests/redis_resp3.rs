//! Replies stay with their requests when the server pushes: RESP3 client-side caching
//! (CLIENT TRACKING) sends invalidation pushes between replies.

use connhub::redis::{AsyncCommands, Value, cmd};
use connhub::testkit::RedisServer;
use connhub::{Manager, RedisConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracking_pushes_never_shift_replies() {
    let server = RedisServer::start().unwrap();
    let manager = Manager::new();
    let mut cfg: RedisConfig = server.config();
    cfg.pool_size = 1;
    let pool = manager.add_redis("cache", cfg).await.unwrap();
    let mut other = pool.multiplexed().await.unwrap();
    let _: () = other.set("a", "value-of-a").await.unwrap();
    let _: () = other.set("b", "value-of-b").await.unwrap();

    for round in 0..20 {
        let mut conn = pool.get().await.unwrap();
        let _: Value = cmd("HELLO").arg(3).query_async(&mut *conn).await.unwrap();
        let _: () = cmd("CLIENT")
            .arg("TRACKING")
            .arg("ON")
            .query_async(&mut *conn)
            .await
            .unwrap();
        let a: String = conn.get("a").await.unwrap();
        assert_eq!(a, "value-of-a", "round {round}");
        // Another connection changes a tracked key: the server pushes an invalidation.
        let _: () = other.set("a", "value-of-a").await.unwrap();
        let a: String = conn.get("a").await.unwrap();
        assert_eq!(a, "value-of-a", "round {round}: GET a");
        let b: String = conn.get("b").await.unwrap();
        assert_eq!(
            b, "value-of-b",
            "round {round}: GET b got another key's reply"
        );
        let n: i64 = conn.incr(format!("n{round}"), 1).await.unwrap();
        assert_eq!(n, 1, "round {round}");
        assert!(!conn.is_broken());
        drop(conn);
        // The next user of the pooled connection gets its own replies too.
        let mut next = pool.get().await.unwrap();
        let b: String = next.get("b").await.unwrap();
        assert_eq!(b, "value-of-b", "round {round}: next user");
        let pong: String = cmd("PING").query_async(&mut *next).await.unwrap();
        assert_eq!(pong, "PONG");
    }
    manager.close().await.unwrap();
}
