//! Real `etcd` members for tests: one alone, or an N-member cluster, plain or over TLS.

use std::io;
use std::path::PathBuf;

use tempfile::TempDir;

use super::certs::TestCerts;
use super::process::{Process, exchange, free_port, require, retry_port_race};
use crate::config::EtcdConfig;

/// TLS files a test server presents, and whether it requires client certificates.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// Server certificate (PEM).
    pub cert: PathBuf,
    /// Server key (PEM).
    pub key: PathBuf,
    /// CA that client certificates must chain to (PEM).
    pub ca: PathBuf,
    /// Require and verify a client certificate (mutual TLS).
    pub client_cert_auth: bool,
}

impl ServerTls {
    /// The test CA's server certificate for `127.0.0.1`; `mutual` requires client
    /// certificates from the same CA.
    pub fn from_certs(certs: &TestCerts, mutual: bool) -> ServerTls {
        ServerTls {
            cert: certs.server_cert(),
            key: certs.server_key(),
            ca: certs.ca(),
            client_cert_auth: mutual,
        }
    }
}

/// Options for an [`EtcdServer`] or an [`EtcdCluster`].
#[derive(Debug, Clone, Default)]
pub struct EtcdServerBuilder {
    tls: Option<ServerTls>,
    args: Vec<String>,
}

impl EtcdServerBuilder {
    /// Serve clients over TLS only.
    pub fn tls(mut self, tls: ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Extra `etcd` arguments, such as `["--auth-token-ttl", "1"]`.
    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Starts a single member and waits until it answers.
    pub fn start(self) -> io::Result<EtcdServer> {
        let mut cluster = self.start_cluster(1)?;
        cluster
            .members
            .pop()
            .ok_or_else(|| io::Error::other("no member started"))
    }

    /// Starts `n` members and waits until every one is healthy.
    pub fn start_cluster(self, n: usize) -> io::Result<EtcdCluster> {
        EtcdCluster::start_with(n, &self)
    }
}

/// One etcd member process, killed when dropped.
#[derive(Debug)]
pub struct EtcdServer {
    name: String,
    client_port: u16,
    metrics_port: u16,
    process: Process,
    _dir: TempDir,
}

struct MemberPorts {
    name: String,
    client: u16,
    peer: u16,
    metrics: u16,
}

fn member_args(
    m: &MemberPorts,
    cluster: &str,
    token: &str,
    data_dir: &str,
    tls: Option<&ServerTls>,
) -> Vec<String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let client = format!("{scheme}://127.0.0.1:{}", m.client);
    let peer = format!("http://127.0.0.1:{}", m.peer);
    let mut args: Vec<String> = vec![
        "--name".into(),
        m.name.clone(),
        "--data-dir".into(),
        data_dir.to_owned(),
        "--listen-client-urls".into(),
        client.clone(),
        "--advertise-client-urls".into(),
        client,
        "--listen-peer-urls".into(),
        peer.clone(),
        "--initial-advertise-peer-urls".into(),
        peer,
        // Plain HTTP /health for the readiness check, whatever the client URLs are.
        "--listen-metrics-urls".into(),
        format!("http://127.0.0.1:{}", m.metrics),
        "--initial-cluster".into(),
        cluster.to_owned(),
        "--initial-cluster-state".into(),
        "new".into(),
        "--initial-cluster-token".into(),
        token.to_owned(),
        "--heartbeat-interval".into(),
        "50".into(),
        "--election-timeout".into(),
        "500".into(),
        "--logger".into(),
        "zap".into(),
        "--log-level".into(),
        "warn".into(),
    ];
    if let Some(tls) = tls {
        args.extend([
            "--cert-file".into(),
            tls.cert.display().to_string(),
            "--key-file".into(),
            tls.key.display().to_string(),
        ]);
        // etcd asks every client for a certificate once it has a trusted CA file.
        if tls.client_cert_auth {
            args.extend([
                "--trusted-ca-file".into(),
                tls.ca.display().to_string(),
                "--client-cert-auth".into(),
            ]);
        }
    }
    args
}

impl EtcdServer {
    /// Starts a single-member cluster and waits until it answers.
    pub fn start() -> io::Result<EtcdServer> {
        EtcdServerBuilder::default().start()
    }

    /// Starts a single member that serves clients over TLS only.
    pub fn start_tls(tls: ServerTls) -> io::Result<EtcdServer> {
        EtcdServerBuilder::default().tls(tls).start()
    }

    /// Options: TLS, extra arguments.
    pub fn builder() -> EtcdServerBuilder {
        EtcdServerBuilder::default()
    }

    fn spawn(
        m: &MemberPorts,
        cluster: &str,
        token: &str,
        options: &EtcdServerBuilder,
    ) -> io::Result<EtcdServer> {
        let dir = tempfile::Builder::new().prefix("connhub-etcd-").tempdir()?;
        let data = dir.path().join("data").display().to_string();
        let log = dir.path().join("etcd.log");
        let mut args = member_args(m, cluster, token, &data, options.tls.as_ref());
        args.extend(options.args.iter().cloned());
        let process = Process::spawn("etcd", args, &log)?;
        Ok(EtcdServer {
            name: m.name.clone(),
            client_port: m.client,
            metrics_port: m.metrics,
            process,
            _dir: dir,
        })
    }

