//! Where a command's key is and whether it only reads, as the server's `COMMAND` reply
//! says, and which cluster slot a key is in: enough to tell, before sending, that a
//! command goes to a master that does not answer, or may go to a replica.

use std::collections::{HashMap, HashSet};

use redis::{Cmd, Value};

/// Commands whose first key is at a fixed position, and those flagged `readonly`, by
/// lowercase name: from the server's `COMMAND` reply, so a command it added is known too.
#[derive(Debug, Default)]
pub(super) struct KeySpecs {
    first_key: HashMap<Vec<u8>, usize>,
    readonly: HashSet<Vec<u8>>,
}

impl KeySpecs {
    /// From a `COMMAND` reply: each entry's name, flags and first key position. Commands
    /// with no key, or keys found by parsing their arguments (`movablekeys`: `EVAL`,
    /// `XREAD`, ...), are left out. `None` for a reply of another shape.
    pub(super) fn parse(reply: &Value) -> Option<KeySpecs> {
        let Value::Array(entries) = reply else {
            return None;
        };
        let mut specs = HashMap::with_capacity(entries.len());
        let mut readonly = HashSet::new();
        for entry in entries {
            let Value::Array(fields) = entry else {
                return None;
            };
            let [name, _arity, flags, Value::Int(first), ..] = fields.as_slice() else {
                return None;
            };
            let (Some(name), Some(flags)) = (text(name), list(flags)) else {
                return None;
            };
            let flagged = |flag: &[u8]| flags.iter().any(|f| f.eq_ignore_ascii_case(flag));
            if flagged(b"readonly") {
                readonly.insert(name.to_ascii_lowercase());
            }
            if let Ok(first @ 1..) = usize::try_from(*first)
                && !flagged(b"movablekeys")
            {
                specs.insert(name.to_ascii_lowercase(), first);
            }
        }
        Some(KeySpecs {
            first_key: specs,
            readonly,
        })
    }

    /// True when `cmds` is not empty and the server flags every one of them `readonly`.
    pub(super) fn reads_only<'a>(&self, cmds: impl Iterator<Item = &'a Cmd>) -> bool {
        let mut any = false;
        for cmd in cmds {
            let read = name(cmd).is_some_and(|n| self.readonly.contains(&n.to_ascii_lowercase()));
            if !read {
                return false;
            }
            any = true;
        }
        any
    }

    /// The key `cmd` is sent for, when its command has one at a known position.
    pub(super) fn key<'a>(&self, cmd: &'a Cmd) -> Option<&'a [u8]> {
        let mut args = simple_args(cmd);
        let name = args.next()??;
        let lower = name.to_ascii_lowercase();
        let at = *self.first_key.get(&lower)?;
        args.nth(at - 1)?
    }
}

fn simple_args(cmd: &Cmd) -> impl Iterator<Item = Option<&[u8]>> {
    cmd.args_iter().map(|a| match a {
        redis::Arg::Simple(a) => Some(a),
        _ => None,
    })
}

fn name(cmd: &Cmd) -> Option<&[u8]> {
    simple_args(cmd).next()?
}

fn text(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn list(v: &Value) -> Option<Vec<&[u8]>> {
    match v {
        Value::Array(items) | Value::Set(items) => items.iter().map(text).collect(),
        _ => None,
    }
}

/// The cluster slot of `key`: CRC16 of its hash tag (the part between the first `{` and
/// the next `}`, when not empty) or of the whole key, modulo 16384, as the redis crate
/// computes it.
pub(super) fn slot(key: &[u8]) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(hashtag(key).unwrap_or(key)) % 16384
}

fn hashtag(key: &[u8]) -> Option<&[u8]> {
    let open = key.iter().position(|b| *b == b'{')?;
    let rest = &key[open + 1..];
    let close = rest.iter().position(|b| *b == b'}')?;
    (close > 0).then(|| &rest[..close])
}

#[cfg(test)]
mod tests {
    use redis::Value;
    use redis::cluster_routing::Slot;

    use super::{KeySpecs, slot};

    /// The slot of a key is the one the redis crate routes it to.
    #[test]
    fn slots_match_the_redis_crates() {
        let keys = [
            "", "a", "user:1", "{user}:1", "x{user}y", "{}x", "a{b", "}{c}", "{{x}}",
        ];
        let many = (0..2000).map(|i| format!("k{i}{{t{}}}", i % 7));
        for key in keys.iter().map(|k| (*k).to_owned()).chain(many) {
            assert_eq!(
                Slot::new(slot(key.as_bytes())),
                Some(Slot::for_key(&key)),
                "{key:?}"
            );
        }
    }

    fn entry(name: &str, flags: &[&str], first: i64) -> Value {
        Value::Array(vec![
            Value::BulkString(name.as_bytes().to_vec()),
            Value::Int(2),
            Value::Array(
                flags
                    .iter()
                    .map(|f| Value::SimpleString((*f).to_owned()))
                    .collect(),
            ),
            Value::Int(first),
            Value::Int(first),
            Value::Int(1),
        ])
    }

    /// A command's key is found where the server says; commands with movable keys or
    /// none are not guessed at.
    #[test]
    fn keys_are_found_where_the_server_says() {
        let reply = Value::Array(vec![
            entry("get", &["readonly", "fast"], 1),
            entry("xread", &["readonly", "movablekeys"], 0),
            entry("ping", &["fast"], 0),
            entry("object", &["readonly"], 2),
        ]);
        let specs = KeySpecs::parse(&reply).expect("specs");
        assert_eq!(
            specs.key(&redis::cmd("GET").arg("k1").clone()),
            Some(&b"k1"[..])
        );
        let object = redis::cmd("OBJECT").arg("ENCODING").arg("k2").clone();
        assert_eq!(specs.key(&object), Some(&b"k2"[..]));
        let xread = redis::cmd("XREAD").arg("STREAMS").arg("s").arg("0").clone();
        assert_eq!(specs.key(&xread), None);
        assert_eq!(specs.key(&redis::cmd("PING")), None);
        assert_eq!(specs.key(&redis::cmd("GET")), None, "no key given");
        assert!(KeySpecs::parse(&Value::Nil).is_none());
        // Only what the server flags `readonly` reads only; an empty batch is no read.
        let get = redis::cmd("get").arg("k").clone();
        let set = redis::cmd("SET").arg("k").arg(1).clone();
        assert!(specs.reads_only([&get, &object, &xread].into_iter()));
        assert!(!specs.reads_only([&get, &set].into_iter()));
        assert!(!specs.reads_only([&redis::cmd("PING")].into_iter()));
        assert!(!specs.reads_only(std::iter::empty()));
    }
}
