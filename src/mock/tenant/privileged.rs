//! Privileged access beyond active role assignments, for the mock's tenant (issue 20): PIM
//! eligibility for directory roles, role-assignable groups (their members and PIM for Groups
//! eligibility), custom role definitions (some labelled privileged), and administrative units
//! (some restricted-management). Owns that data, how [`Tenant::with_privileged_access`] seeds it,
//! and the pages of its reads.
//!
//! # The seeded layout (over [`Tenant::synthetic`], for the identities below `n`)
//!
//! | identity | holds |
//! |---|---|
//! | [`PrivilegedSeed::ELIGIBLE_GLOBAL_ADMINISTRATOR`] (11) | Global Administrator, PIM-eligible (not active) |
//! | [`PrivilegedSeed::GROUP_MEMBER`] (12) and 13 | members of the role-assignable group [`PrivilegedSeed::ACTIVE_GROUP`] ("SecOps Admins"), which holds Security Administrator actively |
//! | [`PrivilegedSeed::GROUP_ELIGIBLE_MEMBER`] (14) | eligible for that group through PIM for Groups |
//! | [`PrivilegedSeed::ELIGIBLE_GROUP_MEMBER`] (15) | member of "Tier0 Standby", which is eligible for Privileged Role Administrator |
//! | [`PrivilegedSeed::CUSTOM_ROLE_HOLDER`] (16; AD, Entra ID and Okta accounts) | the custom role "Contoso Identity Lead", which Microsoft labels privileged (17 is eligible for it) |
//! | [`PrivilegedSeed::CUSTOM_ROLE_UNPRIVILEGED`] (18) | the custom role "Contoso Report Reader", not labelled privileged |
//! | [`PrivilegedSeed::RESTRICTED_MEMBER`] (19) | member of the restricted-management unit "Executives" (21 is in "Sales", which is not restricted) |
//!
//! and, for a larger tenant, `eligible` more PIM-eligible assignments (identities 100, 101, ...,
//! round-robin over Global Administrator, Privileged Role Administrator, Security Administrator
//! and User Administrator) and `groups` more role-assignable groups `Privileged Group {g}` (each
//! holding one of those roles, actively for even `g` and eligibly for odd; members 1000 + 2g and
//! 1000 + 2g + 1; PIM for Groups eligible member 1000 + 2 * groups + g).
//!
//! Identities 4, 8, 12, 16, ... that are hybrid have accounts at all three providers (Active
//! Directory, Entra ID, Okta), as in the synthetic layout.

use serde::Serialize;
use serde_json::{Value, json};

use super::{Directory, RoleAssignment, Tenant, guid};
use crate::graph::identity::Identity;

const KIND_GROUP: u64 = 5;
const KIND_ROLE: u64 = 6;
const KIND_UNIT: u64 = 7;

/// User Administrator's template id.
const USER_ADMINISTRATOR: &str = "fe930be7-5e62-47db-91af-98c3a49a38b1";

/// How much privileged access [`Tenant::with_privileged_access`] adds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrivilegedSeed {
    /// PIM-eligible assignments beyond the fixed ones (identities 100, 101, ...).
    pub eligible: usize,
    /// Role-assignable groups beyond the fixed two.
    pub groups: usize,
}

impl PrivilegedSeed {
    pub const ELIGIBLE_GLOBAL_ADMINISTRATOR: usize = 11;
    pub const GROUP_MEMBER: usize = 12;
    pub const GROUP_ELIGIBLE_MEMBER: usize = 14;
    pub const ELIGIBLE_GROUP_MEMBER: usize = 15;
    pub const CUSTOM_ROLE_HOLDER: usize = 16;
    pub const CUSTOM_ROLE_UNPRIVILEGED: usize = 18;
    pub const RESTRICTED_MEMBER: usize = 19;
    /// The display name of the group that holds Security Administrator actively.
    pub const ACTIVE_GROUP: &'static str = "SecOps Admins";
    /// The display name of the custom role labelled privileged.
    pub const CUSTOM_ROLE: &'static str = "Contoso Identity Lead";
    /// The display name of the restricted-management administrative unit.
    pub const RESTRICTED_UNIT: &'static str = "Executives";
}

