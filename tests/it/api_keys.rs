//! API keys end to end: issue, read, list, update, roll, revoke, audit; scopes and API keys as credentials.

use std::collections::{BTreeSet, HashMap};

use keymint::{
    api::pb::keymint::{
        admin::v1::{AddOrgRequest, ListOrgsRequest},
        apikeys::v1::{
            ApiKey, CreateApiKeyRequest, DeleteApiKeyRequest, Environment, GetApiKeyRequest,
            ListApiKeyChangesRequest, ListApiKeysRequest, RateLimit, RollApiKeyRequest, Status,
            UpdateApiKeyRequest, VerifyApiKeyRequest, VerifyApiKeyResponse, VerifyCode,
        },
        management::v1::{AddProjectRequest, ListProjectsRequest},
        v1::ChangeQuery,
    },
    crypto::secret::hash_secret,
};
use tonic::Code;

use crate::helpers::{self, Db, TestServer, api_key_request, error_of, on_both_databases, with_token};

/// The display prefix: `km_live_` or `km_test_` and four characters of the body.
const PREFIX_CHARS: usize = 12;

fn now_seconds() -> i64 {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock");
    i64::try_from(since_epoch.as_secs()).expect("seconds")
}

/// The ID of the organization the admin token belongs to: the only one on a fresh server.
async fn default_org(server: &TestServer) -> String {
    let orgs =
        server.admin().await.list_orgs(server.req(ListOrgsRequest { query: None })).await.expect("orgs");
    orgs.into_inner().result[0].id.clone()
}

async fn add_org(server: &TestServer, name: &str) -> String {
    let added = server.admin().await.add_org(server.req(AddOrgRequest { name: name.into() })).await;
    added.expect("add org").into_inner().id
}

async fn get_key(server: &TestServer, id: &str) -> ApiKey {
    let got = server.api_keys().await.get_api_key(server.req(GetApiKeyRequest { id: id.into() })).await;
    got.expect("get API key").into_inner().api_key.expect("record")
}

/// VerifyApiKey with the admin token, accepting test keys.
async fn verify(server: &TestServer, secret: &str) -> VerifyApiKeyResponse {
    let request = VerifyApiKeyRequest { secret: secret.into(), accept_test_keys: true, ..Default::default() };
    server.api_keys().await.verify_api_key(server.req(request)).await.expect("verify").into_inner()
}

/// The IDs of one page, and whether more follow.
async fn page(server: &TestServer, request: ListApiKeysRequest) -> (Vec<String>, bool) {
    let listed = server.api_keys().await.list_api_keys(server.req(request)).await.expect("list").into_inner();
    (listed.result.into_iter().map(|k| k.id).collect(), listed.has_more)
}

fn list_request(limit: u32) -> ListApiKeysRequest {
    ListApiKeysRequest { limit, ..Default::default() }
}

fn update_request(id: &str, mask: &[&str]) -> UpdateApiKeyRequest {
    UpdateApiKeyRequest {
        id: id.into(),
        update_mask: mask.iter().map(|f| (*f).to_owned()).collect(),
        ..Default::default()
    }
}

fn invalid(fields: &[&str]) -> (Code, String, Vec<String>) {
    (Code::InvalidArgument, "INVALID_ARGUMENT".into(), fields.iter().map(|f| (*f).to_owned()).collect())
}

fn refused(code: Code, reason: &str) -> (Code, String, Vec<String>) {
    (code, reason.into(), vec![])
}

