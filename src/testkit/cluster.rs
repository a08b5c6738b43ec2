//! [`RedisCluster`]: a Redis Cluster of three masters with a replica each.

use std::io;
use std::time::Duration;

use super::cli::{cli, info_field};
use super::process::{free_port, off_the_runtime, poll_until, require};
use super::redis::RedisServer;
use crate::config::{ClusterConfig, RedisConfig, Secret};

/// How long a new cluster gets to agree on its slots.
const SETTLE: Duration = Duration::from_secs(30);

/// Options for a [`RedisCluster`].
#[derive(Debug, Clone)]
pub struct RedisClusterBuilder {
    masters: usize,
    replicas: usize,
    password: Option<String>,
    node_timeout: Duration,
}

impl Default for RedisClusterBuilder {
    fn default() -> Self {
        RedisClusterBuilder {
            masters: 3,
            replicas: 1,
            password: None,
            node_timeout: Duration::from_millis(1000),
        }
    }
}

impl RedisClusterBuilder {
    /// How many masters (at least 3, as `redis-cli --cluster create` wants). Default 3.
    pub fn masters(mut self, n: usize) -> Self {
        self.masters = n;
        self
    }

    /// Replicas per master. Default 1.
    pub fn replicas(mut self, n: usize) -> Self {
        self.replicas = n;
        self
    }

    /// Require this password on every node.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// `cluster-node-timeout`: how long a node must be silent before it is failed over.
    /// Default 1 s.
    pub fn node_timeout(mut self, timeout: Duration) -> Self {
        self.node_timeout = timeout;
        self
    }

    /// Starts the nodes, creates the cluster with `redis-cli --cluster create`, and waits
    /// until every node says `cluster_state:ok` and every replica is in sync.
    pub fn start(self) -> io::Result<RedisCluster> {
        off_the_runtime(|| self.start_blocking())
    }

    fn start_blocking(self) -> io::Result<RedisCluster> {
        require("redis-server", "redis-server")?;
        require("redis-cli", "redis-tools")?;
        if self.masters < 3 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a Redis Cluster needs at least 3 masters",
            ));
        }
        let n = self.masters * (1 + self.replicas);
        let mut nodes = Vec::with_capacity(n);
        for _ in 0..n {
            let mut args = vec![
                "--cluster-enabled".to_owned(),
                "yes".into(),
                "--cluster-config-file".into(),
                "nodes.conf".into(),
                "--cluster-node-timeout".into(),
                self.node_timeout.as_millis().to_string(),
                // The bus port would be port + 10000, which may be taken: pick one.
                "--cluster-port".into(),
                free_port()?.to_string(),
                // Replicas sync at once instead of waiting for more to join (the default
                // waits 5 s); a replica that never synced cannot be failed over to.
                "--repl-diskless-sync-delay".into(),
                "0".into(),
                // A replica is listed in `CLUSTER SLOTS` once it has replicated something;
                // on an empty cluster that is the master's first replication ping
                // (default every 10 s).
                "--repl-ping-replica-period".into(),
                "1".into(),
            ];
            if let Some(pw) = &self.password {
                args.extend([
                    "--requirepass".into(),
                    pw.clone(),
                    "--masterauth".into(),
                    pw.clone(),
                ]);
            }
            nodes.push(RedisServer::builder().args(args).start()?);
        }
        let cluster = RedisCluster {
            nodes,
            password: self.password,
        };
        let mut create: Vec<String> = vec!["--cluster".into(), "create".into()];
        create.extend(cluster.addrs());
        create.extend([
            "--cluster-replicas".into(),
            self.replicas.to_string(),
            "--cluster-yes".into(),
        ]);
        let create: Vec<&str> = create.iter().map(String::as_str).collect();
        cli(
            cluster.nodes[0].port(),
            cluster.password.as_deref(),
            &create,
        )?;
        cluster.wait_ok(SETTLE)?;
        cluster.wait_synced(SETTLE)?;
        Ok(cluster)
    }
}

/// A Redis Cluster on free loopback ports (three masters with one replica each by
/// default, `cluster-node-timeout` 1 s), each node a real `redis-server` killed when
/// dropped.
///
/// ```no_run
/// # fn demo() -> std::io::Result<()> {
/// let mut cluster = connhub::testkit::RedisCluster::start()?;
/// let config = cluster.config(); // a RedisConfig with a cluster block
/// let master = cluster.masters()?[0];
/// cluster.kill(master);
/// cluster.wait_ok(std::time::Duration::from_secs(20))?; // its replica took over
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    password: Option<String>,
}

