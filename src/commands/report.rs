//! `report` (issue 13): the report for the incident ticket, from what a run wrote (its results,
//! and the lock file and identity snapshot beside them), as Markdown or one HTML page, on
//! standard output or in `-o FILE`. With `--undo-file`, it also writes the undo file from the
//! results. It reads files and writes files; it sends nothing.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};

use crate::ExitStatus;
use crate::config::{ReportConfig, ReportFormat};
use crate::output::journal::{open_private, private_options, restrict};
use crate::output::paths::{self, NamedPath};
use crate::output::record::FIELDS;
use crate::output::report::{self, Beside, Report, UndoAdvice};
use crate::output::undo::write_undo;

use super::validate::ignore_broken_pipe;

/// `report`: gather the facts, render them, write them.
pub fn report(config: &ReportConfig) -> anyhow::Result<ExitStatus> {
    let results = &config.results;
    // `FILE: reason` for results that are not there, before any other file is looked at.
    std::fs::metadata(results).map_err(|cause| report::ReportError::Unreadable {
        path: results.clone(),
        cause,
    })?;
    check_files(config)?;
    // Every line read before anything is written: results that are not results write nothing.
    let mut facts = report::gather(results)?;
    if let Some(target) = &config.undo_file {
        let columns = input_names(&report::carried_columns(results)?);
        let rows = write_undo(results, target, &columns)
            .with_context(|| format!("cannot write the undo file {}", target.display()))?;
        facts.undo = UndoAdvice::Ready {
            path: target.clone(),
            rows: Some(rows),
            written_now: true,
        };
    }
    let text = render(&facts, config.format);
    match &config.output {
        Some(path) => write_report(path, &text)
            .with_context(|| format!("cannot write the report {}", path.display()))?,
        None => {
            let stdout = std::io::stdout();
            let mut stdout = stdout.lock();
            stdout
                .write_all(text.as_bytes())
                .and_then(|()| stdout.flush())
                .or_else(ignore_broken_pipe)
                .context("cannot write the report")?;
        }
    }
    Ok(ExitStatus::Success)
}

/// The carried columns by the input's names: the results rename a column that clashes with one
/// of their own fields `input.<name>` (or `input.<name>.N`), and the undo file, which is input,
/// names it as the input did.
fn input_names(results_names: &[String]) -> Vec<String> {
    results_names
        .iter()
        .map(|name| {
            let Some(rest) = name.strip_prefix("input.") else {
                return name.clone();
            };
            let base = match rest.rsplit_once('.') {
                Some((base, n)) if n.parse::<u32>().is_ok() && FIELDS.contains(&base) => base,
                _ => rest,
            };
            if FIELDS.contains(&base) {
                base.to_owned()
            } else {
                name.clone()
            }
        })
        .collect()
}

/// The report in `format`.
pub fn render(facts: &Report, format: ReportFormat) -> String {
    match format {
        ReportFormat::Md => report::markdown::render(facts),
        ReportFormat::Html => report::html::render(facts),
    }
}

/// Refuses a report or undo file that would replace what the run wrote (the results, the lock
/// file, the snapshot, the run's undo file) or each other, or that goes where no directory is;
/// then one that is any run's record, or exists without `--replace` (issue 16).
fn check_files(config: &ReportConfig) -> anyhow::Result<()> {
    let beside = Beside::results(&config.results);
    let named_undo = report::named_undo_file(&report::read_lock(&beside.lock), &config.results);
    let mut reads = vec![NamedPath {
        role: "results file",
        path: &config.results,
    }];
    let existing: [(&'static str, Option<&PathBuf>); 3] = [
        ("lock file", Some(&beside.lock)),
        ("identity snapshot", Some(&beside.snapshot)),
        ("undo file the run wrote", named_undo.as_ref()),
    ];
    for (role, path) in existing {
        if let Some(path) = path.filter(|p| p.exists()) {
            reads.push(NamedPath { role, path });
        }
    }
    let mut writes = Vec::new();
    if let Some(path) = &config.output {
        writes.push(NamedPath {
            role: "report (-o)",
            path,
        });
    }
    if let Some(path) = &config.undo_file {
        writes.push(NamedPath {
            role: "undo file (--undo-file)",
            path,
        });
    }
    paths::check_files(&reads, &writes).map_err(|e| anyhow!(e))?;
    // No run's record, whichever run wrote it, and an existing file only with --replace (issue
    // 16). The runs are found beside the results (whose lock names the run's input) and here.
    let search = [paths::parent_dir(&config.results), Path::new(".")];
    for file in &writes {
        paths::check_not_a_record(file, config.existing, &search, &[]).map_err(|e| anyhow!(e))?;
    }
    Ok(())
}

/// The report file holds account data: readable by the owner only, like the results, and never
/// written through a link.
fn write_report(path: &Path, text: &str) -> std::io::Result<()> {
    let mut file = open_private(
        private_options().write(true).create(true).truncate(true),
        path,
    )?;
    restrict(&file)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}
