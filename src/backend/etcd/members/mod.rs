//! Per-member health of an etcd cluster, so requests stop going to a member that is down.
//!
//! etcd-client balances requests over every endpoint it was given and keeps sending some
//! to a dead member (about one request in eight fails for as long as the member is gone,
//! measured against a three-member cluster). connhub sees a member go the moment a
//! request to it fails at the transport level (the gated channel in `channel`), and
//! also probes each member on its own every `member_check_interval`: a down member is
//! passed by from then on, and taken back once it answers again. Both are local
//! operations on the client: no round trip at checkout.
//!
//! A member that answers its probes without a leader (it lost touch with a majority of
//! the cluster) is passed by the same way while another member has a leader. When none
//! has (the cluster lost its quorum), requests go to the members that answer, not to the
//! silent ones, the connector is told, and its health check fails: it is down. A request
//! held by a member that stopped answering, has no leader, or forwarded it to a leader
//! that died (a new one was elected since) is given up a second after it was sent
//! instead of at `command_timeout`.

mod check;
mod probe;

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::health::LossSignal;
use crate::sync::{every, lock};
use probe::probe;

/// The shared view of which members answer.
pub(crate) struct Members {
    endpoints: Vec<String>,
    /// `host:port` of each endpoint, to know a member by its channel's URI.
    authorities: Vec<String>,
    healthy: Vec<AtomicBool>,
    /// Each member answered its last probe or request, leader or not: while no member
    /// is healthy, requests go to those that answer.
    answers: Vec<AtomicBool>,
    /// Each member answered its last probe without a leader.
    leaderless: Vec<AtomicBool>,
    /// Members answer, but none has a leader: the cluster lost its quorum.
    no_quorum: AtomicBool,
    /// Probes in a row each member did not pass: one that is up is passed by only after
    /// [`MISSES`] of them, so a loaded machine that slows one probe costs nothing.
    misses: Vec<AtomicU8>,
    /// Told when a member is marked down: requests in flight to it stop waiting.
    down: Vec<Notify>,
    /// The newest Raft term a member reported following a leader in (0 before the first
    /// probe): it grows once an election has elected one.
    term: AtomicU64,
    /// Told when `term` grows: requests in flight since before the election stop waiting
    /// (sent again now, they reach the new leader).
    elected: Notify,
    /// Channels waiting for a member to be taken back (or for no member to answer).
    waiting: Mutex<Vec<Waker>>,
    /// Told when a member's channel fails: the connector's health engine checks at once.
    losses: LossSignal,
    monitor_started: AtomicBool,
    /// One single-endpoint client per member, for probing; made on first use.
    probes: Mutex<Vec<Option<Client>>>,
    name: Arc<str>,
    probe_timeout: Duration,
    probe_options: ConnectOptions,
}

impl std::fmt::Debug for Members {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Members")
            .field("endpoints", &self.endpoints)
            .field("healthy", &self.healthy)
            .finish_non_exhaustive()
    }
}

impl Members {
    pub(crate) fn new(
        name: Arc<str>,
        endpoints: Vec<String>,
        probe_timeout: Duration,
        probe_options: ConnectOptions,
    ) -> Self {
        let healthy = endpoints.iter().map(|_| AtomicBool::new(true)).collect();
        let answers = endpoints.iter().map(|_| AtomicBool::new(true)).collect();
        let leaderless = endpoints.iter().map(|_| AtomicBool::new(false)).collect();
        let misses = endpoints.iter().map(|_| AtomicU8::new(0)).collect();
        let down = endpoints.iter().map(|_| Notify::new()).collect();
        let probes = Mutex::new(vec![None; endpoints.len()]);
        let authorities = endpoints
            .iter()
            .map(|e| {
                e.split_once("://")
                    .map_or(e.as_str(), |(_, rest)| rest)
                    .trim_end_matches('/')
                    .to_owned()
            })
            .collect();
        Members {
            endpoints,
            authorities,
            healthy,
            answers,
            leaderless,
            no_quorum: AtomicBool::new(false),
            misses,
            down,
            term: AtomicU64::new(0),
            elected: Notify::new(),
            waiting: Mutex::new(Vec::new()),
            losses: LossSignal::new(),
            monitor_started: AtomicBool::new(false),
            probes,
            name,
            probe_timeout,
            probe_options,
        }
    }

    /// More than one member: there is something to route around.
    pub(crate) fn is_cluster(&self) -> bool {
        self.endpoints.len() > 1
    }

