//! Bodies of the HTTP API that the index crate does not define. Requests reject unknown fields;
//! bounds the server enforces (`k`, query length) are configurable and documented with their
//! defaults.

use precedent_index::{Filters, Mode};
use schemars::JsonSchema;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize};

/// `POST /v1/search`: ranked diagnostic steps for a query.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchBody {
    /// Free text, at most 4096 bytes by default. Words are matched stemmed and as exact
    /// identifiers; text in double quotes is also matched as a phrase. In `exact` mode the
    /// string to find, in `regex` mode the pattern.
    #[schemars(length(min = 1, max = 4096))]
    pub query: String,
    /// Retrievers to use (default `hybrid`); `exact` and `regex` return every matching step
    /// in write-up order (up to `k`) with `counts` over the whole index, like grep.
    #[serde(default)]
    pub mode: Mode,
    /// `exact` and `regex` modes: match case as written (default false: ignore case).
    #[serde(default)]
    pub case_sensitive: bool,
    /// Number of hits, 1..=100 by default (out of range is an error, not clamped). Default 10.
    #[serde(default)]
    #[schemars(range(min = 1, max = 100))]
    pub k: Option<usize>,
    /// Restrictions on the steps returned.
    #[serde(default, deserialize_with = "object")]
    pub filters: Filters,
    /// Most steps of one incident among the hits (default 2; 0 = no limit).
    #[serde(default)]
    #[schemars(range(min = 0, max = 100))]
    pub per_incident: Option<usize>,
    /// Return incidents with their best steps (`groups`); `k` then counts incidents.
    #[serde(default)]
    pub group: bool,
}

/// `POST /v1/similar`: past incidents similar to free text or to an indexed incident. Exactly
/// one of `text` and `incident_id` is given.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SimilarBody {
    /// What is happening now (symptoms, alerts, error messages), notes, or a draft write-up in
    /// Markdown, at most 64 KiB. Text of several paragraphs is read as a draft: each
    /// situation step is compared on its own, as `precedent similar --file` does.
    #[serde(default)]
    #[schemars(length(min = 1, max = 65536))]
    pub text: Option<String>,
    /// An indexed incident to compare with (it is left out of the answer): its id, a unique
    /// prefix of the id, or its write-up's path relative to the corpus root.
    #[serde(default)]
    #[schemars(length(min = 1, max = 1024))]
    pub incident_id: Option<String>,
    /// Number of incidents, 1..=100 by default. Default 10.
    #[serde(default)]
    #[schemars(range(min = 1, max = 100))]
    pub k: Option<usize>,
    /// Restrictions on the steps that may match.
    #[serde(default, deserialize_with = "object")]
    pub filters: Filters,
}

/// `POST /v1/avenues`: what people checked, tried and fixed for a symptom in the incidents
/// that resemble it, grouped by outcome.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AvenuesBody {
    /// The symptom or situation, at most 4096 bytes by default.
    #[schemars(length(min = 1, max = 4096))]
    pub query: String,
    /// Number of avenues, 1..=100 by default. Default 10.
    #[serde(default)]
    #[schemars(range(min = 1, max = 100))]
    pub k: Option<usize>,
    /// Resembling incidents to draw avenues from, 1..=50. Default 10.
    #[serde(default)]
    #[schemars(range(min = 1, max = 50))]
    pub incidents: Option<usize>,
    /// Restrictions on the incidents.
    #[serde(default, deserialize_with = "object")]
    pub filters: Filters,
    /// Keep only this group.
    #[serde(default)]
    pub outcome: Option<precedent_index::AvenueGroup>,
}

/// `POST /v1/compare`: an investigation's notes against the past incidents they resemble.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompareBody {
    /// A draft write-up or plain notes, at most 64 KiB.
    #[schemars(length(min = 1, max = 65536))]
    pub notes: String,
    /// Past incidents to compare with, 1..=50. Default 5.
    #[serde(default)]
    #[schemars(range(min = 1, max = 50))]
    pub k: Option<usize>,
    /// Restrictions on the past incidents.
    #[serde(default, deserialize_with = "object")]
    pub filters: Filters,
}

/// A struct-typed field taken only from a JSON object: serde's derive would also accept an
/// array of the field values in declaration order (so `"filters": []` would mean "no filters").
pub(crate) fn object<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    let value = serde_json::Value::deserialize(deserializer)?;
    if !value.is_object() {
        return Err(D::Error::custom(format!(
            "invalid type: {}, expected an object",
            kind_of(&value)
        )));
    }
    serde_json::from_value(value).map_err(D::Error::custom)
}

