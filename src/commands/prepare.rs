//! What `run` settles before the first request: that its files are distinct and writable, the
//! input (spooled when it can be read only once), the results file claimed and locked, whether an
//! earlier run's results may be continued or replaced, the input check, the user's confirmation,
//! `--dry-run`, and the credentials. Every error here means nothing was sent.

use crate::lookup::guard::PRIVILEGED_ROLES;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::LogFormat;
use crate::config::{Confirm, GraphAccess, InputConfig, OutputFiles, Resume, RunConfig, Target};
use crate::graph::auth::delegated;
use crate::graph::auth::{TokenEndpoint, Tokens};
use crate::graph::permissions::Needs;
use crate::input::InputSource;
use crate::input::Row;
use crate::input::plan::Plan;
use crate::input::plan::RowKey;
use crate::lookup::Wanted;
use crate::lookup::decide::{Confirmed, DoneEarlier};
use crate::lookup::guard::Guardrails;
use crate::output::journal::InflightLog;
use crate::output::lock::{
    self, Claim, GuardsRecord, LockError, ProtectFileRecord, RunLock, RunState,
};
use crate::output::paths::{self, NamedPath};
use crate::output::resume::{self, Earlier, Prior};
use crate::{Unsent, logging, output};

use super::validate::{Checked, Keep, check_rows};

/// Refuses, before any file is touched, a run whose files are not distinct or whose output
/// directories do not exist (issue 10).
pub(super) fn check_files(config: &RunConfig) -> anyhow::Result<()> {
    let files = &config.files;
    let lock = RunLock::path_for(&files.results);
    let inflight = InflightLog::path_for(&files.results);
    let snapshot = output::snapshot::path_for(&files.results);
    let mut writes = vec![
        NamedPath {
            role: "results file",
            path: &files.results,
        },
        NamedPath {
            role: "lock file",
            path: &lock,
        },
        NamedPath {
            role: "in-flight log",
            path: &inflight,
        },
        NamedPath {
            role: "identity snapshot",
            path: &snapshot,
        },
    ];
    if let Some(path) = &files.undo {
        writes.push(NamedPath {
            role: "undo file (--undo-file)",
            path,
        });
    }
    if let Some(path) = &files.summary_json {
        writes.push(NamedPath {
            role: "summary file (--summary-json)",
            path,
        });
    }
    let reads: Vec<NamedPath<'_>> = match &config.input.source {
        InputSource::File(path) => vec![NamedPath {
            role: "input",
            path,
        }],
        _ => Vec::new(),
    };
    paths::check_files(&reads, &writes).map_err(|e| anyhow!(e))?;
    // The undo and summary files are no run's record (issue 16); an existing undo file is
    // replaced only with --replace, or when it is the one the run this resumes wrote.
    let search = [paths::parent_dir(&files.results), Path::new(".")];
    if let Some(path) = &files.undo {
        let own = match config.resume {
            Resume::Continue { .. } => undo_named_by_lock(&lock),
            Resume::Fresh => None,
        };
        let undo = NamedPath {
            role: "undo file (--undo-file)",
            path,
        };
        paths::check_not_a_record(
            &undo,
            files.existing,
            &search,
            &own.as_deref().into_iter().collect::<Vec<_>>(),
        )
        .map_err(|e| anyhow!(e))?;
    }
    if let Some(path) = &files.summary_json {
        let summary = NamedPath {
            role: "summary file (--summary-json)",
            path,
        };
        // A scheduled job's summary is replaced every run: only records are refused.
        paths::check_not_a_record(&summary, paths::Existing::Replace, &search, &[])
            .map_err(|e| anyhow!(e))?;
    }
    Ok(())
}

/// The undo file the lock file at `lock` says its run wrote.
fn undo_named_by_lock(lock: &Path) -> Option<std::path::PathBuf> {
    let state = output::report::read_lock(lock);
    state
        .read()?
        .about
        .undo_file
        .as_ref()
        .map(std::path::PathBuf::from)
}

