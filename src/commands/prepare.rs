//! What `run` settles before the first request: where the results go, whether an earlier run may
//! be resumed, the user's confirmation, `--dry-run`, and which credentials to use.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow};
use secrecy::SecretString;
use tracing::warn;

use crate::cli::{LogFormat, RunArgs};
use crate::graph::auth::{CredentialSources, TokenEndpoint, Tokens};
use crate::input::InputSource;
use crate::input::plan::Plan;
use crate::logging;
use crate::output::lock::RunState;
use crate::output::resume::Prior;
use crate::{Fatal, output};

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
pub(super) fn check_resumable(
    args: &RunArgs,
    output: &Path,
    prior: &Prior,
    previous: Option<&RunState>,
    fingerprint: &str,
) -> anyhow::Result<()> {
    let Some(previous) = previous else {
        warn!(results = %output.display(), "no record of the input the earlier run used (its lock file is gone); cannot tell whether the input changed");
        return Ok(());
    };
    if previous.input_fingerprint == fingerprint || args.accept_changed_input {
        if previous.input_fingerprint != fingerprint {
            warn!(
                "the input changed since the results were written; continuing because of --accept-changed-input"
            );
        }
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
        if ask("Resume anyway? [y/N] ")? {
            return Ok(());
        }
        return Err(anyhow!("not resumed; nothing was sent"));
    }
    let _ = prior;
    Err(anyhow!(
        "{message}; pass --accept-changed-input to resume anyway. Nothing was sent"
    ))
}

/// Before sending: on a terminal, show the plan and ask; elsewhere, demand `--yes`.
pub(super) fn confirm(plan: &Plan) -> anyhow::Result<()> {
    let to_send = plan.actions - plan.already_succeeded;
    if !is_interactive() {
        return Err(anyhow!(
            "not on a terminal, so there is no one to confirm {to_send} actions on {} accounts; add --yes to send them (see the plan with --dry-run). Nothing was sent",
            plan.accounts
        ));
    }
    eprint!("{}", output::plan::render_text(plan));
    if ask(&format!(
        "Proceed with {to_send} actions on {} accounts? [y/N] ",
        plan.accounts
    ))? {
        Ok(())
    } else {
        Err(anyhow!("not confirmed; nothing was sent"))
    }
}

