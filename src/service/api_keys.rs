//! API keys: issue, read, list with cursors, update, roll and revoke. The secret exists only in the response
//! that shows it; the store and the events keep its SHA-256.

use zeroize::Zeroizing;

use crate::{
    crypto::{api_key_secret, secret::hash_secret},
    domain::{
        AggregateType, DomainError, Event, Timestamp,
        api_key::{
            self, ApiKey, Environment, KeyStatus, MAX_GRACE_MICROS, Origin, SecretRef, Settings, UPDATABLE,
        },
        app,
        principal::Limits,
        validate::Violations,
    },
    store::{ApiKeyCursor, ApiKeyQuery, ApiKeyRow, EventRange, RecordedEvent, RowDetails},
};

use super::{Caller, Error, Result, Services, Target, Written, verify::Usage};

/// Default and largest page of API keys.
pub const DEFAULT_KEYS_LIMIT: u32 = 25;
pub const MAX_KEYS_LIMIT: u32 = 100;

/// An API key as reads return it: never its secret or the secret's hash.
#[derive(Debug, Clone)]
pub struct ApiKeyRecord {
    pub id: String,
    pub details: RowDetails,
    pub origin: Origin,
    pub settings: Settings,
    pub prefix: String,
    pub last_four: String,
    pub created_by: String,
    pub deleted_at: Option<Timestamp>,
    pub usage: Usage,
}

/// A key with a secret to show once (wiped when dropped).
pub struct Issued {
    pub key: ApiKeyRecord,
    pub written: Written,
    pub secret: Zeroizing<String>,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued").field("key", &self.key).field("secret", &"[redacted]").finish()
    }
}

/// Which keys a list returns.
#[derive(Debug, Clone, Default)]
pub struct KeyFilter {
    pub limit: u32,
    pub starting_after: Option<String>,
    pub ending_before: Option<String>,
    pub status: Option<KeyStatus>,
    pub app_id: Option<String>,
    pub environment: Option<Environment>,
}

impl Services {
    pub async fn create_api_key(
        &self,
        caller: &Caller,
        origin: Origin,
        settings: Settings,
    ) -> Result<Issued> {
        let now = self.now();
        let mut violations = Violations::new();
        api_key::validate_origin(&origin, now, &mut violations);
        let settings = settings.validate(&mut violations);
        violations.into_result()?;
        caller.principal.may_grant(&settings.scopes)?;
        caller.principal.may_issue(&limits_of(&origin, &settings)?)?;
        if let Some(app_id) = &origin.app_id
            && !self.store.app_in_org(&caller.org_id, app_id).await?
        {
            return Err(app::not_found(app_id).into());
        }
        let (secret, secret_ref) = new_secret(origin.environment)?;
        let id = self.new_id();
        let written = self
            .command::<ApiKey, _, _>(key_target(caller, &id), |key| {
                let (origin, settings, secret_ref) = (origin.clone(), settings.clone(), secret_ref.clone());
                async move { Ok(key.state.create(origin, settings, secret_ref)?) }
            })
            .await?;
        Ok(Issued { key: self.api_key(caller, &id).await?, written, secret })
    }

    /// One key, revoked ones included, with its usage up to this moment.
    pub async fn api_key(&self, caller: &Caller, id: &str) -> Result<ApiKeyRecord> {
        let row = self.store.api_key(&caller.org_id, id).await?.ok_or_else(|| api_key::not_found(id))?;
        self.record(row)
    }

    /// A page of keys, newest first, and whether more lie beyond it in the direction of travel.
    pub async fn api_keys(&self, caller: &Caller, filter: KeyFilter) -> Result<(Vec<ApiKeyRecord>, bool)> {
        let limit = match filter.limit {
            0 => DEFAULT_KEYS_LIMIT,
            1..=MAX_KEYS_LIMIT => filter.limit,
            _ => return Err(DomainError::invalid("limit", format!("must be 1 to {MAX_KEYS_LIMIT}")).into()),
        };
        let cursor = match (filter.starting_after, filter.ending_before) {
            (Some(_), Some(_)) => {
                return Err(DomainError::invalid(
                    "endingBefore",
                    "give startingAfter or endingBefore, not both",
                )
                .into());
            }
            (Some(id), None) => self.cursor(caller, "startingAfter", id, ApiKeyCursor::After).await?,
            (None, Some(id)) => self.cursor(caller, "endingBefore", id, ApiKeyCursor::Before).await?,
            (None, None) => ApiKeyCursor::None,
        };
        let backwards = matches!(cursor, ApiKeyCursor::Before(_));
        let query = ApiKeyQuery {
            // One more than the page tells whether more follow.
            limit: limit + 1,
            cursor,
            status: filter.status.map(KeyStatus::as_str),
            app_id: filter.app_id,
            environment: filter.environment.map(Environment::as_str),
        };
        let mut rows = self.store.api_keys(&caller.org_id, &query).await?;
        let has_more = rows.len() > limit as usize;
        if has_more {
            // Backwards pages come newest first too: the extra row is the newest, at the front.
            if backwards {
                rows.remove(0);
            } else {
                rows.truncate(limit as usize);
            }
        }
        let records = rows.into_iter().map(|row| self.record(row)).collect::<Result<Vec<_>>>()?;
        Ok((records, has_more))
    }

