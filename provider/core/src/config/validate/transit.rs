//! The `transit` section: the identity-bearing mount path, key name and
//! key_id scope.

use super::syntax::key_name_ok;
use super::validator::Validator;
use crate::config::raw::RawTransit;
use crate::config::{KeyIdScope, TransitConfig};

impl Validator<'_> {
    pub(super) fn transit(&mut self, r: &RawTransit) -> Option<TransitConfig> {
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
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::config::validate::tests::*;

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
}
