//! What one value stored by kube-apiserver in etcd says about its
//! encryption, read from its first bytes only.
//!
//! kube-apiserver's value transformers (k8s.io/apiserver
//! `pkg/storage/value`) prefix every encrypted value with
//! `k8s:enc:<provider>:<version>:<name>:`:
//!
//! | prefix | written by |
//! | --- | --- |
//! | `k8s:enc:kms:v2:<name>:` + protobuf `EncryptedObject` | a KMS v2 plugin (ours) |
//! | `k8s:enc:kms:v1:<name>:` | a KMS v1 plugin |
//! | `k8s:enc:aescbc:v1:<key>:` | `aescbc` |
//! | `k8s:enc:aesgcm:v1:<key>:` | `aesgcm` |
//! | `k8s:enc:secretbox:v1:<key>:` | `secretbox` |
//!
//! The `identity` provider writes the object as serialized: protobuf with
//! the `k8s\x00` magic, JSON (`{`), or CBOR with its self-described tag
//! (`\xd9\xd9\xf7`). Anything else is `unknown`. Nothing here keeps or
//! returns the value's content beyond the name in its prefix and, for KMS
//! v2, the envelope bytes the caller decodes for the key_id.

use serde::{Deserialize, Serialize};

/// Prefix of a value a KMS v2 plugin encrypted.
pub const KMS_V2_PREFIX: &[u8] = b"k8s:enc:kms:v2:";
/// Magic of a Kubernetes protobuf-serialized object.
pub const PROTOBUF_MAGIC: &[u8] = b"k8s\x00";
/// CBOR self-described tag (RFC 8949 §3.4.6) Kubernetes puts first.
pub const CBOR_MAGIC: &[u8] = b"\xd9\xd9\xf7";

/// Longest provider or key name read from a prefix; a longer one is not a
/// prefix kube-apiserver writes (names are DNS-1123-like and short).
pub const MAX_NAME_BYTES: usize = 253;

/// How a stored value is encrypted (the `encryption` column of the report).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    /// `k8s:enc:kms:v2:<name>:` with a decodable `EncryptedObject`.
    KmsV2,
    /// `k8s:enc:kms:v2:<name>:` whose envelope does not decode or names no key_id.
    KmsV2Malformed,
    KmsV1,
    Aescbc,
    Aesgcm,
    Secretbox,
    /// Not encrypted: the serialized object itself.
    Identity,
    /// Neither a known prefix nor a serialized object.
    Unknown,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::KmsV2 => "kms-v2",
            Self::KmsV2Malformed => "kms-v2-malformed",
            Self::KmsV1 => "kms-v1",
            Self::Aescbc => "aescbc",
            Self::Aesgcm => "aesgcm",
            Self::Secretbox => "secretbox",
            Self::Identity => "identity",
            Self::Unknown => "unknown",
        }
    }

    /// True for every class but `identity`: the value needs a key to be read
    /// (`unknown` counts as encrypted: nothing proves it is not).
    pub fn encrypted(self) -> bool {
        self != Self::Identity
    }
}

/// A value's prefix, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prefix<'a> {
    /// KMS v2: the provider name and the envelope bytes after the prefix.
    KmsV2 {
        provider: &'a str,
        envelope: &'a [u8],
    },
    /// Another `k8s:enc:` provider with its name or key name.
    Other {
        class: Class,
        name: &'a str,
    },
    Identity,
    Unknown,
}

/// Reads the prefix of `value`.
pub fn parse(value: &[u8]) -> Prefix<'_> {
    if value.starts_with(PROTOBUF_MAGIC) || value.starts_with(b"{") || value.starts_with(CBOR_MAGIC) {
        return Prefix::Identity;
    }
    let known: [(&[u8], Class); 5] = [
        (KMS_V2_PREFIX, Class::KmsV2),
        (b"k8s:enc:kms:v1:", Class::KmsV1),
        (b"k8s:enc:aescbc:v1:", Class::Aescbc),
        (b"k8s:enc:aesgcm:v1:", Class::Aesgcm),
        (b"k8s:enc:secretbox:v1:", Class::Secretbox),
    ];
    for (prefix, class) in known {
        let Some(rest) = value.strip_prefix(prefix) else {
            continue;
        };
        let Some((name, after)) = split_name(rest) else {
            return Prefix::Unknown;
        };
        return match class {
            Class::KmsV2 => Prefix::KmsV2 {
                provider: name,
                envelope: after,
            },
            class => Prefix::Other { class, name },
        };
    }
    Prefix::Unknown
}

