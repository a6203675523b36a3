//! A graceful shutdown as an operator sees it, on the real binary: on SIGTERM /ready turns 503 (and health
//! NOT_SERVING) while the port still answers, then the port closes, a call that was in flight finishes with its
//! answer, the API key usage counted in memory is written (visible after a restart), and the log says how long
//! each step took.

use std::{
    fs::File,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use keymint::api::pb::keymint::apikeys::v1::{
    GetApiKeyRequest, VerifyApiKeyRequest, VerifyCode, api_key_service_client::ApiKeyServiceClient,
};
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::helpers::{Db, FreshDb, api_key_request, on_both_databases, with_token};

const DRAIN: Duration = Duration::from_millis(800);

struct Keymint {
    child: Child,
    port: u16,
}

impl Keymint {
    /// Starts the binary with a JSON log in `log`, usage flushed only on shutdown (an hour apart otherwise).
    async fn start(db: &FreshDb, token: &str, log: &std::path::Path) -> Keymint {
        Self::start_with(db, token, log, &[]).await
    }

    /// Like `start`, with settings of the test's own after the usual ones.
    async fn start_with(
        db: &FreshDb,
        token: &str,
        log: &std::path::Path,
        settings: &[(&str, &str)],
    ) -> Keymint {
        let (mut command, port) = crate::crash::keymint_command(db, token);
        command
            .env("KEYMINT_USAGE_FLUSH_MS", "3600000")
            .env("KEYMINT_SHUTDOWN_DRAIN", format!("{}ms", DRAIN.as_millis()))
            .env("KEYMINT_LOG", "info")
            .env("KEYMINT_LOG_FORMAT", "json")
            .envs(settings.iter().copied())
            .stdout(Stdio::from(File::create(log).expect("log file")))
            .stderr(Stdio::null());
        let keymint = Keymint { child: command.spawn().expect("start keymint"), port };
        let started = Instant::now();
        while keymint.get("/ready").await.map(|(status, _)| status) != Some(200) {
            assert!(started.elapsed() < Duration::from_secs(30), "ready within 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        keymint
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(self.url()).expect("url").connect().await.expect("connect")
    }

    /// A GET on a new connection: None when the port refuses it or nothing answers within 500 ms.
    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let exchange = async {
            let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await.ok()?;
            let request = format!("GET {path} HTTP/1.1\r\nhost: keymint\r\nconnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await.ok()?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await.ok()?;
            parse_response(&answer)
        };
        tokio::time::timeout(Duration::from_millis(500), exchange).await.ok().flatten()
    }

    /// Sends SIGTERM and returns when it was sent. The instant is taken before `kill` runs, as the
    /// server's drain clock may start before that process has been reaped.
    fn terminate(&self) -> Instant {
        let sending = Instant::now();
        let sent = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().expect("kill");
        assert!(sent.success());
        sending
    }

    async fn exited(&mut self) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "keymint exits within 20 s of SIGTERM");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Keymint {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status and body of an HTTP/1.1 answer (chunked or not).
fn parse_response(answer: &str) -> Option<(u16, String)> {
    let status = answer.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    if !head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return Some((status, body.to_owned()));
    }
    let (mut rest, mut joined) = (body, String::new());
    loop {
        let (size, after) = rest.split_once("\r\n")?;
        let size = usize::from_str_radix(size.trim(), 16).ok()?;
        if size == 0 {
            return Some((status, joined));
        }
        joined.push_str(after.get(..size)?);
        rest = after.get(size + 2..)?;
    }
}

on_both_databases!(sigterm_drains_then_finishes_calls_and_writes_usage, sigterm);
async fn sigterm(db: Db) {
    let mut fresh = FreshDb::create(&db).await;
    let token = keymint::crypto::secret::new_secret("km_admin_").expect("rng").to_string();
    let logs = tempfile::tempdir().expect("temp dir");
    let mut keymint = Keymint::start(&fresh, &token, &logs.path().join("first.log")).await;
    let mut api_keys = ApiKeyServiceClient::new(keymint.channel().await);
    let created = api_keys
        .create_api_key(with_token(api_key_request("drained", &["invoices:read"]), &token))
        .await
        .expect("create")
        .into_inner();
    let (key_id, secret) = (created.api_key.expect("key").id, created.secret);
    for _ in 0..3 {
        let verify = VerifyApiKeyRequest { secret: secret.clone(), ..Default::default() };
        let answer = api_keys.verify_api_key(with_token(verify, &token)).await.expect("verify").into_inner();
        assert_eq!(answer.code(), VerifyCode::Valid);
    }

    // A JSON verify in flight: its headers are in, half its body is not.
    let body = serde_json::json!({ "secret": secret }).to_string();
    let (first_half, second_half) = body.split_at(body.len() / 2);
    let mut in_flight = TcpStream::connect(("127.0.0.1", keymint.port)).await.expect("connect");
    let head = format!(
        "POST /apikeys/v1/verify HTTP/1.1\r\nhost: keymint\r\ncontent-type: application/json\r\n\
         authorization: Bearer {token}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    in_flight.write_all(head.as_bytes()).await.expect("send the head");
    in_flight.write_all(first_half.as_bytes()).await.expect("send half the body");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut health = HealthClient::new(keymint.channel().await);
    let terminated = keymint.terminate();
    // Readiness turns false while the port still answers.
    let (status, answer) = loop {
        match keymint.get("/ready").await {
            Some((200, _)) => {}
            Some(answer) => break answer,
            None => panic!("the port closed before /ready answered 503"),
        }
        assert!(terminated.elapsed() < DRAIN, "/ready turned 503 within the drain delay");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(status, 503, "{answer}");
    let answer: Value = serde_json::from_str(&answer).expect("JSON");
    assert_eq!(answer["ready"], false);
    assert!(answer["failing"].as_array().expect("list").contains(&"shutting down".into()), "{answer}");
    let readiness_false = terminated.elapsed();
    // Health follows the same signal, from its own task.
    loop {
        let overall = health.check(HealthCheckRequest { service: String::new() }).await.expect("health");
        if overall.into_inner().status() == ServingStatus::NotServing {
            break;
        }
        assert!(terminated.elapsed() < DRAIN, "health NOT_SERVING within the drain delay");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Then the port stops taking calls, while the one in flight is still waiting for its body.
    while keymint.get("/live").await.is_some() {
        assert!(terminated.elapsed() < DRAIN + Duration::from_secs(5), "the port closes after the drain");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let port_closed = terminated.elapsed();
    assert!(port_closed >= DRAIN, "the port closed {port_closed:?} after SIGTERM, before the drain delay");
    in_flight.write_all(second_half.as_bytes()).await.expect("send the rest of the body");
    let mut answer = String::new();
    in_flight.read_to_string(&mut answer).await.expect("the answer");
    let (status, answer) = parse_response(&answer).unwrap_or_else(|| panic!("an HTTP answer: {answer:?}"));
    assert_eq!(status, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer).expect("JSON");
    assert_eq!(answer["valid"], true, "{answer}");
    assert!(keymint.exited().await.success(), "keymint exits with success");
    eprintln!("SIGTERM: /ready 503 after {readiness_false:?}, port closed after {port_closed:?}");

    // The log says what happened, step by step, with how long each took.
    let log = std::fs::read_to_string(logs.path().join("first.log")).expect("log");
    let lines: Vec<Value> = log.lines().filter_map(|line| serde_json::from_str(line).ok()).collect();
    let step = |starts: &str| {
        lines
            .iter()
            .position(|line| line["fields"]["message"].as_str().is_some_and(|m| m.starts_with(starts)))
            .unwrap_or_else(|| panic!("no log line {starts:?} in:\n{log}"))
    };
    let steps = [
        step("shutting down: /ready answers 503"),
        step("shutdown: drain delay over"),
        step("shutdown: listener closed, calls in flight finished"),
        step("shutdown: wrote API key usage"),
        step("shutdown complete"),
    ];
    assert!(steps.windows(2).all(|w| w[0] < w[1]), "in this order: {steps:?}");
    for at in &steps[1..] {
        assert!(lines[*at]["fields"]["took_ms"].is_u64(), "{}", lines[*at]);
    }
    assert_eq!(lines[steps[3]]["fields"]["keys"], 1, "one key's usage written");
    assert!(!log.contains(&secret) && !log.contains(&token), "no secret in the log");
    drop(keymint);

    // After a restart, the store has every verify counted, the one in flight included.
    let keymint = Keymint::start(&fresh, &token, &logs.path().join("second.log")).await;
    let mut api_keys = ApiKeyServiceClient::new(keymint.channel().await);
    let read = api_keys.get_api_key(with_token(GetApiKeyRequest { id: key_id }, &token)).await.expect("get");
    let usage = read.into_inner().api_key.expect("key").usage.expect("usage");
    assert_eq!(usage.total_requests, 4, "3 verifies before SIGTERM and the one in flight");
    drop(keymint);
    fresh.drop_database().await;
}

/// A stream nobody ends (a grpc.health.v1 Watch) does not hold the shutdown forever: once the request timeout has
/// passed after the listener closed, the connections still open are closed, the log says so, and the process
/// exits with success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_left_open_is_closed_after_the_request_timeout() {
    let fresh = FreshDb::create(&Db::Sqlite).await;
    let token = keymint::crypto::secret::new_secret("km_admin_").expect("rng").to_string();
    let logs = tempfile::tempdir().expect("temp dir");
    let log = logs.path().join("keymint.log");
    let settings = [("KEYMINT_REQUEST_TIMEOUT_SECS", "1"), ("KEYMINT_SHUTDOWN_DRAIN", "0s")];
    let mut keymint = Keymint::start_with(&fresh, &token, &log, &settings).await;
    let mut health = HealthClient::new(keymint.channel().await);
    let mut watch =
        health.watch(HealthCheckRequest { service: String::new() }).await.expect("watch").into_inner();
    let first = watch.message().await.expect("a status").expect("a status");
    assert_eq!(first.status(), ServingStatus::Serving);

    let terminated = keymint.terminate();
    let status = keymint.exited().await;
    let took = terminated.elapsed();
    assert!(status.success(), "keymint exits with success");
    assert!(took >= Duration::from_millis(900), "the stream had its request timeout to end: {took:?}");
    assert!(took < Duration::from_secs(5), "and was closed soon after it: {took:?}");
    let log = std::fs::read_to_string(&log).expect("log");
    assert!(log.contains("were closed"), "the log says the stream was closed:\n{log}");
    assert!(log.contains("shutdown complete"), "{log}");
    // The watcher saw NOT_SERVING, then its stream ended with the connection.
    let mut seen = Vec::new();
    while let Ok(Some(update)) = watch.message().await {
        seen.push(update.status());
    }
    assert!(seen.contains(&ServingStatus::NotServing), "{seen:?}");
}
