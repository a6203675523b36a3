//! Read models are derived from events: `keymint projections rebuild` restores them exactly, and no table holds
//! key material or secrets.

use keymint::api::pb::keymint::{
    apikeys::v1::{DeleteApiKeyRequest, RollApiKeyRequest, UpdateApiKeyRequest},
    management::v1::{AddAppKeyRequest, KeyAlgorithm, RemoveAppKeyRequest, RemoveAppRequest},
};
use sqlx::Connection;

use crate::helpers::{self, Db, TestServer, key_request, on_both_databases};

/// The public key of RFC 8037 §A.2, as a caller would supply it.
const SUPPLIED_JWK: &str =
    r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;

/// Issues keys, removes some, removes an app, and creates, updates, rolls and deletes API keys: a store with every
/// kind of event. Returns the key files and every API-key secret issued.
async fn populate(server: &TestServer) -> (Vec<Vec<u8>>, Vec<String>) {
    let mut client = server.management().await;
    let mut key_files = Vec::new();
    for project in ["alpha", "beta"] {
        let (project_id, app_id, _) = server.project_and_app(project).await;
        let mut key_ids = Vec::new();
        for _ in 0..3 {
            let added = client
                .add_app_key(server.req(key_request(&project_id, &app_id)))
                .await
                .expect("add key")
                .into_inner();
            key_ids.push(added.id);
            key_files.push(added.key_details);
        }
        // Keys of the other algorithms, one generated and one supplied, whose key files are not needed here.
        let ec =
            AddAppKeyRequest { algorithm: KeyAlgorithm::EcP256 as i32, ..key_request(&project_id, &app_id) };
        client.add_app_key(server.req(ec)).await.expect("add EC key");
        let supplied =
            AddAppKeyRequest { public_key: SUPPLIED_JWK.into(), ..key_request(&project_id, &app_id) };
        client.add_app_key(server.req(supplied)).await.expect("add supplied key");
        let remove = RemoveAppKeyRequest {
            project_id: project_id.clone(),
            app_id: app_id.clone(),
            key_id: key_ids[0].clone(),
        };
        client.remove_app_key(server.req(remove)).await.expect("remove key");
        if project == "beta" {
            client.remove_app(server.req(RemoveAppRequest { project_id, app_id })).await.expect("remove app");
        }
    }
    let mut api_keys = server.api_keys().await;
    let mut secrets = Vec::new();
    for title in ["updated", "rolled", "deleted"] {
        let (id, secret) = server.api_key(title, &["keys:read"]).await;
        secrets.push(secret);
        match title {
            "updated" => {
                let update = UpdateApiKeyRequest {
                    id,
                    update_mask: vec!["title".into()],
                    title: "renamed".into(),
                    ..UpdateApiKeyRequest::default()
                };
                api_keys.update_api_key(server.req(update)).await.expect("update API key");
            }
            "rolled" => {
                let grace = prost_types::Duration { seconds: 3600, nanos: 0 };
                let roll = RollApiKeyRequest { id, grace_period: Some(grace) };
                secrets
                    .push(api_keys.roll_api_key(server.req(roll)).await.expect("roll").into_inner().secret);
            }
            _ => {
                api_keys
                    .delete_api_key(server.req(DeleteApiKeyRequest { id }))
                    .await
                    .expect("delete API key");
            }
        }
    }
    (key_files, secrets)
}

on_both_databases!(rebuild_command_restores_the_read_models_exactly, rebuild_restores_read_models);
async fn rebuild_restores_read_models(db: Db) {
    let mut server = TestServer::start(db).await;
    populate(&server).await;
    let live = server.store().projection_snapshot().await.expect("snapshot");
    assert!(live.iter().any(|line| line.contains("BEGIN PUBLIC KEY")), "keys are in the read model");
    assert!(
        live.iter().any(|line| line.contains("renamed") && line.contains("|active|")),
        "an updated API key"
    );
    assert!(live.iter().any(|line| line.contains("|revoked|")), "a deleted API key");

    // Damage the read models behind keymint's back, then rebuild them with the CLI, as an operator would.
    let data_dir = server.db.data_dir();
    let url = server.db.url.clone();
    if let Some(running) = server.running.take() {
        running.shutdown().await.expect("shutdown");
    }
    execute_raw(url.as_deref(), &data_dir, "DELETE FROM app_keys").await;
    execute_raw(url.as_deref(), &data_dir, "UPDATE apps SET name = 'tampered'").await;
    execute_raw(url.as_deref(), &data_dir, "DELETE FROM api_key_secrets").await;
    execute_raw(url.as_deref(), &data_dir, "UPDATE api_keys SET status = 'active', deleted_at = NULL").await;
    let damaged = server.db.open_store().await.projection_snapshot().await.expect("snapshot");
    assert_ne!(damaged, live);

    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_keymint"));
    command
        .args(["projections", "rebuild"])
        .env("KEYMINT_DATA_DIR", &data_dir)
        .env_remove("KEYMINT_DATABASE_URL");
    if let Some(url) = &url {
        command.env("KEYMINT_DATABASE_URL", url);
    }
    let output = command.output().expect("run keymint projections rebuild");
    assert!(output.status.success(), "rebuild failed: {}", String::from_utf8_lossy(&output.stderr));

    let rebuilt = server.db.open_store().await.projection_snapshot().await.expect("snapshot");
    assert_eq!(rebuilt, live);
    server.stop().await;
}

on_both_databases!(no_table_holds_private_keys_or_secrets, no_table_holds_secrets);
async fn no_table_holds_secrets(db: Db) {
    let server = TestServer::start(db).await;
    let (key_files, secrets) = populate(&server).await;
    let mut needles = vec!["PRIVATE KEY".to_owned(), server.token.clone()];
    // Each API-key secret, whole and without its prefix.
    for secret in &secrets {
        needles.push(secret.clone());
        needles.push(secret["km_live_".len()..].to_owned());
    }
    for file in &key_files {
        let json: serde_json::Value = serde_json::from_slice(file).expect("key file");
        let pem = json["key"].as_str().expect("key").to_owned();
        // A line from the middle of the PEM body: present in any encoding of the same key bytes' base64.
        needles.push(pem.lines().nth(5).expect("PEM body line").to_owned());
    }

    let tables = helpers::dump_every_table(server.db.url.as_deref(), &server.db.data_dir()).await;
    let dump: String = tables.into_iter().map(|(_, rows)| rows + "\n").collect();
    assert!(dump.contains("BEGIN PUBLIC KEY"), "the dump covers the key tables");
    let first_hash = keymint::crypto::secret::hash_secret(&secrets[0]);
    assert!(dump.contains(&first_hash), "the dump covers the API-key secret hashes");
    for needle in &needles {
        assert!(!dump.contains(needle.as_str()), "found secret material in the database: {needle:.20}…");
    }
    server.stop().await;
}

async fn execute_raw(url: Option<&str>, data_dir: &std::path::Path, sql: &'static str) {
    match url {
        Some(url) => {
            let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
            sqlx::query(sql).execute(&mut conn).await.expect("execute");
        }
        None => {
            let path = data_dir.join("keymint.db");
            let mut conn =
                sqlx::SqliteConnection::connect(&format!("sqlite:{}", path.display())).await.expect("open");
            sqlx::query(sql).execute(&mut conn).await.expect("execute");
        }
    }
}
