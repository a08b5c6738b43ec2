//! The etcd backend: [`EtcdConnectionManager`] (a `bb8::ManageConnection` over
//! `etcd_client::Client`), the [`EtcdConnection`] a checkout derefs to, and [`EtcdPool`].

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

use super::etcd_members::{MemberView, Members};
use crate::config::{EtcdConfig, parse_etcd};
use crate::connector::{BoxFuture, Kind};
use crate::error::{Error, Result};
use crate::health::{Liveness, Retired};
use crate::pool::{Pool, PooledConnection};
use crate::shared::Shared;

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
pub type PooledEtcdConnection<'a> = PooledConnection<'a, EtcdConnectionManager>;

/// Makes and validates etcd clients for bb8.
pub struct EtcdConnectionManager {
    name: Arc<str>,
    members: Arc<Members>,
    member_check_interval: Duration,
    tls: bool,
    options: ConnectOptions,
    connect_timeout: Duration,
    command_timeout: Duration,
    liveness: Arc<Liveness>,
}

impl std::fmt::Debug for EtcdConnectionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConnectionManager")
            .field("name", &self.name)
            .field("endpoints", &self.members.endpoints())
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
            liveness: Arc::default(),
        })
    }

    /// The endpoints, comma separated, for status.
    pub fn endpoint(&self) -> String {
        self.members
            .endpoints()
            .iter()
            .map(|e| e.split_once("://").map_or(e.as_str(), |(_, rest)| rest))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub(crate) fn liveness(&self) -> Arc<Liveness> {
        self.liveness.clone()
    }

    fn connect_error(&self, endpoint: &str, e: etcd_client::Error) -> Error {
        if self.tls
            && let Some(message) = handshake_failure(&e)
        {
            return Error::Tls {
                connector: self.name.to_string(),
                kind: Kind::ETCD,
                message,
            };
        }
        classify(&self.name, endpoint, "connect", self.connect_timeout, e)
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

/// Why a TLS connection attempt failed, if TLS is the reason.
fn handshake_failure(e: &etcd_client::Error) -> Option<String> {
    let text = format!("{e}");
    if let Some(reason) = crate::config::tls_failure(&text) {
        return Some(reason);
    }
    let hung_up = [
        "BrokenPipe",
        "broken pipe",
        "ConnectionReset",
        "connection closed",
        "UnexpectedEof",
        "close_notify",
    ];
    if hung_up.iter().any(|m| text.contains(m)) {
        return Some(format!(
            "the server closed the connection during the TLS handshake (does it require a client certificate?): {text}"
        ));
    }
    None
}

/// Sorts an etcd error into connhub's kinds.
pub(crate) fn classify(
    name: &str,
    endpoint: &str,
    what: &'static str,
    after: Duration,
    e: etcd_client::Error,
) -> Error {
    use etcd_client::Error as E;
    let connector = name.to_owned();
    match &e {
        E::GRpcStatus(status) => {
            let msg = status.message();
            let auth = matches!(
                status.code(),
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
            ) || msg.contains("authentication failed")
                || msg.contains("auth: ")
                || msg.contains("authentication is not enabled");
            if auth {
                return Error::Auth {
                    connector,
                    kind: Kind::ETCD,
                    message: msg.to_owned(),
                };
            }
            if status.code() == tonic::Code::Unavailable {
                return Error::Connect {
                    connector,
                    kind: Kind::ETCD,
                    endpoint: endpoint.to_owned(),
                    source: Arc::new(e),
                };
            }
            if matches!(
                status.code(),
                tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
            ) {
                return Error::Timeout {
                    connector: connector.clone(),
                    kind: Kind::ETCD,
                    what,
                    after,
                    last_error: Some(Box::new(Error::Backend {
                        connector,
                        kind: Kind::ETCD,
                        source: Arc::new(e),
                    })),
                };
            }
        }
        E::TransportError(_) | E::IoError(_) => {
            return Error::Connect {
                connector,
                kind: Kind::ETCD,
                endpoint: endpoint.to_owned(),
                source: Arc::new(e),
            };
        }
        _ => {}
    }
    Error::Backend {
        connector,
        kind: Kind::ETCD,
        source: Arc::new(e),
    }
}

impl bb8::ManageConnection for EtcdConnectionManager {
    type Connection = EtcdConnection;
    type Error = Error;

    async fn connect(&self) -> Result<EtcdConnection> {
        if self.liveness.is_closed() {
            return Err(Error::Closed {
                connector: self.name.to_string(),
            });
        }
        let epoch = self.liveness.epoch();
        let endpoint = self.endpoint();
        self.members
            .start_monitor(self.member_check_interval, self.liveness.clone());
        let mut view = MemberView::all(self.members.endpoints().len());
        let connect = async {
            let mut client = Client::connect(self.members.endpoints(), Some(self.options.clone()))
                .await
                .map_err(|e| self.connect_error(&endpoint, e))?;
            // Members already known to be down are left out from the start.
            self.members.sync(&client, &mut view).await;
            // Connecting is lazy without auth; one request proves a member answers.
            self.members
                .status(&mut client, &mut view)
                .await
                .map_err(|e| self.connect_error(&endpoint, e))?;
            Ok(client)
        };
        let client = match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(Error::Timeout {
                    connector: self.name.to_string(),
                    kind: Kind::ETCD,
                    what: "connect",
                    after: self.connect_timeout,
                    last_error: None,
                });
            }
        };
        tracing::debug!(connector = %self.name, kind = "etcd", endpoint = %endpoint, "connected");
        Ok(EtcdConnection {
            client,
            epoch,
            view,
            members: self.members.clone(),
            liveness: self.liveness.clone(),
            name: self.name.clone(),
            endpoint: endpoint.into(),
            command_timeout: self.command_timeout,
        })
    }

    async fn is_valid(&self, conn: &mut EtcdConnection) -> Result<()> {
        if !self.liveness.is_current(conn.epoch) {
            return Err(Error::Backend {
                connector: self.name.to_string(),
                kind: Kind::ETCD,
                source: Arc::new(Retired),
            });
        }
        // Local: follows the member monitor's view (add/remove on the client's balancer).
        if !conn.view.is_current(&self.members) {
            self.members.sync(&conn.client, &mut conn.view).await;
        }
        Ok(())
    }

    fn has_broken(&self, conn: &mut EtcdConnection) -> bool {
        !self.liveness.is_current(conn.epoch)
    }
}

