//! [`LossSignal`]: how a backend tells its connector's health engine, the moment it
//! happens, that a connection was closed by its server.

use std::sync::Arc;

use tokio::sync::Notify;

/// Tells a connector's health engine that one of its connections was closed by the
/// server, so it checks the server at once instead of at the next periodic check.
///
/// A backend whose client learns of a closed connection (the redis crate's
/// `PushKind::Disconnection`, a channel's transport error) hands one out from
/// [`Backend::loss_signal`](crate::backend::Backend::loss_signal) and calls
/// [`connection_lost`](LossSignal::connection_lost) from there. Signals that come while a
/// check runs are folded into it: a hundred connections closed at once make one check.
/// The check keeps the connector up when a fresh connection works (the server only closed
/// idle connections), and takes it down within moments when none does.
#[derive(Debug, Clone, Default)]
pub struct LossSignal(Arc<Notify>);

impl LossSignal {
    /// A signal nobody listens to yet; the pool listens once it is built.
    pub fn new() -> Self {
        LossSignal::default()
    }

    /// A connection was closed by its server: check now. Cheap, never blocks, callable
    /// from any thread.
    pub fn connection_lost(&self) {
        self.0.notify_one();
    }

    /// Completes at the next loss (or at once, for one signalled since the last wait).
    pub(crate) async fn lost(&self) {
        self.0.notified().await;
    }
}
