//! Durations as the configuration writes them: Go's `time.ParseDuration`
//! syntax (`30s`, `1m30s`, `250ms`), read strictly and printed back in the
//! compact form that reads back unchanged.

use std::time::Duration;

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("must be a duration with a unit, such as \"30s\", \"5m\", \"1h\", \"1m30s\" or \"250ms\"")]
    Malformed,
    #[error("must not be negative")]
    Negative,
    #[error("is too large")]
    Overflow,
}

/// Parses a Go-style duration: one or more `<number><unit>` terms with units
/// `ns`, `us` (`µs`), `ms`, `s`, `m`, `h`, decimals allowed (`1.5h`), or the
/// bare `0`. A number without a unit (`120`) is refused, as is a sign.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.starts_with('-') {
        return Err(DurationError::Negative);
    }
    if s.is_empty() || s.starts_with('+') {
        return Err(DurationError::Malformed);
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let nanos_per: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(DurationError::Malformed),
        };
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(DurationError::Malformed);
        }
        let int_val: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| DurationError::Overflow)?
        };
        let mut term = int_val.checked_mul(nanos_per).ok_or(DurationError::Overflow)?;
        // Fractional digits beyond nanosecond precision are truncated, as in Go.
        let mut scale = nanos_per;
        for digit in frac.bytes() {
            scale /= 10;
            if scale == 0 {
                break;
            }
            term += u128::from(digit - b'0') * scale;
        }
        total = total.checked_add(term).ok_or(DurationError::Overflow)?;
        rest = tail;
    }
    // Go durations are int64 nanoseconds; stay within that range.
    if total > i64::MAX as u128 {
        return Err(DurationError::Overflow);
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| DurationError::Overflow)?;
    let nanos = u32::try_from(total % 1_000_000_000).map_err(|_| DurationError::Overflow)?;
    Ok(Duration::new(secs, nanos))
}

/// Formats a duration compactly so [`parse_duration`] reads it back
/// unchanged: `1h`, `1m30s`, `1s500ms`, `0s`.
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_owned();
    }
    let mut out = String::new();
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let nanos = d.subsec_nanos();
    let (ms, us, ns) = (nanos / 1_000_000, nanos / 1_000 % 1_000, nanos % 1_000);
    for (value, unit) in [
        (h, "h"),
        (m, "m"),
        (s, "s"),
        (ms.into(), "ms"),
        (us.into(), "us"),
        (ns.into(), "ns"),
    ] {
        if value != 0 {
            out.push_str(&format!("{value}{unit}"));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok = [
            ("30s", 30_000),
            ("5m", 300_000),
            ("1h", 3_600_000),
            ("250ms", 250),
            ("1m30s", 90_000),
            ("1.5h", 5_400_000),
            (".5s", 500),
            ("1h0m0s", 3_600_000),
            ("0s", 0),
            ("0", 0),
            ("2000us", 2),
            ("2000µs", 2),
        ];
        for (s, ms) in ok {
            assert_eq!(parse_duration(s), Ok(Duration::from_millis(ms)), "{s}");
        }
        assert_eq!(parse_duration("1ns"), Ok(Duration::from_nanos(1)));
        for s in [
            "", "120", "5", "s", "1x", "1.2.3s", "1 s", "+1s", "1s ", ".s", "1S", "5d",
        ] {
            assert_eq!(parse_duration(s), Err(DurationError::Malformed), "{s:?}");
        }
        assert_eq!(parse_duration("-1s"), Err(DurationError::Negative));
        assert_eq!(parse_duration("3000000h"), Err(DurationError::Overflow));
        for d in [
            0,
            1,
            999,
            1_000,
            1_500_000_001,
            90_000_000_000,
            3_600_000_000_000,
            3_723_004_005_006,
        ] {
            let d = Duration::from_nanos(d);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{}", format_duration(d));
        }
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
    }
}
