//! A server at its connection cap (`redis-server --maxclients 4`, a proxy's limit, many
//! replicas scaled up against one Redis) is partial trouble, not an outage: the
//! connections it accepted keep serving, callers wait their turn on them, and the pool
//! grows back when the server takes more. Default settings (only `pool_size`), a 2-worker
//! runtime, and callers that retry without sleeping; bb8-redis on the same server in the
//! same run is the yardstick.

mod common;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use connhub::backend::Bb8Manager;
use connhub::redis::{self, AsyncCommands};
use connhub::testkit::RedisServer;
use connhub::{Event, Manager, Pool, State};

/// One test of this file at a time: each compares calls per second with bb8-redis's on
/// the same 2 cores, and another test's load running beside only one of the two runs
/// would make the comparison say nothing.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const CALLERS: usize = 32;
const POOL: u32 = 16;
const RUN: Duration = Duration::from_secs(4);

/// Calls served and failed by `CALLERS` tasks calling `call` in a loop for `RUN`, with no
/// sleep between calls; and the first failure, if any.
#[derive(Debug)]
struct Load {
    ok: u64,
    failed: u64,
    first_error: Option<String>,
}

impl Load {
    fn per_second(&self) -> f64 {
        self.ok as f64 / RUN.as_secs_f64()
    }
}

