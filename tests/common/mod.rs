//! Helpers shared by the integration tests: inputs, in-process runs, results, the mock's log.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use clap::Parser;
use graph_remediate::ExitStatus;
use graph_remediate::cli::{Cli, Command};
use graph_remediate::mock::LoggedRequest;
use serde_json::Value;

pub const HEADER: &str = "identityAccountId,accountId,action,identityProvider,ticket";

/// Writes a CSV with the standard header and the given data lines.
pub fn write_csv(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.join(name);
    let mut text = format!("{HEADER}\n");
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// `n` distinct, valid rows: `id-{i}`, disable on okta.
pub fn plain_rows(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("id-{i:05},00u{i:05},disable,okta,INC-{i}"))
        .collect()
}

/// A token file for `--access-token-file`.
pub fn token_file(dir: &Path, token: &str) -> PathBuf {
    let path = dir.join("token.txt");
    std::fs::write(&path, token).unwrap();
    path
}

/// Runs `graph-remediate run ... --yes` in process, as `main` would, with no interruption.
/// (`--yes`: tests have no terminal to confirm on.)
pub async fn run(args: &[&str]) -> ExitStatus {
    let mut argv = vec!["graph-remediate", "run", "--yes"];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).expect("arguments parse");
    let Command::Run(run_args) = cli.command else {
        panic!("not a run");
    };
    graph_remediate::run(
        graph_remediate::config::RunConfig::try_from(*run_args)
            .expect("the flags make a configuration"),
        std::future::pending(),
    )
    .await
    .expect("run returns a status")
}

pub fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Results records by input row number.
pub fn by_row(records: &[Value]) -> std::collections::BTreeMap<u64, Value> {
    records
        .iter()
        .map(|r| (r["row"].as_u64().unwrap(), r.clone()))
        .collect()
}

pub fn read_request_log(path: &Path) -> Vec<LoggedRequest> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Requests that reached the mock inside a throttle window it had already told the client about,
/// leaving out those that were plausibly already in flight when the 429 left (arrived within
/// `in_flight_ms` of the 429 that opened the window).
pub fn sent_inside_told_windows(log: &[LoggedRequest], in_flight_ms: f64) -> Vec<LoggedRequest> {
    let graph: Vec<&LoggedRequest> = log
        .iter()
        .filter(|r| r.path.contains("/security/"))
        .collect();
    let windows: Vec<(f64, f64)> = graph
        .iter()
        .filter(|r| r.status == 429)
        .filter_map(|r| r.window_end_ms.map(|end| (r.t_ms, end)))
        .collect();
    graph
        .iter()
        .filter(|r| {
            windows
                .iter()
                .any(|(told, end)| r.t_ms > told + in_flight_ms && r.t_ms < *end)
        })
        .map(|r| (*r).clone())
        .collect()
}
