//! The canonical AAD sent to Transit as `associated_data` on every encrypt and
//! decrypt: Go-compact JSON with a fixed key order
//! (docs/key-id-and-aad.md). It is always rebuilt from the key snapshot, never from
//! request annotations.

use serde::Serialize;

use crate::gojson;
use crate::hash::h;
use crate::identity::IdentityScope;
use crate::snapshot::KeySnapshot;

pub const AAD_VERSION: &str = "v1";
pub const AAD_PURPOSE: &str = "kubernetes-etcd-kms-v2";
pub const PROVIDER_KIND: &str = "openbao-transit";

#[derive(Serialize)]
struct AadBody<'a> {
    aad_version: &'static str,
    purpose: &'static str,
    provider: &'static str,
    provider_name: &'a str,
    cluster_id_hash: String,
    openbao_instance_hash: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    openbao_namespace_hash: Option<String>,
    transit_mount_hash: String,
    transit_key_hash: String,
    key_id_hash: String,
    key_version: String,
}

/// Canonical AAD bytes for `snapshot` in `scope`.
pub fn canonical(scope: &IdentityScope, snapshot: &KeySnapshot) -> Vec<u8> {
    let body = AadBody {
        aad_version: AAD_VERSION,
        purpose: AAD_PURPOSE,
        provider: PROVIDER_KIND,
        provider_name: &scope.provider_name,
        cluster_id_hash: h(&scope.cluster_id),
        openbao_instance_hash: h(&scope.openbao_instance_id),
        openbao_namespace_hash: (!scope.openbao_namespace.is_empty()).then(|| h(&scope.openbao_namespace)),
        transit_mount_hash: h(&scope.transit_mount_id),
        transit_key_hash: h(&scope.key_lineage_id),
        key_id_hash: snapshot.key_id.hash(),
        key_version: snapshot.version.to_string(),
    };
    // serde_json fails only on a map key that is neither a string nor a number, or
    // on a Serialize impl that errs; AadBody is a derived struct of strings, so an
    // empty (or any other) fallback would only ever hide a bug in the AAD bytes.
    gojson::to_compact(&body).expect("the AAD body, a struct of strings, serialises to JSON")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::tests::sample_scope;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    #[test]
    fn published_golden_vector() {
        let golden: serde_json::Value =
            serde_json::from_str(include_str!("../../../tests/fixtures/golden/key-aad-v1.json")).unwrap();
        let scope = sample_scope();
        let snap = KeySnapshot::new(&scope, 3, 1_715_803_200).unwrap();
        let aad = canonical(&scope, &snap);
        assert_eq!(
            golden["expectedCanonicalAAD"].as_str().unwrap().as_bytes(),
            aad.as_slice()
        );
        assert_eq!(golden["expectedTransitAAD"].as_str().unwrap(), STANDARD.encode(&aad));
    }

    #[test]
    fn namespace_hash_follows_instance_hash() {
        let mut scope = sample_scope();
        scope.openbao_namespace = "admin/a".into();
        let snap = KeySnapshot::new(&scope, 1, 1_700_000_060).unwrap();
        let text = String::from_utf8(canonical(&scope, &snap)).unwrap();
        let inst = text.find("openbao_instance_hash").unwrap();
        let ns = text.find("openbao_namespace_hash").unwrap();
        let mount = text.find("transit_mount_hash").unwrap();
        assert!(inst < ns && ns < mount, "{text}");
    }

    #[test]
    fn provider_name_is_go_escaped() {
        let mut scope = sample_scope();
        scope.provider_name = "a<b>&c".into();
        let snap = KeySnapshot::new(&scope, 1, 1_700_000_060).unwrap();
        let text = String::from_utf8(canonical(&scope, &snap)).unwrap();
        assert!(text.contains(r#""provider_name":"a\u003cb\u003e\u0026c""#), "{text}");
    }
}
