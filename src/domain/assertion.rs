//! The rules of a JWT assertion (RFC 7523) an application presents, for both the jwt-bearer grant and client
//! authentication (`private_key_jwt`): its header, its claims, and the key that signed it, judged at a time the
//! caller passes in. Checking the signature itself is crypto's; remembering `jti`s is the store's.

use serde_json::{Map, Value};

use super::Timestamp;

/// The largest assertion accepted, in bytes: far above any real one (about 1 KiB for RS256), far below what
/// would cost work to parse.
pub const MAX_ASSERTION_BYTES: usize = 8 * 1024;
/// The longest an assertion may live, from `iat` to `exp` (authlib's default lifetime is exactly this).
pub const MAX_LIFETIME_SECS: i64 = 3600;
/// How far the client's clock may run ahead of ours.
pub const CLOCK_SKEW_SECS: i64 = 60;
/// The longest `jti` remembered.
pub const MAX_JTI_CHARS: usize = 200;

/// What an assertion that passed every rule says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// `iss` == `sub`: the client ID of the application.
    pub client_id: String,
    pub jti: String,
    /// `exp`, in seconds since the epoch: until then its `jti` must not be used again.
    pub expires_at: i64,
}

/// Why an assertion was refused. The messages say what was wrong and never repeat the assertion.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssertionError {
    #[error("the assertion is larger than {MAX_ASSERTION_BYTES} bytes")]
    TooLarge,
    #[error("the assertion is not a signed JWT: {0}")]
    Malformed(String),
    #[error("the assertion's header has no `alg`")]
    NoAlgorithm,
    #[error("unsecured assertions (`alg: none`) are not accepted: sign it with the application's key")]
    Unsigned,
    #[error(
        "assertions signed with a shared secret (HMAC) are not accepted: sign it with the application's key"
    )]
    Hmac,
    #[error("the assertion's header has no `kid`: name the key ID of the application key that signed it")]
    NoKeyId,
    #[error("the assertion has no `{0}` claim")]
    Missing(&'static str),
    #[error("the assertion's `{0}` claim has the wrong type")]
    WrongType(&'static str),
    #[error("the assertion's `iss` and `sub` must both be the application's client ID")]
    IssuerNotSubject,
    #[error("the assertion was issued for another client than the one named in the request")]
    OtherClient,
    #[error("no application has this client ID")]
    UnknownClient,
    #[error("the application has no key with this `kid` (removed, or never added)")]
    UnknownKey,
    #[error("the key that signed the assertion has expired")]
    KeyExpired,
    #[error("`alg` {0} does not match the key: it verifies {1}")]
    AlgorithmMismatch(String, String),
    #[error("the assertion's signature does not verify with the named key")]
    BadSignature,
    #[error("the assertion's `aud` must contain the issuer, the token endpoint or this endpoint's URL")]
    WrongAudience,
    #[error("the assertion has expired")]
    Expired,
    #[error("the assertion lives longer than {MAX_LIFETIME_SECS} seconds (`exp` - `iat`)")]
    TooLong,
    #[error("the assertion's `iat` is in the future")]
    IssuedInFuture,
    #[error("the assertion is not valid yet (`nbf`)")]
    NotYetValid,
    #[error("the assertion's `jti` must be 1 to {MAX_JTI_CHARS} characters")]
    BadJti,
    #[error("the assertion was used before: each `jti` is accepted once")]
    Replayed,
}

/// Checks the size before anything is parsed.
pub fn check_size(assertion: &str) -> Result<(), AssertionError> {
    if assertion.len() > MAX_ASSERTION_BYTES { Err(AssertionError::TooLarge) } else { Ok(()) }
}

/// The header's `alg` and `kid`, refusing unsecured and HMAC assertions: an application authenticates with its
/// private key only, and a MAC keyed with its public key would be forgeable by anyone.
pub fn check_header(header: &Map<String, Value>) -> Result<(String, String), AssertionError> {
    let alg = match header.get("alg") {
        None => return Err(AssertionError::NoAlgorithm),
        Some(Value::String(alg)) => alg,
        Some(_) => return Err(AssertionError::WrongType("alg")),
    };
    if alg.eq_ignore_ascii_case("none") {
        return Err(AssertionError::Unsigned);
    }
    if alg.to_ascii_uppercase().starts_with("HS") {
        return Err(AssertionError::Hmac);
    }
    let kid = match header.get("kid") {
        None => return Err(AssertionError::NoKeyId),
        Some(Value::String(kid)) if !kid.is_empty() => kid,
        Some(_) => return Err(AssertionError::WrongType("kid")),
    };
    Ok((alg.clone(), kid.clone()))
}

/// `iss` and `sub`, which must be equal: the client ID the assertion claims to come from. Read before the key
/// is looked up, since it names the application.
pub fn client_id(claims: &Map<String, Value>) -> Result<String, AssertionError> {
    let iss = string(claims, "iss")?;
    let sub = string(claims, "sub")?;
    if iss != sub {
        return Err(AssertionError::IssuerNotSubject);
    }
    Ok(iss.to_owned())
}

/// The key named by `kid` must be live (the caller found it) and unexpired, and `alg` one it verifies.
pub fn check_key(
    alg: &str,
    key_algorithms: &[&str],
    key_expires_at: Timestamp,
    now: Timestamp,
) -> Result<(), AssertionError> {
    if key_expires_at <= now {
        return Err(AssertionError::KeyExpired);
    }
    if !key_algorithms.contains(&alg) {
        return Err(AssertionError::AlgorithmMismatch(
            alg.chars().take(20).collect(),
            key_algorithms.join(", "),
        ));
    }
    Ok(())
}

/// The claims of an assertion whose signature verified: audience, lifetime and `jti`, at `now`. `audiences`
/// are the values `aud` may contain (the issuer, the token endpoint, the URL of the endpoint called).
pub fn check_claims(
    claims: &Map<String, Value>,
    audiences: &[&str],
    now: Timestamp,
) -> Result<Claims, AssertionError> {
    let client_id = client_id(claims)?;
    let accepted =
        |aud: &Value| aud.as_str().is_some_and(|aud| audiences.contains(&aud.trim_end_matches('/')));
    match claims.get("aud") {
        None => return Err(AssertionError::Missing("aud")),
        Some(Value::Array(values)) if values.iter().any(accepted) => {}
        Some(value @ Value::String(_)) if accepted(value) => {}
        Some(Value::Array(_) | Value::String(_)) => return Err(AssertionError::WrongAudience),
        Some(_) => return Err(AssertionError::WrongType("aud")),
    }
    let now_secs = now.micros().div_euclid(1_000_000);
    let exp = seconds(claims, "exp")?.ok_or(AssertionError::Missing("exp"))?;
    let iat = seconds(claims, "iat")?.ok_or(AssertionError::Missing("iat"))?;
    if exp <= now_secs {
        return Err(AssertionError::Expired);
    }
    if iat > now_secs + CLOCK_SKEW_SECS {
        return Err(AssertionError::IssuedInFuture);
    }
    // Saturating: both come from the client, and `i64::MAX - i64::MIN` would wrap (release builds) to -1, an
    // assertion living forever that passes as one living less than an hour.
    if exp.saturating_sub(iat) > MAX_LIFETIME_SECS {
        return Err(AssertionError::TooLong);
    }
    if let Some(nbf) = seconds(claims, "nbf")?
        && nbf > now_secs + CLOCK_SKEW_SECS
    {
        return Err(AssertionError::NotYetValid);
    }
    let jti = string(claims, "jti")?;
    if jti.is_empty() || jti.chars().count() > MAX_JTI_CHARS || jti.chars().any(char::is_control) {
        return Err(AssertionError::BadJti);
    }
    Ok(Claims { client_id, jti: jti.to_owned(), expires_at: exp })
}

fn string<'a>(claims: &'a Map<String, Value>, name: &'static str) -> Result<&'a str, AssertionError> {
    match claims.get(name) {
        None => Err(AssertionError::Missing(name)),
        Some(Value::String(value)) => Ok(value),
        Some(_) => Err(AssertionError::WrongType(name)),
    }
}

/// A NumericDate claim (seconds since the epoch; fractions allowed by RFC 7519 and cut off).
fn seconds(claims: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, AssertionError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .map(Some)
            .ok_or(AssertionError::WrongType(name)),
        Some(_) => Err(AssertionError::WrongType(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW_SECS: i64 = 1_764_000_000;
    const NOW: Timestamp = Timestamp(NOW_SECS * 1_000_000);
    const AUD: &[&str] = &["https://keymint.example", "https://keymint.example/oauth/v2/token"];

    fn claims(changes: Value) -> Map<String, Value> {
        let mut base = json!({
            "iss": "1@billing", "sub": "1@billing", "aud": "https://keymint.example",
            "iat": NOW_SECS, "exp": NOW_SECS + 300, "jti": "j1",
        });
        for (k, v) in changes.as_object().cloned().unwrap_or_default() {
            if v.is_null() {
                base.as_object_mut().map(|m| m.remove(&k));
            } else {
                base[k] = v;
            }
        }
        base.as_object().cloned().unwrap_or_default()
    }

    fn check(changes: Value) -> Result<Claims, AssertionError> {
        check_claims(&claims(changes), AUD, NOW)
    }

    #[test]
    fn a_good_assertion_passes() {
        assert_eq!(
            check(json!({})),
            Ok(Claims { client_id: "1@billing".into(), jti: "j1".into(), expires_at: NOW_SECS + 300 })
        );
        assert!(check(json!({"aud": ["x", "https://keymint.example/oauth/v2/token"]})).is_ok());
        assert!(
            check(json!({"aud": "https://keymint.example/"})).is_ok(),
            "a trailing slash is the same URL"
        );
        assert!(check(json!({"exp": NOW_SECS + 3600})).is_ok(), "exactly an hour, as authlib makes them");
        assert!(check(json!({"iat": NOW_SECS + 60, "exp": NOW_SECS + 120})).is_ok(), "within the skew");
        assert!(check(json!({"nbf": NOW_SECS + 30})).is_ok());
        assert!(check(json!({"exp": NOW_SECS as f64 + 10.5})).is_ok(), "NumericDate may have a fraction");
    }

    #[test]
    fn each_claim_rule_refuses() {
        use AssertionError::*;
        let cases = [
            (json!({"sub": "2@billing"}), IssuerNotSubject),
            (json!({"aud": "https://evil.example"}), WrongAudience),
            (json!({"aud": ["https://evil.example"]}), WrongAudience),
            (json!({"aud": 5}), WrongType("aud")),
            (json!({"aud": null}), Missing("aud")),
            (json!({"exp": null}), Missing("exp")),
            (json!({"exp": "soon"}), WrongType("exp")),
            (json!({"exp": NOW_SECS}), Expired),
            (json!({"exp": NOW_SECS + 3601}), TooLong),
            (json!({"iat": null}), Missing("iat")),
            (json!({"iat": NOW_SECS + 61, "exp": NOW_SECS + 200}), IssuedInFuture),
            (json!({"nbf": NOW_SECS + 61}), NotYetValid),
            (json!({"jti": null}), Missing("jti")),
            (json!({"jti": ""}), BadJti),
            (json!({"jti": "x".repeat(201)}), BadJti),
            (json!({"iss": null}), Missing("iss")),
        ];
        for (changes, expected) in cases {
            assert_eq!(check(changes.clone()), Err(expected), "{changes}");
        }
    }

    /// Found by the `jwt_assertion` fuzz target: `exp - iat` overflowed (a panic in debug builds; in release it
    /// wrapped to -1, and such an assertion passed the one-hour lifetime rule).
    #[test]
    fn lifetimes_too_large_for_i64_are_too_long() {
        let cases = [
            json!({"iat": -9_000_000_000_000_000_000_i64, "exp": 9_000_000_000_000_000_000_i64}),
            json!({"iat": i64::MIN, "exp": i64::MAX}),
            json!({"iat": -1e300, "exp": 1e300}),
        ];
        for changes in cases {
            assert_eq!(check(changes.clone()), Err(AssertionError::TooLong), "{changes}");
        }
    }

    #[test]
    fn headers_without_a_private_key_signature_are_refused() {
        let header = |v: Value| v.as_object().cloned().unwrap_or_default();
        assert_eq!(check_header(&header(json!({"alg": "none", "kid": "k"}))), Err(AssertionError::Unsigned));
        assert_eq!(check_header(&header(json!({"alg": "None", "kid": "k"}))), Err(AssertionError::Unsigned));
        assert_eq!(check_header(&header(json!({"alg": "HS256", "kid": "k"}))), Err(AssertionError::Hmac));
        assert_eq!(check_header(&header(json!({"kid": "k"}))), Err(AssertionError::NoAlgorithm));
        assert_eq!(check_header(&header(json!({"alg": "RS256"}))), Err(AssertionError::NoKeyId));
        assert_eq!(
            check_header(&header(json!({"alg": "RS256", "kid": "k"}))),
            Ok(("RS256".into(), "k".into()))
        );
    }

    #[test]
    fn the_key_must_be_unexpired_and_match_alg() {
        assert_eq!(check_key("RS256", &["RS256", "PS256"], Timestamp::NEVER, NOW), Ok(()));
        assert_eq!(check_key("RS256", &["RS256"], NOW, NOW), Err(AssertionError::KeyExpired));
        assert!(matches!(check_key("ES256", &["RS256", "PS256"], Timestamp::NEVER, NOW),
            Err(AssertionError::AlgorithmMismatch(alg, _)) if alg == "ES256"));
    }

    #[test]
    fn size_is_bounded() {
        assert_eq!(check_size(&"a".repeat(MAX_ASSERTION_BYTES)), Ok(()));
        assert_eq!(check_size(&"a".repeat(MAX_ASSERTION_BYTES + 1)), Err(AssertionError::TooLarge));
    }
}
