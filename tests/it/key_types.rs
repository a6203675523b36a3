//! Application key algorithms (RSA, EC P-256, Ed25519) and keys callers supply: each issued or supplied key signs
//! a JWT that verifies with the PEM and the JWK GetAppKey returns; bad keys are refused with the reason; no
//! private key reaches the database.

use aws_lc_rs::{
    encoding::{AsBigEndian, AsDer},
    rand::SystemRandom,
    rsa::{KeyPair as RsaKeyPair, KeySize},
    signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RSA_PKCS1_SHA256,
        RSA_PSS_SHA256,
    },
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, jwk::Jwk};
use keymint::api::pb::keymint::management::v1::{
    AddAppKeyRequest, GetAppKeyRequest, Key, KeyAlgorithm, KeyView, ListAppKeysRequest,
};
use pkcs8::der::pem::{LineEnding, decode_vec, encode_string};
use serde_json::{Value, json};
use tonic::Code;

use crate::helpers::{self, Claims, Db, KeyFile, TestServer, error_of, key_request, on_both_databases};

/// google.protobuf.Struct back to the JSON it shows in the JSON mapping.
fn json_of(s: &prost_types::Struct) -> Value {
    use prost_types::value::Kind;
    fn value(v: &prost_types::Value) -> Value {
        match &v.kind {
            Some(Kind::StringValue(s)) => json!(s),
            Some(Kind::NumberValue(n)) => json!(n),
            Some(Kind::BoolValue(b)) => json!(b),
            Some(Kind::StructValue(s)) => json_of(s),
            Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(value).collect()),
            Some(Kind::NullValue(_)) | None => Value::Null,
        }
    }
    Value::Object(s.fields.iter().map(|(k, v)| (k.clone(), value(v))).collect())
}

fn request(project_id: &str, app_id: &str, algorithm: KeyAlgorithm) -> AddAppKeyRequest {
    AddAppKeyRequest { algorithm: algorithm as i32, ..key_request(project_id, app_id) }
}

fn supplying(project_id: &str, app_id: &str, public_key: &str) -> AddAppKeyRequest {
    AddAppKeyRequest { public_key: public_key.into(), ..key_request(project_id, app_id) }
}

/// A JWT of the application, signed with `key` under `alg` and naming `kid`.
fn sign(alg: Algorithm, kid: &str, key: &EncodingKey, client_id: &str) -> (String, Claims) {
    let claims =
        Claims { iss: client_id.into(), sub: client_id.into(), aud: "keymint".into(), exp: 4_000_000_000 };
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    (jsonwebtoken::encode(&header, &claims, key).expect("sign"), claims)
}

/// Checks that `jwt` verifies under `alg` with both the PEM and the JWK of `key`, and with nothing else.
fn assert_verifies(jwt: &str, alg: Algorithm, key: &Key, claims: &Claims) {
    let pem = key.public_key_pem.as_bytes();
    let from_pem = match alg {
        Algorithm::RS256 | Algorithm::PS256 => DecodingKey::from_rsa_pem(pem),
        Algorithm::ES256 => DecodingKey::from_ec_pem(pem),
        _ => DecodingKey::from_ed_pem(pem),
    }
    .expect("PEM public key");
    let jwk: Jwk = serde_json::from_value(json_of(key.public_key_jwk.as_ref().expect("jwk"))).expect("JWK");
    let from_jwk = DecodingKey::from_jwk(&jwk).expect("JWK public key");
    let mut validation = Validation::new(alg);
    validation.set_audience(&["keymint"]);
    for decoding in [&from_pem, &from_jwk] {
        let verified = jsonwebtoken::decode::<Claims>(jwt, decoding, &validation).expect("JWT verifies");
        assert_eq!(&verified.claims, claims);
    }
    // A tampered token does not.
    let (head, signature) = jwt.rsplit_once('.').expect("JWS");
    let mut bytes = URL_SAFE_NO_PAD.decode(signature).expect("signature");
    bytes[0] ^= 1;
    let tampered = format!("{head}.{}", URL_SAFE_NO_PAD.encode(bytes));
    assert!(jsonwebtoken::decode::<Claims>(&tampered, &from_jwk, &validation).is_err());
}

async fn get_key(server: &TestServer, project_id: &str, app_id: &str, key_id: &str) -> Key {
    let mut client = server.management().await;
    let get = GetAppKeyRequest {
        project_id: project_id.into(),
        app_id: app_id.into(),
        key_id: key_id.into(),
        ..Default::default()
    };
    client.get_app_key(server.req(get)).await.expect("get key").into_inner().key.expect("key")
}

