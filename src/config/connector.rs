//! [`ConnectorConfig`]: the settings every connector shares.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ConfigErrors;

/// Settings shared by every connector: timeouts, health checks, reconnects.
///
/// In a config file these keys sit next to the backend's own keys, and a top-level
/// `defaults` block gives them for every connector at once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConnectorConfig {
    /// How long a checkout, or the making of one connection, may take. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How often the background task checks the backend. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub health_check_interval: Duration,
    /// Reconnect with backoff after a failure. Default `true`.
    pub auto_reconnect: bool,
    /// While the connector is down: the least time between two trial connections when
    /// callers ask for one (so recovery comes within this of the server answering), and
    /// the first delay of the timer backoff when nobody asks, doubling with jitter up to
    /// `reconnect_backoff_max`. Default `250ms`.
    #[serde(with = "humantime_serde")]
    pub reconnect_interval: Duration,
    /// Upper bound of the reconnect delay. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub reconnect_backoff_max: Duration,
    /// Reconnect attempts before the connector is `Failed`; `0` never gives up. Default `0`.
    pub max_reconnect_attempts: u32,
    /// While the connector is known to be down, `get()` fails at once with
    /// [`Error::Unavailable`](crate::Error::Unavailable) instead of waiting. Default `true`.
    pub fail_fast: bool,
    /// How long `close`/`remove` wait for checked-out connections to come back. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Register without waiting for the first connection; the health task connects in the
    /// background. Default `false`: registration fails if the backend cannot be reached.
    pub lazy_connect: bool,
    /// The service cannot serve without this connector: `/readyz` answers 503 while it is
    /// not healthy. An optional one (`false`) is reported there but does not fail it.
    /// Default `true`.
    pub required: bool,
    /// A connection checked out for longer than this is reported as a possible leak: a
    /// warning naming the connector and the line that called `get()`, the
    /// `connhub.connections.leaked` counter, and a second log line when it is finally
    /// returned. Default none (off).
    #[serde(with = "humantime_serde")]
    pub leak_detection_threshold: Option<Duration>,
}

impl Default for ConnectorConfig {
    fn default() -> Self {
        ConnectorConfig {
            connect_timeout: Duration::from_secs(5),
            health_check_interval: Duration::from_secs(10),
            auto_reconnect: true,
            reconnect_interval: Duration::from_millis(250),
            reconnect_backoff_max: Duration::from_secs(30),
            max_reconnect_attempts: 0,
            fail_fast: true,
            drain_timeout: Duration::from_secs(5),
            lazy_connect: false,
            required: true,
            leak_detection_threshold: None,
        }
    }
}

impl ConnectorConfig {
    pub(crate) fn validate(&self, prefix: &str, errors: &mut ConfigErrors) {
        for (key, value) in [
            ("connect_timeout", self.connect_timeout),
            ("health_check_interval", self.health_check_interval),
            ("reconnect_interval", self.reconnect_interval),
            ("reconnect_backoff_max", self.reconnect_backoff_max),
        ] {
            non_zero(prefix, key, value, errors);
        }
        non_zero_opt(
            prefix,
            "leak_detection_threshold",
            self.leak_detection_threshold,
            errors,
        );
        if self.reconnect_backoff_max < self.reconnect_interval {
            errors.push(
                key(prefix, "reconnect_backoff_max"),
                "must not be shorter than reconnect_interval",
            );
        }
    }
}

/// `prefix.name`, or `name` alone when there is no prefix.
pub(crate) fn key(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

pub(crate) fn non_zero(prefix: &str, name: &str, value: Duration, errors: &mut ConfigErrors) {
    if value.is_zero() {
        errors.push(key(prefix, name), "must be greater than zero");
    }
}

pub(crate) fn non_zero_opt(
    prefix: &str,
    name: &str,
    value: Option<Duration>,
    errors: &mut ConfigErrors,
) {
    if let Some(v) = value {
        non_zero(prefix, name, v, errors);
    }
}
