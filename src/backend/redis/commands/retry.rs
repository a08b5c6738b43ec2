//! The retry rule for commands on the pool: a command whose connection was lost under it
//! is sent again on a fresh connection (up to `command_retries` times) only when that
//! cannot apply it twice: the server's own `COMMAND INFO` flags it `readonly`, or it was
//! sent through [`RedisPool::idempotent`](crate::RedisPool::idempotent). A write that may
//! have reached the server is not sent again: its error says it may have been applied.
//! A read given up on a Redis Cluster replica that stopped answering is sent again the
//! same way (reads keep away from that replica by then).

use std::collections::HashMap;
use std::sync::Mutex;

use redis::{RedisError, RedisResult, Value};

use super::{Reply, Sent};
use crate::backend::redis::errors::{lost, maybe_applied, not_known_to_read, unanswered};
use crate::backend::redis::link::Link;
use crate::backend::redis::nodes;
use crate::backend::redis::{
    PooledRedisConnection, RedisConnectionManager, RedisPool, SharedRedisConnection, route,
};
use crate::pool::Dedicated;
use crate::sync::lock;

/// What the server said of each command's flags (`readonly` or not), by upper-case name.
#[derive(Debug, Default)]
pub(in crate::backend::redis) struct ReadOnly(Mutex<HashMap<Box<[u8]>, bool>>);

impl ReadOnly {
    fn known(&self, name: &[u8]) -> Option<bool> {
        let seen = lock(&self.0);
        seen.get(&*name.to_ascii_uppercase()).copied()
    }

    fn learn(&self, name: &[u8], readonly: bool) {
        let mut seen = lock(&self.0);
        seen.insert(name.to_ascii_uppercase().into(), readonly);
    }
}

/// True when `COMMAND INFO`'s reply flags the command `readonly`.
fn flagged_readonly(info: &Value) -> bool {
    let Value::Array(commands) = info else {
        return false;
    };
    let Some(Value::Array(fields)) = commands.first() else {
        return false;
    };
    let flags = match fields.get(2) {
        Some(Value::Array(f) | Value::Set(f)) => f,
        _ => return false,
    };
    flags.iter().any(|f| match f {
        Value::SimpleString(s) => s.eq_ignore_ascii_case("readonly"),
        Value::BulkString(b) => b.eq_ignore_ascii_case(b"readonly"),
        _ => false,
    })
}

/// Where a command that failed with `e` (on the kind of connection `via` says) ends: sent
/// again when its connection was lost and that is safe, or when it was a read given up
/// on a silent replica ([`retried`]); a timeout of one not known to be read-only says a
/// write may have been applied (the server may still be working on it, and it is not
/// sent again); any other error as it is.
pub(super) async fn settled(
    pool: &RedisPool,
    sent: Sent<'_>,
    any: bool,
    via: Via,
    e: RedisError,
) -> RedisResult<Reply> {
    // Only commands the server flags read-only are given up this way.
    if nodes::is_read_given_up(&e) {
        return retried(pool, sent, true, via, e).await;
    }
    if lost(&e) {
        return retried(pool, sent, any, via, e).await;
    }
    if e.is_timeout()
        && !nodes::is_given_up(&e)
        && !any
        && pool.current().manager().readonly_known(sent) != Some(true)
    {
        return Err(unanswered(e));
    }
    Err(e)
}

/// The names of the commands in `sent`.
fn names<'a>(sent: Sent<'a>) -> Vec<&'a [u8]> {
    match sent {
        Sent::Command(cmd) => route::name(cmd).into_iter().collect(),
        Sent::Pipeline(p, ..) => p.cmd_iter().filter_map(route::name).collect(),
    }
}

impl RedisConnectionManager {
    /// What is known already of whether every command in `sent` is read-only: `Some`
    /// when that needs no question to the server, `None` when it does.
    fn readonly_known(&self, sent: Sent<'_>) -> Option<bool> {
        let names = names(sent);
        if names.is_empty() {
            return Some(false);
        }
        let mut all = true;
        for name in names {
            match self.inner.readonly.known(name) {
                Some(false) => return Some(false),
                Some(true) => {}
                None => all = false,
            }
        }
        all.then_some(true)
    }

    /// Whether every command in `sent` is read-only, as the server says; asked on `conn`
    /// the first time a command is seen. `None` when the server could not be asked
    /// (no connection to ask on, or the question failed).
    async fn readonly(&self, mut conn: Option<&mut Fresh>, sent: Sent<'_>) -> Option<bool> {
        let names = names(sent);
        if names.is_empty() {
            return Some(false);
        }
        let m = &*self.inner;
        for name in names {
            let readonly = match m.readonly.known(name) {
                Some(r) => r,
                None => {
                    let conn = conn.as_deref_mut()?;
                    let ask = redis::cmd("COMMAND").arg("INFO").arg(name).clone();
                    let info = conn.link().send(&ask).await.ok()?;
                    let r = flagged_readonly(&info);
                    m.readonly.learn(name, r);
                    r
                }
            };
            if !readonly {
                return Some(false);
            }
        }
        Some(true)
    }
}

