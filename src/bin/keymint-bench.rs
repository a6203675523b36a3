//! keymint's benchmark: starts keymint in-process on a fresh database, drives it over real gRPC connections, and
//! prints a table and one JSON line per scenario, with ratios against baselines measured in the same run.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use clap::{Parser, ValueEnum};
use keymint::{
    api::pb::keymint::{
        apikeys::v1::{
            CreateApiKeyRequest, DeleteApiKeyRequest, Environment, RateLimit, VerifyApiKeyRequest,
            api_key_service_client::ApiKeyServiceClient,
        },
        management::v1::{
            AddApiAppRequest, AddAppKeyRequest, AddProjectRequest, GetAppKeyRequest, KeyType, KeyView,
            ListAppKeysRequest, management_service_client::ManagementServiceClient,
        },
        v1::ListQuery,
    },
    app::{self, Running},
    config::{Config, LogFormat},
    crypto::{
        keygen::{RsaBits, RsaKeyPair},
        secret::new_secret,
    },
    domain::{
        AggregateType, Event,
        events::{KeyAlgorithm, KeyType as EventKeyType},
        time::Clock,
    },
    store::Append,
};
use tonic::{Request, metadata::MetadataValue, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

#[path = "keymint-bench/ext_authz.rs"]
mod ext_authz;
#[path = "keymint-bench/metrics.rs"]
mod metrics;
#[path = "keymint-bench/million.rs"]
mod million;
#[path = "keymint-bench/tls.rs"]
mod tls;

#[derive(Debug, Parser)]
#[command(name = "keymint-bench", about = "Measures keymint against baselines taken in the same run")]
struct Args {
    /// Which scenarios to run.
    #[arg(value_enum, default_value = "all")]
    scenario: Scenario,
    /// Run against PostgreSQL: a server URL on which the benchmark may create (and drop) a database.
    #[arg(long, env = "KEYMINT_BENCH_POSTGRES_URL")]
    postgres: Option<String>,
    /// Seconds for each throughput scenario.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Seconds of sustained key issuance (after the pool has drained).
    #[arg(long, default_value_t = 20)]
    sustained_seconds: u64,
    /// Calls in flight for the main health baseline (the one every summary ratio uses).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Calls in flight for each read scenario, each level against the health RPC at the same level. One call in
    /// flight goes over a connection with Nagle's algorithm on (as many clients' stacks have it), which shows any
    /// stall a call waits for.
    #[arg(long, value_delimiter = ',', default_value = "1,32,256")]
    in_flight: Vec<usize>,
    /// Keys seeded into one application for get-app-key and list-app-keys.
    #[arg(long, default_value_t = 10_000)]
    seed_keys: usize,
    /// API keys issued for verify-api-key.
    #[arg(long, default_value_t = 1_000)]
    api_keys: usize,
    /// Keys revoked one after another to measure how soon verify refuses them.
    #[arg(long, default_value_t = 50)]
    revocations: usize,
    /// API keys seeded for verify-api-key-1m.
    #[arg(long, default_value_t = 1_000_000)]
    keys: usize,
    /// The cache capacity of the server verify-api-key-1m measures misses and a working set on.
    #[arg(long, default_value_t = 100_000)]
    cache_capacity: usize,
    /// Client assertions signed before each OAuth scenario (each call uses one up).
    #[arg(long, default_value_t = 60_000)]
    oauth_assertions: usize,
    /// A Python with grpcio: with it, `reads` also measures ListAppKeys one call at a time from grpcio, a client
    /// that is not keymint's.
    #[arg(long, env = "KEYMINT_BENCH_PYTHON")]
    python: Option<PathBuf>,
    /// The envoy binary for ext-authz (with it, `all` runs ext-authz too).
    #[arg(long, env = "KEYMINT_BENCH_ENVOY")]
    envoy: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    All,
    Keys,
    Reads,
    /// verify-api-key and revocation latency.
    ApiKeys,
    /// `--keys` API keys (1,000,000): verifies that miss the cache, a working set larger than the cache, and
    /// the memory per cached key (not part of `all`: seeding takes minutes).
    #[value(name = "verify-api-key-1m")]
    VerifyApiKey1m,
    /// OAuth 2.0: token issuance against raw verify + sign, introspection against health.
    Oauth,
    /// HTTP/1.1 through Envoy with keymint's ext_authz check against the same Envoy without it (needs `--envoy`;
    /// part of `all` when it is given).
    ExtAuthz,
    /// Health and VerifyApiKey with metrics on against a second server with `--metrics false` (not part of `all`).
    Metrics,
    /// TLS against h2c: the health RPC over open connections, and new connections with one call each (full
    /// handshakes, ECDSA P-256 and RSA-2048 certificates). Needs the `openssl` command; not part of `all`.
    Tls,
}

/// One scenario's figures.
#[derive(Debug, Clone, Default)]
struct Figures {
    name: &'static str,
    /// Calls kept in flight, for the scenarios that keep a level (0: not applicable).
    in_flight: usize,
    calls: u64,
    errors: u64,
    seconds: f64,
    latencies_us: Vec<u64>,
    extra: BTreeMap<&'static str, f64>,
}

impl Figures {
    fn per_second(&self) -> f64 {
        if self.seconds > 0.0 { self.calls as f64 / self.seconds } else { 0.0 }
    }

    /// Adds another slice of the same scenario (interleaved rounds).
    fn absorb(&mut self, slice: Figures) {
        self.in_flight = slice.in_flight;
        self.calls += slice.calls;
        self.errors += slice.errors;
        self.seconds += slice.seconds;
        self.latencies_us.extend(slice.latencies_us);
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        let mut sorted = self.latencies_us.clone();
        sorted.sort_unstable();
        if sorted.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
    }

    fn print(&self) {
        let mut json = serde_json::json!({
            "scenario": self.name,
            "in_flight": self.in_flight,
            "calls": self.calls,
            "errors": self.errors,
            "seconds": round(self.seconds),
            "per_second": round(self.per_second()),
            "p50_ms": round(self.percentile_ms(50.0)),
            "p99_ms": round(self.percentile_ms(99.0)),
        });
        for (key, value) in &self.extra {
            json[*key] = serde_json::json!(round(*value));
        }
        let extras: Vec<String> = self.extra.iter().map(|(k, v)| format!("{k}={v:.3}")).collect();
        let label = if self.in_flight > 0 {
            format!("{}@{}", self.name, self.in_flight)
        } else {
            self.name.to_owned()
        };
        println!(
            "{:<28} {:>9.1}/s {:>9.2} ms {:>9.2} ms {:>7} {:>5}  {}",
            label,
            self.per_second(),
            self.percentile_ms(50.0),
            self.percentile_ms(99.0),
            self.calls,
            self.errors,
            extras.join(" ")
        );
        println!("{json}");
    }
}

/// A scenario's figures under another name (the same calls, made another way).
fn named(name: &'static str, figures: Figures) -> Figures {
    Figures { name, ..figures }
}

/// The health RPC at each level of calls in flight, measured once per level when a scenario first needs it.
struct Baselines {
    main: Figures,
    measured: BTreeMap<usize, Figures>,
}

impl Baselines {
    fn new(main: Figures) -> Self {
        Baselines { main, measured: BTreeMap::new() }
    }

    async fn at(&mut self, lane: &[Channel], level: usize, seconds: Duration) -> Figures {
        if level == self.main.in_flight {
            return self.main.clone();
        }
        if let Some(figures) = self.measured.get(&level) {
            return figures.clone();
        }
        let figures = health(lane, level, seconds).await;
        figures.print();
        self.measured.insert(level, figures.clone());
        figures
    }

    /// The levels measured here, for the summary (the main baseline is reported once, by the caller).
    fn measured(self) -> impl Iterator<Item = Figures> {
        self.measured.into_values()
    }
}

/// The connections a level of calls in flight uses: one call at a time goes over the connection with Nagle on.
fn lanes<'a>(channels: &'a [Channel], nagle: &'a Channel, level: usize) -> &'a [Channel] {
    if level == 1 { std::slice::from_ref(nagle) } else { channels }
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The allocator the keymint binary uses (Cargo.toml says why), so that the in-process server measures as it runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KEYMINT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(errors) => {
            eprintln!("the run had {errors} failed calls: its figures are not comparable");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            ExitCode::FAILURE
        }
    }
}

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

