//! `report`'s facts (issue 13): everything the report for an incident ticket says, gathered from
//! what a run wrote (the results file, the lock file beside it and the identity snapshot) into
//! one plain [`Report`], which [`markdown`] and [`html`] lay out. Nothing here sends anything,
//! and nothing read here holds a secret: the lock file records ids and kinds, never a secret.
//!
//! The values are kept as they were read; each renderer escapes them for its format, after
//! [`shown`] has escaped control characters and hidden anything that looks like a token, since
//! every value from the results or the snapshot is attacker-influenced. The sentences both
//! formats say (the facts of the run, what is missing, the undo advice) are made here once.
//!
//! A large run (100,000 rows and more) is streamed once: every row's latest status is kept (a
//! few bytes a row, for the counts, the failure groups and their lines), but the per-row table
//! keeps only the first [`MAX_LISTED_ROWS`] rows by input line, with a note of how many more the
//! results hold; each failure group and the not-attempted list name at most
//! [`MAX_LISTED_LINES`] lines, with a count of the rest (every failure is counted in its group),
//! and the failures list the [`MAX_LISTED_GROUPS`] most frequent error codes. Only the first
//! [`MAX_KEPT_CODES`] codes keep their text and example while streaming; the rest are counted by
//! hash, and the listed ones among them are named by a second read (issue 16).
//! The snapshot is streamed after the results, keeping only the identities of the listed rows.
//!
//! A results file from an interrupted `--resume` may hold two records for one row: the one that
//! counts is [`Counting`]'s, as for `--resume`, the undo file and `confirm`. A row that acted on
//! all of a person's accounts (issue 20) holds one record for each account, and each counts: the
//! account is part of the row's key.
//!
//! When the records say what was seen of each action (`effect`, SPEC section 10), the counts and
//! the per-row table show it, and the undo advice leaves out actions that never took effect.

pub mod html;
pub mod markdown;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::hash::Hasher;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::effects::EffectCounts;
use super::lock::{RunLock, RunState};
use super::record::{Counting, FIELDS, ReadError, Record, RecordReader, ResultsFormat, rfc3339};
use super::summary::{People, Tally, code_hint, resume_command, shell_words};
use crate::graph::identity::Identity;
use crate::graph::model::{Provider, fold_name};
use crate::input::Field;
use crate::outcome::{Effect, RowStatus};
use crate::sanitize::printable;

/// The most rows the per-row table lists (the first ones by input line).
pub const MAX_LISTED_ROWS: usize = 1000;
/// The most input lines a failure group (or the not-attempted list) names.
pub const MAX_LISTED_LINES: usize = 1000;
/// The most error codes the failures list (the most frequent ones); the rest are counted.
pub const MAX_LISTED_GROUPS: usize = 100;

/// The most unreadable lines the report names one by one (the rest are counted).
pub const MAX_NAMED_BAD_LINES: usize = 5;

/// Why there is no report: the results cannot be read. Said as `FILE: reason`, or
/// `FILE:LINE: reason` when one line is at fault.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{}: {cause}", path.display())]
    Unreadable { path: PathBuf, cause: io::Error },
    #[error(
        "{}{}: not a graph-remediate results file ({reason}); give the results file a run wrote (-o of run)",
        path.display(),
        line.map(|l| format!(":{l}")).unwrap_or_default()
    )]
    NotResults {
        path: PathBuf,
        line: Option<u64>,
        reason: String,
    },
}

/// A line of the results or the snapshot that is not a record, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    pub line: u64,
    pub reason: String,
}

/// The lines of a file that are not records: the first [`MAX_NAMED_BAD_LINES`] by number, and
/// how many there are in all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BadLines {
    pub named: Vec<BadLine>,
    pub count: u64,
}

impl BadLines {
    fn push(&mut self, line: u64, reason: impl Into<String>) {
        self.count += 1;
        if self.named.len() < MAX_NAMED_BAD_LINES {
            self.named.push(BadLine {
                line,
                reason: reason.into(),
            });
        }
    }

    /// `FILE line 7 (reason); line 9 (reason), and 3 more`, for the report's notes.
    fn text(&self, file: &Path) -> String {
        let mut out = String::new();
        for (at, bad) in self.named.iter().enumerate() {
            if at > 0 {
                out.push_str("; ");
            }
            let _ = write!(out, "{}:{} ({})", file.display(), bad.line, bad.reason);
        }
        let more = self.count.saturating_sub(self.named.len() as u64);
        if more > 0 {
            let _ = write!(out, ", and {more} more");
        }
        out
    }
}

