//! Time and audience rules shared by request signatures and state tokens.
//!
//! Clock skew only ever widens the window towards the future (a platform
//! clock slightly ahead of ours): `nbf`/`iat` a little in the future and
//! `exp` a little past its ceiling are tolerated, but an `exp` that has
//! passed is always refused, so a stale token is never replayed.

use serde::Deserialize;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::model::parse_canonical_uuid;

/// The time rules for one kind of token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimePolicy {
    /// How far the sender's clock may run ahead, in seconds.
    pub skew_seconds: i64,
    /// The largest allowed distance from now to `exp`, in seconds.
    pub max_lifetime_seconds: i64,
}

/// A JWT `aud`: one string or an array of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// A single audience.
    One(String),
    /// Several audiences.
    Many(Vec<String>),
}

impl Audience {
    /// Whether the audience names `tenant`.
    pub fn contains_tenant(&self, tenant: Uuid) -> bool {
        let is_tenant = |a: &String| parse_canonical_uuid(a) == Some(tenant);
        match self {
            Self::One(a) => is_tenant(a),
            Self::Many(all) => all.iter().any(is_tenant),
        }
    }
}

/// A time-rule violation: (claim, problem).
pub type TimeViolation = (&'static str, &'static str);

/// Checks `exp` (required), `nbf` and `iat` (optional) against `now`.
pub fn check_times(
    exp: f64,
    nbf: Option<f64>,
    iat: Option<f64>,
    now: OffsetDateTime,
    policy: TimePolicy,
) -> Result<(), TimeViolation> {
    let now = now.unix_timestamp() as f64;
    let skew = policy.skew_seconds as f64;
    if !exp.is_finite()
        || nbf.is_some_and(|v| !v.is_finite())
        || iat.is_some_and(|v| !v.is_finite())
    {
        return Err(("exp", "is not a number of seconds"));
    }
    if exp <= now {
        return Err(("exp", "has passed"));
    }
    if exp > now + policy.max_lifetime_seconds as f64 + skew {
        return Err(("exp", "is too far in the future"));
    }
    if nbf.is_some_and(|nbf| nbf > now + skew) {
        return Err(("nbf", "is in the future"));
    }
    if iat.is_some_and(|iat| iat > now + skew) {
        return Err(("iat", "is in the future"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: TimePolicy = TimePolicy {
        skew_seconds: 30,
        max_lifetime_seconds: 300,
    };

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(secs).unwrap()
    }

    #[test]
    fn exp_window() {
        let now = at(1000);
        assert!(check_times(1001.0, None, None, now, POLICY).is_ok());
        assert_eq!(
            check_times(1000.0, None, None, now, POLICY),
            Err(("exp", "has passed"))
        );
        assert_eq!(
            check_times(999.0, None, None, now, POLICY),
            Err(("exp", "has passed"))
        );
        assert!(check_times(1330.0, None, None, now, POLICY).is_ok());
        assert!(check_times(1331.0, None, None, now, POLICY).is_err());
    }

    #[test]
    fn nbf_and_iat_tolerate_skew_only() {
        let now = at(1000);
        assert!(check_times(1100.0, Some(1030.0), Some(1030.0), now, POLICY).is_ok());
        assert!(check_times(1100.0, Some(1031.0), None, now, POLICY).is_err());
        assert!(check_times(1100.0, None, Some(1031.0), now, POLICY).is_err());
        assert!(check_times(f64::NAN, None, None, now, POLICY).is_err());
    }

    #[test]
    fn audience_forms() {
        let t = Uuid::parse_str("918f5a24-290e-4659-9cd6-c8d95aee92c6").unwrap();
        assert!(Audience::One(t.to_string()).contains_tenant(t));
        assert!(Audience::Many(vec!["x".into(), t.to_string()]).contains_tenant(t));
        assert!(!Audience::One("manywho".into()).contains_tenant(t));
        assert!(!Audience::Many(vec![]).contains_tenant(t));
    }
}