/// Runs blocking `work` (reading a pipe, asking on the terminal, checking a large input) unless
/// the first Ctrl-C or SIGTERM comes first; then the run ends at once with exit 130.
pub(super) async fn unless_interrupted<T: Send + 'static>(
    interrupt: &CancellationToken,
    what: &'static str,
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let task = tokio::task::spawn_blocking(work);
    tokio::select! {
        biased;
        () = interrupt.cancelled() => Err(Unsent::interrupted(anyhow!("interrupted while {what}")).into()),
        joined = task => joined.with_context(|| format!("{what} stopped unexpectedly"))?,
    }
}

/// The input, as the run reads it (twice: check, then act).
pub(super) struct Input {
    pub(super) config: InputConfig,
    /// The private copy of an input that can be read only once; removed when dropped.
    _spool: Option<tempfile::NamedTempFile>,
}

/// Standard input, a named pipe or a process substitution (`<(...)`) can be read only once, and
/// the run reads its input twice, so such input is first copied to a private temporary file.
/// Opening a pipe waits for its writer, so this honours the first signal (issue 10).
pub(super) async fn read_input(
    config: &InputConfig,
    interrupt: &CancellationToken,
) -> anyhow::Result<Input> {
    let (name, path) = match &config.source {
        InputSource::File(path) => {
            let metadata = std::fs::metadata(path)
                .with_context(|| format!("{}: cannot read", path.display()))?;
            if metadata.is_file() {
                return Ok(Input {
                    config: config.clone(),
                    _spool: None,
                });
            }
            if metadata.is_dir() {
                bail!("{}: is a directory, not a spreadsheet", path.display());
            }
            (path.display().to_string(), Some(path.clone()))
        }
        InputSource::Stdin => ("<stdin>".to_owned(), None),
        InputSource::Spooled { .. } => {
            return Ok(Input {
                config: config.clone(),
                _spool: None,
            });
        }
    };
    let spool = unless_interrupted(interrupt, "reading the input", move || {
        let mut file = tempfile::NamedTempFile::new()
            .context("cannot create a temporary file for the input")?;
        match &path {
            Some(path) => {
                let mut source = std::fs::File::open(path)
                    .with_context(|| format!("{}: cannot read", path.display()))?;
                std::io::copy(&mut source, &mut file)
                    .with_context(|| format!("{}: cannot read", path.display()))?;
            }
            None => {
                std::io::copy(&mut std::io::stdin().lock(), &mut file)
                    .context("cannot read standard input")?;
            }
        }
        Ok(file)
    })
    .await?;
    Ok(Input {
        config: InputConfig {
            source: InputSource::Spooled {
                path: spool.path().to_path_buf(),
                name,
            },
            ..config.clone()
        },
        _spool: Some(spool),
    })
}

/// Takes the run's lock and the results file. Another run holding them stops this one
/// (exit 4); a lock that cannot be taken at all (a missing or read-only directory) is a usage
/// error (exit 2): nothing was sent either way.
pub(super) fn claim_results(files: &OutputFiles) -> anyhow::Result<Claim> {
    RunLock::claim(&files.results).map_err(|error| match error {
        LockError::Busy { .. } | LockError::BusyElsewhere { .. } => Unsent::stopped(error).into(),
        LockError::Io { .. } => Unsent::input(error).into(),
    })
}

/// Removes the results file this run created if the run ends before its first request, so that a
/// failed start never leaves an empty file that blocks the next run (issue 10).
pub(super) struct CreatedResults<'a> {
    path: &'a Path,
    remove: bool,
}

impl<'a> CreatedResults<'a> {
    pub(super) fn new(path: &'a Path, created: bool) -> CreatedResults<'a> {
        CreatedResults {
            path,
            remove: created,
        }
    }

    /// The first request is about to leave: the file is the run's record from now on.
    pub(super) fn keep(&mut self) {
        self.remove = false;
    }
}

impl Drop for CreatedResults<'_> {
    fn drop(&mut self) {
        if self.remove {
            let _ = std::fs::remove_file(self.path);
        }
    }
}

