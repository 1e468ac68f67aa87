//! The command line: clap definitions, and their conversion into the typed configs of `config`
//! (ripgrep's LowArgs -> HiArgs). The conversion reads no file (issue 17): it names the protect
//! files, and the run reads them. Besides argv it reads the environment, as clap's `env` flags
//! do: the credentials' variables (`GRAPH_ACCESS_TOKEN`, `AZURE_CLIENT_SECRET`, so that secrets
//! stay out of argv), the unattended kinds' variables, `$BROWSER`, and the user's config
//! directory, for the default protect file's path. It sends nothing.

use std::ffi::OsString;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use clap_complete::Shell;

use anyhow::{Context as _, anyhow};

use crate::config::{
    AuthConfig, AuthInput, Cloud, CompletionsConfig, Confirm, ConfirmConfig, Existing, GraphAccess,
    Guardrails, InputConfig, LogConfig, LogFormat, LogLevel, Mode, OutputFiles, Pacing, PlanFormat,
    ProtectFiles, ReportConfig, ReportFormat, ResolveConfig, Resume, RunConfig, StaleEntries,
    Target, ValidateConfig,
};
use crate::graph::auth::credential::{AuthKind, ManagedIdentityId};
use crate::graph::auth::{CredentialSources, TokenEndpoint};
use crate::graph::client::{ApiVersion, check_service_url};
use crate::graph::model::{Action, Provider};
use crate::input::plan::Unlisted;
use crate::input::{InputFormat, InputOptions, InputSource, Lookup};
use crate::mock::MockArgs;
use crate::retry::RetryPolicy;
use crate::units::{ProgressMode, Rate, parse_duration, parse_rate};

/// Run Microsoft Defender for Identity response actions (disable, enable, forcePasswordReset,
/// revokeAllSessions, ...) on every account in a spreadsheet, through Microsoft Graph.
#[derive(Debug, Parser)]
#[command(
    name = "graph-remediate",
    version,
    propagate_version = true,
    after_help = EXAMPLES
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    #[command(flatten)]
    pub log: LogArgs,
}

impl Cli {
    /// Parses the process's own command line (exiting on `--help` or a usage error, as clap
    /// does), and keeps it for `run`, whose summary prints the exact command to resume with.
    pub fn parse_env() -> Cli {
        let argv: Vec<OsString> = std::env::args_os().collect();
        let mut cli = Cli::parse_from(&argv);
        if let Command::Run(args) = &mut cli.command {
            args.argv = argv;
        }
        cli
    }
}

/// The worked example under the top-level help: the three steps from spreadsheet to results.
const EXAMPLES: &str = "\
From spreadsheet to results:
  graph-remediate validate accounts.csv          1. check every row; nothing is sent
  graph-remediate run accounts.csv --mock        2. rehearse against the built-in mock
  graph-remediate run accounts.csv               3. act on every row (credentials: run --help)
  graph-remediate run accounts.csv --resume      after a failure or Ctrl-C: run the rest

