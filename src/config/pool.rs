//! [`PoolConfig`]: sizing of a pool for a backend registered with
//! [`Manager::add_pool`](crate::Manager::add_pool) or
//! [`Manager::add_backend`](crate::Manager::add_backend).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::connector::{key, non_zero_opt};
use crate::error::ConfigErrors;

/// Pool sizing and naming for any bb8 backend.
///
/// Its keys are bb8's names; the Redis and etcd configs use the names of the design
/// connhub started from. They mean the same:
///
/// | `PoolConfig` (bb8) | `RedisConfig` / `EtcdConfig` |
/// |---|---|
/// | `max_size` | `pool_size` |
/// | `min_idle` | `min_idle_conns` (Redis) |
/// | `max_idle_time` | `max_idle_time` (Redis) |
/// | `max_lifetime` | `max_lifetime` (Redis) |
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PoolConfig {
    /// Largest number of pooled connections, and of checkouts at once (callers beyond it
    /// wait their turn, first come, first served). `pool_size` in the Redis and etcd
    /// configs. Default `10`.
    pub max_size: u32,
    /// Connections kept open even when idle (`min_idle_conns` in the Redis config).
    /// Default none.
    pub min_idle: Option<u32>,
    /// Idle connections above `min_idle` are closed after this long. Default `5m`.
    #[serde(with = "humantime_serde")]
    pub max_idle_time: Option<Duration>,
    /// Connections are closed after this age. Default `30m`.
    #[serde(with = "humantime_serde")]
    pub max_lifetime: Option<Duration>,
    /// The kind reported in status and events, such as `"postgres"`. Default: derived from
    /// the manager's type name (`PostgresConnectionManager` gives `postgres`).
    pub kind: Option<String>,
    /// Where it connects, for status (never with credentials). Default empty.
    pub endpoint: String,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_size: 10,
            min_idle: None,
            max_idle_time: Some(Duration::from_secs(300)),
            max_lifetime: Some(Duration::from_secs(1800)),
            kind: None,
            endpoint: String::new(),
        }
    }
}

impl PoolConfig {
    pub(crate) fn validate(&self, prefix: &str, errors: &mut ConfigErrors) {
        if self.max_size == 0 {
            errors.push(key(prefix, "max_size"), "must be at least 1");
        }
        if let Some(min) = self.min_idle
            && min > self.max_size
        {
            errors.push(
                key(prefix, "min_idle"),
                format!("{min} is above max_size ({})", self.max_size),
            );
        }
        if self.kind.as_deref().is_some_and(|k| k.trim().is_empty()) {
            errors.push(key(prefix, "kind"), "must not be empty when given");
        }
        non_zero_opt(prefix, "max_idle_time", self.max_idle_time, errors);
        non_zero_opt(prefix, "max_lifetime", self.max_lifetime, errors);
    }
}

/// `bb8_postgres::PostgresConnectionManager<NoTls>` → `postgres`.
pub(crate) fn kind_from_type_name(type_name: &str) -> String {
    let base = type_name.split('<').next().unwrap_or(type_name);
    let last = base.rsplit("::").next().unwrap_or(base);
    let trimmed = last
        .strip_suffix("ConnectionManager")
        .or_else(|| last.strip_suffix("Manager"))
        .filter(|s| !s.is_empty())
        .unwrap_or(last);
    trimmed.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::kind_from_type_name;

    #[test]
    fn kinds_from_type_names() {
        assert_eq!(
            kind_from_type_name("bb8_postgres::PostgresConnectionManager<tokio_postgres::NoTls>"),
            "postgres"
        );
        assert_eq!(kind_from_type_name("my::Thing"), "thing");
        assert_eq!(kind_from_type_name("Manager"), "manager");
    }
}
