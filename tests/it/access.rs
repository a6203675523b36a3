//! Who may call: bearer tokens, the first start's admin token, and organizations invisible to each other.

use keymint::{
    api::pb::keymint::{
        admin::v1::AddOrgRequest,
        management::v1::{
            AddApiAppRequest, AddProjectRequest, GetAppByIdRequest, GetProjectByIdRequest,
            ListProjectsRequest,
        },
    },
    app,
    service::access::AdminToken,
};
use tonic::{Code, Request, metadata::MetadataValue};

use crate::helpers::{Db, FreshDb, TestServer, config, error_of, key_request, on_both_databases, with_token};

on_both_databases!(calls_without_a_valid_bearer_token_are_unauthenticated, unauthenticated);
async fn unauthenticated(db: Db) {
    let server = TestServer::start(db).await;
    let mut client = server.management().await;
    let list = || ListProjectsRequest { query: None };

    let missing = client.list_projects(Request::new(list())).await.expect_err("no header");
    assert_eq!(error_of(&missing), (Code::Unauthenticated, "UNAUTHENTICATED".into(), vec![]));
    let unknown =
        client.list_projects(with_token(list(), "km_admin_not-a-real-token")).await.expect_err("unknown");
    assert_eq!(unknown.code(), Code::Unauthenticated);
    let mut basic = Request::new(list());
    basic.metadata_mut().insert("authorization", MetadataValue::from_static("Basic dXNlcjpwYXNz"));
    assert_eq!(client.list_projects(basic).await.expect_err("basic").code(), Code::Unauthenticated);
    assert!(client.list_projects(server.req(list())).await.is_ok());

    server.stop().await;
}

on_both_databases!(organizations_cannot_see_each_others_objects, organizations_are_invisible_to_each_other);
async fn organizations_are_invisible_to_each_other(db: Db) {
    let server = TestServer::start(db).await;
    let mut client = server.management().await;
    let other =
        server.admin().await.add_org(server.req(AddOrgRequest { name: "other".into() })).await.expect("org");
    let other_org = other.into_inner().id;

    // A project and app of the other organization, created by acting there through the header.
    let project = client
        .add_project(server.req_in(&other_org, AddProjectRequest { name: "theirs".into() }))
        .await
        .expect("project in other org")
        .into_inner();
    assert_eq!(project.details.as_ref().map(|d| d.resource_owner.as_str()), Some(other_org.as_str()));
    let app = client
        .add_api_app(server.req_in(
            &other_org,
            AddApiAppRequest { project_id: project.id.clone(), name: "a".into(), ..Default::default() },
        ))
        .await
        .expect("app in other org")
        .into_inner();

    // From the caller's own organization, none of it exists.
    let get = client.get_project_by_id(server.req(GetProjectByIdRequest { id: project.id.clone() })).await;
    assert_eq!(error_of(&get.expect_err("invisible")).1, "PROJECT_NOT_FOUND");
    let own = client.list_projects(server.req(ListProjectsRequest { query: None })).await.expect("list");
    assert!(own.into_inner().result.iter().all(|p| p.id != project.id));
    let app_get = client
        .get_app_by_id(
            server.req(GetAppByIdRequest { project_id: project.id.clone(), app_id: app.app_id.clone() }),
        )
        .await;
    assert_eq!(app_get.expect_err("invisible").code(), Code::NotFound);
    let key = client.add_app_key(server.req(key_request(&project.id, &app.app_id))).await;
    assert_eq!(key.expect_err("invisible app").code(), Code::NotFound);
    // The same name is free in the caller's own organization.
    client.add_project(server.req(AddProjectRequest { name: "theirs".into() })).await.expect("own project");

    // In the other organization, it is there.
    let theirs =
        client.get_project_by_id(server.req_in(&other_org, GetProjectByIdRequest { id: project.id })).await;
    assert_eq!(theirs.expect("visible there").into_inner().project.map(|p| p.name), Some("theirs".into()));

    let nowhere = client.list_projects(server.req_in("404", ListProjectsRequest { query: None })).await;
    assert_eq!(
        error_of(&nowhere.expect_err("no such org")),
        (Code::NotFound, "ORG_NOT_FOUND".into(), vec![])
    );

    server.stop().await;
}

on_both_databases!(first_start_writes_an_owner_only_admin_token_once, first_start_writes_the_admin_token);
async fn first_start_writes_the_admin_token(db: Db) {
    let mut fresh = FreshDb::create(&db).await;
    let running = app::start(&config(&fresh, None)).await.expect("first start");
    let AdminToken::Written(path) = running.admin_token.clone() else { panic!("expected a written token") };
    assert_eq!(path, fresh.data_dir().join("admin.token"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("token file").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let token = std::fs::read_to_string(&path).expect("read token").trim().to_owned();
    assert!(token.starts_with("km_admin_") && token.len() >= "km_admin_".len() + 22);

    let channel = tonic::transport::Channel::from_shared(format!("http://{}", running.addr))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut client =
        keymint::api::pb::keymint::management::v1::management_service_client::ManagementServiceClient::new(
            channel,
        );
    client.list_projects(with_token(ListProjectsRequest { query: None }, &token)).await.expect("token works");
    running.shutdown().await.expect("shutdown");

    // A second start on the same store creates nothing and leaves the file alone.
    let again = app::start(&config(&fresh, None)).await.expect("second start");
    assert_eq!(again.admin_token, AdminToken::Existing);
    assert_eq!(std::fs::read_to_string(&path).expect("read").trim(), token);
    again.shutdown().await.expect("shutdown");
    fresh.drop_database().await;
}
