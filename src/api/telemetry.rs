//! One log event per RPC: method, status code, latency, client address and organization (at debug level for
//! UNAUTHENTICATED). A call the client or a proxy reset before it was answered is logged as CANCELLED. Never a
//! header value: they carry tokens.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use tower::{Layer, Service};
use tracing::Instrument;

use super::client_address::ClientAddress;

#[derive(Debug, Clone, Copy, Default)]
pub struct RpcLogLayer;

impl<S> Layer<S> for RpcLogLayer {
    type Service = RpcLog<S>;

    fn layer(&self, inner: S) -> RpcLog<S> {
        RpcLog { inner }
    }
}

#[derive(Debug, Clone)]
pub struct RpcLog<S> {
    inner: S,
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
        // Dropped with the future when the stream is reset before the answer: it logs the call then.
        let mut unanswered = Unanswered::new();
        let response = self.inner.call(request);
        Box::pin(
            async move {
                let result = response.await;
                let latency_us = unanswered.answered();
                match &result {
                    // A handler's error comes as a trailers-only response: grpc-status in the headers. Without it
                    // the call succeeded (its status follows in the trailers).
                    Ok(response) => {
                        let code = response
                            .headers()
                            .get("grpc-status")
                            .map_or(tonic::Code::Ok, |v| tonic::Code::from_bytes(v.as_bytes()));
                        // Calls with a missing or unknown credential are noise anyone can make, and a log line
                        // each would let them fill the log; they are counted (Services::unknown_credentials).
                        if code == tonic::Code::Unauthenticated {
                            tracing::debug!(code = ?code, latency_us, "rpc");
                        } else {
                            tracing::info!(code = ?code, latency_us, "rpc");
                        }
                    }
                    Err(error) => tracing::warn!(%error, latency_us, "rpc failed"),
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
}

impl Unanswered {
    fn new() -> Self {
        Unanswered { started: Some(Instant::now()) }
    }

    /// Disarms it and says how long the call took, in microseconds.
    fn answered(&mut self) -> u64 {
        self.started.take().map_or(0, |started| started.elapsed().as_micros() as u64)
    }
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some(started) = self.started {
            let latency_us = started.elapsed().as_micros() as u64;
            tracing::info!(code = ?tonic::Code::Cancelled, latency_us, "rpc reset by the client or a proxy");
        }
    }
}

/// One log event per HTTP request to the plain-HTTP routes (OAuth, metadata): method, path (never the query),
/// HTTP status, latency and organization; at debug level for 401, which anyone can cause. Never a header or a
/// body: they carry assertions and tokens.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpLogLayer;

impl<S> Layer<S> for HttpLogLayer {
    type Service = HttpLog<S>;

    fn layer(&self, inner: S) -> HttpLog<S> {
        HttpLog { inner }
    }
}

#[derive(Debug, Clone)]
pub struct HttpLog<S> {
    inner: S,
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
        let started = Instant::now();
        let response = self.inner.call(request);
        Box::pin(
            async move {
                let result = response.await;
                let latency_us = started.elapsed().as_micros() as u64;
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
