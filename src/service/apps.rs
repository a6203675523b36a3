//! API applications of a project, and their audit trail.

use crate::{
    domain::{
        AggregateType, DomainError,
        aggregate::Loaded,
        app::{self, App},
    },
    store::{AppRow, EventRange, RecordedEvent},
};

use super::{Caller, Error, ListView, Result, Services, Target, Written, page};

/// A new application: its ID, the write, and the client ID it presents.
#[derive(Debug, Clone)]
pub struct AddedApp {
    pub app_id: String,
    pub written: Written,
    pub client_id: String,
}

impl Services {
    pub async fn add_api_app(
        &self,
        caller: &Caller,
        project_id: &str,
        name: &str,
        allowed_scopes: &[String],
    ) -> Result<AddedApp> {
        let project = self.project(caller, project_id).await?;
        let app_id = self.new_id();
        let target = app_target(caller, &app_id);
        let (app_id_ref, project_name) = (app_id.as_str(), project.name.as_str());
        let written = self
            .command::<App, _, _>(target, |app| async move {
                // The domain checks the name first: a store must not be asked about a name it cannot hold (NUL).
                let events = app.state.add(app_id_ref, project_id, project_name, name, allowed_scopes)?;
                if self.store.app_by_name(project_id, name.trim()).await?.is_some() {
                    return Err(DomainError::already_exists(
                        "APP_NAME_TAKEN",
                        format!("an application named {:?} exists in this project", name.trim()),
                    )
                    .into());
                }
                Ok(events)
            })
            .await?;
        let client_id = App::client_id(&app_id, &project.name);
        Ok(AddedApp { app_id, written, client_id })
    }

    pub async fn app(&self, caller: &Caller, project_id: &str, app_id: &str) -> Result<AppRow> {
        let app = self.store.app(&caller.org_id, project_id, app_id).await?;
        app.ok_or_else(|| app::not_found(app_id).into())
    }

    pub async fn apps(
        &self,
        caller: &Caller,
        project_id: &str,
        offset: u64,
        limit: u32,
        asc: bool,
    ) -> Result<ListView<AppRow>> {
        let page = page(offset, limit, asc)?;
        self.project(caller, project_id).await?;
        let listed = self.store.apps(&caller.org_id, project_id, page).await?;
        self.list_view(listed).await
    }

    /// Removes the application; its keys disappear from every read with it.
    pub async fn remove_app(&self, caller: &Caller, project_id: &str, app_id: &str) -> Result<Written> {
        self.project(caller, project_id).await?;
        let load = || self.app_state(caller, project_id, app_id);
        self.command_from(app_target(caller, app_id), load, |app| async move {
            Ok(app.state.remove(app_id, project_id)?)
        })
        .await
    }

    /// Replaces the scopes the application's tokens may carry (empty: any). Tokens issued before keep theirs.
    pub async fn update_api_app(
        &self,
        caller: &Caller,
        project_id: &str,
        app_id: &str,
        allowed_scopes: &[String],
    ) -> Result<Written> {
        self.project(caller, project_id).await?;
        let load = || self.app_state(caller, project_id, app_id);
        self.command_from(app_target(caller, app_id), load, |app| async move {
            Ok(app.state.update(app_id, project_id, allowed_scopes)?)
        })
        .await
    }

    /// The application's state as its read model holds it, at the sequence of its last event: what every rule
    /// of an existing app needs, read in one row. Replaying its events instead would cost a row per key ever
    /// added. A removed app, or one of another project or organization, has no row and loads as absent.
    pub(super) async fn app_state(
        &self,
        caller: &Caller,
        project_id: &str,
        app_id: &str,
    ) -> Result<Loaded<App>> {
        self.app_state_of(&caller.org_id, project_id, app_id).await
    }

    /// `app_state` for a caller known only by its organization (an application acting on itself).
    pub(super) async fn app_state_of(
        &self,
        org_id: &str,
        project_id: &str,
        app_id: &str,
    ) -> Result<Loaded<App>> {
        let Some(row) = self.store.app(org_id, project_id, app_id).await? else {
            return Ok(Loaded::default());
        };
        let state = App {
            status: app::Status::Active,
            allowed_scopes: row.scopes(),
            project_id: row.project_id,
            name: row.name,
            client_id: row.client_id,
        };
        let sequence = u64::try_from(row.details.sequence)
            .map_err(|_| Error::Internal(format!("app {app_id} has a negative sequence")))?;
        Ok(Loaded { state, sequence })
    }

    /// The application's events, including its removal: readable while its project exists.
    pub async fn app_changes(
        &self,
        caller: &Caller,
        project_id: &str,
        app_id: &str,
        range: EventRange,
    ) -> Result<Vec<RecordedEvent>> {
        let range = EventRange { limit: page(0, range.limit, range.asc)?.limit, ..range };
        self.project(caller, project_id).await?;
        let first = EventRange { from_sequence: 0, limit: 1, asc: true };
        let created = self.store.events(AggregateType::App, app_id, first).await?;
        let belongs = created.first().is_some_and(|added| {
            added.resource_owner == caller.org_id
                && matches!(added.event(), Ok(crate::domain::Event::AppAdded { project_id: p, .. }) if p == project_id)
        });
        if !belongs {
            return Err(app::not_found(app_id).into());
        }
        Ok(self.store.events(AggregateType::App, app_id, range).await?)
    }
}

pub(super) fn app_target<'a>(caller: &'a Caller, app_id: &'a str) -> Target<'a> {
    Target {
        aggregate_type: AggregateType::App,
        id: app_id,
        org_id: &caller.org_id,
        creator: &caller.principal.id,
    }
}