/// Everything the report says, in the order it says it.
#[derive(Debug, Clone)]
pub struct Report {
    /// The results file, as named on the command line.
    pub results: PathBuf,
    /// What the lock file beside the results says about the run.
    pub lock: Found<RunState>,
    /// The identity snapshot beside the results, and how many identities it held.
    pub snapshot: Found<u64>,
    pub snapshot_path: PathBuf,
    /// The earliest `startedAt` and the latest `finishedAt` among the records.
    pub first_started_at: Option<String>,
    pub last_finished_at: Option<String>,
    /// Counts by status (each row's latest record).
    pub counts: Tally,
    /// The first [`MAX_LISTED_ROWS`] rows, by input line.
    pub rows: Vec<ReportRow>,
    /// Failed rows by error code, most frequent first.
    pub failures: Vec<FailureGroup>,
    /// The error codes past [`MAX_LISTED_GROUPS`]: how many codes, and how many rows they hold.
    pub more_failures: (u64, u64),
    pub not_attempted: Lines,
    /// Rows an undo file would hold: succeeded with an action that has an opposite, and not
    /// known to have never taken effect.
    pub undoable: u64,
    /// Succeeded rows by effect (SPEC section 10), when the results record any effect
    /// (`run --confirm`, `confirm`); `None` when nobody looked.
    pub effects: Option<EffectCounts>,
    pub undo: UndoAdvice,
    /// Lines of the results (or snapshot) that are not records, and records a later one replaced.
    pub bad_records: BadLines,
    pub bad_snapshot_lines: BadLines,
    pub superseded_records: u64,
}

/// A file beside the results: what it says, or why there is nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found<T> {
    Read(T),
    Missing,
    Unreadable(String),
}

impl<T> Found<T> {
    pub fn read(&self) -> Option<&T> {
        match self {
            Found::Read(value) => Some(value),
            _ => None,
        }
    }
}

/// One row of the per-row table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRow {
    /// The input line.
    pub line: u64,
    pub display_name: String,
    pub upn: String,
    pub identity_account_id: String,
    pub account_id: String,
    pub action: String,
    pub provider: String,
    pub status: RowStatus,
    pub error_code: String,
    pub correlation_id: String,
    pub request_id: String,
    /// `confirmed`, `notConfirmed`, `notObservable`, or empty when nobody looked.
    pub effect: String,
    /// The identity as the snapshot holds it (read before the first action); `None` when the
    /// snapshot does not hold it.
    pub before: Option<Before>,
}

impl ReportRow {
    /// The person: display name and UPN, either, or (a row that named its identity only by its
    /// ids, with no snapshot entry) the identity account id.
    pub fn person(&self) -> String {
        match (self.display_name.is_empty(), self.upn.is_empty()) {
            (false, false) if self.display_name != self.upn => {
                format!("{} ({})", self.display_name, self.upn)
            }
            (false, _) => self.display_name.clone(),
            (true, false) => self.upn.clone(),
            (true, true) if self.identity_account_id.is_empty() => String::new(),
            (true, true) => format!("identity {}", self.identity_account_id),
        }
    }

    /// The state before the action, in words; empty without a snapshot.
    pub fn before_text(&self) -> String {
        let Some(before) = &self.before else {
            return String::new();
        };
        let enabled = match before.is_enabled {
            Some(true) => "enabled",
            Some(false) => "disabled",
            None => "enabled: unknown",
        };
        match &before.offered {
            Some(actions) if actions.is_empty() => format!("{enabled}; offered no action"),
            Some(actions) => format!("{enabled}; offered {}", actions.join(", ")),
            None => format!("{enabled}; no linked account matched the row"),
        }
    }
}

/// An identity's state before the action, from the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Before {
    pub is_enabled: Option<bool>,
    /// The actions the row's linked account offered (matched by accountId, else by provider);
    /// `None` when no linked account matched.
    pub offered: Option<Vec<String>>,
}

impl Before {
    fn of(identity: &Identity, account_id: &str, provider: &str) -> Before {
        let provider = Provider::parse(provider);
        let account = identity
            .accounts
            .iter()
            .find(|a| !account_id.is_empty() && a.identifier.eq_ignore_ascii_case(account_id))
            .or_else(|| {
                identity
                    .accounts
                    .iter()
                    .find(|a| provider.is_some() && a.provider() == provider)
            });
        Before {
            is_enabled: identity.is_enabled,
            offered: account.map(|account| account.offered()),
        }
    }
}

/// The failed rows of one error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureGroup {
    pub code: String,
    pub count: u64,
    pub lines: Lines,
    /// The errorMessage of the first such record read, as an example.
    pub example: String,
    /// What to do next ([`code_hint`]), when there is advice for the code.
    pub hint: Option<&'static str>,
}

/// Input lines, listed up to [`MAX_LISTED_LINES`], with how many more there are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lines {
    pub listed: Vec<u64>,
    pub more: u64,
}

impl Lines {
    fn from_unsorted(mut lines: Vec<u64>) -> Lines {
        lines.sort_unstable();
        // A row that acted on several accounts is one line (issue 20).
        lines.dedup();
        let more = lines.len().saturating_sub(MAX_LISTED_LINES) as u64;
        lines.truncate(MAX_LISTED_LINES);
        Lines {
            listed: lines,
            more,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.listed.is_empty()
    }

    /// `2-5, 9, 11-12`, and `and N more` past the listed ones.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let mut at = 0;
        while at < self.listed.len() {
            let first = self.listed[at];
            let mut last = first;
            while at + 1 < self.listed.len() && self.listed[at + 1] == last + 1 {
                at += 1;
                last = self.listed[at];
            }
            if !out.is_empty() {
                out.push_str(", ");
            }
            if first == last {
                let _ = write!(out, "{first}");
            } else {
                let _ = write!(out, "{first}-{last}");
            }
            at += 1;
        }
        if self.more > 0 {
            let _ = write!(out, ", and {} more", self.more);
        }
        out
    }
}

