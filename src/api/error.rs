//! The one place where errors become gRPC statuses: a code, a message for people, and details for machines
//! (`google.rpc.ErrorInfo` with a stable reason; `google.rpc.BadRequest` with the invalid fields). The OAuth
//! endpoints' errors become RFC 6749 §5.2 JSON answers here too (`oauth_error`), and a status's HTTP status for
//! the JSON transcoder (`http_status`).

use std::collections::HashMap;

use http::StatusCode;
use serde_json::{Value, json};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::{domain::DomainError, service::Error, store::Unwritable};

/// The `domain` of every ErrorInfo keymint sends.
pub const ERROR_DOMAIN: &str = "keymint";

pub fn status(error: Error) -> Status {
    match error {
        Error::Domain(domain) => domain_status(domain),
        // Only the HTTP endpoints answer these (see `oauth_error`); a gRPC call never meets one.
        Error::OAuth(e) => with_reason(Code::InvalidArgument, e.to_string(), "OAUTH_ERROR"),
        Error::Unauthenticated(message) => with_reason(Code::Unauthenticated, message, "UNAUTHENTICATED"),
        Error::Conflict | Error::Aborted => with_reason(
            Code::Aborted,
            "the object kept changing while this request was written; try again",
            "CONCURRENT_MODIFICATION",
        ),
        // The circuit logs an outage once; each refused call is only counted by the request log.
        Error::Unavailable(_) => with_reason(
            Code::Unavailable,
            "the database cannot be reached right now; nothing was written, try again shortly",
            "STORE_UNAVAILABLE",
        ),
        Error::Unwritable(why) => {
            tracing::warn!(%why, "the database refused a write");
            let (code, reason) = match why {
                Unwritable::ReadOnly => (Code::Unavailable, "STORE_READ_ONLY"),
                Unwritable::Full => (Code::ResourceExhausted, "STORE_FULL"),
            };
            with_reason(code, format!("{why}: nothing was written"), reason)
        }
        Error::Internal(cause) => {
            // The cause is logged here, once, and never sent: it may name internals.
            tracing::error!(%cause, "internal error");
            with_reason(Code::Internal, "internal error", "INTERNAL")
        }
    }
}

/// An OAuth endpoint's answer to an error: `{"error", "error_description"}` with 401 for `invalid_client` and 400
/// for the other refusals; 503 when the database cannot be reached; 500 (the cause logged here, never sent) for
/// faults.
pub fn oauth_error(error: Error) -> (StatusCode, Value) {
    let body = |code: &str, description: &str| json!({ "error": code, "error_description": description });
    match error {
        Error::OAuth(e) => {
            let status = match e.code {
                crate::domain::oauth::ErrorCode::InvalidClient
                | crate::domain::oauth::ErrorCode::InvalidToken => StatusCode::UNAUTHORIZED,
                _ => StatusCode::BAD_REQUEST,
            };
            (status, body(e.code.as_str(), &e.description))
        }
        Error::Domain(e) => (StatusCode::BAD_REQUEST, body("invalid_request", &e.to_string())),
        Error::Unauthenticated(message) => (StatusCode::UNAUTHORIZED, body("invalid_client", message)),
        Error::Unavailable(_) | Error::Conflict | Error::Aborted => (
            StatusCode::SERVICE_UNAVAILABLE,
            body("temporarily_unavailable", "the database cannot be reached right now; try again shortly"),
        ),
        Error::Unwritable(why) => {
            tracing::warn!(%why, "the database refused a write");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                body("temporarily_unavailable", &format!("{why}: try again later")),
            )
        }
        Error::Internal(cause) => {
            tracing::error!(%cause, "internal error");
            (StatusCode::INTERNAL_SERVER_ERROR, body("server_error", "internal error"))
        }
    }
}

fn domain_status(error: DomainError) -> Status {
    match error {
        DomainError::InvalidArgument(violations) => {
            let message = DomainError::InvalidArgument(violations.clone()).to_string();
            let mut details = ErrorDetails::with_error_info("INVALID_ARGUMENT", ERROR_DOMAIN, HashMap::new());
            details.set_bad_request(
                violations
                    .into_iter()
                    .map(|v| FieldViolation::new(v.field, v.description))
                    .collect::<Vec<_>>(),
            );
            Status::with_error_details(Code::InvalidArgument, message, details)
        }
        DomainError::NotFound { reason, message } => with_reason(Code::NotFound, message, reason),
        DomainError::AlreadyExists { reason, message } => with_reason(Code::AlreadyExists, message, reason),
        DomainError::FailedPrecondition { reason, message } => {
            with_reason(Code::FailedPrecondition, message, reason)
        }
        DomainError::PermissionDenied { reason, message } => {
            with_reason(Code::PermissionDenied, message, reason)
        }
        DomainError::ResourceExhausted { reason, message } => {
            with_reason(Code::ResourceExhausted, message, reason)
        }
    }
}

