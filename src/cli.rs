//! The command line: clap definitions and their conversion into typed settings. No I/O.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::graph::model::{Action, Provider};
use crate::input::plan::Unlisted;
use crate::input::{InputFormat, InputOptions, InputSource};

/// Run Microsoft Defender for Identity response actions (disable, enable, forcePasswordReset,
/// revokeAllSessions, ...) on every account in a spreadsheet, through Microsoft Graph.
#[derive(Debug, Parser)]
#[command(name = "graph-remediate", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Parse and check every row, print the plan, send nothing.
    ///
    /// Exit code 0 when every row is good, 2 otherwise.
    ///
    /// Example:
    ///   graph-remediate validate samples/accounts.csv
    ///   graph-remediate validate accounts.jsonl --format json
    #[command(verbatim_doc_comment)]
    Validate(ValidateArgs),
}

/// Logging flags, shared by every subcommand.
#[derive(Debug, Args, Clone)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
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
}

impl InputArgs {
    pub fn source(&self) -> InputSource {
        InputSource::from_arg(&self.input)
    }

    pub fn options(&self) -> InputOptions {
        InputOptions {
            format: self.input_format,
            delimiter: self.delimiter,
            default_action: self.action,
            default_provider: self.provider,
        }
    }

    pub fn unlisted(&self) -> Unlisted {
        if self.allow_unlisted {
            Unlisted::Allow
        } else {
            Unlisted::Refuse
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    Text,
    Json,
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
        let Command::Validate(args) = cli.command;
        assert_eq!(args.input.action, Some(Action::ForcePasswordReset));
        assert_eq!(args.input.provider, Some(Provider::ActiveDirectory));
    }
}
