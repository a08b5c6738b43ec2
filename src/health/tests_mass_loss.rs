//! The state machine when the pool loses every connection at once at a server's
//! connection cap: the replacements on their way fill the cap, so a refusal then is the
//! cap, not an outage, unless every one of them fails too.

use tokio::time::Instant;

use super::machine::{Failure, Input, Probe, Resize};
use super::tests::{S, healthy, limited_at_four, rules};
use crate::status::State;

/// A fresh connection refused (hung up, full, no answer) while the pool holds `live`
/// connections and is opening `opening` others.
fn refused(live: u32, opening: u32) -> Failure {
    Failure {
        outage: false,
        live,
        opening,
    }
}

#[tokio::test(start_paused = true)]
async fn a_refusal_while_replacements_are_on_the_way_is_a_limit() {
    let t0 = Instant::now();
    let mut m = healthy(rules(), t0);
    // Every connection was lost; three replacements are being opened and one was refused.
    let a = m.step(Input::ConnectFailed(refused(0, 3)), t0 + S);
    assert_eq!(
        a.changed_from, None,
        "no outage while replacements are on the way"
    );
    assert_eq!(a.resize, Some(Resize::Limited(1)));
    // Two of them got in: the limit follows.
    m.step(Input::Connected(2), t0 + S);
    assert_eq!(m.state(), State::Healthy);
    assert_eq!(m.limit(), Some(2));
}

#[tokio::test(start_paused = true)]
async fn the_last_of_the_replacements_failing_is_the_outage() {
    let t0 = Instant::now();
    let mut m = healthy(rules(), t0);
    assert_eq!(
        m.step(Input::ConnectFailed(refused(0, 2)), t0).changed_from,
        None
    );
    assert_eq!(
        m.step(Input::ConnectFailed(refused(0, 1)), t0).changed_from,
        None
    );
    let a = m.step(Input::ConnectFailed(refused(0, 0)), t0);
    assert_eq!(a.changed_from, Some(State::Healthy));
    assert!(a.retire);
    assert_eq!(m.state(), State::Reconnecting);
}

#[tokio::test(start_paused = true)]
async fn a_server_that_is_gone_is_an_outage_whatever_is_on_the_way() {
    let t0 = Instant::now();
    let mut m = healthy(rules(), t0);
    let gone = Failure {
        outage: true,
        live: 0,
        opening: 8,
    };
    let a = m.step(Input::ConnectFailed(gone), t0);
    assert_eq!(a.changed_from, Some(State::Healthy));
}

#[tokio::test(start_paused = true)]
async fn a_pooled_check_that_found_none_left_and_was_refused_a_fresh_one_is_a_limit() {
    let t0 = Instant::now();
    let mut m = limited_at_four(t0);
    // Every pooled connection was lost at once: the check tried a fresh one, which the
    // cap refused while the pool's replacements were on their way.
    assert_eq!(m.step(Input::Lost, t0 + S).probe, Some(Probe::Pooled));
    let a = m.step(Input::ProbeFailed(refused(0, 4)), t0 + S);
    assert_eq!(a.changed_from, None);
    assert_eq!(m.state(), State::Healthy);
    assert_eq!(m.limit(), Some(1));
    // Nothing on the way and nothing left: down.
    assert_eq!(m.step(Input::Lost, t0 + 2 * S).probe, Some(Probe::Pooled));
    let a = m.step(Input::ProbeFailed(refused(0, 0)), t0 + 2 * S);
    assert_eq!(a.changed_from, Some(State::Healthy));
}
