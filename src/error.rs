//! The one error type of the crate.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::status::{Kind, State};

/// A shared, cloneable cause.
pub type Cause = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// `Result<T, connhub::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in connhub.
///
/// Every variant that concerns a registered connector says which one ([`Origin`]: its name
/// and kind), and every variant that comes from a backend keeps the backend's own error as
/// its [`source`](std::error::Error::source).
/// Errors are cheap to clone, so the last error of a connector can be handed to every caller
/// that asks while it is down.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration was refused before anything was connected; every problem is listed.
    #[error("invalid configuration: {0}")]
    InvalidConfig(ConfigErrors),

    /// No connector is registered under this name.
    #[error("no connector named {name:?} is registered")]
    NotFound {
        /// The name that was looked up.
        name: String,
    },

    /// A connector with this name is registered already (names are unique across kinds).
    #[error("a connector named {name:?} is already registered")]
    AlreadyRegistered {
        /// The name that was registered twice.
        name: String,
    },

    /// The connector exists, but is of another kind than the one asked for.
    #[error("connector {name:?} is a {actual} connector, not {expected}")]
    WrongType {
        /// The connector's name.
        name: String,
        /// What the caller asked for.
        expected: String,
        /// What the connector is.
        actual: Kind,
    },

    /// The connector is known to be down; returned at once instead of waiting for a timeout.
    #[error("{origin} is unavailable ({state}){}", last(.last_error))]
    Unavailable {
        /// The connector it concerns.
        origin: Origin,
        /// Its state when the call was refused.
        state: State,
        /// The last real error seen from the backend, if any.
        #[source]
        last_error: Option<Box<Error>>,
    },

    /// A checkout, a connection, a check or a request did not complete in time.
    #[error("{origin}: {what} timed out after {}{}{}", humantime::format_duration(*.after), detail_of(.detail), last(.last_error))]
    Timeout {
        /// The connector it concerns.
        origin: Origin,
        /// What timed out.
        what: TimeoutKind,
        /// The limit that was reached.
        after: Duration,
        /// More about it: the request that timed out (`lease grant`, `PING`), or why a
        /// checkout did (`pool exhausted: all 16 connections in use, 40 more callers
        /// waiting`).
        detail: Option<String>,
        /// The last real error seen from the backend while waiting, if any.
        #[source]
        last_error: Option<Box<Error>>,
    },

    /// The backend could not be reached.
    #[error("{origin}: connection to {endpoint} failed: {source}")]
    Connect {
        /// The connector it concerns.
        origin: Origin,
        /// The endpoint that was tried (never with credentials).
        endpoint: String,
        /// The underlying cause.
        #[source]
        source: Cause,
    },

    /// The backend refused the credentials.
    #[error("{origin}: authentication failed: {message}")]
    Auth {
        /// The connector it concerns.
        origin: Origin,
        /// What the server said (never the password).
        message: String,
        /// The client's own error, when there is one.
        #[source]
        source: Option<Cause>,
    },

    /// TLS could not be set up (bad files, untrusted certificate, hostname mismatch...).
    #[error("{origin}: TLS: {message}")]
    Tls {
        /// The connector it concerns.
        origin: Origin,
        /// What went wrong, naming the file or the reason.
        message: String,
        /// The underlying error (the file read, the TLS library, the client), when there
        /// is one.
        #[source]
        source: Option<Cause>,
    },

    /// The connector, or the whole manager, was closed.
    #[error("{}", closed(.origin))]
    Closed {
        /// The connector that was closed; `None` when the whole manager was.
        origin: Option<Origin>,
    },

    /// A connection's `on_connect` hook failed: that connection was dropped, and the
    /// connector stays up. See [`OnConnect`](crate::OnConnect).
    #[error("{origin}: on_connect hook failed: {source}")]
    Hook {
        /// The connector it concerns.
        origin: Origin,
        /// The hook's own error.
        #[source]
        source: Cause,
    },

    /// Any other error the backend returned.
    #[error("{origin}: {source}")]
    Backend {
        /// The connector it concerns.
        origin: Origin,
        /// The backend's error.
        #[source]
        source: Cause,
    },
}

/// What an [`Error::Timeout`] ran out of time doing.
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
    /// [`Error::Timeout`]'s `detail` names it.
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

/// Which connector an error concerns: its name and kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    /// The connector's name.
    pub connector: String,
    /// The connector's kind.
    pub kind: Kind,
}

impl Origin {
    /// The connector `connector` of kind `kind`.
    pub fn new(connector: impl Into<String>, kind: Kind) -> Origin {
        Origin {
            connector: connector.into(),
            kind,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} connector {:?}", self.kind, self.connector)
    }
}

fn closed(origin: &Option<Origin>) -> String {
    match origin {
        Some(o) => format!("{o} is closed"),
        None => "the manager is closed".to_owned(),
    }
}

fn detail_of(d: &Option<String>) -> String {
    match d {
        Some(d) => format!(" ({d})"),
        None => String::new(),
    }
}

