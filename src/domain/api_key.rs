//! API keys: opaque secrets an organization issues to integrations. One aggregate per key: created, updated,
//! rolled (a new secret; the old one keeps working for a grace period), deleted (revoked for good; the record
//! stays for audit). Events carry only the SHA-256 of a secret, never the secret.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use super::{
    DomainError, Event, Timestamp,
    aggregate::Aggregate,
    cidr::AllowList,
    rate_limit::{DailyQuota, RateLimit},
    validate::{MAX_LEN, Violations},
};

/// At most this many scopes per key.
pub const MAX_SCOPES: usize = 50;
/// The longest scope string.
const MAX_SCOPE_LEN: usize = 100;
/// The longest integration label.
const MAX_INTEGRATION_LEN: usize = 100;
/// Metadata bounds: entries, key length, value length.
pub const MAX_METADATA_ENTRIES: usize = 20;
const MAX_METADATA_KEY_LEN: usize = 40;
const MAX_METADATA_VALUE_LEN: usize = 500;
/// The largest time offset either way: a day.
pub const MAX_TIME_OFFSET_MICROS: i64 = 86_400_000_000;
/// The longest grace period of a rolled secret: 30 days.
pub const MAX_GRACE_MICROS: i64 = 30 * 86_400_000_000;

/// Whether a key works against live data or is a staging key; its secret's prefix says so.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Environment {
    #[default]
    Live,
    Test,
}

impl Environment {
    /// Both environments, for checking a prefix against each.
    pub const ALL: [Environment; 2] = [Environment::Live, Environment::Test];

    /// The start of every secret of this environment: `km_live_` or `km_test_`.
    pub fn prefix(self) -> &'static str {
        match self {
            Environment::Live => "km_live_",
            Environment::Test => "km_test_",
        }
    }

    /// The name the read model stores: `live` or `test`.
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Live => "live",
            Environment::Test => "test",
        }
    }
}

/// Whether a key may be used. `Revoked` is final: only deletion sets it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    #[default]
    Active,
    Inactive,
    Revoked,
}

impl KeyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Inactive => "inactive",
            KeyStatus::Revoked => "revoked",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [KeyStatus::Active, KeyStatus::Inactive, KeyStatus::Revoked].into_iter().find(|st| st.as_str() == s)
    }
}

/// What is fixed when a key is created.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Origin {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    pub environment: Environment,
    /// Microseconds since the Unix epoch; None = never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    #[serde(default)]
    pub integration: String,
    /// Returned on verify, in microseconds.
    #[serde(default)]
    pub time_offset_micros: i64,
}

/// What an update may change. Events carry all of it, so that the read model is set, not patched.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    pub title: String,
    #[serde(default)]
    pub description: String,
    pub scopes: Vec<String>,
    #[serde(default)]
    pub allowed_cidrs: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_quota: Option<u64>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    pub status: KeyStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
}

/// What the store and the lists know of a secret: its hash, and the characters shown to recognise it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    pub secret_hash: String,
    pub prefix: String,
    pub last_four: String,
}

/// The fields an update may name in its mask, in the order they are checked.
pub const UPDATABLE: [&str; 9] = [
    "title",
    "description",
    "scopes",
    "allowed_cidrs",
    "rate_limit",
    "daily_quota",
    "metadata",
    "status",
    "api_version",
];

/// One API key's state, folded from its events.
#[derive(Debug, Default, Clone)]
pub struct ApiKey {
    pub exists: bool,
    pub origin: Origin,
    pub settings: Settings,
    pub secret: Option<SecretRef>,
}

impl Aggregate for ApiKey {
    fn apply(&mut self, event: &Event) {
        match event {
            Event::ApiKeyCreated { origin, settings, secret } => {
                self.exists = true;
                self.origin = origin.clone();
                self.settings = settings.clone();
                self.secret = Some(secret.clone());
            }
            Event::ApiKeyUpdated { settings, .. } => self.settings = settings.clone(),
            Event::ApiKeyRolled { secret, .. } => self.secret = Some(secret.clone()),
            Event::ApiKeyDeleted => self.settings.status = KeyStatus::Revoked,
            _ => {}
        }
    }
}

