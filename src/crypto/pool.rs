//! A pool of ready RSA key pairs per configured size, filled by background threads, so that issuing a key costs
//! about one database write instead of a key generation. Pool keys live in memory only and are wiped when
//! dropped; dropping the pool stops the workers after the key each is generating, without waiting for a refill.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use tokio::sync::{Mutex, mpsc};
use tracing::{debug, error, info};

use super::keygen::{RsaBits, RsaKeyPair};

/// How the pool is sized.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// The sizes this server issues; each gets its own pool.
    pub sizes: Vec<RsaBits>,
    /// The size a request that names none gets; one of `sizes`.
    pub default: RsaBits,
    /// Ready keys kept per size.
    pub depth: usize,
    /// Generating threads per size.
    pub workers: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("this server does not issue {bits}-bit keys; it issues {configured}")]
    NotConfigured { bits: u32, configured: String },
    #[error("no key generator is running for {0}-bit keys")]
    Stopped(u32),
}

/// How long a request waits for the pool's workers before generating a key itself. The workers run under
/// SCHED_IDLE and get no CPU at all while other work saturates the machine; a request must not wait for that to
/// end. Several key generations long, so that the workers answer first whenever they run.
const STARVED_AFTER: Duration = Duration::from_millis(300);

/// What the pool has done, for logs and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    pub bits: u32,
    pub depth: usize,
    pub capacity: usize,
    pub generated: u64,
    /// Total time spent generating, summed over workers.
    pub generating: Duration,
}

pub struct KeyPool {
    pools: Vec<SizePool>,
    default: RsaBits,
}

struct SizePool {
    bits: RsaBits,
    ready: Mutex<mpsc::Receiver<RsaKeyPair>>,
    /// Kept to read the pool's depth; the channel closes when `ready` drops, whatever senders remain.
    probe: mpsc::Sender<RsaKeyPair>,
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    generated: AtomicU64,
    generating_us: AtomicU64,
}

/// Keys waiting in a pool's channel.
fn depth(sender: &mpsc::Sender<RsaKeyPair>) -> usize {
    sender.max_capacity() - sender.capacity()
}

impl KeyPool {
    /// Starts the workers; the pools fill in the background.
    pub fn start(config: &PoolConfig) -> KeyPool {
        let mut sizes = config.sizes.clone();
        sizes.dedup();
        let pools = sizes
            .into_iter()
            .map(|bits| SizePool::start(bits, config.depth.max(1), config.workers.max(1)))
            .collect();
        KeyPool { pools, default: config.default }
    }

    /// A ready key of the requested size (the default when None), or the next one generated if none is ready.
    pub async fn take(&self, bits: Option<RsaBits>) -> Result<RsaKeyPair, PoolError> {
        let bits = bits.unwrap_or(self.default);
        let pool = self.pools.iter().find(|p| p.bits == bits).ok_or_else(|| PoolError::NotConfigured {
            bits: bits.bits(),
            configured: self
                .pools
                .iter()
                .map(|p| format!("{}-bit", p.bits.bits()))
                .collect::<Vec<_>>()
                .join(", "),
        })?;
        pool.take().await
    }

    pub fn stats(&self) -> Vec<PoolStats> {
        self.pools.iter().map(SizePool::stats).collect()
    }
}

impl SizePool {
    fn start(bits: RsaBits, depth: usize, workers: usize) -> SizePool {
        let (sender, ready) = mpsc::channel(depth);
        let counters = Arc::new(Counters::default());
        for n in 0..workers {
            let (sender, counters) = (sender.clone(), counters.clone());
            let spawned = thread::Builder::new()
                .name(format!("keygen-{}-{n}", bits.bits()))
                .spawn(move || generate_until_closed(bits, &sender, &counters));
            if let Err(e) = spawned {
                error!(bits = bits.bits(), error = %e, "cannot start a key generation thread");
            }
        }
        SizePool { bits, ready: Mutex::new(ready), probe: sender, counters }
    }

    async fn take(&self) -> Result<RsaKeyPair, PoolError> {
        let stopped = PoolError::Stopped(self.bits.bits());
        // Takers queue on the lock in arrival order; the first waits for the next key if none is ready.
        let mut ready = self.ready.lock().await;
        let key = match tokio::time::timeout(STARVED_AFTER, ready.recv()).await {
            Ok(key) => key.ok_or(stopped)?,
            Err(_) => {
                // The workers got no CPU in time: generate one at normal priority, whichever comes first wins
                // (the other key is wiped when dropped, or stays in the pool).
                let bits = self.bits;
                let own = tokio::task::spawn_blocking(move || RsaKeyPair::generate(bits));
                tokio::select! {
                    key = ready.recv() => key.ok_or(stopped)?,
                    own = own => match own {
                        Ok(Ok(key)) => {
                            info!(bits = bits.bits(), "generated a key for a waiting request: the pool's workers \
                                got no CPU in time");
                            key
                        }
                        _ => ready.recv().await.ok_or(stopped)?,
                    },
                }
            }
        };
        drop(ready);
        let depth = depth(&self.probe);
        debug!(bits = self.bits.bits(), depth, "took a key from the pool");
        if depth == 0 {
            info!(bits = self.bits.bits(), "key pool is empty: key requests wait for generation");
        }
        Ok(key)
    }

