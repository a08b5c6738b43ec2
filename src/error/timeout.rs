//! [`TimeoutKind`]: what an [`Error::Timeout`](super::Error::Timeout) ran out of time
//! doing, and the [`Step`] the crate names it by.

use std::fmt;

/// What an [`Error::Timeout`](super::Error::Timeout) ran out of time doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TimeoutKind {
    /// Waiting for a pooled connection: a turn in line and a connection, together
    /// bounded by `connect_timeout`.
    Checkout,
    /// Making a fresh connection, bounded by `connect_timeout`.
    Connect,
    /// A health check (`PING`, `CLUSTER INFO`, etcd's status request).
    HealthCheck,
    /// A connection's `on_connect` hook.
    Hook,
    /// A request connhub made for the caller (a lease grant, a registration's `put`);
    /// [`Error::Timeout`](super::Error::Timeout)'s `detail` names it.
    Request,
    /// Opening a watch.
    Watch,
}

impl TimeoutKind {
    /// The lower-case words `Display` prints: `checkout`, `connect`, `health check`,
    /// `on_connect hook`, `request`, `watch`.
    pub fn as_str(self) -> &'static str {
        match self {
            TimeoutKind::Checkout => "checkout",
            TimeoutKind::Connect => "connect",
            TimeoutKind::HealthCheck => "health check",
            TimeoutKind::Hook => "on_connect hook",
            TimeoutKind::Request => "request",
            TimeoutKind::Watch => "watch",
        }
    }
}

impl fmt::Display for TimeoutKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A step that can time out: its [`TimeoutKind`] and, where the kind does not say it all,
/// the request's name (`lease grant`, `PING`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Step {
    pub(crate) kind: TimeoutKind,
    pub(crate) name: Option<&'static str>,
}

impl Step {
    /// A request named `name`.
    pub(crate) const fn request(name: &'static str) -> Step {
        Step {
            kind: TimeoutKind::Request,
            name: Some(name),
        }
    }

    /// A health check made with `name` (`PING`).
    pub(crate) const fn check(name: &'static str) -> Step {
        Step {
            kind: TimeoutKind::HealthCheck,
            name: Some(name),
        }
    }
}

impl From<TimeoutKind> for Step {
    fn from(kind: TimeoutKind) -> Step {
        Step { kind, name: None }
    }
}
