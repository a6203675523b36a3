//! VerifyApiKey end to end: every code, networks, expiry, rolls, revocation under load, usage, two processes.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use keymint::{
    api::pb::keymint::{
        admin::v1::{AddOrgRequest, ListOrgsRequest},
        apikeys::v1::{
            ApiKey, CreateApiKeyRequest, DeleteApiKeyRequest, Environment, GetApiKeyRequest, RateLimit,
            RollApiKeyRequest, Status, UpdateApiKeyRequest, VerifyApiKeyRequest, VerifyApiKeyResponse,
            VerifyCode, api_key_service_client::ApiKeyServiceClient,
        },
    },
    app,
    crypto::api_key_secret,
    domain::api_key::Environment as SecretEnvironment,
};
use tonic::{Code, transport::Channel};

use crate::helpers::{self, Db, TestServer, api_key_request, error_of, on_both_databases, with_token};

type Client = ApiKeyServiceClient<Channel>;

/// A verify request for `secret` that requires nothing else (no address, no scopes, LIVE keys only).
fn ask(secret: &str) -> VerifyApiKeyRequest {
    VerifyApiKeyRequest { secret: secret.into(), ..VerifyApiKeyRequest::default() }
}

fn ask_from(secret: &str, client_ip: &str) -> VerifyApiKeyRequest {
    VerifyApiKeyRequest { client_ip: client_ip.into(), ..ask(secret) }
}

fn ask_for(secret: &str, scopes: &[&str]) -> VerifyApiKeyRequest {
    VerifyApiKeyRequest { required_scopes: scopes.iter().map(|s| (*s).to_owned()).collect(), ..ask(secret) }
}

/// Verifies with the admin token (it holds `apikeys:verify`).
async fn verify(
    server: &TestServer,
    client: &mut Client,
    request: VerifyApiKeyRequest,
) -> VerifyApiKeyResponse {
    client.verify_api_key(server.req(request)).await.expect("verify answers").into_inner()
}

async fn code(server: &TestServer, client: &mut Client, request: VerifyApiKeyRequest) -> VerifyCode {
    let response = verify(server, client, request).await;
    assert_eq!(
        response.valid,
        response.code() == VerifyCode::Valid,
        "valid agrees with the code: {response:?}"
    );
    response.code()
}

/// Creates a key from a customised request; returns (key ID, secret).
async fn create(server: &TestServer, client: &mut Client, request: CreateApiKeyRequest) -> (String, String) {
    let created = client.create_api_key(server.req(request)).await.expect("create API key").into_inner();
    (created.api_key.expect("record").id, created.secret)
}

async fn get(server: &TestServer, client: &mut Client, id: &str) -> ApiKey {
    let got = client.get_api_key(server.req(GetApiKeyRequest { id: id.into() })).await.expect("get API key");
    got.into_inner().api_key.expect("record")
}

/// (total_requests, total_denied, last_used_at in microseconds) of a key, as GetApiKey reports them.
async fn usage(server: &TestServer, client: &mut Client, id: &str) -> (u64, u64, Option<i64>) {
    let usage = get(server, client, id).await.usage.expect("usage");
    (usage.total_requests, usage.total_denied, usage.last_used_at.as_ref().map(micros_of))
}

/// The wall clock in microseconds since the epoch, the resolution keymint keeps: comparing in whole
/// microseconds means a truncation on the server never puts its time before ours.
fn now_micros() -> i64 {
    i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_micros()).expect("i64")
}

fn micros_of(t: &prost_types::Timestamp) -> i64 {
    t.seconds * 1_000_000 + i64::from(t.nanos) / 1_000
}

fn timestamp(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: i32::try_from(micros.rem_euclid(1_000_000) * 1_000).expect("nanos"),
    }
}

async fn sleep_until_micros(at: i64) {
    let left = at - now_micros();
    if left > 0 {
        tokio::time::sleep(Duration::from_micros(left.unsigned_abs())).await;
    }
}

