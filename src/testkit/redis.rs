//! A real `redis-server` for tests.

use std::io;

use tempfile::TempDir;

use super::etcd::ServerTls;
use super::process::{Process, exchange, free_port, require, retry_port_race};
use crate::config::{RedisConfig, Secret};

/// Options for a [`RedisServer`].
#[derive(Debug, Default, Clone)]
pub struct RedisServerBuilder {
    password: Option<String>,
    users: Vec<(String, String)>,
    args: Vec<String>,
    tls: Option<ServerTls>,
}

impl RedisServerBuilder {
    /// Require this password for the `default` user (`requirepass`).
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Add an ACL user with every permission.
    pub fn user(mut self, name: impl Into<String>, password: impl Into<String>) -> Self {
        self.users.push((name.into(), password.into()));
        self
    }

    /// Extra `redis-server` arguments, such as `["--maxclients", "10"]`.
    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Also listen for TLS on a port of its own ([`RedisServer::tls_addr`]); the plain port
    /// stays open for the readiness check.
    pub fn tls(mut self, tls: ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Starts the server and waits until it answers.
    pub fn start(self) -> io::Result<RedisServer> {
        require("redis-server", "redis-server")?;
        retry_port_race(|| self.start_once())
    }

    fn start_once(&self) -> io::Result<RedisServer> {
        let dir = tempfile::Builder::new()
            .prefix("connhub-redis-")
            .tempdir()?;
        let port = free_port()?;
        let mut args = vec![
            "--port".to_owned(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
            "--daemonize".into(),
            "no".into(),
            "--dir".into(),
            dir.path().display().to_string(),
        ];
        if let Some(pw) = &self.password {
            args.push("--requirepass".into());
            args.push(pw.clone());
        }
        for (user, pw) in &self.users {
            args.extend([
                "--user".into(),
                user.clone(),
                "on".into(),
                format!(">{pw}"),
                "~*".into(),
                "&*".into(),
                "+@all".into(),
            ]);
        }
        let tls_port = match &self.tls {
            Some(tls) => {
                let p = free_port()?;
                args.extend([
                    "--tls-port".into(),
                    p.to_string(),
                    "--tls-cert-file".into(),
                    tls.cert.display().to_string(),
                    "--tls-key-file".into(),
                    tls.key.display().to_string(),
                    "--tls-ca-cert-file".into(),
                    tls.ca.display().to_string(),
                    "--tls-auth-clients".into(),
                    if tls.client_cert_auth { "yes" } else { "no" }.into(),
                ]);
                Some(p)
            }
            None => None,
        };
        args.extend(self.args.iter().cloned());
        let log = dir.path().join("redis.log");
        let process = Process::spawn("redis-server", args, &log)?;
        let mut server = RedisServer {
            port,
            tls_port,
            password: self.password.clone(),
            process,
            _dir: dir,
        };
        server.wait_ready()?;
        Ok(server)
    }
}

/// A `redis-server` process on a free loopback port, killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    tls_port: Option<u16>,
    password: Option<String>,
    process: Process,
    _dir: TempDir,
}

impl RedisServer {
    /// Starts a server with no password.
    pub fn start() -> io::Result<RedisServer> {
        RedisServerBuilder::default().start()
    }

    /// Options: password, ACL users, extra arguments.
    pub fn builder() -> RedisServerBuilder {
        RedisServerBuilder::default()
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:<tls port>`, when started with [`RedisServerBuilder::tls`].
    pub fn tls_addr(&self) -> Option<String> {
        self.tls_port.map(|p| format!("127.0.0.1:{p}"))
    }

    /// A [`RedisConfig`] pointing at this server, with its password if it has one.
    pub fn config(&self) -> RedisConfig {
        let mut c = RedisConfig::new(self.addr());
        c.password = self.password.clone().map(Secret::new);
        c
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<i32> {
        self.process.pid()
    }

    /// SIGKILL: the server dies at once, as in a crash.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// SIGSTOP: the server keeps its connections but answers nothing.
    pub fn pause(&self) -> io::Result<()> {
        self.process.signal(libc::SIGSTOP)
    }

    /// SIGCONT: a paused server answers again.
    pub fn resume(&self) -> io::Result<()> {
        self.process.signal(libc::SIGCONT)
    }

    /// Kills the server if it runs and starts it again on the same port (empty: nothing
    /// is saved); returns once it answers. In a multi-threaded runtime the wait does not
    /// hold up other tasks; in async code [`restart_async`](RedisServer::restart_async)
    /// waits without blocking at all.
    pub fn restart(&mut self) -> io::Result<()> {
        self.process.respawn()?;
        self.wait_ready()
    }

    /// [`restart`](RedisServer::restart), waiting on tokio's timer.
    pub async fn restart_async(&mut self) -> io::Result<()> {
        self.process.respawn()?;
        let port = self.port;
        self.process
            .wait_ready_async("redis-server", || answers(port))
            .await
    }

    fn wait_ready(&mut self) -> io::Result<()> {
        let port = self.port;
        self.process.wait_ready("redis-server", || answers(port))
    }
}

/// True when a `PING` on `port` gets an answer. A refusal for want of a password counts,
/// and so does one at the server's connection cap (`--maxclients`): clients that were
/// waiting for the server may have taken every connection it accepts by then.
fn answers(port: u16) -> bool {
    exchange(port, b"PING\r\n").is_some_and(|r| {
        r.starts_with("+PONG")
            || r.starts_with("-NOAUTH")
            || r.starts_with("-WRONGPASS")
            || r.starts_with("-ERR max number of clients reached")
    })
}
