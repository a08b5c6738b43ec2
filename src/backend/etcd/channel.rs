//! The channel a connector's etcd clients send on: tower's p2c balancer (what tonic's own
//! balanced channel is) over one lazy tonic channel per member, each behind a gate.
//!
//! A member's channel that fails at the transport level (connection refused, reset,
//! closed; a timeout is not such a failure) marks that member down in [`Members`] at
//! once, and its gate closes: the balancer stops choosing it from the very next request,
//! instead of sending it requests that fail fast, again and again, until a periodic
//! check notices. Only the requests already in flight to it fail. The member monitor
//! reopens the gate once the member answers again. While no member answers, every gate
//! stays open: the connector is down, and each endpoint stays in play for when one
//! returns.
//!
//! A member can also stop answering without closing anything (frozen, or too overloaded
//! to answer its probes): its connections stay open and it holds what it was sent until
//! `command_timeout`. Once the member monitor finds it down, a request to it that has
//! waited [`STALLED`](super::members::STALLED) is given up with `Unavailable`, saying it
//! may have been applied, and the caller's next try goes to another member.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use etcd_client::{BalancedChannelBuilder, Channel};
use http::Uri;
use tonic::transport::Endpoint;
use tonic::transport::channel::Change;
use tower::discover::Change as Discovered;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Service};

use super::members::{Members, Stall};

type Request = http::Request<tonic::body::Body>;
/// Where etcd-client sends the members it adds and removes.
type Updater = tokio::sync::mpsc::Sender<Change<Uri, Endpoint>>;
type Response = http::Response<tonic::body::Body>;

/// Builds the gated, balanced channel of one client.
pub(super) struct Gated {
    pub(super) members: Arc<Members>,
}

impl BalancedChannelBuilder for Gated {
    type Error = tonic::transport::Error;

    fn balanced_channel(self, buffer_size: usize) -> Result<(Channel, Updater), Self::Error> {
        let (tx, rx) = tokio::sync::mpsc::channel(buffer_size);
        let discover = Discover {
            changes: rx,
            members: self.members,
        };
        let balance = tower::balance::p2c::Balance::new(discover);
        let buffered = tower::buffer::Buffer::new(balance, 1024);
        Ok((Channel::Custom(BoxCloneSyncService::new(buffered)), tx))
    }
}

/// The members etcd-client adds and removes, each as a [`Gate`] over its own channel.
struct Discover {
    changes: tokio::sync::mpsc::Receiver<Change<Uri, Endpoint>>,
    members: Arc<Members>,
}

impl futures_util::Stream for Discover {
    type Item = Result<Discovered<Uri, Gate>, BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.changes.poll_recv(cx) {
            // The client keeps the sender while it lives; once it is gone, no more changes
            // come, and the members in play stay.
            Poll::Pending | Poll::Ready(None) => Poll::Pending,
            Poll::Ready(Some(Change::Insert(uri, endpoint))) => {
                let gate = Gate {
                    member: self.members.index_of(&uri),
                    channel: endpoint.connect_lazy(),
                    members: self.members.clone(),
                };
                Poll::Ready(Some(Ok(Discovered::Insert(uri, gate))))
            }
            Poll::Ready(Some(Change::Remove(uri))) => {
                Poll::Ready(Some(Ok(Discovered::Remove(uri))))
            }
        }
    }
}

/// One member's channel: not ready while the member is known down (and another is up),
/// so the balancer passes it by; a transport failure on it marks the member down.
struct Gate {
    member: Option<usize>,
    channel: tonic::transport::Channel,
    members: Arc<Members>,
}