/// The secret with the character at `index` replaced by another letter or digit.
fn one_char_changed(secret: &str, index: usize) -> String {
    secret
        .char_indices()
        .map(|(i, c)| match (i == index, c) {
            (false, c) => c,
            (true, 'a') => 'b',
            (true, _) => 'a',
        })
        .collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

on_both_databases!(a_valid_key_says_whose_it_is, a_valid_key_says_whose_it_is);
async fn a_valid_key_says_whose_it_is(db: Db) {
    let server = TestServer::start(db).await;
    let mut client = server.api_keys().await;
    let (_, app_id, _) = server.project_and_app("verify").await;
    let orgs =
        server.admin().await.list_orgs(server.req(ListOrgsRequest { query: None })).await.expect("orgs");
    let org_id = orgs.into_inner().result[0].id.clone();

    let metadata: HashMap<String, String> =
        [("plan", "gold"), ("region", "eu-west")].map(|(k, v)| (k.to_owned(), v.to_owned())).into();
    let time_offset = prost_types::Duration { seconds: 90, nanos: 250_000_000 };
    let request = CreateApiKeyRequest {
        app_id: app_id.clone(),
        external_id: "customer-42".into(),
        metadata: metadata.clone(),
        time_offset: Some(time_offset),
        ..api_key_request("billing", &["billing:read", "billing:write"])
    };
    let (id, secret) = create(&server, &mut client, request).await;
    assert!(secret.starts_with("km_live_"), "a LIVE secret: {}", &secret[..8]);

    // VALID, with everything the caller's service needs to know about the key.
    let valid = verify(&server, &mut client, ask_for(&secret, &["billing:read"])).await;
    assert!(valid.valid);
    assert_eq!(valid.code(), VerifyCode::Valid);
    assert_eq!((valid.key_id.as_str(), valid.org_id.as_str()), (id.as_str(), org_id.as_str()));
    assert_eq!((valid.app_id.as_str(), valid.external_id.as_str()), (app_id.as_str(), "customer-42"));
    assert_eq!(valid.scopes, ["billing:read", "billing:write"]);
    assert_eq!(valid.metadata, metadata);
    assert_eq!(valid.time_offset, Some(time_offset));
    assert_eq!(valid.environment(), Environment::Live);
    assert_eq!(valid.rate_limit, None, "a key without a rate limit reports no bucket");
    // Every scope at once, or none at all, is valid too.
    let all = ask_for(&secret, &["billing:write", "billing:read"]);
    assert_eq!(code(&server, &mut client, all).await, VerifyCode::Valid);
    assert_eq!(code(&server, &mut client, ask(&secret)).await, VerifyCode::Valid);

    // NOT_FOUND: not an error, and nothing about any key.
    let made_up = format!("km_live_{}", "4f9AbC".repeat(8));
    let well_formed_unknown = api_key_secret::generate(SecretEnvironment::Live).expect("rng").to_string();
    let mut unknown = vec![
        made_up,
        well_formed_unknown,
        String::new(),
        "   ".into(),
        "not a key".into(),
        secret.replacen("km_live_", "km_test_", 1),
        secret[..secret.len() - 1].to_owned(),
        format!("{secret}0"),
    ];
    for index in [8, secret.len() / 2, secret.len() - 1] {
        unknown.push(one_char_changed(&secret, index));
    }
    for presented in &unknown {
        let response = verify(&server, &mut client, ask(presented)).await;
        assert_eq!(response.code(), VerifyCode::NotFound, "{presented:?}");
        assert!(!response.valid);
        assert_eq!(
            response,
            VerifyApiKeyResponse { code: VerifyCode::NotFound as i32, ..VerifyApiKeyResponse::default() },
            "NOT_FOUND says nothing else"
        );
    }

    // Another organization's key is NOT_FOUND to this organization's verifier, and VALID in its own.
    let other = server.admin().await.add_org(server.req(AddOrgRequest { name: "other".into() })).await;
    let other_org = other.expect("add org").into_inner().id;
    let created = client
        .create_api_key(server.req_in(&other_org, api_key_request("theirs", &["billing:read"])))
        .await
        .expect("create in the other org")
        .into_inner();
    let theirs = verify(&server, &mut client, ask(&created.secret)).await;
    assert_eq!(theirs, VerifyApiKeyResponse { code: VerifyCode::NotFound as i32, ..Default::default() });
    let in_their_org = client
        .verify_api_key(server.req_in(&other_org, ask(&created.secret)))
        .await
        .expect("verify")
        .into_inner();
    assert_eq!(in_their_org.code(), VerifyCode::Valid);
    assert_eq!(in_their_org.org_id, other_org);

    server.stop().await;
}

on_both_databases!(every_refusal_has_its_code, every_refusal_has_its_code);
async fn every_refusal_has_its_code(db: Db) {
    let server = TestServer::start(db).await;
    let mut client = server.api_keys().await;
    let scopes = ["billing:read", "billing:write"];

    // EXPIRED: a key that expires in a second, checked again at the end.
    let expires_at = now_micros() + 1_000_000;
    let expiring =
        CreateApiKeyRequest { expires_at: Some(timestamp(expires_at)), ..api_key_request("exp", &scopes) };
    let (expiring_id, expiring) = create(&server, &mut client, expiring).await;

    // DISABLED while inactive, VALID again once active.
    let (id, secret) = server.api_key("switched", &scopes).await;
    let status = |status: Status| UpdateApiKeyRequest {
        id: id.clone(),
        update_mask: vec!["status".into()],
        status: status as i32,
        ..UpdateApiKeyRequest::default()
    };
    assert_eq!(code(&server, &mut client, ask(&secret)).await, VerifyCode::Valid);
    let off = client.update_api_key(server.req(status(Status::Inactive))).await.expect("disable");
    assert_eq!(off.into_inner().api_key.expect("record").status(), Status::Inactive);
    let disabled = verify(&server, &mut client, ask(&secret)).await;
    assert_eq!((disabled.valid, disabled.code()), (false, VerifyCode::Disabled));
    assert_eq!(disabled.key_id, id, "a refusal of a known key names it");
    client.update_api_key(server.req(status(Status::Active))).await.expect("enable");
    assert_eq!(code(&server, &mut client, ask(&secret)).await, VerifyCode::Valid);

    // INSUFFICIENT_SCOPES: every required scope must be held.
    for required in [&["billing:admin"][..], &["billing:read", "billing:admin"], &["billing"]] {
        let answer = code(&server, &mut client, ask_for(&secret, required)).await;
        assert_eq!(answer, VerifyCode::InsufficientScopes, "{required:?}");
    }

    // REVOKED once deleted, whatever else is asked.
    client.delete_api_key(server.req(DeleteApiKeyRequest { id: id.clone() })).await.expect("delete");
    assert_eq!(code(&server, &mut client, ask(&secret)).await, VerifyCode::Revoked);
    assert_eq!(code(&server, &mut client, ask_for(&secret, &["billing:admin"])).await, VerifyCode::Revoked);

    // IP_NOT_ALLOWED outside the key's networks.
    let networked =
        CreateApiKeyRequest { allowed_cidrs: strings(&["10.0.0.0/8"]), ..api_key_request("net", &scopes) };
    let (_, networked) = create(&server, &mut client, networked).await;
    assert_eq!(code(&server, &mut client, ask_from(&networked, "10.1.2.3")).await, VerifyCode::Valid);
    assert_eq!(code(&server, &mut client, ask_from(&networked, "11.0.0.1")).await, VerifyCode::IpNotAllowed);

    // TEST_KEY_NOT_ALLOWED unless the verifier accepts test keys.
    let test =
        CreateApiKeyRequest { environment: Environment::Test as i32, ..api_key_request("staging", &scopes) };
    let (test_id, test_secret) = create(&server, &mut client, test).await;
    assert!(test_secret.starts_with("km_test_"));
    assert_eq!(code(&server, &mut client, ask(&test_secret)).await, VerifyCode::TestKeyNotAllowed);
    let accepting = VerifyApiKeyRequest { accept_test_keys: true, ..ask(&test_secret) };
    let accepted = verify(&server, &mut client, accepting).await;
    assert_eq!((accepted.code(), accepted.environment()), (VerifyCode::Valid, Environment::Test));
    assert_eq!(accepted.key_id, test_id);

    // EXPIRED from its expiry on.
    sleep_until_micros(expires_at + 20_000).await;
    let expired = verify(&server, &mut client, ask(&expiring)).await;
    assert_eq!(
        (expired.valid, expired.code(), expired.key_id.as_str()),
        (false, VerifyCode::Expired, &*expiring_id)
    );

    server.stop().await;
}

on_both_databases!(rate_limit_and_daily_quota, rate_limit_and_daily_quota);
async fn rate_limit_and_daily_quota(db: Db) {
    let server = TestServer::start(db).await;
    let mut client = server.api_keys().await;

    // RATE_LIMITED: a bucket of 2 refilled at 1 per second lets two immediate calls through, not three. The
    // three calls must fit in a second for that; on a machine too slow for it, a fresh key tries again.
    let limited = || CreateApiKeyRequest {
        rate_limit: Some(RateLimit { per_second: 1, burst: 2 }),
        ..api_key_request("limited", &["billing:read"])
    };
    let mut checked = false;
    for _ in 0..3 {
        let (id, secret) = create(&server, &mut client, limited()).await;
        let (started, before) = (Instant::now(), now_micros());
        let first = verify(&server, &mut client, ask(&secret)).await;
        let second = verify(&server, &mut client, ask(&secret)).await;
        let third = verify(&server, &mut client, ask(&secret)).await;
        let after = now_micros();
        if started.elapsed() >= Duration::from_millis(950) {
            eprintln!("three verify calls took {:?}: trying again with a new key", started.elapsed());
            continue;
        }
        let state = |r: &VerifyApiKeyResponse| {
            let rate = r.rate_limit.as_ref().expect("rate limit state");
            (r.code(), rate.limit, rate.remaining)
        };
        assert_eq!(state(&first), (VerifyCode::Valid, 2, 1));
        assert_eq!(state(&second), (VerifyCode::Valid, 2, 0));
        assert_eq!(state(&third), (VerifyCode::RateLimited, 2, 0));
        assert!(!third.valid);
        assert_eq!(third.key_id, id);
        // The bucket is full again two seconds after the first call took from it.
        let reset = micros_of(third.rate_limit.as_ref().and_then(|r| r.reset.as_ref()).expect("reset"));
        assert!(
            (before + 2_000_000..=after + 2_000_000).contains(&reset),
            "reset {reset} from {before}..{after}"
        );
        let (requests, denied, _) = usage(&server, &mut client, &id).await;
        assert_eq!((requests, denied), (2, 1), "two calls admitted, one refused");

        // A second later a token is back.
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        let again = verify(&server, &mut client, ask(&secret)).await;
        assert_eq!(again.code(), VerifyCode::Valid);
        assert_eq!(again.rate_limit.expect("rate limit state").limit, 2);
        checked = true;
        break;
    }
    assert!(checked, "three verify calls never fitted in a second");

    // QUOTA_EXCEEDED: a daily quota of 2 admits two calls; refused ones do not use it up further.
    let quota = CreateApiKeyRequest { daily_quota: 2, ..api_key_request("quota", &["billing:read"]) };
    let (quota_id, quota_secret) = create(&server, &mut client, quota).await;
    let mut codes = Vec::new();
    for _ in 0..4 {
        let response = verify(&server, &mut client, ask(&quota_secret)).await;
        assert_eq!(response.rate_limit, None);
        codes.push(response.code());
    }
    use VerifyCode::{QuotaExceeded, Valid};
    assert_eq!(codes, [Valid, Valid, QuotaExceeded, QuotaExceeded]);
    let (requests, denied, _) = usage(&server, &mut client, &quota_id).await;
    assert_eq!((requests, denied), (2, 2));
    // A call refused for another reason first is reported for that reason.
    let scoped = code(&server, &mut client, ask_for(&quota_secret, &["billing:write"])).await;
    assert_eq!(scoped, VerifyCode::InsufficientScopes);

    server.stop().await;
}

on_both_databases!(bad_requests_and_callers_without_the_scope, bad_requests_and_callers_without_the_scope);
async fn bad_requests_and_callers_without_the_scope(db: Db) {
    let server = TestServer::start(db).await;
    let mut client = server.api_keys().await;
    let (id, secret) = server.api_key("checked", &["billing:read"]).await;

    // A client address that is not an address is the verifier's mistake: INVALID_ARGUMENT on client_ip.
    for client_ip in ["not-an-ip", "10.0.0.0/8", "10.0.0.256", "fe80::1%eth0", "[2001:db8::1]"] {
        let refused =
            client.verify_api_key(server.req(ask_from(&secret, client_ip))).await.expect_err(client_ip);
        assert_eq!(
            error_of(&refused),
            (Code::InvalidArgument, "INVALID_ARGUMENT".into(), vec!["clientIp".into()]),
            "{client_ip}"
        );
    }

    // A caller without apikeys:verify may not verify, even a key of its own organization.
    let (_, reader) = server.api_key("reader", &["keys:read"]).await;
    let refused = client.verify_api_key(with_token(ask(&secret), &reader)).await.expect_err("missing scope");
    let (code_, reason, _) = error_of(&refused);
    assert_eq!((code_, reason.as_str()), (Code::PermissionDenied, "MISSING_SCOPE"));
    assert!(refused.message().contains("apikeys:verify"), "{}", refused.message());

    // An API key holding apikeys:verify may.
    let (_, verifier) = server.api_key("verifier", &["apikeys:verify"]).await;
    let verified =
        client.verify_api_key(with_token(ask(&secret), &verifier)).await.expect("verify").into_inner();
    assert_eq!((verified.code(), verified.key_id.as_str()), (VerifyCode::Valid, id.as_str()));

    server.stop().await;
}

/// A key's networks, and the answer for each client address.
type NetworkCase = (&'static [&'static str], &'static [(&'static str, VerifyCode)]);