/// What the report says about undoing the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UndoAdvice {
    /// An undo file is there: the one the run wrote (`rows` unknown), or the one `report
    /// --undo-file` just wrote.
    Ready {
        path: PathBuf,
        rows: Option<u64>,
        written_now: bool,
    },
    /// None is; the run may have named one that is gone.
    NotWritten { named_but_missing: Option<String> },
}

/// The paths `report` reads beside the results.
pub struct Beside {
    pub lock: PathBuf,
    pub snapshot: PathBuf,
}

impl Beside {
    pub fn results(results: &Path) -> Beside {
        Beside {
            lock: RunLock::path_for(results),
            snapshot: super::snapshot::path_for(results),
        }
    }
}

/// The most bytes of a lock file read: a run's state is a few hundred bytes.
pub const MAX_LOCK_BYTES: u64 = 1024 * 1024;

/// What the lock file beside the results says: the run's facts, or why there are none. Never
/// blocks on a FIFO, and never reads more than [`MAX_LOCK_BYTES`] (issue 16).
pub fn read_lock(path: &Path) -> Found<RunState> {
    match super::paths::read_head(path, MAX_LOCK_BYTES) {
        Ok(Some((_, true))) => Found::Unreadable(format!(
            "larger than {} KiB, which no lock file this tool writes is",
            MAX_LOCK_BYTES / 1024
        )),
        Ok(Some((text, false))) => match serde_json::from_slice(text.trim_ascii()) {
            Ok(state) => Found::Read(state),
            Err(error) => Found::Unreadable(error.to_string()),
        },
        Ok(None) => Found::Missing,
        Err(error) => Found::Unreadable(error.to_string()),
    }
}

/// The undo file the run named, when it is there: as named (relative to where the run was
/// started, which is often where the report is made), else beside the results.
pub fn named_undo_file(lock: &Found<RunState>, results: &Path) -> Option<PathBuf> {
    let named = lock.read()?.about.undo_file.as_ref()?;
    let path = PathBuf::from(named);
    if path.is_file() {
        return Some(path);
    }
    let beside = super::paths::parent_dir(results).join(path.file_name()?);
    (path.is_relative() && beside.is_file()).then_some(beside)
}

/// Gathers the report for the results at `results` (and the lock file and snapshot beside
/// them).
pub fn gather(results: &Path) -> Result<Report, ReportError> {
    let beside = Beside::results(results);
    let lock = read_lock(&beside.lock);
    let mut gathering = Gathering::default();
    let columns = carried_columns(results)?;
    gathering.person = PersonColumns::among(&columns);
    for_each_record(results, &mut |at, fields| gathering.take(at, fields))?;
    let mut report = gathering.finish(results, lock)?;
    report.snapshot_path = beside.snapshot;
    read_snapshot(&mut report);
    report.undo = match named_undo_file(&report.lock, results) {
        Some(path) => UndoAdvice::Ready {
            path,
            rows: None,
            written_now: false,
        },
        None => UndoAdvice::NotWritten {
            named_but_missing: report
                .lock
                .read()
                .and_then(|state| state.about.undo_file.clone()),
        },
    };
    Ok(report)
}

impl Report {
    /// The input the run read, by file name (the results file's when the lock file is gone).
    pub fn input_name(&self) -> String {
        let input = match self.lock.read() {
            Some(state) => PathBuf::from(&state.input),
            None => self.results.clone(),
        };
        input.file_name().map_or_else(
            || input.display().to_string(),
            |n| n.to_string_lossy().into(),
        )
    }

    pub fn title(&self) -> String {
        format!("Remediation report: {}", self.input_name())
    }

    /// Whether the run was a rehearsal against the built-in mock.
    pub fn is_rehearsal(&self) -> bool {
        self.lock.read().is_some_and(RunState::is_rehearsal)
    }

    /// The run's facts, by name: when, where, as whom, with what.
    pub fn facts(&self) -> Vec<(&'static str, String)> {
        let state = self.lock.read();
        let about = state.map(|s| &s.about);
        let known =
            |value: Option<&String>| value.map_or_else(|| "not recorded".to_owned(), Clone::clone);
        let started = about
            .and_then(|a| a.started_at.clone())
            .or_else(|| {
                self.first_started_at
                    .as_ref()
                    .map(|t| format!("{t} (the first request)"))
            })
            .unwrap_or_else(|| "not recorded".to_owned());
        let endpoint = match state {
            Some(state) if state.is_rehearsal() => {
                "rehearsal against the built-in mock: nothing was sent to Microsoft".to_owned()
            }
            Some(state) => known(state.endpoint.as_ref()),
            None => "not recorded".to_owned(),
        };
        let snapshot = match &self.snapshot {
            Found::Read(count) => format!(
                "{} ({count} identities as read before the first action)",
                self.snapshot_path.display()
            ),
            _ => "none".to_owned(),
        };
        let mut rows = vec![
            ("Started", started),
            ("Last row finished", known(self.last_finished_at.as_ref())),
            ("Endpoint", endpoint),
            ("Tenant", known(about.and_then(|a| a.tenant.as_ref()))),
            (
                "App (client id)",
                known(about.and_then(|a| a.client_id.as_ref())),
            ),
            (
                "Credential",
                known(about.and_then(|a| a.credential.as_ref())),
            ),
            (
                "Tool version",
                known(about.and_then(|a| a.version.as_ref())),
            ),
            ("Input", known(state.map(|s| &s.input))),
            ("Results", self.results.display().to_string()),
            ("Identity snapshot", snapshot),
        ];
        // Who acted (issue 18): the signed-in user, or the app's or managed identity's id.
        // Lock files written before it was recorded leave the row out.
        if let Some(acted_as) = about.and_then(|a| a.acted_as.clone()) {
            rows.insert(6, ("Acted as", acted_as));
        }
        rows
    }

