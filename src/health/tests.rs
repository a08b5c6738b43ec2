//! The state machine, step by step, with no server and no clock but the one passed in.

use std::time::Duration;

use tokio::time::Instant;

use super::machine::{Input, Machine, Rules};
use crate::status::State;

fn rules() -> Rules {
    Rules {
        health_check_interval: Duration::from_secs(10),
        auto_reconnect: true,
        reconnect_interval: Duration::from_secs(1),
        reconnect_backoff_max: Duration::from_secs(30),
        max_reconnect_attempts: 0,
    }
}

const S: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

/// A machine that connected at `t0`.
fn healthy(r: Rules, t0: Instant) -> Machine {
    let mut m = Machine::new(r, 0.5, t0);
    assert!(m.step(Input::Tick, t0).probe);
    let a = m.step(Input::ProbeOk, t0);
    assert_eq!(a.changed_from, Some(State::Connecting));
    assert_eq!(m.state(), State::Healthy);
    m
}

/// A machine that went down at `t0` (its periodic check failed).
fn down(r: Rules, t0: Instant) -> Machine {
    let mut m = healthy(r, t0);
    let a = m.step(Input::ConnectFailed, t0);
    assert!(a.retire);
    assert_eq!(a.changed_from, Some(State::Healthy));
    m
}

#[tokio::test(start_paused = true)]
async fn connecting_probes_at_once_and_fails_to_reconnecting() {
    let t0 = Instant::now();
    let mut m = Machine::new(rules(), 0.5, t0);
    assert_eq!(m.state(), State::Connecting);
    assert_eq!(m.next_wake(), Some(t0));
    assert!(m.step(Input::Tick, t0).probe);
    assert!(m.is_probing());
    assert_eq!(m.next_wake(), None, "no timer while a trial is in flight");
    let a = m.step(Input::ProbeFailed, t0);
    assert_eq!(a.changed_from, Some(State::Connecting));
    assert!(a.retire);
    assert_eq!(m.state(), State::Reconnecting);
    assert_eq!(m.attempts(), 1);
}

#[tokio::test(start_paused = true)]
async fn healthy_checks_every_interval() {
    let t0 = Instant::now();
    let mut m = healthy(rules(), t0);
    assert_eq!(m.next_wake(), Some(t0 + 10 * S));
    assert!(!m.step(Input::Tick, t0 + 9 * S).probe, "not due yet");
    assert!(m.step(Input::Tick, t0 + 10 * S).probe);
    let a = m.step(Input::ProbeOk, t0 + 10 * S);
    assert_eq!(a.changed_from, None, "no event when nothing changed");
    assert_eq!(m.next_wake(), Some(t0 + 20 * S));
}

#[tokio::test(start_paused = true)]
async fn failed_check_while_healthy_goes_down_and_retires() {
    let t0 = Instant::now();
    let mut m = healthy(rules(), t0);
    assert!(m.step(Input::Tick, t0 + 10 * S).probe);
    let a = m.step(Input::ProbeFailed, t0 + 10 * S);
    assert!(a.retire);
    assert_eq!(a.changed_from, Some(State::Healthy));
    assert_eq!(m.state(), State::Reconnecting);
}

#[tokio::test(start_paused = true)]
async fn demand_is_ignored_while_up() {
    let t0 = Instant::now();
    let mut m = healthy(rules(), t0);
    assert!(!m.step(Input::Demand, t0 + 5 * S).probe);
    assert_eq!(m.demand_trial_at(t0), None);
}

#[tokio::test(start_paused = true)]
async fn half_open_one_trial_at_a_time_at_most_one_per_interval() {
    let t0 = Instant::now();
    let mut m = down(rules(), t0);
    // The failure that took it down counts as a trial: the next one waits an interval.
    assert!(!m.step(Input::Demand, t0 + 999 * MS).probe);
    assert_eq!(m.demand_trial_at(t0), Some(t0 + S));
    assert!(
        m.step(Input::Demand, t0 + S).probe,
        "first caller after the interval"
    );
    // Exactly one trial in flight: every other caller is still refused.
    for i in 0..100 {
        assert!(!m.step(Input::Demand, t0 + S + i * MS).probe);
    }
    assert_eq!(m.demand_trial_at(t0 + 2 * S), None);
    m.step(Input::ProbeFailed, t0 + S + 5 * MS);
    // Server still down: at most one trial per reconnect_interval however many ask.
    let mut trials = 0;
    let mut t = t0 + S + 5 * MS;
    while t < t0 + 11 * S {
        if m.step(Input::Demand, t).probe {
            trials += 1;
            m.step(Input::ProbeFailed, t);
        }
        t += 10 * MS;
    }
    assert_eq!(trials, 9, "one trial per second from 2s to 10s");
    assert_eq!(m.state(), State::Reconnecting);
    // Recovery is bounded by reconnect_interval, not by how long the outage lasted.
    assert!(m.step(Input::Demand, t + S).probe);
    let a = m.step(Input::ProbeOk, t + S);
    assert_eq!(a.changed_from, Some(State::Reconnecting));
    assert_eq!(m.state(), State::Healthy);
    assert_eq!(m.attempts(), 0);
}

