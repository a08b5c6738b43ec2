//! [`RedisSentinel`]: a master, its replicas and three sentinels, for failover tests.

use std::io;
use std::time::Duration;

use tempfile::TempDir;

use super::cli::{cli, info_field, pair_field};
use super::process::{Process, free_port, off_the_runtime, poll_until, require, retry_port_race};
use super::redis::RedisServer;
use crate::config::{RedisConfig, Secret, SentinelConfig};

/// How long a new set gets until every sentinel knows the replicas and the other
/// sentinels (they learn of each other through the master every 2 s).
const SETTLE: Duration = Duration::from_secs(30);

/// Options for a [`RedisSentinel`].
#[derive(Debug, Clone)]
pub struct RedisSentinelBuilder {
    master_name: String,
    replicas: usize,
    password: Option<String>,
    sentinel_password: Option<String>,
    down_after: Duration,
}

impl Default for RedisSentinelBuilder {
    fn default() -> Self {
        RedisSentinelBuilder {
            master_name: "mymaster".into(),
            replicas: 1,
            password: None,
            sentinel_password: None,
            down_after: Duration::from_millis(1000),
        }
    }
}

impl RedisSentinelBuilder {
    /// The name the sentinels monitor the master under. Default `mymaster`.
    pub fn master_name(mut self, name: impl Into<String>) -> Self {
        self.master_name = name.into();
        self
    }

    /// How many replicas. Default 1.
    pub fn replicas(mut self, n: usize) -> Self {
        self.replicas = n;
        self
    }

    /// Require this password on the master and the replicas.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Require this password on the sentinels.
    pub fn sentinel_password(mut self, password: impl Into<String>) -> Self {
        self.sentinel_password = Some(password.into());
        self
    }

    /// `down-after-milliseconds`: how long the master must be silent before the
    /// sentinels fail it over. Default 1 s.
    pub fn down_after(mut self, after: Duration) -> Self {
        self.down_after = after;
        self
    }

    /// Starts the servers and the sentinels, and waits until every replica is in sync and
    /// the sentinels know every replica and each other (so a failover can be agreed on).
    pub fn start(self) -> io::Result<RedisSentinel> {
        off_the_runtime(|| self.start_blocking())
    }

    fn start_blocking(self) -> io::Result<RedisSentinel> {
        require("redis-server", "redis-server")?;
        // Replicas sync at once instead of waiting for more to join (the default waits 5 s).
        let mut auth: Vec<String> = vec!["--repl-diskless-sync-delay".into(), "0".into()];
        if let Some(pw) = &self.password {
            auth.extend([
                "--requirepass".into(),
                pw.clone(),
                "--masterauth".into(),
                pw.clone(),
            ]);
        }
        let master = RedisServer::builder().args(auth.clone()).start()?;
        let mut nodes = vec![master];
        for _ in 0..self.replicas {
            let mut args = auth.clone();
            args.extend([
                "--replicaof".into(),
                "127.0.0.1".into(),
                nodes[0].port().to_string(),
            ]);
            nodes.push(RedisServer::builder().args(args).start()?);
        }
        let mut sentinels = Vec::with_capacity(3);
        for _ in 0..3 {
            sentinels.push(retry_port_race(|| self.sentinel(nodes[0].port()))?);
        }
        let set = RedisSentinel {
            master_name: self.master_name,
            password: self.password,
            sentinel_password: self.sentinel_password,
            nodes,
            sentinels,
        };
        for i in 1..set.nodes.len() {
            set.wait_replica(i, SETTLE)?;
        }
        set.settle()?;
        Ok(set)
    }

