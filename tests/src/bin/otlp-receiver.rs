//! A standalone OTLP/gRPC receiver (`bao_kms_system_tests::otlp_receiver`)
//! for measuring the provider with OTLP export on: prints its endpoint,
//! then, on SIGINT or SIGTERM, how many export calls, spans and metric
//! points it received, as one JSON line.
//!
//! Usage: otlp-receiver

use bao_kms_system_tests::otlp_receiver::OtlpReceiver;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let receiver = OtlpReceiver::start().await?;
    println!("{}", receiver.endpoint());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    let (traces, metrics) = receiver.exports();
    let summary = serde_json::json!({
        "traceExports": traces,
        "metricExports": metrics,
        "spans": receiver.spans().len(),
        "metricPoints": receiver.points().len(),
    });
    println!("{summary}");
    Ok(())
}
