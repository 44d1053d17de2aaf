//! Helpers on the values document and its problems, shared by the init
//! rules and the auth method plans.

use serde_yaml_ng::{Mapping, Value as Yaml};

use crate::config::ConfigError;

pub(super) fn problem(path: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// The mapping under `key`, created when absent; `None` when the key holds
/// something else (validation reports it).
pub(super) fn section<'a>(m: &'a mut Mapping, key: &str) -> Option<&'a mut Mapping> {
    let k = Yaml::String(key.to_owned());
    if !m.contains_key(&k) {
        m.insert(k.clone(), Yaml::Mapping(Mapping::new()));
    }
    m.get_mut(&k).and_then(Yaml::as_mapping_mut)
}

/// Sets `key` to `value` unless the values already have it.
pub(super) fn set_if_absent(m: &mut Mapping, key: &str, value: &str) {
    let k = Yaml::String(key.to_owned());
    if !m.contains_key(&k) {
        m.insert(k, Yaml::String(value.to_owned()));
    }
}

/// The string under `key`, if it is one.
pub(super) fn str_at<'a>(m: &'a Mapping, key: &str) -> Option<&'a str> {
    m.get(Yaml::String(key.to_owned())).and_then(Yaml::as_str)
}
