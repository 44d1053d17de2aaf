//! The collector of problems and the field-level checks every section
//! uses. A check that fails records one path-qualified problem and returns
//! `None`, so a section keeps checking its other fields and converts only
//! when all of them passed.

use std::path::PathBuf;
use std::time::Duration;

use super::syntax::{absolute_path_problem, label_problem, mount_path_problem};
use crate::config::duration::parse_duration;
use crate::config::error::ConfigError;
use crate::config::overrides::ValidationContext;

/// Stage 3's state: the problems found so far and the inputs that do not
/// come from the file.
pub(super) struct Validator<'a> {
    pub(super) errors: Vec<ConfigError>,
    pub(super) ctx: &'a ValidationContext,
}

/// True when an error at `earlier` already explains a problem at `path`
/// (same field, or a field inside a section already reported).
fn covers(earlier: &str, path: &str) -> bool {
    earlier == path
        || (!earlier.is_empty()
            && path
                .strip_prefix(earlier)
                .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('[')))
}

impl<'a> Validator<'a> {
    pub(super) fn new(ctx: &'a ValidationContext) -> Self {
        Self {
            errors: Vec::new(),
            ctx,
        }
    }

    /// Records a problem at `path`, unless one at the same field or at an
    /// enclosing section already explains it; names the override that set
    /// the value, if any.
    pub(super) fn err(&mut self, path: &str, message: impl Into<String>) {
        if self.errors.iter().any(|e| covers(&e.path, path)) {
            return;
        }
        let mut message = message.into();
        if let Some(origin) = self.origin(path) {
            message.push_str(&format!(" (set by {origin})"));
        }
        self.errors.push(ConfigError {
            path: path.to_owned(),
            message,
        });
    }

    fn origin(&self, path: &str) -> Option<&str> {
        let o = &self.ctx.overrides;
        match path {
            "logging.level" => o.log_level.as_ref(),
            "server.metricsAddress" => o.metrics_address.as_ref(),
            "server.healthAddress" => o.health_address.as_ref(),
            _ => None,
        }
        .map(|o| o.origin.as_str())
    }

    pub(super) fn required<'r>(&mut self, path: &str, v: &'r Option<String>) -> Option<&'r str> {
        match v {
            Some(s) => Some(s),
            None => {
                self.err(path, "is required");
                None
            }
        }
    }

    /// A required non-empty label (identity-bearing values, roles, labels).
    pub(super) fn label(&mut self, path: &str, v: &Option<String>) -> Option<String> {
        let s = self.required(path, v)?;
        match label_problem(s) {
            Some(p) => {
                self.err(path, p);
                None
            }
            None => Some(s.to_owned()),
        }
    }

    /// An optional label: absent or empty means none.
    pub(super) fn optional_label(&mut self, path: &str, v: &Option<String>) -> Option<Option<String>> {
        match v.as_deref() {
            None | Some("") => Some(None),
            Some(s) => match label_problem(s) {
                Some(p) => {
                    self.err(path, p);
                    None
                }
                None => Some(Some(s.to_owned())),
            },
        }
    }

    pub(super) fn file(&mut self, path: &str, v: &Option<String>) -> Option<PathBuf> {
        let s = self.required(path, v)?;
        match absolute_path_problem(s) {
            Some(p) => {
                self.err(path, p);
                None
            }
            None => Some(PathBuf::from(s)),
        }
    }

    pub(super) fn mount_path(&mut self, path: &str, v: &Option<String>, auth: bool) -> Option<String> {
        let s = self.required(path, v)?;
        if let Some(p) = mount_path_problem(s) {
            self.err(path, p);
            return None;
        }
        if auth && (!s.starts_with("auth/") || s.len() <= "auth/".len()) {
            self.err(path, "must start with auth/ and name the mount, e.g. auth/jwt");
            return None;
        }
        Some(s.to_owned())
    }

    pub(super) fn duration(
        &mut self,
        path: &str,
        v: &Option<String>,
        default: Duration,
        zero_ok: bool,
    ) -> Option<Duration> {
        let Some(s) = v else { return Some(default) };
        match parse_duration(s) {
            Ok(d) if d.is_zero() && !zero_ok => {
                self.err(path, "must be positive");
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.err(path, e.to_string());
                None
            }
        }
    }

    pub(super) fn int(&mut self, path: &str, v: Option<i64>, default: u32, min: u32, max: u32) -> Option<u32> {
        let Some(n) = v else { return Some(default) };
        match u32::try_from(n) {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.err(path, format!("must be between {min} and {max}"));
                None
            }
        }
    }

    pub(super) fn one_of<T: Copy>(
        &mut self,
        path: &str,
        v: Option<&str>,
        default: T,
        options: &[(&str, T)],
    ) -> Option<T> {
        let Some(s) = v else { return Some(default) };
        if let Some((_, t)) = options.iter().find(|(name, _)| *name == s) {
            return Some(*t);
        }
        let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
        self.err(path, format!("must be one of: {}", names.join(", ")));
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_at_a_field_covers_the_fields_inside_it() {
        assert!(covers("auth.jwt", "auth.jwt.role"));
        assert!(covers("a", "a[1]"));
        assert!(!covers("auth.jwt", "auth.jwtx"));
        assert!(!covers("", "x"));
    }
}
