//! One log event per RPC: method, status code, latency, client address and organization (at debug level for
//! UNAUTHENTICATED). A call the client or a proxy reset before it was answered is logged as CANCELLED. Never a
//! header value: they carry tokens. The same layers record each call in the metrics, when they are on.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use tower::{Layer, Service};
use tracing::Instrument;

use crate::api::{
    http::metrics::{self, MethodIndex, Metrics},
    net::client_address::ClientAddress,
};

#[derive(Debug, Clone, Default)]
pub struct RpcLogLayer {
    metrics: metrics::Shared,
}

impl RpcLogLayer {
    pub fn new(metrics: metrics::Shared) -> Self {
        RpcLogLayer { metrics }
    }
}

impl<S> Layer<S> for RpcLogLayer {
    type Service = RpcLog<S>;

    fn layer(&self, inner: S) -> RpcLog<S> {
        RpcLog { inner, metrics: self.metrics.clone() }
    }
}

#[derive(Debug, Clone)]
pub struct RpcLog<S> {
    inner: S,
    metrics: metrics::Shared,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> Service<http::Request<B>> for RpcLog<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // Handlers record `org` into this span once they know it.
        let span = tracing::info_span!(
            "rpc",
            method = %request.uri().path(),
            client = client(&request),
            org = tracing::field::Empty
        );
        let counted = self.metrics.as_ref().map(|m| (m.clone(), m.method(request.uri().path())));
        // Dropped with the future when the stream is reset before the answer: it logs the call then.
        let mut unanswered = Unanswered::new(counted);
        let response = self.inner.call(request);
        Box::pin(
            async move {
                let (result, reason) = if unanswered.counted.is_some() {
                    metrics::with_reason(response).await
                } else {
                    (response.await, None)
                };
                let latency_us = unanswered.answered();
                match &result {
                    // A handler's error comes as a trailers-only response: grpc-status in the headers. Without it
                    // the call succeeded (its status follows in the trailers).
                    Ok(response) => {
                        let code = response
                            .headers()
                            .get("grpc-status")
                            .map_or(tonic::Code::Ok, |v| tonic::Code::from_bytes(v.as_bytes()));
                        unanswered.count(code, latency_us, reason);
                        // Calls with a missing or unknown credential are noise anyone can make, and a log line
                        // each would let them fill the log; they are counted (Services::unknown_credentials).
                        if code == tonic::Code::Unauthenticated {
                            tracing::debug!(code = ?code, latency_us, "rpc");
                        } else {
                            tracing::info!(code = ?code, latency_us, "rpc");
                        }
                    }
                    Err(error) => {
                        unanswered.count(tonic::Code::Unknown, latency_us, None);
                        tracing::warn!(%error, latency_us, "rpc failed")
                    }
                }
                result
            }
            .instrument(span),
        )
    }
}

/// The client's address (api/client_address.rs) for the log, when the request came over TCP.
fn client<B>(request: &http::Request<B>) -> Option<tracing::field::DisplayValue<std::net::IpAddr>> {
    request.extensions().get::<ClientAddress>().map(|client| tracing::field::display(client.0))
}

/// A call whose answer has not been given yet. Unless it is, dropping it logs the call as CANCELLED: hyper drops
/// a call's future when the client (or a proxy in between, such as Envoy when its own client went away) resets
/// the stream, and no status is sent. It is not a fault of keymint's, so it is no warning either.
struct Unanswered {
    started: Option<Instant>,
    /// The metrics the call is recorded in, and its method there.
    counted: Option<(Arc<Metrics>, MethodIndex)>,
}

impl Unanswered {
    fn new(counted: Option<(Arc<Metrics>, MethodIndex)>) -> Self {
        Unanswered { started: Some(Instant::now()), counted }
    }

    /// Disarms it and says how long the call took, in microseconds.
    fn answered(&mut self) -> u64 {
        self.started.take().map_or(0, |started| started.elapsed().as_micros() as u64)
    }

    fn count(&self, code: tonic::Code, latency_us: u64, reason: Option<&'static str>) {
        if let Some((metrics, method)) = &self.counted {
            metrics.rpc(*method, code, latency_us, reason);
        }
    }
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some(started) = self.started {
            let latency_us = started.elapsed().as_micros() as u64;
            self.count(tonic::Code::Cancelled, latency_us, None);
            tracing::info!(code = ?tonic::Code::Cancelled, latency_us, "rpc reset by the client or a proxy");
        }
    }
}

/// One log event per HTTP request to the plain-HTTP routes (OAuth, metadata): method, path (never the query),
/// HTTP status, latency and organization; at debug level for 401, which anyone can cause. Never a header or a
/// body: they carry assertions and tokens.
#[derive(Debug, Clone, Default)]
pub struct HttpLogLayer {
    metrics: metrics::Shared,
}

impl HttpLogLayer {
    pub fn new(metrics: metrics::Shared) -> Self {
        HttpLogLayer { metrics }
    }
}

impl<S> Layer<S> for HttpLogLayer {
    type Service = HttpLog<S>;

    fn layer(&self, inner: S) -> HttpLog<S> {
        HttpLog { inner, metrics: self.metrics.clone() }
    }
}

#[derive(Debug, Clone)]
pub struct HttpLog<S> {
    inner: S,
    metrics: metrics::Shared,
}

impl<S, B, R> Service<http::Request<B>> for HttpLog<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let span = tracing::info_span!(
            "http",
            method = %request.method(),
            path = %request.uri().path(),
            client = client(&request),
            org = tracing::field::Empty
        );
        let counted = self.metrics.clone().map(|m| {
            let route = m.http_route(request.uri().path());
            (m, route)
        });
        let started = Instant::now();
        let response = self.inner.call(request);
        Box::pin(
            async move {
                let result = response.await;
                let latency_us = started.elapsed().as_micros() as u64;
                if let (Some((metrics, route)), Ok(response)) = (&counted, &result) {
                    metrics.http(*route, response.status(), latency_us);
                }
                match &result {
                    Ok(response) if response.status() == http::StatusCode::UNAUTHORIZED => {
                        tracing::debug!(status = response.status().as_u16(), latency_us, "http")
                    }
                    Ok(response) => tracing::info!(status = response.status().as_u16(), latency_us, "http"),
                    Err(error) => tracing::warn!(%error, latency_us, "http request failed"),
                }
                result
            }
            .instrument(span),
        )
    }
}
