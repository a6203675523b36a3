//! Who is calling, and in which organization they may act.

use super::{
    DomainError, FieldViolation,
    api_key::{Environment, Origin, Settings},
    cidr::{AllowList, Cidr},
    events::CredentialRole,
    rate_limit::RateLimit,
    time::Timestamp,
};

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
    /// credential, so its grant never covers a change to keymint's own data, whatever its scopes say. The key's
    /// limits bound the keys it may issue and act on, so that it cannot shed them through a sibling.
    Scoped { scopes: Vec<String>, environment: Environment, limits: Limits },
}

/// What an API key is used under besides its scopes: its rate limit, daily quota, networks and expiry. A key
/// holding `apikeys:write` issues and acts on keys only within its own limits, in every one of them; otherwise
/// it could create, or roll and receive the secret of, a sibling that is not limited where it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    pub rate_limit: Option<RateLimit>,
    pub daily_quota: Option<u64>,
    /// Empty: every address.
    pub networks: AllowList,
    /// Microseconds since the Unix epoch; None: never.
    pub expires_at: Option<i64>,
}

impl Limits {
    /// A key's limits, from what it was created with and its current settings. Fails only on a network list
    /// that does not parse, which a stored key's always does: settings are validated before they are stored.
    pub fn of_key(origin: &Origin, settings: &Settings) -> Result<Limits, Vec<FieldViolation>> {
        Ok(Limits {
            rate_limit: settings.rate_limit,
            daily_quota: settings.daily_quota,
            networks: AllowList::parse(&settings.allowed_cidrs)?,
            expires_at: origin.expires_at,
        })
    }

    /// These limits, ending no later than `at`: a credential that stops working then (a rolled secret in its
    /// grace period) bounds the keys it issues as if it expired then.
    pub fn ending_by(self, at: Option<i64>) -> Limits {
        let expires_at = match (self.expires_at, at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Limits { expires_at, ..self }
    }

    /// The first dimension in which `key` is looser than these limits, if any. A dimension these limits leave
    /// open bounds nothing.
    fn exceeded_by(&self, key: &Limits) -> Option<Excess> {
        if let Some(mine) = self.rate_limit {
            match key.rate_limit {
                None => return Some(Excess::Rate { mine: mine.per_second, key: None }),
                Some(theirs) if theirs.per_second > mine.per_second => {
                    return Some(Excess::Rate { mine: mine.per_second, key: Some(theirs.per_second) });
                }
                Some(theirs) if theirs.burst > mine.burst => {
                    return Some(Excess::Burst { mine: mine.burst, key: theirs.burst });
                }
                Some(_) => {}
            }
        }
        if let Some(mine) = self.daily_quota
            && key.daily_quota.is_none_or(|theirs| theirs > mine)
        {
            return Some(Excess::Quota { mine, key: key.daily_quota });
        }
        if !self.networks.is_empty() {
            let outside = match key.networks.entries() {
                [] => Some(None),
                blocks => blocks.iter().find(|block| !self.networks.allows_block(block)).map(Some),
            };
            if let Some(block) = outside {
                return Some(Excess::Networks {
                    mine: self.networks.to_strings().join(", "),
                    key: block.copied(),
                });
            }
        }
        if let Some(mine) = self.expires_at
            && key.expires_at.is_none_or(|theirs| theirs > mine)
        {
            return Some(Excess::Expiry { mine, key: key.expires_at });
        }
        None
    }
}

/// One dimension in which a key is looser than the credential acting on it: the credential's bound, and the
/// key's value (None: the key is not limited in that dimension at all).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Excess {
    Rate { mine: u32, key: Option<u32> },
    Burst { mine: u32, key: u32 },
    Quota { mine: u64, key: Option<u64> },
    Networks { mine: String, key: Option<Cidr> },
    Expiry { mine: i64, key: Option<i64> },
}

