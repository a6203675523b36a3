//! keymint.apikeys.v1.ApiKeyService: API keys of one organization, and VerifyApiKey.

use std::{net::IpAddr, sync::Arc};

use tonic::{Request, Response, Status};

use crate::{
    domain::{
        DomainError, Timestamp,
        api_key::{Environment as DomainEnvironment, KeyStatus, Origin, Settings},
        principal::Scope,
        rate_limit::RateLimit as DomainRateLimit,
    },
    service::{
        Services,
        api_keys::{ApiKeyRecord, Issued, KeyFilter},
        verify::{Verdict, VerifyCode as DomainVerifyCode, VerifyRequest},
    },
    store::{EventRange, RecordedEvent},
};

use crate::api::{
    error::{IntoStatus, status},
    grpc::auth,
    grpc::convert,
    pb::keymint::apikeys::v1::{
        ApiKey, ApiKeyChange, CreateApiKeyRequest, CreateApiKeyResponse, DeleteApiKeyRequest,
        DeleteApiKeyResponse, Environment, GetApiKeyRequest, GetApiKeyResponse, ListApiKeyChangesRequest,
        ListApiKeyChangesResponse, ListApiKeysRequest, ListApiKeysResponse, RateLimit, RateLimitState,
        RollApiKeyRequest, RollApiKeyResponse, Status as KeyStatusMessage, UpdateApiKeyRequest,
        UpdateApiKeyResponse, Usage, VerifyApiKeyRequest, VerifyApiKeyResponse, VerifyCode,
        api_key_service_server::ApiKeyService,
    },
    validate_ids,
};

pub struct ApiKeys {
    pub services: Arc<Services>,
}

#[tonic::async_trait]
impl ApiKeyService for ApiKeys {
    async fn create_api_key(
        &self,
        request: Request<CreateApiKeyRequest>,
    ) -> Result<Response<CreateApiKeyResponse>, Status> {
        let caller = auth::caller(&self.services, &request, Scope::ApiKeysWrite).await?;
        let r = request.into_inner();
        let environment = match Environment::try_from(r.environment) {
            Ok(Environment::Live) => DomainEnvironment::Live,
            Ok(Environment::Test) => DomainEnvironment::Test,
            _ => return Err(invalid("environment", "must be ENVIRONMENT_LIVE or ENVIRONMENT_TEST")),
        };
        let origin = Origin {
            app_id: non_empty(r.app_id),
            external_id: non_empty(r.external_id),
            environment,
            expires_at: r
                .expires_at
                .as_ref()
                .map(|t| convert::from_timestamp("expiresAt", t).map(Timestamp::micros))
                .transpose()
                .or_status()?,
            integration: r.integration,
            time_offset_micros: r.time_offset.map(|d| micros("timeOffset", &d)).transpose()?.unwrap_or(0),
        };
        let settings = Settings {
            title: r.title,
            description: r.description,
            scopes: r.scopes,
            allowed_cidrs: r.allowed_cidrs,
            rate_limit: r.rate_limit.map(rate_limit),
            daily_quota: (r.daily_quota > 0).then_some(r.daily_quota),
            metadata: r.metadata.into_iter().collect(),
            status: KeyStatus::Active,
            api_version: None,
        };
        let issued = self.services.create_api_key(&caller, origin, settings).await.or_status()?;
        let (api_key, details, secret) = issued_parts(issued, &caller.org_id);
        Ok(Response::new(CreateApiKeyResponse { api_key, details, secret }))
    }

    async fn get_api_key(
        &self,
        request: Request<GetApiKeyRequest>,
    ) -> Result<Response<GetApiKeyResponse>, Status> {
        let caller = auth::caller(&self.services, &request, Scope::ApiKeysRead).await?;
        let id = &request.get_ref().id;
        validate_ids(&[("id", id)])?;
        let key = self.services.api_key(&caller, id).await.or_status()?;
        Ok(Response::new(GetApiKeyResponse { api_key: Some(key_message(key)) }))
    }