on_both_databases!(networks_at_their_edges, networks_at_their_edges);
async fn networks_at_their_edges(db: Db) {
    let server = TestServer::start(db).await;
    let mut client = server.api_keys().await;
    use VerifyCode::{IpNotAllowed as No, Valid as Yes};
    let cases: [NetworkCase; 7] = [
        (
            &["2001:db8::/32"],
            &[
                ("2001:db8::1", Yes),
                ("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", Yes),
                ("2001:db9::1", No),
                ("2001:db7:ffff::1", No),
                ("10.0.0.1", No),
            ],
        ),
        (
            &["0.0.0.0/0"],
            &[
                ("0.0.0.0", Yes),
                ("10.1.2.3", Yes),
                ("203.0.113.7", Yes),
                ("255.255.255.255", Yes),
                ("::ffff:198.51.100.1", Yes),
                ("2001:db8::1", No),
                ("::1", No),
            ],
        ),
        (
            &["::/0"],
            &[("2001:db8::1", Yes), ("::1", Yes), ("fe80::1", Yes), ("ffff::", Yes), ("10.1.2.3", No)],
        ),
        (&["203.0.113.7/32"], &[("203.0.113.7", Yes), ("203.0.113.6", No), ("203.0.113.8", No), ("::1", No)]),
        (
            &["2001:db8::7/128"],
            &[
                ("2001:db8::7", Yes),
                ("2001:0db8:0000:0000:0000:0000:0000:0007", Yes),
                ("2001:db8::6", No),
                ("2001:db8::8", No),
                ("2001:db8::7:0", No),
            ],
        ),
        (
            &["10.0.0.0/8"],
            &[
                ("::ffff:10.1.2.3", Yes),
                ("10.255.255.255", Yes),
                // No client address: the verifier cannot say where the call came from, so a key limited to
                // networks is refused.
                ("", No),
                ("::ffff:11.1.2.3", No),
                ("9.255.255.255", No),
                ("::a01:203", No),
            ],
        ),
        (&["10.0.0.0/8", "2001:db8::/32"], &[("10.9.9.9", Yes), ("2001:db8::9", Yes), ("192.168.0.1", No)]),
    ];
    for (cidrs, checks) in cases {
        let request =
            CreateApiKeyRequest { allowed_cidrs: strings(cidrs), ..api_key_request("net", &["a:b"]) };
        let (_, secret) = create(&server, &mut client, request).await;
        for (ip, expected) in checks {
            let answer = code(&server, &mut client, ask_from(&secret, ip)).await;
            assert_eq!(answer, *expected, "{ip:?} against {cidrs:?}");
        }
    }

    // Single addresses are stored as /32 and /128 blocks.
    let singles = strings(&["198.51.100.9", "2001:DB8::7"]);
    let request = CreateApiKeyRequest { allowed_cidrs: singles, ..api_key_request("singles", &["a:b"]) };
    let (id, secret) = create(&server, &mut client, request).await;
    assert_eq!(get(&server, &mut client, &id).await.allowed_cidrs, ["198.51.100.9/32", "2001:db8::7/128"]);
    assert_eq!(code(&server, &mut client, ask_from(&secret, "2001:db8::7")).await, Yes);
    assert_eq!(code(&server, &mut client, ask_from(&secret, "198.51.100.10")).await, No);

    // Entries that are not blocks are refused at create and update, each on its own index.
    let bad =
        strings(&["10.0.0.0/8", "10.0.0.0/33", "fe80::1%eth0", "abc", "10.0.0.1/8", "2001:db8::/129", ""]);
    let request = CreateApiKeyRequest { allowed_cidrs: bad.clone(), ..api_key_request("bad", &["a:b"]) };
    let refused = client.create_api_key(server.req(request)).await.expect_err("bad networks");
    let fields: Vec<String> = (1..bad.len()).map(|i| format!("allowedCidrs[{i}]")).collect();
    assert_eq!(error_of(&refused), (Code::InvalidArgument, "INVALID_ARGUMENT".into(), fields));
    let update = UpdateApiKeyRequest {
        id: id.clone(),
        update_mask: vec!["allowed_cidrs".into()],
        allowed_cidrs: strings(&["10.0.0.0/33"]),
        ..UpdateApiKeyRequest::default()
    };
    let refused = client.update_api_key(server.req(update)).await.expect_err("bad network");
    assert_eq!(error_of(&refused).2, ["allowedCidrs[0]"]);
    assert_eq!(code(&server, &mut client, ask_from(&secret, "2001:db8::7")).await, Yes, "unchanged");

    server.stop().await;
}

