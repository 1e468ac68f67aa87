//! What a token may do (SPEC section 9, issue 18): the Graph permissions a plan needs, the ones a
//! token holds (the token response's `scope` for a delegated sign-in, else the access token's
//! `roles` or `scp` claims), and which are missing. Pure: no I/O, no tokens kept.
//!
//! The claims are read unverified: Graph verifies the token; this only reads what the token says
//! of itself, so that a run without the permission stops before its first request instead of
//! after it (a 403 mid-run leaves a half-done batch).

use std::collections::BTreeSet;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;

/// A Graph permission the tool asks for. Each is the least privileged one Microsoft documents
/// for what the tool sends; the broader ones that cover it count as holding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Permission {
    /// invokeAction.
    #[serde(rename = "SecurityIdentitiesActions.ReadWrite.All")]
    SecurityIdentitiesActions,
    /// The identityAccounts reads of a lookup.
    #[serde(rename = "SecurityIdentitiesAccount.Read.All")]
    SecurityIdentitiesAccount,
    /// `GET /users/{upn or object id}`, for rows that name people by UPN or object id.
    #[serde(rename = "User.Read.All")]
    UserReadAll,
    /// Directory role assignments, for `--protect-privileged` (and, on beta, the roles labelled
    /// privileged).
    #[serde(rename = "RoleManagement.Read.Directory")]
    RoleManagementRead,
    /// PIM eligibility for directory roles, for `--protect-privileged` (issue 20).
    #[serde(rename = "RoleEligibilitySchedule.Read.Directory")]
    RoleEligibilityRead,
    /// Members of role-assignable groups, for `--protect-privileged` (issue 20).
    #[serde(rename = "GroupMember.Read.All")]
    GroupMemberRead,
    /// PIM for Groups eligibility, for `--protect-privileged` (issue 20).
    #[serde(rename = "PrivilegedEligibilitySchedule.Read.AzureADGroup")]
    GroupEligibilityRead,
    /// Administrative units and their members, to flag restricted-management ones (issue 20).
    #[serde(rename = "AdministrativeUnit.Read.All")]
    AdministrativeUnitRead,
}

impl Permission {
    pub const ALL: [Permission; 8] = [
        Permission::SecurityIdentitiesActions,
        Permission::SecurityIdentitiesAccount,
        Permission::UserReadAll,
        Permission::RoleManagementRead,
        Permission::RoleEligibilityRead,
        Permission::GroupMemberRead,
        Permission::GroupEligibilityRead,
        Permission::AdministrativeUnitRead,
    ];

    /// What `--protect-privileged` reads (issue 20): roles, eligibility, groups and units.
    pub const PRIVILEGED: [Permission; 5] = [
        Permission::RoleManagementRead,
        Permission::RoleEligibilityRead,
        Permission::GroupMemberRead,
        Permission::GroupEligibilityRead,
        Permission::AdministrativeUnitRead,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Permission::SecurityIdentitiesActions => "SecurityIdentitiesActions.ReadWrite.All",
            Permission::SecurityIdentitiesAccount => "SecurityIdentitiesAccount.Read.All",
            Permission::UserReadAll => "User.Read.All",
            Permission::RoleManagementRead => "RoleManagement.Read.Directory",
            Permission::RoleEligibilityRead => "RoleEligibilitySchedule.Read.Directory",
            Permission::GroupMemberRead => "GroupMember.Read.All",
            Permission::GroupEligibilityRead => "PrivilegedEligibilitySchedule.Read.AzureADGroup",
            Permission::AdministrativeUnitRead => "AdministrativeUnit.Read.All",
        }
    }

    /// The broader permissions that also allow what this one does (Graph's permission pages
    /// list them as "higher privileged").
    fn covered_by(self) -> &'static [&'static str] {
        match self {
            Permission::SecurityIdentitiesActions | Permission::SecurityIdentitiesAccount => &[],
            Permission::UserReadAll => &[
                "User.ReadWrite.All",
                "Directory.Read.All",
                "Directory.ReadWrite.All",
                "Directory.AccessAsUser.All",
            ],
            Permission::RoleManagementRead => &[
                "RoleManagement.Read.All",
                "RoleManagement.ReadWrite.Directory",
                "Directory.Read.All",
                "Directory.ReadWrite.All",
            ],
            // "List roleEligibilityScheduleInstances": no Directory.* permission covers it.
            Permission::RoleEligibilityRead => &[
                "RoleEligibilitySchedule.ReadWrite.Directory",
                "RoleManagement.Read.All",
                "RoleManagement.Read.Directory",
                "RoleManagement.ReadWrite.Directory",
            ],
            // "List group transitive members".
            Permission::GroupMemberRead => &[
                "Group.Read.All",
                "GroupMember.ReadWrite.All",
                "Group.ReadWrite.All",
                "Directory.Read.All",
                "Directory.ReadWrite.All",
            ],
            // PIM for Groups' "List eligibilityScheduleInstances".
            Permission::GroupEligibilityRead => &[
                "PrivilegedEligibilitySchedule.ReadWrite.AzureADGroup",
                "PrivilegedAccess.Read.AzureADGroup",
                "PrivilegedAccess.ReadWrite.AzureADGroup",
            ],
            // "List administrativeUnits" and "List members".
            Permission::AdministrativeUnitRead => &[
                "AdministrativeUnit.ReadWrite.All",
                "Directory.Read.All",
                "Directory.ReadWrite.All",
            ],
        }
    }

    /// What this permission is needed for, for messages.
    pub fn needed_for(self) -> &'static str {
        match self {
            Permission::SecurityIdentitiesActions => "the actions (invokeAction)",
            Permission::SecurityIdentitiesAccount => "looking identities up",
            Permission::UserReadAll => "rows that name people by UPN or object id",
            Permission::RoleManagementRead => "--protect-privileged: active role assignments",
            Permission::RoleEligibilityRead => "--protect-privileged: PIM-eligible roles",
            Permission::GroupMemberRead => {
                "--protect-privileged: members of role-assignable groups"
            }
            Permission::GroupEligibilityRead => "--protect-privileged: PIM for Groups eligibility",
            Permission::AdministrativeUnitRead => {
                "--protect-privileged: restricted-management administrative units"
            }
        }
    }

    /// Whether `granted` holds this permission or one that covers it.
    pub fn held_in(self, granted: &BTreeSet<String>) -> bool {
        let held = |name: &str| granted.iter().any(|g| g.eq_ignore_ascii_case(name));
        held(self.name()) || self.covered_by().iter().any(|name| held(name))
    }
}