fn last(e: &Option<Box<Error>>) -> String {
    match e {
        Some(e) => format!("; last error: {e}"),
        None => String::new(),
    }
}

impl Error {
    /// The name of the connector this error concerns, if any.
    pub fn connector(&self) -> Option<&str> {
        match self {
            Error::InvalidConfig(_) => None,
            Error::NotFound { name }
            | Error::AlreadyRegistered { name }
            | Error::WrongType { name, .. } => Some(name),
            _ => self.origin().map(|o| o.connector.as_str()),
        }
    }

    /// The connector this error concerns, with its kind, when it comes from one.
    pub fn origin(&self) -> Option<&Origin> {
        match self {
            Error::Unavailable { origin, .. }
            | Error::Timeout { origin, .. }
            | Error::Connect { origin, .. }
            | Error::Auth { origin, .. }
            | Error::Tls { origin, .. }
            | Error::Hook { origin, .. }
            | Error::Backend { origin, .. } => Some(origin),
            Error::Closed { origin } => origin.as_ref(),
            Error::InvalidConfig(_)
            | Error::NotFound { .. }
            | Error::AlreadyRegistered { .. }
            | Error::WrongType { .. } => None,
        }
    }

    /// `step` did not complete within `after`; `last_error` is what the backend said
    /// meanwhile, if anything.
    pub(crate) fn timed_out(
        origin: Origin,
        step: impl Into<Step>,
        after: Duration,
        last_error: Option<Error>,
    ) -> Error {
        let step = step.into();
        Error::Timeout {
            origin,
            what: step.kind,
            after,
            detail: step.name.map(str::to_owned),
            last_error: last_error.map(Box::new),
        }
    }

    /// `step` did not complete within `after`: the backend said so with `cause`.
    pub(crate) fn timed_out_by(
        origin: Origin,
        step: impl Into<Step>,
        after: Duration,
        cause: Cause,
    ) -> Error {
        let said = Error::Backend {
            origin: origin.clone(),
            source: cause,
        };
        Error::timed_out(origin, step, after, Some(said))
    }

    /// True for errors that retrying will not fix (bad credentials, TLS, configuration).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Error::InvalidConfig(_) | Error::Auth { .. } | Error::Tls { .. }
        )
    }

    /// True when this error, from a fresh connection, says the server is not there
    /// (connection refused, host or network unreachable, name not resolved) or will not
    /// have this client (credentials, TLS, configuration): an outage, whatever else
    /// works. A server that accepted the connection and hung up, said it is full, or did
    /// not answer in time says no such thing: that is how a server at its connection cap
    /// looks (Redis writes `-ERR max number of clients reached` and closes, which the
    /// client mostly sees as a broken pipe).
    pub(crate) fn is_gone(&self) -> bool {
        match self {
            e if e.is_permanent() => true,
            Error::Closed { .. } => true,
            Error::Connect { source, .. } | Error::Backend { source, .. } => says_gone(&**source),
            _ => false,
        }
    }

    /// Turns any backend error into a connhub error: a connhub error passes through, anything
    /// else becomes [`Error::Backend`].
    pub(crate) fn from_backend<E>(connector: &str, kind: &Kind, err: E) -> Error
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(err);
        match boxed.downcast::<Error>() {
            Ok(e) => *e,
            Err(other) => Error::Backend {
                origin: Origin::new(connector, kind.clone()),
                source: Arc::from(other),
            },
        }
    }
}

/// True when `error` or one of its sources is an I/O error that says the server is not
/// there, the redis crate's word for the same, or a failed name lookup.
fn says_gone(error: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind as K;
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(e) = e.downcast_ref::<Error>() {
            return e.is_gone();
        }
        // A shared cause as its own source hides what it holds: look inside.
        if let Some(cause) = e.downcast_ref::<Cause>() {
            next = Some(&**cause);
            continue;
        }
        // etcd-client's error names no source: its variants hold the cause.
        if let Some(e) = e.downcast_ref::<etcd_client::Error>() {
            next = match e {
                etcd_client::Error::IoError(e) => Some(e),
                etcd_client::Error::TransportError(e) => Some(e),
                etcd_client::Error::GRpcStatus(e) => Some(e),
                _ => None,
            };
            continue;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            let gone = matches!(
                io.kind(),
                K::ConnectionRefused | K::HostUnreachable | K::NetworkUnreachable | K::NotFound
            );
            // std's own message for a failed getaddrinfo, which has no kind of its own.
            if gone || io.to_string().contains("failed to lookup address") {
                return true;
            }
        }
        if e.downcast_ref::<redis::RedisError>()
            .is_some_and(redis::RedisError::is_connection_refusal)
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// One problem found in a configuration, with the key path it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Dotted key path, such as `redis.cache.pool_size`.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// Every problem found in a configuration, reported together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigErrors {
    issues: Vec<ConfigIssue>,
}

