//! The operator's endpoints on the one port: `/metrics` (Prometheus text format), `/live` and `/ready`, and the
//! readiness that they and grpc.health.v1 report. None asks for a credential: probes and scrapers carry none, and
//! nothing here names an object or a secret (see metrics/).

use std::sync::Arc;

use axum::{Router, body::Body, extract::State, routing::get};
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::json;
use tokio::sync::watch;

use crate::{crypto::pool::KeyPool, service::Services, store::StoreState};

use crate::api::http::metrics::Metrics;

/// Whether this server should be sent calls: the store answers, every key pool has made its first key, and it is
/// not shutting down.
#[derive(Clone)]
pub struct Readiness {
    store: StoreState,
    key_pool: Arc<KeyPool>,
    stopping: watch::Receiver<bool>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness").field("failing", &self.failing()).finish()
    }
}

impl Readiness {
    pub fn new(store: StoreState, key_pool: Arc<KeyPool>, stopping: watch::Receiver<bool>) -> Self {
        Readiness { store, key_pool, stopping }
    }

    /// The conditions that fail now; none when ready.
    pub fn failing(&self) -> Vec<String> {
        let mut failing = Vec::new();
        if *self.stopping.borrow() {
            failing.push("shutting down".to_owned());
        }
        if !self.store.is_up() {
            failing.push("store: the database does not answer".to_owned());
        }
        // Only until each pool's first key: a pool that a burst of AddAppKey empties later still serves (a request
        // that waits generates its own key), and an instance pulled out of rotation for it would only send the
        // burst to the others.
        for pool in self.key_pool.stats().iter().filter(|pool| pool.depth == 0 && pool.generated == 0) {
            failing.push(format!("key pool: warming up, no {}-bit key generated yet", pool.bits));
        }
        failing
    }

    /// Changes to true when the server starts shutting down.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.clone()
    }
}

struct Endpoints {
    services: Arc<Services>,
    readiness: Readiness,
    metrics: Option<Arc<Metrics>>,
}

type Shared = State<Arc<Endpoints>>;

/// `/live` and `/ready`, and `/metrics` when metrics are on.
pub fn routes(services: Arc<Services>, readiness: Readiness, metrics: Option<Arc<Metrics>>) -> Router {
    let with_metrics = metrics.is_some();
    let router = Router::new().route("/live", get(live)).route("/ready", get(ready));
    let router = if with_metrics { router.route("/metrics", get(scrape)) } else { router };
    router.with_state(Arc::new(Endpoints { services, readiness, metrics }))
}

/// The process runs and its runtime answers: that is all liveness says (a store outage is no reason to restart).
async fn live() -> Response<Body> {
    answer(StatusCode::OK, "application/json", json!({ "live": true }).to_string())
}

async fn ready(State(ops): Shared) -> Response<Body> {
    let failing = ops.readiness.failing();
    let status = if failing.is_empty() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    answer(status, "application/json", json!({ "ready": failing.is_empty(), "failing": failing }).to_string())
}

async fn scrape(State(ops): Shared) -> Response<Body> {
    let Some(metrics) = &ops.metrics else {
        return answer(StatusCode::NOT_FOUND, "text/plain", "metrics are off\n".to_owned());
    };
    let ready = ops.readiness.failing().is_empty();
    let text = metrics.render(&ops.services, &ops.readiness.key_pool, ready);
    answer(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", text)
}

fn answer(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
