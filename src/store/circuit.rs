//! A circuit breaker around the store: when the database cannot be reached, calls fail at once with
//! `Unavailable` instead of each waiting for a connection, a background probe notices when it answers again,
//! and the state is published for health checks and for the caches that may answer from memory meanwhile.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::domain::{
    AggregateType, Timestamp,
    lease::{BucketGrant, QuotaGrant},
    rate_limit::{DailyQuota, RateLimit},
};

use super::{
    ApiKeyQuery, ApiKeyRow, AppKeyRow, AppPublicKey, AppRow, Append, ChangeFeed, CredentialRow, EventRange,
    EventStore, Listed, OrgRow, Page, ProjectRow, RecordedEvent, Result, SecretMatch, StoreError, UsageDelta,
    UsedAssertion,
};

/// How often an open circuit asks the database whether it is back, and how long one probe may take.
const PROBE_INTERVAL: Duration = Duration::from_millis(250);
const PROBE_TIMEOUT: Duration = Duration::from_millis(1000);

/// Whether the store is reachable, as last seen; cheap to clone and to ask.
#[derive(Debug, Clone)]
pub struct StoreState(watch::Receiver<bool>);

impl StoreState {
    pub fn is_up(&self) -> bool {
        *self.0.borrow()
    }

    /// Waits for the next change and returns the new state; None when nothing can change it any more.
    pub async fn changed(&mut self) -> Option<bool> {
        self.0.changed().await.ok()?;
        Some(*self.0.borrow_and_update())
    }

    /// The state of a store without a circuit: always up.
    pub fn always_up() -> StoreState {
        StoreState(watch::channel(true).1)
    }
}

/// The store, behind its circuit.
pub struct Guarded {
    inner: Arc<dyn EventStore>,
    circuit: Arc<Circuit>,
}

struct Circuit {
    open: AtomicBool,
    probing: AtomicBool,
    state: watch::Sender<bool>,
}

impl Guarded {
    pub fn new(inner: Arc<dyn EventStore>) -> Guarded {
        let circuit = Circuit {
            open: AtomicBool::new(false),
            probing: AtomicBool::new(false),
            state: watch::channel(true).0,
        };
        Guarded { inner, circuit: Arc::new(circuit) }
    }

    async fn guard<T>(&self, call: impl Future<Output = Result<T>>) -> Result<T> {
        if self.circuit.open.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable("the database did not answer a moment ago".into()));
        }
        let result = call.await;
        if let Err(StoreError::Unavailable(cause)) = &result {
            self.suspect(cause);
        }
        result
    }

    /// A call failed as if the database were gone: find out. A pool that is only busy times out too, so the
    /// circuit opens only when a probe on a connection of its own fails as well.
    fn suspect(&self, cause: &str) {
        if self.circuit.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let (inner, circuit, cause) = (self.inner.clone(), self.circuit.clone(), cause.to_owned());
        tokio::spawn(async move {
            let mut opened: Option<Instant> = None;
            loop {
                match tokio::time::timeout(PROBE_TIMEOUT, inner.ping()).await {
                    Ok(Ok(())) => break,
                    failed => {
                        if opened.is_none() {
                            let probe = match failed {
                                Ok(Err(e)) => e.to_string(),
                                _ => "no answer within a second".to_owned(),
                            };
                            warn!(%cause, %probe, "the database is unreachable: store calls answer UNAVAILABLE \
                                (memory answers what it can) until a probe succeeds");
                            circuit.open.store(true, Ordering::Release);
                            circuit.state.send_replace(false);
                            opened = Some(Instant::now());
                        }
                        tokio::time::sleep(PROBE_INTERVAL).await;
                    }
                }
            }
            if let Some(since) = opened {
                circuit.open.store(false, Ordering::Release);
                circuit.state.send_replace(true);
                info!(down_ms = since.elapsed().as_millis() as u64, "the database answers again");
            }
            circuit.probing.store(false, Ordering::Release);
        });
    }
}

