//! JSON Schema (draft 2020-12) of the configuration file, printed by
//! `bao-kms-provider config schema`.
//!
//! The schema is also the field catalogue the loader walks before decoding:
//! every property named here is accepted, nothing else is
//! (`additionalProperties: false` on every object), and the leaf `type`
//! decides which YAML scalar kinds are accepted (no implicit coercion). The
//! value rules that need more than a regular expression (cross-field checks,
//! octal masks, path containment) live in [`super::validate`]; the patterns
//! here say the same thing for editors and CI linters.
//!
//! Tests below keep this document, the raw serde structs in [`super::raw`]
//! and the validator in step.

use serde_json::{Value, json};

/// `$id` of the schema document.
pub const SCHEMA_ID: &str = "urn:bao-kms-provider:config:v1alpha1";
/// `title` of the schema document.
pub const SCHEMA_TITLE: &str = "bao-kms-provider configuration";

/// A Go-style duration: one or more `<number><unit>` terms (`30s`, `1m30s`,
/// `1.5h`, `250ms`), or the bare `0`.
pub const DURATION_PATTERN: &str = r"^(?:0|(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:ns|us|µs|μs|ms|s|m|h))+)$";
/// `server.socketMode`: four octal digits with a leading zero.
pub const SOCKET_MODE_PATTERN: &str = r"^0[0-7]{3}$";
/// `transit.keyName`: one path segment starting and ending with a letter, digit or `_`.
pub const KEY_NAME_PATTERN: &str = r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?$";
/// `openbao.namespace`: empty, or relative `/`-separated segments.
pub const NAMESPACE_PATTERN: &str = r"^$|^[^/%\s]+(?:/[^/%\s]+)*$";
/// Relative OpenBao path without empty, `.` or `..` segments.
pub const MOUNT_PATH_PATTERN: &str =
    r"^(?!\.\.?(?:/|$))(?!.*/\.\.?(?:/|$))[^/\s%?#\x00-\x1f\x7f]+(?:/[^/\s%?#\x00-\x1f\x7f]+)*$";
/// Auth mount path: as [`MOUNT_PATH_PATTERN`], starting with `auth/`.
pub const AUTH_MOUNT_PATH_PATTERN: &str =
    r"^auth/(?!\.\.?(?:/|$))(?!.*/\.\.?(?:/|$))[^/\s%?#\x00-\x1f\x7f]+(?:/[^/\s%?#\x00-\x1f\x7f]+)*$";
/// Non-empty label without control characters or surrounding whitespace.
pub const LABEL_PATTERN: &str = r"^[^\s\x00-\x1f\x7f](?:[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f])?$";
/// `host:port`, or empty to disable the listener.
pub const LISTEN_ADDRESS_PATTERN: &str = r"^$|^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$";
/// `https://host[:port]`, optionally with one trailing `/`.
pub const HTTPS_ADDRESS_PATTERN: &str = r"^https://[^/@?#\s]+/?$";
/// An absolute path.
pub const ABSOLUTE_PATH_PATTERN: &str = r"^/[^\x00-\x1f\x7f]*[^/\x00-\x1f\x7f]$";
/// `server.socketGroup`: a decimal GID or a group name.
pub const SOCKET_GROUP_PATTERN: &str = r"^(?:[0-9]+|[A-Za-z0-9_.][A-Za-z0-9_.-]*\$?)$";

fn duration(description: &str, default: &str) -> Value {
    json!({
        "type": "string",
        "description": description,
        "pattern": DURATION_PATTERN,
        "default": default,
    })
}

fn queue(description: &str, default: i64) -> Value {
    json!({
        "type": "integer",
        "description": description,
        "minimum": 0,
        "maximum": 65536,
        "default": default,
    })
}

fn path(description: &str, example: &str) -> Value {
    json!({
        "type": "string",
        "description": description,
        "pattern": ABSOLUTE_PATH_PATTERN,
        "examples": [example],
    })
}

fn label(description: &str, example: &str) -> Value {
    json!({
        "type": "string",
        "description": description,
        "pattern": LABEL_PATTERN,
        "examples": [example],
    })
}

fn auth_mount(example: &str) -> Value {
    json!({
        "type": "string",
        "description": "Auth mount path relative to the namespace, including the `auth/` prefix.",
        "pattern": AUTH_MOUNT_PATH_PATTERN,
        "examples": [example],
    })
}

fn limit(description: &str, default: i64) -> Value {
    json!({
        "type": "integer",
        "description": description,
        "minimum": 1,
        "maximum": 1024,
        "default": default,
    })
}

fn connections(description: &str, default: i64) -> Value {
    json!({
        "type": "integer",
        "description": description,
        "minimum": 1,
        "maximum": 65536,
        "default": default,
    })
}

