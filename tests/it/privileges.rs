//! No credential gains by acting on keys: a key touches only keys no stronger than itself, never its own bounds;
//! `orgs:admin` on an organization's key sees that organization only; TEST keys never change anything.

use keymint::api::pb::keymint::{
    admin::v1::{AddOrgRequest, GetOrgByIdRequest, ListOrgsRequest},
    apikeys::v1::{
        CreateApiKeyRequest, DeleteApiKeyRequest, Environment, GetApiKeyRequest, ListApiKeysRequest,
        RateLimit, RollApiKeyRequest, Status, UpdateApiKeyRequest, VerifyApiKeyRequest,
    },
    management::v1::{AddAppKeyRequest, AddProjectRequest, ListProjectsRequest},
};
use tonic::Code;

use crate::helpers::{Db, TestServer, api_key_request, error_of, on_both_databases, with_token};

fn refused(reason: &str) -> (Code, String, Vec<String>) {
    (Code::PermissionDenied, reason.into(), vec![])
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn update(id: &str, mask: &[&str]) -> UpdateApiKeyRequest {
    UpdateApiKeyRequest { id: id.into(), update_mask: strings(mask), ..Default::default() }
}

fn roll(id: &str) -> RollApiKeyRequest {
    RollApiKeyRequest { id: id.into(), grace_period: None }
}

/// Whether the secret still verifies, asked with the admin token for a call from this machine (the networks
/// of the keys here allow it).
async fn verifies(server: &TestServer, secret: &str) -> bool {
    let request = VerifyApiKeyRequest {
        secret: secret.into(),
        client_ip: "127.0.0.1".into(),
        accept_test_keys: true,
        ..Default::default()
    };
    let verdict = server.api_keys().await.verify_api_key(server.req(request)).await.expect("verify");
    verdict.into_inner().valid
}

async fn scopes_of(server: &TestServer, id: &str) -> Vec<String> {
    let got = server.api_keys().await.get_api_key(server.req(GetApiKeyRequest { id: id.into() })).await;
    got.expect("get").into_inner().api_key.expect("record").scopes
}

on_both_databases!(a_key_cannot_roll_or_delete_a_stronger_key, roll_and_delete_only_weaker_keys);
async fn roll_and_delete_only_weaker_keys(db: Db) {
    let server = TestServer::start(db).await;
    let mut client = server.api_keys().await;
    let (_, writer) = server.api_key("writer", &["apikeys:write", "invoices:read"]).await;
    let (strong_id, strong) = server.api_key("strong", &["projects:write", "apikeys:write"]).await;
    let (integrator_id, integrator) = server.api_key("integrator", &["invoices:write"]).await;

    // Rolling a stronger key would hand its new secret to the caller: refused, naming the scope it lacks, and
    // nothing written (the stronger key's secret still works, and a 0 s grace did not lock anyone out).
    for (id, secret, lacking) in
        [(&strong_id, &strong, "projects:write"), (&integrator_id, &integrator, "invoices:write")]
    {
        let rolled = client.roll_api_key(with_token(roll(id), &writer)).await.expect_err("roll stronger");
        assert_eq!(error_of(&rolled), refused("KEY_EXCEEDS_CALLER"), "{lacking}");
        assert!(rolled.message().contains(&format!("`{lacking}`")), "message: {}", rolled.message());
        assert!(verifies(&server, secret).await, "{lacking}: the stronger key still works");
        let deleted = client
            .delete_api_key(with_token(DeleteApiKeyRequest { id: id.clone() }, &writer))
            .await
            .expect_err("delete stronger");
        assert_eq!(error_of(&deleted), refused("KEY_EXCEEDS_CALLER"), "{lacking}");
        assert!(verifies(&server, secret).await, "{lacking}: still works after the refused delete");
    }
    // The stronger key can still do what it could: the refused roll left it whole.
    server
        .management()
        .await
        .add_project(with_token(AddProjectRequest { name: "still mine".into() }, &strong))
        .await
        .expect("the stronger key still adds projects");

    // A weaker or equal key may be rolled (its new secret works, the old one stops) and deleted.
    for scopes in [&["invoices:read"][..], &["apikeys:write", "invoices:read"]] {
        let (id, old) = server.api_key("weaker or equal", scopes).await;
        let rolled =
            client.roll_api_key(with_token(roll(&id), &writer)).await.expect("roll weaker").into_inner();
        assert!(verifies(&server, &rolled.secret).await && !verifies(&server, &old).await, "{scopes:?}");
        client
            .delete_api_key(with_token(DeleteApiKeyRequest { id: id.clone() }, &writer))
            .await
            .expect("delete weaker");
        assert!(!verifies(&server, &rolled.secret).await, "{scopes:?}: revoked");
    }

    server.stop().await;
}

on_both_databases!(a_key_cannot_update_or_mint_a_key_beyond_its_own_scopes, update_only_within_own_scopes);
async fn update_only_within_own_scopes(db: Db) {
    let server = TestServer::start(db).await;
    let mut client = server.api_keys().await;
    let (_, writer) = server.api_key("writer", &["apikeys:write", "invoices:read"]).await;
    let (weak_id, _) = server.api_key("weak", &["invoices:read"]).await;
    let (strong_id, _) = server.api_key("strong", &["invoices:read", "invoices:write"]).await;

    // Upward on a weaker key: the new scopes must be the caller's, integrator scopes included.
    for upward in [&["invoices:read", "projects:write"][..], &["invoices:write"]] {
        let mut widen = update(&weak_id, &["scopes"]);
        widen.scopes = strings(upward);
        let widen = client.update_api_key(with_token(widen, &writer)).await.expect_err("widen");
        assert_eq!(error_of(&widen), refused("SCOPE_NOT_GRANTABLE"), "{upward:?}");
    }
    assert_eq!(scopes_of(&server, &weak_id).await, ["invoices:read"]);
    // Any change of a stronger key, even narrowing it to what the caller holds or a new title.
    for (mask, scopes) in [(&["scopes"][..], &["invoices:read"][..]), (&["title"], &[])] {
        let mut change = update(&strong_id, mask);
        change.scopes = strings(scopes);
        change.title = "mine now".into();
        let change = client.update_api_key(with_token(change, &writer)).await.expect_err("change stronger");
        assert_eq!(error_of(&change), refused("KEY_EXCEEDS_CALLER"), "{mask:?}");
    }
    assert_eq!(scopes_of(&server, &strong_id).await, ["invoices:read", "invoices:write"]);
    // Nor mint one: a new key carries only scopes the caller holds.
    let minted = client
        .create_api_key(with_token(api_key_request("minted", &["invoices:write"]), &writer))
        .await
        .expect_err("mint stronger");
    assert_eq!(error_of(&minted), refused("SCOPE_NOT_GRANTABLE"));

    // Within its own scopes it may change a key, and grant to it.
    let mut retitle = update(&weak_id, &["title", "rate_limit", "scopes"]);
    retitle.title = "renamed".into();
    retitle.rate_limit = Some(RateLimit { per_second: 5, burst: 10 });
    retitle.scopes = strings(&["invoices:read", "apikeys:write"]);
    let updated = client.update_api_key(with_token(retitle, &writer)).await.expect("update weaker");
    assert_eq!(updated.into_inner().api_key.expect("record").title, "renamed");
    assert_eq!(scopes_of(&server, &weak_id).await, ["invoices:read", "apikeys:write"]);
    client
        .create_api_key(with_token(api_key_request("minted", &["invoices:read"]), &writer))
        .await
        .expect("mint within its own scopes");
    // The admin changes the stronger key as before.
    let mut narrow = update(&strong_id, &["scopes"]);
    narrow.scopes = strings(&["invoices:read"]);
    client.update_api_key(server.req(narrow)).await.expect("the admin narrows it");

    server.stop().await;
}

on_both_databases!(a_key_cannot_change_its_own_bounds, a_key_cannot_change_its_own_bounds);
async fn a_key_cannot_change_its_own_bounds(db: Db) {
    let server = TestServer::start(db).await;
    let mut client = server.api_keys().await;
    let in_an_hour = prost_types::Timestamp { seconds: now_seconds() + 3_600, nanos: 0 };
    let bounded = CreateApiKeyRequest {
        allowed_cidrs: strings(&["127.0.0.1/32"]),
        rate_limit: Some(RateLimit { per_second: 5, burst: 50 }),
        daily_quota: 1_000,
        expires_at: Some(in_an_hour),
        ..api_key_request("bounded", &["apikeys:write", "apikeys:read", "invoices:read"])
    };
    let created = client.create_api_key(server.req(bounded)).await.expect("create").into_inner();
    let (id, secret) = (created.api_key.expect("record").id, created.secret);

    let raise = |mask: &str| {
        let mut raise = update(&id, &[mask]);
        raise.scopes = strings(&["apikeys:write", "apikeys:read", "invoices:read"]);
        raise.allowed_cidrs = strings(&["0.0.0.0/0"]);
        raise.rate_limit = Some(RateLimit { per_second: 10_000, burst: 10_000 });
        raise.daily_quota = 1_000_000_000;
        raise.status = Status::Active as i32;
        raise.metadata = [("plan".to_owned(), "enterprise".to_owned())].into();
        raise
    };
    for field in ["rate_limit", "daily_quota", "status", "expires_at", "scopes", "allowed_cidrs", "metadata"]
    {
        let raised = client.update_api_key(with_token(raise(field), &secret)).await.expect_err("self-raise");
        assert_eq!(error_of(&raised), refused("SELF_ESCALATION"), "{field}");
        assert!(raised.message().contains(field), "message: {}", raised.message());
    }
    let key = client.get_api_key(server.req(GetApiKeyRequest { id: id.clone() })).await.expect("get");
    let key = key.into_inner().api_key.expect("record");
    assert_eq!(
        (key.rate_limit.map(|r| r.per_second), key.daily_quota, key.allowed_cidrs, key.metadata.len()),
        (Some(5), 1_000, strings(&["127.0.0.1/32"]), 0)
    );

    // Its own title it may change, and it may rotate its own secret.
    let mut retitle = update(&id, &["title", "description"]);
    retitle.title = "renamed by itself".into();
    client.update_api_key(with_token(retitle, &secret)).await.expect("own title");
    let rotated =
        client.roll_api_key(with_token(roll(&id), &secret)).await.expect("roll itself").into_inner();
    let secret = rotated.secret;
    assert!(verifies(&server, &secret).await);

    // Set INACTIVE by an admin, it cannot turn itself back on: it is not even a credential while inactive.
    let mut off = update(&id, &["status"]);
    off.status = Status::Inactive as i32;
    client.update_api_key(server.req(off)).await.expect("the admin deactivates it");
    let mut on = update(&id, &["status"]);
    on.status = Status::Active as i32;
    let back = client.update_api_key(with_token(on.clone(), &secret)).await.expect_err("reactivate itself");
    assert_eq!(back.code(), Code::Unauthenticated);
    // Nor can a weaker key turn it back on for it.
    let (_, weaker) = server.api_key("weaker", &["apikeys:write", "apikeys:read"]).await;
    let back = client.update_api_key(with_token(on.clone(), &weaker)).await.expect_err("peer reactivates");
    assert_eq!(error_of(&back), refused("KEY_EXCEEDS_CALLER"));
    assert!(!verifies(&server, &secret).await, "still inactive");
    client.update_api_key(server.req(on)).await.expect("the admin reactivates it");

    // Deleting itself only takes away: allowed.
    client
        .delete_api_key(with_token(DeleteApiKeyRequest { id: id.clone() }, &secret))
        .await
        .expect("delete self");
    assert!(!verifies(&server, &secret).await);

    server.stop().await;
}

on_both_databases!(an_organization_key_with_orgs_admin_sees_only_its_organization, orgs_admin_stays_home);
async fn orgs_admin_stays_home(db: Db) {
    let server = TestServer::start(db).await;
    let mut admin = server.admin().await;
    let mut client = server.api_keys().await;
    let other = admin.add_org(server.req(AddOrgRequest { name: "other".into() })).await.expect("org");
    let other = other.into_inner().id;
    // The instance admin may still put orgs:admin on a key (e.g. one made before this rule existed).
    let (_, org_key) = server.api_key("org admin", &["orgs:admin", "apikeys:write"]).await;

    let listed = admin.list_orgs(with_token(ListOrgsRequest { query: None }, &org_key)).await.expect("list");
    let listed = listed.into_inner();
    let own = listed.result.iter().map(|o| o.name.as_str()).collect::<Vec<_>>();
    assert_eq!(own, ["default"]);
    assert_eq!(listed.details.map(|d| d.total_result), Some(1));
    let own_id = listed.result[0].id.clone();
    let got = admin.get_org_by_id(with_token(GetOrgByIdRequest { id: own_id.clone() }, &org_key)).await;
    assert_eq!(got.expect("own org").into_inner().org.map(|o| o.id), Some(own_id));
    let theirs = admin.get_org_by_id(with_token(GetOrgByIdRequest { id: other.clone() }, &org_key)).await;
    assert_eq!(error_of(&theirs.expect_err("other org")), (Code::NotFound, "ORG_NOT_FOUND".into(), vec![]));
    let added = admin.add_org(with_token(AddOrgRequest { name: "mine".into() }, &org_key)).await;
    assert_eq!(error_of(&added.expect_err("add org")), refused("INSTANCE_ADMIN_ONLY"));
    // It holds orgs:admin, and still cannot hand it on.
    let minted =
        client.create_api_key(with_token(api_key_request("another admin", &["orgs:admin"]), &org_key)).await;
    assert_eq!(error_of(&minted.expect_err("grant orgs:admin")), refused("SCOPE_NOT_GRANTABLE"));

    // The instance admin sees and adds across the instance.
    let all = admin.list_orgs(server.req(ListOrgsRequest { query: None })).await.expect("admin lists");
    assert_eq!(all.into_inner().result.len(), 2);
    admin.get_org_by_id(server.req(GetOrgByIdRequest { id: other })).await.expect("admin gets another org");

    server.stop().await;
}

on_both_databases!(a_test_key_reads_but_never_writes, a_test_key_reads_but_never_writes);
async fn a_test_key_reads_but_never_writes(db: Db) {
    let server = TestServer::start(db).await;
    let mut client = server.api_keys().await;
    let mut management = server.management().await;
    let every = [
        "orgs:admin",
        "projects:read",
        "projects:write",
        "keys:read",
        "keys:write",
        "apikeys:read",
        "apikeys:write",
        "apikeys:verify",
    ];
    let staging =
        CreateApiKeyRequest { environment: Environment::Test as i32, ..api_key_request("staging", &every) };
    let created = client.create_api_key(server.req(staging)).await.expect("create").into_inner();
    let (id, test) = (created.api_key.expect("record").id, created.secret);
    assert!(test.starts_with("km_test_"));
    let (_, live) = server.api_key("live", &["invoices:read"]).await;

    let not_allowed = refused("TEST_KEY_NOT_ALLOWED");
    let project = management.add_project(with_token(AddProjectRequest { name: "p".into() }, &test)).await;
    assert_eq!(error_of(&project.expect_err("add project")), not_allowed);
    let app_key = management.add_app_key(with_token(AddAppKeyRequest::default(), &test)).await;
    assert_eq!(error_of(&app_key.expect_err("add app key")), not_allowed);
    let minted = client.create_api_key(with_token(api_key_request("m", &["invoices:read"]), &test)).await;
    assert_eq!(error_of(&minted.expect_err("create API key")), not_allowed);
    let rolled = client.roll_api_key(with_token(roll(&id), &test)).await;
    assert_eq!(error_of(&rolled.expect_err("roll itself")), not_allowed);
    let mut retitle = update(&id, &["title"]);
    retitle.title = "t".into();
    let retitled = client.update_api_key(with_token(retitle, &test)).await;
    assert_eq!(error_of(&retitled.expect_err("update")), not_allowed);
    let deleted = client.delete_api_key(with_token(DeleteApiKeyRequest { id: id.clone() }, &test)).await;
    assert_eq!(error_of(&deleted.expect_err("delete")), not_allowed);
    let org = server.admin().await.add_org(with_token(AddOrgRequest { name: "o".into() }, &test)).await;
    assert_eq!(error_of(&org.expect_err("add org")), refused("INSTANCE_ADMIN_ONLY"));
    assert!(verifies(&server, &test).await && verifies(&server, &live).await, "nothing was changed");

    // Reads and verify stay open to it.
    management
        .list_projects(with_token(ListProjectsRequest { query: None }, &test))
        .await
        .expect("list projects");
    client.list_api_keys(with_token(ListApiKeysRequest::default(), &test)).await.expect("list API keys");
    let verdict = client
        .verify_api_key(with_token(VerifyApiKeyRequest { secret: live, ..Default::default() }, &test))
        .await
        .expect("verify");
    assert!(verdict.into_inner().valid);

    server.stop().await;
}

fn now_seconds() -> i64 {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock");
    i64::try_from(since_epoch.as_secs()).expect("seconds")
}
