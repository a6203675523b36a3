//! The OAuth 2.0 endpoints over HTTP (form posts in, JSON out, by their RFCs): thin handlers over the use cases
//! in service/oauth.rs. Mounted on the one router beside gRPC (see server.rs).

mod form;

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{DefaultBodyLimit, State},
    routing::{get, post},
};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use serde_json::{Value, json};
use tower_http::cors::{Any, CorsLayer};

use crate::domain::oauth::{ErrorCode, OAuthError};
use crate::service::{
    Error, Services,
    oauth::{
        ClientAssertion, INTROSPECT_PATH, INTROSPECT_SCOPE, KEYS_PATH, REVOKE_PATH, TOKEN_PATH, TokenRequest,
    },
};

use self::form::Form;
use crate::api::error::oauth_error;

/// The largest form body: an assertion is at most 8 KiB, and nothing else in a request is large.
const MAX_FORM_BYTES: usize = 64 * 1024;

type Shared = State<Arc<Services>>;

/// The OAuth routes. Metadata and keys are public and may be fetched by browsers from any origin; the endpoints
/// authenticate with assertions in the body or a bearer token in `authorization`, never with cookies, so any
/// origin may post too.
pub fn routes(services: Arc<Services>) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION])
        .max_age(Duration::from_secs(24 * 60 * 60));
    Router::new()
        .route("/.well-known/openid-configuration", get(metadata))
        .route("/.well-known/oauth-authorization-server", get(metadata))
        .route(KEYS_PATH, get(keys))
        .route(TOKEN_PATH, post(token).fallback(post_only))
        .route(INTROSPECT_PATH, post(introspect).fallback(post_only))
        .route(REVOKE_PATH, post(revoke).fallback(post_only))
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(cors)
        .with_state(services)
}

async fn metadata(State(services): Shared) -> Response<Body> {
    json_response(StatusCode::OK, &services.oauth_metadata(), Some("public, max-age=3600"))
}

async fn keys(State(services): Shared) -> Response<Body> {
    match services.jwks().await {
        // Short enough that a rotation reaches verifiers long before the old key's tokens expire.
        Ok(jwks) => json_response(StatusCode::OK, &jwks, Some("public, max-age=300")),
        Err(e) => error_response(e),
    }
}

async fn token(State(services): Shared, headers: HeaderMap, body: Bytes) -> Response<Body> {
    let issued = async {
        let form = Form::parse(&headers, &body)?;
        let request = TokenRequest {
            grant_type: form.get("grant_type"),
            scope: form.get("scope"),
            assertion: form.get("assertion"),
            client: client_assertion(&form),
        };
        services.issue_token(request).await
    };
    let issued = issued.await;
    services.count_token_request(&issued);
    match issued {
        Ok(issued) => {
            let mut answer = json!({
                "access_token": issued.access_token,
                "token_type": "Bearer",
                "expires_in": issued.expires_in,
            });
            if !issued.scope.is_empty() {
                answer["scope"] = json!(issued.scope);
            }
            json_response(StatusCode::OK, &answer, None)
        }
        Err(e) => error_response(e),
    }
}

/// The caller authorizes with a client assertion in the form, or (RFC 7662 §2.1) with an access token carrying
/// the scope `tokens:introspect` in `authorization: Bearer`: one of the two, never both (RFC 6749 §2.3).
async fn introspect(State(services): Shared, headers: HeaderMap, body: Bytes) -> Response<Body> {
    let answer = async {
        let form = Form::parse(&headers, &body)?;
        let (assertion, token, client_ip) =
            (client_assertion(&form), form.get("token"), form.get("client_ip"));
        match bearer_token(&headers)? {
            None => {
                let endpoint = services.endpoint(INTROSPECT_PATH);
                services.introspect(services.authenticate_client(assertion, &endpoint), token, client_ip).await
            }
            Some(_) if assertion.assertion.is_some() || assertion.assertion_type.is_some() => {
                Err(OAuthError::new(
                    ErrorCode::InvalidRequest,
                    "the request authenticates twice: send either a client assertion or an authorization: Bearer \
                     access token, not both",
                )
                .into())
            }
            Some(bearer) => {
                let caller = services.authorize_bearer(bearer, INTROSPECT_SCOPE);
                services.introspect(caller, token, client_ip).await
            }
        }
    };
    let answer = answer.await;
    services.count_introspection(&answer);
    match answer {
        Ok(answer) => json_response(StatusCode::OK, &answer, None),
        Err(e) => error_response(e),
    }
}

async fn revoke(State(services): Shared, headers: HeaderMap, body: Bytes) -> Response<Body> {
    let done = async {
        let form = Form::parse(&headers, &body)?;
        let endpoint = services.endpoint(REVOKE_PATH);
        let client = services.authenticate_client(client_assertion(&form), &endpoint).await?;
        let token = form.required("token")?;
        services.revoke(&client, token).await
    };
    match done.await {
        Ok(()) => {
            let mut response = Response::new(Body::empty());
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(e) => error_response(e),
    }
}

/// The access token of an `authorization: Bearer <token>` header (RFC 6750 §2.1; the scheme is case-insensitive);
/// None without the header. Another scheme is refused: keymint has no client secrets for Basic to carry.
fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, Error> {
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Ok(None) };
    let token = value
        .to_str()
        .ok()
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty());
    match token {
        Some(token) => Ok(Some(token)),
        None => Err(OAuthError::new(
            ErrorCode::InvalidClient,
            "the authorization header must be `Bearer <access token>` (with the scope tokens:introspect); or leave \
             it out and authenticate with a client assertion (private_key_jwt)",
        )
        .into()),
    }
}

/// Another method than POST on a POST endpoint: RFC 6749 clients read errors as JSON, so the 405 says it in
/// JSON too (with `allow: POST`), not in an empty body.
async fn post_only(method: Method, uri: http::Uri) -> Response<Body> {
    let description = format!("{} takes only POST (a form post), not {method}: use POST", uri.path());
    let mut response = json_response(
        StatusCode::METHOD_NOT_ALLOWED,
        &json!({"error": "invalid_request", "error_description": description}),
        None,
    );
    response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
    response
}

fn client_assertion<'a>(form: &'a Form<'_>) -> ClientAssertion<'a> {
    ClientAssertion {
        assertion_type: form.get("client_assertion_type"),
        assertion: form.get("client_assertion"),
        client_id: form.get("client_id"),
    }
}

fn error_response(error: Error) -> Response<Body> {
    let (status, body) = oauth_error(error);
    let mut response = json_response(status, &body, None);
    // RFC 6750 §3: a refused bearer token is answered with its challenge. Descriptions hold no quote or backslash,
    // but the header must stay a valid quoted-string whatever they hold.
    if body["error"] == ErrorCode::InvalidToken.as_str() {
        let description: String = body["error_description"]
            .as_str()
            .unwrap_or_default()
            .chars()
            .filter(|c| !matches!(c, '"' | '\\'))
            .collect();
        let challenge = format!(
            "Bearer error=\"invalid_token\", error_description=\"{description}\", scope=\"{INTROSPECT_SCOPE}\""
        );
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
        }
    }
    response
}

/// A JSON answer. Anything but public metadata is `no-store` (RFC 6749 §5.1): it may hold a token.
fn json_response(status: StatusCode, body: &Value, cache: Option<&'static str>) -> Response<Body> {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache.unwrap_or("no-store")));
    if cache.is_none() {
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    }
    response
}
