//! Starting on a fresh store: all or nothing, and files only their owner can read.

use std::path::Path;

use keymint::{api::pb::keymint::management::v1::ListProjectsRequest, app, service::access::AdminToken};

use crate::helpers::{Db, FreshDb, config, on_both_databases, with_token};

on_both_databases!(a_failed_first_start_leaves_nothing_half_made, failed_first_start);
async fn failed_first_start(db: Db) {
    let mut fresh = FreshDb::create(&db).await;
    // The database lives outside the data directory, so that only writing the token can fail.
    let database_url = fresh
        .url
        .clone()
        .unwrap_or_else(|| format!("sqlite:{}", fresh.dir.path().join("elsewhere.db").display()));
    let blocker = fresh.dir.path().join("a-file");
    std::fs::write(&blocker, b"not a directory").expect("write blocker");
    let mut broken = config(&fresh, None);
    broken.database_url = Some(database_url.clone());
    broken.data_dir = blocker.join("data");
    let failed = app::start(&broken).await.err().expect("the token cannot be written");
    assert!(failed.to_string().contains("data dir"), "the error names the cause: {failed}");
    let store = keymint::store::open(Some(&database_url), fresh.dir.path()).await.expect("open");
    assert!(store.is_empty().await.expect("is_empty"), "nothing was written to the store");

    // The next start, with a usable directory, sets everything up, and the token in the file works.
    let mut fixed = config(&fresh, None);
    fixed.database_url = Some(database_url);
    fixed.data_dir = fresh.dir.path().join("data");
    let running = app::start(&fixed).await.expect("start");
    let AdminToken::Written(path) = &running.admin_token else { panic!("a token was written") };
    let token = std::fs::read_to_string(path).expect("token file");
    let leftovers: Vec<_> = std::fs::read_dir(&fixed.data_dir)
        .expect("data dir")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "no temporary token file is left: {leftovers:?}");
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", running.addr))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    keymint::api::pb::keymint::management::v1::management_service_client::ManagementServiceClient::new(
        channel,
    )
    .list_projects(with_token(ListProjectsRequest::default(), token.trim()))
    .await
    .expect("the written token is the instance admin");
    running.shutdown().await.expect("shutdown");
    assert!(store.credential_count().await.expect("count") == 1, "one credential, from the second start");
    fresh.drop_database().await;
}

on_both_databases!(a_start_on_a_busy_port_writes_nothing, busy_port);
async fn busy_port(db: Db) {
    let mut fresh = FreshDb::create(&db).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let data_dir = fresh.dir.path().join("data");
    // The real binary, as an operator starts it.
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_keymint"));
    command.env_clear().arg("serve").arg("--listen").arg(addr.to_string()).arg("--data-dir").arg(&data_dir);
    if let Some(url) = &fresh.url {
        command.args(["--database-url", url, "--master-key", crate::helpers::TEST_MASTER_KEY]);
    }
    let output = command.output().expect("run keymint");
    let log = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success());
    assert!(log.contains("cannot listen on") && log.contains(&addr.to_string()), "{log}");
    assert!(!data_dir.exists(), "no data directory, master.key or admin.token: {:?}", listing(&data_dir));
    assert_eq!(tables(fresh.url.as_deref()).await, 0, "nothing was written to the database");
    // The same through the library.
    let mut settings = config(&fresh, None);
    settings.listen = addr;
    settings.data_dir = data_dir.clone();
    let failed = app::start(&settings).await.err().expect("the port is taken");
    assert!(failed.to_string().contains("cannot listen"), "{failed}");
    assert!(!data_dir.exists());
    assert_eq!(tables(fresh.url.as_deref()).await, 0);
    drop(taken);
    fresh.drop_database().await;
}

/// PostgreSQL without a master key: refused before the organization, the admin token or any table is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set KEYMINT_TEST_POSTGRES_URL=postgres://… (source .ci/tools.sh)"]
async fn a_postgres_start_without_a_master_key_writes_nothing() {
    let mut fresh = FreshDb::create(&crate::helpers::Db::required_postgres()).await;
    let data_dir = fresh.dir.path().join("data");
    let mut settings = config(&fresh, None);
    settings.data_dir = data_dir.clone();
    settings.master_key = None;
    let failed = app::start(&settings).await.err().expect("no master key");
    assert!(failed.to_string().contains("KEYMINT_MASTER_KEY"), "{failed}");
    assert!(!data_dir.exists(), "no admin.token: {:?}", listing(&data_dir));
    assert_eq!(tables(fresh.url.as_deref()).await, 0, "no organization, nothing at all, was written");
    fresh.drop_database().await;
}

/// A database URL naming a database the server does not have: said plainly, with how to create it.
#[test]
#[ignore = "needs PostgreSQL: set KEYMINT_TEST_POSTGRES_URL (source .ci/tools.sh)"]
fn a_missing_postgres_database_is_said_plainly() {
    let crate::helpers::Db::Postgres(server) = crate::helpers::Db::required_postgres() else {
        unreachable!()
    };
    let (base, _) = server.rsplit_once('/').expect("a URL with a database");
    let dir = tempfile::tempdir().expect("dir");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_keymint"))
        .env_clear()
        .args(["serve", "--listen", "127.0.0.1:0", "--master-key", crate::helpers::TEST_MASTER_KEY])
        .arg("--database-url")
        .arg(format!("{base}/keymint_no_such_database"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .expect("run keymint");
    let log = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success());
    assert!(log.contains("no database named \"keymint_no_such_database\""), "{log}");
    assert!(log.contains("createdb") && log.contains("--database-url"), "how to fix it: {log}");
    assert!(!log.contains("at line"), "no source locations: {log}");
}

fn listing(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
        .unwrap_or_default()
}

/// The tables in a PostgreSQL database (0 for SQLite, whose tables would be in the data directory).
async fn tables(url: Option<&str>) -> i64 {
    use sqlx::Connection;
    let Some(url) = url else { return 0 };
    let mut connection = sqlx::PgConnection::connect(url).await.expect("connect");
    sqlx::query_scalar("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
        .fetch_one(&mut connection)
        .await
        .expect("count tables")
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).map(|m| m.permissions().mode() & 0o777).expect("metadata")
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_and_database_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let fresh = FreshDb::create(&Db::Sqlite).await;
    let data = fresh.dir.path().join("data");
    // Created private on a first start.
    let mut settings = config(&fresh, None);
    settings.data_dir = data.clone();
    let running = app::start(&settings).await.expect("start");
    let files = ["keymint.db", "keymint.db-wal", "keymint.db-shm", "admin.token"];
    assert_eq!(mode(&data), 0o700);
    for file in files {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    running.shutdown().await.expect("shutdown");

    // Found wider (as an earlier version left them): narrowed on the next start.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(data.join("keymint.db"), std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let running = app::start(&settings).await.expect("start again");
    assert_eq!(mode(&data), 0o700);
    for file in ["keymint.db", "keymint.db-wal", "keymint.db-shm"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    running.shutdown().await.expect("shutdown");
}
