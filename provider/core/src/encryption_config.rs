//! kube-apiserver's `EncryptionConfiguration` (`apiserver.config.k8s.io/v1`):
//! strict decoding, kube-apiserver's own validation rules, and the
//! cross-check against this provider's configuration.
//!
//! Flow: file text -> [`decode`] (strict: unknown and duplicate fields are
//! errors, as with kube-apiserver's `serializer.EnableStrict`; inline key
//! secrets are never echoed) -> [`validate`] (the rules of
//! `apiserver/pkg/apis/apiserver/validation/validation_encryption.go` and the
//! load-time checks of `server/options/encryptionconfig/config.go`) ->
//! [`cross_check`] (our provider listed as `kms` v2 under
//! `transit.keyIdScope.providerName`, endpoint `unix://` + `server.socketPath`,
//! identity placement, resources covered). [`analyze`] runs all three.
//!
//! Every rule returns structured [`Finding`]s (severity, stable code, field
//! path, message) so `bao-kms-preflight node` and the provider's `doctor
//! --encryption-config` report the same thing. Messages of kube-apiserver's
//! rules are kube-apiserver's own wording.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer};

use crate::config::{Config, parse_duration};

/// The only accepted `apiVersion` of the document.
pub const API_VERSION: &str = "apiserver.config.k8s.io/v1";
/// The only accepted `kind` of the document.
pub const KIND: &str = "EncryptionConfiguration";
/// `kms.timeout` when omitted (kube-apiserver `defaults.go`).
pub const DEFAULT_KMS_TIMEOUT: Duration = Duration::from_secs(3);
/// `kms.apiVersion` when omitted (kube-apiserver `defaults.go`): v1, which is
/// disabled by default since Kubernetes 1.29.
pub const DEFAULT_KMS_API_VERSION: &str = "v1";
/// Resources that must be encrypted by our provider for the check to pass.
pub const DEFAULT_REQUIRED_RESOURCES: &[&str] = &["secrets"];

const AES_KEY_SIZES: &[usize] = &[16, 24, 32];
const SECRETBOX_KEY_SIZES: &[usize] = &[32];

// ---------------------------------------------------------------------------
// Types (apiserver/pkg/apis/apiserver/v1/types_encryption.go)

/// The whole document.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EncryptionConfiguration {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub resources: Vec<ResourceConfiguration>,
}

/// One `resources[]` entry: the resources and the ordered providers for them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfiguration {
    #[serde(default, deserialize_with = "null_as_default")]
    pub resources: Vec<String>,
    /// Ordered: `[0]` writes, every provider reads.
    #[serde(default, deserialize_with = "null_as_default")]
    pub providers: Vec<ProviderConfiguration>,
}

/// One provider element; exactly one field must be set.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfiguration {
    #[serde(default)]
    pub aesgcm: Option<KeysConfiguration>,
    #[serde(default)]
    pub aescbc: Option<KeysConfiguration>,
    #[serde(default)]
    pub secretbox: Option<KeysConfiguration>,
    #[serde(default)]
    pub identity: Option<IdentityConfiguration>,
    #[serde(default)]
    pub kms: Option<KmsConfiguration>,
}

/// What one provider element is, for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    Aesgcm,
    Aescbc,
    Secretbox,
    Identity,
    Kms,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aesgcm => "aesgcm",
            Self::Aescbc => "aescbc",
            Self::Secretbox => "secretbox",
            Self::Identity => "identity",
            Self::Kms => "kms",
        }
    }
}

impl ProviderConfiguration {
    /// Every provider set in this element (valid elements have exactly one).
    pub fn kinds(&self) -> Vec<ProviderKind> {
        let mut out = Vec::new();
        if self.kms.is_some() {
            out.push(ProviderKind::Kms);
        }
        if self.aesgcm.is_some() {
            out.push(ProviderKind::Aesgcm);
        }
        if self.aescbc.is_some() {
            out.push(ProviderKind::Aescbc);
        }
        if self.secretbox.is_some() {
            out.push(ProviderKind::Secretbox);
        }
        if self.identity.is_some() {
            out.push(ProviderKind::Identity);
        }
        out
    }

    /// How this element shows in a message: `kms "name"`, `identity`, ...
    fn describe(&self) -> String {
        match (&self.kms, self.kinds().first()) {
            (Some(k), _) => format!("kms {:?}", k.name),
            (None, Some(kind)) => kind.as_str().to_owned(),
            (None, None) => "an empty provider".to_owned(),
        }
    }
}

