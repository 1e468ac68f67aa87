//! The identities a responder's spreadsheet names (SPEC section 8): Graph's `identityAccounts`
//! resource with its linked accounts, and the few `user` fields a lookup by UPN or object id
//! needs. Pure data and parsing, shared by the client, the lookup and the mock.
//!
//! Microsoft's own material disagrees with itself, so parsing accepts all of it: `provider` or
//! `identityProvider`, provider and action names in any case (`"Enable"`, `"ActiveDirectory"`),
//! single objects wrapped in `value` or not, lists in `value` with an optional `@odata.nextLink`.

use serde::{Deserialize, Serialize};

use super::model::{Action, Provider};
use crate::sanitize::printable_owned;

/// One identity (`microsoft.graph.security.identityAccounts`, or the derived `security.user`
/// with its `userPrincipalName`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_premises_security_identifier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_security_identifier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_principal_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_address: Option<String>,
    /// `null` reads as no accounts, as an absent field does.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub accounts: Vec<LinkedAccount>,
}

fn null_as_empty<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

/// An account linked to an identity (`microsoft.graph.security.account`): the `accountId` and
/// `identityProvider` an action is sent with, and the actions Graph offers for it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkedAccount {
    pub identifier: String,
    /// As Graph wrote it (`activeDirectory`, `ActiveDirectory`, ...); see [`LinkedAccount::provider`].
    #[serde(alias = "provider")]
    pub identity_provider: String,
    #[serde(default)]
    pub actions: Vec<String>,
}

impl LinkedAccount {
    /// The provider in Graph's spelling, if it is one this tool knows.
    pub fn provider(&self) -> Option<Provider> {
        Provider::parse(&self.identity_provider)
    }

    /// The provider as this tool spells it (`activeDirectory`, as `--provider` takes it), or as
    /// Graph wrote it when the tool does not know it.
    pub fn provider_name(&self) -> String {
        match self.provider() {
            Some(provider) => provider.as_str().to_owned(),
            None => crate::sanitize::printable(&self.identity_provider).into_owned(),
        }
    }

    /// Whether Graph offers `action` for this account (names compared ignoring case).
    pub fn offers(&self, action: Action) -> bool {
        self.actions
            .iter()
            .any(|offered| Action::parse(offered) == Some(action))
    }

    /// The offered actions in Graph's spelling, for messages and the `resolve` output.
    pub fn offered(&self) -> Vec<String> {
        self.actions
            .iter()
            .map(|offered| match Action::parse(offered) {
                Some(action) => action.as_str().to_owned(),
                None => printable_owned(offered),
            })
            .collect()
    }
}

impl Identity {
    /// The object ids of its Entra ID accounts (an Entra ID account's identifier is the user's
    /// Entra object id).
    pub fn entra_object_ids(&self) -> impl Iterator<Item = &str> {
        self.accounts
            .iter()
            .filter(|account| account.provider() == Some(Provider::EntraId))
            .map(|account| account.identifier.as_str())
    }

    /// Whether `sid` is its on-premises SID (SIDs compared ignoring case).
    pub fn has_sid(&self, sid: &str) -> bool {
        self.on_premises_security_identifier
            .as_deref()
            .is_some_and(|own| own.eq_ignore_ascii_case(sid))
    }

    /// Whether `object_id` is one of its Entra ID accounts (GUIDs compared ignoring case).
    pub fn has_object_id(&self, object_id: &str) -> bool {
        self.entra_object_ids()
            .any(|own| own.eq_ignore_ascii_case(object_id))
    }
}

/// The fields of a `user` a lookup reads: `GET /users/{id | upn}?$select=id,userPrincipalName,
/// onPremisesSecurityIdentifier,displayName`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_principal_name: Option<String>,
    /// Returned only when `$select` asks for it; `None` for a cloud-only user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_premises_security_identifier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

/// What `GET /users/{id}?$select=id,accountEnabled,signInSessionsValidFromDateTime` returns: the
/// state a disable, an enable or a session revoke on Entra ID changes (SPEC section 10).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserState {
    pub id: String,
    #[serde(default)]
    pub account_enabled: Option<bool>,
    /// An RFC 3339 time (`2026-12-03T18:40:12Z`): sessions issued before it are revoked.
    #[serde(default)]
    pub sign_in_sessions_valid_from_date_time: Option<String>,
}

/// A user's state, wrapped in `value` or bare.
pub fn parse_user_state(body: &[u8]) -> Result<UserState, ShapeError> {
    let shape = |reason: String| ShapeError {
        expected: "a user's state",
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| shape(e.to_string()))?;
    serde_json::from_value(unwrap_value(value)).map_err(|e| shape(e.to_string()))
}

