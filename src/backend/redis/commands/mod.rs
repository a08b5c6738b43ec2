//! A [`RedisPool`] is itself a connection, as the redis crate's `ConnectionManager` is:
//! `Clone` and [`redis::aio::ConnectionLike`], so [`redis::AsyncCommands`],
//! `redis::cmd(..).query_async` and pipelines work on it directly.
//!
//! - Plain commands and pipelines (`atomic()` ones too) go over the connector's shared
//!   multiplexed connection, the fastest path (at a server's connection cap, which the
//!   pool's own connections fill, over one of those instead); a blocking command takes
//!   a pooled connection for that call; a command that changes a connection's state is
//!   refused (the table is in `route.rs` and the README).
//! - Fail-fast, health and reload apply exactly as for `get()`.
//! - **Retried only when safe** (`retry.rs`). A command whose connection was lost under
//!   it is sent again on a fresh connection when that cannot apply it twice. Retries are
//!   counted in [`Status::retried_commands`](crate::Status::retried_commands) and the
//!   `connhub.commands.retried` counter, and logged at debug level. A command that timed
//!   out is not sent again; unless it is known to be read-only, its error says a write
//!   may have been applied.
//! - Every command and pipeline gets a span and a duration sample under OpenTelemetry's
//!   database names (`telemetry.rs`).

mod held;
mod retry;

use futures_util::TryFutureExt;
use redis::aio::ConnectionLike;
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use tracing::Instrument;

use super::route::{self, Path};
use super::telemetry::{Failure, Op, Outcome, Telemetry};
use super::{RedisConnection, RedisPool, SharedRedisConnection};
use retry::{Via, settled};

pub(super) use retry::ReadOnly;

/// A [`RedisPool`] whose commands are all safe to send twice: on a lost connection they
/// are retried like read-only ones. Get one with [`RedisPool::idempotent`].
///
/// ```no_run
/// # async fn demo(pool: connhub::RedisPool) -> redis::RedisResult<()> {
/// use connhub::redis::AsyncCommands;
/// // SET to a fixed value applies the same way twice.
/// let mut cache = pool.idempotent();
/// let _: () = cache.set("feature:x", "on").await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Idempotent {
    pool: RedisPool,
}

impl RedisPool {
    /// This pool as a connection whose commands may be sent twice: after a lost
    /// connection they are retried whether they write or not. For commands that apply
    /// the same way twice (`SET k v`, `DEL k`, `HSET k f v`), never for `INCR`, `LPUSH`
    /// and the like.
    pub fn idempotent(&self) -> Idempotent {
        Idempotent { pool: self.clone() }
    }
}

/// The first error reply among `replies`, or one level inside them (a transaction's are
/// inside `EXEC`'s).
fn first_error(replies: &[Value]) -> Option<&redis::ServerError> {
    replies.iter().find_map(|v| match v {
        Value::ServerError(s) => Some(s),
        Value::Array(inner) => inner.iter().find_map(|v| match v {
            Value::ServerError(s) => Some(s),
            _ => None,
        }),
        _ => None,
    })
}

/// A connhub error (down, closed, timed out waiting) as the redis crate's error, the
/// connhub error kept as its source.
fn unavailable(e: crate::Error) -> RedisError {
    RedisError::from(std::io::Error::new(std::io::ErrorKind::NotConnected, e))
}

/// What a command or pipeline is, for the retry rule.
#[derive(Clone, Copy)]
enum Sent<'a> {
    Command(&'a Cmd),
    Pipeline(&'a Pipeline, usize, usize),
}

/// What came back for a [`Sent`].
enum Reply {
    One(Value),
    Many(Vec<Value>),
}

impl Reply {
    fn one(self) -> Value {
        match self {
            Reply::One(v) => v,
            Reply::Many(v) => Value::Array(v),
        }
    }

    fn many(self) -> Vec<Value> {
        match self {
            Reply::Many(v) => v,
            Reply::One(v) => vec![v],
        }
    }
}

impl Outcome for RedisResult<Reply> {
    /// An error, or the server's first error reply: a command's own, or one inside a
    /// pipeline's replies (a transaction's are inside `EXEC`'s).
    fn failure(&self) -> Option<Failure<'_>> {
        match self {
            Ok(Reply::One(Value::ServerError(s))) => Some(Failure::server(s)),
            Ok(Reply::One(_)) => None,
            Ok(Reply::Many(v)) => first_error(v).map(Failure::server),
            Err(e) => Some(Failure::error(e)),
        }
    }
}

