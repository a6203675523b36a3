//! The OAuth 2.0 endpoints through real HTTP (HTTP/1.1 and h2c) on the gRPC port: discovery, the JWKS, both
//! grants, every refusal of an assertion, scopes, introspection of access tokens and API keys, revocation (also
//! across two processes on PostgreSQL), removed applications, signing-key rotation (by command and on its
//! schedule), what reaches the database and the log, and an outside client library (Python authlib and PyJWT)
//! when one is installed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, jwk::JwkSet};
use keymint::api::pb::keymint::{
    apikeys::v1::CreateApiKeyRequest,
    management::v1::{
        AddApiAppRequest, AddAppKeyRequest, GetAppByIdRequest, GetAppKeyRequest, KeyAlgorithm,
        RemoveAppKeyRequest, RemoveAppRequest, UpdateApiAppRequest,
    },
};
use serde_json::{Value, json};

use crate::helpers::{Db, TestServer, api_key_request, key_request, on_both_databases};

const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// An HTTP client for the OAuth endpoints: HTTP/1.1, or HTTP/2 with prior knowledge (h2c).
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

impl Http {
    pub fn http1(server: &TestServer) -> Http {
        Self::at(server.url())
    }

    /// HTTP/1.1 to a server at `base` (http://host:port).
    pub fn at(base: String) -> Http {
        Http { client: Client::builder(TokioExecutor::new()).build_http(), base }
    }

    pub fn h2c(server: &TestServer) -> Http {
        Http {
            client: Client::builder(TokioExecutor::new()).http2_only(true).build_http(),
            base: server.url(),
        }
    }

    async fn send(&self, request: http::Request<Full<Bytes>>) -> (u16, Value, http::HeaderMap) {
        let response = self.client.request(request).await.expect("HTTP request");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        let json =
            if body.is_empty() { Value::Null } else { serde_json::from_slice(&body).expect("a JSON answer") };
        (parts.status.as_u16(), json, parts.headers)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let request =
            http::Request::get(format!("{}{path}", self.base)).body(Full::default()).expect("request");
        let (status, json, _) = self.send(request).await;
        (status, json)
    }

    pub async fn post(&self, path: &str, params: &[(&str, &str)]) -> (u16, Value) {
        let (status, json, _) = self.post_with_headers(path, params).await;
        (status, json)
    }

    pub async fn post_with_headers(
        &self,
        path: &str,
        params: &[(&str, &str)],
    ) -> (u16, Value, http::HeaderMap) {
        self.post_authorized(path, params, None).await
    }

    /// A form POST with an `authorization` header when one is given; the answer's headers too.
    pub async fn post_authorized(
        &self,
        path: &str,
        params: &[(&str, &str)],
        authorization: Option<&str>,
    ) -> (u16, Value, http::HeaderMap) {
        let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
        let mut request = http::Request::post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded");
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        self.send(request.body(Full::new(Bytes::from(body))).expect("request")).await
    }
}

/// An application key as its key file holds it.
#[derive(Clone)]
pub struct AppKey {
    pub key_id: String,
    pub private_pem: String,
    pub client_id: String,
    pub app_id: String,
    pub project_id: String,
    pub key_file: Vec<u8>,
}

pub async fn add_key(
    server: &TestServer,
    project_id: &str,
    app_id: &str,
    request: AddAppKeyRequest,
) -> AppKey {
    let added =
        server.management().await.add_app_key(server.req(request)).await.expect("add key").into_inner();
    let file: Value = serde_json::from_slice(&added.key_details).expect("key file");
    AppKey {
        key_id: file["keyId"].as_str().expect("keyId").into(),
        private_pem: file["key"].as_str().expect("key").into(),
        client_id: file["clientId"].as_str().expect("clientId").into(),
        app_id: app_id.into(),
        project_id: project_id.into(),
        key_file: added.key_details,
    }
}

/// A project, an app (with these allowed scopes) and a key.
pub async fn app_with_key(server: &TestServer, project: &str, allowed_scopes: &[&str]) -> AppKey {
    let (project_id, _, _) = server.project_and_app(project).await;
    let app_id = server
        .management()
        .await
        .add_api_app(server.req(AddApiAppRequest {
            project_id: project_id.clone(),
            name: "oauth".into(),
            allowed_scopes: allowed_scopes.iter().map(|s| (*s).to_owned()).collect(),
        }))
        .await
        .expect("add app")
        .into_inner()
        .app_id;
    add_key(server, &project_id, &app_id, key_request(&project_id, &app_id)).await
}

pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() as i64
}

fn unique() -> String {
    keymint::crypto::secret::new_secret("jti-").expect("rng").to_string()
}

/// Good claims for an assertion of `key` to `aud`.
pub fn claims(key: &AppKey, aud: &str) -> Value {
    json!({
        "iss": key.client_id, "sub": key.client_id, "aud": aud,
        "iat": now(), "exp": now() + 300, "jti": unique(),
    })
}

pub fn sign(key: &AppKey, claims: &Value) -> String {
    sign_as(key, &key.key_id, claims)
}

fn sign_as(key: &AppKey, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.into());
    let encoding = EncodingKey::from_rsa_pem(key.private_pem.as_bytes()).expect("PKCS#1 key");
    jsonwebtoken::encode(&header, claims, &encoding).expect("sign")
}

pub fn client_credentials(assertion: &str) -> Vec<(&'static str, String)> {
    vec![
        ("grant_type", "client_credentials".into()),
        ("client_assertion_type", CLIENT_ASSERTION_TYPE.into()),
        ("client_assertion", assertion.into()),
    ]
}

