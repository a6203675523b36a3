//! envoy.service.auth.v3.Authorization: Envoy asks keymint about every request to an upstream (its ext_authz
//! filter). The credential (`authorization: Bearer …` or `x-api-key`) is checked by `Services::check_at_edge`
//! with the route's `required_scopes` (a context extension); an allowed request goes upstream with who sent it
//! (`x-keymint-key-id` or `x-keymint-client-id`, `x-keymint-org-id`, `x-keymint-scopes`) and without the
//! credential; a refused one is answered 401, 403 or 429 with a JSON body, without reaching the upstream.
//!
//! Other context extensions a route may set: `org_id` (only credentials of that organization pass) and
//! `accept_test_keys` (`true` lets TEST keys pass).

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use serde_json::json;
use tonic::{Code, Request, Response, Status};
use tonic_types::StatusExt;

use crate::{
    domain::{Timestamp, client_address::TrustedProxies},
    service::{
        Error, Services,
        edge::{Bearer, BearerCredential, EdgeVerdict, Refusal, RefusalKind},
        verify::VerifyRequest,
    },
};

use crate::api::{
    error,
    pb::{
        envoy::{
            config::core::v3::{
                HeaderValue, HeaderValueOption, address, header_value_option::HeaderAppendAction,
            },
            service::auth::v3::{
                CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
                authorization_server::Authorization, check_response::HttpResponse,
            },
            r#type::v3::{HttpStatus, StatusCode},
        },
        google::rpc,
    },
};

/// The headers keymint adds to an allowed request; a client's own headers with these names never reach the
/// upstream.
const KEY_ID: &str = "x-keymint-key-id";
const CLIENT_ID: &str = "x-keymint-client-id";
const ORG_ID: &str = "x-keymint-org-id";
const SCOPES: &str = "x-keymint-scopes";
const OWN_PREFIX: &str = "x-keymint-";
/// The header an API key may come in instead of `authorization`.
const API_KEY_HEADER: &str = "x-api-key";

pub struct ExtAuthz {
    pub services: Arc<Services>,
    pub trusted_proxies: Arc<TrustedProxies>,
}

#[tonic::async_trait]
impl Authorization for ExtAuthz {
    async fn check(&self, request: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        let attributes = request.into_inner().attributes.unwrap_or_default();
        let http = attributes.request.and_then(|r| r.http).unwrap_or_default();
        let extensions = &attributes.context_extensions;
        let required_scopes: Vec<String> = extensions
            .get("required_scopes")
            .map(|scopes| scopes.split([',', ' ']).filter(|s| !s.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default();
        // The downstream peer as Envoy saw it; behind further trusted proxies, what they forwarded.
        let source = attributes
            .source
            .and_then(|peer| peer.address)
            .and_then(|a| a.address)
            .and_then(|address::Address::SocketAddress(socket)| socket.address.parse::<IpAddr>().ok());
        let client_ip = source.map(|peer| {
            let forwarded = http.headers.get("x-forwarded-for").map(String::as_str);
            self.trusted_proxies.client(peer.to_canonical(), forwarded)
        });
        let Some(credential) = credential(&http.headers) else {
            return Ok(Response::new(denied(&Refusal::missing(), self.services.now())));
        };
        let check = VerifyRequest {
            secret: credential,
            client_ip,
            required_scopes: &required_scopes,
            accept_test_keys: extensions.get("accept_test_keys").is_some_and(|v| v == "true"),
            org_id: extensions.get("org_id").map(String::as_str).filter(|org| !org.is_empty()),
        };
        let response = match self.services.check_at_edge(check).await {
            Ok(EdgeVerdict::Allowed(bearer)) => {
                tracing::Span::current().record("org", bearer.org_id.as_str());
                allowed(&bearer, &http.headers)
            }
            Ok(EdgeVerdict::Refused(refusal)) => denied(&refusal, self.services.now()),
            Err(e) => failed(e),
        };
        Ok(Response::new(response))
    }
}

/// The credential a request carries: a bearer token in `authorization`, else an API key in `x-api-key`.
fn credential(headers: &HashMap<String, String>) -> Option<&str> {
    bearer_token(headers)
        .or_else(|| headers.get(API_KEY_HEADER).map(|key| key.trim()))
        .filter(|c| !c.is_empty())
}

/// The token of `authorization: Bearer <token>` (the scheme in any case).
fn bearer_token(headers: &HashMap<String, String>) -> Option<&str> {
    let (scheme, token) = headers.get("authorization")?.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
}

fn allowed(bearer: &Bearer, headers: &HashMap<String, String>) -> CheckResponse {
    let mut add = vec![header(ORG_ID, &bearer.org_id), header(SCOPES, &bearer.scopes.join(" "))];
    add.push(match &bearer.credential {
        BearerCredential::ApiKey { key_id } => header(KEY_ID, key_id),
        BearerCredential::AccessToken { client_id } => header(CLIENT_ID, client_id),
    });
    // Never forwarded: the credential (from either header it may come in), and x-keymint-* headers of the
    // client's that keymint does not overwrite, which would otherwise pass as keymint's word.
    let added: Vec<&str> = add.iter().filter_map(|h| h.header.as_ref()).map(|h| h.key.as_str()).collect();
    let mut remove: Vec<String> = headers
        .keys()
        .filter(|name| name.starts_with(OWN_PREFIX) && !added.contains(&name.as_str()))
        .cloned()
        .collect();
    if headers.contains_key(API_KEY_HEADER) {
        remove.push(API_KEY_HEADER.to_owned());
    }
    if bearer_token(headers).is_some() {
        remove.push("authorization".to_owned());
    }
    CheckResponse {
        status: Some(rpc::Status { code: Code::Ok as i32, ..Default::default() }),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers: add,
            headers_to_remove: remove,
        })),
    }
}

