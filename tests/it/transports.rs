//! The other ways in on the same port: gRPC-Web (with CORS), server reflection v1 and v1alpha, health; and what
//! the transport refuses: other content types, malformed or extra messages, streams past the per-connection limit.

use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use keymint::api::pb::keymint::management::v1::{
    AddProjectRequest, ListProjectsRequest, management_service_client::ManagementServiceClient,
};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::StreamExt;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::helpers::{Db, TestServer, on_both_databases};

on_both_databases!(grpc_web_over_http1_reaches_the_same_api, grpc_web_over_http1);
async fn grpc_web_over_http1(db: Db) {
    let server = TestServer::start(db).await;
    // An HTTP/1.1-only client speaking gRPC-Web, as a browser would.
    let http1 =
        Client::builder(TokioExecutor::new()).build_http::<tonic_web::GrpcWebCall<tonic::body::Body>>();
    let web = tower::ServiceBuilder::new().layer(tonic_web::GrpcWebClientLayer::new()).service(http1);
    let mut client = ManagementServiceClient::with_origin(web, server.url().parse().expect("uri"));

    let added = client.add_project(server.req(AddProjectRequest { name: "from-browser".into() })).await;
    let project_id = added.expect("gRPC-Web AddProject").into_inner().id;
    let listed = client.list_projects(server.req(ListProjectsRequest { query: None })).await.expect("list");
    assert!(listed.into_inner().result.iter().any(|p| p.id == project_id));
    let refused = client.list_projects(tonic::Request::new(ListProjectsRequest { query: None })).await;
    assert_eq!(refused.expect_err("no token").code(), tonic::Code::Unauthenticated);

    // A browser's CORS preflight is answered, allowing the headers gRPC-Web and keymint need.
    let mut socket = tokio::net::TcpStream::connect(server.addr).await.expect("connect");
    let preflight = format!(
        "OPTIONS /keymint.management.v1.ManagementService/ListProjects HTTP/1.1\r\nHost: {}\r\n\
         Origin: https://console.example\r\nAccess-Control-Request-Method: POST\r\n\
         Access-Control-Request-Headers: authorization, x-grpc-web, content-type, x-org-id\r\n\
         Connection: close\r\n\r\n",
        server.addr
    );
    socket.write_all(preflight.as_bytes()).await.expect("send preflight");
    let mut answer = String::new();
    socket.read_to_string(&mut answer).await.expect("read preflight answer");
    let answer = answer.to_lowercase();
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert!(answer.contains("access-control-allow-origin: *"), "{answer}");
    assert!(answer.contains("x-org-id") && answer.contains("authorization"), "{answer}");

    server.stop().await;
}

on_both_databases!(reflection_and_health_describe_the_server, reflection_and_health);
async fn reflection_and_health(db: Db) {
    let server = TestServer::start(db).await;
    let channel = server.channel().await;
    let expected =
        ["grpc.health.v1.Health", "keymint.admin.v1.AdminService", "keymint.management.v1.ManagementService"];

    // v1, as `buf curl` uses.
    {
        use tonic_reflection::pb::v1::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut client = ServerReflectionClient::new(channel.clone());
        let mut answers = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .expect("reflection v1")
            .into_inner();
        let Some(Ok(answer)) = answers.next().await else { panic!("no reflection answer") };
        let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
            panic!("{answer:?}")
        };
        let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
        assert!(expected.iter().all(|e| names.iter().any(|n| n == e)), "v1 lists {names:?}");
    }
    // v1alpha, as grpcurl and Python's grpcio-reflection use.
    {
        use tonic_reflection::pb::v1alpha::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "keymint.management.v1.ManagementService".into(),
            )),
        };
        let mut client = ServerReflectionClient::new(channel.clone());
        let mut answers = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .expect("reflection v1alpha")
            .into_inner();
        let Some(Ok(answer)) = answers.next().await else { panic!("no reflection answer") };
        let Some(MessageResponse::FileDescriptorResponse(files)) = answer.message_response else {
            panic!("{answer:?}")
        };
        assert!(!files.file_descriptor_proto.is_empty());
    }

    let mut health = HealthClient::new(channel);
    for service in ["", "keymint.management.v1.ManagementService", "keymint.admin.v1.AdminService"] {
        let answer = health.check(HealthCheckRequest { service: service.into() }).await.expect("health");
        assert_eq!(answer.into_inner().status, ServingStatus::Serving as i32, "{service:?}");
    }
    server.stop().await;
}