/// `aesgcm`, `aescbc` and `secretbox`: inline keys.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfiguration {
    #[serde(default, deserialize_with = "null_as_default")]
    pub keys: Vec<Key>,
}

/// One inline key. The secret never appears in `Debug` output or findings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Key {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub secret: Secret,
}

/// An inline key secret (base64). `Debug` prints `<redacted>`.
#[derive(Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `identity: {}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfiguration {}

/// `kms: {...}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KmsConfiguration {
    /// `v1` when omitted.
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default)]
    pub name: String,
    /// v1 only; must be absent for v2.
    #[serde(default, rename = "cachesize")]
    pub cache_size: Option<i32>,
    #[serde(default)]
    pub endpoint: String,
    /// A Go duration string; 3s when omitted.
    #[serde(default)]
    pub timeout: Option<String>,
}

impl KmsConfiguration {
    /// `apiVersion` after kube-apiserver's defaulting.
    pub fn effective_api_version(&self) -> &str {
        match self.api_version.as_deref() {
            None | Some("") => DEFAULT_KMS_API_VERSION,
            Some(v) => v,
        }
    }
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

// ---------------------------------------------------------------------------
// Findings

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// kube-apiserver refuses the file, or our provider would not be used as configured.
    Error,
    /// Accepted, but worth an operator's attention (e.g. a rollout phase).
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warning => "warning",
        }
    }
}

/// One problem with the document, at a field path such as
/// `resources[0].providers[1].kms.name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// Stable identifier of the rule, e.g. `kms.cachesize_v2`.
    pub code: &'static str,
    /// Field path (kube-apiserver's spelling); empty for the whole document.
    pub path: String,
    pub message: String,
}

impl Finding {
    fn error(code: &'static str, path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            code,
            path: path.into(),
            message: message.into(),
        }
    }

    fn warning(code: &'static str, path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            code,
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// True when any finding is an error.
pub fn has_errors(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.severity == Severity::Error)
}

// ---------------------------------------------------------------------------
// Decoding

/// Decodes the document strictly. The returned finding (code
/// `document.empty` or `document.decode`) never contains an inline key
/// secret: every `secret` value of the document is masked in the decoder's
/// message.
pub fn decode(text: &str) -> Result<EncryptionConfiguration, Finding> {
    let blank = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text).is_ok_and(|v| v.is_null());
    if text.trim().is_empty() || blank {
        return Err(Finding::error(
            "document.empty",
            "",
            "encryption provider configuration file is empty",
        ));
    }
    let secrets = secret_values(text);
    let redact = |msg: String| -> String {
        let mut out = msg;
        for s in &secrets {
            out = out.replace(s.as_str(), "<redacted>");
        }
        out
    };
    serde_yaml_ng::from_str::<EncryptionConfiguration>(text).map_err(|e| {
        Finding::error(
            "document.decode",
            "",
            redact(format!("cannot decode the EncryptionConfiguration: {e}")),
        )
    })
}

/// Every scalar under a `secret` key anywhere in the document (best effort:
/// an unparsable document yields none, and its syntax error carries only a
/// position).
fn secret_values(text: &str) -> Vec<String> {
    fn walk(v: &serde_yaml_ng::Value, out: &mut Vec<String>) {
        match v {
            serde_yaml_ng::Value::Mapping(m) => {
                for (k, val) in m {
                    if k.as_str() == Some("secret") {
                        let shown = match val {
                            serde_yaml_ng::Value::String(s) => Some(s.clone()),
                            serde_yaml_ng::Value::Number(n) => Some(n.to_string()),
                            serde_yaml_ng::Value::Bool(b) => Some(b.to_string()),
                            _ => None,
                        };
                        out.extend(shown.filter(|s| !s.is_empty()));
                    }
                    walk(val, out);
                }
            }
            serde_yaml_ng::Value::Sequence(s) => s.iter().for_each(|x| walk(x, out)),
            serde_yaml_ng::Value::Tagged(t) => walk(&t.value, out),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(v) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text) {
        walk(&v, &mut out);
    }
    // Longest first, so a secret containing another is masked whole.
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out
}

// ---------------------------------------------------------------------------
// kube-apiserver's rules

/// Inputs of kube-apiserver's rules that do not come from the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ValidateOptions {
    /// `--encryption-provider-config-automatic-reload`: v1 names must then be unique too.
    pub automatic_reload: bool,
    /// `--feature-gates=KMSv1=true` (off by default since 1.29).
    pub kms_v1_enabled: bool,
}

