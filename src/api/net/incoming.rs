//! The accept loop: accepted sockets become `Connection`s (TCP_NODELAY and quick ACKs: Nagle's algorithm on
//! either side plus the other side's delayed ACK would hold calls back ~40 ms), errors that concern one connection
//! are skipped, and errors that say the process or
//! the kernel is out of something (file descriptors, buffers, memory) back off, doubling from 5 ms to 1 s,
//! instead of retrying at once, which would spin a core until connections close. Each burst of such errors is
//! logged twice: a warning when it starts and a summary when accepting works again.

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{net::TcpListener, time::Sleep};

use crate::api::net::connection::Connection;

/// The connections a listener accepts, for tonic's `serve_with_incoming_shutdown`. It never yields an error:
/// it handles them itself.
pub struct Incoming {
    listener: TcpListener,
    backoff: Backoff,
    pause: Option<Pin<Box<Sleep>>>,
}

impl Incoming {
    pub fn new(listener: TcpListener) -> Self {
        Incoming { listener, backoff: Backoff::default(), pause: None }
    }
}

impl futures_core::Stream for Incoming {
    type Item = io::Result<Connection>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(pause) = &mut this.pause {
                std::task::ready!(pause.as_mut().poll(cx));
                this.pause = None;
            }
            match this.listener.poll_accept(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok((stream, _peer))) => {
                    if let Some(burst) = this.backoff.succeeded() {
                        tracing::warn!(
                            errors = burst.errors,
                            paused_ms = burst.paused.as_millis() as u64,
                            "accepting connections again"
                        );
                    }
                    return Poll::Ready(Some(Ok(Connection::new(stream))));
                }
                Poll::Ready(Err(error)) => match this.backoff.failed(error.kind()) {
                    Next::Retry => {
                        tracing::debug!(%error, "an incoming connection failed before it was accepted")
                    }
                    Next::Pause { delay, first } => {
                        if first {
                            tracing::warn!(
                                %error,
                                "cannot accept connections; retrying with back-off until it works (is the \
                                 open-file limit too low?)"
                            );
                        }
                        this.pause = Some(Box::pin(tokio::time::sleep(delay)));
                    }
                },
            }
        }
    }
}

/// What to do after an accept error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// The error concerned one incoming connection: accept the next at once.
    Retry,
    /// Out of a resource: wait `delay` before trying again; `first` starts a burst.
    Pause { delay: Duration, first: bool },
}

/// A burst of resource errors that has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Burst {
    errors: u64,
    paused: Duration,
}

/// The back-off state between accepts: no clock, so that tests need no sleep.
#[derive(Debug, Default)]
struct Backoff {
    next_delay: Option<Duration>,
    errors: u64,
    paused: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_secs(1);

    fn failed(&mut self, kind: io::ErrorKind) -> Next {
        use io::ErrorKind::*;
        // Linux reports these for a connection that failed between SYN and accept; accept(2) says to retry.
        if matches!(
            kind,
            ConnectionAborted
                | ConnectionReset
                | ConnectionRefused
                | Interrupted
                | PermissionDenied
                | HostUnreachable
                | NetworkUnreachable
                | NetworkDown
                | TimedOut
        ) {
            return Next::Retry;
        }
        let first = self.next_delay.is_none();
        let delay = self.next_delay.unwrap_or(Self::FIRST);
        self.next_delay = Some((delay * 2).min(Self::MAX));
        self.errors += 1;
        self.paused += delay;
        Next::Pause { delay, first }
    }

    fn succeeded(&mut self) -> Option<Burst> {
        self.next_delay.take()?;
        let burst = Burst { errors: self.errors, paused: self.paused };
        (self.errors, self.paused) = (0, Duration::ZERO);
        Some(burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pause(b: &mut Backoff, kind: io::ErrorKind) -> (u64, bool) {
        match b.failed(kind) {
            Next::Pause { delay, first } => (delay.as_millis() as u64, first),
            Next::Retry => (0, false),
        }
    }

    #[test]
    fn resource_errors_back_off_doubling_to_a_second_and_reset_after_a_success() {
        let mut b = Backoff::default();
        let emfile = io::Error::from_raw_os_error(24).kind();
        let delays: Vec<_> = (0..10).map(|_| pause(&mut b, emfile)).collect();
        assert_eq!(
            delays,
            [
                (5, true),
                (10, false),
                (20, false),
                (40, false),
                (80, false),
                (160, false),
                (320, false),
                (640, false),
                (1000, false),
                (1000, false)
            ]
        );
        assert_eq!(b.succeeded(), Some(Burst { errors: 10, paused: Duration::from_millis(3275) }));
        assert_eq!(b.succeeded(), None, "one summary per burst");
        assert_eq!(pause(&mut b, io::ErrorKind::OutOfMemory), (5, true), "a new burst starts over");
    }

    #[test]
    fn errors_of_one_connection_are_skipped_without_a_pause() {
        let mut b = Backoff::default();
        for kind in
            [io::ErrorKind::ConnectionAborted, io::ErrorKind::ConnectionReset, io::ErrorKind::Interrupted]
        {
            assert_eq!(b.failed(kind), Next::Retry);
        }
        assert_eq!(b.succeeded(), None);
        // ENFILE, ENOBUFS and ENOMEM are resource errors too.
        for errno in [23, 105, 12] {
            let kind = io::Error::from_raw_os_error(errno).kind();
            assert!(matches!(b.failed(kind), Next::Pause { .. }), "errno {errno}");
        }
    }
}
