//! OAuth 2.0 for API applications: the token endpoint's two grants (client_credentials with `private_key_jwt`,
//! and the RFC 7523 jwt-bearer grant), introspection of access tokens and API keys (RFC 7662), revocation
//! (RFC 7009), the JWKS and the server metadata (RFC 8414). Access tokens are RFC 9068 JWTs signed by keymint.

use std::{
    collections::HashSet,
    net::IpAddr,
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use serde_json::{Map, Value, json};

use crate::{
    crypto::{api_key_secret, jws, public_key::PublicKey, secret::secret_digest, signing_keys::ALGORITHM},
    domain::{
        AggregateType, Timestamp,
        assertion::{self, AssertionError, Claims},
        oauth::{ErrorCode, OAuthError, grant_scopes},
    },
    store::{AppRow, UsedAssertion},
};

use super::{
    Error, Result, Services, Target,
    bounded::BoundedCache,
    oauth_clients::ClientKey,
    verify::{VerifyCode, VerifyRequest},
};

/// The grant types and the client assertion type keymint accepts.
pub const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";
pub const GRANT_JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
pub const CLIENT_ASSERTION_JWT: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The paths of the endpoints below the issuer (ZITADEL's).
pub const TOKEN_PATH: &str = "/oauth/v2/token";
pub const INTROSPECT_PATH: &str = "/oauth/v2/introspect";
pub const REVOKE_PATH: &str = "/oauth/v2/revoke";
pub const KEYS_PATH: &str = "/oauth/v2/keys";
/// The `typ` of keymint's access tokens (RFC 9068).
const ACCESS_TOKEN_TYPE: &str = "at+jwt";
/// The scope of an access token that authorizes introspection calls in place of a client assertion
/// (`Authorization: Bearer`, RFC 7662 §2.1).
pub const INTROSPECT_SCOPE: &str = "tokens:introspect";

/// The settings of the OAuth endpoints.
#[derive(Debug, Clone)]
pub struct OAuthSettings {
    /// The public base URL, without a trailing slash: `iss` of every token, and the base of every endpoint URL.
    pub issuer: String,
    pub access_token_ttl: Duration,
}

impl Default for OAuthSettings {
    fn default() -> Self {
        OAuthSettings { issuer: String::new(), access_token_ttl: Duration::from_secs(3600) }
    }
}

/// The OAuth settings: set before the signing keys are opened, and again once the listener is bound (the
/// default issuer names its address).
#[derive(Debug, Default)]
pub(super) struct OAuthConfig(RwLock<OAuthSettings>);

/// The client credential a request carries (`private_key_jwt`).
#[derive(Clone, Copy)]
pub struct ClientAssertion<'a> {
    pub assertion_type: Option<&'a str>,
    pub assertion: Option<&'a str>,
    /// The optional `client_id` parameter: when sent, it must name the assertion's client.
    pub client_id: Option<&'a str>,
}

impl std::fmt::Debug for ClientAssertion<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAssertion").field("client_id", &self.client_id).finish_non_exhaustive()
    }
}

/// A token request, as the form carried it.
#[derive(Clone, Copy)]
pub struct TokenRequest<'a> {
    pub grant_type: Option<&'a str>,
    pub scope: Option<&'a str>,
    /// The jwt-bearer grant's assertion.
    pub assertion: Option<&'a str>,
    pub client: ClientAssertion<'a>,
}

/// An issued access token.
pub struct IssuedToken {
    pub access_token: String,
    pub expires_in: u64,
    pub scope: String,
}

/// An application that proved who it is: by a client assertion, or by an access token it holds.
#[derive(Debug, Clone)]
pub struct AuthenticatedClient {
    pub app: Arc<AppRow>,
}

/// An access token that is active: who it was issued to, and what it may do.
#[derive(Debug, Clone)]
pub struct ActiveToken {
    /// The application it was issued to.
    pub app: Arc<AppRow>,
    /// The application's client ID (`<app id>@<project name>`).
    pub client_id: String,
    /// The application's organization.
    pub org_id: String,
    /// The granted scopes (the `scope` claim).
    pub scopes: Vec<String>,
    /// Every claim, as signed.
    pub claims: Map<String, Value>,
}

