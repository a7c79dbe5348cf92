//! Shared fixtures: the real model, real indexes built from `corpus-samples/`, and real servers
//! bound to 127.0.0.1:0.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use precedent_core::Embedder;
use precedent_index::{Engine, IndexWriter, NoProgress, WriterOptions};
use precedent_server::{ServerOptions, serve_on};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub const TOKEN: &str = "test-token-0123456789abcdef";

pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../corpus-samples")
}

pub fn embedder() -> Arc<dyn Embedder> {
    static EMBEDDER: OnceLock<Arc<dyn Embedder>> = OnceLock::new();
    EMBEDDER
        .get_or_init(|| {
            let dir = precedent_embed::resolve_model_dir(None)
                .expect("model installed (scripts/fetch-model)");
            Arc::new(
                precedent_embed::BertEmbedder::load(&dir, Default::default()).expect("model loads"),
            )
        })
        .clone()
}

/// An index directory built from corpus files.
pub struct Index {
    pub dir: tempfile::TempDir,
    pub engine: Arc<Engine>,
}

/// Builds an index of `corpus` (a directory) into a fresh temporary directory.
pub fn build_index(corpus: &Path) -> Index {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = IndexWriter::open(dir.path(), embedder(), WriterOptions::default()).unwrap();
    let summary = writer.sync_dir(corpus, &NoProgress).unwrap();
    assert!(
        summary.added > 0,
        "nothing indexed from {}",
        corpus.display()
    );
    drop(writer);
    let engine = Arc::new(Engine::open(dir.path()).unwrap());
    Index { dir, engine }
}

/// The index of all of `corpus-samples/`, built once per test binary. Read-only: tests that
/// write build their own.
pub fn shared_index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| build_index(&corpus_dir()))
}

/// An index of a few samples, private to the caller (for write tests).
pub fn small_index() -> Index {
    let corpus = tempfile::tempdir().unwrap();
    for name in [
        "2022-03-14-disk-full-debug-logs.md",
        "2021-09-30-tls-cert-expiry.md",
        "cron-job-ran-twice.md",
    ] {
        std::fs::copy(corpus_dir().join(name), corpus.path().join(name)).unwrap();
    }
    build_index(corpus.path())
}

/// A running server; stopped when dropped.
pub struct Server {
    pub addr: std::net::SocketAddr,
    pub base: String,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<precedent_server::Result<()>>>,
}

impl Server {
    /// Serves `index` with default options changed by `configure`.
    pub async fn start(index: &Index, configure: impl FnOnce(&mut ServerOptions)) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut options = ServerOptions::new(addr, index.dir.path());
        configure(&mut options);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_on(
            listener,
            options,
            index.engine.clone(),
            embedder(),
            async {
                let _ = stopped.await;
            },
        ));
        Server {
            addr,
            base: format!("http://{addr}"),
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()
                .unwrap(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The text of `/metrics`, sent with `token` as the bearer token when given.
    pub async fn metrics(&self, token: Option<&str>) -> String {
        let mut request = self.client.get(self.url("/metrics"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap().text().await.unwrap()
    }

    /// Stops the server and returns how it ended.
    pub async fn shutdown(mut self) -> precedent_server::Result<()> {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Status and JSON body of a response.
pub async fn json(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
    (status, value)
}

/// Asserts an error answer: status and `{code, message}`.
pub async fn expect_error(
    response: reqwest::Response,
    status: u16,
    code: &str,
) -> serde_json::Value {
    let (got, body) = json(response).await;
    assert_eq!(
        (got, body["code"].as_str().unwrap_or("")),
        (status, code),
        "{body}"
    );
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body
}

/// The value of one series in a `/metrics` text.
pub fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// True when the server has answered (or closed) `stream`; never waits.
pub fn answered(stream: &tokio::net::TcpStream) -> bool {
    let mut buf = [0u8; 512];
    match stream.try_read(&mut buf) {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}
