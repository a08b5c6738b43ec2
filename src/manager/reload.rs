//! [`Manager::reload`]: a new [`ManagerConfig`] applied to a running manager, with no
//! call failing on a connector that stays.
//!
//! The order is what makes it safe: check the whole config; build every new and changed
//! connector and prove it (its first connection, unless `lazy_connect`); only then swap
//! them all into the registry at once; point each replaced pool at its successor, so
//! handles kept from before check out from the new pool; and last, drain and close the
//! replaced and removed ones. A failure before the swap closes what was built and leaves
//! the running connectors as they were.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::future::join_all;

use super::Manager;
use crate::backend::etcd::{EtcdConnection, EtcdPool};
use crate::backend::redis::{RedisConnection, RedisPool};
use crate::config::{EtcdConfig, ManagerConfig, RedisConfig};
use crate::connector::Connector;
use crate::error::{ConfigErrors, Error, Result};

/// The config a connector was declared with.
#[derive(Clone, PartialEq)]
pub(super) enum Declared {
    Redis(Box<RedisConfig>),
    Etcd(Box<EtcdConfig>),
}

/// Why a config may not name a connector registered in code.
const REGISTERED_IN_CODE: &str = "a connector registered in code has this name; remove it first";

impl Declared {
    fn key(&self, name: &str) -> String {
        match self {
            Declared::Redis(_) => format!("redis.{name}"),
            Declared::Etcd(_) => format!("etcd.{name}"),
        }
    }
}

/// What [`Manager::reload`] did, by connector name; each list is sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReloadReport {
    /// Connectors the new config added.
    pub added: Vec<String>,
    /// Connectors whose config changed: rebuilt, swapped in, the old pool drained.
    pub replaced: Vec<String>,
    /// Connectors the new config left out: drained and closed.
    pub removed: Vec<String>,
    /// Connectors whose config did not change: left as they were.
    pub unchanged: Vec<String>,
}

impl ReloadReport {
    /// True when the reload changed nothing.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.replaced.is_empty() && self.removed.is_empty()
    }
}

/// A new pool, built and proven but not yet registered.
enum Built {
    Redis(RedisPool),
    Etcd(EtcdPool),
}

impl Built {
    fn connector(&self) -> Arc<dyn Connector> {
        match self {
            Built::Redis(p) => Arc::new(p.clone()),
            Built::Etcd(p) => Arc::new(p.clone()),
        }
    }

    /// Makes `old`'s handles use this pool from now on, when they are of the same kind.
    fn succeed(&self, old: &dyn Connector) {
        match self {
            Built::Redis(new) => {
                if let Some(old) = old.as_any().downcast_ref::<RedisPool>() {
                    old.replaced_by(new);
                }
            }
            Built::Etcd(new) => {
                if let Some(old) = old.as_any().downcast_ref::<EtcdPool>() {
                    old.replaced_by(new);
                }
            }
        }
    }

    async fn close(&self) {
        let _ = match self {
            Built::Redis(p) => p.close().await,
            Built::Etcd(p) => p.close().await,
        };
    }
}

impl Manager {
    /// Applies a new config: adds the connectors it adds, drains and removes the ones it
    /// leaves out, and replaces the ones whose settings changed, without failing a call
    /// on a connector that stays.
    ///
    /// - The whole config is checked first; any problem refuses it whole
    ///   ([`Error::InvalidConfig`], every problem listed) and nothing changes.
    /// - New and changed connectors are built and connected (unless `lazy_connect`)
    ///   before anything is swapped. If one cannot connect, the others built are closed,
    ///   its error is returned, and the running connectors are left as they were.
    /// - A replaced connector's old pool is drained (up to its `drain_timeout`) after
    ///   the swap. Handles to it ([`Pool`](crate::Pool) clones kept from before) check out
    ///   from the new pool from then on. Leases, watches and subscriptions opened on it
    ///   move to the new pool: a watch resumes after the last change it delivered, a lease
    ///   is kept alive through the new client, a subscription resubscribes and yields a
    ///   `Gap`. On a removed connector they end.
    /// - Connectors registered in code (`add_*`) are not touched; a config naming one is
    ///   refused.
    ///
    /// Reloads take effect one at a time, each whole, without holding a lock while they
    /// connect: a reload builds its pools, then swaps them in only if no other reload was
    /// swapped in since it read the running config; if one was, it closes what it built
    /// and starts again from the config now running. `Manager::from_config` is a reload of
    /// an empty manager.
    ///
    /// ```no_run
    /// # async fn demo(manager: connhub::Manager) -> Result<(), connhub::Error> {
    /// let config = connhub::ManagerConfig::from_file("connhub.yaml")?;
    /// let report = manager.reload(config).await?;
    /// println!("added {:?}, replaced {:?}, removed {:?}", report.added, report.replaced, report.removed);
    /// # Ok(()) }
    /// ```
    pub async fn reload(&self, config: ManagerConfig) -> Result<ReloadReport> {
        loop {
            if let Some(report) = self.try_reload(config.clone()).await? {
                return Ok(report);
            }
            tracing::debug!("another reload was swapped in meanwhile; planning again");
        }
    }