`graph-remediate help run` (or run --help) shows every flag and more examples.";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Parse and check every row, print the plan, send nothing.
    ///
    /// Reports every bad row as FILE:LINE: reason. Exit code 0 when every row is good, 2
    /// otherwise.
    ///
    /// Examples:
    ///   graph-remediate validate samples/accounts.csv
    ///   graph-remediate validate export.csv --action disable --provider okta
    ///   graph-remediate validate accounts.jsonl --format json | jq .errors
    #[command(verbatim_doc_comment)]
    Validate(ValidateArgs),

    /// Act on every row: check the whole input first, then call invokeAction for each row
    /// within Graph's limits, and record every outcome in the results file.
    ///
    /// Exit codes: 0 every row succeeded or was skipped; 2 usage or input errors, nothing sent;
    /// 3 some rows failed; 4 stopped early (403, --max-failures, credentials); 130 interrupted.
    ///
    /// Examples:
    ///   # rehearse against the built-in mock: no credentials, nothing leaves the machine
    ///   graph-remediate run samples/accounts.csv --mock
    ///   # see the plan, the settings and the expected duration; send nothing
    ///   graph-remediate run accounts.csv --dry-run
    ///   # a token you already have, results as CSV
    ///   GRAPH_ACCESS_TOKEN=... graph-remediate run accounts.csv --rate 5/s -o results.csv
    ///   # an app registration's secret; the same command with --resume continues after a failure
    ///   AZURE_TENANT_ID=... AZURE_CLIENT_ID=... AZURE_CLIENT_SECRET=... graph-remediate run accounts.csv
    ///   graph-remediate run accounts.csv --resume
    ///   # unattended: no question, JSON logs, a summary for the job's monitoring
    ///   graph-remediate run accounts.csv --certificate app.pem --yes --log-format json \
    ///       --summary-json summary.json
    ///   # on an Azure VM, App Service, Functions or Automation: the identity the host gives
    ///   graph-remediate run accounts.csv --auth managed-identity --yes
    #[command(verbatim_doc_comment)]
    Run(Box<RunArgs>),

    /// Look every row's identity up and write the input back with its ids; send no action.
    ///
    /// The review step before acting on a spreadsheet that names people by UPN, SID or Entra
    /// object id (SPEC section 8). The output (-o, .csv or .jsonl) holds every row with
    /// identityAccountId, accountId and identityProvider filled in, and resolvedBy,
    /// displayName, isEnabled and offeredActions beside; `run` takes it as it is. Each row
    /// that cannot be resolved is listed on stderr as FILE:LINE: reason, and its resolvedBy
    /// is left empty. Reads need SecurityIdentitiesAccount.Read.All (and User.Read.All for
    /// upn and objectId).
    ///
    /// Exit codes: 0 every row resolved; 2 usage or input errors, nothing read; 3 some rows
    /// unresolved; 4 stopped (403, credentials); 130 interrupted.
    ///
    /// Examples:
    ///   # rehearse: the built-in mock holds everyone the export names
    ///   graph-remediate resolve export.csv --action disable -o resolved.csv --mock
    ///   graph-remediate resolve export.csv --action disable -o resolved.csv
    ///   graph-remediate run resolved.csv
    #[command(verbatim_doc_comment)]
    Resolve(Box<ResolveArgs>),

    /// Write the report of a run for the incident ticket, from its results; send nothing.
    ///
    /// Markdown, or one self-contained HTML page: when, against which tenant and app, the
    /// command line, counts by status, each row with the person, the action, the outcome,
    /// correlationId and requestId, the identity's state before the action (from the
    /// identity snapshot), failures grouped with what to do next, and the undo command. Reads
    /// the results file, and the lock file and identity snapshot beside it (a report without
    /// them says what is missing). None of them holds a secret. A run of more than 1,000 rows
    /// lists the first 1,000; every row is counted.
    ///
    /// Exit codes: 0 written; 2 usage errors or unreadable results.
    ///
    /// Examples:
    ///   graph-remediate report accounts.results.jsonl > INC-4711.md
    ///   graph-remediate report accounts.results.jsonl -o INC-4711.html
    ///   # the run wrote no undo file: write one from the results, and name it in the report
    ///   graph-remediate report accounts.results.csv --undo-file undo.csv -o INC-4711.md
    #[command(verbatim_doc_comment)]
    Report(ReportArgs),

    /// Check that each action of a run took effect, and record it in the results; send no action.
    ///
    /// A 200 from invokeAction means Defender for Identity accepted the action; its sensor
    /// carries it out later, or never (no rights in AD, an unhealthy sensor). This reads every
    /// identity a succeeded row acted on, in rounds, until its state shows the action or --wait
    /// passes, and rewrites each record's effect (confirmed, notConfirmed, notObservable) and
    /// confirmedAt. Rows already confirmed or notObservable are not read again, so it can be run
    /// as often as needed; the results' lock is held meanwhile. Give the run's connection and
    /// credential options. Reads need SecurityIdentitiesAccount.Read.All (and User.Read.All
    /// for Entra ID rows).
    ///
    /// Exit codes: 0 every effect confirmed or not observable; 2 usage errors; 3 some
    /// notConfirmed; 4 stopped (403, credentials, another process holds the results); 130
    /// interrupted (what was confirmed is kept).
    ///
    /// Examples:
    ///   graph-remediate confirm accounts.results.jsonl
    ///   graph-remediate confirm accounts.results.jsonl --wait 30m --rate 5/s
    #[command(verbatim_doc_comment)]
    Confirm(Box<ConfirmArgs>),

    /// Serve a local imitation of Graph's invokeAction and token endpoints, for rehearsals,
    /// tests and benchmarks. Runs until Ctrl-C.
    ///
    /// Example (two terminals): a mock that throttles past 20 requests a second, and a run
    /// that pushes 40 a second against it, to watch the shared pause at work:
    ///   graph-remediate mock --listen 127.0.0.1:8080 --rate 20/s --burst 5 --accept-any-token
    ///   GRAPH_ACCESS_TOKEN=x graph-remediate run accounts.csv --graph-url http://127.0.0.1:8080 \
    ///       --rate 40/s -o /tmp/results.jsonl
    #[command(verbatim_doc_comment)]
    Mock(Box<MockArgs>),

    /// Sign in as a run would, and show who that is and what the token may do; send nothing.
    ///
    /// Takes run's command line (INPUT is optional; the flags about results are ignored).
    /// Prints the credential kind, tenant, app, the signed-in user (--auth device-code or
    /// browser), when the token expires and the permissions it holds; with an INPUT, the
    /// permissions that run needs (SecurityIdentitiesActions.ReadWrite.All for the actions;
    /// SecurityIdentitiesAccount.Read.All and User.Read.All for lookups;
    /// RoleManagement.Read.Directory, GroupMember.Read.All,
    /// PrivilegedEligibilitySchedule.Read.AzureADGroup and AdministrativeUnit.Read.All for
    /// --protect-privileged) and which the token lacks, with
    /// how to grant them.
    ///
    /// Exit codes: 0 none missing; 2 usage or input errors; 4 a permission missing, or no
    /// sign-in.
    ///
    /// Examples:
    ///   graph-remediate auth --auth device-code --tenant-id contoso.onmicrosoft.com --client-id ID
    ///   graph-remediate auth accounts.csv --auth browser --protect-privileged
    ///   graph-remediate auth accounts.csv --certificate app.pem --format json | jq .missing
    #[command(verbatim_doc_comment)]
    Auth(Box<AuthArgs>),

    /// Print a shell completion script on stdout (bash, zsh, fish or powershell).
    ///
    /// Examples:
    ///   graph-remediate completions bash > ~/.local/share/bash-completion/completions/graph-remediate
    ///   graph-remediate completions zsh > ~/.zfunc/_graph-remediate   # with fpath+=~/.zfunc
    ///   graph-remediate completions fish > ~/.config/fish/completions/graph-remediate.fish
    ///   graph-remediate completions powershell >> $PROFILE
    #[command(verbatim_doc_comment)]
    Completions(CompletionsArgs),
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

