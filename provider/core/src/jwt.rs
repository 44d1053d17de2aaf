//! Local checks of the JWT presented to OpenBao's JWT auth, run before every
//! login (docs/auth.md). The JWT is re-read from its file at
//! each login; these checks turn an expired or mis-issued JWT into a
//! one-line reason instead of an opaque OpenBao 400. Claims only: the
//! signature is OpenBao's to verify. `iss`, `aud` and `sub` are not secret
//! and may appear in messages; the token itself never does.

use serde::Deserialize;

/// `aud` is a string or an array of strings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub fn values(&self) -> Vec<&str> {
        match self {
            Self::One(a) => vec![a.as_str()],
            Self::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// The registered claims the checks read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Claims {
    pub iss: Option<String>,
    pub sub: Option<String>,
    pub aud: Option<Audience>,
    pub exp: Option<i64>,
    pub nbf: Option<i64>,
    pub iat: Option<i64>,
}

/// What the configuration expects of the JWT.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expectations {
    pub min_remaining_ttl_secs: i64,
    pub clock_skew_leeway_secs: i64,
    pub issuer: Option<String>,
    pub audience: Vec<String>,
    pub subject: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtProblem {
    #[error("JWT has no exp claim")]
    NoExpiry,
    #[error("JWT expired at {exp} (now {now}); the external issuer must write a fresh JWT")]
    Expired { exp: i64, now: i64 },
    #[error(
        "JWT expires in {remaining}s, within auth.jwt.minRemainingTtl ({min}s); the external issuer must refresh it"
    )]
    ExpiresSoon { remaining: i64, min: i64 },
    #[error("JWT is not valid before {nbf} (now {now}); check clock synchronization")]
    NotYetValid { nbf: i64, now: i64 },
    #[error("JWT was issued in the future (iat {iat}, now {now}); check clock synchronization")]
    IssuedInFuture { iat: i64, now: i64 },
    #[error("JWT iss is {} but auth.jwt.expectedIssuer is {want:?}", shown(.got))]
    Issuer { got: Option<String>, want: String },
    #[error("JWT aud {got:?} contains none of auth.jwt.expectedAudience {want:?}")]
    Audience { got: Vec<String>, want: Vec<String> },
    #[error("JWT sub is {} but auth.jwt.expectedSubject is {want:?}", shown(.got))]
    Subject { got: Option<String>, want: String },
}

/// A claim for messages: quoted, or `absent`.
fn shown(claim: &Option<String>) -> String {
    claim.as_ref().map_or_else(|| "absent".to_owned(), |c| format!("{c:?}"))
}

