//! Connecting to Graph, for `run` and `resolve`: the credentials and the first token, or, for a
//! rehearsal (`--mock`), the built-in mock started in process with a tenant that holds everyone
//! the input names.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;

use crate::Unsent;
use crate::config::{GraphAccess, InputConfig, Target};
use crate::graph::auth::{TokenEndpoint, Tokens};
use crate::graph::client::GraphClient;
use crate::graph::model::{Action, Provider};
use crate::graph::permissions::Permission;
use crate::graph::permissions::{Granted, Needs, how_to_grant};
use crate::input::{Row, RowReader};
use crate::mock::{Identity, LinkedAccount, MockConfig, MockServer, SignInMock, Tenant};
use crate::units::Rate;

use super::prepare::credentials;

/// The client id `--mock` signs in with, at the in-process mock's token endpoint.
const MOCK_CLIENT_ID: &str = "graph-remediate-mock";

/// How many made-up identities the rehearsal's tenant holds besides those the input names: a
/// tenant of some size, so that a rehearsal pages the list as a real one would.
const REHEARSAL_PADDING: usize = 1000;

/// Where a command sends its requests, and with which tokens.
pub(super) struct Connection {
    pub(super) client: GraphClient,
    pub(super) tokens: Tokens,
    /// What the first token may do (issue 18).
    pub(super) granted: Granted,
    /// The in-process mock of `--mock`, shut down when the command ends.
    pub(super) mock: Option<MockServer>,
}

/// Credentials for the Graph target, or the in-process mock for a rehearsal (serving a tenant
/// made from `input`); then the first token, before the first request: wrong credentials fail
/// in seconds, with nothing sent.
/// Stops here, before the first read or action, when the token plainly lacks a permission that
/// `needs` lists (issue 18).
pub(super) async fn connect(
    graph: &GraphAccess,
    input: &InputConfig,
    needs: &Needs,
) -> anyhow::Result<Connection> {
    let connection = sign_in(graph, input, needs).await?;
    check_permissions(&connection, needs)?;
    Ok(connection)
}

/// The connection `run` makes once, the first time it is needed: before the lookup when rows
/// need one (its reads go through it), else after the plan is confirmed, so that a run the
/// operator does not confirm never signs in.
pub(super) struct Connector<'a> {
    graph: &'a GraphAccess,
    input: &'a InputConfig,
    needs: Needs,
    interrupt: &'a CancellationToken,
    made: Option<Connection>,
}

impl<'a> Connector<'a> {
    pub(super) fn new(
        graph: &'a GraphAccess,
        input: &'a InputConfig,
        needs: Needs,
        interrupt: &'a CancellationToken,
    ) -> Connector<'a> {
        Connector {
            graph,
            input,
            needs,
            interrupt,
            made: None,
        }
    }

    /// The connection, made now if it was not yet.
    pub(super) async fn connection(&mut self) -> anyhow::Result<&Connection> {
        let connection = match self.made.take() {
            Some(connection) => connection,
            None => self.connect().await?,
        };
        Ok(self.made.insert(connection))
    }

    /// The connection, for the batch.
    pub(super) async fn into_connection(mut self) -> anyhow::Result<Connection> {
        match self.made.take() {
            Some(connection) => Ok(connection),
            None => self.connect().await,
        }
    }

    async fn connect(&self) -> anyhow::Result<Connection> {
        connect_unless_interrupted(self.interrupt, connect(self.graph, self.input, &self.needs))
            .await
    }
}

/// `connecting` (a [`connect`] or [`sign_in`]) unless the first Ctrl-C or SIGTERM comes first: a
/// responder's sign-in may wait minutes for them, and a signal then ends it at once (exit 130).
pub(super) async fn connect_unless_interrupted(
    interrupt: &CancellationToken,
    connecting: impl std::future::Future<Output = anyhow::Result<Connection>>,
) -> anyhow::Result<Connection> {
    tokio::select! {
        biased;
        () = interrupt.cancelled() => Err(Unsent::interrupted(anyhow::anyhow!(
            "interrupted while signing in"
        )).into()),
        connected = connecting => connected,
    }
}

