//! Transit key metadata (`GET /v1/<mount>/keys/<name>`), the key profile
//! findings that make the provider fail closed (docs/openbao-policy.md), and the
//! auto-bootstrap decision for a missing registry (docs/registry.md).

use std::collections::BTreeMap;

use serde_json::Value;

/// The fields of Transit key metadata the provider relies on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMetadata {
    pub name: String,
    pub key_type: String,
    pub latest_version: u64,
    pub min_available_version: u64,
    pub min_decryption_version: u64,
    pub min_encryption_version: u64,
    /// Creation time of every version still held, in Unix seconds (sub-seconds dropped).
    pub versions: BTreeMap<u64, i64>,
    pub derived: bool,
    pub convergent_encryption: bool,
    pub exportable: bool,
    pub allow_plaintext_backup: bool,
    pub deletion_allowed: bool,
    pub imported_key: bool,
    pub soft_deleted: bool,
    pub supports_encryption: bool,
    pub supports_decryption: bool,
    pub auto_rotate_period_secs: u64,
}

/// Metadata that cannot be trusted to derive key_ids from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("key metadata field {0} is missing or has the wrong type")]
    Field(&'static str),
    #[error("key metadata lists version {0:?}, which is not a positive integer")]
    BadVersion(String),
    #[error("key metadata has no usable creation time for version {0}")]
    BadCreationTime(u64),
}

fn field_bool(data: &Value, name: &'static str) -> Result<bool, MetadataError> {
    match data.get(name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(MetadataError::Field(name)),
    }
}

fn field_u64(data: &Value, name: &'static str) -> Result<u64, MetadataError> {
    match data.get(name) {
        None | Some(Value::Null) => Ok(0),
        Some(v) => v.as_u64().ok_or(MetadataError::Field(name)),
    }
}

/// Parses the `data` object of the Transit key read response.
pub fn parse_key_metadata(data: &Value) -> Result<KeyMetadata, MetadataError> {
    let text = |name: &'static str| -> Result<String, MetadataError> {
        data.get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or(MetadataError::Field(name))
    };
    let keys = data
        .get("keys")
        .and_then(Value::as_object)
        .ok_or(MetadataError::Field("keys"))?;
    let mut versions = BTreeMap::new();
    for (raw_version, created) in keys {
        let version: u64 = raw_version
            .parse()
            .ok()
            .filter(|v| *v > 0)
            .ok_or_else(|| MetadataError::BadVersion(raw_version.clone()))?;
        let unix = creation_unix(created).ok_or(MetadataError::BadCreationTime(version))?;
        versions.insert(version, unix);
    }
    Ok(KeyMetadata {
        name: text("name")?,
        key_type: text("type")?,
        latest_version: data
            .get("latest_version")
            .and_then(Value::as_u64)
            .ok_or(MetadataError::Field("latest_version"))?,
        min_available_version: field_u64(data, "min_available_version")?,
        min_decryption_version: field_u64(data, "min_decryption_version")?,
        min_encryption_version: field_u64(data, "min_encryption_version")?,
        versions,
        derived: field_bool(data, "derived")?,
        convergent_encryption: field_bool(data, "convergent_encryption")?,
        exportable: field_bool(data, "exportable")?,
        allow_plaintext_backup: field_bool(data, "allow_plaintext_backup")?,
        deletion_allowed: field_bool(data, "deletion_allowed")?,
        imported_key: field_bool(data, "imported_key")?,
        soft_deleted: field_bool(data, "soft_deleted")?,
        supports_encryption: field_bool(data, "supports_encryption")?,
        supports_decryption: field_bool(data, "supports_decryption")?,
        auto_rotate_period_secs: field_u64(data, "auto_rotate_period")?,
    })
}

