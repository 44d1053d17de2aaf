//! Verdicts about the OpenBao the provider talks to, from facts the shell
//! collected: the connection and the node's state ([`connection`], from
//! one `sys/health` request) and the identity pins (the same rule `serve`
//! applies, [`crate::registry::pins_verdict`]).

use super::Check;
use super::catalogue::{OPENBAO_HEALTH, OPENBAO_IDENTITY, OPENBAO_TLS};
use crate::errors::ErrorClass;
use crate::reason::ReasonCode;
use crate::registry::{IdentityPins, PinsVerdict, pins_verdict};
use crate::transit_wire::{Health, HealthState};

/// What doctor's one `GET sys/health` brought back.
#[derive(Debug, Clone, Copy)]
pub enum HealthProbe<'a> {
    /// A health answer, of any state.
    Answer(&'a Health),
    /// No health answer: the class, the HTTP status when OpenBao (or
    /// something at its address) answered, and the message.
    Failed {
        class: ErrorClass,
        http_status: Option<u16>,
        message: &'a str,
    },
}

/// `openbao.tls` and `openbao.health`, and whether the checks that need a
/// serving OpenBao (login, capabilities, Transit) can run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub tls: Check,
    pub health: Check,
    /// Why the checks that need a serving OpenBao are skipped (`OpenBao is
    /// sealed (openbao.health)`); `None` when it serves.
    pub blocker: Option<String>,
}

const TLS_FIX: &str = "openbao.caCertFile must hold the CA that signed OpenBao's certificate and openbao.tlsServerName must be one of the certificate's names; compare with `openssl s_client -connect <host:port> -servername <tlsServerName> -CAfile <caCertFile>`";

