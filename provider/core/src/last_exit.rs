//! The last-exit record (`<state.path>.last-exit`): a start that fails
//! closed exits before any listener binds, so nothing can scrape why. The
//! failing process writes the reason code and the time here; the next
//! start that succeeds publishes them (`openbao_kms_last_exit_info`,
//! `openbao_kms_last_exit_timestamp_seconds`) and logs `serve.last_exit`.
//! The detail stays in stderr and the journal; the record holds no text
//! beyond the code.

use serde::{Deserialize, Serialize};

use crate::gojson;
use crate::reason::ReasonCode;

pub const LAST_EXIT_SCHEMA: &str = "bao-kms-provider/last-exit/v1";
/// The reason of a fail-closed exit whose message names no reason code.
pub const FAIL_CLOSED: &str = "fail_closed";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LastExit {
    pub schema_version: String,
    /// A reason code (`ReasonCode::as_str`) or [`FAIL_CLOSED`].
    pub reason: String,
    pub exit_code: i32,
    pub exited_at_unix: i64,
}

impl LastExit {
    /// The record of a fail-closed exit with `message`.
    pub fn new(message: &str, exit_code: i32, now_unix: i64) -> Self {
        Self {
            schema_version: LAST_EXIT_SCHEMA.to_owned(),
            reason: reason_of(message).to_owned(),
            exit_code,
            exited_at_unix: now_unix,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        // A derived struct of strings and integers always serialises.
        gojson::to_indented(self).expect("the last-exit record serialises to JSON")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let r: Self = serde_json::from_slice(bytes).map_err(|e| format!("last-exit record is not valid JSON: {e}"))?;
        if r.schema_version != LAST_EXIT_SCHEMA {
            return Err(format!("last-exit schema {:?} is not supported", r.schema_version));
        }
        if r.reason != FAIL_CLOSED && ReasonCode::parse(&r.reason).is_none() {
            return Err(format!("last-exit reason {:?} is not a reason code", r.reason));
        }
        Ok(r)
    }
}

/// The first reason code `message` names (`state_unavailable: ...`,
/// `registry fails closed: version_rollback: ...`), else [`FAIL_CLOSED`].
pub fn reason_of(message: &str) -> &'static str {
    ReasonCode::ALL
        .iter()
        .filter_map(|c| message.find(&format!("{}:", c.as_str())).map(|at| (at, c.as_str())))
        .min()
        .map_or(FAIL_CLOSED, |(_, code)| code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_record_and_reason() {
        let r = LastExit::new(
            "registry fails closed: version_rollback: the state file was rolled back",
            5,
            1_700_000_000,
        );
        let text = String::from_utf8(r.encode()).unwrap();
        assert_eq!(
            text,
            "{\n  \"schemaVersion\": \"bao-kms-provider/last-exit/v1\",\n  \"reason\": \"version_rollback\",\n  \"exitCode\": 5,\n  \"exitedAtUnix\": 1700000000\n}\n"
        );
        assert_eq!(LastExit::decode(text.as_bytes()).unwrap(), r);
        assert_eq!(
            reason_of("state_unavailable: state directory /x: ..."),
            "state_unavailable"
        );
        assert_eq!(reason_of("registry lock /x is held by another process"), FAIL_CLOSED);
        assert!(LastExit::decode(text.replace("version_rollback", "nope").as_bytes()).is_err());
        assert!(LastExit::decode(b"{}").is_err());
    }
}