fn object(description: &str, required: &[&str], properties: Value) -> Value {
    let mut o = json!({
        "type": "object",
        "description": description,
        "additionalProperties": false,
    });
    if !required.is_empty() {
        o["required"] = json!(required);
    }
    o["properties"] = properties;
    o
}

fn server() -> Value {
    object(
        "Unix socket served to kube-apiserver and the local HTTP listeners.",
        &["socketGroup"],
        json!({
            "socketPath": {
                "type": "string",
                "description": "Absolute path of the KMS v2 gRPC socket; its directory must be /run/openbao-kms or /var/run/openbao-kms (or below).",
                "pattern": ABSOLUTE_PATH_PATTERN,
                "default": "/run/openbao-kms/kms.sock",
            },
            "socketMode": {
                "type": "string",
                "description": "Octal permission bits of the socket (quoted); must not intersect 0117.",
                "pattern": SOCKET_MODE_PATTERN,
                "default": "0660",
            },
            "socketGroup": {
                "type": "string",
                "description": "Group owning the socket: a group name, or a decimal GID as a quoted string.",
                "pattern": SOCKET_GROUP_PATTERN,
                "examples": ["openbao-kms-socket", "1234"],
            },
            "metricsAddress": {
                "type": "string",
                "description": "host:port serving /metrics; empty disables the listener; port 0 picks a free port.",
                "pattern": LISTEN_ADDRESS_PATTERN,
                "default": "127.0.0.1:8081",
            },
            "healthAddress": {
                "type": "string",
                "description": "host:port serving /live, /ready and /status; empty disables the listener; port 0 picks a free port.",
                "pattern": LISTEN_ADDRESS_PATTERN,
                "default": "127.0.0.1:8082",
            },
            "maxConcurrentStatus": limit("Concurrent Status calls; excess calls wait in the Status queue.", 16),
            "maxConcurrentEncrypt": limit("Concurrent Encrypt calls; excess calls wait in the Encrypt queue.", 32),
            "maxConcurrentDecrypt": limit("Concurrent Decrypt calls; excess calls wait in the Decrypt queue.", 1024),
            "maxQueuedStatus": queue("Status calls that may wait for a slot; beyond that they fail with RESOURCE_EXHAUSTED (0: no queue).", 64),
            "maxQueuedEncrypt": queue("Encrypt calls that may wait for a slot; beyond that they fail with RESOURCE_EXHAUSTED (0: no queue).", 256),
            "maxQueuedDecrypt": queue("Decrypt calls that may wait for a slot; beyond that they fail with RESOURCE_EXHAUSTED (0: no queue).", 2048),
            "decryptBatchMaxItems": {
                "type": "integer",
                "description": "Most distinct in-flight Decrypts one Transit batch_input call carries; 1 turns batching off.",
                "minimum": 1,
                "maximum": 256,
                "default": 64,
            },
            "decryptBatchMaxWait": duration("Longest a Decrypt waits for a free Transit call (maxConcurrentDecryptCalls) before it gets one of its own (at most 1s).", "5ms"),
            "maxConcurrentDecryptCalls": limit("Transit decrypt calls in flight; further distinct Decrypts wait to be batched into the next free call.", 4),
            "maxKmsConnections": connections("Connections the KMS socket holds open at once; a connection beyond it is closed at accept.", 64),
            "maxHealthConnections": connections("Connections the health listener holds open at once; a connection beyond it is closed at accept.", 64),
            "maxMetricsConnections": connections("Connections the metrics listener holds open at once; a connection beyond it is closed at accept.", 64),
            "httpHeaderReadTimeout": duration("Longest an HTTP connection of the health or metrics listener may take to send a request's headers, also its idle time between requests (at most 1m).", "5s"),
            "kmsIdleTimeout": duration("A KMS connection whose peer sent nothing (not even a ping answer) for this long is closed; longer than kmsKeepaliveInterval + kmsKeepaliveTimeout, at most 24h.", "5m"),
            "kmsKeepaliveInterval": duration("Interval of the server's HTTP/2 pings on an idle KMS connection (at most 1h).", "30s"),
            "kmsKeepaliveTimeout": duration("A KMS connection whose ping stays unanswered this long is closed (at most 1m).", "10s"),
            "maxQueueWait": duration("Longest wait for a slot when the caller's gRPC deadline is later or absent (at most 1m); a call whose deadline cannot be met fails at once with DEADLINE_EXCEEDED.", "5s"),
        }),
    )
}