/// A request body that is not one well-formed message of the method's type: undecodable protobuf, a gRPC-Web
/// body that does not translate, a frame cut short, or more than the one message a unary call takes.
pub fn malformed(message: impl Into<String>) -> Status {
    with_reason(Code::InvalidArgument, message, "MALFORMED_REQUEST")
}

/// A request with a field whose value it cannot take (a JSON type, a range, an enum name): INVALID_ARGUMENT with
/// the field, as the validation of the service layer says it.
pub fn invalid_field(message: impl Into<String>, field: &str, description: &str) -> Status {
    crate::api::http::metrics::note_reason("INVALID_ARGUMENT");
    let mut details = ErrorDetails::with_error_info("INVALID_ARGUMENT", ERROR_DOMAIN, HashMap::new());
    details.set_bad_request(vec![FieldViolation::new(field, description)]);
    Status::with_error_details(Code::InvalidArgument, message, details)
}

/// A call its client or a proxy gave up (reset the stream) before keymint had its request: nobody receives this
/// answer, but the request log records it as what it is rather than as a fault.
pub fn cancelled() -> Status {
    with_reason(Code::Cancelled, "the client or a proxy reset the stream", "CANCELLED")
}

/// A message sent compressed: keymint negotiates no compression, so it cannot read one.
pub fn compressed() -> Status {
    with_reason(
        Code::Unimplemented,
        "compressed messages are not supported: send them uncompressed (no grpc-encoding)",
        "COMPRESSION_UNSUPPORTED",
    )
}

/// A message larger than the configured limit.
pub fn too_large(length: usize, limit: usize) -> Status {
    with_reason(
        Code::ResourceExhausted,
        format!("the request message has {length} bytes; the limit is {limit}"),
        "MESSAGE_TOO_LARGE",
    )
}

fn with_reason(code: Code, message: impl Into<String>, reason: &'static str) -> Status {
    crate::api::http::metrics::note_reason(reason);
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, HashMap::new()),
    )
}

/// The HTTP status a JSON caller gets for a gRPC code (DESIGN.md's table; the codes keymint does not send
/// follow google.rpc.Code's own mapping).
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        // 499, "client closed request", as google.rpc.Code says; not a server fault.
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A JSON request for a path no HTTP rule has; `known`: the path that has one, when the caller left out a prefix.
pub fn no_route(method: &http::Method, path: &str, known: Option<&str>) -> Status {
    let message = match known {
        Some(known) => format!(
            "no JSON route is {method} {path}: the management API's paths begin with /management/v1, so this one \
             is {known} (/openapi.json lists every route)"
        ),
        None => format!("no JSON route is {method} {path}: /openapi.json lists them all"),
    };
    with_reason(Code::NotFound, message, "ROUTE_NOT_FOUND")
}

/// A JSON request for a known path with a method it does not take (HTTP 405, with `allow`).
pub fn wrong_method(method: &http::Method, path: &str, allowed: &str) -> Status {
    with_reason(
        Code::Unimplemented,
        format!("{path} does not take {method}; it takes {allowed}"),
        "METHOD_NOT_ALLOWED",
    )
}

/// A JSON body larger than the configured limit (HTTP 413).
pub fn too_large_body(limit: usize) -> Status {
    with_reason(
        Code::ResourceExhausted,
        format!("the request body is over the limit of {limit} bytes"),
        "MESSAGE_TOO_LARGE",
    )
}

/// A JSON request with a body of another media type (HTTP 415).
pub fn unsupported_media_type(content_type: &str) -> Status {
    with_reason(
        Code::InvalidArgument,
        format!("the body must be JSON (content-type: application/json), not {content_type}"),
        "UNSUPPORTED_MEDIA_TYPE",
    )
}

/// Lets handlers turn any service-layer error into its status with `.or_status()?`.
pub trait IntoStatus<T> {
    fn or_status(self) -> Result<T, Status>;
}

impl<T, E: Into<Error>> IntoStatus<T> for Result<T, E> {
    fn or_status(self) -> Result<T, Status> {
        self.map_err(|e| status(e.into()))
    }
}
