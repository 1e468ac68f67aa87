//! The typed configurations the subcommands run on ([`RunConfig`], [`ResolveConfig`],
//! [`ConfirmConfig`], [`ValidateConfig`], [`ReportConfig`], [`AuthConfig`], [`CompletionsConfig`],
//! and [`LogConfig`] for logging), decided once from the command line by `cli.rs`'s conversions
//! (ripgrep's LowArgs -> HiArgs) or built directly by tests and benches. Paths are resolved, URLs
//! checked, durations and rates parsed, and flags turned into enums: no clap argument type gets
//! past this module (the value enums here derive `clap::ValueEnum`, as the phases' own do, so
//! that flags can take them). No I/O either: the protect files are only named here; the run reads
//! them ([`ProtectFiles::read`]) and puts them in force with [`RunConfig::guarded_by`].

use std::ffi::OsString;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::graph::auth::CredentialSources;
use crate::graph::client::ApiVersion;
use crate::input::Lookup;
use crate::input::plan::Unlisted;
use crate::input::{InputOptions, InputSource};
pub use crate::lookup::guard::{
    EntryKind, Guardrails, PRIVILEGED_ROLES, ProtectEntry, ProtectFileError, ProtectFiles,
    ProtectList, StaleEntries,
};
use crate::retry::RetryPolicy;
pub use crate::units::Existing;
use crate::units::{ProgressMode, Rate};

/// Everything `run` needs.
#[derive(Debug)]
pub struct RunConfig {
    pub input: InputConfig,
    /// Where the requests go, and how.
    pub graph: GraphAccess,
    pub files: OutputFiles,
    pub resume: Resume,
    pub mode: Mode,
    pub confirm: Confirm,
    /// After this many failed rows, start nothing new.
    pub max_failures: Option<u64>,
    /// `--confirm WAIT`: after the last action, check each one's effect for up to WAIT
    /// (SPEC section 10).
    pub confirm_effect: Option<Duration>,
    /// `--verify`: look every row up, also rows that carry all three ids (SPEC section 8). Also
    /// set by [`RunConfig::guarded_by`] when a guardrail needs to know whom every row names.
    pub verify: bool,
    /// The protect files named (`--protect`, the default one), read by the run as it prepares
    /// and put in force with [`RunConfig::guarded_by`].
    pub protect_files: ProtectFiles,
    /// `--protect-privileged`, `--max-actions` (issue 13), and the protect lists once read
    /// (`protect` is `None` until then).
    pub guardrails: Guardrails,
    pub progress: ProgressMode,
    /// The command line the run was started with, for the summary's `--resume` command; empty
    /// when the run is built in process.
    pub command_line: Vec<OsString>,
}

impl RunConfig {
    /// The run with the protect lists read from [`RunConfig::protect_files`] in force: while a
    /// list protects anyone every row is looked up, so `--no-lookup` is refused (nothing sent).
    pub fn guarded_by(
        mut self,
        protect: Option<ProtectList>,
    ) -> Result<RunConfig, LookupForbiddenByGuards> {
        self.guardrails.protect = protect;
        if self.guardrails.look_up_every_row() {
            if self.input.options.lookup == Lookup::Forbidden {
                return Err(LookupForbiddenByGuards {
                    guards: self.guardrails.describe(),
                });
            }
            self.verify = true;
        }
        Ok(self)
    }
}

/// `--no-lookup` with a guardrail that must know whom every row names.
#[derive(Debug, thiserror::Error)]
#[error(
    "--no-lookup: the guardrails in force ({guards}) look every row up to know whom it names; leave --no-lookup out. Nothing was sent"
)]
pub struct LookupForbiddenByGuards {
    guards: String,
}

/// Where requests go and how they are sent: what `run` and `resolve` share.
#[derive(Debug, Clone)]
pub struct GraphAccess {
    pub target: Target,
    /// The credentials given (read only when the command connects); unused for the mock.
    pub credentials: CredentialSources,
    pub pacing: Pacing,
    pub retry: RetryPolicy,
    /// Time limit of one request.
    pub timeout: Duration,
}

/// Everything `resolve` needs: the input, Graph, and the file to write (SPEC section 8).
#[derive(Debug)]
pub struct ResolveConfig {
    pub input: InputConfig,
    pub graph: GraphAccess,
    /// The input written back with the ids filled in: `.csv` or `.jsonl`.
    pub output: PathBuf,
    /// `--replace`: whether an existing output (no run's record) may be replaced.
    pub existing: Existing,
    pub progress: ProgressMode,
}