/// The credentials and the first token (a delegated sign-in happens here), without judging the
/// permissions: `auth` reports them instead of stopping.
pub(super) async fn sign_in(
    graph: &GraphAccess,
    input: &InputConfig,
    needs: &Needs,
) -> anyhow::Result<Connection> {
    let (tokens, graph_root, mock) = match &graph.target {
        Target::Graph { root, .. } => (credentials(graph, needs)?, root.to_string(), None),
        Target::Mock { .. } => {
            let input = input.clone();
            let tenant = tokio::task::spawn_blocking(move || rehearsal_tenant(&input))
                .await
                .context("cannot make the rehearsal's tenant")?;
            // A secret made up for this run: `--mock` goes through the same token fetch and
            // renewal as app credentials, and needs none from the user.
            let secret = Uuid::new_v4().to_string();
            let mock = MockServer::start(mock_profile(graph.pacing.rate, &secret, tenant))
                .await
                .context("cannot start the built-in mock")?;
            // A log line, so that `--log-format json` output stays JSON throughout.
            info!(
                mock = %mock.base_url(),
                "--mock: running against the built-in mock (nothing is sent to Microsoft)"
            );
            let endpoint = TokenEndpoint::new(&mock.base_url(), &mock.base_url())?;
            let tokens = Tokens::for_mock(
                &endpoint,
                MOCK_CLIENT_ID,
                SecretString::from(secret),
                graph.timeout,
            )?;
            (tokens, mock.base_url(), Some(mock))
        }
    };
    let client = GraphClient::new(
        &graph_root,
        graph.target.api_version(),
        graph.timeout,
        graph.pacing.concurrency,
    )?;
    let token = tokens.current().await.map_err(|error| {
        anyhow::Error::new(Unsent::stopped(
            anyhow::Error::new(error).context("cannot get an access token"),
        ))
    })?;
    let granted = tokens.granted(&token);
    Ok(Connection {
        client,
        tokens,
        granted,
        mock,
    })
}

/// A permission the plan needs and the token plainly lacks stops the command (exit 4), naming
/// it and how to grant it; a token that does not say what it may do is warned about and used.
fn check_permissions(connection: &Connection, needs: &Needs) -> anyhow::Result<()> {
    let granted = &connection.granted;
    if granted.names().is_none() {
        if !needs.is_empty() {
            warn!(
                credential = connection.tokens.describe(),
                "cannot tell what the access token may do (it carries no roles or scp claim); using it, and a missing permission will show as 403"
            );
        }
        return Ok(());
    }
    let missing = granted.missing(needs);
    if missing.is_empty() {
        return Ok(());
    }
    let delegated = granted.is_delegated();
    let lines: Vec<String> = missing
        .iter()
        .map(|permission| {
            format!(
                "{} (for {}): {}",
                permission.name(),
                permission.needed_for(),
                how_to_grant(*permission, delegated)
            )
        })
        .collect();
    Err(Unsent::stopped(anyhow::anyhow!(
        "the access token ({}) lacks {} permission(s) this run needs. {}",
        connection.tokens.describe(),
        missing.len(),
        lines.join("; ")
    ))
    .into())
}

/// The in-process mock behind `--mock`: some latency, an occasional 503 or 504, and a limit a
/// little under the run's rate so that an occasional 429 shows how throttling is handled.
fn mock_profile(run_rate: Rate, client_secret: &str, tenant: Tenant) -> MockConfig {
    let slower = Rate {
        count: run_rate.count,
        per: run_rate.per.mul_f64(1.25),
    };
    MockConfig {
        rate: Some(slower),
        burst: 3,
        fail_rate: 0.05,
        fault_retry_after: Some(Duration::from_secs(1)),
        latency: Duration::from_millis(40),
        client_id: Some(MOCK_CLIENT_ID.to_owned()),
        client_secret: Some(client_secret.to_owned()),
        tenant: Some(tenant),
        // Tokens that say what they may do: a rehearsal checks the permissions as a run does.
        sign_in: SignInMock {
            app_roles: Some(
                Permission::ALL
                    .iter()
                    .map(|permission| permission.name().to_owned())
                    .collect(),
            ),
            ..SignInMock::default()
        },
        // A sensor acts some time after Graph accepted: `--confirm` shows its phase (issue 19).
        effect_delay: REHEARSAL_EFFECT_DELAY,
        ..MockConfig::default()
    }
}

/// How long after an accepted action the rehearsal's tenant shows its effect.
const REHEARSAL_EFFECT_DELAY: Duration = Duration::from_secs(2);

