//! The store conformance suite (after quickwit's `storage_test_suite`): what every store must
//! answer alike through a server, run by `tests/cli.rs` on the embedded index and by
//! `tests/qdrant.rs` on a stateless Qdrant server, both over `corpus-samples/` with writes
//! enabled. Search, filters, `similar`, avenues, incidents, facets, health and edits (`PUT`,
//! replace, `DELETE`, ownership) are checked; the kill tests stay with each store.

use crate::util::Served;

/// A server of one store under test, and the token its writes need.
pub struct Subject<'a> {
    pub served: &'a Served,
    pub token: &'a str,
    /// "embedded" or "qdrant": what `/healthz` must name.
    pub store: &'a str,
}

impl Subject<'_> {
    fn ask(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let body = body.map(|b| b.to_string());
        let (status, text) =
            self.served
                .request_as(Some(self.token), method, path, body.as_deref());
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: {method} {path}: not JSON ({e}): {text}", self.store));
        (status, json)
    }

    fn ok(&self, method: &str, path: &str, body: Option<&serde_json::Value>) -> serde_json::Value {
        let (status, json) = self.ask(method, path, body);
        assert!(
            status == 200 || status == 201,
            "{}: {method} {path}: {status} {json}",
            self.store
        );
        json
    }

    fn search(&self, body: serde_json::Value) -> Vec<serde_json::Value> {
        let json = self.ok("POST", "/v1/search", Some(&body));
        json["hits"].as_array().cloned().unwrap_or_default()
    }
}

