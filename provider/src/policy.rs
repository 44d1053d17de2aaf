//! `policy openbao`: the least-privilege OpenBao policy for a configuration.
//! The text itself is a pure rule in the core, shared with `init`.

pub use bao_kms_core::policy::openbao_policy;