/// How a permission is granted, for the message that stops a run without it.
pub fn how_to_grant(permission: Permission, delegated: bool) -> String {
    if delegated {
        format!(
            "add the delegated Microsoft Graph permission {} to the app registration (API permissions), grant admin consent, and sign in again; the user also needs a role that allows it (Security Administrator for the actions)",
            permission.name()
        )
    } else {
        format!(
            "grant the application permission {} to the app or managed identity (API permissions > Microsoft Graph > Application permissions, then admin consent; for a managed identity, an appRoleAssignment), then get a new token",
            permission.name()
        )
    }
}

/// What the plan will send, as permissions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Needs(BTreeSet<Permission>);

impl Needs {
    /// `acts`: the plan sends actions (`run`; not `resolve`); `reads`: it looks identities up;
    /// `reads_users`: some rows name people by UPN or object id; `privileged`:
    /// `--protect-privileged`.
    pub fn of(acts: bool, reads: bool, reads_users: bool, privileged: bool) -> Needs {
        let mut needs = BTreeSet::new();
        if acts {
            needs.insert(Permission::SecurityIdentitiesActions);
        }
        if reads || reads_users || privileged {
            needs.insert(Permission::SecurityIdentitiesAccount);
        }
        if reads_users {
            needs.insert(Permission::UserReadAll);
        }
        if privileged {
            needs.extend(Permission::PRIVILEGED);
        }
        Needs(needs)
    }

    pub fn iter(&self) -> impl Iterator<Item = Permission> + '_ {
        self.0.iter().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The permissions a token holds, as far as can be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Granted {
    /// Read from the token response's `scope`, or the token's `roles` / `scp`.
    Known {
        permissions: BTreeSet<String>,
        /// `scp` or a delegated sign-in's `scope`: the user's own roles limit it further.
        delegated: bool,
    },
    /// An opaque token, or one whose claims name no permission: it is used, with a warning.
    Unreadable,
}

impl Granted {
    /// A delegated token response's `scope` (space-separated; Entra may prefix each with the
    /// resource, `https://graph.microsoft.com/User.Read.All`).
    pub fn from_scope(scope: &str) -> Granted {
        let permissions: BTreeSet<String> = scope
            .split_whitespace()
            .map(|s| s.rsplit('/').next().unwrap_or(s).to_owned())
            // The sign-in's own OpenID Connect scopes are not Graph permissions.
            .filter(|s| {
                !s.is_empty()
                    && !["offline_access", "openid", "profile", "email"]
                        .iter()
                        .any(|oidc| s.eq_ignore_ascii_case(oidc))
            })
            .collect();
        // An empty scope says nothing; one naming only `openid profile` says "no Graph permission".
        if scope.trim().is_empty() {
            return Granted::Unreadable;
        }
        Granted::Known {
            permissions,
            delegated: true,
        }
    }

    /// An access token's claims: `roles` (app-only: an array) or `scp` (delegated: a string).
    pub fn from_token(token: &str) -> Granted {
        let Some(claims) = claims(token) else {
            return Granted::Unreadable;
        };
        if let Some(roles) = claims.get("roles").and_then(|r| r.as_array()) {
            let permissions: BTreeSet<String> = roles
                .iter()
                .filter_map(|r| r.as_str())
                .map(crate::sanitize::printable_owned)
                .collect();
            return Granted::Known {
                permissions,
                delegated: false,
            };
        }
        match claims.get("scp").and_then(|s| s.as_str()) {
            Some(scp) => Granted::from_scope(&crate::sanitize::printable_owned(scp)),
            None => Granted::Unreadable,
        }
    }

