//! No credential gains by acting on keys: a key touches only keys no stronger than itself and no looser than its
//! own limits, never its own bounds; `orgs:admin` on an organization's key sees that organization only; TEST keys
//! never change anything.

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

/// A request for a key with the scopes `apikeys:write` and `invoices:read`, limited in every dimension: 50
/// requests/s (bursts of 100), 1 000 a day, this machine and 10.0.0.0/8, and expiring an hour after the first
/// such request of the run. Its networks include 127.0.0.0/8 because the test server sees its clients at
/// 127.0.0.1. The expiry is one instant for every bounded key: taken per key, two keys made on either side of a
/// second's turn would differ by a second, and the later one would be looser than the earlier.
fn bounded(title: &str) -> CreateApiKeyRequest {
    CreateApiKeyRequest {
        allowed_cidrs: strings(&["127.0.0.0/8", "10.0.0.0/8"]),
        rate_limit: Some(RateLimit { per_second: 50, burst: 100 }),
        daily_quota: 1_000,
        expires_at: Some(*BOUNDED_EXPIRY),
        ..api_key_request(title, &["apikeys:write", "invoices:read"])
    }
}

static BOUNDED_EXPIRY: std::sync::LazyLock<prost_types::Timestamp> =
    std::sync::LazyLock::new(|| in_seconds(3_600));

fn in_seconds(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: now_seconds() + seconds, nanos: 0 }
}

/// Creates a key as the admin; returns (key ID, secret).
async fn created_by_admin(server: &TestServer, request: CreateApiKeyRequest) -> (String, String) {
    let created = server.api_keys().await.create_api_key(server.req(request)).await.expect("create");
    let created = created.into_inner();
    (created.api_key.expect("record").id, created.secret)
}

/// The key's sequence: unchanged when nothing was written to it.
async fn sequence_of(server: &TestServer, id: &str) -> u64 {
    let got = server.api_keys().await.get_api_key(server.req(GetApiKeyRequest { id: id.into() })).await;
    got.expect("get").into_inner().api_key.expect("record").details.expect("details").sequence
}

/// How many keys the organization has, revoked ones included.
async fn key_count(server: &TestServer) -> usize {
    let mut client = server.api_keys().await;
    let listed =
        client.list_api_keys(server.req(ListApiKeysRequest { limit: 100, ..Default::default() })).await;
    listed.expect("list").into_inner().result.len()
}

/// Asserts a refusal for a limit, naming the caller's bound.
fn assert_limited(result: Result<impl std::fmt::Debug, tonic::Status>, bound: &str, case: &str) {
    let status = result.expect_err(case);
    assert_eq!(error_of(&status), refused("LIMIT_EXCEEDS_CALLER"), "{case}: {}", status.message());
    assert!(status.message().contains(bound), "{case}: {}", status.message());
}

