//! A pooled Redis connection answers every kind of request as redis's own multiplexed
//! connection does (pipelines, transactions, errors, large replies), refuses what would
//! put its replies out of step, and is never handed out again after a request on it was
//! cut short.

mod common;

use std::time::Duration;

use connhub::redis::{self, AsyncCommands, ErrorKind, RedisResult};
use connhub::testkit::RedisServer;
use connhub::{Manager, RedisPool};

async fn setup(server: &RedisServer, pool_size: u32) -> (Manager, RedisPool) {
    let manager = Manager::new();
    let mut c = server.config();
    c.connector = common::quick();
    c.pool_size = pool_size;
    c.command_timeout = Some(Duration::from_millis(500));
    let pool = manager.add_redis("cache", c).await.unwrap();
    (manager, pool)
}

/// Runs `$body` with `$c` a pooled connection, then with `$c` redis's multiplexed
/// connection; both answers must be equal. Gives the pooled connection's answer.
macro_rules! same {
    ($pool:expr, |$c:ident| $body:block) => {{
        let mut pooled = $pool.get().await.unwrap();
        let direct: RedisResult<_> = {
            let $c = &mut *pooled;
            async { $body }.await
        };
        let mut shared = $pool.multiplexed().await.unwrap();
        let reference: RedisResult<_> = {
            let $c = &mut shared;
            async { $body }.await
        };
        compare(&direct, &reference);
        assert!(
            !pooled.is_broken(),
            "a reply, even an error, leaves it usable"
        );
        direct
    }};
}

fn compare<T: PartialEq + std::fmt::Debug>(direct: &RedisResult<T>, reference: &RedisResult<T>) {
    match (direct, reference) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(a), Err(b)) => {
            assert_eq!(a.kind(), b.kind(), "{a} / {b}");
            assert_eq!(a.code(), b.code(), "{a} / {b}");
        }
        _ => panic!("pooled {direct:?}, multiplexed {reference:?}"),
    }
}

#[tokio::test]
async fn commands_pipelines_and_transactions_answer_like_redis_own_connection() {
    let server = RedisServer::start().unwrap();
    let (manager, pool) = setup(&server, 2).await;

    let v: Option<String> = same!(pool, |c| {
        let _: () = redis::cmd("SET").arg("k").arg("v").query_async(c).await?;
        redis::cmd("GET").arg("k").query_async(c).await
    })
    .unwrap();
    assert_eq!(v.as_deref(), Some("v"));

    // A server error is the command's error, not the connection's.
    let e = same!(pool, |c| {
        redis::cmd("INCR").arg("k").query_async::<i64>(c).await
    })
    .unwrap_err();
    assert!(e.to_string().contains("not an integer"), "{e}");

    // Pipelines, with and without an error inside.
    let r: (i64, i64, Option<String>) = same!(pool, |c| {
        redis::pipe()
            .cmd("DEL")
            .arg("n")
            .ignore()
            .cmd("INCR")
            .arg("n")
            .cmd("INCRBY")
            .arg("n")
            .arg(5)
            .cmd("GET")
            .arg("missing")
            .query_async(c)
            .await
    })
    .unwrap();
    assert_eq!(r, (1, 6, None));
    same!(pool, |c| {
        redis::pipe()
            .cmd("INCR")
            .arg("k")
            .cmd("PING")
            .query_async::<(i64, String)>(c)
            .await
    })
    .unwrap_err();

    // Transactions: committed, aborted by a command the server refused to queue, and
    // discarded because a watched key changed.
    let r: (i64, i64) = same!(pool, |c| {
        redis::pipe()
            .atomic()
            .cmd("SET")
            .arg("t")
            .arg(1)
            .ignore()
            .cmd("INCR")
            .arg("t")
            .cmd("INCR")
            .arg("t")
            .query_async(c)
            .await
    })
    .unwrap();
    assert_eq!(r, (2, 3));
    let e = same!(pool, |c| {
        redis::pipe()
            .atomic()
            .cmd("INCR")
            .arg("t")
            .cmd("SET")
            .arg("only-a-key")
            .query_async::<(i64, String)>(c)
            .await
    })
    .unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::Server(redis::ServerErrorKind::ExecAbort),
        "{e}"
    );
    let t: i64 = pool.get().await.unwrap().get("t").await.unwrap();
    assert_eq!(t, 3, "nothing of an aborted transaction ran");

    let mut watcher = pool.get().await.unwrap();
    let _: () = redis::cmd("WATCH")
        .arg("t")
        .query_async(&mut *watcher)
        .await
        .unwrap();
    let _: () = pool
        .multiplexed()
        .await
        .unwrap()
        .set("t", 10)
        .await
        .unwrap();
    let r: Option<(i64,)> = redis::pipe()
        .atomic()
        .cmd("INCR")
        .arg("t")
        .query_async(&mut *watcher)
        .await
        .unwrap();
    assert_eq!(r, None, "EXEC is nil after a watched key changed");
    manager.close().await.unwrap();
}

