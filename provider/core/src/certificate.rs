//! Local checks of the validity window of the TLS client certificate
//! presented to OpenBao's cert auth, run before every login (docs/auth.md):
//! an expired, not-yet-valid or nearly expired certificate becomes a
//! one-line reason instead of a TLS alert from OpenBao.
//!
//! `auth.cert.clockSkewLeeway` tolerates a clock that differs from the
//! issuer's: a certificate whose `notBefore` is at most the leeway ahead of
//! this node's clock, or whose `notAfter` passed at most the leeway ago, is
//! inside its window. The remaining lifetime against
//! `auth.cert.minRemainingTtl` is measured on this node's clock without
//! leeway, as for JWTs ([`crate::jwt`]). OpenBao judges the window again
//! with its own clock.

/// What the configuration expects of the certificate's validity window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expectations {
    pub min_remaining_ttl_secs: i64,
    pub clock_skew_leeway_secs: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertProblem {
    #[error("is not valid before {not_before} (now {now}); check clock synchronization")]
    NotYetValid { not_before: i64, now: i64 },
    #[error("expired at {not_after} (now {now}); renew the client certificate")]
    Expired { not_after: i64, now: i64 },
    #[error("expires in {remaining}s, within auth.cert.minRemainingTtl ({min}s); renew the client certificate")]
    ExpiresSoon { remaining: i64, min: i64 },
}

/// Checks the window `[not_before, not_after]` (Unix seconds) at `now_unix`.
pub fn check_validity(not_before: i64, not_after: i64, exp: &Expectations, now_unix: i64) -> Result<(), CertProblem> {
    let leeway = exp.clock_skew_leeway_secs;
    if now_unix.saturating_add(leeway) < not_before {
        return Err(CertProblem::NotYetValid {
            not_before,
            now: now_unix,
        });
    }
    if now_unix >= not_after.saturating_add(leeway) {
        return Err(CertProblem::Expired {
            not_after,
            now: now_unix,
        });
    }
    let remaining = not_after.saturating_sub(now_unix);
    if remaining <= exp.min_remaining_ttl_secs {
        return Err(CertProblem::ExpiresSoon {
            remaining,
            min: exp.min_remaining_ttl_secs,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;
    const DAY: i64 = 86_400;

    fn expect(min: i64, leeway: i64) -> Expectations {
        Expectations {
            min_remaining_ttl_secs: min,
            clock_skew_leeway_secs: leeway,
        }
    }

    #[test]
    fn inside_the_window() {
        assert_eq!(check_validity(NOW - DAY, NOW + 30 * DAY, &expect(DAY, 30), NOW), Ok(()));
    }

    #[test]
    fn not_before_ahead_of_the_clock_within_the_leeway() {
        let nb = NOW + 20;
        assert_eq!(check_validity(nb, NOW + 30 * DAY, &expect(DAY, 30), NOW), Ok(()));
        assert_eq!(check_validity(nb, NOW + 30 * DAY, &expect(DAY, 20), NOW), Ok(()));
        assert_eq!(
            check_validity(nb, NOW + 30 * DAY, &expect(DAY, 19), NOW),
            Err(CertProblem::NotYetValid {
                not_before: nb,
                now: NOW
            })
        );
        let e = check_validity(nb, NOW + 30 * DAY, &expect(DAY, 0), NOW).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("is not valid before {nb} (now {NOW}); check clock synchronization")
        );
    }

    #[test]
    fn expiry_with_and_without_leeway() {
        // Expired 10s ago: outside a 0s or 10s leeway; inside 30s, where the
        // remaining-lifetime check refuses it instead.
        let na = NOW - 10;
        assert_eq!(
            check_validity(NOW - DAY, na, &expect(60, 0), NOW),
            Err(CertProblem::Expired {
                not_after: na,
                now: NOW
            })
        );
        assert_eq!(
            check_validity(NOW - DAY, na, &expect(60, 10), NOW),
            Err(CertProblem::Expired {
                not_after: na,
                now: NOW
            })
        );
        assert_eq!(
            check_validity(NOW - DAY, na, &expect(60, 30), NOW),
            Err(CertProblem::ExpiresSoon {
                remaining: -10,
                min: 60
            })
        );
    }

    #[test]
    fn remaining_lifetime_is_measured_without_leeway() {
        assert_eq!(
            check_validity(NOW - DAY, NOW + DAY, &expect(DAY, 3600), NOW),
            Err(CertProblem::ExpiresSoon {
                remaining: DAY,
                min: DAY
            })
        );
        assert_eq!(check_validity(NOW - DAY, NOW + DAY + 1, &expect(DAY, 0), NOW), Ok(()));
        assert_eq!(
            CertProblem::ExpiresSoon { remaining: 5, min: 6 }.to_string(),
            "expires in 5s, within auth.cert.minRemainingTtl (6s); renew the client certificate"
        );
    }

    #[test]
    fn extreme_values_never_overflow() {
        assert_eq!(
            check_validity(i64::MIN, i64::MAX, &expect(i64::MAX, i64::MAX), i64::MAX),
            Err(CertProblem::Expired {
                not_after: i64::MAX,
                now: i64::MAX
            })
        );
        assert_eq!(
            check_validity(i64::MAX, i64::MIN, &expect(0, i64::MAX), i64::MIN),
            Err(CertProblem::NotYetValid {
                not_before: i64::MAX,
                now: i64::MIN
            })
        );
    }
}
