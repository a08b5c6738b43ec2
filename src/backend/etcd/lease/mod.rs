//! [`Lease`] and [`Registration`]: an etcd lease kept alive through outages, re-granted
//! (with its keys put again) when it was lost, on etcd-client's own lease calls.
//!
//! A lease lives as long as keep-alives reach etcd within its TTL. During a member loss
//! the keeper sends them through the connector's client, which routes around the dead
//! member; during a whole-cluster outage longer than the TTL the lease expires and etcd
//! deletes its keys. The keeper notices at the first answer after the outage, reports
//! [`LeaseEvent::Lost`], grants a new lease, puts the registered keys again under it and
//! reports [`LeaseEvent::Regranted`].

mod keeper;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::Client;
use tokio::sync::broadcast;

use super::EtcdPool;
use crate::error::{Error, Result};
use crate::pool::StreamKind;
use crate::pool::streams::{self, InPool, NoReader};
use crate::sync::lock;
use keeper::{Keeper, RevokeOnEnd, grant, put};

/// What happened to a kept lease; see [`Lease::events`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaseEvent {
    /// A keep-alive was answered: the lease has `ttl` seconds left.
    Kept {
        /// The lease.
        id: i64,
        /// Seconds left, as etcd says.
        ttl: i64,
    },
    /// The lease is gone (it expired during an outage, or was revoked); its keys were
    /// deleted by etcd. A new one is being granted.
    Lost {
        /// The lease that was lost.
        id: i64,
        /// Why, as far as the keeper can tell.
        reason: String,
    },
    /// A new lease replaces a lost one; every registered key is put again under it.
    Regranted {
        /// The lost lease.
        old: i64,
        /// The new one.
        new: i64,
    },
}

/// An etcd lease kept alive by connhub (about every third of its TTL) until the handle is
/// dropped, which revokes it. See [`EtcdPool::keep_lease`].
#[derive(Debug)]
pub struct Lease {
    shared: Arc<Kept>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug)]
struct Kept {
    id: Mutex<i64>,
    /// Keys put under the lease, put again under a new one after a loss.
    keys: Mutex<Vec<(Vec<u8>, Vec<u8>)>>,
    events: broadcast::Sender<LeaseEvent>,
}

impl Kept {
    fn id(&self) -> i64 {
        *lock(&self.id)
    }

    fn keys(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        lock(&self.keys).clone()
    }

    fn report(&self, event: LeaseEvent) {
        match &event {
            LeaseEvent::Kept { .. } => {}
            LeaseEvent::Lost { id, reason } => {
                tracing::warn!(lease = id, %reason, "etcd lease lost");
            }
            LeaseEvent::Regranted { old, new } => {
                tracing::info!(old, new, "etcd lease granted again");
            }
        }
        let _ = self.events.send(event);
    }
}

impl Lease {
    /// The current lease id (a new one after [`LeaseEvent::Regranted`]).
    pub fn id(&self) -> i64 {
        self.shared.id()
    }

    /// What happens to the lease from now on: kept, lost, granted again. A receiver that
    /// falls behind misses the oldest events (`RecvError::Lagged`).
    pub fn events(&self) -> broadcast::Receiver<LeaseEvent> {
        self.shared.events.subscribe()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A key kept present under a kept lease for as long as the handle lives (and the
/// cluster is reachable); dropping it revokes the lease, so the key is deleted at once.
/// See [`EtcdPool::register`].
#[derive(Debug)]
pub struct Registration {
    lease: Lease,
    key: Vec<u8>,
}

impl Registration {
    /// The lease the key is under.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// The registered key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }
}

const EVENTS: usize = 64;

impl EtcdPool {
    /// Grants a lease of `ttl` (whole seconds, at least 1) and keeps it alive about every
    /// third of it through this connector, across member losses and reconnects. If it is
    /// lost anyway (an outage longer than the TTL), a new one is granted and the keys
    /// registered under it are put again; [`Lease::events`] reports each step.
    ///
    /// Dropping the handle revokes the lease. Counted in
    /// [`Status::streams`](crate::Status::streams) while it lives.
    pub async fn keep_lease(&self, ttl: Duration) -> Result<Lease> {
        if let Some(next) = self.newer() {
            return Box::pin(next.keep_lease(ttl)).await;
        }
        let secs = lease_seconds(self.name(), ttl)?;
        let mut client = self.client().await?;
        let id = grant(self, &mut client, secs).await?;
        Ok(self.spawn_keeper(client, id, secs, Vec::new()))
    }

    /// Puts `key` = `value` under a lease of `ttl` that connhub keeps alive: the key stays
    /// while the handle lives and the cluster is reachable, comes back within moments of
    /// the cluster answering after an outage longer than the TTL, and is deleted at once
    /// when the handle is dropped (the lease is revoked). The service-registry pattern.
    ///
    /// ```no_run
    /// # async fn demo(pool: connhub::EtcdPool) -> connhub::Result<()> {
    /// let me = pool
    ///     .register("services/api/10.0.0.7", "10.0.0.7:8080", std::time::Duration::from_secs(10))
    ///     .await?;
    /// // ... serve; dropping `me` deregisters.
    /// # Ok(()) }
    /// ```
    pub async fn register(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        ttl: Duration,
    ) -> Result<Registration> {
        if let Some(next) = self.newer() {
            return Box::pin(next.register(key, value, ttl)).await;
        }
        let (key, value) = (key.into(), value.into());
        let secs = lease_seconds(self.name(), ttl)?;
        let mut client = self.client().await?;
        let id = grant(self, &mut client, secs).await?;
        put(self, &mut client, &key, &value, id).await?;
        let lease = self.spawn_keeper(client, id, secs, vec![(key.clone(), value)]);
        Ok(Registration { lease, key })
    }

    fn spawn_keeper(
        &self,
        client: Client,
        id: i64,
        secs: i64,
        keys: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Lease {
        let (events, _) = broadcast::channel(EVENTS);
        let shared = Arc::new(Kept {
            id: Mutex::new(id),
            keys: Mutex::new(keys),
            events,
        });
        let period = Duration::from_millis(u64::try_from(secs).unwrap_or(1) * 1000 / 3);
        let end = RevokeOnEnd {
            pool: self.clone(),
            kept: shared.clone(),
            client,
        };
        let keeper = Keeper::new(end, secs, period);
        let scope = InPool::new(self.clone(), StreamKind::Lease);
        let task = tokio::spawn(streams::run(scope, keeper, Some(()), NoReader));
        Lease { shared, task }
    }
}

fn lease_seconds(name: &str, ttl: Duration) -> Result<i64> {
    let secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
    if secs < 1 || ttl.subsec_nanos() != 0 {
        let mut errors = crate::error::ConfigErrors::default();
        errors.push(
            format!("etcd.{name}.lease.ttl"),
            format!("{ttl:?}: an etcd lease lasts whole seconds, at least 1"),
        );
        return Err(Error::InvalidConfig(errors));
    }
    Ok(secs)
}
