//! `/metrics`, `/live` and `/ready` as an operator's tools see them: scraped over HTTP during real calls, the
//! counters move as calls are made (an RPC answered OK and one with an error code, a refusal and its reason, a
//! token issued and introspected, a cache hit), the text parses as the Prometheus exposition format, and no label
//! carries an ID or a secret. Turned off, `/metrics` is not there.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use keymint::api::pb::keymint::{
    apikeys::v1::{VerifyApiKeyRequest, VerifyCode},
    management::v1::{GetProjectByIdRequest, ListProjectsRequest},
};
use tonic::Code;

use crate::{
    helpers::{Db, TestServer, on_both_databases},
    oauth::{Http, app_with_key, introspect, token},
};

/// A GET over HTTP/1.1: status, content type and body as text.
pub async fn get(base: &str, path: &str) -> (u16, String, String) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let request = http::Request::get(format!("{base}{path}")).body(Full::default()).expect("request");
    let response = client.request(request).await.expect("HTTP request");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .map(|v| v.to_str().expect("ascii").to_owned())
        .unwrap_or_default();
    let body = response.into_body().collect().await.expect("body").to_bytes();
    (status, content_type, String::from_utf8(body.to_vec()).expect("UTF-8"))
}

/// One scrape, parsed and checked against the text format: every sample belongs to a family declared by a
/// `# TYPE` line before it (once), names and labels are well formed, counters end in `_total`, and every
/// histogram's buckets are cumulative with `+Inf` equal to its `_count`.
#[derive(Debug)]
pub struct Scrape {
    pub samples: Vec<Sample>,
    pub types: HashMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Scrape {
    pub async fn of(server_url: &str) -> Scrape {
        let (status, content_type, text) = get(server_url, "/metrics").await;
        assert_eq!(status, 200, "{text}");
        assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
        Scrape::parse(&text)
    }

    pub fn parse(text: &str) -> Scrape {
        let mut scrape = Scrape { samples: Vec::new(), types: HashMap::new() };
        let mut helped = HashMap::new();
        assert!(text.ends_with('\n'), "the exposition ends with a line feed");
        for line in text.lines() {
            if let Some(comment) = line.strip_prefix("# ") {
                let mut parts = comment.splitn(3, ' ');
                let (keyword, name, rest) = (parts.next(), parts.next(), parts.next());
                let name = name.unwrap_or_else(|| panic!("a comment without a name: {line}"));
                assert!(is_metric_name(name), "{line}");
                match keyword {
                    Some("HELP") => {
                        assert!(helped.insert(name.to_owned(), ()).is_none(), "HELP twice: {line}");
                        assert!(rest.is_some_and(|help| !help.is_empty()), "{line}");
                    }
                    Some("TYPE") => {
                        let kind = rest.unwrap_or_default();
                        assert!(
                            ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                            "{line}"
                        );
                        assert!(
                            !scrape.samples.iter().any(|s| family_of(&s.name, kind) == name),
                            "TYPE after its samples: {line}"
                        );
                        let previous = scrape.types.insert(name.to_owned(), kind.to_owned());
                        assert!(previous.is_none(), "TYPE twice: {line}");
                        if kind == "counter" {
                            assert!(name.ends_with("_total"), "a counter's name ends in _total: {line}");
                        }
                    }
                    _ => panic!("an unknown comment: {line}"),
                }
                continue;
            }
            assert!(!line.trim().is_empty(), "no empty lines");
            let sample = parse_sample(line);
            let declared = scrape.types.iter().any(|(family, kind)| family_of(&sample.name, kind) == family);
            assert!(declared, "a sample of an undeclared family: {line}");
            scrape.samples.push(sample);
        }
        scrape.check_histograms();
        scrape
    }

    fn check_histograms(&self) {
        for (family, kind) in &self.types {
            if kind != "histogram" {
                continue;
            }
            let mut series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
            for sample in self.samples.iter().filter(|s| s.name == format!("{family}_bucket")) {
                let mut labels = sample.labels.clone();
                let le = labels.remove("le").expect("a bucket has le");
                let le = if le == "+Inf" { f64::INFINITY } else { le.parse().expect("le is a number") };
                series.entry(labels).or_default().push((le, sample.value));
            }
            for (labels, buckets) in series {
                assert!(
                    buckets.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
                    "{family} {labels:?}"
                );
                assert_eq!(buckets.last().map(|b| b.0), Some(f64::INFINITY), "{family} {labels:?} has +Inf");
                let count = self.value(&format!("{family}_count"), &as_pairs(&labels));
                assert_eq!(buckets.last().map(|b| b.1), Some(count), "+Inf = _count: {family} {labels:?}");
                assert!(self.find(&format!("{family}_sum"), &as_pairs(&labels)).is_some());
            }
        }
    }

    /// The sample with exactly these labels.
    pub fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> =
            labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let mut found = self.samples.iter().filter(|s| s.name == name && s.labels == wanted);
        let value = found.next().map(|s| s.value);
        assert!(found.next().is_none(), "one sample per name and labels: {name} {labels:?}");
        value
    }