    async fn list_api_keys(
        &self,
        request: Request<ListApiKeysRequest>,
    ) -> Result<Response<ListApiKeysResponse>, Status> {
        let caller = auth::caller(&self.services, &request, Scope::ApiKeysRead).await?;
        let r = request.into_inner();
        // The filters are IDs, checked like any other before a store sees them (PostgreSQL fails on NUL).
        let ids =
            [("startingAfter", &r.starting_after), ("endingBefore", &r.ending_before), ("appId", &r.app_id)];
        let given: Vec<(&str, &str)> = ids
            .iter()
            .filter(|(_, id)| !id.trim().is_empty())
            .map(|(field, id)| (*field, id.as_str()))
            .collect();
        validate_ids(&given)?;
        let status = match KeyStatusMessage::try_from(r.status) {
            Ok(KeyStatusMessage::Unspecified) => None,
            Ok(status) => Some(key_status(status)),
            Err(_) => return Err(invalid("status", "must be a Status value")),
        };
        let environment = match Environment::try_from(r.environment) {
            Ok(Environment::Unspecified) => None,
            Ok(Environment::Live) => Some(DomainEnvironment::Live),
            Ok(Environment::Test) => Some(DomainEnvironment::Test),
            Err(_) => return Err(invalid("environment", "must be an Environment value")),
        };
        let filter = KeyFilter {
            limit: r.limit,
            starting_after: non_empty(r.starting_after),
            ending_before: non_empty(r.ending_before),
            status,
            app_id: non_empty(r.app_id),
            environment,
        };
        let (keys, has_more) = self.services.api_keys(&caller, filter).await.or_status()?;
        Ok(Response::new(ListApiKeysResponse {
            result: keys.into_iter().map(key_message).collect(),
            has_more,
        }))
    }

    async fn update_api_key(
        &self,
        request: Request<UpdateApiKeyRequest>,
    ) -> Result<Response<UpdateApiKeyResponse>, Status> {
        let caller = auth::caller(&self.services, &request, Scope::ApiKeysWrite).await?;
        let r = request.into_inner();
        validate_ids(&[("id", &r.id)])?;
        let status = match KeyStatusMessage::try_from(r.status) {
            Ok(KeyStatusMessage::Active) => KeyStatus::Active,
            Ok(KeyStatusMessage::Inactive) => KeyStatus::Inactive,
            // Only reaches the key when `status` is in the mask, where validation names it.
            _ => KeyStatus::Revoked,
        };
        let requested = Settings {
            title: r.title,
            description: r.description,
            scopes: r.scopes,
            allowed_cidrs: r.allowed_cidrs,
            rate_limit: r.rate_limit.map(rate_limit),
            daily_quota: (r.daily_quota > 0).then_some(r.daily_quota),
            metadata: r.metadata.into_iter().collect(),
            status,
            api_version: non_empty(r.api_version),
        };
        // Entries by their JSON name (`allowedCidrs`) or their original one (`allowed_cidrs`), as a FieldMask's.
        let mask: Vec<String> = r.update_mask.iter().map(|entry| snake_case(entry)).collect();
        let (key, written) =
            self.services.update_api_key(&caller, &r.id, &mask, requested).await.or_status()?;
        Ok(Response::new(UpdateApiKeyResponse {
            api_key: Some(key_message(key)),
            details: convert::written(written, &caller.org_id),
        }))
    }

    async fn delete_api_key(
        &self,
        request: Request<DeleteApiKeyRequest>,
    ) -> Result<Response<DeleteApiKeyResponse>, Status> {
        let caller = auth::caller(&self.services, &request, Scope::ApiKeysWrite).await?;
        let id = &request.get_ref().id;
        validate_ids(&[("id", id)])?;
        let written = self.services.delete_api_key(&caller, id).await.or_status()?;
        Ok(Response::new(DeleteApiKeyResponse { details: convert::written(written, &caller.org_id) }))
    }

