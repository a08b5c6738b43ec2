//! Configuration: one [`ManagerConfig`] holding every connector, loaded from YAML, TOML or
//! JSON with environment overrides, and validated before anything connects.
//!
//! ```yaml
//! defaults:                 # applied to every connector unless it sets the key itself
//!   connect_timeout: 5s
//!   health_check_interval: 10s
//! redis:
//!   cache:
//!     addr: 127.0.0.1:6379
//!     pool_size: 16
//! etcd:
//!   registry:
//!     endpoints: [127.0.0.1:2379]
//! ```
//!
//! Durations are humantime strings (`"250ms"`, `"5s"`, `"1h"`). Every problem is reported at
//! once in one [`Error::InvalidConfig`](crate::Error::InvalidConfig), each with its key path;
//! unknown keys are problems too, so a typo never falls back to a default silently.

mod addr;
pub(crate) mod connector;
mod etcd;
mod load;
mod pool;
mod redis;
mod secret;
mod tls;
mod topology;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub(crate) use addr::{parse_etcd, parse_redis};
pub use connector::ConnectorConfig;
pub use etcd::EtcdConfig;
pub use pool::PoolConfig;
pub(crate) use pool::kind_from_type_name;
pub(crate) use redis::DEFAULT_ADDR;
pub use redis::RedisConfig;
pub use secret::Secret;
pub use tls::TlsConfig;
pub(crate) use tls::tls_failure;
pub use topology::{ClusterConfig, SentinelConfig};

use crate::error::Result;
pub use crate::error::{ConfigErrors, ConfigIssue};

/// Every connector of a service, by kind and name.
///
/// Load it with [`from_file`](ManagerConfig::from_file) (format by extension) or one of the
/// `from_*_str` functions, then hand it to [`Manager::from_config`](crate::Manager::from_config).
/// Loading applies the `defaults` block to every connector, then environment variables
/// named `CONNHUB__<KIND>__<NAME>__<KEY>` (for example `CONNHUB__REDIS__CACHE__ADDR`;
/// names are matched in lower case), then validates.
///
/// ```
/// let cfg = connhub::ManagerConfig::from_yaml_str(
///     "redis:\n  cache:\n    addr: 127.0.0.1:6379\n    pool_size: 16\n",
/// )?;
/// assert_eq!(cfg.redis["cache"].pool_size, 16);
/// # Ok::<(), connhub::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ManagerConfig {
    /// Settings applied to every connector while loading, unless it sets the key itself.
    pub defaults: ConnectorConfig,
    /// Redis connectors by name.
    pub redis: BTreeMap<String, RedisConfig>,
    /// etcd connectors by name.
    pub etcd: BTreeMap<String, EtcdConfig>,
}

impl ManagerConfig {
    /// Checks every connector; every problem is listed, each with its key path.
    pub fn validate(&self) -> Result<()> {
        let mut errors = ConfigErrors::default();
        self.check(&mut errors);
        errors.into_result()
    }

    /// Adds every problem to `errors`.
    pub(crate) fn check(&self, errors: &mut ConfigErrors) {
        self.defaults.validate("defaults", errors);
        for (name, c) in &self.redis {
            check_name("redis", name, errors);
            c.validate(&format!("redis.{name}"), errors);
        }
        for (name, c) in &self.etcd {
            check_name("etcd", name, errors);
            if self.redis.contains_key(name) {
                errors.push(
                    format!("etcd.{name}"),
                    format!("connector name {name:?} is used by redis.{name} too; names are unique across kinds"),
                );
            }
            c.validate(&format!("etcd.{name}"), errors);
        }
    }
}

pub(crate) fn check_name(kind: &str, name: &str, errors: &mut ConfigErrors) {
    if name.trim().is_empty() {
        errors.push(
            format!("{kind}.{name:?}"),
            "connector name must not be empty",
        );
    }
}
