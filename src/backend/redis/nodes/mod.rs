//! Per-node health of a Redis Cluster, so one node that stops answering costs its own
//! slots and not the whole connector.
//!
//! The redis crate's cluster connection sends each command to its slot's master and
//! waits for the reply up to the response timeout (`command_timeout`); a master that
//! freezes (a stopped process, a full disk, a machine swapping) keeps its connections
//! open and answers nothing, so every caller that reaches one of its keys waits that
//! long, and a fresh cluster connection waits for it too (the crate connects to every
//! node it was given before it answers anything). Measured against a three-master
//! testkit cluster with one master frozen for 10 s under 16 writers: no write at all
//! succeeded until it was resumed, although its replica took over within 2 s.
//!
//! So a monitor probes every configured node and every master with `PING` each
//! [`CHECK_INTERVAL`], and reads the slot map (`CLUSTER SLOTS`) from one that answers:
//! - while a master does not answer at all, a command or pipeline for one of its slots
//!   is refused before it is sent ([`NotSent`]; its key's position comes from the
//!   server's `COMMAND` reply, and a pipeline goes whole to its first key's slot), and
//!   one already sent that has waited [`STALLED`] is given up, saying it may have been
//!   applied ([`GivenUp`]); commands to the other masters never wait that long;
//! - once the slot map names other masters (the failover is done), every cluster
//!   connection made before is retired, so the next call reads the new map;
//! - a fresh cluster connection starts from the configured nodes that answer;
//! - with `read_from_replicas`, replicas are probed too: reads keep away from one that
//!   does not answer at all (`reads.rs`), and a read that may be waiting on a silent
//!   node (sent before reads kept away from it, or while a master is silent or slots
//!   move) is given up once it has waited [`STALLED`] ([`ReadGivenUp`]) and, being
//!   read-only, sent again (by the pool's retry rule, or on the same connection when a
//!   caller holds it: `Resends`); a read merely slower than that is left alone.

mod errors;
mod keys;
mod probe;
mod reads;
mod view;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::cluster::ClusterClient;
use redis::{ConnectionInfo, RedisResult};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::sync::{every, lock};
pub(super) use errors::{is_given_up, is_read_given_up};
use keys::KeySpecs;
use probe::split;
pub(super) use reads::ReadTargets;
use view::{Probe, View};

/// How often every node is probed and the slot map read.
pub(super) const CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// How long a command may wait for its reply while a master does not answer before it
/// is given up: long enough that a master merely slow to answer one probe (a loaded
/// machine) costs no command, short against the default `command_timeout` (5 s).
pub(super) const STALLED: Duration = Duration::from_secs(1);

/// Builds a cluster client from some of the configured nodes.
pub(super) type MakeClient =
    Box<dyn Fn(Vec<ConnectionInfo>) -> RedisResult<ClusterClient> + Send + Sync>;

/// Builds a client for one node, to probe it.
pub(super) type MakeProbe = Box<dyn Fn(ConnectionInfo) -> RedisResult<redis::Client> + Send + Sync>;

/// What the connector knows of its cluster's nodes; see the module docs.
pub(super) struct ClusterNodes {
    name: Arc<str>,
    /// The configured nodes, `host:port`, and how to reach each.
    seeds: Vec<String>,
    infos: Vec<ConnectionInfo>,
    /// The client over every configured node.
    all: ClusterClient,
    make_client: MakeClient,
    make_probe: MakeProbe,
    view: Mutex<View>,
    /// A master serving slots does not answer at all, as of the last round.
    master_silent: AtomicBool,
    /// Any node does not answer at all.
    any_silent: AtomicBool,
    /// A node a read may wait on (a replica, a master) does not answer at all.
    silent_for_reads: AtomicBool,
    /// When reads were last kept away from one more node.
    avoided_at: Mutex<Option<Instant>>,
    /// Counts slot maps that moved slots to other masters: a connection made under an
    /// older one is retired.
    generation: AtomicU64,
    /// Told when a master stops answering or slots move.
    changed: Notify,
    /// Where each command's key is, learned once from a node that answers.
    keys: OnceLock<KeySpecs>,
    /// One connection per node probed, kept between rounds.
    probes: Mutex<HashMap<String, MultiplexedConnection>>,
    started: AtomicBool,
    probe_timeout: Duration,
    /// With `read_from_replicas`: the replicas reads keep away from.
    reads: Option<ReadTargets>,
}

impl std::fmt::Debug for ClusterNodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNodes")
            .field("seeds", &self.seeds)
            .field("view", &*lock(&self.view))
            .finish_non_exhaustive()
    }
}

