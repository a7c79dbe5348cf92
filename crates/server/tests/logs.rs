//! Logs carry no query text and no token, even at debug level (its own test binary, because it
//! installs the global subscriber).

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{Server, TOKEN, json, shared_index};
use serde_json::json;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logs_carry_no_query_text_or_token() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
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