    /// The sample's value, 0 when it is absent (series appear once they count something).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels).unwrap_or(0.0)
    }

    pub fn label_values(&self) -> impl Iterator<Item = &str> {
        self.samples.iter().flat_map(|s| s.labels.values().map(String::as_str))
    }
}

fn as_pairs(labels: &BTreeMap<String, String>) -> Vec<(&str, &str)> {
    labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn family_of<'a>(sample: &'a str, kind: &str) -> &'a str {
    if kind == "histogram" {
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(family) = sample.strip_suffix(suffix) {
                return family;
            }
        }
    }
    sample
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `name{label="value",…} value`, with the format's escapes in values.
fn parse_sample(line: &str) -> Sample {
    let name_end = line.find(['{', ' ']).unwrap_or_else(|| panic!("no value: {line}"));
    let name = &line[..name_end];
    assert!(is_metric_name(name), "{line}");
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(inside) = rest.strip_prefix('{') {
        let mut chars = inside.char_indices();
        loop {
            let (start, c) = chars.next().unwrap_or_else(|| panic!("unterminated labels: {line}"));
            if c == '}' {
                rest = &inside[start + 1..];
                break;
            }
            let eq = inside[start..].find("=\"").unwrap_or_else(|| panic!("a label without a value: {line}"));
            let label = &inside[start..start + eq];
            assert!(is_metric_name(label) && !label.contains(':'), "label name {label:?}: {line}");
            for _ in 0..eq + 1 {
                chars.next();
            }
            let mut value = String::new();
            loop {
                match chars.next().map(|(_, c)| c) {
                    Some('\\') => match chars.next().map(|(_, c)| c) {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        other => panic!("a bad escape {other:?}: {line}"),
                    },
                    Some('"') => break,
                    Some(c) => value.push(c),
                    None => panic!("unterminated label value: {line}"),
                }
            }
            assert!(labels.insert(label.to_owned(), value).is_none(), "a label twice: {line}");
            match chars.clone().next().map(|(_, c)| c) {
                Some(',') => {
                    chars.next();
                }
                Some('}') => {}
                other => panic!("{other:?} after a label value: {line}"),
            }
        }
    }
    let mut fields = rest.trim_start_matches(' ').split(' ');
    let value = fields.next().unwrap_or_else(|| panic!("no value: {line}"));
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        number => number.parse().unwrap_or_else(|_| panic!("value {number:?}: {line}")),
    };
    if let Some(timestamp) = fields.next() {
        timestamp.parse::<i64>().unwrap_or_else(|_| panic!("timestamp {timestamp:?}: {line}"));
    }
    assert!(fields.next().is_none(), "trailing text: {line}");
    Sample { name: name.to_owned(), labels, value }
}

const API_KEYS: &str = "keymint.apikeys.v1.ApiKeyService";
const MANAGEMENT: &str = "keymint.management.v1.ManagementService";

