//! What the tool writes for people and scripts, and reads back: the plan, the results file (and
//! reading it for `--resume`, the report, undo and the effects), the progress bar, the summary,
//! the report for the ticket, the undo file, the identity snapshot, the lock, and the checks of
//! the paths a run writes. No network.

pub mod effects;
#[cfg(test)]
mod input_property_tests;
pub mod journal;
pub mod lock;
pub mod paths;
pub mod plan;
pub mod progress;
pub mod record;
pub mod report;
pub mod resume;
pub(crate) mod sheet;
pub mod snapshot;
pub mod summary;
pub mod undo;
