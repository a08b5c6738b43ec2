//! Whether an error says the server is gone, or only that one connection was lost: the
//! chain walks behind [`Error::is_gone`](super::Error::is_gone) and
//! [`Error::is_dropped`](super::Error::is_dropped).

use super::{Cause, Error};

/// True when `error` or one of its sources is an I/O error that says the server is not
/// there, the redis crate's word for the same, or a failed name lookup.
pub(super) fn says_gone(error: &(dyn std::error::Error + 'static)) -> bool {
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
        if let Some(e) = e.downcast_ref::<etcd_client::Error>() {
            next = etcd_cause(e);
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

/// True when `error` or one of its sources says an established connection was lost (the
/// peer hung up or reset it) rather than that the server refused or failed a request.
pub(super) fn says_dropped(error: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind as K;
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(e) = e.downcast_ref::<Error>() {
            return e.is_dropped();
        }
        if let Some(cause) = e.downcast_ref::<Cause>() {
            next = Some(&**cause);
            continue;
        }
        if let Some(e) = e.downcast_ref::<etcd_client::Error>() {
            next = etcd_cause(e);
            continue;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                K::BrokenPipe
                    | K::ConnectionReset
                    | K::ConnectionAborted
                    | K::NotConnected
                    | K::UnexpectedEof
            )
        {
            return true;
        }
        if let Some(e) = e.downcast_ref::<redis::RedisError>() {
            return !e.is_timeout() && e.is_connection_dropped() && !e.is_connection_refusal();
        }
        next = e.source();
    }
    false
}

/// The cause an etcd-client error holds: it names no source, its variants hold it.
fn etcd_cause(e: &etcd_client::Error) -> Option<&(dyn std::error::Error + 'static)> {
    match e {
        etcd_client::Error::IoError(e) => Some(e),
        etcd_client::Error::TransportError(e) => Some(e),
        etcd_client::Error::GRpcStatus(e) => Some(e),
        _ => None,
    }
}
