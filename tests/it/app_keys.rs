//! Application keys end to end: issue, read, list, remove, audit, cascade, and concurrent issuance.

use std::collections::BTreeSet;

use aws_lc_rs::rsa::KeyPair;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use keymint::api::pb::keymint::{
    admin::v1::ListOrgsRequest,
    management::v1::{
        AddAppKeyRequest, AddAppKeyResponse, GetAppByIdRequest, GetAppKeyRequest, GetProjectByIdRequest,
        KeyType, ListAppChangesRequest, ListAppKeysRequest, RemoveAppKeyRequest, RemoveAppRequest,
        RemoveProjectRequest,
    },
    v1::{ChangeQuery, ListQuery},
};
use tonic::Code;

use crate::helpers::{Claims, Db, KeyFile, TestServer, key_request, on_both_databases};

/// 9999-12-31T23:59:59Z: the expiration of a key requested without one.
const NEVER_SECONDS: i64 = 253_402_300_799;

on_both_databases!(issue_read_list_remove_and_audit_a_key, issue_read_list_remove_and_audit_a_key);
async fn issue_read_list_remove_and_audit_a_key(db: Db) {
    let server = TestServer::start(db).await;
    let mut client = server.management().await;
    let (project_id, app_id, client_id) = server.project_and_app("billing").await;
    let orgs =
        server.admin().await.list_orgs(server.req(ListOrgsRequest { query: None })).await.expect("orgs");
    let org_id = orgs.into_inner().result[0].id.clone();

    // Issue: a fresh app's first key reports sequence 2, one timestamp for both dates, and the owner org.
    let added = client.add_app_key(server.req(key_request(&project_id, &app_id))).await.expect("add key");
    let AddAppKeyResponse { id: key_id, details, key_details } = added.into_inner();
    let details = details.expect("details");
    assert_eq!(details.sequence, 2);
    assert_eq!(details.creation_date, details.change_date);
    assert_eq!(details.resource_owner, org_id);

    // The key file: documented field order, PKCS#1 RSA-2048, and IDs that match.
    let raw = String::from_utf8(key_details.clone()).expect("utf8 key file");
    let expected_start =
        format!(r#"{{"type":"application","keyId":"{key_id}","key":"-----BEGIN RSA PRIVATE KEY-----\n"#);
    assert!(raw.starts_with(&expected_start), "key file starts {}", &raw[..80]);
    let file: KeyFile = serde_json::from_slice(&key_details).expect("key file JSON");
    assert_eq!((file.kind.as_str(), file.key_id.as_str()), ("application", key_id.as_str()));
    assert_eq!((file.app_id.as_str(), file.client_id.as_str()), (app_id.as_str(), client_id.as_str()));
    assert!(raw.find(r#""appId""#) < raw.find(r#""clientId""#));
    let (label, pkcs1) = pkcs8::der::pem::decode_vec(file.key.as_bytes()).expect("PEM");
    assert_eq!(label, "RSA PRIVATE KEY");
    let pair = KeyPair::from_der(&pkcs1).expect("PKCS#1 RSAPrivateKey");
    assert_eq!(pair.public_modulus_len() * 8, 2048);

    // A JWT signed with the private key verifies with the public key keymint stored.
    let stored = server.store().public_key(&app_id, &key_id).await.expect("read").expect("public key");
    let claims =
        Claims { iss: client_id.clone(), sub: client_id.clone(), aud: "keymint".into(), exp: 4_000_000_000 };
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(key_id.clone());
    let jwt =
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_rsa_pem(file.key.as_bytes()).expect("enc"))
            .expect("sign");
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&["keymint"]);
    let verified = jsonwebtoken::decode::<Claims>(
        &jwt,
        &DecodingKey::from_rsa_pem(stored.as_bytes()).expect("dec"),
        &validation,
    )
    .expect("JWT verifies with the stored public key");
    assert_eq!(verified.claims, claims);

    // Read it back: no key material, the default expiration, the event's details.
    let key = client
        .get_app_key(server.req(GetAppKeyRequest {
            project_id: project_id.clone(),
            app_id: app_id.clone(),
            key_id: key_id.clone(),
            ..Default::default()
        }))
        .await
        .expect("get key")
        .into_inner()
        .key
        .expect("key");
    assert_eq!((key.id.as_str(), key.r#type), (key_id.as_str(), KeyType::Json as i32));
    assert_eq!(key.expiration_date.expect("expiration").seconds, NEVER_SECONDS);
    assert_eq!(key.details.as_ref().map(|d| d.sequence), Some(2));

    // Two more keys, one with its own expiration; then page through them.
    let mut expiring = key_request(&project_id, &app_id);
    expiring.expiration_date = Some(prost_types::Timestamp { seconds: 4_102_444_800, nanos: 0 });
    let second = client.add_app_key(server.req(expiring)).await.expect("second").into_inner();
    assert_eq!(second.details.expect("details").sequence, 3);
    let third = client.add_app_key(server.req(key_request(&project_id, &app_id))).await.expect("third");
    let third_id = third.into_inner().id;

    let list = |offset, limit, asc| {
        server.req(ListAppKeysRequest {
            query: Some(ListQuery { offset, limit, asc }),
            app_id: app_id.clone(),
            project_id: project_id.clone(),
            ..Default::default()
        })
    };
    let newest_first = client.list_app_keys(list(0, 0, false)).await.expect("list").into_inner();
    let ids: Vec<_> = newest_first.result.iter().map(|k| k.id.clone()).collect();
    assert_eq!(ids, [third_id.clone(), second.id.clone(), key_id.clone()]);
    let list_details = newest_first.details.expect("list details");
    assert_eq!(list_details.total_result, 3);
    assert_eq!(list_details.processed_sequence, server.store().position().await.expect("position"));
    assert!(list_details.view_timestamp.is_some());
    let page = client.list_app_keys(list(1, 1, true)).await.expect("page").into_inner();
    assert_eq!(page.result.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(), [second.id.as_str()]);
    assert_eq!(page.details.expect("details").total_result, 3);
    assert_eq!(page.result[0].expiration_date.as_ref().map(|t| t.seconds), Some(4_102_444_800));

    // Remove: gone from every read at once; a second removal is NOT_FOUND.
    let remove = || RemoveAppKeyRequest {
        project_id: project_id.clone(),
        app_id: app_id.clone(),
        key_id: key_id.clone(),
    };
    let removed = client.remove_app_key(server.req(remove())).await.expect("remove").into_inner();
    assert_eq!(removed.details.expect("details").sequence, 5);
    let get = GetAppKeyRequest {
        project_id: project_id.clone(),
        app_id: app_id.clone(),
        key_id: key_id.clone(),
        ..Default::default()
    };
    let gone = client.get_app_key(server.req(get)).await.expect_err("removed key");
    assert_eq!(gone.code(), Code::NotFound);
    let listed = client.list_app_keys(list(0, 0, true)).await.expect("list").into_inner();
    assert_eq!(listed.details.expect("details").total_result, 2);
    let again = client.remove_app_key(server.req(remove())).await.expect_err("removed twice");
    assert_eq!(again.code(), Code::NotFound);

    // The audit trail: every event of the app, in order, with who did it, and no private key anywhere.
    let changes = client
        .list_app_changes(server.req(ListAppChangesRequest {
            project_id: project_id.clone(),
            app_id: app_id.clone(),
            query: Some(ChangeQuery { sequence: 0, limit: 0, asc: true }),
        }))
        .await
        .expect("changes")
        .into_inner()
        .result;
    let types: Vec<_> = changes.iter().map(|c| c.event_type.as_str()).collect();
    assert_eq!(types, ["app.added", "app.key.added", "app.key.added", "app.key.added", "app.key.removed"]);
    assert_eq!(changes.iter().map(|c| c.sequence).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert!(changes.iter().all(|c| !c.editor_id.is_empty() && c.resource_owner == org_id));
    assert!(!format!("{changes:?}").contains("PRIVATE KEY"));
    assert!(format!("{:?}", changes[1].payload).contains("BEGIN PUBLIC KEY"));
    let newest_two = client
        .list_app_changes(server.req(ListAppChangesRequest {
            project_id: project_id.clone(),
            app_id: app_id.clone(),
            query: Some(ChangeQuery { sequence: 0, limit: 2, asc: false }),
        }))
        .await
        .expect("changes")
        .into_inner()
        .result;
    assert_eq!(newest_two.iter().map(|c| c.sequence).collect::<Vec<_>>(), [5, 4]);

    server.stop().await;
}

on_both_databases!(removing_an_app_or_project_removes_its_keys, removing_an_app_or_project_removes_its_keys);
async fn removing_an_app_or_project_removes_its_keys(db: Db) {
    let server = TestServer::start(db).await;
    let mut client = server.management().await;

    let (project_id, app_id, _) = server.project_and_app("to-remove-app").await;
    let key =
        client.add_app_key(server.req(key_request(&project_id, &app_id))).await.expect("key").into_inner();
    client
        .remove_app(server.req(RemoveAppRequest { project_id: project_id.clone(), app_id: app_id.clone() }))
        .await
        .expect("remove app");
    assert_key_and_app_gone(&server, &project_id, &app_id, &key.id).await;

    let (project_id, app_id, _) = server.project_and_app("to-remove-project").await;
    let key =
        client.add_app_key(server.req(key_request(&project_id, &app_id))).await.expect("key").into_inner();
    client.remove_project(server.req(RemoveProjectRequest { id: project_id.clone() })).await.expect("remove");
    assert_key_and_app_gone(&server, &project_id, &app_id, &key.id).await;
    let project =
        client.get_project_by_id(server.req(GetProjectByIdRequest { id: project_id.clone() })).await;
    assert_eq!(project.expect_err("project removed").code(), Code::NotFound);
    let again = client.remove_project(server.req(RemoveProjectRequest { id: project_id.clone() })).await;
    assert_eq!(again.expect_err("removed twice").code(), Code::NotFound);
    let add = client.add_app_key(server.req(key_request(&project_id, &app_id))).await;
    assert_eq!(add.expect_err("app of a removed project").code(), Code::NotFound);

    server.stop().await;
}

async fn assert_key_and_app_gone(server: &TestServer, project_id: &str, app_id: &str, key_id: &str) {
    let mut client = server.management().await;
    let app = client
        .get_app_by_id(server.req(GetAppByIdRequest { project_id: project_id.into(), app_id: app_id.into() }))
        .await;
    assert_eq!(app.expect_err("app gone").code(), Code::NotFound);
    let key = client
        .get_app_key(server.req(GetAppKeyRequest {
            project_id: project_id.into(),
            app_id: app_id.into(),
            key_id: key_id.into(),
            ..Default::default()
        }))
        .await;
    assert_eq!(key.expect_err("key gone").code(), Code::NotFound);
    let keys = client
        .list_app_keys(server.req(ListAppKeysRequest {
            app_id: app_id.into(),
            project_id: project_id.into(),
            ..Default::default()
        }))
        .await;
    assert_eq!(keys.expect_err("app gone").code(), Code::NotFound);
}

on_both_databases!(
    twenty_concurrent_keys_get_sequences_2_to_21,
    twenty_concurrent_keys_get_sequences_2_to_21
);
async fn twenty_concurrent_keys_get_sequences_2_to_21(db: Db) {
    let server = TestServer::start(db).await;
    let (project_id, app_id, _) = server.project_and_app("race").await;
    let channel = server.channel().await;

    let calls = (0..20).map(|_| {
        let mut client =
            keymint::api::pb::keymint::management::v1::management_service_client::ManagementServiceClient::new(
                channel.clone(),
            );
        let request = server.req(key_request(&project_id, &app_id));
        tokio::spawn(async move { client.add_app_key(request).await.map(|r| r.into_inner()) })
    });
    let mut sequences = Vec::new();
    let mut ids = BTreeSet::new();
    for call in calls.collect::<Vec<_>>() {
        let added = call.await.expect("task").expect("every concurrent AddAppKey succeeds");
        sequences.push(added.details.expect("details").sequence);
        ids.insert(added.id);
    }
    sequences.sort_unstable();
    assert_eq!(sequences, (2..=21).collect::<Vec<u64>>());
    assert_eq!(ids.len(), 20);

    let mut client = server.management().await;
    let listed = client
        .list_app_keys(server.req(ListAppKeysRequest {
            app_id: app_id.clone(),
            project_id,
            ..Default::default()
        }))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.details.expect("details").total_result, 20);
    let events = server.store().load(keymint::domain::AggregateType::App, &app_id).await.expect("load");
    assert_eq!(events.len(), 21);

    server.stop().await;
}

/// Two keymint processes on one PostgreSQL database: a key removed through one is gone from the other's reads
/// (which serve keys from memory) within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set KEYMINT_TEST_POSTGRES_URL (source .ci/tools.sh)"]
async fn a_removal_on_one_process_reaches_the_other_within_a_second() {
    let db = Db::required_postgres();
    let first = TestServer::start(db).await;
    let second = first.start_beside().await;
    let (project_id, app_id, _) = first.project_and_app("shared").await;
    let key = first.management().await.add_app_key(first.req(key_request(&project_id, &app_id))).await;
    let key_id = key.expect("add key").into_inner().id;
    let get = || GetAppKeyRequest {
        project_id: project_id.clone(),
        app_id: app_id.clone(),
        key_id: key_id.clone(),
        ..Default::default()
    };

    let list = || ListAppKeysRequest {
        project_id: project_id.clone(),
        app_id: app_id.clone(),
        ..Default::default()
    };

    // The second process reads the key and lists it (and keeps both in memory).
    let mut other = second.management().await;
    other.get_app_key(second.req(get())).await.expect("visible on the second process");
    other.get_app_key(second.req(get())).await.expect("served again");
    for _ in 0..2 {
        let listed = other.list_app_keys(second.req(list())).await.expect("listed").into_inner();
        assert_eq!(listed.result.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(), [key_id.as_str()]);
    }

    let remove = RemoveAppKeyRequest {
        project_id: project_id.clone(),
        app_id: app_id.clone(),
        key_id: key_id.clone(),
    };
    first.management().await.remove_app_key(first.req(remove)).await.expect("remove on the first process");
    let removed_at = std::time::Instant::now();
    loop {
        match other.get_app_key(second.req(get())).await {
            Err(status) if status.code() == Code::NotFound => break,
            _ if removed_at.elapsed() > std::time::Duration::from_secs(1) => {
                panic!("the second process still serves the removed key after 1 s")
            }
            _ => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
        }
    }
    eprintln!("removal seen by the other process after {:?}", removed_at.elapsed());
    // Its list, served from memory a moment ago, no longer has the key either.
    let listed = other.list_app_keys(second.req(list())).await.expect("listed").into_inner();
    assert!(listed.result.is_empty(), "{listed:?}");
    assert_eq!(listed.details.map(|d| d.total_result), Some(0));
    second.stop().await;
    first.stop().await;
}

/// A server configured for 2048- and 3072-bit keys issues either, with 2048 as the default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_picks_one_of_the_configured_key_sizes() {
    let fresh = crate::helpers::FreshDb::create(&Db::Sqlite).await;
    let mut config = crate::helpers::config(&fresh, Some("km_admin_token_for_the_sizes_test".into()));
    config.key_sizes =
        vec![keymint::crypto::keygen::RsaBits::Rsa2048, keymint::crypto::keygen::RsaBits::Rsa3072];
    let running = keymint::app::start(&config).await.expect("start");
    let server = TestServer {
        addr: running.addr,
        running: Some(running),
        token: config.admin_token.clone().unwrap_or_default(),
        db: fresh,
    };
    let (project_id, app_id, _) = server.project_and_app("sizes").await;
    let mut client = server.management().await;

    for (key_size, bits) in [(0, 2048), (2048, 2048), (3072, 3072)] {
        let request = AddAppKeyRequest { key_size, ..key_request(&project_id, &app_id) };
        let added = client.add_app_key(server.req(request)).await.expect("add key").into_inner();
        let file: KeyFile = serde_json::from_slice(&added.key_details).expect("key file");
        let (_, pkcs1) = pkcs8::der::pem::decode_vec(file.key.as_bytes()).expect("PEM");
        let pair = KeyPair::from_der(&pkcs1).expect("PKCS#1");
        assert_eq!(pair.public_modulus_len() * 8, bits, "key_size {key_size}");
    }
    server.stop().await;
}
