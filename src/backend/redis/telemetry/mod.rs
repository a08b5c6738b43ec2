//! Each command sent on the pool itself, under OpenTelemetry's database-client conventions
//! (semantic conventions 1.33+): a `tracing` span, and with the `metrics` feature the
//! `db.client.operation.duration` histogram, in seconds.
//!
//! Span and histogram carry `db.system.name = "redis"`, `db.operation.name` (`GET`;
//! `PIPELINE` or `MULTI` for a pipeline), `db.namespace` (the database index),
//! `server.address` and `server.port` (a single server's; a cluster routes each command
//! itself), `db.operation.batch.size` for a pipeline, and on failure `error.type` and
//! `db.response.status_code` (the Redis error prefix, such as `WRONGTYPE`; a pipeline
//! fails with the first error reply among its commands'). The span's
//! `otel.name` is the operation, which `tracing-opentelemetry` takes as the span's name.
//! Never an argument, a key or a password. With no subscriber interested and no
//! recorder, a command pays for one level check and, with `metrics`, two clock reads and a
//! lookup of its histogram handle. The clock is `quanta`'s (the one `metrics-util` times
//! with): where the CPU's cycle counter is steady, a read of it, at about half the cost of
//! `std::time::Instant::now()` (22 against 41 ns on a 2-core cloud VM); only the
//! difference of the two reads is scaled to nanoseconds.

use std::sync::Arc;

use tracing::field::Empty;

/// What every span and sample of one connector carries.
#[derive(Debug)]
pub(super) struct Telemetry {
    /// The connector's name.
    pool: Arc<str>,
    /// `db.namespace`: the database index.
    db: String,
    /// `server.address` and `server.port`, for a single server.
    server: Option<(String, u16)>,
    #[cfg(feature = "metrics")]
    histograms: meters::Histograms,
    /// What durations are read on.
    #[cfg(feature = "metrics")]
    clock: quanta::Clock,
}

/// The operation a span and a sample are named by.
pub(super) enum Op<'a> {
    /// One command, by its name as sent.
    Command(&'a [u8]),
    /// A pipeline of this many commands; `atomic` for `MULTI` / `EXEC`.
    Pipeline { len: usize, atomic: bool },
}

impl Op<'_> {
    /// `db.operation.name`, as sent.
    fn bytes(&self) -> &[u8] {
        match self {
            Op::Command(name) => name,
            Op::Pipeline { atomic: true, .. } => b"MULTI",
            Op::Pipeline { atomic: false, .. } => b"PIPELINE",
        }
    }

    /// `db.operation.name`, as text.
    fn name(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.bytes())
    }

    fn batch(&self) -> Option<usize> {
        match self {
            Op::Pipeline { len, .. } if *len > 1 => Some(*len),
            _ => None,
        }
    }
}

/// `error.type`: the Redis error prefix, or what kind of failure it was.
fn error_type(e: &redis::RedisError) -> &str {
    if let Some(code) = e.code() {
        return code;
    }
    if e.is_timeout() {
        "timeout"
    } else if e.is_connection_dropped() || e.is_io_error() {
        "connection_lost"
    } else {
        "client"
    }
}

/// How a call failed: `error.type`, and the Redis error prefix when the server said it.
pub(super) struct Failure<'a> {
    kind: &'a str,
    code: Option<&'a str>,
}

impl<'a> Failure<'a> {
    /// A call that failed with `e`.
    pub(super) fn error(e: &'a redis::RedisError) -> Self {
        Failure {
            kind: error_type(e),
            code: e.code(),
        }
    }

    /// A command the server answered with an error reply.
    pub(super) fn server(e: &'a redis::ServerError) -> Self {
        Failure {
            kind: e.code(),
            code: Some(e.code()),
        }
    }
}

/// A call's outcome, as telemetry reads it.
pub(super) trait Outcome {
    /// How it failed, if it did: an error, or (for one command) the server's error reply.
    fn failure(&self) -> Option<Failure<'_>>;
}

impl Telemetry {
    /// For the connector `pool` on database `db`; `server` is the single server's
    /// `host:port`, `None` for a cluster or Sentinel.
    pub(super) fn new(pool: Arc<str>, db: u32, server: Option<&str>) -> Self {
        let server = server.and_then(|s| {
            let (host, port) = s.rsplit_once(':')?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            Some((host.to_owned(), port.parse().ok()?))
        });
        Telemetry {
            #[cfg(feature = "metrics")]
            histograms: meters::Histograms::new(&pool, db, server.as_ref()),
            // Calibrated against the system clock on the process's first (under a
            // millisecond): here, as the connector is built, not on its first command.
            #[cfg(feature = "metrics")]
            clock: quanta::Clock::new(),
            pool,
            db: db.to_string(),
            server,
        }
    }