    /// Probes every member now, concurrently, and records who answers. True when at
    /// least one does.
    pub(crate) async fn check_now(&self) -> bool {
        let clients: Vec<Option<Client>> = lock(&self.probes).clone();
        let probes = self
            .endpoints
            .iter()
            .zip(clients)
            .map(|(ep, client)| probe(ep, client, &self.probe_options, self.probe_timeout));
        let results = futures_util::future::join_all(probes).await;
        let newest = results
            .iter()
            .filter_map(|(answer, _)| answer.committed())
            .max()
            .unwrap_or(0);
        if let Some(term) = results
            .iter()
            .filter_map(|(answer, _)| answer.led_term())
            .max()
        {
            self.saw_term(term);
        }
        let mut any_up = false;
        let mut made = Vec::with_capacity(results.len());
        for (i, (answer, client)) in results.into_iter().enumerate() {
            let passed = answer.up(newest);
            self.set_answers(i, answer.answers());
            self.leaderless[i].store(answer.leaderless(), Ordering::Release);
            let missed = if passed {
                0
            } else {
                self.misses[i].load(Ordering::Relaxed).saturating_add(1)
            };
            self.misses[i].store(missed, Ordering::Relaxed);
            let up = up_after(passed, missed, self.is_up(i));
            any_up |= up;
            made.push(client);
            if self.set(i, up) {
                let endpoint = &self.endpoints[i];
                if up {
                    tracing::info!(connector = %self.name, kind = "etcd", %endpoint, "etcd member answers again");
                } else {
                    tracing::warn!(connector = %self.name, kind = "etcd", %endpoint, "etcd member down; routing around it");
                }
            }
        }
        *lock(&self.probes) = made;
        let no_quorum = !any_up && (0..self.endpoints.len()).any(|i| self.is_leaderless(i));
        if self.no_quorum.swap(no_quorum, Ordering::AcqRel) != no_quorum && no_quorum {
            // Nothing failed on the way: the connector is told, and checks itself.
            tracing::warn!(connector = %self.name, kind = "etcd", "no etcd member has a leader: the cluster lost its quorum");
            self.losses.connection_lost();
        }
        any_up
    }

    fn is_leaderless(&self, i: usize) -> bool {
        self.answers[i].load(Ordering::Acquire) && self.leaderless[i].load(Ordering::Acquire)
    }

    pub(crate) fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The signal the connector's health engine listens to.
    pub(crate) fn losses(&self) -> &LossSignal {
        &self.losses
    }

    /// The member a channel's URI points at.
    pub(crate) fn index_of(&self, uri: &http::Uri) -> Option<usize> {
        let authority = uri.authority()?.as_str();
        self.authorities.iter().position(|a| a == authority)
    }

    /// True when a request may go to member `i`: it is healthy; or none is, and it
    /// answers (without a leader, or catching up: [`stalled`](Members::stalled) gives up
    /// what it holds a second in, where a silent member would hold it until
    /// `command_timeout`); or none answers (the connector is down, and every member stays
    /// in play). Otherwise `waker` is woken when that changes.
    pub(crate) fn admits(&self, i: usize, waker: &Waker) -> bool {
        if self.is_up(i) {
            return true;
        }
        {
            let mut waiting = lock(&self.waiting);
            if !waiting.iter().any(|w| w.will_wake(waker)) {
                waiting.push(waker.clone());
            }
        }
        // Looked at again after registering, so a change in between is not missed.
        self.routable(i)
    }

    fn routable(&self, i: usize) -> bool {
        let any = |of: &[AtomicBool]| of.iter().any(|b| b.load(Ordering::Acquire));
        self.is_up(i)
            || (!any(&self.healthy)
                && (self.answers[i].load(Ordering::Acquire) || !any(&self.answers)))
    }

    /// A request to member `i` failed at the transport level: it is passed by from now on
    /// (until a probe finds it answering), and the connector checks itself at once.
    pub(crate) fn lost(&self, i: usize, error: &dyn std::error::Error) {
        if self.is_cluster() {
            self.set_answers(i, false);
            if self.set(i, false) {
                let endpoint = &self.endpoints[i];
                tracing::warn!(connector = %self.name, kind = "etcd", %endpoint, %error, "etcd member lost; routing around it");
            }
        }
        self.losses.connection_lost();
    }

    /// Member `i` refused a request while it applies a backlog: passed by until a probe
    /// finds it caught up.
    pub(crate) fn behind(&self, i: usize) {
        if self.is_cluster() && self.set(i, false) {
            let endpoint = &self.endpoints[i];
            tracing::warn!(connector = %self.name, kind = "etcd", %endpoint, "etcd member is applying a backlog and refuses requests; routing around it until it has caught up");
        }
    }