impl Sent<'_> {
    /// Sends it on `c`, bounded by `command_timeout`, and marks `c` broken if the
    /// connection failed under it. The crate's own boxed request future is awaited here,
    /// so this future stays a few words.
    async fn on_shared(self, c: &mut SharedRedisConnection) -> RedisResult<Reply> {
        let r = match self {
            Sent::Command(cmd) => c.inner.request(cmd).await.map(Reply::One),
            Sent::Pipeline(p, offset, count) => c
                .inner
                .request_pipeline(p, offset, count)
                .await
                .map(Reply::Many),
        };
        c.meta.observe(&r);
        r
    }

    /// Sends it once on a connection of its own, `c`, which fits a blocking command's
    /// timeout to it and marks itself broken if the connection failed under it (sent
    /// again or not by the retry rule here, not by the connection's own). Boxed, as the
    /// crate's own request is.
    async fn on_own(self, c: &mut RedisConnection) -> RedisResult<Reply> {
        match self {
            Sent::Command(cmd) => Box::pin(c.send_once(cmd)).await.map(Reply::One),
            Sent::Pipeline(p, offset, count) => Box::pin(c.send_pipeline_once(p, offset, count))
                .await
                .map(Reply::Many),
        }
    }
}

/// Sends `sent` where `path` says: on the shared connection (through the crate's own
/// boxed request, so this future stays a few words and moves cheaply), on a pooled
/// connection of its own, or nowhere. Everything off the shared connection is boxed. (A
/// plain command with no span to run under takes [`plain`] instead.)
async fn send(pool: &RedisPool, sent: Sent<'_>, path: Path, any: bool) -> RedisResult<Reply> {
    match path {
        Path::Shared => {}
        // Boxed: a checkout's future is kept out of every plain command's.
        Path::Own => return Box::pin(on_checkout(pool, sent, any)).await,
        Path::Refused(name) => {
            return Err(RedisError::from((
                ErrorKind::Client,
                "this command changes the state of the connection it is sent on, which the \
                 pool shares; send it on a connection of your own (`pool.get()`)",
                name.to_owned(),
            )));
        }
    }
    let this = pool.current();
    // The link alone, and which connection it is: no count is taken on the connection's
    // state, which every caller shares; a failure finds the connection again by its id.
    let open = this
        .manager()
        .inner
        .shared
        .now(this, |c| (c.inner.clone(), c.meta.id));
    let Some((mut link, id)) = open else {
        return Box::pin(unopened(pool, sent, any)).await;
    };
    let r = match sent {
        Sent::Command(cmd) => link.request(cmd).await.map(Reply::One),
        Sent::Pipeline(p, offset, count) => link
            .request_pipeline(p, offset, count)
            .await
            .map(Reply::Many),
    };
    match r {
        Err(e) => Box::pin(failed(pool, sent, any, id, e)).await,
        ok => ok,
    }
}

/// No shared connection open (or the pool refuses callers now): opens one and sends
/// `sent` on it, or on one of the pool's own connections when the server takes no more.
async fn unopened(pool: &RedisPool, sent: Sent<'_>, any: bool) -> RedisResult<Reply> {
    // The server takes no more connections than the pool holds: no shared one to open,
    // so this call goes on one of the pool's own.
    if pool.current().limited() {
        return on_checkout(pool, sent, any).await;
    }
    let mut conn = match pool.multiplexed().await {
        Ok(conn) => conn,
        // The connector is up, but the server took no further connection (it reached
        // its cap just now): this call goes on one of the pool's own instead.
        Err(_) if pool.admits() => return on_checkout(pool, sent, any).await,
        Err(e) => return Err(unavailable(e)),
    };
    match sent.on_shared(&mut conn).await {
        Err(e) => settled(pool, sent, any, Via::Shared, e).await,
        r => r,
    }
}

/// `sent` failed on the shared connection `id`: marks that connection broken if the
/// failure broke it, and sends `sent` again when it was lost and that is safe.
async fn failed(
    pool: &RedisPool,
    sent: Sent<'_>,
    any: bool,
    id: u64,
    e: RedisError,
) -> RedisResult<Reply> {
    let r = Err(e);
    pool.current().manager().inner.shared.each(|c| {
        if c.meta.id == id {
            c.meta.observe(&r);
        }
    });
    match r {
        Err(e) => settled(pool, sent, any, Via::Shared, e).await,
        r => r,
    }
}

/// Sends `sent` on a pooled connection: a blocking command (whose timeout the connection
/// fits to it), or any call when no shared connection could be opened. After a lost
/// connection, again on one opened for the call when that is safe (`retry.rs`).
async fn on_checkout(pool: &RedisPool, sent: Sent<'_>, any: bool) -> RedisResult<Reply> {
    let mut conn = pool.get().await.map_err(unavailable)?;
    match sent.on_own(&mut conn).await {
        Err(e) => {
            drop(conn);
            settled(pool, sent, any, Via::Own, e).await
        }
        r => r,
    }
}

/// Sends `sent` under its operation's span (when a subscriber takes it) and duration
/// sample.
async fn measured(
    pool: &RedisPool,
    op: Op<'_>,
    sent: Sent<'_>,
    path: Path,
    any: bool,
) -> RedisResult<Reply> {
    let telemetry = &pool.current().manager().inner.telemetry;
    let started = telemetry.start(&op);
    // Each branch makes its own call, so neither is built once and moved into the other.
    let r = match started.span() {
        // Boxed: a subscriber costs far more than that.
        Some(span) => Box::pin(send(pool, sent, path, any).instrument(span.clone())).await,
        None => send(pool, sent, path, any).await,
    };
    telemetry.finish(started, &op, &r);
    r
}

