//! The error type's own tests: what is gone, what the source chain holds.

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
fn a_hang_up_or_reset_is_a_dropped_connection_a_refusal_timeout_or_reply_is_not() {
    use std::io::{Error as Io, ErrorKind as K};
    for kind in [
        K::BrokenPipe,
        K::ConnectionReset,
        K::ConnectionAborted,
        K::UnexpectedEof,
    ] {
        assert!(connect(Io::from(kind)).is_dropped(), "{kind:?}");
        let redis = redis::RedisError::from(Io::from(kind));
        assert!(connect(redis).is_dropped(), "redis {kind:?}");
    }
    for kind in [K::ConnectionRefused, K::TimedOut, K::HostUnreachable] {
        assert!(!connect(Io::from(kind)).is_dropped(), "{kind:?}");
        let redis = redis::RedisError::from(Io::from(kind));
        assert!(!connect(redis).is_dropped(), "redis {kind:?}");
    }
    let loading = redis::RedisError::from((
        redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading),
        "loading",
    ));
    assert!(!connect(loading).is_dropped(), "an error reply");
    let origin = Origin::new("cache", Kind::REDIS);
    let timeout = Error::timed_out(
        origin.clone(),
        super::TimeoutKind::HealthCheck,
        std::time::Duration::from_secs(5),
        None,
    );
    assert!(!timeout.is_dropped());
    let wrapped = Error::Backend {
        origin,
        source: Arc::new(connect(Io::from(K::BrokenPipe))),
    };
    assert!(wrapped.is_dropped());
    let reset = etcd_client::Error::IoError(Io::from(K::ConnectionReset));
    assert!(connect(reset).is_dropped());
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
