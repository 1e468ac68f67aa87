//! Unit tests of the report: gathering, both renderers, escaping.
