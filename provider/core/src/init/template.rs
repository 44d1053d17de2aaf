//! The smallest template engine that is enough for the install files:
//! `{{name}}` placeholders replaced by values the caller has already quoted
//! for the target language ([`yaml_str`], [`sh_str`]). Rendering fails when a
//! placeholder has no value or a value is never used, so a template and its
//! renderer cannot drift apart silently.

use std::collections::BTreeMap;

/// Why a template could not be rendered (a bug in the product, never input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("template {template}: no value for {{{{{name}}}}}")]
    Missing { template: String, name: String },
    #[error("template {template}: value {name} is not used")]
    Unused { template: String, name: String },
    #[error("template {template}: unterminated {{{{")]
    Unterminated { template: String },
}

/// Replaces every `{{name}}` in `text` with `values[name]`.
pub fn render(template: &str, text: &str, values: &BTreeMap<&str, String>) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(text.len() + 256);
    let mut used = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| TemplateError::Unterminated {
            template: template.to_owned(),
        })?;
        let name = &after[..end];
        let value = values.get(name).ok_or_else(|| TemplateError::Missing {
            template: template.to_owned(),
            name: name.to_owned(),
        })?;
        used.insert(name);
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    if let Some(name) = values.keys().find(|k| !used.contains(*k)) {
        return Err(TemplateError::Unused {
            template: template.to_owned(),
            name: (*name).to_owned(),
        });
    }
    Ok(out)
}

/// A YAML double-quoted scalar (JSON string syntax is valid YAML).
pub fn yaml_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// A POSIX shell single-quoted word: `'` becomes `'\''`.
pub fn sh_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn values(pairs: &[(&'static str, &str)]) -> BTreeMap<&'static str, String> {
        pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
    }

    #[test]
    fn replaces_every_placeholder() {
        let out = render("t", "a={{a}} b={{b}} a={{a}}", &values(&[("a", "1"), ("b", "2")])).unwrap();
        assert_eq!(out, "a=1 b=2 a=1");
    }

    #[test]
    fn missing_unused_and_unterminated_are_errors() {
        assert_eq!(
            render("t", "{{a}}", &values(&[])),
            Err(TemplateError::Missing {
                template: "t".into(),
                name: "a".into()
            })
        );
        assert_eq!(
            render("t", "x", &values(&[("a", "1")])),
            Err(TemplateError::Unused {
                template: "t".into(),
                name: "a".into()
            })
        );
        assert!(matches!(
            render("t", "{{a", &values(&[])),
            Err(TemplateError::Unterminated { .. })
        ));
    }

    #[test]
    fn quoting() {
        assert_eq!(sh_str("it's"), r"'it'\''s'");
        assert_eq!(yaml_str("a\"b\nc"), r#""a\"b\nc""#);
    }
}
