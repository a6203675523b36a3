//! Public keys of applications (RSA, EC P-256, Ed25519): read from SubjectPublicKeyInfo PEM, used to verify JWS
//! signatures, and shown as JWKs.

use std::fmt;

use aws_lc_rs::signature::{self, ParsedPublicKey, VerificationAlgorithm};
use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use pkcs8::{
    AlgorithmIdentifierRef, ObjectIdentifier, SubjectPublicKeyInfoRef,
    der::{
        Decode, Encode, Reader, SliceReader,
        asn1::{AnyRef, BitStringRef, UintRef},
        pem::{LineEnding, encode_string},
    },
};
use serde_json::{Value, json};

use super::CryptoError;

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const RSASSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// The SubjectPublicKeyInfo DER before the key of each curve: SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 },
/// BIT STRING (65 bytes) } and SEQUENCE { SEQUENCE { id-Ed25519 }, BIT STRING (32 bytes) } (RFC 5480, RFC 8410).
const P256_SPKI_PREFIX: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86,
    0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
const ED25519_SPKI_PREFIX: &[u8] = &[0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// JWK members only private keys have (RFC 7518 §6.2.2, §6.3.2, §6.4.1; RFC 8037 §2).
const JWK_PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// RSA moduli keymint accepts: below 2048 bits is too weak (RFC 7518 §3.3 asks for 2048), above 8192 is what
/// aws-lc-rs verifies at most.
pub const RSA_MIN_BITS: u32 = 2048;
pub const RSA_MAX_BITS: u32 = 8192;

const RSA_ALGORITHMS: &[&str] = &["RS256", "PS256"];
const ES256_ALGORITHMS: &[&str] = &["ES256"];
/// RFC 9864 deprecates the polymorphic `EdDSA` for the fully-specified `Ed25519`, which current JOSE libraries
/// (panva's jose 6, oauth4webapi 3) sign with; older ones still send `EdDSA`. Both name the same signature here.
const EDDSA_ALGORITHMS: &[&str] = &["EdDSA", "Ed25519"];

/// The kind of key: it decides which JWS algorithms the key verifies and the shape of its JWK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFamily {
    Rsa,
    EcP256,
    Ed25519,
}

/// The numbers a JWK shows, big-endian and without leading zeros (RFC 7518 §6.3.1, §6.2.1; RFC 8037 §2).
#[derive(Clone)]
enum Material {
    Rsa { n: Vec<u8>, e: Vec<u8> },
    EcP256 { x: Vec<u8>, y: Vec<u8> },
    Ed25519 { x: Vec<u8> },
}

/// A public key that verifies JWS signatures. Parsed and checked once (curve point on the curve, RSA size), so a
/// verification does no parsing.
#[derive(Clone)]
pub struct PublicKey {
    spki_der: Vec<u8>,
    material: Material,
    /// One parsed key per JWS `alg` the key verifies, in the order of [`PublicKey::jws_algorithms`].
    verifiers: Vec<(&'static str, ParsedPublicKey)>,
}

impl PublicKey {
    /// Reads a `-----BEGIN PUBLIC KEY-----` PEM (X.509 SubjectPublicKeyInfo, what `openssl pkey -pubout` writes).
    /// Whitespace and line width inside the PEM are not checked, since keys are often pasted. Errors say what is
    /// wrong with the key and never repeat the input.
    pub fn from_spki_pem(pem: &str) -> Result<PublicKey, CryptoError> {
        let (label, der) = decode_pem(pem)?;
        match label {
            "PUBLIC KEY" => PublicKey::from_spki_der(&der),
            "RSA PUBLIC KEY" => Err(CryptoError(
                "PKCS#1 \"RSA PUBLIC KEY\" PEM is not accepted: send the SubjectPublicKeyInfo form \
                 (-----BEGIN PUBLIC KEY-----, e.g. from `openssl rsa -RSAPublicKey_in -pubout`)",
            )),
            label if label.contains("PRIVATE KEY") => Err(CryptoError(
                "this is a private key: send only its public key (-----BEGIN PUBLIC KEY-----, e.g. from \
                 `openssl pkey -pubout`); a private key must never leave its owner",
            )),
            "CERTIFICATE" => Err(CryptoError(
                "this is a certificate: send its public key (-----BEGIN PUBLIC KEY-----, e.g. from \
                 `openssl x509 -pubkey -noout`)",
            )),
            _ => Err(CryptoError("expected a PEM public key (-----BEGIN PUBLIC KEY-----)")),
        }
    }

    /// Reads a key a caller supplied: a SubjectPublicKeyInfo PEM or one JWK as JSON, told apart by their first
    /// character.
    pub fn from_supplied(text: &str) -> Result<PublicKey, CryptoError> {
        let text = text.trim();
        if text.starts_with('{') {
            PublicKey::from_jwk(text)
        } else if text.starts_with("-----BEGIN ") {
            PublicKey::from_spki_pem(text)
        } else {
            Err(CryptoError(
                "expected a PEM public key (-----BEGIN PUBLIC KEY-----) or a JWK (a JSON object)",
            ))
        }
    }

