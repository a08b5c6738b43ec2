//! [`Lease`] and [`Registration`]: an etcd lease kept alive through outages, re-granted
//! (with its keys put again) when it was lost, on etcd-client's own lease calls.
//!
//! A lease lives as long as keep-alives reach etcd within its TTL. During a member loss
//! the keeper sends them through the connector's client, which routes around the dead
//! member; during a whole-cluster outage longer than the TTL the lease expires and etcd
//! deletes its keys. The keeper notices at the first answer after the outage, reports
//! [`LeaseEvent::Lost`], grants a new lease, puts the registered keys again under it and
//! reports [`LeaseEvent::Regranted`].

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper, PutOptions};
use tokio::sync::broadcast;

use super::{EtcdConnectionManager, EtcdPool};
use crate::error::{Error, Origin, Result, Step};
use crate::pool::StreamKind;
use crate::pool::streams::{self, InPool, NoReader, Read, Source};
use crate::status::Kind;

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
        *self.id.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn keys(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner()).clone()
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
        let keeper = Keeper {
            end: RevokeOnEnd {
                pool: self.clone(),
                kept: shared.clone(),
                client,
            },
            secs,
            period,
            wait: period,
            stream: None,
        };
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

fn fail(pool: &EtcdPool, what: Step, e: etcd_client::Error) -> Error {
    let limit = pool.connector_config().connect_timeout;
    super::classify(pool.name(), "", what, limit, e)
}

/// Calls etcd within `connect_timeout`.
async fn bounded<T>(
    pool: &EtcdPool,
    what: Step,
    call: impl std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
) -> Result<T> {
    bounded_by(pool, pool.connector_config().connect_timeout, what, call).await
}

/// Calls etcd within `limit`.
async fn bounded_by<T>(
    pool: &EtcdPool,
    limit: Duration,
    what: Step,
    call: impl std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
) -> Result<T> {
    match tokio::time::timeout(limit, call).await {
        Ok(r) => r.map_err(|e| fail(pool, what, e)),
        Err(_) => Err(Error::timed_out(
            Origin::new(pool.name(), Kind::ETCD),
            what,
            limit,
            None,
        )),
    }
}

async fn grant(pool: &EtcdPool, client: &mut Client, secs: i64) -> Result<i64> {
    bounded(
        pool,
        Step::request("lease grant"),
        client.lease_grant(secs, None),
    )
    .await
    .map(|r| r.id())
}

async fn put(
    pool: &EtcdPool,
    client: &mut Client,
    key: &[u8],
    value: &[u8],
    lease: i64,
) -> Result<()> {
    let opts = PutOptions::new().with_lease(lease);
    bounded(
        pool,
        Step::request("put"),
        client.put(key, value, Some(opts)),
    )
    .await
    .map(drop)
}

/// A keep-alive stream, kept open between keep-alives.
type KeepAlive = (LeaseKeeper, LeaseKeepAliveStream);

/// One keep-alive round trip on `stream` (opened first if needed): the TTL left, 0 when
/// the lease is gone. A failure closes the stream.
async fn keep_alive_once(
    pool: &EtcdPool,
    client: &mut Client,
    stream: &mut Option<KeepAlive>,
    id: i64,
    secs: i64,
) -> Result<i64> {
    let once = async {
        let Some((keeper, responses)) = stream.as_mut() else {
            // Opening the stream is a keep-alive round trip of its own; etcd-client reads
            // its answer (a renewed lease has its whole TTL again).
            return match client.lease_keep_alive(id).await {
                Ok(opened) => {
                    *stream = Some(opened);
                    Ok(secs)
                }
                Err(etcd_client::Error::LeaseKeepAliveError(m)) if m.contains("not found") => Ok(0),
                Err(e) => Err(e),
            };
        };
        keeper.keep_alive().await?;
        match responses.message().await? {
            Some(resp) => Ok(resp.ttl()),
            None => Err(etcd_client::Error::LeaseKeepAliveError(
                "the keep-alive stream ended".into(),
            )),
        }
    };
    // A keep-alive stuck on a lost member must not outlast the lease: it is cut short
    // after a third of the TTL and tried again on a fresh stream.
    let limit = pool
        .connector_config()
        .connect_timeout
        .min(Duration::from_millis(
            u64::try_from(secs).unwrap_or(1) * 1000 / 3,
        ));
    let r = bounded_by(pool, limit, Step::request("lease keep-alive"), once).await;
    if r.is_err() {
        *stream = None;
    }
    r
}