    /// The permissions `needs` lists that this token plainly lacks; none when unreadable.
    pub fn missing(&self, needs: &Needs) -> Vec<Permission> {
        match self {
            Granted::Known { permissions, .. } => {
                needs.iter().filter(|p| !p.held_in(permissions)).collect()
            }
            Granted::Unreadable => Vec::new(),
        }
    }

    pub fn is_delegated(&self) -> bool {
        matches!(
            self,
            Granted::Known {
                delegated: true,
                ..
            }
        )
    }

    /// The permissions held, for `auth`; `None` when unreadable.
    pub fn names(&self) -> Option<Vec<String>> {
        match self {
            Granted::Known { permissions, .. } => Some(permissions.iter().cloned().collect()),
            Granted::Unreadable => None,
        }
    }
}

/// The claims of a JWT, unverified; `None` for an opaque token.
pub(crate) fn claims(token: &str) -> Option<serde_json::Value> {
    let mut parts = token.split('.');
    let (_, claims, _) = (parts.next()?, parts.next()?, parts.next()?);
    let claims = URL_SAFE_NO_PAD.decode(claims.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&claims).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        format!("eyJhbGciOiJub25lIn0.{}.sig", URL_SAFE_NO_PAD.encode(claims))
    }

    #[test]
    fn issue_18_a_plan_needs_the_action_and_read_permissions_it_sends() {
        let needs = Needs::of(true, true, true, true);
        // Four for the plan's actions and reads, and four more for issue 20's guard reads.
        assert_eq!(needs.iter().count(), 8);
        let resolve = Needs::of(false, true, false, false);
        assert_eq!(
            resolve.iter().collect::<Vec<_>>(),
            [Permission::SecurityIdentitiesAccount]
        );
        assert_eq!(
            Needs::of(true, false, false, false)
                .iter()
                .collect::<Vec<_>>(),
            [Permission::SecurityIdentitiesActions]
        );
    }

    #[test]
    fn issue_20_protect_privileged_needs_each_guard_read_and_role_management_covers_eligibility() {
        let privileged = Needs::of(false, false, false, true);
        let names: Vec<&str> = privileged.iter().map(Permission::name).collect();
        for name in [
            "RoleManagement.Read.Directory",
            "RoleEligibilitySchedule.Read.Directory",
            "GroupMember.Read.All",
            "PrivilegedEligibilitySchedule.Read.AzureADGroup",
            "AdministrativeUnit.Read.All",
        ] {
            assert!(names.contains(&name), "{names:?}");
        }
        let app = Granted::from_token(&jwt(
            r#"{"roles":["SecurityIdentitiesAccount.Read.All","RoleManagement.Read.Directory","GroupMember.Read.All","AdministrativeUnit.Read.All"]}"#,
        ));
        assert_eq!(app.missing(&privileged), [Permission::GroupEligibilityRead]);
    }

    #[test]
    fn issue_18_permissions_are_read_from_roles_scp_or_the_scope() {
        let app = Granted::from_token(&jwt(
            r#"{"roles":["SecurityIdentitiesActions.ReadWrite.All","Directory.Read.All"]}"#,
        ));
        assert!(!app.is_delegated());
        let needs = Needs::of(true, true, true, true);
        // Directory.Read.All covers the user, role, group and unit reads; the account read and
        // the PIM reads (issue 20) are missing.
        assert_eq!(
            app.missing(&needs),
            [
                Permission::SecurityIdentitiesAccount,
                Permission::RoleEligibilityRead,
                Permission::GroupEligibilityRead
            ]
        );
        let user = Granted::from_token(&jwt(
            r#"{"scp":"SecurityIdentitiesActions.ReadWrite.All openid profile"}"#,
        ));
        assert!(user.is_delegated());
        assert!(
            user.missing(&Needs::of(true, false, false, false))
                .is_empty()
        );
        let scope = Granted::from_scope(
            "https://graph.microsoft.com/SecurityIdentitiesAccount.Read.All offline_access",
        );
        assert!(
            scope
                .missing(&Needs::of(false, true, false, false))
                .is_empty()
        );
        assert_eq!(
            Granted::from_scope("openid profile offline_access")
                .missing(&needs)
                .len(),
            8
        );
        assert_eq!(Granted::from_scope(" "), Granted::Unreadable);
        assert_eq!(Granted::from_token("opaque"), Granted::Unreadable);
        assert_eq!(
            Granted::from_token(&jwt(r#"{"oid":"x"}"#)),
            Granted::Unreadable
        );
        assert!(Granted::Unreadable.missing(&needs).is_empty());
    }
}
