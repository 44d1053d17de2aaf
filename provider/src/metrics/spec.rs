//! The shape of a catalogue entry, shared by the catalogue and the
//! exposition writer.

/// What kind of Prometheus family a catalogue entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One catalogue entry: the family name as exposed (counters without
/// `_total`), its help text, kind, label names in exposition order, and the
/// OpenTelemetry unit (for OTLP; never appended to the Prometheus name).
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub labels: &'static [&'static str],
    pub unit: &'static str,
}