fn pairs<'a>(params: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    params.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// A fresh access token for `key` by client_credentials, with these extra parameters.
pub async fn token(
    http: &Http,
    server: &TestServer,
    key: &AppKey,
    extra: &[(&'static str, &str)],
) -> (u16, Value) {
    let assertion = sign(key, &claims(key, &server.url()));
    let mut params = client_credentials(&assertion);
    params.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    http.post("/oauth/v2/token", &pairs(&params)).await
}

/// Introspects `token` as the client `key`.
pub async fn introspect(
    http: &Http,
    server: &TestServer,
    key: &AppKey,
    token: &str,
    extra: &[(&'static str, &str)],
) -> Value {
    let assertion = sign(key, &claims(key, &format!("{}/oauth/v2/introspect", server.url())));
    let mut params = vec![
        ("client_assertion_type", CLIENT_ASSERTION_TYPE.to_owned()),
        ("client_assertion", assertion),
        ("token", token.to_owned()),
    ];
    params.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let (status, answer) = http.post("/oauth/v2/introspect", &pairs(&params)).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

async fn revoke(http: &Http, server: &TestServer, key: &AppKey, token: &str) -> (u16, Value) {
    let assertion = sign(key, &claims(key, &server.url()));
    let params = vec![
        ("client_assertion_type", CLIENT_ASSERTION_TYPE.to_owned()),
        ("client_assertion", assertion),
        ("token", token.to_owned()),
    ];
    http.post("/oauth/v2/revoke", &pairs(&params)).await
}

/// Verifies an access token with the server's JWKS, as a resource server would; returns its claims.
async fn verify_with_jwks(http: &Http, server: &TestServer, token: &str, audience: &str) -> Value {
    let (status, jwks) = http.get("/oauth/v2/keys").await;
    assert_eq!(status, 200);
    let jwks: JwkSet = serde_json::from_value(jwks).expect("a JWKS");
    let header = jsonwebtoken::decode_header(token).expect("header");
    assert_eq!(header.typ.as_deref(), Some("at+jwt"), "RFC 9068");
    assert_eq!(header.alg, Algorithm::RS256);
    let jwk = jwks.find(header.kid.as_deref().expect("kid")).expect("the token's key is published");
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[server.url()]);
    let key = DecodingKey::from_jwk(jwk).expect("JWK");
    jsonwebtoken::decode::<Value>(token, &key, &validation).expect("the token verifies").claims
}

on_both_databases!(discovery_names_every_endpoint_over_http1_and_http2, discovery);
async fn discovery(db: Db) {
    let server = TestServer::start(db).await;
    for http in [Http::http1(&server), Http::h2c(&server)] {
        for path in ["/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"] {
            let (status, meta) = http.get(path).await;
            assert_eq!(status, 200, "{path}");
            let base = server.url();
            assert_eq!(meta["issuer"], base);
            assert_eq!(meta["token_endpoint"], format!("{base}/oauth/v2/token"));
            assert_eq!(meta["introspection_endpoint"], format!("{base}/oauth/v2/introspect"));
            assert_eq!(meta["revocation_endpoint"], format!("{base}/oauth/v2/revoke"));
            assert_eq!(meta["jwks_uri"], format!("{base}/oauth/v2/keys"));
            assert_eq!(meta["grant_types_supported"], json!(["client_credentials", JWT_BEARER]));
            assert_eq!(meta["token_endpoint_auth_methods_supported"], json!(["private_key_jwt"]));
            for endpoint in ["token", "introspection", "revocation"] {
                assert_eq!(
                    meta[format!("{endpoint}_endpoint_auth_signing_alg_values_supported")],
                    json!(["RS256", "PS256", "ES256", "EdDSA", "Ed25519"]),
                    "{endpoint}: Ed25519 keys by both their names (RFC 9864)"
                );
            }
            assert!(meta["scopes_supported"].is_array());
        }
        let (status, jwks) = http.get("/oauth/v2/keys").await;
        assert_eq!(status, 200);
        let keys = jwks["keys"].as_array().expect("keys");
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0]["kty"], "RSA");
        assert_eq!(keys[0]["alg"], "RS256");
        assert!(keys[0].get("d").is_none(), "no private part");
    }
    // gRPC still refuses other content types on its paths, and OAuth endpoints take only their methods.
    let http = Http::http1(&server);
    let request =
        http::Request::post(format!("{}/keymint.management.v1.ManagementService/ListProjects", server.url()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::default())
            .expect("request");
    assert_eq!(http.send(request).await.0, 415);
    assert_eq!(http.get("/oauth/v2/token").await.0, 405);
    server.stop().await;
}

on_both_databases!(both_grants_issue_rfc9068_access_tokens, grants);
async fn grants(db: Db) {
    let server = TestServer::start(db).await;
    let key = app_with_key(&server, "billing", &["invoices:read", "invoices:write"]).await;
    for http in [Http::http1(&server), Http::h2c(&server)] {
        // client_credentials with private_key_jwt; the token endpoint URL as audience works too.
        let assertion = sign(&key, &claims(&key, &format!("{}/oauth/v2/token", server.url())));
        let (status, answer, headers) =
            http.post_with_headers("/oauth/v2/token", &pairs(&client_credentials(&assertion))).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(headers.get("cache-control").map(|v| v.to_str().unwrap_or_default()), Some("no-store"));
        assert_eq!(answer["token_type"], "Bearer");
        assert_eq!(answer["expires_in"], 3600);
        assert_eq!(answer["scope"], "invoices:read invoices:write", "no scope asked: all allowed");
        let token = answer["access_token"].as_str().expect("token");
        let claims_of = verify_with_jwks(&http, &server, token, &key.project_id).await;
        assert_eq!(claims_of["sub"], key.client_id);
        assert_eq!(claims_of["client_id"], key.client_id);
        assert_eq!(claims_of["aud"], key.project_id);
        assert_eq!(claims_of["scope"], "invoices:read invoices:write");
        assert!(claims_of["org_id"].as_str().is_some_and(|o| !o.is_empty()));
        assert!(claims_of["jti"].as_str().is_some_and(|j| !j.is_empty()));
        let (iat, exp) = (claims_of["iat"].as_i64().expect("iat"), claims_of["exp"].as_i64().expect("exp"));
        assert_eq!(exp - iat, 3600);
        assert!((iat - now()).abs() < 60);

        // The RFC 7523 §2.1 jwt-bearer grant, with a scope.
        let assertion = sign(&key, &claims(&key, &server.url()));
        let (status, answer) = http
            .post(
                "/oauth/v2/token",
                &[("grant_type", JWT_BEARER), ("assertion", &assertion), ("scope", "invoices:read")],
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["scope"], "invoices:read");
        let token = answer["access_token"].as_str().expect("token");
        assert_eq!(verify_with_jwks(&http, &server, token, &key.project_id).await["scope"], "invoices:read");
    }
    server.stop().await;
}

/// Asserts a refusal: the status, the error code, and a description that does not repeat the assertion.
fn refused(answer: &(u16, Value), status: u16, error: &str, assertion: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["error"], error, "{}", answer.1);
    let description = answer.1["error_description"].as_str().expect("a description");
    assert!(!description.is_empty());
    if let Some(signature) = assertion.rsplit('.').next().filter(|s| s.len() > 8) {
        assert!(!answer.1.to_string().contains(signature), "the answer echoes the assertion");
    }
    for part in assertion.split('.').filter(|p| p.len() > 16) {
        assert!(!answer.1.to_string().contains(part), "the answer echoes the assertion");
    }
}

on_both_databases!(every_bad_assertion_is_refused_with_an_rfc6749_error, refusals);
async fn refusals(db: Db) {
    let server = TestServer::start(db).await;
    let http = Http::http1(&server);
    let key = app_with_key(&server, "billing", &[]).await;
    let aud = server.url();
    let post_cc = |assertion: String| {
        let http = &http;
        async move { (http.post("/oauth/v2/token", &pairs(&client_credentials(&assertion))).await, assertion) }
    };
    let post_bearer = |assertion: String| {
        let http = &http;
        async move {
            (
                http.post("/oauth/v2/token", &[("grant_type", JWT_BEARER), ("assertion", &assertion)]).await,
                assertion,
            )
        }
    };

    // alg none, and HMAC keyed with the application's public key.
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "kid": key.key_id}).to_string()),
        URL_SAFE_NO_PAD.encode(claims(&key, &aud).to_string())
    );
    let (answer, a) = post_cc(none.clone()).await;
    refused(&answer, 401, "invalid_client", &a);
    assert!(answer.1["error_description"].as_str().is_some_and(|d| d.contains("alg: none")));
    let (answer, a) = post_bearer(none).await;
    refused(&answer, 400, "invalid_grant", &a);
    let public_pem = {
        let (_, der) = pkcs8_pem(&key.private_pem);
        public_from_pkcs1(&der)
    };
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(key.key_id.clone());
    let hmac =
        jsonwebtoken::encode(&header, &claims(&key, &aud), &EncodingKey::from_secret(public_pem.as_bytes()))
            .expect("HS256");
    let (answer, a) = post_cc(hmac).await;
    refused(&answer, 401, "invalid_client", &a);
    assert!(answer.1["error_description"].as_str().is_some_and(|d| d.contains("HMAC")));

    // Unknown kid, a key of another application, a removed key, an expired key.
    let (answer, a) = post_cc(sign_as(&key, "404", &claims(&key, &aud))).await;
    refused(&answer, 401, "invalid_client", &a);
    let other = app_with_key(&server, "other", &[]).await;
    let (answer, a) = post_cc(sign_as(&other, &other.key_id, &claims(&key, &aud))).await;
    refused(&answer, 401, "invalid_client", &a);
    let removed =
        add_key(&server, &key.project_id, &key.app_id, key_request(&key.project_id, &key.app_id)).await;
    // Used once, so that the server holds the key in memory: its removal must still take effect at once.
    assert_eq!(post_cc(sign(&removed, &claims(&removed, &aud))).await.0.0, 200);
    server
        .management()
        .await
        .remove_app_key(server.req(RemoveAppKeyRequest {
            project_id: key.project_id.clone(),
            app_id: key.app_id.clone(),
            key_id: removed.key_id.clone(),
        }))
        .await
        .expect("remove key");
    let (answer, a) = post_cc(sign(&removed, &claims(&removed, &aud))).await;
    refused(&answer, 401, "invalid_client", &a);
    assert!(answer.1["error_description"].as_str().is_some_and(|d| d.contains("kid")));
    let mut expiring = key_request(&key.project_id, &key.app_id);
    expiring.expiration_date = Some(prost_types::Timestamp { seconds: now() + 2, nanos: 0 });
    let expiring = add_key(&server, &key.project_id, &key.app_id, expiring).await;
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    let (answer, a) = post_cc(sign(&expiring, &claims(&expiring, &aud))).await;
    refused(&answer, 401, "invalid_client", &a);
    assert!(answer.1["error_description"].as_str().is_some_and(|d| d.contains("expired")));

    // Claims: audience, iss ≠ sub, missing or far exp, future iat, missing jti; a signature over other bytes.
    let bad_claims = [
        json!({"aud": "https://elsewhere.example"}),
        json!({"aud": ["https://elsewhere.example", "x"]}),
        json!({"sub": other.client_id}),
        json!({"exp": null}),
        json!({"exp": now() + 7200}),
        json!({"iat": now() + 600, "exp": now() + 900}),
        json!({"iat": null}),
        json!({"jti": null}),
        json!({"exp": now() - 10, "iat": now() - 100}),
        json!({"nbf": now() + 600}),
    ];
    for changes in bad_claims {
        let mut c = claims(&key, &aud);
        for (k, v) in changes.as_object().expect("object") {
            if v.is_null() {
                c.as_object_mut().expect("object").remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        let (answer, a) = post_cc(sign(&key, &c)).await;
        refused(&answer, 401, "invalid_client", &a);
        let (answer, a) = post_bearer(sign(&key, &c)).await;
        refused(&answer, 400, "invalid_grant", &a);
    }
    let good = sign(&key, &claims(&key, &aud));
    let (head, _) = good.rsplit_once('.').expect("three parts");
    let forged = format!("{head}.{}", URL_SAFE_NO_PAD.encode([7_u8; 256]));
    let (answer, a) = post_cc(forged).await;
    refused(&answer, 401, "invalid_client", &a);

    // Replay: a jti is accepted once.
    let once = sign(&key, &claims(&key, &aud));
    assert_eq!(post_cc(once.clone()).await.0.0, 200);
    let (answer, a) = post_cc(once).await;
    refused(&answer, 401, "invalid_client", &a);
    assert!(answer.1["error_description"].as_str().is_some_and(|d| d.contains("used before")));

    // The same assertion sent eight times at once: accepted exactly once.
    let racing = sign(&key, &claims(&key, &aud));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (http, assertion) = (Http::h2c(&server), racing.clone());
            tokio::spawn(async move {
                http.post("/oauth/v2/token", &pairs(&client_credentials(&assertion))).await.0
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.expect("task"));
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 401, 401, 401, 401, 401, 401, 401]);

    // Larger than 8 KiB.
    let mut big = claims(&key, &aud);
    big["padding"] = json!("x".repeat(9000));
    let (answer, a) = post_cc(sign(&key, &big)).await;
    refused(&answer, 401, "invalid_client", &a);
    assert!(answer.1["error_description"].as_str().is_some_and(|d| d.contains("8192")));

    // Requests that are not well formed.
    let good = sign(&key, &claims(&key, &aud));
    refused(
        &http.post("/oauth/v2/token", &[("client_assertion", &good)]).await,
        400,
        "invalid_request",
        &good,
    );
    refused(
        &http.post("/oauth/v2/token", &[("grant_type", "password")]).await,
        400,
        "unsupported_grant_type",
        "",
    );
    refused(
        &http.post("/oauth/v2/token", &[("grant_type", "client_credentials")]).await,
        401,
        "invalid_client",
        "",
    );
    refused(&http.post("/oauth/v2/token", &[("grant_type", JWT_BEARER)]).await, 400, "invalid_request", "");
    let twice = [("grant_type", "client_credentials"), ("grant_type", "client_credentials")];
    refused(&http.post("/oauth/v2/token", &twice).await, 400, "invalid_request", "");
    let request = http::Request::post(format!("{}/oauth/v2/token", server.url()))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{}")))
        .expect("request");
    let (status, answer, _) = http.send(request).await;
    assert_eq!((status, answer["error"].as_str()), (400, Some("invalid_request")));
    server.stop().await;
}