on_both_databases!(each_algorithm_issues_a_key_whose_jwts_verify, each_algorithm_end_to_end);
async fn each_algorithm_end_to_end(db: Db) {
    let server = TestServer::start(db).await;
    let mut client = server.management().await;
    let (project_id, app_id, client_id) = server.project_and_app("billing").await;
    let cases = [
        // Unspecified is what clients written before the choice send: RSA, PKCS#1, as before.
        (
            KeyAlgorithm::Unspecified,
            KeyAlgorithm::Rsa,
            "RSA PRIVATE KEY",
            &[Algorithm::RS256, Algorithm::PS256][..],
        ),
        (KeyAlgorithm::Rsa, KeyAlgorithm::Rsa, "RSA PRIVATE KEY", &[Algorithm::RS256][..]),
        (KeyAlgorithm::EcP256, KeyAlgorithm::EcP256, "PRIVATE KEY", &[Algorithm::ES256][..]),
        (KeyAlgorithm::Ed25519, KeyAlgorithm::Ed25519, "PRIVATE KEY", &[Algorithm::EdDSA][..]),
    ];
    let mut issued = Vec::new();
    for (asked, algorithm, label, jws_algorithms) in cases {
        let added = client
            .add_app_key(server.req(request(&project_id, &app_id, asked)))
            .await
            .expect("add key")
            .into_inner();
        let file: KeyFile = serde_json::from_slice(&added.key_details).expect("key file");
        assert_eq!(
            (file.kind.as_str(), file.key_id.as_str(), file.app_id.as_str(), file.client_id.as_str()),
            ("application", added.id.as_str(), app_id.as_str(), client_id.as_str())
        );
        let (found_label, der) = decode_vec(file.key.as_bytes()).expect("private key PEM");
        assert_eq!(found_label, label, "{asked:?}");
        // The private key parses with aws-lc-rs, and its public half is the one keymint keeps.
        let key = get_key(&server, &project_id, &app_id, &added.id).await;
        let (_, spki) = decode_vec(key.public_key_pem.as_bytes()).expect("public key PEM");
        let public = match algorithm {
            KeyAlgorithm::Rsa => {
                RsaKeyPair::from_der(&der).expect("PKCS#1").public_key().as_der().unwrap().as_ref().to_vec()
            }
            KeyAlgorithm::EcP256 => EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
                .expect("PKCS#8 P-256")
                .public_key()
                .as_der()
                .unwrap()
                .as_ref()
                .to_vec(),
            _ => Ed25519KeyPair::from_pkcs8(&der)
                .expect("PKCS#8 Ed25519")
                .public_key()
                .as_der()
                .unwrap()
                .as_ref()
                .to_vec(),
        };
        assert_eq!(public, spki, "{asked:?}: the stored public key is the key file's");
        assert_eq!((key.algorithm, key.supplied), (algorithm as i32, false));
        assert_eq!(key.id, added.id);

        let jwk = json_of(key.public_key_jwk.as_ref().expect("jwk"));
        assert_eq!((jwk["kid"].as_str(), jwk["use"].as_str()), (Some(added.id.as_str()), Some("sig")));
        let expected_alg = match algorithm {
            KeyAlgorithm::EcP256 => Some("ES256"),
            // EdDSA and RFC 9864's Ed25519 both fit it, so its JWK names neither.
            _ => None,
        };
        assert_eq!(jwk["alg"].as_str(), expected_alg);

        for &alg in jws_algorithms {
            let encoding = match algorithm {
                KeyAlgorithm::Rsa => EncodingKey::from_rsa_pem(file.key.as_bytes()),
                KeyAlgorithm::EcP256 => EncodingKey::from_ec_pem(file.key.as_bytes()),
                _ => EncodingKey::from_ed_pem(file.key.as_bytes()),
            }
            .expect("encoding key from the key file");
            let (jwt, claims) = sign(alg, &added.id, &encoding, &client_id);
            assert_verifies(&jwt, alg, &key, &claims);
        }
        issued.push(key);
    }

    // The list in KEY_VIEW_FULL shows the same keys, oldest first, with the same public keys; by default (and in
    // KEY_VIEW_BASIC) the same keys without them.
    let list = |view: KeyView| ListAppKeysRequest {
        query: Some(keymint::api::pb::keymint::v1::ListQuery { offset: 0, limit: 0, asc: true }),
        app_id: app_id.clone(),
        project_id: project_id.clone(),
        view: view as i32,
    };
    let listed =
        client.list_app_keys(server.req(list(KeyView::Full))).await.expect("list").into_inner().result;
    assert_eq!(listed, issued);
    let basic: Vec<_> = issued
        .iter()
        .map(|key| Key { public_key_pem: String::new(), public_key_jwk: None, ..key.clone() })
        .collect();
    for view in [KeyView::Unspecified, KeyView::Basic] {
        let listed = client.list_app_keys(server.req(list(view))).await.expect("list").into_inner().result;
        assert_eq!(listed, basic, "{view:?}");
    }
    server.stop().await;
}

