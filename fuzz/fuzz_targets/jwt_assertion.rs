//! The parsing of a JWT assertion before its signature is checked (crypto/jws.rs, domain/assertion.rs), which
//! every `client_assertion` and jwt-bearer `assertion` of the OAuth token endpoint goes through: a token that
//! splits re-assembles to itself, and what the claim rules accept keeps those rules (lifetime, expiry, `jti`).
#![no_main]

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use keymint::crypto::jws;
use keymint::domain::{Timestamp, assertion};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

const NOW_SECS: i64 = 1_764_000_000;
const AUDIENCES: &[&str] = &["https://keymint.example", "https://keymint.example/oauth/v2/token"];

fuzz_target!(|data: &[u8]| {
    // Two inputs in one: the bytes as a compact token, and, when they are a JSON object, as the claims of one.
    if let Ok(token) = std::str::from_utf8(data) {
        check_token(token);
    }
    if let Ok(Value::Object(claims)) = serde_json::from_slice::<Value>(data) {
        check_claims(&claims);
        let header = serde_json::json!({"alg": "RS256", "kid": "1"});
        let token = jws::assemble(jws::signing_input(&header, &Value::Object(claims.clone())), b"sig");
        let parsed =
            jws::parse(&token).unwrap_or_else(|e| panic!("a token keymint wrote does not split: {e}"));
        assert!(same(&Value::Object(parsed.claims), &Value::Object(claims)), "the claims changed");
    }
});

fn check_token(token: &str) {
    if assertion::check_size(token).is_err() {
        assert!(token.len() > assertion::MAX_ASSERTION_BYTES);
        return;
    }
    let parsed = match jws::parse(token) {
        Ok(parsed) => parsed,
        Err(error) => {
            // The error names the part, never the token.
            assert!(error.to_string().len() < 100);
            return;
        }
    };
    // base64url without padding has one encoding per byte string, so the parts re-assemble to the token.
    assert_eq!(jws::assemble(parsed.signing_input.to_owned(), &parsed.signature), token);
    let (header, claims) = token.split_once('.').unwrap_or_default();
    assert!(
        parsed.signing_input.starts_with(header)
            && parsed.signing_input.len()
                == header.len() + 1 + claims.split('.').next().unwrap_or_default().len()
    );
    assert_eq!(
        URL_SAFE_NO_PAD.decode(header).ok().and_then(|h| serde_json::from_slice::<Value>(&h).ok()),
        Some(Value::Object(parsed.header.clone()))
    );

    if let Ok((alg, kid)) = assertion::check_header(&parsed.header) {
        assert!(!kid.is_empty());
        assert!(!alg.eq_ignore_ascii_case("none") && !alg.to_ascii_uppercase().starts_with("HS"));
        assert_eq!(parsed.header_str("alg"), Some(alg.as_str()));
        let _ = assertion::check_key(
            &alg,
            &["RS256", "PS256"],
            Timestamp::NEVER,
            Timestamp(NOW_SECS * 1_000_000),
        );
    }
    check_claims(&parsed.claims);
}

/// What `check_claims` accepts at `NOW_SECS` obeys the rules it is there for; a refusal is an error.
fn check_claims(claims: &Map<String, Value>) {
    if let Ok(client_id) = assertion::client_id(claims) {
        assert_eq!(claims.get("iss").and_then(Value::as_str), Some(client_id.as_str()));
        assert_eq!(claims.get("sub").and_then(Value::as_str), Some(client_id.as_str()));
    }
    match assertion::check_claims(claims, AUDIENCES, Timestamp(NOW_SECS * 1_000_000)) {
        Ok(accepted) => {
            let iat = seconds(claims, "iat");
            assert!(accepted.expires_at > NOW_SECS, "accepted an expired assertion");
            assert!(
                iat <= NOW_SECS + assertion::CLOCK_SKEW_SECS,
                "accepted an assertion issued in the future"
            );
            let lifetime = i128::from(accepted.expires_at) - i128::from(iat);
            assert!(
                lifetime <= i128::from(assertion::MAX_LIFETIME_SECS),
                "accepted an assertion living {lifetime} s (exp {}, iat {iat})",
                accepted.expires_at
            );
            assert!(!accepted.jti.is_empty() && accepted.jti.chars().count() <= assertion::MAX_JTI_CHARS);
            assert_eq!(claims.get("iss").and_then(Value::as_str), Some(accepted.client_id.as_str()));
        }
        Err(error) => assert!(error.to_string().len() < 200, "a long error message: {error}"),
    }
}

/// A NumericDate as the rules read it: an integer, or a number with its fraction cut off.
fn seconds(claims: &Map<String, Value>, name: &str) -> i64 {
    let number = claims.get(name).and_then(Value::as_number);
    number.and_then(|n| n.as_i64().or_else(|| n.as_f64().map(|f| f as i64))).unwrap_or(i64::MIN)
}

/// Equal JSON, but numbers with a fraction only to 12 digits: serde_json's fast float parsing may land one unit
/// in the last place away from where the number it printed came from.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap_or(f64::NAN), y.as_f64().unwrap_or(f64::NAN));
            (x - y).abs() <= 1e-12 * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}