    /// Reads one public JWK (RFC 7517; RSA and EC members of RFC 7518 §6, OKP of RFC 8037 §2). A JWK with any
    /// private member is refused, so that whoever sent it learns not to send private keys. `kid` is ignored; `use`
    /// must be "sig" and `alg` one the key verifies, when present.
    pub fn from_jwk(json: &str) -> Result<PublicKey, CryptoError> {
        let value: Value =
            serde_json::from_str(json).map_err(|_| CryptoError("the JWK is not valid JSON"))?;
        let Value::Object(members) = value else {
            return Err(CryptoError("a JWK is a JSON object"));
        };
        if members.contains_key("keys") {
            return Err(CryptoError("this is a JWK Set: send one JWK, the object inside `keys`"));
        }
        if JWK_PRIVATE_MEMBERS.iter().any(|m| members.contains_key(*m)) {
            return Err(CryptoError(
                "the JWK holds private key material (d, p, q, dp, dq, qi, oth or k): send only the public key; \
                 a private key must never leave its owner",
            ));
        }
        let text = |name: &str| members.get(name).and_then(Value::as_str);
        let bytes = |name: &str, missing: &'static str| -> Result<Vec<u8>, CryptoError> {
            let encoded = text(name).ok_or(CryptoError(missing))?;
            URL_SAFE_NO_PAD
                .decode(encoded.trim_end_matches('='))
                .map_err(|_| CryptoError("a JWK member is not valid base64url"))
        };
        let der = match text("kty") {
            Some("RSA") => {
                let n = bytes("n", "an RSA JWK needs n and e")?;
                let e = bytes("e", "an RSA JWK needs n and e")?;
                rsa_spki_der(&n, &e)?
            }
            Some("EC") => {
                if text("crv") != Some("P-256") {
                    return Err(CryptoError(
                        "EC keys must be on the P-256 curve (ES256); other curves are not accepted",
                    ));
                }
                let x = bytes("x", "a P-256 JWK needs x and y")?;
                let y = bytes("y", "a P-256 JWK needs x and y")?;
                if x.len() != 32 || y.len() != 32 {
                    return Err(CryptoError("x and y of a P-256 JWK are 32 bytes each"));
                }
                [P256_SPKI_PREFIX, &[0x04], &x, &y].concat()
            }
            Some("OKP") => {
                if text("crv") != Some("Ed25519") {
                    return Err(CryptoError(
                        "OKP keys must be Ed25519; X25519, Ed448 and X448 are not accepted",
                    ));
                }
                let x = bytes("x", "an Ed25519 JWK needs x")?;
                if x.len() != 32 {
                    return Err(CryptoError("x of an Ed25519 JWK is 32 bytes"));
                }
                [ED25519_SPKI_PREFIX, &x].concat()
            }
            Some(_) => {
                return Err(CryptoError(
                    "this key type is not accepted: keys are RSA (2048 to 8192 bits), EC P-256 or Ed25519",
                ));
            }
            None => return Err(CryptoError("the JWK has no kty")),
        };
        let key = PublicKey::from_spki_der(&der)?;
        if members.get("use").is_some_and(|u| u != "sig") {
            return Err(CryptoError("the JWK's use must be \"sig\": application keys sign JWTs"));
        }
        if let Some(alg) = members.get("alg")
            && !key.jws_algorithms().iter().any(|a| alg == a)
        {
            return Err(CryptoError("the JWK's alg is not one its key verifies"));
        }
        Ok(key)
    }

