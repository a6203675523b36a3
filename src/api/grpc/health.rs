//! grpc.health.v1 follows the store: the services that need the database report NOT_SERVING while it cannot be
//! reached, so load balancers send their calls elsewhere; the process itself (service "") stays SERVING. From the
//! moment the server starts shutting down, every service and "" report NOT_SERVING, for good.

use tokio::sync::watch;
use tonic::server::NamedService;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::store::StoreState;

use crate::api::pb::{
    envoy::service::auth::v3::authorization_server::AuthorizationServer,
    keymint::{
        admin::v1::admin_service_server::AdminServiceServer,
        apikeys::v1::api_key_service_server::ApiKeyServiceServer,
        management::v1::management_service_server::ManagementServiceServer,
    },
};

/// Every keymint service needs the store for most of its calls (ext_authz for keys not yet in memory).
const STORE_BOUND: [&str; 4] = [
    <AdminServiceServer<crate::api::grpc::admin::Admin> as NamedService>::NAME,
    <ManagementServiceServer<crate::api::grpc::management::Management> as NamedService>::NAME,
    <ApiKeyServiceServer<crate::api::grpc::api_keys::ApiKeys> as NamedService>::NAME,
    <AuthorizationServer<crate::api::grpc::ext_authz::ExtAuthz> as NamedService>::NAME,
];

/// Reports the store's state now, before the server answers its first check, and then on every change in the
/// background, until the server starts shutting down (`stopping` turns true).
pub async fn follow_store(
    reporter: HealthReporter,
    mut state: StoreState,
    mut stopping: watch::Receiver<bool>,
) {
    report(&reporter, state.is_up()).await;
    tokio::spawn(async move {
        let mut store_followed = true;
        loop {
            tokio::select! {
                changed = state.changed(), if store_followed => match changed {
                    Some(up) => report(&reporter, up).await,
                    None => store_followed = false,
                },
                stopped = async { stopping.wait_for(|stopping| *stopping).await.is_ok() } => {
                    if stopped {
                        reporter.set_service_status("", ServingStatus::NotServing).await;
                        for service in STORE_BOUND {
                            reporter.set_service_status(service, ServingStatus::NotServing).await;
                        }
                    }
                    return;
                }
            }
        }
    });
}

async fn report(reporter: &HealthReporter, up: bool) {
    let status = if up { ServingStatus::Serving } else { ServingStatus::NotServing };
    for service in STORE_BOUND {
        reporter.set_service_status(service, status).await;
    }
}
