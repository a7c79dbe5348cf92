//! The index's integration tests, in one test binary (after ripgrep's `tests/tests.rs`), one
//! module per theme. `crash` and `hostile` re-execute this binary to run a child process.

mod common;
mod crash;
mod hostile;
mod index;
