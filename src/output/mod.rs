//! What the tool writes for people and scripts: the plan, (later) the results file and summary.

pub mod plan;
