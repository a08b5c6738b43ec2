//! [`Watch`]: an etcd watch that resumes where it left off, on etcd-client's own watch.
//!
//! etcd keeps every revision until it is compacted, and a watch can start at any revision
//! still kept. So a watch that remembers the revision after the last change it delivered
//! can be re-created on any live member after a member loss or a reconnect, and the
//! caller sees every change once, in order. If that revision was compacted meanwhile, the
//! changes in between are gone: the watch says so with [`WatchItem::Compacted`] instead
//! of skipping them silently.

use std::pin::Pin;
use std::task::{Context, Poll};

use etcd_client::{Client, Event, WatchOptions, WatchResponse, WatchStream};
use futures_util::Stream;
use tokio::sync::mpsc;

use super::{EtcdPool, classify};
use crate::error::{Error, Origin, Result, TimeoutKind};
use crate::pool::{Feed, StreamGuard, StreamKind};
use crate::status::Kind;

/// What a [`Watch`] yields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum WatchItem {
    /// One change, in revision order.
    Event(Event),
    /// The watch had to resume from a revision etcd has compacted: the changes between
    /// the last one delivered and `revision` are gone. Read the current state again; the
    /// watch goes on from `revision` (the oldest one etcd still has).
    Compacted {
        /// The oldest revision etcd still keeps.
        revision: i64,
    },
}

/// What to watch: a key or a prefix, from now or from a revision.
#[derive(Debug, Clone, Default)]
pub struct WatchSpec {
    prefix: bool,
    start_revision: Option<i64>,
    prev_kv: bool,
}

impl WatchSpec {
    /// The key alone, from now.
    pub fn new() -> Self {
        WatchSpec::default()
    }

    /// Every key that starts with the given key.
    pub fn prefix(mut self) -> Self {
        self.prefix = true;
        self
    }

    /// Start at this revision (inclusive) instead of now.
    pub fn from_revision(mut self, revision: i64) -> Self {
        self.start_revision = Some(revision);
        self
    }

    /// Include each key's previous value in its events.
    pub fn with_prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }

    fn options(&self, from: Option<i64>) -> WatchOptions {
        let mut o = WatchOptions::new().with_progress_notify();
        if self.prefix {
            o = o.with_prefix();
        }
        if self.prev_kv {
            o = o.with_prev_key();
        }
        if let Some(r) = from {
            o = o.with_start_revision(r);
        }
        o
    }
}

/// A resilient etcd watch; a [`Stream`] of [`WatchItem`]s. It ends when dropped or when
/// the connector is closed.
///
/// ```no_run
/// # async fn demo(pool: connhub::EtcdPool) -> connhub::Result<()> {
/// use connhub::backend::etcd::{WatchItem, WatchSpec};
/// let mut watch = pool.watch("config/", WatchSpec::new().prefix()).await?;
/// while let Some(item) = watch.next().await {
///     match item {
///         WatchItem::Event(ev) => println!("{:?} {:?}", ev.event_type(), ev.kv().map(|kv| kv.key())),
///         WatchItem::Compacted { revision } => println!("changes lost up to {revision}: reload"),
///         _ => {}
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Watch {
    feed: Feed<WatchItem>,
}

impl Watch {
    /// The next item; `None` once the connector is closed.
    pub async fn next(&mut self) -> Option<WatchItem> {
        self.feed.next().await
    }
}

impl Stream for Watch {
    type Item = WatchItem;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.feed.poll_next(cx)
    }
}

/// Items buffered for a slow reader; further behind, the watch stops reading (etcd
/// buffers, then the watch resumes from where it stopped).
const BUFFER: usize = 1024;

impl EtcdPool {
    /// Watches a key (or, with [`WatchSpec::prefix`], every key under it) and keeps
    /// watching across member losses and reconnects, resuming at the revision after the
    /// last change delivered, so every change comes once and in order; see [`WatchItem`]
    /// for what a compaction does. Fails fast like [`get`](crate::Pool::get) while the
    /// connector is down; creating the watch is bounded by `connect_timeout`.
    ///
    /// Counted in [`Status::streams`](crate::Status::streams) while it lives.
    pub async fn watch(&self, key: impl Into<Vec<u8>>, spec: WatchSpec) -> Result<Watch> {
        if let Some(next) = self.newer() {
            return Box::pin(next.watch(key, spec)).await;
        }
        let client = self.client().await?;
        let mut at = Resume {
            key: key.into(),
            next: spec.start_revision,
            spec,
        };
        let (stream, first) = self
            .open_watch(client, &mut at)
            .await
            .map_err(|e| self.connect_failed(e))?;
        let (tx, rx) = mpsc::channel(BUFFER);
        let guard = self.open_stream(StreamKind::Watch);
        self.record_status();
        let task = tokio::spawn(run(self.clone(), at, stream, first, tx, guard));
        Ok(Watch {
            feed: Feed::new(rx, task),
        })
    }

