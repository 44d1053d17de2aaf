//! `GET sys/health`: the state of the OpenBao node that answers.
//!
//! OpenBao answers every state with a JSON body (`initialized`, `sealed`,
//! `standby`, `performance_standby`, `replication_dr_mode`, `cluster_id`,
//! `version`) and sums it up in the status code: 200 active, 429 standby,
//! 472 DR secondary, 473 performance standby, 501 not initialised, 503
//! sealed. The provider asks with `standbyok=true&perfstandbyok=true`, so
//! standbys answer 200 and the body tells them apart. The body decides; a
//! non-200 answer without `initialized` and `sealed` is not a health
//! answer (a proxy's error page, say) and is classified like any other.

use serde_json::Value;

use super::{Op, WireError, json};
use crate::errors::ErrorClass;

/// The state of the node that answered `sys/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    /// Unsealed, active: serves every request.
    Active,
    /// Unsealed standby: forwards requests to the active node (or redirects
    /// them, which the provider refuses).
    Standby,
    /// Unsealed performance standby: answers reads, forwards writes.
    PerformanceStandby,
    /// A disaster-recovery secondary: serves no Transit request.
    DrSecondary,
    /// Sealed: serves nothing until unsealed.
    Sealed,
    /// Not initialised: holds no data at all.
    Uninitialized,
}

impl HealthState {
    /// How messages name the state.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Standby => "standby",
            Self::PerformanceStandby => "performance standby",
            Self::DrSecondary => "DR secondary",
            Self::Sealed => "sealed",
            Self::Uninitialized => "not initialised",
        }
    }

    /// The class every request to a node in this state fails with, or
    /// `None` when the node serves the provider.
    pub fn failure_class(self) -> Option<ErrorClass> {
        match self {
            Self::Active | Self::Standby | Self::PerformanceStandby => None,
            Self::Sealed => Some(ErrorClass::OpenBaoSealed),
            Self::DrSecondary | Self::Uninitialized => Some(ErrorClass::OpenBaoUnavailable),
        }
    }
}

/// A parsed `sys/health` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub state: HealthState,
    /// Empty while sealed or not initialised.
    pub cluster_id: String,
    pub version: String,
}

impl Health {
    /// The node serves the provider, or the class and message every
    /// request to it fails with.
    pub fn serving(&self) -> Result<(), WireError> {
        match self.state.failure_class() {
            None => Ok(()),
            Some(class) => Err(WireError {
                class,
                message: format!("OpenBao is {} (sys/health)", self.state.as_str()),
            }),
        }
    }

    /// The `cluster_id` of a serving node.
    pub fn cluster_id(&self) -> Result<&str, WireError> {
        self.serving()?;
        if self.cluster_id.is_empty() {
            return Err(WireError::invalid("sys/health has no cluster_id"));
        }
        Ok(&self.cluster_id)
    }
}

/// Whether a failed answer is still a health answer: a non-200 status
/// OpenBao uses for a node state, with a body that carries the state.
pub fn is_health_answer(op: Op, http_status: u16, body: &[u8]) -> bool {
    op == Op::OpenBaoHealth
        && matches!(http_status, 429 | 472 | 473 | 501 | 503)
        && json(body).is_ok_and(|v| v.get("initialized").is_some() && v.get("sealed").is_some())
}

/// A `sys/health` body → the node's state.
pub fn parse_health(body: &[u8]) -> Result<Health, WireError> {
    let v = json(body)?;
    if !v.is_object() {
        return Err(WireError::invalid("sys/health answer is not a JSON object"));
    }
    let flag = |k: &str| v.get(k).and_then(Value::as_bool);
    let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
    let state = if flag("initialized") == Some(false) {
        HealthState::Uninitialized
    } else if flag("sealed") == Some(true) {
        HealthState::Sealed
    } else if text("replication_dr_mode") == "secondary" {
        HealthState::DrSecondary
    } else if flag("performance_standby") == Some(true) {
        HealthState::PerformanceStandby
    } else if flag("standby") == Some(true) {
        HealthState::Standby
    } else {
        HealthState::Active
    };
    Ok(Health {
        state,
        cluster_id: text("cluster_id"),
        version: text("version"),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Bodies as OpenBao 2.7 writes them.
    const ACTIVE: &[u8] = br#"{"initialized":true,"sealed":false,"standby":false,"performance_standby":false,"replication_performance_mode":"disabled","replication_dr_mode":"disabled","server_time_utc":1764924000,"version":"2.7.2","cluster_name":"vault-cluster-1","cluster_id":"c-1"}"#;
    const SEALED: &[u8] = br#"{"initialized":true,"sealed":true,"standby":true,"performance_standby":false,"replication_performance_mode":"unknown","replication_dr_mode":"unknown","server_time_utc":1764924000,"version":"2.7.2"}"#;
    const UNINITIALISED: &[u8] = br#"{"initialized":false,"sealed":true,"standby":true,"performance_standby":false,"replication_performance_mode":"unknown","replication_dr_mode":"unknown","server_time_utc":1764924000,"version":"2.7.2"}"#;

    #[test]
    fn every_state_from_the_body() {
        let h = parse_health(ACTIVE).unwrap();
        assert_eq!(h.state, HealthState::Active);
        assert_eq!(h.cluster_id().unwrap(), "c-1");
        assert_eq!(h.version, "2.7.2");
        let sealed = parse_health(SEALED).unwrap();
        assert_eq!(sealed.state, HealthState::Sealed);
        let e = sealed.cluster_id().unwrap_err();
        assert_eq!(e.class, ErrorClass::OpenBaoSealed);
        assert_eq!(e.message, "OpenBao is sealed (sys/health)");
        let uninit = parse_health(UNINITIALISED).unwrap();
        assert_eq!(uninit.state, HealthState::Uninitialized);
        assert_eq!(uninit.serving().unwrap_err().class, ErrorClass::OpenBaoUnavailable);
        for (body, state) in [
            (
                br#"{"initialized":true,"sealed":false,"standby":true,"cluster_id":"c"}"#.as_slice(),
                HealthState::Standby,
            ),
            (
                br#"{"initialized":true,"sealed":false,"standby":true,"performance_standby":true,"cluster_id":"c"}"#,
                HealthState::PerformanceStandby,
            ),
            (
                br#"{"initialized":true,"sealed":false,"standby":false,"replication_dr_mode":"secondary"}"#,
                HealthState::DrSecondary,
            ),
        ] {
            let h = parse_health(body).unwrap();
            assert_eq!(h.state, state);
            assert_eq!(h.serving().is_ok(), state.failure_class().is_none());
        }
        assert!(
            parse_health(br#"{"initialized":true,"sealed":false}"#)
                .unwrap()
                .cluster_id()
                .is_err()
        );
        assert!(parse_health(b"[1]").is_err());
        assert!(parse_health(b"<html>").is_err());
    }

    #[test]
    fn only_state_answers_of_the_health_request_are_health_answers() {
        assert!(is_health_answer(Op::OpenBaoHealth, 503, SEALED));
        assert!(is_health_answer(Op::OpenBaoHealth, 501, UNINITIALISED));
        assert!(!is_health_answer(
            Op::OpenBaoHealth,
            503,
            br#"{"errors":["upstream down"]}"#
        ));
        assert!(!is_health_answer(Op::OpenBaoHealth, 502, SEALED));
        assert!(!is_health_answer(Op::TransitEncrypt, 503, SEALED));
        assert!(!is_health_answer(Op::OpenBaoHealth, 503, b"<html>"));
    }
}
