//! The `db.client.operation.duration` histogram handles of one connector.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use metrics::{Histogram, Label};

use super::{Failure, Op};

/// The histogram name OpenTelemetry gives a database client's operations.
const NAME: &str = "db.client.operation.duration";

/// How many operation names keep a handle; a service sends a few dozen commands at
/// most. Past that, a name's samples go through the recorder's own lookup (as do
/// those of names too long to [pack](packed)).
const KEPT: usize = 64;

/// An operation name [packed](packed) and its handle.
type Kept = (u128, Histogram);

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

/// The connector's `db.client.operation.duration` handles for successful operations,
/// one per operation name, made on first use (install the recorder before the first
/// command).
#[derive(Debug)]
pub(super) struct Histograms {
    labels: Vec<Label>,
    /// By operation name, in the order first seen: each filled once and never
    /// emptied, so a look is an atomic load and a scan, with no reference count or
    /// lock (comparing short names beats hashing them).
    ok: Box<[OnceLock<Kept>]>,
    /// How many of `ok` are filled.
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
            ok: (0..KEPT).map(|_| OnceLock::new()).collect(),
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
    pub(super) fn observe(&self, op: &Op<'_>, failure: Option<&Failure<'_>>, secs: f64) {
        let key = match (op, failure) {
            (Op::Command(name), None) => packed(name),
            (Op::Pipeline { atomic: true, .. }, None) => packed(b"MULTI"),
            (Op::Pipeline { atomic: false, .. }, None) => packed(b"PIPELINE"),
            // Failures are rare: no handle kept for them.
            (_, Some(_)) => None,
        };
        let Some(key) = key else {
            metrics::histogram!(NAME, self.labels(&op.name(), failure)).record(secs);
            return;
        };
        if let Some(h) = self.kept(key) {
            h.record(secs);
            return;
        }
        let _one = self.adding.lock().unwrap_or_else(|p| p.into_inner());
        let h = metrics::histogram!(NAME, self.labels(&op.name(), None));
        h.record(secs);
        // Only under `adding`: another caller may have kept it meanwhile.
        let n = self.filled.load(Ordering::Acquire);
        if n < KEPT && self.kept(key).is_none() && self.ok[n].set((key, h)).is_ok() {
            self.filled.store(n + 1, Ordering::Release);
        }
    }

    /// The handle kept for `key`, if there is one.
    #[inline]
    fn kept(&self, key: u128) -> Option<&Histogram> {
        let n = self.filled.load(Ordering::Acquire);
        self.ok
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
    use crate::backend::redis::telemetry::Op;

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