async fn run(args: Args) -> BenchResult<u64> {
    let envoy = match (&args.envoy, args.scenario) {
        (None, Scenario::ExtAuthz) => return Err("ext-authz needs --envoy (or KEYMINT_BENCH_ENVOY)".into()),
        (Some(envoy), Scenario::All | Scenario::ExtAuthz) => Some(envoy.clone()),
        _ => None,
    };
    let workers = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let database = Database::create(args.postgres.as_deref()).await?;
    println!(
        "keymint-bench: {} cores, {} key workers, database {}",
        workers,
        workers,
        if args.postgres.is_some() { "PostgreSQL" } else { "SQLite" }
    );
    println!(
        "{:<28} {:>11} {:>12} {:>12} {:>7} {:>5}  ratios",
        "scenario", "throughput", "p50", "p99", "calls", "errs"
    );

    let mut all = Vec::new();
    let seconds = Duration::from_secs(args.seconds);
    let run_keys = matches!(args.scenario, Scenario::All | Scenario::Keys);
    let run_reads = matches!(args.scenario, Scenario::All | Scenario::Reads);
    let run_api_keys = matches!(args.scenario, Scenario::All | Scenario::ApiKeys);
    let run_oauth = matches!(args.scenario, Scenario::All | Scenario::Oauth);

    // The baseline for issuance: raw generation on as many threads as the pool has, before keymint starts.
    let keygen =
        if run_keys { Some(keygen(workers, Duration::from_secs(args.seconds * 2)).await) } else { None };
    if let Some(keygen) = &keygen {
        keygen.print();
    }

    let token = new_secret("km_bench_")?.to_string();
    let mut config = Config {
        listen: "127.0.0.1:0".parse()?,
        data_dir: database.dir.clone(),
        database_url: database.url.clone(),
        log_format: LogFormat::Pretty,
        node_id: Some(1),
        max_message_bytes: 1024 * 1024,
        request_timeout_secs: 30,
        key_sizes: vec![RsaBits::Rsa2048],
        default_key_size: RsaBits::Rsa2048,
        key_pool_size: 32,
        key_pool_workers: Some(u16::try_from(workers)?),
        usage_flush_ms: 2_000,
        cache_capacity: args.cache_capacity,
        admin_token: Some(token.clone()),
        issuer: None,
        access_token_ttl: Duration::from_secs(3600),
        signing_key_rotation: Duration::from_secs(30 * 86_400),
        master_key: Some(keymint::crypto::seal::MasterKey::generate()?.to_base64().to_string()),
        trusted_proxies: Vec::new(),
        metrics: true,
        shutdown_drain: Duration::ZERO,
        tls: Default::default(),
    };
    let running = app::start(&config).await?;
    let channels = connect(&running, 4).await?;
    let client = ManagementServiceClient::new(channels[0].clone());
    let target = Target::create(client, &token).await?;

    // The baseline for reads: the cheapest RPC the server has. Every throughput scenario starts with a full key
    // pool, so that no key generation competes for the cores while it is measured.
    wait_for_full_pool(&running).await;
    let health = health(&channels, args.concurrency, Duration::from_secs(args.seconds)).await;
    health.print();

    if let Some(keygen) = keygen {
        // The first writes of a fresh server also prepare statements on every connection: reported apart, as the
        // cold burst; the burst proper is the second one, against a refilled pool.
        wait_for_full_pool(&running).await;
        let cold = burst(&channels, &target, 16, "add-app-key-burst-cold").await;
        cold.print();
        wait_for_full_pool(&running).await;
        let burst = burst(&channels, &target, 16, "add-app-key-burst").await;
        burst.print();
        let mut sustained =
            sustained(&channels, &target, &running, workers * 4, args.sustained_seconds).await;
        sustained.extra.insert("ratio_to_keygen", sustained.per_second() / keygen.per_second());
        sustained.print();
        all.extend([keygen, cold, burst, sustained]);
    }

    if run_reads {
        let key_ids = seed(&running, &target, args.seed_keys).await?;
        wait_for_full_pool(&running).await;
        let nagle = connect_with_nagle(&running).await?;
        let (fresh, mut seeded) = add_key_by_history(&nagle, &target, 24).await?;
        seeded.extra.insert("p50_ratio_to_fresh_app", seeded.percentile_ms(50.0) / fresh.percentile_ms(50.0));
        fresh.print();
        seeded.print();
        all.extend([fresh, seeded]);
        let mut baselines = Baselines::new(health.clone());
        for &level in &args.in_flight {
            let lane = lanes(&channels, &nagle, level);
            let health = baselines.at(lane, level, seconds).await;
            wait_for_full_pool(&running).await;
            for mut figures in [
                get_app_key(lane, &target, &key_ids, level, seconds).await,
                list_app_keys(lane, &target, KeyView::Basic, level, seconds).await,
                list_app_keys(lane, &target, KeyView::Full, level, seconds).await,
            ] {
                figures.extra.insert("ratio_to_health", figures.per_second() / health.per_second());
                figures.print();
                all.push(figures);
            }
        }
        all.extend(baselines.measured());
        if let Some(python) = &args.python {
            for view in [KeyView::Basic, KeyView::Full] {
                let figures = grpcio_list_app_keys(python, &running, &target, view, 1_000).await?;
                figures.print();
                all.push(figures);
            }
        }
    }
    if run_api_keys {
        let secrets = issue_api_keys(&channels, &target, args.api_keys).await?;
        let nagle = connect_with_nagle(&running).await?;
        let mut baselines = Baselines::new(health.clone());
        let mut at_main_level = None;
        for &level in &args.in_flight {
            let lane = lanes(&channels, &nagle, level);
            let health = baselines.at(lane, level, seconds).await;
            let mut verify = verify_api_key(lane, &target, &secrets, level, seconds).await;
            verify.extra.insert("ratio_to_health", verify.per_second() / health.per_second());
            verify.print();
            if level == args.concurrency {
                at_main_level = Some(verify.per_second());
            }
            all.push(verify);
        }
        all.extend(baselines.measured());
        let mut limited =
            verify_with_shared_limits(&channels, &target, args.api_keys, args.concurrency, args.seconds)
                .await?;
        limited.extra.insert("ratio_to_health", limited.per_second() / health.per_second());
        if let Some(verify) = at_main_level {
            limited.extra.insert("ratio_to_verify", limited.per_second() / verify);
        }
        limited.print();
        all.push(limited);
        // With PostgreSQL a second keymint process on the same database answers the verifies; with SQLite (one
        // process per file) the same process does, which shows the in-process path.
        let beside = if database.url.is_some() {
            config.data_dir = database.dir.join("beside");
            config.node_id = Some(2);
            Some(app::start(&config).await?)
        } else {
            None
        };
        let verifier = connect(beside.as_ref().unwrap_or(&running), 1).await?.remove(0);
        let name = if beside.is_some() { "revoke-cross-process" } else { "revoke-same-process" };
        let revoke = revocation_latency(name, &channels[0], &verifier, &target, args.revocations).await?;
        revoke.print();
        all.push(revoke);
        if let Some(beside) = beside {
            beside.shutdown().await?;
        }
    }
    if args.scenario == Scenario::VerifyApiKey1m {
        let figures = million::run(&running, &config, &target, &args, &health).await?;
        all.extend(figures);
    }
    if args.scenario == Scenario::Metrics {
        all.extend(metrics::run(&running, &config, &target, &args).await?);
    }
    if args.scenario == Scenario::Tls {
        all.extend(tls::run(&running, &config, &channels, &args, &database.dir).await?);
    }
    if run_oauth {
        all.extend(oauth_scenarios(&running, &channels, &target, &args, workers).await?);
    }
    if let Some(envoy) = envoy {
        let figures =
            ext_authz::run(&running, &channels, &target, &args, &envoy, &database.dir, workers).await?;
        all.extend(figures);
    }
    all.push(health);

    running.shutdown().await?;
    database.drop().await;
    Ok(all.iter().map(|f| f.errors).sum())
}

