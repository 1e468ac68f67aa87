//! The end-of-run summary (issue 7): the tally the results writer builds as records pass through
//! it, and the [`Summary`] made from it and the run's facts. The summary is rendered as text for
//! the operator on stderr, and written as one JSON object by `--summary-json` for scheduled jobs;
//! both come from the same struct, so they never disagree. It ends with what to do next, down to
//! the exact `--resume` command. [`People`] groups the records by person, to say who was acted on
//! only partly (issue 20); the report counts them the same way.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::hash::{DefaultHasher, Hasher};
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::effects::EffectCounts;
use super::journal::rfc3339;
use crate::ExitStatus;
use crate::input::plan::KeyMap;
use crate::outcome::{Outcome, RowStatus, StopReason};
use crate::units::Rate;

/// Counts of what happened, gathered apart from the workers (the writer owns it).
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub succeeded: u64,
    pub failed: u64,
    pub skipped: u64,
    pub not_attempted: u64,
    pub error_codes: HashMap<String, u64>,
    /// Each person's records, to tell who was acted on only partly (issue 20).
    pub people: People,
}

impl Tally {
    pub fn push(&mut self, outcome: &Outcome) {
        self.people
            .push(&outcome.job.identity_account_id, outcome.status);
        match outcome.status {
            RowStatus::Succeeded => self.succeeded += 1,
            RowStatus::Failed => self.failed += 1,
            RowStatus::Skipped => self.skipped += 1,
            RowStatus::NotAttempted => self.not_attempted += 1,
        }
        if outcome.status == RowStatus::Failed {
            let code = outcome
                .error_code
                .clone()
                .or_else(|| outcome.http_status.map(|s| format!("HTTP {s}")))
                .unwrap_or_else(|| "unknown".to_owned());
            *self.error_codes.entry(code).or_default() += 1;
        }
    }

    pub fn rows(&self) -> u64 {
        self.succeeded + self.failed + self.skipped + self.not_attempted
    }

    /// The most frequent error codes, most frequent first (ties by name).
    pub fn top_errors(&self, limit: usize) -> Vec<(&str, u64)> {
        let mut codes: Vec<(&str, u64)> = self
            .error_codes
            .iter()
            .map(|(code, count)| (code.as_str(), *count))
            .collect();
        codes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        codes.truncate(limit);
        codes
    }
}

/// The records of each person (an identity account), by a hash of its id: how many of their
/// accounts' actions succeeded and how many did not (failed, refused, not attempted). A row that
/// acts on all of a person's accounts (issue 20) writes one record for each, and so do rows that
/// name the person's accounts one by one; a skipped duplicate counts for neither.
#[derive(Debug, Clone, Default)]
pub struct People {
    by_identity: KeyMap<u64, Person>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Person {
    done: u32,
    not_done: u32,
}

/// How the people with more than one record fared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeopleCounts {
    /// People with records for more than one account.
    pub with_several_accounts: u64,
    /// Of those, people whose every account's action succeeded.
    pub done_on_every_account: u64,
    /// Of those, people acted on partly: some of their accounts succeeded, some did not.
    pub partly: u64,
}

impl People {
    /// Counts a record of the identity `identity_account_id` (none for a row refused before
    /// its identity was found).
    pub fn push(&mut self, identity_account_id: &str, status: RowStatus) {
        self.push_key(People::key_of(identity_account_id), status);
    }

    /// The key a person is counted by: a hash of the identity account's id, none when empty.
    pub fn key_of(identity_account_id: &str) -> Option<u64> {
        if identity_account_id.is_empty() {
            return None;
        }
        let mut hasher = DefaultHasher::new();
        hasher.write(identity_account_id.as_bytes());
        Some(hasher.finish())
    }

    /// [`People::push`] by the person's key ([`People::key_of`]).
    pub fn push_key(&mut self, key: Option<u64>, status: RowStatus) {
        let Some(key) = key.filter(|_| status != RowStatus::Skipped) else {
            return;
        };
        let person = self.by_identity.entry(key).or_default();
        match status {
            RowStatus::Succeeded => person.done = person.done.saturating_add(1),
            _ => person.not_done = person.not_done.saturating_add(1),
        }
    }