impl From<CompletionsArgs> for CompletionsConfig {
    /// The script for the shell, from this command line's definition. Generated in memory:
    /// clap_complete panics when its writer fails, and `| head` must not.
    fn from(args: CompletionsArgs) -> CompletionsConfig {
        use clap::CommandFactory;
        let mut script = Vec::new();
        clap_complete::generate(
            args.shell,
            &mut Cli::command(),
            "graph-remediate",
            &mut script,
        );
        CompletionsConfig { script }
    }
}

/// Logging flags, shared by every subcommand.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Logging")]
pub struct LogArgs {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// More detail in the logs (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Only errors in the logs.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

impl From<&LogArgs> for LogConfig {
    fn from(args: &LogArgs) -> LogConfig {
        LogConfig {
            format: args.log_format,
            level: match (args.quiet, args.verbose) {
                (true, _) => LogLevel::Error,
                (false, 0) => LogLevel::Info,
                (false, 1) => LogLevel::Debug,
                (false, _) => LogLevel::Trace,
            },
        }
    }
}

/// How the input is read and checked; shared by `validate` and `run`.
#[derive(Debug, Args, Clone)]
pub struct InputArgs {
    /// The spreadsheet: CSV (header row) or JSONL (one object a line); `-` reads standard input.
    pub input: PathBuf,

    /// The input format, when the file name does not tell (always needed for `-`).
    #[arg(long, value_enum)]
    pub input_format: Option<InputFormat>,

    /// CSV delimiter: `,`, `;`, `tab` or any single character. Detected from the header when absent.
    #[arg(long, value_parser = parse_delimiter)]
    pub delimiter: Option<u8>,

    /// The action for every row, when the input has no action column.
    #[arg(long, value_parser = parse_action)]
    pub action: Option<Action>,

    /// The identity provider for every row, when the input has no provider column.
    #[arg(long, value_parser = parse_provider)]
    pub provider: Option<Provider>,

    /// Send action/provider pairs that Microsoft does not document (each is warned about).
    #[arg(long)]
    pub allow_unlisted: bool,

    /// Send no read to look identities up: every row must carry identityAccountId, accountId
    /// and identityProvider (a row that names its identity by upn, sid or objectId is an error).
    #[arg(long)]
    pub no_lookup: bool,
}

impl From<&InputArgs> for InputConfig {
    fn from(args: &InputArgs) -> InputConfig {
        InputConfig {
            source: InputSource::from_arg(&args.input),
            options: InputOptions {
                format: args.input_format,
                delimiter: args.delimiter,
                default_action: args.action,
                default_provider: args.provider,
                lookup: if args.no_lookup {
                    Lookup::Forbidden
                } else {
                    Lookup::Allowed
                },
            },
            unlisted: if args.allow_unlisted {
                Unlisted::Allow
            } else {
                Unlisted::Refuse
            },
        }
    }
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub input: InputArgs,

    /// Print the plan as text, or as one JSON object for scripts.
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,
}

impl From<ValidateArgs> for ValidateConfig {
    fn from(args: ValidateArgs) -> ValidateConfig {
        ValidateConfig {
            input: InputConfig::from(&args.input),
            format: args.format,
        }
    }
}

/// `report`'s flags.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The results file a run wrote (.jsonl or .csv).
    #[arg(value_name = "RESULTS")]
    pub results: PathBuf,

    /// Where to write the report. Default: standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// md (Markdown) or html (one self-contained page). Default: html when -o ends in .html or
    /// .htm, else md.
    #[arg(long, value_enum)]
    pub format: Option<ReportFormat>,

    /// Also write the undo file from the results (the opposite action for every row that
    /// succeeded with disable or enable), and name it in the report. Sends nothing.
    #[arg(long, value_name = "FILE")]
    pub undo_file: Option<PathBuf>,

    /// Replace -o or --undo-file when it exists already. Never a run's results, lock file,
    /// identity snapshot, in-flight log or input: those are always refused.
    #[arg(long)]
    pub replace: bool,
}

impl From<ReportArgs> for ReportConfig {
    fn from(args: ReportArgs) -> ReportConfig {
        ReportConfig {
            format: ReportFormat::chosen(args.format, args.output.as_deref()),
            results: args.results,
            output: args.output,
            undo_file: args.undo_file,
            existing: existing(args.replace),
        }
    }
}

