//! Calls one of this server's unary gRPC methods in-process: the JSON request, transcoded, goes through the same
//! stack as a gRPC call from the network (logs, framing checks, authentication, handlers, error mapping).

use std::convert::Infallible;

use bytes::{Buf, Bytes};
use http::{
    HeaderMap, HeaderValue, Method, Request, Response, Version, header::CONTENT_TYPE, request::Parts,
};
use http_body_util::BodyExt;
use tonic::{Code, Status};
use tower::ServiceExt;

/// The gRPC side of the router, as the transcoder calls it.
pub type Grpc =
    tower::util::BoxCloneSyncService<Request<axum::body::Body>, Response<tonic::body::Body>, Infallible>;

/// The request headers a JSON call passes to gRPC as metadata: the credential, the organization (and ZITADEL's
/// name for it) and the proxy chain; nothing else reaches the handler.
const FORWARDED: [&str; 5] =
    ["authorization", "x-org-id", "x-zitadel-orgid", "x-forwarded-for", "user-agent"];

/// Calls `grpc_path` with one encoded message; the response message's bytes, or the call's status.
pub async fn unary(grpc: Grpc, grpc_path: &str, from: Parts, message: Vec<u8>) -> Result<Bytes, Status> {
    let mut frame = Vec::with_capacity(5 + message.len());
    frame.push(0);
    frame.extend_from_slice(&u32::try_from(message.len()).unwrap_or(u32::MAX).to_be_bytes());
    frame.extend_from_slice(&message);

    let mut request = Request::new(axum::body::Body::from(frame));
    *request.method_mut() = Method::POST;
    *request.version_mut() = Version::HTTP_2;
    *request.uri_mut() = grpc_path.parse().map_err(|_| Status::internal("internal error"))?;
    // The connection's details (the peer address) travel with the call, as they do for a gRPC request.
    *request.extensions_mut() = from.extensions;
    let headers = request.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert("te", HeaderValue::from_static("trailers"));
    for name in FORWARDED {
        for value in from.headers.get_all(name) {
            headers.append(name, value.clone());
        }
    }

    let Ok(response) = grpc.oneshot(request).await;
    let (parts, body) = response.into_parts();
    // A handler's error is a trailers-only answer: the status is in the headers.
    if let Some(status) = status_in(&parts.headers) {
        return Err(status);
    }
    let collected = body.collect().await.map_err(|e| {
        tracing::warn!(error = %e, "the in-process gRPC answer could not be read");
        Status::internal("internal error")
    })?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let data = collected.to_bytes();
    match status_in(&trailers) {
        Some(status) => Err(status),
        None if parts.status != http::StatusCode::OK => {
            tracing::warn!(
                status = parts.status.as_u16(),
                "the in-process gRPC call answered without a status"
            );
            Err(Status::internal("internal error"))
        }
        None => one_message(data),
    }
}

/// The status of a finished call, unless it is OK.
fn status_in(headers: &HeaderMap) -> Option<Status> {
    headers.get("grpc-status")?;
    Status::from_header_map(headers).filter(|s| s.code() != Code::Ok)
}

fn one_message(mut data: Bytes) -> Result<Bytes, Status> {
    if data.len() < 5 || data[0] != 0 {
        tracing::warn!("the in-process gRPC answer is not one uncompressed message");
        return Err(Status::internal("internal error"));
    }
    data.advance(1);
    let length = data.get_u32() as usize;
    if data.len() != length {
        tracing::warn!("the in-process gRPC answer's length does not match its header");
        return Err(Status::internal("internal error"));
    }
    Ok(data)
}