    /// How the people with several accounts fared (issue 20), when some person has records
    /// for more than one: the summary's sentence.
    pub fn people(&self) -> Option<String> {
        let people = self.counts.people.counts();
        (people.with_several_accounts > 0).then(|| super::summary::people_text(&people))
    }

    /// The command line the run was started with.
    pub fn command_line(&self) -> Option<&str> {
        self.lock.read()?.about.command_line.as_deref()
    }

    /// What the report could not read, one sentence each.
    pub fn missing(&self) -> Vec<String> {
        let mut notes = Vec::new();
        let lock = RunLock::path_for(&self.results);
        match &self.lock {
            Found::Read(_) => {}
            Found::Missing => notes.push(format!(
                "No lock file ({}): when, against which tenant and app, and with which command line the run was started are not known.",
                lock.display()
            )),
            Found::Unreadable(reason) => notes.push(format!(
                "The lock file {} could not be read ({reason}): when, against which tenant and app, and with which command line the run was started are not known.",
                lock.display()
            )),
        }
        let snapshot = self.snapshot_path.display();
        match &self.snapshot {
            Found::Read(_) => {}
            Found::Missing => notes.push(format!(
                "No identity snapshot ({snapshot}): the run looked nobody up (every row carried its ids), or the file was moved; the state before each action is not known."
            )),
            Found::Unreadable(reason) => notes.push(format!(
                "The identity snapshot {snapshot} could not be read ({reason}): the state before each action is not known."
            )),
        }
        if self.bad_records.count > 0 {
            notes.push(format!(
                "{} line(s) of the results are not records (a line cut short when a run was killed, or one edited by hand) and are left out: {}.",
                self.bad_records.count,
                self.bad_records.text(&self.results)
            ));
        }
        if self.bad_snapshot_lines.count > 0 {
            notes.push(format!(
                "{} line(s) of the identity snapshot could not be read and are left out: {}.",
                self.bad_snapshot_lines.count,
                self.bad_snapshot_lines.text(&self.snapshot_path)
            ));
        }
        if self.superseded_records > 0 {
            notes.push(format!(
                "{} earlier record(s) of rows recorded again (a --resume that did not finish) are left out: each row counts by its last record.",
                self.superseded_records
            ));
        }
        notes
    }

    /// The note under the failures when there are more error codes than they list.
    pub fn failures_cut(&self) -> Option<String> {
        let (codes, rows) = self.more_failures;
        (codes > 0).then(|| {
            format!(
                "{codes} more error code(s), {rows} row(s) in all, are not listed; the results file {} holds every row.",
                self.results.display()
            )
        })
    }

    /// The note under the per-row table when it lists fewer rows than the results hold.
    pub fn rows_cut(&self) -> Option<String> {
        let total = self.counts.rows();
        (total > self.rows.len() as u64).then(|| {
            format!(
                "The first {} rows of {total} are listed; the results file {} holds every row (failed rows are all counted under Failures).",
                self.rows.len(),
                self.results.display()
            )
        })
    }

    /// The command that sends the failed and not-attempted rows again: the run's own command
    /// line with `--resume` (rows that succeeded are skipped).
    pub fn rest_command(&self) -> Option<String> {
        if self.counts.failed + self.counts.not_attempted == 0 {
            return None;
        }
        let words = shlex::split(self.command_line()?)?;
        let argv: Vec<std::ffi::OsString> = words.into_iter().map(Into::into).collect();
        Some(resume_command(&argv))
    }

    /// What to say about undoing the batch: a sentence, and the command to run (if any).
    pub fn undo_steps(&self) -> (String, Option<String>) {
        let (mut text, command) = self.undo_steps_for_accepted();
        if let Some(effects) = self.effects.filter(|e| e.not_confirmed > 0) {
            let _ = write!(
                text,
                " {} row(s) whose action never showed (effect notConfirmed) need no undo and are left out; if graph-remediate confirm later sees them take effect, write the undo file again.",
                effects.not_confirmed
            );
        }
        (text, command)
    }