on_both_databases!(create_shows_the_secret_once_and_get_never, create_shows_the_secret_once);
async fn create_shows_the_secret_once(db: Db) {
    let server = TestServer::start(db).await;
    let org_id = default_org(&server).await;
    let mut client = server.api_keys().await;

    let mut request = api_key_request("ci deploy", &["keys:read", "billing:read"]);
    request.description = "deploys from CI".into();
    request.external_id = "user-42".into();
    request.allowed_cidrs = vec!["10.1.2.3".into(), "192.168.0.0/16".into()];
    request.integration = "github".into();
    request.daily_quota = 1000;
    request.rate_limit = Some(RateLimit { per_second: 5, burst: 10 });
    request.metadata = HashMap::from([("team".into(), "platform".into())]);
    request.expires_at = Some(prost_types::Timestamp { seconds: 4_102_444_800, nanos: 0 });
    request.time_offset = Some(prost_types::Duration { seconds: -90, nanos: 0 });
    let created = client.create_api_key(server.req(request)).await.expect("create").into_inner();

    let secret = created.secret.clone();
    assert!(secret.starts_with("km_live_"), "secret starts {:.8}", secret);
    assert_eq!(secret.len(), "km_live_".len() + 43 + 6);
    assert!(secret["km_live_".len()..].bytes().all(|b| b.is_ascii_alphanumeric()));
    let details = created.details.expect("write details");
    assert_eq!(details.sequence, 1);
    assert_eq!(details.creation_date, details.change_date);
    assert_eq!(details.resource_owner, org_id);

    let key = created.api_key.expect("record");
    assert_eq!(key.title, "ci deploy");
    assert_eq!(key.description, "deploys from CI");
    assert_eq!(key.app_id, "");
    assert_eq!(key.external_id, "user-42");
    assert_eq!(key.scopes, ["keys:read", "billing:read"]);
    // Networks come back in canonical form.
    assert_eq!(key.allowed_cidrs, ["10.1.2.3/32", "192.168.0.0/16"]);
    assert_eq!(key.environment, Environment::Live as i32);
    assert_eq!(key.status, Status::Active as i32);
    assert_eq!(key.expires_at, Some(prost_types::Timestamp { seconds: 4_102_444_800, nanos: 0 }));
    assert_eq!(key.rate_limit, Some(RateLimit { per_second: 5, burst: 10 }));
    assert_eq!(key.daily_quota, 1000);
    assert_eq!(key.integration, "github");
    assert_eq!(key.time_offset, Some(prost_types::Duration { seconds: -90, nanos: 0 }));
    assert_eq!(key.metadata, HashMap::from([("team".to_owned(), "platform".to_owned())]));
    assert_eq!(key.prefix, secret[..PREFIX_CHARS]);
    assert_eq!(key.last_four, secret[secret.len() - 4..]);
    assert!(!key.created_by.is_empty());
    assert_eq!(key.deleted_at, None);
    assert_eq!(key.api_version, "");
    let record_details = key.details.clone().expect("record details");
    assert_eq!(record_details.sequence, 1);
    assert_eq!(record_details.creation_date, record_details.change_date);
    assert_eq!(record_details.creation_date, details.creation_date);
    assert_eq!(record_details.resource_owner, org_id);
    let usage = key.usage.expect("usage");
    assert_eq!((usage.total_requests, usage.total_denied, usage.last_used_at), (0, 0, None));

    // Get returns the same record, and nothing in it is the secret or its hash.
    let got = client.get_api_key(server.req(GetApiKeyRequest { id: key.id.clone() })).await.expect("get");
    let got = got.into_inner();
    assert_eq!(got.api_key.as_ref(), Some(&key));
    let shown = format!("{got:?}");
    assert!(!shown.contains(&secret), "Get shows the secret");
    assert!(!shown.contains(&secret["km_live_".len()..]), "Get shows the secret's body");
    assert!(!shown.contains(&hash_secret(&secret)), "Get shows the secret's hash");

    // A TEST key's secret says so, and so does its record.
    let mut test = api_key_request("staging", &["keys:read"]);
    test.environment = Environment::Test as i32;
    let test = client.create_api_key(server.req(test)).await.expect("create test key").into_inner();
    assert!(test.secret.starts_with("km_test_"));
    let test_key = test.api_key.expect("record");
    assert_eq!(test_key.environment, Environment::Test as i32);
    assert_eq!(test_key.prefix, test.secret[..PREFIX_CHARS]);
    assert_ne!(test.secret, secret);

    server.stop().await;
}

on_both_databases!(create_refuses_bad_input_naming_the_field, create_refuses_bad_input);
async fn create_refuses_bad_input(db: Db) {
    let server = TestServer::start(db).await;
    let client = server.api_keys().await;
    let valid = || api_key_request("valid", &["keys:read"]);
    let create = |request: CreateApiKeyRequest| {
        let mut client = client.clone();
        let request = server.req(request);
        async move { client.create_api_key(request).await }
    };

    let cases: Vec<(CreateApiKeyRequest, &str)> = vec![
        (CreateApiKeyRequest { title: String::new(), ..valid() }, "title"),
        (CreateApiKeyRequest { title: "   ".into(), ..valid() }, "title"),
        (CreateApiKeyRequest { title: "t".repeat(201), ..valid() }, "title"),
        (CreateApiKeyRequest { description: "d".repeat(201), ..valid() }, "description"),
        (CreateApiKeyRequest { scopes: vec![], ..valid() }, "scopes"),
        (
            CreateApiKeyRequest { scopes: vec!["keys:read".into(), "Keys:Read".into()], ..valid() },
            "scopes[1]",
        ),
        (CreateApiKeyRequest { allowed_cidrs: vec!["10.0.0.1/8".into()], ..valid() }, "allowedCidrs[0]"),
        (CreateApiKeyRequest { allowed_cidrs: vec!["not-an-ip".into()], ..valid() }, "allowedCidrs[0]"),
        (CreateApiKeyRequest { environment: Environment::Unspecified as i32, ..valid() }, "environment"),
        (CreateApiKeyRequest { environment: 7, ..valid() }, "environment"),
        (
            CreateApiKeyRequest {
                expires_at: Some(prost_types::Timestamp { seconds: now_seconds() - 60, nanos: 0 }),
                ..valid()
            },
            "expiresAt",
        ),
        (
            CreateApiKeyRequest { rate_limit: Some(RateLimit { per_second: 0, burst: 1 }), ..valid() },
            "rateLimit.perSecond",
        ),
        (
            CreateApiKeyRequest {
                metadata: (0..21).map(|i| (format!("k{i}"), "v".to_owned())).collect(),
                ..valid()
            },
            "metadata",
        ),
        (
            CreateApiKeyRequest {
                time_offset: Some(prost_types::Duration { seconds: 25 * 3600, nanos: 0 }),
                ..valid()
            },
            "timeOffset",
        ),
        (CreateApiKeyRequest { external_id: "x".repeat(201), ..valid() }, "externalId"),
        (CreateApiKeyRequest { integration: "i".repeat(101), ..valid() }, "integration"),
    ];
    for (request, field) in cases {
        let refused = create(request).await.expect_err(field);
        assert_eq!(error_of(&refused), invalid(&[field]), "{field}: {}", refused.message());
    }

    // Every bad field is named at once.
    let many = CreateApiKeyRequest { title: String::new(), scopes: vec!["nope".into()], ..valid() };
    assert_eq!(error_of(&create(many).await.expect_err("two bad fields")), invalid(&["title", "scopes[0]"]));

    // An app_id must name an app of the organization; a real one is recorded on the key.
    let unknown_app = CreateApiKeyRequest { app_id: "123456789".into(), ..valid() };
    let missing = create(unknown_app).await.expect_err("unknown app");
    assert_eq!(error_of(&missing), refused(Code::NotFound, "APP_NOT_FOUND"));
    let (_, app_id, _) = server.project_and_app("p").await;
    let with_app = create(CreateApiKeyRequest { app_id: app_id.clone(), ..valid() }).await.expect("real app");
    assert_eq!(with_app.into_inner().api_key.expect("record").app_id, app_id);

    // A daily quota of 0 means none; limits at their bounds are accepted.
    let bounds = CreateApiKeyRequest {
        daily_quota: 0,
        rate_limit: Some(RateLimit { per_second: 1, burst: 1 }),
        time_offset: Some(prost_types::Duration { seconds: 24 * 3600, nanos: 0 }),
        metadata: (0..20).map(|i| (format!("k{i}"), "v".to_owned())).collect(),
        description: "d".repeat(200),
        title: "t".repeat(200),
        ..valid()
    };
    let key = create(bounds).await.expect("bounds accepted").into_inner().api_key.expect("record");
    assert_eq!(key.daily_quota, 0);
    assert_eq!(key.metadata.len(), 20);
    assert_eq!(key.rate_limit, Some(RateLimit { per_second: 1, burst: 1 }));
    // Refused requests left no key behind: the app key and the bounds key are all there is.
    let (ids, has_more) = page(&server, list_request(100)).await;
    assert_eq!((ids.len(), has_more), (2, false));

    server.stop().await;
}