/// One identity as Graph returned it: parsed, and the object itself for the snapshot file.
#[derive(Debug, Clone, PartialEq)]
pub struct Fetched {
    pub identity: Identity,
    pub raw: serde_json::Value,
}

/// A page of the identityAccounts list.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Page {
    pub identities: Vec<Fetched>,
    /// Items that are not identities: each spoils itself, not its page (issue 16).
    pub spoiled: Vec<Spoiled>,
    /// `@odata.nextLink`, followed whole when present.
    pub next_link: Option<String>,
}

/// An item of a list page that is not an identity: the names it seems to carry (its `id`,
/// on-premises SID, UPN and linked accounts' identifiers, where they are text), so that a row
/// naming it is told the read failed rather than that no such identity exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spoiled {
    pub names: Vec<String>,
    pub reason: String,
}

impl Spoiled {
    fn of(raw: &serde_json::Value, reason: String) -> Spoiled {
        let text = |value: Option<&serde_json::Value>| {
            value
                .and_then(serde_json::Value::as_str)
                .filter(|name| !name.trim().is_empty())
                .map(str::to_owned)
        };
        let mut names: Vec<String> = ["id", "onPremisesSecurityIdentifier", "userPrincipalName"]
            .into_iter()
            .filter_map(|field| text(raw.get(field)))
            .collect();
        if let Some(accounts) = raw.get("accounts").and_then(serde_json::Value::as_array) {
            names.extend(
                accounts
                    .iter()
                    .filter_map(|account| text(account.get("identifier"))),
            );
        }
        Spoiled { names, reason }
    }
}

/// Why a body is not what the call returns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Graph's answer is not {expected}: {reason}")]
pub struct ShapeError {
    pub expected: &'static str,
    pub reason: String,
}

impl Page {
    /// `{"value": [...], "@odata.nextLink": "..."}`. A body of another shape is an error; an
    /// item that is not an identity is kept aside in [`Page::spoiled`].
    pub fn parse(body: &[u8]) -> Result<Page, ShapeError> {
        #[derive(Deserialize)]
        struct Raw {
            value: Vec<serde_json::Value>,
            #[serde(rename = "@odata.nextLink")]
            next_link: Option<String>,
        }
        let shape = |reason: String| ShapeError {
            expected: "a list of identities",
            reason,
        };
        let raw: Raw = serde_json::from_slice(body).map_err(|e| shape(e.to_string()))?;
        let mut page = Page {
            next_link: raw.next_link,
            ..Page::default()
        };
        for value in raw.value {
            match fetched(value.clone()) {
                Ok(identity) => page.identities.push(identity),
                Err(error) => page.spoiled.push(Spoiled::of(&value, error.reason)),
            }
        }
        Ok(page)
    }
}

/// One identity, wrapped in `value` as Microsoft's examples show, or bare as the schema says.
pub fn parse_identity(body: &[u8]) -> Result<Fetched, ShapeError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| ShapeError {
        expected: "an identity",
        reason: e.to_string(),
    })?;
    fetched(unwrap_value(value))
}

/// One user, wrapped in `value` or bare.
pub fn parse_user(body: &[u8]) -> Result<User, ShapeError> {
    let shape = |reason: String| ShapeError {
        expected: "a user",
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| shape(e.to_string()))?;
    let user: User =
        serde_json::from_value(unwrap_value(value)).map_err(|e| shape(e.to_string()))?;
    if user.id.is_empty() {
        return Err(shape("no id".to_owned()));
    }
    Ok(user)
}

fn unwrap_value(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(mut object)
            if object.get("value").is_some_and(|v| v.is_object()) =>
        {
            object.remove("value").unwrap_or_default()
        }
        other => other,
    }
}

