//! keymint over TLS, with certificates the test makes with the `openssl` command (CAs, server certificates with
//! each key encoding, client certificates) and real clients on the one port: tonic over tokio-rustls, `buf curl`
//! (gRPC and gRPC-Web), curl (JSON and OAuth discovery) and Python grpcio. Also: plain h2c is refused, a silent
//! client holds no one back, client certificates (mutual TLS), reloads by function and by SIGHUP on the real
//! binary, and bad files that stop the start.

use std::{
    io::Read as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use keymint::{
    api::pb::keymint::management::v1::{
        AddProjectRequest, ListProjectsRequest, ListProjectsResponse,
        management_service_client::ManagementServiceClient,
    },
    app,
    config::TlsArgs,
};
use prost::Message;
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
};
use serde_json::Value;
use tempfile::TempDir;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::{TlsConnector, client::TlsStream};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::helpers::{
    self, Db, FreshDb, TestServer, api_key_request, error_of, on_both_databases, with_token,
};

/// How a test key is encoded in its PEM file.
#[derive(Debug, Clone, Copy)]
enum KeyKind {
    /// `PRIVATE KEY`, EC P-256.
    Pkcs8,
    /// `RSA PRIVATE KEY`, RSA-2048.
    Pkcs1,
    /// `EC PRIVATE KEY`, EC P-256.
    Sec1,
}

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
struct Pair {
    cert: PathBuf,
    key: PathBuf,
}

/// A directory of test certificates made with the openssl command.
struct Pki {
    dir: TempDir,
}

const OPENSSL_CONFIG: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = keymint test
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
";

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("openssl.cnf"), OPENSSL_CONFIG).expect("write openssl.cnf");
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn openssl(&self, args: &[&str]) {
        let output =
            Command::new("openssl").args(args).current_dir(self.dir.path()).output().expect(
                "run openssl, which makes the test certificates: install it (apt-get install openssl)",
            );
        assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    }

    fn key(&self, name: &str, kind: KeyKind) -> PathBuf {
        let file = format!("{name}.key");
        match kind {
            KeyKind::Pkcs8 => self.openssl(&[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                &file,
            ]),
            KeyKind::Pkcs1 => self.openssl(&["genrsa", "-traditional", "-out", &file, "2048"]),
            KeyKind::Sec1 => {
                self.openssl(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", &file])
            }
        }
        self.path(&file)
    }

    /// A self-signed CA.
    fn ca(&self, name: &str) -> Pair {
        let key = self.key(name, KeyKind::Pkcs8);
        let cert = format!("{name}.pem");
        self.openssl(&[
            "req",
            "-x509",
            "-config",
            "openssl.cnf",
            "-extensions",
            "ca",
            "-key",
            &format!("{name}.key"),
            "-out",
            &cert,
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
        ]);
        Pair { cert: self.path(&cert), key }
    }

    /// A certificate signed by `ca`, for a server (localhost, 127.0.0.1) or a client.
    fn leaf(&self, ca: &Pair, name: &str, kind: KeyKind, profile: &str) -> Pair {
        let key = self.key(name, kind);
        let (csr, cert) = (format!("{name}.csr"), format!("{name}.pem"));
        self.openssl(&[
            "req",
            "-new",
            "-config",
            "openssl.cnf",
            "-key",
            &format!("{name}.key"),
            "-out",
            &csr,
        ]);
        let serial = serial();
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca.cert.display().to_string(),
            "-CAkey",
            &ca.key.display().to_string(),
            "-set_serial",
            &serial,
            "-days",
            "2",
            "-extfile",
            "openssl.cnf",
            "-extensions",
            profile,
            "-out",
            &cert,
        ]);
        Pair { cert: self.path(&cert), key }
    }

    fn server(&self, ca: &Pair, name: &str) -> Pair {
        self.leaf(ca, name, KeyKind::Pkcs8, "server")
    }
}

/// A random positive serial number: certificates of one CA must not share one.
fn serial() -> String {
    let mut bytes = [0_u8; 8];
    aws_lc_rs::rand::fill(&mut bytes).expect("rng");
    (u64::from_le_bytes(bytes) >> 1).to_string()
}

impl Pair {
    /// Copies this certificate and key over the files of `live`, as an operator renewing them does.
    fn install_as(&self, live: &Pair) {
        std::fs::copy(&self.cert, &live.cert).expect("copy the certificate");
        std::fs::copy(&self.key, &live.key).expect("copy the key");
    }
}