fn openbao() -> Value {
    object(
        "The OpenBao server.",
        &["address", "caCertFile", "tlsServerName", "instanceId"],
        json!({
            "address": {
                "type": "string",
                "description": "https://host[:port] of OpenBao; no path, user info, query or fragment.",
                "pattern": HTTPS_ADDRESS_PATTERN,
                "examples": ["https://bao.example.internal:8200"],
            },
            "namespace": {
                "type": "string",
                "description": "Identity-bearing. OpenBao namespace sent as X-Vault-Namespace; empty for none.",
                "pattern": NAMESPACE_PATTERN,
                "default": "",
            },
            "caCertFile": path("PEM CA bundle; the only trust roots for OpenBao. Must not be group/world-writable.", "/etc/openbao-kms/tls/ca.crt"),
            "tlsServerName": {
                "type": "string",
                "description": "Name expected in the OpenBao server certificate (SNI).",
                "pattern": r"^[A-Za-z0-9.:\-\[\]]+$",
                "examples": ["bao.example.internal"],
            },
            "timeout": duration("Deadline of one OpenBao request.", "2s"),
            "instanceId": label("Identity-bearing. Stable label of the OpenBao cluster (not a URL).", "bao-prod-a"),
        }),
    )
}

fn auth() -> Value {
    let mut a = object(
        "How the provider logs in to OpenBao. The section named by `method` is required; the others must be absent.",
        &[],
        json!({
            "method": {
                "type": "string",
                "description": "Login method.",
                "enum": ["jwt", "cert", "approle", "token"],
                "default": "jwt",
            },
            "loginBeforeTokenExpiry": duration("Refresh-ahead window before the token expires.", "5m"),
            "tokenRenewalIncrement": duration("Increment requested on token renewal; must exceed loginBeforeTokenExpiry.", "1h"),
            "loginTimeout": duration("Bound of one shared renew/login; 0s means max(openbao.timeout, 5s).", "0s"),
            "jwt": object(
                "JWT login with a token read from a file (source file) or obtained by an OAuth2 client-credentials grant (source oauth2) before every login.",
                &["mountPath", "role"],
                json!({
                    "mountPath": auth_mount("auth/k8s-workload-a-jwt"),
                    "role": label("OpenBao JWT role.", "openbao-kms-control-plane"),
                    "source": {
                        "type": "string",
                        "description": "Where the JWT comes from: `file` (jwtFile) or `oauth2` (the oauth2 section; expectedIssuer and expectedAudience required). Omitted means file when jwtFile is set and oauth2 is not.",
                        "enum": ["file", "oauth2"],
                        "examples": ["file"],
                    },
                    "jwtFile": path("File holding the JWT; re-read before every login. Required for source file, forbidden for oauth2.", "/var/lib/openbao-kms/identity.jwt"),
                    "oauth2": object(
                        "OAuth2 client-credentials grant at a token endpoint (source oauth2).",
                        &["tokenUrl", "clientId", "clientSecretFile", "authMethod"],
                        json!({
                            "tokenUrl": {
                                "type": "string",
                                "description": "https:// token endpoint; a fixed query is allowed, user info and fragment are not; redirects are not followed.",
                                "pattern": "^https://[^@#/?\\s]+([/?][^#\\s]*)?$",
                                "examples": ["https://idp.example.internal/oauth2/token"],
                            },
                            "clientId": label("OAuth2 client id.", "openbao-kms-cp-1"),
                            "clientSecretFile": path("File holding the client secret (one line); re-read before every grant.", "/etc/openbao-kms/oauth2/client-secret"),
                            "authMethod": {
                                "type": "string",
                                "description": "How the client authenticates to the token endpoint (no fallback).",
                                "enum": ["client_secret_basic", "client_secret_post"],
                                "examples": ["client_secret_basic"],
                            },
                            "scopes": {
                                "type": "array",
                                "description": "Scope tokens, joined with spaces into `scope`.",
                                "items": {"type": "string", "pattern": "^[!#-\\[\\]-~]+$"},
                                "default": [],
                            },
                            "audience": label("Issuer-specific `audience` request parameter.", "openbao"),
                            "resources": {
                                "type": "array",
                                "description": "Absolute URIs sent as repeated RFC 8707 `resource` parameters.",
                                "items": {"type": "string"},
                                "default": [],
                            },
                            "caCertFile": path("PEM CA bundle for the token endpoint; omitted = the system's roots.", "/etc/openbao-kms/oauth2/ca.crt"),
                        }),
                    ),
                    "minRemainingTtl": duration("A JWT with this much lifetime or less is refused.", "2m"),
                    "clockSkewLeeway": duration("Leeway applied to nbf, iat and exp.", "30s"),
                    "expectedIssuer": label("Local pre-login check of the iss claim.", "https://issuer.example.internal"),
                    "expectedAudience": {
                        "type": "array",
                        "description": "Local pre-login check of the aud claim; no empty items.",
                        "items": {"type": "string", "pattern": LABEL_PATTERN},
                        "default": [],
                        "examples": [["openbao"]],
                    },
                    "expectedSubject": label("Local pre-login check of the sub claim.", "system:node:cp-1"),
                }),
            ),
            "cert": object(
                "TLS certificate login; the private key comes from a PKCS#11 token or a file.",
                &["mountPath", "source"],
                json!({
                    "mountPath": auth_mount("auth/k8s-workload-a-cert"),
                    "source": {
                        "type": "string",
                        "description": "Where the client key lives; the matching section is required.",
                        "enum": ["pkcs11", "file"],
                        "examples": ["pkcs11"],
                    },
                    "name": {
                        "type": "string",
                        "description": "OpenBao cert role name; empty lets OpenBao try every role.",
                        "default": "",
                    },
                    "minRemainingTtl": duration("A client certificate with this much lifetime or less is refused.", "24h"),
                    "clockSkewLeeway": duration("Leeway applied to the certificate validity window.", "30s"),
                    "pkcs11": object(
                        "Client key in a PKCS#11 token.",
                        &["certificateFile", "modulePath", "tokenLabel", "keyLabel", "pinFile", "maxSessions"],
                        json!({
                            "certificateFile": path("PEM client certificate.", "/etc/openbao-kms/cert/client.crt"),
                            "modulePath": path("PKCS#11 module (shared library).", "/usr/lib/softhsm/libsofthsm2.so"),
                            "tokenLabel": label("Token label.", "openbao-kms"),
                            "keyLabel": label("Private key label.", "openbao-kms-client"),
                            "pinFile": path("File holding the user PIN.", "/etc/openbao-kms/cert/pin"),
                            "maxSessions": {
                                "type": "integer",
                                "description": "Session pool size; one session holds the login state, so 2 means one concurrent signer.",
                                "minimum": 2,
                                "maximum": 1024,
                                "examples": [4],
                            },
                        }),
                    ),
                    "file": object(
                        "Client certificate and key in PEM files.",
                        &["certificateFile", "keyFile"],
                        json!({
                            "certificateFile": path("PEM client certificate.", "/etc/openbao-kms/cert/client.crt"),
                            "keyFile": path("PEM private key.", "/etc/openbao-kms/cert/client.key"),
                        }),
                    ),
                }),
            ),
            "approle": object(
                "AppRole login with the role ID and secret ID read from files.",
                &["mountPath", "roleIdFile", "secretIdFile"],
                json!({
                    "mountPath": auth_mount("auth/approle"),
                    "roleIdFile": path("File holding the role ID.", "/etc/openbao-kms/approle/role-id"),
                    "secretIdFile": path("File holding the secret ID.", "/etc/openbao-kms/approle/secret-id"),
                }),
            ),
            "token": object(
                "Development only: a token read from a file.",
                &["tokenFile"],
                json!({
                    "tokenFile": path("File holding the OpenBao token.", "/etc/openbao-kms/token"),
                }),
            ),
        }),
    );
    // Editors: the section named by `method` (default jwt) is required.
    a["allOf"] = json!([
        {"if": {"properties": {"method": {"const": "jwt"}}}, "then": {"required": ["jwt"]}},
        {"if": {"properties": {"method": {"const": "cert"}}, "required": ["method"]}, "then": {"required": ["cert"]}},
        {"if": {"properties": {"method": {"const": "approle"}}, "required": ["method"]}, "then": {"required": ["approle"]}},
        {"if": {"properties": {"method": {"const": "token"}}, "required": ["method"]}, "then": {"required": ["token"]}},
    ]);
    a
}