#[async_trait]
impl EventStore for Guarded {
    async fn append(&self, append: Append<'_>) -> Result<Vec<RecordedEvent>> {
        self.guard(self.inner.append(append)).await
    }
    async fn append_all(&self, appends: Vec<Append<'_>>) -> Result<Vec<RecordedEvent>> {
        self.guard(self.inner.append_all(appends)).await
    }
    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }
    fn state(&self) -> StoreState {
        StoreState(self.circuit.state.subscribe())
    }
    async fn load(&self, aggregate_type: AggregateType, id: &str) -> Result<Vec<RecordedEvent>> {
        self.guard(self.inner.load(aggregate_type, id)).await
    }
    async fn events(
        &self,
        aggregate_type: AggregateType,
        id: &str,
        range: EventRange,
    ) -> Result<Vec<RecordedEvent>> {
        self.guard(self.inner.events(aggregate_type, id, range)).await
    }
    async fn is_empty(&self) -> Result<bool> {
        self.guard(self.inner.is_empty()).await
    }
    async fn position(&self) -> Result<u64> {
        self.guard(self.inner.position()).await
    }
    async fn org(&self, id: &str) -> Result<Option<OrgRow>> {
        self.guard(self.inner.org(id)).await
    }
    async fn org_by_name(&self, name: &str) -> Result<Option<OrgRow>> {
        self.guard(self.inner.org_by_name(name)).await
    }
    async fn orgs(&self, page: Page) -> Result<Listed<OrgRow>> {
        self.guard(self.inner.orgs(page)).await
    }
    async fn project(&self, org_id: &str, id: &str) -> Result<Option<ProjectRow>> {
        self.guard(self.inner.project(org_id, id)).await
    }
    async fn project_by_name(&self, org_id: &str, name: &str) -> Result<Option<ProjectRow>> {
        self.guard(self.inner.project_by_name(org_id, name)).await
    }
    async fn projects(&self, org_id: &str, page: Page) -> Result<Listed<ProjectRow>> {
        self.guard(self.inner.projects(org_id, page)).await
    }
    async fn app(&self, org_id: &str, project_id: &str, id: &str) -> Result<Option<AppRow>> {
        self.guard(self.inner.app(org_id, project_id, id)).await
    }
    async fn app_by_name(&self, project_id: &str, name: &str) -> Result<Option<AppRow>> {
        self.guard(self.inner.app_by_name(project_id, name)).await
    }
    async fn apps(&self, org_id: &str, project_id: &str, page: Page) -> Result<Listed<AppRow>> {
        self.guard(self.inner.apps(org_id, project_id, page)).await
    }
    async fn app_key(
        &self,
        org_id: &str,
        project_id: &str,
        app_id: &str,
        id: &str,
    ) -> Result<Option<AppKeyRow>> {
        self.guard(self.inner.app_key(org_id, project_id, app_id, id)).await
    }
    async fn app_keys(
        &self,
        org_id: &str,
        project_id: &str,
        app_id: &str,
        page: Page,
        public_key: bool,
    ) -> Result<Listed<AppKeyRow>> {
        self.guard(self.inner.app_keys(org_id, project_id, app_id, page, public_key)).await
    }
    async fn public_key(&self, app_id: &str, key_id: &str) -> Result<Option<String>> {
        self.guard(self.inner.public_key(app_id, key_id)).await
    }
    async fn credential(&self, token_hash: &str) -> Result<Option<CredentialRow>> {
        self.guard(self.inner.credential(token_hash)).await
    }
    async fn credential_count(&self) -> Result<u64> {
        self.guard(self.inner.credential_count()).await
    }
    async fn app_in_org(&self, org_id: &str, app_id: &str) -> Result<bool> {
        self.guard(self.inner.app_in_org(org_id, app_id)).await
    }
    async fn oauth_client(&self, app_id: &str) -> Result<Option<AppRow>> {
        self.guard(self.inner.oauth_client(app_id)).await
    }
    async fn app_public_key(&self, app_id: &str, key_id: &str) -> Result<Option<AppPublicKey>> {
        self.guard(self.inner.app_public_key(app_id, key_id)).await
    }
    async fn use_assertions(&self, used: &[UsedAssertion]) -> Result<Vec<bool>> {
        self.guard(self.inner.use_assertions(used)).await
    }
    async fn tokens_revoked(&self, jtis: &[String]) -> Result<Vec<bool>> {
        self.guard(self.inner.tokens_revoked(jtis)).await
    }
    async fn revoked_tokens(&self, app_id: &str) -> Result<Vec<String>> {
        self.guard(self.inner.revoked_tokens(app_id)).await
    }
    async fn prune_expired_tokens(&self, now_secs: i64) -> Result<u64> {
        self.guard(self.inner.prune_expired_tokens(now_secs)).await
    }
    async fn api_key(&self, org_id: &str, id: &str) -> Result<Option<ApiKeyRow>> {
        self.guard(self.inner.api_key(org_id, id)).await
    }
    async fn api_keys(&self, org_id: &str, query: &ApiKeyQuery) -> Result<Vec<ApiKeyRow>> {
        self.guard(self.inner.api_keys(org_id, query)).await
    }
    async fn api_key_by_secret(&self, secret_hash: &str) -> Result<Option<SecretMatch>> {
        self.guard(self.inner.api_key_by_secret(secret_hash)).await
    }
    async fn record_usage(&self, usage: &[UsageDelta]) -> Result<()> {
        self.guard(self.inner.record_usage(usage)).await
    }
    async fn lease_tokens(
        &self,
        key_id: &str,
        limit: RateLimit,
        now: Timestamp,
        want: u64,
    ) -> Result<BucketGrant> {
        self.guard(self.inner.lease_tokens(key_id, limit, now, want)).await
    }
    async fn lease_quota(
        &self,
        key_id: &str,
        quota: DailyQuota,
        day: i64,
        want: u64,
        owed: u64,
    ) -> Result<QuotaGrant> {
        self.guard(self.inner.lease_quota(key_id, quota, day, want, owed)).await
    }
    fn connections(&self) -> Vec<super::PoolConnections> {
        self.inner.connections()
    }
    async fn changes(&self) -> Result<Option<ChangeFeed>> {
        // The feed reconnects by itself and says when it was down.
        self.inner.changes().await
    }
    async fn rebuild_projections(&self) -> Result<u64> {
        self.guard(self.inner.rebuild_projections()).await
    }
    async fn projection_snapshot(&self) -> Result<Vec<String>> {
        self.guard(self.inner.projection_snapshot()).await
    }
}