/// `run`'s flags (SPEC section 2).
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub input: InputArgs,

    /// Results file: `.jsonl` (default) or `.csv`. Default: <input stem>.results.jsonl beside the input.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Continue an earlier run: read its results file, skip rows that already succeeded, run the
    /// rest, and leave one record per input row.
    #[arg(long)]
    pub resume: bool,

    /// With --resume: continue even though the input changed since the results were written.
    #[arg(long, requires = "resume")]
    pub accept_changed_input: bool,

    /// Print the plan, the settings and the expected duration; send nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Look every row's identity up before acting, also rows that carry all three ids, and
    /// refuse a row whose ids Graph does not confirm (the account, its provider, the action
    /// offered for it, and any upn, sid or objectId the row also gives).
    #[arg(long, conflicts_with = "no_lookup")]
    pub verify: bool,

    /// Do not ask for confirmation before sending (needed when not on a terminal).
    #[arg(short = 'y', long)]
    pub yes: bool,

    /// Never act on the people FILE names: one UPN, on-premises SID, Entra object id or
    /// identityAccounts id a line, `#` for comments, and an `[allow]` section for
    /// --protect-privileged. Repeatable; read besides the default file
    /// (graph-remediate/protect.txt in the user's config directory: ~/.config on Linux) unless
    /// nothing is there; one that cannot be read (a dangling link, a directory, a FIFO) stops the
    /// run.
    /// While a list is in force every row is looked up; a protected row is recorded failed
    /// (protectedIdentity) and nothing is sent for it.
    #[arg(long, value_name = "FILE")]
    pub protect: Vec<PathBuf>,

    /// Never act on holders of Entra's privileged directory roles, active or PIM-eligible,
    /// directly or through a role-assignable group (and on beta custom roles labelled
    /// privileged), unless a protect file's `[allow]` section names them: such rows are recorded
    /// failed (privilegedIdentity). Read before acting; the app needs
    /// RoleManagement.Read.Directory, GroupMember.Read.All,
    /// PrivilegedEligibilitySchedule.Read.AzureADGroup and AdministrativeUnit.Read.All (users in
    /// restricted-management administrative units are flagged). Every row is looked up.
    #[arg(long)]
    pub protect_privileged: bool,

    /// Run even though a protect file names someone Graph knows nobody by (a typo, a trailing
    /// dot, a look-alike letter, an invisible character, quotes or mailto: pasted with it): such
    /// an entry then guards only rows that give it as written. Without this flag it stops the
    /// run (exit 2) naming FILE:LINE, before anything is sent.
    #[arg(long)]
    pub accept_stale_protect_entries: bool,

    /// Refuse to start (exit 2, nothing sent) when the plan holds more than N actions: for
    /// scheduled jobs that must never act on more than they expect.
    #[arg(long, value_name = "N")]
    pub max_actions: Option<u64>,

    /// After this many failed rows, start nothing new (exit 4).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_failures: Option<u64>,

    /// Write the end-of-run summary to FILE as one JSON object too (counts, top errors, timings,
    /// 429s, the resume command), for scheduled jobs and their monitoring.
    #[arg(long, value_name = "FILE")]
    pub summary_json: Option<PathBuf>,

    /// No progress bar (it is shown only when stderr is a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,

    /// The command line the run was started with, for the summary's `--resume` command; empty
    /// when `run` is called in process. Not a flag.
    #[arg(skip)]
    pub argv: Vec<OsString>,

    /// Write the opposite action (enable for disable, and back) for every row that succeeded,
    /// as a ready input file (.csv or .jsonl), to roll a batch back with one command.
    #[arg(long, value_name = "FILE")]
    pub undo_file: Option<PathBuf>,

    /// Replace --undo-file when it exists already (a resumed run replaces its own without it).
    /// Never a run's results, lock file, identity snapshot, in-flight log or input.
    #[arg(long, requires = "undo_file")]
    pub replace: bool,

    /// After the last action, read every identity acted on again until its state shows the
    /// action (isEnabled; accountEnabled or signInSessionsValidFromDateTime for Entra ID) or
    /// WAIT passes, and record each row's effect: confirmed, notConfirmed (exit 3) or
    /// notObservable (an action Graph shows nothing of).
    #[arg(long, value_name = "WAIT", num_args = 0..=1, default_missing_value = "10m", value_parser = parse_duration)]
    pub confirm: Option<Duration>,

    #[command(flatten)]
    pub graph: GraphArgs,
}

/// `auth`'s flags: run's, with INPUT optional, and the output format.
#[derive(Debug, Args)]
#[command(mut_arg("input", |arg| {
    arg.required(false)
        .default_value("")
        .hide_default_value(true)
        .value_parser(clap::builder::TypedValueParser::map(
            clap::builder::OsStringValueParser::new(),
            PathBuf::from,
        ))
        .help("The spreadsheet the run would read: its rows say which reads it needs (optional)")
}))]
pub struct AuthArgs {
    #[command(flatten)]
    pub run: RunArgs,

