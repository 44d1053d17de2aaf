//! The pure string rules of configuration values: labels, OpenBao mount
//! paths and namespaces, Transit key names, host names, `host:port`
//! listeners, the `https://` address of OpenBao, absolute paths. Each returns
//! the problem in words (or whether the value is fine); the section
//! validators attach the field's path.

use std::path::{Component, Path};

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// Rules shared by every label: non-empty, no control characters, no
/// surrounding whitespace.
pub(super) fn label_problem(s: &str) -> Option<&'static str> {
    if s.is_empty() {
        Some("must not be empty")
    } else if has_control(s) {
        Some("must not contain control characters")
    } else if s.trim() != s {
        Some("must not have leading or trailing whitespace")
    } else {
        None
    }
}

/// A relative OpenBao path (Transit or auth mount).
pub(super) fn mount_path_problem(s: &str) -> Option<&'static str> {
    if let Some(p) = label_problem(s) {
        return Some(p);
    }
    if s.starts_with('/') {
        return Some("must be relative (no leading '/'); paths are relative to /v1/ and to the namespace");
    }
    if s.contains("//") {
        return Some("must not contain '//'");
    }
    if s.ends_with('/') {
        return Some("must not end with '/'");
    }
    if s.split('/').any(|seg| seg == "." || seg == "..") {
        return Some("must not contain '.' or '..' segments");
    }
    if s.chars().any(|c| c.is_whitespace() || matches!(c, '%' | '?' | '#')) {
        return Some("must not contain whitespace, '%', '?' or '#'");
    }
    None
}

pub(super) fn namespace_problem(s: &str) -> Option<&'static str> {
    if s.is_empty() {
        return None;
    }
    if has_control(s) {
        return Some("must not contain control characters");
    }
    if s.trim() != s {
        return Some("must not have leading or trailing whitespace");
    }
    if s.starts_with('/') {
        return Some("must be relative (no leading '/'), e.g. admin/workload-a");
    }
    if s.contains("//") {
        return Some("must not contain '//'");
    }
    if s.contains('%') {
        return Some("must not contain '%'");
    }
    if s.chars().any(char::is_whitespace) {
        return Some("must not contain whitespace");
    }
    if s.split('/').any(|seg| seg.is_empty() || seg == "." || seg == "..") {
        return Some("must not contain empty, '.' or '..' segments (no trailing '/')");
    }
    None
}

pub(super) fn key_name_ok(s: &str) -> bool {
    let edge = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let inner = |c: char| edge(c) || c == '.' || c == '-';
    match (s.chars().next(), s.chars().last()) {
        (Some(first), Some(last)) => edge(first) && edge(last) && s.chars().all(inner),
        _ => false,
    }
}

fn hostname_ok(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

/// Splits `host:port`; IPv6 hosts are bracketed. Returns the host without brackets.
fn split_host_port(s: &str) -> Result<(&str, Option<&str>), &'static str> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("has an unterminated '[' in the host")?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("has an invalid IPv6 address in brackets");
        }
        match after {
            "" => Ok((host, None)),
            _ => after
                .strip_prefix(':')
                .map(|p| (host, Some(p)))
                .ok_or("must be host:port"),
        }
    } else {
        match s.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => Err("must put an IPv6 host in brackets, e.g. [::1]:8081"),
            Some((host, port)) => Ok((host, Some(port))),
            None => Ok((s, None)),
        }
    }
}

pub(super) fn host_ok(host: &str) -> bool {
    host.parse::<std::net::IpAddr>().is_ok() || hostname_ok(host)
}

fn port(p: &str) -> Option<u16> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse().ok()
}

/// `host:port` of a listener (port 0 = ephemeral).
pub(super) fn listen_address_problem(s: &str) -> Option<&'static str> {
    if has_control(s) || s.chars().any(char::is_whitespace) {
        return Some("must not contain whitespace or control characters");
    }
    match split_host_port(s) {
        Err(e) => Some(e),
        Ok((_, None)) => Some("must be host:port, e.g. 127.0.0.1:8081 (empty disables the listener)"),
        Ok(("", Some(_))) => Some("must name a host, e.g. 127.0.0.1:8081 or 0.0.0.0:8081 for every interface"),
        Ok((host, Some(p))) => {
            if !s.starts_with('[') && !host_ok(host) {
                Some("has an invalid host")
            } else if port(p).is_none() {
                Some("has an invalid port (0-65535)")
            } else {
                None
            }
        }
    }
}

/// `https://host[:port]` with an optional trailing `/`, normalized without it.
pub(super) fn https_address(s: &str) -> Result<String, &'static str> {
    if has_control(s) || s.chars().any(char::is_whitespace) {
        return Err("must not contain whitespace or control characters");
    }
    let Some(rest) = s.strip_prefix("https://") else {
        if s.to_ascii_lowercase().starts_with("http://") {
            return Err("must use https://; TLS to OpenBao is always on");
        }
        return Err("must be an https:// URL, e.g. https://bao.example.internal:8200");
    };
    if rest.contains('#') {
        return Err("must not contain a fragment ('#')");
    }
    if rest.contains('?') {
        return Err("must not contain a query ('?')");
    }
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    if authority.contains('@') {
        return Err("must not contain user info ('user@')");
    }
    if !path.is_empty() {
        return Err("must not have a path; the provider adds /v1/ itself");
    }
    match split_host_port(authority)? {
        ("", _) => Err("must name a host"),
        (host, _) if !authority.starts_with('[') && !host_ok(host) => Err("has an invalid host"),
        (_, Some(p)) if port(p).is_none_or(|p| p == 0) => Err("has an invalid port (1-65535)"),
        _ => Ok(format!("https://{authority}")),
    }
}

