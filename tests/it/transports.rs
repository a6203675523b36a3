//! The other ways in on the same port: gRPC-Web (with CORS), server reflection v1 and v1alpha, health.

use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use keymint::api::pb::keymint::management::v1::{
    AddProjectRequest, ListProjectsRequest, management_service_client::ManagementServiceClient,
};
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
