//! Raw serde view of the YAML file: field names exactly as operators write
//! them (camelCase), every field optional so defaults can be applied and
//! missing required fields reported by path, unknown fields rejected.
//!
//! Decoding happens from a `serde_yaml_ng::Value`, never from text, because
//! that is where serde_yaml_ng stops coercing scalars: from text, `1234` or
//! `true` would quietly become the string `"1234"` / `"true"`. From a value, a
//! number where a string is expected is a type error. (serde_yaml_ng reads
//! a leading-zero scalar such as `0660` as a string, so an unquoted
//! `socketMode: 0660` is accepted with the meaning the operator intended.)
//!
//! Integers are `i64` here so an out-of-range value (`maxSessions: -1`) gets a
//! range message from the validator instead of a serde type error.
//!
//! The structs also serialize, which is how `config` prints the resolved
//! configuration: [`RawConfig::from_config`].

use serde::{Deserialize, Serialize};

use super::duration::format_duration;
use super::{AuthMethod, CertSource, Config, JwtSource, LogFormat, LogLevel, SocketGroup};

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<RawServer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub openbao: Option<RawOpenBao>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<RawAuth>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transit: Option<RawTransit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<RawBootstrap>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<RawStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<RawState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RawRotation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logging: Option<RawLogging>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<RawTelemetry>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawServer {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_status: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_encrypt: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_decrypt: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_queued_status: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_queued_encrypt: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_queued_decrypt: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_queue_wait: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decrypt_batch_max_items: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decrypt_batch_max_wait: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_decrypt_calls: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_kms_connections: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_health_connections: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_metrics_connections: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_header_read_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kms_idle_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kms_keepalive_interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kms_keepalive_timeout: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawOpenBao {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_cert_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawAuth {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login_before_token_expiry: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_renewal_increment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt: Option<RawJwt>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<RawCert>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approle: Option<RawAppRole>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<RawToken>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawJwt {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mount_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_remaining_ttl: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock_skew_leeway: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_issuer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_audience: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oauth2: Option<RawOAuth2>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawOAuth2 {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_cert_file: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawCert {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mount_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_remaining_ttl: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock_skew_leeway: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pkcs11: Option<RawPkcs11>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<RawCertFile>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawPkcs11 {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_sessions: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawCertFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawAppRole {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mount_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role_id_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_id_file: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawToken {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawTransit {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mount_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id_scope: Option<RawKeyIdScope>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawKeyIdScope {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transit_mount_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_lineage_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawBootstrap {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grace_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_interval: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe_interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deep_probe_interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_max_staleness: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawState {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawRotation {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activation_delay: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub require_stable_observation_count: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reject_version_rollback: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_at_version: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawLogging {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// The published `v1alpha1` field name spells the acronym in capitals.
    #[serde(rename = "logOpenBaoRequestIDs", skip_serializing_if = "Option::is_none")]
    pub log_openbao_request_ids: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debug_correlation: Option<RawDebugCorrelation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_log_burst: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_log_window: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawDebugCorrelation {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incident_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawTelemetry {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp: Option<RawOtlp>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawOtlp {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<String>,
    /// Header name -> file holding its value (a mapping, in file order).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_files: Option<std::collections::BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export_interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_queue_size: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traces: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<bool>,
}

fn s(v: impl Into<String>) -> Option<String> {
    Some(v.into())
}

fn d(v: std::time::Duration) -> Option<String> {
    Some(format_duration(v))
}

fn p(v: &std::path::Path) -> Option<String> {
    Some(v.display().to_string())
}

impl RawConfig {
    /// The resolved configuration in file form, every default spelled out.
    /// Only file paths appear, never file contents; parsing the output
    /// again gives back `cfg`. `auth.loginTimeout` shows the effective value.
    pub fn from_config(cfg: &Config) -> Self {
        let sv = &cfg.server;
        let ob = &cfg.openbao;
        let a = &cfg.auth;
        let mut auth = RawAuth {
            method: s(a.method.name()),
            login_before_token_expiry: d(a.login_before_token_expiry),
            token_renewal_increment: d(a.token_renewal_increment),
            login_timeout: d(a.login_timeout),
            ..RawAuth::default()
        };
        match &a.method {
            AuthMethod::Jwt(j) => {
                let (source, jwt_file, oauth2) = match &j.source {
                    JwtSource::File { jwt_file } => ("file", p(jwt_file), None),
                    JwtSource::OAuth2(o) => (
                        "oauth2",
                        None,
                        Some(RawOAuth2 {
                            token_url: s(&o.token_url),
                            client_id: s(&o.client_id),
                            client_secret_file: p(&o.client_secret_file),
                            auth_method: s(o.auth_method.as_str()),
                            scopes: Some(o.scopes.clone()),
                            audience: o.audience.clone(),
                            resources: Some(o.resources.clone()),
                            ca_cert_file: o.ca_cert_file.as_deref().and_then(p),
                        }),
                    ),
                };
                auth.jwt = Some(RawJwt {
                    mount_path: s(&j.mount_path),
                    role: s(&j.role),
                    source: s(source),
                    jwt_file,
                    oauth2,
                    min_remaining_ttl: d(j.min_remaining_ttl),
                    clock_skew_leeway: d(j.clock_skew_leeway),
                    expected_issuer: j.expected_issuer.clone(),
                    expected_audience: Some(j.expected_audience.clone()),
                    expected_subject: j.expected_subject.clone(),
                })
            }
            AuthMethod::Cert(c) => {
                let (source, pkcs11, file) = match &c.source {
                    CertSource::Pkcs11(k) => (
                        "pkcs11",
                        Some(RawPkcs11 {
                            certificate_file: p(&k.certificate_file),
                            module_path: p(&k.module_path),
                            token_label: s(&k.token_label),
                            key_label: s(&k.key_label),
                            pin_file: p(&k.pin_file),
                            max_sessions: Some(i64::from(k.max_sessions)),
                        }),
                        None,
                    ),
                    CertSource::File {
                        certificate_file,
                        key_file,
                    } => (
                        "file",
                        None,
                        Some(RawCertFile {
                            certificate_file: p(certificate_file),
                            key_file: p(key_file),
                        }),
                    ),
                };
                auth.cert = Some(RawCert {
                    mount_path: s(&c.mount_path),
                    source: s(source),
                    name: s(&c.name),
                    min_remaining_ttl: d(c.min_remaining_ttl),
                    clock_skew_leeway: d(c.clock_skew_leeway),
                    pkcs11,
                    file,
                })
            }
            AuthMethod::AppRole(r) => {
                auth.approle = Some(RawAppRole {
                    mount_path: s(&r.mount_path),
                    role_id_file: p(&r.role_id_file),
                    secret_id_file: p(&r.secret_id_file),
                })
            }
            AuthMethod::Token(t) => {
                auth.token = Some(RawToken {
                    token_file: p(&t.token_file),
                })
            }
        }
        let scope = &cfg.transit.key_id_scope;
        RawConfig {
            config_version: s(super::CONFIG_VERSION),
            server: Some(RawServer {
                socket_path: p(&sv.socket_path),
                socket_mode: s(format!("{:04o}", sv.socket_mode)),
                socket_group: s(match &sv.socket_group {
                    SocketGroup::Name(n) => n.clone(),
                    SocketGroup::Gid(g) => g.to_string(),
                }),
                metrics_address: s(sv.metrics_address.clone().unwrap_or_default()),
                health_address: s(sv.health_address.clone().unwrap_or_default()),
                max_concurrent_status: Some(i64::from(sv.max_concurrent_status)),
                max_concurrent_encrypt: Some(i64::from(sv.max_concurrent_encrypt)),
                max_concurrent_decrypt: Some(i64::from(sv.max_concurrent_decrypt)),
                max_queued_status: Some(i64::from(sv.max_queued_status)),
                max_queued_encrypt: Some(i64::from(sv.max_queued_encrypt)),
                max_queued_decrypt: Some(i64::from(sv.max_queued_decrypt)),
                max_queue_wait: d(sv.max_queue_wait),
                decrypt_batch_max_items: Some(i64::from(sv.decrypt_batch_max_items)),
                decrypt_batch_max_wait: d(sv.decrypt_batch_max_wait),
                max_concurrent_decrypt_calls: Some(i64::from(sv.max_concurrent_decrypt_calls)),
                max_kms_connections: Some(i64::from(sv.max_kms_connections)),
                max_health_connections: Some(i64::from(sv.max_health_connections)),
                max_metrics_connections: Some(i64::from(sv.max_metrics_connections)),
                http_header_read_timeout: d(sv.http_header_read_timeout),
                kms_idle_timeout: d(sv.kms_idle_timeout),
                kms_keepalive_interval: d(sv.kms_keepalive_interval),
                kms_keepalive_timeout: d(sv.kms_keepalive_timeout),
            }),
            openbao: Some(RawOpenBao {
                address: s(&ob.address),
                namespace: s(&ob.namespace),
                ca_cert_file: p(&ob.ca_cert_file),
                tls_server_name: s(&ob.tls_server_name),
                timeout: d(ob.timeout),
                instance_id: s(&ob.instance_id),
            }),
            auth: Some(auth),
            transit: Some(RawTransit {
                mount_path: s(&cfg.transit.mount_path),
                key_name: s(&cfg.transit.key_name),
                key_id_scope: Some(RawKeyIdScope {
                    provider_name: s(&scope.provider_name),
                    cluster_id: s(&scope.cluster_id),
                    transit_mount_id: s(&scope.transit_mount_id),
                    key_lineage_id: s(&scope.key_lineage_id),
                }),
            }),
            bootstrap: Some(RawBootstrap {
                grace_timeout: d(cfg.bootstrap.grace_timeout),
                retry_interval: d(cfg.bootstrap.retry_interval),
            }),
            status: Some(RawStatus {
                probe_interval: d(cfg.status.probe_interval),
                deep_probe_interval: d(cfg.status.deep_probe_interval),
                status_max_staleness: d(cfg.status.status_max_staleness),
            }),
            state: Some(RawState {
                path: p(&cfg.state.path),
            }),
            rotation: Some(RawRotation {
                mode: s("observed"),
                activation_delay: d(cfg.rotation.activation_delay),
                require_stable_observation_count: Some(i64::from(cfg.rotation.require_stable_observation_count)),
                reject_version_rollback: Some(cfg.rotation.reject_version_rollback),
                hold_at_version: cfg.rotation.hold_at_version.and_then(|v| i64::try_from(v).ok()),
            }),
            logging: Some(RawLogging {
                level: s(match cfg.logging.level {
                    LogLevel::Debug => "debug",
                    LogLevel::Info => "info",
                    LogLevel::Warn => "warn",
                    LogLevel::Error => "error",
                }),
                format: s(match cfg.logging.format {
                    LogFormat::Json => "json",
                    LogFormat::Text => "text",
                }),
                log_openbao_request_ids: Some(cfg.logging.log_openbao_request_ids),
                debug_correlation: cfg.logging.debug_correlation.as_ref().map(|dc| RawDebugCorrelation {
                    enabled: Some(true),
                    ttl: d(dc.ttl),
                    incident_id: s(dc.incident_id.clone()),
                }),
                request_log_burst: Some(i64::from(cfg.logging.request_log.burst)),
                request_log_window: d(cfg.logging.request_log.window),
            }),
            telemetry: cfg.telemetry.otlp.as_ref().map(|o| RawTelemetry {
                otlp: Some(RawOtlp {
                    endpoint: s(&o.endpoint),
                    ca_file: o.ca_file.as_ref().and_then(|f| p(f)),
                    client_cert_file: o.client_cert_file.as_ref().and_then(|f| p(f)),
                    client_key_file: o.client_key_file.as_ref().and_then(|f| p(f)),
                    header_files: (!o.header_files.is_empty()).then(|| {
                        o.header_files
                            .iter()
                            .map(|(name, file)| (name.clone(), file.display().to_string()))
                            .collect()
                    }),
                    export_interval: d(o.export_interval),
                    timeout: d(o.timeout),
                    max_queue_size: Some(i64::from(o.max_queue_size)),
                    traces: Some(o.traces),
                    metrics: Some(o.metrics),
                }),
            }),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::parse_yaml;
    use crate::config::validate::tests::{FULL, PKCS11, cert_doc, with};

    /// The resolved form printed by `config` parses back to the same config.
    #[test]
    fn resolved_round_trip() {
        for text in [
            FULL.to_owned(),
            cert_doc("pkcs11", PKCS11),
            with(FULL, "server.socketGroup", "\"1234\""),
            with(
                FULL,
                "telemetry.otlp",
                "{endpoint: \"https://c:4317\", caFile: /ca.pem, clientCertFile: /c.pem, clientKeyFile: /k.pem, headerFiles: {authorization: /a}, exportInterval: 30s, timeout: 5s, maxQueueSize: 10, traces: false}",
            ),
            with(FULL, "telemetry.otlp", "{endpoint: \"http://127.0.0.1:4317\"}"),
        ] {
            let c = parse_yaml(&text).unwrap();
            let raw = RawConfig::from_config(&c);
            let out = serde_yaml_ng::to_string(&raw).unwrap();
            assert_eq!(parse_yaml(&out).unwrap(), c, "{out}");
        }
        let c = parse_yaml(&with(FULL, "server.metricsAddress", "\"\"")).unwrap();
        let out = serde_yaml_ng::to_string(&RawConfig::from_config(&c)).unwrap();
        assert_eq!(parse_yaml(&out).unwrap().server.metrics_address, None);
    }
}
