//! [`RedisConfig`]: one Redis connector.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::connector::{key, non_zero_opt};
use super::{ClusterConfig, ConnectorConfig, Secret, SentinelConfig, TlsConfig, addr};
use crate::error::ConfigErrors;

/// One Redis connector: where it connects, how it authenticates, how its pool is sized.
///
/// It connects to one of three topologies: a single server (`addr`), the master a set of
/// sentinels names (`sentinel`), or a Redis Cluster (`cluster`). Give exactly one; `addr`
/// is the default (`127.0.0.1:6379`) when neither of the others is given.
///
/// ```
/// let mut c = connhub::RedisConfig::default();
/// c.addr = "127.0.0.1:6379".into();
/// c.pool_size = 16;
/// assert!(!format!("{c:?}").contains("hunter2"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RedisConfig {
    /// Timeouts, health checks and reconnects.
    #[serde(flatten)]
    pub connector: ConnectorConfig,
    /// `host:port`, or a `redis://host:port` URL, of a single server. Default
    /// `127.0.0.1:6379`. Leave it out when `sentinel` or `cluster` is given.
    pub addr: String,
    /// Find the master through Redis Sentinel instead of a fixed `addr`.
    pub sentinel: Option<SentinelConfig>,
    /// Connect to a Redis Cluster instead of a single server.
    pub cluster: Option<ClusterConfig>,
    /// ACL user name (Redis 6+); `None` authenticates as `default`.
    pub username: Option<String>,
    /// Password (of the data nodes, with `sentinel`); never printed.
    pub password: Option<Secret>,
    /// Database selected after authentication. Default `0`; a cluster has only `0`.
    pub db: u32,
    /// How many times a failed connection attempt is retried right away (I/O errors only,
    /// never bad credentials) before the attempt counts as failed. Default `0`.
    pub max_retries: u32,
    /// Largest number of pooled connections, and of `get()` checkouts at once (callers
    /// beyond it wait their turn, first come, first served); bb8's `max_size`. Default
    /// `10`.
    pub pool_size: u32,
    /// Connections kept open even when idle; bb8's `min_idle`. Default `0`.
    pub min_idle_conns: u32,
    /// Idle connections above `min_idle_conns` are closed after this long. Default `5m`.
    #[serde(with = "humantime_serde")]
    pub max_idle_time: Option<Duration>,
    /// Connections are closed after this age. Default `30m`.
    #[serde(with = "humantime_serde")]
    pub max_lifetime: Option<Duration>,
    /// Longest wait for the answer to one command; a hung server fails the call with
    /// [`Error::Timeout`](crate::Error::Timeout) instead of hanging it. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Option<Duration>,
    /// How many times a command sent on the pool itself (a [`RedisPool`](crate::RedisPool)
    /// used as a connection) is sent again after its connection was lost, when that
    /// cannot apply it twice: it is read-only (the server's own `COMMAND INFO` says so),
    /// or it went through [`RedisPool::idempotent`](crate::RedisPool::idempotent). A
    /// write that may have reached the server is never sent again. The same holds on a
    /// [`multiplexed()`](crate::RedisPool::multiplexed) handle; on a Redis Cluster, also
    /// how many times a read given up on a silent replica is sent again on a checkout.
    /// Default `1`; `0` turns retries off.
    pub command_retries: u32,
    /// Shared connections behind [`RedisPool::multiplexed`](crate::RedisPool::multiplexed),
    /// opened on first use. Default `1`: one socket pipelines deepest; more help only when one connection saturates.
    pub multiplexed_connections: u32,
    /// The name every connection gives itself with `CLIENT SETNAME` right after
    /// connecting (shown by `CLIENT LIST`), the pooled ones and the shared ones alike. No
    /// spaces; not with `cluster`. Default none.
    pub client_name: Option<String>,
    /// TLS settings.
    pub tls: TlsConfig,
}

