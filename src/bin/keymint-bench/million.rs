//! verify-api-key-1m: a million API keys (`--keys`), seeded through the store's own append path in large
//! transactions, then verified: keys not in the cache, a working set larger than the cache, and every key cached
//! on a server whose capacity holds them all, with the memory that takes.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use keymint::{
    api::pb::keymint::apikeys::v1::api_key_service_client::ApiKeyServiceClient,
    app::{self, Running},
    config::Config,
    crypto::{api_key_secret, secret::hash_secret},
    domain::{
        AggregateType,
        api_key::{ApiKey, Environment, Origin, SecretRef, Settings},
        ids::IdGenerator,
        time::{Clock, SystemClock},
    },
    service::verify::KeyView,
    store::Append,
};
use tonic::transport::Channel;

use super::{Args, BenchResult, Figures, Target, connect, load, load_until, named, verify_request};

/// Keys per transaction while seeding, and transactions in flight on PostgreSQL, which runs them side by side
/// (SQLite's one writer takes one at a time).
const SEED_BATCH: usize = 2_000;
const SEED_WRITERS: usize = 4;

pub(super) async fn run(
    running: &Running,
    config: &Config,
    target: &Target,
    args: &Args,
    health: &Figures,
) -> BenchResult<Vec<Figures>> {
    let n = args.keys;
    let started = Instant::now();
    let writers = if config.database_url.is_some() { SEED_WRITERS } else { 1 };
    let secrets = Arc::new(seed(running, target, n, writers).await?);
    println!("seeded {n} API keys in {:.1} s", started.elapsed().as_secs_f64());
    let duration = Duration::from_secs(args.seconds);
    let channels = connect(running, 4).await?;
    let mut all = Vec::new();

    // Misses: every call verifies a key no call verified before (the first half of the keys, in order).
    let mut miss =
        verify_each(&channels, target, &secrets, 0, args.concurrency, duration, "verify-api-key-miss").await;
    miss.extra.insert("ratio_to_health", miss.per_second() / health.per_second());
    miss.print();
    let offset = miss.calls as usize + 1;
    let one =
        verify_each(&channels, target, &secrets, offset, 1, duration, "verify-api-key-miss-one-at-a-time")
            .await;
    one.print();
    all.extend([miss, one]);

    // A working set of all keys against a cache of --cache-capacity: uniform, so most calls miss.
    let mut working = uniform(&channels, target, &secrets, args.concurrency, duration).await;
    working.extra.insert("ratio_to_health", working.per_second() / health.per_second());
    working.extra.insert("cache_capacity", args.cache_capacity as f64);
    working.print();
    all.push(working);

    // Memory: a server whose capacity holds every key verifies each once.
    let config = Config { node_id: Some(3), cache_capacity: n + n / 8, ..config.clone() };
    let before = rss_bytes();
    let beside = app::start(&config).await?;
    let channels = connect(&beside, 4).await?;
    let empty = rss_bytes();
    let scan_started = Instant::now();
    let mut scan = verify_each(
        &channels,
        target,
        &secrets,
        0,
        args.concurrency,
        Duration::from_secs(3_600),
        "verify-api-key-1m-fill",
    )
    .await;
    let scan_seconds = scan_started.elapsed().as_secs_f64();
    // Usage counted meanwhile is written, so that what remains is what stays.
    beside.services.flush_usage().await?;
    let full = rss_bytes();
    scan.extra.insert("keys", scan.calls as f64);
    scan.extra.insert("rss_mb_server_started", (empty.saturating_sub(before)) as f64 / 1e6);
    scan.extra.insert("rss_mb_before", empty as f64 / 1e6);
    scan.extra.insert("rss_mb_after", full as f64 / 1e6);
    scan.extra
        .insert("rss_bytes_per_cached_key", full.saturating_sub(empty) as f64 / scan.calls.max(1) as f64);
    scan.extra.insert("size_of_keyview", std::mem::size_of::<KeyView>() as f64);
    scan.extra.insert("fill_seconds", scan_seconds);
    scan.print();
    let mut hits = uniform(&channels, target, &secrets, args.concurrency, duration).await;
    hits = named("verify-api-key-1m-cached", hits);
    hits.extra.insert("ratio_to_health", hits.per_second() / health.per_second());
    hits.print();
    all.extend([scan, hits]);
    beside.shutdown().await?;
    Ok(all)
}

