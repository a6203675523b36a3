//! Starting a real keymint on a fresh database, and clients to call it.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use keymint::{
    api::pb::keymint::{
        admin::v1::admin_service_client::AdminServiceClient,
        apikeys::v1::{CreateApiKeyRequest, Environment, api_key_service_client::ApiKeyServiceClient},
        management::v1::{
            AddApiAppRequest, AddAppKeyRequest, AddProjectRequest, KeyType,
            management_service_client::ManagementServiceClient,
        },
    },
    app::{self, Running},
    config::{Config, LogFormat},
    crypto::{keygen::RsaBits, secret::new_secret},
    store::{self, EventStore},
};
use sqlx::{Connection, Row};
use tempfile::TempDir;
use tonic::{Request, metadata::MetadataValue, transport::Channel};

/// Runs an async test body once per database: `on_both_databases!(name, body_fn)` defines `name::sqlite` and
/// `name::postgres`. The PostgreSQL variant is ignored, with the reason, unless asked for (`cargo test --
/// --include-ignored`, as `.ci/run` does): then it needs KEYMINT_TEST_POSTGRES_URL and fails without it.
/// `on_both_databases!(name, body_fn, ignore = "needs …")` ignores both variants: for bodies that need an
/// outside tool.
macro_rules! on_both_databases {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$body($crate::helpers::Db::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = "needs PostgreSQL: set KEYMINT_TEST_POSTGRES_URL (source .ci/tools.sh)"]
            async fn postgres() {
                super::$body($crate::helpers::Db::required_postgres()).await;
            }
        }
    };
    ($name:ident, $body:ident, ignore = $reason:literal) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = $reason]
            async fn sqlite() {
                super::$body($crate::helpers::Db::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = $reason]
            async fn postgres() {
                super::$body($crate::helpers::Db::required_postgres()).await;
            }
        }
    };
}
pub(crate) use on_both_databases;

#[derive(Debug, Clone)]
pub enum Db {
    Sqlite,
    /// The server the URL points at; each test creates its own database there.
    Postgres(String),
}

impl Db {
    /// The PostgreSQL server of KEYMINT_TEST_POSTGRES_URL. Tests that call this are `#[ignore]`d, so they run
    /// only when asked for; asked for without the variable, they fail (a skipped test must not pass).
    pub fn required_postgres() -> Db {
        match std::env::var("KEYMINT_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => Db::Postgres(url),
            _ => panic!(
                "KEYMINT_TEST_POSTGRES_URL is not set: this test needs a PostgreSQL server. Set it to the URL of \
                 one whose user may CREATE DATABASE (e.g. postgres://postgres@127.0.0.1:5432/postgres), or \
                 `source .ci/tools.sh`, which sets it; or leave out the ignored tests (no --include-ignored)"
            ),
        }
    }
}

/// A fresh, empty database: a temp directory for SQLite, a new database for PostgreSQL.
pub struct FreshDb {
    pub dir: TempDir,
    pub url: Option<String>,
    cleanup: Option<(String, String)>,
}

impl FreshDb {
    pub async fn create(db: &Db) -> FreshDb {
        let dir = tempfile::tempdir().expect("temp dir");
        match db {
            Db::Sqlite => FreshDb { dir, url: None, cleanup: None },
            Db::Postgres(server) => {
                let name = format!(
                    "keymint_it_{}",
                    new_secret("").expect("rng").to_lowercase().replace(['-', '_'], "")
                );
                let name: String = name.chars().take(40).collect();
                let admin =
                    sqlx::PgPool::connect(server).await.expect("connect to KEYMINT_TEST_POSTGRES_URL");
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&admin)
                    .await
                    .expect("create test database");
                admin.close().await;
                let url = with_database(server, &name);
                FreshDb { dir, url: Some(url), cleanup: Some((server.clone(), name)) }
            }
        }
    }

    /// A data directory of its own on a database another FreshDb made (and drops): as a second process has.
    pub fn sharing(url: Option<String>) -> FreshDb {
        FreshDb { dir: tempfile::tempdir().expect("temp dir"), url, cleanup: None }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Opens a second handle on the same store, as another process would.
    pub async fn open_store(&self) -> Arc<dyn EventStore> {
        store::open(self.url.as_deref(), self.dir.path()).await.expect("open store")
    }

    /// Drops a PostgreSQL test database (SQLite's directory goes with the TempDir).
    pub async fn drop_database(&mut self) {
        if let Some((server, name)) = self.cleanup.take()
            && let Ok(admin) = sqlx::PgPool::connect(&server).await
        {
            let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
            let _ = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&admin).await;
            admin.close().await;
        }
    }
}

