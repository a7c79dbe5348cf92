//! `schemas/` holds the JSON Schemas of the types users and tools see. They are generated from
//! the types; this test regenerates them and fails when the committed files drifted.
//! Run with `PRECEDENT_UPDATE_SCHEMAS=1` to rewrite them.

use std::path::Path;

fn check(name: &str, schema: schemars::Schema) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../schemas")
        .join(name);
    let generated = serde_json::to_string_pretty(&schema).unwrap() + "\n";
    if std::env::var_os("PRECEDENT_UPDATE_SCHEMAS").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "schemas/{name} is out of date; run `PRECEDENT_UPDATE_SCHEMAS=1 cargo test -p precedent-parse --test schemas` and commit it"
    );
}

#[test]
fn schemas_match_the_types() {
    check(
        "incident.schema.json",
        schemars::schema_for!(precedent_core::Incident),
    );
    check(
        "step.schema.json",
        schemars::schema_for!(precedent_core::Step),
    );
    check(
        "parsed.schema.json",
        schemars::schema_for!(precedent_core::Parsed),
    );
    check(
        "front-matter.schema.json",
        schemars::schema_for!(precedent_parse::FrontMatter),
    );
}
