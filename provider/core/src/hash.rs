//! The hash helper `H(x)` of the published formats: base64url without padding
//! of SHA-256 over the UTF-8 bytes of `x`, always 43 characters.
//!
//! Used for annotation values, AAD fields, the key_id hash metric label and
//! every `*KeyIdHash` report field.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// Length of an `H(x)` value.
pub const HASH_LEN: usize = 43;

/// base64url-nopad(SHA-256(bytes)).
pub fn sha256_b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(bytes))
}

/// `H(x)`.
pub fn h(x: &str) -> String {
    sha256_b64url(x.as_bytes())
}

/// True when `s` is a well-formed `H(x)` value: 43 base64url characters that
/// decode (strictly) to exactly 32 bytes.
pub fn is_hash(s: &str) -> bool {
    s.len() == HASH_LEN
        && URL_SAFE_NO_PAD
            .decode(s.as_bytes())
            .is_ok_and(|bytes| bytes.len() == 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_vectors() {
        assert_eq!(
            h("obk2.ig7zS9_yvQrdlcvWgJUhA5q_fQYupc5jRX5MzhAMQSk"),
            "qCXYChOIPSWs7scJIduEDiNOYvEUJtFS1Rsbz1eAWY4"
        );
        assert_eq!(h("transit-prod-primary"), "rXiCr_lOjsbykm0mDHAvUcVxQl_XcVnT61MesgcPnzc");
        assert_eq!(
            h("01HXEXAMPLEKEYLINEAGEID"),
            "SwWS38Td_yyFNHaECzzHQP3CHFg60mklwtqYUwkx_IA"
        );
        assert_eq!(h("workload-a"), "aJ87hdnMZbDZpJ86CnErao3FRzUhv5o8bqc5tCvFGyY");
        assert_eq!(h("bao-prod-a"), "D1mX5YANszQPDTOv6P3ATTTa_2Nc2_DQtRJO0ArNx1g");
    }

    #[test]
    fn hash_shape_is_strict() {
        assert!(is_hash(&h("x")));
        assert!(!is_hash("short"));
        // 43 characters, but the last one carries non-zero padding bits.
        let mut bad = h("x");
        bad.pop();
        bad.push('B');
        let decodes = URL_SAFE_NO_PAD.decode(bad.as_bytes()).is_ok();
        assert_eq!(is_hash(&bad), decodes);
        assert!(!is_hash(&format!("{}=", &h("x")[..42])));
    }
}