/// Asks a member for its status; the health check of an etcd connector.
pub(crate) fn ping(conn: &mut EtcdConnection) -> BoxFuture<'_, Result<()>> {
    Box::pin(async move {
        let EtcdConnection {
            client,
            view,
            members,
            ..
        } = conn;
        match members.status(client, view).await {
            Ok(()) => Ok(()),
            Err(e) => Err(classify(
                &conn.name,
                &conn.endpoint,
                "status request",
                conn.command_timeout,
                e,
            )),
        }
    })
}

/// A pooled etcd client; derefs to [`etcd_client::Client`].
pub struct EtcdConnection {
    client: Client,
    epoch: u64,
    view: MemberView,
    members: Arc<Members>,
    liveness: Arc<Liveness>,
    name: Arc<str>,
    endpoint: Arc<str>,
    command_timeout: Duration,
}

impl std::fmt::Debug for EtcdConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConnection")
            .field("endpoint", &self.endpoint)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl EtcdConnection {
    /// Made since the connector last went down, and balancing over the members the monitor
    /// currently sees up.
    pub(crate) fn is_usable(&self) -> bool {
        self.liveness.is_current(self.epoch) && self.view.is_current(&self.members)
    }
}

impl EtcdPool {
    /// A shared client, with no exclusive checkout: an `etcd_client::Client` multiplexes
    /// every request over HTTP/2, so one client serves any number of tasks at once, and
    /// this is the fastest way to send many requests. Everything on the client is safe to
    /// share (watches and lease keep-alives are streams of their own).
    ///
    /// Use [`get`](crate::Pool::get) when you want the pool's limit on concurrent use.
    /// Fails fast like `get()` while the connector is down. The clients (`shared_clients`,
    /// default 1) are separate from the pool's, opened on first use and replaced after an
    /// outage or a change in which members answer.
    ///
    /// ```no_run
    /// # async fn demo(pool: connhub::EtcdPool) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut client = pool.client().await?;
    /// client.put("service/a", "10.0.0.1:80", None).await?;
    /// # Ok(()) }
    /// ```
    pub async fn client(&self) -> Result<Client> {
        match self.ext::<Shared<EtcdConnection>>() {
            Some(shared) => {
                shared
                    .get(self, || self.dedicated(), |c| c.client.clone())
                    .await
            }
            None => {
                self.admit()?;
                // Boxed: connecting is a large future, and this is the rare path.
                Ok(Box::pin(self.dedicated()).await?.client)
            }
        }
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