impl ClusterNodes {
    /// For the connector `name`, whose configured nodes are `seeds` (`host:port`) reached
    /// as `infos`; `all` is the client over all of them; `reads` when reads go to
    /// replicas, the read routing its clients were built with.
    #[expect(clippy::too_many_arguments, reason = "built once, from the topology")]
    pub(super) fn new(
        name: Arc<str>,
        seeds: Vec<String>,
        infos: Vec<ConnectionInfo>,
        all: ClusterClient,
        make_client: MakeClient,
        make_probe: MakeProbe,
        connect_timeout: Duration,
        reads: Option<ReadTargets>,
    ) -> Self {
        ClusterNodes {
            name,
            seeds,
            infos,
            all,
            make_client,
            make_probe,
            view: Mutex::new(View::default()),
            master_silent: AtomicBool::new(false),
            any_silent: AtomicBool::new(false),
            silent_for_reads: AtomicBool::new(false),
            avoided_at: Mutex::new(None),
            generation: AtomicU64::new(0),
            changed: Notify::new(),
            keys: OnceLock::new(),
            probes: Mutex::new(HashMap::new()),
            started: AtomicBool::new(false),
            probe_timeout: connect_timeout.min(CHECK_INTERVAL.max(Duration::from_millis(200))),
            reads,
        }
    }

    /// The slot maps read so far that moved slots: a connection carries the one it was
    /// made under.
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// True while a master serving slots does not answer at all: a command sent to it
    /// waits until `command_timeout`.
    pub(super) fn master_silent(&self) -> bool {
        self.master_silent.load(Ordering::Acquire)
    }

    /// The error for `cmd` when it would go to a master that does not answer at all: it
    /// is not sent. `None` while every master answers (one atomic load), and for a
    /// command whose key is not at a known position (it waits [`STALLED`] at most).
    pub(super) fn refused(&self, cmd: &redis::Cmd) -> Option<redis::RedisError> {
        if !self.master_silent() {
            return None;
        }
        let keys = self.keys.get()?;
        let read = self.reads.is_some() && keys.reads_only(std::iter::once(cmd));
        self.refused_for(keys.key(cmd)?, read)
    }

    /// True when reads go to replicas and the server flags `cmd` read-only: it may wait
    /// on a replica.
    pub(super) fn reads(&self, cmd: &redis::Cmd) -> bool {
        self.reads.is_some()
            && self
                .keys
                .get()
                .is_some_and(|keys| keys.reads_only(std::iter::once(cmd)))
    }

    /// [`reads`](ClusterNodes::reads) for a pipeline: every command in it reads.
    pub(super) fn reads_pipeline(&self, pipe: &redis::Pipeline) -> bool {
        self.reads.is_some()
            && self
                .keys
                .get()
                .is_some_and(|keys| keys.reads_only(pipe.cmd_iter()))
    }

    /// [`refused`](ClusterNodes::refused) for a pipeline (a transaction too): the crate
    /// sends it whole to the slot of its first command with a key, so it is refused when
    /// that slot's master does not answer at all.
    pub(super) fn refused_pipeline(&self, pipe: &redis::Pipeline) -> Option<redis::RedisError> {
        if !self.master_silent() {
            return None;
        }
        let keys = self.keys.get()?;
        let read = self.reads.is_some() && keys.reads_only(pipe.cmd_iter());
        self.refused_for(pipe.cmd_iter().find_map(|cmd| keys.key(cmd))?, read)
    }

    /// The error for a call sent for `key`, when its slot's master does not answer and,
    /// for a `read` (reads go to replicas), no replica of the slot does either.
    fn refused_for(&self, key: &[u8], read: bool) -> Option<redis::RedisError> {
        let slot = keys::slot(key);
        let view = lock(&self.view);
        let master = view.unanswered(slot, read)?;
        Some(errors::not_sent(master.to_owned(), slot))
    }

    /// The client a fresh connection starts from: over the configured nodes that answer.
    pub(super) fn client(&self) -> RedisResult<ClusterClient> {
        let answering = lock(&self.view).answering(&self.seeds);
        if answering.len() == self.seeds.len() {
            return Ok(self.all.clone());
        }
        (self.make_client)(
            answering
                .into_iter()
                .map(|i| self.infos[i].clone())
                .collect(),
        )
    }

    /// A node that answered its last probe, `host:port`: where to ask about the cluster.
    pub(super) fn answering_node(&self) -> Option<(String, u16)> {
        let view = lock(&self.view);
        let nodes = view.to_probe(&self.seeds, false);
        let node = nodes.iter().find(|n| !view.down.contains(*n))?;
        split(node)
    }

    /// `request`, given up once it has waited [`STALLED`] while a master does not answer
    /// at all (or slots moved since it was sent, away from a node that does not), or,
    /// for a `read` ([`reads`](ClusterNodes::reads)), while a master does not or a
    /// replica that may have got it does not: a read is safe to send again.
    ///
    /// `read` is asked only once the request has waited that long, so a command that is
    /// answered in time (nearly all) costs no look at its name.
    pub(super) async fn bounded<T>(
        &self,
        read: impl FnOnce() -> bool,
        request: impl Future<Output = RedisResult<T>>,
    ) -> RedisResult<T> {
        let (sent, generation) = (Instant::now(), self.generation());
        let stall = async {
            tokio::time::sleep_until(sent + STALLED).await;
            self.stalled(sent, generation, read()).await
        };
        tokio::select! {
            biased;
            r = request => r,
            stall = stall => Err(match stall {
                Stall::Master => self.given_up_error(),
                Stall::Read(silent) => errors::read_given_up(silent),
            }),
        }
    }

