//! The end-of-run tally, built by the results writer as records pass through it, and its
//! rendering for the operator.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use super::journal::{Outcome, RowStatus};

/// Counts of what happened, gathered apart from the workers (the writer owns it).
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub succeeded: u64,
    pub failed: u64,
    pub skipped: u64,
    pub not_attempted: u64,
    pub error_codes: HashMap<String, u64>,
}

impl Tally {
    pub fn push(&mut self, outcome: &Outcome) {
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

/// What the summary says beyond the tally.
pub struct RunFacts<'a> {
    pub elapsed: Duration,
    /// Requests this run sent, retries included.
    pub requests: u64,
    pub throttled: u64,
    pub paused: Duration,
    pub results: &'a Path,
}

/// The summary printed on stderr at the end of a run.
pub fn render(tally: &Tally, facts: &RunFacts<'_>) -> String {
    let mut out = String::new();
    let seconds = facts.elapsed.as_secs_f64();
    let sent = tally.succeeded + tally.failed;
    let rate = if seconds > 0.0 {
        sent as f64 / seconds
    } else {
        0.0
    };
    let _ = writeln!(
        out,
        "{} rows: {} succeeded, {} failed, {} skipped, {} not attempted",
        tally.rows(),
        tally.succeeded,
        tally.failed,
        tally.skipped,
        tally.not_attempted
    );
    let _ = writeln!(
        out,
        "{} requests in {:.1}s ({rate:.1} rows/s); throttled {} time(s), paused {:.1}s",
        facts.requests,
        seconds,
        facts.throttled,
        facts.paused.as_secs_f64()
    );
    let top = tally.top_errors(5);
    if !top.is_empty() {
        let listed: Vec<String> = top
            .iter()
            .map(|(code, count)| format!("{code} x{count}"))
            .collect();
        let _ = writeln!(out, "errors: {}", listed.join(", "));
    }
    let _ = writeln!(out, "results: {}", facts.results.display());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::model::{Action, Provider};
    use crate::input::Job;

    fn outcome(status: RowStatus, code: Option<&str>) -> Outcome {
        let job = Job {
            row: 2,
            identity_account_id: "i".into(),
            account_id: "a".into(),
            action: Action::Disable,
            provider: Provider::Okta,
            carry: vec![],
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
}
