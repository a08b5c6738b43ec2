//! One probe of one member: a status request, and what its answer says of the member.

use std::time::Duration;

use etcd_client::{Client, ConnectOptions};

/// Committed entries a member may have left to apply and still be sent requests. etcd
/// refuses requests on a member more than 5 000 behind (`ErrTooManyRequests`); a member
/// that woke from a freeze under load is that far behind within moments (its own
/// committed index catches up first), so it is let back only once it has applied all
/// but this many of the newest entry any member knows committed: half the refusal gap,
/// so a follower merely slowed by a loaded machine is not passed by.
const LAGGING: u64 = 2_500;

/// True when a member that applied up to `applied` is close enough to `newest`, the
/// newest entry committed.
fn caught_up(newest: u64, applied: u64) -> bool {
    newest.saturating_sub(applied) < LAGGING
}

/// How a member answered its probe.
#[derive(Debug, Clone, Copy)]
pub(super) enum Answer {
    /// Not in time, or not at all.
    Silent,
    /// Its status: the last entry it knows committed, the last it applied, whether it
    /// follows a leader (one that lost touch with a majority of the cluster does not),
    /// and the Raft term it is in (one more with every election).
    Status {
        committed: u64,
        applied: u64,
        leader: bool,
        term: u64,
    },
    /// Refused for want of credentials: it answers.
    Denied,
}

impl Answer {
    pub(super) fn committed(self) -> Option<u64> {
        match self {
            Answer::Status { committed, .. } => Some(committed),
            _ => None,
        }
    }

    /// The Raft term the member follows a leader in; `None` while it has none (during
    /// an election, a candidate's term has no leader yet).
    pub(super) fn led_term(self) -> Option<u64> {
        match self {
            Answer::Status {
                term, leader: true, ..
            } => Some(term),
            _ => None,
        }
    }

    /// True when a request may go to the member, `newest` being the newest entry any
    /// member knows committed: a member that woke from a freeze answers at once, but
    /// refuses every request ("too many requests") while it applies what it missed, so
    /// it is let back once its backlog is small. One with no leader can serve no write
    /// either (it holds it until it times out).
    pub(super) fn up(self, newest: u64) -> bool {
        match self {
            Answer::Silent => false,
            Answer::Denied => true,
            Answer::Status {
                applied, leader, ..
            } => leader && caught_up(newest, applied),
        }
    }

    /// True when the member answered at all.
    pub(super) fn answers(self) -> bool {
        !matches!(self, Answer::Silent)
    }

    /// True when the member answered that it has no leader.
    pub(super) fn leaderless(self) -> bool {
        matches!(self, Answer::Status { leader: false, .. })
    }
}

/// How the member answers a status request in time. Gives back the probe client for
/// next time.
pub(super) async fn probe(
    endpoint: &str,
    client: Option<Client>,
    options: &ConnectOptions,
    limit: Duration,
) -> (Answer, Option<Client>) {
    let client = match client {
        Some(c) => Some(c),
        None => Client::connect([endpoint], Some(options.clone()))
            .await
            .ok(),
    };
    let Some(mut client) = client else {
        return (Answer::Silent, None);
    };
    let answer = match tokio::time::timeout(limit, client.status()).await {
        Ok(Ok(status)) => Answer::Status {
            committed: status.raft_index(),
            applied: status.raft_applied_index(),
            leader: status.leader() != 0,
            term: status.raft_term(),
        },
        Ok(Err(etcd_client::Error::GRpcStatus(s)))
            if matches!(
                s.code(),
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
            ) =>
        {
            Answer::Denied
        }
        _ => Answer::Silent,
    };
    (answer, Some(client))
}

#[cfg(test)]
mod tests {
    use super::Answer;

    /// A member with no leader answers, but takes no requests; a silent one neither.
    #[test]
    fn a_member_without_a_leader_answers_but_is_not_up() {
        let status = |leader| Answer::Status {
            committed: 10,
            applied: 10,
            leader,
            term: 2,
        };
        assert!(status(true).up(10));
        assert!(!status(false).up(10));
        assert!(status(false).answers() && status(false).leaderless());
        assert!(!status(true).leaderless());
        // A candidate's term has no leader yet: no election is over until one has.
        assert_eq!(status(true).led_term(), Some(2));
        assert_eq!(status(false).led_term(), None);
        assert!(!Answer::Silent.answers());
        assert!(Answer::Denied.answers() && Answer::Denied.up(10));
    }

    /// A member is let back only with its apply backlog well under etcd's refusal gap.
    #[test]
    fn a_member_is_caught_up_with_a_small_backlog() {
        assert!(super::caught_up(10_000, 10_000));
        assert!(super::caught_up(10_000, 8_000));
        assert!(!super::caught_up(10_000, 4_000));
        assert!(
            super::caught_up(5, 9),
            "applied past committed is no backlog"
        );
    }
}
