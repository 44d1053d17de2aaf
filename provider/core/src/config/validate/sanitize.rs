//! Stage 2, the schema walk: the generic YAML value is checked against the
//! JSON Schema of [`crate::config::schema`]. Unknown fields (with a "did
//! you mean" hint, or a better message for removed and unsupported fields)
//! and wrongly typed scalars are reported and removed, and explicit nulls
//! dropped, so decoding into the raw structs succeeds and the value rules
//! still run on everything else.

use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;

use super::validator::Validator;

pub(super) fn kind(v: &Yaml) -> &'static str {
    match v {
        Yaml::Null => "null",
        Yaml::Bool(_) => "a boolean",
        Yaml::Number(n) if n.is_f64() => "a decimal number",
        Yaml::Number(_) => "an integer",
        Yaml::String(_) => "a string",
        Yaml::Sequence(_) => "a list",
        Yaml::Mapping(_) => "a mapping",
        Yaml::Tagged(_) => "a tagged value",
    }
}

fn type_ok(v: &Yaml, ty: &str) -> bool {
    match (ty, v) {
        ("string", Yaml::String(_)) | ("boolean", Yaml::Bool(_)) => true,
        ("object", Yaml::Mapping(_)) | ("array", Yaml::Sequence(_)) => true,
        ("integer", Yaml::Number(n)) => n.is_i64() || n.is_u64(),
        _ => false,
    }
}

fn type_message(v: &Yaml, schema: &Json) -> String {
    let ty = schema.get("type").and_then(Json::as_str).unwrap_or("");
    let got = kind(v);
    if matches!(v, Yaml::Tagged(_)) {
        return "YAML tags are not supported".to_owned();
    }
    match ty {
        "string" if schema.get("pattern").and_then(Json::as_str) == Some(crate::config::schema::DURATION_PATTERN) => {
            format!("must be a duration string with a unit, such as \"30s\" or \"5m\", not {got}")
        }
        "string" if matches!(v, Yaml::Number(_) | Yaml::Bool(_)) => {
            format!("must be a string, not {got}; quote the value (no implicit conversion)")
        }
        "string" => format!("must be a string, not {got}"),
        "integer" if matches!(v, Yaml::String(_)) => {
            format!("must be an integer, not {got}; write it without quotes")
        }
        "integer" => format!("must be an integer, not {got}"),
        "boolean" => format!("must be true or false, not {got}"),
        "object" => format!("must be a mapping of fields, not {got}"),
        "array" => format!("must be a list, not {got}"),
        _ => format!("has the wrong type ({got})"),
    }
}

