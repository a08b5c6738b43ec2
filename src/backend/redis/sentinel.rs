//! [`SentinelMaster`]: which server is the master, as the sentinels say, on the redis
//! crate's own Sentinel client.
//!
//! Every new connection asks the sentinels for the master and the crate checks with `ROLE`
//! that the server it names is a master, so a connection never goes to a demoted one. Each
//! master seen gets a generation; when it changes (a connection found a new master, or the
//! sentinels announced `+switch-master`), every connection to the old master is retired at
//! its next checkout, idle or not. A `READONLY` reply breaks a connection too.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use redis::RedisResult;
use redis::aio::PubSubStream;
use redis::sentinel::SentinelClient;

use super::classify;
use super::topology::hung;
use crate::error::{Error, Result, TimeoutKind};
use crate::pool::streams::{self, NoReader, Read, Scope, Source};

/// The master of one sentinel-monitored set.
pub(super) struct SentinelMaster {
    pub(super) connector: Arc<str>,
    pub(super) master_name: String,
    /// Lookup clients not in use. A lookup takes one (or makes one) and gives it back, so
    /// lookups run at once and no lock is held across one.
    idle: Mutex<Vec<SentinelClient>>,
    make: Box<dyn Fn() -> RedisResult<SentinelClient> + Send + Sync>,
    /// Sentinels, for the `+switch-master` subscription.
    sentinels: Vec<redis::Client>,
    /// `host:port` of each sentinel, for status.
    sentinel_addrs: Vec<String>,
    /// The generation of the master last seen; bumped when it changes.
    pub(super) generation: Arc<AtomicU64>,
    master: Mutex<Option<String>>,
    watching: AtomicBool,
}

impl SentinelMaster {
    pub(super) fn new(
        connector: Arc<str>,
        master_name: String,
        client: SentinelClient,
        make: Box<dyn Fn() -> RedisResult<SentinelClient> + Send + Sync>,
        sentinels: Vec<redis::Client>,
        sentinel_addrs: Vec<String>,
    ) -> Self {
        SentinelMaster {
            connector,
            master_name,
            idle: Mutex::new(vec![client]),
            make,
            sentinels,
            sentinel_addrs,
            generation: Arc::new(AtomicU64::new(0)),
            master: Mutex::new(None),
            watching: AtomicBool::new(false),
        }
    }

    /// A client for the current master (the sentinels asked, the server checked with
    /// `ROLE`), with the generation of that master.
    pub(super) async fn locate(self: &Arc<Self>) -> RedisResult<(redis::Client, u64)> {
        self.watch();
        let taken = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut lookup = match taken {
            Some(c) => c,
            None => (self.make)()?,
        };
        let found = lookup.async_get_client().await;
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(lookup);
        let client = found?;
        let addr = client.get_connection_info().addr().to_string();
        Ok((client, self.seen(addr)))
    }

    /// Records the master at `addr`; a new one starts a new generation, which retires every
    /// connection to the previous one.
    fn seen(&self, addr: String) -> u64 {
        let mut master = self.master.lock().unwrap_or_else(|p| p.into_inner());
        if master.as_deref() != Some(addr.as_str()) {
            let previous = master.replace(addr.clone());
            let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
            if let Some(old) = previous {
                tracing::warn!(connector = %self.connector, kind = "redis", master = %self.master_name, from = %old, to = %addr, "sentinel master changed; connections to the old master are retired");
            } else {
                tracing::info!(connector = %self.connector, kind = "redis", master = %self.master_name, at = %addr, "sentinel master found");
            }
            return generation;
        }
        self.generation.load(Ordering::Acquire)
    }

    /// `mymaster at 127.0.0.1:6380 via sentinels a:1,b:2`: what status shows.
    pub(super) fn endpoint(&self) -> String {
        let master = self.master.lock().unwrap_or_else(|p| p.into_inner());
        let sentinels = self.sentinel_addrs.join(",");
        match master.as_deref() {
            Some(at) => format!(
                "{at} (master {} via sentinels {sentinels})",
                self.master_name
            ),
            None => format!("master {} via sentinels {sentinels}", self.master_name),
        }
    }

