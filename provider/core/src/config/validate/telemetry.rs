//! The `telemetry` section: optional OTLP/gRPC export of metrics and traces.

use std::path::PathBuf;
use std::time::Duration;

use super::syntax::{absolute_path_problem, header_name_problem, otlp_endpoint};
use super::validator::Validator;
use crate::config::raw::{RawOtlp, RawTelemetry};
use crate::config::{OtlpConfig, TelemetryConfig};

impl Validator<'_> {
    pub(super) fn telemetry(&mut self, r: &RawTelemetry) -> Option<TelemetryConfig> {
        match &r.otlp {
            None => Some(TelemetryConfig { otlp: None }),
            Some(o) => self.otlp(o).map(|o| TelemetryConfig { otlp: Some(o) }),
        }
    }

    fn optional_file(&mut self, path: &str, v: &Option<String>) -> Option<Option<PathBuf>> {
        match v {
            None => Some(None),
            Some(_) => self.file(path, v).map(Some),
        }
    }

    /// `https` needs `caFile` (the provider trusts no system roots for
    /// export either); the client key pair comes whole; the timeout fits in
    /// the export interval.
    fn otlp(&mut self, r: &RawOtlp) -> Option<OtlpConfig> {
        let endpoint = self
            .required("telemetry.otlp.endpoint", &r.endpoint)
            .and_then(|s| match otlp_endpoint(s) {
                Ok(e) => Some(e),
                Err(e) => {
                    self.err("telemetry.otlp.endpoint", e);
                    None
                }
            });
        let ca_file = self.optional_file("telemetry.otlp.caFile", &r.ca_file);
        let cert = self.optional_file("telemetry.otlp.clientCertFile", &r.client_cert_file);
        let key = self.optional_file("telemetry.otlp.clientKeyFile", &r.client_key_file);
        if let Some(e) = &endpoint {
            let https = e.starts_with("https://");
            if https && r.ca_file.is_none() {
                self.err(
                    "telemetry.otlp.caFile",
                    "is required for an https:// endpoint (the CA bundle that signed the collector's certificate)",
                );
            }
            if !https {
                for (path, set) in [
                    ("telemetry.otlp.caFile", r.ca_file.is_some()),
                    ("telemetry.otlp.clientCertFile", r.client_cert_file.is_some()),
                    ("telemetry.otlp.clientKeyFile", r.client_key_file.is_some()),
                ] {
                    if set {
                        self.err(path, "applies to an https:// endpoint only");
                    }
                }
            }
        }
        match (r.client_cert_file.is_some(), r.client_key_file.is_some()) {
            (true, false) => self.err("telemetry.otlp.clientKeyFile", "is required with clientCertFile"),
            (false, true) => self.err("telemetry.otlp.clientCertFile", "is required with clientKeyFile"),
            _ => {}
        }
        let mut headers = Some(Vec::new());
        for (name, file) in r.header_files.iter().flatten() {
            let path = format!("telemetry.otlp.headerFiles.{}", name.escape_debug());
            if let Some(p) = header_name_problem(name) {
                self.err(&path, p);
                headers = None;
            } else if let Some(p) = absolute_path_problem(file) {
                self.err(&path, p);
                headers = None;
            } else if let Some(h) = headers.as_mut() {
                h.push((name.clone(), PathBuf::from(file)));
            }
        }
        let interval = self.duration(
            "telemetry.otlp.exportInterval",
            &r.export_interval,
            Duration::from_secs(60),
            false,
        );
        if interval.is_some_and(|i| i < Duration::from_secs(1) || i > Duration::from_secs(3600)) {
            self.err("telemetry.otlp.exportInterval", "must be between 1s and 1h");
        }
        let timeout = self.duration("telemetry.otlp.timeout", &r.timeout, Duration::from_secs(10), false);
        if timeout.is_some_and(|t| t > Duration::from_secs(60)) {
            self.err("telemetry.otlp.timeout", "must be at most 1m");
        } else if let (Some(t), Some(i)) = (timeout, interval)
            && t > i
        {
            self.err(
                "telemetry.otlp.timeout",
                "must be at most telemetry.otlp.exportInterval",
            );
        }
        let queue = self.int("telemetry.otlp.maxQueueSize", r.max_queue_size, 2048, 1, 1_000_000);
        Some(OtlpConfig {
            endpoint: endpoint?,
            ca_file: ca_file?,
            client_cert_file: cert?,
            client_key_file: key?,
            header_files: headers?,
            export_interval: interval?,
            timeout: timeout?,
            max_queue_size: queue?,
            traces: r.traces.unwrap_or(true),
            metrics: r.metrics.unwrap_or(true),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use crate::config::parse_yaml;
    use crate::config::validate::tests::*;

    const LOCAL: &str = "{endpoint: \"http://127.0.0.1:4317\"}";

    #[test]
    fn otlp_is_off_unless_configured() {
        assert_eq!(parse_yaml(FULL).unwrap().telemetry.otlp, None);
        assert_eq!(set_ok("telemetry", "{}").telemetry.otlp, None);
    }

    #[test]
    fn otlp_defaults() {
        let o = set_ok("telemetry.otlp", LOCAL).telemetry.otlp.unwrap();
        assert_eq!(o.endpoint, "http://127.0.0.1:4317");
        assert_eq!(o.export_interval, Duration::from_secs(60));
        assert_eq!(o.timeout, Duration::from_secs(10));
        assert_eq!(o.max_queue_size, 2048);
        assert!(o.traces && o.metrics);
        assert!(o.header_files.is_empty() && o.ca_file.is_none());
    }

    #[test]
    fn otlp_endpoint_rules() {
        let at = |v: &str| with(FULL, "telemetry.otlp.endpoint", v);
        fails_at(
            &without(&at("x"), "telemetry.otlp.endpoint"),
            "telemetry.otlp.endpoint",
            "required",
        );
        fails_at(&at("\"http://collector:4317\""), "telemetry.otlp.endpoint", "loopback");
        fails_at(
            &at("\"grpc://collector:4317\""),
            "telemetry.otlp.endpoint",
            "https:// URL",
        );
        fails_at(&at("\"https://c:4317/v1/traces\""), "telemetry.otlp.endpoint", "path");
        fails_at(&at("\"https://user@c:4317\""), "telemetry.otlp.endpoint", "user info");
        fails_at(&at("\"https://c:0\""), "telemetry.otlp.endpoint", "port");
        for ok in ["http://localhost:4317", "http://[::1]:4317/", "http://127.0.0.2:4317"] {
            let c = parse_yaml(&at(&format!("\"{ok}\""))).unwrap();
            assert_eq!(c.telemetry.otlp.unwrap().endpoint, ok.trim_end_matches('/'));
        }
        let t = with(&at("\"https://c.example:4317/\""), "telemetry.otlp.caFile", "/ca.pem");
        let o = parse_yaml(&t).unwrap().telemetry.otlp.unwrap();
        assert_eq!(o.endpoint, "https://c.example:4317");
        assert_eq!(o.ca_file, Some(PathBuf::from("/ca.pem")));
    }

    #[test]
    fn otlp_tls_rules() {
        let https = with(FULL, "telemetry.otlp.endpoint", "\"https://c:4317\"");
        fails_at(&https, "telemetry.otlp.caFile", "required for an https://");
        let https = with(&https, "telemetry.otlp.caFile", "/ca.pem");
        fails_at(
            &with(&https, "telemetry.otlp.clientCertFile", "/c.pem"),
            "telemetry.otlp.clientKeyFile",
            "required with clientCertFile",
        );
        fails_at(
            &with(&https, "telemetry.otlp.clientKeyFile", "/k.pem"),
            "telemetry.otlp.clientCertFile",
            "required with clientKeyFile",
        );
        fails_at(
            &with(&https, "telemetry.otlp.caFile", "ca.pem"),
            "telemetry.otlp.caFile",
            "absolute",
        );
        let pair = with(
            &with(&https, "telemetry.otlp.clientCertFile", "/c.pem"),
            "telemetry.otlp.clientKeyFile",
            "/k.pem",
        );
        let o = parse_yaml(&pair).unwrap().telemetry.otlp.unwrap();
        assert_eq!(o.client_key_file, Some(PathBuf::from("/k.pem")));
        let local = with(FULL, "telemetry.otlp", LOCAL);
        fails_at(
            &with(&local, "telemetry.otlp.caFile", "/ca.pem"),
            "telemetry.otlp.caFile",
            "https:// endpoint only",
        );
    }

    #[test]
    fn otlp_header_and_timing_rules() {
        let local = with(FULL, "telemetry.otlp", LOCAL);
        let h = |v: &str| with(&local, "telemetry.otlp.headerFiles", v);
        let o = parse_yaml(&h("{authorization: /etc/otlp/auth, x-tenant: /etc/otlp/tenant}"))
            .unwrap()
            .telemetry
            .otlp
            .unwrap();
        assert_eq!(
            o.header_files,
            vec![
                ("authorization".to_owned(), PathBuf::from("/etc/otlp/auth")),
                ("x-tenant".to_owned(), PathBuf::from("/etc/otlp/tenant")),
            ]
        );
        fails_at(
            &h("{Authorization: /a}"),
            "telemetry.otlp.headerFiles.Authorization",
            "lower-case",
        );
        fails_at(
            &h("{grpc-timeout: /a}"),
            "telemetry.otlp.headerFiles.grpc-timeout",
            "reserved",
        );
        fails_at(&h("{x-bin: /a}"), "telemetry.otlp.headerFiles.x-bin", "binary");
        fails_at(
            &h("{authorization: a}"),
            "telemetry.otlp.headerFiles.authorization",
            "absolute",
        );
        fails_at(
            &h("{authorization: 1}"),
            "telemetry.otlp.headerFiles.authorization",
            "string",
        );
        fails_at(&h("[a]"), "telemetry.otlp.headerFiles", "mapping");
        let set = |k: &str, v: &str| with(&local, &format!("telemetry.otlp.{k}"), v);
        fails_at(
            &set("exportInterval", "500ms"),
            "telemetry.otlp.exportInterval",
            "between 1s and 1h",
        );
        fails_at(
            &set("exportInterval", "2h"),
            "telemetry.otlp.exportInterval",
            "between 1s and 1h",
        );
        fails_at(&set("timeout", "2m"), "telemetry.otlp.timeout", "at most 1m");
        fails_at(&set("timeout", "0s"), "telemetry.otlp.timeout", "positive");
        fails_at(
            &with(&set("exportInterval", "5s"), "telemetry.otlp.timeout", "6s"),
            "telemetry.otlp.timeout",
            "exportInterval",
        );
        fails_at(
            &set("maxQueueSize", "0"),
            "telemetry.otlp.maxQueueSize",
            "between 1 and 1000000",
        );
        fails_at(&set("traces", "\"yes\""), "telemetry.otlp.traces", "true or false");
        fails_at(&set("endpointx", "1"), "telemetry.otlp.endpointx", "did you mean");
        let o = parse_yaml(&set("traces", "false")).unwrap().telemetry.otlp.unwrap();
        assert!(!o.traces && o.metrics);
    }
}
