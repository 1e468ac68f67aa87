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

/// Runs `graph-remediate run --yes ARGS` in process, as `main` would, with no interruption;
/// the run must end with a status, not an error. (`--yes`: tests have no terminal to confirm on.)
pub async fn run(args: &[&str]) -> ExitStatus {
    let mut argv = vec!["--yes".to_owned()];
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    run_args(&argv).await.expect("run returns a status")
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

/// The bearer token every [`Harness`] mock accepts.
pub const HARNESS_TOKEN: &str = "harness-token";

/// One test's world: a temp dir, a mock on 127.0.0.1:0 that accepts [`HARNESS_TOKEN`], a token
/// file, and `run` in process or as the binary, with the flags every test needs.
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub mock: graph_remediate::mock::MockServer,
    pub token: PathBuf,
}

impl Harness {
    /// A mock with `config` (its tokens extended with [`HARNESS_TOKEN`]; requests recorded).
    pub async fn start(mut config: graph_remediate::mock::MockConfig) -> Harness {
        config.static_tokens.push(HARNESS_TOKEN.to_owned());
        config.record = true;
        let dir = tempfile::tempdir().unwrap();
        let mock = graph_remediate::mock::MockServer::start(config)
            .await
            .unwrap();
        let token = token_file(dir.path(), HARNESS_TOKEN);
        Harness { dir, mock, token }
    }

    pub async fn new() -> Harness {
        Harness::start(graph_remediate::mock::MockConfig::default()).await
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `input.csv` with the standard header and `rows`.
    pub fn input(&self, rows: &[String]) -> PathBuf {
        write_csv(self.dir.path(), "input.csv", rows)
    }

    /// `dir/results.jsonl`, the results file [`Harness::args`] names.
    pub fn results(&self) -> PathBuf {
        self.path("results.jsonl")
    }

    /// `run INPUT -o RESULTS` against the mock with the token file, `--yes`, a high rate and a
    /// short backoff, then `extra` (later flags win where clap allows).
    pub fn args(&self, input: &Path, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = vec![
            input.to_str().unwrap().into(),
            "-o".into(),
            self.results().to_str().unwrap().into(),
            "--graph-url".into(),
            self.mock.base_url(),
            "--access-token-file".into(),
            self.token.to_str().unwrap().into(),
            "--yes".into(),
            "--rate".into(),
            "1000/s".into(),
            "--backoff-base".into(),
            "50ms".into(),
        ];
        // A flag given here replaces its default above (clap refuses most flags twice).
        let mut rest = extra.iter();
        while let Some(flag) = rest.next() {
            let replaces = [
                "-o",
                "--graph-url",
                "--access-token-file",
                "--rate",
                "--backoff-base",
            ];
            match rest.clone().next() {
                Some(value) if replaces.contains(flag) => {
                    args = with_flag(args, flag, value);
                    rest.next();
                }
                // `--yes` is given already; `--no-yes` takes it away (a test without a terminal).
                _ if *flag == "--yes" => {}
                _ if *flag == "--no-yes" => args.retain(|a| a != "--yes"),
                _ => args.push((*flag).to_owned()),
            }
        }
        args
    }

    /// `run` in process with [`Harness::args`]: the status, or the error that ended the run.
    pub async fn run(&self, input: &Path, extra: &[&str]) -> anyhow::Result<ExitStatus> {
        run_args(&self.args(input, extra)).await
    }

    /// The binary with `run` and [`Harness::args`], stdin closed, output captured.
    pub fn binary(&self, input: &Path, extra: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_graph-remediate"));
        command
            .arg("run")
            .args(self.args(input, extra))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        command
    }

    /// Writes `rows` as the input and runs them in process with `extra` flags: the status
    /// (which must not be an error) and the results' records.
    pub async fn run_rows(&self, rows: &[String], extra: &[&str]) -> (ExitStatus, Vec<Value>) {
        let input = self.input(rows);
        let status = self.run(&input, extra).await.expect("run returns a status");
        (status, read_jsonl(&self.results()))
    }

    /// Requests that reached the mock's Graph side so far.
    pub fn graph_requests(&self) -> u64 {
        self.mock.stats().graph_requests
    }
}

impl Harness {
    /// Writes `lines` (the first is the header) as `name` in the harness's directory.
    pub fn write(&self, name: &str, lines: &[&str]) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        path
    }

    /// The invokeAction requests the mock received: (identity id in the path, body).
    pub fn actions_sent(&self) -> Vec<(String, Value)> {
        self.mock
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("invokeAction"))
            .map(|r| {
                let id = r
                    .path
                    .split('/')
                    .rev()
                    .nth(1)
                    .unwrap_or_default()
                    .to_owned();
                (id, r.body.unwrap_or(Value::Null))
            })
            .collect()
    }
}

/// `run ARGS` in process, as `main` would: the exit status, or the error that ended the run
/// (whose status is [`graph_remediate::status_of`]).
pub async fn run_args(args: &[String]) -> anyhow::Result<ExitStatus> {
    let mut argv = vec!["graph-remediate".to_owned(), "run".to_owned()];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).expect("arguments parse");
    let Command::Run(run_args) = cli.command else {
        panic!("not a run");
    };
    let config = graph_remediate::config::RunConfig::try_from(*run_args)?;
    graph_remediate::run(config, std::future::pending()).await
}

/// The exit status a run's result stands for.
pub fn status(result: &anyhow::Result<ExitStatus>) -> ExitStatus {
    match result {
        Ok(status) => *status,
        Err(error) => graph_remediate::status_of(error),
    }
}

/// Polls `condition` every 10 ms until it holds, for at most `limit`; panics naming `what`.
pub async fn wait_until(what: &str, limit: std::time::Duration, condition: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// `args` with `flag`'s value set to `value`: replaced where the flag is given, else appended.
pub fn with_flag(mut args: Vec<String>, flag: &str, value: &str) -> Vec<String> {
    match args.iter().position(|a| a == flag) {
        Some(at) => args[at + 1] = value.to_owned(),
        None => args.extend([flag.to_owned(), value.to_owned()]),
    }
    args
}