/// The verdicts of one `sys/health` request to `address`: the transport
/// (TLS failed, unreachable, DNS, no answer in time) is `openbao.tls`; the
/// state of the node that answered (sealed, not initialised, DR secondary,
/// standby, performance standby, active) is `openbao.health`. A standby
/// warns and serves; every other state but active blocks the checks that
/// need OpenBao, and the blocker names it.
pub fn connection(address: &str, probe: HealthProbe<'_>) -> Connection {
    let unreachable = |what: &str, message: &str, fix: &str| {
        let tls = OPENBAO_TLS.fail(format!("{what}: {message}"), fix);
        Connection {
            health: OPENBAO_HEALTH.skipped_after(&OPENBAO_TLS),
            blocker: Some(format!("OpenBao is {what} ({})", OPENBAO_TLS.id)),
            tls,
        }
    };
    let health = match probe {
        HealthProbe::Answer(h) => h,
        HealthProbe::Failed {
            class,
            http_status: None,
            message,
        } => {
            return match class {
                ErrorClass::OpenBaoTlsFailed => unreachable("unusable over TLS", message, TLS_FIX),
                ErrorClass::OpenBaoDnsFailed => unreachable(
                    "not resolvable",
                    message,
                    &format!(
                        "the host name in openbao.address ({address}) does not resolve on this node: fix the name or the node's DNS resolver"
                    ),
                ),
                ErrorClass::Timeout => unreachable(
                    "not answering",
                    message,
                    &format!(
                        "nothing answered {address} within openbao.timeout: check that OpenBao runs and the network path (firewall, load balancer) lets this node through"
                    ),
                ),
                _ => unreachable(
                    "unreachable",
                    message,
                    &format!(
                        "nothing accepts connections at {address}: start OpenBao, or fix openbao.address (host and port) and the network path from this node"
                    ),
                ),
            };
        }
        HealthProbe::Failed {
            http_status: Some(code),
            message,
            ..
        } => {
            let tls = OPENBAO_TLS.pass(format!("{address} answered over TLS"));
            return Connection {
                tls,
                health: OPENBAO_HEALTH.fail(
                    format!("sys/health answered HTTP {code}: {message}"),
                    format!("openbao.address ({address}) must be the OpenBao API address (https://<host>:8200, no path), with no proxy answering in its place"),
                ),
                blocker: Some(format!("OpenBao's sys/health failed ({})", OPENBAO_HEALTH.id)),
            };
        }
    };
    let version = if health.version.is_empty() {
        String::new()
    } else {
        format!(" (OpenBao {})", health.version)
    };
    let tls = OPENBAO_TLS.pass(format!("{address} answered over TLS{version}"));
    let blocked = |message: String, fix: &str| Connection {
        tls: tls.clone(),
        health: OPENBAO_HEALTH.fail(message, fix),
        blocker: Some(format!("OpenBao is {} ({})", health.state.as_str(), OPENBAO_HEALTH.id)),
    };
    let cluster = format!("cluster_id {}", health.cluster_id);
    match health.state {
        HealthState::Active => Connection {
            tls: tls.clone(),
            health: OPENBAO_HEALTH.pass(format!("active, {cluster}")),
            blocker: None,
        },
        HealthState::Standby => Connection {
            tls: tls.clone(),
            health: OPENBAO_HEALTH.warn(
                format!("standby, {cluster}: requests are forwarded to the active node"),
                "point openbao.address at the active node or at a load balancer that routes to it: a standby without request forwarding redirects, and the provider refuses redirects",
            ),
            blocker: None,
        },
        HealthState::PerformanceStandby => Connection {
            tls: tls.clone(),
            health: OPENBAO_HEALTH.warn(
                format!("performance standby, {cluster}: reads are answered here, encrypt and decrypt are forwarded to the active node"),
                "point openbao.address at the active node or at a load balancer that routes to it, so one node answers every request",
            ),
            blocker: None,
        },
        HealthState::Sealed => blocked(
            format!("{}: OpenBao is sealed and answers no request{version}", ErrorClass::OpenBaoSealed.as_str()),
            "unseal OpenBao (`bao operator unseal` with a quorum of unseal key shares, or restore its auto-unseal KMS); a running provider recovers on its next probe without a restart",
        ),
        HealthState::Uninitialized => blocked(
            format!("OpenBao is not initialised: it holds no Transit key{version}"),
            "openbao.address points at an uninitialised OpenBao: point it at the initialised cluster, or initialise this one and restore its data from a snapshot (docs/disaster-recovery.md)",
        ),
        HealthState::DrSecondary => blocked(
            format!("OpenBao is a DR secondary: it serves no Transit request{version}"),
            "point openbao.address at the primary cluster, or promote this DR secondary",
        ),
    }
}

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

    fn health(state: HealthState) -> Health {
        Health {
            state,
            cluster_id: "c1".into(),
            version: "2.7.2".into(),
        }
    }

    #[test]
    fn connection_names_the_state_and_what_it_blocks() {
        let a = "https://bao:8200";
        let c = connection(a, HealthProbe::Answer(&health(HealthState::Active)));
        assert_eq!((c.tls.status, c.health.status), (CheckStatus::Pass, CheckStatus::Pass));
        assert_eq!(c.health.message.as_deref(), Some("active, cluster_id c1"));
        assert_eq!(c.blocker, None);

        let c = connection(a, HealthProbe::Answer(&health(HealthState::Sealed)));
        assert_eq!(c.tls.status, CheckStatus::Pass);
        assert_eq!(c.health.id, "openbao.health");
        assert_eq!(c.health.status, CheckStatus::Fail);
        assert!(
            c.health
                .message
                .unwrap()
                .starts_with("openbao_sealed: OpenBao is sealed")
        );
        assert!(c.health.fix.unwrap().contains("bao operator unseal"));
        assert_eq!(c.blocker.as_deref(), Some("OpenBao is sealed (openbao.health)"));

        for (state, word) in [
            (HealthState::Uninitialized, "not initialised"),
            (HealthState::DrSecondary, "DR secondary"),
        ] {
            let c = connection(a, HealthProbe::Answer(&health(state)));
            assert_eq!(c.health.status, CheckStatus::Fail);
            assert!(c.health.message.unwrap().contains(word));
            assert!(c.blocker.unwrap().contains(word));
        }
        for (state, word) in [
            (HealthState::Standby, "standby"),
            (HealthState::PerformanceStandby, "performance standby"),
        ] {
            let c = connection(a, HealthProbe::Answer(&health(state)));
            assert_eq!(c.health.status, CheckStatus::Warn);
            assert!(c.health.message.unwrap().starts_with(word));
            assert_eq!(c.blocker, None);
        }

        for (class, word, fix) in [
            (ErrorClass::OpenBaoTlsFailed, "unusable over TLS", "caCertFile"),
            (ErrorClass::OpenBaoConnectionFailed, "unreachable", "start OpenBao"),
            (ErrorClass::OpenBaoDnsFailed, "not resolvable", "DNS"),
            (ErrorClass::Timeout, "not answering", "openbao.timeout"),
        ] {
            let c = connection(
                a,
                HealthProbe::Failed {
                    class,
                    http_status: None,
                    message: "why",
                },
            );
            assert_eq!(c.tls.status, CheckStatus::Fail);
            assert_eq!(c.tls.message.as_deref(), Some(&*format!("{word}: why")));
            assert!(c.tls.fix.unwrap().contains(fix));
            assert_eq!(c.health.status, CheckStatus::Skip);
            assert_eq!(c.blocker.unwrap(), format!("OpenBao is {word} (openbao.tls)"));
        }
        let c = connection(
            a,
            HealthProbe::Failed {
                class: ErrorClass::OpenBaoUnavailable,
                http_status: Some(404),
                message: "HTTP 404",
            },
        );
        assert_eq!((c.tls.status, c.health.status), (CheckStatus::Pass, CheckStatus::Fail));
        assert!(c.blocker.is_some());
    }

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
