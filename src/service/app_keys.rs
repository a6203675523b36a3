//! Application keys: key pairs whose private half is returned once, in a key file, or public keys that callers
//! supply and whose private half keymint never sees.

use zeroize::Zeroizing;

use crate::{
    crypto::{
        key_file::application_key_file,
        keygen::{CurveAlgorithm, Pkcs8KeyPair, RsaBits},
        public_key::{KeyFamily, PublicKey},
    },
    domain::{
        DomainError, Timestamp,
        app::{self, NewKey},
        events::{KeyAlgorithm, KeyType},
    },
    store::{AppKeyRow, Page},
};

use super::{Caller, ListView, Result, Services, Written, apps::app_target};

/// Where a new key comes from. No Debug: a caller may send a private key as `public_key` by mistake.
pub enum KeySpec {
    /// keymint generates the pair: RSA of `bits` (None: the server's default size), EC P-256 or Ed25519.
    Generate { algorithm: KeyAlgorithm, bits: Option<RsaBits> },
    /// The caller's own public key, PEM or JWK as sent, and the algorithm the request named, if any.
    Supplied { public_key: String, algorithm: Option<KeyAlgorithm> },
}

/// The longest `public_key` accepted: an 8192-bit RSA key is about 1,500 characters in either form.
pub const MAX_SUPPLIED_KEY_LEN: usize = 16_384;

/// A new key: its ID, the write, and the key file holding the private key (wiped when dropped; empty for a key
/// the caller supplied).
pub struct AddedKey {
    pub key_id: String,
    pub written: Written,
    pub key_file: Zeroizing<Vec<u8>>,
}

/// The key's public half, and the private half when keymint generated it.
struct Material {
    public_key_pem: String,
    algorithm: KeyAlgorithm,
    private_pem: Option<Zeroizing<String>>,
}

impl Services {
    /// Creates a key for the application. Key generation and parsing happen before anything is written, so no
    /// transaction waits for them.
    pub async fn add_app_key(
        &self,
        caller: &Caller,
        project_id: &str,
        app_id: &str,
        key_type: KeyType,
        spec: KeySpec,
        expiration: Option<Timestamp>,
    ) -> Result<AddedKey> {
        let expiration = expiration.unwrap_or(Timestamp::NEVER);
        app::check_expiration(expiration, self.now())?;
        // Checked first so that a request for a missing application does not use up a key pair.
        let app_row = self.app(caller, project_id, app_id).await?;
        let material = match spec {
            KeySpec::Supplied { public_key, algorithm } => supplied_key(&public_key, algorithm)?,
            KeySpec::Generate { algorithm: KeyAlgorithm::Rsa, bits } => {
                let pair = self.keys.next_key(bits).await?;
                Material {
                    public_key_pem: pair.public_spki_pem().to_owned(),
                    algorithm: KeyAlgorithm::Rsa,
                    private_pem: Some(Zeroizing::new(pair.private_pkcs1_pem().to_owned())),
                }
            }
            KeySpec::Generate { algorithm: KeyAlgorithm::EcP256, .. } => curve_pair(CurveAlgorithm::EcP256)?,
            KeySpec::Generate { algorithm: KeyAlgorithm::Ed25519, .. } => {
                curve_pair(CurveAlgorithm::Ed25519)?
            }
        };
        let key_id = self.new_id();
        let new_key = NewKey {
            key_id: key_id.clone(),
            key_type,
            expiration,
            public_key_pem: material.public_key_pem,
            algorithm: material.algorithm,
            supplied: material.private_pem.is_none(),
        };
        let now = self.now();
        let load = || self.app_state(caller, project_id, app_id);
        let written = self
            .command_from(app_target(caller, app_id), load, |app| {
                let new_key = new_key.clone();
                async move { Ok(app.state.add_key(app_id, project_id, new_key, now)?) }
            })
            .await?;
        let key_file = match &material.private_pem {
            Some(private_pem) => application_key_file(&key_id, private_pem, app_id, &app_row.client_id)?,
            None => Zeroizing::new(Vec::new()),
        };
        Ok(AddedKey { key_id, written, key_file })
    }

