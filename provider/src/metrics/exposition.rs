//! The OpenMetrics text `/metrics` serves, written from the families the
//! `opentelemetry-prometheus` collector gathers.
//!
//! The collector turns the SDK's data into Prometheus families (names,
//! types, label pairs, cumulative buckets); the `prometheus` crate's own
//! encoder writes the older 0.0.4 text format, which names a counter family
//! `x_total` in its `# TYPE` line and drops families that have no series
//! yet. This module writes OpenMetrics 1.0 as the provider always has: the
//! catalogue's families in catalogue order, each with its `# HELP` and
//! `# TYPE` line even before its first series, counters as `x` with samples
//! `x_total`, labels in the catalogue's order, histogram `_sum`, `_count`
//! then buckets with `le` first, and `# EOF`. The process collector's
//! families (`process_*`) come from the same registry and are written the
//! same way.

use std::collections::HashMap;
use std::fmt::Write as _;

use prometheus::proto::{LabelPair, Metric, MetricFamily};

use super::spec::{Kind, Spec};

/// The `Content-Type` of [`encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The exposition of `catalogue`, with the series found in `gathered`.
/// Families outside the catalogue are not written.
pub fn encode(catalogue: &[Spec], gathered: Vec<MetricFamily>) -> String {
    let mut by_name: HashMap<String, MetricFamily> = gathered.into_iter().map(|f| (f.name().to_owned(), f)).collect();
    let mut out = String::with_capacity(8 * 1024);
    for spec in catalogue {
        let kind = match spec.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        // Writing into a String cannot fail.
        let _ = writeln!(out, "# HELP {} {}.", spec.name, escape(spec.help));
        let _ = writeln!(out, "# TYPE {} {kind}", spec.name);
        // The `prometheus` crate's own collectors name a counter family
        // with its `_total` suffix; the OpenTelemetry collector without.
        let family = by_name.remove(spec.name).or_else(|| match spec.kind {
            Kind::Counter => by_name.remove(&format!("{}_total", spec.name)),
            _ => None,
        });
        let Some(family) = family else {
            continue;
        };
        for metric in family.get_metric() {
            let labels = ordered(spec, metric.get_label());
            write_metric(&mut out, spec, &labels, metric);
        }
    }
    out.push_str("# EOF\n");
    out
}

fn write_metric(out: &mut String, spec: &Spec, labels: &[(&str, &str)], metric: &Metric) {
    let name = spec.name;
    match spec.kind {
        Kind::Counter => sample(out, name, "_total", None, labels, metric.get_counter().get_value()),
        Kind::Gauge => sample(out, name, "", None, labels, metric.get_gauge().get_value()),
        Kind::Histogram => {
            let h = metric.get_histogram();
            sample(out, name, "_sum", None, labels, h.get_sample_sum());
            let count = h.get_sample_count() as f64;
            sample(out, name, "_count", None, labels, count);
            for bucket in h.get_bucket() {
                let le = number(bucket.upper_bound());
                let cumulative = bucket.cumulative_count() as f64;
                sample(out, name, "_bucket", Some(&le), labels, cumulative);
            }
            sample(out, name, "_bucket", Some("+Inf"), labels, count);
        }
    }
}

fn sample(out: &mut String, name: &str, suffix: &str, le: Option<&str>, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    out.push_str(suffix);
    let pairs = le.map(|le| ("le", le)).into_iter().chain(labels.iter().copied());
    let mut first = true;
    for (key, value) in pairs {
        out.push(if first { '{' } else { ',' });
        first = false;
        let _ = write!(out, "{key}=\"{}\"", escape(value));
    }
    if !first {
        out.push('}');
    }
    out.push(' ');
    out.push_str(&number(value));
    out.push('\n');
}

/// Labels in the catalogue's order; any other label after them.
fn ordered<'a>(spec: &Spec, pairs: &'a [LabelPair]) -> Vec<(&'a str, &'a str)> {
    let rank = |name: &str| spec.labels.iter().position(|l| *l == name).unwrap_or(usize::MAX);
    let mut labels: Vec<(&str, &str)> = pairs.iter().map(|p| (p.name(), p.value())).collect();
    labels.sort_by_key(|(name, _)| rank(name));
    labels
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        v.to_string()
    }
}

/// OpenMetrics escaping of label values and help texts: backslash, double
/// quote and line feed.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_escapes() {
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.001), "0.001");
        assert_eq!(number(2.048), "2.048");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
