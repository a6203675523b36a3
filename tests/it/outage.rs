//! The database going away and coming back, as a user of a shared PostgreSQL sees it: a TCP proxy the test
//! controls sits between every keymint process and the database and is cut and restored at will.
//! No revoked key verifies anywhere 1 s after its DeleteApiKey returned; while the database is unreachable,
//! store-bound calls fail fast with UNAVAILABLE, memory answers what it can, and health says NOT_SERVING.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use keymint::{
    api::pb::keymint::{
        apikeys::v1::{DeleteApiKeyRequest, VerifyApiKeyRequest, VerifyCode},
        management::v1::{GetAppKeyRequest, ListProjectsRequest},
    },
    app,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Mutex, watch},
};
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::helpers::{Db, FreshDb, TestServer, config, error_of, key_request};

/// A TCP proxy to the database that can drop every connection and refuse new ones, like a restart would. After
/// a restore it lets new connections through after uneven delays (0 to 900 ms), as a database that is starting
/// up does: so some connections of a process come back before others, and its change feed's may come last.
struct Proxy {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let (cut, _) = watch::channel(false);
        let cut_state = cut.clone();
        tokio::spawn(async move {
            let (mut accepted, mut restored) = (0_u64, false);
            while let Ok((mut client, _)) = listener.accept().await {
                let mut cut = cut_state.subscribe();
                if *cut.borrow() {
                    restored = true;
                    continue; // Refused: the socket is dropped at once.
                }
                accepted += 1;
                let delay =
                    if restored { Duration::from_millis(accepted * 337 % 900) } else { Duration::ZERO };
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let Ok(mut server) = TcpStream::connect(target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Proxy { addr, cut }
    }

    fn cut(&self) {
        self.cut.send_replace(true);
    }

    fn restore(&self) {
        self.cut.send_replace(false);
    }

    /// The database URL with the proxy in place of the server's address.
    fn url(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").expect("scheme");
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let user = authority.rsplit_once('@').map(|(user, _)| format!("{user}@")).unwrap_or_default();
        format!("{scheme}://{user}{}/{path}", self.addr)
    }
}

/// The database server's address from a postgres:// URL.
async fn database_addr(url: &str) -> SocketAddr {
    let rest = url.split_once("://").expect("scheme").1;
    let authority = rest.split('/').next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let host_port = if host_port.contains(':') { host_port.to_owned() } else { format!("{host_port}:5432") };
    tokio::net::lookup_host(host_port).await.expect("resolve").next().expect("an address")
}

/// Two keymint processes on one PostgreSQL database, both reaching it through the proxy.
async fn two_processes_behind(db: &FreshDb) -> (Proxy, TestServer, TestServer) {
    let url = db.url.clone().expect("postgres");
    let proxy = Proxy::start(database_addr(&url).await).await;
    let proxied = FreshDb::sharing(Some(proxy.url(&url)));
    let token = keymint::crypto::secret::new_secret("km_admin_").expect("rng").to_string();
    let running = app::start(&config(&proxied, Some(token.clone()))).await.expect("start A");
    let a = TestServer { addr: running.addr, running: Some(running), token, db: proxied };
    let b = a.start_beside().await;
    (proxy, a, b)
}

/// Stops a local PostgreSQL cluster named `<version>/<name>` (e.g. `15/main`) with pg_ctlcluster, waits
/// KEYMINT_TEST_POSTGRES_DOWN_MS (default 0), and starts it again.
fn restart_postgres(cluster: &str) {
    let (version, name) = cluster.split_once('/').expect("KEYMINT_TEST_RESTART_POSTGRES is <version>/<name>");
    let down_ms =
        std::env::var("KEYMINT_TEST_POSTGRES_DOWN_MS").ok().and_then(|ms| ms.parse().ok()).unwrap_or(0);
    for (action, pause) in [("stop", down_ms), ("start", 0)] {
        let status = std::process::Command::new("pg_ctlcluster")
            .args(["--skip-systemctl-redirect", version, name, action])
            .status()
            .expect("pg_ctlcluster");
        assert!(status.success(), "PostgreSQL {action}");
        std::thread::sleep(Duration::from_millis(pause));
    }
}

fn verify(secret: &str) -> VerifyApiKeyRequest {
    VerifyApiKeyRequest { secret: secret.into(), ..VerifyApiKeyRequest::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set KEYMINT_TEST_POSTGRES_URL (source .ci/tools.sh)"]
async fn revocations_after_a_database_restart_reach_every_process() {
    let db = Db::required_postgres();
    let mut fresh = FreshDb::create(&db).await;
    let (proxy, a, b) = two_processes_behind(&fresh).await;
    let mut keys = Vec::new();
    for i in 0..40 {
        keys.push(a.api_key(&format!("k{i}"), &["invoices:read"]).await);
    }
    let mut on_b = b.api_keys().await;
    for (_, secret) in &keys {
        let answer = on_b.verify_api_key(b.req(verify(secret))).await.expect("verify on B").into_inner();
        assert_eq!(answer.code(), VerifyCode::Valid, "cached on B before the restart");
    }

    match std::env::var("KEYMINT_TEST_RESTART_POSTGRES") {
        // The real thing, for a machine whose PostgreSQL the test may restart (nothing else may be using it).
        Ok(cluster) if !cluster.is_empty() => restart_postgres(&cluster),
        _ => {
            proxy.cut();
            tokio::time::sleep(Duration::from_millis(1500)).await;
            proxy.restore();
        }
    }

    // B verifies every key over and over while A deletes them, from the moment the database is back.
    let deleted: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let (stop, stopped) = watch::channel(false);
    let verifier = {
        let (deleted, secrets) = (deleted.clone(), keys.clone());
        let (b_token, b_channel) = (b.token.clone(), b.channel().await);
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let mut client =
                keymint::api::pb::keymint::apikeys::v1::api_key_service_client::ApiKeyServiceClient::new(
                    b_channel,
                );
            let (mut late_valid, mut checked) = (Vec::new(), 0_u32);
            while !*stopped.borrow_and_update() {
                for (id, secret) in &secrets {
                    let started = Instant::now();
                    let answer =
                        client.verify_api_key(crate::helpers::with_token(verify(secret), &b_token)).await;
                    let Some(deleted_at) = deleted.lock().await.get(id).copied() else { continue };
                    if started >= deleted_at + Duration::from_secs(1) {
                        checked += 1;
                        if let Ok(answer) = answer
                            && answer.get_ref().code() == VerifyCode::Valid
                        {
                            late_valid.push(id.clone());
                        }
                    }
                }
            }
            (late_valid, checked)
        })
    };
    let mut on_a = a.api_keys().await;
    let back = Instant::now();
    for (id, _) in &keys {
        loop {
            match on_a.delete_api_key(a.req(DeleteApiKeyRequest { id: id.clone() })).await {
                Ok(_) => break,
                Err(status) if status.code() == Code::Unavailable => {
                    assert!(back.elapsed() < Duration::from_secs(5), "A is back within 5 s: {status:?}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(status) => panic!("delete: {status:?}"),
            }
        }
        deleted.lock().await.insert(id.clone(), Instant::now());
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.send_replace(true);
    let (late_valid, checked) = verifier.await.expect("verifier");
    eprintln!(
        "verifies on B at least 1 s after the delete returned: {checked}, VALID among them: {}",
        late_valid.len()
    );
    assert!(checked > 0, "the verifier ran after the deletes");
    assert!(late_valid.is_empty(), "revoked keys still VALID on B: {late_valid:?}");
    for (_, secret) in &keys {
        let answer = on_b.verify_api_key(b.req(verify(secret))).await.expect("verify").into_inner();
        assert_eq!(answer.code(), VerifyCode::Revoked);
    }
    b.stop().await;
    a.stop().await;
    fresh.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set KEYMINT_TEST_POSTGRES_URL (source .ci/tools.sh)"]
async fn an_outage_fails_fast_memory_answers_and_health_follows() {
    let db = Db::required_postgres();
    let mut fresh = FreshDb::create(&db).await;
    let (proxy, a, b) = two_processes_behind(&fresh).await;
    b.stop().await;
    let (_, secret) = a.api_key("known", &["invoices:read"]).await;
    let (project_id, app_id, _) = a.project_and_app("outage").await;
    let mut management = a.management().await;
    let key_id =
        management.add_app_key(a.req(key_request(&project_id, &app_id))).await.expect("key").into_inner().id;
    let get_key = || GetAppKeyRequest {
        project_id: project_id.clone(),
        app_id: app_id.clone(),
        key_id: key_id.clone(),
        ..Default::default()
    };
    // The change feed echoes the AddAppKey a moment after it commits, and a read that overlaps the echo is not
    // cached (it may have read what the change replaced): read again once the echo is surely in.
    management.get_app_key(a.req(get_key())).await.expect("read once");
    tokio::time::sleep(Duration::from_millis(500)).await;
    management.get_app_key(a.req(get_key())).await.expect("read again: cached");
    let mut api_keys = a.api_keys().await;
    assert_eq!(
        api_keys.verify_api_key(a.req(verify(&secret))).await.expect("verify").into_inner().code(),
        VerifyCode::Valid
    );
    let mut health = HealthClient::new(a.channel().await);
    let status = |service: &str| HealthCheckRequest { service: service.into() };
    const MANAGEMENT: &str = "keymint.management.v1.ManagementService";

    proxy.cut();
    // The first calls find out; from then on, every store-bound call fails fast.
    let cut_at = Instant::now();
    loop {
        let refused =
            management.list_projects(a.req(ListProjectsRequest::default())).await.expect_err("down");
        assert_eq!(error_of(&refused).0, Code::Unavailable, "{refused:?}");
        assert_eq!(error_of(&refused).1, "STORE_UNAVAILABLE");
        let started = Instant::now();
        let again = management.list_projects(a.req(ListProjectsRequest::default())).await.expect_err("down");
        if started.elapsed() < Duration::from_millis(100) && again.code() == Code::Unavailable {
            break;
        }
        assert!(cut_at.elapsed() < Duration::from_secs(3), "fails fast within 3 s of the cut");
    }
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let started = Instant::now();
        let refused =
            management.list_projects(a.req(ListProjectsRequest::default())).await.expect_err("down");
        slowest = slowest.max(started.elapsed());
        assert_eq!(error_of(&refused).1, "STORE_UNAVAILABLE");
    }
    eprintln!(
        "store down: first fast refusal {:?} after the cut, slowest of 20 refusals {slowest:?}",
        cut_at.elapsed()
    );
    assert!(slowest < Duration::from_millis(100), "refused within 100 ms: {slowest:?}");
    // Memory answers what it holds.
    assert_eq!(
        api_keys.verify_api_key(a.req(verify(&secret))).await.expect("verify").into_inner().code(),
        VerifyCode::Valid
    );
    management.get_app_key(a.req(get_key())).await.expect("cached GetAppKey answers");
    assert_eq!(
        health.check(status(MANAGEMENT)).await.expect("health").into_inner().status(),
        ServingStatus::NotServing
    );
    assert_eq!(health.check(status("")).await.expect("health").into_inner().status(), ServingStatus::Serving);
    // /ready follows the same state, /live does not; the metrics say the store is down.
    let (ready, _, body) = crate::metrics::get(&a.url(), "/ready").await;
    assert_eq!(ready, 503, "{body}");
    assert!(body.contains("store: the database does not answer"), "{body}");
    assert_eq!(crate::metrics::get(&a.url(), "/live").await.0, 200);
    assert_eq!(crate::metrics::Scrape::of(&a.url()).await.value("keymint_store_up", &[]), 0.0);

    proxy.restore();
    let restored = Instant::now();
    while management.list_projects(a.req(ListProjectsRequest::default())).await.is_err() {
        assert!(restored.elapsed() < Duration::from_secs(2), "back within 2 s of the database");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("store back: calls succeed {:?} after the database returned", restored.elapsed());
    while health.check(status(MANAGEMENT)).await.expect("health").into_inner().status()
        != ServingStatus::Serving
    {
        assert!(restored.elapsed() < Duration::from_secs(2), "health SERVING within 2 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(crate::metrics::Scrape::of(&a.url()).await.value("keymint_store_up", &[]), 1.0);
    a.stop().await;
    fresh.drop_database().await;
}
