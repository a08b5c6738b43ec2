//! The Redis topologies beyond one server: [`SentinelConfig`] and [`ClusterConfig`].

use serde::{Deserialize, Serialize};

use super::connector::key;
use super::{Secret, TlsConfig, addr};
use crate::error::ConfigErrors;

/// A Redis master found through Redis Sentinel (the `sentinel` block of a Redis connector).
///
/// Connections go to the master the sentinels name (checked with `ROLE` before use); after a
/// failover, connections to the old master are retired and new ones go to the new master.
/// The connector's own `username`, `password`, `db` and `tls` are for the data nodes; the
/// keys here are for the sentinels.
///
/// ```yaml
/// redis:
///   cache:
///     sentinel:
///       master_name: mymaster
///       addrs: [10.0.0.1:26379, 10.0.0.2:26379, 10.0.0.3:26379]
///       password: sentinel-secret   # for the sentinels; never printed
///     password: data-secret         # for the master
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SentinelConfig {
    /// The name the sentinels monitor the master under (`sentinel monitor <name> ...`).
    pub master_name: String,
    /// Sentinel addresses, `host:port` or `redis://host:port` (`rediss://` for TLS).
    pub addrs: Vec<String>,
    /// ACL user name on the sentinels.
    pub username: Option<String>,
    /// Password of the sentinels; never printed.
    pub password: Option<Secret>,
    /// TLS to the sentinels.
    pub tls: TlsConfig,
}

/// A Redis Cluster (the `cluster` block of a Redis connector).
///
/// The redis crate's cluster connection is used: it learns the slot map from any of
/// `nodes`, keeps a connection to every master, and follows `MOVED` / `ASK` redirections
/// and failovers itself. The connector's `username`, `password` and `tls` apply to every
/// node; `db` must be `0` (a cluster has only database 0).
///
/// ```yaml
/// redis:
///   sessions:
///     cluster:
///       nodes: [10.0.0.1:7000, 10.0.0.2:7000, 10.0.0.3:7000]
///       read_from_replicas: false
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Some nodes of the cluster, `host:port` or `redis://host:port`: the first that
    /// answers gives the whole topology.
    pub nodes: Vec<String>,
    /// Send read-only commands to a replica of the key's shard (writes still go to its
    /// master). Such reads may be slightly stale. While a replica answers nothing, reads
    /// go to the shard's other replicas or its master. Default `false`.
    pub read_from_replicas: bool,
}

impl SentinelConfig {
    pub(crate) fn validate(&self, prefix: &str, errors: &mut ConfigErrors) {
        let prefix = key(prefix, "sentinel");
        if self.master_name.trim().is_empty() {
            errors.push(key(&prefix, "master_name"), "must not be empty");
        }
        addresses(&prefix, "addrs", &self.addrs, errors);
        if self.username.as_deref() == Some("") {
            errors.push(key(&prefix, "username"), "must not be empty when given");
        }
        self.tls.validate(&prefix, errors);
    }

    /// True when the sentinels are reached over TLS (the `tls` block or a `rediss://`).
    pub(crate) fn uses_tls(&self) -> bool {
        wants_tls(&self.tls, &self.addrs)
    }
}

impl ClusterConfig {
    /// True when the nodes are reached over TLS (the connector's `tls` block, or a
    /// `rediss://` node).
    pub(crate) fn uses_tls(&self, tls: &TlsConfig) -> bool {
        wants_tls(tls, &self.nodes)
    }

    pub(crate) fn validate(&self, prefix: &str, db: u32, errors: &mut ConfigErrors) {
        addresses(&key(prefix, "cluster"), "nodes", &self.nodes, errors);
        if db != 0 {
            errors.push(
                key(prefix, "db"),
                format!("{db}: a Redis Cluster has only database 0"),
            );
        }
    }
}

fn wants_tls(tls: &TlsConfig, addrs: &[String]) -> bool {
    tls.enabled || addrs.iter().any(|a| a.starts_with("rediss://"))
}

/// Checks a list of Redis addresses: at least one, each valid, no database in any.
fn addresses(prefix: &str, name: &str, list: &[String], errors: &mut ConfigErrors) {
    if list.is_empty() {
        errors.push(key(prefix, name), "must list at least one address");
    }
    let mut tls = None;
    for (i, a) in list.iter().enumerate() {
        let at = format!("{}[{i}]", key(prefix, name));
        match addr::parse_redis(a) {
            Ok(hp) => {
                if let Some(db) = hp.db {
                    errors.push(
                        at.clone(),
                        format!("{a:?}: no database here (/{db}); use the connector's db key"),
                    );
                }
                if *tls.get_or_insert(hp.tls) != hp.tls {
                    errors.push(at, "mixes redis:// and rediss:// addresses");
                }
            }
            Err(msg) => errors.push(at, msg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(f: impl FnOnce(&mut ConfigErrors)) -> Vec<String> {
        let mut errors = ConfigErrors::default();
        f(&mut errors);
        errors.issues().iter().map(|i| i.key.clone()).collect()
    }

    #[test]
    fn sentinel_needs_a_name_and_addresses() {
        let keys = problems(|e| SentinelConfig::default().validate("redis.x", e));
        assert_eq!(
            keys,
            ["redis.x.sentinel.master_name", "redis.x.sentinel.addrs"]
        );
        let s = SentinelConfig {
            master_name: "m".into(),
            addrs: vec!["h:1".into(), "nope".into(), "redis://h:2/3".into()],
            username: Some(String::new()),
            ..SentinelConfig::default()
        };
        let keys = problems(|e| s.validate("redis.x", e));
        assert_eq!(
            keys,
            [
                "redis.x.sentinel.addrs[1]",
                "redis.x.sentinel.addrs[2]",
                "redis.x.sentinel.username"
            ]
        );
    }

    #[test]
    fn cluster_has_only_db_0_and_one_scheme() {
        let c = ClusterConfig {
            nodes: vec!["h:1".into(), "rediss://h:2".into()],
            read_from_replicas: false,
        };
        let keys = problems(|e| c.validate("redis.x", 2, e));
        assert_eq!(keys, ["redis.x.cluster.nodes[1]", "redis.x.db"]);
        let keys = problems(|e| ClusterConfig::default().validate("redis.x", 0, e));
        assert_eq!(keys, ["redis.x.cluster.nodes"]);
    }
}
