//! Who is calling, and in which organization they may act.

use super::{DomainError, api_key::Environment, events::CredentialRole};

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
    /// Everything within its own organization, except managing organizations (an instance-wide power).
    Org,
    /// What these scopes allow, within its own organization: an API key's grant. A TEST key is a staging
    /// credential, so its grant never covers a change to keymint's own data, whatever its scopes say.
    Scoped { scopes: Vec<String>, environment: Environment },
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

    /// Whether the RPCs this scope opens change anything. `orgs:admin` opens AddOrg too, but only instance
    /// admins may call that, so for everyone else the scope reads (their own organization).
    pub fn changes(self) -> bool {
        matches!(self, Scope::ProjectsWrite | Scope::KeysWrite | Scope::ApiKeysWrite)
    }
}

/// The fields of an API key that bound what the key itself may do. A key may not change these on itself, even
/// downwards: they are its administrator's decision, and a key that could lower them could raise them again.
/// `expires_at` is not updatable today; it is listed so that making it updatable cannot open this door.
/// `metadata` is here because VerifyApiKey hands it to the integrator's services as facts about the key (a
/// tenant, a plan), which they may authorize on.
pub const GUARDED_FROM_SELF: [&str; 7] =
    ["scopes", "allowed_cidrs", "rate_limit", "daily_quota", "status", "expires_at", "metadata"];

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

    /// Whether the credential is a TEST (staging) API key.
    pub fn is_test_key(&self) -> bool {
        matches!(self.grant, Grant::Scoped { environment: Environment::Test, .. })
    }

    /// The organization a call acts in: the principal's own, or the one the `x-org-id` header asks for, if the
    /// principal may act there.
    pub fn resource_owner<'a>(&'a self, requested: Option<&'a str>) -> Result<&'a str, DomainError> {
        match requested {
            None => Ok(&self.org_id),
            Some(org) if self.sees_org(org) => Ok(org),
            Some(org) => Err(DomainError::permission_denied(
                "ORG_NOT_ALLOWED",
                format!("this credential may not act in organization {org}"),
            )),
        }
    }

    /// Whether the organization exists for this principal: its own, or any for an instance admin. Other
    /// organizations are not found, never visible.
    pub fn sees_org(&self, org_id: &str) -> bool {
        org_id == self.org_id || self.is_instance_admin()
    }

    pub fn has(&self, scope: Scope) -> bool {
        match &self.grant {
            Grant::InstanceAdmin => true,
            // Organizations are managed across the instance: not something one organization's grant covers.
            Grant::Org => scope != Scope::OrgsAdmin,
            Grant::Scoped { scopes, .. } => scopes.iter().any(|s| s == scope.as_str()),
        }
    }

    /// Whether the principal holds a scope string, keymint's or an integrator's. An API key holds exactly the
    /// scopes on it, integrator scopes included: a key with `invoices:read` does not hold `invoices:write`, and
    /// must not be able to hand out or take over a key that has it. Instance admins and organization grants hold
    /// every integrator scope, as they hold every keymint scope their grant covers.
    pub fn holds(&self, scope: &str) -> bool {
        match (Scope::parse(scope), &self.grant) {
            (Some(keymint), _) => self.has(keymint),
            (None, Grant::Scoped { scopes, .. }) => scopes.iter().any(|s| s == scope),
            (None, Grant::InstanceAdmin | Grant::Org) => true,
        }
    }

    /// Refuses a call the principal's scopes do not cover, naming the scope it needs, and a change of anything by
    /// a TEST key: staging credentials read, they never write production data.
    pub fn require(&self, scope: Scope) -> Result<(), DomainError> {
        if self.is_test_key() && scope.changes() {
            return Err(DomainError::permission_denied(
                "TEST_KEY_NOT_ALLOWED",
                format!(
                    "a TEST API key cannot make calls that change anything (this one needs `{}`); use a LIVE key",
                    scope.as_str()
                ),
            ));
        }
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

    /// Refuses to put on a key any scope the principal does not hold itself (see [`Principal::holds`]), so
    /// that a key cannot mint a stronger key. `orgs:admin` reaches across the instance, so only instance admins
    /// grant it, whatever else a principal holds.
    pub fn may_grant(&self, scopes: &[String]) -> Result<(), DomainError> {
        let refused = |scope: &str, why: &str| {
            Err(DomainError::permission_denied(
                "SCOPE_NOT_GRANTABLE",
                format!("this credential cannot grant `{scope}`: {why}"),
            ))
        };
        for scope in scopes {
            if scope == Scope::OrgsAdmin.as_str() && !self.is_instance_admin() {
                return refused(scope, "only an instance administrator can");
            }
            if !self.holds(scope) {
                return refused(scope, "it does not have that scope itself");
            }
        }
        Ok(())
    }

    /// Refuses to update, roll or delete a key that has a scope the principal does not hold: rolling hands out
    /// the key's new secret, and the others take a stronger key from whoever holds it. A key always holds its
    /// own scopes, so it may roll (rotate) and delete itself.
    pub fn may_act_on(&self, key_id: &str, key_scopes: &[String]) -> Result<(), DomainError> {
        match key_scopes.iter().find(|scope| !self.holds(scope)) {
            None => Ok(()),
            Some(scope) => Err(DomainError::permission_denied(
                "KEY_EXCEEDS_CALLER",
                format!(
                    "API key {key_id} has the scope `{scope}`, which this credential does not have; only a \
                     credential holding every scope of a key may update, roll or delete it"
                ),
            )),
        }
    }

    /// Refuses an update of the principal's own key that names a field it must not set on itself
    /// ([`GUARDED_FROM_SELF`]).
    pub fn may_update_key(&self, key_id: &str, mask: &[String]) -> Result<(), DomainError> {
        if self.id != key_id {
            return Ok(());
        }
        match mask.iter().find(|field| GUARDED_FROM_SELF.contains(&field.as_str())) {
            None => Ok(()),
            Some(field) => Err(DomainError::permission_denied(
                "SELF_ESCALATION",
                format!("an API key cannot change its own {field}; ask an administrator"),
            )),
        }
    }

    /// Refuses what only an instance admin may do, such as creating an organization.
    pub fn require_instance_admin(&self, what: &str) -> Result<(), DomainError> {
        if self.is_instance_admin() {
            Ok(())
        } else {
            Err(DomainError::permission_denied(
                "INSTANCE_ADMIN_ONLY",
                format!("only an instance administrator can {what}"),
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

    fn scoped(scopes: &[&str]) -> Principal {
        key_in(Environment::Live, scopes)
    }

    fn key_in(environment: Environment, scopes: &[&str]) -> Principal {
        let scopes = scopes.iter().map(|s| (*s).to_owned()).collect();
        principal(Grant::Scoped { scopes, environment })
    }

    fn strings(scopes: &[&str]) -> Vec<String> {
        scopes.iter().map(|s| (*s).to_owned()).collect()
    }

    fn reason<T>(result: Result<T, DomainError>) -> Option<&'static str> {
        match result {
            Err(DomainError::PermissionDenied { reason, .. }) => Some(reason),
            _ => None,
        }
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
        let key = scoped(&["keys:read", "apikeys:write"]);
        assert!(key.require(Scope::KeysRead).is_ok());
        let refused = key.require(Scope::KeysWrite);
        assert!(matches!(&refused, Err(DomainError::PermissionDenied { reason: "MISSING_SCOPE", message })
            if message.contains("`keys:write`")));
        assert!(key.may_grant(&["keys:read".into(), "apikeys:write".into()]).is_ok());
        assert!(matches!(
            key.may_grant(&["orgs:admin".into()]),
            Err(DomainError::PermissionDenied { reason: "SCOPE_NOT_GRANTABLE", .. })
        ));
        let admin = principal(Grant::InstanceAdmin);
        assert!(Scope::ALL.iter().all(|s| admin.has(*s)) && admin.may_grant(&["orgs:admin".into()]).is_ok());
        assert!(Scope::ALL.iter().all(|s| Scope::parse(s.as_str()) == Some(*s)));
    }

    #[test]
    fn a_key_holds_exactly_its_scopes_integrator_scopes_included() {
        let key = scoped(&["apikeys:write", "invoices:read"]);
        assert!(key.holds("invoices:read") && key.holds("apikeys:write"));
        assert!(!key.holds("invoices:write") && !key.holds("projects:write"));
        for grant in [Grant::InstanceAdmin, Grant::Org] {
            assert!(principal(grant).holds("invoices:write"));
        }
        assert!(principal(Grant::InstanceAdmin).holds("orgs:admin"));
        assert!(!principal(Grant::Org).holds("orgs:admin"));
    }

    #[test]
    fn a_key_grants_only_what_it_holds_and_orgs_admin_only_instance_admins_grant() {
        let key = scoped(&["apikeys:write", "invoices:read", "orgs:admin"]);
        assert!(key.may_grant(&strings(&["apikeys:write", "invoices:read"])).is_ok());
        let refused = key.may_grant(&strings(&["invoices:read", "invoices:write"]));
        assert!(
            matches!(&refused, Err(DomainError::PermissionDenied { reason: "SCOPE_NOT_GRANTABLE", message })
            if message.contains("`invoices:write`"))
        );
        // Holding orgs:admin (a key from before this rule) is not enough to hand it on.
        let refused = key.may_grant(&strings(&["orgs:admin"]));
        assert!(
            matches!(&refused, Err(DomainError::PermissionDenied { reason: "SCOPE_NOT_GRANTABLE", message })
            if message.contains("instance administrator"))
        );
        assert_eq!(
            reason(principal(Grant::Org).may_grant(&strings(&["orgs:admin"]))),
            Some("SCOPE_NOT_GRANTABLE")
        );
        assert!(principal(Grant::Org).may_grant(&strings(&["projects:write", "invoices:write"])).is_ok());
        assert!(
            principal(Grant::InstanceAdmin).may_grant(&strings(&["orgs:admin", "invoices:write"])).is_ok()
        );
    }

    #[test]
    fn a_key_acts_only_on_keys_no_stronger_than_itself() {
        let key = scoped(&["apikeys:write", "invoices:read"]);
        assert!(key.may_act_on("k", &strings(&["invoices:read"])).is_ok());
        assert!(key.may_act_on("k", &strings(&["apikeys:write", "invoices:read"])).is_ok());
        for stronger in [&["projects:write"][..], &["invoices:write"], &["invoices:read", "apikeys:read"]] {
            let lacking = format!("`{}`", stronger[stronger.len() - 1]);
            let refused = key.may_act_on("k", &strings(stronger));
            assert!(
                matches!(&refused, Err(DomainError::PermissionDenied { reason: "KEY_EXCEEDS_CALLER", message })
                    if message.contains(&lacking)),
                "{stronger:?}: {refused:?}"
            );
        }
        assert!(principal(Grant::InstanceAdmin).may_act_on("k", &strings(&["orgs:admin", "x:y"])).is_ok());
        assert!(principal(Grant::Org).may_act_on("k", &strings(&["projects:write", "x:y"])).is_ok());
    }

    #[test]
    fn a_key_cannot_change_its_own_bounds() {
        let key = scoped(&["apikeys:write"]);
        for field in GUARDED_FROM_SELF {
            let refused = key.may_update_key("c", &strings(&["title", field]));
            assert!(
                matches!(&refused, Err(DomainError::PermissionDenied { reason: "SELF_ESCALATION", message })
                if message.contains(field)),
                "{field}"
            );
            assert!(key.may_update_key("another", &strings(&[field])).is_ok(), "{field} on another key");
        }
        assert!(key.may_update_key("c", &strings(&["title", "description", "api_version"])).is_ok());
    }

    #[test]
    fn a_test_key_only_reads() {
        let every = Scope::ALL.map(Scope::as_str);
        let test = key_in(Environment::Test, &every);
        for scope in Scope::ALL {
            let result = test.require(scope);
            if scope.changes() {
                assert_eq!(reason(result), Some("TEST_KEY_NOT_ALLOWED"), "{scope:?}");
            } else {
                assert!(result.is_ok(), "{scope:?}");
            }
        }
        assert!(test.is_test_key() && !key_in(Environment::Live, &every).is_test_key());
        assert!(Scope::ALL.iter().all(|s| key_in(Environment::Live, &every).require(*s).is_ok()));
        assert!(!principal(Grant::InstanceAdmin).is_test_key());
    }

    #[test]
    fn only_instance_admins_see_other_organizations_and_add_them() {
        let org_key = scoped(&["orgs:admin"]);
        assert!(org_key.sees_org("home") && !org_key.sees_org("other"));
        assert!(principal(Grant::InstanceAdmin).sees_org("other"));
        assert_eq!(
            reason(org_key.require_instance_admin("create organizations")),
            Some("INSTANCE_ADMIN_ONLY")
        );
        assert!(principal(Grant::InstanceAdmin).require_instance_admin("create organizations").is_ok());
    }
}