/// `schema.ParseGroupResource`: `resource.group`, split at the first dot.
fn parse_group_resource(s: &str) -> (&str, &str) {
    match s.split_once('.') {
        Some((resource, group)) => (resource, group),
        None => (s, ""),
    }
}

/// kube-apiserver's spelling of a group resource in load-time errors.
fn group_resource_string(resource: &str, group: &str) -> String {
    if group.is_empty() {
        if resource == "*" {
            "*.".to_owned()
        } else {
            resource.to_owned()
        }
    } else {
        format!("{resource}.{group}")
    }
}

/// Every rule kube-apiserver applies when it loads the file
/// (`ValidateEncryptionConfiguration` plus the load-time checks), with
/// kube-apiserver's messages. The document's `apiVersion` and `kind` are
/// checked first, as its decoder does.
pub fn validate(cfg: &EncryptionConfiguration, opts: &ValidateOptions) -> Vec<Finding> {
    let mut out = Vec::new();
    if cfg.api_version != API_VERSION {
        out.push(Finding::error(
            "document.api_version",
            "apiVersion",
            format!("must be {API_VERSION}, got {:?}", cfg.api_version),
        ));
    }
    if cfg.kind != KIND {
        out.push(Finding::error(
            "document.kind",
            "kind",
            format!("must be {KIND}, got {:?}", cfg.kind),
        ));
    }
    if cfg.resources.is_empty() {
        out.push(Finding::error(
            "resources.required",
            "resources",
            "at least one resources is required",
        ));
        return out;
    }
    let mut kms_names: BTreeSet<&str> = BTreeSet::new();
    for (i, conf) in cfg.resources.iter().enumerate() {
        let r = format!("resources[{i}].resources");
        let p = format!("resources[{i}].providers");
        if conf.resources.is_empty() {
            out.push(Finding::error(
                "resources.required",
                &r,
                format!("at least one {r} is required"),
            ));
        }
        validate_resource_overlap(&conf.resources, &r, &mut out);
        validate_resource_names(&conf.resources, &r, &mut out);
        if conf.providers.is_empty() {
            out.push(Finding::error(
                "providers.required",
                &p,
                format!("at least one {p} is required"),
            ));
        }
        for (j, provider) in conf.providers.iter().enumerate() {
            let path = format!("{p}[{j}]");
            match provider.kinds().len() {
                0 => out.push(Finding::error(
                    "provider.none",
                    &path,
                    "provider does not contain any of the expected providers: KMS, AESGCM, AESCBC, Secretbox, Identity",
                )),
                1 => {}
                _ => out.push(Finding::error(
                    "provider.multiple",
                    &path,
                    "more than one provider specified in a single element, should split into different list elements",
                )),
            }
            if let Some(kms) = &provider.kms {
                validate_kms(kms, &format!("{path}.kms"), &kms_names, opts, &mut out);
                kms_names.insert(&kms.name);
            } else if let Some(k) = &provider.aesgcm {
                validate_keys(&k.keys, &format!("{path}.aesgcm.keys"), AES_KEY_SIZES, &mut out);
            } else if let Some(k) = &provider.aescbc {
                validate_keys(&k.keys, &format!("{path}.aescbc.keys"), AES_KEY_SIZES, &mut out);
            } else if let Some(k) = &provider.secretbox {
                validate_keys(
                    &k.keys,
                    &format!("{path}.secretbox.keys"),
                    SECRETBOX_KEY_SIZES,
                    &mut out,
                );
            }
        }
    }
    validate_masking(cfg, &mut out);
    out
}

fn validate_resource_overlap(resources: &[String], path: &str, out: &mut Vec<Finding>) {
    if resources.len() < 2 {
        return;
    }
    let parsed: Vec<(&str, &str)> = resources.iter().map(|r| parse_group_resource(r)).collect();
    let (mut duplicate, mut overlap) = (false, false);
    for (i, r1) in parsed.iter().enumerate() {
        for (j, r2) in parsed.iter().enumerate() {
            if i == j {
                continue;
            }
            if r1 == r2 && !duplicate {
                duplicate = true;
                continue;
            }
            if overlap {
                continue;
            }
            if *r1 == ("*", "*") {
                overlap = true;
                continue;
            }
            if r1.1 != r2.1 {
                continue;
            }
            if r1.0 == "*" || r2.0 == "*" {
                overlap = true;
            }
        }
    }
    if duplicate {
        out.push(Finding::error(
            "resources.duplicate",
            path,
            "the same resource cannot be specified multiple times",
        ));
    }
    if overlap {
        out.push(Finding::error(
            "resources.overlap",
            path,
            "using overlapping resources such as 'secrets' and '*.' in the same resource list is not allowed as they will be masked",
        ));
    }
}

