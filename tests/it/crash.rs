//! kill -9 under write load: every write keymint acknowledged is there after a restart, no aggregate has a gap
//! in its sequence, and the read models equal a rebuild from the events.

use std::{
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use keymint::api::pb::keymint::{
    apikeys::v1::{GetApiKeyRequest, api_key_service_client::ApiKeyServiceClient},
    management::v1::{
        AddProjectRequest, GetProjectByIdRequest, ListProjectsRequest,
        management_service_client::ManagementServiceClient,
    },
};
use sqlx::Connection;
use tonic::transport::Channel;

use crate::helpers::{Db, FreshDb, api_key_request, on_both_databases, with_token};

/// The keymint binary, started as an operator would, on a free port.
pub(crate) struct Process {
    child: Child,
    url: String,
}

/// The keymint binary's command line for `db` on a free port (returned too): small key pools, warnings only.
pub(crate) fn keymint_command(db: &FreshDb, token: &str) -> (Command, u16) {
    let port =
        std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_keymint"));
    command
        .arg("serve")
        .env("KEYMINT_LISTEN", format!("127.0.0.1:{port}"))
        .env("KEYMINT_DATA_DIR", db.data_dir())
        .env("KEYMINT_ADMIN_TOKEN", token)
        .env("KEYMINT_KEY_POOL_SIZE", "1")
        .env("KEYMINT_KEY_POOL_WORKERS", "1")
        .env("KEYMINT_LOG", "warn")
        .env_remove("KEYMINT_DATABASE_URL")
        .stdout(Stdio::null());
    if let Some(url) = &db.url {
        // PostgreSQL needs the master key that seals the signing keys (SQLite makes its own).
        command.env("KEYMINT_DATABASE_URL", url).env("KEYMINT_MASTER_KEY", crate::helpers::TEST_MASTER_KEY);
    }
    (command, port)
}

impl Process {
    pub(crate) async fn start(db: &FreshDb, token: &str) -> Process {
        let (mut command, port) = keymint_command(db, token);
        let child = command.spawn().expect("start keymint");
        let process = Process { child, url: format!("http://127.0.0.1:{port}") };
        let started = Instant::now();
        loop {
            if let Ok(channel) = process.channel().await
                && ManagementServiceClient::new(channel)
                    .list_projects(with_token(ListProjectsRequest::default(), token))
                    .await
                    .is_ok()
            {
                return process;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "keymint answers within 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    pub(crate) async fn channel(&self) -> Result<Channel, tonic::transport::Error> {
        Channel::from_shared(self.url.clone()).expect("url").connect().await
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

on_both_databases!(acknowledged_writes_survive_kill_9, kill_9);
async fn kill_9(db: Db) {
    let mut fresh = FreshDb::create(&db).await;
    let token = keymint::crypto::secret::new_secret("km_admin_").expect("rng").to_string();
    let mut process = Process::start(&fresh, &token).await;
    let projects: Arc<Mutex<Vec<String>>> = Arc::default();
    let api_keys: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut writers = Vec::new();
    for writer in 0..4 {
        let channel = process.channel().await.expect("connect");
        let (projects, api_keys, token) = (projects.clone(), api_keys.clone(), token.clone());
        writers.push(tokio::spawn(async move {
            let mut management = ManagementServiceClient::new(channel.clone());
            let mut keys = ApiKeyServiceClient::new(channel);
            for i in 0.. {
                let name = format!("w{writer}-{i}");
                let Ok(added) = management.add_project(with_token(AddProjectRequest { name }, &token)).await
                else {
                    return;
                };
                projects.lock().expect("lock").push(added.into_inner().id);
                let request =
                    with_token(api_key_request(&format!("w{writer}-{i}"), &["invoices:read"]), &token);
                let Ok(created) = keys.create_api_key(request).await else { return };
                api_keys.lock().expect("lock").push(created.into_inner().api_key.expect("key").id);
            }
        }));
    }
    // Killed once the load has written a few dozen objects, however slow the machine (a fixed 1.5 s wrote only
    // 9 projects on PostgreSQL with the rest of the suite running beside it).
    let loading = Instant::now();
    while projects.lock().expect("lock").len() < 40 && loading.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    process.child.kill().expect("kill -9");
    process.child.wait().expect("killed");
    for writer in writers {
        writer.await.expect("writer");
    }
    let projects = std::mem::take(&mut *projects.lock().expect("lock"));
    let api_keys = std::mem::take(&mut *api_keys.lock().expect("lock"));
    assert!(projects.len() > 10, "the load wrote something before the kill: {}", projects.len());

    let process = Process::start(&fresh, &token).await;
    let channel = process.channel().await.expect("connect");
    let mut management = ManagementServiceClient::new(channel.clone());
    for id in &projects {
        management
            .get_project_by_id(with_token(GetProjectByIdRequest { id: id.clone() }, &token))
            .await
            .unwrap_or_else(|e| panic!("acknowledged project {id} lost: {e:?}"));
    }
    let mut keys = ApiKeyServiceClient::new(channel);
    for id in &api_keys {
        keys.get_api_key(with_token(GetApiKeyRequest { id: id.clone() }, &token))
            .await
            .unwrap_or_else(|e| panic!("acknowledged API key {id} lost: {e:?}"));
    }
    eprintln!(
        "kill -9: {} projects and {} API keys acknowledged, all found after the restart",
        projects.len(),
        api_keys.len()
    );
    drop(process);

    assert_eq!(aggregates_with_gaps(&fresh).await, 0, "no aggregate has a gap in its sequence");
    let store = fresh.open_store().await;
    let before = store.projection_snapshot().await.expect("snapshot");
    store.rebuild_projections().await.expect("rebuild");
    assert_eq!(store.projection_snapshot().await.expect("snapshot"), before, "read models equal a rebuild");
    fresh.drop_database().await;
}

async fn aggregates_with_gaps(db: &FreshDb) -> i64 {
    const GAPS: &str = "SELECT COUNT(*) FROM (SELECT aggregate_type, aggregate_id FROM events \
        GROUP BY aggregate_type, aggregate_id HAVING MAX(sequence) <> COUNT(*) OR MIN(sequence) <> 1) AS gaps";
    match &db.url {
        Some(url) => {
            let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
            sqlx::query_scalar(GAPS).fetch_one(&mut conn).await.expect("gaps")
        }
        None => {
            let url = format!("sqlite:{}", db.data_dir().join("keymint.db").display());
            let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("open");
            sqlx::query_scalar(GAPS).fetch_one(&mut conn).await.expect("gaps")
        }
    }
}