    async fn roll_api_key(
        &self,
        request: Request<RollApiKeyRequest>,
    ) -> Result<Response<RollApiKeyResponse>, Status> {
        let caller = auth::caller(&self.services, &request, Scope::ApiKeysWrite).await?;
        let r = request.get_ref();
        validate_ids(&[("id", &r.id)])?;
        let grace = r.grace_period.map(|d| micros("gracePeriod", &d)).transpose()?.unwrap_or(0);
        let (issued, old_expires_at) = self.services.roll_api_key(&caller, &r.id, grace).await.or_status()?;
        let (api_key, details, secret) = issued_parts(issued, &caller.org_id);
        Ok(Response::new(RollApiKeyResponse {
            api_key,
            details,
            secret,
            old_secret_expires_at: Some(convert::timestamp(old_expires_at)),
        }))
    }

    async fn list_api_key_changes(
        &self,
        request: Request<ListApiKeyChangesRequest>,
    ) -> Result<Response<ListApiKeyChangesResponse>, Status> {
        let caller = auth::caller(&self.services, &request, Scope::ApiKeysRead).await?;
        let r = request.get_ref();
        validate_ids(&[("id", &r.id)])?;
        let q = r.query.unwrap_or_default();
        let range = EventRange { from_sequence: q.sequence, limit: q.limit, asc: q.asc };
        let events = self.services.api_key_changes(&caller, &r.id, range).await.or_status()?;
        Ok(Response::new(ListApiKeyChangesResponse {
            result: events.into_iter().map(change_message).collect(),
        }))
    }

    async fn verify_api_key(
        &self,
        request: Request<VerifyApiKeyRequest>,
    ) -> Result<Response<VerifyApiKeyResponse>, Status> {
        let caller = auth::caller(&self.services, &request, Scope::ApiKeysVerify).await?;
        let r = request.get_ref();
        let client_ip = match r.client_ip.trim() {
            "" => None,
            ip => Some(ip.parse::<IpAddr>().map_err(|_| {
                invalid("clientIp", "must be an IPv4 or IPv6 address (e.g. 203.0.113.7 or 2001:db8::1)")
            })?),
        };
        let verdict = self
            .services
            .verify_api_key(VerifyRequest {
                secret: r.secret.trim(),
                client_ip,
                required_scopes: &r.required_scopes,
                accept_test_keys: r.accept_test_keys,
                org_id: Some(&caller.org_id),
            })
            .await
            .or_status()?;
        Ok(Response::new(verdict_message(verdict)))
    }
}

fn invalid(field: &str, description: &str) -> Status {
    status(DomainError::invalid(field, description).into())
}

fn non_empty(s: String) -> Option<String> {
    (!s.trim().is_empty()).then_some(s)
}

fn rate_limit(r: RateLimit) -> DomainRateLimit {
    DomainRateLimit { per_second: r.per_second, burst: r.burst }
}

fn key_status(status: KeyStatusMessage) -> KeyStatus {
    match status {
        KeyStatusMessage::Active | KeyStatusMessage::Unspecified => KeyStatus::Active,
        KeyStatusMessage::Inactive => KeyStatus::Inactive,
        KeyStatusMessage::Revoked => KeyStatus::Revoked,
    }
}

/// A protobuf Duration in microseconds; out-of-range values are refused rather than wrapped.
fn micros(field: &str, d: &prost_types::Duration) -> Result<i64, Status> {
    d.seconds
        .checked_mul(1_000_000)
        .and_then(|m| m.checked_add(i64::from(d.nanos / 1_000)))
        .filter(|_| d.nanos.abs() < 1_000_000_000)
        .ok_or_else(|| invalid(field, "must be a valid duration"))
}

fn duration(micros: i64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: micros / 1_000_000,
        nanos: i32::try_from((micros % 1_000_000) * 1_000).unwrap_or_default(),
    }
}

fn environment(env: DomainEnvironment) -> Environment {
    match env {
        DomainEnvironment::Live => Environment::Live,
        DomainEnvironment::Test => Environment::Test,
    }
}

fn issued_parts(
    issued: Issued,
    org_id: &str,
) -> (Option<ApiKey>, Option<crate::api::pb::keymint::v1::ObjectDetails>, String) {
    let details = convert::written(issued.written, org_id);
    // The response owns a copy of the secret; the service's copy is wiped when `issued` drops.
    let secret = issued.secret.to_string();
    (Some(key_message(issued.key)), details, secret)
}