/// Fields removed from the schema or belonging to features this provider
/// does not support, with a message better than
/// "unknown field".
fn unsupported(path: &str) -> Option<&'static str> {
    Some(match path {
        "auth.cert.spiffe" => "the spiffe certificate source is not supported; use source: pkcs11 or source: file",
        "server.adminAddress" | "server.unsafeDebugEndpoints" => "was removed from configVersion v1alpha1; delete it",
        "transit.useAssociatedData" => "was removed: associated data (AAD) is always used; delete it",
        "logging.redactOpenBaoPaths" => "was removed; delete it",
        "performance" => "is not supported (decrypt micro-batching does not exist); delete it",
        "auth.tokenStorage" => "was removed: tokens are only ever kept in memory; delete it",
        "auth.mountPath"
        | "auth.role"
        | "auth.jwtFile"
        | "auth.minJwtRemainingTtl"
        | "auth.clockSkewLeeway"
        | "auth.expectedIssuer"
        | "auth.expectedAudience"
        | "auth.expectedSubject" => {
            "is a legacy flat auth field; move it under auth.jwt (minJwtRemainingTtl became auth.jwt.minRemainingTtl)"
        }
        _ => return None,
    })
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// Reports unknown fields and type mismatches under `path`, and removes them
/// (and explicit nulls) from `doc` so decoding into the raw structs succeeds
/// and later rules still run on everything else.
pub(super) fn sanitize(doc: &mut Yaml, schema: &Json, path: &str, v: &mut Validator<'_>) {
    let Some(map) = doc.as_mapping_mut() else {
        return;
    };
    let empty = serde_json::Map::new();
    let props = schema.get("properties").and_then(Json::as_object).unwrap_or(&empty);
    let old = std::mem::take(map);
    for (key, mut value) in old {
        let Some(name) = key.as_str().map(str::to_owned) else {
            v.err(path, format!("field names must be strings, found {}", kind(&key)));
            continue;
        };
        let shown: String = name.escape_debug().collect();
        let child_path = join(path, &shown);
        let Some(child) = props.get(&name) else {
            if let Some(why) = unsupported(&child_path) {
                v.err(&child_path, why);
            } else {
                let mut names: Vec<&str> = props.keys().map(String::as_str).collect();
                let close = names
                    .iter()
                    .copied()
                    .filter(|k| edit_distance(k, &name) <= 2)
                    .min_by_key(|k| edit_distance(k, &name));
                let hint = match close {
                    Some(k) => format!("did you mean {k:?}?"),
                    None => {
                        names.sort_unstable();
                        format!("known fields here: {}", names.join(", "))
                    }
                };
                v.err(&child_path, format!("unknown field; {hint}"));
            }
            continue;
        };
        if value.is_null() {
            continue;
        }
        let ty = child.get("type").and_then(Json::as_str).unwrap_or("");
        if !type_ok(&value, ty) {
            v.err(&child_path, type_message(&value, child));
            continue;
        }
        match ty {
            // A mapping of names to values (`headerFiles`): every value
            // must have the declared type; the names are the validator's.
            "object" if child.get("additionalProperties").is_some_and(Json::is_object) => {
                let value_schema = &child["additionalProperties"];
                let value_ty = value_schema.get("type").and_then(Json::as_str).unwrap_or("");
                let mut bad = false;
                if let Some(entries) = value.as_mapping() {
                    for (k, item) in entries {
                        let name = k
                            .as_str()
                            .map_or_else(|| format!("{k:?}"), |n| n.escape_debug().collect());
                        if !k.is_string() {
                            v.err(&child_path, format!("names must be strings, found {}", kind(k)));
                            bad = true;
                        } else if !type_ok(item, value_ty) {
                            v.err(&join(&child_path, &name), type_message(item, value_schema));
                            bad = true;
                        }
                    }
                }
                if bad {
                    continue;
                }
            }
            "object" => sanitize(&mut value, child, &child_path, v),
            "array" => {
                let item_schema = child.get("items").unwrap_or(&Json::Null);
                let item_ty = item_schema.get("type").and_then(Json::as_str).unwrap_or("");
                let mut bad = false;
                if let Some(items) = value.as_sequence() {
                    for (i, item) in items.iter().enumerate() {
                        if !type_ok(item, item_ty) {
                            v.err(&format!("{child_path}[{i}]"), type_message(item, item_schema));
                            bad = true;
                        }
                    }
                }
                if bad {
                    continue;
                }
            }
            _ => {}
        }
        map.insert(key, value);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::validate::tests::*;
    use crate::config::{SocketGroup, parse_yaml};
    use std::time::Duration;

    #[test]
    fn edit_distance_counts_single_character_edits() {
        assert_eq!(edit_distance("socketPth", "socketPath"), 1);
    }

    #[test]
    fn scalar_coercion_rejected() {
        set_fails("server.socketGroup", "1234", "quote the value");
        assert_eq!(
            set_ok("server.socketGroup", "\"1234\"").server.socket_group,
            SocketGroup::Gid(1234)
        );
        assert_eq!(
            set_ok("server.socketGroup", "wheel").server.socket_group,
            SocketGroup::Name("wheel".into())
        );
        set_fails("transit.keyName", "123", "quote the value");
        // serde_yaml_ng reads a leading-zero scalar as the string written.
        assert_eq!(set_ok("transit.keyName", "0123").transit.key_name, "0123");
        set_fails("transit.keyName", "true", "quote the value");
        assert_eq!(set_ok("transit.keyName", "\"0123\"").transit.key_name, "0123");
        set_fails("openbao.timeout", "120", "duration string with a unit");
        set_fails("openbao.timeout", "\"120\"", "with a unit");
        set_fails("server.maxConcurrentStatus", "\"16\"", "without quotes");
        set_fails("server.maxConcurrentStatus", "1.5", "integer");
        set_fails("rotation.rejectVersionRollback", "yes", "true or false");
        set_fails("rotation.rejectVersionRollback", "\"true\"", "true or false");
        set_fails("server", "[]", "mapping");
        set_fails("auth.jwt.expectedAudience", "a", "list");
        fails_at(
            &with(FULL, "auth.jwt.expectedAudience", "[a, 1]"),
            "auth.jwt.expectedAudience[1]",
            "string",
        );
        set_fails("transit.keyName", "!custom name", "tags");
    }

    #[test]
    fn explicit_null_means_unset() {
        let c = parse_yaml(&with(MINIMAL, "openbao.namespace", "~")).unwrap();
        assert_eq!(c.openbao.namespace, "");
        let c = parse_yaml(&with(MINIMAL, "bootstrap", "~")).unwrap();
        assert_eq!(c.bootstrap.grace_timeout, Duration::from_secs(60));
        fails_at(&with(MINIMAL, "transit.keyName", "~"), "transit.keyName", "required");
    }

    #[test]
    fn unknown_fields_rejected() {
        fails_at(&with(FULL, "extra", "1"), "extra", "unknown field");
        fails_at(
            &with(FULL, "server.socketPth", "x"),
            "server.socketPth",
            "did you mean \"socketPath\"",
        );
        fails_at(
            &with(FULL, "transit.keyIdScope.zone", "x"),
            "transit.keyIdScope.zone",
            "known fields here",
        );
        fails_at(
            &with(FULL, "logging.debugCorrelation.foo", "1"),
            "logging.debugCorrelation.foo",
            "unknown",
        );
        fails_at(
            &with(FULL, "auth.jwt.oauth2.grantType", "password"),
            "auth.jwt.oauth2.grantType",
            "unknown",
        );
        fails_at(
            &with(FULL, "transit.useAssociatedData", "true"),
            "transit.useAssociatedData",
            "removed",
        );
        fails_at(&with(FULL, "auth.role", "x"), "auth.role", "legacy");
        fails_at(&with(FULL, "performance", "{}"), "performance", "not supported");
    }
}