/// Symmetric keys report creation as Unix seconds; other key types as an
/// object with an RFC 3339 `creation_time`. Both normalize to Unix seconds.
fn creation_unix(v: &Value) -> Option<i64> {
    let unix = match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f.floor() as i64)),
        Value::Object(o) => o.get("creation_time").and_then(Value::as_str).and_then(rfc3339_unix),
        _ => None,
    }?;
    (unix > 0).then_some(unix)
}

/// Unix seconds of an RFC 3339 timestamp (`2024-05-15T20:00:00.123Z`,
/// `...+02:00`), fractional seconds dropped.
pub fn rfc3339_unix(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes().all(|c| c.is_ascii_digit()).then(|| part.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')) && &rest[3..4] == ":" => {
            let h: i64 = rest[1..3].parse().ok()?;
            let m: i64 = rest[4..6].parse().ok()?;
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (h * 3600 + m * 60)
        }
        _ => return None,
    };
    // Days from civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

/// Who is hurt when a finding holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impact {
    /// Encryption under this key would be unsafe: no key_id is published.
    CryptographicSafety,
    /// kube-apiserver reads or writes would fail.
    ApiServerAvailability,
}

impl Impact {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CryptographicSafety => "cryptographic_safety",
            Self::ApiServerAvailability => "api_server_availability",
        }
    }
}

/// A blocking problem with the Transit key's profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub code: &'static str,
    pub impact: Impact,
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A stable rendering: runbooks and alerts match on it.
        write!(f, "blocking/{}: {}", self.impact.as_str(), self.message)
    }
}

/// The Transit type the provider accepts.
pub const REQUIRED_KEY_TYPE: &str = "aes256-gcm96";

/// Profile findings for `meta`, given the versions the registry still
/// references for decryption and the active version (if any).
pub fn profile_findings(meta: &KeyMetadata, retained_versions: &[u64], active_version: Option<u64>) -> Vec<Finding> {
    use Impact::{ApiServerAvailability as Avail, CryptographicSafety as Crypto};
    let mut out = Vec::new();
    let mut add = |code, impact, message: String| out.push(Finding { code, impact, message });
    if meta.key_type != REQUIRED_KEY_TYPE {
        add(
            "unsupported_type",
            Crypto,
            format!("key type is {:?}, expected {REQUIRED_KEY_TYPE}", meta.key_type),
        );
    }
    if meta.exportable {
        add("exportable", Crypto, "key is exportable".into());
    }
    if meta.allow_plaintext_backup {
        add("plaintext_backup", Crypto, "key allows plaintext backup".into());
    }
    if meta.derived {
        add("derived", Crypto, "key derivation is enabled".into());
    }
    if meta.convergent_encryption {
        add("convergent", Crypto, "convergent encryption is enabled".into());
    }
    if !meta.supports_encryption {
        add(
            "encryption_unsupported",
            Avail,
            "key does not support encryption".into(),
        );
    }
    if !meta.supports_decryption {
        add(
            "decryption_unsupported",
            Avail,
            "key does not support decryption".into(),
        );
    }
    if meta.deletion_allowed {
        add("deletion_allowed", Avail, "key deletion is allowed".into());
    }
    if meta.soft_deleted {
        add("soft_deleted", Avail, "key is soft-deleted".into());
    }
    if meta.latest_version == 0 {
        add("latest_version_invalid", Avail, "latest_version is 0".into());
    }
    if meta.min_encryption_version > 0 && meta.min_encryption_version > meta.latest_version {
        add(
            "min_encryption_version",
            Avail,
            format!(
                "min_encryption_version={} is above latest_version={}",
                meta.min_encryption_version, meta.latest_version
            ),
        );
    }
    if let Some(active) = active_version
        && meta.min_encryption_version > active
    {
        add(
            "min_encryption_version",
            Avail,
            format!(
                "min_encryption_version={} is above the active version {active}",
                meta.min_encryption_version
            ),
        );
    }
    if meta.min_decryption_version > meta.latest_version {
        add(
            "min_decryption_version",
            Avail,
            format!(
                "min_decryption_version={} is above latest_version={}",
                meta.min_decryption_version, meta.latest_version
            ),
        );
    }
    if meta.min_available_version > meta.latest_version {
        add(
            "min_available_version",
            Avail,
            format!(
                "min_available_version={} is above latest_version={}",
                meta.min_available_version, meta.latest_version
            ),
        );
    }
    for &v in retained_versions {
        if v < meta.min_decryption_version {
            add(
                "min_decryption_version",
                Avail,
                format!(
                    "min_decryption_version={} excludes version {v}, which the registry still references",
                    meta.min_decryption_version
                ),
            );
        }
        if meta.min_available_version > 0 && v < meta.min_available_version {
            add(
                "min_available_version",
                Avail,
                format!(
                    "min_available_version={} excludes version {v}, which the registry still references",
                    meta.min_available_version
                ),
            );
        }
    }
    if meta.latest_version > 0 && !meta.versions.contains_key(&meta.latest_version) {
        add(
            "latest_version_metadata_missing",
            Avail,
            format!("no creation time for latest_version={}", meta.latest_version),
        );
    }
    out
}