/// What an earlier run left in the results file, when this run may continue it; `None` for a
/// new file. A rehearsal never continues, replaces or stands in for a real run's results, and
/// results are never continued against another endpoint (issue 10).
pub(super) async fn earlier_results(
    config: &RunConfig,
    claim: &Claim,
) -> anyhow::Result<Option<Arc<Prior>>> {
    if !claim.had_results {
        return Ok(None);
    }
    let results = &config.files.results;
    let rehearsal = config.graph.target.is_rehearsal();
    let previous = claim.previous.as_ref();
    let Resume::Continue { .. } = config.resume else {
        if rehearsal && previous.is_some_and(RunState::is_rehearsal) {
            // An earlier rehearsal of the same batch: rehearsing again replaces it.
            return Ok(None);
        }
        if rehearsal {
            bail!(
                "{} holds results that are not a rehearsal's (a real run's, or of unknown origin); a rehearsal never writes over them. Leave out -o (a rehearsal writes <input>.rehearsal.jsonl) or choose another file",
                results.display()
            );
        }
        bail!(
            "{} already holds an earlier run's results. Pass --resume to continue that run (rows that succeeded are skipped), or choose another file with -o",
            results.display()
        );
    };
    let endpoint = config.graph.target.endpoint();
    match previous.and_then(|state| state.endpoint.as_deref()) {
        Some(earlier) if earlier != endpoint => {
            let what = if earlier == lock::MOCK_ENDPOINT {
                "a rehearsal against the built-in mock; a rehearsal's results never count for a real run"
                    .to_owned()
            } else {
                format!("a run against {earlier}")
            };
            bail!(
                "{} holds the results of {what}, and this run would send to {}. Resume only against the endpoint the results came from, or run into another file with -o",
                results.display(),
                if rehearsal {
                    lock::MOCK_ENDPOINT
                } else {
                    endpoint.as_str()
                }
            );
        }
        Some(_) => {}
        None if rehearsal => bail!(
            "cannot tell where the results in {} were sent (the run state beside them is missing); a rehearsal never continues them. Leave out -o, or choose another file",
            results.display()
        ),
        None => {
            warn!(results = %results.display(), "no record of where the earlier results were sent (the lock file beside them is missing or older); continuing them against this endpoint")
        }
    }
    let path = results.clone();
    let prior = tokio::task::spawn_blocking(move || resume::scan(&path))
        .await
        .context("reading the earlier results stopped unexpectedly")??;
    // The records themselves say who answered them, whatever became of the lock file.
    if config.graph.target.reaches_microsoft() && prior.answered_by_mock > 0 {
        bail!(
            "{} holds {} record(s) answered by this tool's mock (a rehearsal's results); they never count for a real run. Run into another file with -o",
            results.display(),
            prior.answered_by_mock
        );
    }
    if rehearsal && prior.answered_by_other > 0 {
        bail!(
            "{} holds {} record(s) not answered by this tool's mock (a real run's results); a rehearsal never continues them. Leave out -o, or choose another file",
            results.display(),
            prior.answered_by_other
        );
    }
    Ok(Some(Arc::new(prior)))
}

/// What `--resume` continues: the earlier run's results, and whether the input is the file it
/// read. Travels as one value from the check to the lookup and the feed.
#[derive(Clone)]
pub(super) struct Resumed {
    pub(super) prior: Arc<Prior>,
    /// The input's fingerprint is the one the earlier run recorded.
    pub(super) same_input: bool,
}

impl Resumed {
    /// The earlier run, as the row decider asks it.
    pub(super) fn earlier(&self) -> Earlier<'_> {
        Earlier {
            prior: &self.prior,
            same_input: self.same_input,
        }
    }
}

/// The row decider asks the earlier run's results what they hold.
impl DoneEarlier for Earlier<'_> {
    fn record_of_line(&self, row: &Row) -> Option<u64> {
        Earlier::record_of_line(self, row)
    }

    fn key_of_line(&self, row: &Row) -> Option<RowKey> {
        Earlier::key_of_line(self, row)
    }

    fn succeeded(&self, key: RowKey) -> Option<u64> {
        self.prior.succeeded.get(&key).copied()
    }

    fn unanswered_attempts(&self, key: RowKey) -> u32 {
        self.prior.unknown_attempts.get(&key).copied().unwrap_or(0)
    }
}