#[tokio::test]
async fn large_values_and_long_replies_arrive_whole() {
    let server = RedisServer::start().unwrap();
    let (manager, pool) = setup(&server, 1).await;
    let big: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let back = same!(pool, |c| {
        let _: () = redis::cmd("SET")
            .arg("big")
            .arg(&big)
            .query_async(c)
            .await?;
        redis::cmd("GET").arg("big").query_async::<Vec<u8>>(c).await
    })
    .unwrap();
    assert!(back == big, "4 MiB value changed on the way");

    let items: Vec<String> = (0..20_000).map(|i| format!("item-{i}")).collect();
    let list = same!(pool, |c| {
        let _: () = redis::cmd("DEL").arg("list").query_async(c).await?;
        let _: () = redis::cmd("RPUSH")
            .arg("list")
            .arg(&items)
            .query_async(c)
            .await?;
        redis::cmd("LRANGE")
            .arg("list")
            .arg(0)
            .arg(-1)
            .query_async::<Vec<String>>(c)
            .await
    })
    .unwrap();
    assert_eq!(list, items);
    manager.close().await.unwrap();
}

#[tokio::test]
async fn a_request_cut_short_retires_its_connection() {
    let server = RedisServer::start().unwrap();
    let (manager, pool) = setup(&server, 1).await;

    // Cancelled by the caller while the reply is outstanding.
    {
        let mut conn = pool.get().await.unwrap();
        let blpop = conn.blpop::<_, Option<(String, String)>>("queue", 0.0);
        let cut = tokio::time::timeout(Duration::from_millis(100), blpop).await;
        assert!(cut.is_err(), "BLPOP on an empty list waits");
        assert!(conn.is_broken(), "its reply is still on the way");
    }
    // The reply the cancelled BLPOP would have read must not reach anyone else.
    let _: () = pool
        .multiplexed()
        .await
        .unwrap()
        .rpush("queue", "job")
        .await
        .unwrap();
    {
        let mut conn = pool.get().await.unwrap();
        assert!(!conn.is_broken(), "a fresh connection replaced it");
        let _: () = conn.set("after", "cancel").await.unwrap();
        let v: String = conn.get("after").await.unwrap();
        assert_eq!(v, "cancel");
    }

    // Timed out by command_timeout (500ms here): a plain command on a frozen server. (A
    // blocking command is bounded by its own timeout instead: `BLPOP k 0` waits.)
    {
        let mut conn = pool.get().await.unwrap();
        server.pause().unwrap();
        let e = conn.get::<_, Option<String>>("after").await.unwrap_err();
        server.resume().unwrap();
        assert!(e.is_timeout(), "{e}");
        // It says what a timeout means for the command: not sent again, and a write may
        // have been applied.
        assert!(e.to_string().contains("may have been applied"), "{e}");
        assert!(conn.is_broken());
    }
    let mut conn = pool.get().await.unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut *conn).await.unwrap();
    assert_eq!(pong, "PONG");
    drop(conn);
    manager.close().await.unwrap();
}

/// A checkout whose connection the server closed under it (`CLIENT KILL`): its next
/// command fails as a dropped connection, says that a write may have been applied and to
/// check out another connection, and the connection is not handed out again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_checkout_says_what_a_lost_connection_means() {
    let server = RedisServer::start().unwrap();
    let (manager, pool) = setup(&server, 1).await;
    let mut admin = pool.multiplexed().await.unwrap();
    let mut conn = pool.get().await.unwrap();
    let id = client_id(&mut conn).await;
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(id)
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(killed, 1);
    // The kill may reach the connection after the command went out; either way it fails.
    let e = conn.incr::<_, _, i64>("n", 1).await.unwrap_err();
    assert!(e.is_connection_dropped(), "{e}");
    let said = e.to_string();
    assert!(said.contains("may have been applied"), "{said}");
    assert!(said.contains("check out another connection"), "{said}");
    assert!(conn.is_broken());
    drop(conn);
    let mut fresh = pool.get().await.unwrap();
    assert_ne!(
        client_id(&mut fresh).await,
        id,
        "the killed connection is not handed out again"
    );
    drop(fresh);
    manager.close().await.unwrap();
}

/// The server's id of the connection `conn` checked out.
async fn client_id(conn: &mut connhub::backend::redis::PooledRedisConnection) -> i64 {
    redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut **conn)
        .await
        .unwrap()
}
