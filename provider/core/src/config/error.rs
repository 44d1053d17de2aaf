//! Configuration problems: each qualified by the YAML path of its field,
//! all of one pass reported together.

/// One validation problem, qualified by the YAML path of the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

/// `path: message`, or the message alone for a problem of the whole file.
impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for e in &self.0 {
            writeln!(f, "{}: {}", e.path, e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_reads_path_then_message_and_a_file_problem_the_message_alone() {
        let field = ConfigError {
            path: "server.socketPath".into(),
            message: "must be absolute".into(),
        };
        let file = ConfigError {
            path: String::new(),
            message: "not YAML".into(),
        };
        assert_eq!(field.to_string(), "server.socketPath: must be absolute");
        assert_eq!(file.to_string(), "not YAML");
    }
}
