//! The events of every aggregate: what is stored, as serde types kept apart from the API's and the state's.

use serde::{Deserialize, Serialize};

use super::api_key::{Origin, SecretRef, Settings};

/// The kinds of aggregates, as the `events.aggregate_type` column names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AggregateType {
    Org,
    Project,
    App,
    Credential,
    ApiKey,
    /// keymint's own token-signing keys: one aggregate for the instance (see `SIGNING_KEYS_ID`).
    SigningKeys,
}

/// The ID of the one aggregate that holds keymint's token-signing keys.
pub const SIGNING_KEYS_ID: &str = "instance";

impl AggregateType {
    pub fn as_str(self) -> &'static str {
        match self {
            AggregateType::Org => "org",
            AggregateType::Project => "project",
            AggregateType::App => "app",
            AggregateType::Credential => "credential",
            AggregateType::ApiKey => "apikey",
            AggregateType::SigningKeys => "signing_keys",
        }
    }
}

/// The format of an application key, as events record it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyType {
    Json,
}

/// The algorithm of an application key. Events written before keys had a choice carry none: those keys are RSA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyAlgorithm {
    #[default]
    Rsa,
    EcP256,
    Ed25519,
}

/// What a credential may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialRole {
    /// May act in every organization and manage organizations.
    InstanceAdmin,
}

impl CredentialRole {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialRole::InstanceAdmin => "instance_admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "instance_admin" => Some(CredentialRole::InstanceAdmin),
            _ => None,
        }
    }
}

/// Every event keymint records. Payloads never hold secrets: keys carry only their public half and credentials
/// only the hash of their secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    OrgAdded {
        name: String,
    },
    ProjectAdded {
        name: String,
    },
    ProjectRemoved,
    AppAdded {
        project_id: String,
        name: String,
        client_id: String,
        /// The scopes its tokens may carry; empty: any.
        allowed_scopes: Vec<String>,
    },
    AppUpdated {
        /// The scopes its tokens may carry from now on; empty: any.
        allowed_scopes: Vec<String>,
    },
    /// An access token of the application was revoked (RFC 7009): refused until it would have expired anyway.
    AppTokenRevoked {
        jti: String,
        /// When the token expires, in seconds since the Unix epoch.
        expires_at: i64,
    },
    AppKeyAdded {
        key_id: String,
        key_type: KeyType,
        /// Microseconds since the Unix epoch.
        expiration: i64,
        /// SubjectPublicKeyInfo PEM.
        public_key: String,
        algorithm: KeyAlgorithm,
        /// Whether the caller supplied the public key (keymint never had the private key) rather than keymint
        /// generating the pair.
        supplied: bool,
    },
    AppKeyRemoved {
        key_id: String,
    },
    AppRemoved {
        project_id: String,
    },
    CredentialAdded {
        token_hash: String,
        role: CredentialRole,
    },
    ApiKeyCreated {
        origin: Origin,
        settings: Settings,
        secret: SecretRef,
    },
    ApiKeyUpdated {
        /// The fields the update named that changed, for the audit trail.
        changed: Vec<String>,
        /// The settings after the update: all of them, so that applying the event needs no earlier state.
        settings: Settings,
    },
    ApiKeyRolled {
        secret: SecretRef,
        /// When the previous secret stops working, in microseconds since the Unix epoch.
        old_secret_expires_at: i64,
    },
    /// Revoked for good; the record stays.
    ApiKeyDeleted,
    /// A new token-signing key, which signs from now on. Its private half is sealed under the master key.
    SigningKeyAdded {
        kid: String,
        algorithm: String,
        /// base64 of AES-256-GCM nonce, ciphertext and tag of the PKCS#8 DER private key; the kid is the AAD.
        sealed_private_key: String,
    },
}

// The stored JSON of each event, one struct per event type; field names are part of the stored format.
mod payload {
    use super::{CredentialRole, KeyAlgorithm, KeyType, Origin, SecretRef, Settings};
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    pub struct ApiKeyCreated {
        #[serde(flatten)]
        pub origin: Origin,
        #[serde(flatten)]
        pub settings: Settings,
        #[serde(flatten)]
        pub secret: SecretRef,
    }

