//! ext-authz: requests per second through Envoy with keymint's ext_authz check, against the same Envoy
//! configuration with the check switched off, in the same run: plain HTTP/1.1 keep-alive GETs to a tiny upstream
//! that answers "ok", one call at a time and at `--concurrency` in flight.

use std::{
    convert::Infallible,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use keymint::{
    api::pb::keymint::apikeys::v1::{
        CreateApiKeyRequest, Environment, api_key_service_client::ApiKeyServiceClient,
    },
    app::Running,
};
use tokio::{net::TcpStream, sync::Mutex};
use tonic::transport::Channel;

use super::{Args, BenchResult, Figures, Target, load};

/// The shipped configuration, as operators deploy it.
const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/envoy/ext-authz.yaml");
/// A path on the configuration's catch-all route, which asks for any valid credential and no scope: the `/reports`
/// route's own ext_authz settings would take precedence over the switch that turns the check off.
const PATH: &str = "/bench";

/// Envoy alone and Envoy with ext_authz at one call in flight and at `--concurrency`, each pair measured back to
/// back; `cores` is what the benchmark, keymint and each Envoy (that many worker threads) may run on.
pub(super) async fn run(
    running: &Running,
    channels: &[Channel],
    target: &Target,
    args: &Args,
    envoy: &Path,
    dir: &Path,
    cores: usize,
) -> BenchResult<Vec<Figures>> {
    let secrets = Arc::new(issue_keys(channels, target, args.api_keys).await?);
    let upstream = Upstream::start().await?;
    let shipped = std::fs::read_to_string(CONFIG)?;
    let values = |port: u16| {
        [
            ("ENVOY_PORT", port.to_string()),
            ("KEYMINT_HOST", running.addr.ip().to_string()),
            ("KEYMINT_PORT", running.addr.port().to_string()),
            ("UPSTREAM_HOST", "127.0.0.1".to_owned()),
            ("UPSTREAM_PORT", upstream.addr.port().to_string()),
        ]
    };
    let port = free_port()?;
    let checking =
        Envoy::start(envoy, &fill(&shipped, &values(port))?, port, &dir.join("envoy-ext-authz"), cores)?;
    let port = free_port()?;
    let alone_config = without_check(&fill(&shipped, &values(port))?)?;
    let alone = Envoy::start(envoy, &alone_config, port, &dir.join("envoy-alone"), cores)?;

    // Both answer, and only one checks: without a key the checking Envoy refuses (401) and the other lets the
    // request through. Then every key is verified once through Envoy, so that the timed calls find them cached.
    checking.expect(None, 401).await?;
    alone.expect(None, 200).await?;
    let mut sender = checking.connect(true).await?;
    for secret in secrets.iter() {
        let answer = get(&mut sender, &checking.addr.to_string(), Some(secret)).await;
        if answer.as_ref().map(|(status, _)| *status) != Some(200) {
            return Err(format!("a fresh key through Envoy with ext_authz answered {answer:?}").into());
        }
    }

    let mut all = Vec::new();
    let mut levels = vec![1, args.concurrency];
    levels.dedup();
    for level in levels {
        let duration = Duration::from_secs(args.seconds);
        let mut base = drive("envoy-alone", &alone, level, duration, None).await?;
        base.extra.insert("cores", cores as f64);
        base.print();
        let mut checked = drive("envoy-ext-authz", &checking, level, duration, Some(secrets.clone())).await?;
        checked.extra.insert("cores", cores as f64);
        checked.extra.insert("ratio_to_envoy_alone", checked.per_second() / base.per_second());
        checked.print();
        all.extend([base, checked]);
    }
    Ok(all)
}

/// `n` LIVE API keys without a network rule (the calls come from loopback); the secrets.
async fn issue_keys(channels: &[Channel], target: &Target, n: usize) -> BenchResult<Vec<String>> {
    let mut client = ApiKeyServiceClient::new(channels[0].clone());
    let mut secrets = Vec::with_capacity(n);
    for i in 0..n.max(1) {
        let request = CreateApiKeyRequest {
            title: format!("edge {i}"),
            scopes: vec!["bench:read".into()],
            environment: Environment::Live as i32,
            ..CreateApiKeyRequest::default()
        };
        secrets.push(client.create_api_key(target.req(request)).await?.into_inner().secret);
    }
    Ok(secrets)
}

/// GETs through `envoy` from `level` keep-alive connections, one call in flight on each; with `secrets`, each call
/// carries the next key in `x-api-key`. A call counts when it answers 200 "ok".
async fn drive(
    name: &'static str,
    envoy: &Envoy,
    level: usize,
    duration: Duration,
    secrets: Option<Arc<Vec<String>>>,
) -> BenchResult<Figures> {
    // One call at a time goes over a connection with Nagle's algorithm on, as in the other @1 scenarios.
    let mut connections = Vec::with_capacity(level);
    for _ in 0..level {
        connections.push(Mutex::new(envoy.connect(level > 1).await?));
    }
    let connections = Arc::new(connections);
    let authority = envoy.addr.to_string();
    let cpu_before = (envoy.cpu_seconds(), cpu_seconds("self"));
    let mut figures = load(name, level, duration, move |worker, n| {
        let connections = connections.clone();
        let secret =
            secrets.as_ref().map(|s| s[(n.wrapping_mul(2_654_435_761) % s.len() as u64) as usize].clone());
        let authority = authority.clone();
        async move {
            let mut sender = connections[worker].lock().await;
            get(&mut sender, &authority, secret.as_deref())
                .await
                .is_some_and(|(status, body)| status == 200 && body.as_ref() == b"ok")
        }
    })
    .await;
    // Where the CPU went, per call that succeeded: Envoy's own, and this process's (the client, the upstream, and
    // keymint with the check).
    let calls = figures.calls.max(1) as f64;
    if let (Some(before), Some(after)) = (cpu_before.0, envoy.cpu_seconds()) {
        figures.extra.insert("envoy_cpu_us_per_call", (after - before) * 1e6 / calls);
    }
    if let (Some(before), Some(after)) = (cpu_before.1, cpu_seconds("self")) {
        figures.extra.insert("process_cpu_us_per_call", (after - before) * 1e6 / calls);
    }
    Ok(figures)
}

/// One GET on a connection; the status and the body.
async fn get(
    sender: &mut SendRequest<Empty<Bytes>>,
    authority: &str,
    secret: Option<&str>,
) -> Option<(u16, Bytes)> {
    let mut request = http::Request::get(PATH).header(http::header::HOST, authority);
    if let Some(secret) = secret {
        request = request.header("x-api-key", secret);
    }
    sender.ready().await.ok()?;
    let response = sender.send_request(request.body(Empty::new()).ok()?).await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.into_body().collect().await.ok()?.to_bytes()))
}