/// A renewal: server certificates from two CAs, and the files a server reads, holding the old one.
struct Renewal {
    old_ca: Pair,
    new_ca: Pair,
    old: Pair,
    new: Pair,
    live: Pair,
}

impl Renewal {
    fn new(pki: &Pki) -> Renewal {
        let (old_ca, new_ca) = (pki.ca("old-ca"), pki.ca("new-ca"));
        let (old, new) = (pki.server(&old_ca, "old"), pki.server(&new_ca, "new"));
        let live = Pair { cert: pki.path("live.pem"), key: pki.path("live.key") };
        old.install_as(&live);
        Renewal { old_ca, new_ca, old, new, live }
    }
}

fn tls_args(pair: &Pair, client_ca: Option<&Path>) -> TlsArgs {
    TlsArgs {
        cert: Some(pair.cert.clone()),
        key: Some(pair.key.clone()),
        client_ca: client_ca.map(Path::to_path_buf),
    }
}

async fn start(db: Db, pair: &Pair, client_ca: Option<&Path>) -> TestServer {
    TestServer::start_with(db, |config| config.tls = tls_args(pair, client_ca)).await
}

fn first_certificate(path: &Path) -> CertificateDer<'static> {
    CertificateDer::pem_file_iter(path).expect("read PEM").next().expect("a certificate").expect("PEM")
}

/// A client configuration trusting `cas`, presenting `identity` if given, offering `alpn`.
fn client_config(cas: &[&Path], identity: Option<&Pair>, alpn: &[&str]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for ca in cas {
        roots.add(first_certificate(ca)).expect("a trust anchor");
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(pair) => builder
            .with_client_auth_cert(
                vec![first_certificate(&pair.cert)],
                PrivateKeyDer::from_pem_file(&pair.key).expect("client key"),
            )
            .expect("client identity"),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(config)
}

async fn connect(addr: SocketAddr, config: Arc<ClientConfig>) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("localhost".to_owned()).expect("name");
    TlsConnector::from(config).connect(name, tcp).await
}

/// The certificate a new handshake with the server shows.
async fn served_certificate(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> std::io::Result<CertificateDer<'static>> {
    let stream = connect(addr, config).await?;
    let (_, session) = stream.get_ref();
    Ok(session.peer_certificates().expect("the server's chain")[0].clone().into_owned())
}

/// The generated tonic client's channel over TLS (tokio-rustls through a custom connector; ALPN h2).
async fn channel(addr: SocketAddr, config: Arc<ClientConfig>) -> Result<Channel, tonic::transport::Error> {
    let connector = tower::service_fn(move |_: http::Uri| {
        let config = config.clone();
        async move { connect(addr, config).await.map(TokioIo::new) }
    });
    Endpoint::from_shared(format!("https://localhost:{}", addr.port()))
        .expect("endpoint")
        .connect_with_connector(connector)
        .await
}

async fn health(channel: Channel) -> Result<i32, String> {
    let answer = HealthClient::new(channel).check(HealthCheckRequest::default()).await;
    answer.map(|answer| answer.into_inner().status).map_err(|status| status.to_string())
}

/// An HTTP/1.1 connection over TLS, to send several requests on one connection.
async fn http1(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = connect(addr, config).await.expect("TLS connection");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("HTTP/1.1");
    tokio::spawn(connection);
    sender
}

async fn discovery(sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>) -> Value {
    let request = http::Request::get("/.well-known/openid-configuration")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = sender.send_request(request).await.expect("discovery over the open connection");
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.expect("body").to_bytes();
    serde_json::from_slice(&body).expect("JSON")
}

/// Runs a command off the runtime's threads (the server shares them).
async fn run(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || command.output()).await.expect("join").expect("run the command")
}

/// curl, which the tests of outside clients drive; they fail without it.
fn require_curl() {
    let available = Command::new("curl").arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(
        available,
        "curl is not installed: this test needs it (apt-get install curl; .ci/tools.sh does it)"
    );
}

/// The Python of KEYMINT_TEST_PYTHON, which needs grpcio here (as the OAuth client test needs authlib and PyJWT).
fn python() -> String {
    helpers::outside_tool("KEYMINT_TEST_PYTHON", helpers::PYTHON_NEEDS)
}