    /// Reads a DER SubjectPublicKeyInfo (RFC 5280 §4.1.2.7) of an RSA, EC P-256 or Ed25519 key.
    pub fn from_spki_der(der: &[u8]) -> Result<PublicKey, CryptoError> {
        let material = Material::of_spki_der(der)?;
        let verifiers = material
            .jws_algorithms()
            .iter()
            .map(|&alg| {
                let algorithm =
                    verification_algorithm(alg).ok_or(CryptoError("no verifier for a JWS alg"))?;
                ParsedPublicKey::new(algorithm, der)
                    .map(|parsed| (alg, parsed))
                    .map_err(|_| CryptoError("the public key is not a valid key of its type"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PublicKey { spki_der: der.to_vec(), material, verifiers })
    }

    pub fn family(&self) -> KeyFamily {
        match self.material {
            Material::Rsa { .. } => KeyFamily::Rsa,
            Material::EcP256 { .. } => KeyFamily::EcP256,
            Material::Ed25519 { .. } => KeyFamily::Ed25519,
        }
    }

    /// The size of the key in bits: the RSA modulus, 256 for P-256 and Ed25519.
    pub fn bits(&self) -> u32 {
        match &self.material {
            Material::Rsa { n, .. } => modulus_bits(n),
            Material::EcP256 { .. } | Material::Ed25519 { .. } => 256,
        }
    }

    /// JWS `alg` values this key verifies: ["RS256","PS256"] for RSA, ["ES256"] for P-256, ["EdDSA","Ed25519"] for
    /// Ed25519.
    pub fn jws_algorithms(&self) -> &'static [&'static str] {
        self.material.jws_algorithms()
    }

    /// Verifies a JWS signature (`signature` as decoded from base64url; ES256 in the JOSE r||s fixed form).
    /// Any other alg (none, HS*, an alg of another family) is an error.
    pub fn verify(&self, jws_alg: &str, signing_input: &[u8], signature: &[u8]) -> Result<(), CryptoError> {
        // Only the algs of this key's family are here, so `none`, HMAC (the classic "HS256 keyed with the public
        // key" confusion) and other families fail before any cryptography.
        let (_, key) = self
            .verifiers
            .iter()
            .find(|(alg, _)| *alg == jws_alg)
            .ok_or(CryptoError("the JWS alg does not fit this key"))?;
        key.verify_sig(signing_input, signature).map_err(|_| CryptoError("the JWS signature does not verify"))
    }

    /// The public JWK (RFC 7517/7518/8037): kty, kid, alg where one alg fits (ES256 keys), use "sig", and n/e,
    /// crv/x/y or crv/x.
    pub fn to_jwk(&self, kid: &str) -> Value {
        self.material.to_jwk(kid)
    }

    /// The public JWK of a stored SubjectPublicKeyInfo PEM, as [`PublicKey::to_jwk`] gives it, without preparing
    /// the key for verification (for RSA, two aws-lc-rs key parses): reads show keys and verify nothing.
    pub fn jwk_of_spki_pem(pem: &str, kid: &str) -> Result<Value, CryptoError> {
        match decode_pem(pem)? {
            ("PUBLIC KEY", der) => Ok(Material::of_spki_der(&der)?.to_jwk(kid)),
            _ => Err(CryptoError("expected a PEM public key (-----BEGIN PUBLIC KEY-----)")),
        }
    }

    /// The key as DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// The key as `-----BEGIN PUBLIC KEY-----` PEM, 64 characters a line, LF line ends.
    pub fn to_spki_pem(&self) -> Result<String, CryptoError> {
        encode_string("PUBLIC KEY", LineEnding::LF, &self.spki_der)
            .map_err(|_| CryptoError("PEM-encoding the public key"))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("family", &self.family())
            .field("bits", &self.bits())
            .finish_non_exhaustive()
    }
}

impl Material {
    /// Reads the numbers of an RSA, EC P-256 or Ed25519 key from its DER SubjectPublicKeyInfo, checking what DER
    /// shows (algorithm, curve, sizes); whether a point is on its curve is aws-lc-rs's to check.
    fn of_spki_der(der: &[u8]) -> Result<Material, CryptoError> {
        let spki = SubjectPublicKeyInfoRef::from_der(der)
            .map_err(|_| CryptoError("the public key is not a valid DER SubjectPublicKeyInfo"))?;
        let key_bits = spki
            .subject_public_key
            .as_bytes()
            .ok_or(CryptoError("the public key's bit string is not whole bytes"))?;
        let oid = spki.algorithm.oid;
        if oid == RSA_ENCRYPTION {
            // RFC 3279 wants NULL parameters; some encoders omit them, which is harmless.
            if spki.algorithm.parameters.is_some_and(|p| !p.is_null()) {
                return Err(CryptoError("RSA public key parameters must be NULL"));
            }
            rsa_material(key_bits)
        } else if oid == EC_PUBLIC_KEY {
            let curve = spki
                .algorithm
                .parameters_oid()
                .map_err(|_| CryptoError("the EC public key does not name its curve"))?;
            if curve != P256 {
                return Err(CryptoError(
                    "EC keys must be on the P-256 curve (ES256); other curves are not accepted",
                ));
            }
            ec_p256_material(key_bits)
        } else if oid == ED25519 {
            if spki.algorithm.parameters.is_some() {
                return Err(CryptoError("Ed25519 public keys have no parameters"));
            }
            let x = <[u8; 32]>::try_from(key_bits)
                .map_err(|_| CryptoError("an Ed25519 public key is 32 bytes"))?;
            Ok(Material::Ed25519 { x: x.to_vec() })
        } else if oid == RSASSA_PSS {
            Err(CryptoError(
                "RSASSA-PSS-only keys (id-RSASSA-PSS) are not accepted: send the rsaEncryption form of the key",
            ))
        } else {
            Err(CryptoError(
                "this key type is not accepted: keys are RSA (2048 to 8192 bits), EC P-256 or Ed25519",
            ))
        }
    }

    fn jws_algorithms(&self) -> &'static [&'static str] {
        match self {
            Material::Rsa { .. } => RSA_ALGORITHMS,
            Material::EcP256 { .. } => ES256_ALGORITHMS,
            Material::Ed25519 { .. } => EDDSA_ALGORITHMS,
        }
    }

    fn to_jwk(&self, kid: &str) -> Value {
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        match self {
            // RS256 and PS256 both fit an RSA key, so `alg` is left out (RFC 7517 §4.4: it is optional).
            Material::Rsa { n, e } => json!({
                "kty": "RSA", "kid": kid, "use": "sig", "n": b64(n), "e": b64(e),
            }),
            Material::EcP256 { x, y } => json!({
                "kty": "EC", "kid": kid, "use": "sig", "alg": "ES256", "crv": "P-256", "x": b64(x), "y": b64(y),
            }),
            // EdDSA and Ed25519 (RFC 9864) both name its signature, so `alg` is left out as for RSA.
            Material::Ed25519 { x } => json!({
                "kty": "OKP", "kid": kid, "use": "sig", "crv": "Ed25519", "x": b64(x),
            }),
        }
    }
}

fn verification_algorithm(jws_alg: &str) -> Option<&'static dyn VerificationAlgorithm> {
    match jws_alg {
        "RS256" => Some(&signature::RSA_PKCS1_2048_8192_SHA256),
        // RFC 7518 §3.5: the salt is as long as the hash, which is aws-lc-rs's default.
        "PS256" => Some(&signature::RSA_PSS_2048_8192_SHA256),
        "ES256" => Some(&signature::ECDSA_P256_SHA256_FIXED),
        "EdDSA" | "Ed25519" => Some(&signature::ED25519),
        _ => None,
    }
}

