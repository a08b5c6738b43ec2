//! etcd's lease-backed lock, on a pool from the Manager: the lock lives as long as its
//! lease, so a holder that dies releases it when the lease expires.
//!
//! Six workers increment a counter key with a read-modify-write that is only safe under
//! the lock; the final count proves mutual exclusion.
//!
//! `cargo run --example etcd_lock --features testkit`

use connhub::etcd_client::LockOptions;
use connhub::testkit::EtcdServer;
use connhub::{EtcdPool, Manager};

async fn locked_increment(pool: &EtcdPool) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut client = pool.client().await?;
    // The lease keeps the lock alive; if we die, it expires after 10 s and frees it.
    let lease = client.lease_grant(10, None).await?;
    let lock = client
        .lock(
            "lock/counter",
            Some(LockOptions::new().with_lease(lease.id())),
        )
        .await?;
    let current = client.get("counter", None).await?;
    let n: i64 = match current.kvs().first() {
        Some(kv) => kv.value_str()?.parse()?,
        None => 0,
    };
    tokio::task::yield_now().await;
    client.put("counter", (n + 1).to_string(), None).await?;
    client.unlock(lock.key()).await?;
    client.lease_revoke(lease.id()).await?;
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let server = EtcdServer::start()?;
    let manager = Manager::new();
    let pool = manager.add_etcd("locks", server.config()).await?;

    const WORKERS: usize = 6;
    const ROUNDS: usize = 10;
    let mut handles = Vec::new();
    for _ in 0..WORKERS {
        let pool = pool.clone();
        handles.push(tokio::spawn(async move {
            for _ in 0..ROUNDS {
                locked_increment(&pool).await?;
            }
            Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
        }));
    }
    for h in handles {
        h.await??;
    }
    let mut client = pool.client().await?;
    let resp = client.get("counter", None).await?;
    let total: i64 = resp
        .kvs()
        .first()
        .map(|kv| kv.value_str())
        .transpose()?
        .unwrap_or("0")
        .parse()?;
    println!("{WORKERS} workers x {ROUNDS} locked increments = {total}");
    manager.close().await?;
    if total != (WORKERS * ROUNDS) as i64 {
        return Err(format!("lost updates: expected {}, got {total}", WORKERS * ROUNDS).into());
    }
    println!("etcd_lock: ok");
    Ok(())
}
