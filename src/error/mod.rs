//! The one error type of the crate: [`Error`], with [`Origin`] (which connector),
//! [`TimeoutKind`] (what timed out, in `timeout`), and the [`ConfigErrors`] of a refused
//! configuration (in `config`).

mod config;
mod gone;
#[cfg(test)]
mod tests;
mod timeout;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use config::{ConfigErrors, ConfigIssue};
pub(crate) use timeout::Step;
pub use timeout::TimeoutKind;

use crate::status::{Kind, State};
use gone::{says_dropped, says_gone};

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

    /// True when this error, from a connection that was working, says only that the
    /// connection was lost (the peer hung up or reset it): the next connection may well
    /// work. A server that closes idle connections looks like this, and so does one that
    /// was killed; a refusal, a timeout or an error reply does not.
    pub(crate) fn is_dropped(&self) -> bool {
        match self {
            Error::Connect { source, .. } | Error::Backend { source, .. } => {
                says_dropped(&**source)
            }
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