on_both_databases!(a_key_issues_keys_only_within_its_own_limits, issue_only_within_own_limits);
async fn issue_only_within_own_limits(db: Db) {
    let server = TestServer::start(db).await;
    let mut client = server.api_keys().await;
    let scopes = ["apikeys:write", "invoices:read"];
    let with_scopes = |title: &str| api_key_request(title, &scopes);
    let (_, rated) = created_by_admin(
        &server,
        CreateApiKeyRequest {
            rate_limit: Some(RateLimit { per_second: 10, burst: 20 }),
            ..with_scopes("rated")
        },
    )
    .await;
    let (_, networked) = created_by_admin(
        &server,
        CreateApiKeyRequest {
            allowed_cidrs: strings(&["127.0.0.0/8", "10.0.0.0/8"]),
            ..with_scopes("networked")
        },
    )
    .await;
    let (_, quota) =
        created_by_admin(&server, CreateApiKeyRequest { daily_quota: 1_000, ..with_scopes("quota") }).await;
    let in_an_hour = in_seconds(3_600);
    let (_, expiring) = created_by_admin(
        &server,
        CreateApiKeyRequest { expires_at: Some(in_an_hour), ..with_scopes("expiring") },
    )
    .await;
    let before = key_count(&server).await;

    // Each caller refused a key looser than itself in its dimension, the message naming its bound.
    let rate = |per_second, burst| Some(RateLimit { per_second, burst });
    let bound = "this credential is limited to 10 requests/s";
    for (limit, bound, case) in [
        (None, bound, "no rate limit"),
        (rate(11, 20), bound, "a higher rate"),
        (rate(10, 21), "this credential allows bursts of at most 20 requests", "a larger burst"),
    ] {
        let minted = CreateApiKeyRequest { rate_limit: limit, ..with_scopes(case) };
        assert_limited(client.create_api_key(with_token(minted, &rated)).await, bound, case);
    }
    let bound = "this credential is limited to the networks 127.0.0.0/8, 10.0.0.0/8";
    for (blocks, case) in [
        (&[][..], "any network"),
        (&["0.0.0.0/0"], "every IPv4 network"),
        (&["::/0"], "every IPv6 network"),
        (&["10.0.0.0/7"], "a wider block"),
        (&["127.0.0.1/32", "192.168.0.0/16"], "one block outside"),
    ] {
        let minted = CreateApiKeyRequest { allowed_cidrs: strings(blocks), ..with_scopes(case) };
        assert_limited(client.create_api_key(with_token(minted, &networked)).await, bound, case);
    }
    let bound = "this credential is limited to 1000 requests a day";
    for (daily_quota, case) in [(0, "no quota"), (1_001, "a larger quota")] {
        let minted = CreateApiKeyRequest { daily_quota, ..with_scopes(case) };
        assert_limited(client.create_api_key(with_token(minted, &quota)).await, bound, case);
    }
    for (expires_at, case) in [(None, "no expiry"), (Some(in_seconds(7_200)), "a later expiry")] {
        let minted = CreateApiKeyRequest { expires_at, ..with_scopes(case) };
        assert_limited(
            client.create_api_key(with_token(minted, &expiring)).await,
            "this credential expires at",
            case,
        );
    }
    assert_eq!(key_count(&server).await, before, "no refused key was created");

    // Within its limits, each mints a key, and the key works under them.
    let minted = [
        (CreateApiKeyRequest { rate_limit: rate(5, 10), ..with_scopes("slower") }, &rated),
        (CreateApiKeyRequest { rate_limit: rate(10, 20), ..with_scopes("as fast") }, &rated),
        (
            CreateApiKeyRequest { allowed_cidrs: strings(&["127.0.0.1/32"]), ..with_scopes("host") },
            &networked,
        ),
        (
            CreateApiKeyRequest {
                allowed_cidrs: strings(&["10.1.0.0/16", "127.0.0.0/8"]),
                ..with_scopes("inside")
            },
            &networked,
        ),
        (CreateApiKeyRequest { daily_quota: 500, ..with_scopes("smaller quota") }, &quota),
        (CreateApiKeyRequest { expires_at: Some(in_seconds(1_800)), ..with_scopes("sooner") }, &expiring),
        (CreateApiKeyRequest { expires_at: Some(in_an_hour), ..with_scopes("as soon") }, &expiring),
    ];
    for (request, caller) in minted {
        let title = request.title.clone();
        let created = client.create_api_key(with_token(request, caller)).await;
        let secret = created.unwrap_or_else(|e| panic!("{title}: {e:?}")).into_inner().secret;
        assert!(verifies(&server, &secret).await, "{title}");
    }
    // The admin is bound by none of this.
    created_by_admin(&server, with_scopes("unlimited")).await;

    server.stop().await;
}

