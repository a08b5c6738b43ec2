//! Per-member health of an etcd cluster, so requests stop going to a member that is down.
//!
//! etcd-client balances requests over every endpoint it was given and keeps sending some
//! to a dead member (about one request in eight fails for as long as the member is gone,
//! measured against a three-member cluster). connhub sees a member go the moment a
//! request to it fails at the transport level (the gated channel in `channel`), and
//! also probes each member on its own every `member_check_interval`: a down member is
//! passed by from then on, and taken back once it answers again. Both are local
//! operations on the client: no round trip at checkout.

mod probe;

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
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
    /// Probes in a row each member did not pass: one that is up is passed by only after
    /// [`MISSES`] of them, so a loaded machine that slows one probe costs nothing.
    misses: Vec<AtomicU8>,
    /// Told when a member is marked down: requests in flight to it stop waiting.
    down: Vec<Notify>,
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
            misses,
            down,
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
        let mut any_up = false;
        let mut made = Vec::with_capacity(results.len());
        for (i, (answer, client)) in results.into_iter().enumerate() {
            let passed = answer.up(newest);
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
        any_up
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

    /// True when a request may go to member `i`: it answers, or none does (the connector
    /// is down, and every member stays in play). Otherwise `waker` is woken when that
    /// changes.
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
        self.is_up(i) || !self.any_up()
    }

    /// A request to member `i` failed at the transport level: it is passed by from now on
    /// (until a probe finds it answering), and the connector checks itself at once.
    pub(crate) fn lost(&self, i: usize, error: &dyn std::error::Error) {
        if self.is_cluster() && self.set(i, false) {
            let endpoint = &self.endpoints[i];
            tracing::warn!(connector = %self.name, kind = "etcd", %endpoint, %error, "etcd member lost; routing around it");
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

    fn any_up(&self) -> bool {
        (0..self.endpoints.len()).any(|i| self.is_up(i))
    }

    fn set(&self, i: usize, up: bool) -> bool {
        let changed = self.healthy[i].swap(up, Ordering::AcqRel) != up;
        if changed && !up {
            self.down[i].notify_waiters();
        }
        if changed {
            // Any change may open a gate: this member is back, or the last one that
            // answered went too.
            for w in lock(&self.waiting).drain(..) {
                w.wake();
            }
        }
        changed
    }

    fn is_up(&self, i: usize) -> bool {
        self.healthy[i].load(Ordering::Acquire)
    }

    /// Completes when a request sent to member `i` at `sent` has waited [`STALLED`] and
    /// the member is down by then (it stopped answering its probes, or failed another
    /// request): a member frozen or overloaded holds what it was sent until
    /// `command_timeout`, and the caller is better told now and sent elsewhere on its
    /// next try. Never completes for a member that answers.
    pub(crate) async fn stalled(&self, i: usize, sent: Instant) {
        tokio::time::sleep_until(sent + STALLED).await;
        loop {
            // Made before the look, so the member going down in between is not missed:
            // `notify_waiters` reaches every `Notified` made before it.
            let next = self.down[i].notified();
            if !self.is_up(i) {
                return;
            }
            next.await;
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

    /// A status request on `client`; if it fails on the way to a member and this is a
    /// cluster, every member is probed (the ones down are passed by from then on) and the
    /// request is sent once more. So one dead member does not fail the connector's health
    /// check.
    pub(crate) async fn status(&self, client: &mut Client) -> Result<(), etcd_client::Error> {
        match client.status().await {
            Ok(_) => Ok(()),
            Err(e) if self.is_cluster() && is_transport(&e) => {
                if self.check_now().await {
                    client.status().await.map(|_| ())
                } else {
                    Err(e)
                }
            }
            Err(e) => Err(e),
        }
    }
}

/// An error on the way to a member (refused, reset, timed out), not an answer from one.
fn is_transport(e: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    match e {
        E::TransportError(_) | E::IoError(_) => true,
        E::GRpcStatus(s) => {
            matches!(
                s.code(),
                tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::DeadlineExceeded
            ) || (s.code() == tonic::Code::Unknown && s.message().contains("transport error"))
        }
        _ => false,
    }
}

/// How long a request to a member found down may wait for its answer before it is given
/// up: long enough that a member merely slow to answer one probe (a loaded machine) costs
/// no request, short against the default `command_timeout` (5 s) a frozen member would
/// otherwise hold every caller that reached it.
pub(crate) const STALLED: Duration = Duration::from_secs(1);

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
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use etcd_client::ConnectOptions;
    use tokio::time::Instant;

    use super::{MISSES, Members, STALLED, up_after};

    /// A member that is up is passed by only after `MISSES` missed probes in a row; one
    /// that is down comes back with its first passed probe.
    #[test]
    fn a_member_up_is_passed_by_after_misses_in_a_row_and_one_down_back_at_once() {
        assert!(up_after(true, 0, false), "back at once");
        assert!(up_after(true, 0, true));
        assert!(
            up_after(false, MISSES - 1, true),
            "one slow probe costs nothing"
        );
        assert!(!up_after(false, MISSES, true));
        assert!(!up_after(false, 1, false), "down stays down");
        assert!(!up_after(false, u8::MAX, true));
    }

    fn three() -> Arc<Members> {
        Arc::new(Members::new(
            "etcd".into(),
            (1..=3).map(|i| format!("http://127.0.0.1:{i}")).collect(),
            Duration::from_millis(250),
            ConnectOptions::new(),
        ))
    }

    /// When a request sent at `sent` to member 0 is given up, if it is within `limit`.
    async fn given_up(members: &Members, sent: Instant, limit: Duration) -> Option<Duration> {
        tokio::time::timeout(limit, members.stalled(0, sent))
            .await
            .ok()
            .map(|()| sent.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_to_a_member_that_answers_is_never_given_up() {
        let members = three();
        assert_eq!(
            given_up(&members, Instant::now(), Duration::from_secs(60)).await,
            None
        );
        // Another member going down changes nothing for it.
        let m = members.clone();
        tokio::spawn(async move { m.set(1, false) });
        assert_eq!(
            given_up(&members, Instant::now(), Duration::from_secs(60)).await,
            None
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_to_a_member_found_down_is_given_up_once_it_waited_a_second() {
        /// How long a request waited before it was given up, its member found down
        /// `after` it was sent.
        async fn waited_when_down_after(after: Duration) -> Option<Duration> {
            let members = three();
            let m = members.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                m.set(0, false);
            });
            given_up(&members, Instant::now(), Duration::from_secs(60)).await
        }

        // Found down soon after it was sent: given up when it has waited `STALLED`.
        let waited = waited_when_down_after(Duration::from_millis(300)).await;
        assert_eq!(waited, Some(STALLED));

        // Found down later: given up then.
        let waited = waited_when_down_after(Duration::from_secs(3)).await;
        assert_eq!(waited, Some(Duration::from_secs(3)));

        // Down, then back before the request waited a second: not given up.
        let members = three();
        let m = members.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            m.set(0, false);
            tokio::time::sleep(Duration::from_millis(200)).await;
            m.set(0, true);
        });
        assert_eq!(
            given_up(&members, Instant::now(), Duration::from_secs(60)).await,
            None
        );
    }
}
