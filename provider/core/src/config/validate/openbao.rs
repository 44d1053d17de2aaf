//! The `openbao` section: the `https://` address, the identity-bearing
//! namespace and instance id, TLS settings and the request timeout.

use std::time::Duration;

use super::syntax::{host_ok, https_address, namespace_problem};
use super::validator::Validator;
use crate::config::OpenBaoConfig;
use crate::config::raw::RawOpenBao;

impl Validator<'_> {
    pub(super) fn openbao(&mut self, r: &RawOpenBao) -> Option<OpenBaoConfig> {
        let address = self
            .required("openbao.address", &r.address)
            .and_then(|s| match https_address(s) {
                Ok(a) => Some(a),
                Err(e) => {
                    self.err("openbao.address", e);
                    None
                }
            });
        let namespace = r.namespace.clone().unwrap_or_default();
        let namespace = match namespace_problem(&namespace) {
            Some(p) => {
                self.err("openbao.namespace", p);
                None
            }
            None => Some(namespace),
        };
        let ca = self.file("openbao.caCertFile", &r.ca_cert_file);
        let server_name = self
            .required("openbao.tlsServerName", &r.tls_server_name)
            .and_then(|s| {
                if s.is_empty() {
                    self.err("openbao.tlsServerName", "must not be empty");
                    None
                } else if !host_ok(s) {
                    self.err("openbao.tlsServerName", "must be a DNS name or IP address");
                    None
                } else {
                    Some(s.to_owned())
                }
            });
        let timeout = self.duration("openbao.timeout", &r.timeout, Duration::from_secs(2), false);
        let instance_id = self.label("openbao.instanceId", &r.instance_id);
        Some(OpenBaoConfig {
            address: address?,
            namespace: namespace?,
            ca_cert_file: ca?,
            tls_server_name: server_name?,
            timeout: timeout?,
            instance_id: instance_id?,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::config::validate::tests::*;

    #[test]
    fn openbao_rules() {
        set_fails("openbao.address", "http://bao:8200", "https");
        set_fails("openbao.address", "bao:8200", "https:// URL");
        set_fails("openbao.address", "https://", "host");
        set_fails("openbao.address", "https://user:pw@bao:8200", "user info");
        set_fails("openbao.address", "https://bao:8200/v1", "path");
        set_fails("openbao.address", "https://bao:8200?x=1", "query");
        set_fails("openbao.address", "https://bao:8200#f", "fragment");
        set_fails("openbao.address", "https://bao:0", "port");
        set_fails("openbao.address", "https://bao:http", "port");
        set_fails("openbao.address", "https://-bao", "invalid host");
        set_ok("openbao.address", "https://bao_1.internal");
        assert_eq!(
            set_ok("openbao.address", "https://bao:8200/").openbao.address,
            "https://bao:8200"
        );
        set_ok("openbao.address", "https://[::1]:8200");
        set_ok("openbao.address", "https://127.0.0.1");
        fails_at(&without(FULL, "openbao.address"), "openbao.address", "required");
        set_fails("openbao.namespace", "/admin", "relative");
        set_fails("openbao.namespace", "admin//a", "'//'");
        set_fails("openbao.namespace", "admin/", "segments");
        set_fails("openbao.namespace", "admin/../x", "segments");
        set_fails("openbao.namespace", "\"a%2f\"", "'%'");
        set_fails("openbao.namespace", "\" admin\"", "whitespace");
        set_fails("openbao.namespace", "\"ad\\tmin\"", "control");
        assert_eq!(
            set_ok("openbao.namespace", "admin/workload-a").openbao.namespace,
            "admin/workload-a"
        );
        set_fails("openbao.caCertFile", "tls/ca.crt", "absolute");
        fails_at(&without(FULL, "openbao.caCertFile"), "openbao.caCertFile", "required");
        set_fails("openbao.tlsServerName", "\"\"", "empty");
        set_fails("openbao.tlsServerName", "\"bao example\"", "DNS name");
        set_fails("openbao.timeout", "0s", "positive");
        set_fails("openbao.instanceId", "\"\"", "empty");
        set_fails("openbao.instanceId", "\"bao \"", "whitespace");
        set_fails("openbao.instanceId", "\"bao\\n\"", "control");
    }
}