    /// Print as text, or as one JSON object for scripts.
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,
}

impl TryFrom<AuthArgs> for AuthConfig {
    type Error = anyhow::Error;

    fn try_from(args: AuthArgs) -> anyhow::Result<AuthConfig> {
        let input = if args.run.input.input.as_os_str().is_empty() {
            AuthInput::Absent
        } else {
            AuthInput::Given
        };
        Ok(AuthConfig {
            run: RunConfig::try_from(args.run)?,
            input,
            format: args.format,
        })
    }
}

/// `confirm`'s flags (SPEC section 10). `--mock` is hidden and refused: a new mock holds none of
/// the run's actions.
#[derive(Debug, Args)]
#[command(mut_arg("mock", |arg| arg.hide(true)))]
pub struct ConfirmArgs {
    /// The results file a run wrote (.jsonl or .csv).
    #[arg(value_name = "RESULTS")]
    pub results: PathBuf,

    /// How long to keep reading an identity whose state does not show its action yet.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub wait: Duration,

    /// No progress bar (it is shown only when stderr is a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,

    #[command(flatten)]
    pub graph: GraphArgs,
}

impl TryFrom<ConfirmArgs> for ConfirmConfig {
    type Error = anyhow::Error;

    fn try_from(args: ConfirmArgs) -> anyhow::Result<ConfirmConfig> {
        if args.graph.mock {
            return Err(anyhow!(
                "confirm --mock: a new built-in mock holds none of the run's actions; rehearse the check with run --mock --confirm"
            ));
        }
        Ok(ConfirmConfig {
            results: args.results,
            wait: args.wait,
            graph: GraphAccess::try_from(&args.graph)?,
            progress: progress(args.no_progress),
        })
    }
}

/// `resolve`'s flags (SPEC section 8). `--no-lookup` is shared with `run` and `validate`, but
/// `resolve` is the lookup: the flag is hidden here and refused if given.
#[derive(Debug, Args)]
#[command(mut_arg("no_lookup", |arg| arg.hide(true)))]
pub struct ResolveArgs {
    #[command(flatten)]
    pub input: InputArgs,

    /// Where to write the input back with the ids filled in: .csv or .jsonl.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,

    /// Replace -o when it exists already. Never a run's results, lock file, identity
    /// snapshot, in-flight log or input: those are always refused.
    #[arg(long)]
    pub replace: bool,

    /// No progress bar (it is shown only when stderr is a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,

    #[command(flatten)]
    pub graph: GraphArgs,
}

impl TryFrom<ResolveArgs> for ResolveConfig {
    type Error = anyhow::Error;

    fn try_from(args: ResolveArgs) -> anyhow::Result<ResolveConfig> {
        if args.input.no_lookup {
            return Err(anyhow!(
                "--no-lookup: resolve is the lookup; leave the flag out"
            ));
        }
        Ok(ResolveConfig {
            input: InputConfig::from(&args.input),
            graph: GraphAccess::try_from(&args.graph)?,
            output: args.output,
            existing: existing(args.replace),
            progress: progress(args.no_progress),
        })
    }
}

/// Where requests go and how they are sent: the flags `run` and `resolve` share.
#[derive(Debug, Args)]
pub struct GraphArgs {
    /// Requests per second or minute, shared by all workers: N/s or N/min.
    #[arg(long, default_value = "2/s", value_parser = parse_rate)]
    pub rate: Rate,

    /// Requests that may leave back to back before pacing applies.
    #[arg(long, default_value_t = NonZeroU32::MIN)]
    pub burst: NonZeroU32,

    /// Requests in flight at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,

    /// Retries of one row after its first attempt (429, 503, 504, timeouts, connection errors).
    #[arg(long, default_value_t = 10)]
    pub max_retries: u32,

    /// The most one row may spend waiting between attempts before it is marked failed.
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    pub max_retry_wait: Duration,

    /// First backoff ceiling for retries without a Retry-After (doubles each retry, full jitter).
    /// Hidden: tests shorten it; operators have --max-retries and --max-retry-wait.
    #[arg(long, default_value = "2s", value_parser = parse_duration, hide = true)]
    pub backoff_base: Duration,

    /// Time limit for one request.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// National cloud: sets the Graph host, the sign-in authority and the token scope (china is
    /// refused: the action is not offered there).
    #[arg(long, value_enum, default_value_t = Cloud::Global)]
    pub cloud: Cloud,

    /// Graph API version. Default: v1.0 on the global cloud (and the mock), where the action is
    /// generally available; beta on usgov and usgovdod, where only beta lists it.
    #[arg(long, value_enum)]
    pub api_version: Option<ApiVersion>,

    /// Graph service root instead of the cloud's (e.g. a mock). https, or http to loopback only.
    #[arg(long, value_name = "URL")]
    pub graph_url: Option<String>,

    /// Start the built-in mock on loopback and run against it (no credentials needed).
    #[arg(long, conflicts_with_all = ["graph_url", "access_token_file", "client_secret_file", "certificate_key"])]
    pub mock: bool,

