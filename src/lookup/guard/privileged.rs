//! Who holds privileged access, read for `--protect-privileged` (issues 13 and 20), and who is in
//! a restricted-management administrative unit. Owns these reads, what their pages hold, and the
//! order they go in; [`super::read_guard`] turns what they found into the guard.
//!
//! Every read is documented by Microsoft, goes through the one bounded [`Walk`] (each page of
//! every list), and stops the run when it cannot be read whole (a 403 names its permission):
//!
//! 1. Active assignments of each of [`PRIVILEGED_ROLES`]:
//!    `roleAssignments?$filter=roleDefinitionId eq '{id}'&$expand=principal` ("List
//!    unifiedRoleAssignments", `RoleManagement.Read.Directory`).
//! 2. At once: PIM eligibility for the same roles, `roleEligibilityScheduleInstances?$filter=
//!    roleDefinitionId eq '{id}'&$expand=principal` ("List roleEligibilityScheduleInstances",
//!    `RoleEligibilitySchedule.Read.Directory`); on beta only, the roles Microsoft labels
//!    privileged, `roleDefinitions?$filter=isPrivileged eq true` (Entra's "Privileged roles and
//!    permissions"; v1.0's `unifiedRoleDefinition` has no `isPrivileged`, so a v1.0 run warns that
//!    custom privileged roles were not checked); and the administrative units,
//!    `directory/administrativeUnits?$select=id,displayName,isMemberManagementRestricted`
//!    (`AdministrativeUnit.Read.All`).
//! 3. The custom privileged roles' active assignments and eligibility (as in 1 and 2), and the
//!    members of each restricted-management unit, `administrativeUnits/{id}/members` ("List
//!    members").
//! 4. For every group that holds one of those roles, actively or eligibly (only role-assignable
//!    groups can): its members, `groups/{id}/transitiveMembers` (`GroupMember.Read.All`; Entra
//!    does not nest role-assignable groups, so that is the whole set), and who is eligible for it
//!    through PIM for Groups,
//!    `identityGovernance/privilegedAccess/group/eligibilityScheduleInstances?$filter=groupId eq
//!    '{id}'` (`PrivilegedEligibilitySchedule.Read.AzureADGroup`).
//!
//! The first step goes alone, as it did before issue 20, so that a guard that cannot read the
//! roles stops where it always did; each later step needs what the one before found.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::task::JoinSet;
use tracing::warn;

use super::PRIVILEGED_ROLES;
use crate::lookup::directory::key;
use crate::lookup::read::{LookupStop, Reader, Service};
use crate::lookup::walk::{Parsed, Walk, WalkStop};
use crate::sanitize::printable;

/// What the privileged reads found: each name (a key) with the privileged access it holds, as
/// messages say it, and the restricted-management units' members.
#[derive(Debug, Default)]
pub(super) struct Found {
    pub(super) holders: HashMap<String, BTreeSet<String>>,
    /// (a member's name as a key, the unit's display name).
    pub(super) restricted: Vec<(String, String)>,
    /// Groups that hold a privileged role: id -> (display name, the roles as messages say them).
    groups: BTreeMap<String, (String, BTreeSet<String>)>,
}

/// A role to read the holders of.
#[derive(Debug, Clone)]
struct Role {
    id: String,
    name: String,
}

/// How a role is held, for its list and its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holding {
    Active,
    Eligible,
}

/// A principal as `$expand=principal` and member lists give it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Principal {
    #[serde(rename = "@odata.type")]
    odata_type: Option<String>,
    id: Option<String>,
    user_principal_name: Option<String>,
    display_name: Option<String>,
    /// A holder whose identity has no Entra ID account and no UPN is known by it (issue 16).
    on_premises_security_identifier: Option<String>,
}

impl Principal {
    /// `#microsoft.graph.user` when the type is not given (a user is what a role is usually
    /// assigned to).
    fn is(&self, kind: &str) -> bool {
        self.odata_type
            .as_deref()
            .unwrap_or("#microsoft.graph.user")
            .eq_ignore_ascii_case(kind)
    }