impl ConfigErrors {
    /// The problems, in the order they were found.
    pub fn issues(&self) -> &[ConfigIssue] {
        &self.issues
    }

    /// True when some problem names exactly this key.
    pub fn has_key(&self, key: &str) -> bool {
        self.issues.iter().any(|i| i.key == key)
    }

    pub(crate) fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.issues.push(ConfigIssue {
            key: key.into(),
            message: message.into(),
        });
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.issues.is_empty()
    }

    /// `Ok(())` when nothing was found, the whole list as [`Error::InvalidConfig`] otherwise.
    pub(crate) fn into_result(self) -> Result<()> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidConfig(self))
        }
    }
}

/// One problem: on the same line. Several: one a line, indented, so a service that prints
/// the error (`eprintln!("{e}")`) shows a list a person reads at once.
impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.issues.as_slice() {
            [one] => write!(f, "{one}"),
            all => {
                write!(f, "{} problems", all.len())?;
                for issue in all {
                    write!(f, "\n  {issue}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigErrors {}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{Error, Origin};
    use crate::status::Kind;

    fn connect(source: impl std::error::Error + Send + Sync + 'static) -> Error {
        Error::Connect {
            origin: Origin::new("cache", Kind::REDIS),
            endpoint: "127.0.0.1:6379".into(),
            source: Arc::new(source),
        }
    }

    #[test]
    fn a_refusal_or_unreachable_host_is_gone_a_hang_up_or_timeout_is_not() {
        use std::io::{Error as Io, ErrorKind as K};
        for kind in [
            K::ConnectionRefused,
            K::HostUnreachable,
            K::NetworkUnreachable,
        ] {
            assert!(connect(Io::from(kind)).is_gone(), "{kind:?}");
            let redis = redis::RedisError::from(Io::from(kind));
            assert!(connect(redis).is_gone(), "redis {kind:?}");
        }
        // What a server at its connection cap looks like from the client.
        for kind in [K::BrokenPipe, K::ConnectionReset, K::UnexpectedEof] {
            assert!(!connect(Io::from(kind)).is_gone(), "{kind:?}");
            let redis = redis::RedisError::from(Io::from(kind));
            assert!(!connect(redis).is_gone(), "redis {kind:?}");
        }
        let full = redis::RedisError::from((redis::ErrorKind::Io, "max number of clients reached"));
        assert!(!connect(full).is_gone());
        let origin = Origin::new("cache", Kind::REDIS);
        let timeout = Error::timed_out(
            origin.clone(),
            super::TimeoutKind::Connect,
            std::time::Duration::from_secs(5),
            None,
        );
        assert!(!timeout.is_gone());
        let auth = Error::Auth {
            origin: origin.clone(),
            message: "WRONGPASS".into(),
            source: None,
        };
        assert!(
            auth.is_gone(),
            "bad credentials do not get better with more tries"
        );
        // Wrapped as any backend's error, the cause is still found.
        let wrapped = Error::Backend {
            origin,
            source: Arc::new(connect(Io::from(K::ConnectionRefused))),
        };
        assert!(wrapped.is_gone());
        let dns = Io::other("failed to lookup address information: Name or service not known");
        assert!(connect(dns).is_gone());
        // etcd-client wraps the cause in a gRPC status.
        let refused = tonic::Status::from_error(Box::new(Io::from(K::ConnectionRefused)));
        assert!(connect(etcd_client::Error::GRpcStatus(refused)).is_gone());
        let unavailable = tonic::Status::unavailable("no leader");
        assert!(!connect(etcd_client::Error::GRpcStatus(unavailable)).is_gone());
    }

    #[test]
    fn the_causes_are_the_source_chain() {
        use std::error::Error as _;
        use std::io::{Error as Io, ErrorKind as K};
        let origin = Origin::new("cache", Kind::REDIS);
        let refused = connect(Io::from(K::ConnectionRefused));
        let down = Error::Unavailable {
            origin: origin.clone(),
            state: crate::status::State::Reconnecting,
            last_error: Some(Box::new(refused)),
        };
        let connect_error = down.source().expect("the last error is the source");
        assert!(
            connect_error
                .to_string()
                .contains("connection to 127.0.0.1:6379 failed")
        );
        assert!(
            connect_error.source().is_some(),
            "and its own cause after it"
        );
        let timeout = Error::timed_out(
            origin.clone(),
            super::Step::request("lease grant"),
            std::time::Duration::from_secs(1),
            Some(connect(Io::from(K::ConnectionReset))),
        );
        assert!(timeout.source().is_some());
        assert_eq!(
            timeout.to_string().split(';').next().unwrap(),
            "redis connector \"cache\": request timed out after 1s (lease grant)"
        );
        let auth = Error::Auth {
            origin,
            message: "WRONGPASS".into(),
            source: Some(Arc::new(Io::other(
                "WRONGPASS invalid username-password pair",
            ))),
        };
        assert!(auth.source().is_some());
    }
}