/// Sends one command on the pool.
fn command<'a>(pool: &'a RedisPool, cmd: &'a Cmd, any: bool) -> RedisFuture<'a, Value> {
    let name = route::name(cmd);
    let (path, _) = route::classify_named(cmd, name);
    let op = Op::Command(name.unwrap_or_default());
    match path {
        Path::Shared if !Telemetry::spans() => Box::pin(plain(pool, op, cmd, any)),
        _ => Box::pin(measured(pool, op, Sent::Command(cmd), path, any).map_ok(Reply::one)),
    }
}

/// The everyday call: a plain command on the shared connection, no subscriber taking
/// spans. One flat future, boxed once with the crate's request inside it (as a
/// `multiplexed()` handle's command is): no second allocation, and no layers to move it
/// through and poll it through. Everything off this path is boxed.
async fn plain<'a>(pool: &'a RedisPool, op: Op<'a>, cmd: &'a Cmd, any: bool) -> RedisResult<Value> {
    let this = pool.current();
    let inner = &this.manager().inner;
    // `command` found no subscriber taking spans: no second look.
    let started = inner.telemetry.unspanned(&op);
    let open = inner.shared.now(this, |c| (c.inner.clone(), c.meta.id));
    let r = match open {
        Some((mut link, id)) => match link.send(cmd).await {
            Err(e) => Box::pin(failed(pool, Sent::Command(cmd), any, id, e)).await,
            Ok(v) => Ok(Reply::One(v)),
        },
        None => Box::pin(unopened(pool, Sent::Command(cmd), any)).await,
    };
    inner.telemetry.finish(started, &op, &r);
    r.map(Reply::one)
}

/// Sends a pipeline on the pool's shared connection.
fn pipeline<'a>(
    pool: &'a RedisPool,
    pipe: &'a Pipeline,
    offset: usize,
    count: usize,
    any: bool,
) -> RedisFuture<'a, Vec<Value>> {
    let op = Op::Pipeline {
        len: pipe.len(),
        atomic: pipe.is_transaction(),
    };
    let sent = Sent::Pipeline(pipe, offset, count);
    Box::pin(measured(pool, op, sent, Path::Shared, any).map_ok(Reply::many))
}

/// Commands on the pool itself: plain ones and pipelines on the shared connection,
/// blocking ones on a checkout of their own, stateful ones refused; a read-only one is sent
/// again after a lost connection (as is any through [`RedisPool::idempotent`]).
impl ConnectionLike for RedisPool {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        command(self, cmd, false)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipe: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        pipeline(self, pipe, offset, count, false)
    }

    fn get_db(&self) -> i64 {
        i64::from(self.current().manager().inner.db)
    }
}

impl ConnectionLike for Idempotent {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        command(&self.pool, cmd, true)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipe: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        pipeline(&self.pool, pipe, offset, count, true)
    }

    fn get_db(&self) -> i64 {
        self.pool.get_db()
    }
}

#[cfg(test)]
mod tests {
    use crate::backend::redis::route::Path;
    use crate::backend::redis::telemetry::Op;

    /// A pool that connects to nothing until asked: enough to size its futures.
    async fn lazy_pool() -> (crate::Manager, crate::RedisPool) {
        let mut config = crate::RedisConfig::default();
        config.connector.lazy_connect = true;
        let manager = crate::Manager::new();
        let pool = manager.add_redis("sizes", config).await.expect("lazy pool");
        (manager, pool)
    }

    /// A call the long way (under a span, a blocking command, a pipeline) allocates its
    /// future and moves it while it is built: it must not hold the redis crate's request
    /// future (over a kilobyte) inline, on top of the crate's own boxed one, nor the
    /// futures of the paths off the shared connection.
    #[tokio::test]
    async fn a_command_future_holds_no_request_future_inline() {
        let (_manager, pool) = lazy_pool().await;
        let cmd = redis::cmd("GET");
        let sent = super::Sent::Command(&cmd);
        let call = super::measured(&pool, Op::Command(b"GET"), sent, Path::Shared, false);
        let size = size_of_val(&call);
        assert!(size <= 512, "a command's future is {size} bytes");
    }

    /// The size of what `f` returns, without calling it.
    fn output_size<A, R>(_: &impl FnOnce(A) -> R) -> usize {
        size_of::<R>()
    }

    /// A plain command's future is boxed once with the crate's request inside it: it holds
    /// that request and a few words more, none of the futures off its path (a retry's or
    /// an open's, several kilobytes each).
    #[tokio::test]
    async fn a_plain_command_future_is_its_request_and_a_few_words() {
        let (_manager, pool) = lazy_pool().await;
        let cmd: &'static redis::Cmd = Box::leak(Box::new(redis::cmd("GET")));
        let request =
            output_size(&|link: &'static mut crate::backend::redis::link::Link| link.send(cmd));
        let call = super::plain(&pool, Op::Command(b"GET"), cmd, false);
        let size = size_of_val(&call);
        assert!(
            size <= request + 512,
            "a plain command's future is {size} bytes, its request {request}"
        );
    }
}
