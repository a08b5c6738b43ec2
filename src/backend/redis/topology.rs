//! [`Topology`]: where a Redis connector's connections go (one server, the master the
//! sentinels name, or a cluster), built from its config on the redis crate's own clients.

use std::sync::Arc;
use std::time::Duration;

use redis::cluster::ClusterClientBuilder;
use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, ProtocolVersion,
    RedisConnectionInfo, RedisResult, TlsMode,
};

use super::invalid;
use super::link::Link;
use super::meta::Watch;
use super::nodes::{ClusterNodes, ReadTargets};
use super::sentinel::SentinelMaster;
use crate::config::{ClusterConfig, RedisConfig, SentinelConfig, TlsConfig, parse_redis};
use crate::error::{Error, Origin, Result};
use crate::status::Kind;

/// Where a connector's connections go.
#[expect(
    clippy::large_enum_variant,
    reason = "one per connector, built once and never moved on a hot path"
)]
pub(super) enum Topology {
    /// One server at a fixed address.
    Single {
        client: redis::Client,
        endpoint: String,
    },
    /// The master a set of sentinels names.
    Sentinel(Arc<SentinelMaster>),
    /// A Redis Cluster, and what is known of its nodes.
    Cluster {
        nodes: Arc<ClusterNodes>,
        endpoint: String,
    },
}

impl Topology {
    /// Builds the clients; connects to nothing. `tls` says whether the data nodes are
    /// reached over TLS.
    pub(super) fn build(name: &str, config: &RedisConfig) -> Result<(Topology, bool)> {
        let settings = node_settings(config);
        if let Some(s) = &config.sentinel {
            let tls = config.tls.enabled;
            return Ok((sentinel(name, config, s, settings)?, tls));
        }
        if let Some(c) = &config.cluster {
            return Ok((cluster(name, config, c, settings)?, c.uses_tls(&config.tls)));
        }
        let hp = parse_redis(&config.addr).map_err(|m| invalid(name, "addr", m))?;
        let tls = config.tls.enabled || hp.tls;
        let db = i64::from(hp.db.unwrap_or(config.db));
        let (addr, endpoint) = address(name, "addr", &config.addr, tls, &config.tls)?;
        let info = info(name, "addr", addr)?.set_redis_settings(settings.set_db(db));
        let client = client(name, "addr", info, tls, &config.tls)?;
        Ok((Topology::Single { client, endpoint }, tls))
    }

    /// The single server's `host:port`; `None` for Sentinel (the master moves) and
    /// Cluster (each command goes to its node).
    pub(super) fn server(&self) -> Option<&str> {
        match self {
            Topology::Single { endpoint, .. } => Some(endpoint),
            Topology::Sentinel(_) | Topology::Cluster { .. } => None,
        }
    }

    /// Where it connects, for status; a sentinel's current master once known.
    pub(super) fn endpoint(&self) -> String {
        match self {
            Topology::Single { endpoint, .. } | Topology::Cluster { endpoint, .. } => {
                endpoint.clone()
            }
            Topology::Sentinel(m) => m.endpoint(),
        }
    }

    /// Opens one connection, with how to judge it broken. A sentinel's master connection
    /// carries the generation of the master it found: a failover announced while it
    /// connects retires it at once.
    pub(super) async fn connect(
        &self,
        config: &AsyncConnectionConfig,
    ) -> RedisResult<(Link, Watch)> {
        match self {
            Topology::Single { client, .. } => {
                let conn = client.get_multiplexed_async_connection_with_config(config);
                Ok((Link::Node(conn.await?), Watch::Node))
            }
            Topology::Sentinel(m) => {
                let (client, generation) = m.locate().await?;
                let conn = client.get_multiplexed_async_connection_with_config(config);
                let watch = Watch::Master {
                    generation,
                    current: m.generation.clone(),
                };
                Ok((Link::Node(conn.await?), watch))
            }
            Topology::Cluster { nodes, .. } => {
                nodes.start_monitor();
                // Read before connecting: slots moved meanwhile retire it at once.
                let generation = nodes.generation();
                let conn = nodes.client()?.get_async_connection().await?;
                let watch = Watch::Cluster {
                    generation,
                    nodes: nodes.clone(),
                };
                Ok((Link::Cluster(conn, nodes.clone()), watch))
            }
        }
    }