async fn load<F, Fut>(call: F) -> Load
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None));
    let until = Instant::now() + RUN;
    let tasks: Vec<_> = (0..CALLERS)
        .map(|i| {
            let (call, ok, failed, first_error) = (
                call.clone(),
                ok.clone(),
                failed.clone(),
                first_error.clone(),
            );
            tokio::spawn(async move {
                while Instant::now() < until {
                    match call(i).await {
                        Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            first_error.lock().unwrap().get_or_insert(e);
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let first_error = first_error.lock().unwrap().take();
    Load {
        ok: ok.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        first_error,
    }
}

/// bb8-redis with `max_size` 16 and its defaults, on `server`: the yardstick. Waits first
/// until the server has room for it (the connections of a pool closed just before go
/// away as the server notices).
async fn bb8_redis(server: &RedisServer) -> Load {
    let url = format!("redis://{}", server.addr());
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut tries = 0;
    while client.get_multiplexed_async_connection().await.is_err() {
        tries += 1;
        assert!(tries < 200, "the server keeps refusing connections");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let manager = bb8_redis::RedisConnectionManager::new(url).unwrap();
    let pool = bb8::Pool::builder()
        .max_size(POOL)
        .build(manager)
        .await
        .unwrap();
    load(move |i| {
        let pool = pool.clone();
        async move {
            let mut c = pool.get().await.map_err(|e| e.to_string())?;
            c.get::<_, Option<String>>(format!("cap:{i}"))
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
    })
    .await
}

/// The same load through a connhub pool, checking out with `get()`.
async fn through<M>(pool: &Pool<M>) -> Load
where
    M: Bb8Manager,
    M::Connection: redis::aio::ConnectionLike + Send + Sync,
{
    let pool = pool.clone();
    load(move |i| {
        let pool = pool.clone();
        async move {
            let mut c = pool.get().await.map_err(|e| e.to_string())?;
            (*c).get::<_, Option<String>>(format!("cap:{i}"))
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
    })
    .await
}

fn changes(events: &mut tokio::sync::broadcast::Receiver<Event>) -> Vec<(State, State)> {
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen.push((e.from, e.to));
    }
    seen
}

/// Sets the server's cap through one of the pool's own connections (a new one may be
/// refused).
async fn set_cap<M>(pool: &Pool<M>, cap: u32)
where
    M: Bb8Manager,
    M::Connection: redis::aio::ConnectionLike + Send + Sync,
{
    let mut c = pool.get().await.unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxclients")
        .arg(cap)
        .query_async(&mut *c)
        .await
        .unwrap();
}

/// Raises the server's cap, then waits for the pool to grow back to its size without a
/// restart; puts the cap back, for the yardstick that runs next.
async fn raise_cap_and_grow<M>(pool: &Pool<M>) -> Duration
where
    M: Bb8Manager,
    M::Connection: redis::aio::ConnectionLike + Send + Sync,
{
    set_cap(pool, 100).await;
    let raised = Instant::now();
    let limit = Duration::from_secs(60);
    loop {
        let s = pool.status();
        if s.pool.limit.is_none() && s.pool.connections == POOL {
            assert!(s.last_connect_error.is_none(), "{s:?}");
            set_cap(pool, 4).await;
            return raised.elapsed();
        }
        assert!(raised.elapsed() < limit, "did not grow back: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn capped() -> RedisServer {
    RedisServer::builder()
        .args(["--maxclients", "4"])
        .start()
        .unwrap()
}

/// The whole story on a capped server for `pool` (of `manager`, just built): the load,
/// then the cap raised, then bb8-redis alone on the same server as the yardstick.
async fn capped_run<M>(server: &RedisServer, manager: Manager, pool: Pool<M>, what: &str)
where
    M: Bb8Manager,
    M::Connection: redis::aio::ConnectionLike + Send + Sync,
{
    let mut events = manager.subscribe();
    let connhub = through(&pool).await;
    let status = pool.status();
    let seen = changes(&mut events);
    let grew = raise_cap_and_grow(&pool).await;
    let after = changes(&mut events);
    manager.close().await.unwrap();
    let baseline = bb8_redis(server).await;
    println!(
        "{what}, maxclients 4, pool_size {POOL}, {CALLERS} callers for {RUN:?}: {} ok / {} \
         failed ({:.0}/s), {} state changes, limit {:?} ({:?}); bb8-redis alone {} ok / {} \
         failed ({:.0}/s); ratio {:.2}; maxclients raised to 100: back to {POOL} connections \
         in {grew:?}",
        connhub.ok,
        connhub.failed,
        connhub.per_second(),
        seen.len(),
        status.pool.limit,
        status.last_connect_error,
        baseline.ok,
        baseline.failed,
        baseline.per_second(),
        connhub.per_second() / baseline.per_second(),
    );
    assert_eq!(connhub.failed, 0, "{:?}", connhub.first_error);
    assert!(seen.is_empty() && after.is_empty(), "{seen:?} {after:?}");
    assert_eq!(status.state, State::Healthy);
    let limit = status.pool.limit.expect("the limit shows in status");
    assert!((1..POOL).contains(&limit), "{status:?}");
    assert!(status.last_connect_error.is_some(), "{status:?}");
    assert!(
        connhub.per_second() >= 0.9 * baseline.per_second(),
        "connhub {connhub:?} against bb8-redis {baseline:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cap_is_not_an_outage() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let server = capped();
    let manager = Manager::new();
    let mut cfg = server.config();
    cfg.pool_size = POOL;
    let pool = manager.add_redis("cache", cfg).await.unwrap();
    capped_run(&server, manager, pool, "connhub's Redis backend").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cap_is_not_an_outage_for_a_plain_bb8_manager() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let server = capped();
    let manager = Manager::new();
    let pool = common::add_bb8_redis(&manager, &server, POOL).await;
    capped_run(&server, manager, pool, "add_pool(bb8-redis)").await;
}

/// At the cap, the pool's own connections fill the server, so the shared connection that
/// commands on the pool itself use cannot be opened: they go on the pool's connections
/// instead, and none fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_on_the_pool_itself_use_its_own_connections_at_the_cap() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let server = capped();
    let manager = Manager::new();
    let mut cfg = server.config();
    cfg.pool_size = POOL;
    let pool = manager.add_redis("cache", cfg).await.unwrap();
    // Checkouts grow the pool until the server refuses one more.
    let filled = through(&pool).await;
    assert_eq!(filled.failed, 0, "{:?}", filled.first_error);
    assert!(pool.status().pool.limit.is_some(), "{:?}", pool.status());
    let commands = load({
        let pool = pool.clone();
        move |_| {
            let mut pool = pool.clone();
            async move {
                let v: Option<String> = AsyncCommands::get(&mut pool, "k")
                    .await
                    .map_err(|e| e.to_string())?;
                drop(v);
                Ok(())
            }
        }
    })
    .await;
    assert_eq!(commands.failed, 0, "{:?}", commands.first_error);
    assert!(commands.ok > 100, "{commands:?}");
    assert_eq!(pool.status().state, State::Healthy);
    manager.close().await.unwrap();
}

/// Every connection of a pool at the cap killed at once (`CLIENT KILL TYPE normal` every
/// 200 ms for 3 s) under 64 callers that check out and retry without sleeping, default
/// settings: the replacements the pool opens fill the room the kill made, so a fresh
/// connection refused then is the cap, not an outage. No state change and no refused
/// checkout; the only failures are commands in flight on a killed connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_killed_all_at_once_at_the_cap_are_no_outage() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let (server, admin) = capped_at_six().await;
    let manager = Manager::new();
    let pool = manager.add_redis("cache", server.config()).await.unwrap();
    killed_at_the_cap(admin, manager, pool, "connhub's Redis backend").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_killed_all_at_once_at_the_cap_are_no_outage_for_a_plain_bb8_manager() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let (server, admin) = capped_at_six().await;
    let manager = Manager::new();
    let pool = common::add_bb8_redis(&manager, &server, 10).await;
    killed_at_the_cap(admin, manager, pool, "add_pool(bb8-redis)").await;
}

/// A server that takes 6 clients, and the killer's own connection to it, made first: a
/// pool fills the rest.
async fn capped_at_six() -> (RedisServer, redis::aio::MultiplexedConnection) {
    let server = RedisServer::builder()
        .args(["--maxclients", "6"])
        .start()
        .unwrap();
    let admin = redis::Client::open(format!("redis://{}", server.addr())).unwrap();
    let admin = admin.get_multiplexed_async_connection().await.unwrap();
    (server, admin)
}

/// The story of the tests above for `pool` (of `manager`, just built), killing through
/// `admin`.
async fn killed_at_the_cap<M>(
    mut admin: redis::aio::MultiplexedConnection,
    manager: Manager,
    pool: Pool<M>,
    what: &str,
) where
    M: Bb8Manager,
    M::Connection: redis::aio::ConnectionLike + Send + Sync,
{
    let mut events = manager.subscribe();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Calls served, commands lost in flight on a killed connection, and anything else
    // (a refused checkout included).
    let (ok, lost, other) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let first_other = Arc::new(std::sync::Mutex::new(None::<String>));
    let callers: Vec<_> = (0..64)
        .map(|i| {
            let (pool, stop, ok, other, lost, first_other) = (
                pool.clone(),
                stop.clone(),
                ok.clone(),
                other.clone(),
                lost.clone(),
                first_other.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let mut c = match pool.get().await {
                        Ok(c) => c,
                        Err(e) => {
                            other.fetch_add(1, Ordering::Relaxed);
                            first_other.lock().unwrap().get_or_insert(e.to_string());
                            continue;
                        }
                    };
                    match (*c).get::<_, Option<String>>(format!("cap:{i}")).await {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) if e.is_connection_dropped() => lost.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            first_other.lock().unwrap().get_or_insert(e.to_string());
                            other.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    // The callers grow the pool until the server refuses one more.
    let filled = Instant::now();
    while pool.status().pool.limit.is_none() {
        assert!(
            filled.elapsed() < Duration::from_secs(10),
            "never reached the cap: {:?}",
            pool.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = changes(&mut events);
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .arg("SKIPME")
            .arg("yes")
            .query_async(&mut admin)
            .await
            .unwrap();
    }
    let served_during = ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for c in callers {
        c.await.unwrap();
    }
    let during = changes(&mut events);
    let status = pool.status();
    println!(
        "{what}, maxclients 6, 64 callers, every connection killed 15 times: {} ok, {} lost \
         in flight, {} other failures ({:?}); state changes {during:?}; limit {:?}",
        ok.load(Ordering::Relaxed),
        lost.load(Ordering::Relaxed),
        other.load(Ordering::Relaxed),
        first_other.lock().unwrap(),
        status.pool.limit,
    );
    assert!(before.is_empty(), "{before:?}");
    assert!(during.is_empty(), "an outage was declared: {during:?}");
    assert_eq!(
        other.load(Ordering::Relaxed),
        0,
        "{:?}",
        first_other.lock().unwrap()
    );
    assert!(
        ok.load(Ordering::Relaxed) > served_during,
        "serves after the kills"
    );
    assert!(
        served_during > 1000,
        "served {served_during} during the kills"
    );
    assert_eq!(status.state, State::Healthy);
    manager.close().await.unwrap();
}

/// `min_idle_conns` above the server's cap: bb8 asks for a connection on every checkout
/// while the pool holds fewer, which would dial the capped server thousands of times a
/// second. Past the limit the pool lets one such dial through per `reconnect_interval`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_idle_above_the_cap_makes_no_connect_storm() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let (server, mut admin) = capped_at_six().await;
    let manager = Manager::new();
    let mut cfg = server.config();
    cfg.pool_size = POOL;
    cfg.min_idle_conns = POOL;
    let pool = manager.add_redis("cache", cfg).await.unwrap();
    let rejected = async |admin: &mut redis::aio::MultiplexedConnection| -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("stats")
            .query_async(admin)
            .await
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("rejected_connections:"))
            .and_then(|n| n.trim().parse().ok())
            .expect("INFO stats says how many connections it rejected")
    };
    let before = rejected(&mut admin).await;
    let served = through(&pool).await;
    let refused = rejected(&mut admin).await - before;
    let status = pool.status();
    println!(
        "min_idle_conns {POOL} at maxclients 6, {CALLERS} callers for {RUN:?}: {} ok / {} \
         failed, {refused} connections refused by the server, limit {:?}",
        served.ok, served.failed, status.pool.limit
    );
    assert_eq!(served.failed, 0, "{:?}", served.first_error);
    assert!(status.pool.limit.is_some(), "{status:?}");
    // One dial per reconnect_interval (250 ms) past the limit, and the growth trials:
    // about 20 in 4 s. bb8 alone asks thousands of times a second.
    assert!(refused < 100, "{refused} connections refused in {RUN:?}");
    manager.close().await.unwrap();
}
