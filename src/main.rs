//! The `graph-remediate` binary: parse the command line, start logging, run, map to an exit code.

use std::process::ExitCode;

use clap::Parser;

use graph_remediate::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    graph_remediate::logging::init(&cli.log);
    match graph_remediate::execute(cli.command) {
        Ok(status) => ExitCode::from(status.code()),
        Err(error) => {
            eprintln!("graph-remediate: {error:#}");
            ExitCode::from(graph_remediate::status_of(&error).code())
        }
    }
}