/// The database under test: a fresh SQLite file, or a fresh PostgreSQL database dropped at the end.
struct Database {
    dir: PathBuf,
    url: Option<String>,
    postgres: Option<(String, String)>,
}

impl Database {
    async fn create(postgres: Option<&str>) -> BenchResult<Database> {
        let dir = std::env::temp_dir().join(format!("keymint-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let Some(server) = postgres else { return Ok(Database { dir, url: None, postgres: None }) };
        let name = format!("keymint_bench_{}", std::process::id());
        let admin = sqlx::PgPool::connect(server).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name}"))).execute(&admin).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&admin).await?;
        admin.close().await;
        let base = server.rsplit_once('/').map_or(server, |(base, _)| base);
        Ok(Database { dir, url: Some(format!("{base}/{name}")), postgres: Some((server.to_owned(), name)) })
    }

    async fn drop(self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some((server, name)) = self.postgres
            && let Ok(admin) = sqlx::PgPool::connect(&server).await
        {
            let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
            let _ = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&admin).await;
        }
    }
}

/// One connection with Nagle's algorithm left on, as many clients' stacks have it: calls made one at a time on it
/// show any stall a response waits for (a server without TCP_NODELAY cost ~40 ms per call here).
async fn connect_with_nagle(running: &Running) -> BenchResult<Channel> {
    Ok(Channel::from_shared(format!("http://{}", running.addr))?.tcp_nodelay(false).connect().await?)
}

async fn connect(running: &Running, n: usize) -> BenchResult<Vec<Channel>> {
    let mut channels = Vec::with_capacity(n);
    for _ in 0..n {
        channels.push(Channel::from_shared(format!("http://{}", running.addr))?.connect().await?);
    }
    Ok(channels)
}

/// The project and app the scenarios write to, and the admin token they call with.
#[derive(Clone)]
struct Target {
    token: MetadataValue<tonic::metadata::Ascii>,
    project_id: String,
    app_id: String,
}

impl Target {
    async fn create(mut client: ManagementServiceClient<Channel>, token: &str) -> BenchResult<Target> {
        let token: MetadataValue<_> = format!("Bearer {token}").parse()?;
        let mut target = Target { token, project_id: String::new(), app_id: String::new() };
        let project = client.add_project(target.req(AddProjectRequest { name: "bench".into() })).await?;
        target.project_id = project.into_inner().id;
        let app = client
            .add_api_app(target.req(AddApiAppRequest {
                project_id: target.project_id.clone(),
                name: "bench".into(),
                ..Default::default()
            }))
            .await?;
        target.app_id = app.into_inner().app_id;
        Ok(target)
    }

    fn req<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.metadata_mut().insert("authorization", self.token.clone());
        request
    }

    fn add_key(&self) -> Request<AddAppKeyRequest> {
        self.req(AddAppKeyRequest {
            project_id: self.project_id.clone(),
            app_id: self.app_id.clone(),
            r#type: KeyType::Json as i32,
            ..AddAppKeyRequest::default()
        })
    }
}