fn key_message(key: ApiKeyRecord) -> ApiKey {
    let status = match key.settings.status {
        KeyStatus::Active => KeyStatusMessage::Active,
        KeyStatus::Inactive => KeyStatusMessage::Inactive,
        KeyStatus::Revoked => KeyStatusMessage::Revoked,
    };
    ApiKey {
        details: convert::row(&key.details),
        id: key.id,
        title: key.settings.title,
        description: key.settings.description,
        app_id: key.origin.app_id.unwrap_or_default(),
        external_id: key.origin.external_id.unwrap_or_default(),
        scopes: key.settings.scopes,
        allowed_cidrs: key.settings.allowed_cidrs,
        environment: environment(key.origin.environment).into(),
        status: status.into(),
        expires_at: key.origin.expires_at.map(|t| convert::timestamp(Timestamp(t))),
        rate_limit: key.settings.rate_limit.map(|r| RateLimit { per_second: r.per_second, burst: r.burst }),
        daily_quota: key.settings.daily_quota.unwrap_or(0),
        integration: key.origin.integration,
        time_offset: Some(duration(key.origin.time_offset_micros)),
        metadata: key.settings.metadata.into_iter().collect(),
        prefix: key.prefix,
        last_four: key.last_four,
        created_by: key.created_by,
        deleted_at: key.deleted_at.map(convert::timestamp),
        api_version: key.settings.api_version.unwrap_or_default(),
        usage: Some(Usage {
            total_requests: key.usage.total_requests,
            total_denied: key.usage.total_denied,
            last_used_at: key.usage.last_used_at.map(convert::timestamp),
        }),
    }
}

fn change_message(event: RecordedEvent) -> ApiKeyChange {
    ApiKeyChange {
        change_date: Some(convert::timestamp(Timestamp(event.created_at))),
        sequence: u64::try_from(event.sequence).unwrap_or_default(),
        payload: convert::json_struct(&event.payload),
        event_type: event.event_type,
        editor_id: event.creator,
    }
}

fn verdict_message(verdict: Verdict) -> VerifyApiKeyResponse {
    let code = match verdict.code {
        DomainVerifyCode::Valid => VerifyCode::Valid,
        DomainVerifyCode::NotFound => VerifyCode::NotFound,
        DomainVerifyCode::Expired => VerifyCode::Expired,
        DomainVerifyCode::Disabled => VerifyCode::Disabled,
        DomainVerifyCode::Revoked => VerifyCode::Revoked,
        DomainVerifyCode::IpNotAllowed => VerifyCode::IpNotAllowed,
        DomainVerifyCode::InsufficientScopes => VerifyCode::InsufficientScopes,
        DomainVerifyCode::RateLimited => VerifyCode::RateLimited,
        DomainVerifyCode::QuotaExceeded => VerifyCode::QuotaExceeded,
        DomainVerifyCode::TestKeyNotAllowed => VerifyCode::TestKeyNotAllowed,
    };
    let mut response = VerifyApiKeyResponse {
        valid: verdict.code == DomainVerifyCode::Valid,
        code: code.into(),
        rate_limit: verdict.rate.map(|d| RateLimitState {
            limit: d.limit,
            remaining: d.remaining,
            reset: Some(convert::timestamp(d.reset)),
        }),
        ..Default::default()
    };
    if let Some(key) = verdict.key {
        response.key_id = key.id.clone();
        response.org_id = key.org_id.clone();
        response.app_id = key.origin.app_id.clone().unwrap_or_default();
        response.external_id = key.origin.external_id.clone().unwrap_or_default();
        response.scopes = key.settings.scopes.clone();
        response.metadata = key.settings.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        response.time_offset = Some(duration(key.origin.time_offset_micros));
        response.environment = environment(key.origin.environment).into();
    }
    response
}

/// `allowedCidrs` → `allowed_cidrs`; a name already in snake case stays as it is.
fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}
