//! The object-safe [`Connector`] interface: what the [`Manager`](crate::Manager) keeps of
//! every registered connector, whatever its backend.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::config::ConnectorConfig;
use crate::error::Result;
use crate::status::{Kind, State, Status};

/// A boxed future, as returned by the object-safe [`Connector`] and
/// [`Backend`](crate::backend::Backend) methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One connection to one backend, as the [`Manager`](crate::Manager) sees it.
///
/// Every [`Pool`](crate::Pool) implements it, so the registry holds all backends behind
/// this one interface; [`as_any`](Connector::as_any) gives the typed pool back by downcast.
/// The trait is object safe: its async methods return boxed futures.
///
/// It is sealed: only a [`Pool`](crate::Pool) implements it, because only a pool can be
/// registered. To bring a backend of your own, implement
/// [`Backend`](crate::backend::Backend) (or hand any bb8 manager to
/// [`Manager::add_pool`](crate::Manager::add_pool)); its pool is then a `Connector`.
pub trait Connector: sealed::Sealed + Send + Sync + 'static {
    /// The name it was registered under.
    fn name(&self) -> &str;

    /// Its backend kind.
    fn kind(&self) -> &Kind;

    /// Makes sure a working connection exists (the first connect, or a manual reconnect).
    fn connect(&self) -> BoxFuture<'_, Result<()>>;

    /// Closes it: stops its health task, refuses new checkouts and waits up to the drain
    /// timeout for checked-out connections to come back. Idempotent.
    fn disconnect(&self) -> BoxFuture<'_, Result<()>>;

    /// Checks the backend now; returns how long the check took.
    fn health_check(&self) -> BoxFuture<'_, Result<Duration>>;

    /// True while the connector serves checkouts (`Healthy`).
    fn is_connected(&self) -> bool {
        self.state() == State::Healthy
    }

    /// Its current state.
    fn state(&self) -> State;

    /// The shared part of its configuration.
    fn config(&self) -> &ConnectorConfig;

    /// A serializable snapshot, free of secrets.
    fn status(&self) -> Status;

    /// Asks for a check now if the connector is down and one is due, as a refused caller
    /// does (at most one per `reconnect_interval`); does nothing while it is up. The
    /// probe routes call it, so readiness follows a server that comes back even when no
    /// caller asks. Default: nothing.
    fn request_check(&self) {}

    /// The typed pool behind this connector, for downcasting.
    fn as_any(&self) -> &dyn Any;
}

pub(crate) mod sealed {
    /// Only the crate's own [`Pool`](crate::Pool) implements
    /// [`Connector`](super::Connector).
    pub trait Sealed {}
}