    #[derive(Serialize, Deserialize)]
    pub struct ApiKeyUpdated {
        pub changed: Vec<String>,
        #[serde(flatten)]
        pub settings: Settings,
    }

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct ApiKeyRolled {
        #[serde(flatten)]
        pub secret: SecretRef,
        pub old_secret_expires_micros: i64,
    }

    #[derive(Serialize, Deserialize)]
    pub struct Named {
        pub name: String,
    }

    #[derive(Serialize, Deserialize)]
    pub struct Empty {}

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct AppAdded {
        pub project_id: String,
        pub name: String,
        pub client_id: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub allowed_scopes: Vec<String>,
    }

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct AppUpdated {
        pub allowed_scopes: Vec<String>,
    }

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct AppTokenRevoked {
        pub jti: String,
        pub expires_at: i64,
    }

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct SigningKeyAdded {
        pub kid: String,
        pub algorithm: String,
        pub sealed_private_key: String,
    }

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct AppKeyAdded {
        pub key_id: String,
        #[serde(rename = "type")]
        pub key_type: KeyType,
        pub expiration_micros: i64,
        pub public_key: String,
        // Absent from events written before keys had an algorithm choice: they are RSA keys keymint generated.
        #[serde(default)]
        pub algorithm: KeyAlgorithm,
        #[serde(default)]
        pub supplied: bool,
    }

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct KeyRef {
        pub key_id: String,
    }

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct ProjectRef {
        pub project_id: String,
    }

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct CredentialAdded {
        pub token_hash: String,
        pub role: CredentialRole,
    }
}

/// A stored event that could not be read back: an unknown type or a payload of the wrong shape.
#[derive(Debug, thiserror::Error)]
#[error("stored event {event_type} v{version} cannot be decoded: {cause}")]
pub struct DecodeError {
    pub event_type: String,
    pub version: i32,
    pub cause: String,
}

impl Event {
    /// The version of the payload format each event type is written with.
    pub const VERSION: i32 = 1;

