//! The connector's health check through the members: a status request that routes
//! around a lost member, and fails while no member has a leader.

use std::time::Duration;

use etcd_client::Client;
use tokio::time::Instant;

use super::{Members, STALLED};

impl Members {
    /// A status request on `client`; if it fails on the way to a member and this is a
    /// cluster, every member is probed (the ones down are passed by from then on) and the
    /// request is sent once more. So one dead member does not fail the connector's health
    /// check. A member that answers without a leader fails it, after waiting up to
    /// [`STALLED`] for one to be elected (an election takes well under that): an
    /// ordinary election is no outage, a cluster that lost its quorum is.
    pub(crate) async fn status(&self, client: &mut Client) -> Result<(), etcd_client::Error> {
        let e = match led(client.status().await) {
            // No leader is `Unavailable`: on the way to a member, as far as routing goes.
            Err(e) if self.is_cluster() && is_transport(&e) => e,
            done => return done,
        };
        let until = Instant::now() + STALLED;
        loop {
            if self.check_now().await {
                return led(client.status().await);
            }
            if !is_no_leader(&e) || Instant::now() >= until {
                return Err(e);
            }
            tokio::time::sleep(ELECTION_POLL).await;
        }
    }
}

/// How often a health check that found no leader looks for one again.
const ELECTION_POLL: Duration = Duration::from_millis(100);

/// What a member said of no leader.
const NO_LEADER: &str = "the etcd member has no leader: the cluster lost its quorum";

/// A status answer as a health check's outcome: one without a leader is a failure.
fn led(
    status: Result<etcd_client::StatusResponse, etcd_client::Error>,
) -> Result<(), etcd_client::Error> {
    match status {
        Ok(s) if s.leader() == 0 => Err(etcd_client::Error::GRpcStatus(
            tonic::Status::unavailable(NO_LEADER),
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(e),
    }
}

fn is_no_leader(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.message() == NO_LEADER)
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