    fn set(&self, i: usize, up: bool) -> bool {
        let changed = self.healthy[i].swap(up, Ordering::AcqRel) != up;
        if changed && !up {
            self.down[i].notify_waiters();
        }
        if changed {
            // Any change may open a gate: this member is back, or the last one that
            // answered went too.
            self.wake_gates();
        }
        changed
    }

    fn set_answers(&self, i: usize, answers: bool) {
        if self.answers[i].swap(answers, Ordering::AcqRel) != answers {
            self.wake_gates();
        }
    }

    fn wake_gates(&self) {
        for w in lock(&self.waiting).drain(..) {
            w.wake();
        }
    }

    fn is_up(&self, i: usize) -> bool {
        self.healthy[i].load(Ordering::Acquire)
    }

    /// A member reported following a leader in Raft term `term`: a newer one means a new
    /// leader was elected.
    fn saw_term(&self, term: u64) {
        if self.term.fetch_max(term, Ordering::AcqRel) < term {
            self.elected.notify_waiters();
        }
    }

    /// The newest Raft term a member reported following a leader in, 0 before the first
    /// probe: what a request is sent in, for [`stalled`](Members::stalled).
    pub(crate) fn term(&self) -> u64 {
        self.term.load(Ordering::Acquire)
    }

    /// Completes when a request sent to member `i` at `sent`, in Raft term `term`, has
    /// waited [`STALLED`] and by then either the member is down (it stopped answering its
    /// probes, or failed another request) or a new leader was elected: a member frozen or
    /// overloaded holds what it was sent until `command_timeout`, and so does one that
    /// forwarded a write to a leader that died (etcd does not send it again to the next
    /// one). The caller is better told now and sent elsewhere on its next try. Never
    /// completes for a member that answers under the same leader.
    pub(crate) async fn stalled(&self, i: usize, sent: Instant, term: u64) -> Stall {
        tokio::time::sleep_until(sent + STALLED).await;
        loop {
            // Made before the look, so a change in between is not missed: `notify_waiters`
            // reaches every `Notified` made before it.
            let down = self.down[i].notified();
            let elected = self.elected.notified();
            if !self.is_up(i) {
                return if self.is_leaderless(i) {
                    Stall::NoLeader
                } else {
                    Stall::Down
                };
            }
            if term != 0 && self.term() > term {
                return Stall::Elected;
            }
            tokio::select! {
                () = down => {}
                () = elected => {}
            }
        }
    }

    /// `host:port` (with its scheme) of member `i`.
    pub(crate) fn endpoint(&self, i: usize) -> &str {
        &self.endpoints[i]
    }

    /// Starts the probing task once (a single member has nothing to route around).
    /// It ends when the connector's manager is dropped.
    pub(crate) fn start_monitor(self: &Arc<Self>, interval: Duration) {
        if !self.is_cluster() || self.monitor_started.swap(true, Ordering::AcqRel) {
            return;
        }
        tokio::spawn(every(
            Arc::downgrade(self),
            interval,
            |members| async move {
                members.check_now().await;
            },
        ));
    }
}

/// How long a request to a member found down may wait for its answer before it is given
/// up: long enough that a member merely slow to answer one probe (a loaded machine) costs
/// no request, short against the default `command_timeout` (5 s) a frozen member would
/// otherwise hold every caller that reached it.
pub(crate) const STALLED: Duration = Duration::from_secs(1);

/// Why a request was given up on a member ([`Members::stalled`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stall {
    /// The member stopped answering.
    Down,
    /// The member answers, but has no leader: it is out of touch with a majority of the
    /// cluster (the cluster lost its quorum, or this member is cut off from the rest).
    NoLeader,
    /// A new leader was elected while the request waited.
    Elected,
}

/// Probes in a row a member that is up may miss before it is passed by: a frozen member
/// is then down within about three probe intervals (0.75 s with the default 250 ms),
/// before a request to it has waited [`STALLED`].
const MISSES: u8 = 2;

/// Whether a member is up after a probe it `passed` or not, having missed `missed` in a
/// row, when it `was_up` before: one that passes is up; one that is up stays up until it
/// has missed [`MISSES`] in a row; one that is down stays down until it passes.
fn up_after(passed: bool, missed: u8, was_up: bool) -> bool {
    passed || (was_up && missed < MISSES)
}

#[cfg(test)]
mod tests;