    fn undo_steps_for_accepted(&self) -> (String, Option<String>) {
        let mock = if self.is_rehearsal() { " --mock" } else { "" };
        let rehearsal = if self.is_rehearsal() {
            " The run was a rehearsal: nothing changed at Microsoft, so the command rehearses the undo too (--mock)."
        } else {
            ""
        };
        match &self.undo {
            UndoAdvice::Ready {
                path,
                rows,
                written_now,
            } => {
                let who = if *written_now {
                    "this report wrote"
                } else {
                    "the run wrote"
                };
                if *rows == Some(0) {
                    return (
                        format!(
                            "The undo file {who} ({}) holds no row: no row succeeded with an action that has an opposite (disable and enable reverse each other; other actions cannot be undone).",
                            path.display()
                        ),
                        None,
                    );
                }
                let rows = rows.map_or_else(String::new, |rows| format!(", {rows} row(s)"));
                let command = format!(
                    "graph-remediate run {}{mock}",
                    shell_words(&[path.display().to_string()])
                );
                (
                    format!(
                        "To reverse this batch's disable and enable actions, run the undo file {who} ({}{rows}).{rehearsal}",
                        path.display()
                    ),
                    Some(command),
                )
            }
            UndoAdvice::NotWritten { .. } if self.undoable == 0 => (
                "Nothing to undo: no row succeeded with an action that has an opposite (disable and enable reverse each other; other actions cannot be undone).".to_owned(),
                None,
            ),
            UndoAdvice::NotWritten { named_but_missing } => {
                let gone = named_but_missing.as_ref().map_or_else(String::new, |named| {
                    format!(" (the run named {named}, which is not there)")
                });
                let command = format!(
                    "graph-remediate report {} --undo-file undo.csv",
                    shell_words(&[self.results.display().to_string()])
                );
                (
                    format!(
                        "No undo file was written{gone}. This command writes one, holding the {} row(s) that reverse the succeeded disable and enable actions (it reads the results and sends nothing); then run it with graph-remediate run undo.csv{mock}.{rehearsal}",
                        self.undoable
                    ),
                    Some(command),
                )
            }
        }
    }
}

// --- values as the report shows them ---------------------------------------------------------

/// What a token is shown as.
pub const TOKEN_SHOWN_AS: &str = "[token hidden]";

/// `value` as either format shows it: control characters and bidirectional overrides escaped,
/// length bounded ([`printable`]), and anything that looks like an access token hidden
/// ([`hide_tokens`]). The renderers then escape it for their format.
pub fn shown(value: &str) -> String {
    hide_tokens(&printable(value)).into_owned()
}

/// `text` with every JSON Web Token (`header.payload.signature`, the header starting `eyJ`) and
/// every `Bearer` credential replaced by [`TOKEN_SHOWN_AS`]. None of the files a report reads
/// should hold one (the tool never records a token), but a hand-edited results file or a carried
/// column could, and a report travels further than the files do.
pub fn hide_tokens(text: &str) -> Cow<'_, str> {
    let lower = text.to_ascii_lowercase();
    if !text.contains("eyJ") && !lower.contains("bearer") {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let (mut copied, mut at) = (0, 0);
    while at < bytes.len() {
        let hidden = if bytes[at..].starts_with(b"eyJ") && !continues_word(bytes, at) {
            jwt_end(bytes, at)
        } else if lower.as_bytes()[at..].starts_with(b"bearer") && !continues_word(bytes, at) {
            bearer_end(bytes, at)
        } else {
            None
        };
        match hidden {
            Some((start, end)) => {
                // `start` and `end` are at ASCII bytes, so on character boundaries.
                out.push_str(&text[copied..start]);
                out.push_str(TOKEN_SHOWN_AS);
                copied = end;
                at = end;
            }
            None => at += 1,
        }
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// Whether the byte before `at` is part of the same word (a token starts a word).
fn continues_word(bytes: &[u8], at: usize) -> bool {
    at > 0 && is_token_byte(bytes[at - 1])
}

fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_')
}

/// The length of the run of base64url characters at `from`.
fn token_run(bytes: &[u8], from: usize) -> usize {
    bytes.get(from..).map_or(0, |rest| {
        rest.iter().take_while(|b| is_token_byte(**b)).count()
    })
}

/// The span of a JWT starting at `start`: a header of at least ten characters, a dot, a
/// payload, and an optional dot and signature.
fn jwt_end(bytes: &[u8], start: usize) -> Option<(usize, usize)> {
    let header = token_run(bytes, start);
    let mut end = start + header;
    if header < 10 || bytes.get(end) != Some(&b'.') {
        return None;
    }
    let payload = token_run(bytes, end + 1);
    if payload == 0 {
        return None;
    }
    end += 1 + payload;
    if bytes.get(end) == Some(&b'.') {
        end += 1 + token_run(bytes, end + 1);
    }
    Some((start, end))
}

/// The span of the credential after `Bearer` at `at` (`Bearer abc...`, `bearer=abc...`): at
/// least 16 characters that are not space, quote or separator. `Bearer` itself stays.
fn bearer_end(bytes: &[u8], at: usize) -> Option<(usize, usize)> {
    let mut start = at + "bearer".len();
    let gap = bytes
        .get(start..)?
        .iter()
        .take_while(|b| matches!(b, b' ' | b'=' | b':'))
        .count();
    if gap == 0 {
        return None;
    }
    start += gap;
    let credential = bytes[start..]
        .iter()
        .take_while(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\'' | b',' | b';'))
        .count();
    (credential >= 16).then_some((start, start + credential))
}

// --- reading the results ------------------------------------------------------------------------

