//! [`OnConnect`]: code run once on every new connection before it is pooled.

use std::any::Any;
use std::sync::Arc;

use crate::connector::BoxFuture;
use crate::error::{ConfigErrors, Result};

/// What an [`OnConnect`] hook returns when it fails: any error.
pub type HookError = Box<dyn std::error::Error + Send + Sync + 'static>;

type HookFn<C> = dyn for<'c> Fn(&'c mut C) -> BoxFuture<'c, Result<(), HookError>> + Send + Sync;

/// A hook run once on every new connection of a connector, right after it is made and
/// before it is pooled (so before any caller gets it): `CLIENT SETNAME`, `CLIENT
/// TRACKING ON`, a session setting, a check of your own.
///
/// Register it by connector name with [`Manager::on_connect`](crate::Manager::on_connect),
/// before the connector is registered (by `add_*`, or by
/// [`reload`](crate::Manager::reload)); it then runs on every connection of that
/// connector, and of any connector that replaces it on a reload.
///
/// A hook that fails fails only the connection it ran on: the caller that gets that
/// connection receives [`Error::Hook`](crate::Error::Hook), with the hook's error as its
/// source, instead of the connection, which is dropped. The connector stays up (the
/// server answered), and the next checkout gets another connection. A hook that takes
/// longer than `connect_timeout` fails the same way, with
/// [`Error::Timeout`](crate::Error::Timeout).
///
/// Hooks run on the pool's connections; a shared handle
/// ([`RedisPool::multiplexed`](crate::RedisPool::multiplexed),
/// [`EtcdPool::client`](crate::EtcdPool::client)) is not pooled and does not run them
/// (Redis's `client_name` names those too).
///
/// ```
/// use connhub::{OnConnect, RedisConnection};
///
/// let hook = OnConnect::new(|conn: &mut RedisConnection| {
///     Box::pin(async move {
///         connhub::redis::cmd("CLIENT")
///             .arg("TRACKING")
///             .arg("ON")
///             .query_async::<()>(conn)
///             .await?;
///         Ok(())
///     })
/// });
/// let manager = connhub::Manager::new();
/// manager.on_connect("cache", hook);
/// ```
pub struct OnConnect<C> {
    run: Arc<HookFn<C>>,
}

impl<C> Clone for OnConnect<C> {
    fn clone(&self) -> Self {
        OnConnect {
            run: self.run.clone(),
        }
    }
}

impl<C> std::fmt::Debug for OnConnect<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnConnect")
            .field("connection", &std::any::type_name::<C>())
            .finish_non_exhaustive()
    }
}

impl<C: 'static> OnConnect<C> {
    /// A hook from an async closure over the connection: `|conn| Box::pin(async move {
    /// ... })`.
    pub fn new<F>(hook: F) -> Self
    where
        F: for<'c> Fn(&'c mut C) -> BoxFuture<'c, Result<(), HookError>> + Send + Sync + 'static,
    {
        OnConnect {
            run: Arc::new(hook),
        }
    }

    pub(crate) fn run<'c>(&self, conn: &'c mut C) -> BoxFuture<'c, Result<(), HookError>> {
        (self.run)(conn)
    }
}

/// A hook of any connection type, as the manager keeps it until a connector of that name
/// is built.
#[derive(Clone)]
pub(crate) struct AnyHook {
    hook: Arc<dyn Any + Send + Sync>,
    takes: &'static str,
}

impl AnyHook {
    pub(crate) fn new<C: Send + 'static>(hook: OnConnect<C>) -> Self {
        AnyHook {
            hook: Arc::new(hook),
            takes: std::any::type_name::<C>(),
        }
    }

    /// The hook, when it takes connections of type `C`; otherwise a configuration problem
    /// at `key`.
    pub(crate) fn typed<C: 'static>(
        &self,
        key: &str,
        errors: &mut ConfigErrors,
    ) -> Option<OnConnect<C>> {
        let hook = self.hook.downcast_ref::<OnConnect<C>>().cloned();
        if hook.is_none() {
            errors.push(
                key,
                format!(
                    "its on_connect hook takes `{}`, but this connector's connections are `{}`",
                    self.takes,
                    std::any::type_name::<C>()
                ),
            );
        }
        hook
    }
}
