//! What both bench files share: synthetic inputs written once into a temp dir, in the layout
//! `scripts/generate-accounts.py` writes (every row valid and one account each, cycling through
//! the documented action/provider pairs, three carried columns), the bench-or-test switch, and
//! per-iteration timings for the medians each bench prints.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

const PAIRS: [(&str, &str); 5] = [
    ("disable", "activeDirectory"),
    ("disable", "okta"),
    ("enable", "activeDirectory"),
    ("forcePasswordReset", "activeDirectory"),
    ("revokeAllSessions", "okta"),
];

const COLUMNS: [&str; 7] = [
    "identityAccountId",
    "accountId",
    "action",
    "identityProvider",
    "upn",
    "ticket",
    "note",
];

/// The seven cells of row `i`, in [`COLUMNS`] order.
fn cells(i: u64) -> [String; 7] {
    let (action, provider) = PAIRS[(i % PAIRS.len() as u64) as usize];
    let account = if provider == "activeDirectory" {
        format!("S-1-5-21-1000-{i}")
    } else {
        format!("00u{i:017}")
    };
    [
        format!("{i:08x}-0000-4000-8000-{i:012x}"),
        account,
        action.to_owned(),
        provider.to_owned(),
        format!("user{i}@contoso.com"),
        format!("INC-{i}"),
        "bulk containment".to_owned(),
    ]
}

/// Writes `rows` rows as CSV with a header row.
pub fn write_csv(path: &Path, rows: u64) -> PathBuf {
    let mut text = COLUMNS.join(",");
    text.push('\n');
    for i in 0..rows {
        text.push_str(&cells(i).join(","));
        text.push('\n');
    }
    std::fs::write(path, text).expect("the temp dir takes the CSV input");
    path.to_path_buf()
}

/// Writes `rows` rows as JSONL, one compact object a line.
pub fn write_jsonl(path: &Path, rows: u64) -> PathBuf {
    let mut text = String::new();
    for i in 0..rows {
        text.push('{');
        for (index, (name, value)) in COLUMNS.iter().zip(cells(i)).enumerate() {
            if index > 0 {
                text.push(',');
            }
            // No cell needs escaping: ids, names and ASCII words only.
            let _ = write!(text, "\"{name}\":\"{value}\"");
        }
        text.push_str("}\n");
    }
    std::fs::write(path, text).expect("the temp dir takes the JSONL input");
    path.to_path_buf()
}

/// `cargo bench` passes `--bench`; `cargo test --benches` (and `--all-targets`) does not, and then
/// criterion runs each bench once as a test. Inputs shrink to match, so tests stay quick.
pub fn benchmarking() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test")
}

/// The median of `values` (sorted in place); 0 for none.
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// Rows per second for `rows` rows in `elapsed`.
pub fn per_second(rows: u64, elapsed: Duration) -> f64 {
    rows as f64 / elapsed.as_secs_f64()
}

/// The per-iteration times of every call criterion makes to an `iter_custom` routine. With flat
/// sampling criterion makes one call per sample, so the last `samples` calls are the measurement
/// and the ones before them the warm-up.
#[derive(Default)]
pub struct Timings(Mutex<Vec<Vec<Duration>>>);

impl Timings {
    /// Keeps one call's iteration times; returns their sum for criterion.
    pub fn record(&self, iterations: Vec<Duration>) -> Duration {
        let total = iterations.iter().sum();
        self.0
            .lock()
            .expect("no panic while holding it")
            .push(iterations);
        total
    }

    /// The median rows/s over the measured iterations and how many there were; `None` if the
    /// bench did not run (filtered out) or ran once as a test, where a figure would mislead.
    pub fn median_rows_per_s(&self, rows: u64, samples: usize) -> Option<(f64, usize)> {
        if !benchmarking() {
            return None;
        }
        let calls = self.0.lock().expect("no panic while holding it");
        let measured = &calls[calls.len().saturating_sub(samples)..];
        let mut rates: Vec<f64> = measured
            .iter()
            .flatten()
            .map(|&elapsed| per_second(rows, elapsed))
            .collect();
        (!rates.is_empty()).then(|| (median(&mut rates), rates.len()))
    }
}
