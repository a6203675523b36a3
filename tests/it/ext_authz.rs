//! envoy.service.auth.v3.Authorization called as Envoy calls it, with a tonic client: API keys and access tokens
//! allowed with who they are and without the secret; refusals with 401, 403 and 429, their JSON bodies and
//! retry-after; the client address from the check's source and x-forwarded-for, believed only from trusted
//! proxies; and the same trusted-proxy rule for keymint's own callers.

use std::collections::HashMap;

use keymint::api::pb::{
    envoy::{
        config::core::v3::{Address, HeaderValueOption, SocketAddress, address, socket_address},
        service::auth::v3::{
            AttributeContext, CheckRequest, CheckResponse, attribute_context,
            authorization_client::AuthorizationClient, check_response::HttpResponse,
        },
    },
    keymint::apikeys::v1::{ListApiKeysRequest, RateLimit},
};
use serde_json::Value;
use tonic::metadata::MetadataValue;

use crate::{
    helpers::{Db, TestServer, api_key_request, error_of, on_both_databases},
    oauth::{Http, app_with_key, token},
};

/// What Envoy would ask about a request from `source` with these headers, on a route needing `scopes`.
pub fn check_request(source: &str, headers: &[(&str, &str)], scopes: &str) -> CheckRequest {
    check_with(source, headers, &[("required_scopes", scopes)])
}

/// The same with these context extensions of the route (empty values left out).
pub fn check_with(source: &str, headers: &[(&str, &str)], extensions: &[(&str, &str)]) -> CheckRequest {
    let peer = |ip: &str| attribute_context::Peer {
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: ip.into(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(40_000)),
            })),
        }),
    };
    let extensions = extensions
        .iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect();
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(peer(source)),
            destination: Some(peer("127.0.0.1")),
            request: Some(attribute_context::Request {
                http: Some(attribute_context::HttpRequest {
                    id: "1".into(),
                    method: "GET".into(),
                    headers: headers.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
                    path: "/reports".into(),
                    host: "api.example".into(),
                }),
            }),
            context_extensions: extensions,
        }),
    }
}

/// The verdict, as Envoy reads it: allowed (headers added, headers removed) or denied (HTTP status, headers,
/// JSON body).
#[derive(Debug)]
pub enum Verdict {
    Allowed { add: HashMap<String, String>, remove: Vec<String> },
    Denied { status: i32, headers: HashMap<String, String>, body: Value },
}

fn headers(options: &[HeaderValueOption]) -> HashMap<String, String> {
    options.iter().filter_map(|o| o.header.as_ref()).map(|h| (h.key.clone(), h.value.clone())).collect()
}

pub fn verdict(response: CheckResponse) -> Verdict {
    let code = response.status.as_ref().map_or(-1, |s| s.code);
    match response.http_response {
        Some(HttpResponse::OkResponse(ok)) => {
            assert_eq!(code, 0, "allowed with status OK");
            Verdict::Allowed { add: headers(&ok.headers), remove: ok.headers_to_remove }
        }
        Some(HttpResponse::DeniedResponse(denied)) => {
            assert_ne!(code, 0, "denied with a status other than OK");
            let body: Value = serde_json::from_str(&denied.body).expect("a JSON body");
            assert_eq!(body["code"], code, "the body's code is the status code");
            Verdict::Denied {
                status: denied.status.map_or(0, |s| s.code),
                headers: headers(&denied.headers),
                body,
            }
        }
        None => panic!("no HTTP response in {response:?}"),
    }
}

async fn check(server: &TestServer, request: CheckRequest) -> Verdict {
    let mut client = AuthorizationClient::new(server.channel().await);
    verdict(client.check(request).await.expect("Check").into_inner())
}

