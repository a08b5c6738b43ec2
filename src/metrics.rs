//! Metrics (feature `metrics`) on the [`metrics`](https://docs.rs/metrics) facade: pool
//! counters, state, reconnects and health-check latency per connector, labelled
//! `connector` and `kind`.
//!
//! Every connector records its own after each health check and on every state change;
//! [`Manager::record_metrics`](crate::Manager::record_metrics) records all of them now (call it before a scrape for
//! up-to-the-moment pool counters). Install any recorder, such as
//! metrics-exporter-prometheus.
//!
//! | name | type | what |
//! |---|---|---|
//! | `connhub_connections` | gauge | open connections |
//! | `connhub_connections_idle` | gauge | idle connections |
//! | `connhub_connections_in_use` | gauge | checked-out connections |
//! | `connhub_pool_max_size` | gauge | pool size |
//! | `connhub_checkouts_total` | counter | checkouts served |
//! | `connhub_checkouts_waited_total` | counter | checkouts that waited for a connection |
//! | `connhub_checkout_wait_microseconds_total` | counter | time spent waiting |
//! | `connhub_checkout_timeouts_total` | counter | checkouts that timed out |
//! | `connhub_connections_created_total` | counter | connections opened |
//! | `connhub_connections_closed_total` | counter | closed, by `reason`: `broken`, `idle`, `lifetime` |
//! | `connhub_state` | gauge | 0 connecting, 1 healthy, 2 reconnecting, 3 failed, 4 closed |
//! | `connhub_up` | gauge | 1 when healthy, else 0 |
//! | `connhub_reconnect_attempts` | gauge | attempts since last healthy |
//! | `connhub_health_check_seconds` | gauge | duration of the last check |
//! | `connhub_streams` | gauge | long-lived streams open, by `stream`: `lease`, `watch`, `subscription` |

use metrics::{counter, gauge};

use crate::status::{State, Status};

/// Records one connector's status.
pub(crate) fn record(s: &Status) {
    let labels = [("connector", s.name.clone()), ("kind", s.kind.to_string())];
    let p = &s.pool;
    gauge!("connhub_connections", &labels).set(f64::from(p.connections));
    gauge!("connhub_connections_idle", &labels).set(f64::from(p.idle));
    gauge!("connhub_connections_in_use", &labels).set(f64::from(p.in_use));
    gauge!("connhub_pool_max_size", &labels).set(f64::from(p.max_size));
    counter!("connhub_checkouts_total", &labels).absolute(p.gets);
    counter!("connhub_checkouts_waited_total", &labels).absolute(p.gets_waited);
    let waited = u64::try_from(p.wait_time.as_micros()).unwrap_or(u64::MAX);
    counter!("connhub_checkout_wait_microseconds_total", &labels).absolute(waited);
    counter!("connhub_checkout_timeouts_total", &labels).absolute(p.gets_timed_out);
    counter!("connhub_connections_created_total", &labels).absolute(p.connections_created);
    for (reason, n) in [
        ("broken", p.connections_closed_broken),
        ("idle", p.connections_closed_idle),
        ("lifetime", p.connections_closed_lifetime),
    ] {
        let mut l = labels.to_vec();
        l.push(("reason", reason.to_owned()));
        counter!("connhub_connections_closed_total", &l).absolute(n);
    }
    for (stream, n) in [
        ("lease", s.streams.leases),
        ("watch", s.streams.watches),
        ("subscription", s.streams.subscriptions),
    ] {
        let mut l = labels.to_vec();
        l.push(("stream", stream.to_owned()));
        gauge!("connhub_streams", &l).set(f64::from(n));
    }
    record_state(&s.name, &s.kind.to_string(), s.state);
    gauge!("connhub_reconnect_attempts", &labels).set(f64::from(s.reconnect_attempts));
    if let Some(latency) = s.last_check_latency {
        gauge!("connhub_health_check_seconds", &labels).set(latency.as_secs_f64());
    }
}

/// Records a state change at once.
pub(crate) fn record_state(connector: &str, kind: &str, state: State) {
    let labels = [
        ("connector", connector.to_owned()),
        ("kind", kind.to_owned()),
    ];
    gauge!("connhub_state", &labels).set(f64::from(state.to_u8()));
    gauge!("connhub_up", &labels).set(if state == State::Healthy { 1.0 } else { 0.0 });
}