fn rpc<'a>(service: &'a str, method: &'a str, code: &'a str) -> [(&'a str, &'a str); 3] {
    [("service", service), ("method", method), ("code", code)]
}

on_both_databases!(counters_move_as_calls_are_made, counters_move);
async fn counters_move(db: Db) {
    let server = TestServer::start(db).await;
    let (key_id, secret) = server.api_key("metered", &["invoices:read"]).await;
    let before = Scrape::of(&server.url()).await;

    // VerifyApiKey: twice valid (the second found in the cache), once refused for a scope the key lacks.
    let mut api_keys = server.api_keys().await;
    let verify = |scopes: &[&str]| {
        server.req(VerifyApiKeyRequest {
            secret: secret.clone(),
            required_scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            ..Default::default()
        })
    };
    for _ in 0..2 {
        let answer = api_keys.verify_api_key(verify(&["invoices:read"])).await.expect("verify").into_inner();
        assert_eq!(answer.code(), VerifyCode::Valid);
    }
    let answer = api_keys.verify_api_key(verify(&["invoices:write"])).await.expect("verify").into_inner();
    assert_eq!(answer.code(), VerifyCode::InsufficientScopes);
    // An error code, and a refusal: no credential at all.
    let mut management = server.management().await;
    let missing = GetProjectByIdRequest { id: "123456789012345678".into() };
    let error = management.get_project_by_id(server.req(missing)).await.expect_err("no such project");
    assert_eq!(error.code(), Code::NotFound);
    let error = management
        .list_projects(tonic::Request::new(ListProjectsRequest::default()))
        .await
        .expect_err("no credential");
    assert_eq!(error.code(), Code::Unauthenticated);
    // OAuth: a token issued and introspected, and a token request refused.
    let http = Http::http1(&server);
    let key = app_with_key(&server, "metrics", &[]).await;
    let (status, issued) = token(&http, &server, &key, &[]).await;
    assert_eq!(status, 200, "{issued}");
    let access_token = issued["access_token"].as_str().expect("token").to_owned();
    assert_eq!(introspect(&http, &server, &key, &access_token, &[]).await["active"], true);
    let (status, refused) = http.post("/oauth/v2/token", &[("grant_type", "client_credentials")]).await;
    assert_eq!(status, 401, "{refused}");

    let after = Scrape::of(&server.url()).await;
    let moved = |name: &str, labels: &[(&str, &str)]| after.value(name, labels) - before.value(name, labels);
    assert_eq!(moved("keymint_rpc_requests_total", &rpc(API_KEYS, "VerifyApiKey", "OK")), 3.0);
    assert_eq!(moved("keymint_rpc_duration_seconds_count", &rpc(API_KEYS, "VerifyApiKey", "OK")), 3.0);
    assert_eq!(moved("keymint_rpc_requests_total", &rpc(MANAGEMENT, "GetProjectByID", "NOT_FOUND")), 1.0);
    assert_eq!(moved("keymint_rpc_requests_total", &rpc(MANAGEMENT, "ListProjects", "UNAUTHENTICATED")), 1.0);
    assert_eq!(moved("keymint_refusals_total", &[("reason", "UNAUTHENTICATED")]), 1.0);
    assert_eq!(moved("keymint_api_key_verifications_total", &[("result", "valid")]), 2.0);
    assert_eq!(moved("keymint_api_key_verifications_total", &[("result", "insufficient_scopes")]), 1.0);
    assert!(moved("keymint_cache_lookups_total", &[("cache", "api_keys"), ("result", "hit")]) >= 2.0);
    assert_eq!(moved("keymint_oauth_token_requests_total", &[("outcome", "issued")]), 1.0);
    assert_eq!(moved("keymint_oauth_token_requests_total", &[("outcome", "invalid_client")]), 1.0);
    assert_eq!(moved("keymint_oauth_introspections_total", &[("outcome", "active")]), 1.0);
    let token_route = [("route", "/oauth/v2/token"), ("status", "2xx")];
    assert_eq!(moved("keymint_http_requests_total", &token_route), 1.0);
    assert_eq!(moved("keymint_http_requests_total", &[("route", "/oauth/v2/token"), ("status", "4xx")]), 1.0);
    assert_eq!(after.value("keymint_store_up", &[]), 1.0);
    assert!(after.find("keymint_key_pool_keys", &[("bits", "2048")]).is_some());
    assert!(after.value("keymint_key_pool_generated_total", &[("bits", "2048")]) >= 1.0);
    assert!(after.samples.iter().any(|s| s.name == "keymint_store_connections"));
    assert!(after.find("keymint_usage_flush_lag_seconds", &[]).is_some());

    // No label value is an ID, a name from the requests, or a secret.
    let org_id = answer.org_id.clone();
    let forbidden = [
        key_id.as_str(),
        secret.as_str(),
        org_id.as_str(),
        server.token.as_str(),
        access_token.as_str(),
        key.client_id.as_str(),
        key.app_id.as_str(),
        key.project_id.as_str(),
        key.key_id.as_str(),
        "123456789012345678",
        "metered",
    ];
    for value in after.label_values() {
        assert!(
            !forbidden.iter().any(|f| !f.is_empty() && value.contains(f)),
            "label value {value:?} names an object"
        );
        assert!(!value.starts_with("km_"), "label value {value:?} looks like a secret");
        assert!(
            value.chars().filter(char::is_ascii_digit).count() < 10,
            "label value {value:?} looks like an ID"
        );
    }

    // The gauge follows the cache. On PostgreSQL this process's own writes come back through the change feed too,
    // and on a loaded machine the echo of the key's creation can arrive after the verifies above filled the
    // cache, and empty it again (seen once in CI): the echo comes once, so a verify refills it for good.
    let mut entries = after.value("keymint_cache_entries", &[("cache", "api_keys")]);
    for _ in 0..50 {
        if entries >= 1.0 {
            break;
        }
        api_keys.verify_api_key(verify(&["invoices:read"])).await.expect("verify");
        entries = Scrape::of(&server.url()).await.value("keymint_cache_entries", &[("cache", "api_keys")]);
    }
    assert!(entries >= 1.0, "the api_keys cache reports {entries} entries after verifies");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_and_ready_answer_and_metrics_can_be_off() {
    let server = TestServer::start_with(Db::Sqlite, |config| config.metrics = false).await;
    let (status, content_type, body) = get(&server.url(), "/live").await;
    assert_eq!((status, content_type.as_str()), (200, "application/json"), "{body}");
    // The key pool fills in the background: ready once it has a key.
    let started = std::time::Instant::now();
    loop {
        let (status, _, body) = get(&server.url(), "/ready").await;
        let answer: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        if status == 200 {
            assert_eq!(answer, serde_json::json!({"ready": true, "failing": []}));
            break;
        }
        assert_eq!(status, 503);
        assert_eq!(
            answer["failing"],
            serde_json::json!(["key pool: warming up, no 2048-bit key generated yet"]),
            "{body}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "ready within 30 s");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (status, _, body) = get(&server.url(), "/metrics").await;
    assert_eq!(status, 404, "metrics are off: {body}");
    server.stop().await;
}

#[test]
fn the_parser_refuses_what_the_format_does_not_allow() {
    let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\\\"2\"} 3\n";
    assert_eq!(Scrape::parse(ok).value("a_total", &[("x", "1\"2")]), 3.0);
    for bad in [
        "a_total 1\n",                              // no TYPE
        "# TYPE a counter\na 1\n",                  // a counter without _total
        "# TYPE a_total counter\na_total{x=1} 1\n", // an unquoted value
        "# TYPE a_total counter\na_total one\n",    // not a number
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\nh_sum 0\n", // not cumulative
    ] {
        assert!(std::panic::catch_unwind(|| Scrape::parse(bad)).is_err(), "accepted {bad:?}");
    }
}
