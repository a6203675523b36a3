//! keymint's own token-signing keys. The algorithm is RS256 (RSASSA-PKCS1-v1_5 with SHA-256, RSA-2048): it is
//! the one JWS algorithm every JWT and OAuth client library verifies (RFC 7518 makes it the RECOMMENDED one;
//! RFC 9068 and OpenID Connect require support for it), so a resource server never has to be told anything but
//! the JWKS URL. Signing costs about 0.3 ms of CPU (RSA-2048 with aws-lc-rs on one x86-64 core of the benchmark
//! machine), most of a token's cost. The private half leaves this module only as PKCS#8 DER, to be sealed.

use std::fmt;

use aws_lc_rs::{
    encoding::AsDer,
    rand::SystemRandom,
    rsa::{KeyPair, KeySize},
    signature::{self, KeyPair as _, ParsedPublicKey},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::{CryptoError, jws};

/// The JWS `alg` of every token keymint signs.
pub const ALGORITHM: &str = "RS256";

/// A signing key: its ID (`kid`), the key pair, and the public half ready to verify.
pub struct SigningKey {
    kid: String,
    pair: KeyPair,
    public: ParsedPublicKey,
}

impl SigningKey {
    /// A new RSA-2048 key and its PKCS#8 DER (to be sealed). Takes tens of milliseconds: call it on a blocking
    /// thread.
    pub fn generate(kid: &str) -> Result<(SigningKey, Zeroizing<Vec<u8>>), CryptoError> {
        let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|_| CryptoError("RSA key generation"))?;
        let pkcs8 = Zeroizing::new(
            pair.as_der().map_err(|_| CryptoError("encoding the signing key"))?.as_ref().to_vec(),
        );
        Ok((SigningKey::from_pair(kid, pair)?, pkcs8))
    }

    /// The key from its PKCS#8 DER, as `generate` returned it.
    pub fn from_pkcs8(kid: &str, pkcs8: &[u8]) -> Result<SigningKey, CryptoError> {
        let pair = KeyPair::from_pkcs8(pkcs8).map_err(|_| CryptoError("reading a signing key"))?;
        SigningKey::from_pair(kid, pair)
    }

    fn from_pair(kid: &str, pair: KeyPair) -> Result<SigningKey, CryptoError> {
        let public = ParsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, pair.public_key().as_ref())
            .map_err(|_| CryptoError("reading a signing key's public half"))?;
        Ok(SigningKey { kid: kid.to_owned(), pair, public })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Signs a JWT with this key: the header gets `alg` and `kid` besides the members given.
    pub fn sign(&self, mut header: Value, claims: &Value) -> Result<String, CryptoError> {
        header["alg"] = json!(ALGORITHM);
        header["kid"] = json!(self.kid);
        let input = jws::signing_input(&header, claims);
        let mut signature_bytes = vec![0; self.pair.public_modulus_len()];
        self.pair
            .sign(&signature::RSA_PKCS1_SHA256, &SystemRandom::new(), input.as_bytes(), &mut signature_bytes)
            .map_err(|_| CryptoError("signing a token"))?;
        Ok(jws::assemble(input, &signature_bytes))
    }

    /// Whether `signature` is this key's RS256 signature of `signing_input`.
    pub fn verifies(&self, signing_input: &[u8], signature: &[u8]) -> bool {
        self.public.verify_sig(signing_input, signature).is_ok()
    }

    /// The public key as a JWK for the JWKS.
    pub fn jwk(&self) -> Value {
        let public = self.pair.public_key();
        json!({
            "kty": "RSA",
            "use": "sig",
            "alg": ALGORITHM,
            "kid": self.kid,
            "n": URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
            "e": URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
        })
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_token_verifies_and_the_key_survives_its_pkcs8() {
        let (key, pkcs8) = SigningKey::generate("k1").expect("generate");
        let token = key.sign(json!({"typ": "at+jwt"}), &json!({"sub": "a"})).expect("sign");
        let parsed = jws::parse(&token).expect("parse");
        assert_eq!(parsed.header_str("kid"), Some("k1"));
        assert_eq!(parsed.header_str("alg"), Some("RS256"));
        assert_eq!(parsed.header_str("typ"), Some("at+jwt"));
        let again = SigningKey::from_pkcs8("k1", &pkcs8).expect("reload");
        assert!(again.verifies(parsed.signing_input.as_bytes(), &parsed.signature));
        assert!(!again.verifies(b"other", &parsed.signature));
        assert_eq!(key.jwk(), again.jwk());
        assert!(!format!("{key:?}").contains("PRIVATE"));
    }
}
