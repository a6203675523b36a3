//! Debug for the generated messages that carry a secret or a private key (build.rs skips their derived
//! Debug): every field but the secret, which prints as `[redacted]`, so a stray `{:?}` cannot leak it.

use std::fmt;

use crate::api::pb::keymint::{
    apikeys::v1::{CreateApiKeyResponse, RollApiKeyResponse, VerifyApiKeyRequest},
    management::v1::{AddAppKeyRequest, AddAppKeyResponse},
};

const REDACTED: &str = "[redacted]";

impl fmt::Debug for CreateApiKeyResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateApiKeyResponse")
            .field("api_key", &self.api_key)
            .field("details", &self.details)
            .field("secret", &REDACTED)
            .finish()
    }
}

impl fmt::Debug for RollApiKeyResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RollApiKeyResponse")
            .field("api_key", &self.api_key)
            .field("details", &self.details)
            .field("secret", &REDACTED)
            .field("old_secret_expires_at", &self.old_secret_expires_at)
            .finish()
    }
}

impl fmt::Debug for VerifyApiKeyRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyApiKeyRequest")
            .field("secret", &REDACTED)
            .field("client_ip", &self.client_ip)
            .field("required_scopes", &self.required_scopes)
            .field("accept_test_keys", &self.accept_test_keys)
            .finish()
    }
}

impl fmt::Debug for AddAppKeyResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AddAppKeyResponse")
            .field("id", &self.id)
            .field("details", &self.details)
            .field("key_details", &REDACTED)
            .finish()
    }
}

/// `public_key` should hold a public key, but a caller may paste a private one there: it is refused, and never
/// printed.
impl fmt::Debug for AddAppKeyRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AddAppKeyRequest")
            .field("project_id", &self.project_id)
            .field("app_id", &self.app_id)
            .field("type", &self.r#type)
            .field("expiration_date", &self.expiration_date)
            .field("key_size", &self.key_size)
            .field("algorithm", &self.algorithm)
            .field("public_key", &REDACTED)
            .finish()
    }
}

/// Envoy's view of a request: header names are shown, values and the query never (`authorization` and
/// `x-api-key` carry secrets, and others may).
impl fmt::Debug for crate::api::pb::envoy::service::auth::v3::attribute_context::HttpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.headers.keys().collect();
        names.sort();
        f.debug_struct("HttpRequest")
            .field("id", &self.id)
            .field("method", &self.method)
            .field("headers", &names)
            // The query may carry a credential too.
            .field("path", &self.path.split('?').next().unwrap_or_default())
            .field("host", &self.host)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::pb::envoy::service::auth::v3::attribute_context::HttpRequest;

    #[test]
    fn secrets_and_key_files_never_print() {
        let secret = "km_live_5ecretBodyThatMustNotPrint000000000000000000abcdef".to_owned();
        let printed = [
            format!("{:?}", CreateApiKeyResponse { secret: secret.clone(), ..Default::default() }),
            format!("{:?}", RollApiKeyResponse { secret: secret.clone(), ..Default::default() }),
            format!("{:?}", VerifyApiKeyRequest { secret: secret.clone(), ..Default::default() }),
            format!(
                "{:?}",
                AddAppKeyResponse { key_details: secret.clone().into_bytes(), ..Default::default() }
            ),
            format!("{:?}", AddAppKeyRequest { public_key: secret.clone(), ..Default::default() }),
        ];
        for line in printed {
            assert!(!line.contains("5ecretBody") && line.contains(REDACTED), "{line}");
        }
        // The bytes of a key file would print as numbers: check those are absent too.
        let file = AddAppKeyResponse { key_details: vec![107, 109, 95], ..Default::default() };
        assert!(!format!("{file:?}").contains("107"));
        // What Envoy asks about: the credential's header, and a query, show no value.
        let checked = HttpRequest {
            headers: [("x-api-key".to_owned(), secret.clone())].into(),
            path: format!("/reports?api_key={secret}"),
            ..Default::default()
        };
        let line = format!("{checked:?}");
        assert!(!line.contains("5ecretBody") && line.contains("x-api-key"), "{line}");
    }
}
