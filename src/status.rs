//! What a connector reports: its [`Kind`], its [`State`], the [`Event`]s of its state
//! changes, and its [`Status`] with the [`PoolCounts`] and [`StreamCounts`] in it. (This
//! module is the vocabulary every other one speaks: it imports nothing of the crate.)

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// What kind of backend a connector talks to.
///
/// `Display` prints `redis`, `etcd`, or the name a custom backend was registered with.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub struct Kind(Cow<'static, str>);

impl Kind {
    /// The Redis backend.
    pub const REDIS: Kind = Kind(Cow::Borrowed("redis"));
    /// The etcd backend.
    pub const ETCD: Kind = Kind(Cow::Borrowed("etcd"));

    /// A backend's own kind name, such as `"postgres"`.
    pub fn custom(name: impl Into<String>) -> Kind {
        Kind(Cow::Owned(name.into()))
    }

    /// The kind's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Kind> for String {
    fn from(k: Kind) -> String {
        k.0.into_owned()
    }
}

/// Where a connector is in its life.
///
/// ```text
/// Connecting ─► Healthy ─► Reconnecting ─► Healthy
///                                  └─────► Failed ─► Healthy
/// any ─► Closed
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Registered; the first connection is being made.
    Connecting,
    /// The last check succeeded; checkouts are served.
    Healthy,
    /// A check or a connection failed; reconnecting with backoff. Checkouts fail fast.
    Reconnecting,
    /// Reconnecting gave up (or is off); still probed every health-check interval.
    Failed,
    /// Closed or removed; every checkout is [`Error::Closed`](crate::Error::Closed).
    Closed,
}

impl State {
    pub(crate) fn to_u8(self) -> u8 {
        match self {
            State::Connecting => 0,
            State::Healthy => 1,
            State::Reconnecting => 2,
            State::Failed => 3,
            State::Closed => 4,
        }
    }

    pub(crate) fn from_u8(v: u8) -> State {
        match v {
            0 => State::Connecting,
            1 => State::Healthy,
            2 => State::Reconnecting,
            3 => State::Failed,
            _ => State::Closed,
        }
    }

    /// The state's name in snake case, as in [`Status`] and events.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Connecting => "connecting",
            State::Healthy => "healthy",
            State::Reconnecting => "reconnecting",
            State::Failed => "failed",
            State::Closed => "closed",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state change of one connector, as broadcast by [`Manager::subscribe`](crate::Manager::subscribe).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// The connector's name.
    pub connector: String,
    /// The connector's kind.
    pub kind: Kind,
    /// Where it connects at the time of the change (addresses only, never credentials);
    /// for a Redis Sentinel connector, the master current then.
    pub endpoint: String,
    /// The state it left.
    pub from: State,
    /// The state it entered.
    pub to: State,
    /// The error that caused the change, if any.
    pub error: Option<String>,
}

/// Pool counters of one connector.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PoolCounts {
    /// Largest number of connections the pool opens.
    pub max_size: u32,
    /// While the server refuses more connections than the pool holds (its connection
    /// cap): how many the pool holds and hands out, below `max_size`. Callers wait their
    /// turn on those, and the pool grows back as the server accepts more. `None` while
    /// the pool may grow to `max_size`.
    pub limit: Option<u32>,
    /// Connections open now (idle and in use).
    pub connections: u32,
    /// Connections idle in the pool now.
    pub idle: u32,
    /// Connections checked out now.
    pub in_use: u32,
    /// Connections kept open even when idle (`min_idle_conns`).
    pub min_idle: u32,
    /// Callers waiting for a connection now.
    pub pending: u32,
    /// Checkouts served since the pool was built.
    pub gets: u64,
    /// Checkouts that had to wait for a connection.
    pub gets_waited: u64,
    /// Checkouts that timed out.
    pub gets_timed_out: u64,
    /// Time checkouts spent waiting for a connection, in total.
    #[serde(with = "humantime_serde")]
    pub wait_time: Duration,
    /// Connections created since the pool was built.
    pub connections_created: u64,
    /// Connections closed because they were broken or predated an outage.
    pub connections_closed_broken: u64,
    /// Connections closed by the idle timeout.
    pub connections_closed_idle: u64,
    /// Connections closed by the max lifetime.
    pub connections_closed_lifetime: u64,
    /// Checkouts held past `leak_detection_threshold` so far (each counted once).
    pub leaks: u64,
}

/// Long-lived streams a connector serves now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StreamCounts {
    /// etcd leases kept alive ([`EtcdPool::keep_lease`](crate::EtcdPool::keep_lease),
    /// registrations).
    pub leases: u32,
    /// etcd watches ([`EtcdPool::watch`](crate::EtcdPool::watch)).
    pub watches: u32,
    /// Redis subscriptions ([`RedisPool::subscribe`](crate::RedisPool::subscribe)).
    pub subscriptions: u32,
}

/// A point-in-time view of one connector; serializable and free of secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// The connector's name.
    pub name: String,
    /// The connector's kind.
    pub kind: Kind,
    /// Its state.
    pub state: State,
    /// Whether readiness depends on it (the `required` setting).
    pub required: bool,
    /// Where it connects to (addresses only, never credentials).
    pub endpoint: String,
    /// Pool counters.
    pub pool: PoolCounts,
    /// Long-lived streams open now: leases, watches, subscriptions.
    pub streams: StreamCounts,
    /// How long the last health check took.
    #[serde(with = "humantime_serde")]
    pub last_check_latency: Option<Duration>,
    /// Seconds since the Unix epoch at the last health check.
    pub last_check_at: Option<u64>,
    /// The last error seen, if the connector is not healthy or the last check failed.
    pub last_error: Option<String>,
    /// Why the last fresh connection failed, while the pool is limited or the connector
    /// is down; cleared once the pool may grow to its size again.
    pub last_connect_error: Option<String>,
    /// Reconnect attempts made since the connector was last healthy.
    pub reconnect_attempts: u32,
    /// Commands sent again after their connection was lost, because that could not apply
    /// them twice (Redis: commands on the pool itself, see `command_retries`).
    pub retried_commands: u64,
}