impl Service<Request> for Gate {
    type Response = Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if let Some(i) = self.member
            && !self.members.admits(i, cx.waker())
        {
            return Poll::Pending;
        }
        self.channel.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let sent = self.channel.call(request);
        let (members, member) = (self.members.clone(), self.member);
        let (at, term) = (tokio::time::Instant::now(), self.members.term());
        Box::pin(async move {
            // A single member is never marked down: no timer to race against.
            let response = match member.filter(|_| members.is_cluster()) {
                Some(i) => tokio::select! {
                    biased;
                    r = sent => r.map_err(BoxError::from),
                    why = members.stalled(i, at, term) => return Err(stalled(members.endpoint(i), why)),
                },
                None => sent.await.map_err(BoxError::from),
            };
            if let (Ok(r), Some(i)) = (&response, member)
                && applying_backlog(r)
            {
                members.behind(i);
            }
            if let Err(e) = &response {
                match member {
                    Some(i) if is_member_lost(&**e) => members.lost(i, &**e),
                    // Out of time: says nothing of the member it went through, but a
                    // frozen server closes nothing, so the health engine checks at once.
                    _ => members.losses().connection_lost(),
                }
            }
            response
        })
    }
}

impl tower::load::Load for Gate {
    type Metric = u8;

    /// Every open member weighs the same (as in tonic's own balanced channel).
    fn load(&self) -> u8 {
        0
    }
}

/// The error of a request given up on a member that stopped answering, or across the
/// election of a new leader: `Unavailable`, as a lost connection is, and saying the
/// request may have been applied (the member may still act on it when it wakes; a write
/// may have been committed before the old leader went).
fn stalled(endpoint: &str, why: Stall) -> BoxError {
    let after = humantime::format_duration(super::members::STALLED);
    Box::new(tonic::Status::unavailable(match why {
        Stall::Down => format!(
            "etcd member {endpoint} stopped answering and the request was given up after \
             {after}; it may have been applied"
        ),
        Stall::NoLeader => format!(
            "etcd member {endpoint} has no leader (it is out of touch with a majority of \
             the cluster) and the request was given up after {after}; it may have been \
             applied"
        ),
        Stall::Elected => format!(
            "a new etcd leader was elected while the request waited on member {endpoint}, \
             and it was given up after {after}; it may have been applied"
        ),
    }))
}

/// True for etcd's refusal of a request by a member too far behind in applying what was
/// committed (`ErrTooManyRequests`, sent as a trailers-only reply, so in the headers): a
/// member that woke from a freeze refuses everything for a while.
fn applying_backlog(response: &Response) -> bool {
    const REFUSAL: &[&[u8]] = &[b"too many requests", b"too%20many%20requests"];
    response.headers().get("grpc-message").is_some_and(|m| {
        let m = m.as_bytes();
        REFUSAL.iter().any(|r| m.windows(r.len()).any(|w| w == *r))
    })
}

/// A transport failure that says the member is gone (refused, reset, closed), not a
/// request that ran out of time (a slow proposal says nothing about the member it went
/// through).
fn is_member_lost(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<tonic::TimeoutExpired>() || e.is::<tower::timeout::error::Elapsed>() {
            return false;
        }
        next = e.source();
    }
    true
}

#[cfg(test)]
mod tests {
    use super::applying_backlog;

    fn reply(message: Option<&'static str>) -> super::Response {
        let mut r = http::Response::new(tonic::body::Body::empty());
        if let Some(m) = message {
            r.headers_mut()
                .insert("grpc-message", http::HeaderValue::from_static(m));
        }
        r
    }

    /// etcd's refusal by a member behind in applying is told apart, as sent (percent
    /// encoded) or not; other replies are not.
    #[test]
    fn a_refusal_for_an_apply_backlog_is_recognised() {
        assert!(applying_backlog(&reply(Some(
            "etcdserver:%20too%20many%20requests"
        ))));
        assert!(applying_backlog(&reply(Some(
            "etcdserver: too many requests"
        ))));
        assert!(!applying_backlog(&reply(Some(
            "etcdserver:%20request%20timed%20out"
        ))));
        assert!(!applying_backlog(&reply(None)));
    }
}
