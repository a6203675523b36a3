//! Applications and their keys. An application is one aggregate: creating it is its sequence 1, and every key
//! added to or removed from it advances its sequence.

use std::collections::HashSet;

use super::{
    DomainError, Event, Timestamp,
    aggregate::Aggregate,
    api_key::{MAX_SCOPES, is_valid_scope},
    events::KeyType,
    validate::Violations,
};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum Status {
    #[default]
    Absent,
    Active,
    Removed,
}

#[derive(Debug, Default, Clone)]
pub struct App {
    pub status: Status,
    pub project_id: String,
    pub name: String,
    pub client_id: String,
    /// The scopes its tokens may carry; empty: any.
    pub allowed_scopes: Vec<String>,
}

impl Aggregate for App {
    fn apply(&mut self, event: &Event) {
        match event {
            Event::AppAdded { project_id, name, client_id, allowed_scopes } => {
                self.status = Status::Active;
                self.project_id = project_id.clone();
                self.name = name.clone();
                self.client_id = client_id.clone();
                self.allowed_scopes = allowed_scopes.clone();
            }
            Event::AppUpdated { allowed_scopes } => self.allowed_scopes = allowed_scopes.clone(),
            // Which keys are live is not part of the state: an app may hold any number of keys, and the one rule
            // that needs it (a key is removed once) is given the answer by the caller.
            Event::AppRemoved { .. } => self.status = Status::Removed,
            _ => {}
        }
    }
}

/// A new key's public half and its lifetime, decided by the caller before the command runs.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub key_id: String,
    pub key_type: KeyType,
    pub expiration: Timestamp,
    pub public_key_pem: String,
}

impl App {
    /// The client ID an application presents: `<app id>@<project name>`.
    pub fn client_id(app_id: &str, project_name: &str) -> String {
        format!("{app_id}@{project_name}")
    }

    pub fn add(
        &self,
        app_id: &str,
        project_id: &str,
        project_name: &str,
        name: &str,
        allowed_scopes: &[String],
    ) -> Result<Vec<Event>, DomainError> {
        let mut violations = Violations::new();
        violations.name("name", name);
        let allowed_scopes = validate_allowed_scopes(allowed_scopes, &mut violations);
        violations.into_result()?;
        if self.status != Status::Absent {
            return Err(DomainError::already_exists("APP_ALREADY_EXISTS", "the application exists"));
        }
        Ok(vec![Event::AppAdded {
            project_id: project_id.to_owned(),
            name: name.trim().to_owned(),
            client_id: App::client_id(app_id, project_name),
            allowed_scopes,
        }])
    }

    /// Replaces the scopes the application's tokens may carry (empty: any). Nothing changes, nothing is written.
    pub fn update(
        &self,
        app_id: &str,
        project_id: &str,
        allowed_scopes: &[String],
    ) -> Result<Vec<Event>, DomainError> {
        let mut violations = Violations::new();
        let allowed_scopes = validate_allowed_scopes(allowed_scopes, &mut violations);
        violations.into_result()?;
        self.ensure_active(app_id, project_id)?;
        if allowed_scopes == self.allowed_scopes {
            return Ok(vec![]);
        }
        Ok(vec![Event::AppUpdated { allowed_scopes }])
    }

    /// Revokes one of the application's access tokens; one revoked before is not revoked again.
    pub fn revoke_token(
        &self,
        app_id: &str,
        project_id: &str,
        jti: &str,
        expires_at: i64,
        already_revoked: bool,
    ) -> Result<Vec<Event>, DomainError> {
        self.ensure_active(app_id, project_id)?;
        if already_revoked {
            return Ok(vec![]);
        }
        Ok(vec![Event::AppTokenRevoked { jti: jti.to_owned(), expires_at }])
    }

    /// Checks that the application is live in the given project; anything else is NOT_FOUND to the caller.
    pub fn ensure_active(&self, app_id: &str, project_id: &str) -> Result<(), DomainError> {
        if self.status == Status::Active && self.project_id == project_id {
            Ok(())
        } else {
            Err(not_found(app_id))
        }
    }

    pub fn add_key(
        &self,
        app_id: &str,
        project_id: &str,
        key: NewKey,
        now: Timestamp,
    ) -> Result<Vec<Event>, DomainError> {
        check_expiration(key.expiration, now)?;
        self.ensure_active(app_id, project_id)?;
        Ok(vec![Event::AppKeyAdded {
            key_id: key.key_id,
            key_type: key.key_type,
            expiration: key.expiration.micros(),
            public_key: key.public_key_pem,
        }])
    }

    /// Removes a key that is live (`key_is_live`: added to this app and not removed since).
    pub fn remove_key(
        &self,
        app_id: &str,
        project_id: &str,
        key_id: &str,
        key_is_live: bool,
    ) -> Result<Vec<Event>, DomainError> {
        self.ensure_active(app_id, project_id)?;
        if !key_is_live {
            return Err(key_not_found(app_id, key_id));
        }
        Ok(vec![Event::AppKeyRemoved { key_id: key_id.to_owned() }])
    }

    pub fn remove(&self, app_id: &str, project_id: &str) -> Result<Vec<Event>, DomainError> {
        self.ensure_active(app_id, project_id)?;
        Ok(vec![Event::AppRemoved { project_id: project_id.to_owned() }])
    }
}

