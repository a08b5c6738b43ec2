//! [`Backend`]: what connhub knows of a backend beyond its `bb8` manager. A backend
//! implements it once; the [`Manager`](crate::Manager) registers every backend, its own
//! and a user's, through the same path ([`Manager::add_backend`](crate::Manager::add_backend)).

use std::marker::PhantomData;

use crate::connector::BoxFuture;
use crate::error::Error;
use crate::health::LossSignal;
use crate::status::Kind;

/// A bb8 manager whose error is a standard error, as every published one's is: what a
/// [`Pool`](crate::Pool) is generic over.
pub trait Bb8Manager:
    bb8::ManageConnection<Error: std::error::Error + Send + Sync + 'static>
{
}

impl<M> Bb8Manager for M where
    M: bb8::ManageConnection<Error: std::error::Error + Send + Sync + 'static>
{
}

/// The connection type of a backend's bb8 manager.
pub type ConnectionOf<B> = <<B as Backend>::Manager as bb8::ManageConnection>::Connection;

/// The error type of a backend's bb8 manager.
pub type ErrorOf<B> = <<B as Backend>::Manager as bb8::ManageConnection>::Error;

/// A backend: its kind and endpoint, how to prove a connection works, how to read its
/// errors, and, where its client multiplexes, the shared handles to drop after an outage.
///
/// Every method but [`kind`](Backend::kind) has a default that suits a plain bb8 manager:
/// the health probe is the manager's `is_valid`, a checkout validates with `is_valid` too,
/// and errors become [`Error::Backend`].
///
/// ```
/// use connhub::Kind;
/// use connhub::backend::Backend;
/// use connhub::bb8::ManageConnection;
///
/// # #[derive(Debug)] struct Db;
/// # #[derive(Debug)] struct E;
/// # impl std::fmt::Display for E { fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str("e") } }
/// # impl std::error::Error for E {}
/// # impl ManageConnection for Db {
/// #     type Connection = (); type Error = E;
/// #     async fn connect(&self) -> Result<(), E> { Ok(()) }
/// #     async fn is_valid(&self, _: &mut ()) -> Result<(), E> { Ok(()) }
/// #     fn has_broken(&self, _: &mut ()) -> bool { false }
/// # }
/// /// The Db backend: connections are checked with the manager's own `is_valid`.
/// #[derive(Debug)]
/// struct DbBackend;
///
/// impl Backend for DbBackend {
///     type Manager = Db;
///     fn kind(&self) -> Kind {
///         Kind::custom("db")
///     }
/// }
/// ```
pub trait Backend: Send + Sync + 'static {
    /// The bb8 manager that opens this backend's connections.
    type Manager: Bb8Manager;

    /// The kind reported in status, events, errors and metrics.
    fn kind(&self) -> Kind;

    /// Where it connects, for status (addresses only, never credentials).
    fn endpoint(&self) -> String {
        String::new()
    }

    /// A local look at a connection before it is handed out, with no round trip:
    /// `Some(true)` when it is known broken (it is dropped and another one taken),
    /// `Some(false)` when it may be handed out as is, `None` to validate it with the
    /// manager's `is_valid` (the default).
    fn is_broken(&self, conn: &ConnectionOf<Self>) -> Option<bool> {
        let _ = conn;
        None
    }

    /// True when [`is_broken`](Backend::is_broken) always answers `Some`: a checkout then
    /// never waits on the server, and an idle connection is handed out at the first poll.
    fn checks_locally(&self) -> bool {
        false
    }

    /// One round trip on `conn` that proves the backend answers; the health check.
    /// Default: the manager's `is_valid`.
    fn probe<'a>(
        &'a self,
        manager: &'a Self::Manager,
        conn: &'a mut ConnectionOf<Self>,
    ) -> BoxFuture<'a, Result<(), ErrorOf<Self>>> {
        Box::pin(bb8::ManageConnection::is_valid(manager, conn))
    }

    /// Turns the manager's error into connhub's (`Auth`, `Tls`, `Connect`, `Timeout`...).
    /// Default: [`Error::Backend`] carrying it, or the error itself when it already is a
    /// connhub error.
    fn classify(&self, connector: &str, error: ErrorOf<Self>) -> Error {
        Error::from_backend(connector, &self.kind(), error)
    }

    /// Called when every connection is retired (the connector went down, or closed):
    /// drop shared handles, so the next caller gets a fresh one.
    fn retire(&self, manager: &Self::Manager) {
        let _ = manager;
    }

    /// Commands this backend sent again after their connection was lost, for
    /// [`Status::retried_commands`](crate::Status::retried_commands). Default: 0.
    fn retried_commands(&self) -> u64 {
        0
    }

    /// Where the backend reports connections their server closed, so the health engine
    /// checks at once instead of at the next `health_check_interval`: a server that
    /// dies while nobody calls is seen down within moments. Called once, when the pool is
    /// built. Default: none (losses are seen by the periodic check and by failed
    /// checkouts).
    fn loss_signal(&self) -> Option<LossSignal> {
        None
    }
}

/// The backend of a plain bb8 manager registered with
/// [`Manager::add_pool`](crate::Manager::add_pool): defaults everywhere, and the kind it
/// was given.
pub(crate) struct Plain<M> {
    kind: Kind,
    endpoint: String,
    manager: PhantomData<fn() -> M>,
}

impl<M> Plain<M> {
    pub(crate) fn new(kind: Kind, endpoint: String) -> Self {
        Plain {
            kind,
            endpoint,
            manager: PhantomData,
        }
    }
}

impl<M: Bb8Manager> Backend for Plain<M> {
    type Manager = M;

    fn kind(&self) -> Kind {
        self.kind.clone()
    }

    fn endpoint(&self) -> String {
        self.endpoint.clone()
    }
}