fn fetched(raw: serde_json::Value) -> Result<Fetched, ShapeError> {
    let identity: Identity = serde_json::from_value(raw.clone()).map_err(|e| ShapeError {
        expected: "an identity",
        reason: e.to_string(),
    })?;
    if identity.id.is_empty() {
        return Err(ShapeError {
            expected: "an identity",
            reason: "no id".to_owned(),
        });
    }
    Ok(Fetched { identity, raw })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Microsoft's v1.0 get example, verbatim: wrapped in `value`, `provider`, PascalCase.
    const DOCS_GET: &str = r#"{
      "value":
        {
          "id": "00104216-0539-4838-88b1-55baafdc296b",
          "displayName": "accoundJon",
          "domain": "domain1.test.local",
          "onPremisesSecurityIdentifier": "S-1-5-21-989687458-3461180213-172365591-281652",
          "cloudSecurityIdentifier": "S-1-12-4-2492432728-1225839317-3974870967-847981844",
          "isEnabled": true,
          "accounts": [
            {"provider": "ActiveDirectory", "identifier": "256db173-930a-4991-9061-0d51a9a93ba5", "actions": ["Enable"]},
            {"provider": "EntraID", "identifier": "69dfa3ea-1295-4e2c-b469-59564581143d", "actions": []},
            {"provider": "Okta", "identifier": "878a6911-f3da-41eb-a895-1d46fa054d3e", "actions": ["revokeAllSessions"]}
          ]
        }
    }"#;

    #[test]
    fn the_docs_shape_is_read_with_provider_and_capitalised_names() {
        let fetched = parse_identity(DOCS_GET.as_bytes()).unwrap();
        let identity = &fetched.identity;
        assert_eq!(identity.id, "00104216-0539-4838-88b1-55baafdc296b");
        assert!(identity.has_sid("s-1-5-21-989687458-3461180213-172365591-281652"));
        assert!(identity.has_object_id("69DFA3EA-1295-4e2c-b469-59564581143d"));
        let ad = &identity.accounts[0];
        assert_eq!(ad.provider(), Some(Provider::ActiveDirectory));
        assert!(ad.offers(Action::Enable));
        assert!(!ad.offers(Action::Disable));
        assert_eq!(ad.offered(), vec!["enable"]);
        assert_eq!(identity.accounts[1].provider(), Some(Provider::EntraId));
        assert_eq!(fetched.raw["displayName"], "accoundJon");
    }

    #[test]
    fn the_schema_shape_is_read_unwrapped_with_identity_provider() {
        let body = r#"{"id":"x","isEnabled":false,"userPrincipalName":"a@b.c","accounts":[{"identityProvider":"okta","identifier":"00uA","actions":["disable","enable"]}]}"#;
        let identity = parse_identity(body.as_bytes()).unwrap().identity;
        assert_eq!(identity.user_principal_name.as_deref(), Some("a@b.c"));
        assert_eq!(identity.accounts[0].provider(), Some(Provider::Okta));
        assert!(identity.accounts[0].offers(Action::Disable));
    }

    #[test]
    fn pages_carry_their_next_link() {
        let body = r#"{"value":[{"id":"a","accounts":[]},{"id":"b"}],"@odata.nextLink":"https://graph.microsoft.com/v1.0/security/identities/identityAccounts?$skiptoken=2"}"#;
        let page = Page::parse(body.as_bytes()).unwrap();
        assert_eq!(page.identities.len(), 2);
        assert!(page.next_link.unwrap().ends_with("$skiptoken=2"));
        assert_eq!(Page::parse(br#"{"value":[]}"#).unwrap(), Page::default());
        // An item that is not an identity spoils itself, not its page (issue 16).
        let spoiled = Page::parse(br#"{"value":[{"displayName":"no id"},{"id":"c"}]}"#).unwrap();
        assert_eq!(spoiled.identities.len(), 1);
        assert_eq!(spoiled.spoiled.len(), 1);
        assert!(spoiled.spoiled[0].names.is_empty());
        assert!(Page::parse(b"<html>").is_err());
    }

    #[test]
    fn issue_16_a_malformed_identity_spoils_itself_and_null_accounts_are_none() {
        let body = br#"{"value":[
            {"id":"ok","accounts":[{"identifier":"oid-ok","provider":"EntraID","actions":[]}]},
            {"id":"null-accounts","accounts":null},
            {"id":"bad","onPremisesSecurityIdentifier":"S-1-5-21-7","accounts":[{"identifier":"oid-bad","provider":7}]},
            {"id":42,"userPrincipalName":"n@c.com"}
        ]}"#;
        let page = Page::parse(body).unwrap();
        let ids: Vec<&str> = page
            .identities
            .iter()
            .map(|f| f.identity.id.as_str())
            .collect();
        assert_eq!(ids, ["ok", "null-accounts"]);
        assert!(page.identities[1].identity.accounts.is_empty());
        assert_eq!(page.spoiled[0].names, ["bad", "S-1-5-21-7", "oid-bad"]);
        assert_eq!(page.spoiled[1].names, ["n@c.com"]);
        assert!(page.spoiled.iter().all(|s| !s.reason.is_empty()));
    }

    #[test]
    fn users_are_read_wrapped_or_not_and_a_cloud_only_user_has_no_sid() {
        let bare = parse_user(
            br#"{"id":"u1","userPrincipalName":"a@b.c","onPremisesSecurityIdentifier":null}"#,
        )
        .unwrap();
        assert_eq!(bare.on_premises_security_identifier, None);
        let wrapped =
            parse_user(br#"{"value":{"id":"u2","onPremisesSecurityIdentifier":"S-1-5-21-1"}}"#)
                .unwrap();
        assert_eq!(wrapped.id, "u2");
        assert!(parse_user(br#"{"error":{"code":"x"}}"#).is_err());
    }
}
