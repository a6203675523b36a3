//! Organizations: created by instance administrators; read by them across the instance, and by an organization's
//! own `orgs:admin` keys, which see only their own organization.

use crate::{
    domain::{
        AggregateType, DomainError,
        org::Org,
        principal::{Principal, Scope},
    },
    store::{Listed, OrgRow},
};

use super::{ListView, Result, Services, Target, Written, page};

impl Services {
    /// Instance admins only: an organization's credential, even one given `orgs:admin` before this rule, must
    /// not create organizations it would then not be allowed to see.
    pub async fn add_org(&self, principal: &Principal, name: &str) -> Result<(String, Written)> {
        principal.require(Scope::OrgsAdmin)?;
        principal.require_instance_admin("create organizations")?;
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

    /// One organization, if the principal sees it: other organizations are not found, never visible.
    pub async fn org(&self, principal: &Principal, id: &str) -> Result<OrgRow> {
        principal.require(Scope::OrgsAdmin)?;
        let org = if principal.sees_org(id) { self.store.org(id).await? } else { None };
        org.ok_or_else(|| {
            DomainError::not_found("ORG_NOT_FOUND", format!("organization {id} not found")).into()
        })
    }

    /// Every organization for an instance admin; for anyone else, a list of one: their own.
    pub async fn orgs(
        &self,
        principal: &Principal,
        offset: u64,
        limit: u32,
        asc: bool,
    ) -> Result<ListView<OrgRow>> {
        principal.require(Scope::OrgsAdmin)?;
        let page = page(offset, limit, asc)?;
        let listed = if principal.is_instance_admin() {
            self.store.orgs(page).await?
        } else {
            let own: Vec<OrgRow> = self.store.org(&principal.org_id).await?.into_iter().collect();
            let total = own.len() as u64;
            let items = if page.offset == 0 { own } else { vec![] };
            Listed { items, total }
        };
        self.list_view(listed).await
    }
}

fn name_taken(name: &str) -> DomainError {
    DomainError::already_exists("ORG_NAME_TAKEN", format!("an organization named {:?} exists", name.trim()))
}