fn validate_resource_names(resources: &[String], path: &str, out: &mut Vec<Finding>) {
    for (j, res) in resources.iter().enumerate() {
        let at = format!("{path}[{j}]");
        let (code, message) = if res.chars().any(|c| c.is_uppercase()) {
            ("resource.capital", "resource name should not contain capital letters")
        } else if res == "*" {
            (
                "resource.star",
                "use '*.' to encrypt all the resources from core API group or *.* to encrypt all resources",
            )
        } else if matches!(
            res.as_str(),
            "apiserveripinfo" | "serviceipallocations" | "servicenodeportallocations"
        ) {
            (
                "resource.non_rest",
                "resources which do not have REST API/s cannot be encrypted",
            )
        } else {
            let (resource, group) = parse_group_resource(res);
            if group == "events.k8s.io" {
                (
                    "resource.events_group",
                    "'*.events.k8s.io' objects are stored using the 'events' API group in etcd. Use 'events' instead in the config file",
                )
            } else if group == "extensions" {
                (
                    "resource.extensions_group",
                    "'extensions' group has been removed and cannot be used for encryption",
                )
            } else if group == "*" && resource != "*" {
                (
                    "resource.across_groups",
                    "encrypting the same resource across groups is not supported",
                )
            } else {
                continue;
            }
        };
        out.push(Finding::error(code, at, message));
    }
}

fn validate_keys(keys: &[Key], path: &str, sizes: &[usize], out: &mut Vec<Finding>) {
    if keys.is_empty() {
        out.push(Finding::error("keys.required", path, "at least one keys is required"));
        return;
    }
    for (i, key) in keys.iter().enumerate() {
        let at = format!("{path}[{i}]");
        if key.name.is_empty() {
            out.push(Finding::error(
                "key.name_required",
                format!("{at}.name"),
                "name is a mandatory field for a key",
            ));
        }
        let secret = key.secret.expose();
        if secret.is_empty() {
            out.push(Finding::error(
                "key.secret_required",
                format!("{at}.secret"),
                "secret is a mandatory field for a key",
            ));
            continue;
        }
        match STANDARD.decode(secret) {
            Err(_) => out.push(Finding::error(
                "key.secret_base64",
                format!("{at}.secret"),
                "secrets must be base64 encoded",
            )),
            Ok(bytes) if !sizes.contains(&bytes.len()) => {
                let expected = sizes.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ");
                out.push(Finding::error(
                    "key.secret_length",
                    format!("{at}.secret"),
                    format!(
                        "secret is not of the expected length, got {}, expected one of [{expected}]",
                        bytes.len()
                    ),
                ));
            }
            Ok(_) => {}
        }
    }
}

/// A `kms.timeout` value as kube-apiserver reads it: `None` when it is not a
/// duration, `Some(ZERO)` for zero or negative values.
fn kms_timeout(kms: &KmsConfiguration) -> Option<Duration> {
    match kms.timeout.as_deref() {
        None => Some(DEFAULT_KMS_TIMEOUT),
        Some(t) => match t.strip_prefix('-') {
            Some(abs) => parse_duration(abs).ok().map(|_| Duration::ZERO),
            None => parse_duration(t).ok(),
        },
    }
}

/// The scheme of a URL as Go's `url.Parse` sees it, or its error text.
fn url_scheme(endpoint: &str) -> Result<&str, String> {
    if endpoint.chars().any(|c| c.is_control()) {
        return Err(format!("parse {endpoint:?}: net/url: invalid control character in URL"));
    }
    match endpoint.split_once(':') {
        Some(("", _)) => Err(format!("parse {endpoint:?}: missing protocol scheme")),
        Some((scheme, _))
            if scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) =>
        {
            Ok(scheme)
        }
        // Not a scheme: Go parses the whole string as a path.
        _ => Ok(""),
    }
}

