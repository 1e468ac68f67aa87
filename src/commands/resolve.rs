//! `resolve`: the review step before acting on a spreadsheet that names people (SPEC section 8).
//! Every row is looked up (as `run --verify` would), the input is written back with the three ids
//! Graph needs filled in and what was found beside them, and each row that cannot be resolved is
//! listed as `FILE:LINE: reason`. No action is sent.

use crate::graph::permissions::Needs;
use crate::lookup::guard::Guardrails;
use std::future::Future;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use serde_json::Value;
use tracing::info;

use crate::config::{Existing, ResolveConfig};
use crate::graph::identity::LinkedAccount;
use crate::input::plan::{Checker, Unlisted};
use crate::input::{InputSource, Job, RowReader};
use crate::lookup::Directory;
use crate::lookup::decide::{AccountDecision, Decider, RowDecision};
use crate::lookup::directory::Found;
use crate::output::journal::carry_names_besides;
use crate::output::paths::{self, NamedPath};
use crate::output::sheet::write_sheet;
use crate::runner::rate::ThrottleGate;
use crate::runner::shutdown;
use crate::sanitize::printable;
use crate::{ExitStatus, logging};

use super::connect::{connect, connect_unless_interrupted};
use super::look_up::find;
use super::prepare::{read_input, report_bad_rows, unless_interrupted};
use super::validate::{Keep, check_rows};

/// The columns `resolve` writes before the input's own: the four `run` reads.
const ID_COLUMNS: [&str; 4] = [
    "identityAccountId",
    "accountId",
    "action",
    "identityProvider",
];
/// The columns it writes after them: what the lookup found.
const FOUND_COLUMNS: [&str; 4] = ["resolvedBy", "displayName", "isEnabled", "offeredActions"];

/// `resolve`: look every row up, write the input back with the ids, send no action.
pub async fn resolve(
    config: ResolveConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<ExitStatus> {
    let interrupt = shutdown::listen(shutdown);
    check_files(&config)?;
    let input = read_input(&config.input, &interrupt).await?;
    let checked = {
        let input = input.config.clone();
        unless_interrupted(&interrupt, "checking the input", move || {
            check_rows(
                &input.source,
                &input.options,
                input.unlisted,
                None,
                None,
                true,
                Keep::Plan,
            )
            .map_err(anyhow::Error::new)
        })
        .await?
    };
    if !checked.plan.is_clean() {
        report_bad_rows(&checked.plan);
        return Ok(ExitStatus::InputError);
    }
    let needs = Needs::of(false, true, checked.wanted.reads_users(), false);
    let connection =
        connect_unless_interrupted(&interrupt, connect(&config.graph, &input.config, &needs))
            .await?;
    let security = Arc::new(ThrottleGate::new());
    // `resolve` shows what rows name; the guardrails belong to the run that acts.
    let (directory, _, counts) = find(
        &config.graph,
        &Guardrails::default(),
        config.progress,
        &connection.client,
        &connection.tokens,
        &security,
        &checked.wanted,
        &interrupt,
    )
    .await?;
    let written = {
        let input = input.config.clone();
        let carry_columns = checked.plan.carry_columns.clone();
        let output = config.output.clone();
        let existing = config.existing;
        unless_interrupted(&interrupt, "writing the resolved rows", move || {
            let mut rows = RowReader::open(&input.source, &input.options)?
                .with_carry_columns(carry_columns.clone());
            let sheet = resolved_sheet(&mut rows, &directory, &carry_columns, input.unlisted)?;
            let names = column_names(&carry_columns);
            // Again just before writing: the lookup took a while, and a run may have started
            // writing its records there since (issue 16).
            not_a_record(&output, existing).map_err(|e| anyhow!(e))?;
            write_sheet(&output, &names, sheet.cells)
                .with_context(|| format!("cannot write {}", output.display()))?;
            Ok(sheet.unresolved)
        })
        .await?
    };
    if let Some(mock) = connection.mock {
        mock.shutdown().await;
    }
    let rows = checked.plan.rows;
    for line in &written {
        eprintln!("{line}");
    }
    let message = format!(
        "{} of {rows} row(s) resolved with {} read(s); written to {}",
        rows - written.len() as u64,
        counts.reads,
        config.output.display()
    );
    match logging::format() {
        crate::config::LogFormat::Text => eprintln!("{message}"),
        crate::config::LogFormat::Json => info!(
            rows,
            unresolved = written.len(),
            reads = counts.reads,
            output = %config.output.display(),
            "identities resolved"
        ),
    }
    Ok(if written.is_empty() {
        ExitStatus::Success
    } else {
        ExitStatus::RowsFailed
    })
}

/// The input and the output must be different files, the output's directory must exist, and
/// what the output names must be a file (issue 10's checks, as `run` makes them), and no run's
/// record (issue 16).
fn check_files(config: &ResolveConfig) -> anyhow::Result<()> {
    let reads: Vec<NamedPath<'_>> = match &config.input.source {
        InputSource::File(path) => vec![NamedPath {
            role: "input",
            path,
        }],
        _ => Vec::new(),
    };
    let writes = [NamedPath {
        role: "output (-o)",
        path: &config.output,
    }];
    paths::check_files(&reads, &writes).map_err(|e| anyhow!(e))?;
    not_a_record(&config.output, config.existing).map_err(|e| anyhow!(e))
}

