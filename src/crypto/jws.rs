//! JWS compact serialization (RFC 7515) as JWTs use it: splitting a token into its header, claims, signing input
//! and signature, and writing a signed one. No rule about what the claims mean lives here (see domain/assertion).

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::{Map, Value};

/// A token split into its parts, its signature not yet checked.
#[derive(Debug)]
pub struct Compact<'a> {
    pub header: Map<String, Value>,
    pub claims: Map<String, Value>,
    /// `base64url(header) "." base64url(claims)`: what the signature covers.
    pub signing_input: &'a str,
    pub signature: Vec<u8>,
}

impl Compact<'_> {
    /// A string member of the header.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header.get(name).and_then(Value::as_str)
    }
}

/// Why a token is not a well-formed JWS. Never carries any part of the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    #[error("it is not a JWT: a JWT has three base64url parts separated by dots")]
    NotThreeParts,
    #[error("its header is not base64url-encoded JSON object")]
    Header,
    #[error("its claims are not a base64url-encoded JSON object")]
    Claims,
    #[error("its signature is not base64url")]
    Signature,
}

/// Splits a compact JWS. JWE (five parts) and unsecured tokens with an empty signature part still split; the
/// caller refuses them by their `alg`.
pub fn parse(token: &str) -> Result<Compact<'_>, JwsError> {
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwsError::NotThreeParts);
    };
    let header = object(header).ok_or(JwsError::Header)?;
    let claims_object = object(claims).ok_or(JwsError::Claims)?;
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| JwsError::Signature)?;
    let signing_input = token.rsplit_once('.').map_or("", |(input, _)| input);
    Ok(Compact { header, claims: claims_object, signing_input, signature })
}

fn object(part: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// `base64url(header) "." base64url(claims)`: what is signed.
pub fn signing_input(header: &Value, claims: &Value) -> String {
    let mut input = URL_SAFE_NO_PAD.encode(header.to_string());
    input.push('.');
    URL_SAFE_NO_PAD.encode_string(claims.to_string(), &mut input);
    input
}

/// The compact token: the signing input, a dot, the base64url signature.
pub fn assemble(mut signing_input: String, signature: &[u8]) -> String {
    signing_input.push('.');
    URL_SAFE_NO_PAD.encode_string(signature, &mut signing_input);
    signing_input
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_token_splits_into_its_parts() {
        let input = signing_input(&json!({"alg":"RS256"}), &json!({"sub":"a"}));
        let token = assemble(input.clone(), b"sig");
        let parsed = parse(&token).expect("parse");
        assert_eq!(parsed.header_str("alg"), Some("RS256"));
        assert_eq!(parsed.claims["sub"], "a");
        assert_eq!(parsed.signing_input, input);
        assert_eq!(parsed.signature, b"sig");
    }

    #[test]
    fn malformed_tokens_are_refused_by_part() {
        assert_eq!(parse("a.b").err(), Some(JwsError::NotThreeParts));
        assert_eq!(parse("a.b.c.d").err(), Some(JwsError::NotThreeParts));
        assert_eq!(parse("!!.e30.").err(), Some(JwsError::Header));
        assert_eq!(parse("e30.WzFd.").err(), Some(JwsError::Claims), "claims must be an object");
        assert_eq!(parse("e30.e30.*").err(), Some(JwsError::Signature));
        assert!(parse("e30.e30.").is_ok(), "an empty signature splits; `alg` decides");
    }
}