fn pkcs8_pem(pem: &str) -> (String, Vec<u8>) {
    let (label, der) = pkcs8::der::pem::decode_vec(pem.as_bytes()).expect("PEM");
    (label.to_owned(), der)
}

/// The SubjectPublicKeyInfo PEM of a PKCS#1 private key: what an attacker knows and might use as an HMAC key.
fn public_from_pkcs1(der: &[u8]) -> String {
    use aws_lc_rs::{encoding::AsDer, signature::KeyPair};
    let pair = aws_lc_rs::rsa::KeyPair::from_der(der).expect("PKCS#1");
    let spki = pair.public_key().as_der().expect("SPKI");
    pkcs8::der::pem::encode_string("PUBLIC KEY", pkcs8::der::pem::LineEnding::LF, spki.as_ref()).expect("PEM")
}

on_both_databases!(scopes_are_bounded_by_allowed_scopes, scopes);
async fn scopes(db: Db) {
    let server = TestServer::start(db).await;
    let http = Http::h2c(&server);
    let key = app_with_key(&server, "billing", &["invoices:read"]).await;
    assert_eq!(token(&http, &server, &key, &[("scope", "invoices:read")]).await.1["scope"], "invoices:read");
    let answer = token(&http, &server, &key, &[("scope", "invoices:read invoices:write")]).await;
    refused(&answer, 400, "invalid_scope", "");
    refused(&token(&http, &server, &key, &[("scope", "NOT-A-SCOPE")]).await, 400, "invalid_scope", "");

    let mut client = server.management().await;
    let update = |scopes: &[&str]| UpdateApiAppRequest {
        project_id: key.project_id.clone(),
        app_id: key.app_id.clone(),
        allowed_scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
    };
    let written = client.update_api_app(server.req(update(&["invoices:read", "invoices:write"]))).await;
    let sequence = written.expect("update").into_inner().details.expect("details").sequence;
    let unchanged = client.update_api_app(server.req(update(&["invoices:read", "invoices:write"]))).await;
    assert_eq!(unchanged.expect("update").into_inner().details.expect("details").sequence, sequence);
    let app = client
        .get_app_by_id(
            server.req(GetAppByIdRequest { project_id: key.project_id.clone(), app_id: key.app_id.clone() }),
        )
        .await
        .expect("get app")
        .into_inner()
        .app
        .expect("app");
    assert_eq!(app.allowed_scopes, ["invoices:read", "invoices:write"]);
    let answer = token(&http, &server, &key, &[("scope", "invoices:read invoices:write")]).await;
    assert_eq!(answer.1["scope"], "invoices:read invoices:write", "{}", answer.1);
    let bad = client.update_api_app(server.req(update(&["Not A Scope"]))).await.expect_err("invalid");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    // Empty: any well-formed scope.
    client.update_api_app(server.req(update(&[]))).await.expect("update");
    assert_eq!(token(&http, &server, &key, &[("scope", "reports:read")]).await.1["scope"], "reports:read");
    let answer = token(&http, &server, &key, &[]).await;
    assert_eq!(answer.0, 200);
    assert!(answer.1.get("scope").is_none(), "no scope asked, none allowed: none granted");
    server.stop().await;
}