/// The output is no run's record, and an existing file only with `--replace` (issue 16).
fn not_a_record(output: &std::path::Path, existing: Existing) -> Result<(), String> {
    let output = NamedPath {
        role: "output (-o)",
        path: output,
    };
    paths::check_not_a_record(&output, existing, &[std::path::Path::new(".")], &[])
}

/// The output's column names: the ids, the input's carried columns (renamed where they clash),
/// then what was found.
fn column_names(carry_columns: &[String]) -> Vec<String> {
    let fixed: Vec<&str> = ID_COLUMNS.iter().chain(&FOUND_COLUMNS).copied().collect();
    ID_COLUMNS
        .iter()
        .map(|name| (*name).to_owned())
        .chain(carry_names_besides(carry_columns, &fixed))
        .chain(FOUND_COLUMNS.iter().map(|name| (*name).to_owned()))
        .collect()
}

/// Every row's output cells, and the `FILE:LINE: reason` of each that did not resolve.
struct Sheet {
    cells: Vec<Vec<Value>>,
    unresolved: Vec<String>,
}

fn resolved_sheet(
    rows: &mut RowReader,
    directory: &Directory,
    carry_columns: &[String],
    unlisted: Unlisted,
) -> anyhow::Result<Sheet> {
    let file = rows.file().to_owned();
    let checker = Checker::new(&file, Some(rows.format()), unlisted);
    // Every row looked up, as `run --verify` would decide it; the guardrails belong to the run.
    let mut decider = Decider::new(checker, Some(directory), None, true);
    let mut sheet = Sheet {
        cells: Vec::new(),
        unresolved: Vec::new(),
    };
    for row in rows.by_ref() {
        let row = match row? {
            Ok(row) => row,
            // The input was checked a moment ago: a row that no longer parses changed since.
            Err(error) => {
                sheet.unresolved.push(format!(
                    "{file}:{}: {} (the input changed while it was read)",
                    error.line, error.reason
                ));
                continue;
            }
        };
        let given = row.clone();
        let (job, ids, found) = match decider.decide(Ok(row)) {
            RowDecision::Accounts(accounts) => match accounts.into_iter().next() {
                Some(AccountDecision::Send(job) | AccountDecision::Duplicate(job)) => {
                    let (ids, found) = resolved_cells(&job, directory);
                    (job, ids, found)
                }
                Some(AccountDecision::Refused { job, refusal }) => {
                    sheet.unresolved.push(format!(
                        "{file}:{}: {}: {}",
                        job.row,
                        refusal.code,
                        printable(&refusal.message)
                    ));
                    let (ids, found) =
                        refused_cells(&job, refusal.identity_id.as_deref(), directory);
                    (job, ids, found)
                }
                // `resolve` continues no earlier run, and a row reaches at least one account.
                Some(AccountDecision::CarriedOver { .. }) | None => continue,
            },
            RowDecision::Rejected(error) => {
                sheet
                    .unresolved
                    .push(format!("{file}:{}: {}", error.line, error.reason));
                let job = given.unresolved();
                let (ids, found) = refused_cells(&job, None, directory);
                (job, ids, found)
            }
            // With the lookup's answers, every row is decided.
            RowDecision::ToLookUp(_) => continue,
        };
        let mut carry: Vec<Value> = job.carry.iter().cloned().map(Value::from).collect();
        carry.resize(carry_columns.len(), Value::from(""));
        let [identity_account_id, account_id, provider] = ids;
        let mut cells = vec![
            identity_account_id,
            account_id,
            Value::from(job.action.as_str()),
            provider,
        ];
        cells.extend(carry);
        cells.extend(found);
        sheet.cells.push(cells);
    }
    Ok(sheet)
}

/// A resolved row's ids, and what was found: the identity's name and state, and what the
/// account offers.
fn resolved_cells(job: &Job, directory: &Directory) -> ([Value; 3], [Value; 4]) {
    let identity = match directory.by_id(&job.identity_account_id) {
        Found::One(fetched) => Some(&fetched.identity),
        _ => None,
    };
    let account = identity.and_then(|identity| {
        identity
            .accounts
            .iter()
            .find(|account| account.identifier == job.account_id)
    });
    (
        [
            Value::from(job.identity_account_id.clone()),
            Value::from(job.account_id.clone()),
            Value::from(job.provider.map_or("", |p| p.as_str())),
        ],
        [
            Value::from(job.resolved_by.map_or("", |c| c.as_str())),
            Value::from(
                identity
                    .and_then(|identity| identity.display_name.clone())
                    .unwrap_or_default(),
            ),
            identity
                .and_then(|identity| identity.is_enabled)
                .map_or(Value::Null, Value::from),
            Value::from(account.map(LinkedAccount::offered).unwrap_or_default()),
        ],
    )
}

/// What an unresolved row gave, and the identity when one was found: the responder sees whom
/// the row names, and resolvedBy stays empty.
fn refused_cells(
    job: &Job,
    identity_id: Option<&str>,
    directory: &Directory,
) -> ([Value; 3], [Value; 4]) {
    let found = identity_id.and_then(|id| match directory.by_id(id) {
        Found::One(fetched) => Some(&fetched.identity),
        _ => None,
    });
    (
        [
            Value::from(job.identity_account_id.clone()),
            Value::from(job.account_id.clone()),
            Value::from(job.provider.map_or("", |p| p.as_str())),
        ],
        [
            Value::from(""),
            found
                .and_then(|identity| identity.display_name.clone())
                .map_or(Value::from(""), Value::from),
            found
                .and_then(|identity| identity.is_enabled)
                .map_or(Value::Null, Value::from),
            Value::Array(Vec::new()),
        ],
    )
}
