//! One log event per RPC: method, status code, latency and organization (at debug level for UNAUTHENTICATED).
//! Never a header value: they carry tokens.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use tower::{Layer, Service};
use tracing::Instrument;

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
        let span = tracing::info_span!("rpc", method = %request.uri().path(), org = tracing::field::Empty);
        let started = Instant::now();
        let response = self.inner.call(request);
        Box::pin(
            async move {
                let result = response.await;
                let latency_us = started.elapsed().as_micros() as u64;
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