    /// Read a ready access token from this file (or set GRAPH_ACCESS_TOKEN). Credentials, first
    /// match wins: a ready token, a client certificate, a client secret, then the unattended
    /// kinds (see --auth).
    #[arg(long, value_name = "FILE")]
    pub access_token_file: Option<PathBuf>,

    /// Client certificate for app-only sign-in (PEM: the certificate, and its unencrypted RSA
    /// private key unless --certificate-key gives it).
    #[arg(
        long,
        value_name = "PEM",
        env = "AZURE_CLIENT_CERTIFICATE_PATH",
        hide_env_values = true
    )]
    pub certificate: Option<PathBuf>,

    /// The certificate's private key (PEM), when it is not in the --certificate file.
    #[arg(long, value_name = "PEM", requires = "certificate")]
    pub certificate_key: Option<PathBuf>,

    /// Read the app's client secret from this file (or set AZURE_CLIENT_SECRET); never on the
    /// command line.
    #[arg(long, value_name = "FILE")]
    pub client_secret_file: Option<PathBuf>,

    /// Directory (tenant) id or domain, for a certificate or secret.
    #[arg(
        long,
        value_name = "ID",
        env = "AZURE_TENANT_ID",
        hide_env_values = true
    )]
    pub tenant_id: Option<String>,

    /// Application (client) id of the app registration, for a certificate or secret.
    #[arg(
        long,
        value_name = "ID",
        env = "AZURE_CLIENT_ID",
        hide_env_values = true
    )]
    pub client_id: Option<String>,

    /// Which credential kind signs in. Without it: a ready token, certificate or
    /// secret when given, else the unattended kind whose variables are set (workload identity,
    /// GitHub OIDC, managed identity by IDENTITY_ENDPOINT or MSI_ENDPOINT). IMDS (an Azure VM) is
    /// used only with managed-identity or auto. device-code and browser sign you in as yourself
    /// (a code to enter at microsoft.com/devicelogin from any device, or this machine's browser,
    /// honouring $BROWSER); they need --tenant-id and the --client-id of the tenant's own public
    /// client app, ask for the permissions the run needs, renew in memory and store nothing.
    #[arg(
        long,
        value_enum,
        value_name = "KIND",
        env = "AZURE_TOKEN_CREDENTIALS",
        hide_env_values = true,
        ignore_case = true
    )]
    pub auth: Option<AuthKind>,

    /// A user-assigned managed identity: its client id (a GUID), object-id=GUID, or resource id
    /// (/subscriptions/.../userAssignedIdentities/NAME).
    #[arg(long, value_name = "ID", value_parser = ManagedIdentityId::parse)]
    pub managed_identity_id: Option<ManagedIdentityId>,

    /// Token authority instead of the cloud's (e.g. a mock): https, or http to loopback only.
    /// A host name alone (as AZURE_AUTHORITY_HOST often holds) means https.
    #[arg(
        long,
        value_name = "URL",
        env = "AZURE_AUTHORITY_HOST",
        hide_env_values = true
    )]
    pub authority_url: Option<String>,
}

impl TryFrom<RunArgs> for RunConfig {
    type Error = anyhow::Error;

    /// Turns `run`'s flags into the typed configuration: URLs checked, paths resolved, flags made
    /// enums; the protect files only named (the run reads them). Every error here is a usage
    /// error (exit 2), raised before any file is touched.
    fn try_from(args: RunArgs) -> anyhow::Result<RunConfig> {
        let input = InputConfig::from(&args.input);
        let graph = GraphAccess::try_from(&args.graph)?;
        let results = match (&args.output, &input.source) {
            (Some(path), _) => path.clone(),
            (None, InputSource::File(path)) => OutputFiles::default_results(path, args.graph.mock),
            (None, _) => {
                return Err(anyhow!(
                    "reading from standard input: name the results file with -o"
                ));
            }
        };
        Ok(RunConfig {
            input,
            graph,
            files: OutputFiles {
                results,
                undo: args.undo_file,
                summary_json: args.summary_json,
                existing: existing(args.replace),
            },
            resume: if args.resume {
                Resume::Continue {
                    accept_changed_input: args.accept_changed_input,
                }
            } else {
                Resume::Fresh
            },
            mode: if args.dry_run {
                Mode::DryRun
            } else {
                Mode::Act
            },
            // A rehearsal never asks: nothing leaves the machine.
            confirm: if args.yes || args.graph.mock {
                Confirm::Yes
            } else {
                Confirm::Ask
            },
            max_failures: args.max_failures,
            confirm_effect: args.confirm,
            verify: args.verify,
            protect_files: ProtectFiles {
                given: args.protect,
                default: default_protect_file(),
            },
            guardrails: Guardrails {
                protect: None,
                privileged: args.protect_privileged,
                max_actions: args.max_actions,
                stale: if args.accept_stale_protect_entries {
                    StaleEntries::Accept
                } else {
                    StaleEntries::Refuse
                },
            },
            progress: progress(args.no_progress),
            command_line: args.argv,
        })
    }
}

