//! Redis errors as connhub's: a failed connection attempt sorted into its kinds (TLS,
//! authentication, timeout, connect), and a config key refused while the connector is
//! built. And what a command's timeout or lost connection means for the command, said
//! in the redis crate's own error (the pool's retry rule and a checkout both say it).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::{ErrorKind, RedisError};

use super::RedisConnectionManager;
use crate::backend::classify::{self, Class, Site};
use crate::error::{Error, Origin, Step, TimeoutKind};
use crate::status::Kind;

impl RedisConnectionManager {
    /// A failed connection attempt as connhub's error: a TLS problem when the handshake
    /// is why, else sorted by [`classify`](fn@classify).
    pub(super) fn classify(&self, e: redis::RedisError) -> Error {
        let m = &*self.inner;
        let tls = m
            .tls
            .then(|| handshake_failure(&e, m.reached.load(Ordering::Relaxed)));
        let origin = || Origin::new(m.name.to_string(), Kind::REDIS);
        classify::connect_failure(origin, tls.flatten(), e, |e| {
            classify(
                &m.name,
                &m.topology.endpoint(),
                TimeoutKind::Connect,
                m.connect_timeout,
                e,
            )
        })
    }
}

pub(super) fn invalid(name: &str, key: &str, message: impl Into<String>) -> Error {
    let mut errors = crate::error::ConfigErrors::default();
    errors.push(format!("redis.{name}.{key}"), message);
    Error::InvalidConfig(errors)
}

/// Why a TLS connection attempt failed, if TLS is the reason (see
/// [`classify::tls_failure`]).
fn handshake_failure(e: &redis::RedisError, reached: bool) -> Option<String> {
    let hung_up = e.is_connection_dropped() && !e.is_connection_refusal();
    classify::tls_failure(&format!("{e} ({e:?})"), hung_up, reached)
}

/// Sorts a redis error into connhub's kinds; `what` and `after` describe the limit a
/// timeout reached.
pub(crate) fn classify(
    name: &str,
    endpoint: &str,
    step: impl Into<Step>,
    after: Duration,
    e: redis::RedisError,
) -> Error {
    use redis::{ErrorKind, ServerErrorKind};
    let auth = matches!(e.kind(), ErrorKind::AuthenticationFailed)
        || matches!(e.kind(), ErrorKind::Server(ServerErrorKind::NoPerm))
        || e.code()
            .is_some_and(|c| matches!(c, "WRONGPASS" | "NOAUTH" | "NOPERM"))
        // The cluster client wraps a node's refusal in its own error.
        || (e.code().is_none()
            && ["\"WRONGPASS\"", "\"NOAUTH\""]
                .iter()
                .any(|c| e.to_string().contains(c)));
    let class = if auth {
        Class::Auth(e.to_string())
    } else if e.is_timeout() {
        Class::Timeout
    } else if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() {
        Class::Connect
    } else {
        Class::Other
    };
    let site = Site {
        origin: Origin::new(name, Kind::REDIS),
        endpoint,
        step: step.into(),
        after,
    };
    classify::error(class, site, Arc::new(e))
}

/// True when the connection was lost under a request (not a timeout: the server may
/// still be working on it).
pub(super) fn lost(e: &RedisError) -> bool {
    !e.is_timeout() && (e.is_connection_dropped() || e.is_unrecoverable_error())
}

/// The error of a command whose reply did not come in time: still a timeout
/// ([`RedisError::is_timeout`]), saying that if it writes, the write may have been
/// applied (it is not known to be read-only: on the pool, a `GET` gets this too until a
/// lost connection had the pool ask the server about it).
pub(super) fn unanswered(e: RedisError) -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!(
            "{e}: no reply within command_timeout; the server may still carry the command \
             out, so it was not sent again (if it writes, the write may have been applied)"
        ),
    ))
}

/// The error of a write whose connection was lost after it may have been sent.
pub(super) fn maybe_applied(e: RedisError) -> RedisError {
    RedisError::from((
        ErrorKind::Io,
        "the connection was lost after the command may have reached the server; it may \
         have been applied, so it was not sent again",
        e.to_string(),
    ))
}

/// The error of a command whose connection was lost after it may have been sent, when the
/// server could not be asked whether the command only reads (it was unreachable, or the
/// question failed): not sent again, and said so without calling a read a write.
pub(super) fn not_known_to_read(e: RedisError) -> RedisError {
    RedisError::from((
        ErrorKind::Io,
        "the connection was lost after the command may have reached the server, and the \
         server could not be asked whether the command only reads, so it was not sent again \
         (if it writes, it may have been applied)",
        e.to_string(),
    ))
}

/// What a caller holding a connection (a checkout) sees of a command that failed with
/// `e`: a timeout or a lost connection says what that means for the command (nothing is
/// sent again on a connection the caller holds, and a write may have been applied);
/// anything else as it is. Still a timeout or a dropped connection to the redis crate's
/// own tests ([`RedisError::is_timeout`], [`RedisError::is_connection_dropped`]).
pub(super) fn on_held(e: RedisError) -> RedisError {
    if super::nodes::is_given_up(&e) || super::nodes::is_read_given_up(&e) {
        // Says so itself.
        e
    } else if e.is_timeout() {
        unanswered(e)
    } else if lost(&e) {
        RedisError::from((
            ErrorKind::Io,
            "the connection was lost under the command, which was not sent again (if it \
             writes, the write may have been applied); check out another connection",
            e.to_string(),
        ))
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::handshake_failure;

    #[test]
    fn a_hang_up_is_a_tls_problem_only_before_the_first_connection() {
        let reset =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(reset.is_connection_dropped());
        // Never connected: most likely a server that wants a client certificate.
        let first = handshake_failure(&reset, false).expect("a TLS problem");
        assert!(first.contains("client certificate"), "{first}");
        // Connected before: a restarting server, to retry.
        assert_eq!(handshake_failure(&reset, true), None);
        // A refused connection is never a TLS problem.
        let refused =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(handshake_failure(&refused, false), None);
    }
}
