//! `report` end to end (issue 13): a real run against a mock serving a seeded tenant leaves rows
//! of every status (succeeded, skipped, failed before sending, failed with a 403 that stops the
//! run, not attempted), then the binary writes the report in both formats from what the run wrote.

use super::common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{Harness, by_row, read_jsonl};
use graph_remediate::ExitStatus;
use graph_remediate::mock::{MockConfig, Tenant};
use scraper::{Html, Selector};

/// A value a spreadsheet could hold that must not become markup, break a table, reach a
/// terminal raw or show a token: HTML, a pipe, backticks, an ESC sequence, a newline and a JWT.
const HOSTILE_NAME: &str = "<script>alert(1)</script> Mallory | `rm -rf` \u{1b}[31m\nnext eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl";

const TENANT_ID: &str = "contoso.onmicrosoft.com";
const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";

/// A finished run in the harness's directory: the harness (keeping the directory and the mock
/// alive) and the results file.
struct Ran {
    h: Harness,
    results: PathBuf,
}

/// Runs six rows against a mock with a synthetic tenant, one at a time, so every status occurs:
///
/// | line | row                                   | status                         |
/// |------|---------------------------------------|--------------------------------|
/// | 2    | user 6 by UPN (looked up)             | succeeded                      |
/// | 3    | user 7 by its ids                     | succeeded                      |
/// | 4    | the same as line 3                    | skipped (duplicate)            |
/// | 5    | an unknown UPN, a hostile displayName | failed, identityNotFound       |
/// | 7    | `http403-boss` by its ids             | failed, accessDenied: the stop |
/// | 8    | user 8 by UPN                         | not_attempted                  |
///
/// (The hostile name holds a newline, so its quoted CSV cell ends on line 6.)
async fn run_every_status() -> Ran {
    let h = Harness::start(MockConfig {
        tenant: Some(Tenant::synthetic(10)),
        page_size: 100,
        ..MockConfig::default()
    })
    .await;
    let id7 = Tenant::synthetic_id(7);
    let ad7 = Tenant::synthetic_ad_account(7).unwrap();
    let mut csv = csv::Writer::from_writer(Vec::new());
    let rows: [[&str; 7]; 7] = [
        [
            "upn",
            "identityAccountId",
            "accountId",
            "action",
            "identityProvider",
            "displayName",
            "ticket",
        ],
        [
            &Tenant::synthetic_upn(6),
            "",
            "",
            "disable",
            "",
            "",
            "INC-1",
        ],
        ["", &id7, &ad7, "disable", "activeDirectory", "", "INC-2"],
        ["", &id7, &ad7, "disable", "activeDirectory", "", "INC-3"],
        [
            "nobody@contoso.com",
            "",
            "",
            "disable",
            "",
            HOSTILE_NAME,
            "INC-4",
        ],
        [
            "",
            "http403-boss",
            "ad-boss",
            "disable",
            "activeDirectory",
            "The Boss",
            "INC-5",
        ],
        [
            &Tenant::synthetic_upn(8),
            "",
            "",
            "disable",
            "",
            "",
            "INC-6",
        ],
    ];
    for row in rows {
        csv.write_record(row).unwrap();
    }
    let input = h.path("input.csv");
    std::fs::write(&input, csv.into_inner().unwrap()).unwrap();
    let status = h
        .run(
            &input,
            &[
                "--provider",
                "activeDirectory",
                "--concurrency",
                "1",
                "--max-retries",
                "0",
                "--tenant-id",
                TENANT_ID,
                "--client-id",
                CLIENT_ID,
            ],
        )
        .await
        .expect("the run returns a status");
    assert_eq!(status, ExitStatus::StoppedEarly, "the 403 stops the run");
    let results = h.results();
    let rows = by_row(&read_jsonl(&results));
    let statuses: Vec<(u64, &str)> = rows
        .iter()
        .map(|(line, r)| (*line, r["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        statuses,
        [
            (2, "succeeded"),
            (3, "succeeded"),
            (4, "skipped"),
            (5, "failed"),
            (7, "failed"),
            (8, "not_attempted"),
        ]
    );
    assert_eq!(rows[&5]["errorCode"], "identityNotFound");
    assert_eq!(rows[&7]["errorCode"], "accessDenied");
    assert!(h.path("results.identities.jsonl").is_file());
    assert!(h.path("results.jsonl.lock").is_file());
    Ran { h, results }
}

/// `graph-remediate report ARGS`, output captured.
fn report(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_graph-remediate"))
        .arg("report")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("the binary starts")
}

fn text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The Markdown with what changes from run to run replaced: the temp directory, times, GUIDs,
/// the mock's port and the tool's version.
fn assert_markdown_snapshot(name: &str, markdown: &str, dir: &Path) {
    let dir = regex_escape(dir.to_str().unwrap());
    insta::with_settings!({
        filters => vec![
            (dir.as_str(), "[DIR]"),
            (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", "[TIME]"),
            (r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "[GUID]"),
            (r"127\.0\.0\.1:\d+", "127.0.0.1:[PORT]"),
            (env!("CARGO_PKG_VERSION"), "[VERSION]"),
        ],
    }, {
        insta::assert_snapshot!(name, markdown);
    });
}

fn regex_escape(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '/' || c == '_' || c == '-' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

/// The rows of the Markdown table under `## Rows`.
fn markdown_table_rows(markdown: &str) -> Vec<&str> {
    markdown
        .split("## Rows")
        .nth(1)
        .unwrap()
        .split("## Failures")
        .next()
        .unwrap()
        .lines()
        .filter(|line| {
            line.starts_with("| ") && !line.starts_with("| Line") && !line.starts_with("| ---")
        })
        .collect()
}

/// The number of `|` not escaped with a backslash: the cell borders.
fn cell_borders(line: &str) -> usize {
    let mut borders = 0;
    let mut escaped = false;
    for c in line.chars() {
        match c {
            '\\' if !escaped => escaped = true,
            '|' if !escaped => borders += 1,
            _ => escaped = false,
        }
        if c != '\\' {
            escaped = false;
        }
    }
    borders
}

#[tokio::test(flavor = "multi_thread")]
async fn issue_13_the_markdown_report_says_what_the_run_did() {
    let ran = run_every_status().await;
    let md_path = ran.h.path("INC-4711.md");
    let output = report(&[arg(&ran.results), "-o", arg(&md_path)]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(output.stdout.is_empty(), "the report goes to -o");
    let markdown = text(&md_path);

    // Every row is one table row of the same ten cells, whatever its values hold.
    let rows = markdown_table_rows(&markdown);
    assert_eq!(rows.len(), 6, "{markdown}");
    for row in &rows {
        assert_eq!(cell_borders(row), 10, "{row}");
    }
    assert!(!markdown.contains('\u{1b}'), "no raw ESC");
    assert!(!markdown.contains("<script>"), "{markdown}");
    assert!(
        markdown.contains("\\<script\\>alert(1)\\</script\\>"),
        "{markdown}"
    );
    assert!(markdown.contains("Mallory \\| \\`rm -rf\\`"), "{markdown}");
    assert!(!markdown.contains("eyJ"), "the token is hidden: {markdown}");
    // The facts of the run, from the lock file; the state before, from the snapshot.
    assert!(markdown.contains(TENANT_ID), "{markdown}");
    assert!(markdown.contains(CLIENT_ID), "{markdown}");
    assert!(markdown.contains("Synthetic User 6 (user000006@contoso.com)"));
    assert!(markdown.contains("enabled; offered disable"), "{markdown}");
    assert!(!markdown.contains(common::HARNESS_TOKEN), "never the token");

    // The same report on standard output, as `-o` is only where it goes.
    let stdout = report(&[arg(&ran.results)]);
    assert_eq!(stdout.status.code(), Some(0));
    assert_eq!(String::from_utf8(stdout.stdout).unwrap(), markdown);

    assert_markdown_snapshot("every_status_markdown", &markdown, ran.h.dir.path());
}

#[tokio::test(flavor = "multi_thread")]
async fn issue_13_the_html_report_is_one_page_that_loads_nothing_and_escapes_every_value() {
    let ran = run_every_status().await;
    let html_path = ran.h.path("INC-4711.html");
    // `.html` picks the format.
    let output = report(&[arg(&ran.results), "-o", arg(&html_path)]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let page_text = text(&html_path);
    let page = Html::parse_document(&page_text);
    let select = |css: &str| Selector::parse(css).unwrap();

    // Counts.
    let counts: Vec<(String, String)> = page
        .select(&select("#counts tbody tr"))
        .map(|tr| {
            let cells: Vec<String> = tr
                .select(&select("td, th"))
                .map(|c| c.text().collect::<String>())
                .collect();
            (cells[0].clone(), cells[1].clone())
        })
        .collect();
    assert_eq!(
        counts,
        [
            ("succeeded".to_owned(), "2".to_owned()),
            ("failed".to_owned(), "2".to_owned()),
            ("skipped".to_owned(), "1".to_owned()),
            ("not_attempted".to_owned(), "1".to_owned()),
            ("total".to_owned(), "6".to_owned()),
        ]
    );

    // One table row per result, in input order, with its status.
    let rows: Vec<Vec<String>> = page
        .select(&select("#rows tbody tr"))
        .map(|tr| {
            tr.select(&select("td"))
                .map(|c| c.text().collect::<String>())
                .collect()
        })
        .collect();
    assert_eq!(rows.len(), 6);
    let lines_and_statuses: Vec<(&str, &str)> = rows
        .iter()
        .map(|cells| (cells[0].as_str(), cells[4].as_str()))
        .collect();
    assert_eq!(
        lines_and_statuses,
        [
            ("2", "succeeded"),
            ("3", "succeeded"),
            ("4", "skipped"),
            ("5", "failed"),
            ("7", "failed"),
            ("8", "not_attempted"),
        ]
    );
    // The hostile name is text in its cell, shown, not run; its ESC and newline escaped, its
    // token hidden.
    let hostile = &rows[3][1];
    assert!(
        hostile.starts_with("<script>alert(1)</script> Mallory | `rm -rf` \\u{1b}[31m\\u{a}next"),
        "{hostile}"
    );
    assert!(!hostile.contains("eyJ"), "{hostile}");
    assert!(page_text.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!page_text.contains('\u{1b}'));
    assert_eq!(rows[0][1], "Synthetic User 6 (user000006@contoso.com)");
    assert!(
        rows[0][8].starts_with("enabled; offered disable"),
        "{:?}",
        rows[0]
    );

    // Failures grouped by code, with what to do.
    let groups: Vec<String> = page
        .select(&select("h3"))
        .map(|h| h.text().collect())
        .collect();
    assert!(
        groups.contains(&"accessDenied (1 row)".to_owned()),
        "{groups:?}"
    );
    assert!(
        groups.contains(&"identityNotFound (1 row)".to_owned()),
        "{groups:?}"
    );
    assert!(page_text.contains("SecurityIdentitiesActions.ReadWrite.All"));

    // Self-contained: no script, nothing loaded from anywhere.
    assert_eq!(page.select(&select("script")).count(), 0);
    assert_eq!(
        page.select(&select("link, img, iframe, object, embed"))
            .count(),
        0
    );
    let loading: Vec<_> = page
        .select(&select("[src], [href], [srcset], [action], [background]"))
        .map(|element| element.value().clone())
        .collect();
    assert!(
        loading.is_empty(),
        "elements that load or link: {loading:?}"
    );
    let style: String = page
        .select(&select("style"))
        .flat_map(|s| s.text())
        .collect();
    assert!(
        !style.contains("url(") && !style.contains("@import"),
        "{style}"
    );
    // No attribute names anywhere (the endpoint, http://127.0.0.1:..., is text).
    for element in page.select(&select("*")) {
        for (name, value) in element.value().attrs() {
            assert!(
                !value.contains("://") && !value.starts_with("//"),
                "{name}={value}"
            );
        }
    }
    let policy = page
        .select(&select("meta[http-equiv=Content-Security-Policy]"))
        .next()
        .expect("a content security policy");
    assert!(
        policy
            .value()
            .attr("content")
            .unwrap()
            .starts_with("default-src 'none'")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn issue_13_a_report_without_the_lock_file_and_snapshot_says_what_is_missing() {
    let ran = run_every_status().await;
    let alone = ran.h.path("alone");
    std::fs::create_dir(&alone).unwrap();
    let results = alone.join("results.jsonl");
    std::fs::copy(&ran.results, &results).unwrap();
    for format in ["md", "html"] {
        let output = report(&[arg(&results), "--format", format]);
        assert_eq!(output.status.code(), Some(0), "{output:?}");
        let report = String::from_utf8(output.stdout).unwrap();
        assert!(report.contains("No lock file"), "{report}");
        assert!(report.contains("No identity snapshot"), "{report}");
        assert!(report.contains("not recorded"), "{report}");
        // The rest is still there.
        assert!(report.contains("identityNotFound"), "{report}");
        assert!(report.contains("Not attempted"), "{report}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn issue_13_report_refuses_to_write_over_what_the_run_wrote() {
    let ran = run_every_status().await;
    let lock = ran.h.path("results.jsonl.lock");
    let snapshot = ran.h.path("results.identities.jsonl");
    let spelled_otherwise = ran.h.dir.path().join(".").join("results.jsonl");
    for target in [&spelled_otherwise, &lock, &snapshot] {
        let before = text(target);
        let output = report(&[arg(&ran.results), "-o", arg(target)]);
        assert_eq!(output.status.code(), Some(2), "{output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("are the same file"), "{stderr}");
        assert_eq!(text(target), before, "left as it was");
    }
    let output = report(&[arg(&ran.results), "--undo-file", arg(&ran.results)]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn issue_13_undo_file_is_written_and_its_command_is_in_the_report() {
    let ran = run_every_status().await;
    let undo = ran.h.path("undo.csv");
    let output = report(&[arg(&ran.results), "--undo-file", arg(&undo)]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let undo_text = text(&undo);
    assert_eq!(
        undo_text.lines().count(),
        3,
        "a header and the two rows that succeeded: {undo_text}"
    );
    assert!(undo_text.contains(",enable,activeDirectory"), "{undo_text}");
    let markdown = String::from_utf8(output.stdout).unwrap();
    assert!(markdown.contains("this report wrote"), "{markdown}");
    assert!(
        markdown.contains(&format!("graph-remediate run {}", undo.display())),
        "{markdown}"
    );
}

#[test]
fn issue_13_results_that_are_not_results_exit_2_naming_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results.jsonl");
    std::fs::write(&results, "\n{\"not\": \"a record\"}\n").unwrap();
    let output = report(&[arg(&results)]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:2: not a graph-remediate results file",
            results.display()
        )),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());

    let missing = dir.path().join("nope.jsonl");
    let output = report(&[arg(&missing)]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("nope.jsonl"));

    // Binary garbage is no panic either.
    let garbage = dir.path().join("garbage.csv");
    std::fs::write(&garbage, b"\xff\xfe\x00\x1b[2J,\"\n\"unterminated").unwrap();
    let output = report(&[arg(&garbage)]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn issue_16_report_never_replaces_a_runs_records_and_asks_before_replacing_a_file() {
    let ran = run_every_status().await;
    let input = ran.h.path("input.csv");
    // Another run's results, being written (its lock beside them), in a directory of its own.
    let other = ran.h.path("other");
    std::fs::create_dir(&other).unwrap();
    let other_results = other.join("results.jsonl");
    std::fs::copy(&ran.results, &other_results).unwrap();
    std::fs::copy(
        ran.h.path("results.jsonl.lock"),
        other.join("results.jsonl.lock"),
    )
    .unwrap();
    // Results with no lock beside them: known by what they hold.
    let loose = ran.h.path("loose");
    std::fs::create_dir(&loose).unwrap();
    let loose_results = loose.join("copy.jsonl");
    std::fs::copy(&ran.results, &loose_results).unwrap();
    for (flag, target, why) in [
        ("--undo-file", &input, "the input of the run"),
        ("-o", &input, "the input of the run"),
        ("-o", &other_results, "the results file of the run"),
        ("--undo-file", &other.join("results.jsonl.lock"), "lock"),
        ("-o", &loose_results, "a run's results file"),
    ] {
        let before = std::fs::read(target).unwrap();
        let output = report(&[arg(&ran.results), flag, arg(target), "--replace"]);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{flag} {target:?}: {output:?}"
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("no command replaces a run's record"),
            "{stderr}"
        );
        assert!(stderr.contains(why), "{why}: {stderr}");
        assert_eq!(std::fs::read(target).unwrap(), before, "left as it was");
    }
    // Any other existing file only with --replace.
    let notes = ran.h.path("INC-4711.md");
    std::fs::write(&notes, "the analyst's notes").unwrap();
    let output = report(&[arg(&ran.results), "-o", arg(&notes)]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("exists already; pass --replace"),
        "{stderr}"
    );
    assert_eq!(text(&notes), "the analyst's notes");
    let output = report(&[arg(&ran.results), "-o", arg(&notes), "--replace"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(text(&notes).contains("Remediation report"));
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn issue_16_a_fifo_or_huge_file_beside_the_results_never_blocks_the_report() {
    let ran = run_every_status().await;
    let lock = ran.h.path("results.jsonl.lock");
    let snapshot = ran.h.path("results.identities.jsonl");
    for path in [&lock, &snapshot] {
        std::fs::remove_file(path).unwrap();
        let name = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
    }
    let report_within = |limit: std::time::Duration| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_graph-remediate"))
            .arg("report")
            .arg(&ran.results)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > limit {
                child.kill().unwrap();
                panic!("report blocked for {limit:?}");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        child.wait_with_output().unwrap()
    };
    let output = report_within(std::time::Duration::from_secs(30));
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let markdown = String::from_utf8(output.stdout).unwrap();
    assert!(markdown.contains("could not be read"), "{markdown}");
    assert!(markdown.contains("FIFO"), "{markdown}");
    assert!(
        markdown.contains("identityNotFound"),
        "the rest is there: {markdown}"
    );
    // A huge lock file is not read whole.
    std::fs::remove_file(&lock).unwrap();
    let mut huge = vec![b' '; 3 * 1024 * 1024];
    huge.extend_from_slice(b"{}");
    std::fs::write(&lock, huge).unwrap();
    let output = report_within(std::time::Duration::from_secs(30));
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let markdown = String::from_utf8(output.stdout).unwrap();
    assert!(markdown.contains("larger than 1024 KiB"), "{markdown}");
}
