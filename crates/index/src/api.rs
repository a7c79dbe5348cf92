//! Request and response types of search and `similar`: the shapes the CLI (`--json`), the HTTP
//! API and MCP expose, so they derive `Serialize`, `Deserialize` and `JsonSchema`, and requests
//! reject unknown fields.

use chrono::NaiveDate;
use precedent_core::{
    Card, DateRange, Embedder, Incident, IncidentId, Outcome, RemediationClass, StepId, StepKind,
    TriggerClass,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fusion::FusionOptions;

/// Largest `k` a request may ask for.
pub const MAX_K: usize = 1000;
/// Queries are cut to this many bytes before analysis (the rest is ignored, not an error).
pub const MAX_QUERY_BYTES: usize = 16 * 1024;
/// Longest free text (a draft write-up, notes) `similar` reads; the HTTP API and MCP accept up
/// to this much, the library ignores the rest.
pub const MAX_DRAFT_BYTES: usize = 64 * 1024;

fn default_k() -> usize {
    10
}

fn default_per_incident() -> usize {
    2
}

/// How close the best results of a search or `similar` are to what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MatchQuality {
    /// A close precedent: the best results match the query closely in meaning or words.
    Strong,
    /// Related results, but none matches closely.
    Weak,
    /// No close precedent: the results share little with the query.
    None,
}

impl MatchQuality {
    /// `strong`, `weak` or `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchQuality::Strong => "strong",
            MatchQuality::Weak => "weak",
            MatchQuality::None => "none",
        }
    }
}

/// Which retrievers answer a search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// BM25 over the full-text fields only.
    Lexical,
    /// Embedding similarity only.
    Vector,
    /// Both, fused by reciprocal-rank fusion.
    #[default]
    Hybrid,
    /// Every step whose text contains the query as written (case-insensitive unless
    /// `case_sensitive`), in write-up order, with counts, as `rg -F` would find them. Needs no
    /// model.
    Exact,
    /// Every step whose text matches the query as a regular expression (Rust `regex` syntax,
    /// case-insensitive unless `case_sensitive`), in write-up order, with counts, as `rg`
    /// would find them. Needs no model.
    Regex,
}

impl Mode {
    /// Whether this mode scans step texts for literal or regex matches instead of ranking.
    pub fn scans(self) -> bool {
        matches!(self, Mode::Exact | Mode::Regex)
    }

    /// Whether this mode embeds the query (and so needs the model).
    pub fn embeds(self) -> bool {
        matches!(self, Mode::Vector | Mode::Hybrid)
    }
}

impl std::str::FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "lexical" => Ok(Mode::Lexical),
            "vector" => Ok(Mode::Vector),
            "hybrid" => Ok(Mode::Hybrid),
            "exact" => Ok(Mode::Exact),
            "regex" => Ok(Mode::Regex),
            other => Err(Error::invalid(format!(
                "unknown mode {other:?}; expected lexical, vector, hybrid, exact or regex"
            ))),
        }
    }
}

/// Restrictions on which steps may be returned. Within one field values are alternatives (OR);
/// fields combine with AND. An empty field does not restrict.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Filters {
    /// Step kinds.
    pub kinds: Vec<StepKind>,
    /// Services of the incident (case-insensitive; any one listed matches).
    pub services: Vec<String>,
    /// Severity of the incident as written (case-insensitive).
    pub severities: Vec<String>,
    /// Incidents that started on or after this day. Undated incidents never match a date filter.
    #[serde(deserialize_with = "crate::dates::deserialize_since")]
    pub since: Option<NaiveDate>,
    /// Incidents that started on or before this day.
    #[serde(deserialize_with = "crate::dates::deserialize_until")]
    pub until: Option<NaiveDate>,
    /// Tags of the incident (case-insensitive).
    pub tags: Vec<String>,
    /// Only steps of these incidents.
    pub incident_ids: Vec<IncidentId>,
    /// Incidents whose card has one of these trigger classes.
    pub trigger_classes: Vec<TriggerClass>,
    /// Incidents whose card has one of these remediation classes.
    pub remediation_classes: Vec<RemediationClass>,
}