/// `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }` (RFC 8017 §A.1.1).
fn rsa_material(rsa_public_key: &[u8]) -> Result<Material, CryptoError> {
    let malformed = |_| CryptoError("the RSA public key is malformed");
    let mut reader = SliceReader::new(rsa_public_key).map_err(malformed)?;
    let (n, e) = reader.sequence(|r| Ok((UintRef::decode(r)?, UintRef::decode(r)?))).map_err(malformed)?;
    reader.finish(()).map_err(malformed)?;
    let bits = modulus_bits(n.as_bytes());
    if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) {
        return Err(CryptoError("RSA keys must have 2048 to 8192 bits"));
    }
    Ok(Material::Rsa { n: n.as_bytes().to_vec(), e: e.as_bytes().to_vec() })
}

/// The SubjectPublicKeyInfo of an RSA key with modulus `n` and exponent `e` (big-endian, unsigned).
fn rsa_spki_der(n: &[u8], e: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let malformed = |_| CryptoError("the RSA JWK's n or e is not a valid number");
    // SEQUENCE OF two INTEGERs encodes exactly as RSAPublicKey's SEQUENCE { INTEGER, INTEGER }.
    let rsa_public_key = [UintRef::new(n).map_err(malformed)?, UintRef::new(e).map_err(malformed)?]
        .to_der()
        .map_err(malformed)?;
    SubjectPublicKeyInfoRef {
        algorithm: AlgorithmIdentifierRef { oid: RSA_ENCRYPTION, parameters: Some(AnyRef::NULL) },
        subject_public_key: BitStringRef::from_bytes(&rsa_public_key).map_err(malformed)?,
    }
    .to_der()
    .map_err(malformed)
}

/// The SEC 1 uncompressed point `04 || x || y`; the compressed form is refused since the JWK needs `y`.
fn ec_p256_material(point: &[u8]) -> Result<Material, CryptoError> {
    match point {
        [0x04, xy @ ..] if xy.len() == 64 => {
            let (x, y) = xy.split_at(32);
            Ok(Material::EcP256 { x: x.to_vec(), y: y.to_vec() })
        }
        _ => {
            Err(CryptoError("the P-256 public key must be an uncompressed point (65 bytes starting with 04)"))
        }
    }
}

fn modulus_bits(n: &[u8]) -> u32 {
    // UintRef strips leading zero bytes, so the first byte holds the top bit.
    let Some(first) = n.first() else { return 0 };
    let len = u32::try_from(n.len()).unwrap_or(u32::MAX);
    len.saturating_sub(1).saturating_mul(8).saturating_add(8 - first.leading_zeros())
}