on_both_databases!(a_key_cannot_loosen_a_key_by_updating_it, update_only_within_own_limits);
async fn update_only_within_own_limits(db: Db) {
    let server = TestServer::start(db).await;
    let mut client = server.api_keys().await;
    let (_, caller) = created_by_admin(&server, bounded("caller")).await;
    let (tight_id, _) = created_by_admin(&server, bounded("tight")).await;
    let (loose_id, _) =
        created_by_admin(&server, CreateApiKeyRequest { rate_limit: None, ..bounded("no rate limit") }).await;

    // Loosening a key within the caller's limits, in each updatable dimension: refused, nothing written.
    let sequence = sequence_of(&server, &tight_id).await;
    let loosen = |mask: &str| {
        let mut loosen = update(&tight_id, &[mask]);
        loosen.rate_limit = Some(RateLimit { per_second: 51, burst: 100 });
        loosen.allowed_cidrs = strings(&["127.0.0.0/8", "0.0.0.0/0"]);
        loosen.daily_quota = 0;
        loosen
    };
    for (mask, bound) in [
        ("rate_limit", "this credential is limited to 50 requests/s"),
        ("allowed_cidrs", "this credential is limited to the networks 127.0.0.0/8, 10.0.0.0/8"),
        ("daily_quota", "this credential is limited to 1000 requests a day"),
    ] {
        assert_limited(client.update_api_key(with_token(loosen(mask), &caller)).await, bound, mask);
    }
    let mut unlimit = update(&tight_id, &["rate_limit"]);
    unlimit.rate_limit = None;
    assert_limited(
        client.update_api_key(with_token(unlimit, &caller)).await,
        "50 requests/s",
        "no rate limit",
    );
    assert_eq!(sequence_of(&server, &tight_id).await, sequence, "nothing written");

    // Tightening it, or changing other fields, is allowed.
    let mut tighten = update(&tight_id, &["rate_limit", "allowed_cidrs", "daily_quota", "title"]);
    tighten.rate_limit = Some(RateLimit { per_second: 5, burst: 5 });
    tighten.allowed_cidrs = strings(&["127.0.0.1/32"]);
    tighten.daily_quota = 10;
    tighten.title = "tighter".into();
    client.update_api_key(with_token(tighten, &caller)).await.expect("tighten");

    // A key already looser than the caller may not be changed at all: not renamed, not even tightened.
    let mut rename = update(&loose_id, &["title"]);
    rename.title = "mine".into();
    let mut tighten = update(&loose_id, &["rate_limit"]);
    tighten.rate_limit = Some(RateLimit { per_second: 1, burst: 1 });
    for (change, case) in [(rename, "rename"), (tighten, "tighten")] {
        let changed = client.update_api_key(with_token(change, &caller)).await;
        assert_limited(changed, "this credential is limited to 50 requests/s", case);
    }

    server.stop().await;
}

