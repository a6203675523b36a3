//! JSON/REST on the one port: one generic transcoder driven by the `google.api.http` rules of the descriptor set
//! that reflection serves. A JSON request becomes the protobuf request of its rule and calls the same gRPC
//! handler in-process; the answer, or the error, comes back as JSON. `/openapi.json` describes every route.

mod call;
mod errors;
mod fields;
mod openapi;
mod rules;
mod template;
mod transcode;

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    routing::get,
};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage};
use tower::ServiceExt;
use tower_http::cors::{Any, CorsLayer};

pub use self::call::Grpc;
use self::rules::{Lookup, Routes};
use crate::api::{error, telemetry::HttpLogLayer};

/// The route table, path templates and request decoding, public only for the fuzz targets in `fuzz/`: they are
/// the parsers of the JSON side that face the internet, and otherwise private to this module.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::api::http::rest::rules::{Lookup, Routes};
    pub use crate::api::http::rest::template::{Template, percent_decode};
    pub use crate::api::http::rest::transcode::request;
}

#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error("the descriptor set cannot be read: {0}")]
    Descriptors(#[from] prost_reflect::DescriptorError),
    #[error("an HTTP rule is invalid: {0}")]
    Rule(#[from] rules::RuleError),
}

/// The route table, the OpenAPI document made from it, and the gRPC side the routes call.
pub struct Transcoder {
    routes: Routes,
    grpc: Grpc,
    max_body_bytes: usize,
    openapi: Bytes,
}

impl Transcoder {
    /// Reads the rules of `descriptors` (an encoded FileDescriptorSet with source info, for the comments).
    pub fn new(descriptors: &[u8], grpc: Grpc, max_body_bytes: usize) -> Result<Transcoder, RestError> {
        let pool = DescriptorPool::decode(descriptors)?;
        let routes = Routes::from_pool(&pool)?;
        let openapi = Bytes::from(openapi::document(&pool, &routes).to_string());
        Ok(Transcoder { routes, grpc, max_body_bytes, openapi })
    }
}

/// Routes `/openapi.json`, gRPC and gRPC-Web (by content type, or a `/package.Service/Method` path) to `grpc`,
/// and every other request to the JSON routes.
pub fn router(transcoder: Arc<Transcoder>, log: HttpLogLayer) -> Router {
    let grpc = transcoder.grpc.clone();
    let json = Router::new()
        .route("/openapi.json", get(openapi_document))
        .fallback(transcode)
        .layer(cors())
        .layer(log)
        .with_state(transcoder);
    let dispatch = tower::service_fn(move |request: Request| {
        let grpc = grpc.clone();
        let json = json.clone();
        async move {
            let response = if is_for_grpc(&request) {
                let Ok(response) = grpc.oneshot(request).await;
                response.map(Body::new)
            } else {
                let Ok(response) = json.oneshot(request).await;
                response
            };
            Ok::<_, Infallible>(response)
        }
    });
    Router::new().fallback_service(dispatch)
}

/// gRPC and gRPC-Web requests carry their content type; their CORS preflights and requests with another type
/// (which the gRPC side refuses with 415) are told apart by the path, `/package.Service/Method`, which no HTTP
/// rule's path looks like.
fn is_for_grpc(request: &Request) -> bool {
    let grpc_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("application/grpc"));
    let mut segments = request.uri().path().trim_start_matches('/').split('/');
    let service_path = matches!(
        (segments.next(), segments.next(), segments.next()),
        (Some(service), Some(method), None) if service.contains('.') && !method.is_empty()
    );
    grpc_type || service_path
}

/// JSON callers are browsers too: any origin (credentials travel in the authorization header, never cookies).
fn cors() -> CorsLayer {
    const ALLOWED: [&str; 5] = ["authorization", "content-type", "x-org-id", "x-zitadel-orgid", "accept"];
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers(ALLOWED.map(HeaderName::from_static))
        .expose_headers([header::RETRY_AFTER, header::ALLOW])
        .max_age(Duration::from_secs(24 * 60 * 60))
}

