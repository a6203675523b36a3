//! The client's address of each request, worked out once at the edge of the router: the TCP peer, or, when the
//! peer is a trusted proxy, the address that proxy forwarded (domain/client_address.rs has the rule). Handlers
//! and the request logs read it from the request's extensions, so that they all see the same address.

use std::{
    net::IpAddr,
    sync::Arc,
    task::{Context, Poll},
};

use tonic::transport::server::TcpConnectInfo;
use tower::{Layer, Service};

use crate::domain::client_address::TrustedProxies;

/// The address a request came from, as keymint believes it: in the request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress(pub IpAddr);

/// The client's address of a gRPC call; None only for a call that did not come over TCP (in-process).
pub fn of<T>(request: &tonic::Request<T>) -> Option<IpAddr> {
    request
        .extensions()
        .get::<ClientAddress>()
        .map(|client| client.0)
        .or_else(|| request.remote_addr().map(|addr| addr.ip().to_canonical()))
}

#[derive(Debug, Clone, Default)]
pub struct ClientAddressLayer {
    trusted: Arc<TrustedProxies>,
}

impl ClientAddressLayer {
    pub fn new(trusted: TrustedProxies) -> Self {
        ClientAddressLayer { trusted: Arc::new(trusted) }
    }
}

impl<S> Layer<S> for ClientAddressLayer {
    type Service = WithClientAddress<S>;

    fn layer(&self, inner: S) -> WithClientAddress<S> {
        WithClientAddress { inner, trusted: self.trusted.clone() }
    }
}

#[derive(Debug, Clone)]
pub struct WithClientAddress<S> {
    inner: S,
    trusted: Arc<TrustedProxies>,
}

impl<S, B> Service<http::Request<B>> for WithClientAddress<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let peer = request.extensions().get::<TcpConnectInfo>().and_then(|info| info.remote_addr);
        if let Some(peer) = peer {
            // A value that is not text ends the walk like any entry that is not an address.
            let forwarded =
                request.headers().get_all("x-forwarded-for").iter().map(|v| v.to_str().unwrap_or(""));
            let client = self.trusted.client(peer.ip().to_canonical(), forwarded);
            request.extensions_mut().insert(ClientAddress(client));
        }
        self.inner.call(request)
    }
}