impl RedisCluster {
    /// Three masters with one replica each, no password.
    pub fn start() -> io::Result<RedisCluster> {
        RedisClusterBuilder::default().start()
    }

    /// Options: masters, replicas, password, node timeout.
    pub fn builder() -> RedisClusterBuilder {
        RedisClusterBuilder::default()
    }

    /// The nodes.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// `127.0.0.1:<port>` of every node.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::addr).collect()
    }

    /// A [`RedisConfig`] with a `cluster` block listing every node, and the password.
    pub fn config(&self) -> RedisConfig {
        RedisConfig {
            cluster: Some(ClusterConfig {
                nodes: self.addrs(),
                read_from_replicas: false,
            }),
            password: self.password.clone().map(Secret::new),
            ..RedisConfig::default()
        }
    }

    /// Indexes of the running nodes that are masters now.
    pub fn masters(&self) -> io::Result<Vec<usize>> {
        let mut masters = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if node.pid().is_none() {
                continue;
            }
            let info = cli(
                node.port(),
                self.password.as_deref(),
                &["INFO", "replication"],
            )?;
            if info_field(&info, "role") == Some("master") {
                masters.push(i);
            }
        }
        Ok(masters)
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Starts node `i` again on its ports; it rejoins the cluster (its `nodes.conf` is
    /// kept), as a replica if it was failed over meanwhile.
    pub fn restart(&mut self, i: usize) -> io::Result<()> {
        self.nodes[i].restart()
    }

    /// Waits until every running replica has finished its sync with its master (so it can
    /// be failed over to).
    pub fn wait_synced(&self, within: Duration) -> io::Result<()> {
        poll_until(within, || {
            let lagging: Vec<u16> = self
                .running()
                .filter(|n| {
                    let info = cli(n.port(), self.password.as_deref(), &["INFO", "replication"])
                        .unwrap_or_default();
                    info_field(&info, "role") != Some("master")
                        && info_field(&info, "master_link_status") != Some("up")
                })
                .map(RedisServer::port)
                .collect();
            if lagging.is_empty() {
                Ok(())
            } else {
                Err(format!("replicas on ports {lagging:?} not in sync"))
            }
        })
    }

    /// Waits until every running node says `cluster_state:ok` (every slot has a live
    /// master).
    pub fn wait_ok(&self, within: Duration) -> io::Result<()> {
        poll_until(within, || {
            let states: Vec<String> = self
                .running()
                .map(|n| {
                    cli(n.port(), self.password.as_deref(), &["CLUSTER", "INFO"])
                        .map(|info| info_field(&info, "cluster_state").unwrap_or("?").to_owned())
                        .unwrap_or_else(|e| e.to_string())
                })
                .collect();
            if states.iter().all(|s| s == "ok") {
                Ok(())
            } else {
                Err(format!("the cluster is not ok: {states:?}"))
            }
        })
    }

    /// Waits until every running node's `CLUSTER SLOTS` lists every running node, its
    /// replicas included. A cluster client reads the slot map once when it connects, so
    /// one that connects before sends every read to the masters, even with
    /// `read_from_replicas`. Redis lists a replica once it has replicated something
    /// (within about a second here).
    pub fn wait_replicas_listed(&self, within: Duration) -> io::Result<()> {
        let running = self.running().count();
        poll_until(within, || {
            for n in self.running() {
                let slots = cli(n.port(), self.password.as_deref(), &["CLUSTER", "SLOTS"])
                    .map_err(|e| e.to_string())?;
                // Each node of each run is listed with its 40-character id.
                let ids: std::collections::BTreeSet<&str> = slots
                    .lines()
                    .map(str::trim)
                    .filter(|l| l.len() == 40 && l.bytes().all(|b| b.is_ascii_hexdigit()))
                    .collect();
                if ids.len() < running {
                    return Err(format!(
                        "node {} lists {} of {running} nodes",
                        n.port(),
                        ids.len()
                    ));
                }
            }
            Ok(())
        })
    }

    fn running(&self) -> impl Iterator<Item = &RedisServer> {
        self.nodes.iter().filter(|n| n.pid().is_some())
    }
}