impl Excess {
    /// The credential's own bound, which the messages name so that the caller knows what it may ask for.
    fn bound(&self) -> String {
        match self {
            Excess::Rate { mine, .. } => format!("this credential is limited to {mine} requests/s"),
            Excess::Burst { mine, .. } => format!("this credential allows bursts of at most {mine} requests"),
            Excess::Quota { mine, .. } => format!("this credential is limited to {mine} requests a day"),
            Excess::Networks { mine, .. } => format!("this credential is limited to the networks {mine}"),
            Excess::Expiry { mine, .. } => format!("this credential expires at {}", Timestamp(*mine)),
        }
    }

    /// What a key being created or updated asks for beyond the bound, and what to ask instead.
    fn asked(&self) -> String {
        match self {
            Excess::Rate { key: None, .. } => "the key needs a rate limit no higher".into(),
            Excess::Rate { key: Some(key), .. } => {
                format!("the key may not allow more (it asks for {key} requests/s)")
            }
            Excess::Burst { key, .. } => format!("the key may not allow larger bursts (it asks for {key})"),
            Excess::Quota { key: None, .. } => "the key needs a daily quota no higher".into(),
            Excess::Quota { key: Some(key), .. } => {
                format!("the key may not allow more (it asks for {key} a day)")
            }
            Excess::Networks { key: None, .. } => "the key must be limited to blocks inside those".into(),
            Excess::Networks { key: Some(block), .. } => {
                format!("the key may not allow {block}, which lies outside them")
            }
            Excess::Expiry { key: None, .. } => "the key must expire no later, so it needs an expiry".into(),
            Excess::Expiry { key: Some(key), .. } => {
                format!("the key may not expire later (it asks for {})", Timestamp(*key))
            }
        }
    }

    /// What an existing key has beyond the bound.
    fn has(&self) -> String {
        match self {
            Excess::Rate { key: None, .. } => "has no rate limit".into(),
            Excess::Rate { key: Some(key), .. } => format!("allows {key} requests/s"),
            Excess::Burst { key, .. } => format!("allows bursts of {key} requests"),
            Excess::Quota { key: None, .. } => "has no daily quota".into(),
            Excess::Quota { key: Some(key), .. } => format!("allows {key} requests a day"),
            Excess::Networks { key: None, .. } => "is not limited to networks".into(),
            Excess::Networks { key: Some(block), .. } => format!("allows {block}"),
            Excess::Expiry { key: None, .. } => "does not expire".into(),
            Excess::Expiry { key: Some(key), .. } => format!("expires at {}", Timestamp(*key)),
        }
    }
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

    /// Refuses to update, roll or delete a key that has a scope the principal does not hold, or that is looser
    /// than the principal's own limits in any dimension ([`Limits`]): rolling hands out the key's new secret,
    /// and the others take a stronger key from whoever holds it. A key always holds its own scopes and is as
    /// loose as itself, so it may roll (rotate) and delete itself.
    pub fn may_act_on(
        &self,
        key_id: &str,
        key_scopes: &[String],
        key_limits: &Limits,
    ) -> Result<(), DomainError> {
        if let Some(scope) = key_scopes.iter().find(|scope| !self.holds(scope)) {
            return Err(DomainError::permission_denied(
                "KEY_EXCEEDS_CALLER",
                format!(
                    "API key {key_id} has the scope `{scope}`, which this credential does not have; only a \
                     credential holding every scope of a key may update, roll or delete it"
                ),
            ));
        }
        match self.limits().and_then(|mine| mine.exceeded_by(key_limits)) {
            None => Ok(()),
            Some(excess) => Err(DomainError::permission_denied(
                "LIMIT_EXCEEDS_CALLER",
                format!(
                    "API key {key_id} {}, and {}; an API key may update, roll or delete only keys no looser \
                     than itself",
                    excess.has(),
                    excess.bound()
                ),
            )),
        }
    }