/// Python grpcio's health check and ListProjects over TLS; the names of the projects it listed.
async fn grpcio(
    python: &str,
    addr: SocketAddr,
    ca: &Path,
    token: &str,
    identity: Option<&Pair>,
) -> Vec<String> {
    let mut command = Command::new(python);
    command
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/grpc_tls.py"))
        .arg(format!("localhost:{}", addr.port()))
        .arg(ca)
        .arg(token);
    if let Some(pair) = identity {
        command.arg(&pair.cert).arg(&pair.key);
    }
    let output = run(command).await;
    assert!(
        output.status.success(),
        "grpc_tls.py failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let hex = String::from_utf8(output.stdout).expect("text");
    let bytes: Vec<u8> = (0..hex.trim().len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex.trim()[i..i + 2], 16).expect("hex"))
        .collect();
    let listed = ListProjectsResponse::decode(&bytes[..]).expect("a ListProjectsResponse");
    listed.result.into_iter().map(|project| project.name).collect()
}

on_both_databases!(every_client_speaks_to_the_tls_port, every_client);
async fn every_client(db: Db) {
    let pki = Pki::new();
    let ca = pki.ca("ca");
    let pair = pki.server(&ca, "server");
    let server = start(db, &pair, None).await;
    let addr = server.addr;
    let h2 = client_config(&[&ca.cert], None, &["h2"]);

    // The generated tonic client over TLS, as admin and with an API key limited to networks: the client's
    // address is the TCP peer's, as over h2c.
    let channel = channel(addr, h2.clone()).await.expect("TLS channel");
    assert_eq!(health(channel.clone()).await, Ok(ServingStatus::Serving as i32));
    let mut management = ManagementServiceClient::new(channel.clone());
    management
        .add_project(server.req(AddProjectRequest { name: "over-tls".into() }))
        .await
        .expect("add project");
    let mut api_keys =
        keymint::api::pb::keymint::apikeys::v1::api_key_service_client::ApiKeyServiceClient::new(
            channel.clone(),
        );
    let limited = |cidr: &str| {
        let mut request = api_key_request(cidr, &["projects:read"]);
        request.allowed_cidrs = vec![cidr.into()];
        server.req(request)
    };
    let here =
        api_keys.create_api_key(limited("127.0.0.1")).await.expect("key for 127.0.0.1").into_inner().secret;
    let elsewhere =
        api_keys.create_api_key(limited("10.0.0.0/8")).await.expect("key for 10/8").into_inner().secret;
    let listed = management.list_projects(with_token(ListProjectsRequest::default(), &here)).await;
    assert_eq!(listed.expect("from 127.0.0.1 over TLS").into_inner().result[0].name, "over-tls");
    let refused = management.list_projects(with_token(ListProjectsRequest::default(), &elsewhere)).await;
    assert_eq!(error_of(&refused.expect_err("not from 10/8")).1, "IP_NOT_ALLOWED");

    // ALPN: h2 first, http/1.1 for clients that offer only it.
    let both = connect(addr, client_config(&[&ca.cert], None, &["h2", "http/1.1"])).await.expect("TLS");
    assert_eq!(both.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut sender = http1(addr, client_config(&[&ca.cert], None, &["http/1.1"])).await;
    let https = format!("https://127.0.0.1:{}", addr.port());
    assert_eq!(discovery(&mut sender).await["issuer"], https.as_str(), "the issuer defaults to https://");

    drop((channel, management, api_keys, both, sender));
    server.stop().await;
}

/// curl (HTTP/1.1 and HTTP/2), `buf curl` (gRPC and gRPC-Web) and Python grpcio against the TLS port: clients
/// keymint does not build, with their own TLS stacks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs curl, buf (npm ci) and KEYMINT_TEST_PYTHON with grpcio: source .ci/tools.sh"]
async fn outside_clients_speak_to_the_tls_port() {
    let pki = Pki::new();
    let ca = pki.ca("ca");
    let pair = pki.server(&ca, "server");
    let server = start(Db::Sqlite, &pair, None).await;
    let addr = server.addr;
    let https = format!("https://127.0.0.1:{}", addr.port());
    let mut management = ManagementServiceClient::new(
        channel(addr, client_config(&[&ca.cert], None, &["h2"])).await.expect("TLS channel"),
    );
    management
        .add_project(server.req(AddProjectRequest { name: "over-tls".into() }))
        .await
        .expect("add project");
    require_curl();

    {
        let curl = |args: &[&str]| {
            let mut command = Command::new("curl");
            command.args(["-sS", "--fail-with-body", "--cacert"]).arg(&ca.cert).args(args);
            command
        };
        let output = run(curl(&["--http1.1", &format!("{https}/.well-known/openid-configuration")])).await;
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let metadata: Value = serde_json::from_slice(&output.stdout).expect("JSON");
        assert_eq!(metadata["issuer"], https.as_str());
        assert_eq!(metadata["token_endpoint"], format!("{https}/oauth/v2/token").as_str());
        let auth = format!("authorization: Bearer {}", server.token);
        for (version, name) in [("--http1.1", "json-h1"), ("--http2", "json-h2")] {
            let body = format!("{{\"name\":\"{name}\"}}");
            let url = format!("{https}/management/v1/projects");
            let output =
                run(curl(&[version, "-H", &auth, "-H", "content-type: application/json", "-d", &body, &url]))
                    .await;
            assert!(output.status.success(), "{version}: {}", String::from_utf8_lossy(&output.stdout));
            let added: Value = serde_json::from_slice(&output.stdout).expect("JSON");
            assert!(added["id"].is_string(), "{added}");
        }
        // Plain HTTP to the TLS port gets no answer.
        let plain =
            run(curl(&[&format!("http://127.0.0.1:{}/.well-known/openid-configuration", addr.port())])).await;
        assert!(!plain.status.success());
    }

    {
        let buf = helpers::buf();
        for protocol in ["grpc", "grpcweb"] {
            let mut command = Command::new(&buf);
            command
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .args(["curl", "--protocol", protocol, "--cacert"])
                .arg(&ca.cert)
                .args(["-H", &format!("authorization: Bearer {}", server.token), "-d", "{}"])
                .arg(format!("{https}/keymint.management.v1.ManagementService/ListProjects"));
            let output = run(command).await;
            assert!(
                output.status.success(),
                "buf curl {protocol}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            let listed: Value = serde_json::from_slice(&output.stdout).expect("JSON");
            let names: Vec<_> =
                listed["result"].as_array().expect("result").iter().map(|p| &p["name"]).collect();
            assert_eq!(names, ["json-h2", "json-h1", "over-tls"], "buf curl {protocol}: {listed}");
        }
    }

    {
        let python = python();
        let names = grpcio(&python, addr, &ca.cert, &server.token, None).await;
        assert!(names.contains(&"over-tls".to_owned()), "{names:?}");
    }
    drop(management);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_a_tls_port_fails_and_a_silent_client_holds_no_one_back() {
    let pki = Pki::new();
    let ca = pki.ca("ca");
    let server = start(Db::Sqlite, &pki.server(&ca, "server"), None).await;
    let addr = server.addr;

    // h2c, as a client configured for a plain port sends it.
    let plain = async {
        let channel = Channel::from_shared(format!("http://{addr}")).expect("url").connect().await;
        health(channel.map_err(|e| e.to_string())?).await
    };
    let plain = plain.await;
    assert!(plain.is_err(), "h2c to the TLS port: {plain:?}");

    // Clients that connect and send nothing, or half a ClientHello, do not hold the next one back.
    let mut silent = Vec::new();
    for bytes in [&b""[..], &b"\x16\x03\x01\x02\x00"[..], &b""[..]] {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(bytes).await.expect("write");
        silent.push(stream);
    }
    let started = Instant::now();
    let channel = tokio::time::timeout(
        Duration::from_secs(5),
        channel(addr, client_config(&[&ca.cert], None, &["h2"])),
    )
    .await
    .expect("a TLS client is served while others are silent")
    .expect("TLS channel");
    assert_eq!(health(channel).await, Ok(ServingStatus::Serving as i32));
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());

    // The silent ones are closed when their handshake time (10 s) is up.
    for mut stream in silent {
        let mut buf = [0_u8; 64];
        let closed = tokio::time::timeout(Duration::from_secs(15), stream.read(&mut buf)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "closed after the handshake timeout: {closed:?}");
    }
    assert!(started.elapsed() >= Duration::from_secs(9), "not before the timeout: {:?}", started.elapsed());
    let counts = server.running.as_ref().expect("running").tls_counts().expect("TLS on").handshakes();
    let [(_, completed), (_, failed), (_, timed_out)] = counts;
    assert_eq!(
        (timed_out, completed),
        (3, 1),
        "the silent three timed out, the TLS client completed: {counts:?}"
    );
    assert!(failed >= 1, "h2c to the TLS port is a failed handshake: {counts:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_encoding_serves() {
    let pki = Pki::new();
    let ca = pki.ca("ca");
    for kind in [KeyKind::Pkcs8, KeyKind::Pkcs1, KeyKind::Sec1] {
        let pair = pki.leaf(&ca, &format!("{kind:?}"), kind, "server");
        let server = start(Db::Sqlite, &pair, None).await;
        let served = served_certificate(server.addr, client_config(&[&ca.cert], None, &["h2"])).await;
        assert_eq!(served.expect("handshake"), first_certificate(&pair.cert), "{kind:?}");
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_with_a_client_ca_and_reloaded() {
    let pki = Pki::new();
    let ca = pki.ca("ca");
    let clients = pki.ca("clients");
    let others = pki.ca("others");
    let member = pki.leaf(&clients, "member", KeyKind::Pkcs8, "client");
    let outsider = pki.leaf(&others, "outsider", KeyKind::Sec1, "client");
    let client_ca = pki.path("client-ca.pem");
    std::fs::copy(&clients.cert, &client_ca).expect("copy");
    let server = start(Db::Sqlite, &pki.server(&ca, "server"), Some(&client_ca)).await;
    let addr = server.addr;
    let call = |identity: Option<&Pair>| {
        let config = client_config(&[&ca.cert], identity, &["h2"]);
        async move {
            let channel = channel(addr, config).await.map_err(|e| e.to_string())?;
            health(channel).await
        }
    };

    assert_eq!(call(Some(&member)).await, Ok(ServingStatus::Serving as i32));
    assert!(call(None).await.is_err(), "no client certificate");
    assert!(call(Some(&outsider)).await.is_err(), "a certificate of another CA");

    // The client CA is read again on reload: now only the other CA's clients get in.
    std::fs::copy(&others.cert, &client_ca).expect("copy");
    server.running.as_ref().expect("running").reload_tls().await.expect("reload");
    assert_eq!(call(Some(&outsider)).await, Ok(ServingStatus::Serving as i32));
    assert!(call(Some(&member)).await.is_err(), "the old CA's client after the reload");

    // /metrics counts what only the debug log said: refused handshakes and the reload.
    let mut sender = http1(addr, client_config(&[&ca.cert], Some(&outsider), &["http/1.1"])).await;
    let request = http::Request::get("/metrics").header("host", "localhost").body(Full::new(Bytes::new()));
    let response = sender.send_request(request.expect("request")).await.expect("scrape");
    assert_eq!(response.status(), 200);
    let scrape = String::from_utf8(response.into_body().collect().await.expect("body").to_bytes().to_vec())
        .expect("UTF-8");
    let value = |series: &str| -> u64 {
        let line = scrape.lines().find(|line| line.starts_with(&format!("{series} "))).unwrap_or_else(|| {
            panic!("no {series} in:\n{scrape}");
        });
        line.rsplit(' ').next().and_then(|v| v.parse().ok()).expect("a count")
    };
    // Without a certificate, with another CA's before the reload, with the old CA's after it.
    assert!(value(r#"keymint_tls_handshakes_total{result="failed"}"#) >= 3, "{scrape}");
    assert!(value(r#"keymint_tls_handshakes_total{result="completed"}"#) >= 3, "{scrape}");
    assert_eq!(value(r#"keymint_tls_reloads_total{result="succeeded"}"#), 1);
    assert_eq!(value(r#"keymint_tls_reloads_total{result="failed"}"#), 0);
    server.stop().await;
}

/// curl and Python grpcio present a client certificate to a port that requires one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs curl and KEYMINT_TEST_PYTHON with grpcio: source .ci/tools.sh"]
async fn outside_clients_present_client_certificates() {
    let pki = Pki::new();
    let ca = pki.ca("ca");
    let clients = pki.ca("clients");
    let member = pki.leaf(&clients, "member", KeyKind::Pkcs8, "client");
    let server = start(Db::Sqlite, &pki.server(&ca, "server"), Some(&clients.cert)).await;
    let addr = server.addr;
    require_curl();
    {
        let url = format!("https://127.0.0.1:{}/.well-known/openid-configuration", addr.port());
        let curl = |identity: Option<&Pair>| {
            let mut command = Command::new("curl");
            command.args(["-sS", "--fail-with-body", "--cacert"]).arg(&ca.cert);
            if let Some(pair) = identity {
                command.arg("--cert").arg(&pair.cert).arg("--key").arg(&pair.key);
            }
            command.arg(&url);
            command
        };
        assert!(run(curl(Some(&member))).await.status.success());
        assert!(!run(curl(None)).await.status.success());
    }
    {
        let python = python();
        grpcio(&python, addr, &ca.cert, &server.token, Some(&member)).await;
    }

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_serves_new_handshakes_the_new_certificate_and_keeps_open_connections() {
    let pki = Pki::new();
    let Renewal { old_ca, new_ca, old, new, live } = Renewal::new(&pki);
    let server = start(Db::Sqlite, &live, None).await;
    let addr = server.addr;
    let running = server.running.as_ref().expect("running");

    // Opened before the reload; trusting only the old CA, so that a reconnection could not succeed.
    let open = channel(addr, client_config(&[&old_ca.cert], None, &["h2"])).await.expect("channel");
    assert_eq!(health(open.clone()).await, Ok(ServingStatus::Serving as i32));

    new.install_as(&live);
    running.reload_tls().await.expect("reload");
    let either = client_config(&[&old_ca.cert, &new_ca.cert], None, &["h2"]);
    assert_eq!(
        served_certificate(addr, either.clone()).await.expect("handshake"),
        first_certificate(&new.cert)
    );
    assert_eq!(health(open.clone()).await, Ok(ServingStatus::Serving as i32), "the open connection goes on");

    // A key that is not PEM: the reload fails, says why without the file's contents, and changes nothing.
    let secret_line = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7";
    std::fs::write(&live.key, format!("-----BEGIN PRIVATE KEY-----\n{secret_line}\n")).expect("write");
    let error = running.reload_tls().await.expect_err("a truncated key");
    let message = error.to_string();
    assert!(message.contains("live.key") && message.contains("no END line"), "{message}");
    assert!(!message.contains(secret_line), "{message}");
    assert_eq!(
        served_certificate(addr, either.clone()).await.expect("handshake"),
        first_certificate(&new.cert)
    );
    // A certificate whose key does not match is refused too.
    std::fs::copy(&old.key, &live.key).expect("copy");
    let error = running.reload_tls().await.expect_err("mismatched key").to_string();
    assert!(error.contains("cannot be used together"), "{error}");
    let reloads = running.tls_counts().expect("TLS on").reloads();
    assert_eq!(reloads, [("succeeded", 1), ("failed", 2)], "counted for /metrics");
    assert_eq!(served_certificate(addr, either).await.expect("handshake"), first_certificate(&new.cert));
    assert_eq!(health(open.clone()).await, Ok(ServingStatus::Serving as i32));
    drop(open);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_files_stop_the_start_with_a_clear_message() {
    let pki = Pki::new();
    let ca = pki.ca("ca");
    let pair = pki.server(&ca, "server");
    let other = pki.server(&ca, "other");
    let key_text = std::fs::read_to_string(&pair.key).expect("key");
    let cases: Vec<(TlsArgs, &str)> = vec![
        (TlsArgs { key: None, ..tls_args(&pair, None) }, "--tls-key (KEYMINT_TLS_KEY) is not"),
        (TlsArgs { key: Some(pki.path("missing.key")), ..tls_args(&pair, None) }, "cannot read the TLS key"),
        (TlsArgs { key: Some(pair.cert.clone()), ..tls_args(&pair, None) }, "holds no private key"),
        (TlsArgs { cert: Some(pair.key.clone()), ..tls_args(&pair, None) }, "holds no CERTIFICATE block"),
        (TlsArgs { key: Some(other.key.clone()), ..tls_args(&pair, None) }, "cannot be used together"),
        (tls_args(&pair, Some(&pki.path("missing-ca.pem"))), "cannot read the TLS client CA"),
    ];
    for (tls, expected) in cases {
        let db = FreshDb::create(&Db::Sqlite).await;
        let mut config = helpers::config(&db, None);
        config.tls = tls.clone();
        let Err(error) = app::start(&config).await else { panic!("started with {tls:?}") };
        let message = error.to_string();
        assert!(message.contains(expected), "{tls:?}: {message}");
        assert!(key_text.lines().skip(1).all(|line| !message.contains(line)), "{message}");
    }

    // The binary says so and exits.
    let dir = tempfile::tempdir().expect("dir");
    let output = Command::new(env!("CARGO_BIN_EXE_keymint"))
        .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&pair.cert)
        .arg("--tls-key")
        .arg(&pair.cert)
        .env("KEYMINT_DATA_DIR", dir.path())
        .env_remove("KEYMINT_DATABASE_URL")
        .env("KEYMINT_LOG", "info")
        .output()
        .expect("run keymint");
    assert!(!output.status.success());
    let printed = String::from_utf8_lossy(&output.stdout) + String::from_utf8_lossy(&output.stderr);
    assert!(printed.contains("holds no private key"), "{printed}");
}

/// The binary, as an operator runs it, on TLS; killed when dropped.
struct Process {
    child: std::process::Child,
    log: PathBuf,
    addr: SocketAddr,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    fn log(&self) -> String {
        let mut text = String::new();
        let _ = std::fs::File::open(&self.log).and_then(|mut f| f.read_to_string(&mut text));
        text
    }

    fn hang_up(&self) {
        let status =
            Command::new("kill").arg("-HUP").arg(self.child.id().to_string()).status().expect("kill");
        assert!(status.success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_of_the_running_binary() {
    let pki = Pki::new();
    let Renewal { old_ca, new_ca, old, new, live } = Renewal::new(&pki);
    let data = tempfile::tempdir().expect("dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let log = data.path().join("keymint.log");
    let child = Command::new(env!("CARGO_BIN_EXE_keymint"))
        .arg("serve")
        .env("KEYMINT_LISTEN", format!("127.0.0.1:{port}"))
        .env("KEYMINT_DATA_DIR", data.path())
        .env("KEYMINT_TLS_CERT", &live.cert)
        .env("KEYMINT_TLS_KEY", &live.key)
        .env("KEYMINT_KEY_POOL_SIZE", "1")
        .env("KEYMINT_KEY_POOL_WORKERS", "1")
        .env("KEYMINT_LOG", "info")
        .env_remove("KEYMINT_DATABASE_URL")
        .stdout(std::fs::File::create(&log).expect("log"))
        .stderr(Stdio::null())
        .spawn()
        .expect("start keymint");
    let process = Process { child, log, addr: ([127, 0, 0, 1], port).into() };
    let either = client_config(&[&old_ca.cert, &new_ca.cert], None, &["h2"]);
    let until = |what: &'static str| {
        let started = Instant::now();
        move || assert!(started.elapsed() < Duration::from_secs(30), "{what} within 30 s")
    };
    let check = until("keymint answers over TLS");
    loop {
        if let Ok(channel) = channel(process.addr, either.clone()).await
            && health(channel).await == Ok(ServingStatus::Serving as i32)
        {
            break;
        }
        check();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        served_certificate(process.addr, either.clone()).await.expect("TLS"),
        first_certificate(&old.cert)
    );
    let mut open = http1(process.addr, client_config(&[&old_ca.cert], None, &["http/1.1"])).await;
    let https = format!("https://127.0.0.1:{port}");
    assert_eq!(discovery(&mut open).await["issuer"], https.as_str());

    new.install_as(&live);
    process.hang_up();
    let check = until("SIGHUP switches the certificate");
    while served_certificate(process.addr, either.clone()).await.expect("TLS") != first_certificate(&new.cert)
    {
        check();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(discovery(&mut open).await["issuer"], https.as_str(), "the connection opened before goes on");

    // A bad file: the log says so, the process goes on with the certificate it has.
    std::fs::write(&live.cert, "not a certificate\n").expect("write");
    process.hang_up();
    let check = until("the failed reload is logged");
    while !process.log().contains("reload failed") {
        check();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = process.log();
    assert!(log.contains("live.pem") && log.contains("holds no CERTIFICATE block"), "{log}");
    assert_eq!(served_certificate(process.addr, either).await.expect("TLS"), first_certificate(&new.cert));
    assert_eq!(discovery(&mut open).await["issuer"], https.as_str());
}
