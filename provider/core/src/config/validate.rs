//! Validation: YAML text -> [`Config`], every problem collected in one pass
//! and reported with the YAML path of the field (`server.socketMode`,
//! `auth.jwt.expectedAudience[1]`).
//!
//! Three stages, all pure:
//! 1. The text is parsed into a generic YAML value.
//! 2. The value is walked against the JSON Schema ([`super::schema`]):
//!    unknown fields and wrongly typed scalars are reported and removed, so
//!    one typo does not hide every later problem. An explicit `null`
//!    (`namespace:` with nothing after it) means "not set".
//! 3. The cleaned value is decoded into [`super::raw`] and each field is
//!    checked and converted, with defaults applied, environment/flag
//!    overrides taken into account, and cross-field rules checked last.
//!
//! Nothing here reads the environment or the file system: the provider
//! crate passes overrides and the socket-directory allow-list extension in a
//! [`ValidationContext`], and checks file modes and the CA file itself.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;

use super::raw::{
    RawAppRole, RawAuth, RawBootstrap, RawCert, RawConfig, RawJwt, RawLogging, RawOpenBao, RawRotation, RawServer,
    RawState, RawStatus, RawToken, RawTransit,
};
use super::{
    AppRoleAuth, AuthConfig, AuthMethod, BootstrapConfig, CONFIG_VERSION, CertAuth, CertSource, Config, JwtAuth,
    KeyIdScope, LogFormat, LogLevel, LoggingConfig, OpenBaoConfig, Pkcs11Source, RotationConfig, ServerConfig,
    SocketGroup, StateConfig, StatusConfig, TokenAuth, TransitConfig,
};

/// One validation problem, qualified by the YAML path of the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

/// `path: message`, or the message alone for a problem of the whole file.
impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for e in &self.0 {
            writeln!(f, "{}: {}", e.path, e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Runtime directories a socket may be created in (the directory itself or below).
pub const ALLOWED_SOCKET_DIRS: [&str; 2] = ["/run/openbao-kms", "/var/run/openbao-kms"];

/// Longest socket path the kernel accepts (`sun_path` is 108 bytes with the NUL).
pub const MAX_SOCKET_PATH_BYTES: usize = 107;

/// Environment variables that override `logging.level`.
pub const ENV_LOG_LEVEL: [&str; 2] = ["BAO_KMS_PROVIDER_LOG_LEVEL", "BAO_KMS_PROVIDER_LOGGING_LEVEL"];
/// Environment variables that override `server.metricsAddress`.
pub const ENV_METRICS_ADDRESS: [&str; 2] = [
    "BAO_KMS_PROVIDER_SERVER_METRICS_ADDRESS",
    "BAO_KMS_PROVIDER_SERVER_METRICSADDRESS",
];
/// Environment variables that override `server.healthAddress`.
pub const ENV_HEALTH_ADDRESS: [&str; 2] = [
    "BAO_KMS_PROVIDER_SERVER_HEALTH_ADDRESS",
    "BAO_KMS_PROVIDER_SERVER_HEALTHADDRESS",
];
/// Environment variables naming the configuration file.
pub const ENV_CONFIG_PATH: [&str; 2] = ["BAO_KMS_PROVIDER_CONFIG", "BAO_KMS_PROVIDER_CONFIG_PATH"];

/// A value that replaces the file's value, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub value: String,
    /// Shown after an error about the value, e.g. `BAO_KMS_PROVIDER_LOG_LEVEL` or `--log-level`.
    pub origin: String,
}

/// The only values that may be overridden outside the file. Secrets and
/// identity-bearing values never are.
/// Precedence: defaults < file < environment < flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub log_level: Option<Override>,
    pub metrics_address: Option<Override>,
    pub health_address: Option<Override>,
}

impl Overrides {
    /// Reads the `ENV_*` variables above through `lookup` (the provider passes
    /// `std::env::var`; tests pass a map). An empty variable counts as unset.
    /// Both spellings of one variable set to different values is an error.
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigErrors> {
        let mut errors = Vec::new();
        let mut one = |names: [&str; 2], path: &str| -> Option<Override> {
            let set: Vec<(&str, String)> = names
                .iter()
                .filter_map(|n| lookup(n).filter(|v| !v.is_empty()).map(|v| (*n, v)))
                .collect();
            match set.as_slice() {
                [] => None,
                [(name, value)] => Some(Override {
                    value: value.clone(),
                    origin: (*name).to_owned(),
                }),
                [(a, va), (b, vb), ..] => {
                    if va != vb {
                        errors.push(ConfigError {
                            path: path.to_owned(),
                            message: format!("{a} and {b} are both set, to different values; set only one"),
                        });
                    }
                    Some(Override {
                        value: va.clone(),
                        origin: (*a).to_owned(),
                    })
                }
            }
        };
        let out = Self {
            log_level: one(ENV_LOG_LEVEL, "logging.level"),
            metrics_address: one(ENV_METRICS_ADDRESS, "server.metricsAddress"),
            health_address: one(ENV_HEALTH_ADDRESS, "server.healthAddress"),
        };
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// `self` with every value set in `higher` replaced by it (flags over environment).
    pub fn overridden_by(self, higher: Overrides) -> Overrides {
        Overrides {
            log_level: higher.log_level.or(self.log_level),
            metrics_address: higher.metrics_address.or(self.metrics_address),
            health_address: higher.health_address.or(self.health_address),
        }
    }
}

/// Inputs of validation that do not come from the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidationContext {
    /// Test and development knob: extra absolute directories accepted as the
    /// socket's parent in addition to [`ALLOWED_SOCKET_DIRS`]. The provider
    /// fills it only from `BAO_KMS_PROVIDER_ALLOWED_SOCKET_DIR`, so tests and
    /// `make demo` can serve a socket in a temporary directory. Relative
    /// entries are ignored.
    pub extra_socket_dirs: Vec<PathBuf>,
    /// Environment and flag overrides, applied before validation.
    pub overrides: Overrides,
}

/// Parses and validates a configuration with no overrides and the default
/// socket-directory allow-list.
pub fn parse_yaml(text: &str) -> Result<Config, ConfigErrors> {
    parse_yaml_with(text, &ValidationContext::default())
}

/// Parses and validates a configuration, reporting every problem at once.
pub fn parse_yaml_with(text: &str, ctx: &ValidationContext) -> Result<Config, ConfigErrors> {
    let mut v = Validator {
        errors: Vec::new(),
        ctx,
    };
    let mut doc: Yaml = match serde_yaml_ng::from_str(text) {
        Ok(doc) => doc,
        Err(e) => {
            // serde_yaml_ng syntax errors carry a location and never the
            // document's values.
            return Err(ConfigErrors(vec![ConfigError {
                path: String::new(),
                message: format!("not valid YAML: {e}"),
            }]));
        }
    };
    if doc.is_null() {
        doc = Yaml::Mapping(serde_yaml_ng::Mapping::new());
    }
    let schema = super::schema::json_schema();
    if !doc.is_mapping() {
        v.err(
            "",
            format!("the configuration must be a mapping of sections, not {}", kind(&doc)),
        );
        return Err(ConfigErrors(v.errors));
    }
    sanitize(&mut doc, &schema, "", &mut v);
    let raw: RawConfig = match serde_yaml_ng::from_value(doc) {
        Ok(raw) => raw,
        Err(e) => {
            // Unreachable while the schema and the raw structs agree (tested).
            v.err("", format!("cannot decode the configuration: {e}"));
            return Err(ConfigErrors(v.errors));
        }
    };
    match v.config(&raw) {
        Some(cfg) if v.errors.is_empty() => Ok(cfg),
        _ => {
            if v.errors.is_empty() {
                v.err("", "configuration is invalid");
            }
            Err(ConfigErrors(v.errors))
        }
    }
}

// ---------------------------------------------------------------------------
// Durations

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("must be a duration with a unit, such as \"30s\", \"5m\", \"1h\", \"1m30s\" or \"250ms\"")]
    Malformed,
    #[error("must not be negative")]
    Negative,
    #[error("is too large")]
    Overflow,
}

/// Parses a Go-style duration: one or more `<number><unit>` terms with units
/// `ns`, `us` (`µs`), `ms`, `s`, `m`, `h`, decimals allowed (`1.5h`), or the
/// bare `0`. A number without a unit (`120`) is refused, as is a sign.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.starts_with('-') {
        return Err(DurationError::Negative);
    }
    if s.is_empty() || s.starts_with('+') {
        return Err(DurationError::Malformed);
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let nanos_per: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(DurationError::Malformed),
        };
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(DurationError::Malformed);
        }
        let int_val: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| DurationError::Overflow)?
        };
        let mut term = int_val.checked_mul(nanos_per).ok_or(DurationError::Overflow)?;
        // Fractional digits beyond nanosecond precision are truncated, as in Go.
        let mut scale = nanos_per;
        for digit in frac.bytes() {
            scale /= 10;
            if scale == 0 {
                break;
            }
            term += u128::from(digit - b'0') * scale;
        }
        total = total.checked_add(term).ok_or(DurationError::Overflow)?;
        rest = tail;
    }
    // Go durations are int64 nanoseconds; stay within that range.
    if total > i64::MAX as u128 {
        return Err(DurationError::Overflow);
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| DurationError::Overflow)?;
    let nanos = u32::try_from(total % 1_000_000_000).map_err(|_| DurationError::Overflow)?;
    Ok(Duration::new(secs, nanos))
}

