//! The progress bar a responder watches on a terminal (issue 7): rows done of total, rate, ETA,
//! succeeded / failed / retrying counts, and "throttled by Graph: resuming in 12s" while the
//! shared pause holds.
//!
//! The bar belongs to a tracing span that tracing-indicatif draws, so log lines print above it
//! instead of through it (a bar made apart from the layer gets clobbered: tracing-indicatif #17,
//! research/rust-deps.md section 6). The hot path never sees the bar: the results writer counts
//! finished rows in [`RowCounts`] (one relaxed add per row), the workers keep their own atomics,
//! and a task reads them every [`REFRESH`] to redraw. When stderr is not a terminal, or with
//! `--no-progress`, there is no span and no task at all.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tracing_indicatif::span_ext::IndicatifSpanExt;
use tracing_indicatif::style::ProgressStyle;

use crate::outcome::RowStatus;
pub use crate::units::ProgressMode;

/// How often the bar reads the counters. The terminal is redrawn at most 20 times a second
/// anyway (tracing-indicatif's default); reading more often would only cost.
pub const REFRESH: Duration = Duration::from_millis(150);

/// The field that asks the progress layer for a bar (`logging` lets only such spans through to
/// it, so the per-row work never creates one).
pub const BAR_FIELD: &str = "indicatif.pb_show";

/// Finished rows by status, counted by the results writer as records pass through it.
#[derive(Debug, Default)]
pub struct RowCounts {
    succeeded: AtomicU64,
    failed: AtomicU64,
    skipped: AtomicU64,
    not_attempted: AtomicU64,
}

impl RowCounts {
    /// Counts one finished row. Relaxed: the bar needs no ordering with anything else.
    pub fn record(&self, status: RowStatus) {
        let counter = match status {
            RowStatus::Succeeded => &self.succeeded,
            RowStatus::Failed => &self.failed,
            RowStatus::Skipped => &self.skipped,
            RowStatus::NotAttempted => &self.not_attempted,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn succeeded(&self) -> u64 {
        self.succeeded.load(Ordering::Relaxed)
    }

    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Rows with a record, whatever their status.
    pub fn done(&self) -> u64 {
        self.succeeded()
            + self.failed()
            + self.skipped.load(Ordering::Relaxed)
            + self.not_attempted.load(Ordering::Relaxed)
    }
}

/// What the bar shows at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub done: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Rows between a failed attempt and their next one.
    pub retrying: u64,
    /// How long the shared throttle pause still holds, while it does.
    pub throttled_for: Option<Duration>,
}

/// The text beside the bar: the counts, and a second line while Graph throttles.
pub fn message(snapshot: &Snapshot) -> String {
    let mut text = format!(
        "{} succeeded · {} failed · {} retrying",
        snapshot.succeeded, snapshot.failed, snapshot.retrying
    );
    if let Some(left) = snapshot.throttled_for {
        // Rounded up: "resuming in 0s" while the gate is still closed would be a lie.
        let seconds = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        let _ = write!(text, "\n  throttled by Graph: resuming in {seconds}s");
    }
    text
}

/// The bar's look: one line, and a second one while throttled (see [`message`]).
fn style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{spinner:.cyan} {pos}/{len} rows [{bar:24.cyan/blue}] {per_sec:1} ETA {eta} · {msg}",
    )
    .expect("the progress template is valid")
    .progress_chars("=> ")
}

/// A running bar; [`Progress::finish`] clears it.
pub struct Progress {
    /// Redraws the bar; it holds the bar's span, so the bar lives as long as the task.
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    /// Starts the bar for `total` rows, unless `mode` or a stderr that is not a terminal says
    /// not to. `read` is called every [`REFRESH`] on a runtime task.
    pub fn start(
        total: u64,
        mode: ProgressMode,
        read: impl Fn() -> Snapshot + Send + 'static,
    ) -> Option<Progress> {
        Progress::draw(Some(total), style(), mode, move || {
            let now = read();
            (now.done, message(&now))
        })
    }

