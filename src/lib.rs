//! # connhub
//!
//! One place for a service to declare, pool, watch and close its connections to Redis,
//! etcd and any backend that has a [`bb8`] manager.
//!
//! ## The model
//!
//! - A **connector** is one named connection to one backend (`cache` on Redis, `registry`
//!   on etcd). Every connector is a [`Pool`]: a `bb8` pool plus the connector's health.
//!   The [`Connector`] trait is the object-safe view the [`Manager`] keeps of all of them.
//! - The **[`Manager`]** is the registry: it builds connectors from a [`ManagerConfig`]
//!   (YAML, TOML, JSON, environment overrides; validated before anything connects) or one
//!   by one (`add_redis`, `add_etcd`, `add_pool`), hands out typed pools by name
//!   (`manager.redis("cache")?`), checks them, reports their [`Status`], broadcasts their
//!   state changes as [`Event`]s, and closes them.
//! - **Health** is a background concern. Each connector has a task that checks the backend
//!   every `health_check_interval`; a failed check, or a connection failing in use, moves
//!   it to [`State::Reconnecting`], where it reconnects with exponential backoff and
//!   jitter, up to `max_reconnect_attempts` before [`State::Failed`] (where it is still
//!   probed). A checkout never pings the server: while healthy, `get()` is a bb8 checkout
//!   and nothing more, and a connection that failed or predates an outage is never handed
//!   out again.
//! - **Fail fast.** While a connector is down, `get()` returns [`Error::Unavailable`] at
//!   once, carrying the last real error, instead of waiting out a timeout; a checkout that
//!   does time out says why ([`Error::Timeout`] with the last error).
//! - **Errors** are one [`Error`] type; each names its connector and keeps the real cause.
//!   Passwords are held in [`Secret`] and never printed.
//!
//! ## Example
//!
//! ```no_run
//! use connhub::{Manager, ManagerConfig};
//! use connhub::redis::AsyncCommands;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ManagerConfig::from_yaml_str(r#"
//! redis:
//!   cache:
//!     addr: 127.0.0.1:6379
//!     pool_size: 16
//! etcd:
//!   registry:
//!     endpoints: [127.0.0.1:2379]
//! "#)?;
//! let manager = Manager::from_config(config).await?;
//!
//! let mut conn = manager.redis("cache")?.get().await?;
//! let _: () = conn.set("greeting", "hello").await?;
//!
//! let mut etcd = manager.etcd("registry")?.get().await?;
//! etcd.put("service/a", "10.0.0.1:80", None).await?;
//! # drop((conn, etcd));
//! manager.close().await?;
//! # Ok(()) }
//! ```
//!
//! ## Where things are
//!
//! The crate root holds what a service uses every day: the [`Manager`], the configs, the
//! pools and their connections, the stream items, [`Error`], [`State`], [`Status`],
//! [`Event`] and the reports. The rest is in three modules:
//!
//! - [`config`]: every config type, including the topology ones
//!   ([`SentinelConfig`](config::SentinelConfig), [`ClusterConfig`](config::ClusterConfig))
//!   and the [`ConfigIssue`](config::ConfigIssue)s of a refused config;
//! - [`status`]: the parts of a [`Status`] ([`PoolCounts`](status::PoolCounts),
//!   [`StreamCounts`](status::StreamCounts));
//! - [`backend`]: the two backends that ship with connhub, [`backend::redis`] and
//!   [`backend::etcd`], with all their types (the stream handles such as
//!   [`Watch`](backend::etcd::Watch) and [`Lease`](backend::etcd::Lease), the bb8
//!   managers), and what you need to write a backend of your own
//!   ([`Backend`](backend::Backend), [`Origin`](backend::Origin), ...).
//!
//! Do not confuse [`backend::redis`] (connhub's Redis backend) with [`redis`] (the redis
//! client crate, re-exported so you use the same version as connhub, as bb8-redis does);
//! likewise [`etcd_client`] and [`bb8`].
//!
//! ## Features
//!
//! - `testkit`: start real `redis-server` and `etcd` processes on free loopback ports, with
//!   kill, pause, resume and restart, for your own tests ([`testkit`]).
#![deny(
    missing_docs,
    missing_debug_implementations,
    unsafe_code,
    unreachable_pub
)]
// No lock is held across an await: the crate has no async lock, and this holds the std
// ones to it.
#![deny(clippy::await_holding_lock)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "axum")]
pub mod axum;
pub mod backend;
pub mod config;
mod connector;
mod error;
mod health;
mod manager;
#[cfg(feature = "metrics")]
mod metrics;
mod pool;
pub mod status;
mod sync;
#[cfg(feature = "testkit")]
pub mod testkit;

// The everyday names. The rest are in `config`, `status` and `backend`.
#[doc(no_inline)]
pub use backend::etcd::{EtcdConnection, EtcdPool, LeaseEvent, WatchItem, WatchSpec};
#[doc(no_inline)]
pub use backend::redis::{
    RedisConnection, RedisPool, SharedRedisConnection, SubscriptionItem, Topics,
};
#[doc(no_inline)]
pub use config::{
    ConfigErrors, ConnectorConfig, EtcdConfig, ManagerConfig, PoolConfig, RedisConfig, Secret,
    TlsConfig,
};
pub use connector::Connector;
pub use error::{Error, Result, TimeoutKind};
pub use manager::{HealthCheck, HealthReport, Manager, ReloadReport};
pub use pool::{OnConnect, Pool, PooledConnection};
#[doc(no_inline)]
pub use status::{Event, Kind, State, Status};

pub use bb8;
pub use etcd_client;
pub use redis;