    /// Starts the `+switch-master` subscription once, from inside the runtime.
    fn watch(self: &Arc<Self>) {
        if !self.watching.swap(true, Ordering::AcqRel) {
            let scope = Monitored {
                master: Arc::downgrade(self),
                connector: self.connector.clone(),
            };
            tokio::spawn(streams::run(scope, Switches { next: 0 }, None, NoReader));
        }
    }
}

/// How often the subscription checks that its connector still exists, and waits before
/// trying the sentinels again.
const RECHECK: Duration = Duration::from_secs(1);

/// The scope of the `+switch-master` subscription: as long as the connector's manager
/// exists.
struct Monitored {
    master: Weak<SentinelMaster>,
    connector: Arc<str>,
}

impl Scope for Monitored {
    fn names(&self) -> (&str, &str) {
        (&self.connector, "redis")
    }

    fn retry_after(&self) -> Duration {
        RECHECK
    }

    async fn ended(&self) -> Option<Self> {
        while self.master.strong_count() > 0 {
            tokio::time::sleep(RECHECK).await;
        }
        None
    }
}

/// Listens for `+switch-master` on one sentinel after another: a failover is noticed at
/// once, even by connections that are idle or to a master that still answers.
struct Switches {
    /// The sentinel to try first.
    next: usize,
}

impl Source<Monitored> for Switches {
    type Open = PubSubStream;
    type Item = Infallible;
    const NAME: &'static str = "+switch-master subscription";

    async fn open(&mut self, scope: &Monitored) -> Result<PubSubStream> {
        let Some(m) = scope.master.upgrade() else {
            return Err(Error::Closed { origin: None });
        };
        let mut last = None;
        for i in 0..m.sentinels.len() {
            let at = (self.next + i) % m.sentinels.len();
            let subscribed = async {
                let mut pubsub = m.sentinels[at].get_async_pubsub().await?;
                pubsub.subscribe("+switch-master").await?;
                RedisResult::Ok(pubsub.into_on_message())
            };
            match tokio::time::timeout(RECHECK * 5, subscribed).await {
                Ok(Ok(messages)) => {
                    self.next = at;
                    return Ok(messages);
                }
                Ok(Err(e)) => last = Some(e),
                Err(_) => last = Some(hung(RECHECK * 5)),
            }
        }
        let e = last.unwrap_or_else(|| hung(Duration::ZERO));
        let endpoint = m.sentinel_addrs.join(",");
        Err(classify(
            &m.connector,
            &endpoint,
            TimeoutKind::Connect,
            RECHECK * 5,
            e,
        ))
    }

    async fn read(&mut self, scope: &Monitored, messages: &mut PubSubStream) -> Read<Infallible> {
        let Some(msg) = messages.next().await else {
            // Try the next sentinel first.
            self.next = self.next.wrapping_add(1);
            return Read::Lost("the sentinel connection was lost".into());
        };
        if let (Some(m), Ok(payload)) = (scope.master.upgrade(), msg.get_payload::<String>()) {
            m.switched(&payload);
        }
        Read::Nothing
    }
}

impl SentinelMaster {
    /// `+switch-master <name> <old ip> <old port> <new ip> <new port>`.
    fn switched(&self, payload: &str) {
        if let Some(addr) = switch_target(payload, &self.master_name) {
            self.seen(addr);
        }
    }
}

/// The new master's `host:port` in a `+switch-master` payload for `name`.
fn switch_target(payload: &str, name: &str) -> Option<String> {
    let parts: Vec<&str> = payload.split_whitespace().collect();
    match parts.as_slice() {
        [n, _, _, ip, port] if *n == name => Some(if ip.contains(':') {
            format!("[{ip}]:{port}")
        } else {
            format!("{ip}:{port}")
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::switch_target;

    #[test]
    fn switch_master_payloads() {
        assert_eq!(
            switch_target("mymaster 127.0.0.1 6379 127.0.0.1 6380", "mymaster").as_deref(),
            Some("127.0.0.1:6380")
        );
        assert_eq!(
            switch_target("other 127.0.0.1 6379 127.0.0.1 6380", "mymaster"),
            None
        );
        assert_eq!(
            switch_target("mymaster ::1 6379 ::1 6380", "mymaster").as_deref(),
            Some("[::1]:6380")
        );
        assert_eq!(switch_target("garbage", "mymaster"), None);
    }
}
