//! Public keys of applications, parsed from their SubjectPublicKeyInfo PEM: which JWS algorithms each verifies,
//! signature verification, and the key as a JWK. (This interim version knows RSA only; EC P-256 and Ed25519
//! come with the application key types.)

use aws_lc_rs::signature::{self, ParsedPublicKey};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::json;

use super::CryptoError;

/// A parsed public key; cheap to share, verifies many signatures without parsing again.
#[derive(Debug)]
pub struct PublicKey {
    /// One parsed key per algorithm the key verifies (RSA: RS256 and PS256).
    rs256: ParsedPublicKey,
    ps256: ParsedPublicKey,
    /// Modulus and exponent, big-endian without leading zeros, for the JWK.
    n: Vec<u8>,
    e: Vec<u8>,
}

impl PublicKey {
    pub fn from_spki_pem(pem: &str) -> Result<PublicKey, CryptoError> {
        let (label, der) = pkcs8::der::pem::decode_vec(pem.as_bytes())
            .map_err(|_| CryptoError("reading the public key PEM"))?;
        if label != "PUBLIC KEY" {
            return Err(CryptoError("the public key PEM is not a SubjectPublicKeyInfo"));
        }
        let rsa =
            aws_lc_rs::rsa::PublicKey::from_der(&der).map_err(|_| CryptoError("not an RSA public key"))?;
        let parse = |params| {
            ParsedPublicKey::new(params, &der).map_err(|_| CryptoError("parsing the RSA public key"))
        };
        Ok(PublicKey {
            rs256: parse(&signature::RSA_PKCS1_2048_8192_SHA256)?,
            ps256: parse(&signature::RSA_PSS_2048_8192_SHA256)?,
            n: rsa.modulus().big_endian_without_leading_zero().to_vec(),
            e: rsa.exponent().big_endian_without_leading_zero().to_vec(),
        })
    }

    /// JWS `alg` values this key verifies.
    pub fn jws_algorithms(&self) -> &'static [&'static str] {
        &["RS256", "PS256"]
    }

    /// Verifies a JWS signature (`signature` as decoded from base64url).
    pub fn verify(&self, jws_alg: &str, signing_input: &[u8], signature: &[u8]) -> Result<(), CryptoError> {
        let key = match jws_alg {
            "RS256" => &self.rs256,
            "PS256" => &self.ps256,
            _ => return Err(CryptoError("the algorithm does not match the key")),
        };
        key.verify_sig(signing_input, signature).map_err(|_| CryptoError("the signature does not verify"))
    }

    pub fn to_jwk(&self, kid: &str) -> serde_json::Value {
        json!({
            "kty": "RSA",
            "kid": kid,
            "use": "sig",
            "n": URL_SAFE_NO_PAD.encode(&self.n),
            "e": URL_SAFE_NO_PAD.encode(&self.e),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keygen::{RsaBits, RsaKeyPair};

    #[test]
    fn an_rsa_key_verifies_rs256_and_refuses_other_algorithms() {
        let pair = RsaKeyPair::generate(RsaBits::Rsa2048).expect("generate");
        let key = PublicKey::from_spki_pem(pair.public_spki_pem()).expect("parse");
        assert_eq!(key.jws_algorithms(), ["RS256", "PS256"]);
        let (_, pkcs1) = pkcs8::der::pem::decode_vec(pair.private_pkcs1_pem().as_bytes()).expect("pem");
        let signer = aws_lc_rs::rsa::KeyPair::from_der(&pkcs1).expect("private key");
        let mut sig = vec![0; signer.public_modulus_len()];
        let rng = aws_lc_rs::rand::SystemRandom::new();
        signer.sign(&signature::RSA_PKCS1_SHA256, &rng, b"input", &mut sig).expect("sign");
        assert!(key.verify("RS256", b"input", &sig).is_ok());
        assert!(key.verify("RS256", b"other", &sig).is_err());
        assert!(key.verify("PS256", b"input", &sig).is_err());
        assert!(key.verify("HS256", b"input", &sig).is_err());
        assert_eq!(key.to_jwk("k")["e"], "AQAB");
        assert!(PublicKey::from_spki_pem(pair.private_pkcs1_pem()).is_err());
    }
}