/// `<name>:` at the start of `rest`: a non-empty printable ASCII name
/// without `:` of at most [`MAX_NAME_BYTES`], and the bytes after the colon.
fn split_name(rest: &[u8]) -> Option<(&str, &[u8])> {
    let end = rest.iter().take(MAX_NAME_BYTES + 1).position(|b| *b == b':')?;
    let name = &rest[..end];
    if name.is_empty() || !name.iter().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    Some((std::str::from_utf8(name).ok()?, &rest[end + 1..]))
}

/// The resource an etcd key belongs to: the first path segment after
/// `prefix` (`/registry/secrets/ns/name` -> `secrets`), or group and
/// resource when that segment is an API group
/// (`/registry/example.com/widgets/ns/name` -> `example.com/widgets`).
/// kube-apiserver's storage paths for built-in resources are historical
/// names (`minions` for nodes, `services/specs`, `deployments` for
/// `deployments.apps`); they are reported as stored.
pub fn resource_of(key: &[u8], prefix: &[u8]) -> String {
    let rest = key.strip_prefix(prefix).unwrap_or(key);
    let rest = rest.strip_prefix(b"/").unwrap_or(rest);
    let mut parts = rest.split(|b| *b == b'/');
    let first = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    if first.contains('.')
        && let Some(second) = parts.next()
        && !second.is_empty()
    {
        return format!("{first}/{}", String::from_utf8_lossy(second));
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_kube_apiserver_writes() {
        assert_eq!(
            parse(b"k8s:enc:kms:v2:openbao-kms-workload-a:\x0a\x03abc"),
            Prefix::KmsV2 {
                provider: "openbao-kms-workload-a",
                envelope: b"\x0a\x03abc"
            }
        );
        assert_eq!(
            parse(b"k8s:enc:aescbc:v1:key1:\x00\x01"),
            Prefix::Other {
                class: Class::Aescbc,
                name: "key1"
            }
        );
        assert_eq!(
            parse(b"k8s:enc:aesgcm:v1:k:x"),
            Prefix::Other {
                class: Class::Aesgcm,
                name: "k"
            }
        );
        assert_eq!(
            parse(b"k8s:enc:secretbox:v1:sb:x"),
            Prefix::Other {
                class: Class::Secretbox,
                name: "sb"
            }
        );
        assert_eq!(
            parse(b"k8s:enc:kms:v1:legacy:x"),
            Prefix::Other {
                class: Class::KmsV1,
                name: "legacy"
            }
        );
        assert_eq!(parse(b"k8s\x00\x0a\x0c\x0a\x02v1"), Prefix::Identity);
        assert_eq!(parse(b"{\"kind\":\"Secret\"}"), Prefix::Identity);
        assert_eq!(parse(b"\xd9\xd9\xf7\xa1"), Prefix::Identity);
    }

    #[test]
    fn what_is_not_a_prefix_is_unknown() {
        for v in [
            &b""[..],
            b"k8s:enc:kms:v2:",
            b"k8s:enc:kms:v2::x",
            b"k8s:enc:kms:v2:no-colon",
            b"k8s:enc:kms:v2:sp ace:x",
            b"k8s:enc:kms:v3:p:x",
            b"k8s:enc:aescbc:v2:k:x",
            b"plain text",
        ] {
            assert_eq!(parse(v), Prefix::Unknown, "{}", String::from_utf8_lossy(v));
        }
        let long = [
            b"k8s:enc:aescbc:v1:".to_vec(),
            vec![b'a'; MAX_NAME_BYTES + 1],
            b":x".to_vec(),
        ]
        .concat();
        assert_eq!(parse(&long), Prefix::Unknown);
        let max = [
            b"k8s:enc:aescbc:v1:".to_vec(),
            vec![b'a'; MAX_NAME_BYTES],
            b":x".to_vec(),
        ]
        .concat();
        assert!(matches!(parse(&max), Prefix::Other { .. }));
    }

    #[test]
    fn resources_from_keys() {
        let p = b"/registry/";
        assert_eq!(resource_of(b"/registry/secrets/default/a", p), "secrets");
        assert_eq!(resource_of(b"/registry/services/specs/default/k", p), "services");
        assert_eq!(
            resource_of(b"/registry/apiregistration.k8s.io/apiservices/v1.", p),
            "apiregistration.k8s.io/apiservices"
        );
        assert_eq!(
            resource_of(b"/registry/example.com/widgets/ns/w", p),
            "example.com/widgets"
        );
        assert_eq!(resource_of(b"/registry/ranges/serviceips", p), "ranges");
        assert_eq!(resource_of(b"/registry/solo", p), "solo");
        assert_eq!(resource_of(b"/registry/odd.dot", p), "odd.dot");
        assert_eq!(resource_of(b"/other/x/y", b"/other"), "x");
    }
}