on_both_databases!(a_key_expires_at_its_instant, a_key_expires_at_its_instant);
async fn a_key_expires_at_its_instant(db: Db) {
    let server = TestServer::start(db).await;
    let mut client = server.api_keys().await;
    let expires_at = now_micros() + 1_500_000;
    let request = CreateApiKeyRequest {
        expires_at: Some(timestamp(expires_at)),
        ..api_key_request("expiring", &["a:b"])
    };
    let (id, secret) = create(&server, &mut client, request).await;
    let record = get(&server, &mut client, &id).await;
    assert_eq!(record.expires_at.as_ref().map(micros_of), Some(expires_at));

    // Verify every 10 ms from now until 300 ms after the expiry, noting when each call was sent and returned.
    let mut calls = Vec::new();
    while now_micros() < expires_at + 300_000 {
        let sent = now_micros();
        let answer = code(&server, &mut client, ask(&secret)).await;
        calls.push((sent, now_micros(), answer));
        // Closer to the instant, more often.
        let pause = if (expires_at - 100_000..expires_at + 100_000).contains(&sent) { 2 } else { 10 };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    let answered_before = calls.iter().filter(|(_, returned, _)| *returned < expires_at).count();
    let sent_after = calls.iter().filter(|(sent, _, _)| *sent >= expires_at).count();
    assert!(answered_before > 0 && sent_after > 0, "calls on both sides of the expiry: {calls:?}");
    for (sent, returned, answer) in &calls {
        let expected: &[VerifyCode] = if *returned < expires_at {
            &[VerifyCode::Valid]
        } else if *sent >= expires_at {
            &[VerifyCode::Expired]
        } else {
            &[VerifyCode::Valid, VerifyCode::Expired]
        };
        assert!(
            expected.contains(answer),
            "a call sent {} µs and returned {} µs from the expiry answered {answer:?}",
            sent - expires_at,
            returned - expires_at
        );
    }
    // Expiry is a verdict, not a status.
    assert_eq!(get(&server, &mut client, &id).await.status(), Status::Active);

    server.stop().await;
}

on_both_databases!(a_rolled_secret_works_for_its_grace_period, a_rolled_secret_works_for_its_grace_period);
async fn a_rolled_secret_works_for_its_grace_period(db: Db) {
    let server = TestServer::start(db).await;
    let mut client = server.api_keys().await;
    let (id, first) = server.api_key("rolled", &["a:b"]).await;
    assert_eq!(code(&server, &mut client, ask(&first)).await, VerifyCode::Valid);

    // Grace of 2 s: both secrets work, then only the new one.
    let roll = |seconds| RollApiKeyRequest {
        id: id.clone(),
        grace_period: Some(prost_types::Duration { seconds, nanos: 0 }),
    };
    let before = now_micros();
    let rolled = client.roll_api_key(server.req(roll(2))).await.expect("roll").into_inner();
    let after = now_micros();
    let second = rolled.secret;
    assert_ne!(second, first);
    assert!(second.starts_with("km_live_"));
    let old_ends = micros_of(rolled.old_secret_expires_at.as_ref().expect("old secret's end"));
    assert!(
        (before + 2_000_000..=after + 2_000_000).contains(&old_ends),
        "{old_ends} from {before}..{after}"
    );
    assert_eq!(rolled.api_key.expect("record").last_four, second[second.len() - 4..]);
    for secret in [&first, &second] {
        let sent = verify(&server, &mut client, ask(secret)).await;
        if now_micros() < old_ends {
            assert_eq!((sent.code(), sent.key_id.as_str()), (VerifyCode::Valid, id.as_str()));
        } else {
            eprintln!("the grace period was over before the check: skipping it");
        }
    }
    sleep_until_micros(old_ends + 20_000).await;
    let old = verify(&server, &mut client, ask(&first)).await;
    assert_eq!((old.code(), old.key_id.as_str()), (VerifyCode::Revoked, id.as_str()));
    assert_eq!(code(&server, &mut client, ask(&second)).await, VerifyCode::Valid);

    // Grace 0: the old secret stops at once.
    let rolled = client.roll_api_key(server.req(roll(0))).await.expect("roll at once").into_inner();
    let returned = now_micros();
    let third = rolled.secret;
    assert!(micros_of(rolled.old_secret_expires_at.as_ref().expect("end")) <= returned);
    assert_eq!(code(&server, &mut client, ask(&second)).await, VerifyCode::Revoked);
    assert_eq!(code(&server, &mut client, ask(&first)).await, VerifyCode::Revoked);
    assert_eq!(code(&server, &mut client, ask(&third)).await, VerifyCode::Valid);
    // An absent grace period is 0 too.
    let rolled =
        client.roll_api_key(server.req(RollApiKeyRequest { id: id.clone(), grace_period: None })).await;
    let fourth = rolled.expect("roll without grace").into_inner().secret;
    assert_eq!(code(&server, &mut client, ask(&third)).await, VerifyCode::Revoked);
    assert_eq!(code(&server, &mut client, ask(&fourth)).await, VerifyCode::Valid);

    server.stop().await;
}

on_both_databases!(no_call_after_a_revocation_returns_is_valid, no_call_after_a_revocation_returns_is_valid);
async fn no_call_after_a_revocation_returns_is_valid(db: Db) {
    let server = TestServer::start(db).await;
    let (id, secret) = server.api_key("busy", &["a:b"]).await;
    let mut admin = server.api_keys().await;

    // 8 verifiers on their own connections, each noting when every call started and what it answered.
    let stop = Arc::new(AtomicBool::new(false));
    let mut verifiers = Vec::new();
    for _ in 0..8 {
        let (mut client, token, secret, stop) =
            (server.api_keys().await, server.token.clone(), secret.clone(), stop.clone());
        verifiers.push(tokio::spawn(async move {
            let mut calls = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let response = client.verify_api_key(with_token(ask(&secret), &token)).await;
                calls.push((started, response.expect("verify answers").into_inner().code()));
            }
            calls
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    admin.delete_api_key(server.req(DeleteApiKeyRequest { id })).await.expect("delete");
    let deleted = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut calls = Vec::new();
    for verifier in verifiers {
        calls.extend(verifier.await.expect("verifier task"));
    }

    let (before, after): (Vec<_>, Vec<_>) = calls.iter().partition(|(started, _)| *started <= deleted);
    let valid_before = before.iter().filter(|(_, code)| *code == VerifyCode::Valid).count();
    eprintln!(
        "{} calls started before the delete returned ({valid_before} VALID), {} after",
        before.len(),
        after.len()
    );
    assert!(valid_before > 0, "the key verified before it was deleted");
    assert!(before.iter().all(|(_, code)| [VerifyCode::Valid, VerifyCode::Revoked].contains(code)));
    assert!(after.len() >= 8, "calls were made after the delete: {}", after.len());
    let valid_after: Vec<_> = after.iter().filter(|(_, code)| *code == VerifyCode::Valid).collect();
    assert!(
        valid_after.is_empty(),
        "{} calls started after the delete returned answered VALID",
        valid_after.len()
    );
    assert!(after.iter().all(|(_, code)| *code == VerifyCode::Revoked));

    server.stop().await;
}

on_both_databases!(usage_and_quota_outlive_a_restart, usage_and_quota_outlive_a_restart);
async fn usage_and_quota_outlive_a_restart(db: Db) {
    let mut server = TestServer::start(db).await;
    let mut client = server.api_keys().await;
    let started = now_micros();
    let (id, secret) = server.api_key("metered", &["billing:read"]).await;
    let quota = CreateApiKeyRequest { daily_quota: 3, ..api_key_request("quota", &["billing:read"]) };
    let (quota_id, quota_secret) = create(&server, &mut client, quota).await;
    assert_eq!(usage(&server, &mut client, &id).await, (0, 0, None), "a new key has no usage");

    // 5 valid calls, 3 refused (scope), and unknown secrets, which count on no key.
    for _ in 0..5 {
        assert_eq!(code(&server, &mut client, ask_for(&secret, &["billing:read"])).await, VerifyCode::Valid);
    }
    for _ in 0..3 {
        let refused = code(&server, &mut client, ask_for(&secret, &["billing:write"])).await;
        assert_eq!(refused, VerifyCode::InsufficientScopes);
    }
    assert_eq!(code(&server, &mut client, ask(&one_char_changed(&secret, 12))).await, VerifyCode::NotFound);
    // Two of the quota key's three calls today.
    for _ in 0..2 {
        assert_eq!(code(&server, &mut client, ask(&quota_secret)).await, VerifyCode::Valid);
    }
    let counted_at = now_micros();

    // Counted in memory: reads show it before any flush.
    let (requests, denied, last_used) = usage(&server, &mut client, &id).await;
    assert_eq!((requests, denied), (5, 3));
    let last_used = last_used.expect("last_used_at");
    assert!((started..=counted_at).contains(&last_used), "last used {last_used} in {started}..{counted_at}");
    let quota_usage = usage(&server, &mut client, &quota_id).await;
    assert_eq!((quota_usage.0, quota_usage.1), (2, 0));

    // What the periodic flush (every 2 s) may already have written; the shutdown writes the rest.
    let org_id = get(&server, &mut client, &id).await.details.expect("details").resource_owner;
    let stored = server.store().api_key(&org_id, &id).await.expect("read").expect("row").usage;
    eprintln!("before the shutdown the store held {stored:?}");

    // Shut down gracefully (which writes what was counted) and start again on the same database.
    let running = server.running.take().expect("running");
    running.shutdown().await.expect("graceful shutdown");
    let again = app::start(&helpers::config(&server.db, Some(server.token.clone()))).await.expect("restart");
    server.addr = again.addr;
    server.running = Some(again);
    let mut client = server.api_keys().await;

    assert_eq!(usage(&server, &mut client, &id).await, (5, 3, Some(last_used)), "usage after the restart");
    assert_eq!(
        usage(&server, &mut client, &quota_id).await,
        quota_usage,
        "quota key's usage after the restart"
    );
    // The day's quota carries on from the 2 calls made before the restart.
    assert_eq!(code(&server, &mut client, ask(&quota_secret)).await, VerifyCode::Valid);
    assert_eq!(code(&server, &mut client, ask(&quota_secret)).await, VerifyCode::QuotaExceeded);
    assert_eq!(usage(&server, &mut client, &quota_id).await.0, 3);
    // And the other key goes on counting from where it was.
    assert_eq!(code(&server, &mut client, ask(&secret)).await, VerifyCode::Valid);
    assert_eq!(usage(&server, &mut client, &id).await.0, 6);

    server.stop().await;
}

/// Two keymint processes on one PostgreSQL: a key revoked on one is refused by the other (which verifies from
/// memory) within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set KEYMINT_TEST_POSTGRES_URL (source .ci/tools.sh)"]
async fn a_revocation_on_one_process_reaches_the_other_within_a_second() {
    let db = Db::required_postgres();
    let first = TestServer::start(db).await;
    let second = first.start_beside().await;
    let (id, secret) = first.api_key("shared", &["a:b"]).await;
    let mut here = first.api_keys().await;
    let mut there = second.api_keys().await;

    // The second process verifies the key (and keeps it in memory).
    assert_eq!(code(&second, &mut there, ask(&secret)).await, VerifyCode::Valid);
    assert_eq!(code(&second, &mut there, ask(&secret)).await, VerifyCode::Valid);

    here.delete_api_key(first.req(DeleteApiKeyRequest { id })).await.expect("revoke on the first process");
    let revoked_at = Instant::now();
    assert_eq!(code(&first, &mut here, ask(&secret)).await, VerifyCode::Revoked, "at once on the first");
    let answer = loop {
        let answer = code(&second, &mut there, ask(&secret)).await;
        if answer != VerifyCode::Valid || revoked_at.elapsed() > Duration::from_secs(1) {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let latency = revoked_at.elapsed();
    eprintln!("revocation seen by the other process after {latency:?}");
    assert_eq!(answer, VerifyCode::Revoked, "the second process after {latency:?}");
    assert!(latency <= Duration::from_secs(1), "the second process accepted the revoked key for {latency:?}");

    second.stop().await;
    first.stop().await;
}