fn validate_kms(
    kms: &KmsConfiguration,
    path: &str,
    earlier_names: &BTreeSet<&str>,
    opts: &ValidateOptions,
    out: &mut Vec<Finding>,
) {
    let version = kms.effective_api_version();
    let name_path = format!("{path}.name");
    if kms.name.is_empty() {
        out.push(Finding::error(
            "kms.name_required",
            &name_path,
            "name is a mandatory field for a provider",
        ));
    }
    if version != "v1" && kms.name.contains(':') {
        out.push(Finding::error(
            "kms.name_colon",
            &name_path,
            format!("invalid KMS provider name {}, must not contain ':'", kms.name),
        ));
    }
    if (opts.automatic_reload || version != "v1") && earlier_names.contains(kms.name.as_str()) {
        out.push(Finding::error(
            "kms.name_duplicate",
            &name_path,
            format!("duplicate KMS provider name {}, names must be unique", kms.name),
        ));
    }
    match kms_timeout(kms) {
        Some(t) if !t.is_zero() => {}
        Some(_) => out.push(Finding::error(
            "kms.timeout",
            format!("{path}.timeout"),
            "timeout should be a positive value",
        )),
        None => out.push(Finding::error(
            "kms.timeout",
            format!("{path}.timeout"),
            format!(
                "{:?} is not a duration, such as \"3s\"",
                kms.timeout.as_deref().unwrap_or_default()
            ),
        )),
    }
    let endpoint_path = format!("{path}.endpoint");
    if kms.endpoint.is_empty() {
        out.push(Finding::error(
            "kms.endpoint_required",
            &endpoint_path,
            "endpoint is a mandatory field for a kms",
        ));
    } else {
        match url_scheme(&kms.endpoint) {
            Err(e) => out.push(Finding::error(
                "kms.endpoint_invalid",
                &endpoint_path,
                format!("invalid endpoint for kms provider, error: {e}"),
            )),
            Ok("unix") => {}
            Ok(scheme) => out.push(Finding::error(
                "kms.endpoint_scheme",
                &endpoint_path,
                format!("unsupported scheme {scheme:?} for KMS provider, only unix is supported"),
            )),
        }
    }
    let cache_path = format!("{path}.cachesize");
    match (version, kms.cache_size) {
        ("v1", Some(0)) => out.push(Finding::error(
            "kms.cachesize_zero",
            &cache_path,
            "cachesize should be a positive value, or negative to disable",
        )),
        ("v1", _) | (_, None) => {}
        (_, Some(_)) => out.push(Finding::error(
            "kms.cachesize_v2",
            &cache_path,
            "cachesize is not supported in v2",
        )),
    }
    match version {
        "v2" => {}
        "v1" if opts.kms_v1_enabled => {}
        "v1" => out.push(Finding::error(
            "kms.v1_disabled",
            format!("{path}.apiVersion"),
            "KMSv1 is deprecated and will only receive security updates going forward. Use KMSv2 instead. \
             Set --feature-gates=KMSv1=true to use the deprecated KMSv1 feature.",
        )),
        other => out.push(Finding::error(
            "kms.api_version",
            format!("{path}.apiVersion"),
            format!("unsupported apiVersion {other:?} for KMS provider, only v1 and v2 are supported"),
        )),
    }
}

/// Load-time rule: a resource in a later entry already covered by an
/// earlier `*.group` or `*.*` entry is refused.
fn validate_masking(cfg: &EncryptionConfiguration, out: &mut Vec<Finding>) {
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    for (i, conf) in cfg.resources.iter().enumerate() {
        let mut added = Vec::new();
        for (j, res) in conf.resources.iter().enumerate() {
            let (resource, group) = parse_group_resource(res);
            let any_in_group = ("*".to_owned(), group.to_owned());
            let any_any = ("*".to_owned(), "*".to_owned());
            let masked_by = if seen.contains(&any_in_group) {
                Some(group_resource_string("*", group))
            } else if seen.contains(&any_any) {
                Some("*.*".to_owned())
            } else {
                None
            };
            if let Some(rule) = masked_by {
                out.push(Finding::error(
                    "resource.masked",
                    format!("resources[{i}].resources[{j}]"),
                    format!(
                        "resource {:?} is masked by earlier rule {rule:?}",
                        group_resource_string(resource, group)
                    ),
                ));
            }
            added.push((resource.to_owned(), group.to_owned()));
        }
        seen.extend(added);
    }
}

// ---------------------------------------------------------------------------
// Which entry serves a resource