/// At most MAX_SCOPES well-formed scopes (`resource:action`, as API keys have them), duplicates dropped.
fn validate_allowed_scopes(scopes: &[String], violations: &mut Violations) -> Vec<String> {
    if scopes.len() > MAX_SCOPES {
        violations.add("allowed_scopes", format!("at most {MAX_SCOPES} scopes"));
        return vec![];
    }
    let mut seen = HashSet::new();
    let mut unique = Vec::with_capacity(scopes.len());
    for (i, scope) in scopes.iter().enumerate() {
        if !is_valid_scope(scope) {
            violations.add(
                &format!("allowed_scopes[{i}]"),
                "scopes look like resource:action: lowercase letters, digits, _ - . on either side of one colon",
            );
        } else if seen.insert(scope.as_str()) {
            unique.push(scope.clone());
        }
    }
    unique
}

/// A key must expire after it is created.
pub fn check_expiration(expiration: Timestamp, now: Timestamp) -> Result<(), DomainError> {
    if expiration > now {
        Ok(())
    } else {
        Err(DomainError::invalid(
            "expiration_date",
            "must be in the future (leave it out for a key that does not expire)",
        ))
    }
}

pub fn key_not_found(app_id: &str, key_id: &str) -> DomainError {
    DomainError::not_found("APP_KEY_NOT_FOUND", format!("key {key_id} of application {app_id} not found"))
}

pub fn not_found(app_id: &str) -> DomainError {
    DomainError::not_found("APP_NOT_FOUND", format!("application {app_id} not found"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::aggregate::Loaded;

    const NOW: Timestamp = Timestamp(1_764_000_000_000_000);

    fn new_key(id: &str, expiration: Timestamp) -> NewKey {
        NewKey { key_id: id.into(), key_type: KeyType::Json, expiration, public_key_pem: "pem".into() }
    }

    fn live_app() -> Loaded<App> {
        Loaded::replay(&[Event::AppAdded {
            project_id: "p".into(),
            name: "api".into(),
            client_id: "a@billing".into(),
            allowed_scopes: vec![],
        }])
    }

    #[test]
    fn a_key_is_added_to_a_live_app() {
        let app = live_app();
        let events = app.state.add_key("a", "p", new_key("k", Timestamp::NEVER), NOW);
        assert!(matches!(events.as_deref(), Ok([Event::AppKeyAdded { key_id, .. }]) if key_id == "k"));
    }

    #[test]
    fn an_expiration_in_the_past_or_now_is_invalid() {
        let app = live_app();
        for expiration in [NOW, Timestamp(NOW.0 - 1)] {
            let refused = app.state.add_key("a", "p", new_key("k", expiration), NOW);
            assert!(
                matches!(refused, Err(DomainError::InvalidArgument(v)) if v[0].field == "expiration_date")
            );
        }
    }

    #[test]
    fn removed_apps_and_other_projects_answer_not_found() {
        let mut app = live_app();
        assert!(matches!(
            app.state.add_key("a", "other", new_key("k", Timestamp::NEVER), NOW),
            Err(DomainError::NotFound { reason: "APP_NOT_FOUND", .. })
        ));
        app.state.apply(&Event::AppRemoved { project_id: "p".into() });
        assert!(matches!(
            app.state.add_key("a", "p", new_key("k", Timestamp::NEVER), NOW),
            Err(DomainError::NotFound { reason: "APP_NOT_FOUND", .. })
        ));
    }

    #[test]
    fn allowed_scopes_are_checked_and_an_unchanged_list_writes_nothing() {
        let app = live_app();
        let scopes = vec!["invoices:read".to_owned(), "invoices:read".to_owned()];
        let updated = app.state.update("a", "p", &scopes);
        assert_eq!(updated, Ok(vec![Event::AppUpdated { allowed_scopes: vec!["invoices:read".into()] }]));
        assert_eq!(app.state.update("a", "p", &[]), Ok(vec![]), "already any scope");
        assert!(matches!(
            app.state.update("a", "p", &["Bad Scope".to_owned()]),
            Err(DomainError::InvalidArgument(v)) if v[0].field == "allowed_scopes[0]"
        ));
        let added = App::default().add("a", "p", "billing", "api", &["x:y".to_owned()]);
        assert!(
            matches!(added.as_deref(), Ok([Event::AppAdded { allowed_scopes, .. }]) if allowed_scopes == &["x:y"])
        );
    }

    #[test]
    fn a_token_is_revoked_once() {
        let app = live_app();
        assert_eq!(
            app.state.revoke_token("a", "p", "j", 5, false),
            Ok(vec![Event::AppTokenRevoked { jti: "j".into(), expires_at: 5 }])
        );
        assert_eq!(app.state.revoke_token("a", "p", "j", 5, true), Ok(vec![]));
    }

    #[test]
    fn only_a_live_key_is_removed() {
        let app = live_app();
        let removed = app.state.remove_key("a", "p", "k", true);
        assert_eq!(removed.ok(), Some(vec![Event::AppKeyRemoved { key_id: "k".into() }]));
        assert!(matches!(
            app.state.remove_key("a", "p", "k", false),
            Err(DomainError::NotFound { reason: "APP_KEY_NOT_FOUND", .. })
        ));
        assert!(matches!(
            app.state.remove_key("a", "other", "k", true),
            Err(DomainError::NotFound { reason: "APP_NOT_FOUND", .. })
        ));
    }
}