fn transit() -> Value {
    object(
        "The Transit key. Every value here is identity-bearing: changing one makes existing ciphertext undecryptable.",
        &["mountPath", "keyName", "keyIdScope"],
        json!({
            "mountPath": {
                "type": "string",
                "description": "Identity-bearing. Transit mount path relative to the namespace.",
                "pattern": MOUNT_PATH_PATTERN,
                "examples": ["transit"],
            },
            "keyName": {
                "type": "string",
                "description": "Identity-bearing. Transit key name (one path segment).",
                "pattern": KEY_NAME_PATTERN,
                "examples": ["k8s-workload-a-etcd"],
            },
            "keyIdScope": object(
                "Identity-bearing labels bound into every key_id and AAD.",
                &["providerName", "clusterId", "transitMountId", "keyLineageId"],
                json!({
                    "providerName": {
                        "type": "string",
                        "description": "Identity-bearing. Equals the KMS provider name in the EncryptionConfiguration.",
                        "pattern": r"^[^\s:\x00-\x1f\x7f](?:[^:\x00-\x1f\x7f]*[^\s:\x00-\x1f\x7f])?$",
                        "examples": ["openbao-kms-workload-a"],
                    },
                    "clusterId": label("Identity-bearing. Cluster label.", "workload-a"),
                    "transitMountId": label("Identity-bearing. Operator label of the Transit mount (not the accessor).", "transit-prod-primary"),
                    "keyLineageId": label("Identity-bearing. Random ID chosen when the key was created.", "01HXEXAMPLEKEYLINEAGEID"),
                }),
            ),
        }),
    )
}