    fn stats(&self) -> PoolStats {
        let c = &self.counters;
        PoolStats {
            bits: self.bits.bits(),
            depth: depth(&self.probe),
            capacity: self.probe.max_capacity(),
            generated: c.generated.load(Ordering::Relaxed),
            generating: Duration::from_micros(c.generating_us.load(Ordering::Relaxed)),
        }
    }
}

/// A worker: generates keys and hands them to the pool, blocking while it is full, until the pool is dropped.
fn generate_until_closed(bits: RsaBits, sender: &mpsc::Sender<RsaKeyPair>, counters: &Counters) {
    yield_to_requests(bits);
    while !sender.is_closed() {
        let started = Instant::now();
        let key = match RsaKeyPair::generate(bits) {
            Ok(key) => key,
            Err(e) => {
                error!(bits = bits.bits(), error = %e, "key generation failed; retrying in a second");
                thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        let took_us = started.elapsed().as_micros() as u64;
        let generated = counters.generated.fetch_add(1, Ordering::Relaxed) + 1;
        let generating_us = counters.generating_us.fetch_add(took_us, Ordering::Relaxed) + took_us;
        if sender.blocking_send(key).is_err() {
            return; // The pool is gone: the key is dropped and wiped.
        }
        let depth = depth(sender);
        debug!(bits = bits.bits(), depth, took_ms = took_us / 1000, "added a key to the pool");
        if depth == sender.max_capacity() {
            let mean_ms = generating_us as f64 / generated as f64 / 1000.0;
            info!(
                bits = bits.bits(),
                depth,
                generated,
                mean_ms = format!("{mean_ms:.1}"),
                "key pool is full"
            );
        }
    }
}

/// Refilling the pool must not slow the requests it serves: on Linux the worker runs under SCHED_IDLE, so it gets
/// the cores only when nothing else wants them. Requests waiting for a key leave the cores idle, so the workers
/// still run at full speed when keys are what the load needs.
fn yield_to_requests(bits: RsaBits) {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::unix::{
            NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy,
            thread_native_id,
        };
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        // SCHED_IDLE has one static priority, the policy's minimum.
        let priority = thread_priority::ThreadPriority::Min;
        if let Err(e) = set_thread_priority_and_policy(thread_native_id(), priority, idle) {
            tracing::warn!(bits = bits.bits(), error = ?e, "key generation runs at normal priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = bits;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(sizes: Vec<RsaBits>) -> PoolConfig {
        PoolConfig { sizes, default: RsaBits::Rsa2048, depth: 2, workers: 1 }
    }

    #[tokio::test]
    async fn hands_out_keys_of_the_configured_sizes_only() {
        let pool = KeyPool::start(&config(vec![RsaBits::Rsa2048]));
        let key = pool.take(None).await.expect("default size");
        assert!(key.public_spki_pem().starts_with("-----BEGIN PUBLIC KEY-----"));
        let refused = pool.take(Some(RsaBits::Rsa4096)).await.expect_err("not configured");
        assert_eq!(refused, PoolError::NotConfigured { bits: 4096, configured: "2048-bit".into() });
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_does_not_wait_for_starved_workers() {
        // No workers at all: the most a starved pool can be.
        let pool = SizePool::start(RsaBits::Rsa2048, 1, 0);
        let started = Instant::now();
        let key = pool.take().await.expect("a key generated for the request");
        assert!(key.public_spki_pem().starts_with("-----BEGIN PUBLIC KEY-----"));
        assert!(started.elapsed() >= STARVED_AFTER, "the workers had their chance first");
    }

    #[tokio::test]
    async fn refills_to_its_depth_and_counts_what_it_generated() {
        let pool = KeyPool::start(&config(vec![RsaBits::Rsa2048]));
        for _ in 0..3 {
            pool.take(None).await.expect("key");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while pool.stats()[0].depth < 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let stats = pool.stats()[0];
        assert_eq!((stats.depth, stats.capacity), (2, 2));
        // The workers made at least what the pool holds now. Not necessarily the three taken as well: on a busy
        // machine a request that waited 300 ms makes its own key, which the pool does not count.
        assert!(stats.generated >= 2, "{stats:?}");
        assert!(stats.generating > Duration::ZERO);
    }
}