    /// Called once a request sent at `sent` under `generation` has waited [`STALLED`]:
    /// completes when a master does not answer at all, or slots moved since
    /// while a node does not (the request may be waiting for the old master), or, for a
    /// `read`, a replica that may have got it does not answer at all. Never while every
    /// node answers or refuses: a refused request fails by itself, and the crate
    /// retries it and follows the failover.
    async fn stalled(&self, sent: Instant, generation: u64, read: bool) -> Stall {
        loop {
            // Made before the look, so a change in between is not missed:
            // `notify_waiters` reaches every `Notified` made before it.
            let next = self.changed.notified();
            let stalled = self.master_silent()
                || (self.generation() != generation && self.any_silent.load(Ordering::Acquire));
            // A read is safe to send again, whatever it waits on. It may also wait on a
            // silent replica, if it was sent before reads were last kept away from one
            // (after that, reads are routed elsewhere: one still waiting is merely slow).
            if read
                && (stalled
                    || (self.silent_for_reads.load(Ordering::Acquire)
                        && lock(&self.avoided_at).is_some_and(|at| sent <= at)))
            {
                let view = lock(&self.view);
                let mut silent = view.silent_for_reads();
                if silent.is_empty() {
                    silent = view.silent.iter().map(String::as_str).collect();
                }
                return Stall::Read(silent.join(", "));
            }
            if stalled {
                return Stall::Master;
            }
            next.await;
        }
    }

    fn given_up_error(&self) -> redis::RedisError {
        let masters = {
            let view = lock(&self.view);
            let silent = view.silent_masters();
            (!silent.is_empty()).then(|| silent.join(", "))
        };
        errors::given_up(masters)
    }

    /// Starts the monitor once; it ends when the connector's manager is dropped.
    pub(super) fn start_monitor(self: &Arc<Self>) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        tokio::spawn(every(
            Arc::downgrade(self),
            CHECK_INTERVAL,
            |nodes| async move {
                nodes.check_now().await;
            },
        ));
    }

    /// One round: probes every node, reads the slot map from one that answers, and acts
    /// on what changed.
    async fn check_now(&self) {
        let nodes = lock(&self.view).to_probe(&self.seeds, self.reads.is_some());
        let results = futures_util::future::join_all(nodes.iter().map(|n| self.probe(n))).await;
        // A node no longer configured nor serving slots is not probed again.
        lock(&self.probes).retain(|node, _| nodes.contains(node));
        let probes: Vec<(String, Probe)> = nodes.iter().cloned().zip(results).collect();
        let mut shards = None;
        for (node, probe) in &probes {
            if *probe == Probe::Answered
                && let Some(s) = self.slots(node).await
            {
                if self.keys.get().is_none()
                    && let Some(specs) = self.key_specs(node).await
                {
                    let _ = self.keys.set(specs);
                }
                shards = Some(s);
                break;
            }
        }
        let change = {
            let mut view = lock(&self.view);
            let (next, change) = view.next(&probes, shards);
            *view = next;
            let master = !view.silent_masters().is_empty();
            self.master_silent.store(master, Ordering::Release);
            // Only nodes still probed: one that left the cluster while silent is no news.
            let silent = view.silent.iter().any(|n| nodes.contains(n));
            self.any_silent.store(silent, Ordering::Release);
            if let Some(reads) = &self.reads {
                let silent = view.silent_for_reads();
                self.silent_for_reads
                    .store(!silent.is_empty(), Ordering::Release);
                if reads.avoid(&silent) {
                    *lock(&self.avoided_at) = Some(Instant::now());
                }
            }
            change
        };
        if change.moved {
            self.generation.fetch_add(1, Ordering::AcqRel);
            tracing::info!(connector = %self.name, kind = "redis", "cluster slots moved to other masters; cluster connections made before are replaced");
        }
        for node in &change.went_down {
            tracing::warn!(connector = %self.name, kind = "redis", %node, "cluster node stopped answering");
        }
        for node in &change.came_back {
            tracing::info!(connector = %self.name, kind = "redis", %node, "cluster node answers again");
        }
        if change.moved || !change.went_down.is_empty() {
            self.changed.notify_waiters();
        }
    }
}

/// Why a request was given up.
enum Stall {
    /// A master does not answer at all, or slots moved away from a node that does not.
    Master,
    /// A read, while replicas or masters do not answer at all (`host:port`, comma
    /// separated).
    Read(String),
}
