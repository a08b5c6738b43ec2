//! The etcd backend: [`EtcdConnectionManager`] (a `bb8::ManageConnection` and a
//! [`Backend`]), the [`EtcdConnection`] a checkout derefs to, and [`EtcdPool`].
//!
//! An `etcd_client::Client` multiplexes every request over HTTP/2, so connhub shares, not
//! locks: every checkout of an etcd pool is a clone of one shared client, and the pool's
//! `pool_size` bounds how many requests are in flight through `get()`, handed out in
//! arrival order. One request stuck on a dead member holds one turn, never a whole client.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

mod channel;
mod connection;
mod errors;
mod lease;
mod members;
mod watch;

use crate::config::{EtcdConfig, parse_etcd};
use crate::connector::BoxFuture;
use crate::error::{Error, Origin, Result, Step, TimeoutKind};
use crate::health::LossSignal;
use crate::pool::shared::Shared;
use crate::pool::{Backend, Pool, PooledConnection};
use crate::status::Kind;
use channel::Gated;
pub use connection::EtcdConnection;
pub(crate) use errors::classify;
pub use lease::{Lease, LeaseEvent, Registration};
use members::Members;
pub use watch::{Watch, WatchItem, WatchSpec};

/// A pool of etcd clients; what [`Manager::etcd`](crate::Manager::etcd) returns.
///
/// ```no_run
/// # async fn demo(manager: connhub::Manager) -> Result<(), Box<dyn std::error::Error>> {
/// let pool = manager.etcd("registry")?;
/// let mut client = pool.get().await?;
/// client.put("service/a", "10.0.0.1:80", None).await?;
/// let resp = client.get("service/a", None).await?;
/// # Ok(()) }
/// ```
pub type EtcdPool = Pool<EtcdConnectionManager>;

/// A checked-out etcd client.
pub type PooledEtcdConnection = PooledConnection<EtcdConnectionManager>;

/// Makes etcd clients for bb8 (clones of one shared client), and tells the pool how to
/// check them. Cloning shares it.
#[derive(Clone)]
pub struct EtcdConnectionManager {
    inner: Arc<ManagerInner>,
}

struct ManagerInner {
    name: Arc<str>,
    members: Arc<Members>,
    member_check_interval: Duration,
    tls: bool,
    options: ConnectOptions,
    connect_timeout: Duration,
    command_timeout: Duration,
    /// The client every checkout clones; opened on first use, dropped after an outage.
    shared: Shared<Client>,
    /// A client was made once: a hang-up during a later TLS handshake is a member
    /// restarting, not a TLS set-up problem.
    reached: AtomicBool,
}

impl std::fmt::Debug for EtcdConnectionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConnectionManager")
            .field("name", &self.inner.name)
            .field("endpoints", &self.inner.members.endpoints())
            .finish_non_exhaustive()
    }
}