    /// The lookup's phase (SPEC section 8): a spinner with the reads sent so far, since how many
    /// a walk of the list takes is not known until it ends.
    pub fn start_lookup(
        mode: ProgressMode,
        read: impl Fn() -> Snapshot + Send + 'static,
    ) -> Option<Progress> {
        let style = ProgressStyle::with_template(
            "{spinner:.cyan} looking identities up: {pos} reads · {elapsed}",
        )
        .expect("the lookup's progress template is valid");
        Progress::draw(None, style, mode, move || (read().done, String::new()))
    }

    /// The confirm phase (SPEC section 10): the rows whose effect showed, of those to check, and
    /// the round under way.
    pub fn start_confirm(
        total: u64,
        mode: ProgressMode,
        read: impl Fn() -> (u64, u64) + Send + 'static,
    ) -> Option<Progress> {
        let style = ProgressStyle::with_template(
            "{spinner:.cyan} confirming the effect: {pos}/{len} confirmed [{bar:24.cyan/blue}] {elapsed} · {msg}",
        )
        .expect("the confirm phase's progress template is valid")
        .progress_chars("=> ");
        Progress::draw(Some(total), style, mode, move || {
            let (confirmed, rounds) = read();
            (confirmed, format!("{rounds} round(s) read"))
        })
    }

    /// Draws a bar of `total` (a spinner when unknown) with `style`, refreshed from `read`.
    fn draw(
        total: Option<u64>,
        style: ProgressStyle,
        mode: ProgressMode,
        read: impl Fn() -> (u64, String) + Send + 'static,
    ) -> Option<Progress> {
        if mode == ProgressMode::Off || !std::io::stderr().is_terminal() {
            return None;
        }
        let bar = tracing::info_span!("progress", indicatif.pb_show = tracing::field::Empty);
        bar.pb_set_style(&style);
        if let Some(total) = total {
            bar.pb_set_length(total);
        }
        bar.pb_set_message(&read().1);
        bar.pb_start();
        let task = tokio::spawn(async move {
            let mut every = tokio::time::interval(REFRESH);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let (mut shown_done, mut shown_text) = (0, String::new());
            loop {
                every.tick().await;
                let (done, text) = read();
                if done != shown_done {
                    bar.pb_set_position(done);
                    shown_done = done;
                }
                // Compared as shown: the countdown changes once a second, not every tick.
                if text != shown_text {
                    bar.pb_set_message(&text);
                    shown_text = text;
                }
            }
        });
        Some(Progress { task })
    }

    /// Stops updating and clears the bar (the span closes, and tracing-indicatif removes it), so
    /// the summary that follows is printed on a clean line.
    pub async fn finish(mut self) {
        self.task.abort();
        // The task holds a handle on the span: wait until it is gone, so the bar is cleared now.
        let _ = (&mut self.task).await;
    }
}

impl Drop for Progress {
    /// A run that ends in an error drops the bar without [`Progress::finish`]; stop the task
    /// anyway, so that nothing keeps the bar alive.
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Prints `text` on stderr above the bar when one is drawn; a plain `eprint!` would be drawn
/// over. Without a bar it is a plain write to stderr.
pub fn eprint_above(text: &str) {
    match tracing_indicatif::writer::get_indicatif_stderr_writer() {
        Some(mut writer) => {
            let _ = writer.write_all(text.as_bytes());
        }
        None => eprint!("{text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_shows_the_counts_and_the_pause_rounded_up() {
        let mut snapshot = Snapshot {
            done: 120,
            succeeded: 115,
            failed: 2,
            retrying: 3,
            throttled_for: None,
        };
        assert_eq!(message(&snapshot), "115 succeeded · 2 failed · 3 retrying");
        snapshot.throttled_for = Some(Duration::from_millis(11_200));
        assert_eq!(
            message(&snapshot),
            "115 succeeded · 2 failed · 3 retrying\n  throttled by Graph: resuming in 12s"
        );
    }

    #[test]
    fn the_template_is_valid() {
        let _ = style();
    }

    #[test]
    fn rows_are_counted_by_status() {
        let counts = RowCounts::default();
        for status in RowStatus::ALL {
            counts.record(status);
        }
        counts.record(RowStatus::Succeeded);
        assert_eq!(
            (counts.succeeded(), counts.failed(), counts.done()),
            (2, 1, 5)
        );
    }
}