/// Formats a duration compactly so [`parse_duration`] reads it back
/// unchanged: `1h`, `1m30s`, `1s500ms`, `0s`.
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_owned();
    }
    let mut out = String::new();
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let nanos = d.subsec_nanos();
    let (ms, us, ns) = (nanos / 1_000_000, nanos / 1_000 % 1_000, nanos % 1_000);
    for (value, unit) in [
        (h, "h"),
        (m, "m"),
        (s, "s"),
        (ms.into(), "ms"),
        (us.into(), "us"),
        (ns.into(), "ns"),
    ] {
        if value != 0 {
            out.push_str(&format!("{value}{unit}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Stage 2: the schema walk

fn kind(v: &Yaml) -> &'static str {
    match v {
        Yaml::Null => "null",
        Yaml::Bool(_) => "a boolean",
        Yaml::Number(n) if n.is_f64() => "a decimal number",
        Yaml::Number(_) => "an integer",
        Yaml::String(_) => "a string",
        Yaml::Sequence(_) => "a list",
        Yaml::Mapping(_) => "a mapping",
        Yaml::Tagged(_) => "a tagged value",
    }
}

fn type_ok(v: &Yaml, ty: &str) -> bool {
    match (ty, v) {
        ("string", Yaml::String(_)) | ("boolean", Yaml::Bool(_)) => true,
        ("object", Yaml::Mapping(_)) | ("array", Yaml::Sequence(_)) => true,
        ("integer", Yaml::Number(n)) => n.is_i64() || n.is_u64(),
        _ => false,
    }
}

fn type_message(v: &Yaml, schema: &Json) -> String {
    let ty = schema.get("type").and_then(Json::as_str).unwrap_or("");
    let got = kind(v);
    if matches!(v, Yaml::Tagged(_)) {
        return "YAML tags are not supported".to_owned();
    }
    match ty {
        "string" if schema.get("pattern").and_then(Json::as_str) == Some(super::schema::DURATION_PATTERN) => {
            format!("must be a duration string with a unit, such as \"30s\" or \"5m\", not {got}")
        }
        "string" if matches!(v, Yaml::Number(_) | Yaml::Bool(_)) => {
            format!("must be a string, not {got}; quote the value (no implicit conversion)")
        }
        "string" => format!("must be a string, not {got}"),
        "integer" if matches!(v, Yaml::String(_)) => {
            format!("must be an integer, not {got}; write it without quotes")
        }
        "integer" => format!("must be an integer, not {got}"),
        "boolean" => format!("must be true or false, not {got}"),
        "object" => format!("must be a mapping of fields, not {got}"),
        "array" => format!("must be a list, not {got}"),
        _ => format!("has the wrong type ({got})"),
    }
}

/// Fields removed from the schema or belonging to features this provider
/// does not support (such as OAuth2), with a message better than
/// "unknown field".
fn unsupported(path: &str) -> Option<&'static str> {
    Some(match path {
        "auth.jwt.oauth2" => {
            "OAuth2 client-credentials token acquisition is not supported by this provider; \
             use auth.jwt.source: file with a jwtFile kept fresh by your token issuer"
        }
        "auth.cert.spiffe" => "the spiffe certificate source is not supported; use source: pkcs11 or source: file",
        "server.adminAddress" | "server.unsafeDebugEndpoints" => "was removed from configVersion v1alpha1; delete it",
        "transit.useAssociatedData" => "was removed: associated data (AAD) is always used; delete it",
        "logging.redactOpenBaoPaths" => "was removed; delete it",
        "performance" => "is not supported (decrypt micro-batching does not exist); delete it",
        "auth.tokenStorage" => "was removed: tokens are only ever kept in memory; delete it",
        "auth.mountPath"
        | "auth.role"
        | "auth.jwtFile"
        | "auth.minJwtRemainingTtl"
        | "auth.clockSkewLeeway"
        | "auth.expectedIssuer"
        | "auth.expectedAudience"
        | "auth.expectedSubject" => {
            "is a legacy flat auth field; move it under auth.jwt (minJwtRemainingTtl became auth.jwt.minRemainingTtl)"
        }
        _ => return None,
    })
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// Reports unknown fields and type mismatches under `path`, and removes them
/// (and explicit nulls) from `doc` so decoding into the raw structs succeeds
/// and later rules still run on everything else.
fn sanitize(doc: &mut Yaml, schema: &Json, path: &str, v: &mut Validator<'_>) {
    let Some(map) = doc.as_mapping_mut() else {
        return;
    };
    let empty = serde_json::Map::new();
    let props = schema.get("properties").and_then(Json::as_object).unwrap_or(&empty);
    let old = std::mem::take(map);
    for (key, mut value) in old {
        let Some(name) = key.as_str().map(str::to_owned) else {
            v.err(path, format!("field names must be strings, found {}", kind(&key)));
            continue;
        };
        let shown: String = name.escape_debug().collect();
        let child_path = join(path, &shown);
        let Some(child) = props.get(&name) else {
            if let Some(why) = unsupported(&child_path) {
                v.err(&child_path, why);
            } else {
                let mut names: Vec<&str> = props.keys().map(String::as_str).collect();
                let close = names
                    .iter()
                    .copied()
                    .filter(|k| edit_distance(k, &name) <= 2)
                    .min_by_key(|k| edit_distance(k, &name));
                let hint = match close {
                    Some(k) => format!("did you mean {k:?}?"),
                    None => {
                        names.sort_unstable();
                        format!("known fields here: {}", names.join(", "))
                    }
                };
                v.err(&child_path, format!("unknown field; {hint}"));
            }
            continue;
        };
        if value.is_null() {
            continue;
        }
        let ty = child.get("type").and_then(Json::as_str).unwrap_or("");
        if !type_ok(&value, ty) {
            v.err(&child_path, type_message(&value, child));
            continue;
        }
        match ty {
            "object" => sanitize(&mut value, child, &child_path, v),
            "array" => {
                let item_schema = child.get("items").unwrap_or(&Json::Null);
                let item_ty = item_schema.get("type").and_then(Json::as_str).unwrap_or("");
                let mut bad = false;
                if let Some(items) = value.as_sequence() {
                    for (i, item) in items.iter().enumerate() {
                        if !type_ok(item, item_ty) {
                            v.err(&format!("{child_path}[{i}]"), type_message(item, item_schema));
                            bad = true;
                        }
                    }
                }
                if bad {
                    continue;
                }
            }
            _ => {}
        }
        map.insert(key, value);
    }
}

// ---------------------------------------------------------------------------
// Stage 3: value rules

struct Validator<'a> {
    errors: Vec<ConfigError>,
    ctx: &'a ValidationContext,
}

/// True when an error at `earlier` already explains a problem at `path`
/// (same field, or a field inside a section already reported).
fn covers(earlier: &str, path: &str) -> bool {
    earlier == path
        || (!earlier.is_empty()
            && path
                .strip_prefix(earlier)
                .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('[')))
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// Rules shared by every label: non-empty, no control characters, no
/// surrounding whitespace.
fn label_problem(s: &str) -> Option<&'static str> {
    if s.is_empty() {
        Some("must not be empty")
    } else if has_control(s) {
        Some("must not contain control characters")
    } else if s.trim() != s {
        Some("must not have leading or trailing whitespace")
    } else {
        None
    }
}

/// A relative OpenBao path (Transit or auth mount).
fn mount_path_problem(s: &str) -> Option<&'static str> {
    if let Some(p) = label_problem(s) {
        return Some(p);
    }
    if s.starts_with('/') {
        return Some("must be relative (no leading '/'); paths are relative to /v1/ and to the namespace");
    }
    if s.contains("//") {
        return Some("must not contain '//'");
    }
    if s.ends_with('/') {
        return Some("must not end with '/'");
    }
    if s.split('/').any(|seg| seg == "." || seg == "..") {
        return Some("must not contain '.' or '..' segments");
    }
    if s.chars().any(|c| c.is_whitespace() || matches!(c, '%' | '?' | '#')) {
        return Some("must not contain whitespace, '%', '?' or '#'");
    }
    None
}

fn namespace_problem(s: &str) -> Option<&'static str> {
    if s.is_empty() {
        return None;
    }
    if has_control(s) {
        return Some("must not contain control characters");
    }
    if s.trim() != s {
        return Some("must not have leading or trailing whitespace");
    }
    if s.starts_with('/') {
        return Some("must be relative (no leading '/'), e.g. admin/workload-a");
    }
    if s.contains("//") {
        return Some("must not contain '//'");
    }
    if s.contains('%') {
        return Some("must not contain '%'");
    }
    if s.chars().any(char::is_whitespace) {
        return Some("must not contain whitespace");
    }
    if s.split('/').any(|seg| seg.is_empty() || seg == "." || seg == "..") {
        return Some("must not contain empty, '.' or '..' segments (no trailing '/')");
    }
    None
}