    /// Changes the fields the mask names. The caller must hold every scope of the key before and after, the key
    /// must be no looser than the caller's own limits (rate limit, quota, networks, expiry) before and after, and
    /// a key may not change its own bounds (scopes, networks, limits, status).
    pub async fn update_api_key(
        &self,
        caller: &Caller,
        id: &str,
        mask: &[String],
        requested: Settings,
    ) -> Result<(ApiKeyRecord, Written)> {
        // Before validation, so that a key asking for its own `expires_at` hears why, not that it is unknown.
        caller.principal.may_update_key(id, mask)?;
        let mut violations = Violations::new();
        if mask.is_empty() {
            violations.add("updateMask", format!("must name at least one of: {}", UPDATABLE.join(", ")));
        }
        for (i, field) in mask.iter().enumerate() {
            if !UPDATABLE.contains(&field.as_str()) {
                violations
                    .add(&format!("updateMask[{i}]"), format!("must be one of: {}", UPDATABLE.join(", ")));
            }
        }
        violations.into_result()?;
        if mask.iter().any(|field| field == "scopes") {
            caller.principal.may_grant(&requested.scopes)?;
        }
        let written = self
            .command::<ApiKey, _, _>(key_target(caller, id), |key| {
                let requested = &requested;
                async move {
                    // Checked on the state the write is decided on, so a concurrent widening cannot slip past.
                    may_act_on(caller, id, &key.state)?;
                    let events = key.state.update(id, mask, requested)?;
                    // The key as the update leaves it, validated and normalised: a loosened limit shows here.
                    for event in &events {
                        if let Event::ApiKeyUpdated { settings, .. } = event {
                            caller.principal.may_issue(&limits_of(&key.state.origin, settings)?)?;
                        }
                    }
                    Ok(events)
                }
            })
            .await?;
        Ok((self.api_key(caller, id).await?, written))
    }

    /// Revokes a key: from the moment this returns, no verify on this process accepts it. The caller must hold
    /// every scope of the key, and the key must be no looser than the caller's own limits: revoking a stronger or
    /// looser key would take it from whoever holds it.
    pub async fn delete_api_key(&self, caller: &Caller, id: &str) -> Result<Written> {
        self.command::<ApiKey, _, _>(key_target(caller, id), |key| async move {
            may_act_on(caller, id, &key.state)?;
            Ok(key.state.delete(id)?)
        })
        .await
    }

    /// A new secret for the key; the old one works until `grace` has passed (0: it stops now). The caller
    /// receives the new secret, so it must hold every scope of the key, and the key must be no looser than the
    /// caller's own limits; a key may roll itself.
    pub async fn roll_api_key(
        &self,
        caller: &Caller,
        id: &str,
        grace_micros: i64,
    ) -> Result<(Issued, Timestamp)> {
        if !(0..=MAX_GRACE_MICROS).contains(&grace_micros) {
            return Err(
                DomainError::invalid("gracePeriod", "must be from 0 (stop at once) to 30 days").into()
            );
        }
        let current = self.api_key(caller, id).await?;
        let (secret, secret_ref) = new_secret(current.origin.environment)?;
        let old_expires_at = Timestamp(self.now().micros().saturating_add(grace_micros));
        let written = self
            .command::<ApiKey, _, _>(key_target(caller, id), |key| {
                let secret_ref = secret_ref.clone();
                async move {
                    may_act_on(caller, id, &key.state)?;
                    Ok(key.state.roll(id, secret_ref, old_expires_at)?)
                }
            })
            .await?;
        let key = self.api_key(caller, id).await?;
        Ok((Issued { key, written, secret }, old_expires_at))
    }

