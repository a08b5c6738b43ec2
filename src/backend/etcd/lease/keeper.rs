//! The keeper of a lease: the stream [`Source`] that sends its keep-alives, grants it
//! again (putting its keys again) when etcd says it is gone, and revokes it when it ends;
//! and the bounded etcd calls it makes.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper, PutOptions};

use super::{Kept, LeaseEvent};
use crate::backend::etcd::{EtcdConnectionManager, EtcdPool};
use crate::error::{Error, Origin, Result, Step};
use crate::pool::streams::{InPool, Read, Source};
use crate::status::Kind;
use crate::sync::lock;

fn fail(pool: &EtcdPool, what: Step, e: etcd_client::Error) -> Error {
    let limit = pool.connector_config().connect_timeout;
    crate::backend::etcd::classify(pool.name(), "", what, limit, e)
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

pub(super) async fn grant(pool: &EtcdPool, client: &mut Client, secs: i64) -> Result<i64> {
    bounded(
        pool,
        Step::request("lease grant"),
        client.lease_grant(secs, None),
    )
    .await
    .map(|r| r.id())
}

pub(super) async fn put(
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
pub(super) struct Keeper {
    end: RevokeOnEnd,
    secs: i64,
    period: Duration,
    /// How long to wait before the next keep-alive.
    wait: Duration,
    /// The keep-alive stream, kept open between keep-alives.
    stream: Option<KeepAlive>,
}

impl Keeper {
    /// Keeps the lease `end` revokes alive every `period`, granting `secs` anew if lost.
    pub(super) fn new(end: RevokeOnEnd, secs: i64, period: Duration) -> Self {
        Keeper {
            end,
            secs,
            period,
            wait: period,
            stream: None,
        }
    }
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
                *lock(&kept.id) = new;
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
pub(super) struct RevokeOnEnd {
    pub(super) pool: EtcdPool,
    pub(super) kept: Arc<Kept>,
    pub(super) client: Client,
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
