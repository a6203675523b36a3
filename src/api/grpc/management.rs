//! keymint.management.v1.ManagementService: projects, applications and application keys of one organization.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::{
    crypto::{CryptoError, keygen::RsaBits, public_key::PublicKey},
    domain::{
        DomainError, Timestamp,
        events::{KeyAlgorithm as DomainKeyAlgorithm, KeyType as DomainKeyType},
        principal::Scope,
        validate::Violations,
    },
    service::{Services, app_keys::KeySpec, bounded::BoundedCache},
    store::{AppKeyRow, AppRow, EventRange, ProjectRow, RecordedEvent},
};

use crate::api::{
    error::{IntoStatus, status},
    grpc::auth,
    grpc::convert,
    pb::keymint::management::v1::{
        AddApiAppRequest, AddApiAppResponse, AddAppKeyRequest, AddAppKeyResponse, AddProjectRequest,
        AddProjectResponse, App, Change, GetAppByIdRequest, GetAppByIdResponse, GetAppKeyRequest,
        GetAppKeyResponse, GetProjectByIdRequest, GetProjectByIdResponse, Key, KeyAlgorithm, KeyType,
        KeyView, ListAppChangesRequest, ListAppChangesResponse, ListAppKeysRequest, ListAppKeysResponse,
        ListAppsRequest, ListAppsResponse, ListProjectsRequest, ListProjectsResponse, Project,
        RemoveAppKeyRequest, RemoveAppKeyResponse, RemoveAppRequest, RemoveAppResponse, RemoveProjectRequest,
        RemoveProjectResponse, UpdateApiAppRequest, UpdateApiAppResponse,
        management_service_server::ManagementService,
    },
    validate_ids,
};

pub struct Management {
    pub services: Arc<Services>,
    pub jwks: Jwks,
}

/// The public JWK of each application key shown, built once per key rather than on every read: a key's public half
/// never changes, and building its JWK (PEM, DER, base64url, the Struct) took a quarter of a list's CPU. Keyed by
/// key ID and checked against the PEM it was built from; at most `CAPACITY` keys.
pub struct Jwks(BoundedCache<String, Arc<(String, Option<prost_types::Struct>)>>);

impl Jwks {
    const CAPACITY: usize = 20_000;

    fn of(&self, row: &AppKeyRow) -> Result<Option<prost_types::Struct>, CryptoError> {
        if let Some(built) = self.0.get(&row.id)
            && built.0 == row.public_key
        {
            return Ok(built.1.clone());
        }
        // Every stored key was parsed when it was added; one that no longer parses is a fault, not the caller's.
        let jwk = convert::json_value_struct(PublicKey::jwk_of_spki_pem(&row.public_key, &row.id)?);
        self.0.insert(row.id.clone(), Arc::new((row.public_key.clone(), jwk.clone())));
        Ok(jwk)
    }

    /// The key as the API shows it: with its public key in KEY_VIEW_FULL, without in KEY_VIEW_BASIC.
    fn key_message(&self, row: AppKeyRow, view: KeyView) -> Result<Key, CryptoError> {
        let full = view == KeyView::Full;
        Ok(Key {
            public_key_jwk: if full { self.of(&row)? } else { None },
            details: convert::row(&row.details),
            r#type: row.key_type,
            expiration_date: Some(convert::timestamp(Timestamp(row.expires_at))),
            algorithm: row.algorithm,
            public_key_pem: if full { row.public_key } else { String::new() },
            supplied: row.supplied,
            id: row.id,
        })
    }
}

impl Default for Jwks {
    fn default() -> Self {
        Jwks(BoundedCache::new(Self::CAPACITY))
    }
}

#[tonic::async_trait]
impl ManagementService for Management {
    async fn add_project(
        &self,
        request: Request<AddProjectRequest>,
    ) -> Result<Response<AddProjectResponse>, Status> {
        let caller = auth::caller(&self.services, &request, Scope::ProjectsWrite).await?;
        let (id, written) = self.services.add_project(&caller, &request.get_ref().name).await.or_status()?;
        Ok(Response::new(AddProjectResponse { id, details: convert::written(written, &caller.org_id) }))
    }

    async fn get_project_by_id(
        &self,
        request: Request<GetProjectByIdRequest>,
    ) -> Result<Response<GetProjectByIdResponse>, Status> {
        let caller = auth::caller(&self.services, &request, Scope::ProjectsRead).await?;
        let id = &request.get_ref().id;
        validate_ids(&[("id", id)])?;
        let project = self.services.project(&caller, id).await.or_status()?;
        Ok(Response::new(GetProjectByIdResponse { project: Some(project_message(project)) }))
    }

