//! The parser's integration tests, in one test binary (after ripgrep's `tests/tests.rs`), one
//! module per theme.

mod coverage;
mod pathological;
mod samples;
mod schemas;
mod secrets;
mod understanding;
