//! The server's integration tests over a real bound server, in one test binary (after ripgrep's
//! `tests/tests.rs`); `logs.rs` is its own binary because it installs the global subscriber.

mod common;
mod http;
mod mcp;