/// Raw RSA-2048 generation with aws-lc-rs on `threads` threads: keys per second, and the time per key.
async fn keygen(threads: usize, duration: Duration) -> Figures {
    on_threads("keygen", threads, duration, || RsaKeyPair::generate(RsaBits::Rsa2048).is_ok()).await
}

/// A baseline without the server: `work` again and again on `threads` blocking threads for `duration`, each
/// run timed and counted (false: an error).
async fn on_threads(
    name: &'static str,
    threads: usize,
    duration: Duration,
    work: impl Fn() -> bool + Send + Sync + 'static,
) -> Figures {
    let work = Arc::new(work);
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let work = work.clone();
            tokio::task::spawn_blocking(move || {
                let mut samples = Vec::new();
                while started.elapsed() < duration {
                    let one = Instant::now();
                    let ok = work();
                    samples.push((one.elapsed().as_micros() as u64, ok));
                }
                samples
            })
        })
        .collect();
    let mut figures = Figures { name, ..Figures::default() };
    for handle in handles {
        for (us, ok) in handle.await.unwrap_or_default() {
            figures.calls += u64::from(ok);
            figures.errors += u64::from(!ok);
            figures.latencies_us.push(us);
        }
    }
    figures.seconds = started.elapsed().as_secs_f64();
    figures
}

async fn wait_for_full_pool(running: &Running) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline && running.key_pool.stats().iter().any(|s| s.depth < s.capacity) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// AddAppKey one call at a time, alternating between the app seeded with many keys and a fresh app of the same
/// project (so that drift hits both alike): a write must cost the same at any history length.
async fn add_key_by_history(channel: &Channel, seeded: &Target, n: usize) -> BenchResult<(Figures, Figures)> {
    let mut client = ManagementServiceClient::new(channel.clone());
    let request = AddApiAppRequest {
        project_id: seeded.project_id.clone(),
        name: "bench-fresh".into(),
        ..Default::default()
    };
    let fresh_app = client.add_api_app(seeded.req(request)).await?.into_inner().app_id;
    let fresh = Target { app_id: fresh_app, ..seeded.clone() };
    let mut figures = [
        Figures { name: "add-app-key-fresh-app", ..Figures::default() },
        Figures { name: "add-app-key-seeded-app", ..Figures::default() },
    ];
    for i in 0..n * 2 {
        let (target, figures) =
            if i % 2 == 0 { (&fresh, &mut figures[0]) } else { (seeded, &mut figures[1]) };
        let one = Instant::now();
        let ok = client.add_app_key(target.add_key()).await.is_ok();
        figures.seconds += one.elapsed().as_secs_f64();
        figures.latencies_us.push(one.elapsed().as_micros() as u64);
        figures.calls += u64::from(ok);
        figures.errors += u64::from(!ok);
    }
    let [fresh, seeded] = figures;
    Ok((fresh, seeded))
}

/// `n` AddAppKey calls at once against a full pool.
async fn burst(channels: &[Channel], target: &Target, n: usize, name: &'static str) -> Figures {
    let started = Instant::now();
    let calls: Vec<_> = (0..n)
        .map(|i| {
            let mut client = ManagementServiceClient::new(channels[i % channels.len()].clone());
            let request = target.add_key();
            tokio::spawn(async move {
                let one = Instant::now();
                let ok = client.add_app_key(request).await.is_ok();
                (one.elapsed().as_micros() as u64, ok)
            })
        })
        .collect();
    let mut figures = Figures { name, ..Figures::default() };
    for call in calls {
        let (us, ok) = call.await.unwrap_or((0, false));
        figures.calls += u64::from(ok);
        figures.errors += u64::from(!ok);
        figures.latencies_us.push(us);
    }
    figures.seconds = started.elapsed().as_secs_f64();
    figures
}

/// AddAppKey from `concurrency` callers; measured for `seconds` once the pool has first run dry, so the
/// figure is the steady state, not the pool's head start.
async fn sustained(
    channels: &[Channel],
    target: &Target,
    running: &Running,
    concurrency: usize,
    seconds: u64,
) -> Figures {
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..concurrency)
        .map(|i| {
            let mut client = ManagementServiceClient::new(channels[i % channels.len()].clone());
            let (measuring, stop, target) = (measuring.clone(), stop.clone(), target.clone());
            tokio::spawn(async move {
                let mut samples = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let one = Instant::now();
                    let ok = client.add_app_key(target.add_key()).await.is_ok();
                    if measuring.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
                        samples.push((one.elapsed().as_micros() as u64, ok));
                    }
                }
                samples
            })
        })
        .collect();
    let drained_by = Instant::now() + Duration::from_secs(60);
    while running.key_pool.stats().iter().any(|s| s.depth > 0) && Instant::now() < drained_by {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    let mut figures = Figures { name: "add-app-key-sustained", seconds, ..Figures::default() };
    for worker in workers {
        for (us, ok) in worker.await.unwrap_or_default() {
            figures.calls += u64::from(ok);
            figures.errors += u64::from(!ok);
            figures.latencies_us.push(us);
        }
    }
    figures
}

/// Runs `call` from `concurrency` tasks for `duration`; `call(i)` makes the i-th call of a task.
async fn load<F, Fut>(name: &'static str, concurrency: usize, duration: Duration, call: F) -> Figures
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    load_until(name, concurrency, duration, move |worker, n| Some(call(worker, n))).await
}

/// Like `load`, but a call may say there is nothing left to call (`None`): the scenario then ends, and its time
/// ends with the last call.
async fn load_until<F, Fut>(name: &'static str, concurrency: usize, duration: Duration, call: F) -> Figures
where
    F: Fn(usize, u64) -> Option<Fut> + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let call = Arc::new(call);
    let counter = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|worker| {
            let (call, counter) = (call.clone(), counter.clone());
            tokio::spawn(async move {
                let mut samples = Vec::new();
                while started.elapsed() < duration {
                    let Some(one_call) = call(worker, counter.fetch_add(1, Ordering::Relaxed)) else { break };
                    let one = Instant::now();
                    let ok = one_call.await;
                    samples.push((one.elapsed().as_micros() as u64, ok));
                }
                (samples, started.elapsed())
            })
        })
        .collect();
    let mut figures = Figures { name, in_flight: concurrency, ..Figures::default() };
    for task in tasks {
        let (samples, ended) = task.await.unwrap_or_default();
        figures.seconds = figures.seconds.max(ended.as_secs_f64());
        for (us, ok) in samples {
            figures.calls += u64::from(ok);
            figures.errors += u64::from(!ok);
            figures.latencies_us.push(us);
        }
    }
    figures
}

