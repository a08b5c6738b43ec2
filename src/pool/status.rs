//! A pool's [`Status`]: its connector's state and last check, and bb8's counters.

use super::{Bb8Manager, Inner};
use crate::status::{PoolCounts, Status};

impl<M: Bb8Manager> Inner<M> {
    pub(super) fn status(&self) -> Status {
        let h = &*self.health;
        let s = self.bb8.state();
        let st = &s.statistics;
        let (latency, at) = h.last_check();
        Status {
            name: h.name.clone(),
            kind: h.kind.clone(),
            state: h.state(),
            required: h.config.required,
            endpoint: self.parts.backend.endpoint(),
            pool: PoolCounts {
                max_size: self.bb8.config().max_size,
                limit: h.limit(),
                min_idle: self.bb8.config().min_idle.unwrap_or(0),
                pending: self.turns().waiting(),
                connections: s.connections,
                idle: s.idle_connections,
                in_use: s.connections.saturating_sub(s.idle_connections),
                gets: st.get_direct + st.get_waited,
                gets_waited: st.get_waited,
                gets_timed_out: st.get_timed_out,
                wait_time: st.get_wait_time,
                connections_created: st.connections_created
                    + self.added.load(std::sync::atomic::Ordering::Relaxed),
                // Every connection that failed validation is counted here too: the
                // adapter retires it, so bb8 counts it as broken when it drops it.
                connections_closed_broken: st.connections_closed_broken,
                connections_closed_idle: st.connections_closed_idle_timeout,
                connections_closed_lifetime: st.connections_closed_max_lifetime,
                leaks: self.leaks.as_ref().map_or(0, |l| l.reported()),
            },
            streams: self.streams.counts(),
            last_check_latency: latency,
            last_check_at: at,
            last_error: h.last_error().map(|e| e.to_string()),
            last_connect_error: h.last_connect_error().map(|e| e.to_string()),
            reconnect_attempts: h.reconnect_attempts(),
            retried_commands: self.parts.backend.retried_commands(),
        }
    }
}