/// Whether a missing registry may be created from Transit metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootstrapDecision {
    /// Initial, unrotated key: generation 1 with version 1 active.
    Allowed { created_unix: i64 },
    /// Not provably initial; each reason names the field that proves it.
    Denied { reasons: Vec<String> },
}

impl BootstrapDecision {
    /// One line for logs, reports and error messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Allowed { .. } => "auto-bootstrap allowed: initial metadata eligible for auto-bootstrap".into(),
            Self::Denied { reasons } => format!(
                "auto-bootstrap denied: {}; restore the state file and checkpoint from backup or a healthy peer with identical identity values",
                reasons.join("; ")
            ),
        }
    }
}

/// Auto-bootstrap is allowed only for an initial, unrotated key:
/// `latest_version == 1`, version 1 decryptable, nothing trimmed.
pub fn bootstrap_decision(meta: &KeyMetadata) -> BootstrapDecision {
    let mut reasons = Vec::new();
    if meta.latest_version != 1 {
        reasons.push(format!(
            "latest_version={} is not initial version 1",
            meta.latest_version
        ));
    }
    if meta.min_available_version > 1 {
        reasons.push(format!(
            "min_available_version={} excludes initial version 1",
            meta.min_available_version
        ));
    }
    if meta.min_decryption_version > 1 {
        reasons.push(format!(
            "min_decryption_version={} excludes initial version 1",
            meta.min_decryption_version
        ));
    }
    match meta.versions.get(&1) {
        Some(&created_unix) if reasons.is_empty() => BootstrapDecision::Allowed { created_unix },
        Some(_) => BootstrapDecision::Denied { reasons },
        None => {
            reasons.push("no creation time for version 1".into());
            BootstrapDecision::Denied { reasons }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// Metadata as OpenBao 2.7 returns it for a fresh aes256-gcm96 key.
    pub fn fresh_key_json() -> Value {
        json!({
            "allow_plaintext_backup": false, "auto_rotate_period": 0, "deletion_allowed": false,
            "derived": false, "exportable": false, "imported_key": false,
            "keys": {"1": 1_795_327_667}, "latest_version": 1, "min_available_version": 0,
            "min_decryption_version": 1, "min_encryption_version": 0, "name": "k1",
            "soft_deleted": false, "supports_decryption": true, "supports_derivation": true,
            "supports_encryption": true, "supports_signing": false, "type": "aes256-gcm96"
        })
    }

    #[test]
    fn parses_openbao_metadata() {
        let meta = parse_key_metadata(&fresh_key_json()).unwrap();
        assert_eq!(meta.latest_version, 1);
        assert_eq!(meta.versions.get(&1), Some(&1_795_327_667));
        assert!(profile_findings(&meta, &[1], Some(1)).is_empty());
        assert_eq!(
            bootstrap_decision(&meta),
            BootstrapDecision::Allowed {
                created_unix: 1_795_327_667
            }
        );
    }

    #[test]
    fn rfc3339_creation_times_normalize_to_seconds() {
        assert_eq!(rfc3339_unix("2024-05-15T20:00:00Z"), Some(1_715_803_200));
        assert_eq!(rfc3339_unix("2024-05-15T20:00:00.999999Z"), Some(1_715_803_200));
        assert_eq!(rfc3339_unix("2024-05-15T22:00:00+02:00"), Some(1_715_803_200));
        assert_eq!(rfc3339_unix("2024-05-15"), None);
        let mut j = fresh_key_json();
        j["keys"] = json!({"1": {"creation_time": "2024-05-15T20:00:00.5Z"}});
        assert_eq!(parse_key_metadata(&j).unwrap().versions[&1], 1_715_803_200);
    }

    #[test]
    fn malformed_metadata_is_an_error() {
        for edit in [
            |j: &mut Value| j["keys"] = json!({"0": 1}),
            |j: &mut Value| j["keys"] = json!({"x": 1}),
            |j: &mut Value| j["keys"] = json!({"1": "yesterday"}),
            |j: &mut Value| j["latest_version"] = json!("1"),
            |j: &mut Value| j["exportable"] = json!("no"),
        ] {
            let mut j = fresh_key_json();
            edit(&mut j);
            assert!(parse_key_metadata(&j).is_err(), "{j}");
        }
    }

    #[test]
    fn profile_findings_have_their_impact() {
        let mut j = fresh_key_json();
        j["exportable"] = json!(true);
        j["deletion_allowed"] = json!(true);
        j["type"] = json!("chacha20-poly1305");
        let meta = parse_key_metadata(&j).unwrap();
        let f = profile_findings(&meta, &[1], Some(1));
        let codes: Vec<_> = f.iter().map(|f| (f.code, f.impact)).collect();
        assert!(codes.contains(&("unsupported_type", Impact::CryptographicSafety)));
        assert!(codes.contains(&("exportable", Impact::CryptographicSafety)));
        assert!(codes.contains(&("deletion_allowed", Impact::ApiServerAvailability)));
        assert_eq!(
            f[0].to_string(),
            "blocking/cryptographic_safety: key type is \"chacha20-poly1305\", expected aes256-gcm96"
        );
    }

    #[test]
    fn raised_min_decryption_version_blocks_retained_versions() {
        let mut j = fresh_key_json();
        j["keys"] = json!({"1": 100, "2": 200, "3": 300});
        j["latest_version"] = json!(3);
        j["min_decryption_version"] = json!(2);
        let meta = parse_key_metadata(&j).unwrap();
        let f = profile_findings(&meta, &[3, 1], Some(3));
        assert!(
            f.iter()
                .any(|f| f.code == "min_decryption_version" && f.message.contains("version 1"))
        );
        assert!(profile_findings(&meta, &[3, 2], Some(3)).is_empty());
    }

    #[test]
    fn bootstrap_denials_name_the_field() {
        let mut j = fresh_key_json();
        j["keys"] = json!({"1": 100, "2": 200});
        j["latest_version"] = json!(2);
        let d = bootstrap_decision(&parse_key_metadata(&j).unwrap());
        assert_eq!(
            d,
            BootstrapDecision::Denied {
                reasons: vec!["latest_version=2 is not initial version 1".into()]
            }
        );
        assert!(d.describe().starts_with("auto-bootstrap denied: latest_version=2"));

        let mut j = fresh_key_json();
        j["min_decryption_version"] = json!(2);
        j["min_available_version"] = json!(2);
        let d = bootstrap_decision(&parse_key_metadata(&j).unwrap());
        let BootstrapDecision::Denied { reasons } = d else {
            panic!("allowed")
        };
        assert_eq!(
            reasons,
            vec![
                "min_available_version=2 excludes initial version 1".to_owned(),
                "min_decryption_version=2 excludes initial version 1".to_owned()
            ]
        );
    }
}
