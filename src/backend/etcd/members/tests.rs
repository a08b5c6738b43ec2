//! Which members requests go to, and when a request to one is given up.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::ConnectOptions;
use tokio::time::Instant;

use super::{MISSES, Members, STALLED, Stall, up_after};

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
    tokio::time::timeout(limit, members.stalled(0, sent, 0))
        .await
        .ok()
        .map(|_| sent.elapsed())
}

/// Why and after how long a request sent now in term `sent_in` is given up, when a
/// leader is elected in term `elected_in` after `after`.
async fn given_up_across(
    members: &Members,
    sent_in: u64,
    elected_in: u64,
    after: Duration,
) -> (Stall, Duration) {
    let sent = Instant::now();
    let elect = async {
        tokio::time::sleep(after).await;
        members.saw_term(elected_in);
        std::future::pending::<()>().await;
    };
    tokio::select! {
        why = members.stalled(0, sent, sent_in) => (why, sent.elapsed()),
        () = elect => unreachable!(),
    }
}

/// A request that waits on a member that answers is given up once a new leader was
/// elected since it was sent (a write forwarded to a leader that died is never answered
/// before `command_timeout`), a second after it was sent at the earliest; one sent under
/// the new leader, or before any term was known, is not.
#[tokio::test(start_paused = true)]
async fn a_request_waiting_across_an_election_is_given_up() {
    let members = three();
    members.saw_term(2);
    // Elected 0.3 s in: given up a second after it was sent.
    let short = given_up_across(&members, 2, 3, Duration::from_millis(300)).await;
    assert_eq!(short, (Stall::Elected, STALLED));
    // Elected while it waits past the second: given up then.
    let long = given_up_across(&members, 3, 4, Duration::from_secs(2)).await;
    assert_eq!(long, (Stall::Elected, Duration::from_secs(2)));
    // Sent under the current leader, or before any term was known: never.
    members.saw_term(4);
    for term in [4, 0] {
        let waiting = members.stalled(0, Instant::now(), term);
        assert!(
            tokio::time::timeout(Duration::from_secs(60), waiting)
                .await
                .is_err()
        );
    }
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

/// Requests go to the members that are healthy; while none is, to those that answer
/// (without a leader, they are given up a second in, not held until `command_timeout`);
/// while none answers either, to all of them.
#[tokio::test]
async fn requests_go_to_members_with_a_leader_then_to_those_that_answer() {
    let members = three();
    let routed = |m: &Members| (0..3).filter(|&i| m.routable(i)).collect::<Vec<_>>();
    assert_eq!(routed(&members), [0, 1, 2]);
    // A member that answers but is out of service (no leader, or catching up) is
    // passed by.
    members.set(0, false);
    assert_eq!(routed(&members), [1, 2]);
    // The majority goes silent: the member left answers, without a leader.
    let gone = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
    members.lost(1, &gone);
    members.lost(2, &gone);
    assert_eq!(routed(&members), [0]);
    // Nothing answers: every member stays in play for when one returns.
    members.lost(0, &gone);
    assert_eq!(routed(&members), [0, 1, 2]);
}
