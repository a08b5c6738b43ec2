//! The `db.client.operation.duration` histogram handles of one connector.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use metrics::{Histogram, Label};

use super::{Failure, Op};
use crate::sync::lock;

/// The histogram name OpenTelemetry gives a database client's operations.
const NAME: &str = "db.client.operation.duration";

/// How many handles are kept (one per operation name and outcome); a service sends a
/// few dozen commands at most, and fails them in a few ways. Past that, samples go
/// through the recorder's own lookup (as do those of names too long to [pack](packed)).
const KEPT: usize = 64;

/// What a kept handle is for: the operation name and how it failed, each
/// [packed](packed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    op: u128,
    /// 0 for a success; else `error.type`, with the top bit set when
    /// `db.response.status_code` (the same prefix) is there too.
    failure: u128,
}

impl Key {
    /// The key of an operation, its name [packed](packed) as `op`, ending as `failure`
    /// says; `None` when a name is too long to pack.
    #[inline]
    fn of(op: Option<u128>, failure: Option<&Failure<'_>>) -> Option<Key> {
        let op = op?;
        let failure = match failure {
            None => 0,
            // Every failure has a kind; a status code, when there is one, is that kind.
            Some(f) if f.kind.is_empty() || f.code.is_some_and(|c| c != f.kind) => return None,
            Some(f) => packed(f.kind.as_bytes())? | u128::from(f.code.is_some()) << 127,
        };
        Some(Key { op, failure })
    }
}

/// A key and its handle.
type Kept = (Key, Histogram);

/// A name of up to 15 bytes as one number, its length in the top byte: comparing
/// names is then one comparison, with no call to compare bytes. Every Redis command
/// but a few of the longest fits.
#[inline]
pub(super) fn packed(name: &[u8]) -> Option<u128> {
    if name.len() > 15 {
        return None;
    }
    let bytes = name
        .iter()
        .rev()
        .fold(0u128, |packed, b| packed << 8 | u128::from(*b));
    Some(bytes | (name.len() as u128) << 120)
}

/// The connector's `db.client.operation.duration` handles, one per operation name and
/// outcome, made on first use (install the recorder before the first command). Failures
/// have theirs too: during an outage every call fails, and building a failure's labels
/// and hashing them on each would make a refused call several times dearer.
#[derive(Debug)]
pub(super) struct Histograms {
    labels: Vec<Label>,
    /// By key, in the order first seen: each filled once and never emptied, so a look
    /// is an atomic load and a scan, with no reference count or lock (comparing packed
    /// names beats hashing them).
    kept: Box<[OnceLock<Kept>]>,
    /// How many of `kept` are filled.
    filled: AtomicUsize,
    adding: Mutex<()>,
}

impl Histograms {
    pub(super) fn new(pool: &str, db: u32, server: Option<&(String, u16)>) -> Self {
        let mut labels = vec![
            Label::new("db.system.name", "redis"),
            Label::new("db.namespace", db.to_string()),
            Label::new("db.client.connection.pool.name", pool.to_owned()),
        ];
        if let Some((host, port)) = server {
            labels.push(Label::new("server.address", host.clone()));
            labels.push(Label::new("server.port", port.to_string()));
        }
        Histograms {
            labels,
            kept: (0..KEPT).map(|_| OnceLock::new()).collect(),
            filled: AtomicUsize::new(0),
            adding: Mutex::new(()),
        }
    }

    fn labels(&self, op: &str, failure: Option<&Failure<'_>>) -> Vec<Label> {
        let mut labels = self.labels.clone();
        labels.push(Label::new("db.operation.name", op.to_owned()));
        if let Some(f) = failure {
            labels.push(Label::new("error.type", f.kind.to_owned()));
            if let Some(code) = f.code {
                labels.push(Label::new("db.response.status_code", code.to_owned()));
            }
        }
        labels
    }

    /// Records a sample of `secs` seconds for `op`, which failed if `failure` says so.
    #[cfg(test)]
    fn observe(&self, op: &Op<'_>, failure: Option<&Failure<'_>>, secs: f64) {
        self.observe_packed(op, packed(op.bytes()), failure, secs);
    }

    /// Records a sample of `secs` seconds for `op`, which failed if `failure` says so;
    /// `packed_op` is `op`'s name [packed](packed) when the operation started, while the
    /// name was in the cache (after its round trip, reading it again was most of this
    /// call's cost, at 512 tasks).
    pub(super) fn observe_packed(
        &self,
        op: &Op<'_>,
        packed_op: Option<u128>,
        failure: Option<&Failure<'_>>,
        secs: f64,
    ) {
        let Some(key) = Key::of(packed_op, failure) else {
            metrics::histogram!(NAME, self.labels(&op.name(), failure)).record(secs);
            return;
        };
        if let Some(h) = self.kept(key) {
            h.record(secs);
            return;
        }
        let _one = lock(&self.adding);
        let h = metrics::histogram!(NAME, self.labels(&op.name(), failure));
        h.record(secs);
        // Only under `adding`: another caller may have kept it meanwhile.
        let n = self.filled.load(Ordering::Acquire);
        if n < KEPT && self.kept(key).is_none() && self.kept[n].set((key, h)).is_ok() {
            self.filled.store(n + 1, Ordering::Release);
        }
    }

