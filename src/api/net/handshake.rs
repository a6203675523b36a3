//! TLS handshakes off the accept loop: each accepted connection shakes hands in a task of its own, within a time
//! limit, so that a slow or silent client holds no other connection back; a connection is served once its
//! handshake is done. Past a number of handshakes at once, accepting waits for one to end, so that a flood of
//! clients that never finish cannot pile up sockets and tasks without bound.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures_core::Stream;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    task::JoinSet,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::api::{net::connection::Connection, net::incoming::Incoming, net::tls::TlsCertificates};

/// How long a client may take to finish its handshake before its connection is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once before accepting pauses.
const MAX_HANDSHAKES: usize = 1024;

/// The connections of a TLS port whose handshakes have completed, for tonic's `serve_with_incoming_shutdown`.
/// Dropping it (at shutdown) abandons the handshakes in progress.
pub struct TlsIncoming {
    incoming: Incoming,
    certificates: Arc<TlsCertificates>,
    timeout: Duration,
    handshakes: JoinSet<Option<TlsConnection>>,
}

impl TlsIncoming {
    pub fn new(incoming: Incoming, certificates: Arc<TlsCertificates>, timeout: Duration) -> Self {
        TlsIncoming { incoming, certificates, timeout, handshakes: JoinSet::new() }
    }
}

impl Stream for TlsIncoming {
    type Item = io::Result<TlsConnection>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            // Polling the finished handshakes also arranges a wake-up when the next one ends.
            match this.handshakes.poll_join_next(cx) {
                Poll::Ready(Some(Ok(Some(connection)))) => return Poll::Ready(Some(Ok(connection))),
                // Failed or timed out: logged by the task.
                Poll::Ready(Some(Ok(None))) => continue,
                Poll::Ready(Some(Err(error))) => {
                    tracing::error!(%error, "a TLS handshake task ended abnormally");
                    continue;
                }
                Poll::Ready(None) | Poll::Pending => {}
            }
            if this.handshakes.len() >= MAX_HANDSHAKES {
                return Poll::Pending;
            }
            match Pin::new(&mut this.incoming).poll_next(cx) {
                Poll::Ready(Some(Ok(connection))) => {
                    // The configuration of the moment: a reload affects only handshakes that start after it.
                    let acceptor = TlsAcceptor::from(this.certificates.current());
                    let certificates = this.certificates.clone();
                    this.handshakes.spawn(handshake(acceptor, connection, this.timeout, certificates));
                }
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

async fn handshake(
    acceptor: TlsAcceptor,
    connection: Connection,
    timeout: Duration,
    certificates: Arc<TlsCertificates>,
) -> Option<TlsConnection> {
    let peer = connection.connect_info().remote_addr;
    let counts = certificates.counts();
    let count = |counter: &AtomicU64| counter.fetch_add(1, Ordering::Relaxed);
    match tokio::time::timeout(timeout, acceptor.accept(connection)).await {
        Ok(Ok(stream)) => {
            count(&counts.handshakes_completed);
            Some(TlsConnection { stream })
        }
        // Clients that speak plain HTTP to this port, or distrust its certificate, or have none that the client CA
        // signed, end here: nothing the server could fix, so not a warning (the metric shows a trend).
        Ok(Err(error)) => {
            count(&counts.handshakes_failed);
            tracing::debug!(?peer, %error, "TLS handshake failed");
            None
        }
        Err(_) => {
            count(&counts.handshakes_timed_out);
            tracing::debug!(?peer, timeout_ms = timeout.as_millis() as u64, "TLS handshake timed out");
            None
        }
    }
}

/// A connection whose TLS handshake is done. Its connect info is the TCP peer's, as on a plain port, so that
/// the client's address is worked out the same way (client_address.rs).
#[derive(Debug)]
pub struct TlsConnection {
    stream: TlsStream<Connection>,
}

impl Connected for TlsConnection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.get_ref().0.connect_info()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
