//! The inputs of validation that do not come from the file: values the
//! environment or a command-line flag set in place of the file's
//! (precedence: defaults < file < environment < flags), and the
//! socket-directory allow-list extension. Nothing here reads the
//! environment itself; the provider passes a lookup function.

use std::path::PathBuf;

use super::error::{ConfigError, ConfigErrors};

/// Environment variables that override `logging.level`.
pub const ENV_LOG_LEVEL: [&str; 2] = ["BAO_KMS_PROVIDER_LOG_LEVEL", "BAO_KMS_PROVIDER_LOGGING_LEVEL"];
/// Environment variables that override `server.metricsAddress`.
pub const ENV_METRICS_ADDRESS: [&str; 2] = [
    "BAO_KMS_PROVIDER_SERVER_METRICS_ADDRESS",
    "BAO_KMS_PROVIDER_SERVER_METRICSADDRESS",
];
/// Environment variables that override `server.healthAddress`.
pub const ENV_HEALTH_ADDRESS: [&str; 2] = [
    "BAO_KMS_PROVIDER_SERVER_HEALTH_ADDRESS",
    "BAO_KMS_PROVIDER_SERVER_HEALTHADDRESS",
];
/// Environment variables naming the configuration file.
pub const ENV_CONFIG_PATH: [&str; 2] = ["BAO_KMS_PROVIDER_CONFIG", "BAO_KMS_PROVIDER_CONFIG_PATH"];

/// A value that replaces the file's value, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub value: String,
    /// Shown after an error about the value, e.g. `BAO_KMS_PROVIDER_LOG_LEVEL` or `--log-level`.
    pub origin: String,
}

/// The only values that may be overridden outside the file. Secrets and
/// identity-bearing values never are.
/// Precedence: defaults < file < environment < flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub log_level: Option<Override>,
    pub metrics_address: Option<Override>,
    pub health_address: Option<Override>,
}

impl Overrides {
    /// Reads the `ENV_*` variables above through `lookup` (the provider passes
    /// `std::env::var`; tests pass a map). An empty variable counts as unset.
    /// Both spellings of one variable set to different values is an error.
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigErrors> {
        let mut errors = Vec::new();
        let mut one = |names: [&str; 2], path: &str| -> Option<Override> {
            let set: Vec<(&str, String)> = names
                .iter()
                .filter_map(|n| lookup(n).filter(|v| !v.is_empty()).map(|v| (*n, v)))
                .collect();
            match set.as_slice() {
                [] => None,
                [(name, value)] => Some(Override {
                    value: value.clone(),
                    origin: (*name).to_owned(),
                }),
                [(a, va), (b, vb), ..] => {
                    if va != vb {
                        errors.push(ConfigError {
                            path: path.to_owned(),
                            message: format!("{a} and {b} are both set, to different values; set only one"),
                        });
                    }
                    Some(Override {
                        value: va.clone(),
                        origin: (*a).to_owned(),
                    })
                }
            }
        };
        let out = Self {
            log_level: one(ENV_LOG_LEVEL, "logging.level"),
            metrics_address: one(ENV_METRICS_ADDRESS, "server.metricsAddress"),
            health_address: one(ENV_HEALTH_ADDRESS, "server.healthAddress"),
        };
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// `self` with every value set in `higher` replaced by it (flags over environment).
    pub fn overridden_by(self, higher: Overrides) -> Overrides {
        Overrides {
            log_level: higher.log_level.or(self.log_level),
            metrics_address: higher.metrics_address.or(self.metrics_address),
            health_address: higher.health_address.or(self.health_address),
        }
    }
}

/// Inputs of validation that do not come from the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidationContext {
    /// Test and development knob: extra absolute directories accepted as the
    /// socket's parent in addition to
    /// [`ALLOWED_SOCKET_DIRS`](super::validate::ALLOWED_SOCKET_DIRS). The
    /// provider fills it only from `BAO_KMS_PROVIDER_ALLOWED_SOCKET_DIR`, so
    /// tests and `make demo` can serve a socket in a temporary directory.
    /// Relative entries are ignored.
    pub extra_socket_dirs: Vec<PathBuf>,
    /// Environment and flag overrides, applied before validation.
    pub overrides: Overrides,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::validate::tests::FULL;
    use crate::config::{LogLevel, parse_yaml_with};

    #[test]
    fn overrides() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned())
        };
        let o = Overrides::from_env(env(&[
            ("BAO_KMS_PROVIDER_LOGGING_LEVEL", "debug"),
            ("BAO_KMS_PROVIDER_SERVER_METRICSADDRESS", "127.0.0.1:9091"),
            ("BAO_KMS_PROVIDER_SERVER_HEALTH_ADDRESS", ""),
            ("BAO_KMS_PROVIDER_TRANSIT_KEYNAME", "other"),
        ]))
        .unwrap();
        assert_eq!(o.health_address, None, "empty counts as unset");
        let ctx = ValidationContext {
            overrides: o.clone(),
            ..Default::default()
        };
        let c = parse_yaml_with(FULL, &ctx).unwrap();
        assert_eq!(c.logging.level, LogLevel::Debug);
        assert_eq!(c.server.metrics_address.as_deref(), Some("127.0.0.1:9091"));
        assert_eq!(
            c.transit.key_name, "k8s-workload-a-etcd",
            "identity is never overridable"
        );

        let flags = Overrides {
            log_level: Some(Override {
                value: "error".into(),
                origin: "--log-level".into(),
            }),
            ..Default::default()
        };
        let merged = o.overridden_by(flags);
        assert_eq!(merged.log_level.as_ref().unwrap().value, "error");
        assert_eq!(merged.metrics_address.as_ref().unwrap().value, "127.0.0.1:9091");

        let bad = Overrides::from_env(env(&[
            ("BAO_KMS_PROVIDER_LOG_LEVEL", "loud"),
            ("BAO_KMS_PROVIDER_SERVER_HEALTH_ADDRESS", "127.0.0.1:8081"),
        ]))
        .unwrap();
        let errs = parse_yaml_with(
            FULL,
            &ValidationContext {
                overrides: bad,
                ..Default::default()
            },
        )
        .unwrap_err()
        .0;
        assert!(
            errs.iter()
                .any(|e| e.path == "logging.level" && e.message.contains("(set by BAO_KMS_PROVIDER_LOG_LEVEL)")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.path == "server.healthAddress" && e.message.contains("must differ")),
            "{errs:?}"
        );

        let conflict = Overrides::from_env(env(&[
            ("BAO_KMS_PROVIDER_LOG_LEVEL", "info"),
            ("BAO_KMS_PROVIDER_LOGGING_LEVEL", "debug"),
        ]))
        .unwrap_err();
        assert_eq!(conflict.0[0].path, "logging.level");
    }
}
