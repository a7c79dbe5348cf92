//! Helpers for the end-to-end tests, after ripgrep's `tests/util.rs`: a temporary directory and
//! a command builder that runs the real `precedent` binary.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A temporary directory, removed on drop.
#[derive(Debug)]
pub struct Dir {
    tmp: tempfile::TempDir,
}

impl Default for Dir {
    fn default() -> Self {
        Self::new()
    }
}

impl Dir {
    pub fn new() -> Dir {
        Dir {
            tmp: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// Writes a file, creating parent directories.
    pub fn create(&self, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// Copies `corpus-samples/` into `rel` and returns its path.
    pub fn copy_samples(&self, rel: &str) -> PathBuf {
        let dest = self.join(rel);
        std::fs::create_dir_all(&dest).unwrap();
        for entry in std::fs::read_dir(samples()).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, dest.join(path.file_name().unwrap())).unwrap();
        }
        dest
    }
}

/// The project's sample write-ups.
pub fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus-samples")
}

/// A `precedent` invocation.
#[derive(Debug)]
pub struct TestCommand {
    cmd: Command,
    stdin: Option<Vec<u8>>,
}

impl TestCommand {
    pub fn new(args: &[&str]) -> TestCommand {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_precedent"));
        cmd.args(args)
            .env_remove("PRECEDENT_INDEX")
            .env("PRECEDENT_LOG", "warn");
        TestCommand { cmd, stdin: None }
    }

    pub fn arg(mut self, arg: impl AsRef<std::ffi::OsStr>) -> TestCommand {
        self.cmd.arg(arg);
        self
    }

    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> TestCommand {
        self.stdin = Some(data.into());
        self
    }

    pub fn output(mut self) -> Output {
        self.cmd.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        self.cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = self.cmd.spawn().expect("precedent runs");
        if let Some(data) = self.stdin.take() {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            std::thread::spawn(move || stdin.write_all(&data).unwrap());
        }
        child.wait_with_output().unwrap()
    }

    /// Runs, asserts success, returns stdout.
    pub fn stdout(self) -> String {
        let desc = format!("{:?}", self.cmd);
        let out = self.output();
        assert!(
            out.status.success(),
            "{desc} failed: {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs, asserts failure, returns stderr.
    pub fn fails(self) -> String {
        let out = self.output();
        assert!(
            !out.status.success(),
            "expected failure, got {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    pub fn json(self) -> serde_json::Value {
        serde_json::from_str(&self.stdout()).expect("JSON output")
    }
}