    /// The member's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `127.0.0.1:<client port>`.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// An [`EtcdConfig`] pointing at this member (plain; set `tls` for a TLS member).
    pub fn config(&self) -> EtcdConfig {
        EtcdConfig::new([self.endpoint()])
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// SIGSTOP.
    pub fn pause(&self) -> io::Result<()> {
        self.process.signal(libc::SIGSTOP)
    }

    /// SIGCONT.
    pub fn resume(&self) -> io::Result<()> {
        self.process.signal(libc::SIGCONT)
    }

    /// Kills the member if it runs and starts it again on the same ports with its data;
    /// returns once it is healthy. In a multi-threaded runtime the wait does not hold up
    /// other tasks; in async code [`restart_async`](EtcdServer::restart_async) waits
    /// without blocking at all.
    pub fn restart(&mut self) -> io::Result<()> {
        self.process.respawn()?;
        self.wait_ready()
    }

    /// [`restart`](EtcdServer::restart), waiting on tokio's timer.
    pub async fn restart_async(&mut self) -> io::Result<()> {
        self.process.respawn()?;
        let port = self.metrics_port;
        self.process
            .wait_ready_async("etcd", || healthy(port))
            .await
    }

    /// True once the member reports itself healthy (it has a leader).
    pub fn is_healthy(&self) -> bool {
        healthy(self.metrics_port)
    }

    fn wait_ready(&mut self) -> io::Result<()> {
        let port = self.metrics_port;
        self.process.wait_ready("etcd", || healthy(port))
    }

    /// Turns on authentication: adds `root` with `root_password` and enables auth.
    /// For a plain (non-TLS) member.
    pub async fn enable_auth(&self, root_password: &str) -> Result<(), etcd_client::Error> {
        let mut c = etcd_client::Client::connect([self.endpoint()], None).await?;
        c.user_add("root", root_password, None).await?;
        c.user_grant_role("root", "root").await?;
        c.auth_enable().await?;
        Ok(())
    }
}

/// An N-member etcd cluster on loopback ports.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<EtcdServer>,
}

impl EtcdCluster {
    /// Starts `n` members and waits until every one is healthy.
    pub fn start(n: usize) -> io::Result<EtcdCluster> {
        Self::start_with(n, &EtcdServerBuilder::default())
    }

    fn start_with(n: usize, options: &EtcdServerBuilder) -> io::Result<EtcdCluster> {
        require("etcd", "etcd-server")?;
        retry_port_race(|| Self::start_once(n, options))
    }

    fn start_once(n: usize, options: &EtcdServerBuilder) -> io::Result<EtcdCluster> {
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a cluster needs at least one member",
            ));
        }
        let mut ports = Vec::with_capacity(n);
        for i in 0..n {
            ports.push(MemberPorts {
                name: format!("m{i}"),
                client: free_port()?,
                peer: free_port()?,
                metrics: free_port()?,
            });
        }
        let cluster = ports
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        // One token per cluster, so members of different test clusters never merge.
        let token = format!("connhub-{}", ports[0].peer);
        let mut members = Vec::with_capacity(n);
        for m in &ports {
            members.push(EtcdServer::spawn(m, &cluster, &token, options)?);
        }
        for m in &mut members {
            m.wait_ready()?;
        }
        Ok(EtcdCluster { members })
    }

    /// Every member's `127.0.0.1:<port>`.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(EtcdServer::endpoint).collect()
    }

    /// An [`EtcdConfig`] with every member's endpoint.
    pub fn config(&self) -> EtcdConfig {
        EtcdConfig::new(self.endpoints())
    }

    /// The index of the member that is the leader now, asked of the members that answer.
    pub async fn leader(&self) -> Result<usize, etcd_client::Error> {
        let mut last = None;
        for endpoint in self.endpoints() {
            let status = match etcd_client::Client::connect([endpoint], None).await {
                Ok(mut c) => c.status().await,
                Err(e) => Err(e),
            };
            match status {
                Ok(s) => {
                    let leader = s.leader();
                    for (i, m) in self.endpoints().into_iter().enumerate() {
                        let mut c = etcd_client::Client::connect([m], None).await?;
                        let own = c.status().await?;
                        if own.header().is_some_and(|h| h.member_id() == leader) {
                            return Ok(i);
                        }
                    }
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            etcd_client::Error::InvalidArgs("no member reports a leader".into())
        }))
    }

    /// Member `i`, if there is one.
    pub fn member(&mut self, i: usize) -> Option<&mut EtcdServer> {
        self.members.get_mut(i)
    }

    /// How many members there are.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Always false: a cluster has at least one member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

/// True when the member on `metrics_port` reports itself healthy (it has a leader).
fn healthy(metrics_port: u16) -> bool {
    exchange(metrics_port, b"GET /health HTTP/1.0\r\n\r\n")
        .is_some_and(|r| r.contains("\"health\":\"true\""))
}
