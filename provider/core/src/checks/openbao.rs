//! Verdicts about the OpenBao the provider talks to, from facts the shell
//! collected: the identity pins (the same rule `serve` applies,
//! [`crate::registry::pins_verdict`]).

use super::Check;
use super::catalogue::OPENBAO_IDENTITY;
use crate::reason::ReasonCode;
use crate::registry::{IdentityPins, PinsVerdict, pins_verdict};

/// What an operator does about `identity_drift`.
pub const DRIFT_FIX: &str = "serve refuses to start while the identity drifts. If OpenBao was restored or moved on purpose and holds the same Transit key versions, review `bao-kms-provider repin` and apply it with --apply --expected-state-hash; otherwise point openbao.address and transit.mountPath back at the pinned OpenBao";

/// `openbao.identity`: the pins file against the live `cluster_id` and
/// Transit mount. A drift fails naming `identity_drift`, the reason serve
/// reports; no pins file passes (the first start pins the live identity).
pub fn identity(stored: Option<&IdentityPins>, live: &IdentityPins) -> Check {
    match pins_verdict(stored, live) {
        PinsVerdict::Match => OPENBAO_IDENTITY.pass(describe(live)),
        PinsVerdict::FirstPin => {
            OPENBAO_IDENTITY.pass(format!("no identity pins yet; the first start pins {}", describe(live)))
        }
        PinsVerdict::Drift(lines) => OPENBAO_IDENTITY.fail(
            format!("{}: {}", ReasonCode::IdentityDrift, lines.join("; ")),
            DRIFT_FIX,
        ),
    }
}

/// `cluster_id C, mount accessor A (uuid U)`.
pub fn describe(p: &IdentityPins) -> String {
    format!(
        "cluster_id {}, mount accessor {} (uuid {})",
        p.cluster_id, p.mount_accessor, p.mount_uuid
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::checks::CheckStatus;

    #[test]
    fn identity_verdicts() {
        let pinned = IdentityPins::new("c1".into(), "transit_a".into(), "u1".into());
        let same = identity(Some(&pinned), &pinned);
        assert_eq!(same.status, CheckStatus::Pass);
        assert_eq!(
            same.message.as_deref(),
            Some("cluster_id c1, mount accessor transit_a (uuid u1)")
        );
        assert_eq!(identity(None, &pinned).status, CheckStatus::Pass);
        let mut moved = pinned.clone();
        moved.cluster_id = "c2".into();
        let drift = identity(Some(&pinned), &moved);
        assert_eq!(drift.id, "openbao.identity");
        assert_eq!(drift.status, CheckStatus::Fail);
        assert_eq!(
            drift.message.as_deref(),
            Some("identity_drift: OpenBao cluster_id is c2 but c1 was pinned at bootstrap")
        );
        assert!(drift.fix.unwrap().contains("repin"));
    }
}