/// `--no-progress`: no bar; without it, a bar on a terminal.
fn progress(no_progress: bool) -> ProgressMode {
    if no_progress {
        ProgressMode::Off
    } else {
        ProgressMode::Auto
    }
}

/// `--replace`: whether an existing output file that is no run's record may be replaced.
fn existing(replace: bool) -> Existing {
    if replace {
        Existing::Replace
    } else {
        Existing::Refuse
    }
}

/// `<the user's config directory>/graph-remediate/protect.txt`, read by every run when it exists
/// (the directory comes from the environment: `XDG_CONFIG_HOME` or `HOME` on Linux).
fn default_protect_file() -> Option<PathBuf> {
    dirs::config_dir().map(|dir| dir.join("graph-remediate").join("protect.txt"))
}

impl TryFrom<&GraphArgs> for GraphAccess {
    type Error = anyhow::Error;

    /// The target checked (URLs, cloud, authority) and the pacing and retry flags typed. Every
    /// error here is a usage error (exit 2).
    fn try_from(args: &GraphArgs) -> anyhow::Result<GraphAccess> {
        let target = if args.mock {
            Target::Mock {
                api_version: args.api_version.unwrap_or(ApiVersion::V1),
            }
        } else {
            let cloud_root = args.cloud.graph_root().map_err(|e| anyhow!(e))?;
            let root = match &args.graph_url {
                Some(url) => check_service_url(url).context("--graph-url")?,
                None => check_service_url(cloud_root)?,
            };
            let authority = match &args.authority_url {
                Some(url) => url.clone(),
                None => args.cloud.authority().map_err(|e| anyhow!(e))?.to_owned(),
            };
            TokenEndpoint::new(&authority, root.as_str())
                .context("--authority-url (or AZURE_AUTHORITY_HOST)")?;
            Target::Graph {
                root,
                authority,
                api_version: args.api_version.unwrap_or(args.cloud.api_version()),
                cloud: args.cloud,
            }
        };
        Ok(GraphAccess {
            target,
            credentials: credential_sources(args),
            pacing: Pacing {
                rate: args.rate,
                burst: args.burst,
                concurrency: usize::from(args.concurrency),
            },
            retry: RetryPolicy {
                max_retries: args.max_retries,
                backoff_base: args.backoff_base,
                max_wait: args.max_retry_wait,
                ..RetryPolicy::default()
            },
            timeout: args.timeout,
        })
    }
}

/// The credential sources given by flags and environment. Secrets come from the environment (or
/// files), never from argv.
fn credential_sources(args: &GraphArgs) -> CredentialSources {
    let env_secret = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|value| !value.trim().is_empty())
            .map(secrecy::SecretString::from)
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
        auth: args.auth,
        managed_identity_id: args.managed_identity_id.clone(),
        environment: crate::graph::auth::credential::Environment::from_process(),
        browser: std::env::var_os("BROWSER").filter(|value| !value.is_empty()),
    }
}

fn parse_delimiter(text: &str) -> Result<u8, String> {
    match text {
        "tab" | "\\t" | "\t" => Ok(b'\t'),
        _ => match text.as_bytes() {
            [byte] if byte.is_ascii() && *byte != b'"' && *byte != b'\n' && *byte != b'\r' => {
                Ok(*byte)
            }
            _ => Err("the delimiter must be one ASCII character, or `tab`".to_owned()),
        },
    }
}

fn parse_action(text: &str) -> Result<Action, String> {
    Action::parse(text).ok_or_else(|| {
        format!(
            "unknown action {text:?}; expected one of {}",
            Action::ALL.map(Action::as_str).join(", ")
        )
    })
}