/// The gRPC paths refuse anything but gRPC and gRPC-Web content with HTTP 415, before running the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_grpc_content_types_get_415_and_are_not_executed() {
    use http_body_util::{BodyExt, Full};
    let server = TestServer::start(Db::Sqlite).await;
    let position = server.store().position().await.expect("position");
    let http1 = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
    let body = grpc_frame(&prost::Message::encode_to_vec(&AddProjectRequest { name: "plain".into() }));
    for content_type in [Some("text/plain"), None, Some("application/json"), Some("application/grpc+json")] {
        let mut request = http::Request::post(format!(
            "{}/keymint.management.v1.ManagementService/AddProject",
            server.url()
        ))
        .header("authorization", format!("Bearer {}", server.token));
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = http1
            .request(request.body(Full::new(body.clone().into())).expect("request"))
            .await
            .expect("send");
        assert_eq!(response.status(), http::StatusCode::UNSUPPORTED_MEDIA_TYPE, "{content_type:?}");
        let _ = response.into_body().collect().await;
    }
    // Over HTTP/2 as well, where tonic-web passes other types through. One connection each, so that the answer's
    // headers are literals, not references to what HPACK's dynamic table holds from an earlier answer.
    for content_type in [Some("text/plain"), None] {
        let mut h2 = RawH2::connect(server.addr).await;
        h2.headers(1, "/keymint.management.v1.ManagementService/AddProject", content_type, false).await;
        let answers = h2.read_for(Duration::from_millis(500)).await;
        let headers: Vec<_> = answers.iter().filter(|f| f.kind == 0x1).collect();
        assert_eq!(headers.len(), 1, "{content_type:?}: {answers:?}");
        // `:status: 415` is not in HPACK's static table: a literal, "415" as is or Huffman-coded (0x68 0x2d 0xff).
        let payload = &headers[0].payload;
        assert!(payload.windows(3).any(|w| w == b"415" || w == [0x68, 0x2d, 0xff]), "{payload:?}");
    }
    assert_eq!(server.store().position().await.expect("position"), position, "nothing was written");
    server.stop().await;
}