/// An RSA key pair of the caller's, its public key as SPKI PEM and a JWT it signed.
fn callers_rsa_key() -> (String, impl Fn(&[u8], bool) -> Vec<u8>) {
    let pair = RsaKeyPair::generate(KeySize::Rsa2048).expect("generate");
    let pem =
        encode_string("PUBLIC KEY", LineEnding::LF, pair.public_key().as_der().unwrap().as_ref()).unwrap();
    let sign = move |message: &[u8], pss: bool| {
        let mut signature = vec![0; pair.public_modulus_len()];
        let padding: &'static dyn aws_lc_rs::signature::RsaEncoding =
            if pss { &RSA_PSS_SHA256 } else { &RSA_PKCS1_SHA256 };
        pair.sign(padding, &SystemRandom::new(), message, &mut signature).expect("sign");
        signature
    };
    (pem, sign)
}

/// Signs a JWS signing input with a key of the caller's.
type Signer<'a> = Box<dyn Fn(&[u8]) -> Vec<u8> + 'a>;

/// A JWS signed outside jsonwebtoken, by the caller's own key.
fn jws(alg: &str, kid: &str, client_id: &str, sign: impl Fn(&[u8]) -> Vec<u8>) -> (String, Claims) {
    let claims =
        Claims { iss: client_id.into(), sub: client_id.into(), aud: "keymint".into(), exp: 4_000_000_000 };
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": alg, "kid": kid, "typ": "JWT"}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_string(&claims).unwrap());
    let input = format!("{header}.{payload}");
    let signature = URL_SAFE_NO_PAD.encode(sign(input.as_bytes()));
    (format!("{input}.{signature}"), claims)
}