    /// Its names as keys: the id (or `principal_id`), UPN and on-premises SID.
    fn names(&self, principal_id: Option<&str>) -> Vec<String> {
        let id = principal_id.or(self.id.as_deref());
        [
            id,
            self.user_principal_name.as_deref(),
            self.on_premises_security_identifier.as_deref(),
        ]
        .into_iter()
        .flatten()
        .filter(|name| !name.trim().is_empty())
        .map(key)
        .collect()
    }
}

/// A `unifiedRoleAssignment` or a `unifiedRoleEligibilityScheduleInstance`: the same two
/// properties matter.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Assignment {
    principal_id: String,
    principal: Option<Principal>,
}

/// A `privilegedAccessGroupEligibilityScheduleInstance`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GroupEligibility {
    principal_id: String,
    /// `member` or `owner`.
    access_id: Option<String>,
}

/// A `unifiedRoleDefinition` (beta, with `isPrivileged`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RoleDefinition {
    id: String,
    display_name: Option<String>,
    is_built_in: Option<bool>,
}

/// An `administrativeUnit`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AdministrativeUnit {
    id: String,
    display_name: Option<String>,
    is_member_management_restricted: Option<bool>,
}

#[derive(Deserialize)]
struct ListPage<T> {
    value: Vec<T>,
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
}

/// Reads everything above, in its four steps.
pub(super) async fn read_privileged(reader: &Arc<Reader>) -> Result<Found, LookupStop> {
    let mut found = Found::default();
    let built_in: Vec<Role> = PRIVILEGED_ROLES
        .iter()
        .map(|(name, id)| Role {
            id: (*id).to_owned(),
            name: (*name).to_owned(),
        })
        .collect();
    found.note_holders(all(role_reads(reader, &built_in, &[Holding::Active])).await?);

    let eligible = all(role_reads(reader, &built_in, &[Holding::Eligible]));
    let custom = custom_privileged_roles(reader);
    let units = read_list::<AdministrativeUnit>(
        reader.clone(),
        Service::AdministrativeUnits,
        "the administrative units".to_owned(),
        Ok(reader.client().administrative_units_url()),
    );
    let (eligible, custom, units) = tokio::join!(eligible, custom, units);
    found.note_holders(eligible?);
    let restricted: Vec<AdministrativeUnit> = units?
        .into_iter()
        .filter(|unit| unit.is_member_management_restricted == Some(true))
        .collect();

    let custom_holders = all(role_reads(
        reader,
        &custom?,
        &[Holding::Active, Holding::Eligible],
    ));
    let members = all(restricted.into_iter().map(|unit| {
        let reader = reader.clone();
        async move {
            let name = unit.display_name.clone().unwrap_or_else(|| unit.id.clone());
            let members = read_list::<Principal>(
                reader.clone(),
                Service::AdministrativeUnits,
                format!(
                    "the members of the administrative unit {}",
                    printable(&name)
                ),
                reader.client().administrative_unit_members_url(&unit.id),
            )
            .await?;
            Ok((name, members))
        }
    }));
    let (custom_holders, members) = tokio::join!(custom_holders, members);
    found.note_holders(custom_holders?);
    for (unit, members) in members? {
        for member in members.iter().filter(|m| m.is("#microsoft.graph.user")) {
            for name in member.names(None) {
                found.restricted.push((name, unit.clone()));
            }
        }
    }

    let groups: Vec<(String, String)> = found
        .groups
        .iter()
        .map(|(id, (name, _))| (id.clone(), name.clone()))
        .collect();
    let group_reads = groups.into_iter().map(|(id, name)| {
        let reader = reader.clone();
        async move {
            let shown = printable(&name).into_owned();
            let members = read_list::<Principal>(
                reader.clone(),
                Service::GroupMembers,
                format!("the members of the role-assignable group {shown}"),
                reader.client().group_members_url(&id),
            );
            let eligible = read_list::<GroupEligibility>(
                reader.clone(),
                Service::GroupEligibility,
                format!("who is eligible for the role-assignable group {shown} (PIM for Groups)"),
                Ok(reader.client().group_eligibility_url(&id)),
            );
            let (members, eligible) = tokio::join!(members, eligible);
            Ok((id, members?, eligible?))
        }
    });
    for (id, members, eligible) in all(group_reads).await? {
        found.note_group(&id, &members, &eligible);
    }
    Ok(found)
}