// A unary call carries exactly one message: two, or bytes after one, are refused and nothing runs; a body that
// is not the method's protobuf is INVALID_ARGUMENT, over gRPC and gRPC-Web alike.
on_both_databases!(malformed_unary_bodies_are_invalid_arguments, malformed_unary_bodies);
async fn malformed_unary_bodies(db: Db) {
    use http_body_util::{BodyExt, Full};
    let server = TestServer::start(db).await;
    let position = server.store().position().await.expect("position");
    let path = "/keymint.management.v1.ManagementService/AddProject";
    let one = prost::Message::encode_to_vec(&AddProjectRequest { name: "one".into() });
    let two = prost::Message::encode_to_vec(&AddProjectRequest { name: "two".into() });

    // gRPC (HTTP/2), through tonic's client with a codec that sends bytes as given.
    let grpc = tonic::client::Grpc::new(server.channel().await);
    let call = |messages: Vec<Vec<u8>>| {
        let mut grpc = grpc.clone();
        let request = server.req(tokio_stream::iter(messages));
        async move {
            grpc.ready().await.expect("ready");
            grpc.client_streaming(request, http::uri::PathAndQuery::from_static(path), RawCodec).await
        }
    };
    for (messages, what) in [
        (vec![one.clone(), two.clone()], "two messages"),
        (vec![vec![0x0a, 0xff]], "a truncated field"),
        (vec![vec![0x0a, 0x02, 0xc3, 0x28]], "a string that is not UTF-8"),
        (vec![vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]], "a bad varint tag"),
    ] {
        let status = call(messages).await.expect_err(what);
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{what}: {status:?}");
    }
    let status = call(vec![]).await.expect_err("no message");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");

    // gRPC-Web over HTTP/1.1: binary and text bodies.
    let http1 = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
    let web = |content_type: &'static str, body: Vec<u8>| {
        let request = http::Request::post(format!("{}{path}", server.url()))
            .header("authorization", format!("Bearer {}", server.token))
            .header("content-type", content_type)
            .header("x-grpc-web", "1")
            .body(Full::new(bytes::Bytes::from(body)))
            .expect("request");
        let response = http1.request(request);
        async move {
            let response = response.await.expect("send");
            let header = response.headers().get("grpc-status").map(|v| v.to_str().unwrap_or("").to_owned());
            let body = response.into_body().collect().await.expect("body").to_bytes();
            // Trailers-only answers carry grpc-status as a header; others in a trailer frame in the body.
            header.or_else(|| {
                let text = String::from_utf8_lossy(&body);
                text.split("grpc-status:")
                    .nth(1)
                    .map(|rest| rest.trim().chars().take_while(char::is_ascii_digit).collect())
            })
        }
    };
    use base64::Engine as _;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes).into_bytes();
    let cases: Vec<(&'static str, Vec<u8>, &str)> = vec![
        ("application/grpc-web+proto", [grpc_frame(&one), grpc_frame(&two)].concat(), "two messages"),
        ("application/grpc-web+proto", [grpc_frame(&one), vec![0]].concat(), "a trailing byte"),
        ("application/grpc-web+proto", grpc_frame(&[0x0a, 0xff]), "bad protobuf"),
        ("application/grpc-web+proto", grpc_frame(&one)[..4].to_vec(), "a cut header"),
        ("application/grpc-web-text", b"!!!not base64!!!".to_vec(), "bad base64"),
        ("application/grpc-web-text", b64(&grpc_frame(&[0x0a, 0xff])), "bad protobuf in text"),
        ("application/grpc-web-text", b64(&[grpc_frame(&one), grpc_frame(&two)].concat()), "two in text"),
    ];
    for (content_type, body, what) in cases {
        assert_eq!(web(content_type, body).await.as_deref(), Some("3"), "{what}");
    }
    let mut compressed = grpc_frame(&one);
    compressed[0] = 1;
    assert_eq!(web("application/grpc-web+proto", compressed).await.as_deref(), Some("12"), "compressed");

    assert_eq!(server.store().position().await.expect("position"), position, "nothing was executed");
    // One well-formed message still works, both ways.
    assert_eq!(web("application/grpc-web+proto", grpc_frame(&one)).await.as_deref(), Some("0"));
    call(vec![two]).await.expect("one message over gRPC");
    server.stop().await;
}

/// One HTTP/2 connection may hold at most 256 calls at once: past that, streams are refused (REFUSED_STREAM),
/// not accepted and kept in memory however many a client opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_per_connection_are_bounded() {
    let server = TestServer::start(Db::Sqlite).await;
    let mut h2 = RawH2::connect(server.addr).await;
    assert_eq!(h2.max_concurrent_streams, Some(256), "the server announces its limit");
    // Stalled calls: headers without a body, which the server waits for.
    let opened = 400_u32;
    for i in 0..opened {
        h2.headers(2 * i + 1, "/keymint.admin.v1.AdminService/ListOrgs", Some("application/grpc"), false)
            .await;
    }
    let frames = h2.read_for(Duration::from_secs(2)).await;
    const REFUSED_STREAM: u32 = 7;
    let refused = frames
        .iter()
        .filter(|f| f.kind == 0x3 && f.payload.get(..4) == Some(&REFUSED_STREAM.to_be_bytes()[..]))
        .count();
    let answered = frames.iter().filter(|f| f.kind == 0x1).count();
    eprintln!("{opened} stalled streams on one connection: {refused} refused, {answered} answered");
    assert!(refused >= (opened - 256) as usize, "{refused} refused of {opened}");

    // Other connections are served meanwhile.
    let mut health = HealthClient::new(server.channel().await);
    health.check(HealthCheckRequest { service: String::new() }).await.expect("health");
    server.stop().await;
}

/// A gRPC message: flags 0, the length, the bytes.
fn grpc_frame(message: &[u8]) -> Vec<u8> {
    let mut frame = vec![0];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    frame
}

/// Sends each request as the bytes given; decodes answers as AddProject's.
#[derive(Debug, Clone, Copy)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = keymint::api::pb::keymint::management::v1::AddProjectResponse;
    type Encoder = RawCodec;
    type Decoder = tonic_prost::ProstDecoder<Self::Decode>;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::default()
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, buf: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(buf, &item);
        Ok(())
    }
}

