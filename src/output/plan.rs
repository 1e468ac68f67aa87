//! Rendering a checked input's [`Plan`] for people (text) and for scripts (one JSON object).

use std::fmt::Write as _;

use crate::input::plan::{Note, Plan};
use crate::sanitize::printable;

/// The plan as text. Row errors are not included: they go to stderr as `FILE:LINE: reason`.
pub fn render_text(plan: &Plan) -> String {
    let mut out = String::new();
    let format = plan
        .format
        .map(|f| format!(" ({})", format!("{f:?}").to_lowercase()))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "{}{format}: {} rows; {} actions on {} accounts",
        plan.input, plan.rows, plan.actions, plan.accounts
    );
    if !plan.matrix.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "  {:<26} {:<17} {:>8}", "action", "provider", "rows");
        for cell in &plan.matrix {
            let _ = writeln!(
                out,
                "  {:<26} {:<17} {:>8}",
                cell.action.as_str(),
                cell.identity_provider.as_str(),
                cell.rows
            );
        }
    }
    if plan.lookups > 0 {
        let _ = writeln!(
            out,
            "\nLookup: {} row(s) are looked up before the first action: they name their identity by sid, \
             objectId or upn or lack one of the three ids, or --verify or a guardrail asks for every row \
             (resolve shows what each row finds).",
            plan.lookups
        );
        // Their actions, known before the lookup: the plan shows what every row asks for.
        let _ = writeln!(out, "\n  {:<26} {:>8}", "action (to look up)", "rows");
        for cell in &plan.lookup_actions {
            let _ = writeln!(out, "  {:<26} {:>8}", cell.action.as_str(), cell.rows);
        }
    }
    if plan.refused.count > 0 {
        let _ = writeln!(
            out,
            "\nRefused by the lookup: {} row(s) send nothing (recorded failed with the code):",
            plan.refused.count
        );
        for note in &plan.refused.shown {
            let _ = writeln!(out, "  {}", located(&plan.input, note));
        }
        more(&mut out, plan.refused.count, plan.refused.shown.len());
    }
    if plan.duplicates.count > 0 {
        let _ = writeln!(
            out,
            "\nDuplicates: {} row(s) repeat an earlier row (same identity account, account, action and provider); each runs once:",
            plan.duplicates.count
        );
        for line in &plan.duplicates.shown {
            let _ = writeln!(out, "  {}:{line}", plan.input);
        }
        more(&mut out, plan.duplicates.count, plan.duplicates.shown.len());
    }
    if plan.warnings.count > 0 {
        let _ = writeln!(out, "\nWarnings: {}", plan.warnings.count);
        for note in &plan.warnings.shown {
            let _ = writeln!(out, "  {}", located(&plan.input, note));
        }
        more(&mut out, plan.warnings.count, plan.warnings.shown.len());
    }
    if !plan.carry_columns.is_empty() {
        let _ = writeln!(
            out,
            "\nCarried through to the results: {}",
            printable(&plan.carry_columns.join(", "))
        );
    }
    let _ = writeln!(out);
    if plan.is_clean() {
        let _ = match plan.lookups {
            0 => writeln!(
                out,
                "OK: every row is valid; {} actions would be sent.",
                plan.actions
            ),
            lookups if plan.lookups_on_all_accounts == 0 => writeln!(
                out,
                "OK: every row is valid; {} actions would be sent, and up to {lookups} more once looked up.",
                plan.actions
            ),
            lookups => writeln!(
                out,
                "OK: every row is valid; {} actions would be sent, and more once {lookups} row(s) are looked up: {} of them act on every account of the person they name, one action for each account.",
                plan.actions, plan.lookups_on_all_accounts
            ),
        };
    } else {
        let _ = writeln!(
            out,
            "{} row error(s): nothing will be sent until they are fixed.",
            plan.errors.count
        );
    }
    out
}

/// Row errors as `FILE:LINE: reason`, the first [`crate::input::plan::SHOWN`] of them, then a count.
pub fn render_errors(plan: &Plan) -> String {
    let mut out = String::new();
    for note in &plan.errors.shown {
        let _ = writeln!(out, "{}", located(&plan.input, note));
    }
    more(&mut out, plan.errors.count, plan.errors.shown.len());
    out
}

pub fn render_json(plan: &Plan) -> String {
    let mut value = serde_json::to_value(plan).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        object.insert("ok".to_owned(), plan.is_clean().into());
    }
    value.to_string()
}

fn located(input: &str, note: &Note) -> String {
    if note.line == 0 {
        format!("{input}: {}", note.message)
    } else {
        format!("{input}:{}: {}", note.line, note.message)
    }
}

fn more(out: &mut String, count: u64, shown: usize) {
    if count > shown as u64 {
        let _ = writeln!(out, "  ... and {} more", count - shown as u64);
    }
}