    async fn list_projects(
        &self,
        request: Request<ListProjectsRequest>,
    ) -> Result<Response<ListProjectsResponse>, Status> {
        let caller = auth::caller(&self.services, &request, Scope::ProjectsRead).await?;
        let q = request.get_ref().query.unwrap_or_default();
        let view = self.services.projects(&caller, q.offset, q.limit, q.asc).await.or_status()?;
        Ok(Response::new(ListProjectsResponse {
            details: convert::list(&view),
            result: view.items.into_iter().map(project_message).collect(),
        }))
    }

    async fn remove_project(
        &self,
        request: Request<RemoveProjectRequest>,
    ) -> Result<Response<RemoveProjectResponse>, Status> {
        let caller = auth::caller(&self.services, &request, Scope::ProjectsWrite).await?;
        let id = &request.get_ref().id;
        validate_ids(&[("id", id)])?;
        let written = self.services.remove_project(&caller, id).await.or_status()?;
        Ok(Response::new(RemoveProjectResponse { details: convert::written(written, &caller.org_id) }))
    }

    async fn add_api_app(
        &self,
        request: Request<AddApiAppRequest>,
    ) -> Result<Response<AddApiAppResponse>, Status> {
        let caller = auth::caller(&self.services, &request, Scope::ProjectsWrite).await?;
        let r = request.get_ref();
        validate_ids(&[("projectId", &r.project_id)])?;
        let added = self
            .services
            .add_api_app(&caller, &r.project_id, &r.name, &r.allowed_scopes)
            .await
            .or_status()?;
        Ok(Response::new(AddApiAppResponse {
            app_id: added.app_id,
            details: convert::written(added.written, &caller.org_id),
            client_id: added.client_id,
        }))
    }

    async fn update_api_app(
        &self,
        request: Request<UpdateApiAppRequest>,
    ) -> Result<Response<UpdateApiAppResponse>, Status> {
        let caller = auth::caller(&self.services, &request, Scope::ProjectsWrite).await?;
        let r = request.get_ref();
        validate_ids(&[("projectId", &r.project_id), ("appId", &r.app_id)])?;
        let written = self
            .services
            .update_api_app(&caller, &r.project_id, &r.app_id, &r.allowed_scopes)
            .await
            .or_status()?;
        Ok(Response::new(UpdateApiAppResponse { details: convert::written(written, &caller.org_id) }))
    }

    async fn get_app_by_id(
        &self,
        request: Request<GetAppByIdRequest>,
    ) -> Result<Response<GetAppByIdResponse>, Status> {
        let caller = auth::caller(&self.services, &request, Scope::ProjectsRead).await?;
        let r = request.get_ref();
        validate_ids(&[("projectId", &r.project_id), ("appId", &r.app_id)])?;
        let app = self.services.app(&caller, &r.project_id, &r.app_id).await.or_status()?;
        Ok(Response::new(GetAppByIdResponse { app: Some(app_message(app)) }))
    }

    async fn list_apps(
        &self,
        request: Request<ListAppsRequest>,
    ) -> Result<Response<ListAppsResponse>, Status> {
        let caller = auth::caller(&self.services, &request, Scope::ProjectsRead).await?;
        let r = request.get_ref();
        validate_ids(&[("projectId", &r.project_id)])?;
        let q = r.query.unwrap_or_default();
        let view = self.services.apps(&caller, &r.project_id, q.offset, q.limit, q.asc).await.or_status()?;
        Ok(Response::new(ListAppsResponse {
            details: convert::list(&view),
            result: view.items.into_iter().map(app_message).collect(),
        }))
    }

    async fn remove_app(
        &self,
        request: Request<RemoveAppRequest>,
    ) -> Result<Response<RemoveAppResponse>, Status> {
        let caller = auth::caller(&self.services, &request, Scope::ProjectsWrite).await?;
        let r = request.get_ref();
        validate_ids(&[("projectId", &r.project_id), ("appId", &r.app_id)])?;
        let written = self.services.remove_app(&caller, &r.project_id, &r.app_id).await.or_status()?;
        Ok(Response::new(RemoveAppResponse { details: convert::written(written, &caller.org_id) }))
    }