/// The index of the `resources[]` entry kube-apiserver uses for `resource`
/// (`resource` or `resource.group`): an exact entry first, then `*.group`,
/// then `*.*`; among entries of the same kind the first one.
pub fn serving_entry(cfg: &EncryptionConfiguration, resource: &str) -> Option<usize> {
    let (res, group) = parse_group_resource(resource);
    let find = |want: (&str, &str)| {
        cfg.resources
            .iter()
            .position(|c| c.resources.iter().any(|r| parse_group_resource(r) == want))
    };
    find((res, group))
        .or_else(|| find(("*", group)))
        .or_else(|| find(("*", "*")))
}

// ---------------------------------------------------------------------------
// Cross-check with the provider configuration

/// What the EncryptionConfiguration must say about our provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderExpectation {
    /// `transit.keyIdScope.providerName`.
    pub name: String,
    /// `unix://` + `server.socketPath`.
    pub endpoint: String,
    /// Resources our provider must cover, `resource` or `resource.group`.
    pub resources: Vec<String>,
}

impl ProviderExpectation {
    pub fn from_config(cfg: &Config) -> Self {
        Self {
            name: cfg.transit.key_id_scope.provider_name.clone(),
            endpoint: format!("unix://{}", cfg.server.socket_path.display()),
            resources: DEFAULT_REQUIRED_RESOURCES.iter().map(|s| (*s).to_owned()).collect(),
        }
    }
}

/// Where our provider stands in the file, from the cross-check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutPhase {
    /// Our provider is listed but another provider writes (phase 1 reader file).
    Reader,
    /// Our provider writes every required resource (phase 2 file).
    Writer,
}

/// Checks the document against our provider: listed as a `kms` provider
/// named `expected.name`, `apiVersion: v2`, endpoint `expected.endpoint`,
/// no `cachesize`; each required resource served by an entry that lists it;
/// identity placement (warnings). Returns the findings and, when our
/// provider is listed, the rollout phase the file is in.
pub fn cross_check(
    cfg: &EncryptionConfiguration,
    expected: &ProviderExpectation,
) -> (Vec<Finding>, Option<RolloutPhase>) {
    let mut out = Vec::new();
    let mut ours = Vec::new();
    let mut names = Vec::new();
    for (i, conf) in cfg.resources.iter().enumerate() {
        for (j, provider) in conf.providers.iter().enumerate() {
            if let Some(kms) = &provider.kms {
                names.push(format!("{:?}", kms.name));
                if kms.name == expected.name {
                    ours.push((i, j, kms));
                }
            }
        }
    }
    if ours.is_empty() {
        let listed = if names.is_empty() {
            "no kms provider is listed".to_owned()
        } else {
            format!("listed kms providers: {}", names.join(", "))
        };
        out.push(Finding::error(
            "provider.missing",
            "resources",
            format!(
                "no kms provider is named {:?} (transit.keyIdScope.providerName); {listed}; add \
                 `kms: {{apiVersion: v2, name: {}, endpoint: {}, timeout: 3s}}`",
                expected.name, expected.name, expected.endpoint
            ),
        ));
        return (out, None);
    }
    for (i, j, kms) in &ours {
        let path = format!("resources[{i}].providers[{j}].kms");
        let version = kms.effective_api_version();
        if version != "v2" {
            let shown = if kms.api_version.as_deref().unwrap_or_default().is_empty() {
                "v1 (the default when apiVersion is omitted)".to_owned()
            } else {
                version.to_owned()
            };
            out.push(Finding::error(
                "provider.api_version",
                format!("{path}.apiVersion"),
                format!(
                    "kms provider {:?} uses apiVersion {shown}; this provider serves KMS v2 only: set apiVersion: v2",
                    kms.name
                ),
            ));
        }
        if kms.endpoint != expected.endpoint {
            out.push(Finding::error(
                "provider.endpoint",
                format!("{path}.endpoint"),
                format!(
                    "endpoint is {:?} but server.socketPath gives {:?}; set endpoint: {}",
                    kms.endpoint, expected.endpoint, expected.endpoint
                ),
            ));
        }
        if kms.cache_size.is_some() {
            out.push(Finding::error(
                "provider.cachesize",
                format!("{path}.cachesize"),
                "cachesize is a KMS v1 setting and must be removed for apiVersion: v2",
            ));
        }
    }
    let mut phase = RolloutPhase::Writer;
    let mut warned_entries: HashSet<usize> = HashSet::new();
    for resource in &expected.resources {
        let Some(i) = serving_entry(cfg, resource) else {
            out.push(Finding::error(
                "resources.uncovered",
                "resources",
                format!(
                    "{resource:?} is not listed in any resources entry, so kube-apiserver stores it unencrypted; \
                     add it to the entry that lists kms {:?}",
                    expected.name
                ),
            ));
            continue;
        };
        let providers = &cfg.resources[i].providers;
        let Some(pos) = providers
            .iter()
            .position(|p| p.kms.as_ref().is_some_and(|k| k.name == expected.name))
        else {
            out.push(Finding::error(
                "resources.uncovered",
                format!("resources[{i}].providers"),
                format!(
                    "{resource:?} is served by resources[{i}], which does not list kms {:?}; add it there",
                    expected.name
                ),
            ));
            continue;
        };
        if !warned_entries.insert(i) {
            continue;
        }
        let first = &providers[0];
        let path = format!("resources[{i}].providers");
        if pos > 0 {
            phase = RolloutPhase::Reader;
            if first.identity.is_some() {
                out.push(Finding::warning(
                    "identity.first",
                    &path,
                    format!(
                        "identity is first, so {resource:?} is written unencrypted and kms {:?} only reads \
                         (phase 1 reader file); switch to the file with kms first once every control-plane \
                         node runs this one",
                        expected.name
                    ),
                ));
            } else {
                out.push(Finding::warning(
                    "provider.not_writer",
                    &path,
                    format!(
                        "{} is first and writes {resource:?}; kms {:?} only reads (migration phase)",
                        first.describe(),
                        expected.name
                    ),
                ));
            }
        } else if let Some(k) = providers.iter().position(|p| p.identity.is_some()) {
            out.push(Finding::warning(
                "identity.fallback",
                format!("{path}[{k}]"),
                format!(
                    "identity remains as a read fallback after kms {:?}; remove it once every {resource:?} \
                     object has been rewritten through the provider",
                    expected.name
                ),
            ));
        }
    }
    (out, Some(phase))
}

