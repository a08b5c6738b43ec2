//! [`EtcdConfig`]: one etcd connector.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::connector::{key, non_zero, non_zero_opt};
use super::{ConnectorConfig, Secret, TlsConfig, addr};
use crate::error::ConfigErrors;

/// One etcd connector: the cluster's endpoints, credentials and pool size.
///
/// Every checkout is a clone of one shared `etcd_client::Client`, which multiplexes
/// requests over HTTP/2; `pool_size` bounds how many requests are in flight through
/// `get()` at once, handed out first come, first served.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EtcdConfig {
    /// Timeouts, health checks and reconnects.
    #[serde(flatten)]
    pub connector: ConnectorConfig,
    /// Members of the cluster, `host:port` or `http://host:port`. Default `["127.0.0.1:2379"]`.
    pub endpoints: Vec<String>,
    /// User name, when the cluster has auth enabled.
    pub username: Option<String>,
    /// Password; never printed.
    pub password: Option<Secret>,
    /// Longest wait for a TCP connection to one member. Default `3s`.
    #[serde(with = "humantime_serde")]
    pub dial_timeout: Duration,
    /// Longest wait for the answer to one request. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Option<Duration>,
    /// Most checkouts at once through [`Pool::get`](crate::Pool::get) (each a clone of
    /// the one shared client): the limit on requests in flight. Default `64`.
    pub pool_size: u32,
    /// Accepted for compatibility and ignored: every checkout and
    /// [`EtcdPool::client`](crate::EtcdPool::client) share one client. Default `1`.
    pub shared_clients: u32,
    /// With several endpoints, how often each member is probed on its own; a member that
    /// does not answer is taken out of every client's balancer until it answers again.
    /// Default `250ms`.
    #[serde(with = "humantime_serde")]
    pub member_check_interval: Duration,
    /// TLS settings.
    pub tls: TlsConfig,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            connector: ConnectorConfig::default(),
            endpoints: vec!["127.0.0.1:2379".into()],
            username: None,
            password: None,
            dial_timeout: Duration::from_secs(3),
            command_timeout: Some(Duration::from_secs(5)),
            pool_size: 64,
            shared_clients: 1,
            member_check_interval: Duration::from_millis(250),
            tls: TlsConfig::default(),
        }
    }
}

impl EtcdConfig {
    /// A config for these endpoints with every other setting at its default.
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ..EtcdConfig::default()
        }
    }

    /// Checks every setting; `prefix` is the key path of this connector (`etcd.registry`).
    pub(crate) fn validate(&self, prefix: &str, errors: &mut ConfigErrors) {
        self.connector.validate(prefix, errors);
        if self.endpoints.is_empty() {
            errors.push(key(prefix, "endpoints"), "needs at least one endpoint");
        }
        for (i, e) in self.endpoints.iter().enumerate() {
            if let Err(msg) = addr::parse_etcd(e) {
                errors.push(format!("{}[{i}]", key(prefix, "endpoints")), msg);
            }
        }
        if self.pool_size == 0 {
            errors.push(key(prefix, "pool_size"), "must be at least 1");
        }
        if self.shared_clients == 0 {
            errors.push(key(prefix, "shared_clients"), "must be at least 1");
        }
        if self.username.is_some() != self.password.is_some() {
            errors.push(
                key(
                    prefix,
                    if self.username.is_some() {
                        "password"
                    } else {
                        "username"
                    },
                ),
                "username and password go together",
            );
        }
        non_zero(prefix, "dial_timeout", self.dial_timeout, errors);
        non_zero(
            prefix,
            "member_check_interval",
            self.member_check_interval,
            errors,
        );
        non_zero_opt(prefix, "command_timeout", self.command_timeout, errors);
        self.tls.validate(prefix, errors);
        if self.tls.insecure_skip_verify {
            errors.push(
                format!("{}.tls.insecure_skip_verify", prefix),
                "not supported for etcd: its client (tonic) always verifies the server; give ca_file instead",
            );
        }
    }
}