impl From<ReadError> for ReportError {
    fn from(error: ReadError) -> ReportError {
        match error {
            ReadError::Io { path, cause } => ReportError::Unreadable { path, cause },
            ReadError::NotARecord { path, line, reason } => ReportError::NotResults {
                path,
                line: Some(line),
                reason,
            },
        }
    }
}

/// The results' carried columns (the input's own columns, as the results name them), in order:
/// from the CSV header, or the first JSONL record.
pub fn carried_columns(results: &Path) -> Result<Vec<String>, ReportError> {
    if ResultsFormat::from_path(results) == ResultsFormat::Csv {
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .from_path(results)
            .map_err(|e| ReportError::Unreadable {
                path: results.to_path_buf(),
                cause: e.into(),
            })?;
        let headers = reader.headers().map_err(|e| ReportError::Unreadable {
            path: results.to_path_buf(),
            cause: e.into(),
        })?;
        return Ok(headers
            .iter()
            .filter(|name| !FIELDS.contains(name))
            .map(str::to_owned)
            .collect());
    }
    let mut reader = RecordReader::open(results)?;
    while let Some(line) = reader.next_line()? {
        if let Ok(record) = line.record {
            return Ok(record.carried.into_keys().collect());
        }
    }
    Ok(Vec::new())
}

/// Calls `take` with every line of the results, in file order: its line number, and its record
/// or why it is none. A line that is not a record is not fatal (a killed run may leave one cut
/// short); a file with lines but no record is refused, naming its first line.
fn for_each_record(
    results: &Path,
    take: &mut dyn FnMut(u64, Result<&Record, &str>),
) -> Result<(), ReportError> {
    let mut reader = RecordReader::open(results)?;
    let mut records = 0u64;
    let mut first_bad: Option<(u64, String)> = None;
    while let Some(line) = reader.next_line()? {
        match &line.record {
            Ok(record) => {
                records += 1;
                take(line.number, Ok(record));
            }
            Err(reason) => {
                take(line.number, Err(reason));
                if first_bad.is_none() {
                    first_bad = Some((line.number, reason.clone()));
                }
            }
        }
    }
    match first_bad {
        Some((line, reason)) if records == 0 => Err(ReportError::NotResults {
            path: results.to_path_buf(),
            line: Some(line),
            reason,
        }),
        _ => Ok(()),
    }
}

/// A row's latest status, kept for every row.
#[derive(Debug, Clone, Copy)]
struct RowDigest {
    line: u64,
    /// The hash of the error code ([`Gathering::hash_code`]), for failed rows.
    code: Option<u64>,
    undoable: bool,
    effect: Option<Effect>,
    /// The person (identity account) the record acted on, for [`People`].
    person: Option<u64>,
}

/// A row's record as the report keys it: its input line and which account it acted on, since a
/// row that acts on all of a person's accounts writes one record for each (issue 20); the
/// account is a hash of its identity account, account and provider.
type RecordAt = (u64, u64);

fn record_at(record: &Record) -> RecordAt {
    let mut hasher = std::hash::DefaultHasher::new();
    let provider = record
        .identity_provider
        .map(Provider::as_str)
        .unwrap_or_default();
    for text in [&*record.identity_account_id, &*record.account_id, provider] {
        hasher.write(text.as_bytes());
        hasher.write_u8(0xff);
    }
    (record.row, hasher.finish())
}

/// The most error codes whose text and example message are kept while the results stream by
/// (issue 16: a million distinct codes took 2.6 GB). Past it a code is only counted, by hash;
/// the few of those the report lists are named by a second read of the results.
pub const MAX_KEPT_CODES: usize = 1000;

/// An error code's text, and the first errorMessage read for it.
#[derive(Debug, Clone)]
struct CodeText {
    code: String,
    example: String,
}

/// The carried columns that name the person: a UPN column and a display-name column.
#[derive(Debug, Default)]
struct PersonColumns {
    upn: Option<String>,
    display_name: Option<String>,
}

impl PersonColumns {
    fn among(columns: &[String]) -> PersonColumns {
        PersonColumns {
            upn: columns
                .iter()
                .find(|name| Field::from_header(name) == Some(Field::Upn))
                .cloned(),
            display_name: columns
                .iter()
                .find(|name| {
                    matches!(
                        fold_name(name.trim()).as_str(),
                        "displayname" | "accountdisplayname"
                    )
                })
                .cloned(),
        }
    }
}

/// The report as the records pass by.
#[derive(Default)]
struct Gathering {
    person: PersonColumns,
    /// Every row's counting record ([`Counting`]'s rule, as for `--resume`).
    latest: Counting<RowDigest>,
    listed: BTreeMap<RecordAt, ReportRow>,
    /// Every code seen, by hash: the order it was first seen in (ties are listed in it when
    /// not every code's text was kept).
    code_order: HashMap<u64, u32>,
    /// The text of the first [`MAX_KEPT_CODES`] codes seen, by hash.
    code_texts: HashMap<u64, CodeText>,
    hasher: std::hash::RandomState,
    first_started_at: Option<SystemTime>,
    last_finished_at: Option<SystemTime>,
    bad: BadLines,
}

