//! The sections with a default for every field, which tune how the provider
//! runs: `bootstrap`, `status`, `state`, `rotation` and `logging`.

use std::path::PathBuf;
use std::time::Duration;

use super::syntax::{absolute_path_problem, label_problem};
use super::validator::Validator;
use crate::config::duration::format_duration;
use crate::config::raw::{RawBootstrap, RawLogging, RawRotation, RawState, RawStatus};
use crate::config::{
    BootstrapConfig, DebugCorrelation, LogFormat, LogLevel, LoggingConfig, RotationConfig, StateConfig, StatusConfig,
};

impl Validator<'_> {
    pub(super) fn bootstrap(&mut self, r: &RawBootstrap) -> Option<BootstrapConfig> {
        let grace = self.duration(
            "bootstrap.graceTimeout",
            &r.grace_timeout,
            Duration::from_secs(60),
            true,
        );
        let retry = self.duration(
            "bootstrap.retryInterval",
            &r.retry_interval,
            Duration::from_secs(5),
            false,
        );
        Some(BootstrapConfig {
            grace_timeout: grace?,
            retry_interval: retry?,
        })
    }

    pub(super) fn status(&mut self, r: &RawStatus) -> Option<StatusConfig> {
        let probe = self.duration(
            "status.probeInterval",
            &r.probe_interval,
            Duration::from_secs(30),
            false,
        );
        let deep = self.duration(
            "status.deepProbeInterval",
            &r.deep_probe_interval,
            Duration::from_secs(300),
            false,
        );
        let stale = self.duration(
            "status.statusMaxStaleness",
            &r.status_max_staleness,
            Duration::from_secs(120),
            false,
        );
        if let (Some(p), Some(s)) = (probe, stale)
            && p >= s
        {
            self.err(
                "status.probeInterval",
                format!("must be less than status.statusMaxStaleness ({})", format_duration(s)),
            );
        }
        Some(StatusConfig {
            probe_interval: probe?,
            deep_probe_interval: deep?,
            status_max_staleness: stale?,
        })
    }

    pub(super) fn state(&mut self, r: &RawState) -> Option<StateConfig> {
        let s = r
            .path
            .as_deref()
            .unwrap_or("/var/lib/openbao-kms/state/key-registry.json");
        match absolute_path_problem(s) {
            Some(p) => {
                self.err("state.path", p);
                None
            }
            None => Some(StateConfig { path: PathBuf::from(s) }),
        }
    }

    pub(super) fn rotation(&mut self, r: &RawRotation) -> Option<RotationConfig> {
        if let Some(mode) = &r.mode
            && mode != "observed"
        {
            self.err("rotation.mode", "must be observed (the only rotation mode)");
        }
        let delay = self.duration(
            "rotation.activationDelay",
            &r.activation_delay,
            Duration::from_secs(120),
            false,
        );
        let count = self.int(
            "rotation.requireStableObservationCount",
            r.require_stable_observation_count,
            3,
            1,
            1_000_000,
        );
        let hold = match r.hold_at_version {
            None => Some(None),
            Some(v) => match u64::try_from(v) {
                Ok(v) if v >= 1 => Some(Some(v)),
                _ => {
                    self.err(
                        "rotation.holdAtVersion",
                        "must be a Transit version (1 or more): the newest version allowed to become active",
                    );
                    None
                }
            },
        };
        Some(RotationConfig {
            activation_delay: delay?,
            require_stable_observation_count: count?,
            reject_version_rollback: r.reject_version_rollback.unwrap_or(true),
            hold_at_version: hold?,
        })
    }

    /// `debugCorrelation.enabled: true` needs what the correlated lines
    /// are made of: `level: debug` (successful requests log at debug),
    /// `logOpenBaoRequestIDs: true` (the OpenBao side of the correlation)
    /// and an `incidentId` to find them by.
    pub(super) fn logging(&mut self, r: &RawLogging) -> Option<LoggingConfig> {
        let level_raw = self
            .ctx
            .overrides
            .log_level
            .as_ref()
            .map(|o| o.value.clone())
            .or(r.level.clone());
        let level = if level_raw.as_deref() == Some("trace") {
            self.err("logging.level", "trace was removed; use debug");
            None
        } else {
            self.one_of(
                "logging.level",
                level_raw.as_deref(),
                LogLevel::Info,
                &[
                    ("debug", LogLevel::Debug),
                    ("info", LogLevel::Info),
                    ("warn", LogLevel::Warn),
                    ("error", LogLevel::Error),
                ],
            )
        };
        let format = self.one_of(
            "logging.format",
            r.format.as_deref(),
            LogFormat::Json,
            &[("json", LogFormat::Json), ("text", LogFormat::Text)],
        );
        let log_openbao_request_ids = r.log_openbao_request_ids.unwrap_or(true);
        let mut debug_correlation = None;
        if let Some(dc) = &r.debug_correlation {
            let ttl = self.duration("logging.debugCorrelation.ttl", &dc.ttl, Duration::from_secs(900), false);
            if ttl.is_some_and(|t| t > Duration::from_secs(3600)) {
                self.err("logging.debugCorrelation.ttl", "must be at most 1h");
            }
            let incident_id = dc.incident_id.clone().unwrap_or_default();
            if !incident_id.is_empty() {
                if let Some(p) = label_problem(&incident_id) {
                    self.err("logging.debugCorrelation.incidentId", p);
                } else if incident_id.chars().count() > 64 {
                    self.err("logging.debugCorrelation.incidentId", "must be at most 64 characters");
                }
            }
            if dc.enabled == Some(true) {
                let path = "logging.debugCorrelation.enabled";
                if level.is_some_and(|l| l != LogLevel::Debug) {
                    self.err(
                        path,
                        "requires logging.level: debug (the correlated lines are debug lines)",
                    );
                }
                if !log_openbao_request_ids {
                    self.err(path, "requires logging.logOpenBaoRequestIDs: true");
                }
                if incident_id.is_empty() {
                    self.err(path, "requires logging.debugCorrelation.incidentId");
                }
                debug_correlation = ttl.map(|ttl| DebugCorrelation { ttl, incident_id });
            }
        }
        let default = crate::log_budget::Budget::DEFAULT;
        let burst = self.int(
            "logging.requestLogBurst",
            r.request_log_burst,
            default.burst,
            1,
            100_000,
        );
        let window = self.duration("logging.requestLogWindow", &r.request_log_window, default.window, false);
        if window.is_some_and(|w| w > Duration::from_secs(3600)) {
            self.err("logging.requestLogWindow", "must be at most 1h");
        }
        Some(LoggingConfig {
            level: level?,
            format: format?,
            log_openbao_request_ids,
            debug_correlation,
            request_log: crate::log_budget::Budget {
                burst: burst?,
                window: window?,
            },
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::parse_yaml;
    use crate::config::validate::tests::*;

    #[test]
    fn request_log_budget() {
        assert_eq!(
            parse_yaml(MINIMAL).unwrap().logging.request_log,
            crate::log_budget::Budget::DEFAULT
        );
        let c = set_ok("logging.requestLogBurst", "3");
        assert_eq!(c.logging.request_log.burst, 3);
        let c = set_ok("logging.requestLogWindow", "1s");
        assert_eq!(c.logging.request_log.window, Duration::from_secs(1));
        set_fails("logging.requestLogBurst", "0", "between 1 and 100000");
        set_fails("logging.requestLogWindow", "0s", "positive");
        set_fails("logging.requestLogWindow", "2h", "at most 1h");
    }

    #[test]
    fn other_sections() {
        set_fails("status.probeInterval", "2m", "less than status.statusMaxStaleness");
        set_ok("status.probeInterval", "119s");
        set_fails("status.deepProbeInterval", "0s", "positive");
        set_fails("bootstrap.retryInterval", "0s", "positive");
        assert_eq!(
            set_ok("bootstrap.graceTimeout", "0s").bootstrap.grace_timeout,
            Duration::ZERO
        );
        set_fails("state.path", "state.json", "absolute");
        set_fails("state.path", "/var/lib/x/", "name a file");
        set_fails("rotation.mode", "manual", "observed");
        set_fails("rotation.requireStableObservationCount", "0", "between 1");
        set_fails("rotation.activationDelay", "0s", "positive");
        assert!(
            !set_ok("rotation.rejectVersionRollback", "false")
                .rotation
                .reject_version_rollback
        );
        assert_eq!(set_ok("rotation.holdAtVersion", "2").rotation.hold_at_version, Some(2));
        set_fails("rotation.holdAtVersion", "0", "1 or more");
        set_fails("rotation.holdAtVersion", "-1", "1 or more");
        set_fails("logging.level", "trace", "removed");
        set_fails("logging.level", "verbose", "debug, info, warn, error");
        set_fails("logging.format", "xml", "json, text");
        assert_eq!(set_ok("logging.level", "warn").logging.level, LogLevel::Warn);
        assert!(
            !set_ok("logging.logOpenBaoRequestIDs", "false")
                .logging
                .log_openbao_request_ids
        );
    }

    #[test]
    fn debug_correlation() {
        set_ok(
            "logging.debugCorrelation",
            "{enabled: false, ttl: 30m, incidentId: INC-1}",
        );
        // Enabled: needs debug, OpenBao request ids and an incident id.
        set_fails(
            "logging.debugCorrelation.enabled",
            "true",
            "requires logging.level: debug",
        );
        let enabled = "{enabled: true, ttl: 10m, incidentId: INC-42}";
        let t = with(FULL, "logging.level", "debug");
        let c = parse_yaml(&with(&t, "logging.debugCorrelation", enabled)).unwrap();
        assert_eq!(
            c.logging.debug_correlation,
            Some(DebugCorrelation {
                ttl: Duration::from_secs(600),
                incident_id: "INC-42".into()
            })
        );
        let off = with(&t, "logging.logOpenBaoRequestIDs", "false");
        fails_at(
            &with(&off, "logging.debugCorrelation", enabled),
            "logging.debugCorrelation.enabled",
            "requires logging.logOpenBaoRequestIDs: true",
        );
        fails_at(
            &with(&t, "logging.debugCorrelation", "{enabled: true}"),
            "logging.debugCorrelation.enabled",
            "requires logging.debugCorrelation.incidentId",
        );
        // Disabled: accepted and inert.
        assert_eq!(
            set_ok("logging.debugCorrelation.enabled", "false")
                .logging
                .debug_correlation,
            None
        );
        // The effective config round-trips through its raw form.
        let raw = serde_yaml_ng::to_string(&crate::config::raw::RawConfig::from_config(&c)).unwrap();
        assert_eq!(parse_yaml(&raw).unwrap().logging, c.logging);
        set_fails("logging.debugCorrelation.ttl", "2h", "at most 1h");
        set_fails("logging.debugCorrelation.ttl", "0s", "positive");
        set_fails(
            "logging.debugCorrelation.incidentId",
            &format!("{:?}", "x".repeat(65)),
            "64",
        );
        set_fails("logging.debugCorrelation.incidentId", "\" x\"", "whitespace");
    }
}