on_both_databases!(introspection_and_revocation_of_access_tokens, introspection_and_revocation);
async fn introspection_and_revocation(db: Db) {
    let server = TestServer::start(db.clone()).await;
    let http = Http::http1(&server);
    let key = app_with_key(&server, "billing", &["invoices:read"]).await;
    let token_of = |answer: (u16, Value)| answer.1["access_token"].as_str().expect("token").to_owned();
    let access = token_of(token(&http, &server, &key, &[]).await);

    let active = introspect(&http, &server, &key, &access, &[]).await;
    assert_eq!(active["active"], true, "{active}");
    assert_eq!(active["client_id"], key.client_id);
    assert_eq!(active["scope"], "invoices:read");
    assert_eq!(active["aud"], key.project_id);
    for field in ["exp", "iat", "jti", "iss", "sub", "org_id"] {
        assert!(active.get(field).is_some(), "{field} in {active}");
    }
    // Garbage, and a token whose audience is another project: exactly {"active": false}.
    for token in ["garbage", "a.b.c", &format!("{access}x")] {
        assert_eq!(introspect(&http, &server, &key, token, &[]).await, json!({"active": false}));
    }
    let other = app_with_key(&server, "other", &[]).await;
    assert_eq!(introspect(&http, &server, &other, &access, &[]).await, json!({"active": false}));
    // Introspection needs client authentication.
    let (status, answer) = http.post("/oauth/v2/introspect", &[("token", &access)]).await;
    assert_eq!((status, answer["error"].as_str()), (401, Some("invalid_client")));
    // The token's checks run beside the client's authentication: a refused client (here a replayed assertion)
    // still learns nothing of a valid token.
    let assertion = sign(&key, &claims(&key, &server.url()));
    let params = vec![
        ("client_assertion_type", CLIENT_ASSERTION_TYPE.to_owned()),
        ("client_assertion", assertion),
        ("token", access.clone()),
    ];
    assert_eq!(http.post("/oauth/v2/introspect", &pairs(&params)).await.1["active"], true);
    let (status, answer) = http.post("/oauth/v2/introspect", &pairs(&params)).await;
    assert_eq!((status, answer["error"].as_str()), (401, Some("invalid_client")), "{answer}");
    assert!(answer.get("active").is_none() && answer.get("client_id").is_none(), "{answer}");

    // Revocation: at once here, and (PostgreSQL) in a second process.
    let beside = if db_is_postgres(&db) { Some(beside_with_issuer(&server).await) } else { None };
    let revoked = token_of(token(&http, &server, &key, &[]).await);
    if let Some(beside) = &beside {
        let http_beside = Http::http1(beside);
        assert_eq!(introspect(&http_beside, &server, &key, &revoked, &[]).await["active"], true);
    }
    assert_eq!(revoke(&http, &server, &other, &revoked).await.1["error"], "unauthorized_client");
    assert_eq!(revoke(&http, &server, &key, &revoked).await, (200, Value::Null));
    assert_eq!(introspect(&http, &server, &key, &revoked, &[]).await, json!({"active": false}));
    if let Some(beside) = &beside {
        let http_beside = Http::http1(beside);
        assert_eq!(introspect(&http_beside, &server, &key, &revoked, &[]).await, json!({"active": false}));
        // A replayed assertion is refused by the other process too.
        let assertion = sign(&key, &claims(&key, &server.url()));
        assert_eq!(http.post("/oauth/v2/token", &pairs(&client_credentials(&assertion))).await.0, 200);
        let replayed = http_beside.post("/oauth/v2/token", &pairs(&client_credentials(&assertion))).await;
        refused(&replayed, 401, "invalid_client", &assertion);
    }
    // Revoking again, or revoking garbage, is not an error (RFC 7009 §2.2); API keys are not revoked here.
    assert_eq!(revoke(&http, &server, &key, &revoked).await.0, 200);
    assert_eq!(revoke(&http, &server, &key, "garbage").await.0, 200);
    let (_, secret) = server.api_key("k", &["keys:read"]).await;
    assert_eq!(revoke(&http, &server, &key, &secret).await.1["error"], "unsupported_token_type");
    // The revocation is an event of the application: the read models rebuilt from the events hold it too.
    let store = server.store().clone();
    let before = store.projection_snapshot().await.expect("snapshot");
    let app_row =
        |row: &String| row.starts_with(&format!("{}|", key.app_id)) && row.contains("invoices:read");
    assert!(before.iter().any(app_row), "the app's allowed scopes");
    let revoked_row = |row: &String| row.ends_with(&format!("|{}|{}", key.app_id, exp_of(&revoked)));
    assert!(before.iter().any(revoked_row), "the revoked token");
    store.rebuild_projections().await.expect("rebuild");
    assert_eq!(store.projection_snapshot().await.expect("snapshot"), before);
    // And it survives a restart.
    assert_eq!(introspect(&http, &server, &key, &access, &[]).await["active"], true, "the other token still");
    if let Some(beside) = beside {
        beside.stop().await;
    }
    let mut server = server;
    restart(&mut server).await;
    let http = Http::http1(&server);
    assert_eq!(introspect(&http, &server, &key, &revoked, &[]).await, json!({"active": false}));
    assert_eq!(introspect(&http, &server, &key, &access, &[]).await["active"], true);
    server.stop().await;
}