/// A role-assignable group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoleGroup {
    pub(crate) id: String,
    pub(crate) display_name: String,
    /// Members' Entra object ids.
    pub(crate) members: Vec<String>,
    /// Object ids eligible for membership through PIM for Groups.
    pub(crate) eligible: Vec<String>,
}

/// A custom role definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CustomRole {
    pub(crate) id: String,
    pub(crate) display_name: String,
    pub(crate) is_privileged: bool,
}

/// An administrative unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unit {
    pub(crate) id: String,
    pub(crate) display_name: String,
    pub(crate) restricted: bool,
    /// Members' Entra object ids.
    pub(crate) members: Vec<String>,
}

/// The privileged access a tenant holds besides its active role assignments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PrivilegedAccess {
    /// PIM eligibility (`unifiedRoleEligibilityScheduleInstance`s), as assignments.
    pub(crate) eligible: Vec<RoleAssignment>,
    pub(crate) groups: Vec<RoleGroup>,
    pub(crate) custom_roles: Vec<CustomRole>,
    pub(crate) units: Vec<Unit>,
}

impl PrivilegedAccess {
    pub(crate) fn extend(&mut self, other: PrivilegedAccess) {
        self.eligible.extend(other.eligible);
        self.groups.extend(other.groups);
        self.custom_roles.extend(other.custom_roles);
        self.units.extend(other.units);
    }

    pub(crate) fn group(&self, id: &str) -> Option<&RoleGroup> {
        self.groups.iter().find(|g| g.id.eq_ignore_ascii_case(id))
    }

    /// Whether the user with this object id is in a restricted-management unit.
    pub(crate) fn is_restricted(&self, object_id: &str) -> bool {
        self.units.iter().any(|unit| {
            unit.restricted
                && unit
                    .members
                    .iter()
                    .any(|m| m.eq_ignore_ascii_case(object_id))
        })
    }
}

impl Tenant {
    /// Adds the privileged access of the seeded layout (the table atop
    /// `src/mock/tenant/privileged.rs`) for the identities below this tenant's size.
    pub fn with_privileged_access(mut self, seed: PrivilegedSeed) -> Tenant {
        let n = self.len();
        let object_id = |i: usize| (i < n).then(|| Tenant::synthetic_object_id(i));
        let ids = |list: &[usize]| list.iter().filter_map(|&i| object_id(i)).collect();
        let mut access = PrivilegedAccess::default();
        if let Some(oid) = object_id(PrivilegedSeed::ELIGIBLE_GLOBAL_ADMINISTRATOR) {
            access
                .eligible
                .push(eligibility(Tenant::GLOBAL_ADMINISTRATOR, &oid));
        }
        let secops = group(0, PrivilegedSeed::ACTIVE_GROUP, ids(&[12, 13]), ids(&[14]));
        self.assign_role(Tenant::SECURITY_ADMINISTRATOR, &secops.id);
        let tier0 = group(1, "Tier0 Standby", ids(&[15]), Vec::new());
        access.eligible.push(eligibility(
            Tenant::PRIVILEGED_ROLE_ADMINISTRATOR,
            &tier0.id,
        ));
        access.groups.extend([secops, tier0]);
        let lead = custom_role(0, PrivilegedSeed::CUSTOM_ROLE, true);
        let reader = custom_role(1, "Contoso Report Reader", false);
        if let Some(oid) = object_id(PrivilegedSeed::CUSTOM_ROLE_HOLDER) {
            self.assign_role(&lead.id, &oid);
        }
        if let Some(oid) = object_id(17) {
            access.eligible.push(eligibility(&lead.id, &oid));
        }
        if let Some(oid) = object_id(PrivilegedSeed::CUSTOM_ROLE_UNPRIVILEGED) {
            self.assign_role(&reader.id, &oid);
        }
        access.custom_roles.extend([lead, reader]);
        access
            .units
            .push(unit(0, PrivilegedSeed::RESTRICTED_UNIT, true, ids(&[19])));
        access.units.push(unit(1, "Sales", false, ids(&[21])));

        let roles = [
            Tenant::GLOBAL_ADMINISTRATOR,
            Tenant::PRIVILEGED_ROLE_ADMINISTRATOR,
            Tenant::SECURITY_ADMINISTRATOR,
            USER_ADMINISTRATOR,
        ];
        for k in 0..seed.eligible {
            if let Some(oid) = object_id(100 + k) {
                access
                    .eligible
                    .push(eligibility(roles[k % roles.len()], &oid));
            }
        }
        for g in 0..seed.groups {
            let members = ids(&[1000 + 2 * g, 1000 + 2 * g + 1]);
            let eligible = ids(&[1000 + 2 * seed.groups + g]);
            let extra = group(2 + g, &format!("Privileged Group {g}"), members, eligible);
            let role = roles[g % roles.len()];
            if g % 2 == 0 {
                self.assign_role(role, &extra.id);
            } else {
                access.eligible.push(eligibility(role, &extra.id));
            }
            access.groups.push(extra);
        }
        self.privileged_mut().extend(access);
        self
    }
}

