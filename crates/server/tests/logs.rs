//! Logs carry no query text and no token, even at debug level (its own test binary, because it
//! installs the global subscriber).

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use common::{Server, TOKEN, answered, json, metric, shared_index};
use serde_json::json;
use tokio::io::AsyncWriteExt;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The log lines of this test binary (the global subscriber is installed once).
fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture = Capture::default();
        let writer = capture.clone();
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .init();
        capture
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logs_carry_no_query_text_or_token() {
    let capture = capture();
    let server = Server::start(shared_index(), |o| o.token = Some(TOKEN.into())).await;
    let c = &server.client;
    let secret_query = "quuxfrobnicate certificate";
    for body in [
        json!({"query": secret_query}),
        json!({"query": secret_query, "k": 1000}),
        json!({"query": secret_query, "bogus": 1}),
    ] {
        c.post(server.url("/v1/search"))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
    }
    c.post(server.url("/v1/search"))
        .bearer_auth("wrong-token-quuxfrobnicate")
        .json(&json!({"query": secret_query}))
        .send()
        .await
        .unwrap();
    let (status, _) = json(
        c.post(server.url("/v1/similar"))
            .bearer_auth(TOKEN)
            .json(&json!({"text": secret_query}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let logs = String::from_utf8_lossy(&capture.0.lock().unwrap()).into_owned();
    assert!(logs.contains("request"), "nothing was logged: {logs}");
    assert!(
        !logs.contains("quuxfrobnicate"),
        "query text in logs:\n{logs}"
    );
    assert!(!logs.contains(TOKEN), "token in logs:\n{logs}");
}

/// A burst of 503s is counted in full in /metrics but logged at most once a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bursts_of_503_are_counted_not_logged_line_by_line() {
    let capture = capture();
    let server = Server::start(shared_index(), |o| o.concurrency_limit = 1).await;
    // A request whose body never comes holds the only permit once the server has read its
    // head. A probe sent before that may hold the permit at that moment, and then the held
    // request is the one answered 503: it is sent again, on a new connection, whenever it has
    // been answered, until the probes are refused. The answer on its connection is the signal.
    let head = format!(
        "POST /v1/search HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n{{",
        server.addr
    );
    let hold = || async {
        let mut held = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        held.write_all(head.as_bytes()).await.unwrap();
        held
    };
    let mut held = hold().await;
    let mut resent = 0u64;
    let started = std::time::Instant::now();
    let mut refused = 0u64;
    for _ in 0..20_000 {
        let status = server
            .client
            .get(server.url("/v1/facets"))
            .send()
            .await
            .unwrap()
            .status();
        if status == 503 {
            refused += 1;
            if refused == 500 {
                break;
            }
        } else if answered(&held) {
            held = hold().await;
            resent += 1;
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(
        refused, 500,
        "the held request was sent {resent} more times"
    );
    drop(held);
    let logs = String::from_utf8_lossy(&capture.0.lock().unwrap()).into_owned();
    let warned = logs
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("request failed"))
        .count() as u64;
    assert!(
        warned >= 1 && warned <= elapsed.as_secs() + 2,
        "{warned} WARN lines for {refused} 503s in {elapsed:?}"
    );
    let metrics = server.metrics(None).await;
    let overloaded = metric(&metrics, "precedent_http_overloaded_total ");
    assert!(overloaded >= refused, "{overloaded} counted for {refused}");
}
