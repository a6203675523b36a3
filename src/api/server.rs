//! The listener: gRPC (h2c), gRPC-Web (HTTP/1.1 and HTTP/2, with CORS), server reflection v1 and v1alpha, and
//! grpc.health.v1.Health, all on one port, with message limits, deadlines and a graceful shutdown.

use std::{future::Future, sync::Arc, time::Duration};

use http::{HeaderName, Method};
use tokio::net::TcpListener;
use tonic::transport::{Server, server::TcpIncoming};
use tower_http::cors::{Any, CorsLayer};

use crate::service::Services;

use super::{
    admin::Admin,
    api_keys::ApiKeys,
    management::Management,
    pb::{
        self,
        keymint::{
            admin::v1::admin_service_server::AdminServiceServer,
            apikeys::v1::api_key_service_server::ApiKeyServiceServer,
            management::v1::management_service_server::ManagementServiceServer,
        },
    },
    telemetry::RpcLogLayer,
};

/// Limits of the transport.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest request message accepted (RESOURCE_EXHAUSTED above it).
    pub max_message_bytes: usize,
    /// Calls that run longer are cancelled with CANCELLED/DEADLINE_EXCEEDED; a client's shorter grpc-timeout wins.
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_message_bytes: 1024 * 1024, request_timeout: Duration::from_secs(30) }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves until `shutdown` completes, then stops accepting and lets in-flight calls finish.
pub async fn serve(
    listener: TcpListener,
    services: Arc<Services>,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<AdminServiceServer<Admin>>().await;
    health.set_serving::<ManagementServiceServer<Management>>().await;
    health.set_serving::<ApiKeyServiceServer<ApiKeys>>().await;
    tokio::spawn(super::health::follow_store(health.clone(), services.store().state()));

    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let admin = AdminServiceServer::new(Admin { services: services.clone() })
        .max_decoding_message_size(limits.max_message_bytes);
    let management = ManagementServiceServer::new(Management { services: services.clone() })
        .max_decoding_message_size(limits.max_message_bytes);
    let api_keys =
        ApiKeyServiceServer::new(ApiKeys { services }).max_decoding_message_size(limits.max_message_bytes);

    let layers = tower::ServiceBuilder::new()
        .layer(cors())
        .layer(tonic_web::GrpcWebLayer::new())
        .layer(RpcLogLayer)
        .into_inner();

    Server::builder()
        .accept_http1(true)
        .timeout(limits.request_timeout)
        .layer(layers)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(admin)
        .add_service(management)
        .add_service(api_keys)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown)
        .await?;
    Ok(())
}

/// Browsers call gRPC-Web from other origins. Credentials travel in the authorization header, never in cookies,
/// so any origin may call; the headers gRPC-Web needs are allowed and its status headers exposed.
fn cors() -> CorsLayer {
    const ALLOWED: [&str; 7] =
        ["authorization", "content-type", "x-grpc-web", "x-user-agent", "grpc-timeout", "x-org-id", "accept"];
    const EXPOSED: [&str; 3] = ["grpc-status", "grpc-message", "grpc-status-details-bin"];
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::POST, Method::OPTIONS])
        .allow_headers(ALLOWED.map(HeaderName::from_static))
        .expose_headers(EXPOSED.map(HeaderName::from_static))
        .max_age(Duration::from_secs(24 * 60 * 60))
}