/// The tenant a rehearsal runs against: the mock's synthetic identities, and one made up for
/// every person the input names that they do not hold, shaped as Graph shapes a hybrid user
/// (an Active Directory and an Entra ID account; Okta too when a row names it). So a rehearsal
/// finds everyone and shows the flow, the reads and the refusals a real tenant of that shape
/// would give (two accounts offering `disable` is `accountAmbiguous` here too); whether the
/// people exist is for `resolve` against the real tenant to say. Rows that do not parse are
/// left to the input check.
fn rehearsal_tenant(input: &InputConfig) -> Tenant {
    let mut tenant = Tenant::synthetic(REHEARSAL_PADDING);
    let known = Known::of(&tenant);
    let mut made: HashMap<String, Identity> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    if let Ok(rows) = RowReader::open(&input.source, &input.options) {
        for row in rows.flatten().flatten() {
            if known.holds(&row) {
                continue;
            }
            let Some((_, named)) = row.names_identity_by() else {
                continue;
            };
            let key = named.to_ascii_lowercase();
            let identity = made.entry(key.clone()).or_insert_with(|| {
                order.push(key);
                made_up_identity(&row)
            });
            add_accounts(identity, &row);
        }
    }
    for key in order {
        if let Some(identity) = made.remove(&key) {
            tenant.push(identity);
        }
    }
    tenant
}

/// What the synthetic tenant already holds, by every name a row may use.
struct Known {
    names: std::collections::HashSet<String>,
}

impl Known {
    fn of(tenant: &Tenant) -> Known {
        let mut names = std::collections::HashSet::new();
        for identity in tenant.identities() {
            names.insert(identity.id.to_ascii_lowercase());
            names.extend(
                [
                    &identity.on_premises_security_identifier,
                    &identity.user_principal_name,
                ]
                .into_iter()
                .flatten()
                .map(|name| name.to_ascii_lowercase()),
            );
            names.extend(
                identity
                    .accounts
                    .iter()
                    .map(|account| account.identifier.to_ascii_lowercase()),
            );
        }
        Known { names }
    }

    /// Whether the row's identity (by the column that names it) is one of the synthetic ones.
    fn holds(&self, row: &Row) -> bool {
        row.names_identity_by()
            .is_some_and(|(_, named)| self.names.contains(&named.to_ascii_lowercase()))
    }
}

fn made_up_identity(row: &Row) -> Identity {
    let named = row.names_identity_by().map_or("", |(_, named)| named);
    let id = row
        .identity_account_id
        .clone()
        .unwrap_or_else(|| derived(named, "id"));
    let upn = row.upn.clone();
    // A row named by object id alone is a cloud-only user (no SID), as most such rows are.
    let sid = match (&row.sid, &row.object_id, &row.upn) {
        (Some(sid), _, _) => Some(sid.clone()),
        (None, Some(_), None) => None,
        _ => Some(format!(
            "S-1-5-21-3623811015-3361044348-30300820-{}",
            10_000 + Uuid::new_v5(&Uuid::NAMESPACE_OID, named.as_bytes()).as_u128() % 900_000
        )),
    };
    let display_name = upn
        .as_deref()
        .and_then(|upn| upn.split('@').next())
        .map_or_else(
            || format!("Rehearsal user {}", &id[..id.len().min(8)]),
            str::to_owned,
        );
    Identity {
        id,
        display_name: Some(display_name),
        domain: Some("contoso.local".to_owned()),
        is_enabled: Some(row.action != Action::Enable),
        on_premises_security_identifier: sid,
        user_principal_name: upn,
        ..Identity::default()
    }
}

/// Gives `identity` the accounts `row` needs: the one it names (by provider, and `accountId`
/// when given) offering its action, or a hybrid user's usual accounts.
fn add_accounts(identity: &mut Identity, row: &Row) {
    let named = row.names_identity_by().map_or("", |(_, named)| named);
    let mut wanted: Vec<(Provider, String)> = Vec::new();
    match (row.provider, &row.account_id) {
        (Some(provider), Some(account)) => wanted.push((provider, account.clone())),
        (Some(provider), None) => wanted.push((provider, account_for(row, provider, named))),
        (None, _) => {
            if identity.on_premises_security_identifier.is_some() {
                wanted.push((
                    Provider::ActiveDirectory,
                    account_for(row, Provider::ActiveDirectory, named),
                ));
            }
            wanted.push((
                Provider::EntraId,
                account_for(row, Provider::EntraId, named),
            ));
        }
    }
    for (provider, identifier) in wanted {
        let account = match identity
            .accounts
            .iter_mut()
            .find(|account| account.identifier.eq_ignore_ascii_case(&identifier))
        {
            Some(account) => account,
            None => {
                identity.accounts.push(LinkedAccount {
                    identifier,
                    identity_provider: provider.as_str().to_owned(),
                    actions: usual_actions(provider, row.action),
                });
                let last = identity.accounts.len() - 1;
                &mut identity.accounts[last]
            }
        };
        // The account the row names offers its action; without a provider, a hybrid user's
        // accounts offer what such accounts do, and the lookup's rules pick among them.
        if row.provider.is_some()
            && !account
                .actions
                .iter()
                .any(|offered| Action::parse(offered) == Some(row.action))
        {
            account.actions.push(row.action.as_str().to_owned());
        }
    }
}

