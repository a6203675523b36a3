//! Backups taken while keymint serves under write load, restored as README's "Operating keymint" says: with
//! `keymint backup` on SQLite, with pg_dump and pg_restore on PostgreSQL. What was written before the backup is
//! all there after the restore (keys verify, the signing keys open under the same master key), what came after
//! is not, and the read models equal a rebuild from the events.

use std::{
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use crate::{
    crash::Process,
    helpers::{Db, FreshDb, api_key_request, key_request, on_both_databases, with_token},
    oauth::Http,
};
use keymint::api::pb::keymint::{
    apikeys::v1::{VerifyApiKeyRequest, VerifyCode, api_key_service_client::ApiKeyServiceClient},
    management::v1::{
        AddProjectRequest, GetAppKeyRequest, GetProjectByIdRequest,
        management_service_client::ManagementServiceClient,
    },
};

/// What the test wrote before the backup, to look for after the restore.
struct Before {
    project_id: String,
    app_id: String,
    app_key_id: String,
    api_key_secret: String,
    signing_kids: Vec<String>,
}

on_both_databases!(a_backup_taken_under_load_restores_what_it_held, backup_and_restore);
async fn backup_and_restore(db: Db) {
    let mut fresh = FreshDb::create(&db).await;
    let token = keymint::crypto::secret::new_secret("km_admin_").expect("rng").to_string();
    let process = Process::start(&fresh, &token).await;
    let before = write_before(&process, &token).await;

    // Writers keep going while the backup is taken: it must not stop them, nor catch half of a write.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicUsize::new(0));
    let load = {
        let mut management = ManagementServiceClient::new(process.channel().await.expect("connect"));
        let (stop, written, token) = (stop.clone(), written.clone(), token.clone());
        tokio::spawn(async move {
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let name = format!("load-{i}");
                management.add_project(with_token(AddProjectRequest { name }, &token)).await.expect("write");
                written.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let backup = fresh.dir.path().join("backup");
    take_backup(&fresh, &backup);
    stop.store(true, Ordering::Relaxed);
    load.await.expect("every write of the load succeeded");
    assert!(written.load(Ordering::Relaxed) > 5, "the load was writing around the backup");

    let mut management = ManagementServiceClient::new(process.channel().await.expect("connect"));
    let later = management
        .add_project(with_token(AddProjectRequest { name: "after the backup".into() }, &token))
        .await
        .expect("a write after the backup")
        .into_inner()
        .id;
    drop(process);

    let mut restored = restore(&db, &fresh, &backup).await;
    let process = Process::start(&restored, &token).await;
    let channel = process.channel().await.expect("connect");
    let mut management = ManagementServiceClient::new(channel.clone());
    let project = GetProjectByIdRequest { id: before.project_id.clone() };
    management.get_project_by_id(with_token(project, &token)).await.expect("the project is back");
    let key = GetAppKeyRequest {
        project_id: before.project_id.clone(),
        app_id: before.app_id.clone(),
        key_id: before.app_key_id.clone(),
        ..Default::default()
    };
    management.get_app_key(with_token(key, &token)).await.expect("the application key is back");
    let missing = management.get_project_by_id(with_token(GetProjectByIdRequest { id: later }, &token)).await;
    assert_eq!(missing.expect_err("not in the backup").code(), tonic::Code::NotFound);

    let verify = VerifyApiKeyRequest { secret: before.api_key_secret.clone(), ..Default::default() };
    let verified = ApiKeyServiceClient::new(channel)
        .verify_api_key(with_token(verify, &token))
        .await
        .expect("verify answers")
        .into_inner();
    assert_eq!(verified.code(), VerifyCode::Valid, "the API key issued before the backup still verifies");
    assert_eq!(signing_kids(&process).await, before.signing_kids, "the same signing keys, opened again");
    drop(process);

    let store = restored.open_store().await;
    let snapshot = store.projection_snapshot().await.expect("snapshot");
    store.rebuild_projections().await.expect("rebuild");
    assert_eq!(store.projection_snapshot().await.expect("snapshot"), snapshot, "read models equal a rebuild");
    restored.drop_database().await;
    fresh.drop_database().await;
}

async fn write_before(process: &Process, token: &str) -> Before {
    let channel = process.channel().await.expect("connect");
    let mut management = ManagementServiceClient::new(channel.clone());
    let project_id = management
        .add_project(with_token(AddProjectRequest { name: "backed up".into() }, token))
        .await
        .expect("project")
        .into_inner()
        .id;
    let app = keymint::api::pb::keymint::management::v1::AddApiAppRequest {
        project_id: project_id.clone(),
        name: "billing".into(),
        ..Default::default()
    };
    let app_id = management.add_api_app(with_token(app, token)).await.expect("app").into_inner().app_id;
    let app_key_id = management
        .add_app_key(with_token(key_request(&project_id, &app_id), token))
        .await
        .expect("app key")
        .into_inner()
        .id;
    let created = ApiKeyServiceClient::new(channel)
        .create_api_key(with_token(api_key_request("backed up", &["invoices:read"]), token))
        .await
        .expect("API key")
        .into_inner();
    Before {
        project_id,
        app_id,
        app_key_id,
        api_key_secret: created.secret,
        signing_kids: signing_kids(process).await,
    }
}

async fn signing_kids(process: &Process) -> Vec<String> {
    let (status, jwks) = Http::at(process.url().to_owned()).get("/oauth/v2/keys").await;
    assert_eq!(status, 200);
    let mut kids: Vec<String> = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|key| key["kid"].as_str().expect("kid").to_owned())
        .collect();
    kids.sort();
    assert!(!kids.is_empty(), "a signing key is published: {jwks}");
    kids
}

/// The backup as README says to take it, while the server runs.
fn take_backup(db: &FreshDb, to: &std::path::Path) {
    let output = match &db.url {
        None => Command::new(env!("CARGO_BIN_EXE_keymint"))
            .args(["backup", to.to_str().expect("utf-8")])
            .env("KEYMINT_DATA_DIR", db.data_dir())
            .env_remove("KEYMINT_DATABASE_URL")
            .output(),
        Some(url) => Command::new("pg_dump")
            .args(["--format=custom", "--file", to.to_str().expect("utf-8"), "--dbname", url])
            .output(),
    }
    .expect("run the backup");
    let log = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "backup failed: {log}");
    if db.url.is_none() {
        assert!(log.contains("backed up"), "the command says what it copied: {log}");
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(to).expect("backup").permissions());
        assert_eq!(mode & 0o777, 0o600, "the backup is private: it holds secret hashes and sealed keys");
    }
}

/// The restore as README says: on SQLite the file (and the master key beside it) into a new data directory, on
/// PostgreSQL pg_restore into a new database.
async fn restore(db: &Db, old: &FreshDb, backup: &std::path::Path) -> FreshDb {
    let new = FreshDb::create(db).await;
    let status = match &new.url {
        None => {
            std::fs::copy(backup, new.data_dir().join("keymint.db")).expect("copy the backup into place");
            std::fs::copy(old.data_dir().join("master.key"), new.data_dir().join("master.key"))
                .expect("restore the master key");
            return new;
        }
        Some(url) => Command::new("pg_restore")
            .args(["--no-owner", "--exit-on-error", "--dbname", url, backup.to_str().expect("utf-8")])
            .status(),
    };
    assert!(status.expect("run pg_restore").success(), "pg_restore succeeded");
    new
}

#[tokio::test]
async fn a_backup_never_overwrites_and_postgres_is_pointed_to_pg_dump() {
    let dir = tempfile::tempdir().expect("temp dir");
    let run = |args: &[&str], url: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_keymint"));
        command.args(args).env("KEYMINT_DATA_DIR", dir.path()).env_remove("KEYMINT_DATABASE_URL");
        if let Some(url) = url {
            command.env("KEYMINT_DATABASE_URL", url);
        }
        let output = command.output().expect("run keymint");
        (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned())
    };
    let copy = dir.path().join("copy.db");
    let (ok, log) = run(&["backup", copy.to_str().expect("utf-8")], None);
    assert!(!ok && log.contains("no database at"), "nothing to back up yet: {log}");
    assert!(!copy.exists(), "a failed backup leaves no file behind");

    assert!(run(&["migrate"], None).0, "a database to back up");
    let taken = dir.path().join("taken.db");
    std::fs::write(&taken, b"someone else's file").expect("write");
    let (ok, log) = run(&["backup", taken.to_str().expect("utf-8")], None);
    assert!(!ok && log.contains("not overwriting"), "{log}");
    assert_eq!(std::fs::read(&taken).expect("read"), b"someone else's file", "left as it was");

    // A database named by a sqlite: URL is found the same way.
    let url = format!("sqlite:{}", dir.path().join("elsewhere.db").display());
    assert!(run(&["migrate"], Some(&url)).0, "a database at the URL");
    let copy = dir.path().join("elsewhere-copy.db");
    let (ok, log) = run(&["backup", copy.to_str().expect("utf-8")], Some(&url));
    assert!(ok && log.contains("backed up") && copy.exists(), "{log}");

    let pg = dir.path().join("pg.db");
    let (ok, log) = run(&["backup", pg.to_str().expect("utf-8")], Some("postgres://127.0.0.1:1/none"));
    assert!(!ok && log.contains("pg_dump"), "PostgreSQL is backed up with its own tools: {log}");
    assert!(!pg.exists(), "and no file is made for it");
}