on_both_databases!(introspection_authorized_by_a_bearer_token_with_its_scope, bearer_introspection);
async fn bearer_introspection(db: Db) {
    let server = TestServer::start(db.clone()).await;
    let http = Http::h2c(&server);
    let resource_server = app_with_key(&server, "billing", &["invoices:read", "tokens:introspect"]).await;
    let token_with = |scope: &'static str| {
        let (http, server, key) = (&http, &server, &resource_server);
        async move {
            let (status, answer) = token(http, server, key, &[("scope", scope)]).await;
            assert_eq!(status, 200, "{answer}");
            answer["access_token"].as_str().expect("token").to_owned()
        }
    };
    let bearer = token_with("tokens:introspect").await;
    let access = token_with("invoices:read").await;
    let introspect_as = |authorization: String, token: String| {
        let http = &http;
        async move {
            let params = [("token", token.as_str())];
            http.post_authorized("/oauth/v2/introspect", &params, Some(&authorization)).await
        }
    };

    // The metadata says so (RFC 8414 §2 lets the list name an access token type).
    let (_, metadata) = http.get("/.well-known/oauth-authorization-server").await;
    assert_eq!(
        metadata["introspection_endpoint_auth_methods_supported"],
        json!(["private_key_jwt", "Bearer"])
    );

    // An access token of the caller's project, and an API key of its organization: active, as with an assertion.
    let (status, active, _) = introspect_as(format!("Bearer {bearer}"), access.clone()).await;
    assert_eq!(
        (status, &active["active"], &active["client_id"]),
        (200, &json!(true), &json!(resource_server.client_id))
    );
    assert_eq!(active["scope"], "invoices:read");
    assert_eq!(
        active,
        introspect(&http, &server, &resource_server, &access, &[]).await,
        "same answer either way"
    );
    // The scheme is case-insensitive (RFC 7235 §2.1), and the bearer may introspect itself.
    let (_, own, _) = introspect_as(format!("bearer {bearer}"), bearer.clone()).await;
    assert_eq!(own["scope"], "tokens:introspect");
    let (_, secret) = server.api_key("introspected", &["invoices:read"]).await;
    let (status, key, _) = introspect_as(format!("Bearer {bearer}"), secret).await;
    assert_eq!((status, &key["active"], &key["token_type"]), (200, &json!(true), &json!("api_key")), "{key}");
    // Another project's token, and garbage: exactly {"active": false}.
    let other = app_with_key(&server, "other", &[]).await;
    let foreign =
        token(&http, &server, &other, &[]).await.1["access_token"].as_str().expect("token").to_owned();
    for token in [foreign, "garbage".to_owned()] {
        assert_eq!(introspect_as(format!("Bearer {bearer}"), token).await.1, json!({"active": false}));
    }
    // `token` is still required.
    let (status, answer, _) =
        http.post_authorized("/oauth/v2/introspect", &[], Some(&format!("Bearer {bearer}"))).await;
    assert_eq!((status, answer["error"].as_str()), (400, Some("invalid_request")), "{answer}");

    // Refusals: a token without the scope, garbage, and a revoked bearer get 401 invalid_token with the
    // RFC 6750 challenge, and nothing of the introspected token.
    let refused_bearer = |answer: (u16, Value, http::HeaderMap), why: &str| {
        let (status, body, headers) = answer;
        assert_eq!((status, body["error"].as_str()), (401, Some("invalid_token")), "{why}: {body}");
        assert!(body.get("active").is_none() && body.get("client_id").is_none(), "{why}: {body}");
        let challenge = headers.get("www-authenticate").expect("a challenge").to_str().expect("ASCII");
        assert!(challenge.starts_with(r#"Bearer error="invalid_token""#), "{why}: {challenge}");
        assert!(challenge.contains(r#"scope="tokens:introspect""#), "{why}: {challenge}");
    };
    refused_bearer(introspect_as(format!("Bearer {access}"), access.clone()).await, "without the scope");
    refused_bearer(introspect_as("Bearer garbage".into(), access.clone()).await, "garbage");
    refused_bearer(introspect_as(format!("Bearer {bearer}x"), access.clone()).await, "a forged signature");
    // No other scheme, and never two ways to authenticate at once (RFC 6749 §2.3).
    let (status, answer, _) = introspect_as("Basic YTpi".into(), access.clone()).await;
    assert_eq!((status, answer["error"].as_str()), (401, Some("invalid_client")), "{answer}");
    let assertion = sign(&resource_server, &claims(&resource_server, &server.url()));
    let both = [
        ("client_assertion_type", CLIENT_ASSERTION_TYPE),
        ("client_assertion", &assertion),
        ("token", &access),
    ];
    let (status, answer, _) =
        http.post_authorized("/oauth/v2/introspect", &both, Some(&format!("Bearer {bearer}"))).await;
    assert_eq!((status, answer["error"].as_str()), (400, Some("invalid_request")), "{answer}");

    // A revoked bearer is refused at once, here and (PostgreSQL) in a second process.
    let beside = if db_is_postgres(&db) { Some(beside_with_issuer(&server).await) } else { None };
    if let Some(beside) = &beside {
        let params = [("token", access.as_str())];
        let answer = Http::h2c(beside)
            .post_authorized("/oauth/v2/introspect", &params, Some(&format!("Bearer {bearer}")))
            .await;
        assert_eq!(answer.1["active"], true, "the second process accepts the bearer before the revocation");
    }
    assert_eq!(revoke(&http, &server, &resource_server, &bearer).await.0, 200);
    refused_bearer(introspect_as(format!("Bearer {bearer}"), access.clone()).await, "revoked");
    if let Some(beside) = beside {
        let params = [("token", access.as_str())];
        let answer = Http::h2c(&beside)
            .post_authorized("/oauth/v2/introspect", &params, Some(&format!("Bearer {bearer}")))
            .await;
        refused_bearer(answer, "revoked, in the second process");
        beside.stop().await;
    }
    server.stop().await;
}

on_both_databases!(ed25519_assertions_are_accepted_by_both_names_of_the_algorithm, ed25519_names);
async fn ed25519_names(db: Db) {
    use aws_lc_rs::signature::Ed25519KeyPair;
    let server = TestServer::start(db).await;
    let http = Http::http1(&server);
    let rsa = app_with_key(&server, "billing", &[]).await;
    let mut request = key_request(&rsa.project_id, &rsa.app_id);
    request.algorithm = KeyAlgorithm::Ed25519 as i32;
    let key = add_key(&server, &rsa.project_id, &rsa.app_id, request).await;
    let (_, pkcs8) = pkcs8::der::pem::decode_vec(key.private_pem.as_bytes()).expect("PKCS#8 PEM");
    let signer = Ed25519KeyPair::from_pkcs8(&pkcs8).expect("an Ed25519 key");
    let signed = |alg: &str, kid: &str| {
        let header = json!({"alg": alg, "kid": kid, "typ": "JWT"});
        let input = keymint::crypto::jws::signing_input(&header, &claims(&key, &server.url()));
        keymint::crypto::jws::assemble(input.clone(), signer.sign(input.as_bytes()).as_ref())
    };
    // RFC 9864's fully-specified name, which jose 6 and oauth4webapi 3 send, and the older EdDSA.
    for alg in ["Ed25519", "EdDSA"] {
        let (status, answer) =
            http.post("/oauth/v2/token", &pairs(&client_credentials(&signed(alg, &key.key_id)))).await;
        assert_eq!(status, 200, "{alg}: {answer}");
        assert!(answer["access_token"].is_string(), "{alg}: {answer}");
    }
    // Neither name fits another family's key, and no other Edwards curve is taken for it.
    for (alg, kid) in [("Ed25519", rsa.key_id.as_str()), ("Ed448", key.key_id.as_str())] {
        let assertion = signed(alg, kid);
        refused(
            &http.post("/oauth/v2/token", &pairs(&client_credentials(&assertion))).await,
            401,
            "invalid_client",
            &assertion,
        );
    }
    // Its public JWK names neither algorithm, since both fit.
    let get = GetAppKeyRequest {
        project_id: key.project_id.clone(),
        app_id: key.app_id.clone(),
        key_id: key.key_id.clone(),
        ..Default::default()
    };
    let read = server.management().await.get_app_key(server.req(get)).await.expect("get").into_inner();
    let jwk = read.key.and_then(|key| key.public_key_jwk).expect("a JWK");
    assert!(!jwk.fields.contains_key("alg"), "{jwk:?}");
    assert_eq!(
        jwk.fields.get("crv").and_then(|c| c.kind.clone()),
        Some(prost_types::value::Kind::StringValue("Ed25519".into()))
    );
    server.stop().await;
}

/// A second process on the same database with the first one's issuer, as processes behind one load balancer
/// are configured (assertions name the issuer, and tokens carry it).
async fn beside_with_issuer(server: &TestServer) -> TestServer {
    let db = crate::helpers::FreshDb::sharing(server.db.url.clone());
    let mut config = crate::helpers::config(&db, Some(server.token.clone()));
    config.issuer = Some(server.url());
    let running = keymint::app::start(&config).await.expect("start second keymint");
    TestServer { addr: running.addr, running: Some(running), token: server.token.clone(), db }
}

/// The `exp` of a token, read without verifying it.
fn exp_of(token: &str) -> i64 {
    let claims = token.split('.').nth(1).expect("claims");
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).expect("base64")).expect("json");
    claims["exp"].as_i64().expect("exp")
}

fn db_is_postgres(db: &Db) -> bool {
    matches!(db, Db::Postgres(_))
}

/// Stops the server and starts it again on the same database and data directory (the issuer changes with the
/// port, so the test pins it).
async fn restart(server: &mut TestServer) {
    let running = server.running.take().expect("running");
    running.shutdown().await.expect("shutdown");
    let mut config = crate::helpers::config(&server.db, Some(server.token.clone()));
    config.listen = server.addr;
    let running = keymint::app::start(&config).await.expect("restart");
    server.addr = running.addr;
    server.running = Some(running);
}

on_both_databases!(api_keys_are_introspected_like_a_verify, api_key_introspection);
async fn api_key_introspection(db: Db) {
    let server = TestServer::start(db).await;
    let http = Http::h2c(&server);
    let key = app_with_key(&server, "billing", &[]).await;
    let created = server
        .api_keys()
        .await
        .create_api_key(server.req(CreateApiKeyRequest {
            allowed_cidrs: vec!["10.0.0.0/8".into()],
            metadata: [("team".to_owned(), "billing".to_owned())].into(),
            daily_quota: 2,
            ..api_key_request("svc", &["invoices:read", "invoices:write"])
        }))
        .await
        .expect("create")
        .into_inner();
    let secret = created.secret;
    let key_id = created.api_key.expect("record").id;
    // Limited to networks: inactive unless the request names an allowed client_ip.
    assert_eq!(introspect(&http, &server, &key, &secret, &[]).await, json!({"active": false}));
    assert_eq!(
        introspect(&http, &server, &key, &secret, &[("client_ip", "192.168.1.1")]).await,
        json!({"active": false})
    );
    let active = introspect(&http, &server, &key, &secret, &[("client_ip", "10.1.2.3")]).await;
    assert_eq!(active["active"], true, "{active}");
    assert_eq!(active["key_id"], key_id);
    assert_eq!(active["scope"], "invoices:read invoices:write");
    assert_eq!(active["metadata"], json!({"team": "billing"}));
    assert!(active.get("exp").is_none(), "the key does not expire");
    // Usage and limits count: the daily quota of 2 is used up by the second valid introspection.
    assert_eq!(introspect(&http, &server, &key, &secret, &[("client_ip", "10.1.2.3")]).await["active"], true);
    assert_eq!(
        introspect(&http, &server, &key, &secret, &[("client_ip", "10.1.2.3")]).await,
        json!({"active": false})
    );
    // A key of another organization is not the caller's to introspect.
    let other_org = server
        .admin()
        .await
        .add_org(server.req(keymint::api::pb::keymint::admin::v1::AddOrgRequest { name: "other".into() }))
        .await
        .expect("org")
        .into_inner()
        .id;
    let foreign = server
        .api_keys()
        .await
        .create_api_key(server.req_in(&other_org, api_key_request("foreign", &["invoices:read"])))
        .await
        .expect("create")
        .into_inner()
        .secret;
    assert_eq!(introspect(&http, &server, &key, &foreign, &[]).await, json!({"active": false}));
    let (status, answer) = {
        let assertion = sign(&key, &claims(&key, &server.url()));
        let params = vec![
            ("client_assertion_type", CLIENT_ASSERTION_TYPE.to_owned()),
            ("client_assertion", assertion),
            ("token", secret.clone()),
            ("client_ip", "not-an-ip".to_owned()),
        ];
        http.post("/oauth/v2/introspect", &pairs(&params)).await
    };
    assert_eq!((status, answer["error"].as_str()), (400, Some("invalid_request")));
    server.stop().await;
}

on_both_databases!(tokens_of_a_removed_application_are_inactive, removed_application);
async fn removed_application(db: Db) {
    let server = TestServer::start(db).await;
    let http = Http::http1(&server);
    let key = app_with_key(&server, "billing", &[]).await;
    let access = token(&http, &server, &key, &[]).await.1["access_token"].as_str().expect("token").to_owned();
    // A second application of the same project introspects.
    let second_app = server
        .management()
        .await
        .add_api_app(server.req(AddApiAppRequest {
            project_id: key.project_id.clone(),
            name: "resource-server".into(),
            ..Default::default()
        }))
        .await
        .expect("app")
        .into_inner()
        .app_id;
    let second =
        add_key(&server, &key.project_id, &second_app, key_request(&key.project_id, &second_app)).await;
    assert_eq!(introspect(&http, &server, &second, &access, &[]).await["active"], true);
    server
        .management()
        .await
        .remove_app(
            server.req(RemoveAppRequest { project_id: key.project_id.clone(), app_id: key.app_id.clone() }),
        )
        .await
        .expect("remove app");
    assert_eq!(introspect(&http, &server, &second, &access, &[]).await, json!({"active": false}));
    let refused_answer = token(&http, &server, &key, &[]).await;
    refused(&refused_answer, 401, "invalid_client", "");
    server.stop().await;
}

on_both_databases!(an_introspected_token_turns_inactive_when_it_expires, expiry);
async fn expiry(db: Db) {
    let server =
        TestServer::start_with(db, |config| config.access_token_ttl = std::time::Duration::from_secs(2))
            .await;
    let http = Http::http1(&server);
    let key = app_with_key(&server, "billing", &[]).await;
    let access = token(&http, &server, &key, &[]).await.1["access_token"].as_str().expect("token").to_owned();
    // Introspected twice (the second answer comes from the verified-token cache), then once it has expired.
    for _ in 0..2 {
        assert_eq!(introspect(&http, &server, &key, &access, &[]).await["active"], true);
    }
    let exp = exp_of(&access);
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    while now() as i64 <= exp {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(introspect(&http, &server, &key, &access, &[]).await, json!({"active": false}));
    server.stop().await;
}

on_both_databases!(rotated_signing_keys_keep_old_tokens_verifying, rotation);
async fn rotation(db: Db) {
    let mut server = TestServer::start(db.clone()).await;
    let http = Http::http1(&server);
    let key = app_with_key(&server, "billing", &[]).await;
    let old = token(&http, &server, &key, &[]).await.1["access_token"].as_str().expect("token").to_owned();
    let old_kid = jsonwebtoken::decode_header(&old).expect("header").kid.expect("kid");
    let new_kid =
        server.running.as_ref().expect("running").services.rotate_signing_key().await.expect("rotate");
    assert_ne!(old_kid, new_kid);
    let (_, jwks) = http.get("/oauth/v2/keys").await;
    let kids: Vec<&str> =
        jwks["keys"].as_array().expect("keys").iter().filter_map(|k| k["kid"].as_str()).collect();
    assert_eq!(kids, [old_kid.as_str(), new_kid.as_str()], "the old key stays published");
    let new = token(&http, &server, &key, &[]).await.1["access_token"].as_str().expect("token").to_owned();
    assert_eq!(jsonwebtoken::decode_header(&new).expect("header").kid.as_deref(), Some(new_kid.as_str()));
    for token in [&old, &new] {
        assert_eq!(introspect(&http, &server, &key, token, &[]).await["active"], true);
        verify_with_jwks(&http, &server, token, &key.project_id).await;
    }
    // `keymint signing-keys rotate` adds a third key (here while the server is stopped); after the restart all
    // three tokens' keys are published, the newest signs, and the older tokens still verify.
    let running = server.running.take().expect("running");
    running.shutdown().await.expect("shutdown");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_keymint"));
    command.args(["signing-keys", "rotate"]).env_clear().env("KEYMINT_DATA_DIR", server.db.data_dir());
    if let Some(url) = &server.db.url {
        command.env("KEYMINT_DATABASE_URL", url).env("KEYMINT_MASTER_KEY", crate::helpers::TEST_MASTER_KEY);
    }
    let output = command.output().expect("run keymint signing-keys rotate");
    assert!(output.status.success(), "rotate failed: {}", String::from_utf8_lossy(&output.stdout));
    let mut config = crate::helpers::config(&server.db, Some(server.token.clone()));
    config.listen = server.addr;
    server.running = Some(keymint::app::start(&config).await.expect("restart"));
    let http = Http::http1(&server);
    let (_, jwks) = http.get("/oauth/v2/keys").await;
    assert_eq!(jwks["keys"].as_array().expect("keys").len(), 3);
    let newest = token(&http, &server, &key, &[]).await.1["access_token"].as_str().expect("token").to_owned();
    let newest_kid = jsonwebtoken::decode_header(&newest).expect("header").kid.expect("kid");
    assert!(newest_kid != old_kid && newest_kid != new_kid, "the key the command added signs");
    for token in [&old, &new, &newest] {
        assert_eq!(introspect(&http, &server, &key, token, &[]).await["active"], true);
    }
    // A process whose master key cannot open the stored keys refuses to start, and says why.
    let running = server.running.take().expect("running");
    running.shutdown().await.expect("shutdown");
    let mut config = crate::helpers::config(&server.db, Some(server.token.clone()));
    config.master_key =
        Some(keymint::crypto::seal::MasterKey::generate().expect("key").to_base64().to_string());
    let error = keymint::app::start(&config).await.err().expect("a wrong master key must stop the start");
    assert!(error.to_string().contains("master key cannot open"), "{error}");
    if !db_is_postgres(&db) {
        // SQLite generated its master key into the data directory, readable by its owner only.
        let path = server.db.data_dir().join("master.key");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).expect("master.key").permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }
    server.db.drop_database().await;
}

on_both_databases!(no_private_key_or_token_reaches_the_database, database_scan);
async fn database_scan(db: Db) {
    let server = TestServer::start(db).await;
    let http = Http::http1(&server);
    let key = app_with_key(&server, "billing", &[]).await;
    let access = token(&http, &server, &key, &[]).await.1["access_token"].as_str().expect("token").to_owned();
    assert_eq!(revoke(&http, &server, &key, &access).await.0, 200);
    server.running.as_ref().expect("running").services.rotate_signing_key().await.expect("rotate");
    let (_, jwks) = http.get("/oauth/v2/keys").await;
    let moduli: Vec<Vec<u8>> = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| URL_SAFE_NO_PAD.decode(k["n"].as_str().expect("n")).expect("n"))
        .collect();
    assert_eq!(moduli.len(), 2);
    let (_, app_der) = pkcs8_pem(&key.private_pem);
    let dump = crate::helpers::dump_every_table(server.db.url.as_deref(), &server.db.data_dir()).await;
    let app_body: String = key.private_pem.lines().filter(|l| !l.starts_with("-----")).collect();
    for (table, rows) in &dump {
        assert!(!rows.contains("PRIVATE KEY"), "{table} holds a private key PEM");
        assert!(!rows.contains(&app_body[..64]), "{table} holds the application's private key");
        assert!(!rows.contains(&access), "{table} holds an access token");
        // Every base64 run decoded: no signing key's or application key's private DER appears in the clear.
        for word in rows.split(|c: char| !(c.is_ascii_alphanumeric() || c == '+' || c == '/' || c == '=')) {
            if word.len() < 200 {
                continue;
            }
            let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(word) else { continue };
            assert!(!contains(&bytes, &app_der), "{table} holds the application key's DER");
            for n in &moduli {
                // A private key's DER holds its modulus; a sealed one does not show it.
                assert!(!contains(&bytes, n), "{table} holds a signing key unencrypted");
            }
        }
    }
    let sealed = dump.iter().any(|(_, rows)| rows.contains("sealedPrivateKey"));
    assert!(sealed, "the signing keys are stored, sealed");
    server.stop().await;
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The keymint binary at debug level, with its log captured, on SQLite or on the given PostgreSQL database.
struct Process {
    child: std::process::Child,
    addr: String,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

fn spawn_keymint(data_dir: &std::path::Path, database_url: Option<&str>, token: &str) -> Process {
    use std::io::{BufRead, BufReader};
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_keymint"));
    command
        .env_clear()
        .env("KEYMINT_LOG", "debug")
        .env("KEYMINT_LOG_FORMAT", "json")
        .env("KEYMINT_LISTEN", "127.0.0.1:0")
        .env("KEYMINT_DATA_DIR", data_dir)
        .env("KEYMINT_ADMIN_TOKEN", token)
        .env("KEYMINT_KEY_POOL_SIZE", "2")
        .env("KEYMINT_KEY_POOL_WORKERS", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(url) = database_url {
        command.env("KEYMINT_DATABASE_URL", url).env("KEYMINT_MASTER_KEY", crate::helpers::TEST_MASTER_KEY);
    }
    let mut child = command.spawn().expect("start keymint");
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if let Ok(event) = serde_json::from_str::<Value>(&line)
                && event["fields"]["message"].as_str().is_some_and(|m| m.starts_with("keymint is listening"))
                && let Some(addr) = event["fields"]["addr"].as_str()
            {
                let _ = addr_tx.send(addr.to_owned());
            }
            let mut log = sink.lock().expect("log");
            log.push_str(&line);
            log.push('\n');
        }
    });
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let mut log = sink.lock().expect("log");
            log.push_str(&line);
            log.push('\n');
        }
    });
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("keymint did not start: {}", log.lock().expect("log")));
    Process { child, addr, log }
}