    fn sentinel(&self, master_port: u16) -> io::Result<Sentinel> {
        let dir = tempfile::Builder::new()
            .prefix("connhub-sentinel-")
            .tempdir()?;
        let port = free_port()?;
        let name = &self.master_name;
        let mut conf = format!(
            "port {port}\nbind 127.0.0.1\ndir {dir}\n\
             sentinel monitor {name} 127.0.0.1 {master_port} 2\n\
             sentinel down-after-milliseconds {name} {down}\n\
             sentinel failover-timeout {name} 10000\n\
             sentinel parallel-syncs {name} 1\n",
            dir = dir.path().display(),
            down = self.down_after.as_millis(),
        );
        if let Some(pw) = &self.password {
            conf.push_str(&format!("sentinel auth-pass {name} {pw}\n"));
        }
        if let Some(pw) = &self.sentinel_password {
            conf.push_str(&format!("requirepass {pw}\n"));
        }
        let file = dir.path().join("sentinel.conf");
        std::fs::write(&file, conf)?;
        let args = vec![
            file.display().to_string(),
            "--sentinel".into(),
            "--daemonize".into(),
            "no".into(),
        ];
        let mut process = Process::spawn("redis-server", args, &dir.path().join("sentinel.log"))?;
        let password = self.sentinel_password.clone();
        process.wait_ready("redis-server --sentinel", || {
            cli(port, password.as_deref(), &["PING"]).is_ok_and(|r| r.contains("PONG"))
        })?;
        Ok(Sentinel {
            port,
            process,
            _dir: dir,
        })
    }
}

#[derive(Debug)]
struct Sentinel {
    port: u16,
    process: Process,
    _dir: TempDir,
}

/// A master, its replicas (one by default) and three sentinels (quorum 2), each a real
/// process on a free loopback port, killed when dropped.
///
/// ```no_run
/// # fn demo() -> std::io::Result<()> {
/// let mut set = connhub::testkit::RedisSentinel::start()?;
/// let config = set.config(); // a RedisConfig with a sentinel block
/// let old = set.kill_master()?;
/// let new = set.wait_for_failover(std::time::Duration::from_secs(20))?;
/// set.restart(old)?; // comes back, and the sentinels make it a replica
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RedisSentinel {
    master_name: String,
    password: Option<String>,
    sentinel_password: Option<String>,
    /// Data nodes; the master first, as started.
    nodes: Vec<RedisServer>,
    sentinels: Vec<Sentinel>,
}

impl RedisSentinel {
    /// A master, one replica and three sentinels, no passwords.
    pub fn start() -> io::Result<RedisSentinel> {
        RedisSentinelBuilder::default().start()
    }

    /// Options: master name, replicas, passwords, `down-after-milliseconds`.
    pub fn builder() -> RedisSentinelBuilder {
        RedisSentinelBuilder::default()
    }

    /// The name the sentinels monitor the master under.
    pub fn master_name(&self) -> &str {
        &self.master_name
    }

    /// `127.0.0.1:<port>` of each sentinel.
    pub fn sentinel_addrs(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect()
    }

    /// The data nodes (the first was the master when started).
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// A [`RedisConfig`] with a `sentinel` block for this set, and its passwords.
    pub fn config(&self) -> RedisConfig {
        RedisConfig {
            sentinel: Some(SentinelConfig {
                master_name: self.master_name.clone(),
                addrs: self.sentinel_addrs(),
                password: self.sentinel_password.clone().map(Secret::new),
                ..SentinelConfig::default()
            }),
            password: self.password.clone().map(Secret::new),
            ..RedisConfig::default()
        }
    }