    pub fn counts(&self) -> PeopleCounts {
        let mut counts = PeopleCounts::default();
        for person in self.by_identity.values() {
            if u64::from(person.done) + u64::from(person.not_done) < 2 {
                continue;
            }
            counts.with_several_accounts += 1;
            match (person.done, person.not_done) {
                (_, 0) => counts.done_on_every_account += 1,
                (0, _) => {}
                _ => counts.partly += 1,
            }
        }
        counts
    }
}

/// What the summary says beyond the tally.
pub struct RunFacts<'a> {
    pub started_at: SystemTime,
    pub finished_at: SystemTime,
    pub elapsed: Duration,
    /// Requests this run sent, retries included.
    pub requests: u64,
    /// 429 responses received (every one, not only those that opened a pause).
    pub responses_429: u64,
    /// Times a 429 opened or lengthened the shared pause.
    pub pauses: u64,
    pub paused: Duration,
    /// `--rate`, for the advice when Graph throttled a lot.
    pub rate: Rate,
    /// Rows an earlier run had already done (`--resume`): counted as succeeded, not sent again.
    pub already_succeeded: u64,
    /// Rows the input holds. Fewer than the records when a row acted on every account of a
    /// person (`--all-accounts`, issue 20).
    pub input_rows: u64,
    pub results: &'a Path,
    pub stop: Option<&'a StopReason>,
    pub exit: ExitStatus,
    /// The command line to continue this run with (see [`resume_command`]).
    pub resume_command: &'a str,
    /// `--undo-file` and how many rows it holds.
    pub undo: Option<(&'a Path, u64)>,
    /// A rehearsal against the built-in mock: nothing was sent to Microsoft.
    pub rehearsal: bool,
    /// Reads the identity lookup sent before the first action (SPEC section 8).
    pub lookup_reads: u64,
    /// What went wrong after the first request (writing the results, the undo file, the
    /// summary): each makes the exit status 4, never 2.
    pub problems: &'a [String],
}

/// How many error codes the summary lists.
const TOP_ERRORS: usize = 5;

/// A code and how many rows failed with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorCount {
    pub code: String,
    pub count: u64,
}

/// Everything the summary says, for the text on stderr and the `--summary-json` object alike.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// `succeeded`, `rowsFailed`, `stoppedEarly` or `interrupted`: the exit code, in words.
    pub outcome: &'static str,
    pub exit_code: u8,
    /// Why the run stopped before its end, when it did.
    pub stopped_because: Option<String>,
    pub rows: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub skipped: u64,
    pub not_attempted: u64,
    /// Of `succeeded`, rows an earlier run had done (`--resume`).
    pub already_succeeded: u64,
    /// The input's rows, when fewer than `rows` (the records: one an account, with
    /// `--all-accounts`, issue 20); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_rows: Option<u64>,
    /// People with records for several accounts, and how many of them were acted on partly
    /// (issue 20); absent when no person has more than one record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub people: Option<PeopleCounts>,
    pub top_errors: Vec<ErrorCount>,
    pub started_at: String,
    pub finished_at: String,
    pub elapsed_seconds: f64,
    pub requests: u64,
    /// Reads the identity lookup sent before the first action.
    pub lookup_reads: u64,
    /// Rows this run sent and got a final answer for, per second of the run.
    pub rows_per_second: f64,
    pub responses429: u64,
    pub throttle_pauses: u64,
    pub paused_seconds: f64,
    pub rate: String,
    pub results: String,
    /// The command that continues this run; absent when every row succeeded or was skipped.
    pub resume_command: Option<String>,
    /// `--undo-file`: the input that reverses this batch's disable/enable actions.
    pub undo_file: Option<String>,
    pub undo_rows: Option<u64>,
    /// What to do next, one step a string.
    pub next: Vec<String>,
    /// True for a rehearsal against the built-in mock (`run --mock`): nothing reached Microsoft.
    pub rehearsal: bool,
    /// What went wrong after the first request, if anything (see the exit code).
    pub problems: Vec<String>,
    /// What the confirm phase saw of the accepted actions (`--confirm`, SPEC section 10);
    /// absent without it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effects: Option<EffectCounts>,
    /// The confirm phase's reads (retries included) and time, which `requests` and
    /// `elapsedSeconds` (the actions') leave out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirm_reads: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirm_seconds: Option<f64>,
}