/// Just enough HTTP/2 to open streams that a client library would queue, and to see what the server answers.
struct RawH2 {
    socket: tokio::net::TcpStream,
    authority: String,
    max_concurrent_streams: Option<u32>,
}

#[derive(Debug)]
struct Frame {
    kind: u8,
    stream: u32,
    payload: Vec<u8>,
}

impl RawH2 {
    async fn connect(addr: std::net::SocketAddr) -> RawH2 {
        let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
        socket.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.expect("preface");
        let mut h2 = RawH2 { socket, authority: addr.to_string(), max_concurrent_streams: None };
        h2.frame(0x4, 0, 0, &[]).await;
        // The server's settings come first; acknowledging them puts its limits in force.
        loop {
            let frame = h2.read_frame().await.expect("server settings");
            if frame.kind == 0x4
                && frame.payload.len() % 6 == 0
                && frame.stream == 0
                && !frame.payload.is_empty()
            {
                for setting in frame.payload.chunks(6) {
                    if u16::from_be_bytes([setting[0], setting[1]]) == 0x3 {
                        h2.max_concurrent_streams =
                            Some(u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]));
                    }
                }
                break;
            }
        }
        h2.frame(0x4, 0x1, 0, &[]).await;
        h2
    }

    async fn frame(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let mut frame = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        frame.extend_from_slice(&[kind, flags]);
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.extend_from_slice(payload);
        self.socket.write_all(&frame).await.expect("send frame");
    }

    /// A POST's headers, HPACK-encoded as literals without Huffman coding.
    async fn headers(&mut self, stream: u32, path: &str, content_type: Option<&str>, end_stream: bool) {
        let literal = |out: &mut Vec<u8>, value: &str| {
            out.push(value.len() as u8);
            out.extend_from_slice(value.as_bytes());
        };
        let mut block = vec![0x83, 0x86]; // :method POST, :scheme http
        block.push(0x04); // :path, literal value
        literal(&mut block, path);
        block.push(0x01); // :authority, literal value
        let authority = self.authority.clone();
        literal(&mut block, &authority);
        if let Some(content_type) = content_type {
            block.extend_from_slice(&[0x0f, 0x10]); // content-type (static index 31), literal value
            literal(&mut block, content_type);
        }
        block.push(0x00);
        literal(&mut block, "te");
        literal(&mut block, "trailers");
        let flags = 0x4 | if end_stream { 0x1 } else { 0 };
        self.frame(0x1, flags, stream, &block).await;
    }

    async fn read_frame(&mut self) -> Option<Frame> {
        let mut header = [0_u8; 9];
        self.socket.read_exact(&mut header).await.ok()?;
        let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let mut payload = vec![0; length];
        self.socket.read_exact(&mut payload).await.ok()?;
        let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
        Some(Frame { kind: header[3], stream, payload })
    }

    /// Every frame the server sends within `window`.
    async fn read_for(&mut self, window: Duration) -> Vec<Frame> {
        let deadline = tokio::time::Instant::now() + window;
        let mut frames = Vec::new();
        while let Ok(Some(frame)) = tokio::time::timeout_at(deadline, self.read_frame()).await {
            frames.push(frame);
        }
        frames
    }
}

/// A client with Nagle's algorithm on (many stacks' default) sends a request in two segments and holds the second
/// until the first is acknowledged; a server that delays that ACK stalls every call by ~40 ms. The fastest of ten
/// calls one at a time shows it whatever the load on the machine: with the stall, none is under 40 ms.
#[tokio::test]
async fn one_call_at_a_time_from_a_client_with_nagle_on_does_not_stall() {
    let server = TestServer::start(Db::Sqlite).await;
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .expect("url")
        .tcp_nodelay(false)
        .connect()
        .await
        .expect("connect");
    let mut client = ManagementServiceClient::new(channel);
    client.add_project(server.req(AddProjectRequest { name: "nagle".into() })).await.expect("add");
    let mut fastest = Duration::MAX;
    for _ in 0..10 {
        let started = std::time::Instant::now();
        client.list_projects(server.req(ListProjectsRequest { query: None })).await.expect("list");
        fastest = fastest.min(started.elapsed());
    }
    assert!(fastest < Duration::from_millis(30), "fastest of ten calls took {fastest:?}");
    server.stop().await;
}