/// The first read of the input, checked.
pub(super) struct CheckedInput {
    pub(super) plan: Plan,
    /// The digest of every row's decision: what the feed sends when no lookup is needed.
    pub(super) confirmed: Confirmed,
    /// What the lookup must ask before the first action.
    pub(super) wanted: Wanted,
    /// For the run state, and to tell whether the input changed since an earlier run.
    pub(super) fingerprint: String,
    /// The input is the file the earlier run read (`--resume`).
    pub(super) same_input: bool,
}

/// Every row checked before the first request leaves: the plan, what to look up, and the
/// input's fingerprint for the run state.
pub(super) async fn check_input(
    input: &Input,
    prior: Option<Arc<Prior>>,
    previous: Option<&RunState>,
    verify: bool,
    interrupt: &CancellationToken,
) -> anyhow::Result<CheckedInput> {
    let config = input.config.clone();
    let previous_fingerprint = previous.map(|state| state.input_fingerprint.clone());
    unless_interrupted(interrupt, "checking the input", move || {
        let fingerprint = match &config.source {
            InputSource::File(path) | InputSource::Spooled { path, .. } => {
                lock::fingerprint(path).context("cannot read the input")?
            }
            InputSource::Stdin => String::new(),
        };
        let same_input = previous_fingerprint.as_deref() == Some(fingerprint.as_str());
        let earlier = prior.as_deref().map(|prior| Earlier { prior, same_input });
        let Checked {
            plan,
            wanted,
            confirmed,
            ..
        } = check_rows(
            &config.source,
            &config.options,
            config.unlisted,
            None,
            earlier.as_ref().map(|earlier| earlier as &dyn DoneEarlier),
            verify,
            Keep::PlanAndDecisions,
        )?;
        // The decisions the feed sends when no row needs a lookup; with one, the read after
        // it decides every row again, and these are let go.
        let confirmed = confirmed.filter(|_| wanted.is_empty()).unwrap_or_default();
        Ok(CheckedInput {
            plan,
            wanted,
            confirmed,
            fingerprint,
            same_input,
        })
    })
    .await
}

/// Tells why nothing was sent: every bad row (the first 50), as text or as JSON log lines.
pub(super) fn report_bad_rows(plan: &Plan) {
    let message = format!(
        "{} row error(s) in {}; nothing was sent. Fix them and run again (`graph-remediate validate` shows the plan).",
        plan.errors.count, plan.input
    );
    match logging::format() {
        LogFormat::Text => {
            eprint!("{}", output::plan::render_errors(plan));
            eprintln!("graph-remediate: {message}");
        }
        // A scheduled job's log collector gets the rows' errors as JSON lines too.
        LogFormat::Json => {
            for note in &plan.errors.shown {
                let fields = serde_json::json!({"input": plan.input, "line": note.line, "error": note.message});
                eprintln!("{}", logging::json_line("ERROR", "bad input row", &fields));
            }
            let fields = serde_json::json!({"input": plan.input, "errors": plan.errors.count});
            eprintln!("{}", logging::json_line("ERROR", &message, &fields));
        }
    }
}

/// Refuses to resume onto results written for another input, unless the user says so.
pub(super) async fn check_resumable(
    config: &RunConfig,
    previous: Option<&RunState>,
    fingerprint: &str,
    interrupt: &CancellationToken,
) -> anyhow::Result<()> {
    let output = &config.files.results;
    let Some(previous) = previous else {
        warn!(results = %output.display(), "no record of the input the earlier run used (its lock file is gone); cannot tell whether the input changed");
        return Ok(());
    };
    let accept = matches!(
        config.resume,
        Resume::Continue {
            accept_changed_input: true
        }
    );
    if previous.input_fingerprint == fingerprint {
        return Ok(());
    }
    if accept {
        warn!(
            "the input changed since the results were written; continuing because of --accept-changed-input"
        );
        return Ok(());
    }
    let message = format!(
        "the input changed since {} was written (then: {} rows of {}). Rows that succeeded are still matched by identity account, account, action and provider, but check the input is the one you mean",
        output.display(),
        previous.rows,
        previous.input
    );
    if is_interactive() {
        eprintln!("graph-remediate: {message}.");
        let answer = unless_interrupted(interrupt, "waiting for an answer", || {
            ask("Resume anyway? [y/N] ")
        })
        .await?;
        if is_yes(&answer) {
            return Ok(());
        }
        bail!("not resumed");
    }
    bail!("{message}; pass --accept-changed-input to resume anyway")
}