on_both_databases!(the_debug_log_holds_no_assertion_token_or_private_key, debug_log);
async fn debug_log(db: Db) {
    let fresh = crate::helpers::FreshDb::create(&db).await;
    let token = keymint::crypto::secret::new_secret("km_admin_").expect("rng").to_string();
    let mut process = spawn_keymint(&fresh.data_dir(), fresh.url.as_deref(), &token);
    // A TestServer-like view of the process for the helpers above.
    let server = TestServer {
        running: None,
        addr: process.addr.parse().expect("addr"),
        token: token.clone(),
        db: crate::helpers::FreshDb::sharing(fresh.url.clone()),
    };
    let http = Http::http1(&server);
    let key = app_with_key(&server, "billing", &[]).await;
    let assertion = sign(&key, &claims(&key, &server.url()));
    let (status, answer) = http.post("/oauth/v2/token", &pairs(&client_credentials(&assertion))).await;
    assert_eq!(status, 200);
    let access = answer["access_token"].as_str().expect("token").to_owned();
    let refused_assertion = sign_as(&key, "404", &claims(&key, &server.url()));
    assert_eq!(http.post("/oauth/v2/token", &pairs(&client_credentials(&refused_assertion))).await.0, 401);
    assert_eq!(introspect(&http, &server, &key, &access, &[]).await["active"], true);
    assert_eq!(revoke(&http, &server, &key, &access).await.0, 200);
    let (_, secret) = server.api_key("k", &["keys:read"]).await;
    introspect(&http, &server, &key, &secret, &[]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = process.child.kill();
    let _ = process.child.wait();
    let log = process.log.lock().expect("log").clone();
    assert!(log.contains("\"path\":\"/oauth/v2/token\""), "the OAuth requests are logged");
    assert!(log.contains("DEBUG"), "the log is at debug level");
    let (_, der) = pkcs8_pem(&key.private_pem);
    let pem_body: String = key.private_pem.lines().filter(|l| !l.starts_with("-----")).collect();
    for (what, secret_text) in [
        ("an assertion", assertion.as_str()),
        ("a refused assertion", refused_assertion.as_str()),
        ("an access token", access.as_str()),
        ("an API key", secret.as_str()),
        ("the admin token", token.as_str()),
    ] {
        for part in secret_text.split('.').filter(|p| p.len() > 16) {
            assert!(!log.contains(part), "the log holds {what}");
        }
    }
    assert!(!log.contains(&pem_body[..64]), "the log holds an application private key");
    assert!(!log.contains("PRIVATE KEY"));
    assert!(!log.contains(&URL_SAFE_NO_PAD.encode(&der)[..64]));
    let mut fresh = fresh;
    fresh.drop_database().await;
}

/// Python authlib (OAuth2Session with PrivateKeyJWT) and PyJWT (PyJWKClient) against a real server: an outside
/// OAuth client library, unmodified, given keymint's key file. KEYMINT_TEST_PYTHON names a Python with them
/// installed (`.ci/tools.sh` makes one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs KEYMINT_TEST_PYTHON: a Python with authlib, PyJWT, requests and grpcio (source .ci/tools.sh)"]
async fn an_outside_client_library_gets_introspects_and_revokes_tokens() {
    let python = crate::helpers::outside_tool("KEYMINT_TEST_PYTHON", crate::helpers::PYTHON_NEEDS);
    let server = TestServer::start(Db::Sqlite).await;
    let key = app_with_key(&server, "billing", &["invoices:read", "invoices:write"]).await;
    let dir = tempfile::tempdir().expect("dir");
    let key_path = dir.path().join("key.json");
    std::fs::write(&key_path, &key.key_file).expect("write key file");
    let result_path = dir.path().join("result.json");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/oauth_flow.py");
    let (url, key_arg, result_arg) = (server.url(), key_path.clone(), result_path.clone());
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&python).arg(script).arg(url).arg(&key_arg).arg(&result_arg).output()
    })
    .await
    .expect("join")
    .expect("run python");
    assert!(
        output.status.success(),
        "oauth_flow.py failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // The script revoked its token: keymint agrees it is inactive.
    let result: Value = serde_json::from_slice(&std::fs::read(&result_path).expect("result")).expect("json");
    let revoked = result["revoked_token"].as_str().expect("revoked_token");
    let http = Http::http1(&server);
    assert_eq!(introspect(&http, &server, &key, revoked, &[]).await, json!({"active": false}));
    server.stop().await;
}

