//! What the tool writes for people and scripts: the plan, the results file, the progress bar,
//! the summary and the report for the ticket. No network.

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
