//! The one loop that keeps a long-lived stream open: [`run()`].

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{StreamGuard, StreamKind};
use crate::error::Result;
use crate::pool::{Bb8Manager, Pool};

/// Where a stream lives: what names it in logs, how long to wait between attempts to open
/// it, and when it ends or moves.
pub(crate) trait Scope: Send + Sync + Sized + 'static {
    /// The connector's name and kind, for logs.
    fn names(&self) -> (&str, &str);

    /// How long to wait after a failed attempt to open the stream.
    fn retry_after(&self) -> Duration;

    /// Completes when the scope ends: with the scope the stream goes on in (the pool a
    /// reload put in its place), or `None` when the stream ends with it.
    fn ended(&self) -> impl Future<Output = Option<Self>> + Send + '_;
}

/// What a [`Source`] read.
pub(crate) enum Read<T> {
    /// One item for the reader.
    One(T),
    /// Several, in order.
    Many(Vec<T>),
    /// Nothing for the reader this time (the source handled it).
    Nothing,
    /// The stream is lost, and why: it is opened again.
    Lost(String),
}

/// A long-lived stream: how to open it, what it reads, what a gap is.
pub(crate) trait Source<S: Scope>: Send + 'static {
    /// The stream while it is open.
    type Open: Send;
    /// What the reader gets.
    type Item: Send + 'static;
    /// What the runner calls the stream in logs (`watch`, `subscription`).
    const NAME: &'static str;

    /// Opens the stream in `scope`.
    fn open<'a>(&'a mut self, scope: &'a S)
    -> impl Future<Output = Result<Self::Open>> + Send + 'a;

    /// Reads what comes next from the open stream.
    fn read<'a>(
        &'a mut self,
        scope: &'a S,
        open: &'a mut Self::Open,
    ) -> impl Future<Output = Read<Self::Item>> + Send + 'a;

    /// The item that tells the reader what it missed, once the stream is open again after
    /// being lost for `down_for` (why: `error`). Default: none.
    fn reopened(&mut self, down_for: Duration, error: String) -> Option<Self::Item> {
        let _ = (down_for, error);
        None
    }
}

/// Where the items go.
pub(crate) trait Out<T>: Send + 'static {
    /// Hands one item over; false when the reader is gone.
    fn send(&self, item: T) -> impl Future<Output = bool> + Send;

    /// Completes when the reader is gone.
    fn closed(&self) -> impl Future<Output = ()> + Send;
}

impl<T: Send + 'static> Out<T> for mpsc::Sender<T> {
    async fn send(&self, item: T) -> bool {
        mpsc::Sender::send(self, item).await.is_ok()
    }

    async fn closed(&self) {
        mpsc::Sender::closed(self).await;
    }
}

/// No reader: the stream lives as long as its scope (and its task).
#[derive(Debug, Clone, Copy)]
pub(crate) struct NoReader;

impl Out<Infallible> for NoReader {
    async fn send(&self, item: Infallible) -> bool {
        match item {}
    }

    async fn closed(&self) {
        std::future::pending().await
    }
}

/// Keeps `source` open in `scope` and hands what it reads to `out`, until the scope ends
/// or the reader is gone. `open` is the stream its caller opened already (so that the
/// caller saw the first attempt's error), or `None` to open it here.
pub(crate) async fn run<S, R, O>(mut scope: S, mut source: R, mut open: Option<R::Open>, out: O)
where
    S: Scope,
    R: Source<S>,
    O: Out<R::Item>,
{
    let mut lost = None;
    loop {
        let mut opened = match open.take() {
            Some(o) => o,
            None => {
                let Some(o) = reopen(&mut scope, &mut source, &out, &mut lost).await else {
                    return;
                };
                o
            }
        };
        if let Some((at, why)) = lost.take() {
            let down_for = Instant::now().duration_since(at);
            let (name, kind) = scope.names();
            tracing::debug!(connector = %name, kind = %kind, stream = R::NAME, ?down_for, "stream open again");
            if let Some(gap) = source.reopened(down_for, why)
                && !out.send(gap).await
            {
                return;
            }
        }
        // Read until the stream is lost or the scope ends.
        let why = loop {
            let read = tokio::select! {
                read = source.read(&scope, &mut opened) => read,
                next = scope.ended() => match next {
                    Some(next) => {
                        scope = next;
                        let (name, kind) = scope.names();
                        tracing::debug!(connector = %name, kind = %kind, stream = R::NAME, "stream moved to the reloaded connector");
                        break String::from("the connector was replaced by a reload");
                    }
                    None => return,
                },
                () = out.closed() => return,
            };
            let delivered = match read {
                Read::One(item) => out.send(item).await,
                Read::Many(items) => {
                    let mut all = true;
                    for item in items {
                        if !out.send(item).await {
                            all = false;
                            break;
                        }
                    }
                    all
                }
                Read::Nothing => true,
                Read::Lost(why) => break why,
            };
            if !delivered {
                return;
            }
        };
        let (name, kind) = scope.names();
        tracing::debug!(connector = %name, kind = %kind, stream = R::NAME, reason = %why, "stream lost; opening it again");
        drop(opened);
        lost = Some((Instant::now(), why));
    }
}

/// Opens the source again: at once, then every `retry_after` while it fails, following
/// the scope if it moves. `None` when the scope ended or the reader is gone.
async fn reopen<S, R, O>(
    scope: &mut S,
    source: &mut R,
    out: &O,
    lost: &mut Option<(Instant, String)>,
) -> Option<R::Open>
where
    S: Scope,
    R: Source<S>,
    O: Out<R::Item>,
{
    loop {
        match source.open(scope).await {
            Ok(open) => return Some(open),
            Err(e) => {
                let (name, kind) = scope.names();
                tracing::debug!(connector = %name, kind = %kind, stream = R::NAME, error = %e, "stream not open yet");
                if let Some((_, why)) = lost.as_mut() {
                    *why = e.to_string();
                }
            }
        }
        let wait = scope.retry_after();
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            next = scope.ended() => *scope = next?,
            () = out.closed() => return None,
        }
    }
}

/// A stream in a pool: counted in its status while it lives, and moved on to the pool
/// that replaces it on a reload.
#[derive(Debug)]
pub(crate) struct InPool<M: Bb8Manager> {
    pub(crate) pool: Pool<M>,
    counted: StreamGuard,
}

impl<M: Bb8Manager> InPool<M> {
    /// Counts a stream of `kind` in `pool`.
    pub(crate) fn new(pool: Pool<M>, kind: StreamKind) -> Self {
        let counted = pool.open_stream(kind);
        pool.record_status();
        InPool { pool, counted }
    }
}

impl<M: Bb8Manager> Scope for InPool<M> {
    fn names(&self) -> (&str, &str) {
        (self.pool.name(), self.pool.inner.health.kind.as_str())
    }

    fn retry_after(&self) -> Duration {
        self.pool.connector_config().reconnect_interval
    }

    async fn ended(&self) -> Option<Self> {
        let next = self.pool.closed_or_replaced().await?;
        Some(InPool::new(next, self.counted.kind()))
    }
}