on_both_databases!(lists_page_with_stable_cursors_and_filter, lists_page_with_stable_cursors);
async fn lists_page_with_stable_cursors(db: Db) {
    let server = TestServer::start(db).await;
    let mut client = server.api_keys().await;
    let mut created = Vec::new();
    for i in 0..7 {
        created.push(server.api_key(&format!("key {i}"), &["keys:read"]).await.0);
    }
    // Newest first.
    let newest: Vec<String> = created.iter().rev().cloned().collect();

    let first = page(&server, list_request(3)).await;
    assert_eq!(first, (newest[0..3].to_vec(), true));
    let after = |id: &str| ListApiKeysRequest { limit: 3, starting_after: id.into(), ..Default::default() };
    let before = |id: &str| ListApiKeysRequest { limit: 3, ending_before: id.into(), ..Default::default() };
    let second = page(&server, after(&first.0[2])).await;
    assert_eq!(second, (newest[3..6].to_vec(), true));
    let third = page(&server, after(&second.0[2])).await;
    assert_eq!(third, (newest[6..7].to_vec(), false));
    let walked: Vec<String> = [&first.0, &second.0, &third.0].into_iter().flatten().cloned().collect();
    assert_eq!(walked, newest, "no duplicates, no skips");

    // Walking back: the page before the last is the second page, and before that the first (nothing newer).
    assert_eq!(page(&server, before(&third.0[0])).await, (newest[3..6].to_vec(), true));
    assert_eq!(page(&server, before(&second.0[0])).await, (newest[0..3].to_vec(), false));
    // The default limit covers all seven.
    assert_eq!(page(&server, list_request(0)).await, (newest.clone(), false));

    // Keys created between two page reads do not shift the next page.
    let page_one = page(&server, list_request(3)).await;
    let mut later = Vec::new();
    for i in 0..5 {
        later.push(server.api_key(&format!("later {i}"), &["keys:read"]).await.0);
    }
    assert_eq!(page(&server, after(&page_one.0[2])).await, (newest[3..6].to_vec(), true));
    let top = page(&server, list_request(3)).await;
    assert_eq!(top.0, later.iter().rev().take(3).cloned().collect::<Vec<_>>());
    // Before the old first page's newest key lie the five new keys: the three nearest to it.
    let newer = page(&server, before(&page_one.0[0])).await;
    assert_eq!(newer, (vec![later[2].clone(), later[1].clone(), later[0].clone()], true));

    // Bad paging.
    let too_many = client.list_api_keys(server.req(list_request(101))).await.expect_err("limit 101");
    assert_eq!(error_of(&too_many), invalid(&["limit"]));
    let both = ListApiKeysRequest { starting_after: newest[0].clone(), ..before(&newest[1]) };
    let both = client.list_api_keys(server.req(both)).await.expect_err("two cursors");
    assert_eq!(error_of(&both), invalid(&["endingBefore"]));
    let unknown = client.list_api_keys(server.req(after("123456789"))).await.expect_err("unknown cursor");
    assert_eq!(error_of(&unknown), invalid(&["startingAfter"]));
    let unknown = client.list_api_keys(server.req(before("123456789"))).await.expect_err("unknown cursor");
    assert_eq!(error_of(&unknown), invalid(&["endingBefore"]));

    // Filters: status, environment, application; revoked keys only when asked for.
    let inactive_id = newest[1].clone();
    let mut deactivate = update_request(&inactive_id, &["status"]);
    deactivate.status = Status::Inactive as i32;
    let updated = client.update_api_key(server.req(deactivate)).await.expect("deactivate").into_inner();
    assert_eq!(updated.api_key.expect("record").status, Status::Inactive as i32);
    let mut test = api_key_request("staging", &["keys:read"]);
    test.environment = Environment::Test as i32;
    let test_id = client.create_api_key(server.req(test)).await.expect("test key").into_inner();
    let test_id = test_id.api_key.expect("record").id;
    let (_, app_id, _) = server.project_and_app("p").await;
    let mut with_app = api_key_request("app key", &["keys:read"]);
    with_app.app_id = app_id.clone();
    let app_key_id = client.create_api_key(server.req(with_app)).await.expect("app key").into_inner();
    let app_key_id = app_key_id.api_key.expect("record").id;
    let revoked_id = newest[2].clone();
    client.delete_api_key(server.req(DeleteApiKeyRequest { id: revoked_id.clone() })).await.expect("delete");

    let filtered = |f: fn(&mut ListApiKeysRequest)| {
        let mut request = list_request(100);
        f(&mut request);
        request
    };
    let inactive = page(&server, filtered(|r| r.status = Status::Inactive as i32)).await;
    assert_eq!(inactive, (vec![inactive_id.clone()], false));
    let revoked = page(&server, filtered(|r| r.status = Status::Revoked as i32)).await;
    assert_eq!(revoked, (vec![revoked_id.clone()], false));
    let tests = page(&server, filtered(|r| r.environment = Environment::Test as i32)).await;
    assert_eq!(tests, (vec![test_id.clone()], false));
    let mut of_app = list_request(100);
    of_app.app_id = app_id;
    assert_eq!(page(&server, of_app).await, (vec![app_key_id.clone()], false));

    let (all, _) = page(&server, list_request(100)).await;
    let mut expected: Vec<String> =
        [app_key_id.clone(), test_id.clone()].into_iter().chain(later.iter().rev().cloned()).collect();
    expected.extend(newest.iter().filter(|id| **id != revoked_id).cloned());
    assert_eq!(all, expected, "every key but the revoked one, inactive included, newest first");
    let active = page(&server, filtered(|r| r.status = Status::Active as i32)).await.0;
    assert_eq!(active.len(), expected.len() - 1);
    assert!(!active.contains(&inactive_id) && !active.contains(&revoked_id));
    let live = page(&server, filtered(|r| r.environment = Environment::Live as i32)).await.0;
    assert_eq!(live.len(), expected.len() - 1);
    assert!(!live.contains(&test_id));
    // A filter and a cursor together: the inactive key lies after the newest live keys.
    let mut after_newest = filtered(|r| r.status = Status::Inactive as i32);
    after_newest.starting_after = newest[0].clone();
    assert_eq!(page(&server, after_newest).await, (vec![inactive_id.clone()], false));

    server.stop().await;
}

