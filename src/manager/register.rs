//! Registering connectors: from code (`add_redis`, `add_etcd`, `add_pool`,
//! `add_backend`), each built, connected and put in the registry under a free name; and
//! the `on_connect` hooks they get.

use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Manager;
use crate::backend::etcd::{EtcdConnectionManager, EtcdPool};
use crate::backend::redis::{RedisConnectionManager, RedisPool};
use crate::config::{
    ConnectorConfig, EtcdConfig, PoolConfig, RedisConfig, check_name, kind_from_type_name,
};
use crate::error::{ConfigErrors, Error, Result};
use crate::pool::{AnyHook, Backend, Bb8Manager, OnConnect, Plain, Pool, Spec};
use crate::status::Kind;
use crate::sync::{read, write};

impl Manager {
    /// Runs `hook` once on every new connection of the connector `name`, before it is
    /// pooled (see [`OnConnect`]). Register it before the connector: it applies
    /// to connectors registered afterwards, including those a
    /// [`reload`](Manager::reload) adds or replaces. A hook for another connection type
    /// than the connector's is refused as a configuration problem when the connector is
    /// registered. Registering again replaces the hook.
    pub fn on_connect<C: Send + 'static>(&self, name: impl Into<String>, hook: OnConnect<C>) {
        write(&self.inner.hooks).insert(name.into(), AnyHook::new(hook));
    }

    pub(super) fn hook(&self, name: &str) -> Option<AnyHook> {
        let hooks = read(&self.inner.hooks);
        hooks.get(name).cloned()
    }

    /// Registers a Redis connector and returns its pool. The config is validated first;
    /// unless `lazy_connect` is set, the first connection is made (and a wrong password is
    /// [`Error::Auth`]) before this returns.
    pub async fn add_redis(
        &self,
        name: impl Into<String>,
        config: RedisConfig,
    ) -> Result<RedisPool> {
        let name = name.into();
        self.check_free(&name)?;
        let pool = self.build_redis(&name, &config).await?;
        self.register(name, pool).await
    }

    /// A Redis pool, built and connected but not registered.
    pub(super) async fn build_redis(&self, name: &str, config: &RedisConfig) -> Result<RedisPool> {
        let manager = RedisConnectionManager::new(name, config)?;
        let pool = PoolConfig {
            max_size: config.pool_size,
            min_idle: (config.min_idle_conns > 0).then_some(config.min_idle_conns),
            max_idle_time: config.max_idle_time,
            max_lifetime: config.max_lifetime,
            ..PoolConfig::default()
        };
        let connector = config.connector.clone();
        self.build_backend(name, manager.clone(), manager, connector, pool)
            .await
    }

    /// Registers an etcd connector and returns its pool; see [`add_redis`](Manager::add_redis).
    pub async fn add_etcd(&self, name: impl Into<String>, config: EtcdConfig) -> Result<EtcdPool> {
        let name = name.into();
        self.check_free(&name)?;
        let pool = self.build_etcd(&name, &config).await?;
        self.register(name, pool).await
    }

    /// An etcd pool, built and connected but not registered.
    pub(super) async fn build_etcd(&self, name: &str, config: &EtcdConfig) -> Result<EtcdPool> {
        let manager = EtcdConnectionManager::new(name, config)?;
        let pool = PoolConfig {
            max_size: config.pool_size,
            ..PoolConfig::default()
        };
        let connector = config.connector.clone();
        self.build_backend(name, manager.clone(), manager, connector, pool)
            .await
    }

    /// Registers any bb8 manager (bb8-postgres, bb8-redis, bb8-lapin, your own) and
    /// returns its pool.
    ///
    /// A checkout validates with the manager's own `is_valid`, which for most managers is
    /// a round trip; a connection that fails it is dropped and another taken, never an
    /// outage. The health check is `is_valid` too. The kind comes from
    /// [`PoolConfig::kind`] or the manager's type name. To give connhub more to work with
    /// (a local check at checkout, a health probe, error classification), implement
    /// [`Backend`] and use [`add_backend`](Manager::add_backend).
    pub async fn add_pool<M>(
        &self,
        name: impl Into<String>,
        manager: M,
        connector: ConnectorConfig,
        pool: PoolConfig,
    ) -> Result<Pool<M>>
    where
        M: Bb8Manager,
    {
        let kind = match &pool.kind {
            Some(k) => Kind::custom(k.clone()),
            None => Kind::custom(kind_from_type_name(std::any::type_name::<M>())),
        };
        let backend = Plain::new(kind, pool.endpoint.clone());
        self.add_backend(name, manager, backend, connector, pool)
            .await
    }

    /// Registers a backend: `manager` opens its connections, `backend` tells connhub how
    /// to check them and read their errors. The one path every backend takes, Redis and
    /// etcd included.
    pub async fn add_backend<B: Backend>(
        &self,
        name: impl Into<String>,
        manager: B::Manager,
        backend: B,
        connector: ConnectorConfig,
        pool: PoolConfig,
    ) -> Result<Pool<B::Manager>> {
        let name = name.into();
        self.check_free(&name)?;
        let pool = self
            .build_backend(&name, manager, backend, connector, pool)
            .await?;
        self.register(name, pool).await
    }

    /// A pool of any backend, built (and connected, unless `lazy_connect`) but not
    /// registered.
    pub(super) async fn build_backend<B: Backend>(
        &self,
        name: &str,
        manager: B::Manager,
        backend: B,
        connector: ConnectorConfig,
        pool: PoolConfig,
    ) -> Result<Pool<B::Manager>> {
        let mut errors = ConfigErrors::default();
        check_name("pool", name, &mut errors);
        connector.validate(name, &mut errors);
        pool.validate(name, &mut errors);
        errors.into_result()?;
        let spec = Spec {
            connector,
            pool,
            events: self.inner.events.clone(),
            name: name.to_owned(),
            on_connect: self.hook(name),
        };
        Pool::build(spec, manager, Box::new(backend)).await
    }

    pub(super) fn check_free(&self, name: &str) -> Result<()> {
        self.check_open()?;
        if self.read().contains_key(name) {
            return Err(Error::AlreadyRegistered {
                name: name.to_owned(),
            });
        }
        Ok(())
    }

    pub(super) async fn register<M>(&self, name: String, pool: Pool<M>) -> Result<Pool<M>>
    where
        M: Bb8Manager,
    {
        let refused = {
            let mut registry = self.write();
            if self.inner.closed.load(Ordering::Acquire) {
                Some(Error::Closed { origin: None })
            } else {
                match registry.entry(name) {
                    Entry::Occupied(e) => Some(Error::AlreadyRegistered {
                        name: e.key().clone(),
                    }),
                    Entry::Vacant(v) => {
                        v.insert(Arc::new(pool.clone()));
                        None
                    }
                }
            }
        };
        match refused {
            Some(e) => {
                // Lost a race with another registration or with close: undo quietly.
                let _ = pool.close().await;
                Err(e)
            }
            None => Ok(pool),
        }
    }
}
