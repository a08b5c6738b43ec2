//! Real `redis-server` and `etcd` processes on free loopback ports, each in its own
//! temporary directory, for tests: start, [`kill`](RedisServer::kill) (SIGKILL),
//! [`pause`](RedisServer::pause) (SIGSTOP), [`resume`](RedisServer::resume) (SIGCONT),
//! [`restart`](RedisServer::restart) on the same port (or
//! [`restart_async`](RedisServer::restart_async), which waits on tokio's timer instead of
//! blocking), and clean-up on drop.
//!
//! Topologies too: [`RedisSentinel`] (a master, a replica and three sentinels, with
//! [`kill_master`](RedisSentinel::kill_master)) and [`RedisCluster`] (three masters with a
//! replica each, made with `redis-cli --cluster create`).
//!
//! Faults of the network in between: a [`Relay`] in front of a server, whose connections
//! can go [`silent`](Relay::silence) as a NAT's flows do when it drops them.
//!
//! Enabled by the `testkit` feature. The binaries must be on `PATH` (Debian:
//! `apt-get install redis-server redis-tools etcd-server`); if one is missing, starting a server
//! fails with an error that says so.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let mut redis = connhub::testkit::RedisServer::start()?;
//! let config = redis.config(); // a RedisConfig pointing at it
//! redis.kill();
//! redis.restart_async().await?;
//! # Ok(()) }
//! ```

mod certs;
mod cli;
mod cluster;
mod etcd;
mod process;
mod redis;
mod relay;
mod sentinel;

pub use certs::TestCerts;
pub use cluster::{RedisCluster, RedisClusterBuilder};
pub use etcd::{EtcdCluster, EtcdServer, EtcdServerBuilder, ServerTls};
pub use process::free_port;
pub use redis::{RedisServer, RedisServerBuilder};
pub use relay::Relay;
pub use sentinel::{RedisSentinel, RedisSentinelBuilder};