fn bootstrap() -> Value {
    object(
        "Startup retries.",
        &[],
        json!({
            "graceTimeout": duration("How long startup retries its first probes before exiting.", "60s"),
            "retryInterval": duration("Pause between startup attempts.", "5s"),
        }),
    )
}

fn status() -> Value {
    object(
        "Background probes behind the KMS Status call.",
        &[],
        json!({
            "probeInterval": duration("Metadata probe cadence; must be below statusMaxStaleness.", "30s"),
            "deepProbeInterval": duration("Encrypt+decrypt probe cadence.", "5m"),
            "statusMaxStaleness": duration("Oldest cached probe result still reported healthy.", "2m"),
        }),
    )
}

fn state() -> Value {
    object(
        "Local key registry.",
        &[],
        json!({
            "path": {
                "type": "string",
                "description": "Absolute path of the state file; the checkpoint is <path>.checkpoint, the lock <path>.lock.",
                "pattern": ABSOLUTE_PATH_PATTERN,
                "default": "/var/lib/openbao-kms/state/key-registry.json",
            },
        }),
    )
}

fn rotation() -> Value {
    object(
        "How a new Transit key version becomes the active key.",
        &[],
        json!({
            "mode": {
                "type": "string",
                "description": "Only `observed`: the provider follows rotations made in OpenBao.",
                "enum": ["observed"],
                "default": "observed",
            },
            "activationDelay": duration("How long a new version must be observed before it encrypts.", "2m"),
            "requireStableObservationCount": {
                "type": "integer",
                "description": "Consecutive identical observations required before promotion.",
                "minimum": 1,
                "maximum": 1000000,
                "default": 3,
            },
            "rejectVersionRollback": {
                "type": "boolean",
                "description": "Refuse a Transit latest version lower than the active one.",
                "default": true,
            },
            "holdAtVersion": {
                "type": "integer",
                "description": "Hold promotion: never make a Transit version above this one active. Newer versions are still observed and decryptable; remove the setting and restart the provider to release them.",
                "minimum": 1,
                "examples": [1],
            },
        }),
    )
}

fn logging() -> Value {
    object(
        "Logs.",
        &[],
        json!({
            "level": {"type": "string", "enum": ["debug", "info", "warn", "error"], "default": "info"},
            "format": {"type": "string", "enum": ["json", "text"], "default": "json"},
            "logOpenBaoRequestIDs": {
                "type": "boolean",
                "description": "Log OpenBao request IDs for correlation with the audit log.",
                "default": true,
            },
            "requestLogBurst": {
                "type": "integer",
                "description": "Failure lines (kms.request, openbao.request) written per event and error class in each requestLogWindow; the rest are counted in openbao_kms_log_lines_suppressed_total and summed up in one log.suppressed line per window.",
                "minimum": 1,
                "maximum": 100000,
                "default": 10,
            },
            "requestLogWindow": {
                "type": "string",
                "description": "The window of requestLogBurst. Positive, at most 1h.",
                "pattern": DURATION_PATTERN,
                "default": "10s",
            },
            "debugCorrelation": object(
                "Time-boxed debug correlation: for ttl after the provider starts, the kms.request and openbao.request lines carry the hash of the request uid and incidentId. enabled: true requires level: debug, logOpenBaoRequestIDs: true and incidentId.",
                &[],
                json!({
                    "enabled": {"type": "boolean", "default": false},
                    "ttl": {
                        "type": "string",
                        "description": "Positive, at most 1h.",
                        "pattern": DURATION_PATTERN,
                        "default": "15m",
                    },
                    "incidentId": {
                        "type": "string",
                        "description": "At most 64 characters; no control characters or surrounding whitespace.",
                        "maxLength": 64,
                        "pattern": LABEL_PATTERN,
                        "examples": ["INC-1234"],
                    },
                }),
            ),
        }),
    )
}

/// `telemetry.otlp.headerFiles` names: gRPC metadata keys (lower case, no
/// `grpc-` prefix, no binary `-bin` suffix).
pub const HEADER_NAME_PATTERN: &str = r"^(?!grpc-)(?!.*-bin$)[a-z0-9][a-z0-9_.-]*$";
/// `telemetry.otlp.endpoint`: `https://host[:port]` or `http://host[:port]` (loopback only).
pub const OTLP_ENDPOINT_PATTERN: &str = r"^https?://[^/@?#\s]+/?$";