    /// The handle kept for `key`, if there is one.
    #[inline]
    fn kept(&self, key: Key) -> Option<&Histogram> {
        let n = self.filled.load(Ordering::Acquire);
        self.kept
            .get(..n)?
            .iter()
            .filter_map(OnceLock::get)
            .find(|(k, _)| *k == key)
            .map(|(_, h)| h)
    }
}

#[cfg(test)]
mod tests {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    use super::{Histograms, KEPT, packed};
    use crate::backend::redis::telemetry::{Failure, Op};

    /// A failure's samples carry its kind and status code; each outcome has a histogram
    /// of its own, through a handle kept as a success's is.
    #[test]
    fn failures_are_recorded_by_kind_through_kept_handles() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            let h = Histograms::new("cache", 0, None);
            let lost = Failure {
                kind: "connection_lost",
                code: None,
            };
            let wrong = Failure {
                kind: "WRONGTYPE",
                code: Some("WRONGTYPE"),
            };
            for _ in 0..3 {
                h.observe(&Op::Command(b"GET"), None, 0.001);
                h.observe(&Op::Command(b"GET"), Some(&lost), 0.001);
                h.observe(&Op::Command(b"GET"), Some(&wrong), 0.001);
            }
            let kept = h.filled.load(std::sync::atomic::Ordering::Relaxed);
            assert_eq!(kept, 3, "a handle an outcome");
        });
        let mut samples: Vec<(Vec<(String, String)>, usize)> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter_map(|(key, _, _, value)| match value {
                DebugValue::Histogram(v) => {
                    let labels = key
                        .key()
                        .labels()
                        .filter(|l| l.key().starts_with("error") || l.key().starts_with("db.resp"))
                        .map(|l| (l.key().to_owned(), l.value().to_owned()))
                        .collect();
                    Some((labels, v.len()))
                }
                _ => None,
            })
            .collect();
        samples.sort();
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        assert_eq!(
            samples,
            vec![
                (vec![], 3),
                (
                    vec![
                        pair("error.type", "WRONGTYPE"),
                        pair("db.response.status_code", "WRONGTYPE")
                    ],
                    3
                ),
                (vec![pair("error.type", "connection_lost")], 3),
            ]
        );
    }

    /// Names of up to 15 bytes pack to a number of their own: no two the same, a
    /// prefix or a trailing zero byte included.
    #[test]
    fn short_names_pack_to_numbers_of_their_own() {
        let names: [&[u8]; 9] = [
            b"",
            b"GET",
            b"GETEX",
            b"GET\0",
            b"\0GET",
            b"SET",
            b"get",
            b"ZRANGEBYSCORE",
            b"123456789012345",
        ];
        let keys: Vec<u128> = names.iter().map(|n| packed(n).expect("short")).collect();
        for (i, a) in keys.iter().enumerate() {
            for (j, b) in keys.iter().enumerate() {
                assert_eq!(i == j, a == b, "{:?} and {:?}", names[i], names[j]);
            }
        }
        assert_eq!(packed(b"ZREMRANGEBYSCORE"), None, "16 bytes");
    }

    /// Every operation name gets its samples: the first [`KEPT`] short ones through a
    /// handle kept once each, the rest (and long ones) through the recorder's own
    /// lookup.
    #[test]
    fn every_name_is_recorded_whether_its_handle_is_kept_or_not() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let long = ["ZREMRANGEBYSCORE", "GEORADIUSBYMEMBER_RO"].map(|n| n.as_bytes().to_vec());
        let names: Vec<Vec<u8>> = long
            .into_iter()
            .chain((0..KEPT + 6).map(|i| format!("OP{i}").into_bytes()))
            .collect();
        metrics::with_local_recorder(&recorder, || {
            let h = Histograms::new("cache", 0, None);
            for _ in 0..3 {
                for name in &names {
                    h.observe(&Op::Command(name), None, 0.001);
                }
            }
            assert_eq!(h.filled.load(std::sync::atomic::Ordering::Relaxed), KEPT);
        });
        let samples: Vec<_> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter_map(|(key, _, _, value)| match value {
                DebugValue::Histogram(v) => Some((key, v.len())),
                _ => None,
            })
            .collect();
        assert_eq!(samples.len(), names.len(), "one histogram a name");
        assert!(samples.iter().all(|(_, n)| *n == 3), "{samples:?}");
    }
}