/// What the lock file records of the run's guardrails (issue 16).
pub(super) fn guards_record(rails: &Guardrails) -> GuardsRecord {
    let mut protect_files: Vec<ProtectFileRecord> = Vec::new();
    if let Some(list) = &rails.protect {
        for entry in &list.protected {
            let path = entry.file.as_str();
            match protect_files.iter_mut().find(|file| file.path == path) {
                Some(file) => file.protected.push(entry.value.clone()),
                None => protect_files.push(ProtectFileRecord {
                    path: path.to_owned(),
                    protected: vec![entry.value.clone()],
                }),
            }
        }
    }
    GuardsRecord {
        protect_files,
        protect_privileged: rails.privileged,
    }
}

/// `--resume`: refuses, before any read, to continue results written under guardrails this run
/// lacks (issue 16). Rows the earlier run refused as protected run again, and without the guard
/// that refused them they would be sent.
pub(super) fn check_guards_kept(
    config: &RunConfig,
    previous: Option<&RunState>,
    prior: &Prior,
) -> anyhow::Result<()> {
    let rails = &config.guardrails;
    let now = guards_record(rails);
    let mut missing = match previous.and_then(|state| state.guards.as_ref()) {
        Some(earlier) => now.missing_now(earlier),
        None => Vec::new(),
    };
    // Without the lock file's record (gone, or older), the refusals in the results still say
    // that a guard was in force.
    if prior.refused_protected > 0 && now.protect_files.is_empty() && missing.is_empty() {
        missing.push(format!(
            "a protect list (the results hold {} protectedIdentity refusal(s))",
            prior.refused_protected
        ));
    }
    if prior.refused_privileged > 0
        && !rails.privileged
        && !missing.iter().any(|guard| guard == "--protect-privileged")
    {
        missing.push(format!(
            "--protect-privileged (the results hold {} privilegedIdentity refusal(s))",
            prior.refused_privileged
        ));
    }
    if missing.is_empty() {
        return Ok(());
    }
    bail!(
        "--resume: the earlier run on {} was guarded by what this run lacks: {}. Rows it refused as protected would be sent. Give the same --protect files and --protect-privileged (the default protect file is read from the config directory of the user who runs it, so HOME or XDG_CONFIG_HOME under sudo or cron may differ)",
        config.files.results.display(),
        missing.join("; ")
    )
}

/// Before sending: on a terminal, show the plan and ask; elsewhere, demand `--yes`.
pub(super) async fn confirm(
    config: &RunConfig,
    plan: &Plan,
    interrupt: &CancellationToken,
) -> anyhow::Result<()> {
    let to_send = plan.actions.saturating_sub(plan.already_succeeded);
    if let Some(max) = config.guardrails.max_actions
        && to_send > max
    {
        bail!(
            "the plan holds {to_send} actions, more than --max-actions {max}. Check the input (--dry-run shows the plan), then split it or raise --max-actions"
        );
    }
    if config.confirm == Confirm::Yes {
        return Ok(());
    }
    if !is_interactive() {
        bail!(
            "not on a terminal, so there is no one to confirm {to_send} actions on {} accounts; add --yes to send them (see the plan with --dry-run)",
            plan.accounts
        );
    }
    eprint!("{}", output::plan::render_text(plan));
    eprintln!("{}", guards_line(&config.guardrails));
    let accounts = plan.accounts;
    // A mass action takes a deliberate answer: a `y` typed out of habit does not start it, and
    // neither does copying a number from the question: it must be read from the plan (issue 16).
    let (question, typed) = if to_send > TYPED_CONFIRMATION_ABOVE {
        (
            format!(
                "More than {TYPED_CONFIRMATION_ABOVE} actions: read the plan above. To proceed, type the number of accounts: "
            ),
            true,
        )
    } else {
        (
            format!("Proceed with {to_send} actions on {accounts} accounts? [y/N] "),
            false,
        )
    };
    let answer =
        unless_interrupted(interrupt, "waiting for an answer", move || ask(&question)).await?;
    let confirmed = if typed {
        answer == accounts.to_string()
    } else {
        is_yes(&answer)
    };
    if confirmed {
        Ok(())
    } else if typed {
        bail!("not confirmed (the number of accounts in the plan was not typed)")
    } else {
        bail!("not confirmed")
    }
}