    /// Refuses to issue a key, or to leave one after an update, looser than the principal's own limits in any
    /// dimension ([`Limits`]): what an API key may not do itself, it may not hand to a key it makes.
    pub fn may_issue(&self, key: &Limits) -> Result<(), DomainError> {
        match self.limits().and_then(|mine| mine.exceeded_by(key)) {
            None => Ok(()),
            Some(excess) => Err(DomainError::permission_denied(
                "LIMIT_EXCEEDS_CALLER",
                format!("{}; {}", excess.bound(), excess.asked()),
            )),
        }
    }

    /// The limits of an API key principal; None for the other grants, which have none.
    fn limits(&self) -> Option<&Limits> {
        match &self.grant {
            Grant::Scoped { limits, .. } => Some(limits),
            Grant::InstanceAdmin | Grant::Org => None,
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
        principal(Grant::Scoped { scopes, environment, limits: Limits::default() })
    }

    /// A LIVE key with `apikeys:write` under these limits.
    fn limited(limits: Limits) -> Principal {
        let scopes = strings(&["apikeys:write"]);
        principal(Grant::Scoped { scopes, environment: Environment::Live, limits })
    }

    fn networks(blocks: &[&str]) -> AllowList {
        AllowList::parse(&strings(blocks)).unwrap_or_else(|e| panic!("{blocks:?}: {e:?}"))
    }

    fn rate(per_second: u32, burst: u32) -> Option<RateLimit> {
        Some(RateLimit { per_second, burst })
    }

    /// The reason and message of an issue refused, and of acting on an existing key refused, for one key.
    fn refusals(caller: &Principal, key: &Limits) -> [Option<(&'static str, String)>; 2] {
        let of = |result: Result<(), DomainError>| match result {
            Err(DomainError::PermissionDenied { reason, message }) => Some((reason, message)),
            _ => None,
        };
        [of(caller.may_issue(key)), of(caller.may_act_on("k", &[], key))]
    }

    /// Asserts that the caller may issue and act on each key.
    fn allowed(caller: &Principal, keys: &[Limits]) {
        for key in keys {
            assert_eq!(refusals(caller, key), [None, None], "{key:?}");
        }
    }

    /// Asserts that the caller may neither issue nor act on each key, and that both messages name the
    /// caller's bound and the first what the key asks for or has.
    fn refused(caller: &Principal, keys: &[(Limits, &str, &str, &str)]) {
        for (key, bound, asked, has) in keys {
            let [issue, act] = refusals(caller, key);
            let (reason, message) = issue.unwrap_or_else(|| panic!("issue {key:?} allowed"));
            assert_eq!(reason, "LIMIT_EXCEEDS_CALLER");
            assert!(message.contains(bound) && message.contains(asked), "{message}");
            let (reason, message) = act.unwrap_or_else(|| panic!("act on {key:?} allowed"));
            assert_eq!(reason, "LIMIT_EXCEEDS_CALLER");
            assert!(
                message.contains(bound) && message.contains(has) && message.contains("API key k"),
                "{message}"
            );
        }
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
        assert!(key.may_act_on("k", &strings(&["invoices:read"]), &Limits::default()).is_ok());
        assert!(
            key.may_act_on("k", &strings(&["apikeys:write", "invoices:read"]), &Limits::default()).is_ok()
        );
        for stronger in [&["projects:write"][..], &["invoices:write"], &["invoices:read", "apikeys:read"]] {
            let lacking = format!("`{}`", stronger[stronger.len() - 1]);
            let refused = key.may_act_on("k", &strings(stronger), &Limits::default());
            assert!(
                matches!(&refused, Err(DomainError::PermissionDenied { reason: "KEY_EXCEEDS_CALLER", message })
                    if message.contains(&lacking)),
                "{stronger:?}: {refused:?}"
            );
        }
        assert!(
            principal(Grant::InstanceAdmin)
                .may_act_on("k", &strings(&["orgs:admin", "x:y"]), &Limits::default())
                .is_ok()
        );
        assert!(
            principal(Grant::Org)
                .may_act_on("k", &strings(&["projects:write", "x:y"]), &Limits::default())
                .is_ok()
        );
    }

    #[test]
    fn a_rate_limited_key_issues_and_acts_on_keys_no_faster() {
        let caller = limited(Limits { rate_limit: rate(10, 20), ..Limits::default() });
        let key = |rate_limit| Limits { rate_limit, ..Limits::default() };
        allowed(&caller, &[key(rate(10, 20)), key(rate(1, 1)), key(rate(10, 1)), key(rate(1, 20))]);
        let bound = "this credential is limited to 10 requests/s";
        refused(
            &caller,
            &[
                (key(None), bound, "the key needs a rate limit no higher", "has no rate limit"),
                (
                    key(rate(11, 20)),
                    bound,
                    "the key may not allow more (it asks for 11 requests/s)",
                    "allows 11",
                ),
                (
                    key(rate(10, 21)),
                    "this credential allows bursts of at most 20 requests",
                    "the key may not allow larger bursts (it asks for 21)",
                    "allows bursts of 21 requests",
                ),
            ],
        );
    }

    #[test]
    fn a_key_with_a_quota_issues_and_acts_on_keys_with_no_larger_one() {
        let caller = limited(Limits { daily_quota: Some(1_000), ..Limits::default() });
        let key = |daily_quota| Limits { daily_quota, ..Limits::default() };
        allowed(&caller, &[key(Some(1_000)), key(Some(1))]);
        let bound = "this credential is limited to 1000 requests a day";
        refused(
            &caller,
            &[
                (key(None), bound, "the key needs a daily quota no higher", "has no daily quota"),
                (key(Some(1_001)), bound, "it asks for 1001 a day", "allows 1001 requests a day"),
            ],
        );
    }

    #[test]
    fn a_key_limited_to_networks_issues_and_acts_on_keys_inside_them() {
        let caller =
            limited(Limits { networks: networks(&["127.0.0.0/8", "2001:db8::/32"]), ..Limits::default() });
        let key = |blocks: &[&str]| Limits { networks: networks(blocks), ..Limits::default() };
        allowed(
            &caller,
            &[
                key(&["127.0.0.0/8"]),
                key(&["127.0.0.1", "2001:db8:1::/48"]),
                key(&["::ffff:127.0.0.0/104"]),
                key(&["2001:db8::1/128"]),
            ],
        );
        let bound = "this credential is limited to the networks 127.0.0.0/8, 2001:db8::/32";
        refused(
            &caller,
            &[
                (
                    key(&[]),
                    bound,
                    "the key must be limited to blocks inside those",
                    "is not limited to networks",
                ),
                (key(&["127.0.0.1", "10.0.0.0/8"]), bound, "may not allow 10.0.0.0/8", "allows 10.0.0.0/8"),
                (key(&["0.0.0.0/0"]), bound, "may not allow 0.0.0.0/0", "allows 0.0.0.0/0"),
                (key(&["126.0.0.0/7"]), bound, "may not allow 126.0.0.0/7", "allows 126.0.0.0/7"),
                (key(&["::/0"]), bound, "may not allow ::/0", "allows ::/0"),
                (key(&["2001:db8::/31"]), bound, "may not allow 2001:db8::/31", "allows 2001:db8::/31"),
            ],
        );
        // A caller limited to one address: a key may have that address, in either spelling, and nothing more.
        let host = limited(Limits { networks: networks(&["127.0.0.1/32"]), ..Limits::default() });
        allowed(&host, &[key(&["127.0.0.1"]), key(&["::ffff:127.0.0.1"])]);
        assert_eq!(reason(host.may_issue(&key(&["127.0.0.0/31"]))), Some("LIMIT_EXCEEDS_CALLER"));
        // Blocks that together, not one by one, lie inside the caller's are refused.
        let halves =
            limited(Limits { networks: networks(&["10.0.0.0/25", "10.0.0.128/25"]), ..Limits::default() });
        assert_eq!(reason(halves.may_issue(&key(&["10.0.0.0/24"]))), Some("LIMIT_EXCEEDS_CALLER"));
        // An unlimited caller bounds nothing: /0 of both families is allowed.
        allowed(&limited(Limits::default()), &[key(&["0.0.0.0/0", "::/0"]), key(&[])]);
    }

    #[test]
    fn an_expiring_key_issues_and_acts_on_keys_that_expire_no_later() {
        // 2026-11-26T12:00:00Z.
        let noon = 1_795_694_400_000_000;
        let caller = limited(Limits { expires_at: Some(noon), ..Limits::default() });
        let key = |expires_at| Limits { expires_at, ..Limits::default() };
        allowed(&caller, &[key(Some(noon)), key(Some(noon - 1))]);
        let bound = "this credential expires at 2026-11-26T12:00:00Z";
        refused(
            &caller,
            &[
                (key(None), bound, "the key must expire no later, so it needs an expiry", "does not expire"),
                (
                    key(Some(noon + 1)),
                    bound,
                    "(it asks for 2026-11-26T12:00:00.000001Z)",
                    "expires at 2026-11-26T12:00:00.000001Z",
                ),
            ],
        );
        // A rolled secret in its grace period ends the credential when it ends, if that is sooner.
        let unlimited = Limits::default();
        assert_eq!(unlimited.clone().ending_by(Some(noon)).expires_at, Some(noon));
        assert_eq!(key(Some(noon)).ending_by(Some(noon + 1)).expires_at, Some(noon));
        assert_eq!(key(Some(noon + 1)).ending_by(Some(noon)).expires_at, Some(noon));
        assert_eq!(unlimited.ending_by(None).expires_at, None);
    }

    #[test]
    fn every_dimension_binds_at_once_and_only_keys_carry_limits() {
        let bounds = Limits {
            rate_limit: rate(10, 20),
            daily_quota: Some(1_000),
            networks: networks(&["127.0.0.0/8"]),
            expires_at: Some(1_795_694_400_000_000),
        };
        let caller = limited(bounds.clone());
        allowed(&caller, std::slice::from_ref(&bounds));
        // Loose in one dimension only, each in turn.
        for loose in [
            Limits { rate_limit: None, ..bounds.clone() },
            Limits { daily_quota: None, ..bounds.clone() },
            Limits { networks: AllowList::default(), ..bounds.clone() },
            Limits { expires_at: None, ..bounds.clone() },
        ] {
            assert_eq!(reason(caller.may_issue(&loose)), Some("LIMIT_EXCEEDS_CALLER"), "{loose:?}");
            assert_eq!(
                reason(caller.may_act_on("k", &[], &loose)),
                Some("LIMIT_EXCEEDS_CALLER"),
                "{loose:?}"
            );
        }
        // A key it lacks a scope of is refused for the scope first.
        assert_eq!(
            reason(caller.may_act_on("k", &strings(&["projects:write"]), &Limits::default())),
            Some("KEY_EXCEEDS_CALLER")
        );
        for grant in [Grant::InstanceAdmin, Grant::Org] {
            let admin = principal(grant);
            assert!(admin.may_issue(&Limits::default()).is_ok());
            assert!(admin.may_act_on("k", &[], &Limits::default()).is_ok());
        }
    }

    #[test]
    fn a_key_s_limits_come_from_its_origin_and_settings() {
        let origin = Origin { expires_at: Some(7), ..Origin::default() };
        let settings = Settings {
            rate_limit: rate(1, 2),
            daily_quota: Some(3),
            allowed_cidrs: strings(&["10.0.0.0/8"]),
            ..Settings::default()
        };
        let limits = Limits::of_key(&origin, &settings);
        assert_eq!(
            limits.ok(),
            Some(Limits {
                rate_limit: rate(1, 2),
                daily_quota: Some(3),
                networks: networks(&["10.0.0.0/8"]),
                expires_at: Some(7)
            })
        );
        let corrupt = Settings { allowed_cidrs: strings(&["nonsense"]), ..settings };
        assert!(Limits::of_key(&origin, &corrupt).is_err());
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
