//! What a command needs, read from its name and arguments: whether it may share the
//! multiplexed connection, needs one of its own, or cannot be sent on the pool at all; and
//! how long it may block, so `command_timeout` does not cut a blocking command short.
//!
//! | commands | on the pool itself (`RedisPool` as a connection) | bound |
//! |---|---|---|
//! | plain commands, pipelines, `atomic()` pipelines | the shared multiplexed connection | `command_timeout` |
//! | `BLPOP`, `BRPOP`, `BLMOVE`, `BRPOPLPUSH`, `BZPOPMIN`, `BZPOPMAX`, `BLMPOP`, `BZMPOP`, `XREAD`/`XREADGROUP` with `BLOCK`, `WAIT`, `WAITAOF` | a pooled connection, for that call | `command_timeout` plus the command's own timeout; none when that is 0 (block forever) |
//! | `WATCH`, `UNWATCH`, `MULTI`, `EXEC`, `DISCARD`, `SELECT`, the `SUBSCRIBE` family, `MONITOR`, `RESET`, `QUIT`, `HELLO`, `AUTH`, `READONLY`, `READWRITE`, `CLIENT REPLY` / `TRACKING` / `CACHING` / `SETNAME` / `NO-EVICT` / `NO-TOUCH` | refused: they change the connection's state for whoever uses it next; use `get()` | |

use std::time::Duration;

use redis::{Arg, Cmd};

/// Where a command goes when it is sent on the pool itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Path {
    /// The shared multiplexed connection.
    Shared,
    /// A pooled connection of its own, for the call: it blocks the connection.
    Own,
    /// Not on the pool: it changes the connection's state. The command's name.
    Refused(&'static str),
}

/// How long a command may block the server's reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Block {
    /// Not at all: it answers at once.
    No,
    /// Up to this long (its own timeout argument).
    For(Duration),
    /// Until something arrives (a timeout argument of 0).
    Forever,
}

impl Block {
    /// The bound for the reply: `command_timeout`, plus the time the command may block.
    pub(super) fn limit(self, command_timeout: Option<Duration>) -> Option<Duration> {
        match self {
            Block::No => command_timeout,
            Block::For(d) => command_timeout.map(|t| t.saturating_add(d)),
            Block::Forever => None,
        }
    }
}

/// The command's name (its first argument), as sent.
pub(super) fn name(cmd: &Cmd) -> Option<&[u8]> {
    match cmd.args_iter().next()? {
        Arg::Simple(name) => Some(name),
        _ => None,
    }
}

/// The command's arguments, its name first (a cursor left out).
fn args(cmd: &Cmd) -> impl Iterator<Item = &[u8]> {
    cmd.args_iter().filter_map(|a| match a {
        Arg::Simple(a) => Some(a),
        _ => None,
    })
}

/// Seconds as the blocking list and sorted-set commands take them (`1.5`).
fn seconds(arg: Option<&[u8]>) -> Block {
    let secs = arg
        .and_then(|a| std::str::from_utf8(a).ok())
        .and_then(|a| a.parse::<f64>().ok());
    match secs {
        Some(0.0) => Block::Forever,
        Some(s) if s.is_finite() && s > 0.0 => Block::For(Duration::from_secs_f64(s)),
        // Not a timeout the server accepts: it answers with an error at once.
        _ => Block::No,
    }
}

/// Milliseconds, as `WAIT` and `XREAD ... BLOCK` take them.
fn millis(arg: Option<&[u8]>) -> Block {
    let ms = arg
        .and_then(|a| std::str::from_utf8(a).ok())
        .and_then(|a| a.parse::<u64>().ok());
    match ms {
        Some(0) => Block::Forever,
        Some(ms) => Block::For(Duration::from_millis(ms)),
        None => Block::No,
    }
}