    /// A client for a pub/sub connection to the server the pool connects to (a Sentinel
    /// connector's current master). A cluster has none.
    pub(super) async fn pubsub_client(&self) -> RedisResult<redis::Client> {
        match self {
            Topology::Single { client, .. } => Ok(client.clone()),
            Topology::Sentinel(m) => m.locate().await.map(|(client, _)| client),
            Topology::Cluster { .. } => Err(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "subscribe is not available on a cluster connector",
            ))),
        }
    }

    /// What is known of a cluster's nodes; `None` for the other topologies.
    pub(super) fn nodes(&self) -> Option<&ClusterNodes> {
        match self {
            Topology::Cluster { nodes, .. } => Some(nodes),
            _ => None,
        }
    }

    /// True for a cluster: its health is the cluster's state, not one server's.
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Topology::Cluster { .. })
    }
}

/// Credentials, database and protocol for the data nodes. RESP3: the crate reports a
/// closed connection through the push sender only then.
fn node_settings(config: &RedisConfig) -> RedisConnectionInfo {
    let mut settings = RedisConnectionInfo::default()
        .set_db(i64::from(config.db))
        .set_protocol(ProtocolVersion::RESP3);
    if let Some(user) = &config.username {
        settings = settings.set_username(user);
    }
    if let Some(pw) = &config.password {
        settings = settings.set_password(pw.expose());
    }
    settings
}

/// A cluster's clients: one over every configured node, and how to build one over
/// some of them (those that answer) and one for each node (to probe it).
fn cluster(
    name: &str,
    config: &RedisConfig,
    c: &ClusterConfig,
    settings: RedisConnectionInfo,
) -> Result<Topology> {
    let tls = c.uses_tls(&config.tls);
    let mut infos = Vec::with_capacity(c.nodes.len());
    let mut shown = Vec::with_capacity(c.nodes.len());
    for (i, n) in c.nodes.iter().enumerate() {
        let key = format!("cluster.nodes[{i}]");
        let (addr, at) = address(name, &key, n, tls, &config.tls)?;
        infos.push(info(name, &key, addr)?.set_redis_settings(settings.clone()));
        shown.push(at);
    }
    let certs = match tls {
        true => certificates(name, &config.tls)?,
        false => None,
    };
    let (connect_timeout, command_timeout) =
        (config.connector.connect_timeout, config.command_timeout);
    // Reads go to replicas that answer (the node monitor says which do not).
    let reads = c.read_from_replicas.then(ReadTargets::default);
    let read_targets = reads.clone();
    let cluster_certs = certs.clone();
    let make_client = move |nodes: Vec<ConnectionInfo>| {
        let mut builder = ClusterClientBuilder::new(nodes).connection_timeout(connect_timeout);
        if let Some(t) = command_timeout {
            builder = builder.response_timeout(t);
        }
        if let Some(targets) = &read_targets {
            builder = builder.read_routing_strategy(targets.clone());
        }
        if let Some(certs) = &cluster_certs {
            builder = builder.certs(certs.clone());
        }
        builder.build()
    };
    let make_probe = move |info: ConnectionInfo| match &certs {
        Some(certs) => redis::Client::build_with_tls(info, certs.clone()),
        None => redis::Client::open(info),
    };
    // Built once now, so a mistake in it is refused with the configuration.
    let all =
        make_client(infos.clone()).map_err(|e| invalid(name, "cluster.nodes", e.to_string()))?;
    let nodes = ClusterNodes::new(
        name.into(),
        shown.clone(),
        infos,
        all,
        Box::new(make_client),
        Box::new(make_probe),
        connect_timeout,
        reads,
    );
    let endpoint = format!("cluster {}", shown.join(","));
    Ok(Topology::Cluster {
        nodes: Arc::new(nodes),
        endpoint,
    })
}

