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

use super::{EtcdConnectionManager, EtcdPool, classify};
use crate::error::{Error, Origin, Result, TimeoutKind};
use crate::pool::streams::{self, InPool, Read, Source};
use crate::pool::{Feed, StreamKind};
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
        let mut source = Resume {
            key: key.into(),
            next: spec.start_revision,
            spec,
        };
        let first = async {
            let client = self.client().await?;
            open_watch(self, client, &mut source)
                .await
                .map_err(|e| self.connect_failed(e))
        };
        let first = first.await?;
        let (tx, rx) = mpsc::channel(BUFFER);
        let scope = InPool::new(self.clone(), StreamKind::Watch);
        let task = tokio::spawn(streams::run(scope, source, Some(first), tx));
        Ok(Watch {
            feed: Feed::new(rx, task),
        })
    }
}

/// Creates the watch from `at.next` and waits for etcd to confirm it; a watch started
/// "now" learns the revision it started at, so a resume misses nothing. Returns the stream
/// and its first response.
async fn open_watch(pool: &EtcdPool, mut client: Client, at: &mut Resume) -> Result<Opened> {
    let limit = pool.connector_config().connect_timeout;
    let name = pool.name().to_owned();
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
    Ok(Opened {
        stream,
        pending: Some(first),
        again: None,
    })
}

/// What a watch follows, and where it resumes: the watch's [`Source`].
#[derive(Debug)]
struct Resume {
    key: Vec<u8>,
    spec: WatchSpec,
    /// The revision to watch from next; `None` is "now".
    next: Option<i64>,
}

/// An open watch.
struct Opened {
    stream: WatchStream,
    /// The response that confirmed it, not yet delivered.
    pending: Option<WatchResponse>,
    /// Why it must be created again (compacted, or cancelled by etcd) once the items
    /// already read are delivered.
    again: Option<String>,
}

impl Resume {
    /// A response's changes (or its compaction), moving the resume point past them; and
    /// whether the watch must be created again after them.
    fn changes(&mut self, resp: &WatchResponse) -> (Vec<WatchItem>, Option<String>) {
        if resp.compact_revision() > 0 {
            self.next = Some(resp.compact_revision());
            let item = WatchItem::Compacted {
                revision: resp.compact_revision(),
            };
            return (
                vec![item],
                Some("the revision to resume from was compacted".into()),
            );
        }
        let mut items = Vec::with_capacity(resp.events().len());
        for ev in resp.events() {
            if let Some(kv) = ev.kv() {
                self.next = Some(kv.mod_revision() + 1);
            }
            items.push(WatchItem::Event(ev.clone()));
        }
        if resp.events().is_empty()
            && !resp.created()
            && let Some(h) = resp.header()
        {
            // A progress notification: every change up to this revision was sent.
            self.next = Some(
                self.next
                    .map_or(h.revision() + 1, |n| n.max(h.revision() + 1)),
            );
        }
        let again = resp
            .canceled()
            .then(|| format!("etcd cancelled the watch: {}", resp.cancel_reason()));
        (items, again)
    }
}

/// Forwards changes; when the stream fails (a member lost, a reconnect), the runner
/// creates the watch again on the connector's current client from the revision after the
/// last change, and on the new pool when a reload replaced the connector.
impl Source<InPool<EtcdConnectionManager>> for Resume {
    type Open = Opened;
    type Item = WatchItem;
    const NAME: &'static str = "watch";

    async fn open(&mut self, scope: &InPool<EtcdConnectionManager>) -> Result<Opened> {
        let client = scope.pool.client().await?;
        open_watch(&scope.pool, client, self).await
    }

    async fn read(
        &mut self,
        _scope: &InPool<EtcdConnectionManager>,
        open: &mut Opened,
    ) -> Read<WatchItem> {
        if let Some(why) = open.again.take() {
            return Read::Lost(why);
        }
        let resp = match open.pending.take() {
            Some(resp) => resp,
            None => match open.stream.message().await {
                Ok(Some(resp)) => resp,
                Ok(None) => return Read::Lost("the watch stream ended".into()),
                Err(e) => return Read::Lost(e.to_string()),
            },
        };
        let (items, again) = self.changes(&resp);
        open.again = again;
        Read::Many(items)
    }
}
