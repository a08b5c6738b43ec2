//! A `RedisPool` used as a connection, with default settings on a 2-worker runtime:
//! commands and pipelines on it, blocking commands with their own timeouts, stateful ones
//! refused, and the retry rule under `CLIENT KILL`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use connhub::redis::AsyncCommands;
use connhub::testkit::RedisServer;
use connhub::{Manager, RedisConfig, RedisPool};

async fn pool(server: &RedisServer, config: impl FnOnce(&mut RedisConfig)) -> (Manager, RedisPool) {
    let manager = Manager::new();
    let mut c = server.config();
    config(&mut c);
    let pool = manager.add_redis("cache", c).await.unwrap();
    (manager, pool)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_and_pipelines_go_straight_on_the_pool() {
    let server = RedisServer::start().unwrap();
    let (manager, pool) = pool(&server, |_| {}).await;
    let mut cache = manager.redis("cache").unwrap();
    let _: () = cache.set("k", "v").await.unwrap();
    // `get()` on a pool is the checkout: the command is called by its trait path.
    let v: Option<String> = AsyncCommands::get(&mut cache, "k").await.unwrap();
    assert_eq!(v.as_deref(), Some("v"));
    let n: i64 = connhub::redis::cmd("INCRBY")
        .arg("n")
        .arg(5)
        .query_async(&mut cache)
        .await
        .unwrap();
    assert_eq!(n, 5);
    let (a, b): (i64, i64) = connhub::redis::pipe()
        .atomic()
        .incr("n", 1)
        .incr("n", 1)
        .query_async(&mut cache)
        .await
        .unwrap();
    assert_eq!((a, b), (6, 7));
    let (x,): (String,) = connhub::redis::pipe()
        .get("k")
        .query_async(&mut cache)
        .await
        .unwrap();
    assert_eq!(x, "v");
    // A server error is the server's, untouched.
    let wrong: Result<i64, _> = cache.incr("k", 1).await;
    assert!(wrong.is_err());
    // Stateful commands are refused, saying what to use instead.
    let watch: Result<(), _> = connhub::redis::cmd("WATCH")
        .arg("k")
        .query_async(&mut cache)
        .await;
    let e = watch.unwrap_err().to_string();
    assert!(e.contains("WATCH") && e.contains("get()"), "{e}");
    // No checkout was used for plain commands.
    assert_eq!(pool.status().pool.gets, 0);
    manager.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_command_waits_past_command_timeout_as_long_as_it_asks() {
    let server = RedisServer::start().unwrap();
    let (manager, mut cache) = pool(&server, |c| {
        c.command_timeout = Some(Duration::from_secs(1));
    })
    .await;
    let mut pusher = cache.clone();
    let push = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let _: i64 = pusher.rpush("q", "job").await.unwrap();
    });
    let started = std::time::Instant::now();
    let got: Option<(String, String)> = cache.blpop("q", 0.0).await.unwrap();
    assert_eq!(got, Some(("q".into(), "job".into())));
    assert!(started.elapsed() >= Duration::from_millis(2900));
    push.await.unwrap();
    // Its own timeout passes: Redis answers nil, which is no error.
    let none: Option<(String, String)> = cache.blpop("q", 1.0).await.unwrap();
    assert_eq!(none, None);
    // The same on a checkout.
    let mut conn = cache.get().await.unwrap();
    let none: Option<(String, String)> = conn.blpop("q", 1.5).await.unwrap();
    assert_eq!(none, None);
    drop(conn);
    // A plain command is still bounded by command_timeout: a frozen server fails it, and
    // the shared connection it timed out on is retired.
    let shared = cache.multiplexed().await.unwrap();
    server.pause().unwrap();
    let started = std::time::Instant::now();
    let frozen: Result<(), _> = AsyncCommands::set(&mut cache, "k2", "v").await;
    server.resume().unwrap();
    let e = frozen.unwrap_err();
    // Still a timeout, and it says a write may have been applied: not sent again.
    assert!(e.is_timeout(), "{e}");
    assert!(e.to_string().contains("may have been applied"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(
        shared.is_broken(),
        "the timed-out connection is not used again"
    );
    let after: Option<String> = AsyncCommands::get(&mut cache, "k").await.unwrap();
    assert_eq!(after, None);
    manager.close().await.unwrap();
}

/// What the callers saw while the server killed every client connection now and then.
#[derive(Default)]
struct Seen {
    gets_ok: AtomicU64,
    gets_failed: AtomicU64,
    incrs_ok: AtomicU64,
    incrs_failed: AtomicU64,
    incrs_said_maybe: AtomicU64,
    first_get_failure: std::sync::Mutex<Option<String>>,
}

impl Seen {
    fn report(&self, who: &str, counter: i64) {
        println!(
            "{who}: GET {} ok, {} failed; INCR {} acknowledged, {} failed ({} saying they may \
             have been applied); counter {counter}",
            self.gets_ok.load(Ordering::Relaxed),
            self.gets_failed.load(Ordering::Relaxed),
            self.incrs_ok.load(Ordering::Relaxed),
            self.incrs_failed.load(Ordering::Relaxed),
            self.incrs_said_maybe.load(Ordering::Relaxed),
        );
    }
}

impl Seen {
    /// No `GET` failed, and no `INCR` was applied twice: the counter is at least the
    /// acknowledged ones and at most those and the failed ones, each of which says it may
    /// have been applied.
    fn assert_safe(&self, counter: i64) {
        let gets_failed = self.gets_failed.load(Ordering::Relaxed);
        assert_eq!(
            gets_failed,
            0,
            "first: {:?}",
            self.first_get_failure.lock().unwrap()
        );
        assert!(self.gets_ok.load(Ordering::Relaxed) > 1000);
        let acked = i64::try_from(self.incrs_ok.load(Ordering::Relaxed)).unwrap();
        let failed = i64::try_from(self.incrs_failed.load(Ordering::Relaxed)).unwrap();
        assert!(
            acked <= counter && counter <= acked + failed,
            "counter {counter}, acknowledged {acked}, failed {failed}: an INCR applied twice"
        );
        assert_eq!(
            self.incrs_said_maybe.load(Ordering::Relaxed),
            self.incrs_failed.load(Ordering::Relaxed),
            "every failed INCR says it may have been applied"
        );
    }
}

/// `CLIENT KILL TYPE normal` every 200 ms, `times` times, each from a fresh connection
/// (the one before was killed too).
async fn kill_clients_every_200ms(server: &RedisServer, times: u32) {
    let client = connhub::redis::Client::open(format!("redis://{}", server.addr())).unwrap();
    for _ in 0..times {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Ok(mut c) = client.get_multiplexed_async_connection().await {
            let _: Result<i64, _> = connhub::redis::cmd("CLIENT")
                .arg("KILL")
                .arg("TYPE")
                .arg("normal")
                .arg("SKIPME")
                .arg("yes")
                .query_async(&mut c)
                .await;
        }
    }
}

/// 16 tasks `GET` and 16 `INCR` through `conn` for 3 s while `CLIENT KILL TYPE normal`
/// runs every 200 ms; returns what they saw and the counter's final value.
async fn under_client_kill<C>(server: &RedisServer, conn: C) -> (Arc<Seen>, i64)
where
    C: connhub::redis::aio::ConnectionLike + Clone + Send + Sync + 'static,
{
    let admin = connhub::redis::Client::open(format!("redis://{}", server.addr())).unwrap();
    let mut admin = admin.get_multiplexed_async_connection().await.unwrap();
    let _: () = admin.set("counter", 0).await.unwrap();
    let _: () = admin.set("value", "x").await.unwrap();
    let seen = Arc::new(Seen::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..32 {
        let (mut conn, seen, stop) = (conn.clone(), seen.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if i % 2 == 0 {
                    match conn.get::<_, Option<String>>("value").await {
                        Ok(_) => seen.gets_ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            seen.first_get_failure
                                .lock()
                                .unwrap()
                                .get_or_insert(e.to_string());
                            seen.gets_failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                } else {
                    match conn.incr::<_, _, i64>("counter", 1).await {
                        Ok(_) => seen.incrs_ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            if e.to_string().contains("may have been applied") {
                                seen.incrs_said_maybe.fetch_add(1, Ordering::Relaxed);
                            }
                            seen.incrs_failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
                // Callers that retry without sleeping.
                tokio::task::yield_now().await;
            }
        }));
    }
    kill_clients_every_200ms(server, 15).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let client = connhub::redis::Client::open(format!("redis://{}", server.addr())).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let counter: i64 = c.get("counter").await.unwrap();
    (seen, counter)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connections_fail_no_read_and_apply_no_write_twice() {
    let server = RedisServer::start().unwrap();
    let (manager, cache) = pool(&server, |_| {}).await;
    let (seen, counter) = under_client_kill(&server, cache.clone()).await;
    seen.report("connhub RedisPool", counter);
    seen.assert_safe(counter);
    let status = cache.status();
    assert!(status.retried_commands > 0, "{status:?}");
    assert_eq!(status.state, connhub::State::Healthy);
    manager.close().await.unwrap();

    // The redis crate's ConnectionManager in the same run, for the report.
    let client = connhub::redis::Client::open(format!("redis://{}", server.addr())).unwrap();
    let cm = client.get_connection_manager().await.unwrap();
    let (seen, counter) = under_client_kill(&server, cm).await;
    seen.report("redis ConnectionManager", counter);
}

/// A `multiplexed()` handle taken once and kept for the whole run, as a service stores
/// one: after each kill it moves on to the pool's next shared connection, and a command
/// that met the loss follows the retry rule. Before, the first kill left every kept
/// handle failing for good (`broken pipe`), as the redis crate's own
/// `MultiplexedConnection` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_multiplexed_handle_outlives_killed_connections() {
    let server = RedisServer::start().unwrap();
    let (manager, cache) = pool(&server, |_| {}).await;
    let kept = cache.multiplexed().await.unwrap();
    let (seen, counter) = under_client_kill(&server, kept.clone()).await;
    seen.report("connhub multiplexed(), kept", counter);
    seen.assert_safe(counter);
    let mut kept = kept;
    let after: Option<String> = kept.get("value").await.unwrap();
    assert_eq!(after.as_deref(), Some("x"));
    assert_eq!(cache.state(), connhub::State::Healthy);
    manager.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_writes_are_retried_and_retries_can_be_turned_off() {
    let server = RedisServer::start().unwrap();
    let (manager, cache) = pool(&server, |c| c.command_retries = 0).await;
    let (seen, _) = under_client_kill(&server, cache.clone()).await;
    assert!(
        seen.gets_failed.load(Ordering::Relaxed) > 0,
        "with command_retries: 0, a read on a killed connection fails"
    );
    assert_eq!(cache.status().retried_commands, 0);
    assert_eq!(
        seen.incrs_said_maybe.load(Ordering::Relaxed),
        seen.incrs_failed.load(Ordering::Relaxed),
        "with retries off too, every failed INCR says it may have been applied"
    );
    manager.close().await.unwrap();

    let (manager, cache) = pool(&server, |_| {}).await;
    let mut idempotent = cache.idempotent();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut failed = 0;
            while !stop.load(Ordering::Relaxed) {
                if idempotent.set::<_, _, ()>("flag", "on").await.is_err() {
                    failed += 1;
                }
                tokio::task::yield_now().await;
            }
            failed
        })
    };
    kill_clients_every_200ms(&server, 5).await;
    stop.store(true, Ordering::Relaxed);
    assert_eq!(writer.await.unwrap(), 0, "an idempotent SET is sent again");
    assert!(cache.status().retried_commands > 0);
    manager.close().await.unwrap();
}

/// Commands the pool sends on a pooled connection of their own follow the same rule: a
/// blocking read (`XREAD ... BLOCK`) whose connection is killed is sent again on another
/// checkout; a blocking pop (a write) is not, and says it may have been applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_on_a_checkout_of_their_own_follow_the_retry_rule() {
    let server = RedisServer::start().unwrap();
    let (manager, cache) = pool(&server, |_| {}).await;
    let mut admin = cache.clone();
    let _: String = admin.xadd("s", "*", &[("f", "v")]).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (reads_ok, pops_failed, pops_said_maybe) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (mut cache, stop) = (cache.clone(), stop.clone());
        let (reads_ok, pops_failed, said) = (
            reads_ok.clone(),
            pops_failed.clone(),
            pops_said_maybe.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut first_failure = None;
            while !stop.load(Ordering::Relaxed) {
                if i % 2 == 0 {
                    // Answers at once: the stream has an entry after 0.
                    let read: Result<connhub::redis::Value, _> = connhub::redis::cmd("XREAD")
                        .arg("BLOCK")
                        .arg(1000)
                        .arg("STREAMS")
                        .arg("s")
                        .arg(0)
                        .query_async(&mut cache)
                        .await;
                    match read {
                        Ok(_) => {
                            reads_ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            first_failure.get_or_insert(e.to_string());
                        }
                    }
                } else {
                    let _: Result<(), _> = cache.rpush("q", "x").await;
                    let popped: Result<Option<(String, String)>, _> = cache.blpop("q", 1.0).await;
                    if let Err(e) = popped {
                        pops_failed.fetch_add(1, Ordering::Relaxed);
                        if e.to_string().contains("may have been applied") {
                            said.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            first_failure
        }));
    }
    kill_clients_every_200ms(&server, 15).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        assert_eq!(
            t.await.unwrap(),
            None,
            "a blocking read on a killed connection failed"
        );
    }
    assert!(reads_ok.load(Ordering::Relaxed) > 100);
    assert_eq!(
        pops_said_maybe.load(Ordering::Relaxed),
        pops_failed.load(Ordering::Relaxed),
        "every failed BLPOP says it may have been applied"
    );
    assert!(cache.status().retried_commands > 0, "{:?}", cache.status());
    manager.close().await.unwrap();
}

