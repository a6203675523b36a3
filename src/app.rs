//! Wiring: open the store, migrate, set up the first start, serve, and shut down gracefully.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{
    net::TcpListener,
    sync::{oneshot, watch},
    task::JoinHandle,
};
use tracing::{info, warn};

use crate::{
    api::{
        http::operations::Readiness,
        net::tls::{TlsCertificates, TlsError},
        server::{self, Operations, ServeError},
    },
    config::Config,
    crypto::pool::KeyPool,
    domain::{ids::IdGenerator, time::SystemClock},
    service::{
        KeySource, Services,
        access::{AdminToken, check_admin_token},
        oauth::OAuthSettings,
        signing_keys::supplied_master_key,
    },
    store::{self, EventStore, StoreError},
};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("setup: {0}")]
    Setup(#[from] crate::service::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("server: {0}")]
    Serve(#[from] ServeError),
    #[error("server task: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("{0}")]
    Tls(#[from] TlsError),
}

/// A server that is accepting calls.
pub struct Running {
    pub addr: SocketAddr,
    pub admin_token: AdminToken,
    pub services: Arc<Services>,
    pub key_pool: Arc<KeyPool>,
    /// Turns readiness (and health) false: the first step of a shutdown.
    stopping: watch::Sender<bool>,
    drain: Duration,
    /// How long calls in flight may take to finish once the listener is closed: a unary call is cut at the
    /// request timeout anyway, so only streams (a health `Watch`) and stuck connections outlast it.
    grace: Duration,
    tls: Option<Arc<TlsCertificates>>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ServeError>>,
    follower: Option<JoinHandle<()>>,
    flusher: (oneshot::Sender<()>, JoinHandle<()>),
    maintainer: (oneshot::Sender<()>, JoinHandle<()>),
}

impl Running {
    /// Shuts down in steps, each logged with how long it took: readiness and health turn false; calls are
    /// still served for the drain delay (`--shutdown-drain`), so that load balancers notice; then the listener
    /// closes and the calls in flight finish; then the API key usage counted since the last flush is written.
    pub async fn shutdown(self) -> Result<(), AppError> {
        let started = Instant::now();
        self.stopping.send_replace(true);
        info!(
            drain_ms = self.drain.as_millis() as u64,
            "shutting down: /ready answers 503, health NOT_SERVING"
        );
        if !self.drain.is_zero() {
            tokio::time::sleep(self.drain).await;
            info!(took_ms = ms(started), "shutdown: drain delay over, closing the listener");
        }
        let step = Instant::now();
        let _ = self.stop.send(());
        let mut task = self.task;
        let served = match tokio::time::timeout(self.grace, &mut task).await {
            Ok(served) => {
                info!(took_ms = ms(step), "shutdown: listener closed, calls in flight finished");
                Some(served)
            }
            Err(_) => {
                task.abort();
                warn!(
                    took_ms = ms(step),
                    "shutdown: listener closed; connections still open after the request timeout (streams such \
                     as health Watch) were closed"
                );
                None
            }
        };
        if let Some(follower) = self.follower {
            follower.abort();
        }
        let (stop_maintaining, maintainer) = self.maintainer;
        let _ = stop_maintaining.send(());
        let _ = maintainer.await;
        let (stop_flushing, flusher) = self.flusher;
        let _ = stop_flushing.send(());
        let _ = flusher.await;
        let step = Instant::now();
        let flushed = self.services.flush_usage().await;
        if let Some(served) = served {
            served??;
        }
        let flushed = flushed?;
        info!(keys = flushed, took_ms = ms(step), "shutdown: wrote API key usage");
        info!(took_ms = ms(started), "shutdown complete");
        Ok(())
    }

    /// Reads the TLS files again (what SIGHUP does): handshakes from now on use them, open connections go on. On
    /// an error the files in use stay; without TLS there is nothing to read. The files are read and parsed on a
    /// blocking thread, not on the threads that serve calls.
    pub async fn reload_tls(&self) -> Result<(), AppError> {
        let Some(tls) = self.tls.clone() else { return Ok(()) };
        let reloading = tls.clone();
        let reloaded = tokio::task::spawn_blocking(move || reloading.reload()).await?;
        match reloaded {
            Ok(()) => {
                info!(cert = %tls.files().cert.display(), "TLS: reloaded the certificate and key");
                Ok(())
            }
            Err(error) => {
                tracing::error!(%error, "TLS: reload failed; the certificate loaded before stays in use");
                Err(error.into())
            }
        }
    }

    /// What the port's TLS has done (handshakes and reloads, as `/metrics` reports them), when TLS is on.
    pub fn tls_counts(&self) -> Option<&crate::api::net::tls::TlsCounts> {
        self.tls.as_deref().map(TlsCertificates::counts)
    }

    /// Waits until the server ends by itself (it only does on an error).
    pub async fn wait(&mut self) -> Result<(), AppError> {
        (&mut self.task).await??;
        Ok(())
    }
}

pub async fn open_store(config: &Config) -> Result<Arc<dyn EventStore>, AppError> {
    Ok(store::open(config.database_url.as_deref(), &config.data_dir).await?)
}

/// Checks the settings, binds the listener, opens the store, sets up a first start and starts serving in the
/// background. Nothing is written (to the database or the data directory) before the settings are checked and
/// the port is bound, so that a start that fails on them leaves nothing behind: a first start with a wrong
/// setting must not create the organization or the admin token of a server that never ran.
pub async fn start(config: &Config) -> Result<Running, AppError> {
    // Bad TLS files stop the start before anything else is set up.
    let tls =
        config.tls_files().map_err(AppError::Config)?.map(TlsCertificates::load).transpose()?.map(Arc::new);
    let pool = config.pool().map_err(AppError::Config)?;
    check_admin_token(config.admin_token.as_deref()).map_err(setting)?;
    supplied_master_key(config.master_key.as_deref(), config.shared_database()).map_err(setting)?;
    // Bound before the store opens: a busy port fails here. Connections made while the store opens wait in the
    // listen backlog and are served once it is open.
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| AppError::Listen { addr: config.listen, source })?;
    let addr = listener.local_addr().map_err(|source| AppError::Listen { addr: config.listen, source })?;

    let store = open_store(config).await?;
    let node = config.node_id.unwrap_or_else(random_node);
    let key_pool = Arc::new(KeyPool::start(&pool));
    let services = Arc::new(
        Services::new(store, Arc::new(SystemClock), IdGenerator::new(node), key_pool.clone())
            .with_cache_capacity(config.cache_capacity),
    );
    let admin_token = services.bootstrap(&config.data_dir, config.admin_token.as_deref()).await?;
    let oauth = |issuer: String| OAuthSettings { issuer, access_token_ttl: config.access_token_ttl };
    services.configure_oauth(oauth(config.issuer.clone().unwrap_or_default()));
    // Before anything runs: a master key that cannot open the stored signing keys stops the start here.
    services
        .open_signing_keys(&config.data_dir, config.master_key.as_deref(), config.shared_database())
        .await?;
    let follower = services.clone().follow_changes().await?;
    let (stop_flushing, flushing_stopped) = oneshot::channel();
    let flusher = (
        stop_flushing,
        services.clone().flush_usage_every(Duration::from_millis(config.usage_flush_ms), flushing_stopped),
    );

    let scheme = if tls.is_some() { "https" } else { "http" };
    services.configure_oauth(oauth(config.issuer.clone().unwrap_or_else(|| format!("{scheme}://{addr}"))));
    let (stop_maintaining, maintaining_stopped) = oneshot::channel();
    let maintainer = (
        stop_maintaining,
        services.clone().maintain_signing_keys_every(
            config.signing_key_rotation,
            (config.signing_key_rotation / 10).clamp(Duration::from_secs(1), Duration::from_secs(60)),
            maintaining_stopped,
        ),
    );
    info!(%addr, node, issuer = %services.oauth_settings().issuer, tls = tls.is_some(),
        client_certificates = tls.as_ref().is_some_and(|tls| tls.files().client_ca.is_some()),
        "keymint is listening (gRPC, gRPC-Web, reflection, health, OAuth 2.0, Envoy ext_authz)");

    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let (stopping, stopping_seen) = watch::channel(false);
    let operations = Operations {
        readiness: Readiness::new(services.store().state(), key_pool.clone(), stopping_seen),
        metrics: config.metrics,
    };
    let task = tokio::spawn(server::serve(
        listener,
        services.clone(),
        config.limits(),
        config.trusted_proxies(),
        operations,
        tls.clone(),
        shutdown,
    ));
    Ok(Running {
        addr,
        admin_token,
        services,
        key_pool,
        tls,
        stopping,
        drain: config.shutdown_drain,
        grace: config.limits().request_timeout,
        stop,
        task,
        follower,
        flusher,
        maintainer,
    })
}

/// A setting the service layer refused (its message names the setting).
fn setting(error: crate::service::Error) -> AppError {
    match error {
        crate::service::Error::Internal(message) => AppError::Config(message),
        other => AppError::Setup(other),
    }
}

/// `keymint signing-keys rotate`: adds a new signing key to the store, sealed under the configured master key.
pub async fn rotate_signing_key(config: &Config) -> Result<String, AppError> {
    /// This command issues no application keys, so it starts no key pool.
    struct NoKeys;
    #[async_trait::async_trait]
    impl KeySource for NoKeys {
        async fn next_key(
            &self,
            _: Option<crate::crypto::keygen::RsaBits>,
        ) -> crate::service::Result<crate::crypto::keygen::RsaKeyPair> {
            Err(crate::service::Error::Internal("no key pool in this command".into()))
        }
    }
    supplied_master_key(config.master_key.as_deref(), config.shared_database()).map_err(setting)?;
    let store = open_store(config).await?;
    let node = config.node_id.unwrap_or_else(random_node);
    let services = Services::new(store, Arc::new(SystemClock), IdGenerator::new(node), Arc::new(NoKeys));
    services.configure_oauth(OAuthSettings {
        issuer: config.issuer.clone().unwrap_or_default(),
        access_token_ttl: config.access_token_ttl,
    });
    services
        .open_signing_keys(&config.data_dir, config.master_key.as_deref(), config.shared_database())
        .await?;
    Ok(services.rotate_signing_key().await?)
}

/// Serves until SIGINT or SIGTERM, then shuts down gracefully. With TLS on, SIGHUP reads its files again.
pub async fn run(config: &Config) -> Result<(), AppError> {
    // Listening before the port opens: a SIGHUP right after a start must not end the process.
    let mut hangups = Hangups::listen(matches!(config.tls_files(), Ok(Some(_))));
    let mut running = start(config).await?;
    // Created once, so that no signal falls between two turns of the loop.
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            result = running.wait() => return result,
            () = &mut shutdown => break,
            () = hangups.next() => {
                // Logged by reload_tls; a failed reload leaves the server serving as before.
                let _ = running.reload_tls().await;
            }
        }
    }
    running.shutdown().await
}

fn ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// SIGHUPs, when they reload something; otherwise none arrive (and SIGHUP keeps its default: it ends the
/// process).
struct Hangups(Option<tokio::signal::unix::Signal>);

impl Hangups {
    fn listen(wanted: bool) -> Hangups {
        let signal = wanted.then(|| tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()));
        Hangups(signal.and_then(|signal| {
            signal
                .map_err(
                    |error| tracing::warn!(%error, "cannot listen for SIGHUP: TLS reloads need a restart"),
                )
                .ok()
        }))
    }

    async fn next(&mut self) {
        if let Some(signal) = &mut self.0
            && signal.recv().await.is_some()
        {
            info!("SIGHUP: reloading the TLS files");
            return;
        }
        std::future::pending().await
    }
}

/// A node number for a process that was given none: random, so that two such processes rarely share one.
fn random_node() -> u16 {
    let mut bytes = [0_u8; 2];
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    u16::from_le_bytes(bytes) & crate::domain::ids::MAX_NODE
}