/// [`object`] for an optional field: `null` is `None`.
pub(crate) fn object_or_null<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    let value = serde_json::Value::deserialize(deserializer)?;
    if value.is_null() {
        return Ok(None);
    }
    if !value.is_object() {
        return Err(D::Error::custom(format!(
            "invalid type: {}, expected an object",
            kind_of(&value)
        )));
    }
    serde_json::from_value(value)
        .map(Some)
        .map_err(D::Error::custom)
}

pub(crate) fn kind_of(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// `PUT /v1/incidents`: index (or replace) one write-up.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpsertBody {
    /// Name of the write-up relative to the corpus root, e.g. `2024/db-failover.md`. It only
    /// names the write-up (its id derives from it); nothing is read from or written to this
    /// path. `/`-separated, no `..`, not absolute, ends in `.md`, `.markdown` or `.txt`.
    #[schemars(length(min = 1, max = 512))]
    pub path: String,
    /// The write-up, Markdown (or plain text for `.txt`).
    pub markdown: String,
}

/// Answer to `PUT /v1/incidents`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UpsertResponse {
    /// Id of the incident.
    pub incident_id: String,
    /// Steps indexed for it.
    pub steps: usize,
    /// True when it replaced an indexed version (status 200), false when new (status 201).
    pub replaced: bool,
    /// Generation of the index published by this write.
    pub generation: u64,
}

/// Answer to `DELETE /v1/incidents/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeleteResponse {
    /// Id of the removed incident.
    pub incident_id: String,
    /// Always true (an unknown id is a 404).
    pub deleted: bool,
}

/// Answer to `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HealthResponse {
    /// `ok`, or `degraded` (HTTP 503) when the store does not answer.
    pub status: String,
    /// Where every read goes: `embedded` (the index) or `qdrant`.
    pub store: String,
    /// Whether that store answers: `ok` or `unavailable`.
    pub store_status: String,
    /// True when the store answers with a loaded state.
    pub index_loaded: bool,
    /// Generation being served (the embedded index's publish counter; 0 for Qdrant, which
    /// has none).
    pub generation: u64,
    /// Incidents in the store (0 while it does not answer).
    pub incidents: u64,
    /// Steps in the store (0 while it does not answer).
    pub steps: u64,
}

/// Checks a write-up name sent with `PUT /v1/incidents` and returns it normalised.
pub(crate) fn validate_write_up_path(path: &str) -> Result<String, String> {
    if path.is_empty() || path.len() > 512 {
        return Err("path must be 1 to 512 bytes".into());
    }
    if path.contains('\\') || path.contains('\0') || path.chars().any(char::is_control) {
        return Err("path must use '/' separators and no control characters".into());
    }
    if path.starts_with('/') || path.starts_with('~') || path.as_bytes().get(1) == Some(&b':') {
        return Err("path must be relative".into());
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => continue,
            ".." => return Err("path must not contain '..'".into()),
            p if p.starts_with('.') => return Err("path components must not start with '.'".into()),
            p => parts.push(p),
        }
    }
    let Some(last) = parts.last() else {
        return Err("path names no file".into());
    };
    let lower = last.to_ascii_lowercase();
    if ![".md", ".markdown", ".txt"]
        .iter()
        .any(|ext| lower.ends_with(ext))
    {
        return Err("path must end in .md, .markdown or .txt".into());
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_up_paths_are_names_not_file_system_paths() {
        let check = |path: &str, expected: Option<&str>| {
            assert_eq!(
                validate_write_up_path(path).ok().as_deref(),
                expected,
                "{path}"
            );
        };
        check("2024/db-failover.md", Some("2024/db-failover.md"));
        check("./a//b.txt", Some("a/b.txt"));
        check("notes.markdown", Some("notes.markdown"));
        check("../etc/passwd.md", None);
        check("a/../../b.md", None);
        check("/etc/x.md", None);
        check("C:/x.md", None);
        check("c:x.md", None);
        check("a\\b.md", None);
        check("~/x.md", None);
        check(".hidden/x.md", None);
        check("x.exe", None);
        check("", None);
        check("a/\u{0}.md", None);
        check(&"a".repeat(600), None);
    }
}