fn with_database(server_url: &str, database: &str) -> String {
    let (base, query) = match server_url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (server_url, String::new()),
    };
    let authority_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[authority_end..].find('/') {
        Some(slash) => &base[..authority_end + slash],
        None => base,
    };
    format!("{base}/{database}{query}")
}

/// A keymint serving on 127.0.0.1 at a free port, with a known instance-admin token.
pub struct TestServer {
    pub running: Option<Running>,
    pub addr: SocketAddr,
    pub token: String,
    pub db: FreshDb,
}

/// The master key of every test server on PostgreSQL (32 bytes, base64).
pub const TEST_MASTER_KEY: &str = "a2V5bWludC10ZXN0LW1hc3Rlci1rZXktMzItYnl0ZXM=";

pub fn config(db: &FreshDb, admin_token: Option<String>) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: db.data_dir(),
        database_url: db.url.clone(),
        log_format: LogFormat::Pretty,
        node_id: None,
        max_message_bytes: 1024 * 1024,
        request_timeout_secs: 30,
        key_sizes: vec![RsaBits::Rsa2048],
        default_key_size: RsaBits::Rsa2048,
        // Small pools: many test servers run at once on two cores.
        key_pool_size: 2,
        key_pool_workers: Some(1),
        usage_flush_ms: 2_000,
        cache_capacity: keymint::service::DEFAULT_CACHE_CAPACITY,
        admin_token,
        issuer: None,
        access_token_ttl: std::time::Duration::from_secs(3600),
        signing_key_rotation: std::time::Duration::from_secs(30 * 86_400),
        // SQLite generates its own into the data directory; processes sharing PostgreSQL need the same one.
        master_key: db.url.as_ref().map(|_| TEST_MASTER_KEY.to_owned()),
        trusted_proxies: Vec::new(),
        metrics: true,
        shutdown_drain: std::time::Duration::ZERO,
        tls: Default::default(),
    }
}

impl TestServer {
    pub async fn start(db: Db) -> TestServer {
        Self::start_with(db, |_| {}).await
    }

    /// Starts with the test configuration changed by `adjust` first (e.g. trusted proxies).
    pub async fn start_with(db: Db, adjust: impl FnOnce(&mut Config)) -> TestServer {
        let db = FreshDb::create(&db).await;
        let token = new_secret("km_admin_").expect("rng").to_string();
        let mut config = config(&db, Some(token.clone()));
        adjust(&mut config);
        let running = app::start(&config).await.expect("start keymint");
        TestServer { addr: running.addr, running: Some(running), token, db }
    }

    /// A second keymint process on the same database, as a load balancer would run beside the first. Stopping
    /// it leaves the database to the first.
    pub async fn start_beside(&self) -> TestServer {
        let db = FreshDb::sharing(self.db.url.clone());
        let running = app::start(&config(&db, Some(self.token.clone()))).await.expect("start second keymint");
        TestServer { addr: running.addr, running: Some(running), token: self.token.clone(), db }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url()).expect("url").connect().await.expect("connect")
    }

    pub async fn management(&self) -> ManagementServiceClient<Channel> {
        ManagementServiceClient::new(self.channel().await)
    }

    pub async fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.channel().await)
    }

    pub async fn api_keys(&self) -> ApiKeyServiceClient<Channel> {
        ApiKeyServiceClient::new(self.channel().await)
    }

    /// Issues a LIVE API key with these scopes in the admin's organization; returns (key ID, secret).
    pub async fn api_key(&self, title: &str, scopes: &[&str]) -> (String, String) {
        let created = self
            .api_keys()
            .await
            .create_api_key(self.req(api_key_request(title, scopes)))
            .await
            .expect("create API key")
            .into_inner();
        (created.api_key.expect("record").id, created.secret)
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        self.running.as_ref().expect("running").services.store()
    }

    /// A request with the admin token.
    pub fn req<T>(&self, message: T) -> Request<T> {
        with_token(message, &self.token)
    }

    /// A request with the admin token, acting in `org_id`.
    pub fn req_in<T>(&self, org_id: &str, message: T) -> Request<T> {
        let mut request = self.req(message);
        request.metadata_mut().insert("x-org-id", MetadataValue::try_from(org_id).expect("org header"));
        request
    }

    /// Creates a project and an API app in the admin's own organization; returns (project_id, app_id, client_id).
    pub async fn project_and_app(&self, project: &str) -> (String, String, String) {
        let mut client = self.management().await;
        let project_id = client
            .add_project(self.req(AddProjectRequest { name: project.into() }))
            .await
            .expect("add project")
            .into_inner()
            .id;
        let app = client
            .add_api_app(self.req(AddApiAppRequest {
                project_id: project_id.clone(),
                name: "api".into(),
                ..Default::default()
            }))
            .await
            .expect("add app")
            .into_inner();
        (project_id, app.app_id, app.client_id)
    }

    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await.expect("graceful shutdown");
        }
        self.db.drop_database().await;
    }
}

