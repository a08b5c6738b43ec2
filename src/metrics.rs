//! Metrics (feature `metrics`) on the [`metrics`](https://docs.rs/metrics) facade.
//!
//! Pool metrics follow the OpenTelemetry database-client conventions, labelled
//! `db.client.connection.pool.name` (the connector) and `db.system.name` (its kind); Prometheus renders the
//! dots as underscores (`db_client_connection_count`):
//!
//! | name | type | what |
//! |---|---|---|
//! | `db.client.connection.count` | gauge | connections, by `db.client.connection.state`: `idle`, `used` |
//! | `db.client.connection.max` | gauge | pool size |
//! | `db.client.connection.idle.min` | gauge | connections kept open even when idle |
//! | `db.client.connection.pending_requests` | gauge | callers waiting for a connection |
//! | `db.client.connection.timeouts` | counter | checkouts that timed out |
//! | `db.client.connection.create_time` | histogram | seconds to open a connection |
//! | `db.client.connection.wait_time` | histogram | seconds a checkout took |
//! | `db.client.connection.use_time` | histogram | seconds a connection was checked out |
//!
//! The histograms are recorded as things happen, on the recorder installed when the
//! connector was registered. The gauges, and connhub's own metrics below (labelled
//! `connector` and `kind`), are recorded after each health check, on every state change,
//! and by [`Manager::record_metrics`](crate::Manager::record_metrics) (call it before a
//! scrape for up-to-the-moment values). Install any recorder, such as
//! metrics-exporter-prometheus.
//!
//! | name | type | what |
//! |---|---|---|
//! | `connhub.up` | gauge | 1 when healthy, else 0 |
//! | `connhub.state` | gauge | 0 connecting, 1 healthy, 2 reconnecting, 3 failed, 4 closed |
//! | `connhub.reconnect_attempts` | gauge | attempts since last healthy |
//! | `connhub.health_check.duration` | gauge | seconds the last health check took |
//! | `connhub.checkouts` | counter | checkouts served |
//! | `connhub.checkouts.waited` | counter | checkouts that waited for a connection |
//! | `connhub.connections.created` | counter | connections opened |
//! | `connhub.connections.closed` | counter | closed, by `reason`: `broken`, `idle`, `lifetime` |
//! | `connhub.streams` | gauge | long-lived streams open, by `stream`: `lease`, `watch`, `subscription` |
//! | `connhub.connections.leaked` | counter | checkouts held past `leak_detection_threshold` (recorded as it happens) |
//! | `connhub.connections.limit` | gauge | connections the pool may hold now: its size, or fewer while the server refuses more |

use std::time::Duration;

use metrics::{Counter, Histogram, counter, gauge, histogram};

use crate::status::{State, Status};

/// A pool's event metrics, registered once when the connector is built: recording one
/// is a handle call, with no label to format on the checkout path.
#[derive(Debug, Clone)]
pub(crate) struct PoolMeters {
    create_time: Histogram,
    wait_time: Histogram,
    use_time: Histogram,
    timeouts: Counter,
}

impl PoolMeters {
    pub(crate) fn new(name: &str, kind: &str) -> Self {
        let labels = otel_labels(name, kind);
        PoolMeters {
            create_time: histogram!("db.client.connection.create_time", &labels),
            wait_time: histogram!("db.client.connection.wait_time", &labels),
            use_time: histogram!("db.client.connection.use_time", &labels),
            timeouts: counter!("db.client.connection.timeouts", &labels),
        }
    }

    pub(crate) fn created(&self, took: Duration) {
        self.create_time.record(took.as_secs_f64());
    }

    pub(crate) fn waited(&self, took: Duration) {
        self.wait_time.record(took.as_secs_f64());
    }

    /// Where a checkout records how long it was held (one handle, cloned per checkout).
    pub(crate) fn use_time(&self) -> &Histogram {
        &self.use_time
    }

    pub(crate) fn timed_out(&self) {
        self.timeouts.increment(1);
    }
}

fn otel_labels(name: &str, kind: &str) -> [(&'static str, String); 2] {
    [
        ("db.client.connection.pool.name", name.to_owned()),
        ("db.system.name", kind.to_owned()),
    ]
}

/// Records one connector's status.
pub(crate) fn record(s: &Status) {
    let otel = otel_labels(&s.name, s.kind.as_str());
    let p = &s.pool;
    for (state, n) in [("idle", p.idle), ("used", p.in_use)] {
        let mut l = otel.to_vec();
        l.push(("db.client.connection.state", state.to_owned()));
        gauge!("db.client.connection.count", &l).set(f64::from(n));
    }
    gauge!("db.client.connection.max", &otel).set(f64::from(p.max_size));
    gauge!("db.client.connection.idle.min", &otel).set(f64::from(p.min_idle));
    gauge!("db.client.connection.pending_requests", &otel).set(f64::from(p.pending));
    let labels = [("connector", s.name.clone()), ("kind", s.kind.to_string())];
    gauge!("connhub.connections.limit", &labels).set(f64::from(p.limit.unwrap_or(p.max_size)));
    counter!("connhub.checkouts", &labels).absolute(p.gets);
    counter!("connhub.checkouts.waited", &labels).absolute(p.gets_waited);
    counter!("connhub.connections.created", &labels).absolute(p.connections_created);
    for (reason, n) in [
        ("broken", p.connections_closed_broken),
        ("idle", p.connections_closed_idle),
        ("lifetime", p.connections_closed_lifetime),
    ] {
        let mut l = labels.to_vec();
        l.push(("reason", reason.to_owned()));
        counter!("connhub.connections.closed", &l).absolute(n);
    }
    for (stream, n) in [
        ("lease", s.streams.leases),
        ("watch", s.streams.watches),
        ("subscription", s.streams.subscriptions),
    ] {
        let mut l = labels.to_vec();
        l.push(("stream", stream.to_owned()));
        gauge!("connhub.streams", &l).set(f64::from(n));
    }
    record_state(&s.name, &s.kind.to_string(), s.state);
    gauge!("connhub.reconnect_attempts", &labels).set(f64::from(s.reconnect_attempts));
    if let Some(latency) = s.last_check_latency {
        gauge!("connhub.health_check.duration", &labels).set(latency.as_secs_f64());
    }
}

/// Records a state change at once.
pub(crate) fn record_state(connector: &str, kind: &str, state: State) {
    let labels = [
        ("connector", connector.to_owned()),
        ("kind", kind.to_owned()),
    ];
    gauge!("connhub.state", &labels).set(f64::from(state.to_u8()));
    gauge!("connhub.up", &labels).set(if state == State::Healthy { 1.0 } else { 0.0 });
}
