//! Public keys callers supply when they add an application key (crypto/public_key.rs: SubjectPublicKeyInfo PEM or
//! one JWK): a refusal is an error, and a key that is accepted shows itself the same way however it is read back
//! (its PEM, its JWK).
#![no_main]

use keymint::crypto::public_key::PublicKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(key) = PublicKey::from_supplied(text) else { return };
    let jwk = key.to_jwk("k");

    let pem = key.to_spki_pem().unwrap_or_else(|e| panic!("an accepted key has no PEM: {e}"));
    let from_pem = PublicKey::from_spki_pem(&pem).unwrap_or_else(|e| panic!("its own PEM is refused: {e}"));
    assert_eq!(from_pem.spki_der(), key.spki_der());
    assert_eq!(from_pem.to_jwk("k"), jwk);
    assert_eq!(PublicKey::jwk_of_spki_pem(&pem, "k").ok(), Some(jwk.clone()));

    let from_jwk =
        PublicKey::from_jwk(&jwk.to_string()).unwrap_or_else(|e| panic!("its own JWK is refused: {e}"));
    assert_eq!(from_jwk.to_jwk("k"), jwk);
    assert_eq!((from_jwk.family(), from_jwk.bits()), (key.family(), key.bits()));
    assert!(!key.jws_algorithms().is_empty());

    // Only the algorithms of the key's family verify: `none`, HMAC and the other families fail before any maths.
    for alg in ["none", "HS256", "RS256", "PS256", "ES256", "EdDSA"] {
        if !key.jws_algorithms().contains(&alg) {
            assert!(key.verify(alg, b"input", b"signature").is_err(), "{alg} verified");
        }
    }
});