pub(super) fn is_interactive() -> bool {
    use std::io::IsTerminal;
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// Asks a yes/no question on the terminal; only `y` or `yes` is yes.
pub(super) fn ask(question: &str) -> anyhow::Result<bool> {
    eprint!("{question}");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .context("cannot read the answer")?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// `--dry-run`: the plan, the resolved settings and the expected duration.
pub(super) fn print_dry_run(args: &RunArgs, plan: &Plan, output: &Path) {
    use std::fmt::Write as _;
    let to_send = plan.actions - plan.already_succeeded;
    let graph = match (&args.graph_url, args.mock) {
        (Some(url), _) => url.clone(),
        (None, true) => "the built-in mock".to_owned(),
        (None, false) => args.cloud.graph_root().unwrap_or_default().to_owned(),
    };
    let seconds = to_send as f64 / args.rate.per_second_f64();
    let mut text = output::plan::render_text(plan);
    let _ = writeln!(text);
    let _ = writeln!(text, "Dry run: nothing was sent. The run would use:");
    let _ = writeln!(
        text,
        "  endpoint      {}/{}/security/identities/identityAccounts/{{id}}/microsoft.graph.security.invokeAction",
        graph.trim_end_matches('/'),
        args.api_version.as_str()
    );
    let _ = writeln!(text, "  cloud         {:?}", args.cloud);
    let _ = writeln!(text, "  credentials   {}", credential_source(args));
    let _ = writeln!(
        text,
        "  rate          {} (burst {}), concurrency {}",
        args.rate, args.burst, args.concurrency
    );
    let _ = writeln!(
        text,
        "  retries       up to {} per row, waiting at most {} per row",
        args.max_retries,
        humantime::format_duration(args.max_retry_wait)
    );
    let _ = writeln!(text, "  results       {}", output.display());
    if plan.already_succeeded > 0 {
        let _ = writeln!(
            text,
            "  resume        {} row(s) already succeeded and would be skipped",
            plan.already_succeeded
        );
    }
    let _ = writeln!(
        text,
        "  expected      {to_send} requests take at least {} at {} (more if Graph throttles)",
        humantime::format_duration(Duration::from_secs(seconds.ceil() as u64)),
        args.rate
    );
    print!("{text}");
}

/// The run's credentials (SPEC section 2), from the flags and the environment, for the Graph at
/// `graph_root`. Bad URLs are usage errors (exit 2); missing or unreadable credentials stop the
/// run before anything is sent (exit 4).
pub(super) fn credentials(args: &RunArgs, graph_root: &str) -> anyhow::Result<Tokens> {
    let cloud_authority = args.cloud.authority().map_err(|e| anyhow!(e))?;
    let authority = args.authority_url.as_deref().unwrap_or(cloud_authority);
    let endpoint = TokenEndpoint::new(authority, graph_root)
        .context("--authority-url (or AZURE_AUTHORITY_HOST)")?;
    if args.graph_url.is_none() {
        let cloud = TokenEndpoint::new(cloud_authority, graph_root)?;
        if endpoint.authority() != cloud.authority() {
            warn!(
                authority = endpoint.authority(),
                cloud_authority = cloud.authority(),
                "--authority-url (or AZURE_AUTHORITY_HOST) is not the --cloud's sign-in authority; Graph refuses tokens from another cloud"
            );
        }
    }
    Tokens::from_sources(credential_sources(args), &endpoint, args.timeout).map_err(|error| {
        Fatal::stopped(anyhow::Error::new(error).context("no usable credentials; nothing was sent"))
    })
}

/// The credential sources given by flags and environment. Secrets come from the environment (or
/// files), never from argv.
pub(super) fn credential_sources(args: &RunArgs) -> CredentialSources {
    let env_secret = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|value| !value.trim().is_empty())
            .map(SecretString::from)
    };
    CredentialSources {
        access_token_file: args.access_token_file.clone(),
        access_token: env_secret("GRAPH_ACCESS_TOKEN"),
        certificate: args.certificate.clone(),
        certificate_key: args.certificate_key.clone(),
        client_secret_file: args.client_secret_file.clone(),
        client_secret: env_secret("AZURE_CLIENT_SECRET"),
        tenant_id: args.tenant_id.clone(),
        client_id: args.client_id.clone(),
    }
}

/// Which credential the run would use, without reading it: for `--dry-run`.
pub(super) fn credential_source(args: &RunArgs) -> String {
    if args.mock {
        return "the built-in mock's token endpoint (no credentials needed)".to_owned();
    }
    match credential_sources(args).given().first() {
        Some(kind) => kind.describe().to_owned(),
        None => "none found (the run would stop: see --help for the ways to give credentials)"
            .to_owned(),
    }
}

/// `-o`, or `<input stem>.results.jsonl` beside the input.
pub(super) fn results_path(output: Option<&Path>, source: &InputSource) -> anyhow::Result<PathBuf> {
    if let Some(path) = output {
        return Ok(path.to_path_buf());
    }
    match source {
        InputSource::File(path) => {
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("input");
            Ok(path.with_file_name(format!("{stem}.results.jsonl")))
        }
        InputSource::Stdin | InputSource::Spooled { .. } => Err(anyhow!(
            "reading from standard input: name the results file with -o"
        )),
    }
}

/// Standard input can be read only once, and the run reads its input twice (check, then act),
/// so stdin is first copied to a private temporary file.
pub(super) struct Spooled {
    pub(super) source: InputSource,
    _file: Option<tempfile::NamedTempFile>,
}

pub(super) fn spool_stdin(source: InputSource) -> anyhow::Result<Spooled> {
    if source != InputSource::Stdin {
        return Ok(Spooled {
            source,
            _file: None,
        });
    }
    let mut file = tempfile::NamedTempFile::new()
        .context("cannot create a temporary file for standard input")?;
    std::io::copy(&mut std::io::stdin().lock(), &mut file).context("cannot read standard input")?;
    Ok(Spooled {
        source: InputSource::Spooled {
            path: file.path().to_path_buf(),
            name: "<stdin>".to_owned(),
        },
        _file: Some(file),
    })
}
