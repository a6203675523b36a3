//! JSON/REST on the one port, as a JSON client uses it: the google.api.http routes over HTTP/1.1 and HTTP/2,
//! the proto3 JSON mapping both ways, errors with their HTTP status and body, and /openapi.json.

use std::collections::BTreeSet;

use base64::{Engine, engine::general_purpose::STANDARD};
use bytes::Bytes;
use http::{HeaderMap, Method};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use keymint::api::pb::keymint::management::v1::{GetAppKeyRequest, KeyType};
use serde_json::{Value, json};

use crate::helpers::{Db, TestServer, on_both_databases};

/// A JSON client: HTTP/1.1, or HTTP/2 with prior knowledge (h2c).
struct Json {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    token: Option<String>,
}

impl Json {
    fn http1(server: &TestServer) -> Json {
        Json {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: server.url(),
            token: Some(server.token.clone()),
        }
    }

    fn h2c(server: &TestServer) -> Json {
        Json {
            client: Client::builder(TokioExecutor::new()).http2_only(true).build_http(),
            base: server.url(),
            token: Some(server.token.clone()),
        }
    }

    fn anonymous(mut self) -> Json {
        self.token = None;
        self
    }

    /// Sends `body` (raw text; JSON content type) with extra headers; the status, the parsed answer, headers.
    async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (u16, Value, HeaderMap) {
        let mut request = http::Request::builder().method(method).uri(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if body.is_some() && !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("content-type")) {
            request = request.header("content-type", "application/json");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let body = Full::new(Bytes::from(body.unwrap_or_default().to_owned()));
        let response = self.client.request(request.body(body).expect("request")).await.expect("HTTP request");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        let json = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).unwrap_or_else(|e| panic!("a JSON answer ({e}): {body:?}"))
        };
        (parts.status.as_u16(), json, parts.headers)
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string());
        let (status, json, _) = self.raw(method, path, body.as_deref(), &[]).await;
        (status, json)
    }

    async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, json) = self.call(method.clone(), path, body).await;
        assert_eq!(status, 200, "{method} {path}: {json}");
        json
    }
}

