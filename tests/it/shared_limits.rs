//! A key's rate limit and daily quota hold across processes: the store's lease statements compute what the
//! domain says they do (on both databases), and three keymint processes on one PostgreSQL database hammered at
//! once admit what one bucket and one quota allow.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use keymint::{
    api::pb::keymint::apikeys::v1::{
        CreateApiKeyRequest, RateLimit as RateLimitMessage, VerifyApiKeyRequest, VerifyCode,
        api_key_service_client::ApiKeyServiceClient,
    },
    domain::{
        Timestamp,
        lease::{SharedBucket, SharedQuota},
        rate_limit::{DailyQuota, RateLimit},
    },
};

use crate::{
    crash::Process,
    helpers::{Db, FreshDb, api_key_request, on_both_databases, with_token},
};

/// A fixed pseudo-random sequence (xorshift), so that a failure can be replayed.
struct Steps(u64);

impl Steps {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

on_both_databases!(lease_statements_compute_what_the_domain_says, lease_statements);
async fn lease_statements(db: Db) {
    let mut fresh = FreshDb::create(&db).await;
    let store = fresh.open_store().await;
    let mut steps = Steps(0x9e37_79b9_7f4a_7c15);
    let limits = [RateLimit { per_second: 3, burst: 2 }, RateLimit { per_second: 100_000, burst: 1_000_000 }];
    let (mut buckets, mut now) = ([None, None], 1_764_000_000_000_000_i64);
    for step in 0..400 {
        let key = steps.next(2) as usize;
        // Mostly forward, sometimes a long idle, sometimes a clock behind the last lease.
        now += match steps.next(10) {
            0 => -(steps.next(2_000_000) as i64),
            1 => 86_400_000_000,
            _ => steps.next(700_000) as i64,
        };
        // Now and then the key's limit changes.
        let limit = if steps.next(20) == 0 { limits[1 - key] } else { limits[key] };
        let want = 1 + steps.next(if limit.per_second > 100 { 5_000 } else { 3 });
        let expected = SharedBucket::lease(buckets[key], limit, Timestamp(now), want);
        let got =
            store.lease_tokens(&format!("key-{key}"), limit, Timestamp(now), want).await.expect("lease");
        assert_eq!(got, expected, "step {step}: {limit:?} at {now}, {want} wanted");
        buckets[key] = Some(got.bucket);
    }

    let quotas = [DailyQuota::new(7).expect("quota"), DailyQuota::new(1_000_000_000_000).expect("quota")];
    let (mut counters, mut day) = ([None, None], 20_000_i64);
    for step in 0..400 {
        let key = steps.next(2) as usize;
        day += match steps.next(12) {
            0 => 1,
            1 => -1,
            _ => 0,
        };
        let quota = quotas[key];
        let want = 1 + steps.next(if key == 0 { 3 } else { 1_000_000_000 });
        let owed = if steps.next(5) == 0 { steps.next(4) } else { 0 };
        let expected = SharedQuota::lease(counters[key], quota, day, want, owed);
        let got = store.lease_quota(&format!("key-{key}"), quota, day, want, owed).await.expect("lease");
        assert_eq!(got, expected, "step {step}: day {day}, {want} wanted, {owed} owed");
        counters[key] = Some(got.counter);
    }
    fresh.drop_database().await;
}

/// What one process admitted of each key.
#[derive(Debug, Default, Clone, Copy)]
struct Admitted {
    rate: u64,
    quota: u64,
    calls: u64,
}

/// Three keymint processes on one PostgreSQL database; one key limited to 50 calls a second (burst 50) and one
/// with a daily quota of 600, both verified through all three at once for a few seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set KEYMINT_TEST_POSTGRES_URL (source .ci/tools.sh)"]
async fn three_processes_share_one_rate_limit_and_one_quota() {
    const PER_SECOND: u32 = 50;
    const BURST: u32 = 50;
    const QUOTA: u64 = 600;
    const CALLERS: usize = 6;
    let db = Db::required_postgres();
    let mut fresh = FreshDb::create(&db).await;
    let token = keymint::crypto::secret::new_secret("km_admin_").expect("rng").to_string();
    let first = Process::start(&fresh, &token).await;
    let (dir_b, dir_c) = (FreshDb::sharing(fresh.url.clone()), FreshDb::sharing(fresh.url.clone()));
    let processes = [first, Process::start(&dir_b, &token).await, Process::start(&dir_c, &token).await];

    let mut keys = ApiKeyServiceClient::new(processes[0].channel().await.expect("connect"));
    let mut create = async |request: CreateApiKeyRequest| {
        keys.create_api_key(with_token(request, &token)).await.expect("create").into_inner().secret
    };
    let rate_secret = create(CreateApiKeyRequest {
        rate_limit: Some(RateLimitMessage { per_second: PER_SECOND, burst: BURST }),
        ..api_key_request("rate", &["a:b"])
    })
    .await;
    let quota_secret =
        create(CreateApiKeyRequest { daily_quota: QUOTA, ..api_key_request("quota", &["a:b"]) }).await;

    let duration = Duration::from_secs(4);
    let start = Arc::new(tokio::sync::Barrier::new(processes.len() * CALLERS * 2 + 1));
    let mut tasks = Vec::new();
    for (p, process) in processes.iter().enumerate() {
        let channel = process.channel().await.expect("connect");
        for caller in 0..CALLERS * 2 {
            let mut client = ApiKeyServiceClient::new(channel.clone());
            let (start, token) = (start.clone(), token.clone());
            let (secret, is_rate) =
                if caller % 2 == 0 { (rate_secret.clone(), true) } else { (quota_secret.clone(), false) };
            tasks.push(tokio::spawn(async move {
                let mut admitted = Admitted::default();
                start.wait().await;
                let began = Instant::now();
                while began.elapsed() < duration {
                    let request =
                        VerifyApiKeyRequest { secret: secret.clone(), ..VerifyApiKeyRequest::default() };
                    let answer = client.verify_api_key(with_token(request, &token)).await.expect("verify");
                    let code = answer.into_inner().code();
                    let expected = if is_rate { VerifyCode::RateLimited } else { VerifyCode::QuotaExceeded };
                    assert!(code == VerifyCode::Valid || code == expected, "{code:?}");
                    admitted.calls += 1;
                    let valid = u64::from(code == VerifyCode::Valid);
                    if is_rate { admitted.rate += valid } else { admitted.quota += valid }
                }
                (p, admitted)
            }));
        }
    }
    start.wait().await;
    let began = Instant::now();
    let mut per_process = [Admitted::default(); 3];
    for task in tasks {
        let (p, admitted) = task.await.expect("caller");
        per_process[p].rate += admitted.rate;
        per_process[p].quota += admitted.quota;
        per_process[p].calls += admitted.calls;
    }
    let seconds = began.elapsed().as_secs_f64();
    let total = |f: fn(&Admitted) -> u64| per_process.iter().map(f).sum::<u64>();
    let (rate, quota, calls) = (total(|a| a.rate), total(|a| a.quota), total(|a| a.calls));
    let allowed = f64::from(BURST) + f64::from(PER_SECOND) * seconds;
    for (p, a) in per_process.iter().enumerate() {
        eprintln!(
            "process {p}: rate key {} admitted, quota key {} admitted, {} calls",
            a.rate, a.quota, a.calls
        );
    }
    eprintln!(
        "total over {seconds:.2} s: rate key {rate} admitted (one bucket allows {allowed:.0}: {BURST} + \
         {PER_SECOND}/s), quota key {quota} admitted (quota {QUOTA}), {calls} calls"
    );
    assert!(calls > 3 * (rate + quota), "the keys were hammered (most calls refused): {calls} calls");
    let rate = rate as f64;
    assert!(
        rate <= f64::from(PER_SECOND) * seconds * 1.1 + f64::from(BURST),
        "{rate} admitted of {allowed:.0}"
    );
    assert!(rate >= f64::from(PER_SECOND) * seconds * 0.9, "{rate} admitted of {allowed:.0}");
    assert!(quota <= QUOTA && quota as f64 >= QUOTA as f64 * 0.9, "{quota} of the quota of {QUOTA}");
    assert!(
        per_process.iter().all(|a| a.rate > 0 && a.quota > 0),
        "every process admitted some: {per_process:?}"
    );

    drop(processes);
    fresh.drop_database().await;
}
