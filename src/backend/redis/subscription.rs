//! [`Subscription`]: Redis pub/sub that outlives a reconnect, on the redis crate's own
//! `PubSub`, and says when messages may have been lost.
//!
//! Redis pub/sub delivers a message only to the connections subscribed when it is
//! published: whatever is published while the connection is down is lost. A subscription
//! resubscribes by itself after a reconnect, then yields [`SubscriptionItem::Gap`] before
//! the first message after it, so the caller knows to resync (re-read the state the
//! messages were about).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use redis::aio::PubSubStream;
use tokio::sync::mpsc;

use super::{RedisConnectionManager, RedisPool};
use crate::error::Result;
use crate::pool::streams::{self, InPool, Read, Source};
use crate::pool::{Feed, StreamKind};

/// What a [`Subscription`] yields.
#[derive(Debug)]
#[non_exhaustive]
pub enum SubscriptionItem {
    /// A message on a subscribed channel or pattern.
    Message(redis::Msg),
    /// The connection was lost and the subscription is back: messages published in
    /// between were not received. Every message published after this item is.
    Gap {
        /// How long the subscription was down.
        down_for: Duration,
        /// Why the connection was lost (or the last reconnect failure).
        error: String,
    },
}

/// Channels and patterns to subscribe to.
#[derive(Debug, Clone, Default)]
pub struct Topics {
    channels: Vec<String>,
    patterns: Vec<String>,
}

impl Topics {
    /// No channels yet.
    pub fn new() -> Self {
        Topics::default()
    }

    /// Subscribe to this channel (`SUBSCRIBE`).
    pub fn channel(mut self, name: impl Into<String>) -> Self {
        self.channels.push(name.into());
        self
    }

    /// Subscribe to channels matching this glob pattern (`PSUBSCRIBE`).
    pub fn pattern(mut self, pattern: impl Into<String>) -> Self {
        self.patterns.push(pattern.into());
        self
    }
}

impl<S: Into<String>> FromIterator<S> for Topics {
    /// Channels, by name.
    fn from_iter<I: IntoIterator<Item = S>>(names: I) -> Self {
        Topics {
            channels: names.into_iter().map(Into::into).collect(),
            patterns: Vec::new(),
        }
    }
}

/// A Redis subscription that resubscribes after a reconnect; a [`Stream`] of
/// [`SubscriptionItem`]s. It ends when dropped or when the connector is closed.
///
/// ```no_run
/// # async fn demo(pool: connhub::RedisPool) -> connhub::Result<()> {
/// use connhub::backend::redis::{SubscriptionItem, Topics};
/// let mut sub = pool.subscribe(Topics::new().channel("config").pattern("jobs.*")).await?;
/// while let Some(item) = sub.next().await {
///     match item {
///         SubscriptionItem::Message(msg) => println!("{}: {:?}", msg.get_channel_name(), msg.get_payload::<String>()),
///         SubscriptionItem::Gap { down_for, .. } => println!("lost messages for {down_for:?}: resync"),
///         _ => {}
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Subscription {
    feed: Feed<SubscriptionItem>,
}

impl Subscription {
    /// The next item; `None` once the connector is closed.
    pub async fn next(&mut self) -> Option<SubscriptionItem> {
        self.feed.next().await
    }
}

impl Stream for Subscription {
    type Item = SubscriptionItem;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.feed.poll_next(cx)
    }
}

/// Items buffered for a slow reader; a reader further behind holds the connection's
/// reading back (the server buffers, up to its `client-output-buffer-limit`).
const BUFFER: usize = 1024;

impl RedisPool {
    /// Subscribes to channels and patterns on a connection of its own (not from the pool),
    /// to the same server as the pool (a Sentinel connector's current master).
    ///
    /// After the connection is lost, it reconnects every `reconnect_interval`,
    /// resubscribes, and yields [`SubscriptionItem::Gap`] before any later message.
    /// Fails fast like [`get`](crate::Pool::get) while the connector is down; opening the
    /// connection is bounded by `connect_timeout`. Not available on a cluster connector.
    ///
    /// Counted in [`Status::streams`](crate::Status::streams) while it lives.
    pub async fn subscribe(&self, topics: Topics) -> Result<Subscription> {
        if let Some(next) = self.newer() {
            return Box::pin(next.subscribe(topics)).await;
        }
        if topics.channels.is_empty() && topics.patterns.is_empty() {
            let mut errors = crate::error::ConfigErrors::default();
            errors.push(
                format!("redis.{}.subscribe", self.name()),
                "give at least one channel or pattern",
            );
            return Err(crate::error::Error::InvalidConfig(errors));
        }
        self.admit_or_yield().await?;
        let pubsub = open(self.manager(), &topics)
            .await
            .map_err(|e| self.connect_failed(e))?;
        let (tx, rx) = mpsc::channel(BUFFER);
        let scope = InPool::new(self.clone(), StreamKind::Subscription);
        let source = Resubscribe {
            topics,
            name: self.name().to_owned(),
        };
        let task = tokio::spawn(streams::run(scope, source, Some(pubsub), tx));
        Ok(Subscription {
            feed: Feed::new(rx, task),
        })
    }
}

/// Opens a pub/sub connection and subscribes, within `connect_timeout`.
async fn open(manager: &RedisConnectionManager, topics: &Topics) -> Result<PubSubStream> {
    let m = &*manager.inner;
    let subscribed = async {
        let client = m.topology.pubsub_client().await?;
        let mut pubsub = client.get_async_pubsub().await?;
        if !topics.channels.is_empty() {
            pubsub.subscribe(&topics.channels).await?;
        }
        if !topics.patterns.is_empty() {
            pubsub.psubscribe(&topics.patterns).await?;
        }
        Ok(pubsub.into_on_message())
    };
    match tokio::time::timeout(m.connect_timeout, subscribed).await {
        Ok(Ok(pubsub)) => Ok(pubsub),
        Ok(Err(e)) => Err(manager.classify(e)),
        Err(_) => Err(manager.classify(super::topology::hung(m.connect_timeout))),
    }
}

/// A subscription's [`Source`]: forwards messages; after a lost connection (or a reload
/// that replaced the connector) the runner subscribes again, and the gap is reported.
struct Resubscribe {
    topics: Topics,
    /// The connector's name, for logs.
    name: String,
}

impl Source<InPool<RedisConnectionManager>> for Resubscribe {
    type Open = PubSubStream;
    type Item = SubscriptionItem;
    const NAME: &'static str = "subscription";

    async fn open(&mut self, scope: &InPool<RedisConnectionManager>) -> Result<PubSubStream> {
        open(scope.pool.manager(), &self.topics).await
    }

    async fn read(
        &mut self,
        scope: &InPool<RedisConnectionManager>,
        messages: &mut PubSubStream,
    ) -> Read<SubscriptionItem> {
        match messages.next().await {
            Some(msg) => Read::One(SubscriptionItem::Message(msg)),
            None => {
                let why = "connection lost";
                tracing::warn!(connector = %scope.pool.name(), kind = "redis", reason = why, "resubscribing");
                Read::Lost(why.into())
            }
        }
    }

    fn reopened(&mut self, down_for: Duration, error: String) -> Option<SubscriptionItem> {
        tracing::info!(connector = %self.name, kind = "redis", ?down_for, "resubscribed");
        Some(SubscriptionItem::Gap { down_for, error })
    }
}