    /// True when a subscriber may take the operations' spans (info level is on).
    #[inline]
    pub(super) fn spans() -> bool {
        tracing::level_enabled!(tracing::Level::INFO)
    }

    /// Starts an operation's clock with no span, for a caller that has found
    /// [`spans`](Telemetry::spans) off; it ends with [`finish`](Telemetry::finish).
    #[inline]
    pub(super) fn unspanned(&self, op: &Op<'_>) -> Started {
        #[cfg(not(feature = "metrics"))]
        let _ = op;
        Started {
            span: None,
            #[cfg(feature = "metrics")]
            op: meters::packed(op.bytes()),
            #[cfg(feature = "metrics")]
            at: self.clock.raw(),
        }
    }

    /// Opens the operation's span and starts its clock; the call then runs inside
    /// [`Started::span`] and ends with [`finish`](Telemetry::finish). (Not an async
    /// wrapper taking the call: an async fn keeps its argument apart from what it makes
    /// of it, and a command's future would be twice its size.)
    pub(super) fn start(&self, op: &Op<'_>) -> Started {
        // No subscriber takes info spans: no span at all, not even the disabled one the
        // macro would build (with `tracing`'s `log` feature on and no subscriber set, that
        // one is formatted for the `log` crate on every call).
        if !Self::spans() {
            return self.unspanned(op);
        }
        let span = tracing::info_span!(
            "redis.command",
            otel.name = Empty,
            otel.kind = "client",
            db.system.name = "redis",
            db.operation.name = Empty,
            db.namespace = Empty,
            db.client.connection.pool.name = Empty,
            server.address = Empty,
            server.port = Empty,
            db.operation.batch.size = op.batch(),
            error.type = Empty,
            db.response.status_code = Empty,
        );
        let span = (!span.is_disabled()).then_some(span);
        if let Some(span) = &span {
            let name = op.name();
            span.record("otel.name", &*name);
            span.record("db.operation.name", &*name);
            span.record("db.namespace", self.db.as_str());
            span.record("db.client.connection.pool.name", &*self.pool);
            if let Some((host, port)) = &self.server {
                span.record("server.address", host.as_str());
                span.record("server.port", port);
            }
        }
        Started {
            span,
            #[cfg(feature = "metrics")]
            op: meters::packed(op.bytes()),
            #[cfg(feature = "metrics")]
            at: self.clock.raw(),
        }
    }

    /// Records how the operation ended: on its span, and in its histogram.
    pub(super) fn finish<R: Outcome>(&self, started: Started, op: &Op<'_>, r: &R) {
        // Nothing to record on: not even a look at the outcome.
        #[cfg(not(feature = "metrics"))]
        if started.span.is_none() {
            return;
        }
        let failure = r.failure();
        if let (Some(span), Some(f)) = (&started.span, &failure) {
            span.record("error.type", f.kind);
            if let Some(code) = f.code {
                span.record("db.response.status_code", code);
            }
        }
        #[cfg(feature = "metrics")]
        {
            let nanos = self.clock.delta_as_nanos(started.at, self.clock.raw());
            self.histograms
                .observe_packed(op, started.op, failure.as_ref(), nanos as f64 * 1e-9);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = op;
    }
}

/// An operation under way: its span, and when it started.
pub(super) struct Started {
    /// `None` when no subscriber takes it.
    span: Option<tracing::Span>,
    /// The operation's name, [packed](meters::packed) as the histogram handles are
    /// looked up by.
    #[cfg(feature = "metrics")]
    op: Option<u128>,
    /// The clock's raw reading at the start.
    #[cfg(feature = "metrics")]
    at: u64,
}

impl Started {
    /// The operation's span, when a subscriber takes it: the call runs inside it. `None`
    /// otherwise, so the call runs as it is, with no wrapper to enter and leave on every
    /// poll.
    pub(super) fn span(&self) -> Option<&tracing::Span> {
        self.span.as_ref()
    }
}

#[cfg(feature = "metrics")]
mod meters;