impl Found {
    /// Notes what one role's list answered: users hold the role; groups are read next.
    fn note_holders(&mut self, lists: Vec<RoleList>) {
        for (role, holding, assignments) in lists {
            let held = match holding {
                Holding::Active => role.name.clone(),
                Holding::Eligible => format!("{} (eligible through PIM)", role.name),
            };
            for assignment in assignments {
                let principal = assignment.principal.unwrap_or_default();
                if principal.is("#microsoft.graph.group") {
                    let name = principal
                        .display_name
                        .clone()
                        .unwrap_or_else(|| assignment.principal_id.clone());
                    self.groups
                        .entry(assignment.principal_id.clone())
                        .or_insert_with(|| (name, BTreeSet::new()))
                        .1
                        .insert(held.clone());
                } else if principal.is("#microsoft.graph.user") {
                    for name in principal.names(Some(&assignment.principal_id)) {
                        self.holders.entry(name).or_default().insert(held.clone());
                    }
                }
            }
        }
    }

    /// Notes a privileged group's members and its PIM for Groups eligibility.
    fn note_group(&mut self, id: &str, members: &[Principal], eligible: &[GroupEligibility]) {
        let Some((group, roles)) = self.groups.get(id) else {
            return;
        };
        let group = printable(group).into_owned();
        let mut held: Vec<(String, String)> = Vec::new();
        for member in members.iter().filter(|m| m.is("#microsoft.graph.user")) {
            for name in member.names(None) {
                for role in roles {
                    held.push((name.clone(), format!("{role} through the group {group}")));
                }
            }
        }
        for instance in eligible {
            let access = instance.access_id.as_deref().unwrap_or("member");
            for role in roles {
                held.push((
                    key(&instance.principal_id),
                    format!("{role} as an eligible {access} of the group {group} (PIM for Groups)"),
                ));
            }
        }
        for (name, role) in held {
            self.holders.entry(name).or_default().insert(role);
        }
    }
}

/// The custom roles Microsoft labels privileged, on beta; none on v1.0, with a warning.
async fn custom_privileged_roles(reader: &Arc<Reader>) -> Result<Vec<Role>, LookupStop> {
    if !reader.client().reads_beta() {
        warn!(
            "custom roles that Microsoft labels privileged were not checked: isPrivileged is read on beta only (run with --api-version beta to guard their holders too)"
        );
        return Ok(Vec::new());
    }
    let definitions = read_list::<RoleDefinition>(
        reader.clone(),
        Service::RoleDefinitions,
        "the roles Microsoft labels privileged".to_owned(),
        Ok(reader.client().privileged_role_definitions_url()),
    )
    .await?;
    // The built-in ones are read already; a built-in role outside the list stays outside it.
    Ok(definitions
        .into_iter()
        .filter(|definition| definition.is_built_in == Some(false))
        .filter(|definition| {
            !PRIVILEGED_ROLES
                .iter()
                .any(|(_, id)| id.eq_ignore_ascii_case(&definition.id))
        })
        .map(|definition| Role {
            name: format!(
                "{} (a custom role Microsoft labels privileged)",
                printable(definition.display_name.as_deref().unwrap_or(&definition.id))
            ),
            id: definition.id,
        })
        .collect())
}

/// What one role's list answered.
type RoleList = (Role, Holding, Vec<Assignment>);

/// One read a role and holding, to run at once.
fn role_reads(
    reader: &Arc<Reader>,
    roles: &[Role],
    holdings: &[Holding],
) -> Vec<impl Future<Output = Result<RoleList, LookupStop>> + use<>> {
    let mut reads = Vec::new();
    for role in roles {
        for &holding in holdings {
            let reader = reader.clone();
            let role = role.clone();
            reads.push(async move {
                let (service, url, list) = match holding {
                    Holding::Active => (
                        Service::Roles,
                        reader.client().role_assignments_url(&role.id),
                        format!("the assignments of {}", role.name),
                    ),
                    Holding::Eligible => (
                        Service::Eligibility,
                        reader.client().role_eligibility_url(&role.id),
                        format!("the eligible assignments of {}", role.name),
                    ),
                };
                let assignments = read_list(reader, service, list, Ok(url)).await?;
                Ok((role, holding, assignments))
            });
        }
    }
    reads
}