async fn health(channels: &[Channel], concurrency: usize, duration: Duration) -> Figures {
    let clients: Vec<_> = channels.iter().map(|c| HealthClient::new(c.clone())).collect();
    load("health", concurrency, duration, move |worker, _| {
        let mut client = clients[worker % clients.len()].clone();
        async move { client.check(HealthCheckRequest { service: String::new() }).await.is_ok() }
    })
    .await
}

/// Writes `n` keys into the target app directly as events (one generated public key for all): the reads measure
/// the read path, and issuing 10,000 real keys would take minutes of key generation.
async fn seed(running: &Running, target: &Target, n: usize) -> BenchResult<Vec<String>> {
    let services = &running.services;
    let store = services.store();
    let principal = services.authenticate(target.token.to_str()?.trim_start_matches("Bearer "), None).await?;
    let public_key = RsaKeyPair::generate(RsaBits::Rsa2048)?.public_spki_pem().to_owned();
    let ids = keymint::domain::ids::IdGenerator::new(2);
    let clock = keymint::domain::time::SystemClock;
    let mut key_ids = Vec::with_capacity(n);
    let mut sequence = store.load(AggregateType::App, &target.app_id).await?.len() as u64;
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let events: Vec<Event> = chunk
            .iter()
            .map(|_| {
                let key_id = ids.next_id(clock.now());
                key_ids.push(key_id.clone());
                Event::AppKeyAdded {
                    key_id,
                    key_type: EventKeyType::Json,
                    expiration: keymint::domain::Timestamp::NEVER.micros(),
                    public_key: public_key.clone(),
                    algorithm: KeyAlgorithm::Rsa,
                    supplied: false,
                }
            })
            .collect();
        let count = events.len() as u64;
        store
            .append(Append {
                aggregate_type: AggregateType::App,
                aggregate_id: &target.app_id,
                resource_owner: &principal.org_id,
                creator: &principal.id,
                created_at: clock.now(),
                expected_sequence: sequence,
                events,
            })
            .await?;
        sequence += count;
    }
    Ok(key_ids)
}

async fn get_app_key(
    channels: &[Channel],
    target: &Target,
    key_ids: &[String],
    concurrency: usize,
    duration: Duration,
) -> Figures {
    let clients: Vec<_> = channels.iter().map(|c| ManagementServiceClient::new(c.clone())).collect();
    let (target, key_ids) = (target.clone(), key_ids.to_vec());
    load("get-app-key", concurrency, duration, move |worker, n| {
        let mut client = clients[worker % clients.len()].clone();
        // Spread the reads over all keys (a multiplicative hash of the call number).
        let key_id = key_ids[(n.wrapping_mul(2_654_435_761) % key_ids.len() as u64) as usize].clone();
        let (project_id, app_id) = (target.project_id.clone(), target.app_id.clone());
        let request = target.req(GetAppKeyRequest { project_id, app_id, key_id, view: KeyView::Full as i32 });
        async move { client.get_app_key(request).await.is_ok() }
    })
    .await
}

/// Pages of 100 keys in `view`: `list-app-keys` (KEY_VIEW_BASIC, the default) or `list-app-keys-full` (with each
/// public key, PEM and JWK), which also reports the answers' size in MB/s (protobuf-encoded).
async fn list_app_keys(
    channels: &[Channel],
    target: &Target,
    view: KeyView,
    concurrency: usize,
    duration: Duration,
) -> Figures {
    let clients: Vec<_> = channels.iter().map(|c| ManagementServiceClient::new(c.clone())).collect();
    let target = target.clone();
    let bytes = Arc::new(AtomicU64::new(0));
    let counted = bytes.clone();
    let name = if view == KeyView::Full { "list-app-keys-full" } else { "list-app-keys" };
    let mut figures = load(name, concurrency, duration, move |worker, _| {
        let mut client = clients[worker % clients.len()].clone();
        let request = target.req(ListAppKeysRequest {
            query: Some(ListQuery { offset: 0, limit: 100, asc: false }),
            app_id: target.app_id.clone(),
            project_id: target.project_id.clone(),
            view: view as i32,
        });
        let counted = counted.clone();
        async move {
            let Ok(page) = client.list_app_keys(request).await.map(tonic::Response::into_inner) else {
                return false;
            };
            counted.fetch_add(prost::Message::encoded_len(&page) as u64, Ordering::Relaxed);
            page.result.len() == 100
        }
    })
    .await;
    if view == KeyView::Full {
        let megabytes = bytes.load(Ordering::Relaxed) as f64 / 1e6;
        figures.extra.insert("mb_per_second", megabytes / figures.seconds);
    }
    figures
}

/// ListAppKeys (a page of 100, newest first, in `view`) one call at a time from Python's grpcio
/// (keymint-bench/grpcio_one_at_a_time.py), `calls` times after a warm-up.
async fn grpcio_list_app_keys(
    python: &std::path::Path,
    running: &Running,
    target: &Target,
    view: KeyView,
    calls: usize,
) -> BenchResult<Figures> {
    use base64::Engine;
    let request = ListAppKeysRequest {
        query: Some(ListQuery { offset: 0, limit: 100, asc: false }),
        app_id: target.app_id.clone(),
        project_id: target.project_id.clone(),
        view: view as i32,
    };
    let encoded = base64::engine::general_purpose::STANDARD.encode(prost::Message::encode_to_vec(&request));
    let token = target.token.to_str()?.trim_start_matches("Bearer ").to_owned();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/src/bin/keymint-bench/grpcio_one_at_a_time.py");
    let mut command = std::process::Command::new(python);
    command.args([script, &running.addr.to_string(), "/keymint.management.v1.ManagementService/ListAppKeys"]);
    command.args([token, encoded, calls.to_string()]);
    // A blocking wait, off the runtime's threads (tokio's process feature is not built for one command).
    let output = tokio::task::spawn_blocking(move || command.output()).await??;
    if !output.status.success() {
        return Err(format!("grpcio: {}", String::from_utf8_lossy(&output.stderr)).into());
    }
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let latencies_us: Vec<u64> =
        answer["latencies_us"].as_array().ok_or("no latencies")?.iter().filter_map(|v| v.as_u64()).collect();
    let name = if view == KeyView::Full { "list-app-keys-full-grpcio" } else { "list-app-keys-grpcio" };
    Ok(Figures {
        name,
        in_flight: 1,
        calls: latencies_us.len() as u64,
        errors: answer["errors"].as_u64().unwrap_or(0),
        seconds: answer["seconds"].as_f64().unwrap_or(0.0),
        latencies_us,
        extra: BTreeMap::new(),
    })
}