/// An AddAppKey request for a JSON key of the server's default size that does not expire.
pub fn key_request(project_id: &str, app_id: &str) -> AddAppKeyRequest {
    AddAppKeyRequest {
        project_id: project_id.into(),
        app_id: app_id.into(),
        r#type: KeyType::Json as i32,
        ..AddAppKeyRequest::default()
    }
}

/// A CreateApiKey request for a LIVE key with these scopes and nothing else set.
pub fn api_key_request(title: &str, scopes: &[&str]) -> CreateApiKeyRequest {
    CreateApiKeyRequest {
        title: title.into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        environment: Environment::Live as i32,
        ..CreateApiKeyRequest::default()
    }
}

pub fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    let bearer = MetadataValue::try_from(format!("Bearer {token}")).expect("token header");
    request.metadata_mut().insert("authorization", bearer);
    request
}

/// The code, ErrorInfo reason and BadRequest fields of a failed call.
pub fn error_of(status: &tonic::Status) -> (tonic::Code, String, Vec<String>) {
    use tonic_types::StatusExt;
    let details = status.get_error_details();
    let reason = details.error_info().map(|info| info.reason.clone()).unwrap_or_default();
    let fields = details
        .bad_request()
        .map(|bad| bad.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default();
    (status.code(), reason, fields)
}

/// Every table with its rows as text, read straight from the database: for scans that no secret was stored.
pub async fn dump_every_table(url: Option<&str>, data_dir: &std::path::Path) -> Vec<(String, String)> {
    let mut dump = Vec::new();
    match url {
        Some(url) => {
            let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
            )
            .fetch_all(&mut conn)
            .await
            .expect("tables");
            for table in tables {
                let rows = format!("SELECT t::text FROM {table} t");
                let rows: Vec<String> =
                    sqlx::query_scalar(sqlx::AssertSqlSafe(rows)).fetch_all(&mut conn).await.expect("rows");
                dump.push((table, rows.join("\n")));
            }
        }
        None => {
            let path = data_dir.join("keymint.db");
            let mut conn =
                sqlx::SqliteConnection::connect(&format!("sqlite:{}", path.display())).await.expect("open");
            let tables: Vec<String> =
                sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
                    .fetch_all(&mut conn)
                    .await
                    .expect("tables");
            for table in tables {
                let columns: Vec<String> =
                    sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA table_info({table})")))
                        .fetch_all(&mut conn)
                        .await
                        .expect("columns")
                        .iter()
                        .map(|row| row.get::<String, _>("name"))
                        .collect();
                // A NULL would make the whole concatenation NULL and hide the row from the scan.
                let select = format!(
                    "SELECT {} FROM {table}",
                    columns
                        .iter()
                        .map(|c| format!("COALESCE(CAST({c} AS TEXT), '')"))
                        .collect::<Vec<_>>()
                        .join(" || '|' || ")
                );
                let rows: Vec<String> =
                    sqlx::query_scalar(sqlx::AssertSqlSafe(select)).fetch_all(&mut conn).await.expect("rows");
                dump.push((table, rows.join("\n")));
            }
        }
    }
    dump
}

/// The application key file (`keyDetails`), field for field: an unknown field fails the parse.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyFile {
    #[serde(rename = "type")]
    pub kind: String,
    pub key_id: String,
    pub key: String,
    pub app_id: String,
    pub client_id: String,
}

/// The claims of the JWTs the tests sign with application keys.
#[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: u64,
}

/// An outside tool a test drives (Python, Envoy, Chromium), named by the environment variable `var`. Tests that
/// call this are `#[ignore]`d; asked for (`--include-ignored`) without the variable, they fail and say what to
/// install: `.ci/tools.sh` installs every tool and sets every variable.
pub fn outside_tool(var: &str, what: &str) -> String {
    match std::env::var(var) {
        Ok(tool) if !tool.is_empty() => tool,
        _ => panic!(
            "{var} is not set: this test needs {what}. `source .ci/tools.sh` installs it and sets {var}; or leave \
             out the ignored tests (no --include-ignored)"
        ),
    }
}

/// What KEYMINT_TEST_PYTHON must have: one Python for every test that drives Python (`.ci/tools.sh` makes it).
pub const PYTHON_NEEDS: &str = "a Python with authlib, PyJWT[crypto], requests and grpcio installed (a venv's \
                                bin/python)";

/// buf from the project's npm packages, which `npm ci` installs (`.ci/tools.sh` does); a test that needs it
/// fails without it.
pub fn buf() -> PathBuf {
    let buf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("node_modules/.bin/buf");
    assert!(
        buf.exists(),
        "{} is missing: run `npm ci` in the repository (or `source .ci/tools.sh`)",
        buf.display()
    );
    buf
}