on_both_databases!(a_callers_own_public_key_is_kept_and_verifies, supplied_keys);
async fn supplied_keys(db: Db) {
    let server = TestServer::start(db).await;
    let mut client = server.management().await;
    let (project_id, app_id, client_id) = server.project_and_app("billing").await;

    // EC P-256 as a JWK, Ed25519 as a JWK and as PEM, RSA as PEM: the private keys never leave this test.
    let ec = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("ec");
    let point = ec.public_key().as_ref().to_vec();
    let ec_jwk = json!({
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": "mine",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..]),
    });
    let ed = Ed25519KeyPair::generate().expect("ed25519");
    let ed_jwk =
        json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(ed.public_key().as_ref())});
    let ed_pem =
        encode_string("PUBLIC KEY", LineEnding::LF, ed.public_key().as_der().unwrap().as_ref()).unwrap();
    let (rsa_pem, rsa_sign) = callers_rsa_key();

    let rng = SystemRandom::new();
    let cases: Vec<(String, KeyAlgorithm, &str, Signer)> = vec![
        (
            ec_jwk.to_string(),
            KeyAlgorithm::EcP256,
            "ES256",
            Box::new(|m| ec.sign(&rng, m).unwrap().as_ref().to_vec()),
        ),
        (ed_jwk.to_string(), KeyAlgorithm::Ed25519, "EdDSA", Box::new(|m| ed.sign(m).as_ref().to_vec())),
        // Pasted as people paste: CRLF line ends and surrounding blank lines.
        (
            format!("\r\n{}\r\n", ed_pem.replace('\n', "\r\n")),
            KeyAlgorithm::Ed25519,
            "EdDSA",
            Box::new(|m| ed.sign(m).as_ref().to_vec()),
        ),
        (rsa_pem.clone(), KeyAlgorithm::Rsa, "RS256", Box::new(|m| rsa_sign(m, false))),
        (rsa_pem.clone(), KeyAlgorithm::Rsa, "PS256", Box::new(|m| rsa_sign(m, true))),
    ];
    for (public_key, algorithm, alg, sign) in cases {
        let mut add = supplying(&project_id, &app_id, &public_key);
        // Naming the key's own algorithm is allowed, as is leaving it out.
        if alg == "PS256" {
            add.algorithm = KeyAlgorithm::Rsa as i32;
        }
        let added = client.add_app_key(server.req(add)).await.expect("add supplied key").into_inner();
        assert!(added.key_details.is_empty(), "no key file for a supplied key");
        let key = get_key(&server, &project_id, &app_id, &added.id).await;
        assert_eq!((key.algorithm, key.supplied), (algorithm as i32, true));
        assert!(key.public_key_pem.starts_with("-----BEGIN PUBLIC KEY-----\n"), "stored as canonical PEM");
        let jwk = json_of(key.public_key_jwk.as_ref().expect("jwk"));
        assert_eq!(jwk["kid"].as_str(), Some(added.id.as_str()), "keymint's key ID, not the JWK's kid");
        if algorithm == KeyAlgorithm::EcP256 {
            assert_eq!((&jwk["x"], &jwk["y"]), (&ec_jwk["x"], &ec_jwk["y"]));
        }
        let jws_alg: Algorithm = alg.parse().expect("alg");
        let (jwt, claims) = jws(alg, &added.id, &client_id, sign);
        assert_verifies(&jwt, jws_alg, &key, &claims);
    }

    // The RFC 7517 §A.1 RSA key as a JWK comes back with the same n and e.
    let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
    let rfc_jwk = json!({"kty": "RSA", "n": n, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"});
    let added = client
        .add_app_key(server.req(supplying(&project_id, &app_id, &rfc_jwk.to_string())))
        .await
        .expect("add");
    let key = get_key(&server, &project_id, &app_id, &added.into_inner().id).await;
    let jwk = json_of(key.public_key_jwk.as_ref().expect("jwk"));
    assert_eq!(
        (jwk["kty"].as_str(), jwk["n"].as_str(), jwk["e"].as_str()),
        (Some("RSA"), Some(n), Some("AQAB"))
    );
    assert!(key.public_key_pem.contains("MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA0vx7agoebGcQSuuPiLJX"));
    server.stop().await;
}

/// RFC 8037 §A.1: an Ed25519 private JWK (it has `d`).
const PRIVATE_JWK: &str = r#"{"kty":"OKP","crv":"Ed25519","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;

on_both_databases!(bad_keys_are_refused_with_the_reason, refusals);
async fn refusals(db: Db) {
    let server = TestServer::start(db).await;
    let mut client = server.management().await;
    let (project_id, app_id, _) = server.project_and_app("billing").await;
    let rsa_1024 = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC4qEN6KzQvgqXaOdim2l60v2oz
3mjdogabVzHuts3FCWwaGqoCTGmcBNVV2oClK54afxQRMlJ5MF12jNmLcJjGXwID
zepgpB97fbuLjQDCrZMR2Xj3GeVhkP/SAy/V7hD7CdHWx7teCcohwasiUWpCx+dt
W4WiYb8u7MM52Z52fwIDAQAB
-----END PUBLIC KEY-----";
    let p384 = "-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEkGwMC7vv7RG3RqczveVNgov3FKypA+ju
fiRLf3S/SZSxY3vqqVMGHRSDfM5496lWRVt37B815thL4QNXRm7+GyPZQ4HAbKIT
A6rP/eHWolrcJUd7ah7HvPyE+LoyXfrY
-----END PUBLIC KEY-----";
    let (rsa_pem, _) = callers_rsa_key();
    let private_pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n";
    let p384_jwk = r#"{"kty":"EC","crv":"P-384","x":"AAAA","y":"AAAA"}"#;
    let ed_jwk = r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;

    let with = |public_key: &str, algorithm: KeyAlgorithm, key_size: u32| AddAppKeyRequest {
        algorithm: algorithm as i32,
        key_size,
        ..supplying(&project_id, &app_id, public_key)
    };
    let cases: Vec<(&str, AddAppKeyRequest, &[&str], &str)> = vec![
        ("small RSA", with(rsa_1024, KeyAlgorithm::Unspecified, 0), &["publicKey"], "2048"),
        ("P-384 PEM", with(p384, KeyAlgorithm::Unspecified, 0), &["publicKey"], "P-256"),
        ("P-384 JWK", with(p384_jwk, KeyAlgorithm::Unspecified, 0), &["publicKey"], "P-256"),
        ("private JWK", with(PRIVATE_JWK, KeyAlgorithm::Unspecified, 0), &["publicKey"], "private key"),
        ("private PEM", with(private_pem, KeyAlgorithm::Unspecified, 0), &["publicKey"], "private key"),
        (
            "garbage PEM",
            with(
                "-----BEGIN PUBLIC KEY-----\nnot base64!\n-----END PUBLIC KEY-----",
                KeyAlgorithm::Unspecified,
                0,
            ),
            &["publicKey"],
            "base64",
        ),
        (
            "neither PEM nor JWK",
            with("ssh-ed25519 AAAAC3Nza", KeyAlgorithm::Unspecified, 0),
            &["publicKey"],
            "JWK",
        ),
        (
            "public key and key_size",
            with(&rsa_pem, KeyAlgorithm::Unspecified, 2048),
            &["keySize"],
            "supplied key",
        ),
        (
            "another algorithm than the key's",
            with(ed_jwk, KeyAlgorithm::EcP256, 0),
            &["algorithm"],
            "supplied key's",
        ),
        ("key_size for EC", with("", KeyAlgorithm::EcP256, 2048), &["keySize"], "RSA keys only"),
        (
            "an unknown algorithm",
            AddAppKeyRequest { algorithm: 99, ..key_request(&project_id, &app_id) },
            &["algorithm"],
            "KEY_ALGORITHM_EC_P256",
        ),
        ("an unknown size", with("", KeyAlgorithm::Rsa, 1024), &["keySize"], "2048, 3072 or 4096"),
    ];
    for (what, add, fields, why) in cases {
        let refused = client.add_app_key(server.req(add)).await.expect_err(what);
        let (code, reason, found) = error_of(&refused);
        let found: Vec<&str> = found.iter().map(String::as_str).collect();
        assert_eq!(
            (code, reason.as_str(), found.as_slice()),
            (Code::InvalidArgument, "INVALID_ARGUMENT", fields),
            "{what}: {}",
            refused.message()
        );
        assert!(refused.message().contains(why), "{what}: {}", refused.message());
        assert!(!refused.message().contains("nWGxne"), "{what}: the message echoes the private key");
    }
    // Nothing was written.
    let list =
        ListAppKeysRequest { app_id: app_id.clone(), project_id: project_id.clone(), ..Default::default() };
    let listed = client.list_app_keys(server.req(list)).await.expect("list").into_inner();
    assert!(listed.result.is_empty());
    server.stop().await;
}

on_both_databases!(no_private_key_of_any_algorithm_is_stored, no_private_key_is_stored);
async fn no_private_key_is_stored(db: Db) {
    let server = TestServer::start(db).await;
    let mut client = server.management().await;
    let (project_id, app_id, _) = server.project_and_app("billing").await;
    let mut needles =
        vec!["PRIVATE KEY".to_owned(), r#""d":"#.to_owned(), "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZ".to_owned()];
    for algorithm in [KeyAlgorithm::Rsa, KeyAlgorithm::EcP256, KeyAlgorithm::Ed25519] {
        let added =
            client.add_app_key(server.req(request(&project_id, &app_id, algorithm))).await.expect("add");
        let file: KeyFile = serde_json::from_slice(&added.into_inner().key_details).expect("key file");
        let (_, der) = decode_vec(file.key.as_bytes()).expect("PEM");
        // The private scalar or seed (for RSA: the tail of the last CRT coefficient, the end of its PKCS#1);
        // any 24 bytes of it, in any of the encodings a store might use, must be absent.
        let secret = match algorithm {
            KeyAlgorithm::Ed25519 => {
                let pair = Ed25519KeyPair::from_pkcs8(&der).expect("PKCS#8");
                pair.seed().expect("seed").as_be_bytes().expect("bytes").as_ref().to_vec()
            }
            KeyAlgorithm::EcP256 => {
                let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der).expect("PKCS#8");
                pair.private_key().as_be_bytes().expect("bytes").as_ref().to_vec()
            }
            _ => der[der.len() - 24..].to_vec(),
        };
        let piece = &secret[..24];
        needles.push(URL_SAFE_NO_PAD.encode(piece));
        needles.push(base64::engine::general_purpose::STANDARD.encode(piece));
        needles.push(piece.iter().map(|b| format!("{b:02x}")).collect());
        needles.push(file.key.lines().nth(1).expect("PEM body").to_owned());
    }
    // A supplied private JWK is refused before anything is written.
    assert!(client.add_app_key(server.req(supplying(&project_id, &app_id, PRIVATE_JWK))).await.is_err());

    let tables = helpers::dump_every_table(server.db.url.as_deref(), &server.db.data_dir()).await;
    let dump: String = tables.into_iter().map(|(_, rows)| rows + "\n").collect();
    assert!(dump.contains("BEGIN PUBLIC KEY"), "the dump covers the key tables");
    for needle in &needles {
        assert!(!dump.contains(needle.as_str()), "found private key material in the database: {needle:.12}…");
    }
    server.stop().await;
}
