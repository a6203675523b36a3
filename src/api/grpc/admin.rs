//! keymint.admin.v1.AdminService: organizations, for instance administrators (an `orgs:admin` key sees its own).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::{domain::principal::Scope, service::Services, store::OrgRow};

use crate::api::{
    error::IntoStatus,
    grpc::auth,
    grpc::convert,
    pb::keymint::admin::v1::{
        AddOrgRequest, AddOrgResponse, GetOrgByIdRequest, GetOrgByIdResponse, ListOrgsRequest,
        ListOrgsResponse, Org, admin_service_server::AdminService,
    },
    validate_ids,
};

pub struct Admin {
    pub services: Arc<Services>,
}

#[tonic::async_trait]
impl AdminService for Admin {
    async fn add_org(&self, request: Request<AddOrgRequest>) -> Result<Response<AddOrgResponse>, Status> {
        let principal = auth::principal(&self.services, &request, Scope::OrgsAdmin).await?;
        let (id, written) = self.services.add_org(&principal, &request.get_ref().name).await.or_status()?;
        Ok(Response::new(AddOrgResponse { details: convert::written(written, &id), id }))
    }

    async fn get_org_by_id(
        &self,
        request: Request<GetOrgByIdRequest>,
    ) -> Result<Response<GetOrgByIdResponse>, Status> {
        let principal = auth::principal(&self.services, &request, Scope::OrgsAdmin).await?;
        let id = &request.get_ref().id;
        validate_ids(&[("id", id)])?;
        let org = self.services.org(&principal, id).await.or_status()?;
        Ok(Response::new(GetOrgByIdResponse { org: Some(org_message(org)) }))
    }

    async fn list_orgs(
        &self,
        request: Request<ListOrgsRequest>,
    ) -> Result<Response<ListOrgsResponse>, Status> {
        let principal = auth::principal(&self.services, &request, Scope::OrgsAdmin).await?;
        let q = request.get_ref().query.unwrap_or_default();
        let view = self.services.orgs(&principal, q.offset, q.limit, q.asc).await.or_status()?;
        Ok(Response::new(ListOrgsResponse {
            details: convert::list(&view),
            result: view.items.into_iter().map(org_message).collect(),
        }))
    }
}

fn org_message(row: OrgRow) -> Org {
    Org { details: convert::row(&row.details), id: row.id, name: row.name }
}