fn parse_provider(text: &str) -> Result<Provider, String> {
    Provider::parse(text).ok_or_else(|| {
        format!(
            "unknown identity provider {text:?}; expected one of {}",
            Provider::ALL.map(Provider::as_str).join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_defaults_match_the_spec() {
        let cli = Cli::try_parse_from(["graph-remediate", "run", "a.csv"]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("run expected");
        };
        let args = &args.graph;
        assert_eq!(args.rate.to_string(), "2/s");
        assert_eq!(args.burst.get(), 1);
        assert_eq!(args.concurrency, 8);
        assert_eq!(args.max_retries, 10);
        assert_eq!(args.max_retry_wait, Duration::from_secs(900));
        assert_eq!(args.timeout, Duration::from_secs(60));
        assert_eq!(args.cloud, Cloud::Global);
        assert_eq!(args.api_version, None);
    }

    fn config(args: &[&str]) -> RunConfig {
        let mut argv = vec!["graph-remediate", "run", "a.csv"];
        argv.extend_from_slice(args);
        let Command::Run(args) = Cli::try_parse_from(argv).unwrap().command else {
            panic!("run expected");
        };
        RunConfig::try_from(*args).unwrap()
    }

    #[test]
    fn issue_10_the_api_version_defaults_to_v1_on_global_and_beta_on_us_government() {
        assert_eq!(config(&[]).graph.target.api_version(), ApiVersion::V1);
        assert_eq!(
            config(&["--mock"]).graph.target.api_version(),
            ApiVersion::V1
        );
        for cloud in ["usgov", "usgovdod"] {
            assert_eq!(
                config(&["--cloud", cloud]).graph.target.api_version(),
                ApiVersion::Beta,
                "{cloud}"
            );
        }
        assert_eq!(
            config(&["--cloud", "usgov", "--api-version", "v1.0"])
                .graph
                .target
                .api_version(),
            ApiVersion::V1
        );
    }

    #[test]
    fn issue_10_a_rehearsal_has_a_results_file_of_its_own() {
        assert_eq!(
            config(&[]).files.results,
            std::path::Path::new("a.results.jsonl")
        );
        assert_eq!(
            config(&["--mock"]).files.results,
            std::path::Path::new("a.rehearsal.jsonl")
        );
    }

    #[test]
    fn issue_10_bad_urls_are_usage_errors_even_for_a_dry_run() {
        let Command::Run(args) = Cli::try_parse_from([
            "graph-remediate",
            "run",
            "a.csv",
            "--dry-run",
            "--graph-url",
            "http://graph.example.com",
        ])
        .unwrap()
        .command
        else {
            panic!("run expected");
        };
        let error = RunConfig::try_from(*args).unwrap_err().to_string();
        assert!(error.contains("--graph-url"), "{error}");
    }

    #[test]
    fn issue_17_the_conversion_names_the_protect_files_and_reads_none() {
        let dir = tempfile::tempdir().unwrap();
        let absent = dir.path().join("absent.txt");
        let unreadable = dir.path().to_path_buf();
        let config = config(&[
            "--protect",
            absent.to_str().unwrap(),
            "--protect",
            unreadable.to_str().unwrap(),
            "--no-lookup",
        ]);
        assert_eq!(config.protect_files.given, vec![absent, unreadable]);
        assert_eq!(config.guardrails.protect, None);
        assert!(!config.verify);
    }

    fn protecting(entries: &str) -> Option<crate::config::ProtectList> {
        let mut list = crate::config::ProtectList::parse(entries, "protect.txt").unwrap();
        list.files.push(PathBuf::from("protect.txt"));
        Some(list)
    }

    #[test]
    fn a_protect_list_that_protects_someone_looks_every_row_up() {
        let guarded = config(&[]).guarded_by(protecting("a@contoso.com")).unwrap();
        assert!(guarded.verify);
        assert!(guarded.guardrails.protect.is_some());
        // A list of comments only protects nobody: rows go as given.
        assert!(
            !config(&[])
                .guarded_by(protecting("# nobody"))
                .unwrap()
                .verify
        );
        assert!(!config(&[]).guarded_by(None).unwrap().verify);
    }

    #[test]
    fn no_lookup_is_refused_under_a_guard_that_must_know_every_row() {
        let error = config(&["--no-lookup"])
            .guarded_by(protecting("a@contoso.com"))
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("--no-lookup: the guardrails in force (protect file"),
            "{error}"
        );
        assert!(error.ends_with("Nothing was sent"), "{error}");
        let error = config(&["--no-lookup", "--protect-privileged"])
            .guarded_by(None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("(--protect-privileged)"), "{error}");
        assert!(config(&["--no-lookup"]).guarded_by(None).is_ok());
    }

    #[test]
    fn clouds_map_to_their_graph_hosts_and_china_is_refused() {
        assert_eq!(
            Cloud::Global.graph_root(),
            Ok("https://graph.microsoft.com")
        );
        assert_eq!(Cloud::UsGov.graph_root(), Ok("https://graph.microsoft.us"));
        assert_eq!(
            Cloud::UsGovDod.graph_root(),
            Ok("https://dod-graph.microsoft.us")
        );
        assert!(Cloud::China.graph_root().unwrap_err().contains("not offer"));
    }

    #[test]
    fn clouds_map_to_their_sign_in_authorities_and_china_is_refused() {
        assert_eq!(
            Cloud::Global.authority(),
            Ok("https://login.microsoftonline.com")
        );
        assert_eq!(
            Cloud::UsGov.authority(),
            Ok("https://login.microsoftonline.us")
        );
        assert_eq!(
            Cloud::UsGovDod.authority(),
            Ok("https://login.microsoftonline.us")
        );
        assert!(Cloud::China.authority().unwrap_err().contains("not offer"));
    }

    #[test]
    fn delimiters_parse_by_name_and_character() {
        assert_eq!(parse_delimiter("tab"), Ok(b'\t'));
        assert_eq!(parse_delimiter(";"), Ok(b';'));
        assert!(parse_delimiter(";;").is_err());
        assert!(parse_delimiter("\"").is_err());
    }

    #[test]
    fn action_and_provider_flags_take_any_spelling() {
        let cli = Cli::try_parse_from([
            "graph-remediate",
            "validate",
            "x.csv",
            "--action",
            "Force-Password-Reset",
            "--provider",
            "active directory",
        ])
        .unwrap();
        let Command::Validate(args) = cli.command else {
            panic!("validate expected");
        };
        assert_eq!(args.input.action, Some(Action::ForcePasswordReset));
        assert_eq!(args.input.provider, Some(Provider::ActiveDirectory));
    }
}
