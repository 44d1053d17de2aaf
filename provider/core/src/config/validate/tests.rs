//! The sample configurations and the helpers every section's tests use to
//! change one field and check the problem reported at its path; and the
//! tests of the whole pass (defaults, every problem at once, the top level).

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use serde_yaml_ng::Value as Yaml;

use super::*;
use crate::config::{AuthMethod, BootstrapConfig, LogFormat, LogLevel, LoggingConfig, SocketGroup};

/// The sample configuration, restricted to the jwt method.
pub(crate) const FULL: &str = r#"
configVersion: v1alpha1
server:
  socketPath: /run/openbao-kms/kms.sock
  socketMode: "0660"
  socketGroup: openbao-kms-socket   # group name, or numeric GID (static pod)
  metricsAddress: "127.0.0.1:8081"  # /metrics
  healthAddress: "127.0.0.1:8082"   # /live, /ready, /status (JSON)
openbao:
  address: https://bao.example.internal:8200
  namespace: ""                     # identity-bearing; X-Vault-Namespace
  caCertFile: /etc/openbao-kms/tls/ca.crt
  tlsServerName: bao.example.internal
  timeout: 2s
  instanceId: bao-prod-a            # identity-bearing
auth:
  method: jwt
  loginBeforeTokenExpiry: 5m
  tokenRenewalIncrement: 1h
  jwt:
    mountPath: auth/k8s-workload-a-jwt
    role: openbao-kms-control-plane
    jwtFile: /var/lib/openbao-kms/identity.jwt   # re-read before every login
    minRemainingTtl: 2m
transit:
  mountPath: transit                # identity-bearing
  keyName: k8s-workload-a-etcd      # identity-bearing, one path segment
  keyIdScope:                       # identity-bearing
    providerName: openbao-kms-workload-a   # == kms.name in EncryptionConfiguration
    clusterId: workload-a
    transitMountId: transit-prod-primary
    keyLineageId: "01HXEXAMPLEKEYLINEAGEID"
bootstrap: {graceTimeout: 60s, retryInterval: 5s}
status: {probeInterval: 30s, deepProbeInterval: 5m, statusMaxStaleness: 2m}
state:
  path: /var/lib/openbao-kms/state/key-registry.json   # checkpoint sits beside it
rotation:
  mode: observed
  activationDelay: 2m
  requireStableObservationCount: 3
  rejectVersionRollback: true
logging: {level: info, format: json, logOpenBaoRequestIDs: true, requestLogBurst: 10, requestLogWindow: 10s}
"#;

/// Only the required values.
pub(crate) const MINIMAL: &str = r#"
server:
  socketGroup: openbao-kms-socket
openbao:
  address: https://bao.example.internal:8200
  caCertFile: /etc/openbao-kms/tls/ca.crt
  tlsServerName: bao.example.internal
  instanceId: bao-prod-a
auth:
  jwt:
    mountPath: auth/k8s-workload-a-jwt
    role: openbao-kms-control-plane
    jwtFile: /var/lib/openbao-kms/identity.jwt
transit:
  mountPath: transit
  keyName: k8s-workload-a-etcd
  keyIdScope:
    providerName: openbao-kms-workload-a
    clusterId: workload-a
    transitMountId: transit-prod-primary
    keyLineageId: "01HXEXAMPLEKEYLINEAGEID"
"#;

fn doc(text: &str) -> Yaml {
    serde_yaml_ng::from_str(text).unwrap()
}

/// Sets `path` (dotted) in `text` to the YAML `value` and returns the new text.
pub(crate) fn with(text: &str, path: &str, value: &str) -> String {
    let mut d = doc(text);
    let parts: Vec<&str> = path.split('.').collect();
    let mut cur = &mut d;
    for k in &parts[..parts.len() - 1] {
        let m = cur.as_mapping_mut().unwrap();
        if !m.contains_key(*k) {
            m.insert(Yaml::String((*k).into()), Yaml::Mapping(Default::default()));
        }
        cur = m.get_mut(*k).unwrap();
    }
    let v: Yaml = serde_yaml_ng::from_str(value).unwrap();
    cur.as_mapping_mut()
        .unwrap()
        .insert(Yaml::String(parts[parts.len() - 1].into()), v);
    serde_yaml_ng::to_string(&d).unwrap()
}

pub(crate) fn without(text: &str, path: &str) -> String {
    let mut d = doc(text);
    let (parent, key) = path.rsplit_once('.').unwrap_or(("", path));
    let mut cur = &mut d;
    for k in parent.split('.').filter(|s| !s.is_empty()) {
        cur = cur.get_mut(k).unwrap();
    }
    cur.as_mapping_mut().unwrap().remove(key);
    serde_yaml_ng::to_string(&d).unwrap()
}

pub(crate) fn errors(text: &str) -> Vec<ConfigError> {
    parse_yaml(text).unwrap_err().0
}

/// Asserts `text` fails with an error at exactly `path` whose message contains `needle`.
#[track_caller]
pub(crate) fn fails_at(text: &str, path: &str, needle: &str) {
    let errs = errors(text);
    assert!(
        errs.iter().any(|e| e.path == path && e.message.contains(needle)),
        "expected {path}: ...{needle}...; got {}",
        ConfigErrors(errs.clone())
    );
}

#[track_caller]
pub(crate) fn set_fails(path: &str, value: &str, needle: &str) {
    fails_at(&with(FULL, path, value), path, needle);
}

#[track_caller]
pub(crate) fn set_ok(path: &str, value: &str) -> Config {
    match parse_yaml(&with(FULL, path, value)) {
        Ok(c) => c,
        Err(e) => panic!("{path}: {value} should be valid: {e}"),
    }
}