fn key_name_ok(s: &str) -> bool {
    let edge = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let inner = |c: char| edge(c) || c == '.' || c == '-';
    match (s.chars().next(), s.chars().last()) {
        (Some(first), Some(last)) => edge(first) && edge(last) && s.chars().all(inner),
        _ => false,
    }
}

fn hostname_ok(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

/// Splits `host:port`; IPv6 hosts are bracketed. Returns the host without brackets.
fn split_host_port(s: &str) -> Result<(&str, Option<&str>), &'static str> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("has an unterminated '[' in the host")?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("has an invalid IPv6 address in brackets");
        }
        match after {
            "" => Ok((host, None)),
            _ => after
                .strip_prefix(':')
                .map(|p| (host, Some(p)))
                .ok_or("must be host:port"),
        }
    } else {
        match s.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => Err("must put an IPv6 host in brackets, e.g. [::1]:8081"),
            Some((host, port)) => Ok((host, Some(port))),
            None => Ok((s, None)),
        }
    }
}

fn host_ok(host: &str) -> bool {
    host.parse::<std::net::IpAddr>().is_ok() || hostname_ok(host)
}

fn port(p: &str) -> Option<u16> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse().ok()
}

/// `host:port` of a listener (port 0 = ephemeral).
fn listen_address_problem(s: &str) -> Option<&'static str> {
    if has_control(s) || s.chars().any(char::is_whitespace) {
        return Some("must not contain whitespace or control characters");
    }
    match split_host_port(s) {
        Err(e) => Some(e),
        Ok((_, None)) => Some("must be host:port, e.g. 127.0.0.1:8081 (empty disables the listener)"),
        Ok(("", Some(_))) => Some("must name a host, e.g. 127.0.0.1:8081 or 0.0.0.0:8081 for every interface"),
        Ok((host, Some(p))) => {
            if !s.starts_with('[') && !host_ok(host) {
                Some("has an invalid host")
            } else if port(p).is_none() {
                Some("has an invalid port (0-65535)")
            } else {
                None
            }
        }
    }
}

/// `https://host[:port]` with an optional trailing `/`, normalized without it.
fn https_address(s: &str) -> Result<String, &'static str> {
    if has_control(s) || s.chars().any(char::is_whitespace) {
        return Err("must not contain whitespace or control characters");
    }
    let Some(rest) = s.strip_prefix("https://") else {
        if s.to_ascii_lowercase().starts_with("http://") {
            return Err("must use https://; TLS to OpenBao is always on");
        }
        return Err("must be an https:// URL, e.g. https://bao.example.internal:8200");
    };
    if rest.contains('#') {
        return Err("must not contain a fragment ('#')");
    }
    if rest.contains('?') {
        return Err("must not contain a query ('?')");
    }
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    if authority.contains('@') {
        return Err("must not contain user info ('user@')");
    }
    if !path.is_empty() {
        return Err("must not have a path; the provider adds /v1/ itself");
    }
    match split_host_port(authority)? {
        ("", _) => Err("must name a host"),
        (host, _) if !authority.starts_with('[') && !host_ok(host) => Err("has an invalid host"),
        (_, Some(p)) if port(p).is_none_or(|p| p == 0) => Err("has an invalid port (1-65535)"),
        _ => Ok(format!("https://{authority}")),
    }
}

/// Common rules of an absolute path in the configuration.
fn absolute_path_problem(s: &str) -> Option<&'static str> {
    if s.is_empty() {
        Some("must not be empty")
    } else if has_control(s) {
        Some("must not contain control characters")
    } else if !s.starts_with('/') {
        Some("must be an absolute path")
    } else if s.ends_with('/') {
        Some("must name a file, not end with '/'")
    } else if Path::new(s)
        .components()
        .any(|c| matches!(c, Component::CurDir | Component::ParentDir))
    {
        Some("must not contain '.' or '..' components")
    } else {
        None
    }
}

/// `auth.method` values, each naming its section under `auth`.
const AUTH_SECTIONS: [&str; 4] = ["jwt", "cert", "approle", "token"];

