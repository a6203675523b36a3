//! The listener: one router on one port. Plain-HTTP routes (the OAuth endpoints and their metadata) are matched
//! first; then gRPC (h2c), gRPC-Web (HTTP/1.1 and HTTP/2, with CORS), server reflection v1 and v1alpha and
//! grpc.health.v1.Health, behind their own layers, by content type or service path; everything else is JSON,
//! transcoded to the same gRPC handlers (rest/), with `/openapi.json`; and the operator's `/metrics`, `/live` and
//! `/ready` (operations.rs). All of it over HTTP/1.1 and HTTP/2, in clear or over TLS (handshake.rs), with
//! message, stream and concurrency limits, keepalive pings, deadlines and a graceful shutdown.

use std::{future::Future, sync::Arc, time::Duration};

use http::{HeaderName, Method};
use tokio::net::TcpListener;
use tonic::{service::Routes, transport::Server};
use tower_http::cors::{Any, CorsLayer};

use crate::{domain::client_address::TrustedProxies, service::Services};

use crate::api::{
    grpc::admin::Admin,
    grpc::api_keys::ApiKeys,
    grpc::ext_authz::ExtAuthz,
    grpc::management::Management,
    http::metrics::Metrics,
    http::operations::Readiness,
    net::client_address::ClientAddressLayer,
    net::framing::{ContentTypeLayer, UnaryFramingLayer},
    net::handshake::{HANDSHAKE_TIMEOUT, TlsIncoming},
    net::incoming::Incoming,
    net::tls::TlsCertificates,
    pb::envoy::service::auth::v3::authorization_server::AuthorizationServer,
    pb::{
        self,
        keymint::{
            admin::v1::admin_service_server::AdminServiceServer,
            apikeys::v1::api_key_service_server::ApiKeyServiceServer,
            management::v1::management_service_server::ManagementServiceServer,
        },
    },
    telemetry::{HttpLogLayer, RpcLogLayer},
};