impl Summary {
    pub fn new(tally: &Tally, facts: &RunFacts<'_>) -> Summary {
        let seconds = facts.elapsed.as_secs_f64();
        // Rows carried over from an earlier run were not sent by this one.
        let acted = (tally.succeeded + tally.failed).saturating_sub(facts.already_succeeded);
        let rows_per_second = if seconds > 0.0 {
            acted as f64 / seconds
        } else {
            0.0
        };
        let unfinished = tally.failed + tally.not_attempted > 0
            || facts.stop.is_some()
            || !facts.problems.is_empty();
        let outcome = match facts.exit {
            ExitStatus::Success => "succeeded",
            ExitStatus::RowsFailed => "rowsFailed",
            ExitStatus::StoppedEarly => "stoppedEarly",
            ExitStatus::Interrupted => "interrupted",
            ExitStatus::InputError => "inputError",
        };
        Summary {
            outcome,
            exit_code: facts.exit.code(),
            stopped_because: facts
                .stop
                .filter(|reason| **reason != StopReason::Interrupted)
                .map(ToString::to_string),
            rows: tally.rows(),
            input_rows: (facts.input_rows < tally.rows()).then_some(facts.input_rows),
            succeeded: tally.succeeded,
            failed: tally.failed,
            skipped: tally.skipped,
            not_attempted: tally.not_attempted,
            already_succeeded: facts.already_succeeded,
            people: Some(tally.people.counts()).filter(|people| people.with_several_accounts > 0),
            top_errors: tally
                .top_errors(TOP_ERRORS)
                .into_iter()
                .map(|(code, count)| ErrorCount {
                    code: code.to_owned(),
                    count,
                })
                .collect(),
            started_at: rfc3339(facts.started_at),
            finished_at: rfc3339(facts.finished_at),
            elapsed_seconds: round3(seconds),
            requests: facts.requests,
            lookup_reads: facts.lookup_reads,
            rows_per_second: round3(rows_per_second),
            responses429: facts.responses_429,
            throttle_pauses: facts.pauses,
            paused_seconds: round3(facts.paused.as_secs_f64()),
            rate: facts.rate.to_string(),
            results: facts.results.display().to_string(),
            resume_command: unfinished.then(|| facts.resume_command.to_owned()),
            undo_file: facts.undo.map(|(path, _)| path.display().to_string()),
            undo_rows: facts.undo.map(|(_, rows)| rows),
            next: next_steps(tally, facts),
            rehearsal: facts.rehearsal,
            problems: facts.problems.to_vec(),
            effects: None,
            confirm_reads: None,
            confirm_seconds: None,
        }
    }

    /// Adds what the confirm phase saw (SPEC section 10), and what to check for actions that
    /// never showed, before the other next steps.
    pub fn with_effects(
        mut self,
        effects: EffectCounts,
        (reads, took): (u64, Duration),
        confirm_again: &str,
    ) -> Summary {
        let mut steps = effect_steps(&effects, confirm_again);
        steps.append(&mut self.next);
        self.next = steps;
        self.effects = Some(effects);
        self.confirm_reads = Some(reads);
        self.confirm_seconds = Some(round3(took.as_secs_f64()));
        self
    }

