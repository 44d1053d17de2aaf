//! Structured logs on stderr (JSON by default). Log events never carry
//! plaintext, DEKs, tokens, JWTs, PINs or ciphertext; key_ids appear only as
//! their hash.

use std::fmt;

use bao_kms_core::config::{LogFormat, LogLevel};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

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
        LogFormat::Json => builder.event_format(JsonLine).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// One JSON object per event: `ts` (RFC 3339, UTC), `level` (lower case),
/// then the event's fields in the order written (`message` first), as the
/// interface's stable log fields name them.
pub struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut ts = String::new();
        SystemTime.format_time(&mut Writer::new(&mut ts))?;
        let mut line = Line(String::with_capacity(256));
        line.0.push('{');
        line.put("ts", serde_json::Value::from(ts));
        line.put("level", event.metadata().level().as_str().to_ascii_lowercase().into());
        event.record(&mut line);
        line.0.push('}');
        writeln!(writer, "{}", line.0)
    }
}

/// The JSON object being written, without its closing brace.
struct Line(String);

impl Line {
    fn put(&mut self, name: &str, value: serde_json::Value) {
        if !self.0.ends_with('{') {
            self.0.push(',');
        }
        self.0.push_str(&serde_json::Value::from(name).to_string());
        self.0.push(':');
        self.0.push_str(&value.to_string());
    }
}

impl Visit for Line {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field.name(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field.name(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field.name(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field.name(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        // NaN and infinities have no JSON number: null.
        self.put(field.name(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field.name(), format!("{value:?}").into());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_json_line_has_ts_a_lower_case_level_and_the_fields_in_order() {
        let buffer = Buffer::default();
        let out = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .with_max_level(tracing::Level::DEBUG)
            .event_format(JsonLine)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(
                message = "kms.request",
                operation = "kms.decrypt",
                status = "error",
                duration_ms = 3u64,
                delta = -1i64,
                ok = false,
                ratio = 0.5,
                error = %"quote \" and\nnewline"
            );
            tracing::debug!("free text {}", 7);
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        let ts = first["ts"].as_str().unwrap();
        assert!(ts.len() >= 20 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{ts}");
        assert_eq!(first["level"], "warn");
        assert_eq!(first["message"], "kms.request");
        assert_eq!(first["operation"], "kms.decrypt");
        assert_eq!(first["duration_ms"], 3);
        assert_eq!(first["delta"], -1);
        assert_eq!(first["ok"], false);
        assert_eq!(first["ratio"], 0.5);
        assert_eq!(first["error"], "quote \" and\nnewline");
        assert!(
            lines[0].starts_with(r#"{"ts":"#)
                && lines[0].contains(r#""level":"warn","message":"kms.request","operation""#),
            "{}",
            lines[0]
        );
        let second: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(second["level"], "debug");
        assert_eq!(second["message"], "free text 7");
    }
}
