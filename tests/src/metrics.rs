//! Reading samples out of Prometheus / OpenMetrics text exposition.

use std::collections::BTreeMap;

/// One sample line: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Every sample in `text`. Comment lines and unparsable lines are skipped.
pub fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(parse_line)
        .collect()
}

/// Sum of the samples named exactly `name` whose labels include every pair
/// in `labels` (other labels are free), or `None` when no sample matches.
///
/// `metric(text, "openbao_kms_openbao_requests_total", &[("operation", "transit_decrypt")])`
/// sums the counter over all its statuses.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = samples(text)
        .into_iter()
        .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).is_some_and(|got| got == v)))
        .map(|s| s.value)
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

/// Like [`metric`], for counters: a label combination never observed may be
/// absent from the exposition, and counts as 0.
pub fn counter(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric(text, name, labels).unwrap_or(0.0)
}

/// How much a counter grew between two scrapes (absent counts as 0).
pub fn increase(before: &str, after: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    counter(after, name, labels) - counter(before, name, labels)
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(body) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(body)?;
        labels = parsed;
        rest = after;
    }
    // Value, optionally followed by a timestamp or an exemplar.
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample { name, labels, value })
}

/// Parses `k="v",k2="v2"}` and returns the labels and what follows `}`.
fn parse_labels(mut s: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(after) = s.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim().to_owned();
        let mut chars = s[eq + 1..].char_indices();
        if chars.next()?.1 != '"' {
            return None;
        }
        let mut value = String::new();
        let mut end = None;
        let mut escaped = false;
        for (i, c) in chars {
            match (escaped, c) {
                (true, 'n') => value.push('\n'),
                (true, c) => value.push(c),
                (false, '\\') => {
                    escaped = true;
                    continue;
                }
                (false, '"') => {
                    end = Some(eq + 1 + i + 1);
                    break;
                }
                (false, c) => value.push(c),
            }
            escaped = false;
        }
        labels.insert(key, value);
        s = &s[end?..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP openbao_kms_openbao_requests Requests to OpenBao.
# TYPE openbao_kms_openbao_requests counter
openbao_kms_openbao_requests_total{operation="transit_decrypt",status="ok"} 3
openbao_kms_openbao_requests_total{operation="transit_decrypt",status="unavailable"} 2
openbao_kms_openbao_requests_total{operation="transit_encrypt",status="ok"} 1
openbao_kms_status_key_id_hash{hash="a\"b\\c"} 1
openbao_kms_status_cache_age_seconds 0.25
openbao_kms_grpc_request_duration_seconds_bucket{method="Status",le="+Inf"} 7
# EOF
"#;

    #[test]
    fn sums_over_free_labels() {
        let decrypts = metric(
            TEXT,
            "openbao_kms_openbao_requests_total",
            &[("operation", "transit_decrypt")],
        );
        assert_eq!(decrypts, Some(5.0));
        assert_eq!(metric(TEXT, "openbao_kms_openbao_requests_total", &[]), Some(6.0));
    }

    #[test]
    fn absent_counter_is_zero() {
        let name = "openbao_kms_openbao_requests_total";
        assert_eq!(metric(TEXT, name, &[("operation", "transit_rewrap")]), None);
        assert_eq!(counter(TEXT, name, &[("operation", "transit_rewrap")]), 0.0);
    }

    #[test]
    fn increase_between_scrapes() {
        let before = "x_total{r=\"a\"} 1\n";
        let after = "x_total{r=\"a\"} 3\nx_total{r=\"b\"} 1\n";
        assert_eq!(increase(before, after, "x_total", &[("r", "a")]), 2.0);
        assert_eq!(increase(before, after, "x_total", &[("r", "b")]), 1.0);
        assert_eq!(increase(before, after, "x_total", &[("r", "c")]), 0.0);
    }

    #[test]
    fn unlabelled_escaped_and_infinite() {
        assert_eq!(metric(TEXT, "openbao_kms_status_cache_age_seconds", &[]), Some(0.25));
        assert_eq!(
            metric(TEXT, "openbao_kms_status_key_id_hash", &[("hash", "a\"b\\c")]),
            Some(1.0)
        );
        let bucket = "openbao_kms_grpc_request_duration_seconds_bucket";
        assert_eq!(metric(TEXT, bucket, &[("le", "+Inf")]), Some(7.0));
    }
}