impl Validator<'_> {
    fn err(&mut self, path: &str, message: impl Into<String>) {
        if self.errors.iter().any(|e| covers(&e.path, path)) {
            return;
        }
        let mut message = message.into();
        if let Some(origin) = self.origin(path) {
            message.push_str(&format!(" (set by {origin})"));
        }
        self.errors.push(ConfigError {
            path: path.to_owned(),
            message,
        });
    }

    fn origin(&self, path: &str) -> Option<&str> {
        let o = &self.ctx.overrides;
        match path {
            "logging.level" => o.log_level.as_ref(),
            "server.metricsAddress" => o.metrics_address.as_ref(),
            "server.healthAddress" => o.health_address.as_ref(),
            _ => None,
        }
        .map(|o| o.origin.as_str())
    }

    fn required<'r>(&mut self, path: &str, v: &'r Option<String>) -> Option<&'r str> {
        match v {
            Some(s) => Some(s),
            None => {
                self.err(path, "is required");
                None
            }
        }
    }

    /// A required non-empty label (identity-bearing values, roles, labels).
    fn label(&mut self, path: &str, v: &Option<String>) -> Option<String> {
        let s = self.required(path, v)?;
        match label_problem(s) {
            Some(p) => {
                self.err(path, p);
                None
            }
            None => Some(s.to_owned()),
        }
    }

    /// An optional label: absent or empty means none.
    fn optional_label(&mut self, path: &str, v: &Option<String>) -> Option<Option<String>> {
        match v.as_deref() {
            None | Some("") => Some(None),
            Some(s) => match label_problem(s) {
                Some(p) => {
                    self.err(path, p);
                    None
                }
                None => Some(Some(s.to_owned())),
            },
        }
    }

    fn file(&mut self, path: &str, v: &Option<String>) -> Option<PathBuf> {
        let s = self.required(path, v)?;
        match absolute_path_problem(s) {
            Some(p) => {
                self.err(path, p);
                None
            }
            None => Some(PathBuf::from(s)),
        }
    }

    fn mount_path(&mut self, path: &str, v: &Option<String>, auth: bool) -> Option<String> {
        let s = self.required(path, v)?;
        if let Some(p) = mount_path_problem(s) {
            self.err(path, p);
            return None;
        }
        if auth && (!s.starts_with("auth/") || s.len() <= "auth/".len()) {
            self.err(path, "must start with auth/ and name the mount, e.g. auth/jwt");
            return None;
        }
        Some(s.to_owned())
    }

    fn duration(&mut self, path: &str, v: &Option<String>, default: Duration, zero_ok: bool) -> Option<Duration> {
        let Some(s) = v else { return Some(default) };
        match parse_duration(s) {
            Ok(d) if d.is_zero() && !zero_ok => {
                self.err(path, "must be positive");
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.err(path, e.to_string());
                None
            }
        }
    }

    fn int(&mut self, path: &str, v: Option<i64>, default: u32, min: u32, max: u32) -> Option<u32> {
        let Some(n) = v else { return Some(default) };
        match u32::try_from(n) {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.err(path, format!("must be between {min} and {max}"));
                None
            }
        }
    }

    fn one_of<T: Copy>(&mut self, path: &str, v: Option<&str>, default: T, options: &[(&str, T)]) -> Option<T> {
        let Some(s) = v else { return Some(default) };
        if let Some((_, t)) = options.iter().find(|(name, _)| *name == s) {
            return Some(*t);
        }
        let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
        self.err(path, format!("must be one of: {}", names.join(", ")));
        None
    }

    fn config(&mut self, raw: &RawConfig) -> Option<Config> {
        if let Some(version) = &raw.config_version
            && version != CONFIG_VERSION
        {
            self.err("configVersion", format!("must be {CONFIG_VERSION}"));
        }
        for (name, present) in [
            ("server", raw.server.is_some()),
            ("openbao", raw.openbao.is_some()),
            ("auth", raw.auth.is_some()),
            ("transit", raw.transit.is_some()),
        ] {
            if !present {
                self.err(name, "section is required");
            }
        }
        let server = raw.server.as_ref().and_then(|s| self.server(s));
        let openbao = raw.openbao.as_ref().and_then(|o| self.openbao(o));
        let timeout = openbao.as_ref().map_or(Duration::from_secs(2), |o| o.timeout);
        let auth = raw.auth.as_ref().and_then(|a| self.auth(a, timeout));
        let transit = raw.transit.as_ref().and_then(|t| self.transit(t));
        let bootstrap = self.bootstrap(&raw.bootstrap.clone().unwrap_or_default());
        let status = self.status(&raw.status.clone().unwrap_or_default());
        let state = self.state(&raw.state.clone().unwrap_or_default());
        let rotation = self.rotation(&raw.rotation.clone().unwrap_or_default());
        let logging = self.logging(&raw.logging.clone().unwrap_or_default());
        Some(Config {
            server: server?,
            openbao: openbao?,
            auth: auth?,
            transit: transit?,
            bootstrap: bootstrap?,
            status: status?,
            state: state?,
            rotation: rotation?,
            logging: logging?,
        })
    }

    fn server(&mut self, r: &RawServer) -> Option<ServerConfig> {
        let socket_path = self.socket_path(r.socket_path.as_deref().unwrap_or("/run/openbao-kms/kms.sock"));
        let socket_mode = self.socket_mode(r.socket_mode.as_deref().unwrap_or("0660"));
        let socket_group = self.socket_group(&r.socket_group);
        let o = &self.ctx.overrides;
        let metrics_raw = o
            .metrics_address
            .as_ref()
            .map(|o| o.value.clone())
            .or(r.metrics_address.clone());
        let health_raw = o
            .health_address
            .as_ref()
            .map(|o| o.value.clone())
            .or(r.health_address.clone());
        let metrics = self.listen_address(
            "server.metricsAddress",
            metrics_raw.as_deref().unwrap_or("127.0.0.1:8081"),
        );
        let health = self.listen_address(
            "server.healthAddress",
            health_raw.as_deref().unwrap_or("127.0.0.1:8082"),
        );
        if let (Some(Some(m)), Some(Some(h))) = (&metrics, &health)
            && listeners_clash(m, h)
        {
            self.err(
                "server.healthAddress",
                format!("must differ from server.metricsAddress ({m})"),
            );
        }
        let status = self.int("server.maxConcurrentStatus", r.max_concurrent_status, 16, 1, 1024);
        let encrypt = self.int("server.maxConcurrentEncrypt", r.max_concurrent_encrypt, 32, 1, 1024);
        let decrypt = self.int("server.maxConcurrentDecrypt", r.max_concurrent_decrypt, 64, 1, 1024);
        Some(ServerConfig {
            socket_path: socket_path?,
            socket_mode: socket_mode?,
            socket_group: socket_group?,
            metrics_address: metrics?,
            health_address: health?,
            max_concurrent_status: status?,
            max_concurrent_encrypt: encrypt?,
            max_concurrent_decrypt: decrypt?,
        })
    }

    fn socket_path(&mut self, s: &str) -> Option<PathBuf> {
        const P: &str = "server.socketPath";
        if let Some(p) = absolute_path_problem(s) {
            self.err(P, p);
            return None;
        }
        if s.len() > MAX_SOCKET_PATH_BYTES {
            self.err(
                P,
                format!(
                    "is {} bytes long; a Unix socket path may have at most {MAX_SOCKET_PATH_BYTES}",
                    s.len()
                ),
            );
            return None;
        }
        let path = PathBuf::from(s);
        let parent = path.parent().unwrap_or(Path::new("/"));
        let extra = self.ctx.extra_socket_dirs.iter().filter(|d| d.is_absolute());
        let allowed = ALLOWED_SOCKET_DIRS
            .iter()
            .map(PathBuf::from)
            .chain(extra.cloned())
            .any(|dir| parent.starts_with(&dir));
        if !allowed {
            self.err(
                P,
                format!(
                    "must be inside {} or {}",
                    ALLOWED_SOCKET_DIRS[0], ALLOWED_SOCKET_DIRS[1]
                ),
            );
            return None;
        }
        Some(path)
    }

    fn socket_mode(&mut self, s: &str) -> Option<u32> {
        const P: &str = "server.socketMode";
        let digits_ok = s.len() == 4 && s.starts_with('0') && s.bytes().all(|b| (b'0'..=b'7').contains(&b));
        let Some(mode) = digits_ok.then(|| u32::from_str_radix(s, 8).ok()).flatten() else {
            self.err(P, "must be a quoted octal mode with a leading zero, e.g. \"0660\"");
            return None;
        };
        if mode & 0o117 != 0 {
            self.err(
                P,
                format!("{s} grants execute or world access; it must not intersect 0117 (use \"0660\")"),
            );
            return None;
        }
        Some(mode)
    }

    fn socket_group(&mut self, v: &Option<String>) -> Option<SocketGroup> {
        const P: &str = "server.socketGroup";
        let s = self.required(P, v)?;
        if s.is_empty() {
            self.err(P, "must not be empty");
            return None;
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return match s.parse::<u32>() {
                Ok(gid) if gid != u32::MAX => Some(SocketGroup::Gid(gid)),
                _ => {
                    self.err(P, "is not a valid numeric GID");
                    None
                }
            };
        }
        let body = s.strip_suffix('$').unwrap_or(s);
        let name_ok = !body.is_empty()
            && !body.starts_with('-')
            && s.len() <= 256
            && body
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !name_ok {
            self.err(
                P,
                "must be a group name (letters, digits, '_', '.', '-') or a decimal GID in quotes",
            );
            return None;
        }
        Some(SocketGroup::Name(s.to_owned()))
    }

    fn listen_address(&mut self, path: &str, s: &str) -> Option<Option<String>> {
        if s.is_empty() {
            return Some(None);
        }
        match listen_address_problem(s) {
            Some(p) => {
                self.err(path, p);
                None
            }
            None => Some(Some(s.to_owned())),
        }
    }

    fn openbao(&mut self, r: &RawOpenBao) -> Option<OpenBaoConfig> {
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

    fn auth(&mut self, r: &RawAuth, openbao_timeout: Duration) -> Option<AuthConfig> {
        let before = self.duration(
            "auth.loginBeforeTokenExpiry",
            &r.login_before_token_expiry,
            Duration::from_secs(300),
            false,
        );
        let increment = self.duration(
            "auth.tokenRenewalIncrement",
            &r.token_renewal_increment,
            Duration::from_secs(3600),
            false,
        );
        if let (Some(b), Some(i)) = (before, increment)
            && i <= b
        {
            self.err(
                "auth.tokenRenewalIncrement",
                format!(
                    "must be greater than auth.loginBeforeTokenExpiry ({})",
                    format_duration(b)
                ),
            );
        }
        let login_timeout = self
            .duration("auth.loginTimeout", &r.login_timeout, Duration::ZERO, true)
            .map(|t| {
                if t.is_zero() {
                    openbao_timeout.max(Duration::from_secs(5))
                } else {
                    t
                }
            });

        let method = r.method.as_deref().unwrap_or("jwt");
        let present = [
            r.jwt.is_some(),
            r.cert.is_some(),
            r.approle.is_some(),
            r.token.is_some(),
        ];
        let method = if AUTH_SECTIONS.contains(&method) {
            for (name, is_present) in AUTH_SECTIONS.iter().zip(present) {
                if *name != method && is_present {
                    self.err(
                        &format!("auth.{name}"),
                        format!("must not be set when auth.method is {method}; remove it or set auth.method: {name}"),
                    );
                }
            }
            match method {
                "jwt" => r.jwt.as_ref().map(|j| self.jwt(j).map(AuthMethod::Jwt)),
                "cert" => r.cert.as_ref().map(|c| self.cert(c).map(AuthMethod::Cert)),
                "approle" => r.approle.as_ref().map(|a| self.approle(a).map(AuthMethod::AppRole)),
                _ => r.token.as_ref().map(|t| self.token(t).map(AuthMethod::Token)),
            }
            .unwrap_or_else(|| {
                self.err(
                    &format!("auth.{method}"),
                    format!("section is required when auth.method is {method}"),
                );
                None
            })
        } else {
            self.err("auth.method", "must be one of: jwt, cert, approle, token");
            None
        };
        Some(AuthConfig {
            method: method?,
            login_before_token_expiry: before?,
            token_renewal_increment: increment?,
            login_timeout: login_timeout?,
        })
    }

    fn jwt(&mut self, r: &RawJwt) -> Option<JwtAuth> {
        match r.source.as_deref() {
            None | Some("file") => {}
            Some("") => self.err("auth.jwt.source", "must not be empty; omit it or set file"),
            Some("oauth2") => self.err(
                "auth.jwt.source",
                "oauth2 is not supported by this provider; use file with a jwtFile kept fresh by your token issuer",
            ),
            Some(_) => self.err("auth.jwt.source", "must be file"),
        }
        let mount_path = self.mount_path("auth.jwt.mountPath", &r.mount_path, true);
        let role = self.label("auth.jwt.role", &r.role);
        let jwt_file = self.file("auth.jwt.jwtFile", &r.jwt_file);
        let min_ttl = self.duration(
            "auth.jwt.minRemainingTtl",
            &r.min_remaining_ttl,
            Duration::from_secs(120),
            false,
        );
        let leeway = self.duration(
            "auth.jwt.clockSkewLeeway",
            &r.clock_skew_leeway,
            Duration::from_secs(30),
            true,
        );
        let issuer = self.optional_label("auth.jwt.expectedIssuer", &r.expected_issuer);
        let subject = self.optional_label("auth.jwt.expectedSubject", &r.expected_subject);
        let mut audience = Some(Vec::new());
        for (i, a) in r.expected_audience.iter().flatten().enumerate() {
            match label_problem(a) {
                Some(p) => {
                    self.err(&format!("auth.jwt.expectedAudience[{i}]"), p);
                    audience = None;
                }
                None => {
                    if let Some(list) = audience.as_mut() {
                        list.push(a.clone());
                    }
                }
            }
        }
        Some(JwtAuth {
            mount_path: mount_path?,
            role: role?,
            jwt_file: jwt_file?,
            min_remaining_ttl: min_ttl?,
            clock_skew_leeway: leeway?,
            expected_issuer: issuer?,
            expected_audience: audience?,
            expected_subject: subject?,
        })
    }

    fn cert(&mut self, r: &RawCert) -> Option<CertAuth> {
        let mount_path = self.mount_path("auth.cert.mountPath", &r.mount_path, true);
        let name = match r.name.as_deref().unwrap_or("") {
            "" => Some(String::new()),
            n => self.label("auth.cert.name", &Some(n.to_owned())),
        };
        let min_ttl = self.duration(
            "auth.cert.minRemainingTtl",
            &r.min_remaining_ttl,
            Duration::from_secs(86_400),
            false,
        );
        let leeway = self.duration(
            "auth.cert.clockSkewLeeway",
            &r.clock_skew_leeway,
            Duration::from_secs(30),
            true,
        );
        let source = match self.required("auth.cert.source", &r.source) {
            None => None,
            Some("pkcs11") => {
                if r.file.is_some() {
                    self.err("auth.cert.file", "must not be set when auth.cert.source is pkcs11");
                }
                match &r.pkcs11 {
                    None => {
                        self.err(
                            "auth.cert.pkcs11",
                            "section is required when auth.cert.source is pkcs11",
                        );
                        None
                    }
                    Some(k) => {
                        let certificate_file = self.file("auth.cert.pkcs11.certificateFile", &k.certificate_file);
                        let module_path = self.file("auth.cert.pkcs11.modulePath", &k.module_path);
                        let token_label = self.label("auth.cert.pkcs11.tokenLabel", &k.token_label);
                        let key_label = self.label("auth.cert.pkcs11.keyLabel", &k.key_label);
                        let pin_file = self.file("auth.cert.pkcs11.pinFile", &k.pin_file);
                        let max_sessions = match k.max_sessions {
                            None => {
                                self.err("auth.cert.pkcs11.maxSessions", "is required (at least 2)");
                                None
                            }
                            some => self.int("auth.cert.pkcs11.maxSessions", some, 2, 2, 1024),
                        };
                        (|| {
                            Some(CertSource::Pkcs11(Pkcs11Source {
                                certificate_file: certificate_file?,
                                module_path: module_path?,
                                token_label: token_label?,
                                key_label: key_label?,
                                pin_file: pin_file?,
                                max_sessions: max_sessions?,
                            }))
                        })()
                    }
                }
            }
            Some("file") => {
                if r.pkcs11.is_some() {
                    self.err("auth.cert.pkcs11", "must not be set when auth.cert.source is file");
                }
                match &r.file {
                    None => {
                        self.err("auth.cert.file", "section is required when auth.cert.source is file");
                        None
                    }
                    Some(f) => {
                        let certificate_file = self.file("auth.cert.file.certificateFile", &f.certificate_file);
                        let key_file = self.file("auth.cert.file.keyFile", &f.key_file);
                        Some(CertSource::File {
                            certificate_file: certificate_file?,
                            key_file: key_file?,
                        })
                    }
                }
            }
            Some("spiffe") => {
                self.err("auth.cert.source", "spiffe is not supported; use pkcs11 or file");
                None
            }
            Some(_) => {
                self.err("auth.cert.source", "must be one of: pkcs11, file");
                None
            }
        };
        Some(CertAuth {
            mount_path: mount_path?,
            name: name?,
            source: source?,
            min_remaining_ttl: min_ttl?,
            clock_skew_leeway: leeway?,
        })
    }

    fn approle(&mut self, r: &RawAppRole) -> Option<AppRoleAuth> {
        let mount_path = self.mount_path("auth.approle.mountPath", &r.mount_path, true);
        let role_id_file = self.file("auth.approle.roleIdFile", &r.role_id_file);
        let secret_id_file = self.file("auth.approle.secretIdFile", &r.secret_id_file);
        if let (Some(a), Some(b)) = (&role_id_file, &secret_id_file)
            && a == b
        {
            self.err("auth.approle.secretIdFile", "must differ from auth.approle.roleIdFile");
        }
        Some(AppRoleAuth {
            mount_path: mount_path?,
            role_id_file: role_id_file?,
            secret_id_file: secret_id_file?,
        })
    }

    fn token(&mut self, r: &RawToken) -> Option<TokenAuth> {
        Some(TokenAuth {
            token_file: self.file("auth.token.tokenFile", &r.token_file)?,
        })
    }

    fn transit(&mut self, r: &RawTransit) -> Option<TransitConfig> {
        let mount_path = self.mount_path("transit.mountPath", &r.mount_path, false);
        let key_name = self.required("transit.keyName", &r.key_name).and_then(|s| {
            if key_name_ok(s) {
                Some(s.to_owned())
            } else {
                self.err(
                    "transit.keyName",
                    "must be one path segment of letters, digits, '_', '.' or '-', starting and ending with a letter, digit or '_'",
                );
                None
            }
        });
        let scope = match &r.key_id_scope {
            None => {
                self.err("transit.keyIdScope", "section is required");
                None
            }
            Some(k) => {
                let provider_name = self
                    .label("transit.keyIdScope.providerName", &k.provider_name)
                    .and_then(|n| {
                        if n.contains(':') {
                            self.err(
                                "transit.keyIdScope.providerName",
                                "must not contain ':' (kube-apiserver refuses such KMS provider names)",
                            );
                            None
                        } else {
                            Some(n)
                        }
                    });
                let cluster_id = self.label("transit.keyIdScope.clusterId", &k.cluster_id);
                let mount_id = self.label("transit.keyIdScope.transitMountId", &k.transit_mount_id);
                let lineage = self.label("transit.keyIdScope.keyLineageId", &k.key_lineage_id);
                (|| {
                    Some(KeyIdScope {
                        provider_name: provider_name?,
                        cluster_id: cluster_id?,
                        transit_mount_id: mount_id?,
                        key_lineage_id: lineage?,
                    })
                })()
            }
        };
        Some(TransitConfig {
            mount_path: mount_path?,
            key_name: key_name?,
            key_id_scope: scope?,
        })
    }

    fn bootstrap(&mut self, r: &RawBootstrap) -> Option<BootstrapConfig> {
        let grace = self.duration(
            "bootstrap.graceTimeout",
            &r.grace_timeout,
            Duration::from_secs(60),
            true,
        );
        let retry = self.duration(
            "bootstrap.retryInterval",
            &r.retry_interval,
            Duration::from_secs(5),
            false,
        );
        Some(BootstrapConfig {
            grace_timeout: grace?,
            retry_interval: retry?,
        })
    }

    fn status(&mut self, r: &RawStatus) -> Option<StatusConfig> {
        let probe = self.duration(
            "status.probeInterval",
            &r.probe_interval,
            Duration::from_secs(30),
            false,
        );
        let deep = self.duration(
            "status.deepProbeInterval",
            &r.deep_probe_interval,
            Duration::from_secs(300),
            false,
        );
        let stale = self.duration(
            "status.statusMaxStaleness",
            &r.status_max_staleness,
            Duration::from_secs(120),
            false,
        );
        if let (Some(p), Some(s)) = (probe, stale)
            && p >= s
        {
            self.err(
                "status.probeInterval",
                format!("must be less than status.statusMaxStaleness ({})", format_duration(s)),
            );
        }
        Some(StatusConfig {
            probe_interval: probe?,
            deep_probe_interval: deep?,
            status_max_staleness: stale?,
        })
    }

    fn state(&mut self, r: &RawState) -> Option<StateConfig> {
        let s = r
            .path
            .as_deref()
            .unwrap_or("/var/lib/openbao-kms/state/key-registry.json");
        match absolute_path_problem(s) {
            Some(p) => {
                self.err("state.path", p);
                None
            }
            None => Some(StateConfig { path: PathBuf::from(s) }),
        }
    }

    fn rotation(&mut self, r: &RawRotation) -> Option<RotationConfig> {
        if let Some(mode) = &r.mode
            && mode != "observed"
        {
            self.err("rotation.mode", "must be observed (the only rotation mode)");
        }
        let delay = self.duration(
            "rotation.activationDelay",
            &r.activation_delay,
            Duration::from_secs(120),
            false,
        );
        let count = self.int(
            "rotation.requireStableObservationCount",
            r.require_stable_observation_count,
            3,
            1,
            1_000_000,
        );
        Some(RotationConfig {
            activation_delay: delay?,
            require_stable_observation_count: count?,
            reject_version_rollback: r.reject_version_rollback.unwrap_or(true),
        })
    }

    /// `debugCorrelation` is decoded and its documented constraints checked
    /// so `v1alpha1` configs that carry the section (disabled) still load,
    /// but `enabled: true` is refused: the time-boxed debug correlation
    /// feature is not implemented here, and silently ignoring an operator's
    /// request for incident logging would be worse than failing.
    fn logging(&mut self, r: &RawLogging) -> Option<LoggingConfig> {
        let level_raw = self
            .ctx
            .overrides
            .log_level
            .as_ref()
            .map(|o| o.value.clone())
            .or(r.level.clone());
        let level = if level_raw.as_deref() == Some("trace") {
            self.err("logging.level", "trace was removed; use debug");
            None
        } else {
            self.one_of(
                "logging.level",
                level_raw.as_deref(),
                LogLevel::Info,
                &[
                    ("debug", LogLevel::Debug),
                    ("info", LogLevel::Info),
                    ("warn", LogLevel::Warn),
                    ("error", LogLevel::Error),
                ],
            )
        };
        let format = self.one_of(
            "logging.format",
            r.format.as_deref(),
            LogFormat::Json,
            &[("json", LogFormat::Json), ("text", LogFormat::Text)],
        );
        if let Some(dc) = &r.debug_correlation {
            if let Some(ttl) = self.duration("logging.debugCorrelation.ttl", &dc.ttl, Duration::from_secs(900), false)
                && ttl > Duration::from_secs(3600)
            {
                self.err("logging.debugCorrelation.ttl", "must be at most 1h");
            }
            if let Some(id) = dc.incident_id.as_deref().filter(|s| !s.is_empty()) {
                if let Some(p) = label_problem(id) {
                    self.err("logging.debugCorrelation.incidentId", p);
                } else if id.chars().count() > 64 {
                    self.err("logging.debugCorrelation.incidentId", "must be at most 64 characters");
                }
            }
            if dc.enabled == Some(true) {
                self.err(
                    "logging.debugCorrelation.enabled",
                    "time-boxed debug correlation is not supported by this provider; set logging.level: debug for the incident instead",
                );
            }
        }
        Some(LoggingConfig {
            level: level?,
            format: format?,
            log_openbao_request_ids: r.log_openbao_request_ids.unwrap_or(true),
        })
    }
}