/// Everything `confirm` needs: the results, how long to wait, and Graph (SPEC section 10).
#[derive(Debug)]
pub struct ConfirmConfig {
    pub results: PathBuf,
    pub wait: Duration,
    pub graph: GraphAccess,
    pub progress: ProgressMode,
}

/// Everything `validate` needs: the input, and how to print the plan.
#[derive(Debug)]
pub struct ValidateConfig {
    pub input: InputConfig,
    pub format: PlanFormat,
}

/// Everything `auth` needs: the run it signs in for, whether that run's input was given (its
/// rows say which reads the run needs), and how to print what it found.
#[derive(Debug)]
pub struct AuthConfig {
    pub run: RunConfig,
    pub input: AuthInput,
    pub format: PlanFormat,
}

/// Whether `auth` was given the run's input (it is optional there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthInput {
    /// Read it, and say which permissions its run needs and which the token lacks.
    Given,
    /// Only who signs in and what the token holds.
    Absent,
}

/// Everything `report` needs: the results to read and what to write (issue 13).
#[derive(Debug)]
pub struct ReportConfig {
    /// The results file a run wrote (.jsonl or .csv).
    pub results: PathBuf,
    /// `-o`; `None`: standard output.
    pub output: Option<PathBuf>,
    /// `--format`, or what `-o`'s extension says.
    pub format: ReportFormat,
    /// `--undo-file`: write the undo file from the results too.
    pub undo_file: Option<PathBuf>,
    /// `--replace`: whether an existing `-o` or `--undo-file` (no run's record) may be replaced.
    pub existing: Existing,
}

/// Everything `completions` needs: the script, generated in memory from the command line's
/// definition (which only `cli` knows), for the command to print.
#[derive(Debug)]
pub struct CompletionsConfig {
    pub script: Vec<u8>,
}

/// How the process logs on stderr: `--log-format`, `-v` and `-q` (`RUST_LOG` overrides the level).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: LogLevel,
}

/// The log format on stderr (`--log-format`). What is written there besides the logs (the
/// summary, a fatal error) follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The most detailed log level shown, unless `RUST_LOG` says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// `-q`
    Error,
    /// The default.
    Info,
    /// `-v`
    Debug,
    /// `-vv` and more.
    Trace,
}

impl LogLevel {
    /// The level's name, as `EnvFilter` directives spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// How `validate` and `auth` print: text for people, or one JSON object for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlanFormat {
    Text,
    Json,
}

/// The report's format (`report --format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// Markdown, for the text of a ticket.
    Md,
    /// One HTML page with inline CSS, nothing loaded from elsewhere.
    Html,
}

impl ReportFormat {
    /// `--format` when given, else from `-o`'s extension: `.html` or `.htm` is HTML, anything
    /// else (and standard output) Markdown.
    pub fn chosen(format: Option<ReportFormat>, output: Option<&Path>) -> ReportFormat {
        if let Some(format) = format {
            return format;
        }
        match output.and_then(Path::extension).and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("html") || ext.eq_ignore_ascii_case("htm") => {
                ReportFormat::Html
            }
            _ => ReportFormat::Md,
        }
    }
}

/// The input and how to read it.
#[derive(Debug, Clone)]
pub struct InputConfig {
    pub source: InputSource,
    pub options: InputOptions,
    pub unlisted: Unlisted,
}

/// Where the run's requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A Graph service root (a national cloud's, or `--graph-url`), with the authority that
    /// issues its tokens.
    Graph {
        root: reqwest::Url,
        authority: String,
        api_version: ApiVersion,
        /// The cloud named by `--cloud`, for `--dry-run` and the authority check.
        cloud: Cloud,
    },
    /// The built-in mock, started in process for this run (`--mock`): a rehearsal.
    Mock { api_version: ApiVersion },
}

impl Target {
    pub fn api_version(&self) -> ApiVersion {
        match self {
            Target::Graph { api_version, .. } | Target::Mock { api_version } => *api_version,
        }
    }

    pub fn is_rehearsal(&self) -> bool {
        matches!(self, Target::Mock { .. })
    }