fn eligibility(role: &str, principal: &str) -> RoleAssignment {
    RoleAssignment {
        id: format!("eligible-{role}-{principal}"),
        role_definition_id: role.to_owned(),
        principal_id: principal.to_owned(),
        principal_sid: None,
    }
}

fn group(g: usize, name: &str, members: Vec<String>, eligible: Vec<String>) -> RoleGroup {
    RoleGroup {
        id: guid(KIND_GROUP, g).to_string(),
        display_name: name.to_owned(),
        members,
        eligible,
    }
}

fn custom_role(k: usize, name: &str, is_privileged: bool) -> CustomRole {
    CustomRole {
        id: guid(KIND_ROLE, k).to_string(),
        display_name: name.to_owned(),
        is_privileged,
    }
}

fn unit(u: usize, name: &str, restricted: bool, members: Vec<String>) -> Unit {
    Unit {
        id: guid(KIND_UNIT, u).to_string(),
        display_name: name.to_owned(),
        restricted,
        members,
    }
}

// --- pages ---------------------------------------------------------------------------------------

/// A principal as `$expand=principal` and member lists show it: a user (its identity's UPN,
/// display name and SID) or a group (its display name).
pub(crate) fn principal(directory: &Directory, id: &str, sid: Option<&str>) -> Value {
    if let Some(group) = directory.privileged().group(id) {
        return json!({
            "@odata.type": "#microsoft.graph.group",
            "id": id,
            "displayName": group.display_name,
            "isAssignableToRole": true,
        });
    }
    let identity: Option<&Identity> = directory.user(id).map(|u| u.identity);
    json!({
        "@odata.type": "#microsoft.graph.user",
        "id": id,
        "userPrincipalName": identity.and_then(|i| i.user_principal_name.as_deref()),
        "displayName": identity.and_then(|i| i.display_name.as_deref()),
        "onPremisesSecurityIdentifier": identity
            .and_then(|i| i.on_premises_security_identifier.as_deref())
            .or(sid),
    })
}

/// Which list a read pages through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum List {
    /// `roleEligibilityScheduleInstances?$filter=roleDefinitionId eq '{role}'`.
    Eligibility { role: String, expand: bool },
    /// `roleDefinitions` (beta; `privileged_only`: `$filter=isPrivileged eq true`).
    RoleDefinitions { privileged_only: bool },
    /// `groups/{id}/transitiveMembers`; `None` when no such group.
    GroupMembers { group: String },
    /// PIM for Groups `eligibilityScheduleInstances?$filter=groupId eq '{group}'`.
    GroupEligibility { group: String },
    /// `directory/administrativeUnits`.
    Units,
    /// `directory/administrativeUnits/{id}/members`.
    UnitMembers { unit: String },
}