/// Issues `n` LIVE API keys with a scope and a network restriction, so that verify runs every check.
async fn issue_api_keys(channels: &[Channel], target: &Target, n: usize) -> BenchResult<Vec<String>> {
    let mut client = ApiKeyServiceClient::new(channels[0].clone());
    let mut secrets = Vec::with_capacity(n);
    for i in 0..n {
        let created = client.create_api_key(target.req(bench_key(&format!("bench {i}")))).await?;
        secrets.push(created.into_inner().secret);
    }
    Ok(secrets)
}

/// VerifyApiKey over `n` keys that each have a rate limit and a daily quota far above what the run can use:
/// every call takes a token and a use from this process's leased batches (the shared counters in the store).
async fn verify_with_shared_limits(
    channels: &[Channel],
    target: &Target,
    n: usize,
    concurrency: usize,
    seconds: u64,
) -> BenchResult<Figures> {
    let mut client = ApiKeyServiceClient::new(channels[0].clone());
    let mut secrets = Vec::with_capacity(n);
    for i in 0..n {
        let request = CreateApiKeyRequest {
            rate_limit: Some(RateLimit { per_second: 100_000, burst: 1_000_000 }),
            daily_quota: 1_000_000_000_000,
            ..bench_key(&format!("limited {i}"))
        };
        secrets.push(client.create_api_key(target.req(request)).await?.into_inner().secret);
    }
    let figures = verify_api_key(channels, target, &secrets, concurrency, Duration::from_secs(seconds)).await;
    Ok(named("verify-api-key-limited", figures))
}

fn bench_key(title: &str) -> CreateApiKeyRequest {
    CreateApiKeyRequest {
        title: title.to_owned(),
        scopes: vec!["bench:read".into(), "bench:write".into()],
        allowed_cidrs: vec!["10.0.0.0/8".into(), "2001:db8::/32".into()],
        environment: Environment::Live as i32,
        ..CreateApiKeyRequest::default()
    }
}

fn verify_request(target: &Target, secret: &str) -> Request<VerifyApiKeyRequest> {
    target.req(VerifyApiKeyRequest {
        secret: secret.to_owned(),
        client_ip: "10.1.2.3".into(),
        required_scopes: vec!["bench:read".into()],
        accept_test_keys: false,
    })
}

/// VerifyApiKey spread over every issued key; a call counts only when it answers valid.
async fn verify_api_key(
    channels: &[Channel],
    target: &Target,
    secrets: &[String],
    concurrency: usize,
    duration: Duration,
) -> Figures {
    let clients: Vec<_> = channels.iter().map(|c| ApiKeyServiceClient::new(c.clone())).collect();
    let (target, secrets) = (target.clone(), secrets.to_vec());
    load("verify-api-key", concurrency, duration, move |worker, n| {
        let mut client = clients[worker % clients.len()].clone();
        let secret = &secrets[(n.wrapping_mul(2_654_435_761) % secrets.len() as u64) as usize];
        let request = verify_request(&target, secret);
        async move { client.verify_api_key(request).await.is_ok_and(|r| r.into_inner().valid) }
    })
    .await
}

/// For each of `rounds` keys: verify it on `verifier` (so it is cached there), revoke it through `writer`, and
/// time from the moment DeleteApiKey returned until `verifier` refuses the key. Latencies are in the figures;
/// a key still accepted after 5 s counts as an error.
async fn revocation_latency(
    name: &'static str,
    writer: &Channel,
    verifier: &Channel,
    target: &Target,
    rounds: usize,
) -> BenchResult<Figures> {
    let mut keys = ApiKeyServiceClient::new(writer.clone());
    let mut checks = ApiKeyServiceClient::new(verifier.clone());
    let mut figures = Figures { name, ..Figures::default() };
    let started = Instant::now();
    for i in 0..rounds {
        let created = keys.create_api_key(target.req(bench_key(&format!("revoke {i}")))).await?.into_inner();
        let id = created.api_key.map(|k| k.id).unwrap_or_default();
        let valid = checks.verify_api_key(verify_request(target, &created.secret)).await?.into_inner().valid;
        keys.delete_api_key(target.req(DeleteApiKeyRequest { id })).await?;
        let revoked = Instant::now();
        let mut refused = !valid;
        while !refused && revoked.elapsed() < Duration::from_secs(5) {
            refused =
                !checks.verify_api_key(verify_request(target, &created.secret)).await?.into_inner().valid;
        }
        figures.calls += u64::from(refused && valid);
        figures.errors += u64::from(!refused || !valid);
        figures.latencies_us.push(revoked.elapsed().as_micros() as u64);
    }
    figures.seconds = started.elapsed().as_secs_f64();
    let max = figures.latencies_us.iter().max().copied().unwrap_or(0);
    figures.extra.insert("max_ms", max as f64 / 1000.0);
    Ok(figures)
}

// OAuth 2.0 scenarios. Every token and introspection call needs a fresh client assertion (its jti is single
// use), and an RSA-2048 signature costs the client about as much CPU as keymint's token signature costs the
// server: signing them during the run would measure the client. So the assertions are signed before each timed
// window, `--oauth-assertions` of them, and a scenario ends when they run out or its time is up.

/// An application key as the benchmark signs with it.
struct BenchClient {
    client_id: String,
    key_id: String,
    signer: Arc<aws_lc_rs::rsa::KeyPair>,
    /// The SubjectPublicKeyInfo PEM of the key, for the raw baseline.
    public_pem: String,
}

async fn bench_client(channels: &[Channel], target: &Target) -> BenchResult<BenchClient> {
    let mut client = ManagementServiceClient::new(channels[0].clone());
    let added = client.add_app_key(target.add_key()).await?.into_inner();
    let file: serde_json::Value = serde_json::from_slice(&added.key_details)?;
    let pem = file["key"].as_str().ok_or("key file without key")?;
    let (_, der) = pkcs8::der::pem::decode_vec(pem.as_bytes()).map_err(|e| e.to_string())?;
    let signer = aws_lc_rs::rsa::KeyPair::from_der(&der).map_err(|e| e.to_string())?;
    let spki = aws_lc_rs::encoding::AsDer::as_der(aws_lc_rs::signature::KeyPair::public_key(&signer))
        .map_err(|e| e.to_string())?;
    let public_pem =
        pkcs8::der::pem::encode_string("PUBLIC KEY", pkcs8::der::pem::LineEnding::LF, spki.as_ref())
            .map_err(|e| e.to_string())?;
    Ok(BenchClient {
        client_id: file["clientId"].as_str().ok_or("no clientId")?.to_owned(),
        key_id: file["keyId"].as_str().ok_or("no keyId")?.to_owned(),
        signer: Arc::new(signer),
        public_pem,
    })
}

