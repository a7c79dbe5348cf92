//! The OpenAPI 3.1 document of the HTTP API, generated from the same types the handlers use
//! (schemars), served at `GET /openapi.json` and committed as `schemas/openapi.json`.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value, json};

use crate::api::{
    AvenuesBody, CompareBody, DeleteResponse, HealthResponse, SearchBody, SimilarBody, UpsertBody,
    UpsertResponse,
};
use crate::error::ErrorBody;

/// Builds the document.
pub fn document() -> Value {
    let mut generator: SchemaGenerator = SchemaSettings::draft2020_12()
        .with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        })
        .into_generator();
    fn of<T: JsonSchema>(g: &mut SchemaGenerator) -> Value {
        g.subschema_for::<T>().to_value()
    }
    let search_body = of::<SearchBody>(&mut generator);
    let search_response = of::<precedent_index::SearchResponse>(&mut generator);
    let similar_body = of::<SimilarBody>(&mut generator);
    let similar_response = of::<precedent_index::SimilarResponse>(&mut generator);
    let avenues_body = of::<AvenuesBody>(&mut generator);
    let avenues_response = of::<precedent_index::AvenuesResponse>(&mut generator);
    let compare_body = of::<CompareBody>(&mut generator);
    let compare_response = of::<precedent_index::CompareResponse>(&mut generator);
    let incident = of::<precedent_core::Incident>(&mut generator);
    let facets = of::<precedent_index::Facets>(&mut generator);
    let health = of::<HealthResponse>(&mut generator);
    let upsert_body = of::<UpsertBody>(&mut generator);
    let upsert_response = of::<UpsertResponse>(&mut generator);
    let delete_response = of::<DeleteResponse>(&mut generator);
    let error = of::<ErrorBody>(&mut generator);
    let schemas = generator.take_definitions(true);

    let json_content = |schema: &Value| json!({ "application/json": { "schema": schema } });
    let error_response =
        |description: &str| json!({ "description": description, "content": json_content(&error) });
    let common_errors = |extra: &[(&str, &str)]| {
        let mut responses = Map::new();
        for (status, description) in [
            ("401", "Missing or wrong bearer token (`unauthorized`)."),
            (
                "403",
                "Host or Origin not allowed (`forbidden_host`, `forbidden_origin`).",
            ),
            (
                "503",
                "Too many requests in flight (`overloaded`, with `Retry-After`).",
            ),
            ("504", "The request took too long (`timeout`)."),
            ("500", "Internal failure (`internal`)."),
        ]
        .iter()
        .chain(extra)
        {
            responses.insert((*status).to_owned(), error_response(description));
        }
        responses
    };
    let body_errors: &[(&str, &str)] = &[
        (
            "400",
            "Malformed or out-of-bounds request (`bad_request`, `invalid_json`, `unknown_field`).",
        ),
        ("413", "Body larger than the limit (`payload_too_large`)."),
        ("415", "Body is not JSON (`unsupported_media_type`)."),
    ];
    let ok = |description: &str, schema: &Value| json!({ "description": description, "content": json_content(schema) });
    let operation = |id: &str,
                     summary: &str,
                     body: Option<&Value>,
                     success: (&str, Value),
                     errors: Map<String, Value>| {
        let mut responses = errors;
        responses.insert(success.0.to_owned(), success.1);
        let mut op = json!({
            "operationId": id,
            "summary": summary,
            "responses": responses,
        });
        if let Some(body) = body {
            op["requestBody"] = json!({ "required": true, "content": json_content(body) });
        }
        op
    };
    let ref_param = json!([{
        "name": "id", "in": "path", "required": true,
        "description": "Incident id, a unique prefix of it, or the write-up's path relative to the corpus root (percent-encode `/` as `%2F`); at most 1024 bytes.",
        "schema": { "type": "string", "minLength": 1, "maxLength": 1024 }
    }]);
    let id_param = json!([{
        "name": "id", "in": "path", "required": true,
        "description": "Exact incident id (lowercase letters, digits and '-', at most 80 bytes): a delete never resolves a prefix or a path.",
        "schema": { "type": "string", "pattern": "^[a-z0-9-]{1,80}$" }
    }]);

    let mut get_incident = operation(
        "getIncident",
        "One incident with its steps and timeline.",
        None,
        ("200", ok("The incident.", &incident)),
        common_errors(&[
            (
                "400",
                "Empty or ambiguous reference; the message lists candidates (`bad_request`).",
            ),
            (
                "404",
                "No incident matches; the message lists the closest ids (`not_found`).",
            ),
        ]),
    );
    get_incident["parameters"] = ref_param;
    let mut delete_incident = operation(
        "deleteIncident",
        "Remove an incident written through the API (needs `allow_writes` and the token). An incident of a corpus file is `409 owned_by_corpus`: remove the file and run `precedent index`.",
        None,
        ("200", ok("Removed.", &delete_response)),
        common_errors(&[
            ("400", "Invalid id (`bad_request`)."),
            ("404", "Unknown id (`not_found`)."),
            (
                "409",
                "Another writer holds the index (`index_locked`), or a corpus file owns the incident (`owned_by_corpus`).",
            ),
        ]),
    );
    delete_incident["parameters"] = id_param;
    let mut upsert_errors = common_errors(body_errors);
    upsert_errors.insert(
        "409".into(),
        error_response(
            "Another writer holds the index (`index_locked`), or a corpus file has this path (`owned_by_corpus`).",
        ),
    );
    let mut upsert = operation(
        "upsertIncident",
        "Index (or replace) one write-up sent as Markdown (needs `allow_writes` and the token; `403 writes_disabled` otherwise). It is owned by the API: `precedent index DIR` keeps it, and a rebuild carries it over. A path that a corpus file has is `409 owned_by_corpus`.",
        Some(&upsert_body),
        ("201", ok("Indexed as a new incident.", &upsert_response)),
        upsert_errors,
    );
    upsert["responses"]["200"] = ok("Replaced an indexed version.", &upsert_response);

    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "precedent",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Search past incident write-ups at the level of diagnostic steps. Every error is `{code, message}` with a stable `code`. When the server has a bearer token, every route except `/healthz` needs `Authorization: Bearer TOKEN`.",
        },
        "paths": {
            "/v1/search": { "post": operation(
                "search",
                "Ranked diagnostic steps for a query.",
                Some(&search_body),
                ("200", ok("Hits, best first.", &search_response)),
                common_errors(body_errors),
            ) },
            "/v1/similar": { "post": operation(
                "similar",
                "Past incidents similar to free text or to an indexed incident.",
                Some(&similar_body),
                ("200", ok("Incidents, best first.", &similar_response)),
                common_errors(&[body_errors, &[("404", "Unknown incident id (`not_found`).")]].concat()),
            ) },
            "/v1/avenues": { "post": operation(
                "avenues",
                "What people checked, tried and fixed for a symptom in the incidents that resemble it, merged across incidents and grouped by outcome.",
                Some(&avenues_body),
                ("200", ok("Avenues, grouped by outcome.", &avenues_response)),
                common_errors(body_errors),
            ) },
            "/v1/compare": { "post": operation(
                "compare",
                "An investigation's notes against similar past incidents: what they did that the notes lack, which of the notes' hypotheses were ruled out or confirmed before.",
                Some(&compare_body),
                ("200", ok("The comparison.", &compare_response)),
                common_errors(body_errors),
            ) },
            "/v1/incidents": { "put": upsert },
            "/v1/incidents/{id}": { "get": get_incident, "delete": delete_incident },
            "/v1/facets": { "get": operation(
                "facets",
                "Values present in the index, with counts, for building filters.",
                None,
                ("200", ok("Facets.", &facets)),
                common_errors(&[]),
            ) },
            "/healthz": { "get": operation(
                "health",
                "Liveness and the generation served (no token needed).",
                None,
                ("200", ok("Healthy.", &health)),
                common_errors(&[]),
            ) },
            "/metrics": { "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics (text format 0.0.4).",
                "responses": { "200": {
                    "description": "Metrics.",
                    "content": { "text/plain": { "schema": { "type": "string" } } }
                } }
            } },
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
        },
        "security": [ { "bearer": [] }, {} ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `schemas/openapi.json` is what the code generates; `PRECEDENT_UPDATE_SCHEMAS=1` rewrites it.
    #[test]
    fn committed_openapi_document_has_not_drifted() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/openapi.json");
        let generated = serde_json::to_string_pretty(&document()).unwrap() + "\n";
        if std::env::var_os("PRECEDENT_UPDATE_SCHEMAS").is_some() {
            std::fs::write(&path, &generated).unwrap();
            return;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "{} is out of date: rerun with PRECEDENT_UPDATE_SCHEMAS=1",
            path.display()
        );
    }

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let text = doc.to_string();
        for piece in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = piece.split('"').next().unwrap();
            assert!(schemas.contains_key(name), "dangling $ref {name}");
        }
        assert!(schemas.contains_key("SearchBody"));
        assert_eq!(doc["openapi"], "3.1.0");
    }
}