impl Filters {
    /// True when nothing is restricted.
    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
            && self.services.is_empty()
            && self.severities.is_empty()
            && self.since.is_none()
            && self.until.is_none()
            && self.tags.is_empty()
            && self.incident_ids.is_empty()
            && self.trigger_classes.is_empty()
            && self.remediation_classes.is_empty()
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if let (Some(since), Some(until)) = (self.since, self.until)
            && since > until
        {
            return Err(Error::invalid(format!(
                "filter since {since} is after until {until}"
            )));
        }
        for (name, values) in [
            ("services", &self.services),
            ("severities", &self.severities),
            ("tags", &self.tags),
        ] {
            if values.iter().any(|v| v.trim().is_empty()) {
                return Err(Error::invalid(format!("empty value in filter {name}")));
            }
        }
        Ok(())
    }
}

/// A search for steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// Free text. Words are matched (stemmed and as exact identifiers); text in double quotes
    /// is also matched as a phrase. No other syntax: `AND`, `-`, `:` and parentheses are words
    /// or separators, never errors. In `exact` mode the string to find, in `regex` mode the
    /// pattern.
    pub query: String,
    /// Retrievers to use.
    #[serde(default)]
    pub mode: Mode,
    /// Number of hits, 1..=1000.
    #[serde(default = "default_k")]
    pub k: usize,
    /// Restrictions.
    #[serde(default)]
    pub filters: Filters,
    /// Fusion parameters (hybrid mode).
    #[serde(default)]
    pub rrf: FusionOptions,
    /// Most steps of one incident among the hits (default 2; 0 = no limit). With `group`, the
    /// most steps shown per incident. `exact` and `regex` return every matching step unless
    /// `group` is set.
    #[serde(default = "default_per_incident")]
    pub per_incident: usize,
    /// Return incidents with their best steps: `k` counts incidents, `groups` lists them and
    /// `hits` holds their steps in the same order.
    #[serde(default)]
    pub group: bool,
    /// `exact` and `regex` modes: match case as written (default: ignore case).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub case_sensitive: bool,
}

impl SearchRequest {
    /// A hybrid search for `query` with default `k`, at most 2 steps per incident and no
    /// filters.
    pub fn new(query: impl Into<String>) -> Self {
        Self {
            query: query.into(),
            mode: Mode::default(),
            k: default_k(),
            filters: Filters::default(),
            rrf: FusionOptions::default(),
            per_incident: default_per_incident(),
            group: false,
            case_sensitive: false,
        }
    }

    /// The same request matching case as written (`exact` and `regex` modes).
    pub fn with_case_sensitive(mut self, case_sensitive: bool) -> Self {
        self.case_sensitive = case_sensitive;
        self
    }

    /// The same request with another per-incident limit (0 = no limit).
    pub fn with_per_incident(mut self, per_incident: usize) -> Self {
        self.per_incident = per_incident;
        self
    }

    /// The same request returning incidents with their best steps.
    pub fn with_group(mut self, group: bool) -> Self {
        self.group = group;
        self
    }

    /// The same request in another mode.
    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// The same request with another `k`.
    pub fn with_k(mut self, k: usize) -> Self {
        self.k = k;
        self
    }

    /// The same request with filters.
    pub fn with_filters(mut self, filters: Filters) -> Self {
        self.filters = filters;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.query.trim().is_empty() {
            return Err(Error::invalid("empty query"));
        }
        validate_k(self.k)?;
        if self.per_incident > MAX_K {
            return Err(Error::invalid(format!(
                "per_incident must be at most {MAX_K}, got {}",
                self.per_incident
            )));
        }
        self.filters.validate()?;
        self.rrf.validate()
    }
}

pub(crate) fn validate_k(k: usize) -> Result<()> {
    if k == 0 || k > MAX_K {
        return Err(Error::invalid(format!(
            "k must be between 1 and {MAX_K}, got {k}"
        )));
    }
    Ok(())
}

/// Where a hit's text is in the corpus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Citation {
    /// Path of the write-up relative to the indexed directory, `/`-separated.
    pub path: String,
    /// First line of the step, from 1.
    pub line_start: u32,
    /// Last line of the step, inclusive.
    pub line_end: u32,
}

/// How a hit was ranked. Ranks are 1-based; a field is `null` when that retriever did not
/// return the step (or did not run).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Score {
    /// Reciprocal-rank fusion score: the sum over retrievers of `weight / (k + rank)`.
    pub fused: f32,
    /// Rank in the BM25 list.
    pub lexical_rank: Option<u32>,
    /// BM25 score.
    pub lexical_score: Option<f32>,
    /// Rank in the vector list.
    pub vector_rank: Option<u32>,
    /// Cosine similarity between the query and the step.
    pub vector_similarity: Option<f32>,
    /// Rank of the step's incident in the incident-level BM25 leg (the whole write-up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident_rank: Option<u32>,
    /// BM25 score of the step's incident as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident_score: Option<f32>,
}