impl EtcdConnectionManager {
    /// A manager for the connector `name`. The config is validated first.
    pub fn new(name: &str, config: &EtcdConfig) -> Result<Self> {
        let mut errors = crate::error::ConfigErrors::default();
        config.validate(&format!("etcd.{name}"), &mut errors);
        errors.into_result()?;
        // Validated above; parsing again gives the canonical host:port.
        let parsed: Vec<_> = config
            .endpoints
            .iter()
            .filter_map(|e| parse_etcd(e).ok())
            .collect();
        let tls = config.tls.enabled || parsed.iter().any(|hp| hp.tls);
        let scheme = if tls { "https" } else { "http" };
        let endpoints: Vec<String> = parsed.iter().map(|hp| format!("{scheme}://{hp}")).collect();
        let probe_timeout = config
            .dial_timeout
            .min(config.member_check_interval.max(Duration::from_millis(200)));
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.dial_timeout)
            .with_keep_alive(Duration::from_secs(10), config.dial_timeout)
            .with_keep_alive_while_idle(true);
        let mut probe_options = ConnectOptions::new()
            .with_connect_timeout(probe_timeout)
            .with_timeout(probe_timeout);
        if tls {
            let tls_options = tls_options(name, config)?;
            options = options.with_tls(tls_options.clone());
            probe_options = probe_options.with_tls(tls_options);
        }
        if let Some(t) = config.command_timeout {
            options = options.with_timeout(t);
        }
        if let (Some(user), Some(pw)) = (&config.username, &config.password) {
            // Tokens expire (`--auth-token-ttl`); an expired one is renewed and the request
            // sent again instead of failing.
            options = options
                .with_user(user.clone(), pw.expose().to_owned())
                .with_auto_token_refresh(true);
        }
        Ok(EtcdConnectionManager {
            inner: Arc::new(ManagerInner {
                name: name.into(),
                members: Arc::new(Members::new(
                    name.into(),
                    endpoints,
                    probe_timeout,
                    probe_options,
                )),
                tls,
                member_check_interval: config.member_check_interval,
                options,
                connect_timeout: config.connector.connect_timeout,
                command_timeout: config
                    .command_timeout
                    .unwrap_or(config.connector.connect_timeout),
                shared: Shared::new(1, |_| true),
                reached: AtomicBool::new(false),
            }),
        })
    }

    /// The endpoints, comma separated, for status.
    pub fn endpoint(&self) -> String {
        self.inner
            .members
            .endpoints()
            .iter()
            .map(|e| e.split_once("://").map_or(e.as_str(), |(_, rest)| rest))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The shared client, opened first if there is none (for bb8's connect: bb8 reports
    /// a failure to the health engine).
    async fn shared(&self) -> Result<Client> {
        let open = || {
            let manager = self.clone();
            async move { manager.open().await }
        };
        self.inner.shared.get_or_open(open, Client::clone).await
    }

    /// Opens a client over every member that answers, and proves one answers.
    async fn open(&self) -> Result<Client> {
        let m = &*self.inner;
        let endpoint = self.endpoint();
        m.members.start_monitor(m.member_check_interval);
        let connect = async {
            let gated = Gated {
                members: m.members.clone(),
            };
            let mut client = Client::connect_with_balanced_channel(
                m.members.endpoints(),
                Some(m.options.clone()),
                gated,
            )
            .await
            .map_err(|e| self.connect_error(&endpoint, e))?;
            // Connecting is lazy without auth; one request proves a member answers.
            m.members
                .status(&mut client)
                .await
                .map_err(|e| self.connect_error(&endpoint, e))?;
            Ok(client)
        };
        let client = match tokio::time::timeout(m.connect_timeout, connect).await {
            Ok(r) => r?,
            Err(_) => {
                let origin = Origin::new(m.name.to_string(), Kind::ETCD);
                return Err(Error::timed_out(
                    origin,
                    TimeoutKind::Connect,
                    m.connect_timeout,
                    None,
                ));
            }
        };
        m.reached.store(true, Ordering::Relaxed);
        tracing::debug!(connector = %m.name, kind = "etcd", endpoint = %endpoint, "connected");
        Ok(client)
    }
}

/// The client's TLS settings from the `tls` block: the CA (or the system's trust store)
/// and the client certificate for mutual TLS.
fn tls_options(name: &str, config: &EtcdConfig) -> Result<TlsOptions> {
    let files = config.tls.load(name, &Kind::ETCD)?;
    let mut tls = TlsOptions::new();
    tls = match files.ca {
        Some(ca) => tls.ca_certificate(Certificate::from_pem(ca)),
        None => tls.with_enabled_roots(),
    };
    if let Some((cert, key)) = files.identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Ok(tls)
}

impl bb8::ManageConnection for EtcdConnectionManager {
    type Connection = EtcdConnection;
    type Error = Error;

    async fn connect(&self) -> Result<EtcdConnection> {
        Ok(EtcdConnection {
            client: self.shared().await?,
        })
    }

    async fn is_valid(&self, _conn: &mut EtcdConnection) -> Result<()> {
        Ok(())
    }

    fn has_broken(&self, _conn: &mut EtcdConnection) -> bool {
        false
    }
}

impl Backend for EtcdConnectionManager {
    type Manager = EtcdConnectionManager;

    fn kind(&self) -> Kind {
        Kind::ETCD
    }

    fn endpoint(&self) -> String {
        EtcdConnectionManager::endpoint(self)
    }

    fn is_broken(&self, _conn: &EtcdConnection) -> Option<bool> {
        Some(false)
    }

    fn checks_locally(&self) -> bool {
        true
    }

    fn probe<'a>(
        &'a self,
        _manager: &'a Self,
        conn: &'a mut EtcdConnection,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let m = &*self.inner;
            m.members.status(&mut conn.client).await.map_err(|e| {
                classify(
                    &m.name,
                    &self.endpoint(),
                    Step::check("status request"),
                    m.command_timeout,
                    e,
                )
            })
        })
    }

    fn classify(&self, _connector: &str, error: Error) -> Error {
        error
    }

    fn retire(&self, _manager: &Self) {
        self.inner.shared.clear();
    }

    fn loss_signal(&self) -> Option<LossSignal> {
        Some(self.inner.members.losses().clone())
    }
}