/// Writes `n` API keys as `CreateApiKey` would (the domain decides the event; `append_all` writes the events and
/// the read models in one transaction per batch), with the bench's scopes and networks; returns the secrets.
async fn seed(running: &Running, target: &Target, n: usize, writers: usize) -> BenchResult<Vec<String>> {
    let principal =
        running.services.authenticate(target.token.to_str()?.trim_start_matches("Bearer "), None).await?;
    let ids = Arc::new(IdGenerator::new(4));
    let next = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..writers)
        .map(|_| {
            let (store, ids, next) = (running.services.store().clone(), ids.clone(), next.clone());
            let (org, creator) = (principal.org_id.clone(), principal.id.clone());
            tokio::spawn(async move {
                let mut secrets = Vec::new();
                loop {
                    let first = next.fetch_add(SEED_BATCH as u64, Ordering::Relaxed) as usize;
                    if first >= n {
                        return Ok::<_, Box<dyn std::error::Error + Send + Sync>>(secrets);
                    }
                    let count = SEED_BATCH.min(n - first);
                    let mut keys = Vec::with_capacity(count);
                    for i in first..first + count {
                        let secret = api_key_secret::generate(Environment::Live)?;
                        let parsed = api_key_secret::parse(&secret).map_err(|e| e.to_string())?;
                        let secret_ref = SecretRef {
                            secret_hash: hash_secret(&secret),
                            prefix: parsed.prefix,
                            last_four: parsed.last_four,
                        };
                        let settings = Settings {
                            title: format!("seeded {i}"),
                            scopes: vec!["bench:read".into(), "bench:write".into()],
                            allowed_cidrs: vec!["10.0.0.0/8".into(), "2001:db8::/32".into()],
                            ..Settings::default()
                        };
                        let origin = Origin { environment: Environment::Live, ..Origin::default() };
                        let events = ApiKey::default().create(origin, settings, secret_ref)?;
                        keys.push((ids.next_id(SystemClock.now()), events));
                        secrets.push(secret.to_string());
                    }
                    let at = SystemClock.now();
                    let appends = keys
                        .iter()
                        .map(|(id, events)| Append {
                            aggregate_type: AggregateType::ApiKey,
                            aggregate_id: id,
                            resource_owner: &org,
                            creator: &creator,
                            created_at: at,
                            expected_sequence: 0,
                            events: events.clone(),
                        })
                        .collect();
                    store.append_all(appends).await?;
                }
            })
        })
        .collect();
    let mut secrets = Vec::with_capacity(n);
    for writer in writers {
        secrets.extend(writer.await??);
    }
    Ok(secrets)
}

/// Verifies `secrets[from..]` in order, each once, from `concurrency` callers, until they run out or `duration`
/// passes; a call counts only if it answers valid.
async fn verify_each(
    channels: &[Channel],
    target: &Target,
    secrets: &Arc<Vec<String>>,
    from: usize,
    concurrency: usize,
    duration: Duration,
    name: &'static str,
) -> Figures {
    let clients: Vec<_> = channels.iter().map(|c| ApiKeyServiceClient::new(c.clone())).collect();
    let (target, secrets) = (target.clone(), secrets.clone());
    load_until(name, concurrency, duration, move |worker, n| {
        let secret = secrets.get(from + n as usize)?.clone();
        let mut client = clients[worker % clients.len()].clone();
        let request = verify_request(&target, &secret);
        Some(async move { client.verify_api_key(request).await.is_ok_and(|r| r.into_inner().valid) })
    })
    .await
}

/// VerifyApiKey spread uniformly over every key (a multiplicative hash of the call number).
async fn uniform(
    channels: &[Channel],
    target: &Target,
    secrets: &Arc<Vec<String>>,
    concurrency: usize,
    duration: Duration,
) -> Figures {
    let clients: Vec<_> = channels.iter().map(|c| ApiKeyServiceClient::new(c.clone())).collect();
    let (target, secrets) = (target.clone(), secrets.clone());
    load("verify-api-key-working-set", concurrency, duration, move |worker, n| {
        let mut client = clients[worker % clients.len()].clone();
        let secret = &secrets[(n.wrapping_mul(0x9e37_79b9_7f4a_7c15) % secrets.len() as u64) as usize];
        let request = verify_request(&target, secret);
        async move { client.verify_api_key(request).await.is_ok_and(|r| r.into_inner().valid) }
    })
    .await
}

/// This process's resident memory, from /proc (0 where there is none).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