    /// One key, from memory when it was read before and nothing has changed it since.
    pub async fn app_key(
        &self,
        caller: &Caller,
        project_id: &str,
        app_id: &str,
        key_id: &str,
    ) -> Result<AppKeyRow> {
        let cached = self.keys_read.get(&caller.org_id, project_id, app_id, key_id);
        if let Some(key) = &cached
            && self.memory_is_current()
        {
            return Ok(key.clone());
        }
        let generation = self.keys_read.generation();
        let read = self.store.app_key(&caller.org_id, project_id, app_id, key_id).await;
        let key = super::remembered(read, cached.map(Some))?;
        let key = key.ok_or_else(|| app::key_not_found(app_id, key_id))?;
        self.keys_read.fill(generation, project_id, &key);
        Ok(key)
    }

    /// A page of an application's keys (see `service::page`), with each key's public key or without
    /// (KEY_VIEW_BASIC, where the store does not even read it); from memory when the same page was listed before
    /// and nothing has changed the application or its project since.
    pub async fn app_keys(
        &self,
        caller: &Caller,
        project_id: &str,
        app_id: &str,
        page: Page,
        public_key: bool,
    ) -> Result<ListView<AppKeyRow>> {
        let org_id = caller.org_id.as_str();
        if self.memory_is_current()
            && let Some(listed) = self.keys_read.page(org_id, project_id, app_id, page, public_key)
        {
            return self.list_view(listed).await;
        }
        let generation = self.keys_read.generation();
        self.app(caller, project_id, app_id).await?;
        let listed = self.store.app_keys(org_id, project_id, app_id, page, public_key).await?;
        self.keys_read.fill_page(generation, (org_id, project_id, app_id), page, public_key, &listed);
        self.list_view(listed).await
    }

    pub async fn remove_app_key(
        &self,
        caller: &Caller,
        project_id: &str,
        app_id: &str,
        key_id: &str,
    ) -> Result<Written> {
        self.project(caller, project_id).await?;
        let load = || self.app_state(caller, project_id, app_id);
        self.command_from(app_target(caller, app_id), load, |app| async move {
            let live = self.store.app_key(&caller.org_id, project_id, app_id, key_id).await?.is_some();
            Ok(app.state.remove_key(app_id, project_id, key_id, live)?)
        })
        .await
    }
}

/// A new EC P-256 or Ed25519 pair: tens of microseconds, so it needs neither a pool nor a blocking thread.
fn curve_pair(curve: CurveAlgorithm) -> Result<Material> {
    let pair = Pkcs8KeyPair::generate(curve)?;
    Ok(Material {
        public_key_pem: pair.public_spki_pem().to_owned(),
        algorithm: match curve {
            CurveAlgorithm::EcP256 => KeyAlgorithm::EcP256,
            CurveAlgorithm::Ed25519 => KeyAlgorithm::Ed25519,
        },
        private_pem: Some(Zeroizing::new(pair.private_pkcs8_pem().to_owned())),
    })
}

/// Reads and checks a key the caller supplied; every refusal is a violation of `public_key` (or of `algorithm`
/// when the key is not of the algorithm the request named).
fn supplied_key(text: &str, requested: Option<KeyAlgorithm>) -> Result<Material, DomainError> {
    if text.chars().nth(MAX_SUPPLIED_KEY_LEN).is_some() {
        return Err(DomainError::invalid(
            "publicKey",
            format!("must be at most {MAX_SUPPLIED_KEY_LEN} characters: one PEM public key or one JWK"),
        ));
    }
    let key = PublicKey::from_supplied(text).map_err(|e| DomainError::invalid("publicKey", e.0))?;
    let algorithm = match key.family() {
        KeyFamily::Rsa => KeyAlgorithm::Rsa,
        KeyFamily::EcP256 => KeyAlgorithm::EcP256,
        KeyFamily::Ed25519 => KeyAlgorithm::Ed25519,
    };
    if requested.is_some_and(|r| r != algorithm) {
        return Err(DomainError::invalid(
            "algorithm",
            "is not the supplied key's algorithm: leave it unspecified, or name the key's",
        ));
    }
    // Stored in one canonical form, whichever form it came in.
    let public_key_pem = key.to_spki_pem().map_err(|e| DomainError::invalid("publicKey", e.0))?;
    Ok(Material { public_key_pem, algorithm, private_pem: None })
}