/// The command's name as this module spells it, when it changes the state of the
/// connection it is sent on. `upper` is upper-case. A `match`, not a list to search: it
/// runs on every command, and compiles to a few comparisons.
fn stateful(upper: &[u8]) -> Option<&'static str> {
    Some(match upper {
        b"WATCH" => "WATCH",
        b"UNWATCH" => "UNWATCH",
        b"MULTI" => "MULTI",
        b"EXEC" => "EXEC",
        b"DISCARD" => "DISCARD",
        b"SELECT" => "SELECT",
        b"SUBSCRIBE" => "SUBSCRIBE",
        b"PSUBSCRIBE" => "PSUBSCRIBE",
        b"SSUBSCRIBE" => "SSUBSCRIBE",
        b"UNSUBSCRIBE" => "UNSUBSCRIBE",
        b"PUNSUBSCRIBE" => "PUNSUBSCRIBE",
        b"SUNSUBSCRIBE" => "SUNSUBSCRIBE",
        b"MONITOR" => "MONITOR",
        b"RESET" => "RESET",
        b"QUIT" => "QUIT",
        b"HELLO" => "HELLO",
        b"AUTH" => "AUTH",
        b"READONLY" => "READONLY",
        b"READWRITE" => "READWRITE",
        _ => return None,
    })
}

/// The `CLIENT` subcommand as this module spells it, when it changes the state of the
/// connection.
fn stateful_client(sub: &[u8]) -> Option<&'static str> {
    const STATEFUL: &[&str] = &[
        "REPLY", "TRACKING", "CACHING", "SETNAME", "NO-EVICT", "NO-TOUCH",
    ];
    STATEFUL
        .iter()
        .copied()
        .find(|n| sub.eq_ignore_ascii_case(n.as_bytes()))
}

/// Where `cmd` goes on the pool, and how long it may block. On every command's path: the
/// name is upper-cased on the stack and matched once.
pub(super) fn classify(cmd: &Cmd) -> (Path, Block) {
    classify_named(cmd, name(cmd))
}

