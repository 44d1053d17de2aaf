//! The checkpoint: generation and hash of the last state file written,
//! stored beside it as `<state>.checkpoint`. Written after the state, so a
//! crash between the two leaves the state exactly one generation ahead.

use serde::{Deserialize, Serialize};

use super::{STATE_HASH_PREFIX, StateFile};
use crate::gojson;

pub const CHECKPOINT_SCHEMA: &str = "keyregistry.openbao-kms/checkpoint/v1alpha1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Checkpoint {
    pub schema_version: String,
    pub generation: u64,
    pub current_hash: String,
}

impl Checkpoint {
    pub fn of(state: &StateFile) -> Self {
        Self {
            schema_version: CHECKPOINT_SCHEMA.to_owned(),
            generation: state.generation,
            current_hash: state.current_hash.clone(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        // serde_json fails only on a map key that is neither a string nor a
        // number, or on a Serialize impl that errs; the checkpoint is a derived
        // struct of plain values.
        gojson::to_indented(self).expect("the checkpoint serialises to JSON")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let c: Self = serde_json::from_slice(bytes).map_err(|e| format!("checkpoint is not valid JSON: {e}"))?;
        if c.schema_version != CHECKPOINT_SCHEMA {
            return Err(format!(
                "checkpoint schema {:?} is not supported (expected {CHECKPOINT_SCHEMA})",
                c.schema_version
            ));
        }
        if c.generation == 0 || !c.current_hash.starts_with(STATE_HASH_PREFIX) {
            return Err("checkpoint has no generation or hash".into());
        }
        Ok(c)
    }
}

/// How the checkpoint relates to the state file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointStatus {
    /// Checkpoint matches the state.
    Current,
    /// State is the validated successor of the checkpoint (crash between the
    /// two writes); the checkpoint is rewritten.
    Behind,
    /// State without checkpoint (reported as a warning; a checkpoint is written).
    Missing,
    /// Neither file: the auto-bootstrap decision applies.
    Absent,
}

impl CheckpointStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Current => "current",
            Self::Behind => "behind",
            Self::Missing => "missing",
            Self::Absent => "absent",
        }
    }
}

/// Applies the rollback rules. An `Err` is a fail-closed decision with its reason.
pub fn checkpoint_status(
    state: Option<&StateFile>,
    checkpoint: Option<&Checkpoint>,
) -> Result<CheckpointStatus, String> {
    match (state, checkpoint) {
        (None, None) => Ok(CheckpointStatus::Absent),
        (None, Some(c)) => Err(format!(
            "the state file is missing but its checkpoint (generation {}) is present: refusing to bootstrap over a registry that existed; restore the state file and checkpoint together",
            c.generation
        )),
        (Some(_), None) => Ok(CheckpointStatus::Missing),
        (Some(s), Some(c)) if s.generation < c.generation => Err(format!(
            "the state file was rolled back: state generation {} is older than checkpoint generation {}",
            s.generation, c.generation
        )),
        (Some(s), Some(c)) if s.generation == c.generation => {
            if s.current_hash == c.current_hash {
                Ok(CheckpointStatus::Current)
            } else {
                Err(format!(
                    "the state file was rolled back or replaced: generation {} has hash {} but the checkpoint recorded {}",
                    s.generation, s.current_hash, c.current_hash
                ))
            }
        }
        (Some(s), Some(c)) => {
            if s.generation == c.generation + 1 && s.previous_hash == c.current_hash {
                Ok(CheckpointStatus::Behind)
            } else {
                Err(format!(
                    "the state file (generation {}) is not the successor of the checkpoint (generation {}, hash {}): the files conflict",
                    s.generation, c.generation, c.current_hash
                ))
            }
        }
    }
}