/// The ErrorInfo reason and the BadRequest fields of an error body, after checking its shape.
fn error_parts(body: &Value, code: i64) -> (String, Vec<String>) {
    assert_eq!(body["code"], code, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    let details = body["details"].as_array().unwrap_or_else(|| panic!("details: {body}"));
    let info = details
        .iter()
        .find(|d| d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo")
        .unwrap_or_else(|| panic!("an ErrorInfo: {body}"));
    assert_eq!(info["domain"], "keymint");
    assert!(info["metadata"].is_object(), "{body}");
    let fields = details
        .iter()
        .find(|d| d["@type"] == "type.googleapis.com/google.rpc.BadRequest")
        .map(|bad| {
            bad["fieldViolations"]
                .as_array()
                .expect("fieldViolations")
                .iter()
                .map(|v| {
                    assert!(v["description"].as_str().is_some_and(|d| !d.is_empty()), "{v}");
                    v["field"].as_str().expect("field").to_owned()
                })
                .collect()
        })
        .unwrap_or_default();
    (info["reason"].as_str().expect("reason").to_owned(), fields)
}

on_both_databases!(json_walk_through, json_walk_through_body);
async fn json_walk_through_body(db: Db) {
    let server = TestServer::start(db).await;
    for (protocol, json) in [("HTTP/1.1", Json::http1(&server)), ("HTTP/2", Json::h2c(&server))] {
        let project = json
            .ok(
                Method::POST,
                "/management/v1/projects",
                Some(json!({ "name": format!("billing {protocol}") })),
            )
            .await;
        let project_id = project["id"].as_str().expect("project id").to_owned();
        // 64-bit integers are strings; timestamps RFC 3339 with Z.
        assert_eq!(project["details"]["sequence"], "1", "{project}");
        assert!(project["details"]["creationDate"].as_str().is_some_and(|d| d.ends_with('Z')), "{project}");

        let app = json
            .ok(
                Method::POST,
                &format!("/management/v1/projects/{project_id}/apps/api"),
                Some(json!({ "name": "invoice-api" })),
            )
            .await;
        let app_id = app["appId"].as_str().expect("appId").to_owned();
        let keys = format!("/management/v1/projects/{project_id}/apps/{app_id}/keys");

        // The seed's request, as written.
        let added = json
            .ok(
                Method::POST,
                &keys,
                Some(json!({ "type": "KEY_TYPE_JSON", "expirationDate": "2030-01-01T00:00:00Z" })),
            )
            .await;
        let key_id = added["id"].as_str().expect("key id").to_owned();
        assert_eq!(added["details"]["sequence"], "2", "{added}");
        let file: Value = serde_json::from_slice(
            &STANDARD.decode(added["keyDetails"].as_str().expect("keyDetails as base64")).expect("base64"),
        )
        .expect("key file");
        assert_eq!(file["keyId"], key_id.as_str());
        assert_eq!(file["appId"], app_id.as_str());
        assert!(file["key"].as_str().is_some_and(|k| k.starts_with("-----BEGIN RSA PRIVATE KEY-----")));

        // The original field names are accepted too.
        let second = json
            .ok(
                Method::POST,
                &keys,
                Some(json!({ "type": "KEY_TYPE_JSON", "expiration_date": "2031-06-01T12:00:00Z" })),
            )
            .await;
        let second_id = second["id"].as_str().expect("key id").to_owned();

        let got = json.ok(Method::GET, &format!("{keys}/{key_id}"), None).await;
        assert_eq!(got["key"]["id"], key_id.as_str());
        assert_eq!(got["key"]["type"], "KEY_TYPE_JSON", "enums by name: {got}");
        assert_eq!(got["key"]["expirationDate"], "2030-01-01T00:00:00Z");
        assert_eq!(got["key"]["publicKeyJwk"]["kid"], key_id.as_str());
        assert!(got["key"].get("keyDetails").is_none(), "a read never has the private key");

        // What JSON wrote, gRPC reads back identical.
        let by_grpc = server
            .management()
            .await
            .get_app_key(server.req(GetAppKeyRequest {
                project_id: project_id.clone(),
                app_id: app_id.clone(),
                key_id: second_id.clone(),
                ..Default::default()
            }))
            .await
            .expect("gRPC read")
            .into_inner()
            .key
            .expect("key");
        let by_json = json.ok(Method::GET, &format!("{keys}/{second_id}"), None).await;
        assert_eq!(by_grpc.r#type, KeyType::Json as i32);
        assert_eq!(by_grpc.expiration_date.expect("expiration").seconds, 1_938_081_600);
        assert_eq!(by_json["key"]["expirationDate"], "2031-06-01T12:00:00Z");
        assert_eq!(by_json["key"]["publicKeyPem"], by_grpc.public_key_pem.as_str());
        let details = by_grpc.details.expect("details");
        assert_eq!(by_json["key"]["details"]["sequence"], details.sequence.to_string());
        assert_eq!(by_json["key"]["details"]["resourceOwner"], details.resource_owner.as_str());

        let listed = json
            .ok(
                Method::POST,
                &format!("{keys}/_search"),
                Some(json!({ "query": { "limit": 1, "asc": true } })),
            )
            .await;
        let result = listed["result"].as_array().expect("result");
        assert_eq!(result.len(), 1, "{listed}");
        assert_eq!(result[0]["id"], key_id.as_str(), "oldest first");
        assert_eq!(listed["details"]["totalResult"], "2", "{listed}");
        // Views (AIP-157): a list carries no key material unless it asks for KEY_VIEW_FULL; a GET has it unless
        // `?view=KEY_VIEW_BASIC`.
        for key in result {
            assert!(key.get("publicKeyPem").is_none() && key.get("publicKeyJwk").is_none(), "{key}");
            assert_eq!(key["algorithm"], "KEY_ALGORITHM_RSA", "{key}");
        }
        let full = json
            .ok(
                Method::POST,
                &format!("{keys}/_search"),
                Some(json!({ "query": { "asc": true }, "view": "KEY_VIEW_FULL" })),
            )
            .await;
        let full = full["result"].as_array().expect("result");
        assert_eq!(full.len(), 2);
        assert!(full.iter().all(|key| key["publicKeyPem"].is_string() && key["publicKeyJwk"].is_object()));
        assert_eq!(full[0]["publicKeyPem"], got["key"]["publicKeyPem"]);
        let basic = json.ok(Method::GET, &format!("{keys}/{key_id}?view=KEY_VIEW_BASIC"), None).await;
        assert!(
            basic["key"].get("publicKeyPem").is_none() && basic["key"].get("publicKeyJwk").is_none(),
            "{basic}"
        );
        assert_eq!(
            (&basic["key"]["id"], &basic["key"]["expirationDate"]),
            (&got["key"]["id"], &got["key"]["expirationDate"])
        );
        let full = json.ok(Method::GET, &format!("{keys}/{key_id}?view=KEY_VIEW_FULL"), None).await;
        assert_eq!(full, got);
        for bad in ["?view=KEY_VIEW_NOPE", "?view=7"] {
            let (status, refused) = json.call(Method::GET, &format!("{keys}/{key_id}{bad}"), None).await;
            assert_eq!(status, 400, "{bad}: {refused}");
            assert!(refused["message"].as_str().is_some_and(|m| m.contains("view")), "{bad}: {refused}");
        }

        let removed = json.ok(Method::DELETE, &format!("{keys}/{key_id}"), None).await;
        assert!(removed["details"]["sequence"].is_string(), "{removed}");
        let (status, gone) = json.call(Method::GET, &format!("{keys}/{key_id}"), None).await;
        assert_eq!(status, 404, "{gone}");
        error_parts(&gone, 5);
    }
    server.stop().await;
}

on_both_databases!(api_keys_over_json, api_keys_over_json_body);
async fn api_keys_over_json_body(db: Db) {
    let server = TestServer::start(db).await;
    let json = Json::h2c(&server);
    let created = json
        .ok(
            Method::POST,
            "/apikeys/v1/keys",
            Some(json!({
                "title": "billing",
                "scopes": ["invoices:read"],
                "environment": "ENVIRONMENT_LIVE",
                "rate_limit": { "perSecond": 50, "burst": 100 },
                "dailyQuota": "100000",
            })),
        )
        .await;
    let id = created["apiKey"]["id"].as_str().expect("id").to_owned();
    let secret = created["secret"].as_str().expect("secret").to_owned();
    assert!(secret.starts_with("km_live_"));
    assert_eq!(created["apiKey"]["dailyQuota"], "100000", "uint64 as a string: {created}");
    assert_eq!(created["apiKey"]["rateLimit"]["perSecond"], 50);
    let other = json
        .ok(
            Method::POST,
            "/apikeys/v1/keys",
            Some(json!({ "title": "test key", "scopes": ["a:b"], "environment": 2 })),
        )
        .await;
    assert_eq!(
        other["apiKey"]["environment"], "ENVIRONMENT_TEST",
        "enum numbers are accepted, names emitted"
    );

    // Query parameters: scalars, enums by name, and repeated ones.
    let page = json.ok(Method::GET, "/apikeys/v1/keys?limit=1&environment=ENVIRONMENT_LIVE", None).await;
    let result = page["result"].as_array().expect("result");
    let live: Vec<&str> = result.iter().filter_map(|k| k["id"].as_str()).collect();
    assert!(live.contains(&id.as_str()) || page["hasMore"] == true, "{page}");
    assert!(result.iter().all(|k| k["environment"] == "ENVIRONMENT_LIVE"), "{page}");
    let (status, body) = json.call(Method::GET, "/apikeys/v1/keys?limit=1&colour=red", None).await;
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().is_some_and(|m| m.contains("colour")),
        "names the unknown parameter: {body}"
    );

    let verify = |secret: String| {
        let json = &json;
        async move { json.ok(Method::POST, "/apikeys/v1/verify", Some(json!({ "secret": secret }))).await }
    };
    let verdict = verify(secret.clone()).await;
    assert_eq!(verdict["valid"], true, "{verdict}");
    assert_eq!(verdict["code"], "VERIFY_CODE_VALID");
    assert_eq!(verdict["keyId"], id.as_str());

    // The custom verb.
    let rolled = json
        .ok(Method::POST, &format!("/apikeys/v1/keys/{id}:roll"), Some(json!({ "gracePeriod": "0s" })))
        .await;
    let new_secret = rolled["secret"].as_str().expect("new secret").to_owned();
    assert_ne!(new_secret, secret);
    assert_eq!(verify(new_secret.clone()).await["valid"], true);
    // proto3 JSON leaves out fields at their defaults: `valid: false` is no `valid` at all.
    let old = verify(secret).await;
    assert!(
        old.get("valid").is_none() && old["code"] != "VERIFY_CODE_VALID",
        "the old secret stopped: {old}"
    );
    let (status, body) = json.call(Method::GET, &format!("/apikeys/v1/keys/{id}:roll"), None).await;
    assert_eq!(status, 405, "{body}");

    let updated = json
        .ok(
            Method::PATCH,
            &format!("/apikeys/v1/keys/{id}"),
            Some(json!({ "updateMask": ["title", "dailyQuota"], "title": "renamed", "dailyQuota": "5" })),
        )
        .await;
    assert_eq!(updated["apiKey"]["title"], "renamed");
    assert_eq!(updated["apiKey"]["dailyQuota"], "5", "the mask takes JSON names");

    let changes =
        json.ok(Method::POST, &format!("/apikeys/v1/keys/{id}/changes/_search"), Some(json!({}))).await;
    assert!(changes["result"].as_array().is_some_and(|r| r.len() >= 3), "{changes}");

    json.ok(Method::DELETE, &format!("/apikeys/v1/keys/{id}"), None).await;
    let revoked = json.ok(Method::GET, &format!("/apikeys/v1/keys/{id}"), None).await;
    assert_eq!(revoked["apiKey"]["status"], "STATUS_REVOKED");
    assert!(verify(new_secret).await.get("valid").is_none(), "revoked");

    // An API key authenticates JSON calls as it does gRPC ones, scopes included.
    let reader = json
        .ok(
            Method::POST,
            "/apikeys/v1/keys",
            Some(json!({ "title": "reader", "scopes": ["apikeys:read"], "environment": "ENVIRONMENT_LIVE" })),
        )
        .await;
    let reader = Json { token: reader["secret"].as_str().map(str::to_owned), ..Json::http1(&server) };
    reader.ok(Method::GET, "/apikeys/v1/keys", None).await;
    let (status, body) =
        reader.call(Method::POST, "/apikeys/v1/keys", Some(json!({ "title": "x", "scopes": ["a:b"] }))).await;
    assert_eq!(status, 403, "{body}");
    error_parts(&body, 7);
    server.stop().await;
}

on_both_databases!(errors_over_json, errors_over_json_body);
async fn errors_over_json_body(db: Db) {
    let server = TestServer::start(db).await;
    for json in [Json::http1(&server), Json::h2c(&server)] {
        // Not authenticated.
        let anonymous = Json { token: None, ..Json::http1(&server) }.anonymous();
        let (status, body) =
            anonymous.call(Method::POST, "/management/v1/projects", Some(json!({ "name": "p" }))).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(error_parts(&body, 16).0, "UNAUTHENTICATED");

        // Unknown path, wrong method.
        let (status, body, _) = json.raw(Method::GET, "/management/v1/nothing", None, &[]).await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(error_parts(&body, 5).0, "ROUTE_NOT_FOUND");
        let (status, body, headers) = json.raw(Method::GET, "/management/v1/projects", None, &[]).await;
        assert_eq!(status, 405, "{body}");
        assert_eq!(error_parts(&body, 12).0, "METHOD_NOT_ALLOWED");
        assert_eq!(headers.get("allow").and_then(|v| v.to_str().ok()), Some("POST"));

        // Malformed JSON says where; an unknown field is named.
        let (status, body, _) =
            json.raw(Method::POST, "/management/v1/projects", Some("{\"name\": \"p\",\n  oops}"), &[]).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(error_parts(&body, 3).0, "MALFORMED_REQUEST");
        assert!(body["message"].as_str().is_some_and(|m| m.contains("line 2 column")), "{body}");
        let (status, body) = json
            .call(Method::POST, "/management/v1/projects", Some(json!({ "name": "p", "colour": "red" })))
            .await;
        assert_eq!(status, 400, "{body}");
        assert!(body["message"].as_str().is_some_and(|m| m.contains("colour")), "{body}");
        let (status, body) =
            json.call(Method::POST, "/management/v1/projects", Some(json!({ "name": 7 }))).await;
        assert_eq!(status, 400, "a wrong type: {body}");
        let (status, body, _) = json
            .raw(Method::POST, "/management/v1/projects", Some("name=p"), &[("content-type", "text/plain")])
            .await;
        assert_eq!(status, 415, "{body}");
        error_parts(&body, 3);

        let oversized = json!({ "name": "x".repeat(1024 * 1024 + 1) }).to_string();
        let (status, body, _) =
            json.raw(Method::POST, "/management/v1/projects", Some(&oversized), &[]).await;
        assert_eq!(status, 413, "over the message size limit: {body}");
        assert_eq!(error_parts(&body, 8).0, "MESSAGE_TOO_LARGE");

        // Validation: field violations with JSON names, for the same rules as gRPC.
        let (status, body) =
            json.call(Method::POST, "/management/v1/projects", Some(json!({ "name": " " }))).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(error_parts(&body, 3), ("INVALID_ARGUMENT".to_owned(), vec!["name".to_owned()]));
        let project = json.ok(Method::POST, "/management/v1/projects", Some(json!({ "name": "shop" }))).await;
        let project_id = project["id"].as_str().expect("id").to_owned();
        let app = json
            .ok(
                Method::POST,
                &format!("/management/v1/projects/{project_id}/apps/api"),
                Some(json!({ "name": "a" })),
            )
            .await;
        let keys =
            format!("/management/v1/projects/{project_id}/apps/{}/keys", app["appId"].as_str().expect("id"));
        let (status, body) =
            json.call(Method::POST, &keys, Some(json!({ "type": "KEY_TYPE_JSON", "keySize": 1024 }))).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(error_parts(&body, 3).1, ["keySize"]);
        let (status, body) = json
            .call(
                Method::POST,
                &keys,
                Some(json!({ "type": "KEY_TYPE_JSON", "expirationDate": "2001-01-01T00:00:00Z" })),
            )
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(error_parts(&body, 3).1, ["expirationDate"]);
        let (status, body) = json
            .call(Method::POST, &keys, Some(json!({ "type": "KEY_TYPE_JSON", "expirationDate": "soon" })))
            .await;
        assert_eq!(status, 400, "a timestamp that is not RFC 3339: {body}");

        // Already exists, not found.
        let (status, body) =
            json.call(Method::POST, "/management/v1/projects", Some(json!({ "name": "shop" }))).await;
        assert_eq!(status, 409, "{body}");
        error_parts(&body, 6);
        json.ok(Method::DELETE, &format!("/management/v1/projects/{project_id}"), None).await;
        let (status, body) =
            json.call(Method::GET, &format!("/management/v1/projects/{project_id}"), None).await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(error_parts(&body, 5).0, "PROJECT_NOT_FOUND");
    }
    server.stop().await;
}

on_both_databases!(organization_headers, organization_headers_body);
async fn organization_headers_body(db: Db) {
    let server = TestServer::start(db).await;
    let json = Json::http1(&server);
    let org = json.ok(Method::POST, "/admin/v1/orgs", Some(json!({ "name": "other" }))).await;
    let org_id = org["id"].as_str().expect("org id").to_owned();
    for header in ["x-org-id", "x-zitadel-orgid"] {
        let name = format!("in other via {header}");
        let body = json!({ "name": name }).to_string();
        let (status, created, _) =
            json.raw(Method::POST, "/management/v1/projects", Some(&body), &[(header, &org_id)]).await;
        assert_eq!(status, 200, "{created}");
        assert_eq!(created["details"]["resourceOwner"], org_id.as_str());
        let path = format!("/management/v1/projects/{}", created["id"].as_str().expect("id"));
        let (status, _, _) = json.raw(Method::GET, &path, None, &[(header, &org_id)]).await;
        assert_eq!(status, 200);
        let (status, _, _) = json.raw(Method::GET, &path, None, &[]).await;
        assert_eq!(status, 404, "invisible from the admin's own organization");
    }
    server.stop().await;
}

/// /openapi.json parses, lists every google.api.http rule of the descriptors with its parameters, and a browser
/// may call the JSON routes from another origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_lists_every_rule() {
    let server = TestServer::start(Db::Sqlite).await;
    let json = Json::http1(&server).anonymous();
    let (status, doc) = json.call(Method::GET, "/openapi.json", None).await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{doc}");
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    assert!(doc["components"]["schemas"]["google.rpc.Status"]["properties"]["details"].is_object());

    // Every rule, read from the proto sources themselves.
    let mut expected = BTreeSet::new();
    for file in [
        "proto/keymint/admin/v1/admin.proto",
        "proto/keymint/management/v1/management.proto",
        "proto/keymint/apikeys/v1/apikeys.proto",
    ] {
        let text = std::fs::read_to_string(file).expect("proto");
        for verb in ["get", "post", "put", "patch", "delete"] {
            for (at, _) in text.match_indices(&format!("{verb}: \"")) {
                let rest = &text[at + verb.len() + 3..];
                let path = &rest[..rest.find('"').expect("closing quote")];
                expected.insert((verb.to_owned(), camel_variables(path)));
            }
        }
    }
    let mut listed = BTreeSet::new();
    for (path, operations) in doc["paths"].as_object().expect("paths") {
        for (verb, operation) in operations.as_object().expect("operations") {
            listed.insert((verb.clone(), path.clone()));
            assert!(operation["operationId"].is_string());
            assert!(operation["responses"]["200"]["content"]["application/json"]["schema"].is_object());
            assert!(operation["responses"]["default"].is_object());
            for parameter in operation["parameters"].as_array().expect("parameters") {
                if parameter["in"] == "path" {
                    let name = parameter["name"].as_str().expect("name");
                    assert!(path.contains(&format!("{{{name}}}")), "{path} {name}");
                }
            }
        }
    }
    assert_eq!(listed, expected);
    assert!(expected.len() >= 25, "{expected:?}");

    // Schemas: int64 as strings, enums as names, descriptions from the proto comments.
    let schemas = &doc["components"]["schemas"];
    let details = &schemas["keymint.v1.ObjectDetails"]["properties"];
    assert_eq!(details["sequence"]["type"], "string");
    assert_eq!(details["sequence"]["format"], "uint64");
    assert_eq!(details["creationDate"]["format"], "date-time");
    let add_key = &schemas["keymint.management.v1.AddAppKeyRequest"];
    assert!(
        add_key["properties"]["type"]["enum"].as_array().is_some_and(|e| e.contains(&json!("KEY_TYPE_JSON")))
    );
    assert!(add_key["description"].as_str().is_some_and(|d| !d.is_empty()), "{add_key}");
    let views = json!(["KEY_VIEW_UNSPECIFIED", "KEY_VIEW_BASIC", "KEY_VIEW_FULL"]);
    assert_eq!(schemas["keymint.management.v1.ListAppKeysRequest"]["properties"]["view"]["enum"], views);
    let get_key = &doc["paths"]["/management/v1/projects/{projectId}/apps/{appId}/keys/{keyId}"]["get"];
    let view = get_key["parameters"].as_array().expect("params").iter().find(|p| p["name"] == "view");
    assert_eq!(view.map(|v| (&v["in"], &v["schema"]["enum"])), Some((&json!("query"), &views)), "{get_key}");
    let list = &doc["paths"]["/apikeys/v1/keys"]["get"];
    let names: Vec<&str> =
        list["parameters"].as_array().expect("params").iter().filter_map(|p| p["name"].as_str()).collect();
    assert!(names.contains(&"limit") && names.contains(&"startingAfter"), "{names:?}");
    assert!(list["summary"].as_str().is_some_and(|s| s.starts_with("Lists API keys")), "{list}");

    // A browser's preflight for a JSON route.
    let (status, _, headers) = json
        .raw(
            Method::OPTIONS,
            "/apikeys/v1/keys/1",
            None,
            &[
                ("origin", "https://console.example"),
                ("access-control-request-method", "PATCH"),
                ("access-control-request-headers", "authorization, content-type, x-org-id"),
            ],
        )
        .await;
    assert_eq!(status, 200);
    let methods =
        headers.get("access-control-allow-methods").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(methods.contains("PATCH") && methods.contains("DELETE"), "{methods}");
    server.stop().await;
}

/// A value its field cannot take is refused naming the field and what it takes, in the body or in the query; a
/// ZITADEL path without its /management/v1 prefix is told the path that exists; OAuth's POST endpoints answer
/// other methods in JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_name_the_field_what_it_takes_and_the_path_that_exists() {
    let server = TestServer::start(Db::Sqlite).await;
    let json = Json::http1(&server);
    let message = |body: &Value| body["message"].as_str().unwrap_or_default().to_owned();

    let (status, body) = json
        .call(Method::POST, "/management/v1/projects/_search", Some(json!({"query": {"limit": -1}})))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_parts(&body, 3), ("INVALID_ARGUMENT".to_owned(), vec!["query.limit".to_owned()]));
    let said = message(&body);
    assert!(said.contains("query.limit") && said.contains("from 0 to 4294967295"), "{said}");
    assert!(!said.contains("integral type"), "no parser internals: {said}");

    let (status, body) = json.call(Method::GET, "/apikeys/v1/keys?limit=abc", None).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_parts(&body, 3).1, ["limit"]);
    let said = message(&body);
    assert!(said.contains("query parameter \"limit\"") && said.contains("whole number"), "{said}");
    assert!(!said.contains("JSON body"), "a query parameter is not the body: {said}");

    let environments = ["ENVIRONMENT_LIVE", "ENVIRONMENT_TEST"];
    let create = json!({"title": "t", "scopes": ["a:b"], "environment": "ENVIRONMENT_X"});
    let (status, body) = json.call(Method::POST, "/apikeys/v1/keys", Some(create)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_parts(&body, 3).1, ["environment"]);
    assert!(environments.iter().all(|e| message(&body).contains(e)), "the valid values are listed: {body}");
    let (status, body) = json.call(Method::GET, "/apikeys/v1/keys?environment=X", None).await;
    assert_eq!(status, 400, "{body}");
    assert!(environments.iter().all(|e| message(&body).contains(e)), "the valid values are listed: {body}");

    let (status, body) = json.call(Method::POST, "/projects/1/apps/2/keys", Some(json!({}))).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(error_parts(&body, 5).0, "ROUTE_NOT_FOUND");
    assert!(message(&body).contains("/management/v1/projects/1/apps/2/keys"), "{body}");
    let (status, body) = json.call(Method::GET, "/nothing/here", None).await;
    assert_eq!(status, 404);
    assert!(!message(&body).contains("/management/v1"), "no path is made up: {body}");

    for path in ["/oauth/v2/token", "/oauth/v2/introspect", "/oauth/v2/revoke"] {
        let (status, body, headers) = json.raw(Method::GET, path, None, &[]).await;
        assert_eq!(status, 405, "{path}: {body}");
        assert_eq!(headers.get("allow").and_then(|v| v.to_str().ok()), Some("POST"), "{path}");
        assert_eq!(body["error"], "invalid_request", "{path}: {body}");
        assert!(body["error_description"].as_str().is_some_and(|d| d.contains("use POST")), "{body}");
    }
    server.stop().await;
}

/// `{project_id}` → `{projectId}`, as OpenAPI paths name the variables by their JSON names.
fn camel_variables(path: &str) -> String {
    let mut out = String::new();
    let mut in_braces = false;
    let mut upper = false;
    for c in path.chars() {
        match c {
            '{' => in_braces = true,
            '}' => in_braces = false,
            '_' if in_braces => {
                upper = true;
                continue;
            }
            _ => {}
        }
        out.push(if upper { c.to_ascii_uppercase() } else { c });
        upper = false;
    }
    out
}