/// Checks `claims` at `now_unix`; the first problem found is returned.
pub fn check(claims: &Claims, exp: &Expectations, now_unix: i64) -> Result<(), JwtProblem> {
    let leeway = exp.clock_skew_leeway_secs;
    let expiry = claims.exp.ok_or(JwtProblem::NoExpiry)?;
    if expiry + leeway <= now_unix {
        return Err(JwtProblem::Expired {
            exp: expiry,
            now: now_unix,
        });
    }
    let remaining = expiry - now_unix;
    if remaining <= exp.min_remaining_ttl_secs {
        return Err(JwtProblem::ExpiresSoon {
            remaining,
            min: exp.min_remaining_ttl_secs,
        });
    }
    if let Some(nbf) = claims.nbf
        && nbf > now_unix + leeway
    {
        return Err(JwtProblem::NotYetValid { nbf, now: now_unix });
    }
    if let Some(iat) = claims.iat
        && iat > now_unix + leeway
    {
        return Err(JwtProblem::IssuedInFuture { iat, now: now_unix });
    }
    if let Some(want) = &exp.issuer
        && claims.iss.as_deref() != Some(want.as_str())
    {
        return Err(JwtProblem::Issuer {
            got: claims.iss.clone(),
            want: want.clone(),
        });
    }
    if !exp.audience.is_empty() {
        let got: Vec<&str> = claims.aud.as_ref().map(Audience::values).unwrap_or_default();
        if !exp.audience.iter().any(|a| got.contains(&a.as_str())) {
            return Err(JwtProblem::Audience {
                got: got.into_iter().map(str::to_owned).collect(),
                want: exp.audience.clone(),
            });
        }
    }
    if let Some(want) = &exp.subject
        && claims.sub.as_deref() != Some(want.as_str())
    {
        return Err(JwtProblem::Subject {
            got: claims.sub.clone(),
            want: want.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn claims() -> Claims {
        Claims {
            iss: Some("https://issuer.example".into()),
            sub: Some("system:node:cp-1".into()),
            aud: Some(Audience::Many(vec!["openbao".into(), "other".into()])),
            exp: Some(NOW + 3600),
            nbf: Some(NOW - 10),
            iat: Some(NOW - 10),
        }
    }

    fn expect() -> Expectations {
        Expectations {
            min_remaining_ttl_secs: 120,
            clock_skew_leeway_secs: 30,
            issuer: Some("https://issuer.example".into()),
            audience: vec!["openbao".into()],
            subject: Some("system:node:cp-1".into()),
        }
    }

    #[test]
    fn a_good_jwt_passes() {
        assert_eq!(check(&claims(), &expect(), NOW), Ok(()));
        let mut c = claims();
        c.aud = Some(Audience::One("openbao".into()));
        assert_eq!(check(&c, &expect(), NOW), Ok(()));
        assert_eq!(check(&c, &Expectations::default(), NOW), Ok(()));
    }

    #[test]
    fn each_problem_is_named() {
        type Edit = fn(&mut Claims);
        let cases: Vec<(Edit, &str)> = vec![
            (|c| c.exp = None, "no exp"),
            (|c| c.exp = Some(NOW - 60), "expired"),
            (|c| c.exp = Some(NOW + 60), "within auth.jwt.minRemainingTtl"),
            (|c| c.nbf = Some(NOW + 300), "not valid before"),
            (|c| c.iat = Some(NOW + 300), "issued in the future"),
            (|c| c.iss = Some("https://evil".into()), "expectedIssuer"),
            (
                |c| c.aud = Some(Audience::One("someone-else".into())),
                "expectedAudience",
            ),
            (|c| c.aud = None, "expectedAudience"),
            (|c| c.sub = None, "expectedSubject"),
        ];
        for (edit, needle) in cases {
            let mut c = claims();
            edit(&mut c);
            let err = check(&c, &expect(), NOW).unwrap_err().to_string();
            assert!(err.contains(needle), "{err:?} should mention {needle:?}");
        }
    }

    #[test]
    fn leeway_applies_to_exp_nbf_and_iat() {
        let mut c = claims();
        c.nbf = Some(NOW + 20);
        c.iat = Some(NOW + 20);
        assert_eq!(check(&c, &expect(), NOW), Ok(()));
        // Just expired but inside the leeway: still refused, because the
        // remaining lifetime is below minRemainingTtl.
        c.exp = Some(NOW - 10);
        assert!(matches!(check(&c, &expect(), NOW), Err(JwtProblem::ExpiresSoon { .. })));
    }

    #[test]
    fn messages_show_claims_plainly() {
        let mut c = claims();
        c.iss = None;
        assert_eq!(
            check(&c, &expect(), NOW).unwrap_err().to_string(),
            "JWT iss is absent but auth.jwt.expectedIssuer is \"https://issuer.example\""
        );
        c.iss = Some("https://issuer.example".into());
        c.sub = Some("other".into());
        assert_eq!(
            check(&c, &expect(), NOW).unwrap_err().to_string(),
            "JWT sub is \"other\" but auth.jwt.expectedSubject is \"system:node:cp-1\""
        );
    }

    #[test]
    fn aud_decodes_as_string_or_array() {
        let one: Claims = serde_json::from_str(r#"{"aud":"a","exp":1}"#).unwrap();
        let many: Claims = serde_json::from_str(r#"{"aud":["a","b"],"exp":1}"#).unwrap();
        assert_eq!(one.aud.unwrap().values(), vec!["a"]);
        assert_eq!(many.aud.unwrap().values(), vec!["a", "b"]);
    }
}