#[tokio::test(start_paused = true)]
async fn timer_backoff_grows_and_is_capped_when_nobody_asks() {
    let t0 = Instant::now();
    let mut m = down(rules(), t0);
    let mut last = t0;
    let mut gaps = Vec::new();
    for _ in 0..10 {
        let at = m.next_wake().expect("timer while down");
        gaps.push(at - last);
        assert!(m.step(Input::Tick, at).probe);
        m.step(Input::ProbeFailed, at);
        last = at;
    }
    // 1s doubling (±20%), capped at 30s.
    assert!(
        gaps[0] >= Duration::from_millis(1000) && gaps[0] <= Duration::from_millis(1200),
        "{gaps:?}"
    );
    assert!(
        gaps[2] >= Duration::from_millis(3200) && gaps[2] <= Duration::from_millis(4800),
        "{gaps:?}"
    );
    assert!(gaps.iter().all(|g| *g <= 30 * S), "{gaps:?}");
    assert_eq!(gaps[9], 30 * S);
}

#[tokio::test(start_paused = true)]
async fn backoff_jitter_stays_within_bounds() {
    for jitter in [0.0, 0.25, 1.0] {
        let m = Machine::new(rules(), jitter, Instant::now());
        assert!(m.backoff(1) >= S && m.backoff(1) <= Duration::from_millis(1200));
        assert!(
            m.backoff(4) >= Duration::from_millis(6400)
                && m.backoff(4) <= Duration::from_millis(9600)
        );
        assert!((1..64).all(|n| m.backoff(n) <= 30 * S));
    }
}

#[tokio::test(start_paused = true)]
async fn gives_up_to_failed_after_max_attempts_and_still_recovers() {
    let t0 = Instant::now();
    let r = Rules {
        max_reconnect_attempts: 3,
        ..rules()
    };
    let mut m = down(r, t0);
    let mut t = t0;
    for _ in 0..2 {
        t += S;
        assert!(m.step(Input::Demand, t).probe);
        m.step(Input::ProbeFailed, t);
    }
    assert_eq!(m.state(), State::Failed);
    // Failed: probed every health_check_interval by the timer, on demand at most every
    // reconnect_interval.
    assert_eq!(m.next_wake(), Some(t + 10 * S));
    assert!(m.step(Input::Demand, t + S).probe);
    let a = m.step(Input::ProbeOk, t + S);
    assert_eq!(a.changed_from, Some(State::Failed));
    assert_eq!(m.state(), State::Healthy);
}

#[tokio::test(start_paused = true)]
async fn without_auto_reconnect_a_failure_is_failed() {
    let t0 = Instant::now();
    let r = Rules {
        auto_reconnect: false,
        ..rules()
    };
    let m = down(r, t0);
    assert_eq!(m.state(), State::Failed);
}

#[tokio::test(start_paused = true)]
async fn connect_failure_is_news_only_while_up() {
    let t0 = Instant::now();
    let mut m = down(rules(), t0);
    let a = m.step(Input::ConnectFailed, t0 + S);
    assert_eq!(a, Default::default(), "already down: nothing new");
    assert_eq!(m.attempts(), 1);
    // While a trial is in flight the trial reports for itself.
    let mut m = healthy(rules(), t0);
    assert!(m.step(Input::Tick, t0 + 10 * S).probe);
    assert_eq!(m.step(Input::ConnectFailed, t0 + 10 * S).changed_from, None);
    assert_eq!(m.state(), State::Healthy);
}

#[tokio::test(start_paused = true)]
async fn close_from_every_state_is_final() {
    let t0 = Instant::now();
    let mut probing = healthy(rules(), t0);
    assert!(probing.step(Input::Tick, t0 + 10 * S).probe);
    let failed = down(
        Rules {
            auto_reconnect: false,
            ..rules()
        },
        t0,
    );
    let machines = [
        Machine::new(rules(), 0.5, t0),
        healthy(rules(), t0),
        down(rules(), t0),
        failed,
        probing,
    ];
    for mut m in machines {
        let from = m.state();
        let a = m.step(Input::Close, t0);
        assert_eq!(a.changed_from, Some(from));
        assert!(a.retire);
        assert_eq!(m.state(), State::Closed);
        assert_eq!(m.next_wake(), None);
        for input in [
            Input::Tick,
            Input::Demand,
            Input::ProbeOk,
            Input::ProbeFailed,
            Input::ConnectFailed,
            Input::Close,
        ] {
            assert_eq!(m.step(input, t0 + S), Default::default(), "{input:?}");
            assert_eq!(m.state(), State::Closed);
        }
    }
}