/// The guards in force, on one line for the plan (issue 16): a protect file of comments only
/// guards nobody, and the operator should see that before confirming.
pub(super) fn guards_line(rails: &Guardrails) -> String {
    let guards = rails.in_force();
    if guards.is_empty() {
        "Guards in force: none".to_owned()
    } else {
        format!("Guards in force: {}", guards.join("; "))
    }
}

/// Logs the guards in force as the run starts, and warns of a protect file that protects nobody
/// (issue 16): an empty list is no guard, whatever its name promises.
pub(super) fn log_guards(rails: &Guardrails) {
    let guards = rails.in_force();
    info!(guards = %guards.join("; "), "guards in force");
    for guard in guards
        .iter()
        .filter(|guard| guard.ends_with("protects nobody)"))
    {
        warn!(guard = %guard, "a protect file holds no protected entry, so it guards nobody");
    }
}

/// Plans of more actions than this ask for the number of accounts to be typed, not `y`.
pub(crate) const TYPED_CONFIRMATION_ABOVE: u64 = 20;

pub(super) fn is_interactive() -> bool {
    use std::io::IsTerminal;
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// Only `y` or `yes` is yes.
fn is_yes(answer: &str) -> bool {
    matches!(answer.to_ascii_lowercase().as_str(), "y" | "yes")
}

/// Asks a question on the terminal: the answer, trimmed.
fn ask(question: &str) -> anyhow::Result<String> {
    eprint!("{question}");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .context("cannot read the answer")?;
    Ok(answer.trim().to_owned())
}

/// `--dry-run`: the plan, the resolved settings and the expected duration.
pub(super) fn print_dry_run(config: &RunConfig, plan: &Plan) {
    use std::fmt::Write as _;
    let to_send = plan.actions.saturating_sub(plan.already_succeeded);
    let (graph, cloud) = match &config.graph.target {
        Target::Graph { root, cloud, .. } => (
            root.as_str().trim_end_matches('/').to_owned(),
            format!("{cloud:?}"),
        ),
        Target::Mock { .. } => (
            "the built-in mock".to_owned(),
            "none (rehearsal)".to_owned(),
        ),
    };
    let pacing = &config.graph.pacing;
    let mut text = output::plan::render_text(plan);
    let _ = writeln!(text);
    let _ = writeln!(text, "Dry run: nothing was sent. The run would use:");
    let _ = writeln!(
        text,
        "  endpoint      {graph}/{}/security/identities/identityAccounts/{{id}}/microsoft.graph.security.invokeAction",
        config.graph.target.api_version().as_str()
    );
    let _ = writeln!(text, "  cloud         {cloud}");
    let _ = writeln!(text, "  credentials   {}", credential_source(config));
    let _ = writeln!(
        text,
        "  rate          {} (burst {}), concurrency {}",
        pacing.rate, pacing.burst, pacing.concurrency
    );
    let _ = writeln!(
        text,
        "  retries       up to {} per row, waiting at most {} per row",
        config.graph.retry.max_retries,
        humantime::format_duration(config.graph.retry.max_wait)
    );
    let _ = writeln!(text, "  results       {}", config.files.results.display());
    if plan.already_succeeded > 0 {
        let _ = writeln!(
            text,
            "  resume        {} row(s) already succeeded and would be skipped",
            plan.already_succeeded
        );
    }
    // Rows still to be looked up may each become an action: count them as the upper bound,
    // unless some act on every account of a person (issue 20), whose count only the lookup knows.
    let at_most = to_send + plan.lookups;
    let seconds = at_most as f64 / pacing.rate.per_second_f64();
    let took = humantime::format_duration(Duration::from_secs(seconds.ceil() as u64));
    let _ = match plan.lookups_on_all_accounts {
        0 => writeln!(
            text,
            "  expected      up to {at_most} actions take at least {took} at {} (more if Graph throttles, and lookups come first)",
            pacing.rate
        ),
        fanned => writeln!(
            text,
            "  expected      {at_most} actions or more take at least {took} at {} ({fanned} row(s) act on every linked account of the person they name, an action each; more if Graph throttles, and lookups come first)",
            pacing.rate
        ),
    };
    let rails = &config.guardrails;
    if let Some(list) = &rails.protect {
        let _ = writeln!(
            text,
            "  protected     {} people, {} allowed, from {}; every row is looked up",
            list.protected.len(),
            list.allowed.len(),
            list.files
                .iter()
                .map(|file| crate::sanitize::printable_owned(&file.display().to_string()))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let guards = rails.in_force();
    let guards = if guards.is_empty() {
        "none".to_owned()
    } else {
        guards.join("; ")
    };
    let _ = writeln!(text, "  guards        {guards}");
    if rails.privileged {
        let _ = writeln!(
            text,
            "  privileged    holders of {} directory roles (active, eligible, through groups) are read first and refused (needs RoleManagement.Read.Directory, GroupMember.Read.All, PrivilegedEligibilitySchedule.Read.AzureADGroup, AdministrativeUnit.Read.All)",
            PRIVILEGED_ROLES.len()
        );
    }
    if let Some(max) = rails.max_actions {
        let verdict = if to_send > max {
            "the run would refuse to start".to_owned()
        } else if at_most > max {
            format!(
                "up to {at_most} once looked up; the run refuses to start if more than {max} resolve"
            )
        } else {
            "within it".to_owned()
        };
        let _ = writeln!(text, "  max actions   {max}: {verdict}");
    }
    print!("{text}");
}

/// The run's credentials (SPEC section 2) for a Graph target. Missing or unreadable credentials
/// stop the run before anything is sent (exit 4).
pub(super) fn credentials(graph: &GraphAccess, needs: &Needs) -> anyhow::Result<Tokens> {
    let Target::Graph {
        root,
        authority,
        cloud,
        ..
    } = &graph.target
    else {
        bail!("the built-in mock signs in by itself");
    };
    let endpoint = TokenEndpoint::new(authority, root.as_str())
        .context("--authority-url (or AZURE_AUTHORITY_HOST)")?;
    if let (Ok(cloud_root), Ok(cloud_authority)) = (cloud.graph_root(), cloud.authority())
        && root.as_str().trim_end_matches('/') == cloud_root
    {
        let expected = TokenEndpoint::new(cloud_authority, cloud_root)?;
        if endpoint.authority() != expected.authority() {
            warn!(
                authority = endpoint.authority(),
                cloud_authority = expected.authority(),
                "--authority-url (or AZURE_AUTHORITY_HOST) is not the --cloud's sign-in authority; Graph refuses tokens from another cloud"
            );
        }
    }
    let tokens = match graph.credentials.sign_in() {
        // A responder's own sign-in (issue 18): asks for what this run needs.
        Some(kind) => delegated::tokens(
            kind,
            &graph.credentials,
            &endpoint,
            needs,
            graph.timeout,
            // On stderr, above the progress bar; never logged (a log collector keeps it).
            Arc::new(|text: &str| output::progress::eprint_above(&format!("{text}\n"))),
        ),
        None => Tokens::from_sources(graph.credentials.clone(), &endpoint, graph.timeout),
    };
    tokens.map_err(|error| {
        Unsent::stopped(anyhow::Error::new(error).context("no usable credentials")).into()
    })
}

/// Which credential the run would use, without reading it: for `--dry-run`.
fn credential_source(config: &RunConfig) -> String {
    if config.graph.target.is_rehearsal() {
        return "the built-in mock's token endpoint (no credentials needed)".to_owned();
    }
    match crate::graph::auth::credential::choose(&config.graph.credentials) {
        Ok(chosen) => chosen.kind.describe().to_owned(),
        Err(error) => format!("none usable (the run would stop): {error}"),
    }
}
