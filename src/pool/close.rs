//! Close and drain: refuse new checkouts, stop the health task, wait up to
//! `drain_timeout` for checked-out connections to come back, drop the idle ones.

use std::time::Duration;

use tokio::time::Instant;

use super::{Bb8Manager, Inner, Pool};
use crate::error::Result;
use crate::health::Input;
use crate::status::State;

impl<M: Bb8Manager> Pool<M> {
    /// Closes the pool: the health task stops, new checkouts are refused with
    /// [`Error::Closed`](crate::Error::Closed), and this waits up to `drain_timeout` for
    /// checked-out connections to come back (woken as each one does). Idle connections
    /// are dropped. Calling it again does nothing.
    pub async fn close(&self) -> Result<()> {
        let inner = &*self.inner;
        let h = &*inner.health;
        if h.state() == State::Closed {
            return Ok(());
        }
        h.apply(Input::Close, None);
        inner.turns().close();
        let deadline = Instant::now() + h.config.drain_timeout;
        loop {
            let returned = inner.turns().returned();
            let s = inner.bb8.state();
            if s.connections <= s.idle_connections {
                break;
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    connector = %h.name,
                    in_use = s.connections - s.idle_connections,
                    "drain timeout reached with connections still checked out"
                );
                break;
            }
            // A health check in flight holds a connection without a turn: look again now
            // and then for that one.
            let look_again = deadline.min(Instant::now() + Duration::from_millis(100));
            tokio::select! {
                () = returned => {}
                () = tokio::time::sleep_until(look_again) => {}
            }
        }
        inner.drop_idle().await;
        Ok(())
    }

    /// Completes when the connector is closed: long-lived streams end then.
    pub(crate) async fn closed(&self) {
        self.inner.health.until_closed().await;
    }
}

impl<M: Bb8Manager> Inner<M> {
    /// Drops every idle connection. Once the pool is closed each one fails validation, so
    /// a checkout drops them one after the other, before it would ask for a new one; the
    /// checkout is given this task's own waker, and left at that point.
    async fn drop_idle(&self) {
        let mut get = std::pin::pin!(self.bb8.get());
        std::future::poll_fn(|cx| {
            let _ = get.as_mut().poll(cx);
            std::task::Poll::Ready(())
        })
        .await;
    }
}