    /// Whether requests go to Microsoft: a cloud's Graph, or a `--graph-url` off this machine
    /// (a mock on loopback, in process or not, is not Microsoft).
    pub fn reaches_microsoft(&self) -> bool {
        match self {
            Target::Graph { root, .. } => !crate::graph::client::is_loopback(root),
            Target::Mock { .. } => false,
        }
    }

    /// The endpoint recorded in the run state, so that results are never resumed against
    /// another one (a rehearsal's least of all).
    pub fn endpoint(&self) -> String {
        match self {
            Target::Graph { root, .. } => root.as_str().trim_end_matches('/').to_owned(),
            Target::Mock { .. } => crate::graph::client::MOCK_ENDPOINT.to_owned(),
        }
    }
}

/// How hard the run pushes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    pub rate: Rate,
    pub burst: NonZeroU32,
    pub concurrency: usize,
}

/// The files a run writes besides the results' own sidecars.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputFiles {
    pub results: PathBuf,
    pub undo: Option<PathBuf>,
    pub summary_json: Option<PathBuf>,
    /// `--replace`: whether an existing undo file (no run's record) may be replaced.
    pub existing: Existing,
}

impl OutputFiles {
    /// `<stem>.results.jsonl` beside the input, or `<stem>.rehearsal.jsonl` for a rehearsal, so a
    /// rehearsal never writes, overwrites or stands in for a real run's results (issue 10).
    pub fn default_results(input: &Path, rehearsal: bool) -> PathBuf {
        let stem = input
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("input");
        let suffix = if rehearsal {
            "rehearsal.jsonl"
        } else {
            "results.jsonl"
        };
        input.with_file_name(format!("{stem}.{suffix}"))
    }
}

/// Whether this run continues an earlier one's results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// A new results file; an existing one is refused.
    Fresh,
    /// `--resume`: skip rows that already succeeded; `accept_changed_input` continues even when
    /// the input changed since.
    Continue { accept_changed_input: bool },
}

/// Act, or only show what would be done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Act,
    /// `--dry-run`: the plan, the settings and the expected duration; nothing is sent.
    DryRun,
}

/// Whether to ask before sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirm {
    /// On a terminal, show the plan and ask; elsewhere refuse (nothing sent).
    Ask,
    /// `--yes` (and rehearsals): no question.
    Yes,
}

/// The national clouds of SPEC section 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Cloud {
    /// graph.microsoft.com, login.microsoftonline.com
    Global,
    /// US Government L4 (GCC High): graph.microsoft.us, login.microsoftonline.us
    #[value(name = "usgov")]
    UsGov,
    /// US Government L5 (DoD): dod-graph.microsoft.us, login.microsoftonline.us
    #[value(name = "usgovdod")]
    UsGovDod,
    /// China (21Vianet): refused, invokeAction is not offered there
    China,
}

impl Cloud {
    /// The Graph service root, or why there is none.
    pub fn graph_root(self) -> Result<&'static str, String> {
        match self {
            Cloud::Global => Ok("https://graph.microsoft.com"),
            Cloud::UsGov => Ok("https://graph.microsoft.us"),
            Cloud::UsGovDod => Ok("https://dod-graph.microsoft.us"),
            Cloud::China => Err(
                "--cloud china: Microsoft does not offer the identityAccounts invokeAction in the China cloud (21Vianet); nothing was sent"
                    .to_owned(),
            ),
        }
    }

    /// The API version used when `--api-version` is not given: v1.0 where Microsoft's v1.0
    /// metadata lists the action (the global cloud, since 2025-11), beta where only beta lists it
    /// (SPEC section 2).
    pub fn api_version(self) -> ApiVersion {
        match self {
            Cloud::Global => ApiVersion::V1,
            Cloud::UsGov | Cloud::UsGovDod | Cloud::China => ApiVersion::Beta,
        }
    }

    /// The Entra authority that issues tokens for this cloud's Graph, or why there is none.
    /// Tokens from one cloud are not accepted by another (research/graph.md section 4).
    pub fn authority(self) -> Result<&'static str, String> {
        match self {
            Cloud::Global => Ok("https://login.microsoftonline.com"),
            Cloud::UsGov | Cloud::UsGovDod => Ok("https://login.microsoftonline.us"),
            Cloud::China => self.graph_root(),
        }
    }
}