impl ApiKey {
    /// A new key, from a request already checked by [`validate_origin`] and [`Settings::validate`].
    pub fn create(
        &self,
        origin: Origin,
        settings: Settings,
        secret: SecretRef,
    ) -> Result<Vec<Event>, DomainError> {
        if self.exists {
            return Err(DomainError::already_exists("API_KEY_ALREADY_EXISTS", "the API key exists"));
        }
        Ok(vec![Event::ApiKeyCreated { origin, settings, secret }])
    }

    /// Applies the fields named in `mask` from `requested` and checks the result. Nothing changed → no event.
    pub fn update(&self, id: &str, mask: &[String], requested: &Settings) -> Result<Vec<Event>, DomainError> {
        self.ensure_usable(id)?;
        let mut settings = self.settings.clone();
        let mut changed = Vec::new();
        for field in mask {
            let field = field.as_str();
            match field {
                "title" => settings.title = requested.title.trim().to_owned(),
                "description" => settings.description = requested.description.clone(),
                "scopes" => settings.scopes = requested.scopes.clone(),
                "allowed_cidrs" => settings.allowed_cidrs = requested.allowed_cidrs.clone(),
                "rate_limit" => settings.rate_limit = requested.rate_limit,
                "daily_quota" => settings.daily_quota = requested.daily_quota,
                "metadata" => settings.metadata = requested.metadata.clone(),
                "status" => settings.status = requested.status,
                "api_version" => settings.api_version = requested.api_version.clone(),
                _ => continue,
            }
            if !changed.iter().any(|c| c == field) {
                changed.push(field.to_owned());
            }
        }
        let mut violations = Violations::new();
        let settings = settings.validate(&mut violations);
        violations.into_result()?;
        if settings == self.settings {
            return Ok(vec![]);
        }
        Ok(vec![Event::ApiKeyUpdated { changed, settings }])
    }

    /// A new secret; the current one keeps working until `old_expires_at`.
    pub fn roll(
        &self,
        id: &str,
        secret: SecretRef,
        old_expires_at: Timestamp,
    ) -> Result<Vec<Event>, DomainError> {
        self.ensure_usable(id)?;
        Ok(vec![Event::ApiKeyRolled { secret, old_secret_expires_at: old_expires_at.micros() }])
    }

    pub fn delete(&self, id: &str) -> Result<Vec<Event>, DomainError> {
        self.ensure_usable(id)?;
        Ok(vec![Event::ApiKeyDeleted])
    }

    /// A key that exists and is not revoked; a revoked key is read-only.
    fn ensure_usable(&self, id: &str) -> Result<(), DomainError> {
        if !self.exists {
            return Err(not_found(id));
        }
        if self.settings.status == KeyStatus::Revoked {
            return Err(DomainError::failed_precondition(
                "API_KEY_REVOKED",
                format!("API key {id} was deleted; it can be read but not changed"),
            ));
        }
        Ok(())
    }
}

pub fn not_found(id: &str) -> DomainError {
    DomainError::not_found("API_KEY_NOT_FOUND", format!("API key {id} not found"))
}

/// Checks the fields fixed at creation.
pub fn validate_origin(origin: &Origin, now: Timestamp, violations: &mut Violations) {
    if let Some(app_id) = &origin.app_id {
        violations.id("appId", app_id);
    }
    if let Some(external_id) = &origin.external_id {
        violations.text("externalId", external_id, MAX_LEN);
    }
    if let Some(expires_at) = origin.expires_at
        && expires_at <= now.micros()
    {
        violations.add("expiresAt", "must be in the future (leave it out for a key that does not expire)");
    }
    violations.text("integration", &origin.integration, MAX_INTEGRATION_LEN);
    if origin.time_offset_micros.abs() > MAX_TIME_OFFSET_MICROS {
        violations.add("timeOffset", "must be between -24 hours and +24 hours");
    }
}