/// The answer Envoy sends instead of the upstream's: 401, 403 or 429 with `{"code", "reason", "message"}` (code
/// as in keymint's gRPC errors), `retry-after` when a retry can pass, `www-authenticate` with 401.
fn denied(refusal: &Refusal, now: Timestamp) -> CheckResponse {
    let (http, code) = match refusal.kind {
        RefusalKind::Unauthenticated => (StatusCode::Unauthorized, Code::Unauthenticated),
        RefusalKind::Forbidden => (StatusCode::Forbidden, Code::PermissionDenied),
        RefusalKind::Exhausted => (StatusCode::TooManyRequests, Code::ResourceExhausted),
    };
    let mut headers = Vec::new();
    if http == StatusCode::Unauthorized {
        headers.push(header("www-authenticate", "Bearer realm=\"keymint\""));
    }
    if let Some(at) = refusal.retry_at {
        // Whole seconds, rounded up, and at least one: a retry before then is refused again.
        let seconds = (at.micros() - now.micros() + 999_999).div_euclid(1_000_000).max(1);
        headers.push(header("retry-after", &seconds.to_string()));
    }
    refused(http, code, refusal.reason, refusal.message, headers)
}

/// keymint could not decide (its database unreachable, or a fault, logged where it is mapped): 503 or 500, so
/// that the request does not pass.
fn failed(e: Error) -> CheckResponse {
    let status = error::status(e);
    let reason = status.get_details_error_info().map(|info| info.reason).unwrap_or_default();
    let http = match status.code() {
        Code::Unavailable | Code::ResourceExhausted | Code::Aborted => StatusCode::ServiceUnavailable,
        _ => StatusCode::InternalServerError,
    };
    refused(http, status.code(), &reason, status.message(), Vec::new())
}

fn refused(
    http: StatusCode,
    code: Code,
    reason: &str,
    message: &str,
    mut headers: Vec<HeaderValueOption>,
) -> CheckResponse {
    headers.push(header("content-type", "application/json"));
    let body = json!({ "code": code as i32, "reason": reason, "message": message });
    CheckResponse {
        status: Some(rpc::Status { code: code as i32, message: message.to_owned(), details: Vec::new() }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus { code: http.into() }),
            headers,
            body: body.to_string(),
        })),
    }
}

/// A header that replaces any of the same name the request or answer already has.
fn header(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue { key: key.to_owned(), value: value.to_owned() }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd.into(),
    }
}