async fn openapi_document(State(transcoder): State<Arc<Transcoder>>) -> Response<Body> {
    let mut response = Response::new(Body::from(transcoder.openapi.clone()));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// One JSON call: find its rule, build the request message, call the RPC, answer its response as JSON.
async fn transcode(State(transcoder): State<Arc<Transcoder>>, request: Request) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let (route, variables) = match transcoder.routes.lookup(&parts.method, &path) {
        Lookup::Found(route, variables) => (route, variables),
        Lookup::NotFound => {
            let known = with_management_prefix(&transcoder.routes, &parts.method, &path);
            return errors::response(&error::no_route(&parts.method, &path, known.as_deref()));
        }
        Lookup::WrongMethod(allowed) => {
            let allowed = allowed.iter().map(Method::as_str).collect::<Vec<_>>().join(", ");
            let status = error::wrong_method(&parts.method, &path, &allowed);
            let mut response = errors::with_http_status(&status, StatusCode::METHOD_NOT_ALLOWED);
            if let Ok(value) = HeaderValue::from_str(&allowed) {
                response.headers_mut().insert(header::ALLOW, value);
            }
            return response;
        }
    };
    if let Some(content_type) = parts.headers.get(header::CONTENT_TYPE)
        && !is_json(content_type)
    {
        let shown: String = String::from_utf8_lossy(content_type.as_bytes()).chars().take(80).collect();
        return errors::with_http_status(
            &error::unsupported_media_type(&shown),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        );
    }
    let body = match Limited::new(body, transcoder.max_body_bytes).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            let status = error::too_large_body(transcoder.max_body_bytes);
            return errors::with_http_status(&status, StatusCode::PAYLOAD_TOO_LARGE);
        }
        Err(e) => {
            return errors::response(&error::malformed(format!("the request body could not be read: {e}")));
        }
    };
    let message = match transcode::request(route, &variables, parts.uri.query(), &body) {
        Ok(message) => message,
        Err(e) => {
            return errors::response(&match e.field {
                Some((field, why)) => error::invalid_field(e.message, &field, &why),
                None => error::malformed(e.message),
            });
        }
    };
    let answer =
        call::unary(transcoder.grpc.clone(), &route.grpc_path(), parts, message.encode_to_vec()).await;
    let answer = answer.and_then(|bytes| {
        DynamicMessage::decode(route.rpc.output(), bytes).map_err(|e| {
            tracing::error!(error = %e, "a handler's answer does not decode as its own type");
            tonic::Status::internal("internal error")
        })
    });
    let json = answer.and_then(|message| {
        transcode::response(route, &message).map_err(|e| {
            tracing::error!(error = %e, "a handler's answer does not encode as JSON");
            tonic::Status::internal("internal error")
        })
    });
    match json {
        Ok(json) => {
            let mut response = Response::new(Body::from(json));
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        Err(status) => errors::response(&status),
    }
}

/// ZITADEL's documentation gives the management API's paths without their `/management/v1` prefix (`POST
/// /projects/{id}/apps/{appId}/keys`): the path with the prefix, when keymint has a route there.
fn with_management_prefix(routes: &Routes, method: &Method, path: &str) -> Option<String> {
    const PREFIX: &str = "/management/v1";
    if path.starts_with(PREFIX) || !path.starts_with('/') {
        return None;
    }
    let prefixed = format!("{PREFIX}{path}");
    match routes.lookup(method, &prefixed) {
        Lookup::Found(..) | Lookup::WrongMethod(_) => Some(prefixed),
        Lookup::NotFound => None,
    }
}

/// `application/json` or a `+json` type, with parameters (charset) allowed.
fn is_json(content_type: &HeaderValue) -> bool {
    let Ok(value) = content_type.to_str() else { return false };
    let media = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str, content_type: Option<&str>) -> Request {
        let mut request = Request::new(Body::empty());
        *request.uri_mut() = path.parse().unwrap();
        if let Some(content_type) = content_type {
            request.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
        }
        request
    }

    #[test]
    fn grpc_goes_by_content_type_or_service_path() {
        let service = "/keymint.management.v1.ManagementService/AddProject";
        assert!(is_for_grpc(&request(service, Some("application/grpc"))));
        assert!(is_for_grpc(&request(service, Some("application/grpc-web+proto"))));
        assert!(
            is_for_grpc(&request(service, None)),
            "a preflight, or a wrong type the gRPC side answers 415"
        );
        assert!(is_for_grpc(&request(service, Some("application/json"))));
        assert!(is_for_grpc(&request("/management/v1/projects", Some("application/grpc"))));
        assert!(!is_for_grpc(&request("/management/v1/projects", Some("application/json"))));
        assert!(!is_for_grpc(&request("/management/v1/projects", None)));
        assert!(!is_for_grpc(&request("/apikeys/v1/keys/7:roll", None)));
        assert!(!is_for_grpc(&request("/openapi.json", None)));
    }

    #[test]
    fn json_content_types() {
        for good in ["application/json", "application/json; charset=utf-8", "application/merge-patch+json"] {
            assert!(is_json(&HeaderValue::from_static(good)), "{good}");
        }
        for bad in ["text/plain", "application/x-www-form-urlencoded", "application/jsonx"] {
            assert!(!is_json(&HeaderValue::from_static(bad)), "{bad}");
        }
    }
}