on_both_databases!(a_key_cannot_roll_or_delete_a_looser_key, roll_and_delete_only_tighter_keys);
async fn roll_and_delete_only_tighter_keys(db: Db) {
    let server = TestServer::start(db).await;
    let mut client = server.api_keys().await;
    let (caller_id, caller) = created_by_admin(&server, bounded("caller")).await;

    // Siblings with the caller's scopes, each looser in one dimension.
    let siblings = [
        (
            CreateApiKeyRequest { rate_limit: None, ..bounded("no rate limit") },
            "this credential is limited to 50 requests/s",
        ),
        (
            CreateApiKeyRequest {
                rate_limit: Some(RateLimit { per_second: 50, burst: 101 }),
                ..bounded("burst")
            },
            "this credential allows bursts of at most 100 requests",
        ),
        (
            CreateApiKeyRequest { daily_quota: 0, ..bounded("no quota") },
            "this credential is limited to 1000 requests a day",
        ),
        (
            CreateApiKeyRequest { allowed_cidrs: vec![], ..bounded("any network") },
            "this credential is limited to the networks",
        ),
        (
            CreateApiKeyRequest { allowed_cidrs: strings(&["126.0.0.0/7"]), ..bounded("wider network") },
            "this credential is limited to the networks",
        ),
        (CreateApiKeyRequest { expires_at: None, ..bounded("no expiry") }, "this credential expires at"),
        (
            CreateApiKeyRequest { expires_at: Some(in_seconds(7_200)), ..bounded("later expiry") },
            "this credential expires at",
        ),
    ];
    for (request, bound) in siblings {
        let title = request.title.clone();
        let (id, secret) = created_by_admin(&server, request).await;
        let sequence = sequence_of(&server, &id).await;
        // Rolling it would hand the caller a looser secret: refused, and nothing written.
        assert_limited(
            client.roll_api_key(with_token(roll(&id), &caller)).await,
            bound,
            &format!("roll {title}"),
        );
        assert!(verifies(&server, &secret).await, "{title}: the old secret still works");
        let deleted =
            client.delete_api_key(with_token(DeleteApiKeyRequest { id: id.clone() }, &caller)).await;
        assert_limited(deleted, bound, &format!("delete {title}"));
        assert!(verifies(&server, &secret).await, "{title}: not revoked");
        assert_eq!(sequence_of(&server, &id).await, sequence, "{title}: nothing written");
    }

    // A key within the caller's limits it rolls (and receives a working secret) and deletes.
    let (id, old) = created_by_admin(
        &server,
        CreateApiKeyRequest {
            allowed_cidrs: strings(&["127.0.0.1/32"]),
            expires_at: Some(in_seconds(60)),
            ..bounded("tighter")
        },
    )
    .await;
    let rolled =
        client.roll_api_key(with_token(roll(&id), &caller)).await.expect("roll tighter").into_inner();
    assert!(verifies(&server, &rolled.secret).await && !verifies(&server, &old).await);
    client.delete_api_key(with_token(DeleteApiKeyRequest { id }, &caller)).await.expect("delete tighter");
    // And itself, being no looser than itself.
    let rotated = client.roll_api_key(with_token(roll(&caller_id), &caller)).await.expect("roll itself");
    assert!(verifies(&server, &rotated.into_inner().secret).await);

    server.stop().await;
}

on_both_databases!(
    a_rolled_secret_mints_no_key_that_outlives_it,
    a_rolled_secret_mints_no_key_that_outlives_it
);
async fn a_rolled_secret_mints_no_key_that_outlives_it(db: Db) {
    let server = TestServer::start(db).await;
    let mut client = server.api_keys().await;
    let (id, old) = server.api_key("rolled", &["apikeys:write", "invoices:read"]).await;
    let hour = prost_types::Duration { seconds: 3_600, nanos: 0 };
    let rolled = RollApiKeyRequest { id: id.clone(), grace_period: Some(hour) };
    let rolled = client.roll_api_key(server.req(rolled)).await.expect("roll").into_inner();

    // The old secret works for an hour: it may not mint a key that works longer, nor roll its own key into one.
    let minted = client.create_api_key(with_token(minted_request(), &old)).await;
    assert_limited(minted, "this credential expires at", "mint");
    let rolled_again = client.roll_api_key(with_token(roll(&id), &old)).await;
    assert_limited(rolled_again, "this credential expires at", "roll its own key");
    assert!(verifies(&server, &rolled.secret).await, "the current secret still works");
    let sooner = CreateApiKeyRequest { expires_at: Some(in_seconds(1_800)), ..minted_request() };
    client.create_api_key(with_token(sooner, &old)).await.expect("a key that ends sooner");
    // The current secret is bound by no expiry.
    client
        .create_api_key(with_token(minted_request(), &rolled.secret))
        .await
        .expect("the current secret mints");

    server.stop().await;
}

fn minted_request() -> CreateApiKeyRequest {
    api_key_request("minted", &["invoices:read"])
}

fn now_seconds() -> i64 {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock");
    i64::try_from(since_epoch.as_secs()).expect("seconds")
}
