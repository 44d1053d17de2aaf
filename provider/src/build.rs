//! What this binary is: its version and the facts `build.rs` recorded
//! (commit, build date, whether the work tree was dirty).

/// This build's identity (`version` command, `build_info` metric, install record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Build {
    pub version: &'static str,
    pub commit: &'static str,
    pub build_date: &'static str,
    pub dirty: &'static str,
}

/// The running binary's build.
pub fn current() -> Build {
    Build {
        version: crate::VERSION,
        commit: option_env!("BAO_KMS_PROVIDER_COMMIT").unwrap_or("unknown"),
        build_date: option_env!("BAO_KMS_PROVIDER_BUILD_DATE").unwrap_or("unknown"),
        dirty: option_env!("BAO_KMS_PROVIDER_DIRTY").unwrap_or("unknown"),
    }
}