/// A read lost with its connection while the server went away, before the pool ever had
/// to ask whether that command only reads: it is not sent again (nothing answers), and its
/// error says what is not known instead of calling it a write that may have been applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_lost_with_the_server_is_not_called_a_write() {
    let mut server = RedisServer::start().unwrap();
    let (manager, mut cache) = pool(&server, |_| {}).await;
    // The shared connection is open; no command was ever lost, so none was asked about.
    let _: () = cache.set("k", "v").await.unwrap();
    // The server holds every command from now on, and answers none before it dies (a
    // SIGSTOP would not do: the testkit's kill resumes the server first).
    let mut admin = connhub::redis::Client::open(format!("redis://{}", server.addr()))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = connhub::redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(60_000)
        .arg("ALL")
        .query_async(&mut admin)
        .await
        .unwrap();
    let mut reader = cache.clone();
    let read =
        tokio::spawn(
            async move { AsyncCommands::get::<_, Option<String>>(&mut reader, "k").await },
        );
    // The GET is held by the paused server; then the server dies under it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill();
    let e = read.await.unwrap().unwrap_err();
    assert!(e.is_connection_dropped(), "{e}");
    let e = e.to_string();
    assert!(
        e.contains("could not be asked whether the command only reads"),
        "{e}"
    );
    assert!(!e.contains("it may have been applied, so"), "{e}");
    manager.close().await.unwrap();
}