impl Settings {
    /// Checks every field and normalises the ones with a canonical form (title trimmed, scopes without
    /// duplicates, networks as `address/length`).
    pub fn validate(mut self, violations: &mut Violations) -> Settings {
        violations.name("title", &self.title);
        self.title = self.title.trim().to_owned();
        violations.text("description", &self.description, MAX_LEN);
        self.scopes = validate_scopes(&self.scopes, violations);
        match AllowList::parse(&self.allowed_cidrs) {
            Ok(list) => self.allowed_cidrs = list.to_strings(),
            Err(found) => found.into_iter().for_each(|v| violations.add(&v.field, v.description)),
        }
        if let Some(limit) = self.rate_limit
            && let Err(DomainError::InvalidArgument(found)) = limit.validate()
        {
            found.into_iter().for_each(|v| violations.add(&v.field, v.description));
        }
        if let Some(quota) = self.daily_quota
            && let Err(DomainError::InvalidArgument(found)) = DailyQuota::new(quota)
        {
            found.into_iter().for_each(|v| violations.add(&v.field, v.description));
        }
        validate_metadata(&self.metadata, violations);
        if self.status == KeyStatus::Revoked {
            violations.add("status", "must be ACTIVE or INACTIVE (delete a key to revoke it)");
        }
        if let Some(version) = &self.api_version
            && !is_calendar_date(version)
        {
            violations.add("apiVersion", "must be a date as YYYY-MM-DD, e.g. 2026-11-25 (empty to unpin)");
        }
        self
    }
}

/// Scopes look like `resource:action`: lowercase letters, digits, `_`, `-` and `.` on either side of one colon.
pub fn is_valid_scope(scope: &str) -> bool {
    let part = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.'))
    };
    scope.len() <= MAX_SCOPE_LEN
        && scope.split_once(':').is_some_and(|(resource, action)| part(resource) && part(action))
}

/// Linear in the number of scopes, and refuses too many before looking at any: a request must not buy more work
/// than the limit allows.
fn validate_scopes(scopes: &[String], violations: &mut Violations) -> Vec<String> {
    if scopes.is_empty() || scopes.len() > MAX_SCOPES {
        violations.add(
            "scopes",
            format!(
                "must name 1 to {MAX_SCOPES} scopes, e.g. keys:read (this request names {})",
                scopes.len()
            ),
        );
        return Vec::new();
    }
    let mut seen = HashSet::with_capacity(scopes.len());
    let mut unique = Vec::with_capacity(scopes.len());
    for (i, scope) in scopes.iter().enumerate() {
        if !is_valid_scope(scope) {
            violations.add(
                &format!("scopes[{i}]"),
                "must look like resource:action (lowercase letters, digits, _ - . on each side of one colon)",
            );
        } else if seen.insert(scope.as_str()) {
            unique.push(scope.clone());
        }
    }
    unique
}

fn validate_metadata(metadata: &BTreeMap<String, String>, violations: &mut Violations) {
    if metadata.len() > MAX_METADATA_ENTRIES {
        violations.add(
            "metadata",
            format!("must have at most {MAX_METADATA_ENTRIES} entries (this request has {})", metadata.len()),
        );
        return;
    }
    for (key, value) in metadata {
        // Escaped, so that a key holding control characters cannot put them into the error.
        let field = format!("metadata[{}]", key.escape_debug());
        if key.is_empty() {
            violations.add(&field, format!("keys must be 1 to {MAX_METADATA_KEY_LEN} characters"));
        } else {
            violations.text(&field, key, MAX_METADATA_KEY_LEN);
        }
        violations.text(&field, value, MAX_METADATA_VALUE_LEN);
    }
}

