//! The browser console (web/) in headless Chromium against a real keymint: the page is served from another
//! origin, so this also proves the gRPC-Web CORS settings a browser needs. Ignored unless asked for
//! (`--include-ignored`); then KEYMINT_TEST_CHROMIUM must name a Chromium and web/dist hold a build (`.ci/tools.sh`
//! installs Debian's chromium and builds the console).

use keymint::api::pb::keymint::{
    apikeys::v1::ListApiKeysRequest,
    management::v1::{ListAppKeysRequest, ListAppsRequest, ListProjectsRequest},
};
use serde::Deserialize;

use crate::{
    envoy::Envoy,
    helpers::{Db, TestServer},
};

/// What web/test/console.mjs created, from its `RESULT` line.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Created {
    project: String,
    app: String,
    key_id: String,
    app_id: String,
    api_key_title: String,
    api_key_last_four: String,
}

/// The Chromium KEYMINT_TEST_CHROMIUM names; the console must be built too.
fn chromium() -> String {
    let chromium = crate::helpers::outside_tool("KEYMINT_TEST_CHROMIUM", "Chromium (Debian's chromium)");
    assert!(
        std::path::Path::new(WEB).join("dist/index.html").exists(),
        "the console is not built: npm --prefix web ci && npm --prefix web run build (.ci/tools.sh does it)"
    );
    chromium
}

const WEB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/web");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium (KEYMINT_TEST_CHROMIUM) and a built web/: source .ci/tools.sh"]
async fn the_console_creates_projects_apps_and_keys_in_a_browser() {
    let chromium = chromium();
    let server = TestServer::start(Db::Sqlite).await;
    let created = run_console(&chromium, server.url(), &server).await;
    check_created(&server, &created).await;
    server.stop().await;
}

/// The same flow with the browser talking to Envoy's gRPC-Web filter (deploy/envoy/grpc-web.yaml), which talks
/// gRPC to keymint: CORS and error details as Envoy passes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium (KEYMINT_TEST_CHROMIUM), a built web/ and Envoy (KEYMINT_TEST_ENVOY): source .ci/tools.sh"]
async fn the_console_works_through_envoy() {
    let chromium = chromium();
    let envoy = crate::envoy::envoy_binary();
    let server = TestServer::start(Db::Sqlite).await;
    let proxy = Envoy::start(&envoy, "grpc-web.yaml", &crate::envoy::keymint_values(&server)).await;
    let created = run_console(&chromium, proxy.url(), &server).await;
    check_created(&server, &created).await;
    drop(proxy);
    server.stop().await;
}

/// Runs web/test/console.mjs against `url` with the server's admin token; what it says it created.
async fn run_console(chromium: &str, url: String, server: &TestServer) -> Created {
    let (chromium, token) = (chromium.to_owned(), server.token.clone());
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg(format!("{WEB}/test/console.mjs"))
            .arg(url)
            .arg(token)
            .env("KEYMINT_TEST_CHROMIUM", chromium)
            .output()
    })
    .await
    .expect("join")
    .expect("run node web/test/console.mjs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "web/test/console.mjs failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result = stdout.lines().find_map(|line| line.strip_prefix("RESULT ")).expect("a RESULT line");
    serde_json::from_str(result).expect("RESULT is JSON")
}

/// What the browser made is on the server, as the console said.
async fn check_created(server: &TestServer, created: &Created) {
    let mut management = server.management().await;
    let projects = management
        .list_projects(server.req(ListProjectsRequest { query: None }))
        .await
        .expect("list projects")
        .into_inner()
        .result;
    let project = projects.iter().find(|p| p.name == created.project).expect("the console's project");
    let apps = management
        .list_apps(server.req(ListAppsRequest { project_id: project.id.clone(), query: None }))
        .await
        .expect("list apps")
        .into_inner()
        .result;
    let app = apps.iter().find(|a| a.id == created.app_id).expect("the key file's app");
    assert_eq!((app.name.as_str(), app.allowed_scopes.len()), (created.app.as_str(), 2));
    let keys = management
        .list_app_keys(server.req(ListAppKeysRequest {
            project_id: project.id.clone(),
            app_id: app.id.clone(),
            ..Default::default()
        }))
        .await
        .expect("list keys")
        .into_inner()
        .result;
    assert_eq!(keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(), [created.key_id.as_str()]);
    let api_keys = server
        .api_keys()
        .await
        .list_api_keys(server.req(ListApiKeysRequest::default()))
        .await
        .expect("list API keys")
        .into_inner()
        .result;
    let api_key = api_keys.iter().find(|k| k.title == created.api_key_title).expect("the console's API key");
    assert_eq!(api_key.last_four, created.api_key_last_four);
}
