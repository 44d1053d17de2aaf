//! The KMS v2 limits kube-apiserver enforces (kube-apiserver's KMS v2 limits), enforced
//! here too so an oversize or malformed request is refused before OpenBao
//! is called and a response kube-apiserver would discard is never returned.

use std::collections::HashMap;

/// `key_id` at most this many bytes.
pub const MAX_KEY_ID_BYTES: usize = 1024;
/// Encrypt `ciphertext` (kube-apiserver's `encryptedDEKSource`) at most this many bytes.
pub const MAX_CIPHERTEXT_BYTES: usize = 1024;
/// Sum of annotation key and value lengths at most this many bytes.
pub const MAX_ANNOTATIONS_BYTES: usize = 32 * 1024;
/// Encrypt plaintext (the DEK seed) at most this many bytes; kube-apiserver sends 32.
pub const MAX_PLAINTEXT_BYTES: usize = 1024;
/// Request `uid` at most this many bytes.
pub const MAX_UID_BYTES: usize = 256;
/// gRPC message size limit, each direction.
pub const MAX_GRPC_MESSAGE_BYTES: usize = 64 * 1024;

/// A request or response that breaks a protocol limit (`protocol_limit`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("{field} is empty")]
    Empty { field: &'static str },
    #[error("{field} is {len} bytes, which exceeds the max size of {max}")]
    TooLarge {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error(
        "plaintext of {plaintext} bytes would give a ciphertext of {len} bytes under key version {version}, which exceeds the max size of {max}"
    )]
    CiphertextTooLarge {
        plaintext: usize,
        version: u64,
        len: usize,
        max: usize,
    },
}

fn bounded(field: &'static str, len: usize, max: usize) -> Result<(), LimitError> {
    if len == 0 {
        return Err(LimitError::Empty { field });
    }
    if len > max {
        return Err(LimitError::TooLarge { field, len, max });
    }
    Ok(())
}

/// Checks an Encrypt request.
pub fn check_encrypt_request(plaintext: &[u8], uid: &str) -> Result<(), LimitError> {
    bounded("plaintext", plaintext.len(), MAX_PLAINTEXT_BYTES)?;
    check_uid(uid)
}

/// The length of the ciphertext Transit returns for `plaintext_len` bytes
/// under version `version` of an `aes256-gcm96` key (the only type the
/// profile allows): `vault:v<version>:` and the padded base64 of a 12-byte
/// nonce, the sealed bytes and a 16-byte tag.
pub fn transit_ciphertext_len(version: u64, plaintext_len: usize) -> usize {
    let prefix = "vault:v:".len() + version.to_string().len();
    prefix + (12 + plaintext_len + 16).div_ceil(3) * 4
}

/// Refuses a plaintext whose ciphertext under `version` would exceed
/// kube-apiserver's 1 KiB, before Transit is called.
pub fn check_ciphertext_fits(version: u64, plaintext_len: usize) -> Result<(), LimitError> {
    let len = transit_ciphertext_len(version, plaintext_len);
    if len > MAX_CIPHERTEXT_BYTES {
        return Err(LimitError::CiphertextTooLarge {
            plaintext: plaintext_len,
            version,
            len,
            max: MAX_CIPHERTEXT_BYTES,
        });
    }
    Ok(())
}

/// Checks a Decrypt request's sizes (not its content).
pub fn check_decrypt_request(
    ciphertext: &[u8],
    uid: &str,
    key_id: &str,
    annotations: &HashMap<String, Vec<u8>>,
) -> Result<(), LimitError> {
    bounded("ciphertext", ciphertext.len(), MAX_CIPHERTEXT_BYTES)?;
    bounded("key_id", key_id.len(), MAX_KEY_ID_BYTES)?;
    check_uid(uid)?;
    check_annotations_size(annotations.iter().map(|(k, v)| k.len() + v.len()))
}

/// Checks an Encrypt response before it is returned.
pub fn check_encrypt_response<'a>(
    ciphertext: &[u8],
    key_id: &str,
    annotations: impl IntoIterator<Item = (&'a String, &'a Vec<u8>)>,
) -> Result<(), LimitError> {
    bounded("ciphertext", ciphertext.len(), MAX_CIPHERTEXT_BYTES)?;
    bounded("key_id", key_id.len(), MAX_KEY_ID_BYTES)?;
    check_annotations_size(annotations.into_iter().map(|(k, v)| k.len() + v.len()))
}