/// One step returned by a search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Hit {
    /// The step.
    pub step_id: StepId,
    /// Its incident.
    pub incident_id: IncidentId,
    /// Title of the incident.
    pub title: String,
    /// Kind of the step.
    pub kind: StepKind,
    /// What came of it, for hypotheses and actions (`helped`, `did_not_help`, `ruled_out`,
    /// `confirmed`, `unknown`); `null` when the step is neither.
    pub outcome: Option<Outcome>,
    /// Headings above the step, outermost first (e.g. `["Timeline", "14:02"]`).
    pub heading_path: Vec<String>,
    /// When its incident happened.
    pub date: Option<DateRange>,
    /// Services its incident affected, as written.
    pub services: Vec<String>,
    /// Full text of the step.
    pub text: String,
    /// A short passage of the text around the query words, matched words wrapped in `**`
    /// (Markdown bold).
    pub snippet: String,
    /// Ranking details.
    pub score: Score,
    /// Where the step is.
    pub citation: Citation,
}

/// One incident of a grouped search, with its best steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HitGroup {
    /// The incident.
    pub incident_id: IncidentId,
    /// Its title.
    pub title: String,
    /// Its path relative to the indexed directory.
    pub path: String,
    /// Fused score of its best step (what orders the groups).
    pub score: f32,
    /// Its best steps, best first (at most `per_incident`).
    pub hits: Vec<Hit>,
}

/// Answer to a [`SearchRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SearchResponse {
    /// Best first (with `group`: the steps of the groups, in group order).
    pub hits: Vec<Hit>,
    /// With `group`: incidents, best first, each with its best steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<HitGroup>>,
    /// How close the best hits are to the query; `none` means no close precedent.
    pub match_quality: MatchQuality,
    /// `exact` and `regex` modes: what matched in the whole index (after filters), however
    /// many hits `k` lets through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<MatchCounts>,
    /// Time spent, in milliseconds.
    pub took_ms: u64,
}

/// How much of the index an `exact` or `regex` search matched, as `rg --count-matches` and
/// `rg --count` count it: occurrences, and the steps and incidents that hold them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct MatchCounts {
    /// Non-overlapping, non-empty matches over all matching steps.
    pub matches: u64,
    /// Steps with at least one match.
    pub steps: u64,
    /// Incidents with at least one matching step.
    pub incidents: u64,
}

/// What to find similar incidents to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SimilarSource {
    /// An indexed incident (excluded from the answer). Its summary, impact, detection,
    /// investigation and root-cause steps form the query.
    Incident(IncidentId),
    /// Free text, e.g. what on-call sees right now.
    Text(String),
    /// A write-up that need not be indexed, e.g. the draft of the current incident. Its
    /// summary, impact, detection and investigation steps form the query.
    WriteUp {
        /// Its file name or path (picks the format: `.md` or `.txt`).
        path: String,
        /// Its content.
        text: String,
    },
}

/// A search for incidents similar to a source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SimilarRequest {
    /// What to compare with.
    pub source: SimilarSource,
    /// Number of incidents, 1..=1000.
    #[serde(default = "default_k")]
    pub k: usize,
    /// Restrictions on the steps that may match.
    #[serde(default)]
    pub filters: Filters,
}

impl SimilarRequest {
    /// Up to 10 incidents similar to `source`, unfiltered.
    pub fn new(source: SimilarSource) -> Self {
        Self {
            source,
            k: default_k(),
            filters: Filters::default(),
        }
    }
}

/// One incident returned by `similar`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SimilarIncident {
    /// The incident.
    pub incident_id: IncidentId,
    /// Its title.
    pub title: String,
    /// Its path relative to the indexed directory.
    pub path: String,
    /// Aggregate score: the sum of the fused scores of its best 3 steps.
    pub score: f32,
    /// When it happened.
    pub date: Option<DateRange>,
    /// Severity as written.
    pub severity: Option<String>,
    /// Services affected.
    pub services: Vec<String>,
    /// Its card: trigger, root cause, what restored service, what did not help, what was ruled
    /// out, time to detect and to mitigate, each citing its lines.
    pub card: Card,
    /// Its best-matching steps (at most 3), best first.
    pub steps: Vec<Hit>,
}