impl Gathering {
    fn take(&mut self, at: u64, record: Result<&Record, &str>) {
        let record = match record {
            Ok(record) => record,
            Err(reason) => {
                self.bad.push(at, reason);
                return;
            }
        };
        if let Some(started) = record.started_at {
            self.first_started_at = Some(self.first_started_at.map_or(started, |t| t.min(started)));
        }
        if let Some(finished) = record.finished_at {
            self.last_finished_at =
                Some(self.last_finished_at.map_or(finished, |t| t.max(finished)));
        }
        let status = record.status;
        let code = (status == RowStatus::Failed).then(|| self.code_of(record));
        // An action that never took effect needs no undo (SPEC section 10).
        let undoable = status == RowStatus::Succeeded
            && record.action.opposite().is_some()
            && record.identity_provider.is_some()
            && record.effect != Some(Effect::NotConfirmed);
        let line = record.row;
        let digest = RowDigest {
            line,
            code,
            undoable,
            effect: record.effect,
            person: People::key_of(&record.identity_account_id),
        };
        if !self.latest.offer(record, |_| digest) {
            return;
        }
        let key = record_at(record);
        let listed_already = self.listed.contains_key(&key);
        let room = self.listed.len() < MAX_LISTED_ROWS;
        let earlier_than_listed = self.listed.last_key_value().is_some_and(|(l, _)| key < *l);
        if listed_already || room || earlier_than_listed {
            let carried = |column: &Option<String>| {
                column
                    .as_ref()
                    .and_then(|name| record.carried.get(name))
                    .cloned()
                    .unwrap_or_default()
            };
            let text = |value: &Option<String>| value.clone().unwrap_or_default();
            let row = ReportRow {
                line,
                display_name: carried(&self.person.display_name),
                upn: carried(&self.person.upn),
                identity_account_id: record.identity_account_id.clone(),
                account_id: record.account_id.clone(),
                action: record.action.as_str().to_owned(),
                provider: record
                    .identity_provider
                    .map(Provider::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                status,
                error_code: text(&record.error_code),
                correlation_id: text(&record.correlation_id),
                request_id: text(&record.request_id),
                effect: record
                    .effect
                    .map(Effect::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                before: None,
            };
            self.listed.insert(key, row);
            if self.listed.len() > MAX_LISTED_ROWS {
                self.listed.pop_last();
            }
        }
    }

    /// The failure's code as the summary tallies it: errorCode, else the HTTP status, else
    /// `unknown`.
    fn code_text(record: &Record) -> String {
        match (&record.error_code, record.http_status) {
            (Some(code), _) => code.clone(),
            (None, Some(http)) => format!("HTTP {http}"),
            (None, None) => "unknown".to_owned(),
        }
    }

    fn hash_code(&self, code: &str) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(code)
    }

    /// The failure's code, by hash; its text (with the first message as the group's example)
    /// kept for the first [`MAX_KEPT_CODES`] codes.
    fn code_of(&mut self, record: &Record) -> u64 {
        let code = Gathering::code_text(record);
        let hash = self.hash_code(&code);
        let order = u32::try_from(self.code_order.len()).unwrap_or(u32::MAX);
        if let std::collections::hash_map::Entry::Vacant(entry) = self.code_order.entry(hash) {
            entry.insert(order);
            if self.code_texts.len() < MAX_KEPT_CODES {
                let example = record.error_message.clone().unwrap_or_default();
                self.code_texts.insert(hash, CodeText { code, example });
            }
        }
        hash
    }

    fn finish(mut self, results: &Path, lock: Found<RunState>) -> Result<Report, ReportError> {
        let mut counts = Tally::default();
        let mut per_code: HashMap<u64, u64> = HashMap::new();
        let mut not_attempted = Vec::new();
        let mut undoable = 0;
        let mut effects = EffectCounts::default();
        let mut any_effect = false;
        let superseded = self.latest.not_counted();
        let latest: Vec<(RowStatus, RowDigest)> = std::mem::take(&mut self.latest)
            .into_counted()
            .map(|(_, status, digest)| (status, digest))
            .collect();
        for (status, digest) in &latest {
            counts.people.push_key(digest.person, *status);
            if *status == RowStatus::Succeeded {
                effects.push(digest.effect);
                any_effect |= digest.effect.is_some();
            }
            match status {
                RowStatus::Succeeded => counts.succeeded += 1,
                RowStatus::Failed => counts.failed += 1,
                RowStatus::Skipped => counts.skipped += 1,
                RowStatus::NotAttempted => {
                    counts.not_attempted += 1;
                    not_attempted.push(digest.line);
                }
            }
            if let Some(code) = digest.code {
                *per_code.entry(code).or_default() += 1;
            }
            undoable += u64::from(digest.undoable);
        }
        // Most frequent first; ties by name when every code's text was kept (as the summary
        // ranks them), else in the order first seen.
        let all_named = per_code
            .keys()
            .all(|hash| self.code_texts.contains_key(hash));
        let mut ranked: Vec<(u64, u64)> = per_code.into_iter().collect();
        ranked.sort_by(|a, b| {
            b.1.cmp(&a.1).then_with(|| {
                if all_named {
                    let name = |hash: &u64| self.code_texts.get(hash).map(|t| t.code.as_str());
                    name(&a.0).cmp(&name(&b.0))
                } else {
                    self.code_order.get(&a.0).cmp(&self.code_order.get(&b.0))
                }
            })
        });
        let rest = ranked.split_off(ranked.len().min(MAX_LISTED_GROUPS));
        let more_failures = (rest.len() as u64, rest.iter().map(|(_, count)| count).sum());
        drop(rest);
        self.name_listed_codes(results, &ranked)?;
        let mut lines: HashMap<u64, Vec<u64>> =
            ranked.iter().map(|(hash, _)| (*hash, Vec::new())).collect();
        for (_, digest) in &latest {
            if let Some(list) = digest.code.and_then(|code| lines.get_mut(&code)) {
                list.push(digest.line);
            }
        }
        let failures: Vec<FailureGroup> = ranked
            .iter()
            .map(|(hash, count)| {
                let text = self.code_texts.get(hash).cloned().unwrap_or(CodeText {
                    code: "unknown (the results changed while the report was made)".to_owned(),
                    example: String::new(),
                });
                let hint = code_hint(&text.code);
                FailureGroup {
                    count: *count,
                    lines: Lines::from_unsorted(lines.remove(hash).unwrap_or_default()),
                    example: text.example,
                    hint,
                    code: text.code,
                }
            })
            .collect();
        for group in &failures {
            counts.error_codes.insert(group.code.clone(), group.count);
        }
        Ok(Report {
            results: results.to_path_buf(),
            lock,
            snapshot: Found::Missing,
            snapshot_path: PathBuf::new(),
            first_started_at: self.first_started_at.map(rfc3339),
            last_finished_at: self.last_finished_at.map(rfc3339),
            counts,
            rows: self.listed.into_values().collect(),
            failures,
            more_failures,
            not_attempted: Lines::from_unsorted(not_attempted),
            undoable,
            effects: any_effect.then_some(effects),
            undo: UndoAdvice::NotWritten {
                named_but_missing: None,
            },
            bad_records: self.bad,
            bad_snapshot_lines: BadLines::default(),
            superseded_records: superseded,
        })
    }

    /// Reads the results again for the text of the listed codes that were not kept (only when
    /// more than [`MAX_KEPT_CODES`] codes were seen).
    fn name_listed_codes(
        &mut self,
        results: &Path,
        listed: &[(u64, u64)],
    ) -> Result<(), ReportError> {
        let mut unnamed: HashSet<u64> = listed
            .iter()
            .map(|(hash, _)| *hash)
            .filter(|hash| !self.code_texts.contains_key(hash))
            .collect();
        if unnamed.is_empty() {
            return Ok(());
        }
        let mut found: Vec<(u64, CodeText)> = Vec::new();
        for_each_record(results, &mut |_, record| {
            let Ok(record) = record else { return };
            if unnamed.is_empty() || record.status != RowStatus::Failed {
                return;
            }
            let code = Gathering::code_text(record);
            let hash = self.hash_code(&code);
            if unnamed.remove(&hash) {
                let example = record.error_message.clone().unwrap_or_default();
                found.push((hash, CodeText { code, example }));
            }
        })?;
        self.code_texts.extend(found);
        Ok(())
    }
}

// --- reading the snapshot -----------------------------------------------------------------------

/// One line of the identity snapshot.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct SnapshotLine {
    identity_account_id: String,
    identity: Identity,
}

