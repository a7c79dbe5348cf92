//! The MCP server driven by rmcp's own client: over streamable HTTP against a bound server,
//! and in-process over a duplex pipe (the stdio code path minus the process).

mod common;

use common::{Server, TOKEN, shared_index};
use precedent_server::{AppState, McpServer, PREAMBLE, ServerOptions};
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult, ClientConfig, ReadResourceRequestParams};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};

type Client = RunningService<RoleClient, ClientConfig>;

async fn http_client(server: &Server, token: Option<&str>) -> Result<Client, String> {
    let mut config = StreamableHttpClientTransportConfig::with_uri(server.url("/mcp"));
    if let Some(token) = token {
        config = config.auth_header(token);
    }
    let transport = StreamableHttpClientTransport::from_config(config);
    ClientConfig::default()
        .serve(transport)
        .await
        .map_err(|e| e.to_string())
}

async fn call(client: &Client, tool: &'static str, args: Value) -> CallToolResult {
    let args = args.as_object().unwrap().clone();
    client
        .call_tool(CallToolRequestParams::new(tool).with_arguments(args))
        .await
        .unwrap()
}

fn text_of(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every envelope is closed, and the preamble comes first.
fn assert_enveloped(text: &str) {
    assert!(text.starts_with(PREAMBLE), "{text}");
    let opened = text.matches("<untrusted-incident-data source=\"").count();
    let closed = text.matches("</untrusted-incident-data>").count();
    assert!(
        opened > 0 && opened == closed,
        "{opened} opened, {closed} closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tools_and_resources_over_streamable_http() {
    let server = Server::start(shared_index(), |o| o.token = Some(TOKEN.into())).await;
    let client = http_client(&server, Some(TOKEN)).await.unwrap();
    let info = client.peer_info().unwrap();
    assert_eq!(info.server_info.as_ref().unwrap().name, "precedent");
    assert!(
        info.instructions
            .as_deref()
            .is_some_and(|i| i.contains("untrusted"))
    );

    let tools = client.list_all_tools().await.unwrap();
    let mut names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "find_similar_incidents",
            "get_incident",
            "list_facets",
            "search_incidents"
        ]
    );
    for tool in &tools {
        let annotations = tool.annotations.as_ref().unwrap();
        assert_eq!(annotations.read_only_hint, Some(true), "{}", tool.name);
        assert_eq!(annotations.destructive_hint, Some(false), "{}", tool.name);
        assert!(
            tool.description.as_ref().is_some_and(|d| d.len() > 80),
            "{}",
            tool.name
        );
        let schema = Value::Object((*tool.input_schema).clone());
        assert_eq!(schema["type"], "object", "{}", tool.name);
        assert_eq!(
            schema["additionalProperties"], false,
            "{}: {schema}",
            tool.name
        );
        // Nested objects are strict too.
        if let Some(filters) = schema["$defs"].get("ToolFilters") {
            assert_eq!(filters["additionalProperties"], false);
        }
    }
    let search = tools.iter().find(|t| t.name == "search_incidents").unwrap();
    let schema = Value::Object((*search.input_schema).clone());
    assert_eq!(schema["properties"]["k"]["maximum"], 50);
    assert_eq!(schema["properties"]["k"]["minimum"], 1);
    assert_eq!(schema["properties"]["query"]["maxLength"], 4096);
    assert_eq!(schema["required"], json!(["query"]));

    // search_incidents
    let result = call(
        &client,
        "search_incidents",
        json!({"query": "certificate expired", "k": 3}),
    )
    .await;
    assert_eq!(result.is_error, Some(false));
    let text = text_of(&result);
    assert_enveloped(&text);
    assert!(text.contains("kind="), "{text}");
    let structured = result.structured_content.unwrap();
    let hits = structured["hits"].as_array().unwrap();
    assert!(!hits.is_empty() && hits.len() <= 3);
    assert_eq!(structured["truncated"], false);
    let first = &hits[0];
    let citation = format!(
        "source=\"{}:{}-{}\"",
        first["citation"]["path"].as_str().unwrap(),
        first["citation"]["line_start"],
        first["citation"]["line_end"]
    );
    assert!(text.contains(&citation), "{citation} not in {text}");
    let incident_id = first["incident_id"].as_str().unwrap().to_owned();

    // find_similar_incidents, by text and by id
    let result = call(
        &client,
        "find_similar_incidents",
        json!({"text": "disk filled up with debug logs", "k": 2}),
    )
    .await;
    assert_eq!(result.is_error, Some(false));
    assert_enveloped(&text_of(&result));
    let incidents = result.structured_content.unwrap()["incidents"]
        .as_array()
        .unwrap()
        .clone();
    assert!(!incidents.is_empty() && incidents.len() <= 2);
    let result = call(
        &client,
        "find_similar_incidents",
        json!({"incident_id": incident_id}),
    )
    .await;
    assert_eq!(result.is_error, Some(false));

    // get_incident
    let result = call(&client, "get_incident", json!({"incident_id": incident_id})).await;
    assert_eq!(result.is_error, Some(false));
    assert_enveloped(&text_of(&result));
    assert_eq!(
        result.structured_content.unwrap()["incident"]["id"],
        incident_id.as_str()
    );

    // list_facets
    let result = call(&client, "list_facets", json!({})).await;
    assert_eq!(result.is_error, Some(false));
    assert!(
        result.structured_content.unwrap()["incidents"]
            .as_u64()
            .unwrap()
            >= 20
    );

    // Errors the model can act on come back as tool errors with a stable code.
    let result = call(&client, "search_incidents", json!({"query": "x", "k": 51})).await;
    assert_eq!(result.is_error, Some(true));
    assert_eq!(result.structured_content.unwrap()["code"], "bad_request");
    let result = call(
        &client,
        "get_incident",
        json!({"incident_id": "no-such-incident-00000000"}),
    )
    .await;
    assert_eq!(result.is_error, Some(true));
    assert_eq!(result.structured_content.unwrap()["code"], "not_found");
    let result = call(&client, "find_similar_incidents", json!({})).await;
    assert_eq!(result.is_error, Some(true));
    // Unknown arguments are refused by the strict schema.
    let args = json!({"query": "x", "limit": 3})
        .as_object()
        .unwrap()
        .clone();
    let refused = client
        .call_tool(CallToolRequestParams::new("search_incidents").with_arguments(args))
        .await;
    assert!(refused.is_err() || refused.unwrap().is_error == Some(true));

    // Resources
    let resources = client.list_all_resources().await.unwrap();
    assert!(resources.len() >= 20, "{}", resources.len());
    let uri = format!("incident://{incident_id}");
    assert!(resources.iter().any(|r| r.uri == uri));
    let templates = client.list_all_resource_templates().await.unwrap();
    assert_eq!(templates[0].uri_template, "incident://{id}");
    let read = client
        .read_resource(ReadResourceRequestParams::new(uri.clone()))
        .await
        .unwrap();
    let contents = serde_json::to_value(&read.contents).unwrap();
    assert_eq!(contents[0]["uri"], uri.as_str());
    assert_enveloped(contents[0]["text"].as_str().unwrap());
    assert!(
        client
            .read_resource(ReadResourceRequestParams::new(
                "incident://no-such-incident-00000000"
            ))
            .await
            .is_err()
    );
    assert!(
        client
            .read_resource(ReadResourceRequestParams::new("file:///etc/passwd"))
            .await
            .is_err()
    );

    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mcp_over_http_needs_the_token() {
    let server = Server::start(shared_index(), |o| o.token = Some(TOKEN.into())).await;
    assert!(http_client(&server, None).await.is_err());
    assert!(
        http_client(&server, Some("wrong-token-0123456789abcdef"))
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn results_stay_within_the_byte_budget_and_say_so() {
    let budget = 2_000;
    let server = Server::start(shared_index(), |o| o.mcp_result_bytes = budget).await;
    let client = http_client(&server, None).await.unwrap();
    let result = call(
        &client,
        "search_incidents",
        json!({"query": "database outage failover", "k": 50}),
    )
    .await;
    let text = text_of(&result);
    assert!(text.len() <= budget, "{} bytes", text.len());
    assert_enveloped(&text);
    assert!(text.contains("[truncated"), "{text}");
    let structured = result.structured_content.unwrap();
    assert!(structured.to_string().len() <= budget);
    assert_eq!(structured["truncated"], true);
    assert!(
        structured["hits"].as_array().unwrap().len()
            < structured["total"].as_u64().unwrap() as usize
    );

    let id = structured["hits"][0]["incident_id"]
        .as_str()
        .map(str::to_owned);
    if let Some(id) = id {
        let result = call(&client, "get_incident", json!({"incident_id": id})).await;
        let text = text_of(&result);
        assert!(text.len() <= budget, "{} bytes", text.len());
        assert!(result.structured_content.unwrap().to_string().len() <= budget);
    }
    let result = call(
        &client,
        "find_similar_incidents",
        json!({"text": "users saw 503 errors from the load balancer", "k": 50}),
    )
    .await;
    assert!(text_of(&result).len() <= budget);
    assert!(result.structured_content.unwrap().to_string().len() <= budget);
    client.cancel().await.unwrap();
}

/// The handler served over an in-process pipe, as `precedent mcp` serves it over stdio.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tools_over_an_in_process_pipe() {
    let index = shared_index();
    let options = ServerOptions::new("127.0.0.1:0".parse().unwrap(), index.dir.path());
    let state = AppState::new(options, index.engine.clone(), common::embedder()).unwrap();
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(async move {
        let running = McpServer::new(state).serve(server_io).await.unwrap();
        running.waiting().await.unwrap();
    });
    let client = ClientConfig::default().serve(client_io).await.unwrap();
    let tools = client.list_all_tools().await.unwrap();
    assert_eq!(tools.len(), 4);
    let result = call(&client, "search_incidents", json!({"query": "OOMKilled", "mode": "lexical", "k": 2, "filters": {"kinds": ["detection", "investigation", "root_cause", "action", "mitigation", "timeline_event", "summary", "impact", "lesson", "follow_up", "other"]}})).await;
    assert_eq!(result.is_error, Some(false), "{}", text_of(&result));
    assert_enveloped(&text_of(&result));
    let resources = client.list_all_resources().await.unwrap();
    assert!(!resources.is_empty());
    client.cancel().await.unwrap();
    server.await.unwrap();
}
