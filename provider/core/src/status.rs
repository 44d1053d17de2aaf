//! The documents the provider's health listener serves and preflight
//! reads: `/status` ([`StatusDocument`], camelCase) and `/ready`
//! ([`ReadyDocument`], snake_case). One type per document, serialised by
//! the provider and parsed by preflight, so the two cannot drift.
//!
//! Compatibility: a field the provider has always served is required when
//! parsing; unknown fields are ignored (a newer provider may add some); a
//! field added later must be an `Option` with `#[serde(default)]` so an
//! older provider's document still parses.

use serde::{Deserialize, Serialize};

/// `GET /status`: the published snapshot, never a call to OpenBao.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusDocument {
    /// The active key_id; empty before the first key is known.
    #[serde(rename = "keyID")]
    pub key_id: String,
    /// `H(key_id)`; empty with `key_id`.
    #[serde(rename = "keyIDHash")]
    pub key_id_hash: String,
    /// The registry generation.
    pub generation: u64,
    /// `active`, `observing`, `promoting`, ... (the rotation machine's state).
    pub rotation_state: String,
    /// The Transit version Encrypt uses.
    pub active_version: u64,
    /// Transit's `latest_version` when last read.
    pub latest_version: u64,
    /// The version being observed or promoted, if any.
    pub pending_version: Option<u64>,
    /// True while the registry could not be written.
    pub persistence_degraded: bool,
    /// True when ready and serving the socket.
    pub healthy: bool,
    /// `<code>: <detail>` per reason the provider is not healthy.
    pub reasons: Vec<String>,
    /// The provider binary's version.
    pub version: String,
    /// Seconds since the last successful metadata read.
    pub cache_age_seconds: f64,
    /// `transit.keyIdScope.providerName`.
    pub provider_name: String,
    /// The configuration's identity fingerprint.
    pub identity_fingerprint: String,
    /// The registry content digest (`rcd1.`..., `registry::content_digest`):
    /// equal on nodes that encrypt with the same key and decrypt the same
    /// versions, whatever their generation. Absent from older providers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_digest: Option<String>,
    /// The promotion hold (`rotation.holdAtVersion`) when configured: no
    /// version above it becomes active; a `pendingVersion` above it is
    /// held. Absent when no hold is configured, and from older providers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_at_version: Option<u64>,
}

impl StatusDocument {
    /// The pending version the promotion hold keeps from becoming active.
    pub fn held_version(&self) -> Option<u64> {
        self.pending_version
            .filter(|&p| crate::rotation::held_at(self.hold_at_version, p).is_some())
    }
}

/// `GET /ready`: 200 with `status` `ok` when ready, 503 with the reason
/// codes otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadyDocument {
    /// `ok` or `unavailable`.
    pub status: String,
    /// `ok` or `unhealthy`, as the KMS Status call answers.
    pub healthz: String,
    pub cache_age_ms: u64,
    pub stale: bool,
    pub rotation_state: String,
    /// Reason codes only (details are in `/status` and the log).
    pub reasons: Vec<String>,
    /// The error class of the last failed metadata read; empty when none.
    pub metadata_error_class: String,
    pub persistence_degraded: bool,
    /// The error class of the last failed deep probe, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deep_error_class: Option<String>,
}

impl ReadyDocument {
    pub fn is_ready(&self) -> bool {
        self.status == "ok"
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn status() -> StatusDocument {
        StatusDocument {
            key_id: "k".into(),
            key_id_hash: "h".into(),
            generation: 3,
            rotation_state: "active".into(),
            active_version: 2,
            latest_version: 2,
            pending_version: None,
            persistence_degraded: false,
            healthy: true,
            reasons: vec![],
            version: "0.1.0".into(),
            cache_age_seconds: 1.5,
            provider_name: "openbao-kms".into(),
            identity_fingerprint: "fp".into(),
            content_digest: None,
            hold_at_version: None,
        }
    }

    /// The wire names are a contract with preflight, dashboards and
    /// runbooks: a known-answer document.
    #[test]
    fn status_wire_names() {
        let text = serde_json::to_string(&status()).unwrap();
        assert_eq!(
            text,
            r#"{"keyID":"k","keyIDHash":"h","generation":3,"rotationState":"active","activeVersion":2,"latestVersion":2,"pendingVersion":null,"persistenceDegraded":false,"healthy":true,"reasons":[],"version":"0.1.0","cacheAgeSeconds":1.5,"providerName":"openbao-kms","identityFingerprint":"fp"}"#
        );
        assert_eq!(serde_json::from_str::<StatusDocument>(&text).unwrap(), status());
        let mut with = status();
        with.content_digest = Some("rcd1.x".into());
        let text = serde_json::to_string(&with).unwrap();
        assert!(
            text.ends_with(r#""identityFingerprint":"fp","contentDigest":"rcd1.x"}"#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<StatusDocument>(&text).unwrap(), with);
        with.hold_at_version = Some(2);
        with.pending_version = Some(3);
        let text = serde_json::to_string(&with).unwrap();
        assert!(
            text.ends_with(r#""contentDigest":"rcd1.x","holdAtVersion":2}"#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<StatusDocument>(&text).unwrap(), with);
        assert_eq!(with.held_version(), Some(3));
        with.pending_version = Some(2);
        assert_eq!(with.held_version(), None, "a pending version at the hold promotes");
    }

    #[test]
    fn unknown_fields_are_ignored_and_required_ones_are_required() {
        let mut v = serde_json::to_value(status()).unwrap();
        v["addedByANewerProvider"] = serde_json::json!(1);
        assert_eq!(serde_json::from_value::<StatusDocument>(v.clone()).unwrap(), status());
        v.as_object_mut().unwrap().remove("keyIDHash");
        let e = serde_json::from_value::<StatusDocument>(v).unwrap_err();
        assert!(e.to_string().contains("keyIDHash"), "{e}");
    }

    #[test]
    fn ready_wire_names() {
        let r = ReadyDocument {
            status: "unavailable".into(),
            healthz: "unhealthy".into(),
            cache_age_ms: 12,
            stale: true,
            rotation_state: "active".into(),
            reasons: vec!["openbao_unreachable".into()],
            metadata_error_class: "unavailable".into(),
            persistence_degraded: false,
            deep_error_class: None,
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(
            text,
            r#"{"status":"unavailable","healthz":"unhealthy","cache_age_ms":12,"stale":true,"rotation_state":"active","reasons":["openbao_unreachable"],"metadata_error_class":"unavailable","persistence_degraded":false}"#
        );
        let back: ReadyDocument = serde_json::from_str(&text).unwrap();
        assert!(!back.is_ready());
        assert_eq!(back, r);
    }
}
