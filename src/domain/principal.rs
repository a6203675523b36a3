//! Who is calling, and in which organization they may act.

use super::{DomainError, events::CredentialRole};

/// An authenticated caller. API keys and access tokens become principals too, with their own grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The credential's ID: recorded as the creator of the events it causes.
    pub id: String,
    /// The organization the credential belongs to: the default resource owner of its calls.
    pub org_id: String,
    pub grant: Grant,
}

/// What a principal may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// Everything, in every organization.
    InstanceAdmin,
    /// Everything within its own organization.
    Org,
    /// What these scopes allow, within its own organization: an API key's grant.
    Scoped(Vec<String>),
}

/// keymint's own scopes: each RPC requires one. Other `resource:action` strings on a key are the integrator's,
/// checked by VerifyApiKey for their own APIs and meaningless to keymint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    OrgsAdmin,
    ProjectsRead,
    ProjectsWrite,
    KeysRead,
    KeysWrite,
    ApiKeysRead,
    ApiKeysWrite,
    ApiKeysVerify,
}

impl Scope {
    pub const ALL: [Scope; 8] = [
        Scope::OrgsAdmin,
        Scope::ProjectsRead,
        Scope::ProjectsWrite,
        Scope::KeysRead,
        Scope::KeysWrite,
        Scope::ApiKeysRead,
        Scope::ApiKeysWrite,
        Scope::ApiKeysVerify,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::OrgsAdmin => "orgs:admin",
            Scope::ProjectsRead => "projects:read",
            Scope::ProjectsWrite => "projects:write",
            Scope::KeysRead => "keys:read",
            Scope::KeysWrite => "keys:write",
            Scope::ApiKeysRead => "apikeys:read",
            Scope::ApiKeysWrite => "apikeys:write",
            Scope::ApiKeysVerify => "apikeys:verify",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == s)
    }
}

impl From<CredentialRole> for Grant {
    fn from(role: CredentialRole) -> Self {
        match role {
            CredentialRole::InstanceAdmin => Grant::InstanceAdmin,
        }
    }
}

impl Principal {
    pub fn is_instance_admin(&self) -> bool {
        self.grant == Grant::InstanceAdmin
    }

    /// The organization a call acts in: the principal's own, or the one the `x-org-id` header asks for, if the
    /// principal may act there.
    pub fn resource_owner<'a>(&'a self, requested: Option<&'a str>) -> Result<&'a str, DomainError> {
        match requested {
            None => Ok(&self.org_id),
            Some(org) if org == self.org_id || self.is_instance_admin() => Ok(org),
            Some(org) => Err(DomainError::permission_denied(
                "ORG_NOT_ALLOWED",
                format!("this credential may not act in organization {org}"),
            )),
        }
    }

    pub fn has(&self, scope: Scope) -> bool {
        match &self.grant {
            Grant::InstanceAdmin => true,
            // Organizations are managed across the instance: not something one organization's grant covers.
            Grant::Org => scope != Scope::OrgsAdmin,
            Grant::Scoped(scopes) => scopes.iter().any(|s| s == scope.as_str()),
        }
    }

    /// Refuses a call the principal's scopes do not cover, naming the scope it needs.
    pub fn require(&self, scope: Scope) -> Result<(), DomainError> {
        if self.has(scope) {
            Ok(())
        } else {
            Err(DomainError::permission_denied(
                "MISSING_SCOPE",
                format!(
                    "this call needs the scope `{}`, which this credential does not have",
                    scope.as_str()
                ),
            ))
        }
    }

    /// Refuses to hand out keymint scopes the principal does not hold itself, so that a key cannot mint a
    /// stronger key. Scopes that are not keymint's are the integrator's to define and pass freely.
    pub fn may_grant(&self, scopes: &[String]) -> Result<(), DomainError> {
        match scopes.iter().filter_map(|s| Scope::parse(s)).find(|scope| !self.has(*scope)) {
            None => Ok(()),
            Some(scope) => Err(DomainError::permission_denied(
                "SCOPE_NOT_GRANTABLE",
                format!(
                    "this credential cannot grant `{}`: it does not have that scope itself",
                    scope.as_str()
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(grant: Grant) -> Principal {
        Principal { id: "c".into(), org_id: "home".into(), grant }
    }

    #[test]
    fn the_own_organization_is_the_default() {
        assert_eq!(principal(Grant::Org).resource_owner(None).ok(), Some("home"));
        assert_eq!(principal(Grant::Org).resource_owner(Some("home")).ok(), Some("home"));
    }

    #[test]
    fn only_instance_admins_act_in_other_organizations() {
        assert_eq!(principal(Grant::InstanceAdmin).resource_owner(Some("other")).ok(), Some("other"));
        assert!(matches!(
            principal(Grant::Org).resource_owner(Some("other")),
            Err(DomainError::PermissionDenied { reason: "ORG_NOT_ALLOWED", .. })
        ));
        assert!(principal(Grant::Org).require(Scope::OrgsAdmin).is_err());
    }

    #[test]
    fn scoped_principals_need_each_scope_and_grant_only_their_own() {
        let key = principal(Grant::Scoped(vec!["keys:read".into(), "apikeys:write".into()]));
        assert!(key.require(Scope::KeysRead).is_ok());
        let refused = key.require(Scope::KeysWrite);
        assert!(matches!(&refused, Err(DomainError::PermissionDenied { reason: "MISSING_SCOPE", message })
            if message.contains("`keys:write`")));
        assert!(key.may_grant(&["keys:read".into(), "billing:read".into()]).is_ok());
        assert!(matches!(
            key.may_grant(&["orgs:admin".into()]),
            Err(DomainError::PermissionDenied { reason: "SCOPE_NOT_GRANTABLE", .. })
        ));
        let admin = principal(Grant::InstanceAdmin);
        assert!(Scope::ALL.iter().all(|s| admin.has(*s)) && admin.may_grant(&["orgs:admin".into()]).is_ok());
        assert!(Scope::ALL.iter().all(|s| Scope::parse(s.as_str()) == Some(*s)));
    }
}
