//! `--help` for the tool and each subcommand, as snapshots (issue 7): a change to what a new user
//! reads shows up in review. Rendered at a fixed width so the terminal does not matter.

use clap::CommandFactory;
use graph_remediate::cli::Cli;

/// What `graph-remediate ARGS --help` prints, at 100 columns.
fn help(args: &[&str]) -> String {
    let mut argv = vec!["graph-remediate"];
    argv.extend_from_slice(args);
    argv.push("--help");
    let error = Cli::command()
        .term_width(100)
        .try_get_matches_from(argv)
        .expect_err("--help ends parsing");
    assert_eq!(error.kind(), clap::error::ErrorKind::DisplayHelp);
    error.render().to_string()
}

#[test]
fn top_level_help() {
    insta::assert_snapshot!(help(&[]));
}

#[test]
fn validate_help() {
    insta::assert_snapshot!(help(&["validate"]));
}

#[test]
fn run_help() {
    insta::assert_snapshot!(help(&["run"]));
}

#[test]
fn confirm_help() {
    insta::assert_snapshot!(help(&["confirm"]));
}

#[test]
fn resolve_help() {
    insta::assert_snapshot!(help(&["resolve"]));
}

#[test]
fn report_help() {
    insta::assert_snapshot!(help(&["report"]));
}

#[test]
fn mock_help() {
    insta::assert_snapshot!(help(&["mock"]));
}

#[test]
fn auth_help() {
    insta::assert_snapshot!(help(&["auth"]));
}

#[test]
fn completions_help() {
    insta::assert_snapshot!(help(&["completions"]));
}

#[test]
fn every_subcommand_help_has_a_worked_example() {
    for command in Cli::command().get_subcommands() {
        let name = command.get_name();
        if name == "help" {
            continue;
        }
        let text = help(&[name]);
        assert!(
            text.contains("Example") && text.contains(&format!("graph-remediate {name}")),
            "{name} --help shows an example:\n{text}"
        );
    }
}
