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

    pub fn require_instance_admin(&self) -> Result<(), DomainError> {
        if self.is_instance_admin() {
            Ok(())
        } else {
            Err(DomainError::permission_denied(
                "INSTANCE_ADMIN_REQUIRED",
                "this call needs an instance-admin credential",
            ))
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
        assert!(principal(Grant::Org).require_instance_admin().is_err());
    }
}
