//! Any bb8 manager plugs into the Manager with `add_pool`: here bb8-postgres, against a
//! PostgreSQL server. Its health check is bb8's own validation (a round trip), and it gets
//! the same states, events, fail-fast and status as Redis and etcd.
//!
//! `cargo run --example custom_backend --features testkit -- "host=127.0.0.1 user=postgres"`
//! (the connection string defaults to that).

use std::time::Duration;

use bb8_postgres::PostgresConnectionManager;
use connhub::{ConnectorConfig, Manager, PoolConfig};
use tokio_postgres::NoTls;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dsn = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "host=127.0.0.1 user=postgres dbname=postgres".into());
    let backend = PostgresConnectionManager::new_from_stringlike(&dsn, NoTls)?;
    let manager = Manager::new();
    let connector = ConnectorConfig {
        connect_timeout: Duration::from_secs(3),
        ..ConnectorConfig::default()
    };
    let pool_config = PoolConfig {
        max_size: 4,
        endpoint: "127.0.0.1:5432".into(),
        ..PoolConfig::default()
    };
    let pool = manager
        .add_pool("db", backend, connector, pool_config)
        .await?;

    let conn = pool.get().await?;
    let row = conn.query_one("SELECT 40 + 2 AS answer", &[]).await?;
    let answer: i32 = row.get("answer");
    drop(conn);
    println!("postgres says {answer}");

    // The typed pool comes back by name, like the built-in backends.
    let again = manager.pool::<PostgresConnectionManager<NoTls>>("db")?;
    let s = again.status();
    println!(
        "{} ({}) is {}, {} connections",
        s.name, s.kind, s.state, s.pool.connections
    );
    manager.close().await?;
    Ok(())
}
