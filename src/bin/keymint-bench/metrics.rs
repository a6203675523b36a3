//! metrics: what recording metrics costs a call. The health RPC and VerifyApiKey against the benchmark's server
//! (metrics on) and a second one started with `--metrics false`, one call at a time and `--concurrency` in flight,
//! alternating which server goes first, in the same run; and the recording alone, without a server, where the
//! noise of a loaded machine cannot hide it.

use std::{hint::black_box, sync::Arc, time::Duration};

use keymint::{
    api::{
        http::metrics::Metrics,
        pb::{self, keymint::management::v1::management_service_client::ManagementServiceClient},
    },
    app::{self, Running},
    config::Config,
};
use tonic::transport::Channel;

use super::{
    Args, BenchResult, Figures, Target, connect, health, issue_api_keys, on_threads, verify_api_key,
    wait_for_full_pool,
};

/// Rounds per level; each round measures both servers, the one measured first alternating.
const ROUNDS: usize = 4;
/// Calls recorded per timed run of the recording alone (one call takes nanoseconds, a clock read about as much).
const RECORDED: usize = 1_000;

struct Server<'a> {
    running: &'a Running,
    channels: Vec<Channel>,
    target: Target,
    secrets: Vec<String>,
}

pub(super) async fn run(
    on: &Running,
    config: &Config,
    target: &Target,
    args: &Args,
) -> BenchResult<Vec<Figures>> {
    let off_config = Config {
        metrics: false,
        node_id: Some(2),
        data_dir: config.data_dir.join("metrics-off"),
        ..config.clone()
    };
    let off = app::start(&off_config).await?;
    let off_channels = connect(&off, 4).await?;
    // PostgreSQL: the second process shares the database, and the benchmark's project with it.
    let off_target = match (&config.database_url, &config.admin_token) {
        (Some(_), _) => target.clone(),
        (None, Some(token)) => {
            Target::create(ManagementServiceClient::new(off_channels[0].clone()), token).await?
        }
        (None, None) => return Err("the benchmark's server has no admin token".into()),
    };
    let on_channels = connect(on, 4).await?;
    let n = args.api_keys.min(200);
    let servers = [
        Server {
            running: on,
            secrets: issue_api_keys(&on_channels, target, n).await?,
            channels: on_channels,
            target: target.clone(),
        },
        Server {
            running: &off,
            secrets: issue_api_keys(&off_channels, &off_target, n).await?,
            channels: off_channels,
            target: off_target,
        },
    ];
    let seconds = Duration::from_secs(args.seconds);
    let mut all = Vec::new();
    for level in [1, args.concurrency] {
        // [server][health, verify]
        let mut measured: [[Option<Figures>; 2]; 2] = Default::default();
        for round in 0..ROUNDS {
            for which in [round % 2, 1 - round % 2] {
                let server = &servers[which];
                wait_for_full_pool(server.running).await;
                let lane = &server.channels[..level.min(server.channels.len())];
                let figures = [
                    health(lane, level, seconds).await,
                    verify_api_key(lane, &server.target, &server.secrets, level, seconds).await,
                ];
                for (slot, figures) in measured[which].iter_mut().zip(figures) {
                    *slot = Some(match slot.take() {
                        Some(earlier) => merge(earlier, figures),
                        None => figures,
                    });
                }
            }
        }
        let [[Some(health_on), Some(verify_on)], [Some(health_off), Some(verify_off)]] = measured else {
            return Err("a measurement is missing".into());
        };
        for (on_name, off_name, mut on, mut off) in [
            ("health-metrics-on", "health-metrics-off", health_on, health_off),
            ("verify-api-key-metrics-on", "verify-api-key-metrics-off", verify_on, verify_off),
        ] {
            on.name = on_name;
            off.name = off_name;
            on.extra.insert("ratio_to_metrics_off", on.per_second() / off.per_second());
            off.print();
            on.print();
            all.extend([off, on]);
        }
    }
    drop(servers);
    off.shutdown().await?;
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    for threads in [1, cores] {
        let figures = recording(threads, seconds).await?;
        figures.print();
        all.push(figures);
    }
    Ok(all)
}

/// What the RPC layer does per call with metrics on, alone: the method looked up, the handle cloned and
/// dropped, the call recorded; `threads` threads record the same method, sharing its counters as the cores of a
/// busy server do. (Not included: the task-local slot for the error reason, one more small future per call.)
async fn recording(threads: usize, seconds: Duration) -> BenchResult<Figures> {
    let metrics = Arc::new(Metrics::new(&[pb::FILE_DESCRIPTOR_SET])?);
    let mut figures = on_threads("metrics-record-1000", threads, seconds, move || {
        for _ in 0..RECORDED {
            let handle = black_box(metrics.clone());
            let method = handle.method(black_box("/keymint.apikeys.v1.ApiKeyService/VerifyApiKey"));
            handle.rpc(method, tonic::Code::Ok, black_box(40), None);
        }
        true
    })
    .await;
    figures.in_flight = threads;
    let recorded = figures.calls as f64 * RECORDED as f64;
    figures.extra.insert("ns_per_call", threads as f64 * figures.seconds * 1e9 / recorded.max(1.0));
    Ok(figures)
}

/// Two measurements of the same calls as one.
fn merge(mut a: Figures, b: Figures) -> Figures {
    a.calls += b.calls;
    a.errors += b.errors;
    a.seconds += b.seconds;
    a.latencies_us.extend(b.latencies_us);
    a
}