fn check_uid(uid: &str) -> Result<(), LimitError> {
    // kube-apiserver always sends a UUID; an empty uid is tolerated (it is
    // only used for log correlation), an oversize one is not.
    if uid.len() > MAX_UID_BYTES {
        return Err(LimitError::TooLarge {
            field: "uid",
            len: uid.len(),
            max: MAX_UID_BYTES,
        });
    }
    Ok(())
}

fn check_annotations_size(sizes: impl Iterator<Item = usize>) -> Result<(), LimitError> {
    let total: usize = sizes.sum();
    if total > MAX_ANNOTATIONS_BYTES {
        return Err(LimitError::TooLarge {
            field: "annotations",
            len: total,
            max: MAX_ANNOTATIONS_BYTES,
        });
    }
    Ok(())
}

/// kube-apiserver's `IsFullyQualifiedDomainName`: an optional trailing dot,
/// then a DNS-1123 subdomain of at least two labels, at most 253 characters,
/// labels of 1..=63 lowercase alphanumerics or `-`, not starting or ending with `-`.
pub fn is_fqdn(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    let labels: Vec<&str> = name.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fqdn_rules_match_kube_apiserver() {
        for ok in [
            "version.encryption.remote.io",
            "key-id-hash.kms.openbao.org",
            "a.b",
            "a.b.",
        ] {
            assert!(is_fqdn(ok), "{ok}");
        }
        for bad in [
            "panda",
            "",
            ".",
            "A.b",
            "a_b.c",
            "-a.b",
            "a-.b",
            "a..b",
            "a/b.c",
            &format!("{}.b", "a".repeat(64)),
        ] {
            assert!(!is_fqdn(bad), "{bad}");
        }
    }

    #[test]
    fn exact_limits_are_allowed_and_one_more_is_not() {
        let ok = vec![0u8; MAX_CIPHERTEXT_BYTES];
        let too_big = vec![0u8; MAX_CIPHERTEXT_BYTES + 1];
        let none = HashMap::new();
        let key_id = "k".repeat(MAX_KEY_ID_BYTES);
        assert!(check_decrypt_request(&ok, "u", &key_id, &none).is_ok());
        assert_eq!(
            check_decrypt_request(&too_big, "u", "k", &none),
            Err(LimitError::TooLarge {
                field: "ciphertext",
                len: 1025,
                max: 1024
            })
        );
        assert!(check_decrypt_request(&ok, "u", &format!("{key_id}k"), &none).is_err());
        assert_eq!(
            check_decrypt_request(&[], "u", "k", &none),
            Err(LimitError::Empty { field: "ciphertext" })
        );
        let mut big = HashMap::new();
        big.insert("a.b".to_owned(), vec![0u8; MAX_ANNOTATIONS_BYTES - 3]);
        assert!(check_decrypt_request(&ok, "u", "k", &big).is_ok());
        big.insert("a.b".to_owned(), vec![0u8; MAX_ANNOTATIONS_BYTES - 2]);
        assert!(check_decrypt_request(&ok, "u", "k", &big).is_err());
        assert_eq!(
            check_encrypt_request(&[], "u"),
            Err(LimitError::Empty { field: "plaintext" })
        );
        assert!(check_encrypt_request(&[1; 32], &"u".repeat(MAX_UID_BYTES + 1)).is_err());
    }

    #[test]
    fn transit_ciphertext_length_is_predicted_exactly() {
        // A real OpenBao 2.7 answer for the 2-byte plaintext "hi" under v1.
        let real = "vault:v1:TFeOwhbjSgRGT9ebWwhTskJibtMITbPC0gsgd/dl";
        assert_eq!(transit_ciphertext_len(1, 2), real.len());
        // kube-apiserver's 32-byte seed: 9 + 4 * ceil(60 / 3).
        assert_eq!(transit_ciphertext_len(1, 32), 89);
        assert_eq!(transit_ciphertext_len(12, 32), 90);
        // The largest plaintext that fits 1 KiB: 731 bytes up to version 1000...
        assert_eq!(transit_ciphertext_len(1, 731), 1021);
        assert!(check_ciphertext_fits(1, 731).is_ok());
        assert!(check_ciphertext_fits(1000, 731).is_ok());
        // ...one more byte, or a longer version, does not.
        assert_eq!(
            check_ciphertext_fits(1, 732),
            Err(LimitError::CiphertextTooLarge {
                plaintext: 732,
                version: 1,
                len: 1025,
                max: 1024
            })
        );
        assert!(check_ciphertext_fits(10_000, 731).is_err());
        assert!(check_ciphertext_fits(10_000, 728).is_ok());
        assert!(check_ciphertext_fits(1, MAX_PLAINTEXT_BYTES).is_err());
    }
}