pub(crate) fn cert_doc(source: &str, body: &str) -> String {
    let t = with(&without(FULL, "auth.jwt"), "auth.method", "cert");
    with(
        &t,
        "auth.cert",
        &format!("{{mountPath: auth/cert, source: {source}, {body}}}"),
    )
}

pub(crate) const PKCS11: &str =
    "pkcs11: {certificateFile: /c.pem, modulePath: /m.so, tokenLabel: t, keyLabel: k, pinFile: /pin, maxSessions: 2}";

#[test]
fn full_example_parses() {
    let c = parse_yaml(FULL).unwrap();
    assert_eq!(c.server.socket_path, PathBuf::from("/run/openbao-kms/kms.sock"));
    assert_eq!(c.server.socket_mode, 0o660);
    assert_eq!(c.server.socket_group, SocketGroup::Name("openbao-kms-socket".into()));
    assert_eq!(c.server.metrics_address.as_deref(), Some("127.0.0.1:8081"));
    assert_eq!(c.openbao.address, "https://bao.example.internal:8200");
    assert_eq!(c.openbao.timeout, Duration::from_secs(2));
    let AuthMethod::Jwt(j) = &c.auth.method else {
        panic!("jwt")
    };
    assert_eq!(j.mount_path, "auth/k8s-workload-a-jwt");
    assert_eq!(j.min_remaining_ttl, Duration::from_secs(120));
    assert_eq!(c.transit.key_id_scope.key_lineage_id, "01HXEXAMPLEKEYLINEAGEID");
    assert_eq!(
        c.identity_scope().fingerprint(),
        "cfg1.iWfCItBef04qDNcnEXME76HSYDWTVfhtoTlg2YQpdPg",
        "the sample identity's fingerprint"
    );
    assert_eq!(c.status.deep_probe_interval, Duration::from_secs(300));
    assert_eq!(c.logging.format, LogFormat::Json);
}

#[test]
fn defaults_for_minimal_config() {
    let c = parse_yaml(MINIMAL).unwrap();
    assert_eq!(c, parse_yaml(FULL).unwrap(), "FULL spells out the defaults");
    let s = &c.server;
    assert_eq!(s.socket_path, PathBuf::from("/run/openbao-kms/kms.sock"));
    assert_eq!(s.socket_mode, 0o660);
    assert_eq!(s.metrics_address.as_deref(), Some("127.0.0.1:8081"));
    assert_eq!(s.health_address.as_deref(), Some("127.0.0.1:8082"));
    assert_eq!(
        (
            s.max_concurrent_status,
            s.max_concurrent_encrypt,
            s.max_concurrent_decrypt
        ),
        (16, 32, 1024)
    );
    assert_eq!(c.openbao.namespace, "");
    assert_eq!(c.openbao.timeout, Duration::from_secs(2));
    assert_eq!(c.auth.login_before_token_expiry, Duration::from_secs(300));
    assert_eq!(c.auth.token_renewal_increment, Duration::from_secs(3600));
    assert_eq!(
        c.auth.login_timeout,
        Duration::from_secs(5),
        "0s means max(timeout, 5s)"
    );
    let AuthMethod::Jwt(j) = &c.auth.method else {
        panic!("jwt is the default method")
    };
    assert_eq!(j.clock_skew_leeway, Duration::from_secs(30));
    assert_eq!(j.expected_issuer, None);
    assert!(j.expected_audience.is_empty());
    assert_eq!(
        c.bootstrap,
        BootstrapConfig {
            grace_timeout: Duration::from_secs(60),
            retry_interval: Duration::from_secs(5)
        }
    );
    assert_eq!(
        c.state.path,
        PathBuf::from("/var/lib/openbao-kms/state/key-registry.json")
    );
    assert_eq!(c.rotation.activation_delay, Duration::from_secs(120));
    assert_eq!(c.rotation.require_stable_observation_count, 3);
    assert!(c.rotation.reject_version_rollback);
    assert_eq!(
        c.logging,
        LoggingConfig {
            level: LogLevel::Info,
            format: LogFormat::Json,
            log_openbao_request_ids: true,
            debug_correlation: None,
            request_log: crate::log_budget::Budget::DEFAULT,
        }
    );
}

#[test]
fn all_problems_reported_at_once() {
    let mut t = with(FULL, "server.socketMode", "\"0777\"");
    t = with(&t, "transit.keyName", "\"a/b\"");
    t = with(&t, "status.probeInterval", "5m");
    t = with(&t, "bogus", "1");
    t = with(&t, "server.maxConcurrentDecrypt", "\"9\"");
    t = without(&t, "openbao.instanceId");
    t = with(&t, "logging.level", "loud");
    let errs = errors(&t);
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    for p in [
        "server.socketMode",
        "transit.keyName",
        "status.probeInterval",
        "bogus",
        "server.maxConcurrentDecrypt",
        "openbao.instanceId",
        "logging.level",
    ] {
        assert!(paths.contains(&p), "{p} missing from {paths:?}");
    }
    assert_eq!(errs.len(), 7, "{}", ConfigErrors(errs.clone()));
    let shown = ConfigErrors(errs).to_string();
    assert!(shown.lines().all(|l| l.contains(": ")), "{shown}");
}

#[test]
fn top_level_shape() {
    fails_at("", "server", "required");
    fails_at("", "transit", "required");
    assert_eq!(errors("").len(), 4);
    fails_at("- a\n- b\n", "", "mapping");
    fails_at("server: [", "", "not valid YAML");
    fails_at(&with(FULL, "configVersion", "v1"), "configVersion", "v1alpha1");
    assert!(parse_yaml(&without(FULL, "configVersion")).is_ok());
    let errs = errors("server: {socketGroup: x}\nserver: {socketGroup: y}\n");
    assert!(errs[0].message.contains("duplicate"), "{errs:?}");
}