/// Whether `s` is a real date written `YYYY-MM-DD` (years 1 to 9999; leap years counted).
pub fn is_calendar_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        b[range].iter().try_fold(0_u32, |n, &d| d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0')))
    };
    let (Some(year), Some(month), Some(day)) = (number(0..4), number(5..7), number(8..10)) else {
        return false;
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    year >= 1 && (1..=days_in_month).contains(&day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::aggregate::Loaded;

    const NOW: Timestamp = Timestamp(1_764_000_000_000_000);

    fn settings() -> Settings {
        Settings { title: "ci".into(), scopes: vec!["keys:read".into()], ..Settings::default() }
    }

    fn secret(hash: &str) -> SecretRef {
        SecretRef { secret_hash: hash.into(), prefix: "km_live_abcd".into(), last_four: "wxyz".into() }
    }

    fn created() -> Loaded<ApiKey> {
        Loaded::replay(&[Event::ApiKeyCreated {
            origin: Origin::default(),
            settings: settings(),
            secret: secret("h1"),
        }])
    }

    fn violations_of(settings: Settings) -> Vec<String> {
        let mut v = Violations::new();
        settings.validate(&mut v);
        match v.into_result() {
            Err(DomainError::InvalidArgument(found)) => found.into_iter().map(|f| f.field).collect(),
            _ => vec![],
        }
    }

    #[test]
    fn scopes_are_resource_colon_action() {
        for good in ["keys:read", "apikeys:verify", "billing.v2:read-all", "a_b:c"] {
            assert!(is_valid_scope(good), "{good}");
        }
        for bad in ["", "keys", ":read", "keys:", "Keys:read", "keys:read:all", "keys :read", "kéys:read"] {
            assert!(!is_valid_scope(bad), "{bad}");
        }
        assert!(!is_valid_scope(&format!("a:{}", "b".repeat(100))));
    }

    #[test]
    fn every_bad_setting_is_named() {
        let bad = Settings {
            title: " ".into(),
            description: "d".repeat(201),
            scopes: vec!["ok:read".into(), "NOPE".into()],
            allowed_cidrs: vec!["10.0.0.1/8".into()],
            rate_limit: Some(RateLimit { per_second: 0, burst: 1 }),
            daily_quota: Some(0),
            metadata: BTreeMap::from([(String::new(), "v".into())]),
            status: KeyStatus::Revoked,
            api_version: Some("2026-02-30".into()),
        };
        assert_eq!(
            violations_of(bad),
            [
                "title",
                "description",
                "scopes[1]",
                "allowedCidrs[0]",
                "rateLimit.perSecond",
                "dailyQuota",
                "metadata[]",
                "status",
                "apiVersion"
            ]
        );
        assert!(violations_of(Settings { scopes: vec![], ..settings() }).contains(&"scopes".to_owned()));
    }

    #[test]
    fn settings_are_normalised() {
        let mut v = Violations::new();
        let s = Settings {
            title: "  ci  ".into(),
            scopes: vec!["a:b".into(), "a:b".into(), "c:d".into()],
            allowed_cidrs: vec!["10.1.2.3".into()],
            ..settings()
        }
        .validate(&mut v);
        assert!(v.into_result().is_ok());
        assert_eq!((s.title.as_str(), s.scopes.len(), s.allowed_cidrs[0].as_str()), ("ci", 2, "10.1.2.3/32"));
    }

    #[test]
    fn too_many_scopes_are_refused_before_any_is_read() {
        let many: Vec<String> = (0..100_000).map(|i| format!("s{i}:read")).collect();
        let started = std::time::Instant::now();
        let found = violations_of(Settings { scopes: many, ..settings() });
        assert_eq!(found, ["scopes"]);
        assert!(started.elapsed() < std::time::Duration::from_millis(50), "{:?}", started.elapsed());
        let mut v = Violations::new();
        let fifty: Vec<String> = (0..MAX_SCOPES).map(|i| format!("s{}:read", i % 7)).collect();
        let s = Settings { scopes: fifty, ..settings() }.validate(&mut v);
        assert_eq!(s.scopes.len(), 7, "duplicates are dropped, first occurrences kept in order");
        assert_eq!(s.scopes[0], "s0:read");
    }

    #[test]
    fn control_characters_are_refused_in_text_fields() {
        let bad = Settings {
            title: "a\0b".into(),
            description: "line\nbreak".into(),
            metadata: BTreeMap::from([("k\0".into(), "v".into()), ("ok".into(), "\u{1b}[2J".into())]),
            ..settings()
        };
        assert_eq!(violations_of(bad), ["title", "description", "metadata[k\\0]", "metadata[ok]"]);
        let mut v = Violations::new();
        let origin =
            Origin { external_id: Some("x\0".into()), integration: "i\r\n".into(), ..Origin::default() };
        validate_origin(&origin, NOW, &mut v);
        assert!(v.into_result().is_err());
    }

    #[test]
    fn calendar_dates_are_real_dates() {
        for good in ["2026-11-25", "2024-02-29", "2000-02-29", "0001-01-01", "9999-12-31"] {
            assert!(is_calendar_date(good), "{good}");
        }
        for bad in [
            "2026-2-1",
            "2025-02-29",
            "1900-02-29",
            "2026-13-01",
            "2026-00-10",
            "2026-04-31",
            "0000-01-01",
            "2026/11/25",
            "2026-11-25x",
        ] {
            assert!(!is_calendar_date(bad), "{bad}");
        }
    }

    #[test]
    fn origin_checks_expiry_offset_and_lengths() {
        let mut v = Violations::new();
        let origin = Origin {
            app_id: Some(String::new()),
            external_id: Some("x".repeat(201)),
            expires_at: Some(NOW.micros()),
            integration: "i".repeat(101),
            time_offset_micros: MAX_TIME_OFFSET_MICROS + 1,
            ..Origin::default()
        };
        validate_origin(&origin, NOW, &mut v);
        let Err(DomainError::InvalidArgument(found)) = v.into_result() else { unreachable!("all invalid") };
        let fields: Vec<_> = found.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["appId", "externalId", "expiresAt", "integration", "timeOffset"]);
        let mut v = Violations::new();
        validate_origin(&Origin { expires_at: Some(NOW.micros() + 1), ..Origin::default() }, NOW, &mut v);
        assert!(v.into_result().is_ok());
    }

    #[test]
    fn an_update_changes_only_masked_fields_and_records_them() {
        let key = created();
        let requested = Settings { title: "new".into(), description: "ignored".into(), ..settings() };
        let events = key.state.update("k", &["title".into()], &requested).unwrap_or_default();
        let [Event::ApiKeyUpdated { changed, settings }] = events.as_slice() else {
            unreachable!("one event")
        };
        assert_eq!(changed, &["title"]);
        assert_eq!((settings.title.as_str(), settings.description.as_str()), ("new", ""));
        assert_eq!(
            key.state.update("k", &["title".into()], &settings.clone()).map(|e| e.len()).ok(),
            Some(1)
        );
        assert_eq!(key.state.update("k", &["description".into()], &self::settings()).ok(), Some(vec![]));
    }

    #[test]
    fn a_deleted_key_cannot_change_and_unknown_keys_are_not_found() {
        let mut key = created();
        assert_eq!(key.state.delete("k").ok(), Some(vec![Event::ApiKeyDeleted]));
        key.state.apply(&Event::ApiKeyDeleted);
        for refused in [
            key.state.delete("k"),
            key.state.roll("k", secret("h2"), NOW),
            key.state.update("k", &["title".into()], &settings()),
        ] {
            assert!(matches!(
                refused,
                Err(DomainError::FailedPrecondition { reason: "API_KEY_REVOKED", .. })
            ));
        }
        assert!(matches!(
            ApiKey::default().delete("k"),
            Err(DomainError::NotFound { reason: "API_KEY_NOT_FOUND", .. })
        ));
    }

    #[test]
    fn a_roll_replaces_the_secret() {
        let mut key = created();
        let events = key.state.roll("k", secret("h2"), NOW).unwrap_or_default();
        events.iter().for_each(|e| key.state.apply(e));
        assert_eq!(key.state.secret.map(|s| s.secret_hash).as_deref(), Some("h2"));
    }
}
