//! Commands on a `RedisPool` under OpenTelemetry's database-client conventions: a span and
//! a `db.client.operation.duration` sample per command or pipeline, with the attributes
//! the conventions name, and never an argument or a password.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use connhub::redis::AsyncCommands;
use connhub::testkit::RedisServer;
use connhub::{Manager, Secret};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// A span's name and fields.
type Seen = (String, BTreeMap<String, String>);

/// Every span's fields, by span, in the order the spans were made.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<Seen>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

/// Where a span's fields are kept: its index in [`Spans`].
struct Index(usize);

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let mut all = self.0.lock().unwrap();
        all.push((attrs.metadata().name().to_owned(), fields));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Index(all.len() - 1));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let ext = span.extensions();
        let Some(Index(i)) = ext.get::<Index>() else {
            return;
        };
        let mut all = self.0.lock().unwrap();
        values.record(&mut Fields(&mut all[*i].1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_command_has_a_span_and_a_duration_sample_with_no_argument() {
    let spans = Spans::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(spans.clone()))
        .unwrap();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::set_global_recorder(recorder).unwrap();

    let server = RedisServer::builder()
        .password("s3cret-pass")
        .start()
        .unwrap();
    let manager = Manager::new();
    let mut c = server.config();
    c.password = Some(Secret::new("s3cret-pass"));
    c.db = 2;
    let mut cache = manager.add_redis("cache", c).await.unwrap();
    let _: () = cache.set("user:42", "private-value").await.unwrap();
    let _: Option<String> = AsyncCommands::get(&mut cache, "user:42").await.unwrap();
    let _: (i64, i64) = connhub::redis::pipe()
        .incr("n", 1)
        .incr("n", 1)
        .query_async(&mut cache)
        .await
        .unwrap();
    let wrong: Result<i64, _> = cache.incr("user:42", 1).await;
    assert!(wrong.is_err());
    // A transaction with a command the server refuses: the other command is applied, and
    // the operation is a failure.
    let wrong: Result<((), i64), _> = connhub::redis::pipe()
        .atomic()
        .set("m", "text")
        .incr("m", 1)
        .query_async(&mut cache)
        .await;
    assert!(wrong.is_err());
    // A command that takes a second by the server's own clock: `BLPOP` on an empty list,
    // timed out by its argument.
    let waited = std::time::Instant::now();
    let none: Option<(String, String)> = cache.blpop("empty", 1.0).await.unwrap();
    let waited = waited.elapsed().as_secs_f64();
    assert_eq!(none, None);

    let all = spans.0.lock().unwrap().clone();
    let ops: Vec<_> = all
        .iter()
        .filter(|(name, _)| name == "redis.command")
        .map(|(_, f)| f)
        .collect();
    let op = |name: &str| {
        ops.iter()
            .find(|f| f.get("db.operation.name").map(String::as_str) == Some(name))
            .unwrap_or_else(|| panic!("no span for {name} in {ops:#?}"))
    };
    let port = server.port().to_string();
    for name in ["SET", "GET", "PIPELINE", "INCRBY"] {
        let f = op(name);
        assert_eq!(f["otel.name"], name);
        assert_eq!(f["db.system.name"], "redis");
        assert_eq!(f["db.namespace"], "2");
        assert_eq!(f["server.address"], "127.0.0.1");
        assert_eq!(f["server.port"], port);
    }
    assert_eq!(op("PIPELINE")["db.operation.batch.size"], "2");
    assert!(!op("GET").contains_key("error.type"));
    assert_eq!(op("INCRBY")["error.type"], "ERR");
    assert_eq!(op("INCRBY")["db.response.status_code"], "ERR");
    assert_eq!(op("MULTI")["db.operation.batch.size"], "2");
    assert_eq!(op("MULTI")["error.type"], "ERR");
    assert!(!op("PIPELINE").contains_key("error.type"));
    let printed = format!("{all:?}");
    for secret in ["user:42", "private-value", "s3cret-pass"] {
        assert!(!printed.contains(secret), "{secret} in a span: {printed}");
    }

    let samples: Vec<_> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == "db.client.operation.duration")
        .map(|(key, _, _, value)| {
            let labels: BTreeMap<String, String> = key
                .key()
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            (labels, value)
        })
        .collect();
    let sample = |name: &str, failed: bool| {
        samples
            .iter()
            .find(|(l, _)| {
                l.get("db.operation.name").map(String::as_str) == Some(name)
                    && l.contains_key("error.type") == failed
            })
            .unwrap_or_else(|| panic!("no {name} sample in {samples:#?}"))
    };
    for name in ["SET", "GET", "PIPELINE"] {
        let (labels, value) = sample(name, false);
        assert_eq!(labels["db.system.name"], "redis");
        assert_eq!(labels["db.namespace"], "2");
        assert_eq!(labels["server.address"], "127.0.0.1");
        assert_eq!(labels["server.port"], port);
        assert!(
            matches!(value, DebugValue::Histogram(v) if v.len() == 1 && v[0].into_inner() > 0.0),
            "{name}: {value:?}"
        );
    }
    // The duration is in seconds, and is the command's: about the second it waited
    // (the server rounds its timeout to its own 10 Hz tick), not more than the caller saw
    // (give or take the two clocks' calibration).
    let (_, blpop) = sample("BLPOP", false);
    assert!(
        matches!(blpop, DebugValue::Histogram(v)
            if v.len() == 1 && (0.8..=waited + 0.1).contains(&v[0].into_inner())),
        "BLPOP waited {waited} s: {blpop:?}"
    );
    let (failed, _) = sample("INCRBY", true);
    assert_eq!(failed["error.type"], "ERR");
    let (failed, _) = sample("MULTI", true);
    assert_eq!(failed["db.response.status_code"], "ERR");
    let printed = format!("{samples:?}");
    for secret in ["user:42", "private-value", "s3cret-pass"] {
        assert!(!printed.contains(secret), "{secret} in a metric: {printed}");
    }
    manager.close().await.unwrap();
}