impl List {
    /// The permission Graph wants for this read (least privileged, as documented).
    pub(crate) fn permission(&self) -> &'static str {
        match self {
            List::Eligibility { .. } => "RoleEligibilitySchedule.Read.Directory",
            List::RoleDefinitions { .. } => "RoleManagement.Read.Directory",
            List::GroupMembers { .. } => "GroupMember.Read.All",
            List::GroupEligibility { .. } => "PrivilegedEligibilitySchedule.Read.AzureADGroup",
            List::Units | List::UnitMembers { .. } => "AdministrativeUnit.Read.All",
        }
    }

    /// Every entry of the list, in order; `None` when the group or unit does not exist.
    pub(crate) fn entries(&self, directory: &Directory) -> Option<Vec<Value>> {
        let access = directory.privileged();
        let users = |ids: &[String]| -> Vec<Value> {
            ids.iter()
                .map(|id| principal(directory, id, None))
                .collect()
        };
        Some(match self {
            List::Eligibility { role, expand } => access
                .eligible
                .iter()
                .filter(|e| e.role_definition_id.eq_ignore_ascii_case(role))
                .map(|e| {
                    let mut entry = json!({
                        "id": e.id,
                        "principalId": e.principal_id,
                        "roleDefinitionId": e.role_definition_id,
                        "directoryScopeId": "/",
                        "appScopeId": null,
                        "memberType": "Direct",
                        "startDateTime": "2026-01-01T00:00:00Z",
                        "endDateTime": null,
                    });
                    if *expand {
                        entry["principal"] = principal(directory, &e.principal_id, None);
                    }
                    entry
                })
                .collect(),
            List::RoleDefinitions { privileged_only } => {
                let built_in = [
                    ("Global Administrator", Tenant::GLOBAL_ADMINISTRATOR),
                    (
                        "Privileged Role Administrator",
                        Tenant::PRIVILEGED_ROLE_ADMINISTRATOR,
                    ),
                    ("Security Administrator", Tenant::SECURITY_ADMINISTRATOR),
                ]
                .map(|(name, id)| definition(id, name, true, true));
                let custom = access
                    .custom_roles
                    .iter()
                    .map(|r| definition(&r.id, &r.display_name, false, r.is_privileged));
                built_in
                    .into_iter()
                    .chain(custom)
                    .filter(|d| !privileged_only || d["isPrivileged"] == true)
                    .collect()
            }
            List::GroupMembers { group } => users(&access.group(group)?.members),
            List::GroupEligibility { group } => access
                .group(group)
                .map(|g| g.eligible.as_slice())
                .unwrap_or_default()
                .iter()
                .map(|principal_id| {
                    json!({
                        "id": format!("eligible-{group}-{principal_id}"),
                        "groupId": group,
                        "principalId": principal_id,
                        "accessId": "member",
                        "memberType": "direct",
                        "startDateTime": "2026-01-01T00:00:00Z",
                        "endDateTime": null,
                    })
                })
                .collect(),
            List::Units => access
                .units
                .iter()
                .map(|u| {
                    json!({
                        "id": u.id,
                        "displayName": u.display_name,
                        "isMemberManagementRestricted": u.restricted,
                    })
                })
                .collect(),
            List::UnitMembers { unit } => {
                let unit = access
                    .units
                    .iter()
                    .find(|u| u.id.eq_ignore_ascii_case(unit))?;
                users(&unit.members)
            }
        })
    }
}

fn definition(id: &str, name: &str, built_in: bool, privileged: bool) -> Value {
    json!({
        "id": id,
        "templateId": id,
        "displayName": name,
        "isBuiltIn": built_in,
        "isEnabled": true,
        "isPrivileged": privileged,
    })
}

/// One page of `entries` from `skip`, with a link to the next when there is one.
#[derive(Serialize)]
pub(crate) struct ListPage {
    #[serde(rename = "@odata.context")]
    context: String,
    value: Vec<Value>,
    #[serde(rename = "@odata.nextLink", skip_serializing_if = "Option::is_none")]
    next_link: Option<String>,
}

impl ListPage {
    /// `link(next)` is the URL of the page from `next`.
    pub(crate) fn new(
        context: String,
        mut entries: Vec<Value>,
        skip: usize,
        size: usize,
        link: impl Fn(usize) -> String,
    ) -> ListPage {
        let total = entries.len();
        let start = skip.min(total);
        let end = start.saturating_add(size.max(1)).min(total);
        let value: Vec<Value> = entries.drain(start..end).collect();
        ListPage {
            context,
            value,
            next_link: (end < total).then(|| link(end)),
        }
    }
}