on_both_databases!(the_signing_key_rotates_on_its_schedule, scheduled_rotation);
async fn scheduled_rotation(db: Db) {
    let fresh = crate::helpers::FreshDb::create(&db).await;
    let token = keymint::crypto::secret::new_secret("km_admin_").expect("rng").to_string();
    let mut config = crate::helpers::config(&fresh, Some(token.clone()));
    // A key older than 2 s is rotated; the schedule is checked every second.
    config.signing_key_rotation = Duration::from_secs(2);
    let running = keymint::app::start(&config).await.expect("start");
    let server = TestServer { addr: running.addr, running: Some(running), token, db: fresh };
    let http = Http::http1(&server);
    let kids = |jwks: Value| -> Vec<String> {
        jwks["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .filter_map(|k| k["kid"].as_str().map(str::to_owned))
            .collect()
    };
    let first = kids(http.get("/oauth/v2/keys").await.1);
    assert_eq!(first.len(), 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut now_published = first.clone();
    while now_published.len() < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        now_published = kids(http.get("/oauth/v2/keys").await.1);
    }
    assert_eq!(now_published.first(), first.first(), "the first key stays published");
    assert!(now_published.len() >= 2, "a new key after its rotation age: {now_published:?}");
    server.stop().await;
}

/// openid-client 6 (npm, pinned in tests/node/package-lock.json), unmodified, with an RSA, an EC P-256 and an
/// Ed25519 key file: discovery, client_credentials with private_key_jwt (Ed25519 signed as RFC 9864's "Ed25519"),
/// the token validated by oauth4webapi's validateJwtAccessToken through jwks_uri, introspection by assertion and by
/// a bearer token with tokens:introspect (of the token and of an API key), and revocation. Runs when
/// KEYMINT_TEST_NODE names a Node.js and `npm --prefix tests/node ci` has been run (.ci/tools.sh does both).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs KEYMINT_TEST_NODE: Node.js, with openid-client installed in tests/node (source .ci/tools.sh)"]
async fn openid_client_gets_validates_introspects_and_revokes_tokens() {
    let node = crate::helpers::outside_tool("KEYMINT_TEST_NODE", "Node.js, after npm --prefix tests/node ci");
    let server = TestServer::start(Db::Sqlite).await;
    let rsa = app_with_key(&server, "billing", &["invoices:read", "tokens:introspect"]).await;
    let mut key_files = vec![rsa.clone()];
    for algorithm in [KeyAlgorithm::EcP256, KeyAlgorithm::Ed25519] {
        let mut request = key_request(&rsa.project_id, &rsa.app_id);
        request.algorithm = algorithm as i32;
        key_files.push(add_key(&server, &rsa.project_id, &rsa.app_id, request).await);
    }
    let (_, secret) = server.api_key("introspected", &["invoices:read"]).await;
    let dir = tempfile::tempdir().expect("dir");
    let paths: Vec<_> = key_files
        .iter()
        .enumerate()
        .map(|(n, key)| {
            let path = dir.path().join(format!("key-{n}.json"));
            std::fs::write(&path, &key.key_file).expect("write key file");
            path
        })
        .collect();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node/openid_client.mjs");
    let url = server.url();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&node).arg(script).arg(url).arg(secret).args(&paths).output()
    })
    .await
    .expect("join")
    .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "openid_client.mjs failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: Value = serde_json::from_str(stdout.lines().last().expect("a summary")).expect("json");
    let algs: Vec<&str> =
        summary.as_array().expect("array").iter().filter_map(|k| k["alg"].as_str()).collect();
    assert_eq!(algs, ["RS256", "ES256", "Ed25519"]);
    // What the library revoked, keymint agrees is inactive.
    let http = Http::http1(&server);
    for revoked in summary.as_array().expect("array") {
        let token = revoked["revoked_token"].as_str().expect("revoked_token");
        assert_eq!(introspect(&http, &server, &rsa, token, &[]).await, json!({"active": false}));
    }
    server.stop().await;
}