/// Makes every assertion's `jti` unique within the run (the database is fresh).
static NEXT_JTI: AtomicU64 = AtomicU64::new(0);

/// `n` client assertions for `aud`, signed on every core.
async fn sign_assertions(
    client: &BenchClient,
    aud: &str,
    n: usize,
    threads: usize,
) -> BenchResult<Vec<String>> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let per_thread = n.div_ceil(threads);
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (signer, client_id, key_id, aud) =
                (client.signer.clone(), client.client_id.clone(), client.key_id.clone(), aud.to_owned());
            tokio::task::spawn_blocking(move || {
                let rng = aws_lc_rs::rand::SystemRandom::new();
                (0..per_thread)
                    .map(|_| {
                        let header = serde_json::json!({"alg": "RS256", "kid": key_id, "typ": "JWT"});
                        let claims = serde_json::json!({
                            "iss": client_id, "sub": client_id, "aud": aud,
                            "iat": now, "exp": now + 3000,
                            "jti": format!("bench-{}", NEXT_JTI.fetch_add(1, Ordering::Relaxed)),
                        });
                        let input = keymint::crypto::jws::signing_input(&header, &claims);
                        let mut signature = vec![0; signer.public_modulus_len()];
                        signer
                            .sign(
                                &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                                &rng,
                                input.as_bytes(),
                                &mut signature,
                            )
                            .map(|()| keymint::crypto::jws::assemble(input, &signature))
                            .map_err(|e| e.to_string())
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
        })
        .collect();
    let mut assertions = Vec::with_capacity(n);
    for handle in handles {
        assertions.extend(handle.await??);
    }
    assertions.truncate(n);
    Ok(assertions)
}

/// A form POST over a gRPC channel's HTTP/2 connection (the same connections the health baseline uses); the
/// answer's status and JSON.
async fn post_form(
    channel: &Channel,
    path: &str,
    params: &[(&str, &str)],
) -> Option<(u16, serde_json::Value)> {
    post_body(channel, path, form_body(params)).await
}

/// `params` as an `application/x-www-form-urlencoded` body.
fn form_body(params: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish()
}

/// POSTs an encoded form body; the answer's status and JSON.
async fn post_body(channel: &Channel, path: &str, body: String) -> Option<(u16, serde_json::Value)> {
    post_authorized(channel, path, body, None).await
}

/// POSTs an encoded form body with an `authorization` header when one is given; the answer's status and JSON.
async fn post_authorized(
    channel: &Channel,
    path: &str,
    body: String,
    authorization: Option<&str>,
) -> Option<(u16, serde_json::Value)> {
    use http_body_util::BodyExt;
    use tower::{Service, ServiceExt};
    let mut request = http::Request::post(path).header("content-type", "application/x-www-form-urlencoded");
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    let request =
        request.body(tonic::body::Body::new(http_body_util::Full::new(bytes::Bytes::from(body)))).ok()?;
    let mut channel = channel.clone();
    let response = channel.ready().await.ok()?.call(request).await.ok()?;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.ok()?.to_bytes();
    Some((status, serde_json::from_slice(&bytes).ok()?))
}

/// Like `load`, but each call takes the next of `inputs`, and the scenario ends when they run out.
async fn load_inputs<F, Fut>(
    name: &'static str,
    concurrency: usize,
    duration: Duration,
    inputs: Vec<String>,
    call: F,
) -> Figures
where
    F: Fn(usize, String) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let inputs = std::sync::Mutex::new(inputs);
    load_until(name, concurrency, duration, move |worker, _| {
        let input = inputs.lock().ok().and_then(|mut inputs| inputs.pop())?;
        Some(call(worker, input))
    })
    .await
}

/// The server's own cost of a token, without the transport or the store: verify an RS256 assertion and sign an
/// RS256 token. Run on as many threads as there are cores, it is the token scenario's baseline.
async fn raw_verify_and_sign(client: &BenchClient) -> BenchResult<impl Fn() -> bool + Send + Sync + 'static> {
    let key = keymint::crypto::public_key::PublicKey::from_spki_pem(&client.public_pem)?;
    let assertion = sign_assertions(client, "bench", 1, 1).await?.remove(0);
    let (signing, _) = keymint::crypto::signing_keys::SigningKey::generate("bench")?;
    Ok(move || {
        keymint::crypto::jws::parse(&assertion).is_ok_and(|parsed| {
            key.verify("RS256", parsed.signing_input.as_bytes(), &parsed.signature).is_ok()
                && signing
                    .sign(serde_json::json!({"typ": "at+jwt"}), &serde_json::Value::Object(parsed.claims))
                    .is_ok()
        })
    })
}

/// Rounds in which a scenario and its baseline take turns: this machine's speed drifts by ±15 % over minutes, so
/// a baseline measured once, before, can be far from what the scenario met.
const ROUNDS: u32 = 4;

/// A scenario and its baseline in `ROUNDS` alternating slices of `duration / ROUNDS`, the baseline first in each;
/// `scenario` gets the round's share of `inputs` (one signed assertion per call).
async fn interleaved<B, S>(
    duration: Duration,
    inputs: Vec<String>,
    mut baseline: impl FnMut(Duration) -> B,
    mut scenario: impl FnMut(Duration, Vec<String>) -> S,
) -> (Figures, Figures)
where
    B: std::future::Future<Output = Figures>,
    S: std::future::Future<Output = Figures>,
{
    let slice = duration / ROUNDS;
    let per_round = inputs.len().div_ceil(ROUNDS as usize);
    let mut rounds = inputs.chunks(per_round.max(1)).map(<[String]>::to_vec);
    let (mut base, mut measured) = (Figures::default(), Figures::default());
    for _ in 0..ROUNDS {
        let first = baseline(slice).await;
        base.name = first.name;
        base.absorb(first);
        let next = scenario(slice, rounds.next().unwrap_or_default()).await;
        measured.name = next.name;
        measured.absorb(next);
    }
    (base, measured)
}

