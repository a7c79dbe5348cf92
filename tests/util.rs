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
            .env_remove("NO_COLOR")
            .env_remove("CLICOLOR_FORCE")
            .env_remove("PRECEDENT_PAGER")
            .env("PRECEDENT_LOG", "warn");
        TestCommand { cmd, stdin: None }
    }

    pub fn arg(mut self, arg: impl AsRef<std::ffi::OsStr>) -> TestCommand {
        self.cmd.arg(arg);
        self
    }

    pub fn args<S: AsRef<std::ffi::OsStr>>(
        mut self,
        args: impl IntoIterator<Item = S>,
    ) -> TestCommand {
        self.cmd.args(args);
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> TestCommand {
        self.cmd.env(key, value);
        self
    }

    /// Runs and returns the exit code, stdout and stderr, whatever the outcome.
    pub fn run(self) -> (i32, String, String) {
        let out = self.output();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs with stdout to a pipe whose reader takes `keep` lines and then goes away, as
    /// `| head -n keep` does; returns the exit code, the lines read and stderr.
    pub fn into_closed_pipe(mut self, keep: usize) -> (i32, Vec<String>, String) {
        use std::io::BufRead;
        self.cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = self.cmd.spawn().expect("precedent runs");
        let stdout = child.stdout.take().unwrap();
        let lines: Vec<String> = std::io::BufReader::new(stdout)
            .lines()
            .take(keep)
            .map(|l| l.unwrap())
            .collect();
        // The reader is dropped here: later writes fail with a broken pipe.
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            lines,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs with stdout on a pseudo-terminal of 100 columns; returns the exit code and what
    /// the terminal received.
    #[cfg(unix)]
    pub fn in_pty(mut self) -> (i32, String) {
        use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
        use std::io::Read;
        use std::os::unix::ffi::OsStrExt;

        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("openpt");
        grantpt(&master).expect("grantpt");
        unlockpt(&master).expect("unlockpt");
        let name = ptsname(&master, Vec::new()).expect("ptsname");
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(std::ffi::OsStr::from_bytes(name.as_bytes()))
            .expect("open the pty");
        let size = rustix::termios::Winsize {
            ws_row: 40,
            ws_col: 100,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        rustix::termios::tcsetwinsize(&slave, size).expect("window size");
        self.cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(slave))
            .stderr(Stdio::piped());
        let mut child = self.cmd.spawn().expect("precedent runs");
        // Our copy of the terminal's child side must close, or reading never ends.
        drop(self.cmd);
        let mut master = std::fs::File::from(master);
        let mut seen = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match master.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // Linux answers EIO once the child side is closed.
                Err(_) => break,
            }
        }
        let status = child.wait().unwrap();
        (
            status.code().unwrap_or(-1),
            String::from_utf8_lossy(&seen).into_owned(),
        )
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
