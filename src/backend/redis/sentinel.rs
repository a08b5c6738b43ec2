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
use crate::sync::lock;

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
    /// The master seen last; its generation is mirrored in `generation`.
    master: Mutex<Seen>,
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
            master: Mutex::new(Seen::default()),
            watching: AtomicBool::new(false),
        }
    }

    /// A client for the current master (the sentinels asked, the server checked with
    /// `ROLE`), with the generation of that master.
    pub(super) async fn locate(self: &Arc<Self>) -> RedisResult<(redis::Client, u64)> {
        self.watch();
        // The generation this lookup started in: an answer that arrives after a newer
        // master was seen may be older than that news.
        let began = self.generation.load(Ordering::Acquire);
        let taken = lock(&self.idle).pop();
        let mut lookup = match taken {
            Some(c) => c,
            None => (self.make)()?,
        };
        let found = lookup.async_get_client().await;
        lock(&self.idle).push(lookup);
        let client = found?;
        let addr = client.get_connection_info().addr().to_string();
        Ok((client, self.seen(&addr, Some(began))))
    }

    /// Records the master at `addr`, found by a lookup that began in generation `began`
    /// or announced by the sentinels (`None`); returns the generation a connection to it
    /// belongs to. A new master starts a new generation, which retires every connection
    /// to the previous one.
    fn seen(&self, addr: &str, began: Option<u64>) -> u64 {
        let mut seen = lock(&self.master);
        let (generation, change) = match began {
            Some(began) => seen.looked_up(addr, began),
            None => seen.announced(addr),
        };
        self.generation.store(seen.generation, Ordering::Release);
        match change {
            Change::Same => {}
            Change::Found => {
                tracing::info!(connector = %self.connector, kind = "redis", master = %self.master_name, at = %addr, "sentinel master found");
            }
            Change::Moved { from } => {
                tracing::warn!(connector = %self.connector, kind = "redis", master = %self.master_name, %from, to = %addr, "sentinel master changed; connections to the old master are retired");
            }
            Change::Outdated { current } => {
                tracing::debug!(connector = %self.connector, kind = "redis", master = %self.master_name, answer = %addr, %current, "a sentinel lookup answered after the master changed; its connection is retired");
            }
        }
        generation
    }

    /// `mymaster at 127.0.0.1:6380 via sentinels a:1,b:2`: what status shows.
    pub(super) fn endpoint(&self) -> String {
        let seen = lock(&self.master);
        let sentinels = self.sentinel_addrs.join(",");
        match seen.at.as_deref() {
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
            self.seen(&addr, None);
        }
    }
}

/// Which master was seen last, and its generation: the transitions, apart from the locks
/// and logs around them.
#[derive(Debug, Default)]
struct Seen {
    /// `host:port` of the master, once one was seen.
    at: Option<String>,
    /// Bumped each time the master changes.
    generation: u64,
}

/// What one answer changed.
#[derive(Debug, PartialEq, Eq)]
enum Change {
    /// The master seen already.
    Same,
    /// The first master seen.
    Found,
    /// A new master: connections to `from` are retired.
    Moved { from: String },
    /// A lookup's answer that arrived after a newer master (`current`) was seen: it may
    /// predate that news, so it changes nothing, and its connection is born retired.
    Outdated { current: String },
}

impl Seen {
    /// The sentinels announced `addr` as the master (`+switch-master`): news, in order.
    fn announced(&mut self, addr: &str) -> (u64, Change) {
        match self.at.replace(addr.to_owned()) {
            Some(old) if old == addr => (self.generation, Change::Same),
            previous => {
                self.generation += 1;
                let change = match previous {
                    Some(from) => Change::Moved { from },
                    None => Change::Found,
                };
                (self.generation, change)
            }
        }
    }

    /// A lookup that began in generation `began` found `addr`. Another master seen since
    /// then is newer news than this answer may be: a different `addr` is then not taken,
    /// and its connection gets the generation it began in, already retired. (At worst a
    /// fresh answer waits for the next lookup; a stale one never replaces a newer master.)
    fn looked_up(&mut self, addr: &str, began: u64) -> (u64, Change) {
        match &self.at {
            Some(at) if at == addr => (self.generation, Change::Same),
            Some(at) if self.generation != began => (
                began,
                Change::Outdated {
                    current: at.clone(),
                },
            ),
            _ => self.announced(addr),
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
    use super::{Change, Seen, switch_target};

    #[test]
    fn a_new_master_starts_a_new_generation() {
        let mut seen = Seen::default();
        assert_eq!(seen.looked_up("a:1", 0), (1, Change::Found));
        assert_eq!(seen.looked_up("a:1", 1), (1, Change::Same));
        assert_eq!(
            seen.announced("b:2"),
            (2, Change::Moved { from: "a:1".into() })
        );
        assert_eq!(seen.announced("b:2"), (2, Change::Same));
        assert_eq!(
            seen.looked_up("c:3", 2),
            (3, Change::Moved { from: "b:2".into() })
        );
        assert_eq!(seen.at.as_deref(), Some("c:3"));
    }

    /// A lookup that asked before a failover and answers after the sentinels announced
    /// the new master does not bring the old one back; its connection is born retired.
    #[test]
    fn a_lookup_that_answers_after_newer_news_changes_nothing() {
        let mut seen = Seen::default();
        assert_eq!(seen.looked_up("old:1", 0), (1, Change::Found));
        // A lookup begins in generation 1; meanwhile the master moves.
        assert_eq!(
            seen.announced("new:2"),
            (
                2,
                Change::Moved {
                    from: "old:1".into()
                }
            )
        );
        assert_eq!(
            seen.looked_up("old:1", 1),
            (
                1,
                Change::Outdated {
                    current: "new:2".into()
                }
            )
        );
        assert_eq!(seen.at.as_deref(), Some("new:2"));
        assert_eq!(seen.generation, 2);
        // The same answer from that lookup agrees, and a later lookup is taken.
        assert_eq!(seen.looked_up("new:2", 1), (2, Change::Same));
        assert_eq!(
            seen.looked_up("newer:3", 2),
            (
                3,
                Change::Moved {
                    from: "new:2".into()
                }
            )
        );
    }

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
