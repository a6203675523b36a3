//! Every invalid request gets a clear error with the right code, a stable reason and the bad fields, and writes
//! nothing.

use keymint::api::pb::keymint::{
    admin::v1::{AddOrgRequest, GetOrgByIdRequest},
    management::v1::{
        AddApiAppRequest, AddAppKeyRequest, AddProjectRequest, GetAppByIdRequest, GetAppKeyRequest,
        GetProjectByIdRequest, KeyType, ListAppKeysRequest, ListProjectsRequest,
    },
    v1::ListQuery,
};
use tonic::Code;

use crate::helpers::{self, Db, TestServer, error_of, on_both_databases};

fn key_request(project_id: &str, app_id: &str, key_type: i32) -> AddAppKeyRequest {
    AddAppKeyRequest { r#type: key_type, ..helpers::key_request(project_id, app_id) }
}

on_both_databases!(
    invalid_input_is_refused_with_field_violations,
    invalid_input_is_refused_with_field_violations
);
async fn invalid_input_is_refused_with_field_violations(db: Db) {
    let server = TestServer::start(db).await;
    let mut client = server.management().await;
    let (project_id, app_id, _) = server.project_and_app("errors").await;
    let position_before = server.store().position().await.expect("position");
    let long = "9".repeat(201);

    let cases: Vec<(AddAppKeyRequest, Vec<&str>)> = vec![
        (key_request("", &app_id, KeyType::Json as i32), vec!["projectId"]),
        (key_request(&project_id, &long, KeyType::Json as i32), vec!["appId"]),
        (key_request("", "", KeyType::Json as i32), vec!["projectId", "appId"]),
        (key_request(&project_id, &app_id, KeyType::Unspecified as i32), vec!["type"]),
        (key_request(&project_id, &app_id, 7), vec!["type"]),
        (
            AddAppKeyRequest {
                expiration_date: Some(prost_types::Timestamp { seconds: 1_000_000_000, nanos: 0 }),
                ..key_request(&project_id, &app_id, KeyType::Json as i32)
            },
            vec!["expirationDate"],
        ),
        (
            AddAppKeyRequest {
                expiration_date: Some(prost_types::Timestamp { seconds: 4_102_444_800, nanos: -5 }),
                ..key_request(&project_id, &app_id, KeyType::Json as i32)
            },
            vec!["expirationDate"],
        ),
        (AddAppKeyRequest { key_size: 1024, ..helpers::key_request(&project_id, &app_id) }, vec!["keySize"]),
        // A size keymint issues, but this server is not configured for.
        (AddAppKeyRequest { key_size: 4096, ..helpers::key_request(&project_id, &app_id) }, vec!["keySize"]),
    ];
    for (request, fields) in cases {
        let status = client.add_app_key(server.req(request.clone())).await.expect_err("invalid request");
        let (code, reason, bad) = error_of(&status);
        assert_eq!(code, Code::InvalidArgument, "{request:?}: {status:?}");
        assert_eq!(reason, "INVALID_ARGUMENT");
        assert_eq!(bad, fields, "{request:?}");
        assert!(
            fields.iter().all(|f| status.message().contains(f)),
            "message names the field: {}",
            status.message()
        );
    }

    let too_many = client
        .list_app_keys(server.req(ListAppKeysRequest {
            query: Some(ListQuery { offset: 0, limit: 1001, asc: false }),
            app_id: app_id.clone(),
            project_id: project_id.clone(),
            ..Default::default()
        }))
        .await
        .expect_err("limit above 1000");
    assert_eq!(
        error_of(&too_many),
        (Code::InvalidArgument, "INVALID_ARGUMENT".into(), vec!["query.limit".into()])
    );
    let at_limit = client
        .list_projects(
            server.req(ListProjectsRequest { query: Some(ListQuery { offset: 0, limit: 1000, asc: true }) }),
        )
        .await;
    assert!(at_limit.is_ok());

    let blank =
        client.add_project(server.req(AddProjectRequest { name: "  ".into() })).await.expect_err("blank");
    assert_eq!(error_of(&blank).2, ["name"]);
    let long_name = client
        .add_api_app(server.req(AddApiAppRequest {
            project_id: project_id.clone(),
            name: "n".repeat(201),
            ..Default::default()
        }))
        .await
        .expect_err("long name");
    assert_eq!(error_of(&long_name).2, ["name"]);
    let empty_id = client
        .get_project_by_id(server.req(GetProjectByIdRequest { id: String::new() }))
        .await
        .expect_err("empty");
    assert_eq!(error_of(&empty_id).2, ["id"]);

    assert_eq!(server.store().position().await.expect("position"), position_before, "nothing was written");
    server.stop().await;
}

on_both_databases!(missing_objects_and_taken_names, missing_objects_and_taken_names);
async fn missing_objects_and_taken_names(db: Db) {
    let server = TestServer::start(db).await;
    let mut client = server.management().await;
    let (project_id, app_id, _) = server.project_and_app("shop").await;

    let no_app = client
        .add_app_key(server.req(key_request(&project_id, "404", KeyType::Json as i32)))
        .await
        .expect_err("missing app");
    assert_eq!(error_of(&no_app), (Code::NotFound, "APP_NOT_FOUND".into(), vec![]));
    let wrong_project = client
        .get_app_by_id(server.req(GetAppByIdRequest { project_id: "404".into(), app_id: app_id.clone() }))
        .await
        .expect_err("app under another project ID");
    assert_eq!(wrong_project.code(), Code::NotFound);
    let no_key = client
        .get_app_key(server.req(GetAppKeyRequest {
            project_id: project_id.clone(),
            app_id: app_id.clone(),
            key_id: "404".into(),
            ..Default::default()
        }))
        .await
        .expect_err("missing key");
    assert_eq!(error_of(&no_key), (Code::NotFound, "APP_KEY_NOT_FOUND".into(), vec![]));
    let no_project = client
        .get_project_by_id(server.req(GetProjectByIdRequest { id: "404".into() }))
        .await
        .expect_err("missing");
    assert_eq!(error_of(&no_project), (Code::NotFound, "PROJECT_NOT_FOUND".into(), vec![]));
    let no_org = server.admin().await.get_org_by_id(server.req(GetOrgByIdRequest { id: "404".into() })).await;
    assert_eq!(error_of(&no_org.expect_err("missing org")), (Code::NotFound, "ORG_NOT_FOUND".into(), vec![]));

    let project_twice =
        client.add_project(server.req(AddProjectRequest { name: "shop".into() })).await.expect_err("taken");
    assert_eq!(error_of(&project_twice), (Code::AlreadyExists, "PROJECT_NAME_TAKEN".into(), vec![]));
    let app_twice = client
        .add_api_app(server.req(AddApiAppRequest {
            project_id: project_id.clone(),
            name: "api".into(),
            ..Default::default()
        }))
        .await
        .expect_err("taken");
    assert_eq!(error_of(&app_twice), (Code::AlreadyExists, "APP_NAME_TAKEN".into(), vec![]));
    let mut admin = server.admin().await;
    admin.add_org(server.req(AddOrgRequest { name: "acme".into() })).await.expect("org");
    let org_twice =
        admin.add_org(server.req(AddOrgRequest { name: "acme".into() })).await.expect_err("taken");
    assert_eq!(error_of(&org_twice), (Code::AlreadyExists, "ORG_NAME_TAKEN".into(), vec![]));

    server.stop().await;
}
