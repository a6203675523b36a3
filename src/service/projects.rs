//! Projects of the caller's organization.

use crate::{
    domain::{
        AggregateType, DomainError,
        project::{self, Project},
    },
    store::ProjectRow,
};

use super::{Caller, ListView, Result, Services, Target, Written, page};

impl Services {
    pub async fn add_project(&self, caller: &Caller, name: &str) -> Result<(String, Written)> {
        let id = self.new_id();
        let target = project_target(caller, &id);
        let written = self
            .command::<Project, _, _>(target, |project| async move {
                // The domain checks the name first: a store must not be asked about a name it cannot hold (NUL).
                let events = project.state.add(name)?;
                if self.store.project_by_name(&caller.org_id, name.trim()).await?.is_some() {
                    return Err(DomainError::already_exists(
                        "PROJECT_NAME_TAKEN",
                        format!("a project named {:?} exists in this organization", name.trim()),
                    )
                    .into());
                }
                Ok(events)
            })
            .await?;
        Ok((id, written))
    }

    pub async fn project(&self, caller: &Caller, id: &str) -> Result<ProjectRow> {
        let project = self.store.project(&caller.org_id, id).await?;
        project.ok_or_else(|| project::not_found(id).into())
    }

    pub async fn projects(
        &self,
        caller: &Caller,
        offset: u64,
        limit: u32,
        asc: bool,
    ) -> Result<ListView<ProjectRow>> {
        let listed = self.store.projects(&caller.org_id, page(offset, limit, asc)?).await?;
        self.list_view(listed).await
    }

    /// Removes the project; its applications and their keys disappear from every read with it.
    pub async fn remove_project(&self, caller: &Caller, id: &str) -> Result<Written> {
        self.command::<Project, _, _>(project_target(caller, id), |project| async move {
            Ok(project.state.remove(id)?)
        })
        .await
    }
}

fn project_target<'a>(caller: &'a Caller, id: &'a str) -> Target<'a> {
    Target {
        aggregate_type: AggregateType::Project,
        id,
        org_id: &caller.org_id,
        creator: &caller.principal.id,
    }
}