    /// The summary as the operator reads it on stderr.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let headline = match self.outcome {
            "succeeded" => "every row succeeded or was skipped".to_owned(),
            "rowsFailed" => "the run finished and some rows failed".to_owned(),
            "interrupted" => "interrupted".to_owned(),
            _ => "stopped early".to_owned(),
        };
        let _ = writeln!(out);
        let _ = writeln!(out, "Summary: {headline} (exit {})", self.exit_code);
        // With --all-accounts a row writes a record for each account it reached: say so, or
        // "8 rows" of a 3-row spreadsheet reads as rows nobody wrote.
        let counted = match self.input_rows {
            Some(input_rows) => format!("{} accounts from {input_rows} rows", self.rows),
            None => format!("{} rows", self.rows),
        };
        let _ = writeln!(
            out,
            "  {counted}: {} succeeded, {} failed, {} skipped, {} not attempted",
            self.succeeded, self.failed, self.skipped, self.not_attempted
        );
        if self.already_succeeded > 0 {
            let _ = writeln!(
                out,
                "  ({} of the succeeded rows were done by an earlier run and not sent again)",
                self.already_succeeded
            );
        }
        if let Some(people) = &self.people {
            let _ = writeln!(out, "  people      {}", people_text(people));
        }
        if !self.top_errors.is_empty() {
            let listed: Vec<String> = self
                .top_errors
                .iter()
                .map(|e| format!("{} x{}", e.code, e.count))
                .collect();
            let _ = writeln!(out, "  errors      {}", listed.join(", "));
        }
        let _ = writeln!(
            out,
            "  time        {}, {} requests, {:.1} rows/s (--rate {})",
            seconds_text(self.elapsed_seconds),
            self.requests,
            self.rows_per_second,
            self.rate
        );
        if self.responses429 == 0 {
            let _ = writeln!(out, "  throttling  none: no 429 from Graph");
        } else {
            let _ = writeln!(
                out,
                "  throttling  {} x 429 from Graph; paused {} in {} pause(s)",
                self.responses429,
                seconds_text(self.paused_seconds),
                self.throttle_pauses
            );
        }
        if self.lookup_reads > 0 {
            let _ = writeln!(
                out,
                "  lookup      {} reads before the first action; identities as found in {}",
                self.lookup_reads,
                crate::output::snapshot::path_for(std::path::Path::new(&self.results)).display()
            );
        }
        let _ = writeln!(out, "  results     {}", self.results);
        if self.rehearsal {
            let _ = writeln!(
                out,
                "  rehearsal   against the built-in mock: nothing was sent to Microsoft"
            );
        }
        if let Some(effects) = &self.effects {
            let _ = writeln!(
                out,
                "  effect      {} confirmed, {} notConfirmed, {} notObservable{}; {} reads in {}",
                effects.confirmed,
                effects.not_confirmed,
                effects.not_observable,
                if effects.unchecked > 0 {
                    format!(", {} not checked yet", effects.unchecked)
                } else {
                    String::new()
                },
                self.confirm_reads.unwrap_or_default(),
                seconds_text(self.confirm_seconds.unwrap_or_default())
            );
        }
        for problem in &self.problems {
            let _ = writeln!(out, "  problem     {problem}");
        }
        if let Some(reason) = &self.stopped_because {
            let _ = writeln!(out, "  stopped     {reason}");
        }
        let _ = writeln!(out, "Next:");
        for step in &self.next {
            let _ = writeln!(out, "  - {step}");
        }
        if let Some(command) = &self.resume_command {
            let _ = writeln!(out, "      {command}");
        }
        out
    }

    /// The summary as one line of JSON, for `--summary-json`.
    pub fn to_json(&self) -> String {
        // Serialising plain fields, strings and numbers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// How the people with several accounts fared, in words (the summary and the report say it
/// alike).
pub(crate) fn people_text(people: &PeopleCounts) -> String {
    let others = people.with_several_accounts - people.done_on_every_account - people.partly;
    let mut text = format!(
        "{} with several accounts: {} done on every account, {} partly (some of their accounts failed or were not attempted)",
        people.with_several_accounts, people.done_on_every_account, people.partly
    );
    if others > 0 {
        let _ = write!(text, ", {others} on none");
    }
    text
}

/// What the operator should do now, most important first. A step that ends with `:` is followed
/// by the resume command when the text is rendered.
fn next_steps(tally: &Tally, facts: &RunFacts<'_>) -> Vec<String> {
    let mut steps = Vec::new();
    let results = facts.results.display();
    if tally.failed > 0 {
        steps.push(format!(
            "{} row(s) failed: errorCode and errorMessage in {results} say why.",
            tally.failed
        ));
        let forbidden = matches!(facts.stop, Some(StopReason::Forbidden { .. }));
        for (code, _) in tally.top_errors(TOP_ERRORS) {
            // After a 403 stop, the step below says what the 403 means.
            if forbidden && is_permission_code(code) {
                continue;
            }
            if let Some(hint) = code_hint(code) {
                steps.push(format!("{code}: {hint}"));
            }
        }
    }
    // "Often": a few 429s, and either one request in twenty or a tenth of the run spent paused.
    if facts.responses_429 >= 3
        && (facts.responses_429 * 20 > facts.requests
            || facts.paused.as_secs_f64() * 10.0 > facts.elapsed.as_secs_f64())
    {
        steps.push(format!(
            "Graph throttled this run often ({} x 429, {} paused): next time, a --rate lower than {} finishes as fast with fewer pauses.",
            facts.responses_429,
            seconds_text(round3(facts.paused.as_secs_f64())),
            facts.rate
        ));
    }
    if let Some((path, rows)) = facts.undo {
        let command = shell_words(&[path.display().to_string()]);
        steps.push(format!(
            "To reverse this batch's disable/enable actions ({rows} row(s)): graph-remediate run {command}"
        ));
    }
    if tally.failed > 0 || facts.stop.is_some_and(|r| *r != StopReason::Interrupted) {
        steps.push(
            "Asking Microsoft support about a row? Quote its requestId and clientRequestId from the results.".to_owned(),
        );
    }
    let resume = match facts.stop {
        Some(StopReason::Forbidden { .. }) => Some(
            "Graph answered 403: give the app the application permission SecurityIdentitiesActions.ReadWrite.All with admin consent (a signed-in user also needs the Security Administrator role), then run the rest (rows that succeeded are skipped):",
        ),
        Some(StopReason::Credentials { .. }) => Some(
            "No access token could be had: check the tenant id, client id and certificate or secret (a ready token may have expired), then run the rest (rows that succeeded are skipped):",
        ),
        Some(StopReason::TooManyFailures { .. }) => Some(
            "--max-failures stopped the run: find the cause in the failed rows' errors before running the rest (rows that succeeded are skipped):",
        ),
        Some(StopReason::InputChanged { .. }) => Some(
            "The input changed while the run read it: check it is the file you mean, then run the rest (rows that succeeded are skipped):",
        ),
        Some(StopReason::ThrottledTooLong { .. }) => Some(
            "Graph asked for a longer wait than --max-retry-wait allows: run the rest once the wait has passed (rows that succeeded are skipped):",
        ),
        Some(StopReason::ResultsUnwritable { .. }) => Some(
            "The results could not be written: free space (or fix what the problem line says), then run the rest; rows with a record are kept, and attempts in flight are counted:",
        ),
        Some(StopReason::Interrupted) => {
            Some("Run the rest when ready (rows that succeeded are skipped):")
        }
        None if !facts.problems.is_empty() => Some(
            "Something went wrong after the batch (see the problem lines); the results file holds every row's record. Fix it, then check with:",
        ),
        None if tally.failed > 0 || tally.not_attempted > 0 => Some(
            "Once the cause is fixed, send the failed rows again (rows that succeeded are skipped):",
        ),
        None => None,
    };
    match resume {
        Some(step) => steps.push(step.to_owned()),
        None => steps.push(format!(
            "Nothing left to do: every row succeeded or was skipped. Keep {results} as the record of this batch."
        )),
    }
    steps
}

/// What to do about the effects: for rows whose action never showed, what to check, and when to
/// look again; for rows not checked yet, the command that checks them.
fn effect_steps(effects: &EffectCounts, confirm_again: &str) -> Vec<String> {
    let mut steps = Vec::new();
    if effects.not_confirmed > 0 {
        steps.push(format!(
            "{} accepted action(s) did not show in the identity's state before the wait ran out (effect notConfirmed): Graph accepted them, and the account may still be active. Check the Defender for Identity action account's rights in Active Directory, the sensor's health, and the Entra role of the Defender for Identity app; then look again (an AD change can take its replication and sync time to show): {confirm_again}",
            effects.not_confirmed
        ));
    } else if effects.unchecked > 0 {
        steps.push(format!(
            "{} accepted action(s) were not checked yet: {confirm_again}",
            effects.unchecked
        ));
    }
    if effects.not_observable > 0 {
        steps.push(format!(
            "{} action(s) are notObservable: Graph shows nothing of a password reset or of an AD or Okta session revoke; the portal's Action center shows whether they ran.",
            effects.not_observable
        ));
    }
    steps
}

fn is_permission_code(code: &str) -> bool {
    matches!(
        code.to_ascii_lowercase().as_str(),
        "accessdenied" | "forbidden" | "http 403"
    )
}

/// Advice for an error code seen on failed rows, when there is any.
pub(crate) fn code_hint(code: &str) -> Option<&'static str> {
    let hint = match code.to_ascii_lowercase().as_str() {
        "itemnotfound" | "notfound" | "http 404" => {
            "Graph has no identity account with that identityAccountId; check the id (the identity account's Graph id, not a UPN or SID)."
        }
        "badrequest" | "invalidrequest" | "http 400" => {
            "Graph refused the request; check the row's accountId, and that its action is supported for its identityProvider."
        }
        "invalidauthenticationtoken" | "http 401" => {
            "Graph refused the access token; get a fresh one, or use a certificate or client secret, which renew themselves."
        }
        "accessdenied" | "forbidden" | "http 403" => {
            "the app lacks SecurityIdentitiesActions.ReadWrite.All (or the user the Security Administrator role)."
        }
        "toomanyrequests" | "http 429" => {
            "still throttled after every retry; run the rest later, or with a lower --rate."
        }
        "servicenotavailable"
        | "gatewaytimeout"
        | "http 503"
        | "http 504"
        | "timeout"
        | "connectionfailed" => {
            "transient; running the rest again usually succeeds (more --max-retries or --max-retry-wait ride it out)."
        }
        "identitynotfound" => {
            "no identity in Defender for Identity has the row's sid, upn, objectId or id; check the value, or that the account is known to Defender for Identity."
        }
        "identityambiguous" | "accountambiguous" => {
            "the row names more than one; give identityProvider (or --provider), or the accountId, to pick one. `graph-remediate resolve` shows what each row finds."
        }
        "accountnotfound" | "actionnotoffered" => {
            "the identity has no linked account that fits (its accounts and the actions they offer are in the errorMessage, and in the .identities.jsonl snapshot)."
        }
        "identitymismatch" => {
            "the row's columns name different people (a slipped column, or a stale export); correct the row before acting on it."
        }
        "protectedidentity" => {
            "the row reaches a person on the protect list (errorMessage names the entry); nothing was sent. Remove the entry only if this person must be acted on."
        }
        "privilegedidentity" => {
            "the row reaches a member of a privileged directory role; nothing was sent. Name them in a protect file's [allow] section to act on them."
        }
        "lookupfailed" => {
            "a read failed for good (errorMessage says which); running the rest again usually finds it."
        }
        _ => return None,
    };
    Some(hint)
}