    /// The index in [`nodes`](RedisSentinel::nodes) of the master the sentinels name now.
    pub fn master(&self) -> io::Result<usize> {
        let mut last = None;
        for s in &self.sentinels {
            match self.ask_master(s.port) {
                Ok(port) => {
                    return self.index_of(port).ok_or_else(|| {
                        io::Error::other(format!("the sentinels name port {port}, not a node"))
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no sentinel")))
    }

    fn ask_master(&self, sentinel: u16) -> io::Result<u16> {
        let reply = cli(
            sentinel,
            self.sentinel_password.as_deref(),
            &["SENTINEL", "get-master-addr-by-name", &self.master_name],
        )?;
        reply
            .lines()
            .nth(1)
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(|| io::Error::other(format!("unexpected reply: {reply}")))
    }

    fn index_of(&self, port: u16) -> Option<usize> {
        self.nodes.iter().position(|n| n.port() == port)
    }

    /// SIGKILLs the current master; returns its index.
    pub fn kill_master(&mut self) -> io::Result<usize> {
        let i = self.master()?;
        self.nodes[i].kill();
        Ok(i)
    }

    /// Asks the sentinels for a failover with no server down (`SENTINEL FAILOVER`): a
    /// replica is promoted and the old master, still running, becomes its replica.
    pub fn failover(&self) -> io::Result<()> {
        let s = self
            .sentinels
            .first()
            .ok_or_else(|| io::Error::other("no sentinel"))?;
        cli(
            s.port,
            self.sentinel_password.as_deref(),
            &["SENTINEL", "FAILOVER", &self.master_name],
        )
        .map(drop)
    }

    /// Waits until every sentinel names a master other than the one at `old` and that
    /// server says it is a master; returns its index.
    pub fn wait_for_failover_from(&self, old: usize, within: Duration) -> io::Result<usize> {
        poll_until(within, || {
            let named: Vec<Option<usize>> = self
                .sentinels
                .iter()
                .map(|s| self.ask_master(s.port).ok().and_then(|p| self.index_of(p)))
                .collect();
            match named.first() {
                Some(Some(new))
                    if *new != old
                        && named.iter().all(|n| *n == Some(*new))
                        && self.role(*new).is_ok_and(|r| r == "master") =>
                {
                    Ok(*new)
                }
                _ => Err(format!(
                    "no failover from node {old} (sentinels name nodes {named:?})"
                )),
            }
        })
    }

    /// [`wait_for_failover_from`](RedisSentinel::wait_for_failover_from) the first node.
    pub fn wait_for_failover(&self, within: Duration) -> io::Result<usize> {
        self.wait_for_failover_from(0, within)
    }

    /// `master` or `slave`, as node `i` says (`INFO replication`).
    pub fn role(&self, i: usize) -> io::Result<String> {
        let info = cli(
            self.nodes[i].port(),
            self.password.as_deref(),
            &["INFO", "replication"],
        )?;
        info_field(&info, "role")
            .map(str::to_owned)
            .ok_or_else(|| io::Error::other(format!("no role in: {info}")))
    }

    /// Starts node `i` again on its port (empty: nothing is saved). A former master comes
    /// back as a master until the sentinels turn it into a replica.
    pub fn restart(&mut self, i: usize) -> io::Result<()> {
        self.nodes[i].restart()
    }

    /// Waits until node `i` is a replica that finished its sync with the master.
    pub fn wait_replica(&self, i: usize, within: Duration) -> io::Result<()> {
        poll_until(within, || {
            let info = cli(
                self.nodes[i].port(),
                self.password.as_deref(),
                &["INFO", "replication"],
            );
            match &info {
                Ok(info)
                    if info_field(info, "role") == Some("slave")
                        && info_field(info, "master_link_status") == Some("up") =>
                {
                    Ok(())
                }
                _ => Err(format!("node {i} is not a synced replica: {info:?}")),
            }
        })
    }

    /// Waits until every sentinel knows every replica and the two other sentinels.
    fn settle(&self) -> io::Result<()> {
        let replicas = (self.nodes.len() - 1).to_string();
        poll_until(SETTLE, || {
            let ready = self.sentinels.iter().all(|s| {
                cli(
                    s.port,
                    self.sentinel_password.as_deref(),
                    &["SENTINEL", "MASTER", &self.master_name],
                )
                .is_ok_and(|r| {
                    pair_field(&r, "num-slaves") == Some(replicas.as_str())
                        && pair_field(&r, "num-other-sentinels") == Some("2")
                })
            });
            if ready {
                return Ok(());
            }
            let log = self.sentinels.first().map(|s| s.process.log_tail());
            Err(format!(
                "the sentinels did not find each other; a sentinel's log says:\n{}",
                log.unwrap_or_default()
            ))
        })
    }
}