/// Runs `reads` at once; the first stop wins, but an interrupt is what the operator asked for.
async fn all<T: Send + 'static>(
    reads: impl IntoIterator<Item = impl Future<Output = Result<T, LookupStop>> + Send + 'static>,
) -> Result<Vec<T>, LookupStop> {
    let mut set = JoinSet::new();
    for read in reads {
        set.spawn(read);
    }
    let mut answers = Vec::new();
    let mut stop: Option<LookupStop> = None;
    while let Some(joined) = set.join_next().await {
        let why = match joined {
            Ok(Ok(answer)) => {
                answers.push(answer);
                continue;
            }
            Ok(Err(why)) => why,
            Err(error) => LookupStop::Guard(format!("a guard read stopped unexpectedly: {error}")),
        };
        if stop.is_none() || why == LookupStop::Interrupted {
            stop = Some(why);
        }
    }
    match stop {
        Some(stop) => Err(stop),
        None => Ok(answers),
    }
}

/// Every page of one list (named `list` in messages), within the bounds of a walk (issue 16): a
/// looping or endless nextLink stops the guard's read, and so the run, instead of being followed
/// for ever.
async fn read_list<T: DeserializeOwned>(
    reader: Arc<Reader>,
    service: Service,
    list: String,
    first: Result<reqwest::Url, crate::graph::client::GraphError>,
) -> Result<Vec<T>, LookupStop> {
    let failed = |error: String| LookupStop::Guard(format!("reading {list} failed ({error})"));
    let first = first.map_err(|error| failed(error.to_string()))?;
    let _slot = reader.slot().await;
    let mut walk = Walk::new(list.clone(), first, reader.walk_limits());
    let parse = |body: &[u8]| {
        let page: ListPage<T> = serde_json::from_slice(body)
            .map_err(|error| format!("Graph's answer is not the list asked for: {error}"))?;
        Ok(Parsed {
            entries: page.value.len() as u64,
            items: page.value,
            next_link: page.next_link,
        })
    };
    let mut items = Vec::new();
    loop {
        match walk.next(&reader, service, parse).await {
            Ok(Some(page)) => items.extend(page),
            Ok(None) => return Ok(items),
            Err(WalkStop::Stop(stop)) => return Err(stop),
            Err(WalkStop::Failed(error)) => return Err(failed(error.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(json: serde_json::Value) -> Assignment {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn issue_20_users_hold_a_role_and_groups_pass_it_to_their_members() {
        let mut found = Found::default();
        let role = Role {
            id: "r".into(),
            name: "Security Administrator".into(),
        };
        found.note_holders(vec![(
            role,
            Holding::Eligible,
            vec![
                assignment(serde_json::json!({"principalId": "OID-1", "principal": {"@odata.type": "#microsoft.graph.user", "userPrincipalName": "a@b.c"}})),
                assignment(serde_json::json!({"principalId": "grp", "principal": {"@odata.type": "#microsoft.graph.group", "displayName": "SecOps"}})),
                assignment(serde_json::json!({"principalId": "sp", "principal": {"@odata.type": "#microsoft.graph.servicePrincipal"}})),
            ],
        )]);
        assert_eq!(
            found.holders["oid-1"],
            BTreeSet::from(["Security Administrator (eligible through PIM)".to_owned()])
        );
        assert!(found.holders.contains_key("a@b.c"));
        assert!(!found.holders.contains_key("grp") && !found.holders.contains_key("sp"));
        let members: Vec<Principal> = serde_json::from_value(serde_json::json!([
            {"@odata.type": "#microsoft.graph.user", "id": "oid-2"},
            {"@odata.type": "#microsoft.graph.device", "id": "dev-1"},
        ]))
        .unwrap();
        let eligible: Vec<GroupEligibility> = serde_json::from_value(
            serde_json::json!([{"principalId": "OID-3", "accessId": "owner"}]),
        )
        .unwrap();
        found.note_group("grp", &members, &eligible);
        assert_eq!(
            found.holders["oid-2"],
            BTreeSet::from([
                "Security Administrator (eligible through PIM) through the group SecOps".to_owned()
            ])
        );
        assert!(!found.holders.contains_key("dev-1"));
        assert!(
            found.holders["oid-3"]
                .iter()
                .any(|role| role.contains("eligible owner of the group SecOps (PIM for Groups)"))
        );
    }
}