fn denied(verdict: &Verdict, status: i32, reason: &str) {
    let Verdict::Denied { status: got, body, headers } = verdict else { panic!("allowed: {verdict:?}") };
    assert_eq!((*got, body["reason"].as_str().unwrap_or_default()), (status, reason), "{body}");
    assert_eq!(headers.get("content-type").map(String::as_str), Some("application/json"));
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

on_both_databases!(api_keys_are_checked_for_envoy, api_keys_checked);
async fn api_keys_checked(db: Db) {
    let server = TestServer::start(db).await;
    let (key_id, secret) = server.api_key("reports", &["reports:read", "reports:list"]).await;
    let bearer = format!("Bearer {secret}");

    // Allowed: the upstream learns who called, and neither the secret nor a client's own x-keymint-* header.
    let spoofed = [("authorization", bearer.as_str()), ("x-keymint-key-id", "1"), ("x-keymint-extra", "x")];
    let Verdict::Allowed { add, remove } =
        check(&server, check_request("198.51.100.4", &spoofed, "reports:read")).await
    else {
        panic!("refused")
    };
    assert_eq!(add.get("x-keymint-key-id"), Some(&key_id));
    assert_eq!(add.get("x-keymint-scopes").map(String::as_str), Some("reports:read reports:list"));
    assert!(add.get("x-keymint-org-id").is_some_and(|org| !org.is_empty()));
    assert!(remove.contains(&"authorization".to_owned()) && remove.contains(&"x-keymint-extra".to_owned()));
    assert!(!add.values().any(|v| v.contains(&secret)), "the secret is never forwarded");

    // The same key in x-api-key, scopes separated by commas or spaces.
    let headers = [("x-api-key", secret.as_str()), ("authorization", "Basic dXNlcjpwdw==")];
    let Verdict::Allowed { add, remove } =
        check(&server, check_request("198.51.100.4", &headers, "reports:read, reports:list")).await
    else {
        panic!("refused")
    };
    assert_eq!(add.get("x-keymint-key-id"), Some(&key_id));
    assert_eq!(remove, ["x-api-key"], "another scheme's authorization is the upstream's business");

    // Refused: no credential, an unknown one, a scope the key lacks.
    denied(&check(&server, check_request("198.51.100.4", &[], "")).await, 401, "MISSING_CREDENTIAL");
    let unknown = "Bearer km_live_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let verdict = check(&server, check_request("198.51.100.4", &[("authorization", unknown)], "")).await;
    let Verdict::Denied { status: 401, headers, .. } = &verdict else { panic!("{verdict:?}") };
    assert!(headers.get("www-authenticate").is_some_and(|v| v.starts_with("Bearer")));
    let garbage =
        check(&server, check_request("198.51.100.4", &[("authorization", "Bearer nonsense")], "")).await;
    denied(&garbage, 401, "UNKNOWN_CREDENTIAL");
    let scope =
        check(&server, check_request("198.51.100.4", &[("authorization", bearer.as_str())], "reports:write"))
            .await;
    denied(&scope, 403, "INSUFFICIENT_SCOPES");

    // A route for another organization only, or needing more scopes than any key holds.
    let elsewhere = check_with("198.51.100.4", &spoofed, &[("org_id", "1")]);
    denied(&check(&server, elsewhere).await, 401, "API_KEY_NOT_FOUND");
    let again = check(&server, check_request("198.51.100.4", &spoofed, "")).await;
    assert!(matches!(again, Verdict::Allowed { .. }), "still valid elsewhere: {again:?}");
    let many: Vec<String> = (0..51).map(|i| format!("s{i}:read")).collect();
    let many = check_request("198.51.100.4", &spoofed, &many.join(","));
    denied(&check(&server, many).await, 403, "INSUFFICIENT_SCOPES");
    // A TEST key passes only routes that accept them.
    let mut test_key = api_key_request("staging", &["reports:read"]);
    test_key.environment = keymint::api::pb::keymint::apikeys::v1::Environment::Test as i32;
    let test_key =
        server.api_keys().await.create_api_key(server.req(test_key)).await.expect("create").into_inner();
    let headers = [("x-api-key", test_key.secret.as_str())];
    denied(&check(&server, check_request("198.51.100.4", &headers, "")).await, 403, "TEST_KEY_NOT_ALLOWED");
    let staging = check_with("198.51.100.4", &headers, &[("accept_test_keys", "true")]);
    assert!(matches!(check(&server, staging).await, Verdict::Allowed { .. }));

    // A revoked key.
    let mut api_keys = server.api_keys().await;
    api_keys
        .delete_api_key(
            server.req(keymint::api::pb::keymint::apikeys::v1::DeleteApiKeyRequest { id: key_id }),
        )
        .await
        .expect("delete");
    let revoked =
        check(&server, check_request("198.51.100.4", &[("authorization", bearer.as_str())], "")).await;
    let Verdict::Denied { status: 401, .. } = revoked else { panic!("{revoked:?}") };
    server.stop().await;
}

on_both_databases!(rate_limited_keys_get_429_with_retry_after, rate_limited);
async fn rate_limited(db: Db) {
    let server = TestServer::start(db).await;
    let mut request = api_key_request("limited", &["reports:read"]);
    request.rate_limit = Some(RateLimit { per_second: 1, burst: 1 });
    let created =
        server.api_keys().await.create_api_key(server.req(request)).await.expect("create").into_inner();
    let headers = [("x-api-key", created.secret.as_str())];
    let first = check(&server, check_request("198.51.100.4", &headers, "")).await;
    assert!(matches!(first, Verdict::Allowed { .. }), "{first:?}");
    let second = check(&server, check_request("198.51.100.4", &headers, "")).await;
    denied(&second, 429, "RATE_LIMITED");
    let Verdict::Denied { headers, .. } = second else { unreachable!() };
    let retry: u64 = headers.get("retry-after").expect("retry-after").parse().expect("seconds");
    assert!((1..=2).contains(&retry), "retry-after {retry}");
    server.stop().await;
}

// A key limited to 203.0.113.0/24, through a proxy at 127.0.0.1 that forwards the client's address.
on_both_databases!(networks_are_checked_on_the_forwarded_address_of_trusted_proxies_only, networks);
async fn networks(db: Db) {
    let trusting = TestServer::start_with(db.clone(), |config| {
        config.trusted_proxies = vec!["127.0.0.0/8".parse().expect("cidr")];
    })
    .await;
    let mut request = api_key_request("office", &["reports:read"]);
    request.allowed_cidrs = vec!["203.0.113.0/24".into()];
    let created =
        trusting.api_keys().await.create_api_key(trusting.req(request)).await.expect("create").into_inner();
    let key = created.secret.as_str();

    // Straight from the office, and from the office through a trusted proxy: allowed.
    let direct = check(&trusting, check_request("203.0.113.7", &[("x-api-key", key)], "")).await;
    assert!(matches!(direct, Verdict::Allowed { .. }), "{direct:?}");
    let forwarded = [("x-api-key", key), ("x-forwarded-for", "192.0.2.1, 203.0.113.7, 127.0.0.1")];
    let proxied = check(&trusting, check_request("127.0.0.1", &forwarded, "")).await;
    assert!(matches!(proxied, Verdict::Allowed { .. }), "the right-most untrusted entry: {proxied:?}");
    // The office address written by a client that is no trusted proxy is ignored.
    let spoofed = [("x-api-key", key), ("x-forwarded-for", "203.0.113.7")];
    denied(&check(&trusting, check_request("198.51.100.4", &spoofed, "")).await, 403, "IP_NOT_ALLOWED");
    // A client left of the office entry cannot push it out: 192.0.2.1 is the client here.
    let outside = [("x-api-key", key), ("x-forwarded-for", "203.0.113.7, 192.0.2.1")];
    denied(&check(&trusting, check_request("127.0.0.1", &outside, "")).await, 403, "IP_NOT_ALLOWED");

    // keymint's own callers: the key authenticates a gRPC call from the office through the trusted proxy.
    let mut api_keys = trusting.api_keys().await;
    let list = |forwarded: &str| {
        let mut request = crate::helpers::with_token(ListApiKeysRequest::default(), key);
        request.metadata_mut().insert("x-forwarded-for", MetadataValue::try_from(forwarded).expect("header"));
        request
    };
    let refused = api_keys.list_api_keys(list("203.0.113.7")).await.expect_err("scope");
    assert_ne!(error_of(&refused).1, "IP_NOT_ALLOWED", "the office address counts: {refused:?}");
    let outside = api_keys.list_api_keys(list("192.0.2.1")).await.expect_err("outside");
    assert_eq!(error_of(&outside).1, "IP_NOT_ALLOWED", "{outside:?}");
    trusting.stop().await;

    // Without trusted proxies, x-forwarded-for is nobody's word: the peer (127.0.0.1) is the client.
    let plain = TestServer::start(db).await;
    let mut request = api_key_request("office", &["reports:read"]);
    request.allowed_cidrs = vec!["203.0.113.0/24".into()];
    let created =
        plain.api_keys().await.create_api_key(plain.req(request)).await.expect("create").into_inner();
    let forwarded = [("x-api-key", created.secret.as_str()), ("x-forwarded-for", "203.0.113.7")];
    denied(&check(&plain, check_request("127.0.0.1", &forwarded, "")).await, 403, "IP_NOT_ALLOWED");
    let mut api_keys = plain.api_keys().await;
    let mut request = crate::helpers::with_token(ListApiKeysRequest::default(), &created.secret);
    request.metadata_mut().insert("x-forwarded-for", MetadataValue::from_static("203.0.113.7"));
    let spoofed = api_keys.list_api_keys(request).await.expect_err("spoofed");
    assert_eq!(error_of(&spoofed).1, "IP_NOT_ALLOWED", "{spoofed:?}");
    plain.stop().await;
}

on_both_databases!(access_tokens_are_checked_for_envoy, access_tokens);
async fn access_tokens(db: Db) {
    let server = TestServer::start(db).await;
    let http = Http::h2c(&server);
    let key = app_with_key(&server, "billing", &["invoices:read", "invoices:write"]).await;
    let (status, answer) = token(&http, &server, &key, &[("scope", "invoices:read")]).await;
    assert_eq!(status, 200, "{answer}");
    let access = format!("Bearer {}", answer["access_token"].as_str().expect("token"));
    let headers = [("authorization", access.as_str())];

    let Verdict::Allowed { add, remove } =
        check(&server, check_request("198.51.100.4", &headers, "invoices:read")).await
    else {
        panic!("refused")
    };
    assert_eq!(add.get("x-keymint-client-id"), Some(&key.client_id));
    assert_eq!(add.get("x-keymint-scopes").map(String::as_str), Some("invoices:read"));
    assert!(!add.contains_key("x-keymint-key-id"));
    assert_eq!(remove, ["authorization"]);
    let scope = check(&server, check_request("198.51.100.4", &headers, "invoices:write")).await;
    denied(&scope, 403, "INSUFFICIENT_SCOPES");
    // A token with a character of its signature changed is no token (not the last one, whose low bits are
    // padding).
    let at = access.len() - 10;
    let swapped = if &access[at..=at] == "A" { "B" } else { "A" };
    let forged = format!("{}{swapped}{}", &access[..at], &access[at + 1..]);
    let forged =
        check(&server, check_request("198.51.100.4", &[("authorization", forged.as_str())], "")).await;
    denied(&forged, 401, "UNKNOWN_CREDENTIAL");
    server.stop().await;
}
