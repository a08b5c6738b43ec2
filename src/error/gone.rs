//! Whether an error says the server is gone, or only that one connection was lost: the
//! chain walks behind [`Error::is_gone`](super::Error::is_gone) and
//! [`Error::is_dropped`](super::Error::is_dropped).

use super::{Cause, Error};

/// True when `error` or one of its sources is an I/O error that says the server is not
/// there, the redis crate's word for the same, or a failed name lookup.
pub(super) fn says_gone(error: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind as K;
    walk(error, Error::is_gone, |e| {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            let gone = matches!(
                io.kind(),
                K::ConnectionRefused | K::HostUnreachable | K::NetworkUnreachable | K::NotFound
            );
            // std's own message for a failed getaddrinfo, which has no kind of its own.
            if gone || io.to_string().contains("failed to lookup address") {
                return Some(true);
            }
        }
        e.downcast_ref::<redis::RedisError>()
            .is_some_and(redis::RedisError::is_connection_refusal)
            .then_some(true)
    })
}

/// True when `error` or one of its sources says an established connection was lost (the
/// peer hung up or reset it) rather than that the server refused or failed a request.
pub(super) fn says_dropped(error: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind as K;
    walk(error, Error::is_dropped, |e| {
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
            return Some(true);
        }
        e.downcast_ref::<redis::RedisError>()
            .map(|e| !e.is_timeout() && e.is_connection_dropped() && !e.is_connection_refusal())
    })
}

/// Walks `error` and its sources until `verdict` decides (`Some`), looking inside shared
/// causes and etcd-client's errors, which hide what they hold. A connhub error on the way
/// decides by `nested`. Undecided to the end: false.
fn walk(
    error: &(dyn std::error::Error + 'static),
    nested: fn(&Error) -> bool,
    verdict: impl Fn(&(dyn std::error::Error + 'static)) -> Option<bool>,
) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(e) = e.downcast_ref::<Error>() {
            return nested(e);
        }
        if let Some(cause) = e.downcast_ref::<Cause>() {
            next = Some(&**cause);
            continue;
        }
        if let Some(e) = e.downcast_ref::<etcd_client::Error>() {
            next = etcd_cause(e);
            continue;
        }
        if let Some(decided) = verdict(e) {
            return decided;
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
