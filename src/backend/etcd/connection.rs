//! [`EtcdConnection`], what a checkout of an etcd pool derefs to, and the shared client
//! that [`EtcdPool::client`] hands out.

use std::ops::{Deref, DerefMut};

use etcd_client::Client;

use super::EtcdPool;
use crate::error::Result;

/// A pooled etcd client: a clone of the connector's shared client; derefs to
/// [`etcd_client::Client`].
pub struct EtcdConnection {
    pub(super) client: Client,
}

impl std::fmt::Debug for EtcdConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConnection").finish_non_exhaustive()
    }
}

impl EtcdPool {
    /// The shared client, with no turn taken: an `etcd_client::Client` multiplexes every
    /// request over HTTP/2, so one client serves any number of tasks at once. Everything
    /// on the client is safe to share (watches and lease keep-alives are streams of their
    /// own).
    ///
    /// Use [`get`](crate::Pool::get) when you want the pool's fair limit on requests in
    /// flight. Fails fast like `get()` while the connector is down. The client is opened
    /// on first use and replaced after an outage.
    ///
    /// ```no_run
    /// # async fn demo(pool: connhub::EtcdPool) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut client = pool.client().await?;
    /// client.put("service/a", "10.0.0.1:80", None).await?;
    /// # Ok(()) }
    /// ```
    pub async fn client(&self) -> Result<Client> {
        let this = self.current();
        let open = || {
            let (pool, manager) = (this.clone(), this.manager().clone());
            async move { manager.open().await.map_err(|e| pool.connect_failed(e)) }
        };
        this.manager()
            .inner
            .shared
            .get(this, open, Client::clone)
            .await
    }
}

impl Deref for EtcdConnection {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl DerefMut for EtcdConnection {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}
