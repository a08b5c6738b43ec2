//! A backend of your own, on the same path as connhub's Redis and etcd backends: one
//! `Backend` impl over the crate's own bb8 manager (here bb8-postgres), registered with
//! `add_backend`. It gets the same states, events, fail-fast, fair checkout and status.
//! (A bb8 manager with no `Backend` impl plugs in with `add_pool`, checked by its own
//! `is_valid`.)
//!
//! `cargo run --example custom_backend --features testkit -- "host=127.0.0.1 user=postgres"`
//! (the connection string defaults to that; it needs a PostgreSQL server).

use std::time::Duration;

use bb8_postgres::PostgresConnectionManager;
use connhub::backend::{Backend, BoxFuture, ConnectionOf, Origin};
use connhub::{ConnectorConfig, Error, Kind, Manager, PoolConfig};
use tokio_postgres::NoTls;

/// The whole backend.
struct Postgres {
    endpoint: String,
}

impl Backend for Postgres {
    type Manager = PostgresConnectionManager<NoTls>;

    fn kind(&self) -> Kind {
        Kind::custom("postgres")
    }

    fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    /// The health check: one round trip.
    fn probe<'a>(
        &'a self,
        _manager: &'a Self::Manager,
        conn: &'a mut ConnectionOf<Self>,
    ) -> BoxFuture<'a, Result<(), tokio_postgres::Error>> {
        Box::pin(async move { conn.simple_query("SELECT 1").await.map(drop) })
    }

    /// A closed client is known locally: no round trip at checkout.
    fn is_broken(&self, conn: &ConnectionOf<Self>) -> Option<bool> {
        Some(conn.is_closed())
    }

    fn checks_locally(&self) -> bool {
        true
    }

    /// Bad credentials are `Error::Auth`, which connhub does not retry.
    fn classify(&self, connector: &str, error: tokio_postgres::Error) -> Error {
        let auth = error.code().is_some_and(|c| {
            *c == tokio_postgres::error::SqlState::INVALID_PASSWORD
                || *c == tokio_postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        });
        let origin = Origin::new(connector.to_owned(), self.kind());
        if auth {
            return Error::Auth {
                origin,
                message: error.to_string(),
                source: Some(std::sync::Arc::new(error)),
            };
        }
        Error::Backend {
            origin,
            source: std::sync::Arc::new(error),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dsn = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "host=127.0.0.1 user=postgres dbname=postgres".into());
    let pg = PostgresConnectionManager::new_from_stringlike(&dsn, NoTls)?;
    let manager = Manager::new();
    let connector = ConnectorConfig {
        connect_timeout: Duration::from_secs(3),
        ..ConnectorConfig::default()
    };
    let pool_config = PoolConfig {
        max_size: 4,
        ..PoolConfig::default()
    };
    let backend = Postgres {
        endpoint: "127.0.0.1:5432".into(),
    };
    let pool = manager
        .add_backend("db", pg, backend, connector, pool_config)
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