/// The single server a connector with no topology block connects to.
pub(crate) const DEFAULT_ADDR: &str = "127.0.0.1:6379";

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            connector: ConnectorConfig::default(),
            addr: DEFAULT_ADDR.into(),
            sentinel: None,
            cluster: None,
            username: None,
            password: None,
            db: 0,
            max_retries: 0,
            pool_size: 10,
            min_idle_conns: 0,
            max_idle_time: Some(Duration::from_secs(300)),
            max_lifetime: Some(Duration::from_secs(1800)),
            command_timeout: Some(Duration::from_secs(5)),
            command_retries: 1,
            multiplexed_connections: 1,
            client_name: None,
            tls: TlsConfig::default(),
        }
    }
}

impl RedisConfig {
    /// A config for this address with every other setting at its default.
    pub fn new(addr: impl Into<String>) -> Self {
        RedisConfig {
            addr: addr.into(),
            ..RedisConfig::default()
        }
    }

    /// Checks every setting; `prefix` is the key path of this connector (`redis.cache`).
    pub(crate) fn validate(&self, prefix: &str, errors: &mut ConfigErrors) {
        self.connector.validate(prefix, errors);
        self.validate_topology(prefix, errors);
        if self.pool_size == 0 {
            errors.push(key(prefix, "pool_size"), "must be at least 1");
        }
        if self.min_idle_conns > self.pool_size {
            errors.push(
                key(prefix, "min_idle_conns"),
                format!(
                    "{} is above pool_size ({})",
                    self.min_idle_conns, self.pool_size
                ),
            );
        }
        if self.multiplexed_connections == 0 {
            errors.push(key(prefix, "multiplexed_connections"), "must be at least 1");
        }
        if self.username.as_deref() == Some("") {
            errors.push(key(prefix, "username"), "must not be empty when given");
        }
        non_zero_opt(prefix, "max_idle_time", self.max_idle_time, errors);
        non_zero_opt(prefix, "max_lifetime", self.max_lifetime, errors);
        non_zero_opt(prefix, "command_timeout", self.command_timeout, errors);
        self.validate_client_name(prefix, errors);
        self.tls.validate(prefix, errors);
    }

    /// Redis refuses a name with spaces or control characters; a cluster client opens its
    /// node connections itself, so it cannot name them.
    fn validate_client_name(&self, prefix: &str, errors: &mut ConfigErrors) {
        let Some(name) = &self.client_name else {
            return;
        };
        let k = key(prefix, "client_name");
        if name.is_empty() {
            errors.push(k, "must not be empty when given");
        } else if let Some(c) = name.chars().find(|c| !c.is_ascii_graphic()) {
            errors.push(
                k,
                format!("{c:?} is not allowed: Redis takes printable characters without spaces"),
            );
        } else if self.cluster.is_some() {
            errors.push(
                k,
                "not available with cluster (the cluster client opens its node connections itself)",
            );
        }
    }

    /// Exactly one of `addr`, `sentinel` and `cluster`, each valid. `addr` counts as given
    /// when it is not the default; a config file that names it explicitly is caught while
    /// loading.
    fn validate_topology(&self, prefix: &str, errors: &mut ConfigErrors) {
        match (&self.sentinel, &self.cluster) {
            (None, None) => {
                if let Err(msg) = addr::parse_redis(&self.addr) {
                    errors.push(key(prefix, "addr"), msg);
                }
            }
            (Some(_), Some(_)) => errors.push(
                key(prefix, "cluster"),
                "give either sentinel or cluster, not both",
            ),
            (sentinel, cluster) => {
                let given = if sentinel.is_some() {
                    "sentinel"
                } else {
                    "cluster"
                };
                if self.addr != DEFAULT_ADDR {
                    errors.push(
                        key(prefix, "addr"),
                        format!("give either addr or {given}, not both"),
                    );
                }
                if let Some(s) = sentinel {
                    s.validate(prefix, errors);
                }
                if let Some(c) = cluster {
                    c.validate(prefix, self.db, errors);
                }
            }
        }
    }
}
