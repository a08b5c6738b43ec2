//! A distributed lock on Redis, on a pool from the Manager: `SET key token NX PX ttl` to
//! take it, a Lua script that deletes the key only if it still holds our token to release
//! it (so a holder whose lock expired cannot release someone else's).
//!
//! Eight workers increment a shared counter with a read-modify-write that is only safe
//! under the lock; the final count proves mutual exclusion.
//!
//! `cargo run --example redis_lock --features testkit`

use std::time::Duration;

use connhub::redis::{AsyncCommands, Script};
use connhub::testkit::RedisServer;
use connhub::{Manager, RedisPool};

const UNLOCK: &str = r#"
if redis.call("GET", KEYS[1]) == ARGV[1] then
    return redis.call("DEL", KEYS[1])
else
    return 0
end
"#;

/// A held lock; release it with [`Lock::release`].
struct Lock {
    key: String,
    token: String,
}

/// Tries to take `key` for `ttl`, retrying every few milliseconds up to `wait`.
async fn acquire(
    pool: &RedisPool,
    key: &str,
    ttl: Duration,
    wait: Duration,
) -> Result<Option<Lock>, Box<dyn std::error::Error>> {
    let token = format!("{:016x}", fastrand::u64(..));
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let mut conn = pool.multiplexed().await?;
        let ttl_ms = u64::try_from(ttl.as_millis())?;
        let taken: Option<String> = connhub::redis::cmd("SET")
            .arg(key)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .query_async(&mut conn)
            .await?;
        if taken.is_some() {
            return Ok(Some(Lock {
                key: key.to_owned(),
                token,
            }));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

impl Lock {
    /// Releases the lock if it is still ours; false if it had expired and moved on.
    async fn release(self, pool: &RedisPool) -> Result<bool, Box<dyn std::error::Error>> {
        let mut conn = pool.multiplexed().await?;
        let deleted: i64 = Script::new(UNLOCK)
            .key(&self.key)
            .arg(&self.token)
            .invoke_async(&mut conn)
            .await?;
        Ok(deleted == 1)
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = RedisServer::start()?;
    let manager = Manager::new();
    let pool = manager.add_redis("locks", server.config()).await?;
    let _: () = pool.multiplexed().await?.set("counter", 0).await?;

    const WORKERS: usize = 8;
    const ROUNDS: usize = 25;
    let mut handles = Vec::new();
    for _ in 0..WORKERS {
        let pool = pool.clone();
        handles.push(tokio::spawn(async move {
            for _ in 0..ROUNDS {
                let lock = acquire(
                    &pool,
                    "lock:counter",
                    Duration::from_secs(5),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|e| e.to_string())?
                .ok_or("lock not acquired in time")?;
                // Unsafe without the lock: read, pause, write.
                let mut conn = pool.multiplexed().await.map_err(|e| e.to_string())?;
                let n: i64 = conn.get("counter").await.map_err(|e| e.to_string())?;
                tokio::task::yield_now().await;
                let _: () = conn
                    .set("counter", n + 1)
                    .await
                    .map_err(|e| e.to_string())?;
                if !lock.release(&pool).await.map_err(|e| e.to_string())? {
                    return Err("lock expired while held".to_owned());
                }
            }
            Ok::<(), String>(())
        }));
    }
    for h in handles {
        h.await??;
    }
    let total: i64 = pool.multiplexed().await?.get("counter").await?;
    println!("{WORKERS} workers x {ROUNDS} locked increments = {total}");
    manager.close().await?;
    if total != (WORKERS * ROUNDS) as i64 {
        return Err(format!("lost updates: expected {}, got {total}", WORKERS * ROUNDS).into());
    }
    println!("redis_lock: ok");
    Ok(())
}