/// Answer to a [`SimilarRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SimilarResponse {
    /// Best first.
    pub incidents: Vec<SimilarIncident>,
    /// How close the best incidents are to the source; `none` means no close precedent.
    pub match_quality: MatchQuality,
    /// Time spent, in milliseconds.
    pub took_ms: u64,
}

/// A value and how many indexed items carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FacetCount {
    /// The value.
    pub value: String,
    /// Number of incidents (steps for `kinds`).
    pub count: u64,
}

/// What the index holds, for building filter menus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Facets {
    /// Step counts per kind.
    pub kinds: Vec<FacetCount>,
    /// Incident counts per service (lowercased).
    pub services: Vec<FacetCount>,
    /// Incident counts per severity (lowercased).
    pub severities: Vec<FacetCount>,
    /// Incident counts per tag (lowercased).
    pub tags: Vec<FacetCount>,
    /// Incident counts per trigger class.
    pub trigger_classes: Vec<FacetCount>,
    /// Incident counts per remediation class.
    pub remediation_classes: Vec<FacetCount>,
    /// Earliest incident start.
    pub date_min: Option<NaiveDate>,
    /// Latest incident start.
    pub date_max: Option<NaiveDate>,
    /// Number of incidents.
    pub incidents: u64,
    /// Number of steps.
    pub steps: u64,
}

/// Size and identity of the published index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Stats {
    /// Publish counter of the state being served.
    pub generation: u64,
    /// Number of incidents.
    pub incidents: u64,
    /// Number of steps.
    pub steps: u64,
    /// Bytes on disk of the served state (manifest, full text, vectors).
    pub size_bytes: u64,
    /// Embedding model the vectors come from.
    pub model_id: String,
    /// Vector dimension.
    pub dimension: usize,
}

/// An indexed incident as listings show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IncidentEntry {
    /// Its id.
    pub incident_id: IncidentId,
    /// Its title.
    pub title: String,
    /// Its write-up's path relative to the corpus root (or as written through the API).
    pub path: String,
}