    pub fn event_type(&self) -> &'static str {
        match self {
            Event::OrgAdded { .. } => "org.added",
            Event::ProjectAdded { .. } => "project.added",
            Event::ProjectRemoved => "project.removed",
            Event::AppAdded { .. } => "app.added",
            Event::AppUpdated { .. } => "app.updated",
            Event::AppTokenRevoked { .. } => "app.token.revoked",
            Event::AppKeyAdded { .. } => "app.key.added",
            Event::AppKeyRemoved { .. } => "app.key.removed",
            Event::AppRemoved { .. } => "app.removed",
            Event::CredentialAdded { .. } => "credential.added",
            Event::ApiKeyCreated { .. } => "apikey.created",
            Event::ApiKeyUpdated { .. } => "apikey.updated",
            Event::ApiKeyRolled { .. } => "apikey.rolled",
            Event::ApiKeyDeleted => "apikey.deleted",
            Event::SigningKeyAdded { .. } => "signing_key.added",
        }
    }

    /// The payload as stored JSON.
    pub fn to_payload(&self) -> String {
        let json = match self.clone() {
            Event::OrgAdded { name } | Event::ProjectAdded { name } => {
                serde_json::to_string(&payload::Named { name })
            }
            Event::ProjectRemoved | Event::ApiKeyDeleted => serde_json::to_string(&payload::Empty {}),
            Event::AppAdded { project_id, name, client_id, allowed_scopes } => {
                serde_json::to_string(&payload::AppAdded { project_id, name, client_id, allowed_scopes })
            }
            Event::AppUpdated { allowed_scopes } => {
                serde_json::to_string(&payload::AppUpdated { allowed_scopes })
            }
            Event::AppTokenRevoked { jti, expires_at } => {
                serde_json::to_string(&payload::AppTokenRevoked { jti, expires_at })
            }
            Event::SigningKeyAdded { kid, algorithm, sealed_private_key } => {
                serde_json::to_string(&payload::SigningKeyAdded { kid, algorithm, sealed_private_key })
            }
            Event::AppKeyAdded { key_id, key_type, expiration, public_key, algorithm, supplied } => {
                serde_json::to_string(&payload::AppKeyAdded {
                    key_id,
                    key_type,
                    expiration_micros: expiration,
                    public_key,
                    algorithm,
                    supplied,
                })
            }
            Event::AppKeyRemoved { key_id } => serde_json::to_string(&payload::KeyRef { key_id }),
            Event::AppRemoved { project_id } => serde_json::to_string(&payload::ProjectRef { project_id }),
            Event::CredentialAdded { token_hash, role } => {
                serde_json::to_string(&payload::CredentialAdded { token_hash, role })
            }
            Event::ApiKeyCreated { origin, settings, secret } => {
                serde_json::to_string(&payload::ApiKeyCreated { origin, settings, secret })
            }
            Event::ApiKeyUpdated { changed, settings } => {
                serde_json::to_string(&payload::ApiKeyUpdated { changed, settings })
            }
            Event::ApiKeyRolled { secret, old_secret_expires_at } => {
                serde_json::to_string(&payload::ApiKeyRolled {
                    secret,
                    old_secret_expires_micros: old_secret_expires_at,
                })
            }
        };
        // Serializing these plain structs to a String cannot fail.
        json.unwrap_or_default()
    }

    /// Reads a stored event back.
    pub fn decode(event_type: &str, version: i32, payload: &str) -> Result<Event, DecodeError> {
        fn parse<'a, T: Deserialize<'a>>(payload: &'a str) -> Result<T, String> {
            serde_json::from_str(payload).map_err(|e| e.to_string())
        }
        let decoded = match event_type {
            "org.added" => parse::<payload::Named>(payload).map(|p| Event::OrgAdded { name: p.name }),
            "project.added" => parse::<payload::Named>(payload).map(|p| Event::ProjectAdded { name: p.name }),
            "project.removed" => parse::<payload::Empty>(payload).map(|_| Event::ProjectRemoved),
            "app.added" => parse::<payload::AppAdded>(payload).map(|p| Event::AppAdded {
                project_id: p.project_id,
                name: p.name,
                client_id: p.client_id,
                allowed_scopes: p.allowed_scopes,
            }),
            "app.updated" => parse::<payload::AppUpdated>(payload)
                .map(|p| Event::AppUpdated { allowed_scopes: p.allowed_scopes }),
            "app.token.revoked" => parse::<payload::AppTokenRevoked>(payload)
                .map(|p| Event::AppTokenRevoked { jti: p.jti, expires_at: p.expires_at }),
            "signing_key.added" => {
                parse::<payload::SigningKeyAdded>(payload).map(|p| Event::SigningKeyAdded {
                    kid: p.kid,
                    algorithm: p.algorithm,
                    sealed_private_key: p.sealed_private_key,
                })
            }
            "app.key.added" => parse::<payload::AppKeyAdded>(payload).map(|p| Event::AppKeyAdded {
                key_id: p.key_id,
                key_type: p.key_type,
                expiration: p.expiration_micros,
                public_key: p.public_key,
                algorithm: p.algorithm,
                supplied: p.supplied,
            }),
            "app.key.removed" => {
                parse::<payload::KeyRef>(payload).map(|p| Event::AppKeyRemoved { key_id: p.key_id })
            }
            "app.removed" => {
                parse::<payload::ProjectRef>(payload).map(|p| Event::AppRemoved { project_id: p.project_id })
            }
            "credential.added" => parse::<payload::CredentialAdded>(payload)
                .map(|p| Event::CredentialAdded { token_hash: p.token_hash, role: p.role }),
            "apikey.created" => parse::<payload::ApiKeyCreated>(payload).map(|p| Event::ApiKeyCreated {
                origin: p.origin,
                settings: p.settings,
                secret: p.secret,
            }),
            "apikey.updated" => parse::<payload::ApiKeyUpdated>(payload)
                .map(|p| Event::ApiKeyUpdated { changed: p.changed, settings: p.settings }),
            "apikey.rolled" => parse::<payload::ApiKeyRolled>(payload).map(|p| Event::ApiKeyRolled {
                secret: p.secret,
                old_secret_expires_at: p.old_secret_expires_micros,
            }),
            "apikey.deleted" => parse::<payload::Empty>(payload).map(|_| Event::ApiKeyDeleted),
            _ => Err("unknown event type".to_owned()),
        };
        decoded.map_err(|cause| DecodeError { event_type: event_type.to_owned(), version, cause })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_round_trips_through_its_stored_form() {
        let events = [
            Event::OrgAdded { name: "acme".into() },
            Event::ProjectAdded { name: "billing".into() },
            Event::ProjectRemoved,
            Event::AppAdded {
                project_id: "1".into(),
                name: "api".into(),
                client_id: "2@billing".into(),
                allowed_scopes: vec![],
            },
            Event::AppAdded {
                project_id: "1".into(),
                name: "api".into(),
                client_id: "2@billing".into(),
                allowed_scopes: vec!["invoices:read".into()],
            },
            Event::AppUpdated { allowed_scopes: vec!["a:b".into()] },
            Event::AppTokenRevoked { jti: "9".into(), expires_at: 1_764_000_000 },
            Event::SigningKeyAdded {
                kid: "5".into(),
                algorithm: "RS256".into(),
                sealed_private_key: "c2VhbGVk".into(),
            },
            Event::AppKeyAdded {
                key_id: "3".into(),
                key_type: KeyType::Json,
                expiration: 42,
                public_key: "-----BEGIN PUBLIC KEY-----".into(),
                algorithm: KeyAlgorithm::Ed25519,
                supplied: true,
            },
            Event::AppKeyRemoved { key_id: "3".into() },
            Event::AppRemoved { project_id: "1".into() },
            Event::CredentialAdded { token_hash: "ab".into(), role: CredentialRole::InstanceAdmin },
            Event::ApiKeyCreated {
                origin: crate::domain::api_key::Origin {
                    app_id: Some("7".into()),
                    expires_at: Some(99),
                    time_offset_micros: -5,
                    ..Default::default()
                },
                settings: Settings {
                    title: "ci".into(),
                    scopes: vec!["keys:read".into()],
                    rate_limit: Some(crate::domain::rate_limit::RateLimit { per_second: 5, burst: 10 }),
                    daily_quota: Some(100),
                    metadata: [("team".to_owned(), "a".to_owned())].into(),
                    api_version: Some("2026-11-25".into()),
                    ..Default::default()
                },
                secret: SecretRef {
                    secret_hash: "h".into(),
                    prefix: "km_live_abcd".into(),
                    last_four: "wxyz".into(),
                },
            },
            Event::ApiKeyUpdated {
                changed: vec!["title".into()],
                settings: Settings { title: "t".into(), ..Default::default() },
            },
            Event::ApiKeyRolled {
                secret: SecretRef { secret_hash: "h2".into(), prefix: "p".into(), last_four: "l".into() },
                old_secret_expires_at: 12,
            },
            Event::ApiKeyDeleted,
        ];
        for event in events {
            let decoded = Event::decode(event.event_type(), Event::VERSION, &event.to_payload());
            assert_eq!(decoded.ok(), Some(event));
        }
    }

    /// Keys added before the algorithm choice were RSA keys keymint generated; their stored events say nothing
    /// of either.
    #[test]
    fn key_events_written_before_the_algorithm_choice_read_as_generated_rsa() {
        let stored = r#"{"keyId":"3","type":"json","expirationMicros":42,"publicKey":"pem"}"#;
        assert_eq!(
            Event::decode("app.key.added", 1, stored).ok(),
            Some(Event::AppKeyAdded {
                key_id: "3".into(),
                key_type: KeyType::Json,
                expiration: 42,
                public_key: "pem".into(),
                algorithm: KeyAlgorithm::Rsa,
                supplied: false,
            })
        );
        let written = Event::AppKeyAdded {
            key_id: "3".into(),
            key_type: KeyType::Json,
            expiration: 42,
            public_key: "pem".into(),
            algorithm: KeyAlgorithm::EcP256,
            supplied: false,
        }
        .to_payload();
        assert!(written.contains(r#""algorithm":"ec_p256","supplied":false"#), "{written}");
    }

    #[test]
    fn unknown_types_and_bad_payloads_are_errors() {
        assert!(Event::decode("app.exploded", 1, "{}").is_err());
        assert!(Event::decode("app.key.removed", 1, "{\"name\":1}").is_err());
    }
}