/// `telemetry.otlp.endpoint`: `https://host[:port]`, or `http://host[:port]`
/// to a loopback address; normalized without a trailing `/`.
pub(super) fn otlp_endpoint(s: &str) -> Result<String, &'static str> {
    const EXAMPLE: &str =
        "must be an https:// URL (http:// only to a loopback address), e.g. https://otel-collector.monitoring.svc:4317";
    let plain = s.strip_prefix("http://");
    let https = match plain {
        Some(rest) => format!("https://{rest}"),
        None => s.to_owned(),
    };
    let address = https_address(&https).map_err(|e| {
        if e.starts_with("must not have a path") {
            "must not have a path (OTLP/gRPC uses the service path)"
        } else if e.starts_with("must use https://") || e.starts_with("must be an https:// URL") {
            EXAMPLE
        } else {
            e
        }
    })?;
    let authority = &address["https://".len()..];
    if plain.is_none() {
        return Ok(address);
    }
    let (host, _) = split_host_port(authority)?;
    let loopback =
        host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return Err(
            "must use https:// unless the collector listens on a loopback address (127.0.0.1, [::1], localhost)",
        );
    }
    Ok(format!("http://{authority}"))
}

/// A gRPC metadata key for `telemetry.otlp.headerFiles`.
pub(super) fn header_name_problem(s: &str) -> Option<&'static str> {
    let first_ok = s
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !first_ok
        || !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'))
    {
        Some("must be a lower-case header name (a-z, 0-9, '-', '_', '.'), e.g. authorization")
    } else if s.starts_with("grpc-") {
        Some("must not start with grpc- (reserved by gRPC)")
    } else if s.ends_with("-bin") {
        Some("must not end with -bin (binary metadata is not supported)")
    } else {
        None
    }
}

/// An OAuth2 token endpoint: `https://host[:port][/path][?query]`, no
/// user info, no fragment (RFC 6749 section 3.2).
pub(super) fn token_url(s: &str) -> Result<String, &'static str> {
    if has_control(s) || s.chars().any(char::is_whitespace) {
        return Err("must not contain whitespace or control characters");
    }
    let Some(rest) = s.strip_prefix("https://") else {
        return Err("must be an https:// URL (the client secret is sent to it)");
    };
    if rest.contains('#') {
        return Err("must not contain a fragment ('#')");
    }
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.contains('@') {
        return Err("must not contain user info ('user@'); use clientId and clientSecretFile");
    }
    match split_host_port(authority)? {
        ("", _) => Err("must name a host"),
        (host, _) if !authority.starts_with('[') && !host_ok(host) => Err("has an invalid host"),
        (_, Some(p)) if port(p).is_none_or(|p| p == 0) => Err("has an invalid port (1-65535)"),
        _ => Ok(s.to_owned()),
    }
}

/// An absolute URI (`scheme:rest`) without a fragment, as RFC 8707 requires
/// of a `resource` parameter.
pub(super) fn absolute_uri_problem(s: &str) -> Option<&'static str> {
    if has_control(s) || s.chars().any(char::is_whitespace) {
        return Some("must not contain whitespace or control characters");
    }
    let Some((scheme, rest)) = s.split_once(':') else {
        return Some("must be an absolute URI (scheme:...)");
    };
    let mut chars = scheme.chars();
    let scheme_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok || rest.is_empty() {
        Some("must be an absolute URI (scheme:...)")
    } else if s.contains('#') {
        Some("must not contain a fragment ('#')")
    } else {
        None
    }
}

/// Common rules of an absolute path in the configuration.
pub(super) fn absolute_path_problem(s: &str) -> Option<&'static str> {
    if s.is_empty() {
        Some("must not be empty")
    } else if has_control(s) {
        Some("must not contain control characters")
    } else if !s.starts_with('/') {
        Some("must be an absolute path")
    } else if s.ends_with('/') {
        Some("must name a file, not end with '/'")
    } else if Path::new(s)
        .components()
        .any(|c| matches!(c, Component::CurDir | Component::ParentDir))
    {
        Some("must not contain '.' or '..' components")
    } else {
        None
    }
}

/// Two fixed listeners that would bind the same port on overlapping hosts.
pub(super) fn listeners_clash(a: &str, b: &str) -> bool {
    let (Ok((ha, Some(pa))), Ok((hb, Some(pb)))) = (split_host_port(a), split_host_port(b)) else {
        return false;
    };
    let (Some(pa), Some(pb)) = (port(pa), port(pb)) else {
        return false;
    };
    if pa == 0 || pb == 0 || pa != pb {
        return false;
    }
    let unspecified = |h: &str| h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_unspecified());
    ha.eq_ignore_ascii_case(hb) || unspecified(ha) || unspecified(hb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_clash_on_the_same_port_of_overlapping_hosts() {
        assert!(listeners_clash("[::]:80", "127.0.0.1:80"));
        assert!(!listeners_clash("127.0.0.1:80", "127.0.0.1:81"));
    }
}
