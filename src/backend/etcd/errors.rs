//! etcd errors as connhub's: a failed connection attempt sorted into its kinds (TLS,
//! authentication, timeout, connect).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::EtcdConnectionManager;
use crate::backend::classify::{self, Class, Site};
use crate::error::{Error, Origin, Step, TimeoutKind};
use crate::status::Kind;

impl EtcdConnectionManager {
    /// A failed connection attempt to `endpoint` as connhub's error: a TLS problem when
    /// the handshake is why, else sorted by [`classify`](fn@classify).
    pub(super) fn connect_error(&self, endpoint: &str, e: etcd_client::Error) -> Error {
        let m = &*self.inner;
        let tls = m
            .tls
            .then(|| handshake_failure(&e, m.reached.load(Ordering::Relaxed)));
        let origin = || Origin::new(m.name.to_string(), Kind::ETCD);
        classify::connect_failure(origin, tls.flatten(), e, |e| {
            classify(
                &m.name,
                endpoint,
                TimeoutKind::Connect,
                m.connect_timeout,
                e,
            )
        })
    }
}

/// Why a TLS connection attempt failed, if TLS is the reason (see
/// [`classify::tls_failure`]). etcd-client's error says a hang-up only in its text.
fn handshake_failure(e: &etcd_client::Error, reached: bool) -> Option<String> {
    let text = format!("{e}");
    let hung_up = [
        "BrokenPipe",
        "broken pipe",
        "ConnectionReset",
        "connection closed",
        "UnexpectedEof",
        "close_notify",
    ]
    .iter()
    .any(|m| text.contains(m));
    classify::tls_failure(&text, hung_up, reached)
}

/// Sorts an etcd error into connhub's kinds.
pub(crate) fn classify(
    name: &str,
    endpoint: &str,
    step: impl Into<Step>,
    after: Duration,
    e: etcd_client::Error,
) -> Error {
    use etcd_client::Error as E;
    let class = match &e {
        E::GRpcStatus(status) => {
            let msg = status.message();
            let auth = matches!(
                status.code(),
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
            ) || msg.contains("authentication failed")
                || msg.contains("auth: ")
                || msg.contains("authentication is not enabled");
            match status.code() {
                _ if auth => Class::Auth(msg.to_owned()),
                tonic::Code::Unavailable => Class::Connect,
                tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => Class::Timeout,
                _ => Class::Other,
            }
        }
        E::TransportError(_) | E::IoError(_) => Class::Connect,
        _ => Class::Other,
    };
    let site = Site {
        origin: Origin::new(name, Kind::ETCD),
        endpoint,
        step: step.into(),
        after,
    };
    classify::error(class, site, Arc::new(e))
}