    async fn add_app_key(
        &self,
        request: Request<AddAppKeyRequest>,
    ) -> Result<Response<AddAppKeyResponse>, Status> {
        let caller = auth::caller(&self.services, &request, Scope::KeysWrite).await?;
        let r = request.get_ref();
        validate_ids(&[("projectId", &r.project_id), ("appId", &r.app_id)])?;
        let (key_type, spec) = add_key_request(r)?;
        let expiration = r
            .expiration_date
            .as_ref()
            .map(|t| convert::from_timestamp("expirationDate", t))
            .transpose()
            .or_status()?;
        let added = self
            .services
            .add_app_key(&caller, &r.project_id, &r.app_id, key_type, spec, expiration)
            .await
            .or_status()?;
        Ok(Response::new(AddAppKeyResponse {
            id: added.key_id,
            details: convert::written(added.written, &caller.org_id),
            // The response owns a copy of the key file; the service's copy is wiped when `added` drops.
            key_details: added.key_file.to_vec(),
        }))
    }

    async fn get_app_key(
        &self,
        request: Request<GetAppKeyRequest>,
    ) -> Result<Response<GetAppKeyResponse>, Status> {
        let caller = auth::caller(&self.services, &request, Scope::KeysRead).await?;
        let r = request.get_ref();
        validate_ids(&[("projectId", &r.project_id), ("appId", &r.app_id), ("keyId", &r.key_id)])?;
        let view = key_view(r.view, KeyView::Full)?;
        let key = self.services.app_key(&caller, &r.project_id, &r.app_id, &r.key_id).await.or_status()?;
        Ok(Response::new(GetAppKeyResponse { key: Some(self.jwks.key_message(key, view).or_status()?) }))
    }

    async fn list_app_keys(
        &self,
        request: Request<ListAppKeysRequest>,
    ) -> Result<Response<ListAppKeysResponse>, Status> {
        let caller = auth::caller(&self.services, &request, Scope::KeysRead).await?;
        let r = request.get_ref();
        validate_ids(&[("projectId", &r.project_id), ("appId", &r.app_id)])?;
        let key_view = key_view(r.view, KeyView::Basic)?;
        let q = r.query.unwrap_or_default();
        let full = key_view == KeyView::Full;
        let page = crate::service::page(q.offset, q.limit, q.asc).map_err(|e| status(e.into()))?;
        let view = self.services.app_keys(&caller, &r.project_id, &r.app_id, page, full).await.or_status()?;
        Ok(Response::new(ListAppKeysResponse {
            details: convert::list(&view),
            result: view
                .items
                .into_iter()
                .map(|row| self.jwks.key_message(row, key_view))
                .collect::<Result<_, _>>()
                .or_status()?,
        }))
    }

    async fn remove_app_key(
        &self,
        request: Request<RemoveAppKeyRequest>,
    ) -> Result<Response<RemoveAppKeyResponse>, Status> {
        let caller = auth::caller(&self.services, &request, Scope::KeysWrite).await?;
        let r = request.get_ref();
        validate_ids(&[("projectId", &r.project_id), ("appId", &r.app_id), ("keyId", &r.key_id)])?;
        let written =
            self.services.remove_app_key(&caller, &r.project_id, &r.app_id, &r.key_id).await.or_status()?;
        Ok(Response::new(RemoveAppKeyResponse { details: convert::written(written, &caller.org_id) }))
    }

    async fn list_app_changes(
        &self,
        request: Request<ListAppChangesRequest>,
    ) -> Result<Response<ListAppChangesResponse>, Status> {
        let caller = auth::caller(&self.services, &request, Scope::ProjectsRead).await?;
        let r = request.get_ref();
        validate_ids(&[("projectId", &r.project_id), ("appId", &r.app_id)])?;
        let q = r.query.unwrap_or_default();
        let range = EventRange { from_sequence: q.sequence, limit: q.limit, asc: q.asc };
        let events = self.services.app_changes(&caller, &r.project_id, &r.app_id, range).await.or_status()?;
        Ok(Response::new(ListAppChangesResponse { result: events.into_iter().map(change_message).collect() }))
    }
}

fn project_message(row: ProjectRow) -> Project {
    Project { details: convert::row(&row.details), id: row.id, name: row.name }
}

fn app_message(row: AppRow) -> App {
    App {
        allowed_scopes: row.scopes(),
        details: convert::row(&row.details),
        id: row.id,
        name: row.name,
        project_id: row.project_id,
        client_id: row.client_id,
    }
}

