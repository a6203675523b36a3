//! `keymint serve` as an operator runs it: settings after the subcommand, `--help` listing them, and its request
//! log: the client's address behind a trusted proxy, and a call the client reset logged as CANCELLED.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::StreamBody;
use hyper::body::Frame;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde_json::Value;
use tokio_stream::StreamExt;

use crate::helpers::{Db, FreshDb, TEST_MASTER_KEY, on_both_databases};

#[test]
fn serve_help_lists_the_settings() {
    let output = Command::new(env!("CARGO_BIN_EXE_keymint")).args(["serve", "--help"]).output().expect("run");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in ["--listen", "--data-dir", "--database-url", "--trusted-proxies", "--master-key", "--issuer"]
    {
        assert!(help.contains(flag), "`keymint serve --help` lists {flag}:\n{help}");
    }
    let refused = Command::new(env!("CARGO_BIN_EXE_keymint")).args(["serve", "--no-such-flag"]).output();
    assert!(!refused.expect("run").status.success());
}

/// Each subcommand's `--help` lists the settings it reads and no others; `keymint --help` and `serve --help` list
/// them all, and the first line says what keymint is.
#[test]
fn every_subcommand_help_lists_only_the_settings_it_reads() {
    const STORE: &[&str] = &["--data-dir", "--database-url", "--log-format"];
    const SERVE_ONLY: &[&str] =
        &["--listen", "--key-sizes", "--issuer", "--trusted-proxies", "--tls-cert", "--metrics"];
    let help = |args: &[&str]| {
        let output =
            Command::new(env!("CARGO_BIN_EXE_keymint")).args(args).arg("--help").output().expect("run");
        assert!(output.status.success(), "{args:?} --help");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    for args in [&[][..], &["serve"]] {
        let text = help(args);
        for flag in STORE.iter().chain(SERVE_ONLY).chain(&["--master-key", "--node-id"]) {
            assert!(text.contains(flag), "{args:?} --help lists {flag}:\n{text}");
        }
        assert!(text.contains("How log lines are written"), "--log-format is described:\n{text}");
    }
    let top = help(&[]);
    assert!(top.contains("EC P-256") && top.contains("Ed25519") && top.contains("OAuth 2.0"), "{top}");
    let cases: [(&[&str], &[&str]); 4] = [
        (&["migrate"], &[]),
        (&["backup"], &[]),
        (&["projections", "rebuild"], &[]),
        (&["signing-keys", "rotate"], &["--master-key", "--node-id"]),
    ];
    for (args, extra) in cases {
        let text = help(args);
        for flag in STORE.iter().chain(extra) {
            assert!(text.contains(flag), "{args:?} --help lists {flag}:\n{text}");
        }
        let unread = SERVE_ONLY.iter().chain(&["--master-key", "--node-id"]).filter(|f| !extra.contains(f));
        for flag in unread {
            assert!(!text.contains(flag), "{args:?} --help does not list {flag}:\n{text}");
        }
    }
    // A setting a subcommand does not read is refused after it, and still taken before it, as always.
    let refused =
        Command::new(env!("CARGO_BIN_EXE_keymint")).args(["migrate", "--listen", "127.0.0.1:0"]).output();
    let refused = refused.expect("run");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--listen"), "the error names the flag");
}

on_both_databases!(serve_takes_its_settings_and_logs_clients_and_reset_calls, serve_and_log);
async fn serve_and_log(db: Db) {
    let mut fresh = FreshDb::create(&db).await;
    let token = keymint::crypto::secret::new_secret("km_admin_").expect("rng").to_string();
    let mut command = Command::new(env!("CARGO_BIN_EXE_keymint"));
    command
        .env_clear()
        .env("KEYMINT_ADMIN_TOKEN", &token)
        .env("KEYMINT_KEY_POOL_SIZE", "1")
        .env("KEYMINT_KEY_POOL_WORKERS", "1")
        // Every setting after the subcommand.
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--log-format", "json", "--trusted-proxies", "127.0.0.1"])
        .arg("--data-dir")
        .arg(fresh.data_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(url) = &fresh.url {
        command.args(["--database-url", url, "--master-key", TEST_MASTER_KEY]);
    }
    let mut child = command.spawn().expect("start keymint serve");
    let log = Arc::new(Mutex::new(Vec::<Value>::new()));
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let Ok(event) = serde_json::from_str::<Value>(&line) else { continue };
            if let Some(addr) = event["fields"]["addr"].as_str() {
                let _ = addr_tx.send(addr.to_owned());
            }
            sink.lock().expect("log").push(event);
        }
    });
    let addr: String = addr_rx.recv_timeout(Duration::from_secs(60)).expect("keymint serve listens");
    assert!(fresh.url.is_some() || fresh.data_dir().join("keymint.db").exists(), "--data-dir was used");

    // A call that sends half a message and is then given up: the client resets the stream (RST_STREAM CANCEL).
    let client = Client::builder(TokioExecutor::new()).http2_only(true).build_http();
    let half =
        tokio_stream::iter([Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(&[0, 0])))])
            .chain(tokio_stream::pending());
    let request =
        http::Request::post(format!("http://{addr}/keymint.management.v1.ManagementService/ListProjects"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("authorization", format!("Bearer {token}"))
            // From a client behind the trusted proxy 127.0.0.1.
            .header("x-forwarded-for", "203.0.113.9")
            .body(StreamBody::new(half))
            .expect("request");
    let given_up = tokio::time::timeout(Duration::from_millis(500), client.request(request)).await;
    assert!(given_up.is_err(), "the server waits for the rest of the message");
    drop(client);

    let started = std::time::Instant::now();
    let line = loop {
        let found = log.lock().expect("log").iter().find(|e| e["fields"]["message"] == "rpc").cloned();
        if let Some(line) = found {
            break line;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no rpc line: {:?}", log.lock().expect("log"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(line["fields"]["code"], "Cancelled", "{line}");
    assert_eq!(line["level"], "INFO", "a reset is no warning: {line}");
    assert_eq!(line["span"]["client"], "203.0.113.9", "the forwarded client: {line}");
    assert_eq!(line["span"]["method"], "/keymint.management.v1.ManagementService/ListProjects");
    fresh.drop_database().await;
}
