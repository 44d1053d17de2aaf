//! Validation: YAML text -> [`Config`], every problem collected in one pass
//! and reported with the YAML path of the field (`server.socketMode`,
//! `auth.jwt.expectedAudience[1]`).
//!
//! Three stages, all pure:
//! 1. The text is parsed into a generic YAML value.
//! 2. The value is walked against the JSON Schema ([`super::schema`]) by
//!    `sanitize`: unknown fields and wrongly typed scalars are reported and
//!    removed, so one typo does not hide every later problem. An explicit
//!    `null` (`namespace:` with nothing after it) means "not set".
//! 3. The cleaned value is decoded into [`super::raw`] and each field is
//!    checked and converted, with defaults applied, environment/flag
//!    overrides taken into account, and cross-field rules checked last.
//!
//! Layout: this file runs the stages and assembles the sections;
//! `validator` collects the problems and holds the field-level checks
//! (required, label, file, duration, integer range, one-of); `syntax` holds
//! the pure string rules (labels, mount paths, namespaces, host:port, https
//! URLs, absolute paths); one module per section (`server`, `openbao`,
//! `auth`, `transit`, and `runtime` for bootstrap, status, state, rotation
//! and logging, `telemetry` for OTLP export) checks and converts its fields; `tests` holds the sample
//! configurations the section tests share.
//!
//! Nothing here reads the environment or the file system: the provider
//! crate passes overrides and the socket-directory allow-list extension in a
//! [`ValidationContext`], and checks file modes and the CA file itself.

use std::time::Duration;

use serde_yaml_ng::Value as Yaml;

use self::sanitize::{kind, sanitize};
use self::validator::Validator;
use super::raw::RawConfig;
use super::{CONFIG_VERSION, Config};

// Errors, overrides and durations have modules of their own; their items
// stay reachable under `config::validate` as well.
pub use self::server::{ALLOWED_SOCKET_DIRS, MAX_SOCKET_PATH_BYTES};
pub use super::duration::{DurationError, format_duration, parse_duration};
pub use super::error::{ConfigError, ConfigErrors};
pub use super::overrides::{
    ENV_CONFIG_PATH, ENV_HEALTH_ADDRESS, ENV_LOG_LEVEL, ENV_METRICS_ADDRESS, Override, Overrides, ValidationContext,
};

mod auth;
mod openbao;
mod runtime;
mod sanitize;
mod server;
mod syntax;
mod telemetry;
#[cfg(test)]
pub(crate) mod tests;
mod transit;
mod validator;

/// Parses and validates a configuration with no overrides and the default
/// socket-directory allow-list.
pub fn parse_yaml(text: &str) -> Result<Config, ConfigErrors> {
    parse_yaml_with(text, &ValidationContext::default())
}

/// Parses and validates a configuration, reporting every problem at once.
pub fn parse_yaml_with(text: &str, ctx: &ValidationContext) -> Result<Config, ConfigErrors> {
    let mut v = Validator::new(ctx);
    let mut doc: Yaml = match serde_yaml_ng::from_str(text) {
        Ok(doc) => doc,
        Err(e) => {
            // serde_yaml_ng syntax errors carry a location and never the
            // document's values.
            return Err(ConfigErrors(vec![ConfigError {
                path: String::new(),
                message: format!("not valid YAML: {e}"),
            }]));
        }
    };
    if doc.is_null() {
        doc = Yaml::Mapping(serde_yaml_ng::Mapping::new());
    }
    let schema = super::schema::json_schema();
    if !doc.is_mapping() {
        v.err(
            "",
            format!("the configuration must be a mapping of sections, not {}", kind(&doc)),
        );
        return Err(ConfigErrors(v.errors));
    }
    sanitize(&mut doc, &schema, "", &mut v);
    let raw: RawConfig = match serde_yaml_ng::from_value(doc) {
        Ok(raw) => raw,
        Err(e) => {
            // Unreachable while the schema and the raw structs agree (tested).
            v.err("", format!("cannot decode the configuration: {e}"));
            return Err(ConfigErrors(v.errors));
        }
    };
    match v.config(&raw) {
        Some(cfg) if v.errors.is_empty() => Ok(cfg),
        _ => {
            if v.errors.is_empty() {
                v.err("", "configuration is invalid");
            }
            Err(ConfigErrors(v.errors))
        }
    }
}

impl Validator<'_> {
    /// Checks every section (the four without defaults must be present) and
    /// assembles the [`Config`] when all of them converted.
    fn config(&mut self, raw: &RawConfig) -> Option<Config> {
        if let Some(version) = &raw.config_version
            && version != CONFIG_VERSION
        {
            self.err("configVersion", format!("must be {CONFIG_VERSION}"));
        }
        for (name, present) in [
            ("server", raw.server.is_some()),
            ("openbao", raw.openbao.is_some()),
            ("auth", raw.auth.is_some()),
            ("transit", raw.transit.is_some()),
        ] {
            if !present {
                self.err(name, "section is required");
            }
        }
        let server = raw.server.as_ref().and_then(|s| self.server(s));
        let openbao = raw.openbao.as_ref().and_then(|o| self.openbao(o));
        let timeout = openbao.as_ref().map_or(Duration::from_secs(2), |o| o.timeout);
        let auth = raw.auth.as_ref().and_then(|a| self.auth(a, timeout));
        let transit = raw.transit.as_ref().and_then(|t| self.transit(t));
        let bootstrap = self.bootstrap(&raw.bootstrap.clone().unwrap_or_default());
        let status = self.status(&raw.status.clone().unwrap_or_default());
        let state = self.state(&raw.state.clone().unwrap_or_default());
        let rotation = self.rotation(&raw.rotation.clone().unwrap_or_default());
        let logging = self.logging(&raw.logging.clone().unwrap_or_default());
        let telemetry = self.telemetry(&raw.telemetry.clone().unwrap_or_default());
        Some(Config {
            server: server?,
            openbao: openbao?,
            auth: auth?,
            transit: transit?,
            bootstrap: bootstrap?,
            status: status?,
            state: state?,
            rotation: rotation?,
            logging: logging?,
            telemetry: telemetry?,
        })
    }
}
