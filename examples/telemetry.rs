//! Commands on a `RedisPool`, traced and measured under OpenTelemetry's database-client
//! names, exported the way a service would: spans printed by `tracing-subscriber` (a
//! `tracing-opentelemetry` layer takes the same spans to an OTLP collector), and the
//! `db.client.operation.duration` histogram rendered by the Prometheus exporter (what a
//! `/metrics` route would serve).
//!
//! ```text
//! cargo run --example telemetry --features testkit,metrics
//! ```

use connhub::Manager;
use connhub::redis::AsyncCommands;
use connhub::testkit::RedisServer;
use tracing_subscriber::fmt::format::FmtSpan;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Each command's span, printed when it closes, with its fields.
    tracing_subscriber::fmt()
        .with_span_events(FmtSpan::CLOSE)
        .with_target(false)
        .init();
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;

    let server = RedisServer::start()?;
    let manager = Manager::new();
    let mut cache = manager.add_redis("cache", server.config()).await?;

    let _: () = cache.set("user:42:name", "Ada").await?;
    let name: Option<String> = AsyncCommands::get(&mut cache, "user:42:name").await?;
    let (_, visits): ((), i64) = connhub::redis::pipe()
        .set("user:42:seen", "now")
        .incr("user:42:visits", 1)
        .query_async(&mut cache)
        .await?;
    let wrong: Result<i64, _> = cache.incr("user:42:name", 1).await;
    println!("name {name:?}, visits {visits}, INCR on a string: {wrong:?}\n");

    let rendered = prometheus.render();
    let samples: Vec<&str> = rendered
        .lines()
        .filter(|l| l.starts_with("db_client_operation_duration"))
        .collect();
    println!("# the histogram, as a Prometheus scrape shows it");
    for line in &samples {
        println!("{line}");
    }
    // The example checks itself, so `make test` notices when telemetry breaks.
    for expected in [
        "db_operation_name=\"GET\"",
        "db_operation_name=\"PIPELINE\"",
        "error_type=\"ERR\"",
    ] {
        if !samples.iter().any(|l| l.contains(expected)) {
            return Err(format!("no db.client.operation.duration sample with {expected}").into());
        }
    }
    if rendered.contains("Ada") || rendered.contains("user:42") {
        return Err("an argument reached the metrics".into());
    }
    manager.close().await?;
    Ok(())
}
