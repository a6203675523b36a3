//! Checks what reaches a gRPC handler: a gRPC content type (HTTP 415 otherwise, before anything runs), and for
//! keymint's unary methods a body that is exactly one uncompressed message within the size limit, read whole
//! before the handler runs. It sits after the gRPC-Web translation, so gRPC-Web bodies are checked alike.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Request, Response, StatusCode, header::CONTENT_TYPE};
use http_body_util::{BodyExt, Full};
use tonic::{Status, body::Body};
use tower::{Layer, Service};

use crate::api::error;

/// The gRPC message header: a flags byte and a 4-byte big-endian length.
const HEADER_LEN: usize = 5;
/// Flag bit 0: the message is compressed.
const COMPRESSED: u8 = 1;
/// Every method under this prefix is unary (reflection and health are not keymint's).
const UNARY_PREFIX: &str = "/keymint.";

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Refuses requests whose content type is not gRPC or gRPC-Web with HTTP 415, as the gRPC protocol asks, so
/// that a plain HTTP client never has a call executed. Goes before the gRPC-Web layer (which answers such
/// requests 400 over HTTP/1.1 and passes them on over HTTP/2) and after CORS (whose preflight has no body type).
#[derive(Debug, Clone, Copy, Default)]
pub struct ContentTypeLayer;

impl<S> Layer<S> for ContentTypeLayer {
    type Service = ContentType<S>;

    fn layer(&self, inner: S) -> ContentType<S> {
        ContentType { inner }
    }
}

#[derive(Debug, Clone)]
pub struct ContentType<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for ContentType<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if is_grpc(request.headers().get(CONTENT_TYPE)) {
            return Box::pin(self.inner.call(request));
        }
        tracing::debug!(path = request.uri().path(), "refused a request without a gRPC content type");
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
        Box::pin(std::future::ready(Ok(response)))
    }
}

/// `application/grpc` and `application/grpc+proto` (parameters allowed, as gRPC allows them), and the four
/// gRPC-Web types exactly as tonic-web recognises them.
fn is_grpc(content_type: Option<&HeaderValue>) -> bool {
    let Some(value) = content_type.and_then(|v| v.to_str().ok()) else { return false };
    let media = value.split(';').next().unwrap_or_default().trim();
    ["application/grpc", "application/grpc+proto"].iter().any(|t| media.eq_ignore_ascii_case(t))
        || [
            "application/grpc-web",
            "application/grpc-web+proto",
            "application/grpc-web-text",
            "application/grpc-web-text+proto",
        ]
        .contains(&value)
}

/// Reads the body of a unary keymint call whole (at most `max_message_bytes` and a header) and passes it on
/// only if it is exactly one uncompressed message; tonic itself would run the handler on the first message and
/// ignore what follows.
#[derive(Debug, Clone, Copy)]
pub struct UnaryFramingLayer {
    pub max_message_bytes: usize,
}

impl<S> Layer<S> for UnaryFramingLayer {
    type Service = UnaryFraming<S>;

    fn layer(&self, inner: S) -> UnaryFraming<S> {
        UnaryFraming { inner, max_message_bytes: self.max_message_bytes }
    }
}

#[derive(Debug, Clone)]
pub struct UnaryFraming<S> {
    inner: S,
    max_message_bytes: usize,
}

impl<S, R> Service<Request<Body>> for UnaryFraming<S>
where
    S: Service<Request<Body>, Response = Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: http_body::Body<Data = Bytes> + Send + 'static,
    R::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if !request.uri().path().starts_with(UNARY_PREFIX) {
            let response = self.inner.call(request);
            return Box::pin(async move { Ok(response.await?.map(Body::new)) });
        }
        // The ready service answers this call; a fresh clone waits for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limit = self.max_message_bytes;
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let message = match read_one_message(body, limit).await {
                Ok(message) => message,
                Err(status) => return Ok(status.into_http()),
            };
            let request = Request::from_parts(parts, Body::new(Full::new(message)));
            Ok(inner.call(request).await?.map(Body::new))
        })
    }
}