/// [`classify`], for a caller that has read the command's name already.
pub(super) fn classify_named(cmd: &Cmd, name: Option<&[u8]>) -> (Path, Block) {
    let shared = (Path::Shared, Block::No);
    let Some(name) = name else {
        return shared;
    };
    // Most commands start with none of the letters the ones below start with: one look
    // sends them on (`GET`, `INCR`, `LPUSH`, `ZADD`, ...).
    match name.first().map(u8::to_ascii_uppercase) {
        Some(
            b'A' | b'B' | b'C' | b'D' | b'E' | b'H' | b'M' | b'P' | b'Q' | b'R' | b'S' | b'U'
            | b'W' | b'X',
        ) => {}
        _ => return shared,
    }
    // No command this looks for is longer.
    let mut upper = [0u8; 12];
    let Some(upper) = upper.get_mut(..name.len()) else {
        return shared;
    };
    upper.copy_from_slice(name);
    upper.make_ascii_uppercase();
    let last = || args(cmd).last();
    let first_arg = || args(cmd).nth(1);
    match &*upper {
        b"BLPOP" | b"BRPOP" | b"BZPOPMIN" | b"BZPOPMAX" | b"BLMOVE" | b"BRPOPLPUSH" => {
            (Path::Own, seconds(last()))
        }
        b"BLMPOP" | b"BZMPOP" => (Path::Own, seconds(first_arg())),
        b"WAIT" | b"WAITAOF" => (Path::Own, millis(last())),
        b"XREAD" | b"XREADGROUP" => {
            let mut rest = args(cmd).skip(1);
            match rest.position(|a| a.eq_ignore_ascii_case(b"BLOCK")) {
                Some(_) => (Path::Own, millis(rest.next())),
                None => shared,
            }
        }
        b"CLIENT" => match first_arg().and_then(stateful_client) {
            Some(sub) => (Path::Refused(sub), Block::No),
            None => shared,
        },
        other => match stateful(other) {
            Some(n) => (Path::Refused(n), Block::No),
            None => shared,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Block, Path, classify};

    fn of(args: &[&str]) -> (Path, Block) {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        classify(&cmd)
    }

    #[test]
    fn plain_commands_share_the_connection() {
        for c in [
            &["GET", "k"][..],
            &["SET", "k", "v"],
            &["INCR", "k"],
            &["xadd", "s", "*", "f", "v"],
        ] {
            assert_eq!(of(c), (Path::Shared, Block::No), "{c:?}");
        }
        assert_eq!(
            of(&["XREAD", "COUNT", "1", "STREAMS", "s", "0"]).0,
            Path::Shared
        );
        assert_eq!(of(&["CLIENT", "LIST"]).0, Path::Shared);
    }

    #[test]
    fn blocking_commands_take_their_own_and_their_timeout() {
        assert_eq!(of(&["BLPOP", "q", "0"]), (Path::Own, Block::Forever));
        assert_eq!(
            of(&["brpop", "a", "b", "1.5"]),
            (Path::Own, Block::For(Duration::from_millis(1500)))
        );
        assert_eq!(
            of(&["BLMPOP", "2", "2", "a", "b", "LEFT"]),
            (Path::Own, Block::For(Duration::from_secs(2)))
        );
        assert_eq!(
            of(&[
                "XREADGROUP",
                "GROUP",
                "g",
                "c",
                "BLOCK",
                "250",
                "STREAMS",
                "s",
                ">"
            ]),
            (Path::Own, Block::For(Duration::from_millis(250)))
        );
        assert_eq!(of(&["WAIT", "1", "0"]), (Path::Own, Block::Forever));
        assert_eq!(
            Block::For(Duration::from_secs(3)).limit(Some(Duration::from_secs(1))),
            Some(Duration::from_secs(4))
        );
        assert_eq!(Block::Forever.limit(Some(Duration::from_secs(1))), None);
    }

    #[test]
    fn stateful_commands_are_refused() {
        assert_eq!(of(&["WATCH", "k"]).0, Path::Refused("WATCH"));
        assert_eq!(of(&["select", "1"]).0, Path::Refused("SELECT"));
        assert_eq!(of(&["CLIENT", "reply", "OFF"]).0, Path::Refused("REPLY"));
        assert_eq!(of(&["SUBSCRIBE", "c"]).0, Path::Refused("SUBSCRIBE"));
        // The longest names still fit the upper-case buffer.
        assert_eq!(of(&["punsubscribe"]).0, Path::Refused("PUNSUBSCRIBE"));
        assert_eq!(of(&["SUNSUBSCRIBE"]).0, Path::Refused("SUNSUBSCRIBE"));
        assert_eq!(of(&["SOMEVERYLONGCOMMAND", "x"]).0, Path::Shared);
    }

    #[test]
    fn every_stateful_command_in_the_table_is_refused_in_any_case() {
        for name in [
            "WATCH",
            "UNWATCH",
            "MULTI",
            "EXEC",
            "DISCARD",
            "SELECT",
            "SUBSCRIBE",
            "PSUBSCRIBE",
            "SSUBSCRIBE",
            "UNSUBSCRIBE",
            "PUNSUBSCRIBE",
            "SUNSUBSCRIBE",
            "MONITOR",
            "RESET",
            "QUIT",
            "HELLO",
            "AUTH",
            "READONLY",
            "READWRITE",
        ] {
            assert_eq!(of(&[name]).0, Path::Refused(name));
            assert_eq!(of(&[&name.to_lowercase()]).0, Path::Refused(name));
        }
        for sub in [
            "REPLY", "TRACKING", "CACHING", "SETNAME", "NO-EVICT", "NO-TOUCH",
        ] {
            assert_eq!(of(&["client", &sub.to_lowercase()]).0, Path::Refused(sub));
        }
    }
}