/// Access tokens whose signature and issuer checked out, by the SHA-256 of the token (never the token itself),
/// at most `CAPACITY` of them. Resource servers and Envoy present the same token on request after request, and its
/// signature (an RSA verify and a JSON parse) is the largest cost of checking it; what may change — revocation, the
/// application's removal, expiry — is still checked on every call. Only verified tokens get in, so garbage cannot
/// crowd them out.
pub(super) struct VerifiedTokens(BoundedCache<[u8; 32], Arc<VerifiedToken>>);

impl VerifiedTokens {
    const CAPACITY: usize = 10_000;

    pub fn stats(&self) -> super::bounded::CacheStats {
        self.0.stats()
    }
}

impl Default for VerifiedTokens {
    fn default() -> Self {
        VerifiedTokens(BoundedCache::new(Self::CAPACITY))
    }
}

impl std::fmt::Debug for VerifiedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedTokens").finish_non_exhaustive()
    }
}

/// An access token whose signature, issuer and expiry checked out.
#[derive(Clone)]
struct VerifiedToken {
    claims: Map<String, Value>,
    jti: String,
    client_id: String,
    expires_at: i64,
}

impl Services {
    /// Sets the issuer and the token lifetime.
    pub fn configure_oauth(&self, settings: OAuthSettings) {
        *self.oauth.0.write().unwrap_or_else(PoisonError::into_inner) = OAuthSettings {
            issuer: settings.issuer.trim_end_matches('/').to_owned(),
            access_token_ttl: settings.access_token_ttl,
        };
    }