/// Runs every check on `s`; panics with the store's name on the first that fails.
pub fn run(s: &Subject) {
    let store = s.store;
    let health = s.ok("GET", "/healthz", None);
    assert_eq!(health["store"], store, "{health}");
    assert_eq!(health["status"], "ok", "{health}");
    let facets = s.ok("GET", "/v1/facets", None);
    let incidents = facets["incidents"].as_u64().unwrap();
    assert!(incidents >= 20, "{store}: {facets}");
    assert_eq!(health["incidents"], incidents, "{store}: {health}");
    let kinds = facets["kinds"].as_array().unwrap();
    assert!(!kinds.is_empty(), "{store}: {facets}");
    let step_sum: u64 = kinds.iter().map(|k| k["count"].as_u64().unwrap()).sum();
    assert_eq!(
        Some(step_sum),
        facets["steps"].as_u64(),
        "{store}: kinds add up to the steps"
    );
    assert!(
        !facets["trigger_classes"].as_array().unwrap().is_empty(),
        "{store}: {facets}"
    );

    // Search in each ranked mode finds the certificate incidents.
    for mode in ["hybrid", "lexical", "vector"] {
        let hits = s.search(serde_json::json!({
            "query": "TLS certificate expired", "mode": mode, "k": 5
        }));
        assert!(!hits.is_empty(), "{store} {mode}");
        assert!(
            hits.iter()
                .any(|h| h["citation"]["path"].as_str().unwrap().contains("cert")),
            "{store} {mode}: {hits:?}"
        );
    }
    // Filters: by kind, by incident; an unknown incident is a 404.
    let hits = s.search(serde_json::json!({
        "query": "restart", "k": 10, "filters": {"kinds": ["mitigation"]}
    }));
    assert!(!hits.is_empty(), "{store}");
    assert!(
        hits.iter().all(|h| h["kind"] == "mitigation"),
        "{store}: {hits:?}"
    );
    let one = hits[0]["incident_id"].as_str().unwrap().to_owned();
    let hits = s.search(serde_json::json!({
        "query": "restart", "k": 10, "filters": {"incident_ids": [one]}
    }));
    assert!(!hits.is_empty(), "{store}");
    assert!(
        hits.iter().all(|h| h["incident_id"] == one.as_str()),
        "{store}"
    );
    let (status, err) = s.ask(
        "POST",
        "/v1/search",
        Some(&serde_json::json!({
            "query": "restart", "filters": {"incident_ids": ["no-such-incident-0000"]}
        })),
    );
    assert_eq!(status, 404, "{store}: {err}");

    // Incidents: by id and by path; unknown is a 404.
    let record = s.ok("GET", &format!("/v1/incidents/{one}"), None);
    assert_eq!(record["id"], one.as_str(), "{store}");
    assert!(!record["steps"].as_array().unwrap().is_empty(), "{store}");
    let path = record["path"].as_str().unwrap().to_owned();
    let by_path = s.ok(
        "GET",
        &format!("/v1/incidents/{}", path.replace('/', "%2F")),
        None,
    );
    assert_eq!(by_path["id"], one.as_str(), "{store}");
    let (status, _) = s.ask("GET", "/v1/incidents/zzzz-not-an-incident", None);
    assert_eq!(status, 404, "{store}");

    // Similar: never the source itself; a text source finds something.
    let similar = s.ok(
        "POST",
        "/v1/similar",
        Some(&serde_json::json!({"incident_id": one, "k": 5})),
    );
    let found = similar["incidents"].as_array().unwrap();
    assert!(!found.is_empty(), "{store}");
    assert!(
        found.iter().all(|i| i["incident_id"] != one.as_str()),
        "{store}"
    );
    let similar = s.ok(
        "POST",
        "/v1/similar",
        Some(&serde_json::json!({"text": "pods OOMKilled after a memory limit change", "k": 3})),
    );
    assert!(
        !similar["incidents"].as_array().unwrap().is_empty(),
        "{store}"
    );

    // Avenues read the resembling incidents' steps and outcomes.
    let avenues = s.ok(
        "POST",
        "/v1/avenues",
        Some(&serde_json::json!({"query": "certificate expired, clients fail TLS handshakes"})),
    );
    assert!(
        !avenues["avenues"].as_array().unwrap().is_empty(),
        "{store}: {avenues}"
    );

    // Edits: create, find, replace, delete; the corpus's incidents stay the corpus's.
    let doc = |what: &str| {
        format!(
            "# Florbit relay jammed\n\n## Summary\n\nThe florbit relay stopped after a {what} rollout.\n\n## Resolution\n\nRestarting the florbit relay restored service.\n"
        )
    };
    let put =
        |what: &str| serde_json::json!({"path": "api/florbit-relay.md", "markdown": doc(what)});
    let (status, created) = s.ask("PUT", "/v1/incidents", Some(&put("wombat")));
    assert_eq!(status, 201, "{store}: {created}");
    let id = created["incident_id"].as_str().unwrap().to_owned();
    let find = |word: &str| {
        s.search(serde_json::json!({"query": format!("florbit {word}"), "mode": "lexical"}))
            .iter()
            .any(|h| {
                h["incident_id"] == id.as_str()
                    && h["snippet"].as_str().unwrap_or_default().contains(word)
            })
    };
    assert!(find("wombat"), "{store}: the write is found");
    let (status, replaced) = s.ask("PUT", "/v1/incidents", Some(&put("numbat")));
    assert_eq!(status, 200, "{store}: {replaced}");
    assert_eq!(replaced["replaced"], true, "{store}");
    assert!(find("numbat"), "{store}: the new text is found");
    assert!(!find("wombat"), "{store}: the old text is gone");
    let after = s.ok("GET", "/v1/facets", None);
    assert_eq!(after["incidents"].as_u64(), Some(incidents + 1), "{store}");
    let (status, err) = s.ask("DELETE", &format!("/v1/incidents/{one}"), None);
    assert_eq!(
        status, 409,
        "{store}: a corpus incident is not the API's: {err}"
    );
    assert_eq!(err["code"], "owned_by_corpus", "{store}");
    let bad = serde_json::json!({"path": "../outside.md", "markdown": doc("x")});
    let (status, _) = s.ask("PUT", "/v1/incidents", Some(&bad));
    assert_eq!(status, 400, "{store}");
    let (status, deleted) = s.ask("DELETE", &format!("/v1/incidents/{id}"), None);
    assert_eq!(status, 200, "{store}: {deleted}");
    assert!(!find("numbat"), "{store}: the deleted write is gone");
    let (status, _) = s.ask("GET", &format!("/v1/incidents/{id}"), None);
    assert_eq!(status, 404, "{store}");
    let (status, _) = s.ask("DELETE", &format!("/v1/incidents/{id}"), None);
    assert_eq!(status, 404, "{store}: deleting twice");
    let end = s.ok("GET", "/v1/facets", None);
    assert_eq!(end["incidents"].as_u64(), Some(incidents), "{store}");
}
