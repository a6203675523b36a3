//! Organizations: created and read by instance administrators (and API keys they gave `orgs:admin`).

use crate::{
    domain::{
        AggregateType, DomainError,
        org::Org,
        principal::{Principal, Scope},
    },
    store::OrgRow,
};

use super::{ListView, Result, Services, Target, Written, page};

impl Services {
    pub async fn add_org(&self, principal: &Principal, name: &str) -> Result<(String, Written)> {
        principal.require(Scope::OrgsAdmin)?;
        let id = self.new_id();
        let target =
            Target { aggregate_type: AggregateType::Org, id: &id, org_id: &id, creator: &principal.id };
        let written = self
            .command::<Org, _, _>(target, |org| async move {
                // The domain checks the name first: a store must not be asked about a name it cannot hold (NUL).
                let events = org.state.add(name)?;
                if self.store.org_by_name(name.trim()).await?.is_some() {
                    return Err(name_taken(name).into());
                }
                Ok(events)
            })
            .await?;
        Ok((id, written))
    }

    pub async fn org(&self, principal: &Principal, id: &str) -> Result<OrgRow> {
        principal.require(Scope::OrgsAdmin)?;
        let org = self.store.org(id).await?;
        org.ok_or_else(|| {
            DomainError::not_found("ORG_NOT_FOUND", format!("organization {id} not found")).into()
        })
    }

    pub async fn orgs(
        &self,
        principal: &Principal,
        offset: u64,
        limit: u32,
        asc: bool,
    ) -> Result<ListView<OrgRow>> {
        principal.require(Scope::OrgsAdmin)?;
        let listed = self.store.orgs(page(offset, limit, asc)?).await?;
        self.list_view(listed).await
    }
}

fn name_taken(name: &str) -> DomainError {
    DomainError::already_exists("ORG_NAME_TAKEN", format!("an organization named {:?} exists", name.trim()))
}