    /// One reload attempt: `None` when another reload was swapped in while this one
    /// built its pools (they are closed).
    async fn try_reload(&self, config: ManagerConfig) -> Result<Option<ReloadReport>> {
        self.check_open()?;
        let declared = self.declared().clone();
        self.refuse_problems(&config, &declared)?;
        let (plan, report) = plan(config, &declared);
        let built = join_all(plan.iter().map(|(name, d)| self.build_declared(name, d))).await;
        let mut pools = Vec::with_capacity(built.len());
        let mut failed = None;
        for ((name, declared), b) in plan.into_iter().zip(built) {
            match b {
                Ok(pool) => pools.push((name, declared, pool)),
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        // The first failure (Redis first, then by name), or one found at the swap: the
        // pools built are closed and the running ones stay.
        let swapped = match failed {
            Some(e) => Err(e),
            None => self.swap(&pools, &report.removed, &declared),
        };
        let old = match swapped {
            Ok(Some(old)) => old,
            Ok(None) => {
                join_all(pools.iter().map(|(_, _, p)| p.close())).await;
                return Ok(None);
            }
            Err(e) => {
                join_all(pools.iter().map(|(_, _, p)| p.close())).await;
                return Err(e);
            }
        };
        for (name, _, pool) in &pools {
            if let Some(previous) = old.iter().find(|c| c.name() == name) {
                pool.succeed(&**previous);
            }
        }
        join_all(old.iter().map(|c| c.disconnect())).await;
        if !report.is_empty() {
            tracing::info!(
                added = ?report.added,
                replaced = ?report.replaced,
                removed = ?report.removed,
                "configuration reloaded"
            );
        }
        Ok(Some(report))
    }

    /// Every problem of the new config, together: its own, a name taken by a connector
    /// registered in code, a hook of the wrong connection type.
    fn refuse_problems(
        &self,
        config: &ManagerConfig,
        declared: &BTreeMap<String, Declared>,
    ) -> Result<()> {
        let mut errors = ConfigErrors::default();
        config.check(&mut errors);
        let registered = self.names();
        let names = config
            .redis
            .keys()
            .map(|n| (n, format!("redis.{n}")))
            .chain(config.etcd.keys().map(|n| (n, format!("etcd.{n}"))));
        for (name, key) in names {
            if registered.contains(name) && !declared.contains_key(name) {
                errors.push(key.clone(), REGISTERED_IN_CODE);
            }
            if let Some(hook) = self.hook(name) {
                if config.redis.contains_key(name) {
                    hook.typed::<RedisConnection>(&key, &mut errors);
                } else {
                    hook.typed::<EtcdConnection>(&key, &mut errors);
                }
            }
        }
        errors.into_result()
    }

    async fn build_declared(&self, name: &str, declared: &Declared) -> Result<Built> {
        match declared {
            Declared::Redis(c) => self.build_redis(name, c).await.map(Built::Redis),
            Declared::Etcd(c) => self.build_etcd(name, c).await.map(Built::Etcd),
        }
    }

    /// Puts the new pools in and takes the removed ones out, at once; returns the
    /// connectors they replaced or removed, to drain. `None` when the running config is no
    /// longer `planned_from` (another reload was swapped in): nothing changes.
    fn swap(
        &self,
        pools: &[(String, Declared, Built)],
        removed: &[String],
        planned_from: &BTreeMap<String, Declared>,
    ) -> Result<Option<Vec<Arc<dyn Connector>>>> {
        let mut registry = self.write();
        let mut declared = self.declared();
        if self.is_closed() {
            return Err(Error::Closed { origin: None });
        }
        if *declared != *planned_from {
            return Ok(None);
        }
        // A connector registered in code since the config was checked.
        if let Some((name, d, _)) = pools
            .iter()
            .find(|(name, _, _)| registry.contains_key(name) && !declared.contains_key(name))
        {
            let mut errors = ConfigErrors::default();
            errors.push(d.key(name), REGISTERED_IN_CODE);
            return Err(Error::InvalidConfig(errors));
        }
        let mut old = Vec::new();
        for (name, d, pool) in pools {
            old.extend(registry.insert(name.clone(), pool.connector()));
            declared.insert(name.clone(), d.clone());
        }
        for name in removed {
            old.extend(registry.remove(name));
            declared.remove(name);
        }
        Ok(Some(old))
    }
}

/// What to build (the added and changed connectors, Redis first, each sorted by name),
/// and the report of what the reload will do.
fn plan(
    config: ManagerConfig,
    declared: &BTreeMap<String, Declared>,
) -> (Vec<(String, Declared)>, ReloadReport) {
    let mut report = ReloadReport::default();
    let mut build = Vec::new();
    let wanted = config
        .redis
        .into_iter()
        .map(|(n, c)| (n, Declared::Redis(Box::new(c))))
        .chain(
            config
                .etcd
                .into_iter()
                .map(|(n, c)| (n, Declared::Etcd(Box::new(c)))),
        );
    let mut kept = Vec::new();
    for (name, d) in wanted {
        kept.push(name.clone());
        match declared.get(&name) {
            Some(old) if *old == d => report.unchanged.push(name),
            Some(_) => {
                report.replaced.push(name.clone());
                build.push((name, d));
            }
            None => {
                report.added.push(name.clone());
                build.push((name, d));
            }
        }
    }
    report.removed = declared
        .keys()
        .filter(|n| !kept.contains(n))
        .cloned()
        .collect();
    for list in [
        &mut report.added,
        &mut report.replaced,
        &mut report.unchanged,
    ] {
        list.sort();
    }
    (build, report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redis(addr: &str) -> RedisConfig {
        RedisConfig::new(addr)
    }

    fn declared(addr: &str) -> Declared {
        Declared::Redis(Box::new(redis(addr)))
    }

    #[test]
    fn a_plan_sorts_connectors_by_what_changed() {
        let mut running = BTreeMap::new();
        running.insert("same".into(), declared("127.0.0.1:1"));
        running.insert("moved".into(), declared("127.0.0.1:2"));
        running.insert("gone".into(), declared("127.0.0.1:3"));
        running.insert("kind".into(), declared("127.0.0.1:4"));
        let mut next = ManagerConfig::default();
        next.redis.insert("same".into(), redis("127.0.0.1:1"));
        next.redis.insert("moved".into(), redis("127.0.0.1:5"));
        next.redis.insert("new".into(), redis("127.0.0.1:6"));
        next.etcd.insert("kind".into(), EtcdConfig::default());
        let (build, report) = plan(next, &running);
        assert_eq!(report.added, ["new"]);
        assert_eq!(report.replaced, ["kind", "moved"]);
        assert_eq!(report.removed, ["gone"]);
        assert_eq!(report.unchanged, ["same"]);
        let names: Vec<&str> = build.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["moved", "new", "kind"], "Redis first, then etcd");
    }

    #[test]
    fn the_same_config_plans_nothing() {
        let mut running = BTreeMap::new();
        running.insert("a".into(), declared("127.0.0.1:1"));
        let mut next = ManagerConfig::default();
        next.redis.insert("a".into(), redis("127.0.0.1:1"));
        let (build, report) = plan(next, &running);
        assert!(build.is_empty());
        assert!(report.is_empty());
    }
}