/// A complete store: everything the front ends (CLI, HTTP, MCP) read, answered from one place
/// (the embedded [`Engine`](crate::Engine), or the Qdrant store), so a query server needs
/// nothing else. Search and `similar` run the one pipeline of `searcher.rs` over the store's
/// retrieval primitives; avenues and compare run over this trait.
pub trait Store: Send + Sync {
    /// Steps ranked against the request.
    fn search(&self, request: &SearchRequest, embedder: &dyn Embedder) -> Result<SearchResponse>;
    /// Past incidents ranked as wholes against a source.
    fn similar(&self, request: &SimilarRequest, embedder: &dyn Embedder)
    -> Result<SimilarResponse>;
    /// The full parse of a held incident (steps, card, metadata), `None` when the store holds
    /// no incident with this id.
    fn incident(&self, id: &IncidentId) -> Result<Option<Incident>>;
    /// The incident a person means by `reference`: its full id, a unique prefix of its id, or
    /// its write-up's path. [`Error::IncidentRef`] lists the closest ids when it names none
    /// or several.
    fn resolve_incident(&self, reference: &str) -> Result<IncidentId>;
    /// Values present, with counts, for filter menus.
    fn facets(&self) -> Result<Facets>;
    /// Size and identity of the state served.
    fn stats(&self) -> Result<Stats>;
    /// Held incidents sorted by path, at most `limit`.
    fn list_incidents(&self, limit: usize) -> Result<Vec<IncidentEntry>>;
    /// A short name for logs and `/healthz` ("embedded", "qdrant").
    fn kind(&self) -> &'static str;
    /// Whether the store answers now (`/healthz`); an error says why not.
    fn health(&self) -> Result<()> {
        Ok(())
    }
    /// Switches to a newer published state when there is one (the embedded index checks its
    /// manifest); `true` when it switched.
    fn refresh(&self) -> Result<bool> {
        Ok(false)
    }
    /// Brings the store in line with the published state of the local index at `index_dir`
    /// (after a write through the API). Call it while holding that index's writer lock. The
    /// embedded store is that index, so by default there is nothing to do.
    fn publish(&self, index_dir: &std::path::Path) -> Result<()> {
        let _ = index_dir;
        Ok(())
    }
    /// Indexes (or replaces) a write-up written through the API straight into the store, for
    /// servers with no local index; the document is owned by the API, so `precedent index DIR`
    /// never deletes it. A store that takes writes only through a local index says so.
    fn put_write_up(
        &self,
        path: &str,
        bytes: &[u8],
        embedder: &dyn Embedder,
    ) -> Result<crate::UpsertOutcome> {
        let _ = (path, bytes, embedder);
        Err(Error::invalid(format!(
            "the {} store takes writes through its index directory",
            self.kind()
        )))
    }
    /// Removes a document written through the API from the store; `false` when it held none.
    /// An incident of a corpus file is an [`Error::OwnedByCorpus`].
    fn delete_write_up(&self, id: &IncidentId) -> Result<bool> {
        let _ = id;
        Err(Error::invalid(format!(
            "the {} store takes writes through its index directory",
            self.kind()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_take_defaults_and_reject_unknown_fields() {
        let req: SearchRequest = serde_json::from_str(r#"{"query": "disk full"}"#).unwrap();
        assert_eq!(req, SearchRequest::new("disk full"));
        let err = serde_json::from_str::<SearchRequest>(r#"{"query": "x", "limit": 3}"#);
        assert!(err.is_err());
        let req: SimilarRequest =
            serde_json::from_str(r#"{"source": {"text": "pods OOMKilled"}, "k": 3}"#).unwrap();
        assert_eq!(req.k, 3);
        let bad = r#"{"query": "x", "filters": {"kind": ["action"]}}"#;
        assert!(serde_json::from_str::<SearchRequest>(bad).is_err());
    }

    #[test]
    fn hit_json_has_the_documented_shape() {
        let hit = Hit {
            step_id: StepId::parse("0123456789abcdef0123456789abcdef").unwrap(),
            incident_id: IncidentId::parse("disk-full-1a2b3c4d").unwrap(),
            title: "Disk full".into(),
            kind: StepKind::RootCause,
            outcome: None,
            heading_path: vec!["Root cause".into()],
            date: None,
            services: vec!["api".into()],
            text: "Debug logs filled /var".into(),
            snippet: "**Debug** logs".into(),
            score: Score {
                fused: 0.1,
                lexical_rank: Some(1),
                lexical_score: Some(3.5),
                ..Score::default()
            },
            citation: Citation {
                path: "a/b.md".into(),
                line_start: 3,
                line_end: 4,
            },
        };
        let json = serde_json::to_value(&hit).unwrap();
        let keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "citation",
                "date",
                "heading_path",
                "incident_id",
                "kind",
                "outcome",
                "score",
                "services",
                "snippet",
                "step_id",
                "text",
                "title"
            ]
        );
        assert!(json["score"]["vector_rank"].is_null());
        assert_eq!(json["citation"]["path"], "a/b.md");
    }

    #[test]
    fn schemas_are_generated_and_the_engine_is_shareable() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<crate::Engine>();
        let schema = serde_json::to_value(schemars::schema_for!(SearchRequest)).unwrap();
        assert_eq!(schema["additionalProperties"], false);
        assert!(schema["properties"]["filters"].is_object());
        let schema = serde_json::to_value(schemars::schema_for!(SimilarResponse)).unwrap();
        assert!(
            schema["$defs"]["Hit"]["properties"]["citation"].is_object(),
            "{schema}"
        );
    }

    #[test]
    fn validation_catches_bad_requests() {
        assert!(
            SearchRequest::new("  ")
                .validate()
                .unwrap_err()
                .is_user_error()
        );
        assert!(SearchRequest::new("x").with_k(0).validate().is_err());
        assert!(
            SearchRequest::new("x")
                .with_k(MAX_K + 1)
                .validate()
                .is_err()
        );
        let filters = Filters {
            since: NaiveDate::from_ymd_opt(2022, 1, 1),
            until: NaiveDate::from_ymd_opt(2021, 1, 1),
            ..Filters::default()
        };
        assert!(
            SearchRequest::new("x")
                .with_filters(filters)
                .validate()
                .is_err()
        );
        assert_eq!("Vector".parse::<Mode>().unwrap(), Mode::Vector);
        assert!("both".parse::<Mode>().is_err());
    }
}
