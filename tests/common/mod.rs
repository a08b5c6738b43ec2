#![allow(dead_code)]
//! Helpers shared by the integration tests.

use std::time::Duration;

use connhub::testkit::RedisServer;
use connhub::{ConnectorConfig, Manager, Pool, PoolConfig};

/// Short timeouts so failures show quickly; generous enough for a loaded CI machine.
pub fn quick() -> ConnectorConfig {
    ConnectorConfig {
        connect_timeout: Duration::from_secs(3),
        health_check_interval: Duration::from_millis(500),
        reconnect_interval: Duration::from_millis(200),
        reconnect_backoff_max: Duration::from_millis(400),
        drain_timeout: Duration::from_secs(2),
        ..ConnectorConfig::default()
    }
}

/// Waits up to `limit` for `cond`.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

/// Waits up to 20 s for `state()` to leave `Healthy` (a server frozen with default
/// settings: `command_timeout` plus the check's bound, 5 s each); panics if it does not.
/// Returns how long after `since` it went down.
pub async fn until_down(since: std::time::Instant, state: impl Fn() -> connhub::State) -> Duration {
    let down = eventually(Duration::from_secs(20), || {
        state() != connhub::State::Healthy
    })
    .await;
    let found = since.elapsed();
    assert!(down, "still {:?} {found:?} into the freeze", state());
    found
}

/// True once a checkout and a SET succeed, trying for up to five seconds.
pub async fn redis_serves(pool: &connhub::RedisPool) -> bool {
    use connhub::redis::AsyncCommands;
    for _ in 0..100 {
        if let Ok(mut conn) = pool.get().await
            && conn.set::<_, _, ()>("connhub:test:serves", 1).await.is_ok()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Retries a `SET` through `pool.get()` with no sleep (calls fail fast while the connector
/// is down) until one succeeds; panics after `limit`. Returns how long it took.
pub async fn until_a_write_succeeds(pool: &connhub::RedisPool, limit: Duration) -> Duration {
    use connhub::redis::AsyncCommands;
    let started = std::time::Instant::now();
    loop {
        if let Ok(mut c) = pool.get().await
            && c.set::<_, _, ()>("connhub:probe", 1).await.is_ok()
        {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "no write succeeded within {limit:?}: {:?}",
            pool.status()
        );
        tokio::task::yield_now().await;
    }
}

/// Log output kept for a test to read: give clones of it to a subscriber as its writer.
#[derive(Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// The lines that contain `text`.
    pub fn lines_with(&self, text: &str) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| l.contains(text))
            .map(str::to_owned)
            .collect()
    }
}

/// bb8-redis's own manager for `server`, registered with default connector settings and
/// a pool of `max_size`: the plain-bb8 yardstick beside connhub's Redis backend.
pub async fn add_bb8_redis(
    manager: &Manager,
    server: &RedisServer,
    max_size: u32,
) -> Pool<bb8_redis::RedisConnectionManager> {
    add_bb8_redis_at(manager, &server.addr(), max_size).await
}

/// [`add_bb8_redis`] for the server at `addr` (`host:port`), a relay's, say.
pub async fn add_bb8_redis_at(
    manager: &Manager,
    addr: &str,
    max_size: u32,
) -> Pool<bb8_redis::RedisConnectionManager> {
    let bb8_manager = bb8_redis::RedisConnectionManager::new(format!("redis://{addr}")).unwrap();
    let pool_config = PoolConfig {
        max_size,
        ..PoolConfig::default()
    };
    manager
        .add_pool(
            "bb8-redis",
            bb8_manager,
            ConnectorConfig::default(),
            pool_config,
        )
        .await
        .unwrap()
}
