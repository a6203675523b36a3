//! Application keys: RSA key pairs whose private half is returned once, in a key file.

use zeroize::Zeroizing;

use crate::{
    crypto::{key_file::application_key_file, keygen::RsaBits},
    domain::{
        Timestamp,
        app::{self, NewKey},
        events::KeyType,
    },
    store::AppKeyRow,
};

use super::{Caller, ListView, Result, Services, Written, apps::app_target, page};

/// A new key: its ID, the write, and the key file holding the private key (wiped when dropped).
pub struct AddedKey {
    pub key_id: String,
    pub written: Written,
    pub key_file: Zeroizing<Vec<u8>>,
}

impl Services {
    /// Creates a key for the application. The key pair comes from the key pool before anything is written, so
    /// no transaction waits for key generation.
    pub async fn add_app_key(
        &self,
        caller: &Caller,
        project_id: &str,
        app_id: &str,
        key_type: KeyType,
        bits: Option<RsaBits>,
        expiration: Option<Timestamp>,
    ) -> Result<AddedKey> {
        let expiration = expiration.unwrap_or(Timestamp::NEVER);
        app::check_expiration(expiration, self.now())?;
        // Checked first so that a request for a missing application does not use up a key pair.
        let app_row = self.app(caller, project_id, app_id).await?;
        let pair = self.keys.next_key(bits).await?;
        let key_id = self.new_id();
        let new_key = NewKey {
            key_id: key_id.clone(),
            key_type,
            expiration,
            public_key_pem: pair.public_spki_pem().to_owned(),
        };
        let now = self.now();
        let load = || self.app_state(caller, project_id, app_id);
        let written = self
            .command_from(app_target(caller, app_id), load, |app| {
                let new_key = new_key.clone();
                async move { Ok(app.state.add_key(app_id, project_id, new_key, now)?) }
            })
            .await?;
        let key_file = application_key_file(&key_id, pair.private_pkcs1_pem(), app_id, &app_row.client_id)?;
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

    pub async fn app_keys(
        &self,
        caller: &Caller,
        project_id: &str,
        app_id: &str,
        offset: u64,
        limit: u32,
        asc: bool,
    ) -> Result<ListView<AppKeyRow>> {
        let page = page(offset, limit, asc)?;
        self.app(caller, project_id, app_id).await?;
        let listed = self.store.app_keys(&caller.org_id, project_id, app_id, page).await?;
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