/// Where a command that met a lost connection goes again: where it went the first time.
#[derive(Debug, Clone, Copy)]
pub(super) enum Via {
    /// The shared connection (or, at a connection cap, one of the pool's own).
    Shared,
    /// A connection of its own: a blocking command, or any at a connection cap.
    Own,
}

/// A connection to send a command again on.
enum Fresh {
    /// A shared connection opened after the lost one was retired.
    Shared(SharedRedisConnection),
    /// A connection opened for this call.
    Dedicated(Dedicated<RedisConnectionManager>),
    /// One of the pool's own, at a connection cap, where no new connection opens.
    Pooled(PooledRedisConnection),
}

impl Fresh {
    /// A connection of the kind `via` says, opened now (another idle one may have been
    /// lost to the same failure); at a connection cap, one of the pool's own. `None` when
    /// none can be had now.
    async fn open(pool: &RedisPool, via: Via) -> Option<Fresh> {
        let opened = match via {
            Via::Shared => pool.multiplexed().await.map(Fresh::Shared),
            Via::Own => pool.dedicated().await.map(Fresh::Dedicated),
        };
        match opened {
            Ok(fresh) => Some(fresh),
            Err(_) if pool.current().limited() => pool.get().await.ok().map(Fresh::Pooled),
            Err(_) => None,
        }
    }

    fn link(&mut self) -> &mut Link {
        match self {
            Fresh::Shared(c) => &mut c.inner,
            Fresh::Dedicated(c) => &mut c.inner,
            Fresh::Pooled(c) => &mut c.inner,
        }
    }

    async fn send(&mut self, sent: Sent<'_>) -> RedisResult<Reply> {
        match self {
            Fresh::Shared(c) => sent.on_shared(c).await,
            Fresh::Dedicated(c) => sent.on_own(c).await,
            Fresh::Pooled(c) => sent.on_own(c).await,
        }
    }
}

/// After `sent` met a lost connection (`e`) on the kind of connection `via` says: sends
/// it again on a fresh one of that kind, up to `command_retries` times, when that cannot
/// apply it twice. A command that is not known to be safe to send twice fails saying it
/// may have been applied, whether retries are on or not; one the server could not be
/// asked about (it went away too) says that instead.
async fn retried(
    pool: &RedisPool,
    sent: Sent<'_>,
    any: bool,
    via: Via,
    e: RedisError,
) -> RedisResult<Reply> {
    let mut e = e;
    let mut retries = 0;
    loop {
        let this = pool.current();
        let m = this.manager();
        // No connection is opened when what is known already decides.
        let known = if any {
            Some(true)
        } else {
            m.readonly_known(sent)
        };
        match known {
            Some(false) => return Err(maybe_applied(e)),
            Some(true) if retries >= m.inner.resends.limit() => return Err(e),
            _ => {}
        }
        let mut fresh = Fresh::open(pool, via).await;
        if known.is_none() {
            match m.readonly(fresh.as_mut(), sent).await {
                Some(true) => {}
                Some(false) => return Err(maybe_applied(e)),
                // A read is not "applied": say what is not known, and why.
                None => return Err(not_known_to_read(e)),
            }
        }
        let Some(mut fresh) = fresh.filter(|_| retries < m.inner.resends.limit()) else {
            return Err(e);
        };
        retries += 1;
        m.inner.resends.counted(&e);
        match fresh.send(sent).await {
            Err(again) if lost(&again) || nodes::is_read_given_up(&again) => e = again,
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests {
    use redis::Value;

    use super::flagged_readonly;

    #[test]
    fn readonly_is_read_from_command_info_flags() {
        let info = |flags: Vec<Value>, set: bool| {
            let flags = if set {
                Value::Set(flags)
            } else {
                Value::Array(flags)
            };
            Value::Array(vec![Value::Array(vec![
                Value::BulkString(b"get".to_vec()),
                Value::Int(2),
                flags,
            ])])
        };
        let readonly = vec![
            Value::SimpleString("readonly".into()),
            Value::SimpleString("fast".into()),
        ];
        let write = vec![Value::SimpleString("write".into())];
        assert!(flagged_readonly(&info(readonly.clone(), false)));
        assert!(flagged_readonly(&info(readonly, true)));
        assert!(!flagged_readonly(&info(write, false)));
        assert!(!flagged_readonly(&Value::Array(vec![Value::Nil])));
    }
}
