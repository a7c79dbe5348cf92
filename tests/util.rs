//! Helpers for the end-to-end tests, after ripgrep's `tests/util.rs`: a temporary directory and
//! a command builder that runs the real `precedent` binary.

#![allow(dead_code)] // the build without the `qdrant` feature uses less of it

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

/// The `--embed-cache` that every `precedent index` of the tests shares: `corpus-samples/` is
/// embedded by the model once per precision and target directory, not once per test (in a debug
/// build that is half a minute of both cores each time). Vectors are keyed by model id and text,
/// so a cache left from an earlier run cannot give a wrong vector.
pub fn embed_cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("embed-cache")
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
            .env("PRECEDENT_LOG", "warn")
            .env("PRECEDENT_EMBED_CACHE", embed_cache());
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

impl TestCommand {
    /// Starts `precedent serve` (the arguments given so far, plus a free loopback port) and
    /// returns once it says it is serving: its stderr line is the signal, no sleeping.
    pub fn serve(mut self) -> Served {
        use std::io::BufRead;
        self.cmd
            .arg("--addr")
            .arg("127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = self.cmd.spawn().expect("precedent runs");
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let mut said = Vec::new();
        let addr = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(rest) = line.split(" on http://").nth(1) {
                        break rest.split_whitespace().next().unwrap().to_owned();
                    }
                    said.push(line);
                }
                _ => {
                    let _ = child.kill();
                    panic!("serve stopped before serving: {said:?}");
                }
            }
        };
        // Keep reading its log so that the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Served { child, addr }
    }

    /// Starts `precedent mcp` (the arguments given so far) with pipes for JSON-RPC lines.
    pub fn mcp_stdio(mut self) -> McpStdio {
        self.cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = self.cmd.spawn().expect("precedent runs");
        let stdin = child.stdin.take().unwrap();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        McpStdio {
            child,
            stdin,
            stdout,
            next_id: 1,
        }
    }
}

/// A running `precedent serve`, killed on drop.
#[derive(Debug)]
pub struct Served {
    child: std::process::Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
}

impl Served {
    /// One request on a fresh connection (`Connection: close`); the status and the body.
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        self.request_as(None, method, path, body)
    }

    /// [`Served::request`] with `Authorization: Bearer TOKEN` when a token is given.
    pub fn request_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> (u16, String) {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&self.addr).unwrap();
        let body = body.unwrap_or("");
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body.as_bytes()).unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).unwrap();
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let status = answer
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line: {answer:?}"));
        let body = answer
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_owned();
        (status, body)
    }

    /// [`Served::request`] whose body must be JSON.
    pub fn json(&self, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
        let (status, text) = self.request(method, path, body);
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text:?}"));
        (status, value)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `precedent mcp` spoken to line by line, killed on drop.
#[derive(Debug)]
pub struct McpStdio {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    next_id: u64,
}

impl McpStdio {
    /// Sends one raw line (a frame, well-formed or not).
    pub fn send_line(&mut self, line: &[u8]) {
        use std::io::Write;
        self.stdin.write_all(line).unwrap();
        self.stdin.write_all(b"\n").unwrap();
        self.stdin.flush().unwrap();
    }

    /// The next message the server sends, `None` once it closed its output.
    pub fn read_message(&mut self) -> Option<serde_json::Value> {
        use std::io::BufRead;
        let mut line = String::new();
        loop {
            line.clear();
            if self.stdout.read_line(&mut line).ok()? == 0 {
                return None;
            }
            if !line.trim().is_empty() {
                return Some(serde_json::from_str(&line).expect("the server writes JSON lines"));
            }
        }
    }

    /// Calls `method` and returns the response with its id (notifications in between are
    /// skipped).
    pub fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        let id = self.next_id;
        self.next_id += 1;
        let request =
            serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.send_line(request.to_string().as_bytes());
        loop {
            let message = self.read_message().expect("the server answers");
            if message["id"] == id {
                return message;
            }
        }
    }

    /// `initialize` and `notifications/initialized`.
    pub fn initialize(&mut self) -> serde_json::Value {
        let answer = self.call(
            "initialize",
            serde_json::json!({
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "precedent-tests", "version": "0"}
            }),
        );
        self.send_line(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        answer
    }

    /// Calls a tool; the whole JSON-RPC response.
    pub fn tool(&mut self, name: &str, arguments: serde_json::Value) -> serde_json::Value {
        self.call(
            "tools/call",
            serde_json::json!({"name": name, "arguments": arguments}),
        )
    }
}

impl Drop for McpStdio {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The citation path of each hit of a search response, in order.
pub fn hit_paths(response: &serde_json::Value) -> Vec<&str> {
    response["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["citation"]["path"].as_str().unwrap())
        .collect()
}
