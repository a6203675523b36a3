//! Requests to other services, checked at the proxy in front of them (Envoy's external authorization): may this
//! request pass, by the API key or keymint access token it carries? An API key is verified exactly like
//! VerifyApiKey (scopes, networks, expiry, status, rate limit and quota; the use is counted), an access token
//! like introspection.

use crate::{
    crypto::api_key_secret,
    domain::{Timestamp, api_key::MAX_SCOPES, rate_limit::utc_day},
};

use super::{
    Result, Services,
    verify::{VerifyCode, VerifyRequest},
};

const MICROS_PER_DAY: i64 = 86_400 * 1_000_000;

/// The verdict on a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeVerdict {
    Allowed(Bearer),
    Refused(Refusal),
}

/// Who a passing request is from, for the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bearer {
    pub credential: BearerCredential,
    pub org_id: String,
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BearerCredential {
    /// An API key, by its ID.
    ApiKey { key_id: String },
    /// An access token, by the client ID of the application it was issued to.
    AccessToken { client_id: String },
}

/// Why a request may not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub kind: RefusalKind,
    /// Stable and machine-readable, like the reasons of keymint's own errors.
    pub reason: &'static str,
    /// For people; never the credential.
    pub message: &'static str,
    /// When a retry can pass (rate limit and quota).
    pub retry_at: Option<Timestamp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// No credential keymint accepts: missing, unknown, revoked, expired, inactive.
    Unauthenticated,
    /// A valid credential that may not make this request: scopes, network, a TEST key.
    Forbidden,
    /// The key's rate limit or daily quota is used up.
    Exhausted,
}

impl Refusal {
    fn new(kind: RefusalKind, reason: &'static str, message: &'static str) -> Self {
        Refusal { kind, reason, message, retry_at: None }
    }

    /// A request without a credential.
    pub fn missing() -> Self {
        Refusal::new(
            RefusalKind::Unauthenticated,
            "MISSING_CREDENTIAL",
            "send an API key as `authorization: Bearer km_…` or `x-api-key: km_…`, or an access token as \
             `authorization: Bearer …`",
        )
    }

    fn unknown() -> Self {
        Refusal::new(
            RefusalKind::Unauthenticated,
            "UNKNOWN_CREDENTIAL",
            "unknown, revoked or expired credential",
        )
    }

    fn scopes() -> Self {
        Refusal::new(
            RefusalKind::Forbidden,
            "INSUFFICIENT_SCOPES",
            "the credential lacks a scope this route requires",
        )
    }
}

impl Services {
    /// Whether the request may pass, and as whom: `check.secret` is the API key or access token it carries, the
    /// rest what the route and the proxy say (its scopes, the client's address).
    pub async fn check_at_edge(&self, check: VerifyRequest<'_>) -> Result<EdgeVerdict> {
        // No credential holds more scopes than this: a route needing more is refused before any scope is compared.
        if check.required_scopes.len() > MAX_SCOPES {
            return Ok(EdgeVerdict::Refused(Refusal::scopes()));
        }
        if api_key_secret::looks_like_api_key(check.secret) {
            return self.check_api_key(check).await;
        }
        let Some(token) = self.active_access_token(check.secret).await? else {
            return Ok(EdgeVerdict::Refused(Refusal::unknown()));
        };
        if check.org_id.is_some_and(|org| org != token.org_id) {
            // Another organization's token is as good as an unknown one here.
            return Ok(EdgeVerdict::Refused(Refusal::unknown()));
        }
        if !check.required_scopes.iter().all(|needed| token.scopes.contains(needed)) {
            return Ok(EdgeVerdict::Refused(Refusal::scopes()));
        }
        Ok(EdgeVerdict::Allowed(Bearer {
            credential: BearerCredential::AccessToken { client_id: token.client_id },
            org_id: token.org_id,
            scopes: token.scopes,
        }))
    }

    /// Exactly VerifyApiKey: its checks, and the use counted.
    async fn check_api_key(&self, check: VerifyRequest<'_>) -> Result<EdgeVerdict> {
        let verdict = self.verify_api_key(check).await?;
        use RefusalKind::*;
        let refusal = match verdict.code {
            VerifyCode::Valid => {
                let Some(key) = verdict.key else { return Ok(EdgeVerdict::Refused(Refusal::unknown())) };
                return Ok(EdgeVerdict::Allowed(Bearer {
                    credential: BearerCredential::ApiKey { key_id: key.id.clone() },
                    org_id: key.org_id.clone(),
                    scopes: key.settings.scopes.clone(),
                }));
            }
            VerifyCode::NotFound => Refusal::new(Unauthenticated, "API_KEY_NOT_FOUND", "unknown API key"),
            VerifyCode::Revoked => {
                Refusal::new(Unauthenticated, "API_KEY_REVOKED", "the API key was revoked or rolled")
            }
            VerifyCode::Expired => Refusal::new(Unauthenticated, "API_KEY_EXPIRED", "the API key expired"),
            VerifyCode::Disabled => {
                Refusal::new(Unauthenticated, "API_KEY_INACTIVE", "the API key is inactive")
            }
            VerifyCode::TestKeyNotAllowed => {
                Refusal::new(Forbidden, "TEST_KEY_NOT_ALLOWED", "this route does not accept TEST keys")
            }
            VerifyCode::IpNotAllowed => {
                Refusal::new(Forbidden, "IP_NOT_ALLOWED", "this API key may not be used from this address")
            }
            VerifyCode::InsufficientScopes => Refusal::scopes(),
            VerifyCode::RateLimited => Refusal {
                retry_at: verdict.rate.and_then(|rate| rate.retry_after),
                ..Refusal::new(
                    Exhausted,
                    "RATE_LIMITED",
                    "this API key's rate limit is used up; retry in a moment",
                )
            },
            VerifyCode::QuotaExceeded => Refusal {
                // Daily quotas reset at midnight UTC.
                retry_at: Some(Timestamp::from_micros((utc_day(self.now()) + 1) * MICROS_PER_DAY)),
                ..Refusal::new(
                    Exhausted,
                    "QUOTA_EXCEEDED",
                    "this API key's daily quota is used up; it resets at midnight UTC",
                )
            },
        };
        Ok(EdgeVerdict::Refused(refusal))
    }
}
