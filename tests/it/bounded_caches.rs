//! The in-memory caches are bounded: a server whose caches hold 8 entries verifies 40 keys correctly, a key
//! evicted from them verifies as before, a revoked key read again after eviction stays revoked, and no usage
//! is lost with the meters that go.

use keymint::{
    api::pb::keymint::apikeys::v1::{
        DeleteApiKeyRequest, GetApiKeyRequest, VerifyApiKeyRequest, VerifyCode,
        api_key_service_client::ApiKeyServiceClient,
    },
    app,
};
use tonic::transport::Channel;

use crate::helpers::{self, Db, FreshDb, TestServer, on_both_databases};

const CAPACITY: usize = 8;
const KEYS: usize = 40;

async fn code(server: &TestServer, client: &mut ApiKeyServiceClient<Channel>, secret: &str) -> VerifyCode {
    let request = VerifyApiKeyRequest { secret: secret.into(), ..VerifyApiKeyRequest::default() };
    client.verify_api_key(server.req(request)).await.expect("verify").into_inner().code()
}

on_both_databases!(evicted_keys_verify_as_before_and_revoked_ones_stay_revoked, evicted_keys);
async fn evicted_keys(db: Db) {
    let fresh = FreshDb::create(&db).await;
    let token = keymint::crypto::secret::new_secret("km_admin_").expect("rng").to_string();
    let config =
        keymint::config::Config { cache_capacity: CAPACITY, ..helpers::config(&fresh, Some(token.clone())) };
    let running = app::start(&config).await.expect("start keymint");
    let server = TestServer { addr: running.addr, running: Some(running), token, db: fresh };
    let mut client = server.api_keys().await;

    let mut keys = Vec::new();
    for i in 0..KEYS {
        keys.push(server.api_key(&format!("k{i}"), &["a:b"]).await);
    }
    // Three rounds over five times as many keys as the caches hold: most calls miss and evict.
    for round in 0..3 {
        for (i, (_, secret)) in keys.iter().enumerate() {
            assert_eq!(code(&server, &mut client, secret).await, VerifyCode::Valid, "round {round}, key {i}");
        }
    }

    // Revoked while cached, then evicted by other keys, then read again: revoked. And one revoked after it
    // was evicted.
    let (cached_id, cached_secret) = keys[KEYS - 1].clone();
    let (evicted_id, evicted_secret) = keys[0].clone();
    for (id, _) in [&keys[KEYS - 1], &keys[0]] {
        client.delete_api_key(server.req(DeleteApiKeyRequest { id: id.clone() })).await.expect("revoke");
    }
    for (_, secret) in &keys[1..KEYS - 1] {
        assert_eq!(code(&server, &mut client, secret).await, VerifyCode::Valid);
    }
    for _ in 0..2 {
        assert_eq!(code(&server, &mut client, &cached_secret).await, VerifyCode::Revoked, "{cached_id}");
        assert_eq!(code(&server, &mut client, &evicted_secret).await, VerifyCode::Revoked, "{evicted_id}");
        for (_, secret) in &keys[1..20] {
            code(&server, &mut client, secret).await;
        }
    }

    // Every call was counted, though the meters came and went: 3 rounds + 1 + 2 × (keys 1 to 19).
    for (i, (id, _)) in keys.iter().enumerate().skip(1).take(KEYS - 2) {
        let usage = client
            .get_api_key(server.req(GetApiKeyRequest { id: id.clone() }))
            .await
            .expect("get")
            .into_inner()
            .api_key
            .and_then(|key| key.usage)
            .expect("usage");
        let expected = if i < 20 { 6 } else { 4 };
        assert_eq!((usage.total_requests, usage.total_denied), (expected, 0), "key {i}");
    }
    server.stop().await;
}