/// The command that continues a run: the command line it was started with, plus `--resume`,
/// quoted for a POSIX shell. Secrets are never on the command line (SPEC section 2), so it is safe
/// to print.
pub fn resume_command(argv: &[OsString]) -> String {
    let mut words: Vec<String> = argv
        .iter()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    if !words.iter().any(|w| w == "--resume") {
        // Before a `--` separator, where clap still reads flags.
        let at = words.iter().position(|w| w == "--").unwrap_or(words.len());
        words.insert(at, "--resume".to_owned());
    }
    shell_words(&words)
}

/// Words joined for a POSIX shell, quoted where needed (shlex); plain words stay as they are.
pub(crate) fn shell_words(words: &[String]) -> String {
    // Command-line words cannot hold a NUL, the one thing shlex refuses.
    shlex::try_join(words.iter().map(String::as_str)).unwrap_or_else(|_| words.join(" "))
}

/// Seconds as the summary shows them: `12.3s`, or `2m 5s` past a minute.
fn seconds_text(seconds: f64) -> String {
    if seconds < 60.0 {
        format!("{seconds:.1}s")
    } else {
        let whole = seconds.round() as u64;
        humantime::format_duration(Duration::from_secs(whole)).to_string()
    }
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::model::{Action, Provider};
    use crate::input::Job;
    use std::num::NonZeroU32;

    fn outcome(status: RowStatus, code: Option<&str>) -> Outcome {
        let job = Job {
            row: 2,
            identity_account_id: "i".into(),
            account_id: "a".into(),
            action: Action::Disable,
            provider: Some(Provider::Okta),
            carry: vec![],
            resolved_by: None,
            earlier_attempts: 0,
        };
        let mut outcome = Outcome::unsent(job, status, "x");
        outcome.error_code = code.map(str::to_owned);
        outcome.attempts = 1;
        outcome
    }

    #[test]
    fn tally_counts_statuses_and_ranks_error_codes() {
        let mut tally = Tally::default();
        for (status, code) in [
            (RowStatus::Succeeded, None),
            (RowStatus::Failed, Some("itemNotFound")),
            (RowStatus::Failed, Some("itemNotFound")),
            (RowStatus::Failed, Some("BadRequest")),
            (RowStatus::Skipped, None),
        ] {
            tally.push(&outcome(status, code));
        }
        assert_eq!((tally.succeeded, tally.failed, tally.skipped), (1, 3, 1));
        assert_eq!(
            tally.top_errors(5),
            vec![("itemNotFound", 2), ("BadRequest", 1)]
        );
        assert_eq!(tally.rows(), 5);
    }

    #[test]
    fn issue_20_a_person_some_of_whose_accounts_failed_is_counted_partly() {
        let mut people = People::default();
        let records = [
            ("ann", RowStatus::Succeeded),
            ("ann", RowStatus::Failed),
            ("ann", RowStatus::Succeeded),
            ("bob", RowStatus::Succeeded),
            ("bob", RowStatus::Succeeded),
            ("cy", RowStatus::Succeeded),
            // A skipped duplicate is no second account, and a row refused before its identity
            // was found is nobody's.
            ("dee", RowStatus::Failed),
            ("dee", RowStatus::Skipped),
            ("", RowStatus::Failed),
            ("", RowStatus::Failed),
        ];
        for (identity, status) in records {
            people.push(identity, status);
        }
        let counts = people.counts();
        assert_eq!(
            counts,
            PeopleCounts {
                with_several_accounts: 2,
                done_on_every_account: 1,
                partly: 1,
            }
        );
        assert!(
            people_text(&counts).contains("1 partly"),
            "{}",
            people_text(&counts)
        );
    }

    /// A fixed run, so the snapshots hold no clock: 800 rows, some failures, a few 429s.
    fn tally_with_failures() -> Tally {
        Tally {
            succeeded: 780,
            failed: 12,
            skipped: 3,
            not_attempted: 5,
            error_codes: HashMap::from([
                ("itemNotFound".to_owned(), 7),
                ("BadRequest".to_owned(), 3),
                ("serviceNotAvailable".to_owned(), 2),
            ]),
            people: People::default(),
        }
    }

    fn facts<'a>(
        stop: Option<&'a StopReason>,
        exit: ExitStatus,
        responses_429: u64,
    ) -> RunFacts<'a> {
        let started_at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000);
        RunFacts {
            started_at,
            finished_at: started_at + Duration::from_millis(412_500),
            elapsed: Duration::from_millis(412_500),
            requests: 830,
            responses_429,
            pauses: responses_429.min(3),
            paused: Duration::from_millis(responses_429 * 4_000),
            rate: Rate::per_second(NonZeroU32::new(2).unwrap()),
            already_succeeded: 0,
            input_rows: 837,
            results: Path::new("incident-4711.results.jsonl"),
            stop,
            exit,
            resume_command: "graph-remediate run incident-4711.csv --yes --resume",
            undo: None,
            rehearsal: false,
            lookup_reads: 0,
            problems: &[],
        }
    }

    #[test]
    fn issue_19_the_summary_counts_effects_and_names_what_to_check() {
        let tally = Tally {
            succeeded: 3,
            ..Tally::default()
        };
        let effects = EffectCounts {
            confirmed: 1,
            not_confirmed: 1,
            not_observable: 1,
            unchecked: 0,
        };
        let summary = Summary::new(&tally, &facts(None, ExitStatus::RowsFailed, 0)).with_effects(
            effects,
            (12, Duration::from_millis(2500)),
            "graph-remediate confirm r.jsonl",
        );
        let text = summary.render_text();
        assert!(
            text.contains("effect      1 confirmed, 1 notConfirmed, 1 notObservable; 12 reads in"),
            "{text}"
        );
        let first = &summary.next[0];
        for check in [
            "action account's rights in Active Directory",
            "the sensor's health",
            "the Entra role of the Defender for Identity app",
            "graph-remediate confirm r.jsonl",
        ] {
            assert!(first.contains(check), "{check}: {first}");
        }
        assert!(
            summary
                .to_json()
                .contains(r#""effects":{"confirmed":1,"notConfirmed":1"#)
        );
        // Without --confirm the summary says nothing of effects.
        let plain = Summary::new(&tally, &facts(None, ExitStatus::Success, 0));
        assert!(!plain.to_json().contains("effects"));
        assert!(!plain.render_text().contains("effect "));
    }

    /// Issue 20: a 3-row spreadsheet whose rows acted on 8 accounts says so, in the text and in
    /// the JSON; a run of one record a row keeps its old line and has no `inputRows`.
    #[test]
    fn issue_20_a_fan_out_says_how_many_accounts_came_from_how_many_rows() {
        let tally = Tally {
            succeeded: 4,
            failed: 4,
            ..Tally::default()
        };
        let fanned = RunFacts {
            input_rows: 3,
            ..facts(None, ExitStatus::RowsFailed, 0)
        };
        let summary = Summary::new(&tally, &fanned);
        let text = summary.render_text();
        assert!(
            text.contains("  8 accounts from 3 rows: 4 succeeded, 4 failed, 0 skipped"),
            "{text}"
        );
        assert!(summary.to_json().contains(r#""inputRows":3"#));
        let plain = Summary::new(
            &tally,
            &RunFacts {
                input_rows: 8,
                ..facts(None, ExitStatus::RowsFailed, 0)
            },
        );
        assert!(plain.render_text().contains("  8 rows: 4 succeeded"));
        assert!(!plain.to_json().contains("inputRows"));
    }

    #[test]
    fn summary_of_a_run_with_failed_rows() {
        let tally = tally_with_failures();
        let summary = Summary::new(&tally, &facts(None, ExitStatus::RowsFailed, 4));
        insta::assert_snapshot!(summary.render_text());
        insta::assert_snapshot!(
            "summary_of_a_run_with_failed_rows_json",
            serde_json::to_string_pretty(&summary).unwrap()
        );
    }

    #[test]
    fn summary_of_a_run_stopped_by_a_403() {
        let tally = Tally {
            succeeded: 1,
            failed: 1,
            skipped: 0,
            not_attempted: 30,
            error_codes: HashMap::from([("accessDenied".to_owned(), 1)]),
            people: People::default(),
        };
        let reason = StopReason::Forbidden {
            row: 3,
            detail: "accessDenied: Insufficient privileges".to_owned(),
        };
        let mut facts = facts(Some(&reason), ExitStatus::StoppedEarly, 0);
        (facts.requests, facts.elapsed) = (2, Duration::from_millis(2_400));
        let summary = Summary::new(&tally, &facts);
        insta::assert_snapshot!(summary.render_text());
    }

    #[test]
    fn summary_of_a_clean_run_throttled_often() {
        let tally = Tally {
            succeeded: 797,
            skipped: 3,
            ..Tally::default()
        };
        let mut facts = facts(None, ExitStatus::Success, 60);
        facts.undo = Some((Path::new("undo-4711.csv"), 790));
        let summary = Summary::new(&tally, &facts);
        assert_eq!(summary.resume_command, None, "nothing to resume");
        insta::assert_snapshot!(summary.render_text());
    }

    #[test]
    fn the_resume_command_is_the_command_line_plus_resume_quoted_for_a_shell() {
        let argv: Vec<OsString> = [
            "graph-remediate",
            "run",
            "my accounts.csv",
            "-o",
            "it's.jsonl",
            "--rate",
            "5/s",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        assert_eq!(
            resume_command(&argv),
            r#"graph-remediate run 'my accounts.csv' -o "it's.jsonl" --rate 5/s --resume"#
        );
        let already: Vec<OsString> = ["g", "run", "a.csv", "--resume"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(resume_command(&already), "g run a.csv --resume");
        let separated: Vec<OsString> = ["g", "run", "--yes", "--", "-odd.csv"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(
            resume_command(&separated),
            "g run --yes --resume -- -odd.csv"
        );
    }

    #[test]
    fn rows_carried_over_from_an_earlier_run_do_not_count_towards_the_rate() {
        let tally = Tally {
            succeeded: 100,
            ..Tally::default()
        };
        let mut facts = facts(None, ExitStatus::Success, 0);
        facts.elapsed = Duration::from_secs(10);
        facts.already_succeeded = 60;
        let summary = Summary::new(&tally, &facts);
        assert_eq!(summary.rows_per_second, 4.0);
    }
}