    /// Creates the watch from `at.next` and waits for etcd to confirm it; a watch started
    /// "now" learns the revision it started at, so a resume misses nothing. Returns the
    /// stream and its first response.
    async fn open_watch(
        &self,
        mut client: Client,
        at: &mut Resume,
    ) -> Result<(WatchStream, WatchResponse)> {
        let limit = self.connector_config().connect_timeout;
        let name = self.name().to_owned();
        let fail = |e| classify(&name, "", TimeoutKind::Watch, limit, e);
        let created = async {
            let mut stream = client
                .watch(at.key.clone(), Some(at.spec.options(at.next)))
                .await
                .map_err(fail)?;
            match stream.message().await.map_err(fail)? {
                Some(resp) => Ok((stream, resp)),
                None => Err(fail(etcd_client::Error::WatchError(
                    "the watch stream ended at once".into(),
                ))),
            }
        };
        let (stream, first) = tokio::time::timeout(limit, created).await.map_err(|_| {
            Error::timed_out(
                Origin::new(name.clone(), Kind::ETCD),
                TimeoutKind::Watch,
                limit,
                None,
            )
        })??;
        if at.next.is_none()
            && let Some(h) = first.header()
        {
            at.next = Some(h.revision() + 1);
        }
        Ok((stream, first))
    }
}

/// What a watch follows, and where it resumes.
#[derive(Debug)]
struct Resume {
    key: Vec<u8>,
    spec: WatchSpec,
    /// The revision to watch from next; `None` is "now".
    next: Option<i64>,
}

/// What to do after a response.
enum Flow {
    Continue,
    /// Create the watch again from `Resume::next`.
    Rewatch,
    /// The reader is gone.
    Stop,
}

/// Delivers a response's changes (or its compaction) and moves the resume point past them.
async fn deliver(resp: &WatchResponse, at: &mut Resume, tx: &mpsc::Sender<WatchItem>) -> Flow {
    if resp.compact_revision() > 0 {
        at.next = Some(resp.compact_revision());
        let item = WatchItem::Compacted {
            revision: resp.compact_revision(),
        };
        return if tx.send(item).await.is_err() {
            Flow::Stop
        } else {
            Flow::Rewatch
        };
    }
    for ev in resp.events() {
        if let Some(kv) = ev.kv() {
            at.next = Some(kv.mod_revision() + 1);
        }
        if tx.send(WatchItem::Event(ev.clone())).await.is_err() {
            return Flow::Stop;
        }
    }
    if resp.events().is_empty()
        && !resp.created()
        && let Some(h) = resp.header()
    {
        // A progress notification: every change up to this revision was sent.
        at.next = Some(
            at.next
                .map_or(h.revision() + 1, |n| n.max(h.revision() + 1)),
        );
    }
    if resp.canceled() {
        Flow::Rewatch
    } else {
        Flow::Continue
    }
}

/// Forwards changes; when the stream fails (a member lost, a reconnect), creates the watch
/// again on the connector's current client from the revision after the last change. When a
/// reload replaces the connector, it goes on the same way on the new pool.
async fn run(
    mut pool: EtcdPool,
    mut at: Resume,
    mut stream: WatchStream,
    first: WatchResponse,
    tx: mpsc::Sender<WatchItem>,
    mut counted: StreamGuard,
) {
    let mut pending = Some(first);
    loop {
        let mut flow = Flow::Continue;
        if let Some(resp) = pending.take() {
            flow = deliver(&resp, &mut at, &tx).await;
        }
        while matches!(flow, Flow::Continue) {
            let woke = tokio::select! {
                msg = stream.message() => Ok(msg),
                next = pool.closed_or_replaced() => Err(next),
                () = tx.closed() => return,
            };
            flow = match woke {
                Ok(Ok(Some(resp))) => deliver(&resp, &mut at, &tx).await,
                Ok(Ok(None) | Err(_)) => Flow::Rewatch,
                Err(next) => {
                    if !pool.move_stream(next, &mut counted) {
                        return;
                    }
                    Flow::Rewatch
                }
            };
        }
        if matches!(flow, Flow::Stop) {
            return;
        }
        // Create it again, on whichever member answers.
        loop {
            let attempt = async {
                let client = pool.client().await?;
                pool.open_watch(client, &mut at).await
            };
            match attempt.await {
                Ok((s, resp)) => {
                    stream = s;
                    pending = Some(resp);
                    break;
                }
                Err(e) => {
                    tracing::debug!(connector = %pool.name(), kind = "etcd", error = %e, "watch not re-created yet");
                }
            }
            let interval = pool.connector_config().reconnect_interval;
            let woke = tokio::select! {
                () = tokio::time::sleep(interval) => None,
                next = pool.closed_or_replaced() => Some(next),
                () = tx.closed() => return,
            };
            if let Some(next) = woke
                && !pool.move_stream(next, &mut counted)
            {
                return;
            }
        }
    }
}
