//! The HTTP API over a real socket, against a real index of `corpus-samples/` and the real model.

use std::time::Duration;

use crate::common::{
    Server, TOKEN, answered, expect_error, json, metric, shared_index, small_index,
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn search_returns_ranked_hits_with_citations() {
    let server = Server::start(shared_index(), |_| {}).await;
    let response = server
        .client
        .post(server.url("/v1/search"))
        .json(&json!({"query": "TLS certificate expired", "k": 5}))
        .send()
        .await
        .unwrap();
    let (status, body) = json(response).await;
    assert_eq!(status, 200, "{body}");
    let hits = body["hits"].as_array().unwrap();
    assert!(!hits.is_empty() && hits.len() <= 5);
    assert!(body["took_ms"].is_u64());
    let hit = &hits[0];
    for key in [
        "step_id",
        "incident_id",
        "title",
        "kind",
        "text",
        "snippet",
        "score",
        "citation",
    ] {
        assert!(hit.get(key).is_some(), "missing {key} in {hit}");
    }
    assert!(
        hit["citation"]["path"].as_str().unwrap().ends_with(".md")
            || hit["citation"]["path"].as_str().unwrap().ends_with(".txt")
    );
    let paths: Vec<_> = hits
        .iter()
        .map(|h| h["citation"]["path"].as_str().unwrap())
        .collect();
    assert!(paths.iter().any(|p| p.contains("cert")), "{paths:?}");

    // Lexical mode with a filter on kinds.
    let response = server
        .client
        .post(server.url("/v1/search"))
        .json(&json!({"query": "disk full", "mode": "lexical", "k": 3, "filters": {"kinds": ["root_cause"]}}))
        .send()
        .await
        .unwrap();
    let (status, body) = json(response).await;
    assert_eq!(status, 200, "{body}");
    for hit in body["hits"].as_array().unwrap() {
        assert_eq!(hit["kind"], "root_cause");
        assert!(hit["score"]["vector_rank"].is_null());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn similar_incident_and_facets_routes_answer() {
    let server = Server::start(shared_index(), |_| {}).await;
    let c = &server.client;
    let (status, body) = json(
        c.post(server.url("/v1/similar"))
            .json(&json!({"text": "pods restarting with OOMKilled after a deploy", "k": 3}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let incidents = body["incidents"].as_array().unwrap();
    assert!(!incidents.is_empty() && incidents.len() <= 3);
    let first = incidents[0]["incident_id"].as_str().unwrap().to_owned();
    assert!(
        incidents[0]["steps"]
            .as_array()
            .is_some_and(|s| !s.is_empty())
    );

    let (status, body) = json(
        c.post(server.url("/v1/similar"))
            .json(&json!({"incident_id": first, "k": 2}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let incidents = body["incidents"].as_array().unwrap();
    assert_eq!(incidents.len(), 2, "{body}");
    assert!(incidents.iter().all(|i| i["incident_id"] != first.as_str()));

    let (status, incident) = json(
        c.get(server.url(&format!("/v1/incidents/{first}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{incident}");
    assert_eq!(incident["id"], first.as_str());
    assert!(incident["steps"].as_array().is_some_and(|s| !s.is_empty()));

    expect_error(
        c.get(server.url("/v1/incidents/no-such-incident-00000000"))
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
    // Read as a reference (id, prefix or path), it names no incident.
    expect_error(
        c.get(server.url("/v1/incidents/Not%20An%20Id"))
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
    expect_error(
        c.post(server.url("/v1/similar"))
            .json(&json!({"incident_id": "no-such-incident-00000000"}))
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
    expect_error(
        c.post(server.url("/v1/similar"))
            .json(&json!({"k": 2}))
            .send()
            .await
            .unwrap(),
        400,
        "bad_request",
    )
    .await;
    expect_error(
        c.post(server.url("/v1/similar"))
            .json(&json!({"text": "x", "incident_id": first}))
            .send()
            .await
            .unwrap(),
        400,
        "bad_request",
    )
    .await;

    let (status, facets) = json(c.get(server.url("/v1/facets")).send().await.unwrap()).await;
    assert_eq!(status, 200, "{facets}");
    assert!(facets["incidents"].as_u64().unwrap() >= 20);
    assert!(facets["kinds"].as_array().is_some_and(|k| !k.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_metrics_and_openapi() {
    let server = Server::start(shared_index(), |_| {}).await;
    let c = &server.client;
    let (status, health) = json(c.get(server.url("/healthz")).send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["index_loaded"], true);
    assert!(health["generation"].as_u64().unwrap() >= 1);

    c.post(server.url("/v1/search"))
        .json(&json!({"query": "dns"}))
        .send()
        .await
        .unwrap();
    c.post(server.url("/v1/search"))
        .body("{")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    let response = c.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    assert!(
        text.contains(
            r#"precedent_http_requests_total{route="/v1/search",method="POST",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"precedent_http_requests_total{route="/v1/search",method="POST",status="400"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"precedent_http_request_duration_seconds_count{route="/healthz",method="GET"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains("precedent_index_generation "));
    assert!(text.contains("precedent_index_size_bytes "));
    assert!(!text.contains("dns"), "query text leaked into metrics");

    let (status, doc) = json(c.get(server.url("/openapi.json")).send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(doc, precedent_server::openapi_document());
    assert!(doc["paths"]["/v1/search"]["post"].is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_requests_get_stable_error_codes() {
    let server = Server::start(shared_index(), |o| o.body_limit = 64 * 1024).await;
    let c = &server.client;
    let post = |body: &'static str| {
        c.post(server.url("/v1/search"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    expect_error(post("{\"query\": ").await.unwrap(), 400, "invalid_json").await;
    expect_error(post("not json").await.unwrap(), 400, "invalid_json").await;
    expect_error(
        post(r#"{"query": "x", "limit": 3}"#).await.unwrap(),
        400,
        "unknown_field",
    )
    .await;
    expect_error(
        post(r#"{"query": "x", "filters": {"kind": []}}"#)
            .await
            .unwrap(),
        400,
        "unknown_field",
    )
    .await;
    expect_error(post(r#"{"query": 5}"#).await.unwrap(), 400, "bad_request").await;
    expect_error(
        post(r#"{"query": "x", "k": -1}"#).await.unwrap(),
        400,
        "bad_request",
    )
    .await;
    expect_error(
        post(r#"{"query": "x", "k": 0}"#).await.unwrap(),
        400,
        "bad_request",
    )
    .await;
    expect_error(
        post(r#"{"query": "x", "k": 101}"#).await.unwrap(),
        400,
        "bad_request",
    )
    .await;
    expect_error(
        post(r#"{"query": "x", "mode": "magic"}"#).await.unwrap(),
        400,
        "bad_request",
    )
    .await;
    expect_error(
        post(r#"{"query": "   "}"#).await.unwrap(),
        400,
        "bad_request",
    )
    .await;
    let (status, _) = json(post(r#"{"query": "x", "k": 100}"#).await.unwrap()).await;
    assert_eq!(status, 200);
    let long = json!({"query": "a".repeat(4097)});
    expect_error(
        c.post(server.url("/v1/search"))
            .json(&long)
            .send()
            .await
            .unwrap(),
        400,
        "bad_request",
    )
    .await;
    expect_error(
        c.post(server.url("/v1/search"))
            .body(r#"{"query": "x"}"#)
            .send()
            .await
            .unwrap(),
        415,
        "unsupported_media_type",
    )
    .await;
    expect_error(
        c.post(server.url("/v1/search"))
            .header("content-type", "text/plain")
            .body(r#"{"query": "x"}"#)
            .send()
            .await
            .unwrap(),
        415,
        "unsupported_media_type",
    )
    .await;
    expect_error(
        c.post(server.url("/v1/search"))
            .header("content-type", "application/json")
            .body(vec![b'{', 0xff, 0xfe, b'}'])
            .send()
            .await
            .unwrap(),
        400,
        "invalid_json",
    )
    .await;
    let big = format!(r#"{{"query": "{}"}}"#, "a".repeat(70 * 1024));
    expect_error(
        c.post(server.url("/v1/search"))
            .header("content-type", "application/json")
            .body(big)
            .send()
            .await
            .unwrap(),
        413,
        "payload_too_large",
    )
    .await;
    expect_error(
        c.get(server.url("/v1/nothing")).send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    expect_error(
        c.get(server.url("/v1/search")).send().await.unwrap(),
        405,
        "method_not_allowed",
    )
    .await;
    expect_error(
        c.delete(server.url("/v1/facets")).send().await.unwrap(),
        405,
        "method_not_allowed",
    )
    .await;
}

/// A body larger than the limit sent without `Content-Length` (chunked) is cut off too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chunked_bodies_over_the_limit_are_refused() {
    let server = Server::start(shared_index(), |o| o.body_limit = 1024).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let chunk = "a".repeat(4000);
    let request = format!(
        "POST /v1/search HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        server.addr,
        chunk.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bearer_token_is_required_when_configured() {
    let server = Server::start(shared_index(), |o| o.token = Some(TOKEN.into())).await;
    let c = &server.client;
    let search = || {
        c.post(server.url("/v1/search"))
            .json(&json!({"query": "dns"}))
    };
    let response = search().send().await.unwrap();
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"precedent\""
    );
    expect_error(response, 401, "unauthorized").await;
    expect_error(
        search()
            .bearer_auth("wrong-token-0123456789abcdef")
            .send()
            .await
            .unwrap(),
        401,
        "unauthorized",
    )
    .await;
    expect_error(
        search()
            .bearer_auth(&TOKEN[..TOKEN.len() - 1])
            .send()
            .await
            .unwrap(),
        401,
        "unauthorized",
    )
    .await;
    expect_error(
        search()
            .header("authorization", format!("Basic {TOKEN}"))
            .send()
            .await
            .unwrap(),
        401,
        "unauthorized",
    )
    .await;
    let (status, _) = json(search().bearer_auth(TOKEN).send().await.unwrap()).await;
    assert_eq!(status, 200);
    for path in [
        "/v1/facets",
        "/metrics",
        "/openapi.json",
        "/v1/incidents/x-00000000",
    ] {
        expect_error(
            c.get(server.url(path)).send().await.unwrap(),
            401,
            "unauthorized",
        )
        .await;
    }
    expect_error(
        c.post(server.url("/mcp"))
            .json(&json!({}))
            .send()
            .await
            .unwrap(),
        401,
        "unauthorized",
    )
    .await;
    // Liveness needs no token.
    let (status, _) = json(c.get(server.url("/healthz")).send().await.unwrap()).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn host_and_origin_are_checked_on_every_route() {
    let server = Server::start(shared_index(), |_| {}).await;
    let c = &server.client;
    let port = server.addr.port();
    for path in ["/healthz", "/v1/facets", "/mcp", "/nowhere"] {
        expect_error(
            c.get(server.url(path))
                .header("host", format!("evil.example:{port}"))
                .send()
                .await
                .unwrap(),
            403,
            "forbidden_host",
        )
        .await;
    }
    expect_error(
        c.post(server.url("/mcp"))
            .header("host", "rebind.evil.example")
            .json(&json!({}))
            .send()
            .await
            .unwrap(),
        403,
        "forbidden_host",
    )
    .await;
    expect_error(
        c.get(server.url("/healthz"))
            .header("host", format!("localhost:{}", port.wrapping_add(1)))
            .send()
            .await
            .unwrap(),
        403,
        "forbidden_host",
    )
    .await;
    let (status, _) = json(
        c.get(server.url("/healthz"))
            .header("host", format!("localhost:{port}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);

    expect_error(
        c.get(server.url("/healthz"))
            .header("origin", "https://evil.example")
            .send()
            .await
            .unwrap(),
        403,
        "forbidden_origin",
    )
    .await;
    expect_error(
        c.post(server.url("/mcp"))
            .header("origin", "http://evil.example")
            .json(&json!({}))
            .send()
            .await
            .unwrap(),
        403,
        "forbidden_origin",
    )
    .await;
    let (status, _) = json(
        c.get(server.url("/healthz"))
            .header("origin", format!("http://localhost:{port}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    // No CORS unless configured.
    let response = c
        .get(server.url("/healthz"))
        .header("origin", format!("http://127.0.0.1:{port}"))
        .send()
        .await
        .unwrap();
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cors_is_answered_for_configured_origins_only() {
    let server = Server::start(shared_index(), |o| {
        o.cors_origins = vec!["https://console.example".into()];
        o.token = Some(TOKEN.into());
    })
    .await;
    let c = &server.client;
    let preflight = c
        .request(reqwest::Method::OPTIONS, server.url("/v1/search"))
        .header("origin", "https://console.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://console.example"
    );
    let response = c
        .get(server.url("/v1/facets"))
        .header("origin", "https://console.example")
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://console.example"
    );
    expect_error(
        c.get(server.url("/v1/facets"))
            .header("origin", "https://other.example")
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap(),
        403,
        "forbidden_origin",
    )
    .await;
}

/// Opens a raw connection and sends a request head announcing a body that is not sent yet: the
/// server holds a concurrency permit while it waits for the body.
async fn held_request(server: &Server) -> TcpStream {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /v1/search HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 17\r\nConnection: close\r\n\r\n{{\"query\"",
        server.addr
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn saturated_server_answers_503_with_retry_after() {
    let server = Server::start(shared_index(), |o| o.concurrency_limit = 1).await;
    let mut held = held_request(&server).await;
    // The held request takes the only permit as soon as its head is read; until then the
    // probes may still get through, and a probe holding the permit at that moment gets the
    // held request itself answered 503: then it is sent again. Probe until the first 503
    // (bounded, no sleeps; the answer on the held connection is the signal).
    let mut refused = None;
    for _ in 0..10_000 {
        let response = server
            .client
            .get(server.url("/v1/facets"))
            .send()
            .await
            .unwrap();
        if response.status() == 503 {
            refused = Some(response);
            break;
        }
        if answered(&held) {
            held = held_request(&server).await;
        }
    }
    let refused = refused.expect("the server never reported saturation");
    assert_eq!(refused.headers()["retry-after"], "1");
    expect_error(refused, 503, "overloaded").await;
    // Probes and scrapes still answer while it is saturated.
    for path in ["/healthz", "/metrics"] {
        let response = server.client.get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }

    // Completing the held request frees the permit.
    held.write_all(b": \"disk\"}").await.unwrap();
    let mut answer = String::new();
    held.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let (status, _) = json(
        server
            .client
            .get(server.url("/v1/facets"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let metrics = server.metrics(None).await;
    assert!(
        !metrics.contains("precedent_http_overloaded_total 0"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_requests_time_out() {
    let server = Server::start(shared_index(), |o| {
        o.request_timeout = Duration::from_millis(300)
    })
    .await;
    let mut held = held_request(&server).await;
    let mut answer = String::new();
    held.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
    assert!(answer.contains("\"timeout\""), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_are_disabled_by_default() {
    let server = Server::start(shared_index(), |o| o.token = Some(TOKEN.into())).await;
    let c = &server.client;
    let body = json!({"path": "new.md", "markdown": "# New\n\nText"});
    expect_error(
        c.put(server.url("/v1/incidents"))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap(),
        403,
        "writes_disabled",
    )
    .await;
    expect_error(
        c.delete(server.url("/v1/incidents/new-00000000"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap(),
        403,
        "writes_disabled",
    )
    .await;
    // The token is checked first.
    expect_error(
        c.put(server.url("/v1/incidents"))
            .json(&body)
            .send()
            .await
            .unwrap(),
        401,
        "unauthorized",
    )
    .await;
}

const NEW_WRITE_UP: &str = "# Queue workers wedged by poison message\n\n## Summary\n\nThe billing queue workers stopped consuming after a malformed zorblax message.\n\n## Root cause\n\nA zorblax payload without a currency field crashed the deserializer in a loop.\n\n## Resolution\n\nWe moved the poison message to the dead-letter queue and workers recovered.\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_upsert_and_delete_when_enabled() {
    let index = small_index();
    let server = Server::start(&index, |o| {
        o.token = Some(TOKEN.into());
        o.allow_writes = true;
    })
    .await;
    let c = &server.client;
    let put = |body: serde_json::Value| {
        c.put(server.url("/v1/incidents"))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
    };
    let search = || {
        c.post(server.url("/v1/search"))
            .bearer_auth(TOKEN)
            .json(&json!({"query": "zorblax", "mode": "lexical"}))
            .send()
    };
    let (_, before) = json(search().await.unwrap()).await;
    assert!(before["hits"].as_array().unwrap().is_empty());

    let (status, created) = json(
        put(json!({"path": "2024/queue-poison.md", "markdown": NEW_WRITE_UP}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["replaced"], false);
    assert!(created["steps"].as_u64().unwrap() >= 2);
    let id = created["incident_id"].as_str().unwrap().to_owned();
    let (_, after) = json(search().await.unwrap()).await;
    let hits = after["hits"].as_array().unwrap();
    assert!(!hits.is_empty());
    assert_eq!(hits[0]["citation"]["path"], "2024/queue-poison.md");

    let (status, replaced) = json(put(json!({"path": "2024/queue-poison.md", "markdown": NEW_WRITE_UP.replace("billing", "invoicing")})).await.unwrap()).await;
    assert_eq!(status, 200, "{replaced}");
    assert_eq!(replaced["replaced"], true);
    assert!(replaced["generation"].as_u64() > created["generation"].as_u64());

    for bad in ["../escape.md", "/etc/passwd.md", "a\\b.md", "notes.exe", ""] {
        expect_error(
            put(json!({"path": bad, "markdown": NEW_WRITE_UP}))
                .await
                .unwrap(),
            400,
            "bad_request",
        )
        .await;
    }
    expect_error(
        put(json!({"path": "x.md"})).await.unwrap(),
        400,
        "bad_request",
    )
    .await;

    // A corpus file's incident is not the API's to replace or delete: `precedent index` would
    // undo it.
    let body = expect_error(
        put(json!({"path": "2021-09-30-tls-cert-expiry.md", "markdown": NEW_WRITE_UP}))
            .await
            .unwrap(),
        409,
        "owned_by_corpus",
    )
    .await;
    assert!(
        body["message"].as_str().unwrap().contains("corpus"),
        "{body}"
    );
    let (_, tls) = json(
        c.get(server.url("/v1/incidents/2021-09-30-tls-cert-expiry.md"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let tls_id = tls["id"].as_str().unwrap().to_owned();
    expect_error(
        c.delete(server.url(&format!("/v1/incidents/{tls_id}")))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap(),
        409,
        "owned_by_corpus",
    )
    .await;

    // Another writer (e.g. `precedent index`) holding the lock: 409 with Retry-After.
    let dir = index.dir.path().to_owned();
    let other_writer = tokio::task::spawn_blocking(move || {
        precedent_index::IndexWriter::open(&dir, crate::common::embedder(), Default::default())
            .unwrap()
    })
    .await
    .unwrap();
    let response = put(json!({"path": "2024/other.md", "markdown": NEW_WRITE_UP}))
        .await
        .unwrap();
    assert_eq!(response.headers()["retry-after"], "5");
    expect_error(response, 409, "index_locked").await;
    drop(other_writer);

    let (status, deleted) = json(
        c.delete(server.url(&format!("/v1/incidents/{id}")))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["deleted"], true);
    let (_, gone) = json(search().await.unwrap()).await;
    assert!(gone["hits"].as_array().unwrap().is_empty());
    expect_error(
        c.get(server.url(&format!("/v1/incidents/{id}")))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
    expect_error(
        c.delete(server.url(&format!("/v1/incidents/{id}")))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
}

/// A generation published by another writer (`precedent index`) is served without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn new_generations_are_picked_up_without_restart() {
    let index = small_index();
    let server = Server::start(&index, |_| {}).await;
    let c = &server.client;
    let (_, health) = json(c.get(server.url("/healthz")).send().await.unwrap()).await;
    let generation = health["generation"].as_u64().unwrap();
    let dir = index.dir.path().to_owned();
    tokio::task::spawn_blocking(move || {
        let mut writer =
            precedent_index::IndexWriter::open(&dir, crate::common::embedder(), Default::default())
                .unwrap();
        writer
            .upsert("later/queue-poison.md", NEW_WRITE_UP.as_bytes())
            .unwrap();
    })
    .await
    .unwrap();
    let (_, health) = json(c.get(server.url("/healthz")).send().await.unwrap()).await;
    assert!(
        health["generation"].as_u64().unwrap() > generation,
        "{health}"
    );
    let (_, found) = json(
        c.post(server.url("/v1/search"))
            .json(&json!({"query": "zorblax", "mode": "lexical"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(!found["hits"].as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_shutdown_returns_ok() {
    let server = Server::start(shared_index(), |_| {}).await;
    let (status, _) = json(
        server
            .client
            .get(server.url("/healthz"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn non_loopback_bind_without_token_is_refused() {
    let options = precedent_server::ServerOptions::new(
        "0.0.0.0:0".parse().unwrap(),
        shared_index().dir.path(),
    );
    let err = precedent_server::serve(
        options,
        shared_index().engine.clone(),
        crate::common::embedder(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, precedent_server::Error::InsecureBind(_)),
        "{err}"
    );
    assert!(err.to_string().contains("without a bearer token"));
}

/// 10 000 malformed requests, 32 at a time: no crash, no 5xx, and the server still answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn storm_of_malformed_requests_causes_no_5xx() {
    let server = Server::start(shared_index(), |o| {
        o.body_limit = 16 * 1024;
        o.concurrency_limit = 256;
    })
    .await;
    let big = vec![b'a'; 20 * 1024];
    let cases: Vec<(reqwest::Method, &str, Option<&str>, Vec<u8>)> = vec![
        (reqwest::Method::POST, "/v1/search", Some("application/json"), b"{\"query\": \"disk".to_vec()),
        (reqwest::Method::POST, "/v1/search", Some("application/json"), b"{\"query\": [1,2]}".to_vec()),
        (reqwest::Method::POST, "/v1/search", Some("application/json"), b"{\"query\": \"x\", \"k\": \"ten\"}".to_vec()),
        (reqwest::Method::POST, "/v1/search", Some("application/json"), b"{\"query\": \"x\", \"k\": 1e99}".to_vec()),
        (reqwest::Method::POST, "/v1/search", Some("application/json"), b"{\"query\": \"x\", \"filters\": {\"since\": \"yesterday\"}}".to_vec()),
        (reqwest::Method::POST, "/v1/search", Some("application/json"), b"{\"query\": \"x\", \"filters\": {\"since\": \"2022-01-01\", \"until\": \"2021-01-01\"}}".to_vec()),
        (reqwest::Method::POST, "/v1/search", Some("application/json"), b"{\"query\": \"x\", \"filters\": {\"services\": [\" \"]}}".to_vec()),
        (reqwest::Method::POST, "/v1/search", Some("application/json"), b"{\"query\": \"x\", \"extra\": true}".to_vec()),
        (reqwest::Method::POST, "/v1/search", Some("application/json"), vec![0xc3, 0x28, 0xa0, 0xa1]),
        (reqwest::Method::POST, "/v1/search", Some("application/json"), b"\"query\"".to_vec()),
        (reqwest::Method::POST, "/v1/search", Some("application/json"), b"null".to_vec()),
        (reqwest::Method::POST, "/v1/search", Some("application/json"), b"".to_vec()),
        (reqwest::Method::POST, "/v1/search", Some("application/json"), big.clone()),
        (reqwest::Method::POST, "/v1/search", Some("text/xml"), b"<query/>".to_vec()),
        (reqwest::Method::POST, "/v1/search", None, b"{\"query\": \"x\"}".to_vec()),
        (reqwest::Method::POST, "/v1/similar", Some("application/json"), b"{\"incident_id\": \"../../etc/passwd\"}".to_vec()),
        (reqwest::Method::POST, "/v1/similar", Some("application/json"), b"{\"text\": 12}".to_vec()),
        (reqwest::Method::POST, "/v1/similar", Some("application/json"), b"{}".to_vec()),
        (reqwest::Method::GET, "/v1/incidents/..%2F..%2Fetc%2Fpasswd", None, Vec::new()),
        (reqwest::Method::GET, "/v1/incidents/%ff%fe", None, Vec::new()),
        (reqwest::Method::GET, "/v1/incidents/", None, Vec::new()),
        (reqwest::Method::PUT, "/v1/incidents", Some("application/json"), b"{\"path\": \"../x.md\"}".to_vec()),
        (reqwest::Method::DELETE, "/v1/incidents/abc-00000000", None, Vec::new()),
        (reqwest::Method::PATCH, "/v1/search", Some("application/json"), b"{}".to_vec()),
        (reqwest::Method::GET, "/v1/similar", None, Vec::new()),
        (reqwest::Method::POST, "/mcp", Some("application/json"), b"{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": \"tools/call\", \"params\": {\"name\": \"search_incidents\"".to_vec()),
        (reqwest::Method::POST, "/mcp", Some("application/json"), b"[1, 2, 3]".to_vec()),
        (reqwest::Method::POST, "/mcp", Some("text/plain"), b"hello".to_vec()),
        (reqwest::Method::POST, "/mcp", Some("application/json"), big),
        (reqwest::Method::DELETE, "/mcp", None, Vec::new()),
    ];
    let cases = std::sync::Arc::new(cases);
    let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = tokio::task::JoinSet::new();
    let total = 10_000;
    for i in 0..total {
        let permit = semaphore.clone().acquire_owned().await.unwrap();
        let (client, url, cases) = (server.client.clone(), server.base.clone(), cases.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let (method, path, content_type, body) = &cases[i % cases.len()];
            let mut request = client
                .request(method.clone(), format!("{url}{path}"))
                .body(body.clone());
            if let Some(ct) = content_type {
                request = request.header("content-type", *ct);
            }
            if path.starts_with("/mcp") {
                request = request.header("accept", "application/json, text/event-stream");
            }
            let status = request
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            (i % cases.len(), status)
        });
    }
    let mut server_errors = Vec::new();
    let mut answered = 0;
    while let Some(result) = tasks.join_next().await {
        let (case, status) = result.unwrap();
        answered += 1;
        if status == 0 || status >= 500 {
            server_errors.push((case, status));
        }
    }
    assert_eq!(answered, total);
    server_errors.sort();
    server_errors.dedup();
    assert!(
        server_errors.is_empty(),
        "cases answered with 5xx or no answer: {server_errors:?}"
    );
    let (status, _) = json(
        server
            .client
            .get(server.url("/healthz"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
}

/// Opens `n` raw connections; every other one sends half a request head and stops.
async fn idle_connections(server: &Server, n: usize) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(n);
    for i in 0..n {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        if i % 2 == 1 {
            let head = format!(
                "GET /v1/facets HTTP/1.1\r\nHost: {}\r\nX-Slow: ",
                server.addr
            );
            stream.write_all(head.as_bytes()).await.unwrap();
        }
        streams.push(stream);
    }
    streams
}

/// Hundreds of idle and half-sent connections, no credentials, against a token-protected
/// server capped at 64 connections: a legitimate request is still answered within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_connections_do_not_starve_legitimate_requests() {
    let server = Server::start(shared_index(), |o| {
        o.token = Some(TOKEN.into());
        o.max_connections = 64;
    })
    .await;
    let mut idle = Vec::new();
    for round in 0..3 {
        idle.extend(idle_connections(&server, 200).await);
        // A fresh client: no pooled connection to fall back on.
        let client = reqwest::Client::new();
        let started = std::time::Instant::now();
        let response = client
            .get(server.url("/v1/facets"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        let elapsed = started.elapsed();
        assert_eq!(response.status(), 200, "round {round}");
        assert!(
            elapsed < Duration::from_secs(1),
            "round {round}: {elapsed:?} with {} idle connections",
            idle.len()
        );
    }
    assert_eq!(idle.len(), 600);
    let metrics = server.metrics(Some(TOKEN)).await;
    let evicted = metric(
        &metrics,
        "precedent_http_connections_closed_total{reason=\"evicted\"}",
    );
    assert!(evicted >= 600 - 64, "{evicted} evicted\n{metrics}");
}

/// Reads until the server closes the connection; returns how long that took.
async fn time_to_close(stream: &mut TcpStream) -> Duration {
    let started = std::time::Instant::now();
    let mut sink = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut sink)).await;
    assert!(read.is_ok(), "the server kept the connection open");
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_and_idle_connections_are_closed_after_their_timeouts() {
    let server = Server::start(shared_index(), |o| {
        o.header_read_timeout = Duration::from_millis(400);
        o.idle_timeout = Duration::from_millis(1200);
    })
    .await;
    // Silent since connecting.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    // Half a head, then a byte now and then (slowloris).
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n", server.addr).as_bytes())
        .await
        .unwrap();
    let (silent_closed, slow_closed) = tokio::join!(time_to_close(&mut silent), async {
        let started = std::time::Instant::now();
        for _ in 0..20 {
            if slow.write_all(b"X").await.is_err() {
                break;
            }
            let mut byte = [0u8; 1];
            match tokio::time::timeout(Duration::from_millis(100), slow.read(&mut byte)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                _ => {}
            }
        }
        started.elapsed()
    });
    for (name, took) in [("silent", silent_closed), ("slow header", slow_closed)] {
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_millis(1500),
            "{name} connection closed after {took:?}"
        );
    }
    // Kept alive after a request, then idle.
    let mut kept = TcpStream::connect(server.addr).await.unwrap();
    kept.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr).as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let took = time_to_close(&mut kept).await;
    assert!(
        took >= Duration::from_millis(1000) && took < Duration::from_millis(2500),
        "idle connection closed after {took:?}"
    );
    let metrics = server.metrics(None).await;
    assert!(
        metric(
            &metrics,
            "precedent_http_connections_closed_total{reason=\"header_timeout\"}"
        ) >= 2
    );
    assert!(
        metric(
            &metrics,
            "precedent_http_connections_closed_total{reason=\"idle_timeout\"}"
        ) >= 1
    );
}

/// Sends raw bytes and returns the status line's code and the body.
async fn raw(server: &Server, request: String) -> (u16, String) {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hosts_targets_and_body_shapes_are_strict() {
    let server = Server::start(shared_index(), |_| {}).await;
    let addr = server.addr;
    let check = |(status, body): (u16, String), want: u16, code: &str| {
        assert_eq!(status, want, "{body}");
        let value: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        assert_eq!(value["code"], code, "{body}");
    };
    let ok = raw(
        &server,
        format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(ok.0, 200, "{}", ok.1);
    check(
        raw(&server, format!("GET /v1/facets HTTP/1.1\r\nHost: {addr}\r\nHost: evil.example\r\nConnection: close\r\n\r\n")).await,
        400,
        "bad_request",
    );
    check(
        raw(&server, format!("GET /v1/facets HTTP/1.1\r\nHost: evil.example\r\nHost: {addr}\r\nConnection: close\r\n\r\n")).await,
        400,
        "bad_request",
    );
    check(
        raw(&server, format!("GET http://evil.example/v1/facets HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")).await,
        403,
        "forbidden_host",
    );
    let absolute = raw(
        &server,
        format!("GET http://{addr}/healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(absolute.0, 200, "{}", absolute.1);

    let c = &server.client;
    for body in [
        json!({"query": "disk", "filters": []}),
        json!({"query": "disk", "filters": ["lexical"]}),
        json!({"query": "disk", "filters": "none"}),
    ] {
        let response = c
            .post(server.url("/v1/search"))
            .json(&body)
            .send()
            .await
            .unwrap();
        expect_error(response, 400, "bad_request").await;
    }
    let response = c
        .post(server.url("/v1/similar"))
        .json(&json!({"text": "disk", "filters": []}))
        .send()
        .await
        .unwrap();
    expect_error(response, 400, "bad_request").await;
    let response = c
        .post(server.url("/v1/search"))
        .json(&json!(["disk", "hybrid", 10]))
        .send()
        .await
        .unwrap();
    expect_error(response, 400, "bad_request").await;

    // /mcp answers its transport errors as {code, message} too.
    for (content_type, accept, body) in [
        (
            "application/json",
            "application/json, text/event-stream",
            "{not json",
        ),
        ("text/plain", "application/json, text/event-stream", "hello"),
        (
            "application/json",
            "text/html",
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
        ),
    ] {
        let response = c
            .post(server.url("/mcp"))
            .header("content-type", content_type)
            .header("accept", accept)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        assert!((400..500).contains(&status), "{status} for {body}");
        let text = response.text().await.unwrap();
        let value: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
        let is_api_error = value["code"].is_string() && value["message"].is_string();
        let is_rpc_error = value["error"]["code"].is_i64();
        assert!(is_api_error || is_rpc_error, "{text}");
    }
    let response = c.get(server.url("/mcp")).send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert!(status >= 400, "{status}");
    let value: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
    assert!(
        value["message"].is_string() || value["error"].is_object(),
        "{text}"
    );
}

/// Waits until no writer holds the index lock (an abandoned write may still be finishing).
async fn wait_for_writers(dir: &std::path::Path) {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        loop {
            match precedent_index::IndexWriter::open(
                &dir,
                crate::common::embedder(),
                Default::default(),
            ) {
                Ok(_) => return,
                Err(precedent_index::Error::Locked { .. }) => {
                    assert!(
                        started.elapsed() < Duration::from_secs(120),
                        "writer never finished"
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(err) => panic!("{err}"),
            }
        }
    })
    .await
    .unwrap();
}

/// A write answered 504 is never published later; one answered 2xx is. Timeouts from 1 ms to
/// seconds put the deadline before, during and after the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_answered_504_is_never_applied() {
    let index = small_index();
    let mut markdown = String::from("# Queue backlog after the broker upgrade\n\n");
    for i in 0..40 {
        markdown.push_str(&format!(
            "## Step {i}\n\nWe drained partition {i} of the orders topic and watched consumer group lag number {i} fall.\n\n"
        ));
    }
    let mut statuses = Vec::new();
    for (i, ms) in [1u64, 40, 150, 600, 2_500, 10_000].into_iter().enumerate() {
        let server = Server::start(&index, |o| {
            o.token = Some(TOKEN.into());
            o.allow_writes = true;
            o.request_timeout = Duration::from_millis(ms);
        })
        .await;
        let path = format!("slow/write-{i}.md");
        let response = server
            .client
            .put(server.url("/v1/incidents"))
            .bearer_auth(TOKEN)
            .json(&json!({"path": path, "markdown": markdown.replace("orders", &format!("orders{i}"))}))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        assert!(matches!(status, 201 | 504), "{status}: {body}");
        wait_for_writers(index.dir.path()).await;
        index.engine.reload_if_changed().unwrap();
        let id = precedent_core::IncidentId::from_path(&path);
        let applied = index.engine.incident(&id).unwrap().is_some();
        assert_eq!(applied, status == 201, "timeout {ms} ms: {status} {body}");
        statuses.push(status);
        server.shutdown().await.unwrap();
    }
    assert!(statuses.contains(&504), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn avenues_and_compare_routes_answer_with_citations() {
    let server = Server::start(shared_index(), |_| {}).await;
    let c = &server.client;
    let (status, body) = json(
        c.post(server.url("/v1/avenues"))
            .json(&json!({"query": "storefront 502 Bad Gateway from the ingress", "k": 8}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let avenues = body["avenues"].as_array().unwrap();
    assert!(!avenues.is_empty() && avenues.len() <= 8, "{body}");
    for avenue in avenues {
        assert!(avenue["group"].is_string(), "{avenue}");
        let evidence = avenue["evidence"].as_array().unwrap();
        assert!(!evidence.is_empty(), "{avenue}");
        assert!(evidence[0]["citation"]["line_start"].as_u64().unwrap() >= 1);
    }
    let (status, body) = json(
        c.post(server.url("/v1/avenues"))
            .json(&json!({"query": "502s", "outcome": "did_not_help"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let avenues = body["avenues"].as_array().unwrap();
    assert!(!avenues.is_empty(), "{body}");
    assert!(
        avenues.iter().all(|a| a["group"] == "did_not_help"),
        "{body}"
    );

    let notes = "Storefront returns 502 Bad Gateway from the ingress.\n- suspect a DNS problem\n";
    let (status, body) = json(
        c.post(server.url("/v1/compare"))
            .json(&json!({"notes": notes, "k": 3}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let incidents = body["incidents"].as_array().unwrap();
    assert!(!incidents.is_empty() && incidents.len() <= 3, "{body}");
    assert!(
        body["not_in_notes"]
            .as_array()
            .is_some_and(|a| !a.is_empty()),
        "{body}"
    );

    // Bad requests are 4xx with a JSON error naming the problem.
    for (route, bad) in [
        ("/v1/avenues", json!({"query": ""})),
        ("/v1/avenues", json!({"query": "x", "incidents": 0})),
        ("/v1/avenues", json!({"query": "x", "outcome": "maybe"})),
        ("/v1/compare", json!({"notes": "x".repeat(70_000)})),
        ("/v1/compare", json!({"notes": "disk", "k": 99})),
    ] {
        let (status, body) = json(c.post(server.url(route)).json(&bad).send().await.unwrap()).await;
        assert_eq!(status, 400, "{route} {bad}: {body}");
        assert!(body["message"].is_string(), "{body}");
    }
}

/// `incident_id` is read as the CLI reads it: full id, unique prefix, or path relative to the
/// corpus root; unknown is 404 and ambiguous 400, both with candidates; DELETE stays exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn incident_ids_resolve_like_the_cli() {
    let server = Server::start(shared_index(), |_| {}).await;
    let c = &server.client;
    let get = async |reference: &str| {
        json(
            c.get(server.url(&format!("/v1/incidents/{reference}")))
                .send()
                .await
                .unwrap(),
        )
        .await
    };
    let (status, full) = get("2021-09-30-tls-cert-expiry.md").await;
    assert_eq!(status, 200, "{full}");
    let id = full["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("2021-09-30-tls-cert-expiry-"), "{id}");
    for reference in [
        id.as_str(),
        &id[..id.len() - 3],
        "2021-09-30-tls",
        ".%2F2021-09-30-tls-cert-expiry.md",
    ] {
        let (status, body) = get(reference).await;
        assert_eq!(status, 200, "{reference}: {body}");
        assert_eq!(body["id"], id.as_str(), "{reference}");
    }
    let (status, body) = get("20").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "bad_request");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("several incidents") && message.contains("20120701-leap-second-cpu"),
        "{message}"
    );
    let (status, body) = get("tls-cert-expiry-2021").await;
    assert_eq!(status, 404, "{body}");
    assert!(body["message"].as_str().unwrap().contains(&id), "{body}");

    let (status, similar) = json(
        c.post(server.url("/v1/similar"))
            .json(&json!({"incident_id": "2021-09-30-tls-cert-expiry.md", "k": 5}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{similar}");
    let incidents = similar["incidents"].as_array().unwrap();
    assert!(!incidents.is_empty());
    assert!(incidents.iter().all(|i| i["incident_id"] != id.as_str()));
    expect_error(
        c.post(server.url("/v1/similar"))
            .json(&json!({"incident_id": "20"}))
            .send()
            .await
            .unwrap(),
        400,
        "bad_request",
    )
    .await;
    expect_error(
        c.post(server.url("/v1/similar"))
            .json(&json!({"incident_id": " "}))
            .send()
            .await
            .unwrap(),
        400,
        "bad_request",
    )
    .await;
    drop(server);

    // A delete never guesses: a prefix names nothing to delete, and the incident stays.
    let index = small_index();
    let server = Server::start(&index, |o| {
        o.token = Some(TOKEN.into());
        o.allow_writes = true;
    })
    .await;
    let c = &server.client;
    expect_error(
        c.delete(server.url("/v1/incidents/2021-09-30-tls"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
    let (status, body) = json(
        c.get(server.url("/v1/incidents/2021-09-30-tls"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exact_and_regex_modes_list_every_match_with_counts() {
    let server = Server::start(shared_index(), |_| {}).await;
    let c = &server.client;
    let (status, body) = json(
        c.post(server.url("/v1/search"))
            .json(&json!({"query": "certificate|expired", "mode": "regex", "k": 100}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let hits = body["hits"].as_array().unwrap();
    assert!(!hits.is_empty(), "{body}");
    let counts = &body["counts"];
    assert_eq!(
        counts["steps"].as_u64().unwrap(),
        hits.len() as u64,
        "{counts}"
    );
    assert!(
        counts["matches"].as_u64().unwrap() >= hits.len() as u64,
        "{counts}"
    );
    // Every step is listed, not two per incident, and each really matches.
    let mut per_incident = std::collections::HashMap::new();
    for hit in hits {
        let text = hit["text"].as_str().unwrap().to_lowercase();
        assert!(
            text.contains("certificate") || text.contains("expired"),
            "{hit}"
        );
        *per_incident
            .entry(hit["incident_id"].as_str().unwrap())
            .or_insert(0) += 1;
    }
    assert!(per_incident.values().any(|&n| n > 2), "{per_incident:?}");
    assert_eq!(counts["incidents"], per_incident.len() as u64);

    // Exact is literal: regex syntax in it matches nothing; case can be required.
    let (status, body) = json(
        c.post(server.url("/v1/search"))
            .json(&json!({"query": "certificate|expired", "mode": "exact"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["counts"]["matches"], 0, "{body}");
    assert!(body["hits"].as_array().unwrap().is_empty());
    let mut counted = Vec::new();
    for case_sensitive in [false, true] {
        let request = json!({"query": "tls", "mode": "exact", "case_sensitive": case_sensitive});
        let (status, body) = json(
            c.post(server.url("/v1/search"))
                .json(&request)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        counted.push(body["counts"]["matches"].as_u64().unwrap());
    }
    let (ignoring, matching) = (counted[0], counted[1]);
    assert!(ignoring > 0 && matching < ignoring, "{ignoring} {matching}");

    // A pattern that does not compile is a 400 naming the problem.
    let body = expect_error(
        c.post(server.url("/v1/search"))
            .json(&json!({"query": "(unclosed", "mode": "regex"}))
            .send()
            .await
            .unwrap(),
        400,
        "bad_request",
    )
    .await;
    assert!(
        body["message"].as_str().unwrap().contains("regex"),
        "{body}"
    );
}
