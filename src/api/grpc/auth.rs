//! Reads the caller from request metadata: `authorization: Bearer <token>` and the optional `x-org-id` header
//! (or ZITADEL's name for it, `x-zitadel-orgid`).

use tonic::{Request, Status};

use crate::{
    domain::principal::{Principal, Scope},
    service::{Caller, Error, Services},
};

use crate::api::error::IntoStatus;

/// The header that picks the organization a call acts in.
pub const ORG_HEADER: &str = "x-org-id";
/// ZITADEL's name for the same header, accepted so that its clients work unchanged; `x-org-id` wins if both come.
pub const ORG_HEADER_ALIAS: &str = "x-zitadel-orgid";

/// The authenticated principal, refused unless it holds `scope`.
pub async fn principal<T>(
    services: &Services,
    request: &Request<T>,
    scope: Scope,
) -> Result<Principal, Status> {
    let header = request.metadata().get("authorization").ok_or_else(|| {
        crate::api::error::status(Error::Unauthenticated(
            "missing credential: send `authorization: Bearer <token>`",
        ))
    })?;
    let token = header
        .to_str()
        .ok()
        .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .ok_or_else(|| {
            crate::api::error::status(Error::Unauthenticated(
                "the authorization header must be `Bearer <token>`",
            ))
        })?;
    // Behind a trusted proxy, the address it forwarded: what the key's network rules are about.
    let client_ip = crate::api::net::client_address::of(request);
    let principal = services.authenticate(token, client_ip).await.or_status()?;
    principal.require(scope).or_status()?;
    Ok(principal)
}

/// The principal and the organization the call acts in.
pub async fn caller<T>(services: &Services, request: &Request<T>, scope: Scope) -> Result<Caller, Status> {
    let principal = principal(services, request, scope).await?;
    let header = |name| {
        request
            .metadata()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|org| !org.is_empty())
    };
    let requested = header(ORG_HEADER).or_else(|| header(ORG_HEADER_ALIAS));
    let caller = services.caller(principal, requested).await.or_status()?;
    tracing::Span::current().record("org", caller.org_id.as_str());
    Ok(caller)
}