/// [`decode`], [`validate`] and [`cross_check`] in one call: every finding
/// about the file, kube-apiserver's rules first.
pub fn analyze(text: &str, expected: &ProviderExpectation, opts: &ValidateOptions) -> Vec<Finding> {
    match decode(text) {
        Err(f) => vec![f],
        Ok(cfg) => {
            let mut out = validate(&cfg, opts);
            out.extend(cross_check(&cfg, expected).0);
            out
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn expected() -> ProviderExpectation {
        ProviderExpectation {
            name: "openbao-kms-workload-a".into(),
            endpoint: "unix:///run/openbao-kms/kms.sock".into(),
            resources: vec!["secrets".into()],
        }
    }

    fn fixtures_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/preflight/encryption-config")
    }

    fn render(findings: &[Finding]) -> String {
        findings
            .iter()
            .map(|f| format!("{} {} {}\n", f.severity.as_str(), f.code, f))
            .collect()
    }

    /// Every `<name>.yaml` fixture yields exactly the findings in
    /// `<name>.findings` (one `severity code path: message` line each).
    /// `UPDATE_GOLDEN=1` rewrites the expectations.
    #[test]
    fn golden_fixtures() {
        let dir = fixtures_dir();
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        names.sort();
        assert!(names.len() >= 20, "{} fixtures", names.len());
        let mut failures = Vec::new();
        for yaml in names {
            let text = std::fs::read_to_string(&yaml).unwrap();
            let got = render(&analyze(&text, &expected(), &ValidateOptions::default()));
            let golden = yaml.with_extension("findings");
            if std::env::var_os("UPDATE_GOLDEN").is_some() {
                std::fs::write(&golden, &got).unwrap();
                continue;
            }
            let want = std::fs::read_to_string(&golden).unwrap_or_else(|_| panic!("missing {}", golden.display()));
            if got != want {
                failures.push(format!("{}:\n--- want\n{want}--- got\n{got}", yaml.display()));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn two_phase_files_are_clean_apart_from_phase_warnings() {
        let reader = std::fs::read_to_string(fixtures_dir().join("valid-phase1-readers.yaml")).unwrap();
        let writer = std::fs::read_to_string(fixtures_dir().join("valid-phase2-kms-first.yaml")).unwrap();
        for (text, phase, code) in [
            (reader, RolloutPhase::Reader, "identity.first"),
            (writer, RolloutPhase::Writer, "identity.fallback"),
        ] {
            let cfg = decode(&text).unwrap();
            assert!(validate(&cfg, &ValidateOptions::default()).is_empty());
            let (findings, got) = cross_check(&cfg, &expected());
            assert_eq!(got, Some(phase));
            assert_eq!(findings.len(), 1, "{findings:?}");
            assert_eq!(findings[0].code, code);
            assert_eq!(findings[0].severity, Severity::Warning);
            assert!(!has_errors(&findings));
        }
    }

    #[test]
    fn secrets_never_echoed() {
        let text = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aescbc:\n      keys:\n      - name: k1\n        secret: c2VjcmV0LXZhbHVlLXRoYXQtbXVzdC1ub3QtbGVhaw==\n        bogus: c2VjcmV0LXZhbHVlLXRoYXQtbXVzdC1ub3QtbGVhaw==\n";
        let f = decode(text).unwrap_err();
        assert!(f.message.contains("unknown field `bogus`"), "{f}");
        assert!(!f.message.contains("c2VjcmV0"), "{f}");
        // A secret of the wrong type (a mapping) is refused without its value.
        let text =
            "resources:\n- resources: [secrets]\n  providers:\n  - aesgcm: {keys: [{name: k, secret: 123456789}]}\n";
        let cfg = decode(text);
        if let Err(f) = cfg {
            assert!(!f.message.contains("123456789"), "{f}");
        }
        let cfg = decode(
            "resources:\n- resources: [secrets]\n  providers:\n  - aesgcm: {keys: [{name: k, secret: dG9vc2hvcnQ=}]}\n",
        )
        .unwrap();
        let shown = format!("{cfg:?} {}", render(&validate(&cfg, &ValidateOptions::default())));
        assert!(!shown.contains("dG9vc2hvcnQ"), "{shown}");
        assert!(shown.contains("got 8, expected one of [16 24 32]"), "{shown}");
    }

    #[test]
    fn duplicate_fields_are_refused() {
        let f = decode("kind: EncryptionConfiguration\nkind: EncryptionConfiguration\n").unwrap_err();
        assert_eq!(f.code, "document.decode");
        assert!(f.message.contains("duplicate"), "{f}");
    }

    #[test]
    fn options_change_v1_rules() {
        let text = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - kms: {name: a, endpoint: unix:///a.sock, cachesize: 10}\n  - kms: {name: a, endpoint: unix:///a.sock}\n";
        let cfg = decode(text).unwrap();
        let codes = |o: ValidateOptions| validate(&cfg, &o).iter().map(|f| f.code).collect::<Vec<_>>();
        assert_eq!(
            codes(ValidateOptions::default()),
            ["kms.v1_disabled", "kms.v1_disabled"]
        );
        let on = ValidateOptions {
            kms_v1_enabled: true,
            ..ValidateOptions::default()
        };
        assert!(codes(on).is_empty());
        let reload = ValidateOptions {
            kms_v1_enabled: true,
            automatic_reload: true,
        };
        assert_eq!(codes(reload), ["kms.name_duplicate"]);
    }

    #[test]
    fn serving_entry_precedence() {
        let cfg = decode(
            "resources:\n- resources: ['*.*']\n  providers: [identity: {}]\n- resources: ['*.']\n  providers: [identity: {}]\n- resources: [secrets, deployments.apps]\n  providers: [identity: {}]\n",
        )
        .unwrap();
        assert_eq!(serving_entry(&cfg, "secrets"), Some(2));
        assert_eq!(serving_entry(&cfg, "configmaps"), Some(1));
        assert_eq!(serving_entry(&cfg, "deployments.apps"), Some(2));
        assert_eq!(serving_entry(&cfg, "jobs.batch"), Some(0));
        assert_eq!(parse_group_resource("*."), ("*", ""));
        assert_eq!(group_resource_string("*", ""), "*.");
    }

    #[test]
    fn url_scheme_like_go() {
        assert_eq!(url_scheme("unix:///run/x.sock"), Ok("unix"));
        assert_eq!(url_scheme("tcp://1.2.3.4:5"), Ok("tcp"));
        assert_eq!(url_scheme("/run/x.sock"), Ok(""));
        assert!(url_scheme("://x").unwrap_err().contains("missing protocol scheme"));
        assert!(url_scheme("unix:///a\nb").unwrap_err().contains("control character"));
    }
}
