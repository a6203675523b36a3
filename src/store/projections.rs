//! How each event changes the read models: a pure mapping from events to row changes, which each store executes
//! with its own connection inside the append transaction (and again, in order, when the models are rebuilt).

use crate::domain::{
    Event,
    events::{KeyAlgorithm, KeyType},
};

use super::{RecordedEvent, StoreError};

/// The read-model tables, in the order a rebuild empties and a snapshot reads them.
pub const TABLES: &[&str] =
    &["orgs", "projects", "apps", "app_keys", "credentials", "api_keys", "api_key_secrets", "revoked_tokens"];

/// One change to the read models. Every change also carries the event's aggregate ID, sequence and time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    InsertOrg {
        name: String,
    },
    InsertProject {
        name: String,
    },
    /// Deletes the project with its applications and their keys.
    DeleteProject,
    /// `allowed_scopes` is a JSON array.
    InsertApp {
        project_id: String,
        name: String,
        client_id: String,
        allowed_scopes: String,
    },
    /// Replaces the application's allowed scopes (a JSON array).
    UpdateAppScopes {
        allowed_scopes: String,
    },
    /// Records a revoked access token of the application until it expires (seconds since the epoch).
    InsertRevokedToken {
        jti: String,
        expires_at: i64,
    },
    /// Records the application's new sequence and change time, and how many keys it gained (or lost: -1).
    TouchApp {
        keys_added: i64,
    },
    InsertAppKey {
        key_id: String,
        key_type: i32,
        expires_at: i64,
        public_key: String,
        algorithm: i32,
        supplied: bool,
    },
    DeleteAppKey {
        key_id: String,
    },
    /// Deletes the application with its keys.
    DeleteApp,
    InsertCredential {
        token_hash: String,
        role: String,
    },
    /// Inserts the key with its first secret; `origin` and `settings` are JSON.
    InsertApiKey {
        app_id: String,
        environment: &'static str,
        status: &'static str,
        prefix: String,
        last_four: String,
        secret_hash: String,
        origin: String,
        settings: String,
    },
    UpdateApiKey {
        status: &'static str,
        settings: String,
    },
    /// Ends the current secret at `old_expires_at` and adds the new one.
    RollApiKey {
        secret_hash: String,
        prefix: String,
        last_four: String,
        old_expires_at: i64,
    },
    /// Marks the key revoked, with the event's time as `deleted_at`.
    RevokeApiKey,
}

/// The changes one stored event makes.
pub fn changes_of(recorded: &RecordedEvent) -> Result<Vec<Change>, StoreError> {
    let changes = match recorded.event()? {
        Event::OrgAdded { name } => vec![Change::InsertOrg { name }],
        Event::ProjectAdded { name } => vec![Change::InsertProject { name }],
        Event::ProjectRemoved => vec![Change::DeleteProject],
        Event::AppAdded { project_id, name, client_id, allowed_scopes } => {
            vec![Change::InsertApp { project_id, name, client_id, allowed_scopes: json(&allowed_scopes) }]
        }
        Event::AppUpdated { allowed_scopes } => {
            vec![
                Change::UpdateAppScopes { allowed_scopes: json(&allowed_scopes) },
                Change::TouchApp { keys_added: 0 },
            ]
        }
        Event::AppTokenRevoked { jti, expires_at } => {
            vec![Change::InsertRevokedToken { jti, expires_at }, Change::TouchApp { keys_added: 0 }]
        }
        // The signing keys are read from their events (a handful per year), never from a read model.
        Event::SigningKeyAdded { .. } => vec![],
        Event::AppKeyAdded { key_id, key_type, expiration, public_key, algorithm, supplied } => vec![
            Change::InsertAppKey {
                key_id,
                key_type: key_type_number(key_type),
                expires_at: expiration,
                public_key,
                algorithm: key_algorithm_number(algorithm),
                supplied,
            },
            Change::TouchApp { keys_added: 1 },
        ],
        Event::AppKeyRemoved { key_id } => {
            vec![Change::DeleteAppKey { key_id }, Change::TouchApp { keys_added: -1 }]
        }
        Event::AppRemoved { .. } => vec![Change::DeleteApp],
        Event::CredentialAdded { token_hash, role } => {
            vec![Change::InsertCredential { token_hash, role: role.as_str().to_owned() }]
        }
        Event::ApiKeyCreated { origin, settings, secret } => vec![Change::InsertApiKey {
            app_id: origin.app_id.clone().unwrap_or_default(),
            environment: origin.environment.as_str(),
            status: settings.status.as_str(),
            prefix: secret.prefix,
            last_four: secret.last_four,
            secret_hash: secret.secret_hash,
            origin: json(&origin),
            settings: json(&settings),
        }],
        Event::ApiKeyUpdated { settings, .. } => {
            vec![Change::UpdateApiKey { status: settings.status.as_str(), settings: json(&settings) }]
        }
        Event::ApiKeyRolled { secret, old_secret_expires_at } => vec![Change::RollApiKey {
            secret_hash: secret.secret_hash,
            prefix: secret.prefix,
            last_four: secret.last_four,
            old_expires_at: old_secret_expires_at,
        }],
        Event::ApiKeyDeleted => vec![Change::RevokeApiKey],
    };
    Ok(changes)
}

/// Plain serde structs always serialize.
fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// Key types as the read model stores them: the API's enum numbers.
pub fn key_type_number(key_type: KeyType) -> i32 {
    match key_type {
        KeyType::Json => 1,
    }
}

/// Key algorithms as the read model stores them: the API's enum numbers.
pub fn key_algorithm_number(algorithm: KeyAlgorithm) -> i32 {
    match algorithm {
        KeyAlgorithm::Rsa => 1,
        KeyAlgorithm::EcP256 => 2,
        KeyAlgorithm::Ed25519 => 3,
    }
}
