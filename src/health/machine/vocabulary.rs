//! What the machine takes and gives: the [`Rules`] it decides by, the [`Input`]s it is
//! fed, and the [`Actions`] each step asks the engine to carry out.

use std::time::Duration;

use crate::config::ConnectorConfig;
use crate::status::State;

/// The settings the machine decides by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rules {
    pub health_check_interval: Duration,
    pub auto_reconnect: bool,
    pub reconnect_interval: Duration,
    pub reconnect_backoff_max: Duration,
    pub max_reconnect_attempts: u32,
    /// The pool's size: a limit that grows back to it is lifted.
    pub pool_size: u32,
}

impl Rules {
    /// The rules of a connector with `config` and a pool of `pool_size`.
    pub(crate) fn new(c: &ConnectorConfig, pool_size: u32) -> Self {
        Rules {
            health_check_interval: c.health_check_interval,
            auto_reconnect: c.auto_reconnect,
            reconnect_interval: c.reconnect_interval,
            reconnect_backoff_max: c.reconnect_backoff_max,
            max_reconnect_attempts: c.max_reconnect_attempts,
            pool_size: pool_size.max(1),
        }
    }
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Input {
    /// The timer the machine asked for ([`Machine::next_wake`](super::Machine::next_wake)) is due.
    Tick,
    /// A caller was refused while the connector is down.
    Demand,
    /// A trial (probe) answered.
    ProbeOk,
    /// A trial failed. A [`Probe::Check`] fails on a freshly opened connection (one that
    /// only found an idle connection dead tries a fresh one before it reports): the server
    /// is down, unless the failure is a refusal while the pool's connections are there (or
    /// on the way), which makes a limit as [`Input::ConnectFailed`] does. A
    /// [`Probe::Pooled`] check fails as an outage when the pool's own connections do not
    /// answer; when none was left, it reports how the fresh one it tried did.
    ProbeFailed(Failure),
    /// A fresh connection opened outside a check failed: by the pool, for a shared
    /// handle, or by a [`Probe::Grow`] trial.
    ConnectFailed(Failure),
    /// A fresh connection was made (by the pool or a [`Probe::Grow`] trial); the pool
    /// holds this many now. At a limit, the server took one more.
    Connected(u32),
    /// A [`Probe::Grow`] trial ended with its connection pooled (reported as
    /// [`Input::Connected`] when it was made).
    Grew,
    /// A connection reported that its server closed it: check now.
    Lost,
    /// Close the connector.
    Close,
}

/// What a failed fresh connection says, with what the pool still has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Failure {
    /// An outage whatever else works: the server is gone (connection refused, host
    /// unreachable) or will not have this client (credentials, TLS), or a connection it
    /// had taken (one of the pool's own, in a [`Probe::Pooled`] check) did not answer.
    pub outage: bool,
    /// Connections the pool holds now (not yet known broken).
    pub live: u32,
    /// Other connections being opened now. Right after the pool lost every connection at
    /// once, their replacements are on the way: a refusal then is the server's cap,
    /// filled by them, unless every one of them fails too.
    pub opening: u32,
}

/// The kind of trial the engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    /// A round trip on an idle pooled connection, or on a fresh one when none is idle or
    /// the idle one fails: the periodic check, and the trial while down.
    Check,
    /// A round trip on a pooled connection only, waiting for one if all are in use: the
    /// check while the pool is limited, where a fresh connection would be refused.
    Pooled,
    /// One fresh connection, pooled if it works: the pool tries to grow past its limit.
    Grow,
}

/// What the engine must do after a step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Actions {
    /// The state changed from this one (broadcast an event, record metrics).
    pub changed_from: Option<State>,
    /// Retire every connection made so far (the connector went down or closed).
    pub retire: bool,
    /// Start this trial now.
    pub probe: Option<Probe>,
    /// The pool's size limit changed: how many connections it may hold and hand out now.
    pub resize: Option<Resize>,
}

/// A change of the pool's size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resize {
    /// The server refused a connection while the pool's own work: the pool is limited to
    /// this many.
    Limited(u32),
    /// Still limited, now to this many (one more was accepted, or one fewer works).
    Changed(u32),
    /// Back to the pool's size (it grew back, or the connector went down or closed).
    Lifted,
}