/// A lease's [`Source`]: keeps the lease alive every third of its TTL, and re-grants it
/// (putting its keys again) when etcd says it is gone. A failed keep-alive (a member
/// lost, the cluster down) is tried again after `reconnect_interval` on a fresh client;
/// after a reload, the same lease is kept through the new pool's client (if the new
/// endpoints are another cluster, it is lost there and granted anew). Ends with the handle
/// or the connector, revoking the lease.
struct Keeper {
    end: RevokeOnEnd,
    secs: i64,
    period: Duration,
    /// How long to wait before the next keep-alive.
    wait: Duration,
    /// The keep-alive stream, kept open between keep-alives.
    stream: Option<KeepAlive>,
}

impl Source<InPool<EtcdConnectionManager>> for Keeper {
    type Open = ();
    type Item = Infallible;
    const NAME: &'static str = "lease";

    async fn open(&mut self, scope: &InPool<EtcdConnectionManager>) -> Result<()> {
        let pool = &scope.pool;
        self.end.client = pool.client().await?;
        self.end.pool = pool.clone();
        self.stream = None;
        Ok(())
    }

    async fn read(
        &mut self,
        scope: &InPool<EtcdConnectionManager>,
        (): &mut (),
    ) -> Read<Infallible> {
        let pool = &scope.pool;
        tokio::time::sleep(self.wait).await;
        self.wait = self.period;
        let kept = &self.end.kept;
        let id = kept.id();
        match keep_alive_once(pool, &mut self.end.client, &mut self.stream, id, self.secs).await {
            Ok(ttl) if ttl > 0 => kept.report(LeaseEvent::Kept { id, ttl }),
            Ok(_) => {
                kept.report(LeaseEvent::Lost {
                    id,
                    reason: "expired: no keep-alive reached etcd within its TTL".into(),
                });
                self.stream = None;
                let retry = pool.connector_config().reconnect_interval;
                regrant(pool, &mut self.end.client, kept, self.secs, retry).await;
            }
            Err(e) => {
                tracing::debug!(connector = %pool.name(), kind = "etcd", lease = id, error = %e, "lease keep-alive failed; retrying");
                self.wait = pool.connector_config().reconnect_interval;
                return Read::Lost(e.to_string());
            }
        }
        Read::Nothing
    }
}

/// Grants a new lease and puts every key again under it, retrying until it works.
async fn regrant(pool: &EtcdPool, client: &mut Client, kept: &Kept, secs: i64, retry: Duration) {
    let old = kept.id();
    loop {
        let attempt = async {
            let new = grant(pool, client, secs).await?;
            for (k, v) in kept.keys() {
                put(pool, client, &k, &v, new).await?;
            }
            Ok::<i64, Error>(new)
        };
        match attempt.await {
            Ok(new) => {
                *kept.id.lock().unwrap_or_else(|p| p.into_inner()) = new;
                kept.report(LeaseEvent::Regranted { old, new });
                return;
            }
            Err(e) => {
                tracing::debug!(connector = %pool.name(), kind = "etcd", error = %e, "lease re-grant failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(retry) => {}
                    () = pool.closed() => return,
                }
                if let Ok(c) = pool.client().await {
                    *client = c;
                }
            }
        }
    }
}

/// Revokes the lease when the keeper ends (its handle dropped, or the connector closed),
/// so its keys go at once instead of after the TTL. It uses the keeper's own client, which
/// still works after the connector is closed.
struct RevokeOnEnd {
    pool: EtcdPool,
    kept: Arc<Kept>,
    client: Client,
}

impl Drop for RevokeOnEnd {
    fn drop(&mut self) {
        let (pool, id, mut client) = (self.pool.clone(), self.kept.id(), self.client.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = bounded(
                    &pool,
                    Step::request("lease revoke"),
                    client.lease_revoke(id),
                )
                .await;
            });
        }
    }
}