    /// A page of the key's events, with the secret's hash taken out of their payloads.
    pub async fn api_key_changes(
        &self,
        caller: &Caller,
        id: &str,
        range: EventRange,
    ) -> Result<Vec<RecordedEvent>> {
        self.api_key(caller, id).await?;
        let range = EventRange { limit: super::page(0, range.limit, range.asc)?.limit, ..range };
        let mut events = self.store.events(AggregateType::ApiKey, id, range).await?;
        for event in &mut events {
            event.payload = without_secret_hash(&event.payload);
        }
        Ok(events)
    }

    async fn cursor(
        &self,
        caller: &Caller,
        field: &str,
        id: String,
        cursor: fn(String) -> ApiKeyCursor,
    ) -> Result<ApiKeyCursor> {
        if self.store.api_key(&caller.org_id, &id).await?.is_none() {
            return Err(
                DomainError::invalid(field, "must be the ID of an API key of this organization").into()
            );
        }
        Ok(cursor(id))
    }

    fn record(&self, row: ApiKeyRow) -> Result<ApiKeyRecord> {
        let (origin, settings) = decode(&row)?;
        let usage = self.usage_with_pending(&row.id, &row.usage);
        Ok(ApiKeyRecord {
            origin,
            settings,
            usage,
            prefix: row.prefix,
            last_four: row.last_four,
            created_by: row.created_by,
            deleted_at: row.deleted_at.map(Timestamp),
            details: row.details,
            id: row.id,
        })
    }
}

/// A row's origin and settings, the settings revoked if the `status` column says so: a deletion sets only the
/// column (its event carries no settings), so the JSON of a deleted key still holds the status it had before.
pub(super) fn decode(row: &ApiKeyRow) -> Result<(Origin, Settings)> {
    let corrupt =
        |e: serde_json::Error| Error::Internal(format!("API key {} cannot be decoded: {e}", row.id));
    let origin = serde_json::from_str(&row.origin).map_err(corrupt)?;
    let mut settings: Settings = serde_json::from_str(&row.settings).map_err(corrupt)?;
    if KeyStatus::parse(&row.status) == Some(KeyStatus::Revoked) {
        settings.status = KeyStatus::Revoked;
    }
    Ok((origin, settings))
}

/// Refuses to update, roll or delete a key stronger or looser than the caller ([`Limits`]). A key that does not
/// exist here (an unknown ID, or another organization's key) is left to the domain, which says it is not found:
/// its empty state would read as a key with no limits at all.
fn may_act_on(caller: &Caller, id: &str, key: &ApiKey) -> Result<()> {
    if !key.exists {
        return Ok(());
    }
    let limits = limits_of(&key.origin, &key.settings)?;
    Ok(caller.principal.may_act_on(id, &key.settings.scopes, &limits)?)
}

/// A key's limits, for comparing with the caller's. Stored settings were validated, so a network list that
/// does not parse is a bug, not a request to refuse.
fn limits_of(origin: &Origin, settings: &Settings) -> Result<Limits> {
    Limits::of_key(origin, settings)
        .map_err(|_| Error::Internal("an API key's network list does not parse after validation".into()))
}

/// The aggregate of one key, written on the caller's behalf.
fn key_target<'a>(caller: &'a Caller, id: &'a str) -> Target<'a> {
    Target {
        aggregate_type: AggregateType::ApiKey,
        id,
        org_id: &caller.org_id,
        creator: &caller.principal.id,
    }
}

/// A new secret for the environment and what may be stored of it.
fn new_secret(environment: Environment) -> Result<(Zeroizing<String>, SecretRef)> {
    let secret = api_key_secret::generate(environment)?;
    let parsed = api_key_secret::parse(&secret)
        .map_err(|e| Error::Internal(format!("a generated API key failed its own format check: {e}")))?;
    let secret_ref =
        SecretRef { secret_hash: hash_secret(&secret), prefix: parsed.prefix, last_four: parsed.last_four };
    Ok((secret, secret_ref))
}

/// An event payload as ListApiKeyChanges shows it: the secret's hash is not for callers.
fn without_secret_hash(payload: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(payload) {
        Ok(serde_json::Value::Object(mut map)) => {
            map.remove("secretHash");
            serde_json::Value::Object(map).to_string()
        }
        _ => payload.to_owned(),
    }
}
