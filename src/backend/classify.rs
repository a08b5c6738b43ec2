//! One way for every backend to turn its client's error into connhub's: the backend says
//! what kind of failure it is ([`Class`], the part only it can read), and [`error`] builds
//! the error; [`tls_failure`] tells a TLS set-up problem from a server restarting, and
//! [`connect_failure`] makes a failed connection attempt one or the other.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Cause, Error, Origin, Step};

/// What a backend's error means.
pub(crate) enum Class {
    /// The server refused the credentials; what it said (never the password).
    Auth(String),
    /// The request or the connection ran out of time.
    Timeout,
    /// The server could not be reached, or the connection to it broke.
    Connect,
    /// Anything else the backend returned.
    Other,
}

/// Where a failure happened: the connector, its endpoint, and the step with its bound.
pub(crate) struct Site<'a> {
    pub(crate) origin: Origin,
    pub(crate) endpoint: &'a str,
    pub(crate) step: Step,
    pub(crate) after: Duration,
}

/// connhub's error for a failure of `class` at `site`, keeping `cause` as its source.
pub(crate) fn error(class: Class, site: Site<'_>, cause: Cause) -> Error {
    let Site {
        origin,
        endpoint,
        step,
        after,
    } = site;
    match class {
        Class::Auth(message) => Error::Auth {
            origin,
            message,
            source: Some(cause),
        },
        Class::Timeout => Error::timed_out_by(origin, step, after, cause),
        Class::Connect => Error::Connect {
            origin,
            endpoint: endpoint.to_owned(),
            source: cause,
        },
        Class::Other => Error::Backend {
            origin,
            source: cause,
        },
    }
}

/// Why a TLS connection attempt failed, if TLS is the reason: a certificate problem named
/// in `text` (the error as the client printed it), or the server hanging up during the
/// handshake (`hung_up`, as a server that wants a client certificate does) while no
/// connection has ever been made (`reached` false). Once one was, a hang-up is a server
/// restarting: a connection error to retry, not a permanent TLS error.
pub(crate) fn tls_failure(text: &str, hung_up: bool, reached: bool) -> Option<String> {
    if let Some(reason) = crate::config::tls_failure(text) {
        return Some(reason);
    }
    (hung_up && !reached).then(|| {
        format!(
            "the server closed the connection during the TLS handshake (does it require a \
             client certificate?): {text}"
        )
    })
}

/// A failed connection attempt: [`Error::Tls`] when `tls` says TLS is why (see
/// [`tls_failure`]), else what `sorted` makes of `e`.
pub(crate) fn connect_failure<E>(
    origin: impl FnOnce() -> Origin,
    tls: Option<String>,
    e: E,
    sorted: impl FnOnce(E) -> Error,
) -> Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    match tls {
        Some(message) => Error::Tls {
            origin: origin(),
            message,
            source: Some(Arc::new(e)),
        },
        None => sorted(e),
    }
}
