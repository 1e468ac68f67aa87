//! The report as Markdown (GitHub-flavoured: tables), for the text of an incident ticket.
//!
//! Every value from the results, the lock file or the snapshot goes through [`escape`] or
//! [`code_block`]: control characters are shown escaped and tokens hidden ([`shown`]), and Markdown's
//! punctuation is backslash-escaped, so a value can neither break a table (`|`, a newline) nor
//! become markup (a link, an image, emphasis, HTML such as `<script>`).

use std::fmt::Write as _;

use super::{Report, shown};
use crate::output::effects::EffectCounts;

/// The report as one Markdown document.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# {}", escape(&report.title()));
    let _ = writeln!(out);
    if report.is_rehearsal() {
        let _ = writeln!(
            out,
            "**Rehearsal against the built-in mock: nothing was sent to Microsoft.**"
        );
        let _ = writeln!(out);
    }

    let _ = writeln!(out, "## The run");
    let _ = writeln!(out);
    for (name, value) in report.facts() {
        let _ = writeln!(out, "- **{name}:** {}", escape(&value));
    }
    let _ = writeln!(out);
    if let Some(command) = report.command_line() {
        let _ = writeln!(out, "Command line:");
        let _ = writeln!(out);
        out.push_str(&code_block(command));
        let _ = writeln!(out);
    }
    let missing = report.missing();
    if !missing.is_empty() {
        let _ = writeln!(out, "Not in this report:");
        let _ = writeln!(out);
        for note in missing {
            let _ = writeln!(out, "- {}", escape(&note));
        }
        let _ = writeln!(out);
    }

    let counts = &report.counts;
    let _ = writeln!(out, "## Counts");
    let _ = writeln!(out);
    let _ = writeln!(out, "| Status | Rows |");
    let _ = writeln!(out, "| --- | ---: |");
    for (status, count) in [
        ("succeeded", counts.succeeded),
        ("failed", counts.failed),
        ("skipped", counts.skipped),
        ("not_attempted", counts.not_attempted),
    ] {
        let _ = writeln!(out, "| {} | {count} |", escape(status));
    }
    let _ = writeln!(out, "| **total** | **{}** |", counts.rows());
    let _ = writeln!(out);
    if let Some(people) = report.people() {
        let _ = writeln!(out, "People: {}.", escape(&people));
        let _ = writeln!(out);
    }
    if let Some(effects) = &report.effects {
        let _ = writeln!(
            out,
            "Effect of the succeeded rows' actions, as read back after them (`confirmed`: the identity's state shows it; `notConfirmed`: it did not show in time; `notObservable`: Graph shows nothing of it):"
        );
        let _ = writeln!(out);
        let _ = writeln!(out, "| Effect | Rows |");
        let _ = writeln!(out, "| --- | ---: |");
        for (effect, count) in effect_rows(effects) {
            let _ = writeln!(out, "| {} | {count} |", escape(effect));
        }
        let _ = writeln!(out);
    }

    let _ = writeln!(out, "## Rows");
    let _ = writeln!(out);
    if report.rows.is_empty() {
        let _ = writeln!(out, "The results hold no row.");
    } else {
        // The Effect column only when the results record one: older reports read as before.
        let effect = report.effects.is_some();
        let _ = writeln!(
            out,
            "| Line | Person | Action | Provider | Status |{} Error | correlationId | requestId | Before |",
            if effect { " Effect |" } else { "" }
        );
        let _ = writeln!(
            out,
            "| ---: | --- | --- | --- | --- |{} --- | --- | --- | --- |",
            if effect { " --- |" } else { "" }
        );
        for row in &report.rows {
            let mut cells = vec![
                row.person(),
                row.action.clone(),
                row.provider.clone(),
                row.status.as_str().to_owned(),
                row.error_code.clone(),
                row.correlation_id.clone(),
                row.request_id.clone(),
                row.before_text(),
            ];
            if effect {
                cells.insert(4, row.effect.clone());
            }
            let _ = write!(out, "| {} |", row.line);
            for cell in &cells {
                let _ = write!(out, " {} |", escape(cell));
            }
            let _ = writeln!(out);
        }
    }
    if let Some(note) = report.rows_cut() {
        let _ = writeln!(out);
        let _ = writeln!(out, "{}", escape(&note));
    }
    let _ = writeln!(out);

    let _ = writeln!(out, "## Failures");
    let _ = writeln!(out);
    if report.failures.is_empty() {
        let _ = writeln!(out, "No row failed.");
        let _ = writeln!(out);
    }
    for group in &report.failures {
        let _ = writeln!(
            out,
            "### {} ({} row{})",
            escape(&group.code),
            group.count,
            if group.count == 1 { "" } else { "s" }
        );
        let _ = writeln!(out);
        let _ = writeln!(out, "- Lines: {}", group.lines.text());
        if !group.example.is_empty() {
            let _ = writeln!(out, "- For example: {}", escape(&group.example));
        }
        let advice = group.hint.unwrap_or(
            "no advice for this code: errorCode and errorMessage in the results say why.",
        );
        let _ = writeln!(out, "- What to do: {}", escape(advice));
        let _ = writeln!(out);
    }
    if let Some(note) = report.failures_cut() {
        let _ = writeln!(out, "{}", escape(&note));
        let _ = writeln!(out);
    }
    if !report.not_attempted.is_empty() {
        let _ = writeln!(out, "### Not attempted ({})", report.counts.not_attempted);
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "- Lines: {} (the run stopped before sending them)",
            report.not_attempted.text()
        );
        let _ = writeln!(out);
    }
    if let Some(command) = report.rest_command() {
        let _ = writeln!(
            out,
            "Once the causes are fixed, send the failed and not-attempted rows again (rows that succeeded are skipped):"
        );
        let _ = writeln!(out);
        out.push_str(&code_block(&command));
        let _ = writeln!(out);
    }

    let _ = writeln!(out, "## Undo");
    let _ = writeln!(out);
    let (sentence, command) = report.undo_steps();
    let _ = writeln!(out, "{}", escape(&sentence));
    if let Some(command) = command {
        let _ = writeln!(out);
        out.push_str(&code_block(&command));
    }
    out
}

/// `value` made safe as Markdown text, also inside a table cell: control characters escaped,
/// and every character Markdown could read as markup backslash-escaped.
pub fn escape(value: &str) -> String {
    let safe = shown(value);
    let mut out = String::with_capacity(safe.len() + 8);
    for c in safe.chars() {
        if matches!(
            c,
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '~' | '&' | '#' | '!'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `text` as a fenced code block: a fence longer than any run of backticks inside, and control
/// characters escaped, so nothing in it ends the block early.
pub fn code_block(text: &str) -> String {
    let safe = shown(text);
    let longest_run = safe.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest_run.max(2) + 1);
    format!("{fence}text\n{safe}\n{fence}\n")
}

/// The effect counts as the tables list them.
pub(super) fn effect_rows(effects: &EffectCounts) -> Vec<(&'static str, u64)> {
    let mut rows = vec![
        ("confirmed", effects.confirmed),
        ("notConfirmed", effects.not_confirmed),
        ("notObservable", effects.not_observable),
    ];
    if effects.unchecked > 0 {
        rows.push(("not checked", effects.unchecked));
    }
    rows
}