/// A request body that failed while it was read. gRPC-Web's translation fails on a malformed body (its messages
/// start with "tonic-web"); any other failure is the transport's: the stream reset (h2 CANCEL, or NO_ERROR which
/// tonic calls INTERNAL) or the connection gone before the request arrived whole. That is CANCELLED, the peer
/// having given up the call, and never INTERNAL: it is no fault of keymint's.
fn body_error(status: Status) -> Status {
    if status.message().starts_with("tonic-web") {
        error::malformed(format!("the request body could not be read: {}", status.message()))
    } else {
        error::cancelled()
    }
}

async fn read_one_message(mut body: Body, limit: usize) -> Result<Bytes, Status> {
    let mut buffer = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(body_error)?;
        if let Ok(data) = frame.into_data() {
            buffer.extend_from_slice(&data);
            // Enough to tell a message over the limit from one followed by more: stop reading.
            if buffer.len() > HEADER_LEN + limit {
                break;
            }
        }
    }
    check_frame(&buffer, limit).map_err(|e| match e {
        FrameError::Compressed => error::compressed(),
        FrameError::TooLarge(length) => error::too_large(length, limit),
        other => error::malformed(other.to_string()),
    })?;
    Ok(buffer.freeze())
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum FrameError {
    #[error("the request has no message: a unary call takes exactly one")]
    Empty,
    #[error("the request's message is cut short: its header announces more bytes than the body holds")]
    Truncated,
    #[error("the request's message has unknown flags {0:#04x}")]
    UnknownFlags(u8),
    #[error("compressed")]
    Compressed,
    #[error("too large")]
    TooLarge(usize),
    #[error("the request holds more than one message (or bytes after it): a unary call takes exactly one")]
    MoreThanOne,
}

/// Whether `body` is exactly one uncompressed gRPC message of at most `limit` bytes.
fn check_frame(body: &[u8], limit: usize) -> Result<(), FrameError> {
    let Some((header, rest)) = body.split_first_chunk::<HEADER_LEN>() else {
        return Err(if body.is_empty() { FrameError::Empty } else { FrameError::Truncated });
    };
    let [flags, length @ ..] = *header;
    let length = u32::from_be_bytes(length) as usize;
    if flags & COMPRESSED != 0 {
        return Err(FrameError::Compressed);
    }
    if flags != 0 {
        return Err(FrameError::UnknownFlags(flags));
    }
    if length > limit {
        return Err(FrameError::TooLarge(length));
    }
    match rest.len().cmp(&length) {
        std::cmp::Ordering::Less => Err(FrameError::Truncated),
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Greater => Err(FrameError::MoreThanOne),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![flags];
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn exactly_one_uncompressed_message_within_the_limit_passes() {
        assert_eq!(check_frame(&frame(0, b"abc"), 3), Ok(()));
        assert_eq!(check_frame(&frame(0, b""), 3), Ok(()), "an empty message is a message");
        assert_eq!(check_frame(b"", 3), Err(FrameError::Empty));
        assert_eq!(check_frame(&[0, 0, 0], 3), Err(FrameError::Truncated));
        assert_eq!(check_frame(&frame(0, b"abc")[..6], 3), Err(FrameError::Truncated));
        assert_eq!(check_frame(&frame(1, b"abc"), 3), Err(FrameError::Compressed));
        assert_eq!(check_frame(&frame(0x80, b"abc"), 3), Err(FrameError::UnknownFlags(0x80)));
        assert_eq!(check_frame(&frame(0, b"abcd"), 3), Err(FrameError::TooLarge(4)));
        let two = [frame(0, b"a"), frame(0, b"b")].concat();
        assert_eq!(check_frame(&two, 3), Err(FrameError::MoreThanOne));
        assert_eq!(check_frame(&[frame(0, b"a"), vec![0]].concat(), 3), Err(FrameError::MoreThanOne));
    }

    #[test]
    fn grpc_content_types_are_recognised() {
        let ok = |v: &'static str| is_grpc(Some(&HeaderValue::from_static(v)));
        for good in [
            "application/grpc",
            "application/grpc+proto",
            "application/GRPC; charset=utf-8",
            "application/grpc-web",
            "application/grpc-web+proto",
            "application/grpc-web-text",
            "application/grpc-web-text+proto",
        ] {
            assert!(ok(good), "{good}");
        }
        for bad in ["text/plain", "", "application/json", "application/grpc+json", "application/grpcx"] {
            assert!(!ok(bad), "{bad}");
        }
        assert!(!is_grpc(None));
    }
}
