//! The long-lived streams a connector serves (etcd leases and watches, Redis
//! subscriptions, the Sentinel `+switch-master` listener): [`Streams`] counts them for
//! status and metrics, and [`run`] is the one loop that keeps each of them open.
//!
//! The runner reads a [`Source`] within a [`Scope`] (a pool, which a reload may replace)
//! and hands what it reads to an [`Out`] (the reader). When the source is lost it opens it
//! again every `reconnect_interval`; when the scope is replaced it opens it in the new
//! one; it ends when the scope ends (the connector closed) or the reader is gone. A
//! source supplies only how to open, what it reads, and what a gap is.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Bb8Manager, Pool};
use crate::error::Result;
use crate::status::StreamCounts;

/// What kind of long-lived stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamKind {
    /// An etcd lease kept alive.
    Lease,
    /// An etcd watch.
    Watch,
    /// A Redis subscription.
    Subscription,
}

/// Live counts of a connector's streams.
#[derive(Debug, Default)]
pub(crate) struct Streams {
    leases: AtomicU32,
    watches: AtomicU32,
    subscriptions: AtomicU32,
}

impl Streams {
    fn counter(&self, kind: StreamKind) -> &AtomicU32 {
        match kind {
            StreamKind::Lease => &self.leases,
            StreamKind::Watch => &self.watches,
            StreamKind::Subscription => &self.subscriptions,
        }
    }

    /// Counts one more stream of `kind` until the returned guard is dropped.
    pub(crate) fn open(self: &Arc<Self>, kind: StreamKind) -> StreamGuard {
        self.counter(kind).fetch_add(1, Ordering::Relaxed);
        StreamGuard {
            streams: self.clone(),
            kind,
        }
    }

    pub(crate) fn counts(&self) -> StreamCounts {
        StreamCounts {
            leases: self.leases.load(Ordering::Relaxed),
            watches: self.watches.load(Ordering::Relaxed),
            subscriptions: self.subscriptions.load(Ordering::Relaxed),
        }
    }
}

/// One counted stream; uncounted when dropped.
#[derive(Debug)]
pub(crate) struct StreamGuard {
    streams: Arc<Streams>,
    kind: StreamKind,
}

impl StreamGuard {
    /// What kind of stream it counts.
    pub(crate) fn kind(&self) -> StreamKind {
        self.kind
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.streams
            .counter(self.kind)
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// The receiving end of a long-lived stream that a background task feeds; the task ends
/// when this is dropped.
#[derive(Debug)]
pub(crate) struct Feed<T> {
    items: mpsc::Receiver<T>,
    task: tokio::task::JoinHandle<()>,
}

impl<T> Feed<T> {
    pub(crate) fn new(items: mpsc::Receiver<T>, task: tokio::task::JoinHandle<()>) -> Self {
        Feed { items, task }
    }

    pub(crate) async fn next(&mut self) -> Option<T> {
        self.items.recv().await
    }

    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.items.poll_recv(cx)
    }
}

impl<T> Drop for Feed<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use tokio::sync::{mpsc, watch};

    use super::{Read, Scope, Source, run};
    use crate::error::{Error, Result};

    /// A scope that ends (or moves to generation `n`) when told.
    struct Fake {
        generation: u32,
        moves: watch::Receiver<Option<u32>>,
    }

    impl Scope for Fake {
        fn names(&self) -> (&str, &str) {
            ("fake", "test")
        }

        fn retry_after(&self) -> Duration {
            Duration::from_millis(250)
        }

        async fn ended(&self) -> Option<Self> {
            let mut moves = self.moves.clone();
            loop {
                match *moves.borrow_and_update() {
                    Some(0) => return None,
                    Some(n) if n != self.generation => {
                        return Some(Fake {
                            generation: n,
                            moves: self.moves.clone(),
                        });
                    }
                    _ => {}
                }
                if moves.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
    }

    /// Reads what the test sends; fails to open `refusals` times after each loss.
    struct Script {
        reads: mpsc::Receiver<Option<u32>>,
        refusals: u32,
        refused: Arc<AtomicU32>,
        opened_in: Arc<AtomicU32>,
    }

    impl Source<Fake> for Script {
        type Open = ();
        type Item = String;
        const NAME: &'static str = "script";

        async fn open(&mut self, scope: &Fake) -> Result<()> {
            if self.refused.load(Ordering::SeqCst) < self.refusals {
                self.refused.fetch_add(1, Ordering::SeqCst);
                return Err(Error::Closed { origin: None });
            }
            self.opened_in.store(scope.generation, Ordering::SeqCst);
            Ok(())
        }

        async fn read(&mut self, _: &Fake, (): &mut ()) -> Read<String> {
            match self.reads.recv().await {
                Some(Some(n)) => Read::One(format!("item {n}")),
                Some(None) => Read::Lost("lost".into()),
                None => std::future::pending().await,
            }
        }

        fn reopened(&mut self, down_for: Duration, error: String) -> Option<String> {
            Some(format!("gap {}ms {error}", down_for.as_millis()))
        }
    }

    struct Rig {
        items: mpsc::Receiver<String>,
        reads: mpsc::Sender<Option<u32>>,
        moves: watch::Sender<Option<u32>>,
        refused: Arc<AtomicU32>,
        opened_in: Arc<AtomicU32>,
        task: tokio::task::JoinHandle<()>,
    }

    fn rig(refusals: u32) -> Rig {
        let (moves, rx) = watch::channel(None);
        let (reads, script) = mpsc::channel(8);
        let (tx, items) = mpsc::channel(8);
        let refused = Arc::new(AtomicU32::new(0));
        let opened_in = Arc::new(AtomicU32::new(u32::MAX));
        let source = Script {
            reads: script,
            refusals,
            refused: refused.clone(),
            opened_in: opened_in.clone(),
        };
        let scope = Fake {
            generation: 1,
            moves: rx,
        };
        let task = tokio::spawn(run(scope, source, Some(()), tx));
        Rig {
            items,
            reads,
            moves,
            refused,
            opened_in,
            task,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_stream_is_opened_again_every_interval_and_the_gap_reported() {
        let mut r = rig(2);
        r.reads.send(Some(1)).await.unwrap();
        assert_eq!(r.items.recv().await.unwrap(), "item 1");
        r.reads.send(None).await.unwrap();
        // Refused twice: open again at once, then after 250 ms, then after 500 ms.
        let gap = r.items.recv().await.unwrap();
        assert_eq!(gap, "gap 500ms the manager is closed", "{gap}");
        assert_eq!(r.refused.load(Ordering::SeqCst), 2);
        r.reads.send(Some(2)).await.unwrap();
        assert_eq!(r.items.recv().await.unwrap(), "item 2");
    }

    #[tokio::test(start_paused = true)]
    async fn a_replaced_scope_moves_the_stream_and_an_ended_one_ends_it() {
        let mut r = rig(0);
        r.moves.send(Some(2)).unwrap();
        let gap = r.items.recv().await.unwrap();
        assert!(gap.ends_with("replaced by a reload"), "{gap}");
        assert_eq!(r.opened_in.load(Ordering::SeqCst), 2);
        r.moves.send(Some(0)).unwrap();
        assert_eq!(r.items.recv().await, None, "the stream ends with its scope");
        r.task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn the_stream_ends_when_its_reader_is_gone() {
        let r = rig(0);
        drop(r.items);
        tokio::time::timeout(Duration::from_secs(1), r.task)
            .await
            .expect("the runner ends when nobody reads")
            .unwrap();
    }
}