/// The label and the decoded body of one PEM block. Lenient about whitespace and line width (RFC 7468 §3 asks
/// parsers to be); strict that the input is one block and nothing else.
fn decode_pem(pem: &str) -> Result<(&str, Vec<u8>), CryptoError> {
    const NOT_PEM: CryptoError = CryptoError("expected a PEM public key (-----BEGIN PUBLIC KEY-----)");
    let text = pem.trim();
    let rest = text.strip_prefix("-----BEGIN ").ok_or(NOT_PEM)?;
    let (label, rest) = rest.split_once("-----").ok_or(NOT_PEM)?;
    if label.contains("PRIVATE KEY") {
        // Refused by the caller; do not even decode private material.
        return Ok((label, Vec::new()));
    }
    let body = rest
        .trim_end()
        .strip_suffix(format!("-----END {label}-----").as_str())
        .ok_or(CryptoError("the PEM's END line is missing or does not match its BEGIN line"))?;
    // Bytes, not chars: lists decode a PEM per key shown, and base64 is ASCII.
    let base64: Vec<u8> = body.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let der = STANDARD.decode(base64).map_err(|_| CryptoError("the PEM body is not valid base64"))?;
    Ok((label, der))
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::{
        encoding::AsDer,
        rand::SystemRandom,
        rsa::{KeyPair as RsaKeyPair, KeySize},
        signature::{
            ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RSA_PKCS1_SHA256,
            RSA_PSS_SHA256,
        },
    };

    use super::*;
    use crate::crypto::keygen::{RsaBits, RsaKeyPair as KeymintRsaKeyPair};

    fn pem(der: &[u8]) -> String {
        encode_string("PUBLIC KEY", LineEnding::LF, der).unwrap()
    }

    fn b64url(s: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(s).unwrap()
    }

    const SIGNING_INPUT: &[u8] = b"eyJhbGciOiJ4In0.eyJzdWIiOiJrZXltaW50In0";

    fn assert_refuses_others(key: &PublicKey, signature: &[u8]) {
        for alg in [
            "none", "HS256", "HS384", "HS512", "", "rs256", "RS384", "PS512", "ES384", "Ed448", "ed25519",
            "EDDSA",
        ] {
            assert!(key.verify(alg, SIGNING_INPUT, signature).is_err(), "{alg} must be refused");
        }
        let mut tampered_input = SIGNING_INPUT.to_vec();
        tampered_input[3] ^= 1;
        let mut tampered_signature = signature.to_vec();
        tampered_signature[5] ^= 1;
        for &alg in key.jws_algorithms() {
            assert!(key.verify(alg, &tampered_input, signature).is_err(), "{alg}: tampered input verified");
            assert!(
                key.verify(alg, SIGNING_INPUT, &tampered_signature).is_err(),
                "{alg}: tampered signature"
            );
            assert!(key.verify(alg, SIGNING_INPUT, &[]).is_err(), "{alg}: empty signature verified");
        }
    }

    #[test]
    fn rsa_key_verifies_rs256_and_ps256_and_nothing_else() {
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let key = PublicKey::from_spki_pem(&pem(pair.public_key().as_der().unwrap().as_ref())).unwrap();
        assert_eq!(key.family(), KeyFamily::Rsa);
        assert_eq!(key.bits(), 2048);
        assert_eq!(key.jws_algorithms(), ["RS256", "PS256"]);
        let rng = SystemRandom::new();
        let mut pkcs1 = vec![0; pair.public_modulus_len()];
        pair.sign(&RSA_PKCS1_SHA256, &rng, SIGNING_INPUT, &mut pkcs1).unwrap();
        let mut pss = vec![0; pair.public_modulus_len()];
        pair.sign(&RSA_PSS_SHA256, &rng, SIGNING_INPUT, &mut pss).unwrap();
        key.verify("RS256", SIGNING_INPUT, &pkcs1).unwrap();
        key.verify("PS256", SIGNING_INPUT, &pss).unwrap();
        // A signature of one padding is not one of the other.
        assert!(key.verify("PS256", SIGNING_INPUT, &pkcs1).is_err());
        assert!(key.verify("RS256", SIGNING_INPUT, &pss).is_err());
        for alg in ["ES256", "EdDSA"] {
            assert!(key.verify(alg, SIGNING_INPUT, &pkcs1).is_err());
        }
        assert_refuses_others(&key, &pkcs1);
        // Another key of the same family does not verify it.
        let other = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let other = PublicKey::from_spki_pem(&pem(other.public_key().as_der().unwrap().as_ref())).unwrap();
        assert!(other.verify("RS256", SIGNING_INPUT, &pkcs1).is_err());
    }

    #[test]
    fn p256_key_verifies_es256_only() {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let key = PublicKey::from_spki_pem(&pem(pair.public_key().as_der().unwrap().as_ref())).unwrap();
        assert_eq!(key.family(), KeyFamily::EcP256);
        assert_eq!(key.jws_algorithms(), ["ES256"]);
        let signature = pair.sign(&SystemRandom::new(), SIGNING_INPUT).unwrap();
        assert_eq!(signature.as_ref().len(), 64, "JOSE r||s form");
        key.verify("ES256", SIGNING_INPUT, signature.as_ref()).unwrap();
        for alg in ["RS256", "PS256", "EdDSA", "Ed25519"] {
            assert!(key.verify(alg, SIGNING_INPUT, signature.as_ref()).is_err());
        }
        assert_refuses_others(&key, signature.as_ref());
    }

    #[test]
    fn ed25519_key_verifies_eddsa_and_ed25519_only() {
        let pair = Ed25519KeyPair::generate().unwrap();
        let key = PublicKey::from_spki_pem(&pem(pair.public_key().as_der().unwrap().as_ref())).unwrap();
        assert_eq!(key.family(), KeyFamily::Ed25519);
        assert_eq!(key.jws_algorithms(), ["EdDSA", "Ed25519"]);
        let signature = pair.sign(SIGNING_INPUT);
        key.verify("EdDSA", SIGNING_INPUT, signature.as_ref()).unwrap();
        key.verify("Ed25519", SIGNING_INPUT, signature.as_ref()).unwrap();
        for alg in ["RS256", "PS256", "ES256"] {
            assert!(key.verify(alg, SIGNING_INPUT, signature.as_ref()).is_err());
        }
        assert_refuses_others(&key, signature.as_ref());
    }

    #[test]
    fn reads_the_keys_keymint_stores() {
        let pair = KeymintRsaKeyPair::generate(RsaBits::Rsa2048).unwrap();
        let key = PublicKey::from_spki_pem(pair.public_spki_pem()).unwrap();
        assert_eq!(key.family(), KeyFamily::Rsa);
        assert_eq!(key.to_spki_pem().unwrap(), pair.public_spki_pem());
    }

    /// RFC 7517 §A.1 (kid "2011-04-29"); its n is checked by the RFC 7638 §3.1 thumbprint.
    const RFC7517_RSA_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA0vx7agoebGcQSuuPiLJX
ZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tS
oc/BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ/2W+5JsGY4Hc5n9yBXArwl93lqt
7/RN5w6Cf0h4QyQ5v+65YGjQR0/FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0
zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt+bFTWhAI4vMQFh6WeZu0f
M4lFd2NcRwr3XPksINHaQ+G/xBniIqbw0Ls1jF44+csFCur+kEgU8awapJzKnqDK
gwIDAQAB
-----END PUBLIC KEY-----
";

    #[test]
    fn rsa_jwk_is_rfc7517_example() {
        let key = PublicKey::from_spki_pem(RFC7517_RSA_PEM).unwrap();
        assert_eq!(
            key.to_jwk("2011-04-29"),
            json!({
                "kty": "RSA",
                "kid": "2011-04-29",
                "use": "sig",
                "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKR\
                      XjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
                "e": "AQAB",
            })
        );
        assert_eq!(key.to_spki_pem().unwrap(), RFC7517_RSA_PEM);
    }

    /// RFC 7515 §A.3: the ES256 example key, signing input and signature.
    #[test]
    fn es256_rfc7515_example_verifies_and_its_jwk_matches() {
        let key = PublicKey::from_spki_pem(
            "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEf83OJ3D2xF1Bg8vub9tLe1gHMzV7
6e8Tus9uPHvRVEXH8UTNG72bfocs3+257rn0s2ldbqkLJK2KRiMohYjlrQ==
-----END PUBLIC KEY-----",
        )
        .unwrap();
        let input = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
        let signature =
            b64url("DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q");
        key.verify("ES256", input.as_bytes(), &signature).unwrap();
        assert_eq!(
            key.to_jwk("k1"),
            json!({
                "kty": "EC", "kid": "k1", "use": "sig", "alg": "ES256", "crv": "P-256",
                "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
            })
        );
        // The DER form of r||s (what OpenSSL emits) is not the JOSE form.
        assert!(key.verify("ES256", input.as_bytes(), &signature[..63]).is_err());
    }

    /// RFC 8037 §A.1 and §A.4: the Ed25519 example key and its signature of "Example of Ed25519 signing".
    #[test]
    fn eddsa_rfc8037_example_verifies_and_its_jwk_matches() {
        let key = PublicKey::from_spki_pem(
            "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n-----END PUBLIC KEY-----\n",
        )
        .unwrap();
        let input = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
        let signature =
            b64url("hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg");
        key.verify("EdDSA", input.as_bytes(), &signature).unwrap();
        // RFC 9864's fully-specified name for the same signature.
        key.verify("Ed25519", input.as_bytes(), &signature).unwrap();
        assert!(key.verify("Ed448", input.as_bytes(), &signature).is_err());
        assert_eq!(key.jws_algorithms(), ["EdDSA", "Ed25519"]);
        assert_eq!(
            key.to_jwk("k2"),
            json!({
                "kty": "OKP", "kid": "k2", "use": "sig", "crv": "Ed25519",
                "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
            })
        );
    }

    /// Signed by another implementation (Python `cryptography` 48, PSS salt 32 bytes as RFC 7518 §3.5 says).
    #[test]
    fn verifies_rs256_and_ps256_of_another_implementation() {
        let key = PublicKey::from_spki_pem(
            "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAuGBBXAqqtuRW1epFSW8C
yGgihjsVWoO5b2J2VSTEyPYuF1ju7pR7sp/c6wJMGzL6fQkC5UHpXD5pkg9v53Uu
8ZSD/CBT45PnahHxA/Dk9AAi+7VCWsy2bfT1HUPgpWnHpQ5r62mjGJjuul2po0X1
UuQlMKPeQPQZt9SKXipEovqnjaHIChVJELccaLt8HddcqSATTW0eGiFVox1+PppR
O0ym5cNcIOZlg2mchBVKkdHcqgQlb9dCGFZaDspaqTTM5UKifoJT4luRMfUJAZt7
GrJbEwpAmArZBRtH8lA6gz8olT2igGHjJA4E4yVgiK4PUtFkibjBo82MEiVUmzqQ
yQIDAQAB
-----END PUBLIC KEY-----",
        )
        .unwrap();
        let rs256 = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJweXRob24tY3J5cHRvZ3JhcGh5In0";
        let rs256_signature = b64url(
            "F_gvBj_0rT7rFGqQUtvJKH7Ps6zlsVwBqsKcJB3eF8X5dSpe_WNA_sSdSy4YadF6zrfIxoKdUMoYsQ15TOZORjJy3lw3N-Ef0nV5KFPiGn-PiLnUJO_l7fXJkt0P8cWWuYJ6GOaV5rLklFHgIxrPxQpGg39_oWqKiXwvZtqf4GvUWMXMqAqF87vqimimmJzipJaJc4GaGq6wyOm8QbhoYjXsXrhsSYunUTV_ptHyL5aclhC7AwJym_TjX7mYI0ykhT2cWBlJ3nwFx622vTpcYRGb8--Amuv3alxMZlUIQl7yUxZt7I-hmnU9bSkyGlvM7eLlHkMHs77K4mh0jqXvwg",
        );
        let ps256 = "eyJhbGciOiJQUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJweXRob24tY3J5cHRvZ3JhcGh5In0";
        let ps256_signature = b64url(
            "J_zuRmRX0XX72DfiSZOqiZQpQbSJMeFi_XKWfHApx-bYJrjF0AKIhO6RXioifu5nn6t34NRp1LW2vfOjVzg9mbUU07X8u9PrAnWqJ_e5aig-Pxq7xc7mHPqipqGFqX4BwY-0Bog7kQvQ3-MOq4DV9j5ACqneXSE8mEkgBCwTLKRRMZn81VdEXB_V-IBCOxNYFgfn2DLMggpf3F5u_0S3Y-oNXxGAel2AGc-AnDTAfRZYLmsnX0nfJbmmA70zfBtXv8sfXV0H_TaSRAI3uArjo8GklfZB6fvELXCipipKwQOdknmc_wfd99c3DhxiLO8NDyT5ZbAIhcULsJCrXVKqVQ",
        );
        key.verify("RS256", rs256.as_bytes(), &rs256_signature).unwrap();
        key.verify("PS256", ps256.as_bytes(), &ps256_signature).unwrap();
        assert!(key.verify("RS256", ps256.as_bytes(), &ps256_signature).is_err());
        assert!(key.verify("PS256", rs256.as_bytes(), &rs256_signature).is_err());
    }

    #[test]
    fn pem_whitespace_and_line_width_do_not_matter() {
        let one_line: String = RFC7517_RSA_PEM.lines().filter(|l| !l.starts_with("-----")).collect();
        let pasted =
            format!("\r\n  -----BEGIN PUBLIC KEY-----\r\n{one_line}\r\n-----END PUBLIC KEY-----  \r\n");
        let key = PublicKey::from_spki_pem(&pasted).unwrap();
        assert_eq!(key.to_spki_pem().unwrap(), RFC7517_RSA_PEM);
    }

    fn refusal(pem: &str) -> &'static str {
        PublicKey::from_spki_pem(pem).expect_err("must be refused").0
    }

    #[test]
    fn refuses_keys_it_cannot_verify_with_and_says_why() {
        let rsa_1024 = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC4qEN6KzQvgqXaOdim2l60v2oz
3mjdogabVzHuts3FCWwaGqoCTGmcBNVV2oClK54afxQRMlJ5MF12jNmLcJjGXwID
zepgpB97fbuLjQDCrZMR2Xj3GeVhkP/SAy/V7hD7CdHWx7teCcohwasiUWpCx+dt
W4WiYb8u7MM52Z52fwIDAQAB
-----END PUBLIC KEY-----";
        assert!(refusal(rsa_1024).contains("2048"));
        let p384 = "-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEkGwMC7vv7RG3RqczveVNgov3FKypA+ju
fiRLf3S/SZSxY3vqqVMGHRSDfM5496lWRVt37B815thL4QNXRm7+GyPZQ4HAbKIT
A6rP/eHWolrcJUd7ah7HvPyE+LoyXfrY
-----END PUBLIC KEY-----";
        assert!(refusal(p384).contains("P-256"));
        let ed448 = "-----BEGIN PUBLIC KEY-----
MEMwBQYDK2VxAzoArbSu6eNMbWA247Rx369DbK+n/22oHLROCE5lkHvmm1axoxJx
QwpjDVt1oEKIGeRzEWOflCb8t5oA
-----END PUBLIC KEY-----";
        assert!(refusal(ed448).contains("not accepted"));
        // A point that is not on the curve: the RFC 7515 key with its last byte changed.
        let off_curve = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEf83OJ3D2xF1Bg8vub9tLe1gHMzV7
6e8Tus9uPHvRVEXH8UTNG72bfocs3+257rn0s2ldbqkLJK2KRiMohYjlrA==
-----END PUBLIC KEY-----";
        assert!(refusal(off_curve).contains("not a valid key"));
    }

    #[test]
    fn refuses_what_is_not_a_public_key_without_echoing_it() {
        let secret_looking = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----";
        let message = refusal(secret_looking);
        assert!(message.contains("private key"), "{message}");
        assert!(!message.contains("MC4CAQ"));
        assert!(
            refusal("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----")
                .contains("private key")
        );
        assert!(
            refusal("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----").contains("certificate")
        );
        assert!(
            refusal("-----BEGIN RSA PUBLIC KEY-----\nAAAA\n-----END RSA PUBLIC KEY-----").contains("PKCS#1")
        );
        for garbage in [
            "",
            "hello",
            "-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----",
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
            "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n",
            "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n-----END PUBLIC KEY-----\n-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n-----END PUBLIC KEY-----",
            // Trailing bytes after the SubjectPublicKeyInfo.
            "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURoA\n-----END PUBLIC KEY-----",
            // An Ed25519 key one byte short.
            "-----BEGIN PUBLIC KEY-----\nMCkwBQYDK2VwAyAA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHUQ==\n-----END PUBLIC KEY-----",
        ] {
            assert!(PublicKey::from_spki_pem(garbage).is_err(), "accepted {garbage:?}");
        }
    }

    /// A JWK and the PEM of the same key read as the same key, in the canonical PEM.
    #[test]
    fn public_jwks_read_as_their_spki() {
        let rsa = json!({"kty": "RSA", "kid": "2011-04-29", "alg": "RS256", "use": "sig", "e": "AQAB",
            "n": PublicKey::from_spki_pem(RFC7517_RSA_PEM).unwrap().to_jwk("k")["n"]});
        let key = PublicKey::from_jwk(&rsa.to_string()).unwrap();
        assert_eq!(key.to_spki_pem().unwrap(), RFC7517_RSA_PEM);
        let ec = r#"{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;
        let key = PublicKey::from_supplied(&format!("  {ec}\n")).unwrap();
        assert_eq!(key.family(), KeyFamily::EcP256);
        assert!(
            key.to_spki_pem()
                .unwrap()
                .contains("MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEf83OJ3D2xF1Bg8vub9tLe1gHMzV7")
        );
        let okp = r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","use":"sig","alg":"EdDSA"}"#;
        let key = PublicKey::from_supplied(okp).unwrap();
        assert_eq!(
            key.to_spki_pem().unwrap(),
            "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n-----END PUBLIC KEY-----\n"
        );
        assert_eq!(
            PublicKey::from_supplied(RFC7517_RSA_PEM).unwrap().to_spki_pem().unwrap(),
            RFC7517_RSA_PEM
        );
    }

    fn jwk_refusal(jwk: &str) -> &'static str {
        PublicKey::from_jwk(jwk).expect_err("must be refused").0
    }

    #[test]
    fn refuses_private_and_unusable_jwks_and_says_why() {
        // RFC 8037 §A.1: the private key, with `d`.
        let private = r#"{"kty":"OKP","crv":"Ed25519","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;
        let message = jwk_refusal(private);
        assert!(message.contains("private key"), "{message}");
        assert!(!message.contains("nWGxne"));
        assert!(jwk_refusal(r#"{"kty":"oct","k":"c2VjcmV0"}"#).contains("private key"));
        assert!(jwk_refusal(r#"{"kty":"RSA","n":"AQAB","e":"AQAB","p":"AQAB"}"#).contains("private key"));
        assert!(jwk_refusal(r#"{"keys":[]}"#).contains("JWK Set"));
        assert!(jwk_refusal(r#"{"kty":"EC","crv":"P-384","x":"AA","y":"AA"}"#).contains("P-256"));
        assert!(jwk_refusal(r#"{"kty":"OKP","crv":"X25519","x":"AA"}"#).contains("Ed25519"));
        assert!(jwk_refusal(r#"{"kty":"EC","crv":"P-256","x":"AAAA","y":"AAAA"}"#).contains("32 bytes"));
        assert!(jwk_refusal(r#"{"kty":"OKP","crv":"Ed25519"}"#).contains("needs x"));
        assert!(jwk_refusal(r#"{"crv":"Ed25519"}"#).contains("kty"));
        assert!(jwk_refusal(r#"{"kty":"RSA","n":"AQAB","e":"AQAB"}"#).contains("2048"));
        assert!(jwk_refusal(r#"{"kty":"RSA","n":"!!","e":"AQAB"}"#).contains("base64url"));
        assert!(jwk_refusal("[1]").contains("object"));
        assert!(jwk_refusal("{").contains("JSON"));
        let ed = |extra: &str| {
            format!(
                r#"{{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"{extra}}}"#
            )
        };
        assert!(jwk_refusal(&ed(r#","use":"enc""#)).contains("sig"));
        assert!(jwk_refusal(&ed(r#","alg":"ES256""#)).contains("alg"));
        for alg in ["EdDSA", "Ed25519"] {
            assert!(PublicKey::from_supplied(&ed(&format!(r#","alg":"{alg}""#))).is_ok(), "{alg}");
        }
        // A point off the curve.
        let off = r#"{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5aA"}"#;
        assert!(jwk_refusal(off).contains("not a valid key"));
        let neither = PublicKey::from_supplied("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5").expect_err("refused").0;
        assert!(neither.contains("JWK"));
    }

    #[test]
    fn the_jwk_of_a_stored_pem_is_the_parsed_keys() {
        let keymint_rsa = KeymintRsaKeyPair::generate(RsaBits::Rsa2048).unwrap();
        let ec = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let ed = Ed25519KeyPair::generate().unwrap();
        for stored in [
            keymint_rsa.public_spki_pem().to_owned(),
            pem(ec.public_key().as_der().unwrap().as_ref()),
            pem(ed.public_key().as_der().unwrap().as_ref()),
        ] {
            let parsed = PublicKey::from_spki_pem(&stored).unwrap().to_jwk("7");
            assert_eq!(PublicKey::jwk_of_spki_pem(&stored, "7").unwrap(), parsed);
        }
        assert!(
            PublicKey::jwk_of_spki_pem(RFC7517_RSA_PEM.replace("PUBLIC", "PRIVATE").as_str(), "7").is_err()
        );
    }

    #[test]
    fn debug_shows_the_kind_of_key_only() {
        let key = PublicKey::from_spki_pem(RFC7517_RSA_PEM).unwrap();
        assert_eq!(format!("{key:?}"), "PublicKey { family: Rsa, bits: 2048, .. }");
    }
}