/// Streams the snapshot, keeping the identities of the listed rows (the first line for each:
/// the state before the first run's actions), and fills in the rows' person and state before.
fn read_snapshot(report: &mut Report) {
    // Never a FIFO, which would block for ever (issue 16).
    let file = match super::paths::open_regular(&report.snapshot_path) {
        Ok(Some(file)) => file,
        Ok(None) => {
            report.snapshot = Found::Missing;
            return;
        }
        Err(error) => {
            report.snapshot = Found::Unreadable(error.to_string());
            return;
        }
    };
    let wanted: HashSet<&str> = report
        .rows
        .iter()
        .map(|row| row.identity_account_id.as_str())
        .filter(|id| !id.is_empty())
        .collect();
    let mut found: HashMap<String, Identity> = HashMap::new();
    let mut identities = 0u64;
    for (at, line) in BufReader::new(file).split(b'\n').enumerate() {
        let line = match line {
            Ok(line) => line,
            Err(error) => {
                report.snapshot = Found::Unreadable(error.to_string());
                return;
            }
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<SnapshotLine>(&line) {
            Ok(entry) => {
                identities += 1;
                if wanted.contains(entry.identity_account_id.as_str())
                    && !found.contains_key(&entry.identity_account_id)
                {
                    found.insert(entry.identity_account_id, entry.identity);
                }
            }
            Err(error) => report
                .bad_snapshot_lines
                .push(at as u64 + 1, format!("not an identity: {error}")),
        }
    }
    report.snapshot = Found::Read(identities);
    for row in &mut report.rows {
        let Some(identity) = found.get(&row.identity_account_id) else {
            continue;
        };
        if let Some(name) = identity.display_name.as_ref().filter(|n| !n.is_empty()) {
            row.display_name.clone_from(name);
        }
        if let Some(upn) = identity
            .user_principal_name
            .as_ref()
            .filter(|u| !u.is_empty())
        {
            row.upn.clone_from(upn);
        }
        row.before = Some(Before::of(identity, &row.account_id, &row.provider));
    }
}

#[cfg(test)]
mod tests;