fn telemetry() -> Value {
    object(
        "Telemetry export beside /metrics. Off unless otlp is present.",
        &[],
        json!({
            "otlp": object(
                "OTLP/gRPC export of metrics and traces (a span per KMS call, child spans per OpenBao request) to a collector. Exports run off the request path with a bounded queue: a collector that is down or slow drops spans (counted in openbao_kms_otlp_spans_dropped_total), never fails or slows a KMS call.",
                &["endpoint"],
                json!({
                    "endpoint": {
                        "type": "string",
                        "description": "The collector's OTLP/gRPC address: https://host:port, or http://host:port to a loopback address only.",
                        "pattern": OTLP_ENDPOINT_PATTERN,
                        "examples": ["https://otel-collector.monitoring.svc:4317"],
                    },
                    "caFile": {
                        "type": "string",
                        "description": "PEM bundle trusted for an https endpoint (required there).",
                        "pattern": ABSOLUTE_PATH_PATTERN,
                        "examples": ["/etc/openbao-kms/otlp/ca.crt"],
                    },
                    "clientCertFile": {
                        "type": "string",
                        "description": "TLS client certificate (PEM) presented to the collector; requires clientKeyFile.",
                        "pattern": ABSOLUTE_PATH_PATTERN,
                        "examples": ["/etc/openbao-kms/otlp/client.crt"],
                    },
                    "clientKeyFile": {
                        "type": "string",
                        "description": "Private key (PEM) of clientCertFile.",
                        "pattern": ABSOLUTE_PATH_PATTERN,
                        "examples": ["/etc/openbao-kms/otlp/client.key"],
                    },
                    "headerFiles": {
                        "type": "object",
                        "description": "gRPC metadata sent with every export: lower-case header name -> absolute path of a file holding the value (read at start, one trailing newline removed, never logged).",
                        "propertyNames": {"pattern": HEADER_NAME_PATTERN},
                        "additionalProperties": {"type": "string", "pattern": ABSOLUTE_PATH_PATTERN},
                        "examples": [{"authorization": "/etc/openbao-kms/otlp/authorization"}],
                    },
                    "exportInterval": {
                        "type": "string",
                        "description": "How often metrics are pushed. 1s to 1h.",
                        "pattern": DURATION_PATTERN,
                        "default": "60s",
                    },
                    "timeout": {
                        "type": "string",
                        "description": "Deadline of one export call. Positive, at most 1m and at most exportInterval.",
                        "pattern": DURATION_PATTERN,
                        "default": "10s",
                    },
                    "maxQueueSize": {
                        "type": "integer",
                        "description": "Finished spans waiting for export; beyond it new spans are dropped and counted.",
                        "minimum": 1,
                        "maximum": 1000000,
                        "default": 2048,
                    },
                    "traces": {"type": "boolean", "description": "Export traces.", "default": true},
                    "metrics": {"type": "boolean", "description": "Export metrics (the /metrics catalogue).", "default": true},
                }),
            ),
        }),
    )
}

/// The JSON Schema of `configVersion: v1alpha1`.
pub fn json_schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": SCHEMA_TITLE,
        "description": "Configuration of the OpenBao Transit KMS v2 provider for Kubernetes. Durations are strings with a unit (\"30s\"); numbers meant as strings must be quoted.",
        "type": "object",
        "additionalProperties": false,
        "required": ["server", "openbao", "auth", "transit"],
        "properties": {
            "configVersion": {"type": "string", "const": super::CONFIG_VERSION, "default": super::CONFIG_VERSION},
            "server": server(),
            "openbao": openbao(),
            "auth": auth(),
            "transit": transit(),
            "bootstrap": bootstrap(),
            "status": status(),
            "state": state(),
            "rotation": rotation(),
            "logging": logging(),
            "telemetry": telemetry(),
        },
    })
}