on_both_databases!(update_changes_only_masked_fields_and_is_audited, update_changes_only_masked_fields);
async fn update_changes_only_masked_fields(db: Db) {
    let server = TestServer::start(db).await;
    let mut client = server.api_keys().await;
    let mut request = api_key_request("original", &["keys:read"]);
    request.description = "kept".into();
    let created = client.create_api_key(server.req(request)).await.expect("create").into_inner();
    let secret = created.secret;
    let before = created.api_key.expect("record");
    let id = before.id.clone();

    let mut rename = update_request(&id, &["title"]);
    rename.title = "renamed".into();
    rename.description = "sent but not in the mask".into();
    rename.scopes = vec!["other:scope".into()];
    let updated = client.update_api_key(server.req(rename)).await.expect("update").into_inner();
    let after = updated.api_key.expect("record");
    assert_eq!(after.title, "renamed");
    assert_eq!(after.description, "kept");
    assert_eq!(after.scopes, ["keys:read"]);
    assert_eq!(updated.details.as_ref().map(|d| d.sequence), Some(2));
    let details = after.details.clone().expect("details");
    assert_eq!(details.sequence, 2);
    assert_eq!(details.creation_date, before.details.as_ref().and_then(|d| d.creation_date));
    assert_ne!(details.change_date, details.creation_date);
    assert_eq!(get_key(&server, &id).await, after);
    // Unchanged fields apart from the title and details: the rest of the record is as it was.
    assert_eq!(
        ApiKey { title: before.title.clone(), details: before.details.clone(), ..after.clone() },
        before
    );

    // Several fields at once; a metadata update replaces all pairs.
    let mut several =
        update_request(&id, &["scopes", "allowed_cidrs", "rate_limit", "daily_quota", "metadata"]);
    several.scopes = vec!["keys:write".into()];
    several.allowed_cidrs = vec!["2001:db8::/32".into()];
    several.rate_limit = Some(RateLimit { per_second: 2, burst: 4 });
    several.daily_quota = 10;
    several.metadata = HashMap::from([("a".into(), "b".into())]);
    let changed = client.update_api_key(server.req(several)).await.expect("update several").into_inner();
    let changed = changed.api_key.expect("record");
    assert_eq!(changed.scopes, ["keys:write"]);
    assert_eq!(changed.allowed_cidrs, ["2001:db8::/32"]);
    assert_eq!((changed.rate_limit, changed.daily_quota), (Some(RateLimit { per_second: 2, burst: 4 }), 10));
    assert_eq!(changed.metadata, HashMap::from([("a".to_owned(), "b".to_owned())]));
    assert_eq!(changed.details.as_ref().map(|d| d.sequence), Some(3));
    // rate_limit in the mask without a value removes it.
    let removed = client.update_api_key(server.req(update_request(&id, &["rate_limit"]))).await;
    assert_eq!(removed.expect("remove rate limit").into_inner().api_key.expect("record").rate_limit, None);

    // Pinning a real date; an impossible one is refused.
    let mut pin = update_request(&id, &["api_version"]);
    pin.api_version = "2026-02-30".into();
    let bad_date = client.update_api_key(server.req(pin.clone())).await.expect_err("no such date");
    assert_eq!(error_of(&bad_date), invalid(&["apiVersion"]));
    pin.api_version = "2026-11-25".into();
    let pinned = client.update_api_key(server.req(pin)).await.expect("pin").into_inner();
    assert_eq!(pinned.api_key.expect("record").api_version, "2026-11-25");
    assert_eq!(get_key(&server, &id).await.api_version, "2026-11-25");

    // Bad masks and values.
    let empty = client.update_api_key(server.req(update_request(&id, &[]))).await.expect_err("empty mask");
    assert_eq!(error_of(&empty), invalid(&["updateMask"]));
    let unknown =
        client.update_api_key(server.req(update_request(&id, &["colour"]))).await.expect_err("unknown field");
    assert_eq!(error_of(&unknown), invalid(&["updateMask[0]"]));
    let second_unknown = client
        .update_api_key(server.req(update_request(&id, &["title", "secret"])))
        .await
        .expect_err("unknown second field");
    assert_eq!(error_of(&second_unknown), invalid(&["updateMask[1]"]));
    let mut revoke = update_request(&id, &["status"]);
    revoke.status = Status::Revoked as i32;
    let revoke = client.update_api_key(server.req(revoke)).await.expect_err("revoke by update");
    assert_eq!(error_of(&revoke), invalid(&["status"]));
    let mut blank = update_request(&id, &["title"]);
    blank.title = " ".into();
    let blank = client.update_api_key(server.req(blank)).await.expect_err("blank title");
    assert_eq!(error_of(&blank), invalid(&["title"]));
    let no_scopes = client.update_api_key(server.req(update_request(&id, &["scopes"]))).await;
    assert_eq!(error_of(&no_scopes.expect_err("no scopes")), invalid(&["scopes"]));
    // Refused updates changed nothing.
    let current = get_key(&server, &id).await;
    assert_eq!(current.details.as_ref().map(|d| d.sequence), Some(5));
    assert_eq!(current.status, Status::Active as i32);

    // The audit trail, oldest first, without the secret's hash.
    let changes = client
        .list_api_key_changes(server.req(ListApiKeyChangesRequest {
            id: id.clone(),
            query: Some(ChangeQuery { sequence: 0, limit: 0, asc: true }),
        }))
        .await
        .expect("changes")
        .into_inner()
        .result;
    let types: Vec<&str> = changes.iter().map(|c| c.event_type.as_str()).collect();
    assert_eq!(
        types,
        ["apikey.created", "apikey.updated", "apikey.updated", "apikey.updated", "apikey.updated"]
    );
    assert_eq!(changes.iter().map(|c| c.sequence).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert!(changes.iter().all(|c| c.editor_id == before.created_by));
    let trail = format!("{changes:?}");
    assert!(!trail.contains("secretHash"), "the audit trail names the secret's hash");
    assert!(!trail.contains(&hash_secret(&secret)), "the audit trail shows the secret's hash");
    assert!(!trail.contains(&secret["km_live_".len()..]), "the audit trail shows the secret");
    // The created event says what the key was; the update says which fields it changed.
    assert!(trail.contains("original") && trail.contains(&before.prefix));
    let renamed = changes[1].payload.as_ref().expect("payload");
    assert_eq!(renamed.fields.get("changed").cloned(), list_value(&["title"]));
    let newest = client
        .list_api_key_changes(server.req(ListApiKeyChangesRequest {
            id: id.clone(),
            query: Some(ChangeQuery { sequence: 0, limit: 2, asc: false }),
        }))
        .await
        .expect("changes")
        .into_inner()
        .result;
    assert_eq!(newest.iter().map(|c| c.sequence).collect::<Vec<_>>(), [5, 4]);

    server.stop().await;
}

/// A protobuf Struct value holding a list of strings, as an event payload shows one.
fn list_value(items: &[&str]) -> Option<prost_types::Value> {
    use prost_types::value::Kind;
    let values =
        items.iter().map(|s| prost_types::Value { kind: Some(Kind::StringValue((*s).to_owned())) }).collect();
    Some(prost_types::Value { kind: Some(Kind::ListValue(prost_types::ListValue { values })) })
}

on_both_databases!(delete_revokes_for_good_and_roll_replaces_the_secret, delete_and_roll);
async fn delete_and_roll(db: Db) {
    let server = TestServer::start(db).await;
    let mut client = server.api_keys().await;

    // Delete: the record stays readable, revoked, and cannot change again.
    let (id, secret) = server.api_key("to delete", &["keys:read"]).await;
    assert_eq!(verify(&server, &secret).await.code, VerifyCode::Valid as i32);
    let deleted = client.delete_api_key(server.req(DeleteApiKeyRequest { id: id.clone() })).await;
    let deleted_details = deleted.expect("delete").into_inner().details.expect("details");
    assert_eq!(deleted_details.sequence, 2);
    // Verify refuses it from the moment the delete returns.
    let verdict = verify(&server, &secret).await;
    assert_eq!((verdict.valid, verdict.code), (false, VerifyCode::Revoked as i32));
    let record = get_key(&server, &id).await;
    assert_eq!(record.status, Status::Revoked as i32);
    assert_eq!(record.deleted_at, deleted_details.change_date);
    assert!(record.deleted_at.as_ref().is_some_and(|t| (t.seconds - now_seconds()).abs() < 60));
    assert_eq!(record.details.as_ref().map(|d| d.sequence), Some(2));
    let again = client.delete_api_key(server.req(DeleteApiKeyRequest { id: id.clone() })).await;
    assert_eq!(
        error_of(&again.expect_err("deleted twice")),
        refused(Code::FailedPrecondition, "API_KEY_REVOKED")
    );
    let mut rename = update_request(&id, &["title"]);
    rename.title = "after delete".into();
    let update = client.update_api_key(server.req(rename)).await.expect_err("update after delete");
    assert_eq!(error_of(&update), refused(Code::FailedPrecondition, "API_KEY_REVOKED"));
    let roll =
        client.roll_api_key(server.req(RollApiKeyRequest { id: id.clone(), grace_period: None })).await;
    assert_eq!(
        error_of(&roll.expect_err("roll after delete")),
        refused(Code::FailedPrecondition, "API_KEY_REVOKED")
    );
    assert_eq!(get_key(&server, &id).await, record);
    let missing = client.delete_api_key(server.req(DeleteApiKeyRequest { id: "123456789".into() })).await;
    assert_eq!(error_of(&missing.expect_err("unknown key")), refused(Code::NotFound, "API_KEY_NOT_FOUND"));

    // Roll with a grace period: a new secret; the old one works until the grace period ends.
    let (id, old_secret) = server.api_key("to roll", &["keys:read"]).await;
    let before = get_key(&server, &id).await;
    let hour = prost_types::Duration { seconds: 3600, nanos: 0 };
    let rolled = client
        .roll_api_key(server.req(RollApiKeyRequest { id: id.clone(), grace_period: Some(hour) }))
        .await
        .expect("roll")
        .into_inner();
    let new_secret = rolled.secret.clone();
    assert!(new_secret.starts_with("km_live_"));
    assert_ne!(new_secret, old_secret);
    let key = rolled.api_key.expect("record");
    assert_eq!(key.prefix, new_secret[..PREFIX_CHARS]);
    assert_eq!(key.last_four, new_secret[new_secret.len() - 4..]);
    assert_ne!((&key.prefix, &key.last_four), (&before.prefix, &before.last_four));
    assert_eq!(rolled.details.as_ref().map(|d| d.sequence), Some(2));
    let old_expires = rolled.old_secret_expires_at.expect("old secret's end").seconds;
    assert!((old_expires - (now_seconds() + 3600)).abs() < 60, "old secret ends at {old_expires}");
    assert_eq!((key.title, key.scopes, key.status), (before.title, before.scopes, before.status));
    for (secret, which) in [(&old_secret, "old"), (&new_secret, "new")] {
        let verdict = verify(&server, secret).await;
        assert_eq!((verdict.valid, verdict.key_id.as_str()), (true, id.as_str()), "{which} secret");
    }

    // Roll without a grace period: the previous secret stops at once.
    let rolled_again = client
        .roll_api_key(server.req(RollApiKeyRequest { id: id.clone(), grace_period: None }))
        .await
        .expect("roll again")
        .into_inner();
    assert!((rolled_again.old_secret_expires_at.expect("end").seconds - now_seconds()).abs() < 60);
    assert_eq!(verify(&server, &new_secret).await.code, VerifyCode::Revoked as i32);
    assert_eq!(
        verify(&server, &old_secret).await.code,
        VerifyCode::Valid as i32,
        "still in its grace period"
    );
    assert_eq!(verify(&server, &rolled_again.secret).await.code, VerifyCode::Valid as i32);

    // Grace periods out of bounds.
    for seconds in [31 * 86_400, -1] {
        let grace = Some(prost_types::Duration { seconds, nanos: 0 });
        let refused = client
            .roll_api_key(server.req(RollApiKeyRequest { id: id.clone(), grace_period: grace }))
            .await
            .expect_err("grace out of bounds");
        assert_eq!(error_of(&refused), invalid(&["gracePeriod"]), "{seconds} s");
    }
    let thirty_days = Some(prost_types::Duration { seconds: 30 * 86_400, nanos: 0 });
    client
        .roll_api_key(server.req(RollApiKeyRequest { id: id.clone(), grace_period: thirty_days }))
        .await
        .expect("30 days is the longest grace period");

    let types: Vec<String> = client
        .list_api_key_changes(server.req(ListApiKeyChangesRequest { id: id.clone(), query: None }))
        .await
        .expect("changes")
        .into_inner()
        .result
        .into_iter()
        .map(|c| c.event_type)
        .collect();
    // Newest first by default.
    assert_eq!(types, ["apikey.rolled", "apikey.rolled", "apikey.rolled", "apikey.created"]);

    server.stop().await;
}

on_both_databases!(other_organizations_keys_are_invisible, other_organizations_keys_are_invisible);
async fn other_organizations_keys_are_invisible(db: Db) {
    let server = TestServer::start(db).await;
    let mut client = server.api_keys().await;
    let other_org = add_org(&server, "other").await;
    let theirs = client
        .create_api_key(server.req_in(&other_org, api_key_request("theirs", &["keys:read"])))
        .await
        .expect("create in the other org")
        .into_inner();
    let their_secret = theirs.secret.clone();
    let their_key = theirs.api_key.expect("record");
    assert_eq!(their_key.details.as_ref().map(|d| d.resource_owner.as_str()), Some(other_org.as_str()));
    let id = their_key.id.clone();
    let (own_id, _) = server.api_key("ours", &["keys:read"]).await;

    let not_found = refused(Code::NotFound, "API_KEY_NOT_FOUND");
    let got = client.get_api_key(server.req(GetApiKeyRequest { id: id.clone() })).await;
    assert_eq!(error_of(&got.expect_err("get")), not_found);
    let mut rename = update_request(&id, &["title"]);
    rename.title = "hijacked".into();
    let updated = client.update_api_key(server.req(rename)).await;
    assert_eq!(error_of(&updated.expect_err("update")), not_found);
    let deleted = client.delete_api_key(server.req(DeleteApiKeyRequest { id: id.clone() })).await;
    assert_eq!(error_of(&deleted.expect_err("delete")), not_found);
    let rolled =
        client.roll_api_key(server.req(RollApiKeyRequest { id: id.clone(), grace_period: None })).await;
    assert_eq!(error_of(&rolled.expect_err("roll")), not_found);
    let changes =
        client.list_api_key_changes(server.req(ListApiKeyChangesRequest { id: id.clone(), query: None }));
    assert_eq!(error_of(&changes.await.expect_err("changes")), not_found);
    assert_eq!(page(&server, list_request(100)).await, (vec![own_id.clone()], false));
    let revoked =
        page(&server, ListApiKeysRequest { status: Status::Revoked as i32, ..list_request(100) }).await;
    assert_eq!(revoked, (vec![], false));
    let cursor = ListApiKeysRequest { starting_after: id.clone(), ..list_request(10) };
    let cursor = client.list_api_keys(server.req(cursor)).await.expect_err("their key as a cursor");
    assert_eq!(error_of(&cursor), invalid(&["startingAfter"]));

    // Verify in the caller's own organization does not find it, and says nothing about it.
    let verdict = verify(&server, &their_secret).await;
    assert_eq!(
        (verdict.valid, verdict.code, verdict.key_id.as_str(), verdict.org_id.as_str()),
        (false, VerifyCode::NotFound as i32, "", "")
    );
    assert!(verdict.scopes.is_empty() && verdict.metadata.is_empty());

    // Where it lives, it is untouched and verifies.
    let there = client.get_api_key(server.req_in(&other_org, GetApiKeyRequest { id: id.clone() })).await;
    assert_eq!(there.expect("visible in its org").into_inner().api_key, Some(their_key));
    let request = VerifyApiKeyRequest { secret: their_secret.clone(), ..Default::default() };
    let verdict =
        client.verify_api_key(server.req_in(&other_org, request)).await.expect("verify there").into_inner();
    assert_eq!((verdict.valid, verdict.key_id, verdict.org_id), (true, id.clone(), other_org.clone()));
    let listed =
        client.list_api_keys(server.req_in(&other_org, list_request(100))).await.expect("list there");
    assert_eq!(listed.into_inner().result.into_iter().map(|k| k.id).collect::<Vec<_>>(), [id]);

    server.stop().await;
}

on_both_databases!(api_keys_are_credentials_limited_by_their_scopes, api_keys_are_scoped_credentials);
async fn api_keys_are_scoped_credentials(db: Db) {
    let server = TestServer::start(db).await;
    let mut management = server.management().await;
    let mut client = server.api_keys().await;
    let mut admin = server.admin().await;
    let other_org = add_org(&server, "other").await;

    // projects:read reads projects and nothing more.
    let (reader_id, reader) = server.api_key("reader", &["projects:read"]).await;
    management.list_projects(with_token(ListProjectsRequest { query: None }, &reader)).await.expect("list");
    let add = management.add_project(with_token(AddProjectRequest { name: "nope".into() }, &reader)).await;
    let add = add.expect_err("add project with projects:read");
    assert_eq!(error_of(&add), refused(Code::PermissionDenied, "MISSING_SCOPE"));
    assert!(add.message().contains("projects:write"), "message: {}", add.message());
    let get = client.get_api_key(with_token(GetApiKeyRequest { id: reader_id.clone() }, &reader)).await;
    let get = get.expect_err("get API key with projects:read");
    assert_eq!(error_of(&get), refused(Code::PermissionDenied, "MISSING_SCOPE"));
    assert!(get.message().contains("apikeys:read"), "message: {}", get.message());
    let orgs = admin.list_orgs(with_token(ListOrgsRequest { query: None }, &reader)).await;
    assert_eq!(error_of(&orgs.expect_err("list orgs")), refused(Code::PermissionDenied, "MISSING_SCOPE"));
    let mut elsewhere = with_token(ListProjectsRequest { query: None }, &reader);
    elsewhere.metadata_mut().insert("x-org-id", other_org.parse().expect("header"));
    let elsewhere = management.list_projects(elsewhere).await.expect_err("another org");
    assert_eq!(error_of(&elsewhere), refused(Code::PermissionDenied, "ORG_NOT_ALLOWED"));

    // apikeys:write grants only what it holds itself, keymint's scopes and the integrator's alike.
    let (_, writer) = server.api_key("writer", &["apikeys:write", "billing.v2:read-all"]).await;
    let mint = |scopes: &[&str]| with_token(api_key_request("minted", scopes), &writer);
    client.create_api_key(mint(&["billing.v2:read-all"])).await.expect("an integrator's scope it holds");
    client.create_api_key(mint(&["apikeys:write", "billing.v2:read-all"])).await.expect("its own scopes");
    // apikeys:read included: a key holds exactly its scopes, and write does not imply read.
    for scopes in [&["orgs:admin"][..], &["keys:write"], &["apikeys:read"], &["billing:read"]] {
        let minted = client.create_api_key(mint(scopes)).await.expect_err("a stronger key");
        assert_eq!(error_of(&minted), refused(Code::PermissionDenied, "SCOPE_NOT_GRANTABLE"), "{scopes:?}");
    }
    let (_, read_writer) = server.api_key("read-writer", &["apikeys:write", "apikeys:read"]).await;
    let minted = client
        .create_api_key(with_token(api_key_request("reader", &["apikeys:read"]), &read_writer))
        .await
        .expect("grants apikeys:read, which it holds")
        .into_inner();
    let minted_id = minted.api_key.expect("record").id;
    // Nor can an update widen a key beyond the caller's scopes.
    let mut widen = update_request(&minted_id, &["scopes"]);
    widen.scopes = vec!["apikeys:read".into(), "orgs:admin".into()];
    let widen = client.update_api_key(with_token(widen, &read_writer)).await.expect_err("widen");
    assert_eq!(error_of(&widen), refused(Code::PermissionDenied, "SCOPE_NOT_GRANTABLE"));

    // Malformed, unknown and well-formed-but-unknown bearers are unauthenticated.
    let unauthenticated = refused(Code::Unauthenticated, "UNAUTHENTICATED");
    let well_formed_unknown =
        keymint::crypto::api_key_secret::generate(keymint::crypto::api_key_secret::Environment::Live)
            .expect("rng");
    for bearer in ["km_live_xxx", "km_test_", well_formed_unknown.as_str(), &reader[..reader.len() - 1]] {
        let call = management.list_projects(with_token(ListProjectsRequest { query: None }, bearer)).await;
        assert_eq!(error_of(&call.expect_err("bad bearer")), unauthenticated, "{bearer:.12}");
    }

    // The admin token still does everything, including granting keymint scopes across organizations.
    admin.list_orgs(server.req(ListOrgsRequest { query: None })).await.expect("admin lists orgs");
    management.add_project(server.req(AddProjectRequest { name: "admin's".into() })).await.expect("project");
    client
        .create_api_key(server.req_in(&other_org, api_key_request("admin", &["orgs:admin", "keys:write"])))
        .await
        .expect("admin grants anything anywhere");

    // Keys outlive their creator: B, created by A, still verifies after A is deleted.
    let (a_id, a_secret) = server.api_key("A", &["apikeys:write", "apikeys:verify", "billing:read"]).await;
    let b = client
        .create_api_key(with_token(api_key_request("B", &["apikeys:verify", "billing:read"]), &a_secret))
        .await
        .expect("A creates B")
        .into_inner();
    let b_key = b.api_key.expect("record");
    assert_eq!(b_key.created_by, a_id);
    assert_eq!(
        get_key(&server, &a_id).await.created_by,
        get_key(&server, &reader_id).await.created_by,
        "the admin"
    );
    // A verifies B while it exists.
    let by_a = client
        .verify_api_key(with_token(
            VerifyApiKeyRequest { secret: b.secret.clone(), ..Default::default() },
            &a_secret,
        ))
        .await
        .expect("A verifies")
        .into_inner();
    assert_eq!((by_a.valid, by_a.key_id.as_str()), (true, b_key.id.as_str()));
    client.delete_api_key(server.req(DeleteApiKeyRequest { id: a_id.clone() })).await.expect("delete A");
    let verdict = verify(&server, &b.secret).await;
    assert_eq!((verdict.valid, verdict.code), (true, VerifyCode::Valid as i32));
    assert_eq!(get_key(&server, &b_key.id).await.created_by, a_id);
    let as_a = client
        .verify_api_key(with_token(
            VerifyApiKeyRequest { secret: b.secret.clone(), ..Default::default() },
            &a_secret,
        ))
        .await;
    assert_eq!(error_of(&as_a.expect_err("A is revoked")), unauthenticated);
    let as_a = client.create_api_key(with_token(api_key_request("C", &["billing:read"]), &a_secret)).await;
    assert_eq!(error_of(&as_a.expect_err("A is revoked")), unauthenticated);

    server.stop().await;
}

on_both_databases!(no_table_holds_an_api_key_secret, no_table_holds_an_api_key_secret);
async fn no_table_holds_an_api_key_secret(db: Db) {
    let mut server = TestServer::start(db).await;
    let mut client = server.api_keys().await;
    let mut secrets = Vec::new();
    let mut live_ids = Vec::new();
    for i in 0..3 {
        let (id, secret) = server.api_key(&format!("scan {i}"), &["keys:read", "apikeys:verify"]).await;
        live_ids.push(id);
        secrets.push(secret);
    }
    let mut test = api_key_request("scan test", &["keys:read"]);
    test.environment = Environment::Test as i32;
    let test = client.create_api_key(server.req(test)).await.expect("test key").into_inner();
    secrets.push(test.secret);
    let week = Some(prost_types::Duration { seconds: 7 * 86_400, nanos: 0 });
    let rolled = client
        .roll_api_key(server.req(RollApiKeyRequest { id: live_ids[0].clone(), grace_period: week }))
        .await
        .expect("roll")
        .into_inner();
    secrets.push(rolled.secret);
    client.delete_api_key(server.req(DeleteApiKeyRequest { id: live_ids[1].clone() })).await.expect("delete");
    // Verified keys get usage rows (written on shutdown); a key used as a bearer is verified too.
    for secret in &secrets {
        verify(&server, secret).await;
    }
    server
        .api_keys()
        .await
        .verify_api_key(with_token(
            VerifyApiKeyRequest { secret: secrets[2].clone(), ..Default::default() },
            &secrets[2],
        ))
        .await
        .expect("a key as a bearer");
    assert_eq!(secrets.iter().collect::<BTreeSet<_>>().len(), 5);

    // Stop keymint so that usage is flushed, then read every table straight from the database.
    if let Some(running) = server.running.take() {
        running.shutdown().await.expect("shutdown");
    }
    let tables = helpers::dump_every_table(server.db.url.as_deref(), &server.db.data_dir()).await;
    let table =
        |name: &str| tables.iter().find(|(t, _)| t == name).map(|(_, rows)| rows.as_str()).unwrap_or("");
    // Not vacuous: the scan sees each secret's hash where lookups need it, and the usage written at shutdown.
    for secret in &secrets {
        assert!(table("api_key_secrets").contains(&hash_secret(secret)), "hash of {:.12} missing", secret);
    }
    assert!(live_ids.iter().all(|id| table("api_key_usage").contains(id.as_str())), "usage rows");
    assert!(table("events").contains("apikey.rolled"));
    for secret in &secrets {
        let body = &secret["km_live_".len()..];
        let body_without_checksum = &body[..body.len() - 6];
        for (name, rows) in &tables {
            for needle in [secret.as_str(), body, body_without_checksum] {
                assert!(!rows.contains(needle), "table {name} holds a secret ({:.12}…)", secret);
            }
        }
    }

    server.stop().await;
}
