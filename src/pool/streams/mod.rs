//! The long-lived streams a connector serves (etcd leases and watches, Redis
//! subscriptions, the Sentinel `+switch-master` listener): [`Streams`] counts them for
//! status and metrics, and [`run()`] (in `run.rs`) is the one loop that keeps each of them open.
//!
//! The runner reads a [`Source`] within a [`Scope`] (a pool, which a reload may replace)
//! and hands what it reads to an [`Out`](run::Out) (the reader). When the source is lost it opens it
//! again every `reconnect_interval`; when the scope is replaced it opens it in the new
//! one; it ends when the scope ends (the connector closed) or the reader is gone. A
//! source supplies only how to open, what it reads, and what a gap is.

mod run;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};

use tokio::sync::mpsc;

use crate::status::StreamCounts;
pub(crate) use run::{InPool, NoReader, Read, Scope, Source, run};

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
