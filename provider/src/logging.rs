//! Structured logs on stderr (JSON by default). Log events never carry
//! plaintext, DEKs, tokens, JWTs, PINs or ciphertext; key_ids appear only as
//! their hash.

use bao_kms_core::config::{LogFormat, LogLevel};
use tracing_subscriber::EnvFilter;

pub fn init(level: LogLevel, format: LogFormat) {
    let level = match level {
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
    };
    // Only this product's events at the configured level; dependencies at warn.
    let filter = EnvFilter::new(format!("warn,bao_kms_provider={level},bao_kms_core={level}"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
