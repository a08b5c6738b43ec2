//! The errors of commands the node monitor refused or gave up, each told apart from any
//! other error by its type inside the I/O error the redis crate shows.

use std::sync::Arc;
use std::time::Duration;

use super::STALLED;

/// A command given up because a master stopped answering while it waited, or the
/// slots moved to other masters (a failover): a timeout
/// ([`redis::RedisError::is_timeout`]) that may have been applied.
#[derive(Debug, thiserror::Error)]
#[error(
    "{why}; the command was given up after {after:?} and may have been applied",
    why = match masters {
        Some(m) => format!("Redis Cluster master {m} stopped answering"),
        None => "the Redis Cluster's slots moved to other masters while it waited".to_owned(),
    }
)]
pub(super) struct GivenUp {
    /// The masters down, `host:port`; `None` when slots moved.
    masters: Option<String>,
    after: Duration,
}

/// A command not sent, because the master serving its key's slot does not answer: safe
/// to send again, on its replica once that has taken over.
#[derive(Debug, thiserror::Error)]
#[error(
    "Redis Cluster master {master}, which serves slot {slot}, does not answer; the command \
     was not sent"
)]
pub(super) struct NotSent {
    master: String,
    slot: u16,
}

/// A read given up while a node it may have gone to (a replica) does not answer: it
/// changes nothing, so it is safe to send again, and reads keep away from that node
/// now. Neither a timeout nor a lost connection, so the cluster connection is kept.
#[derive(Debug, thiserror::Error)]
#[error(
    "Redis Cluster node {silent} stopped answering; the read was given up after {after:?} \
     (a read changes nothing: it is safe to send again)"
)]
pub(super) struct ReadGivenUp {
    /// The nodes that do not answer, `host:port`.
    silent: String,
    after: Duration,
}

/// True for the error of a read [given up](ReadGivenUp) on a replica.
pub(in crate::backend::redis) fn is_read_given_up(e: &redis::RedisError) -> bool {
    inner_io(e).is_some_and(|inner| inner.is::<ReadGivenUp>())
}

/// What is inside the I/O error behind `e`, if any.
fn inner_io(e: &redis::RedisError) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
    // The crate keeps the I/O error behind an `Arc`, which is the source it shows.
    type Shown = Arc<dyn std::error::Error + Send + Sync>;
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<Shown>())
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .and_then(|io| io.get_ref())
}

/// True for the error of a command [given up](GivenUp).
pub(in crate::backend::redis) fn is_given_up(e: &redis::RedisError) -> bool {
    inner_io(e).is_some_and(|inner| inner.is::<GivenUp>())
}

/// A command for `slot`, whose master does not answer at all, not sent.
pub(super) fn not_sent(master: String, slot: u16) -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::HostUnreachable,
        NotSent { master, slot },
    ))
}

/// A command given up after [`STALLED`] while `masters` answered nothing (`None`: slots
/// moved while it waited).
pub(super) fn given_up(masters: Option<String>) -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        GivenUp {
            masters,
            after: STALLED,
        },
    ))
}

/// A read given up after [`STALLED`] while `silent` answered nothing.
pub(super) fn read_given_up(silent: String) -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::HostUnreachable,
        ReadGivenUp {
            silent,
            after: STALLED,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::{given_up, is_given_up, is_read_given_up, not_sent, read_given_up};

    /// A command given up is told apart from any other timeout, and says it may have
    /// been applied.
    #[test]
    fn a_given_up_command_is_a_timeout_told_apart() {
        let e = given_up(Some("10.0.0.1:7000".to_owned()));
        assert!(e.is_timeout());
        assert!(is_given_up(&e));
        assert!(!is_read_given_up(&e));
        assert!(e.to_string().contains("may have been applied"), "{e}");
        assert!(e.to_string().contains("10.0.0.1:7000"), "{e}");
        let moved = given_up(None).to_string();
        assert!(moved.contains("slots moved"), "{moved}");
        let other = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert!(!is_given_up(&other));
    }

    /// A command refused before it was sent is neither a timeout nor a lost connection:
    /// the pool's retry rule leaves it alone, and its error says it was not sent.
    #[test]
    fn a_command_not_sent_is_neither_a_timeout_nor_a_lost_connection() {
        let e = not_sent("10.0.0.1:7000".to_owned(), 866);
        assert!(!e.is_timeout());
        assert!(!e.is_connection_dropped());
        assert!(!e.is_unrecoverable_error());
        assert!(!is_given_up(&e));
        assert!(!is_read_given_up(&e));
        let shown = e.to_string();
        assert!(
            shown.contains("10.0.0.1:7000") && shown.contains("slot 866"),
            "{shown}"
        );
        assert!(shown.contains("was not sent"), "{shown}");
    }

    /// A read given up while a node is silent is told apart from every other error: not
    /// a timeout nor a lost connection (the cluster connection is kept), and it says it
    /// is safe to send again.
    #[test]
    fn a_read_given_up_is_safe_to_send_again() {
        let e = read_given_up("10.0.0.2:7000".to_owned());
        assert!(is_read_given_up(&e));
        assert!(!is_given_up(&e));
        assert!(!e.is_timeout());
        assert!(!e.is_connection_dropped());
        let shown = e.to_string();
        assert!(shown.contains("10.0.0.2:7000"), "{shown}");
        assert!(shown.contains("safe to send again"), "{shown}");
    }
}
