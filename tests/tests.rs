//! End-to-end tests of the real `precedent` binary, in one test binary (after ripgrep's
//! `tests/tests.rs`): the CLI and the embedded store (`cli`), the Qdrant store against a real
//! Qdrant server (`qdrant`), and the store conformance suite both run (`conformance`).

mod cli;
mod conformance;
#[cfg(feature = "qdrant")]
mod qdrant;
mod util;