/// Two fixed listeners that would bind the same port on overlapping hosts.
fn listeners_clash(a: &str, b: &str) -> bool {
    let (Ok((ha, Some(pa))), Ok((hb, Some(pb)))) = (split_host_port(a), split_host_port(b)) else {
        return false;
    };
    let (Some(pa), Some(pb)) = (port(pa), port(pb)) else {
        return false;
    };
    if pa == 0 || pb == 0 || pa != pb {
        return false;
    }
    let unspecified = |h: &str| h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_unspecified());
    ha.eq_ignore_ascii_case(hb) || unspecified(ha) || unspecified(hb)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn a_problem_reads_path_then_message_and_a_file_problem_the_message_alone() {
        let field = ConfigError {
            path: "server.socketPath".into(),
            message: "must be absolute".into(),
        };
        let file = ConfigError {
            path: String::new(),
            message: "not YAML".into(),
        };
        assert_eq!(field.to_string(), "server.socketPath: must be absolute");
        assert_eq!(file.to_string(), "not YAML");
    }

    /// The sample configuration, restricted to the jwt method.
    pub const FULL: &str = r#"
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
logging: {level: info, format: json}
"#;

    /// Only the required values.
    pub const MINIMAL: &str = r#"
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
    fn with(text: &str, path: &str, value: &str) -> String {
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

    fn without(text: &str, path: &str) -> String {
        let mut d = doc(text);
        let (parent, key) = path.rsplit_once('.').unwrap_or(("", path));
        let mut cur = &mut d;
        for k in parent.split('.').filter(|s| !s.is_empty()) {
            cur = cur.get_mut(k).unwrap();
        }
        cur.as_mapping_mut().unwrap().remove(key);
        serde_yaml_ng::to_string(&d).unwrap()
    }

    fn errors(text: &str) -> Vec<ConfigError> {
        parse_yaml(text).unwrap_err().0
    }

    /// Asserts `text` fails with an error at exactly `path` whose message contains `needle`.
    #[track_caller]
    fn fails_at(text: &str, path: &str, needle: &str) {
        let errs = errors(text);
        assert!(
            errs.iter().any(|e| e.path == path && e.message.contains(needle)),
            "expected {path}: ...{needle}...; got {}",
            ConfigErrors(errs.clone())
        );
    }

    #[track_caller]
    fn set_fails(path: &str, value: &str, needle: &str) {
        fails_at(&with(FULL, path, value), path, needle);
    }

    #[track_caller]
    fn set_ok(path: &str, value: &str) -> Config {
        match parse_yaml(&with(FULL, path, value)) {
            Ok(c) => c,
            Err(e) => panic!("{path}: {value} should be valid: {e}"),
        }
    }

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
            (16, 32, 64)
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
                log_openbao_request_ids: true
            }
        );
    }

    #[test]
    fn login_timeout_effective() {
        assert_eq!(
            set_ok("openbao.timeout", "10s").auth.login_timeout,
            Duration::from_secs(10)
        );
        assert_eq!(
            set_ok("auth.loginTimeout", "3s").auth.login_timeout,
            Duration::from_secs(3)
        );
        set_fails("auth.loginTimeout", "-1s", "negative");
    }

    #[test]
    fn scalar_coercion_rejected() {
        set_fails("server.socketGroup", "1234", "quote the value");
        assert_eq!(
            set_ok("server.socketGroup", "\"1234\"").server.socket_group,
            SocketGroup::Gid(1234)
        );
        assert_eq!(
            set_ok("server.socketGroup", "wheel").server.socket_group,
            SocketGroup::Name("wheel".into())
        );
        set_fails("transit.keyName", "123", "quote the value");
        // serde_yaml_ng reads a leading-zero scalar as the string written.
        assert_eq!(set_ok("transit.keyName", "0123").transit.key_name, "0123");
        set_fails("transit.keyName", "true", "quote the value");
        assert_eq!(set_ok("transit.keyName", "\"0123\"").transit.key_name, "0123");
        set_fails("openbao.timeout", "120", "duration string with a unit");
        set_fails("openbao.timeout", "\"120\"", "with a unit");
        set_fails("server.maxConcurrentStatus", "\"16\"", "without quotes");
        set_fails("server.maxConcurrentStatus", "1.5", "integer");
        set_fails("rotation.rejectVersionRollback", "yes", "true or false");
        set_fails("rotation.rejectVersionRollback", "\"true\"", "true or false");
        set_fails("server", "[]", "mapping");
        set_fails("auth.jwt.expectedAudience", "a", "list");
        fails_at(
            &with(FULL, "auth.jwt.expectedAudience", "[a, 1]"),
            "auth.jwt.expectedAudience[1]",
            "string",
        );
        set_fails("transit.keyName", "!custom name", "tags");
    }

    #[test]
    fn explicit_null_means_unset() {
        let c = parse_yaml(&with(MINIMAL, "openbao.namespace", "~")).unwrap();
        assert_eq!(c.openbao.namespace, "");
        let c = parse_yaml(&with(MINIMAL, "bootstrap", "~")).unwrap();
        assert_eq!(c.bootstrap.grace_timeout, Duration::from_secs(60));
        fails_at(&with(MINIMAL, "transit.keyName", "~"), "transit.keyName", "required");
    }

    #[test]
    fn unknown_fields_rejected() {
        fails_at(&with(FULL, "extra", "1"), "extra", "unknown field");
        fails_at(
            &with(FULL, "server.socketPth", "x"),
            "server.socketPth",
            "did you mean \"socketPath\"",
        );
        fails_at(
            &with(FULL, "transit.keyIdScope.zone", "x"),
            "transit.keyIdScope.zone",
            "known fields here",
        );
        fails_at(
            &with(FULL, "logging.debugCorrelation.foo", "1"),
            "logging.debugCorrelation.foo",
            "unknown",
        );
        fails_at(
            &with(FULL, "auth.jwt.oauth2", "{tokenUrl: https://x}"),
            "auth.jwt.oauth2",
            "not supported",
        );
        fails_at(
            &with(FULL, "transit.useAssociatedData", "true"),
            "transit.useAssociatedData",
            "removed",
        );
        fails_at(&with(FULL, "auth.role", "x"), "auth.role", "legacy");
        fails_at(&with(FULL, "performance", "{}"), "performance", "not supported");
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

    #[test]
    fn server_rules() {
        set_fails("server.socketPath", "/tmp/kms.sock", "must be inside /run/openbao-kms");
        set_fails("server.socketPath", "/run/openbao-kms-evil/kms.sock", "must be inside");
        set_fails("server.socketPath", "/run/openbao-kms/../kms.sock", "'..'");
        set_fails("server.socketPath", "run/openbao-kms/kms.sock", "absolute");
        set_fails(
            "server.socketPath",
            &format!("/run/openbao-kms/{}", "a".repeat(100)),
            "at most 107",
        );
        set_ok("server.socketPath", "/var/run/openbao-kms/kms.sock");
        set_ok("server.socketPath", "/run/openbao-kms/sub/kms.sock");
        set_fails("server.socketMode", "\"660\"", "leading zero");
        set_fails("server.socketMode", "\"0680\"", "octal");
        set_fails("server.socketMode", "\"0770\"", "0117");
        set_fails("server.socketMode", "\"0661\"", "0117");
        assert_eq!(set_ok("server.socketMode", "\"0600\"").server.socket_mode, 0o600);
        set_fails("server.socketGroup", "\"\"", "empty");
        set_fails("server.socketGroup", "\"a b\"", "group name");
        set_fails("server.socketGroup", "\"4294967296\"", "GID");
        fails_at(&without(FULL, "server.socketGroup"), "server.socketGroup", "required");
        set_fails("server.metricsAddress", "\"8081\"", "host:port");
        set_fails("server.metricsAddress", "\":8081\"", "name a host");
        set_fails("server.metricsAddress", "\"127.0.0.1:99999\"", "port");
        set_fails("server.metricsAddress", "\"::1:8081\"", "brackets");
        set_ok("server.metricsAddress", "\"[::1]:8081\"");
        set_ok("server.metricsAddress", "\"localhost:0\"");
        assert_eq!(set_ok("server.metricsAddress", "\"\"").server.metrics_address, None);
        set_fails(
            "server.healthAddress",
            "\"127.0.0.1:8081\"",
            "must differ from server.metricsAddress",
        );
        set_fails("server.healthAddress", "\"0.0.0.0:8081\"", "must differ");
        set_ok("server.healthAddress", "\"127.0.0.2:8081\"");
        let t = with(
            &with(FULL, "server.metricsAddress", "\"127.0.0.1:0\""),
            "server.healthAddress",
            "\"127.0.0.1:0\"",
        );
        assert!(parse_yaml(&t).is_ok(), "two ephemeral ports do not clash");
        for f in ["maxConcurrentStatus", "maxConcurrentEncrypt", "maxConcurrentDecrypt"] {
            set_fails(&format!("server.{f}"), "0", "between 1 and 1024");
            set_fails(&format!("server.{f}"), "1025", "between 1 and 1024");
            set_fails(&format!("server.{f}"), "-3", "between 1 and 1024");
            set_ok(&format!("server.{f}"), "1024");
        }
    }

    #[test]
    fn socket_dir_extension() {
        let t = with(FULL, "server.socketPath", "/tmp/test-xyz/kms.sock");
        assert!(parse_yaml(&t).is_err());
        let ctx = ValidationContext {
            extra_socket_dirs: vec![PathBuf::from("/tmp/test-xyz")],
            ..Default::default()
        };
        assert_eq!(
            parse_yaml_with(&t, &ctx).unwrap().server.socket_path,
            PathBuf::from("/tmp/test-xyz/kms.sock")
        );
        let rel = ValidationContext {
            extra_socket_dirs: vec![PathBuf::from("tmp/test-xyz")],
            ..Default::default()
        };
        assert!(parse_yaml_with(&with(FULL, "server.socketPath", "/tmp/test-xyz/kms.sock"), &rel).is_err());
    }

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

    #[test]
    fn auth_method_sections() {
        set_fails("auth.method", "oidc", "one of: jwt, cert, approle, token");
        let t = with(FULL, "auth.token", "{tokenFile: /etc/openbao-kms/token}");
        fails_at(&t, "auth.token", "must not be set when auth.method is jwt");
        let t = with(&t, "auth.method", "token");
        fails_at(&t, "auth.jwt", "must not be set when auth.method is token");
        let t = without(&t, "auth.jwt");
        assert!(matches!(parse_yaml(&t).unwrap().auth.method, AuthMethod::Token(_)));
        fails_at(
            &without(FULL, "auth.jwt"),
            "auth.jwt",
            "required when auth.method is jwt",
        );
        let t = with(&without(FULL, "auth.jwt"), "auth.method", "approle");
        fails_at(&t, "auth.approle", "required");
        let t = with(
            &t,
            "auth.approle",
            "{mountPath: approle, roleIdFile: /r, secretIdFile: /r}",
        );
        fails_at(&t, "auth.approle.mountPath", "auth/");
        fails_at(&t, "auth.approle.secretIdFile", "differ");
    }

    #[test]
    fn auth_durations() {
        set_fails(
            "auth.tokenRenewalIncrement",
            "5m",
            "greater than auth.loginBeforeTokenExpiry",
        );
        set_fails("auth.loginBeforeTokenExpiry", "0s", "positive");
        set_fails("auth.jwt.minRemainingTtl", "0s", "positive");
        assert!(parse_yaml(&with(FULL, "auth.jwt.clockSkewLeeway", "0s")).is_ok());
    }

    #[test]
    fn jwt_rules() {
        set_fails("auth.jwt.source", "oauth2", "not supported");
        set_fails("auth.jwt.source", "\"\"", "must not be empty");
        set_fails("auth.jwt.source", "env", "must be file");
        set_ok("auth.jwt.source", "file");
        set_fails("auth.jwt.mountPath", "/auth/jwt", "relative");
        set_fails("auth.jwt.mountPath", "jwt", "auth/");
        set_fails("auth.jwt.mountPath", "auth/", "end with");
        set_fails("auth.jwt.mountPath", "auth//jwt", "'//'");
        set_fails("auth.jwt.mountPath", "auth/./jwt", "'.'");
        set_fails("auth.jwt.role", "\" r\"", "whitespace");
        fails_at(&without(FULL, "auth.jwt.role"), "auth.jwt.role", "required");
        fails_at(&without(FULL, "auth.jwt.jwtFile"), "auth.jwt.jwtFile", "required");
        set_fails("auth.jwt.jwtFile", "identity.jwt", "absolute");
        fails_at(
            &with(FULL, "auth.jwt.expectedAudience", "[a, \"\"]"),
            "auth.jwt.expectedAudience[1]",
            "empty",
        );
        let c = set_ok("auth.jwt.expectedAudience", "[a, b]");
        let AuthMethod::Jwt(j) = c.auth.method else { panic!() };
        assert_eq!(j.expected_audience, ["a", "b"]);
        let c = set_ok("auth.jwt.expectedIssuer", "https://issuer");
        let AuthMethod::Jwt(j) = c.auth.method else { panic!() };
        assert_eq!(j.expected_issuer.as_deref(), Some("https://issuer"));
    }

    fn cert_doc(source: &str, body: &str) -> String {
        let t = with(&without(FULL, "auth.jwt"), "auth.method", "cert");
        with(
            &t,
            "auth.cert",
            &format!("{{mountPath: auth/cert, source: {source}, {body}}}"),
        )
    }

    const PKCS11: &str = "pkcs11: {certificateFile: /c.pem, modulePath: /m.so, tokenLabel: t, keyLabel: k, pinFile: /pin, maxSessions: 2}";

    #[test]
    fn cert_rules() {
        let c = parse_yaml(&cert_doc("pkcs11", PKCS11)).unwrap();
        let AuthMethod::Cert(cert) = c.auth.method else {
            panic!()
        };
        assert_eq!(cert.min_remaining_ttl, Duration::from_secs(86_400));
        assert_eq!(cert.name, "");
        let CertSource::Pkcs11(p) = cert.source else { panic!() };
        assert_eq!(p.max_sessions, 2);
        fails_at(
            &cert_doc("pkcs11", &PKCS11.replace("maxSessions: 2", "maxSessions: 1")),
            "auth.cert.pkcs11.maxSessions",
            "between 2",
        );
        fails_at(
            &cert_doc("pkcs11", &PKCS11.replace(", maxSessions: 2", "")),
            "auth.cert.pkcs11.maxSessions",
            "required",
        );
        fails_at(
            &cert_doc("pkcs11", &PKCS11.replace("tokenLabel: t", "tokenLabel: ''")),
            "auth.cert.pkcs11.tokenLabel",
            "empty",
        );
        fails_at(
            &cert_doc("pkcs11", &PKCS11.replace("/pin", "pin")),
            "auth.cert.pkcs11.pinFile",
            "absolute",
        );
        fails_at(
            &cert_doc("pkcs11", "name: x"),
            "auth.cert.pkcs11",
            "required when auth.cert.source is pkcs11",
        );
        let file = "file: {certificateFile: /c.pem, keyFile: /k.pem}";
        let c = parse_yaml(&cert_doc("file", file)).unwrap();
        let AuthMethod::Cert(cert) = c.auth.method else {
            panic!()
        };
        assert_eq!(
            cert.source,
            CertSource::File {
                certificate_file: "/c.pem".into(),
                key_file: "/k.pem".into()
            }
        );
        fails_at(
            &cert_doc("file", &format!("{file}, {PKCS11}")),
            "auth.cert.pkcs11",
            "must not be set when auth.cert.source is file",
        );
        fails_at(
            &cert_doc("pkcs11", &format!("{file}, {PKCS11}")),
            "auth.cert.file",
            "must not be set",
        );
        fails_at(&cert_doc("file", "name: x"), "auth.cert.file", "required");
        fails_at(&cert_doc("spiffe", "name: x"), "auth.cert.source", "not supported");
        fails_at(&cert_doc("hsm", "name: x"), "auth.cert.source", "pkcs11, file");
        let t = with(&without(FULL, "auth.jwt"), "auth.method", "cert");
        fails_at(
            &with(&t, "auth.cert", "{mountPath: auth/cert}"),
            "auth.cert.source",
            "required",
        );
    }

    #[test]
    fn transit_rules() {
        set_fails("transit.mountPath", "/transit", "relative");
        set_fails("transit.mountPath", "transit/", "end with");
        set_fails("transit.mountPath", "a//b", "'//'");
        set_fails("transit.mountPath", "a/../b", "'..'");
        set_fails("transit.mountPath", "\" transit\"", "whitespace");
        set_fails("transit.mountPath", "\"tran sit\"", "whitespace");
        set_fails("transit.mountPath", "\"\"", "empty");
        set_ok("transit.mountPath", "team-a/transit");
        for bad in ["a/b", ".a", "a.", "-a", "a-", "a%b", "\"\"", "a b"] {
            set_fails("transit.keyName", &format!("{bad:?}"), "one path segment");
        }
        for good in ["a", "_", "a.b-c_d", "0123", "A9"] {
            set_ok("transit.keyName", &format!("{good:?}"));
        }
        for f in ["providerName", "clusterId", "transitMountId", "keyLineageId"] {
            let p = format!("transit.keyIdScope.{f}");
            set_fails(&p, "\"\"", "must not be empty");
            set_fails(&p, "\"x \"", "whitespace");
            set_fails(&p, "\"x\\u0000y\"", "control");
            fails_at(&without(FULL, &p), &p, "required");
        }
        set_fails("transit.keyIdScope.providerName", "a:b", "':'");
        fails_at(&without(FULL, "transit.keyIdScope"), "transit.keyIdScope", "required");
    }

    #[test]
    fn other_sections() {
        set_fails("status.probeInterval", "2m", "less than status.statusMaxStaleness");
        set_ok("status.probeInterval", "119s");
        set_fails("status.deepProbeInterval", "0s", "positive");
        set_fails("bootstrap.retryInterval", "0s", "positive");
        assert_eq!(
            set_ok("bootstrap.graceTimeout", "0s").bootstrap.grace_timeout,
            Duration::ZERO
        );
        set_fails("state.path", "state.json", "absolute");
        set_fails("state.path", "/var/lib/x/", "name a file");
        set_fails("rotation.mode", "manual", "observed");
        set_fails("rotation.requireStableObservationCount", "0", "between 1");
        set_fails("rotation.activationDelay", "0s", "positive");
        assert!(
            !set_ok("rotation.rejectVersionRollback", "false")
                .rotation
                .reject_version_rollback
        );
        set_fails("logging.level", "trace", "removed");
        set_fails("logging.level", "verbose", "debug, info, warn, error");
        set_fails("logging.format", "xml", "json, text");
        assert_eq!(set_ok("logging.level", "warn").logging.level, LogLevel::Warn);
        assert!(
            !set_ok("logging.logOpenBaoRequestIDs", "false")
                .logging
                .log_openbao_request_ids
        );
    }

    #[test]
    fn debug_correlation() {
        set_ok(
            "logging.debugCorrelation",
            "{enabled: false, ttl: 30m, incidentId: INC-1}",
        );
        set_fails("logging.debugCorrelation.enabled", "true", "not supported");
        set_fails("logging.debugCorrelation.ttl", "2h", "at most 1h");
        set_fails("logging.debugCorrelation.ttl", "0s", "positive");
        set_fails(
            "logging.debugCorrelation.incidentId",
            &format!("{:?}", "x".repeat(65)),
            "64",
        );
        set_fails("logging.debugCorrelation.incidentId", "\" x\"", "whitespace");
    }

    #[test]
    fn overrides() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned())
        };
        let o = Overrides::from_env(env(&[
            ("BAO_KMS_PROVIDER_LOGGING_LEVEL", "debug"),
            ("BAO_KMS_PROVIDER_SERVER_METRICSADDRESS", "127.0.0.1:9091"),
            ("BAO_KMS_PROVIDER_SERVER_HEALTH_ADDRESS", ""),
            ("BAO_KMS_PROVIDER_TRANSIT_KEYNAME", "other"),
        ]))
        .unwrap();
        assert_eq!(o.health_address, None, "empty counts as unset");
        let ctx = ValidationContext {
            overrides: o.clone(),
            ..Default::default()
        };
        let c = parse_yaml_with(FULL, &ctx).unwrap();
        assert_eq!(c.logging.level, LogLevel::Debug);
        assert_eq!(c.server.metrics_address.as_deref(), Some("127.0.0.1:9091"));
        assert_eq!(
            c.transit.key_name, "k8s-workload-a-etcd",
            "identity is never overridable"
        );

        let flags = Overrides {
            log_level: Some(Override {
                value: "error".into(),
                origin: "--log-level".into(),
            }),
            ..Default::default()
        };
        let merged = o.overridden_by(flags);
        assert_eq!(merged.log_level.as_ref().unwrap().value, "error");
        assert_eq!(merged.metrics_address.as_ref().unwrap().value, "127.0.0.1:9091");

        let bad = Overrides::from_env(env(&[
            ("BAO_KMS_PROVIDER_LOG_LEVEL", "loud"),
            ("BAO_KMS_PROVIDER_SERVER_HEALTH_ADDRESS", "127.0.0.1:8081"),
        ]))
        .unwrap();
        let errs = parse_yaml_with(
            FULL,
            &ValidationContext {
                overrides: bad,
                ..Default::default()
            },
        )
        .unwrap_err()
        .0;
        assert!(
            errs.iter()
                .any(|e| e.path == "logging.level" && e.message.contains("(set by BAO_KMS_PROVIDER_LOG_LEVEL)")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.path == "server.healthAddress" && e.message.contains("must differ")),
            "{errs:?}"
        );

        let conflict = Overrides::from_env(env(&[
            ("BAO_KMS_PROVIDER_LOG_LEVEL", "info"),
            ("BAO_KMS_PROVIDER_LOGGING_LEVEL", "debug"),
        ]))
        .unwrap_err();
        assert_eq!(conflict.0[0].path, "logging.level");
    }

    #[test]
    fn durations() {
        let ok = [
            ("30s", 30_000),
            ("5m", 300_000),
            ("1h", 3_600_000),
            ("250ms", 250),
            ("1m30s", 90_000),
            ("1.5h", 5_400_000),
            (".5s", 500),
            ("1h0m0s", 3_600_000),
            ("0s", 0),
            ("0", 0),
            ("2000us", 2),
            ("2000µs", 2),
        ];
        for (s, ms) in ok {
            assert_eq!(parse_duration(s), Ok(Duration::from_millis(ms)), "{s}");
        }
        assert_eq!(parse_duration("1ns"), Ok(Duration::from_nanos(1)));
        for s in [
            "", "120", "5", "s", "1x", "1.2.3s", "1 s", "+1s", "1s ", ".s", "1S", "5d",
        ] {
            assert_eq!(parse_duration(s), Err(DurationError::Malformed), "{s:?}");
        }
        assert_eq!(parse_duration("-1s"), Err(DurationError::Negative));
        assert_eq!(parse_duration("3000000h"), Err(DurationError::Overflow));
        for d in [
            0,
            1,
            999,
            1_000,
            1_500_000_001,
            90_000_000_000,
            3_600_000_000_000,
            3_723_004_005_006,
        ] {
            let d = Duration::from_nanos(d);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{}", format_duration(d));
        }
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
    }

    /// The resolved form printed by `config` parses back to the same config.
    #[test]
    fn resolved_round_trip() {
        for text in [
            FULL.to_owned(),
            cert_doc("pkcs11", PKCS11),
            with(FULL, "server.socketGroup", "\"1234\""),
        ] {
            let c = parse_yaml(&text).unwrap();
            let raw = super::super::raw::RawConfig::from_config(&c);
            let out = serde_yaml_ng::to_string(&raw).unwrap();
            assert_eq!(parse_yaml(&out).unwrap(), c, "{out}");
        }
        let c = parse_yaml(&with(FULL, "server.metricsAddress", "\"\"")).unwrap();
        let out = serde_yaml_ng::to_string(&super::super::raw::RawConfig::from_config(&c)).unwrap();
        assert_eq!(parse_yaml(&out).unwrap().server.metrics_address, None);
    }

    #[test]
    fn helpers() {
        assert!(covers("auth.jwt", "auth.jwt.role"));
        assert!(covers("a", "a[1]"));
        assert!(!covers("auth.jwt", "auth.jwtx"));
        assert!(!covers("", "x"));
        assert_eq!(edit_distance("socketPth", "socketPath"), 1);
        assert!(listeners_clash("[::]:80", "127.0.0.1:80"));
        assert!(!listeners_clash("127.0.0.1:80", "127.0.0.1:81"));
    }
}