    pub fn oauth_settings(&self) -> OAuthSettings {
        self.oauth.0.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The URL of an endpoint at `path`.
    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.oauth_settings().issuer)
    }

    /// RFC 8414 authorization server metadata (also served as OpenID discovery).
    pub fn oauth_metadata(&self) -> Value {
        let issuer = self.oauth_settings().issuer;
        let auth_methods = json!(["private_key_jwt"]);
        // RFC 8414 §2 lets this list name access token types too: introspection also takes an access token with
        // the scope tokens:introspect (RFC 7662 §2.1).
        let introspection_auth_methods = json!(["private_key_jwt", "Bearer"]);
        // What application keys verify (crypto/public_key.rs): RSA, EC P-256 and Ed25519 keys, the last by both
        // its names (RFC 9864's Ed25519, and EdDSA).
        let auth_algs = json!(["RS256", "PS256", "ES256", "EdDSA", "Ed25519"]);
        json!({
            "issuer": issuer,
            "token_endpoint": self.endpoint(TOKEN_PATH),
            "introspection_endpoint": self.endpoint(INTROSPECT_PATH),
            "revocation_endpoint": self.endpoint(REVOKE_PATH),
            "jwks_uri": self.endpoint(KEYS_PATH),
            "grant_types_supported": [GRANT_CLIENT_CREDENTIALS, GRANT_JWT_BEARER],
            "response_types_supported": [],
            "token_endpoint_auth_methods_supported": auth_methods,
            "token_endpoint_auth_signing_alg_values_supported": auth_algs,
            "introspection_endpoint_auth_methods_supported": introspection_auth_methods,
            "introspection_endpoint_auth_signing_alg_values_supported": auth_algs,
            "revocation_endpoint_auth_methods_supported": auth_methods,
            "revocation_endpoint_auth_signing_alg_values_supported": auth_algs,
            "access_token_signing_alg_values_supported": [ALGORITHM],
            "id_token_signing_alg_values_supported": [ALGORITHM],
            "subject_types_supported": ["public"],
            // Scopes are each application's own (`resource:action`, bounded by its allowed_scopes): keymint
            // defines none, so it advertises none (RFC 8414 lets a server leave scopes out).
            "scopes_supported": [],
        })
    }

    /// The JWKS: every signing key a verifier may meet in an unexpired token.
    pub async fn jwks(&self) -> Result<Value> {
        let ring = self.key_ring().await?;
        let ttl = self.oauth_settings().access_token_ttl;
        let keys: Vec<Value> = ring.published(self.now(), ttl).map(|k| k.key.jwk()).collect();
        Ok(json!({ "keys": keys }))
    }

    /// POST /oauth/v2/token.
    pub async fn issue_token(&self, request: TokenRequest<'_>) -> Result<IssuedToken> {
        let token_url = self.endpoint(TOKEN_PATH);
        let app = match request.grant_type {
            None | Some("") => {
                return Err(oauth(ErrorCode::InvalidRequest, "grant_type is required"));
            }
            Some(GRANT_CLIENT_CREDENTIALS) => self.authenticate_client(request.client, &token_url).await?.app,
            Some(GRANT_JWT_BEARER) => {
                let Some(assertion) = request.assertion.filter(|a| !a.is_empty()) else {
                    return Err(oauth(
                        ErrorCode::InvalidRequest,
                        "the jwt-bearer grant needs an `assertion`",
                    ));
                };
                let (app, _) =
                    self.verify_assertion(assertion, &token_url).await?.map_err(OAuthError::grant)?;
                // A client that also authenticates may only get tokens for itself.
                if request.client.assertion.is_some() || request.client.assertion_type.is_some() {
                    let client = self.authenticate_client(request.client, &token_url).await?;
                    if client.app.id != app.id {
                        return Err(oauth(
                            ErrorCode::UnauthorizedClient,
                            "the assertion is for another application than the authenticated client",
                        ));
                    }
                }
                app
            }
            Some(other) => {
                let shown: String = other.chars().take(100).collect();
                return Err(oauth(
                    ErrorCode::UnsupportedGrantType,
                    format!(
                        "grant_type {shown:?} is not supported: use {GRANT_CLIENT_CREDENTIALS} or {GRANT_JWT_BEARER}"
                    ),
                ));
            }
        };
        let scopes = grant_scopes(request.scope, &app.scopes())?;
        self.sign_access_token(&app, scopes).await
    }

    async fn sign_access_token(&self, app: &AppRow, scopes: Vec<String>) -> Result<IssuedToken> {
        let settings = self.oauth_settings();
        let ring = self.key_ring().await?;
        let key = ring.current().ok_or_else(|| Error::Internal("no signing key".into()))?.key.clone();
        let now = self.now().micros().div_euclid(1_000_000);
        let expires_in = settings.access_token_ttl.as_secs();
        let scope = scopes.join(" ");
        let mut claims = json!({
            "iss": settings.issuer,
            "sub": app.client_id,
            "client_id": app.client_id,
            "aud": app.project_id,
            "iat": now,
            "exp": now + i64::try_from(expires_in).unwrap_or(i64::MAX / 2),
            "jti": self.new_id(),
            "org_id": app.details.org_id,
        });
        if !scope.is_empty() {
            claims["scope"] = json!(scope);
        }
        // An RSA signature takes about 0.3 ms: off the async threads, so that cheap calls do not wait behind it.
        let access_token =
            tokio::task::spawn_blocking(move || key.sign(json!({"typ": ACCESS_TOKEN_TYPE}), &claims))
                .await
                .map_err(|e| Error::Internal(format!("signing task: {e}")))??;
        Ok(IssuedToken { access_token, expires_in, scope })
    }

    /// Authenticates the client of a request by its `private_key_jwt` assertion; `endpoint_url` is the URL of the
    /// endpoint called, which the assertion's `aud` may name.
    pub async fn authenticate_client(
        &self,
        client: ClientAssertion<'_>,
        endpoint_url: &str,
    ) -> Result<AuthenticatedClient> {
        let (Some(assertion_type), Some(assertion)) = (client.assertion_type, client.assertion) else {
            return Err(oauth(
                ErrorCode::InvalidClient,
                format!(
                    "client authentication is required: send client_assertion_type={CLIENT_ASSERTION_JWT} and a \
                     client_assertion signed with an application key (private_key_jwt)"
                ),
            ));
        };
        if assertion_type != CLIENT_ASSERTION_JWT {
            return Err(oauth(
                ErrorCode::InvalidClient,
                format!("client_assertion_type must be {CLIENT_ASSERTION_JWT}"),
            ));
        }
        let (app, claims) =
            self.verify_assertion(assertion, endpoint_url).await?.map_err(OAuthError::client)?;
        if client.client_id.is_some_and(|id| !id.is_empty() && id != claims.client_id) {
            return Err(OAuthError::client(AssertionError::OtherClient).into());
        }
        tracing::Span::current().record("org", app.details.org_id.as_str());
        Ok(AuthenticatedClient { app })
    }

    /// Authorizes a call by an access token (`Authorization: Bearer`, RFC 6750) in place of a client assertion: the
    /// token must be active, as introspection decides it (its signature verified once and remembered; its
    /// revocation and its application checked on every call), and carry `scope`. The client is the application the
    /// token was issued to. Refusals are `invalid_token`, with no word of the token itself.
    pub async fn authorize_bearer(&self, token: &str, scope: &str) -> Result<AuthenticatedClient> {
        let Some(active) = self.active_access_token(token).await? else {
            return Err(oauth(
                ErrorCode::InvalidToken,
                "the bearer token is not an active keymint access token: it expired, was revoked, its application \
                 was removed, or keymint did not issue it",
            ));
        };
        if !active.scopes.iter().any(|granted| granted == scope) {
            return Err(oauth(
                ErrorCode::InvalidToken,
                format!(
                    "the bearer token lacks the scope {scope}: ask the token endpoint for it (scope={scope})"
                ),
            ));
        }
        tracing::Span::current().record("org", active.org_id.as_str());
        Ok(AuthenticatedClient { app: active.app })
    }

    /// Checks an application's assertion by every rule (see domain/assertion) and uses up its `jti`. The outer
    /// error is the store's; the inner one says why the assertion was refused.
    async fn verify_assertion(
        &self,
        assertion: &str,
        endpoint_url: &str,
    ) -> Result<Result<(Arc<AppRow>, Claims), AssertionError>> {
        if let Err(refused) = assertion::check_size(assertion) {
            return Ok(Err(refused));
        }
        let parsed = match jws::parse(assertion) {
            Ok(parsed) => parsed,
            Err(e) => return Ok(Err(AssertionError::Malformed(e.to_string()))),
        };
        let checked = assertion::check_header(&parsed.header).and_then(|(alg, kid)| {
            let client_id = assertion::client_id(&parsed.claims)?;
            let app_id = client_id
                .split_once('@')
                .map(|(id, _)| id.to_owned())
                .ok_or(AssertionError::UnknownClient)?;
            Ok((alg, kid, client_id, app_id))
        });
        let (alg, kid, client_id, app_id) = match checked {
            Ok(checked) => checked,
            Err(refused) => return Ok(Err(refused)),
        };
        if app_id.is_empty() || app_id.len() > 200 || kid.len() > 200 {
            return Ok(Err(AssertionError::UnknownClient));
        }
        let Some(app) = self.oauth_client(&app_id).await?.filter(|app| app.client_id == client_id) else {
            return Ok(Err(AssertionError::UnknownClient));
        };
        let Some(key) = self.client_key(&app_id, &kid).await? else {
            return Ok(Err(AssertionError::UnknownKey));
        };
        let now = self.now();
        if let Err(refused) = assertion::check_key(&alg, key.key.jws_algorithms(), key.expires_at, now) {
            return Ok(Err(refused));
        }
        if key.key.verify(&alg, parsed.signing_input.as_bytes(), &parsed.signature).is_err() {
            return Ok(Err(AssertionError::BadSignature));
        }
        let settings = self.oauth_settings();
        let token_url = self.endpoint(TOKEN_PATH);
        let audiences = [settings.issuer.as_str(), token_url.as_str(), endpoint_url];
        let claims = match assertion::check_claims(&parsed.claims, &audiences, now) {
            Ok(claims) => claims,
            Err(refused) => return Ok(Err(refused)),
        };
        let used = UsedAssertion {
            client_id: claims.client_id.clone(),
            jti: claims.jti.clone(),
            expires_at: claims.expires_at,
        };
        if !self.used_assertions.call(&self.store, used).await? {
            return Ok(Err(AssertionError::Replayed));
        }
        Ok(Ok((app, claims)))
    }

    /// A live application by ID, from memory when it was read before and nothing has changed it since.
    async fn oauth_client(&self, app_id: &str) -> Result<Option<Arc<AppRow>>> {
        if self.memory_is_current()
            && let Some(app) = self.oauth_clients.app(app_id)
        {
            return Ok(app);
        }
        let generation = self.oauth_clients.generation();
        let app = self.store.oauth_client(app_id).await?.map(Arc::new);
        self.oauth_clients.fill_app(generation, app_id, app.clone());
        Ok(app)
    }

    /// A live key of the application, parsed; from memory like `oauth_client` (which must have been called first
    /// for the key to be remembered).
    async fn client_key(&self, app_id: &str, kid: &str) -> Result<Option<Arc<ClientKey>>> {
        if self.memory_is_current()
            && let Some(key) = self.oauth_clients.key(app_id, kid)
        {
            return Ok(key);
        }
        let generation = self.oauth_clients.generation();
        let key = match self.store.app_public_key(app_id, kid).await? {
            Some(stored) => Some(Arc::new(ClientKey {
                key: PublicKey::from_spki_pem(&stored.public_key)?,
                expires_at: Timestamp::from_micros(stored.expires_at),
            })),
            None => None,
        };
        self.oauth_clients.fill_key(generation, app_id, kid, key.clone());
        Ok(key)
    }

    /// Whether an application's access token was revoked. A revocation holds in every process the moment it is
    /// answered, so memory answers only when no other process can revoke (SQLite): then the application's
    /// revoked tokens are read once and kept with it (`oauth_client` must have been called first). With a shared
    /// database the store is asked on every call.
    async fn token_revoked(&self, app_id: &str, jti: &str) -> Result<bool> {
        if !self.memory_is_whole() {
            return self.revocations.call(&self.store, jti.to_owned()).await;
        }
        if let Some(revoked) = self.oauth_clients.revoked(app_id) {
            return Ok(revoked.contains(jti));
        }
        let generation = self.oauth_clients.generation();
        let revoked: HashSet<String> = self.store.revoked_tokens(app_id).await?.into_iter().collect();
        let answer = revoked.contains(jti);
        self.oauth_clients.fill_revoked(generation, app_id, Arc::new(revoked));
        Ok(answer)
    }

    /// POST /oauth/v2/introspect: the token's claims when it is active for the client that `client` authenticates,
    /// else exactly `{"active": false}`. An access token's own checks need no client, so they run while the client
    /// authenticates: recording its assertion's `jti` is a round trip to the store, and on PostgreSQL so is the
    /// token's revocation read. Nothing is answered, and an API key (whose check counts usage and limits) is not
    /// looked at, before the client has authenticated.
    pub async fn introspect(
        &self,
        client: impl Future<Output = Result<AuthenticatedClient>>,
        token: Option<&str>,
        client_ip: Option<&str>,
    ) -> Result<Value> {
        let token = token.filter(|token| !token.is_empty());
        let access_token = token.filter(|token| !api_key_secret::looks_like_api_key(token));
        let checked = async {
            match access_token {
                Some(token) => self.active_access_token(token).await,
                None => Ok(None),
            }
        };
        let (client, active) = tokio::join!(client, checked);
        let client = client?;
        let Some(token) = token else { return Err(oauth(ErrorCode::InvalidRequest, "`token` is required")) };
        let client_ip = match client_ip.filter(|ip| !ip.is_empty()) {
            None => None,
            Some(ip) => Some(
                ip.trim()
                    .parse()
                    .map_err(|_| oauth(ErrorCode::InvalidRequest, "client_ip is not an IP address"))?,
            ),
        };
        if access_token.is_none() {
            return self.introspect_api_key(&client, token, client_ip).await;
        }
        let inactive = json!({ "active": false });
        let Some(active) = active? else { return Ok(inactive) };
        if active.claims.get("aud").and_then(Value::as_str) != Some(client.app.project_id.as_str()) {
            return Ok(inactive);
        }
        let mut answer = active.claims;
        answer.insert("active".into(), json!(true));
        answer.insert("token_type".into(), json!("Bearer"));
        Ok(Value::Object(answer))
    }

    /// A keymint access token that is active now: its signature, issuer and expiry check out, its application
    /// still exists (with the client ID the token names), and it was not revoked. None for anything else.
    /// Introspection and Envoy's ext_authz decide by this.
    pub async fn active_access_token(&self, token: &str) -> Result<Option<ActiveToken>> {
        let Some(verified) = self.verify_access_token(token).await? else { return Ok(None) };
        let Some(app_id) = verified.client_id.split_once('@').map(|(id, _)| id) else { return Ok(None) };
        let owner = self.oauth_client(app_id).await?;
        let Some(app) = owner.filter(|app| app.client_id == verified.client_id) else {
            return Ok(None); // Its application was removed.
        };
        if self.token_revoked(app_id, &verified.jti).await? {
            return Ok(None);
        }
        let scopes = verified.claims.get("scope").and_then(Value::as_str).unwrap_or_default();
        Ok(Some(ActiveToken {
            scopes: scopes.split_whitespace().map(str::to_owned).collect(),
            org_id: app.details.org_id.clone(),
            app,
            client_id: verified.client_id,
            claims: verified.claims,
        }))
    }

    /// An API key secret of the client's organization, verified like VerifyApiKey (usage and limits count; a key
    /// limited to networks needs the `client_ip` it is used from).
    async fn introspect_api_key(
        &self,
        client: &AuthenticatedClient,
        secret: &str,
        client_ip: Option<IpAddr>,
    ) -> Result<Value> {
        let request = VerifyRequest {
            secret,
            client_ip,
            required_scopes: &[],
            accept_test_keys: false,
            org_id: Some(client.app.details.org_id.as_str()),
        };
        let verdict = self.verify_api_key(request).await?;
        let (VerifyCode::Valid, Some(key)) = (verdict.code, verdict.key) else {
            return Ok(json!({ "active": false }));
        };
        let mut answer = json!({
            "active": true,
            "token_type": "api_key",
            "key_id": key.id,
            "org_id": key.org_id,
            "scope": key.settings.scopes.join(" "),
            "metadata": key.settings.metadata,
        });
        let expires = [key.origin.expires_at, key.secret_expires_at()].into_iter().flatten().min();
        if let Some(expires) = expires {
            answer["exp"] = json!(expires.div_euclid(1_000_000));
        }
        Ok(answer)
    }

    /// A keymint access token whose signature verifies with one of the signing keys, issued by this issuer and
    /// unexpired; None for anything else.
    async fn verify_access_token(&self, token: &str) -> Result<Option<VerifiedToken>> {
        if token.len() > assertion::MAX_ASSERTION_BYTES {
            return Ok(None);
        }
        let now = self.now().micros().div_euclid(1_000_000);
        let digest = secret_digest(token);
        if let Some(verified) = self.verified_tokens.0.get(&digest) {
            return Ok((verified.expires_at > now).then(|| (*verified).clone()));
        }
        let Ok(parsed) = jws::parse(token) else { return Ok(None) };
        if parsed.header_str("alg") != Some(ALGORITHM) || parsed.header_str("typ") != Some(ACCESS_TOKEN_TYPE)
        {
            return Ok(None);
        }
        let Some(kid) = parsed.header_str("kid") else { return Ok(None) };
        let mut ring = self.key_ring().await?;
        if ring.find(kid).is_none() {
            ring = self.reload_for_unknown_kid().await?;
        }
        let Some(key) = ring.find(kid) else { return Ok(None) };
        if !key.key.verifies(parsed.signing_input.as_bytes(), &parsed.signature) {
            return Ok(None);
        }
        let claims = parsed.claims;
        let issuer = self.oauth_settings().issuer;
        let exp = claims.get("exp").and_then(Value::as_i64);
        let (Some(exp), Some(jti), Some(client_id)) = (
            exp,
            claims.get("jti").and_then(Value::as_str).map(str::to_owned),
            claims.get("client_id").and_then(Value::as_str).map(str::to_owned),
        ) else {
            return Ok(None);
        };
        if claims.get("iss").and_then(Value::as_str) != Some(issuer.as_str()) || exp <= now {
            return Ok(None);
        }
        let verified = VerifiedToken { claims, jti, client_id, expires_at: exp };
        self.verified_tokens.0.insert(digest, Arc::new(verified.clone()));
        Ok(Some(verified))
    }

    /// POST /oauth/v2/revoke: revokes one of the client's access tokens, at once for every process sharing the
    /// store (introspection reads the revocations). A token that is not one of keymint's, or has expired, needs
    /// nothing done (RFC 7009 §2.2).
    pub async fn revoke(&self, client: &AuthenticatedClient, token: &str) -> Result<()> {
        if api_key_secret::looks_like_api_key(token) {
            return Err(oauth(
                ErrorCode::UnsupportedTokenType,
                "API keys are revoked with DeleteApiKey, not here: this endpoint revokes access tokens",
            ));
        }
        let Some(verified) = self.verify_access_token(token).await? else { return Ok(()) };
        if verified.client_id != client.app.client_id {
            return Err(oauth(ErrorCode::UnauthorizedClient, "the token was issued to another client"));
        }
        let app = &client.app;
        let target = Target {
            aggregate_type: AggregateType::App,
            id: &app.id,
            org_id: &app.details.org_id,
            creator: &app.client_id,
        };
        let load = || self.app_state_of(&app.details.org_id, &app.project_id, &app.id);
        let (jti, expires_at) = (verified.jti.as_str(), verified.expires_at);
        self.command_from(target, load, |state| async move {
            let revoked = self.store.tokens_revoked(&[jti.to_owned()]).await?.contains(&true);
            Ok(state.state.revoke_token(&app.id, &app.project_id, jti, expires_at, revoked)?)
        })
        .await?;
        Ok(())
    }
}

fn oauth(code: ErrorCode, description: impl Into<String>) -> Error {
    Error::OAuth(OAuthError::new(code, description))
}
