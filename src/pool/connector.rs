//! [`Pool`] as the object-safe [`Connector`] the manager keeps.

use std::any::Any;
use std::time::Duration;

use super::{Bb8Manager, Pool};
use crate::config::ConnectorConfig;
use crate::connector::BoxFuture;
use crate::connector::Connector;
use crate::error::Result;
use crate::status::{Kind, State, Status};

impl<M: Bb8Manager> crate::connector::sealed::Sealed for Pool<M> {}

impl<M: Bb8Manager> Connector for Pool<M> {
    fn name(&self) -> &str {
        &self.inner.health.name
    }

    fn kind(&self) -> &Kind {
        &self.inner.health.kind
    }

    fn connect(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move { self.check_now().await.map(|_| ()) })
    }

    fn disconnect(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.close())
    }

    fn health_check(&self) -> BoxFuture<'_, Result<Duration>> {
        Box::pin(self.check_now())
    }

    fn state(&self) -> State {
        self.inner.health.state()
    }

    fn config(&self) -> &ConnectorConfig {
        &self.inner.health.config
    }

    fn status(&self) -> Status {
        Pool::status(self)
    }

    fn request_check(&self) {
        self.current().inner.health.demand();
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