/// Limits of the transport.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest request message accepted (RESOURCE_EXHAUSTED above it).
    pub max_message_bytes: usize,
    /// Calls that run longer are cancelled with CANCELLED/DEADLINE_EXCEEDED; a client's shorter grpc-timeout wins.
    pub request_timeout: Duration,
    /// Streams (calls) one HTTP/2 connection may have open at once; the client queues the rest, and calls past
    /// the limit that it sends anyway are refused (REFUSED_STREAM, or RESOURCE_EXHAUSTED past the handler
    /// limit), so that one connection cannot hold memory without bound.
    pub max_concurrent_streams: u32,
    /// How often an idle connection is pinged, and how long an answer may take before it is closed: a peer that
    /// vanished without closing its connection does not keep it forever.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            max_concurrent_streams: 256,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("JSON routes: {0}")]
    Rest(#[from] crate::api::http::rest::RestError),
    #[error("metrics: {0}")]
    Metrics(#[from] prost_reflect::DescriptorError),
}

/// What the operator's endpoints report: readiness always, metrics when on (`--metrics`).
#[derive(Debug, Clone)]
pub struct Operations {
    pub readiness: Readiness,
    pub metrics: bool,
}

/// Serves until `shutdown` completes, then stops accepting and lets in-flight calls finish. Requests from
/// `trusted_proxies` are taken to come from the client those proxies forward (x-forwarded-for). With `tls`, the
/// port speaks only TLS.
pub async fn serve(
    listener: TcpListener,
    services: Arc<Services>,
    limits: Limits,
    trusted_proxies: TrustedProxies,
    operations: Operations,
    tls: Option<Arc<TlsCertificates>>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    crate::api::grpc::health::follow_store(health, services.store().state(), operations.readiness.stopping())
        .await;
    let metrics = if operations.metrics {
        let metrics = Metrics::new(&[pb::FILE_DESCRIPTOR_SET, tonic_health::pb::FILE_DESCRIPTOR_SET])?;
        Some(Arc::new(metrics.with_tls(tls.clone())))
    } else {
        None
    };

    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let admin = AdminServiceServer::new(Admin { services: services.clone() })
        .max_decoding_message_size(limits.max_message_bytes);
    let management =
        ManagementServiceServer::new(Management { services: services.clone(), jwks: Default::default() })
            .max_decoding_message_size(limits.max_message_bytes);
    let api_keys = ApiKeyServiceServer::new(ApiKeys { services: services.clone() })
        .max_decoding_message_size(limits.max_message_bytes);
    let client_address = ClientAddressLayer::new(trusted_proxies.clone());
    let ext_authz = AuthorizationServer::new(ExtAuthz {
        services: services.clone(),
        trusted_proxies: Arc::new(trusted_proxies),
    })
    .max_decoding_message_size(limits.max_message_bytes);

    let mut grpc = Routes::builder();
    grpc.add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(admin)
        .add_service(management)
        .add_service(api_keys)
        .add_service(ext_authz);
    let grpc = grpc.routes().prepare();
    // Outermost first. The content type is checked before gRPC-Web translation (which would answer 400 over
    // HTTP/1.1 and pass other types through over HTTP/2); framing after it, so that it sees gRPC-Web bodies
    // translated, and after the log, so that refused calls are logged like any other.
    let grpc = tower::ServiceBuilder::new()
        .map_request(|request: http::Request<axum::body::Body>| request.map(tonic::body::Body::new))
        .layer(cors())
        .layer(ContentTypeLayer)
        .layer(tonic_web::GrpcWebLayer::new())
        .layer(RpcLogLayer::new(metrics.clone()))
        .layer(UnaryFramingLayer { max_message_bytes: limits.max_message_bytes })
        .service(grpc);
    let grpc = crate::api::http::rest::Grpc::new(grpc);
    // The JSON routes call the same gRPC stack in-process, so they share its layers and handlers.
    let transcoder = Arc::new(crate::api::http::rest::Transcoder::new(
        pb::FILE_DESCRIPTOR_SET,
        grpc,
        limits.max_message_bytes,
    )?);
    let http_log = HttpLogLayer::new(metrics.clone());
    // The one router: the OAuth and operations routes by path, then gRPC by content type or service path, then
    // JSON. The client's address is worked out before any of them (the JSON routes pass it on to their gRPC
    // call). Probes and scrapes are neither logged nor counted: they come every few seconds and say nothing.
    let router = crate::api::http::oauth::routes(services.clone())
        .layer(http_log.clone())
        .merge(crate::api::http::operations::routes(services, operations.readiness, metrics))
        .merge(crate::api::http::rest::router(transcoder, http_log))
        .layer(client_address);

    let server = Server::builder()
        .accept_http1(true)
        .timeout(limits.request_timeout)
        .max_concurrent_streams(limits.max_concurrent_streams)
        // The same bound on handlers running per connection (HTTP/1.1 included), with excess refused at once
        // (RESOURCE_EXHAUSTED) rather than queued in memory.
        .concurrency_limit_per_connection(limits.max_concurrent_streams as usize)
        .load_shed(true)
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .add_routes(Routes::from(router));
    let incoming = Incoming::new(listener);
    match tls {
        None => server.serve_with_incoming_shutdown(incoming, shutdown).await?,
        Some(tls) => {
            let incoming = TlsIncoming::new(incoming, tls, HANDSHAKE_TIMEOUT);
            server.serve_with_incoming_shutdown(incoming, shutdown).await?
        }
    }
    Ok(())
}

/// Browsers call gRPC-Web from other origins. Credentials travel in the authorization header, never in cookies,
/// so any origin may call; the headers gRPC-Web needs are allowed and its status headers exposed.
fn cors() -> CorsLayer {
    const ALLOWED: [&str; 8] = [
        "authorization",
        "content-type",
        "x-grpc-web",
        "x-user-agent",
        "grpc-timeout",
        "x-org-id",
        "x-zitadel-orgid",
        "accept",
    ];
    const EXPOSED: [&str; 3] = ["grpc-status", "grpc-message", "grpc-status-details-bin"];
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::POST, Method::OPTIONS])
        .allow_headers(ALLOWED.map(HeaderName::from_static))
        .expose_headers(EXPOSED.map(HeaderName::from_static))
        .max_age(Duration::from_secs(24 * 60 * 60))
}