/// The request's key type and where its key comes from; every invalid field is reported at once.
fn add_key_request(r: &AddAppKeyRequest) -> Result<(DomainKeyType, KeySpec), Status> {
    let mut violations = Violations::new();
    if KeyType::try_from(r.r#type) != Ok(KeyType::Json) {
        violations.add("type", "must be KEY_TYPE_JSON, the only key type keymint issues");
    }
    let algorithm = match KeyAlgorithm::try_from(r.algorithm) {
        Ok(KeyAlgorithm::Unspecified) => None,
        Ok(KeyAlgorithm::Rsa) => Some(DomainKeyAlgorithm::Rsa),
        Ok(KeyAlgorithm::EcP256) => Some(DomainKeyAlgorithm::EcP256),
        Ok(KeyAlgorithm::Ed25519) => Some(DomainKeyAlgorithm::Ed25519),
        Err(_) => {
            violations.add(
                "algorithm",
                "must be KEY_ALGORITHM_RSA (or unspecified), KEY_ALGORITHM_EC_P256 or KEY_ALGORITHM_ED25519",
            );
            None
        }
    };
    let supplied = !r.public_key.is_empty();
    let mut bits = None;
    if r.key_size != 0 {
        if supplied {
            violations.add("keySize", "must be 0 with publicKey: a supplied key has its own size");
        } else if algorithm.is_some_and(|a| a != DomainKeyAlgorithm::Rsa) {
            violations.add("keySize", "applies to RSA keys only: leave it 0 for EC P-256 and Ed25519 keys");
        } else {
            bits = RsaBits::from_bits(r.key_size);
            if bits.is_none() {
                violations.add("keySize", "must be 0 (the default), 2048, 3072 or 4096");
            }
        }
    }
    violations.into_result().map_err(|e| status(e.into()))?;
    let spec = if supplied {
        KeySpec::Supplied { public_key: r.public_key.clone(), algorithm }
    } else {
        KeySpec::Generate { algorithm: algorithm.unwrap_or(DomainKeyAlgorithm::Rsa), bits }
    };
    Ok((DomainKeyType::Json, spec))
}

/// The view a key read asked for, `default` when it named none.
fn key_view(view: i32, default: KeyView) -> Result<KeyView, Status> {
    match KeyView::try_from(view) {
        Ok(KeyView::Unspecified) => Ok(default),
        Ok(view) => Ok(view),
        Err(_) => Err(status(
            DomainError::invalid(
                "view",
                "must be KEY_VIEW_BASIC, KEY_VIEW_FULL or unspecified (the read's default)",
            )
            .into(),
        )),
    }
}

/// An event of the application's audit trail.
fn change_message(event: RecordedEvent) -> Change {
    Change {
        change_date: Some(convert::timestamp(Timestamp(event.created_at))),
        sequence: u64::try_from(event.sequence).unwrap_or_default(),
        payload: convert::json_struct(&event.payload),
        event_type: event.event_type,
        editor_id: event.creator,
        resource_owner: event.resource_owner,
    }
}

#[cfg(test)]
mod tests {
    use base64::{Engine, engine::general_purpose::STANDARD};

    use super::*;
    use crate::store::RowDetails;

    /// An Ed25519 key row whose public key is 32 bytes of `fill`.
    fn row(fill: u8) -> AppKeyRow {
        let mut spki = vec![0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
        spki.extend([fill; 32]);
        AppKeyRow {
            id: "k".into(),
            app_id: "a".into(),
            key_type: 1,
            expires_at: 0,
            public_key: format!(
                "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
                STANDARD.encode(spki)
            ),
            algorithm: 3,
            supplied: true,
            details: RowDetails { org_id: "o".into(), sequence: 1, created_at: 1, changed_at: 1 },
        }
    }

    fn x_of(key: &Key) -> String {
        let jwk = key.public_key_jwk.as_ref().expect("a JWK");
        match jwk.fields.get("x").and_then(|x| x.kind.clone()) {
            Some(prost_types::value::Kind::StringValue(x)) => x,
            other => panic!("x: {other:?}"),
        }
    }

    #[test]
    fn a_jwk_is_built_once_and_never_for_another_pem() {
        let jwks = Jwks::default();
        let first = jwks.key_message(row(1), KeyView::Full).expect("key");
        assert_eq!(x_of(&first), "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE");
        assert_eq!(jwks.key_message(row(1), KeyView::Full).expect("key"), first, "the remembered JWK");
        // The same ID with another public key (which keymint never writes) is not answered from memory.
        assert_eq!(
            x_of(&jwks.key_message(row(2), KeyView::Full).expect("key")),
            "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI"
        );
        // KEY_VIEW_BASIC: the same key without its public halves.
        let basic = jwks.key_message(row(1), KeyView::Basic).expect("key");
        assert_eq!(basic, Key { public_key_pem: String::new(), public_key_jwk: None, ..first });
    }
}