/// A form POST of a client assertion and more, at `concurrency` over the connections, one assertion per call;
/// a call counts when `ok` accepts the answer. The bodies are encoded before the timed window, as the assertions
/// are signed before it: percent-encoding a 700-byte assertion is the client's work, and it took 4 % of the CPU
/// the server shares with it.
fn assertion_calls(
    name: &'static str,
    channels: &[Channel],
    concurrency: usize,
    path: &'static str,
    params: Vec<(&'static str, String)>,
    ok: fn(u16, &serde_json::Value) -> bool,
) -> impl FnMut(Duration, Vec<String>) -> std::pin::Pin<Box<dyn std::future::Future<Output = Figures> + Send>>
{
    let channels = channels.to_vec();
    move |slice, assertions| {
        let bodies = assertions
            .iter()
            .map(|assertion| {
                let mut form: Vec<(&str, &str)> = vec![
                    ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
                    ("client_assertion", assertion.as_str()),
                ];
                form.extend(params.iter().map(|(k, v)| (*k, v.as_str())));
                form_body(&form)
            })
            .collect();
        let channels = channels.clone();
        Box::pin(load_inputs(name, concurrency, slice, bodies, move |worker, body| {
            let channel = channels[worker % channels.len()].clone();
            async move { post_body(&channel, path, body).await.is_some_and(|(status, json)| ok(status, &json)) }
        }))
    }
}

/// Introspection of `token` authorized by `authorization: Bearer <bearer>` (an access token with the scope
/// tokens:introspect) at `concurrency` over the connections: no assertion per call, so nothing to sign before.
fn bearer_calls(
    name: &'static str,
    channels: &[Channel],
    concurrency: usize,
    bearer: &str,
    token: &str,
) -> impl FnMut(Duration, Vec<String>) -> std::pin::Pin<Box<dyn std::future::Future<Output = Figures> + Send>>
{
    let channels = channels.to_vec();
    let authorization = Arc::new(format!("Bearer {bearer}"));
    let body = Arc::new(form_body(&[("token", token)]));
    move |slice, _| {
        let (channels, authorization, body) = (channels.clone(), authorization.clone(), body.clone());
        Box::pin(load(name, concurrency, slice, move |worker, _| {
            let channel = channels[worker % channels.len()].clone();
            let (authorization, body) = (authorization.clone(), body.clone());
            async move {
                post_authorized(&channel, "/oauth/v2/introspect", (*body).clone(), Some(&authorization))
                    .await
                    .is_some_and(|(status, json)| status == 200 && json["active"] == true)
            }
        }))
    }
}

/// token (client_credentials) against the raw verify + sign, and access-token and API-key introspection against
/// the health RPC, each over HTTP/2 at `concurrency`, interleaved with its baseline: authorized by a fresh client
/// assertion per call, and by a bearer access token with the scope tokens:introspect.
async fn oauth_scenarios(
    running: &Running,
    channels: &[Channel],
    target: &Target,
    args: &Args,
    threads: usize,
) -> BenchResult<Vec<Figures>> {
    let duration = Duration::from_secs(args.seconds);
    let issuer = running.services.oauth_settings().issuer;
    let client = bench_client(channels, target).await?;
    let n = args.oauth_assertions;
    let mut all = Vec::new();

    let raw = Arc::new(raw_verify_and_sign(&client).await?);
    let assertions = sign_assertions(&client, &issuer, n, threads).await?;
    let grant = vec![("grant_type", "client_credentials".to_owned())];
    let (mut raw, mut token) = interleaved(
        duration,
        assertions,
        |slice| {
            let raw = raw.clone();
            on_threads("raw-verify-and-sign", threads, slice, move || raw())
        },
        assertion_calls("oauth-token", channels, args.concurrency, "/oauth/v2/token", grant, |status, _| {
            status == 200
        }),
    )
    .await;
    raw.extra.insert("threads", threads as f64);
    token.extra.insert("ratio_to_raw", token.per_second() / raw.per_second());
    raw.print();
    token.print();
    all.extend([raw, token]);

    // One access token, introspected again and again; and one API key (no network limit, no quota).
    let assertion = sign_assertions(&client, &issuer, 1, 1).await?.remove(0);
    let params = [
        ("grant_type", "client_credentials"),
        ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
        ("client_assertion", assertion.as_str()),
    ];
    let (_, answer) = post_form(&channels[0], "/oauth/v2/token", &params).await.ok_or("no token")?;
    let access_token = answer["access_token"].as_str().ok_or("no access_token")?.to_owned();
    let mut api_keys = ApiKeyServiceClient::new(channels[0].clone());
    let secret = api_keys
        .create_api_key(target.req(CreateApiKeyRequest {
            title: "introspected".into(),
            scopes: vec!["bench:read".into()],
            environment: Environment::Live as i32,
            ..CreateApiKeyRequest::default()
        }))
        .await?
        .into_inner()
        .secret;
    for (name, introspected) in
        [("oauth-introspect-token", access_token.clone()), ("oauth-introspect-api-key", secret.clone())]
    {
        let assertions =
            sign_assertions(&client, &format!("{issuer}/oauth/v2/introspect"), n, threads).await?;
        let (health, mut figures) = interleaved(
            duration,
            assertions,
            |slice| async move { named("health-beside", health(channels, args.concurrency, slice).await) },
            assertion_calls(
                name,
                channels,
                args.concurrency,
                "/oauth/v2/introspect",
                vec![("token", introspected)],
                |status, json| status == 200 && json["active"] == true,
            ),
        )
        .await;
        figures.extra.insert("ratio_to_health", figures.per_second() / health.per_second());
        health.print();
        figures.print();
        all.extend([health, figures]);
    }

    // A resource server's own access token with the scope tokens:introspect, sent as a bearer on every call.
    let assertion = sign_assertions(&client, &issuer, 1, 1).await?.remove(0);
    let params = [
        ("grant_type", "client_credentials"),
        ("scope", "tokens:introspect"),
        ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
        ("client_assertion", assertion.as_str()),
    ];
    let (_, answer) = post_form(&channels[0], "/oauth/v2/token", &params).await.ok_or("no bearer token")?;
    let bearer = answer["access_token"].as_str().ok_or("no bearer access_token")?.to_owned();
    for (name, introspected) in
        [("oauth-introspect-token-bearer", access_token), ("oauth-introspect-api-key-bearer", secret)]
    {
        let (health, mut figures) = interleaved(
            duration,
            Vec::new(),
            |slice| async move { named("health-beside", health(channels, args.concurrency, slice).await) },
            bearer_calls(name, channels, args.concurrency, &bearer, &introspected),
        )
        .await;
        figures.extra.insert("ratio_to_health", figures.per_second() / health.per_second());
        health.print();
        figures.print();
        all.extend([health, figures]);
    }
    Ok(all)
}