/// The configuration with every `${NAME}` placeholder filled.
fn fill(config: &str, values: &[(&str, String)]) -> BenchResult<String> {
    let mut config = config.to_owned();
    for (name, value) in values {
        config = config.replace(&format!("${{{name}}}"), value);
    }
    if config.contains("${") {
        return Err(format!("{CONFIG} has a placeholder the benchmark does not fill").into());
    }
    Ok(config)
}

/// The same configuration with ext_authz switched off for the virtual host (ext_authz's own per-route
/// `disabled`), so that Envoy alone differs from Envoy with the check in the check only.
fn without_check(config: &str) -> BenchResult<String> {
    let mut out = String::with_capacity(config.len() + 256);
    let mut switched = 0;
    for line in config.lines() {
        out.push_str(line);
        out.push('\n');
        if line.trim_start().starts_with("domains:") {
            let indent = &line[..line.len() - line.trim_start().len()];
            for (depth, setting) in [
                (0, "typed_per_filter_config:"),
                (1, "envoy.filters.http.ext_authz:"),
                (
                    2,
                    "\"@type\": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
                ),
                (2, "disabled: true"),
            ] {
                out.push_str(&format!("{indent}{}{setting}\n", "  ".repeat(depth)));
            }
            switched += 1;
        }
    }
    if switched != 1 {
        return Err(format!(
            "{CONFIG}: expected one virtual host to switch the check off in, found {switched}"
        )
        .into());
    }
    Ok(out)
}

/// The CPU time (user and system, all threads) a process has used so far, from Linux's /proc/<pid>/stat.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name (which may hold spaces and parentheses): state is the first, utime and
    // stime (fields 14 and 15 of the line) the 12th and 13th.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // Linux reports these to user space in USER_HZ ticks, 100 a second on x86 and arm.
    Some(ticks as f64 / 100.0)
}

/// A port nobody listens on right now.
fn free_port() -> BenchResult<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The service behind Envoy: HTTP/1.1, every request answered 200 "ok", in this process; stopped when dropped.
struct Upstream {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    async fn start() -> BenchResult<Upstream> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let ok = hyper::service::service_fn(|_: http::Request<hyper::body::Incoming>| async {
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), ok)
                        .await;
                });
            }
        });
        Ok(Upstream { addr, task })
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An Envoy process on one configuration, with its log beside it; stopped when dropped.
struct Envoy {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Envoy {
    /// Starts Envoy on `config` (listening on `port`) with `threads` worker threads, and waits until it accepts.
    fn start(binary: &Path, config: &str, port: u16, dir: &Path, threads: usize) -> BenchResult<Envoy> {
        std::fs::create_dir_all(dir)?;
        let config_path = dir.join("envoy.yaml");
        std::fs::write(&config_path, config)?;
        let log = dir.join("envoy.log");
        let child = Command::new(binary)
            .arg("-c")
            .arg(&config_path)
            // Two Envoys run at once: no shared memory between them.
            .args(["--disable-hot-restart", "--log-level", "warn", "--concurrency"])
            .arg(threads.to_string())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        Ok(Envoy { child, addr: SocketAddr::from(([127, 0, 0, 1], port)), log })
    }

    fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds(&self.child.id().to_string())
    }

    /// A keep-alive HTTP/1.1 connection to this Envoy, its driver running on the runtime.
    async fn connect(&self, nodelay: bool) -> BenchResult<SendRequest<Empty<Bytes>>> {
        let stream = TcpStream::connect(self.addr).await?;
        stream.set_nodelay(nodelay)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(sender)
    }

    /// Waits (up to 30 s, while Envoy starts and finds its clusters) until a GET with `secret` answers `status`.
    async fn expect(&self, secret: Option<&str>, status: u16) -> BenchResult<()> {
        let started = Instant::now();
        let mut last = None;
        while started.elapsed() < Duration::from_secs(30) {
            if let Ok(mut sender) = self.connect(true).await {
                last = get(&mut sender, &self.addr.to_string(), secret).await;
                if last.as_ref().is_some_and(|(answered, _)| *answered == status) {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        Err(format!("Envoy at {} answered {last:?}, not {status}; its log:\n{log}", self.addr).into())
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
