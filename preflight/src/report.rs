//! The check report every preflight command prints is the core check
//! catalogue's [`Report`] (the provider CLI's shape plus an optional `node`
//! and `fix` per check), rendered as a kubectl-style aligned table, JSON
//! (2-space) or YAML. Any `fail` means exit code 4; `warn` and `skip` do
//! not fail.

pub use bao_kms_core::checks::{Check, CheckStatus, Report, align, to_json, to_yaml};

/// `-o table|json|yaml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Yaml,
}

/// `report` in `format`.
pub fn render(report: &Report, format: OutputFormat) -> String {
    match format {
        OutputFormat::Table => report.to_table(),
        OutputFormat::Json => report.to_json(),
        OutputFormat::Yaml => report.to_yaml(),
    }
}