fn sentinel(
    name: &str,
    config: &RedisConfig,
    s: &SentinelConfig,
    settings: RedisConnectionInfo,
) -> Result<Topology> {
    let sentinel_tls = s.uses_tls();
    let mut sentinel_settings = RedisConnectionInfo::default();
    if let Some(user) = &s.username {
        sentinel_settings = sentinel_settings.set_username(user);
    }
    if let Some(pw) = &s.password {
        sentinel_settings = sentinel_settings.set_password(pw.expose());
    }
    let mut addrs = Vec::with_capacity(s.addrs.len());
    let mut clients = Vec::with_capacity(s.addrs.len());
    let mut shown = Vec::with_capacity(s.addrs.len());
    for (i, a) in s.addrs.iter().enumerate() {
        let key = format!("sentinel.addrs[{i}]");
        let (addr, at) = address(name, &key, a, sentinel_tls, &s.tls)?;
        let info = info(name, &key, addr.clone())?.set_redis_settings(sentinel_settings.clone());
        clients.push(client(name, &key, info, sentinel_tls, &s.tls)?);
        addrs.push(addr);
        shown.push(at);
    }
    // The files are read once; each lookup client is built from what they held.
    let redis_tls = match config.tls.enabled {
        true => Some((
            if config.tls.insecure_skip_verify {
                TlsMode::Insecure
            } else {
                TlsMode::Secure
            },
            certificates(name, &config.tls)?,
        )),
        false => None,
    };
    let sentinel_certs = match sentinel_tls {
        true => certificates(name, &s.tls)?,
        false => None,
    };
    let master_name = s.master_name.clone();
    let make = move || {
        let mut builder =
            SentinelClientBuilder::new(addrs.clone(), &master_name, SentinelServerType::Master)?
                .set_client_to_redis_db(settings.db())
                .set_client_to_redis_protocol(ProtocolVersion::RESP3);
        if let Some(user) = settings.username() {
            builder = builder.set_client_to_redis_username(user);
        }
        if let Some(pw) = settings.password() {
            builder = builder.set_client_to_redis_password(pw);
        }
        if let Some(user) = sentinel_settings.username() {
            builder = builder.set_client_to_sentinel_username(user);
        }
        if let Some(pw) = sentinel_settings.password() {
            builder = builder.set_client_to_sentinel_password(pw);
        }
        if let Some((mode, certs)) = &redis_tls {
            builder = builder.set_client_to_redis_tls_mode(*mode);
            if let Some(certs) = certs {
                builder = builder.set_client_to_redis_certificates(certs.clone());
            }
        }
        if let Some(certs) = &sentinel_certs {
            builder = builder.set_client_to_sentinel_certificates(certs.clone());
        }
        builder.build()
    };
    // Built once now, so a mistake in it is refused with the configuration.
    let first = make().map_err(|e| invalid(name, "sentinel", e.to_string()))?;
    Ok(Topology::Sentinel(Arc::new(SentinelMaster::new(
        name.into(),
        s.master_name.clone(),
        first,
        Box::new(make),
        clients,
        shown,
    ))))
}

/// The crate's address for `addr` (key `key` in messages), and `host:port` for status.
fn address(
    name: &str,
    key: &str,
    addr: &str,
    tls: bool,
    tls_config: &TlsConfig,
) -> Result<(ConnectionAddr, String)> {
    let hp = parse_redis(addr).map_err(|m| invalid(name, key, m))?;
    let shown = hp.to_string();
    let addr = if tls {
        ConnectionAddr::TcpTls {
            host: hp.host,
            port: hp.port,
            insecure: tls_config.insecure_skip_verify,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(hp.host, hp.port)
    };
    Ok((addr, shown))
}

fn info(name: &str, key: &str, addr: ConnectionAddr) -> Result<ConnectionInfo> {
    addr.into_connection_info()
        .map_err(|e| invalid(name, key, e.to_string()))
}

/// A client for one address, with the CA and client certificate of `tls_config` when it
/// is a TLS address.
fn client(
    name: &str,
    key: &str,
    info: ConnectionInfo,
    tls: bool,
    tls_config: &TlsConfig,
) -> Result<redis::Client> {
    if tls && let Some(certs) = certificates(name, tls_config)? {
        return redis::Client::build_with_tls(info, certs).map_err(|e| Error::Tls {
            origin: Origin::new(name.to_owned(), Kind::REDIS),
            message: e.to_string(),
            source: Some(Arc::new(e)),
        });
    }
    redis::Client::open(info).map_err(|e| invalid(name, key, e.to_string()))
}

/// The CA and client certificate from a `tls` block, if it names any.
fn certificates(name: &str, tls: &TlsConfig) -> Result<Option<redis::TlsCertificates>> {
    let files = tls.load(name, &Kind::REDIS)?;
    if files.ca.is_none() && files.identity.is_none() {
        return Ok(None);
    }
    Ok(Some(redis::TlsCertificates {
        client_tls: files
            .identity
            .map(|(client_cert, client_key)| redis::ClientTlsConfig {
                client_cert,
                client_key,
            }),
        root_cert: files.ca,
    }))
}

/// A connect that hung: a timeout error, as the crate reports one.
pub(super) fn hung(after: Duration) -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("no connection within {after:?}"),
    ))
}