/// The schema as pretty-printed JSON with a trailing newline.
pub fn json_schema_pretty() -> String {
    // Serializing a `serde_json::Value` cannot fail: its maps have string keys.
    let mut text = serde_json::to_string_pretty(&json_schema()).expect("a JSON value serialises");
    text.push('\n');
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::raw::RawConfig;
    use crate::config::validate::parse_yaml;
    use serde_yaml_ng::Value as Yaml;

    /// Dotted paths of every leaf property and every object in the schema.
    fn walk(schema: &Value, path: &str, leaves: &mut Vec<String>, objects: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            objects.push(path.to_owned());
            for (name, child) in props {
                let p = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}.{name}")
                };
                walk(child, &p, leaves, objects);
            }
        } else {
            leaves.push(path.to_owned());
        }
    }

    /// A value for every property: its default, else its first example.
    fn example(schema: &Value) -> Yaml {
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            let mut m = serde_yaml_ng::Mapping::new();
            for (name, child) in props {
                m.insert(Yaml::String(name.clone()), example(child));
            }
            return Yaml::Mapping(m);
        }
        let v = schema
            .get("examples")
            .and_then(|e| e.get(0))
            .or_else(|| schema.get("default"))
            .or_else(|| schema.get("const"))
            .unwrap_or_else(|| panic!("no example or default in {schema}"));
        serde_yaml_ng::to_value(v).unwrap()
    }

    fn get_mut<'a>(v: &'a mut Yaml, path: &str) -> &'a mut Yaml {
        path.split('.')
            .filter(|s| !s.is_empty())
            .fold(v, |v, k| v.get_mut(k).unwrap())
    }

    fn remove(v: &mut Yaml, path: &str) {
        let (parent, key) = path.rsplit_once('.').unwrap_or(("", path));
        get_mut(v, parent).as_mapping_mut().unwrap().remove(key);
    }

    fn full_example() -> Yaml {
        example(&json_schema())
    }

    #[test]
    fn schema_header() {
        let s = json_schema();
        assert_eq!(s["$schema"], "https://json-schema.org/draft/2020-12/schema");
        assert_eq!(s["$id"], SCHEMA_ID);
        assert_eq!(s["title"], SCHEMA_TITLE);
        assert_eq!(s["required"], json!(["server", "openbao", "auth", "transit"]));
        assert_eq!(s["properties"]["configVersion"]["const"], "v1alpha1");
        assert!(json_schema_pretty().starts_with("{\n"));
    }

    #[test]
    fn every_object_is_closed() {
        let (mut leaves, mut objects) = (vec![], vec![]);
        walk(&json_schema(), "", &mut leaves, &mut objects);
        let schema = json_schema();
        for o in &objects {
            let mut node = &schema;
            for k in o.split('.').filter(|s| !s.is_empty()) {
                node = &node["properties"][k];
            }
            assert_eq!(node["additionalProperties"], json!(false), "{o}");
            assert_eq!(node["type"], "object", "{o}");
        }
        for l in &leaves {
            assert!(!l.is_empty());
        }
    }

    /// Every property of the schema is accepted by the raw structs and
    /// survives decoding (nothing is silently dropped): decoding the full
    /// example and encoding it again gives the same document.
    #[test]
    fn raw_accepts_every_schema_property() {
        let full = full_example();
        let raw: RawConfig = serde_yaml_ng::from_value(full.clone()).unwrap();
        let back = serde_yaml_ng::to_value(&raw).unwrap();
        assert_eq!(back, full);
    }

    /// The raw structs accept nothing beyond the schema: for every object,
    /// the field list serde reports for an unknown key equals the schema's.
    #[test]
    fn raw_accepts_nothing_else() {
        let schema = json_schema();
        let (mut leaves, mut objects) = (vec![], vec![]);
        walk(&schema, "", &mut leaves, &mut objects);
        for o in &objects {
            let mut doc = full_example();
            let obj = get_mut(&mut doc, o).as_mapping_mut().unwrap();
            let expected: Vec<String> = obj.keys().map(|k| k.as_str().unwrap().to_owned()).collect();
            obj.insert(Yaml::String("zzUnknown".into()), Yaml::Bool(true));
            let err = serde_yaml_ng::from_value::<RawConfig>(doc).unwrap_err().to_string();
            assert!(err.contains("unknown field `zzUnknown`"), "{o}: {err}");
            let tail = err.split_once(", expected ").map(|(_, t)| t).unwrap_or_default();
            let accepted: Vec<String> = tail.split('`').skip(1).step_by(2).map(str::to_owned).collect();
            let mut a = accepted.clone();
            let mut e = expected.clone();
            a.sort();
            e.sort();
            assert_eq!(a, e, "fields accepted at {o:?}");
        }
    }

    /// Misspelling any leaf fails both the raw decoder and the validator,
    /// which names the misspelt path.
    #[test]
    fn misspelt_leaf_fails() {
        let (mut leaves, mut objects) = (vec![], vec![]);
        walk(&json_schema(), "", &mut leaves, &mut objects);
        assert!(leaves.len() > 60, "{}", leaves.len());
        for leaf in &leaves {
            let mut doc = valid_jwt_example();
            let (parent, key) = leaf.rsplit_once('.').unwrap_or(("", leaf));
            let Some(obj) = parent
                .split('.')
                .filter(|s| !s.is_empty())
                .try_fold(&mut doc, |v, k| v.get_mut(k))
                .and_then(Yaml::as_mapping_mut)
            else {
                // Sections absent from the jwt example (cert, approle, token).
                continue;
            };
            let value = obj.remove(key).unwrap_or(Yaml::String("x".into()));
            let typo = format!("{key}x");
            obj.insert(Yaml::String(typo.clone()), value);
            let text = serde_yaml_ng::to_string(&doc).unwrap();
            assert!(serde_yaml_ng::from_value::<RawConfig>(doc).is_err(), "{leaf}");
            let errs = parse_yaml(&text).unwrap_err();
            let want = if parent.is_empty() {
                typo.clone()
            } else {
                format!("{parent}.{typo}")
            };
            assert!(errs.0.iter().any(|e| e.path == want), "{leaf}: {errs}");
        }
    }

    /// The full example restricted to one auth method is a valid config.
    pub(crate) fn valid_jwt_example() -> Yaml {
        let mut doc = full_example();
        for p in ["auth.cert", "auth.approle", "auth.token", "auth.jwt.oauth2"] {
            remove(&mut doc, p);
        }
        *get_mut(&mut doc, "server.socketPath") = Yaml::String("/run/openbao-kms/kms.sock".into());
        doc
    }

    #[test]
    fn full_example_per_method_is_valid() {
        let doc = valid_jwt_example();
        let cfg = parse_yaml(&serde_yaml_ng::to_string(&doc).unwrap()).unwrap();
        assert_eq!(cfg.auth.method.name(), "jwt");

        for (method, drop) in [
            ("cert", vec!["auth.jwt", "auth.approle", "auth.token", "auth.cert.file"]),
            ("approle", vec!["auth.jwt", "auth.cert", "auth.token"]),
            ("token", vec!["auth.jwt", "auth.cert", "auth.approle"]),
        ] {
            let mut doc = full_example();
            for p in drop {
                remove(&mut doc, p);
            }
            *get_mut(&mut doc, "auth.method") = Yaml::String(method.into());
            let cfg = parse_yaml(&serde_yaml_ng::to_string(&doc).unwrap()).unwrap();
            assert_eq!(cfg.auth.method.name(), method);
        }

        // The oauth2 source of jwt.
        let mut doc = full_example();
        for p in ["auth.cert", "auth.approle", "auth.token", "auth.jwt.jwtFile"] {
            remove(&mut doc, p);
        }
        *get_mut(&mut doc, "auth.jwt.source") = Yaml::String("oauth2".into());
        *get_mut(&mut doc, "server.socketPath") = Yaml::String("/run/openbao-kms/kms.sock".into());
        let cfg = parse_yaml(&serde_yaml_ng::to_string(&doc).unwrap()).unwrap();
        assert!(matches!(
            &cfg.auth.method,
            crate::config::AuthMethod::Jwt(j) if matches!(j.source, crate::config::JwtSource::OAuth2(_))
        ));

        let mut doc = full_example();
        for p in ["auth.jwt", "auth.approle", "auth.token", "auth.cert.pkcs11"] {
            remove(&mut doc, p);
        }
        *get_mut(&mut doc, "auth.method") = Yaml::String("cert".into());
        *get_mut(&mut doc, "auth.cert.source") = Yaml::String("file".into());
        let cfg = parse_yaml(&serde_yaml_ng::to_string(&doc).unwrap()).unwrap();
        assert!(matches!(
            cfg.auth.method,
            crate::config::AuthMethod::Cert(crate::config::CertAuth {
                source: crate::config::CertSource::File { .. },
                ..
            })
        ));
    }

    /// Defaults in the schema are the defaults the validator applies.
    #[test]
    fn schema_defaults_match_validator() {
        let minimal = crate::config::validate::tests::MINIMAL;
        let from_minimal = parse_yaml(minimal).unwrap();
        let mut doc: Yaml = serde_yaml_ng::from_str(minimal).unwrap();
        let schema = json_schema();
        let (mut leaves, mut objects) = (vec![], vec![]);
        walk(&schema, "", &mut leaves, &mut objects);
        for leaf in leaves {
            if leaf.starts_with("auth.cert")
                || leaf.starts_with("auth.approle")
                || leaf.starts_with("auth.token")
                || leaf.starts_with("auth.jwt.oauth2")
                // Present means on; its defaults: validate::telemetry's tests.
                || leaf.starts_with("telemetry.otlp")
            {
                continue;
            }
            let mut node = &schema;
            for k in leaf.split('.') {
                node = &node["properties"][k];
            }
            let Some(default) = node.get("default") else {
                continue;
            };
            let mut cur = &mut doc;
            let parts: Vec<&str> = leaf.split('.').collect();
            for k in &parts[..parts.len() - 1] {
                let m = cur.as_mapping_mut().unwrap();
                if !m.contains_key(*k) {
                    m.insert(Yaml::String((*k).into()), Yaml::Mapping(Default::default()));
                }
                cur = m.get_mut(*k).unwrap();
            }
            let m = cur.as_mapping_mut().unwrap();
            if !m.contains_key(parts[parts.len() - 1]) {
                m.insert(
                    Yaml::String(parts[parts.len() - 1].into()),
                    serde_yaml_ng::to_value(default).unwrap(),
                );
            }
        }
        let explicit = parse_yaml(&serde_yaml_ng::to_string(&doc).unwrap()).unwrap();
        assert_eq!(explicit, from_minimal);
    }
}
