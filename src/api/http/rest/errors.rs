//! A gRPC status as a JSON answer: the HTTP status of error.rs's table and the body
//! `{"code", "message", "details": [ErrorInfo, BadRequest, RetryInfo]}`, each detail tagged with its `@type` as
//! the proto3 JSON mapping of `google.protobuf.Any` does.

use axum::body::Body;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::{Value, json};
use tonic::Status;
use tonic_types::StatusExt;

use crate::api::error::http_status;

const TYPE_PREFIX: &str = "type.googleapis.com/google.rpc.";

/// The answer for `status`, with the HTTP status its code maps to.
pub fn response(status: &Status) -> Response<Body> {
    with_http_status(status, http_status(status.code()))
}

/// The answer for `status` with a chosen HTTP status (405 and 413, which no gRPC code names).
pub fn with_http_status(status: &Status, http: StatusCode) -> Response<Body> {
    let details = status.get_error_details();
    let mut list = Vec::new();
    if let Some(info) = details.error_info() {
        list.push(json!({
            "@type": format!("{TYPE_PREFIX}ErrorInfo"),
            "reason": info.reason,
            "domain": info.domain,
            "metadata": info.metadata,
        }));
    }
    if let Some(bad) = details.bad_request() {
        let violations: Vec<Value> = bad
            .field_violations
            .iter()
            .map(|v| json!({ "field": v.field, "description": v.description }))
            .collect();
        list.push(json!({ "@type": format!("{TYPE_PREFIX}BadRequest"), "fieldViolations": violations }));
    }
    let mut retry_after = None;
    if let Some(retry) = details.retry_info()
        && let Some(delay) = retry.retry_delay
    {
        list.push(json!({
            "@type": format!("{TYPE_PREFIX}RetryInfo"),
            "retryDelay": format!("{}.{:09}s", delay.as_secs(), delay.subsec_nanos()),
        }));
        retry_after = Some(delay.as_secs() + u64::from(delay.subsec_nanos() > 0));
    }
    let body = json!({ "code": status.code() as i32, "message": status.message(), "details": list });
    let mut response = json_response(http, &body);
    if let Some(seconds) = retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// A JSON answer.
pub fn json_response(http: StatusCode, body: &Value) -> Response<Body> {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = http;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