/// The account id a made-up account of `provider` gets: an Entra ID account's is the user's
/// object id.
fn account_for(row: &Row, provider: Provider, named: &str) -> String {
    match provider {
        Provider::EntraId => row
            .object_id
            .clone()
            .unwrap_or_else(|| derived(named, "object")),
        Provider::ActiveDirectory => derived(named, "ad"),
        Provider::Okta => format!("00u{}", &derived(named, "okta").replace('-', "")[..17]),
    }
}

/// What Graph offers for a hybrid user's account of `provider` (as the synthetic tenant has it),
/// with `enable` in place of `disable` for an account a row enables: it is disabled.
fn usual_actions(provider: Provider, action: Action) -> Vec<String> {
    let usual: &[&str] = match provider {
        Provider::ActiveDirectory => &["disable", "forcePasswordReset"],
        Provider::EntraId => &[
            "disable",
            "revokeAllSessions",
            "requireUserToSignInAgain",
            "markUserAsCompromised",
        ],
        Provider::Okta => &["disable", "revokeAllSessions"],
    };
    usual
        .iter()
        .map(|offered| match (*offered, action) {
            ("disable", Action::Enable) => "enable".to_owned(),
            (offered, _) => offered.to_owned(),
        })
        .collect()
}

/// A GUID made from a name: the same on every rehearsal of one input.
fn derived(name: &str, what: &str) -> String {
    Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!("{what}:{}", name.to_ascii_lowercase()).as_bytes(),
    )
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::{InputOptions, InputSource};

    fn tenant_for(csv: &str) -> Tenant {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.csv");
        std::fs::write(&path, csv).unwrap();
        rehearsal_tenant(&InputConfig {
            source: InputSource::File(path),
            options: InputOptions::default(),
            unlisted: crate::input::plan::Unlisted::Refuse,
        })
    }

    #[test]
    fn a_rehearsal_tenant_holds_everyone_the_input_names_once() {
        let tenant = tenant_for(
            "upn,sid,objectId,identityAccountId,accountId,identityProvider,action\n\
             ann@contoso.com,,,,,,disable\n\
             ann@contoso.com,,,,,okta,revokeAllSessions\n\
             ,S-1-5-21-1-2-3-4,,,,,forcePasswordReset\n\
             ,,0b9f4c7e-1111-4a2b-9c3d-0123456789ab,,,,revokeAllSessions\n\
             ,,,id-given,acct-given,activeDirectory,enable\n",
        );
        let made = &tenant.identities()[REHEARSAL_PADDING..];
        assert_eq!(made.len(), 4, "Ann once");
        let ann = &made[0];
        assert_eq!(ann.user_principal_name.as_deref(), Some("ann@contoso.com"));
        let providers: Vec<&str> = ann
            .accounts
            .iter()
            .map(|a| a.identity_provider.as_str())
            .collect();
        assert_eq!(providers, ["activeDirectory", "entraID", "okta"]);
        assert_eq!(
            made[1].on_premises_security_identifier.as_deref(),
            Some("S-1-5-21-1-2-3-4")
        );
        let cloud_only = &made[2];
        assert_eq!(cloud_only.on_premises_security_identifier, None);
        assert_eq!(
            cloud_only.accounts[0].identifier,
            "0b9f4c7e-1111-4a2b-9c3d-0123456789ab"
        );
        let given = &made[3];
        assert_eq!(given.id, "id-given");
        assert_eq!(given.accounts[0].identifier, "acct-given");
        assert!(given.accounts[0].actions.contains(&"enable".to_owned()));
        assert_eq!(given.is_enabled, Some(false));
    }

    #[test]
    fn a_rehearsal_tenant_does_not_shadow_a_synthetic_identity() {
        let tenant = tenant_for(&format!(
            "upn,action\n{},disable\n",
            Tenant::synthetic_upn(7)
        ));
        assert_eq!(tenant.len(), REHEARSAL_PADDING);
    }
}
