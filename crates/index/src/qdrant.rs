//! The Qdrant store: the same steps, filters, `search` and `similar` on a Qdrant server or
//! cluster, for corpora and query loads past one machine.
//!
//! # Layout
//!
//! One point per step (`doc: "step"`), its id the UUIDv5 of the step id (so re-upserting is
//! idempotent), with
//! - a dense named vector [`DENSE`] (cosine, the model's dimension): the step's embedding;
//! - a sparse named vector [`SPARSE`] with Qdrant's IDF modifier: BM25 term weights computed
//!   here with the analysers of the full-text index (stemmed words of title, headings and text
//!   with the embedded store's field boosts, and whole identifiers), so `k1`/`b` saturation is
//!   client-side and IDF is the collection's;
//! - a payload with the step, its incident's metadata and citation, and keyword/integer payload
//!   indexes for every filter.
//!
//! and one point per incident (`doc: "incident"`) with a sparse vector [`WHOLE`]: the whole
//! write-up's BM25 weights, for the incident-level leg.
//!
//! The collection's metadata records the model id, dimension and layout version; opening a
//! collection written for another model is an error that says what to do.
//!
//! # Indexing
//!
//! The embedded index stays the staging area and the manifest stays the source of truth:
//! `precedent index --store qdrant` first syncs the local index (parse, embed, only what
//! changed), then [`QdrantStore::sync_from`] mirrors the published generation. What Qdrant
//! holds is read back from Qdrant itself, as a facet count of points per *incident revision*
//! (incident id + content hash of its file), so a run killed at any moment converges on the next
//! one: revisions Qdrant holds that the manifest does not name, or holds partially, are deleted;
//! revisions the manifest names that Qdrant lacks are upserted, in batches, with `wait`.
//!
//! # Queries
//!
//! Queries run in the one pipeline of `searcher.rs`, over a per-request view of the
//! collection (`View`, numbering the points its answers carry): the BM25 leg is a sparse query,
//! the vector leg a batch of dense queries (one per source vector for `similar`), the
//! incident-level leg a sparse query on [`WHOLE`], each with the filters; fusion, grouping and
//! hit shaping happen in the pipeline, as for the embedded store, so both rank alike and hybrid
//! hits carry per-retriever ranks. The legs read only step and incident ids; the steps shown
//! are then read in full with one `get_points` (`View::prepare`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use precedent_core::{ContentHash, DateRange, Embedder, Incident, IncidentId, StepId, StepKind};
use qdrant_client::qdrant::{
    Condition, CreateCollectionBuilder, CreateFieldIndexCollectionBuilder, DeletePointsBuilder,
    Distance, FacetCountsBuilder, FieldType, Filter, GetPointsBuilder, Modifier, NamedVectors,
    PayloadIncludeSelector, PointId, PointStruct, QueryBatchPointsBuilder, QueryPoints,
    QueryPointsBuilder, Range, ReadConsistencyType, ScoredPoint, ScrollPointsBuilder,
    SearchParamsBuilder, SparseVectorParamsBuilder, SparseVectorsConfigBuilder,
    UpsertPointsBuilder, Vector, VectorInput, VectorParamsBuilder, VectorsConfigBuilder,
    facet_value, read_consistency,
};
use qdrant_client::{Payload, Qdrant, QdrantError};
use serde_json::{Value as Json, json};

use crate::api::{
    Citation, Filters, Hit, Score, SearchRequest, SearchResponse, SimilarRequest, SimilarResponse,
};
use crate::engine::{Engine, MAX_SOURCE_STEPS, SITUATION_KINDS};
use crate::error::{Error, Result};
use crate::manifest::{Manifest, Origin};
use crate::query::{Analyzed, BOOSTS};
use crate::schema::{ident_analyzer, stem_index_analyzer, terms};
use crate::searcher::{IncidentRanks, IncidentSummary, Ranked, Retrieval, SourceSteps};
use crate::synonyms::{EXPANSION_WEIGHT, Synonyms};
use crate::writer::{Phase, Progress};

/// Name of the dense vector.
pub const DENSE: &str = "dense";
/// Name of the sparse BM25 vector of a step.
pub const SPARSE: &str = "bm25";
/// Name of the sparse BM25 vector of a whole write-up (incident points only).
pub const WHOLE: &str = "whole";
/// Version of the point layout; a change needs a new collection.
const LAYOUT: i64 = 4;
/// Points per upsert request.
const BATCH: usize = 256;
/// Attempts of an operation that fails transiently (unreachable, overloaded, timed out).
const ATTEMPTS: u32 = 5;
/// BM25 parameters, and typical field lengths in terms (Qdrant keeps no per-field lengths).
const K1: f32 = 1.2;
const B: f32 = 0.75;
const AVG_TITLE: f32 = 8.0;
const AVG_HEADINGS: f32 = 4.0;
const AVG_TEXT: f32 = 60.0;
const AVG_IDENT: f32 = 70.0;
/// The same for whole write-ups (incident points): every heading once, every step.
const AVG_WHOLE_HEADINGS: f32 = 20.0;
const AVG_WHOLE_TEXT: f32 = 800.0;

/// Payload indexes: one per filter, plus the revision that indexing counts.
const PAYLOAD_INDEXES: [(&str, FieldType); 13] = [
    ("doc", FieldType::Keyword),
    ("origin", FieldType::Keyword),
    ("path", FieldType::Keyword),
    ("content_hash", FieldType::Keyword),
    ("trigger_class", FieldType::Keyword),
    ("remediation_class", FieldType::Keyword),
    ("incident_id", FieldType::Keyword),
    ("incident_rev", FieldType::Keyword),
    ("kind", FieldType::Keyword),
    ("services", FieldType::Keyword),
    ("severity", FieldType::Keyword),
    ("tags", FieldType::Keyword),
    ("date_days", FieldType::Integer),
];

/// Where the collection lives and how to search it.
#[derive(Debug, Clone)]
pub struct QdrantOptions {
    /// gRPC URL, e.g. `http://localhost:6334`.
    pub url: String,
    /// API key, if the server wants one.
    pub api_key: Option<String>,
    /// Collection name.
    pub collection: String,
    /// Exact (brute-force) dense search instead of Qdrant's HNSW: for parity tests.
    pub exact: bool,
    /// Time limit of one request to Qdrant.
    pub timeout: Duration,
    /// Time limit of one search or `similar`, retries included: below the HTTP server's
    /// request timeout (10 s), so a blocked call never outlives the request it serves.
    pub query_budget: Duration,
    /// Time limit of one write or metadata operation of a sync, retries included.
    pub write_budget: Duration,
    /// Shards of a new collection; `None`: Qdrant's default (one per node at creation).
    pub shards: Option<u32>,
    /// Copies of each shard in a new collection; `None`: 2, so that a cluster of three or
    /// more nodes answers every read after losing one (a single node just keeps both copies).
    /// Given explicitly, an existing collection made otherwise is refused.
    pub replication: Option<u32>,
    /// Replicas that must acknowledge a write; `None`: 1 (writes go on while a node is down
    /// and reach it when it is back).
    pub write_consistency: Option<u32>,
    /// Replicas a search must hear from; `None`: Qdrant's default (one).
    pub read_consistency: Option<ReadConsistency>,
    /// Payload and dense vectors of a new collection on disk (memory-mapped) instead of RAM.
    pub on_disk: bool,
}

/// Replicas of a shard a search reads from (Qdrant's read consistency).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadConsistency {
    /// This many replicas (1 = Qdrant's default).
    Factor(u64),
    /// A majority of the replicas.
    Majority,
    /// Half of the replicas plus one.
    Quorum,
    /// Every replica.
    All,
}

impl std::str::FromStr for ReadConsistency {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "all" => Ok(ReadConsistency::All),
            "majority" => Ok(ReadConsistency::Majority),
            "quorum" => Ok(ReadConsistency::Quorum),
            n => match n.parse::<u64>() {
                Ok(n) if n >= 1 => Ok(ReadConsistency::Factor(n)),
                _ => Err(format!(
                    "read consistency {s:?}: expected all, majority, quorum or a number >= 1"
                )),
            },
        }
    }
}

impl ReadConsistency {
    fn value(self) -> read_consistency::Value {
        match self {
            ReadConsistency::Factor(n) => read_consistency::Value::Factor(n),
            ReadConsistency::Majority => {
                read_consistency::Value::Type(ReadConsistencyType::Majority as i32)
            }
            ReadConsistency::Quorum => {
                read_consistency::Value::Type(ReadConsistencyType::Quorum as i32)
            }
            ReadConsistency::All => read_consistency::Value::Type(ReadConsistencyType::All as i32),
        }
    }
}

/// Copies of each shard when the options do not say.
const DEFAULT_REPLICATION: u32 = 2;

impl QdrantOptions {
    /// Options for `url` and `collection`, approximate search, 30 s per request, 8 s per
    /// query and 120 s per write (retries included).
    pub fn new(url: impl Into<String>, collection: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            api_key: None,
            collection: collection.into(),
            exact: false,
            timeout: Duration::from_secs(30),
            query_budget: Duration::from_secs(8),
            write_budget: Duration::from_secs(120),
            shards: None,
            replication: None,
            write_consistency: None,
            read_consistency: None,
            on_disk: false,
        }
    }
}

/// What [`QdrantStore::sync_from`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QdrantSyncSummary {
    /// Incidents (re)written.
    pub incidents_upserted: usize,
    /// Stale or partial incident revisions deleted.
    pub revisions_deleted: usize,
    /// Points written.
    pub points_upserted: usize,
    /// Points in the collection afterwards.
    pub points_total: u64,
    /// Wall time.
    pub elapsed: Duration,
}

/// Where the client's futures run.
enum Exec {
    /// The multi-threaded runtime the store was made in (a server's): a call blocks its thread
    /// (a blocking-pool thread, or a worker inside `block_in_place`) on that runtime, so the
    /// connections and timers are the server's own.
    Caller(tokio::runtime::Handle),
    /// A small runtime of the store's own, for callers without one (the CLI's one-shot
    /// commands) or with a current-thread one, which a blocking call would stall.
    Own(tokio::runtime::Runtime),
}

/// A collection on a Qdrant server, checked against the model.
///
/// Made inside a multi-threaded tokio runtime (`Runtime::enter`, or from a task), the store
/// runs its client on that runtime; made outside one, it starts its own with two threads.
pub struct QdrantStore {
    client: Qdrant,
    exec: Exec,
    options: QdrantOptions,
    model_id: String,
    dimension: usize,
    synonyms: Synonyms,
}

impl std::fmt::Debug for QdrantStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QdrantStore")
            .field("url", &self.options.url)
            .field("collection", &self.options.collection)
            .finish()
    }
}

fn qdrant_err(url: &str, err: QdrantError) -> Error {
    let text = err.to_string();
    if is_transient(&err) {
        Error::QdrantUnavailable(format!(
            "cannot reach Qdrant at {url} (is it running, and is this its gRPC port, usually 6334?): {text}"
        ))
    } else {
        Error::Qdrant(text)
    }
}

fn is_transient(err: &QdrantError) -> bool {
    // gRPC codes: DEADLINE_EXCEEDED 4, RESOURCE_EXHAUSTED 8, ABORTED 10, UNAVAILABLE 14.
    match err {
        QdrantError::ResourceExhaustedError { .. } => true,
        QdrantError::ResponseError { status } => {
            matches!(status.code() as i32, 4 | 8 | 10 | 14)
                // The client reports a refused connection as "Internal".
                || status.message().contains("Failed to connect")
        }
        _ => false,
    }
}

impl QdrantStore {
    /// Connects, creates the collection (vectors, payload indexes, metadata) when it does not
    /// exist, and checks that an existing one was made for `model_id` and `dimension`.
    pub fn connect(options: QdrantOptions, model_id: &str, dimension: usize) -> Result<Self> {
        let store = Self::client_for(options, model_id, dimension)?;
        store.ensure_collection()?;
        Ok(store)
    }

    /// A client for `options`, without touching the collection.
    fn client_for(options: QdrantOptions, model_id: &str, dimension: usize) -> Result<Self> {
        use tokio::runtime::{Handle, RuntimeFlavor};
        let exec = match Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
                Exec::Caller(handle)
            }
            _ => Exec::Own(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .map_err(|e| Error::Qdrant(format!("cannot start the client runtime: {e}")))?,
            ),
        };
        let client = Qdrant::from_url(&options.url)
            .api_key(options.api_key.clone())
            .timeout(options.timeout)
            .connect_timeout(Duration::from_secs(5))
            .skip_compatibility_check()
            .build()
            .map_err(|e| Error::Qdrant(format!("invalid Qdrant URL {}: {e}", options.url)))?;
        Ok(Self {
            client,
            exec,
            options,
            model_id: model_id.to_owned(),
            dimension,
            synonyms: Synonyms::builtin(),
        })
    }

    /// Replaces the synonym table (the built-in one by default), e.g. with
    /// [`Synonyms::builtin_and`] of the corpus's `synonyms.toml`.
    pub fn with_synonyms(mut self, synonyms: Synonyms) -> Self {
        self.synonyms = synonyms;
        self
    }

    /// The collection name.
    pub fn collection(&self) -> &str {
        &self.options.collection
    }

    /// Runs `op` to completion, retrying transient failures with jittered exponential
    /// backoff (backon), all within `budget`: past it the call gives up with
    /// [`Error::QdrantUnavailable`], so it never holds a thread longer than its caller waits.
    fn call<T, F, Fut>(&self, what: &str, budget: Duration, op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, QdrantError>>,
    {
        use backon::{ExponentialBuilder, Retryable as _};
        let policy = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(2))
            .with_max_times(ATTEMPTS as usize - 1)
            .with_jitter();
        let handle = match &self.exec {
            Exec::Caller(handle) => handle,
            Exec::Own(runtime) => runtime.handle(),
        };
        let run = || {
            handle.block_on(async {
                let retried = op
                    .retry(policy)
                    .sleep(tokio::time::sleep)
                    .when(is_transient)
                    .notify(|e, after| {
                        tracing::warn!("qdrant: {what} failed, retrying in {after:?}: {e}");
                    });
                tokio::time::timeout(budget, retried).await
            })
        };
        let result = if tokio::runtime::Handle::try_current().is_ok() {
            tokio::task::block_in_place(run)
        } else {
            run()
        };
        match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(match qdrant_err(&self.options.url, e) {
                Error::Qdrant(m) => Error::Qdrant(format!("{what}: {m}")),
                Error::QdrantUnavailable(m) => Error::QdrantUnavailable(format!("{what}: {m}")),
                other => other,
            }),
            Err(_) => Err(Error::QdrantUnavailable(format!(
                "{what}: no answer from {} within {budget:?}",
                self.options.url
            ))),
        }
    }

    fn ensure_collection(&self) -> Result<()> {
        let name = self.options.collection.clone();
        let exists = self.call("checking the collection", self.options.write_budget, || {
            self.client.collection_exists(&name)
        })?;
        if !exists {
            self.create_collection()?;
        }
        let info = self.call("reading the collection", self.options.write_budget, || {
            self.client.collection_info(&name)
        })?;
        let result = info.result.unwrap_or_default();
        // A run killed right after creating the collection may have left indexes out.
        for (field, kind) in PAYLOAD_INDEXES {
            if !result.payload_schema.contains_key(field) {
                self.call(
                    "creating payload indexes",
                    self.options.write_budget,
                    || {
                        self.client.create_field_index(
                            CreateFieldIndexCollectionBuilder::new(&name, field, kind).wait(true),
                        )
                    },
                )?;
            }
        }
        let meta = Json::from(Payload::from(
            result
                .config
                .as_ref()
                .map(|c| c.metadata.clone())
                .unwrap_or_default(),
        ));
        let mismatch = |message: String| Error::QdrantCollection {
            collection: name.clone(),
            message,
        };
        match meta.get("precedent_model_id").and_then(Json::as_str) {
            Some(m) if m == self.model_id => {}
            Some(m) => {
                return Err(mismatch(format!(
                    "was built with model {m}, this run uses {}; use another --collection or delete it",
                    self.model_id
                )));
            }
            None => {
                return Err(mismatch(
                    "was not created by precedent (no model id in its metadata); use another --collection".into(),
                ));
            }
        }
        let dim = meta.get("precedent_dimension").and_then(Json::as_u64);
        if dim != Some(self.dimension as u64) {
            return Err(mismatch(format!(
                "has dimension {dim:?}, the model has {}",
                self.dimension
            )));
        }
        if meta.get("precedent_layout").and_then(Json::as_i64) != Some(LAYOUT) {
            return Err(mismatch(format!(
                "has another point layout (this build writes layout {LAYOUT}); use another --collection"
            )));
        }
        // What the collection was made with, against what was asked for explicitly.
        let params = result.config.and_then(|c| c.params).unwrap_or_default();
        let asked = [
            ("shards", self.options.shards, Some(params.shard_number)),
            (
                "replication factor",
                self.options.replication,
                params.replication_factor,
            ),
            (
                "write consistency factor",
                self.options.write_consistency,
                params.write_consistency_factor,
            ),
        ];
        for (what, want, has) in asked {
            if let Some(want) = want
                && has.unwrap_or(1) != want
            {
                return Err(mismatch(format!(
                    "was created with {what} {}, and {want} is asked for; change it in Qdrant (PATCH /collections/{name}) or use another --collection",
                    has.unwrap_or(1)
                )));
            }
        }
        if params.replication_factor.unwrap_or(1) < 2 {
            tracing::warn!(
                collection = %name,
                "the collection keeps one copy of each shard: on a cluster, losing a node fails every search until it is back"
            );
        }
        Ok(())
    }

    fn create_collection(&self) -> Result<()> {
        let name = self.options.collection.clone();
        let metadata: HashMap<String, Json> = HashMap::from([
            ("precedent_model_id".to_owned(), json!(self.model_id)),
            ("precedent_dimension".to_owned(), json!(self.dimension)),
            ("precedent_layout".to_owned(), json!(LAYOUT)),
        ]);
        let created = self.call("creating the collection", self.options.write_budget, || {
            let mut vectors = VectorsConfigBuilder::default();
            vectors.add_named_vector_params(
                DENSE,
                VectorParamsBuilder::new(self.dimension as u64, Distance::Cosine)
                    .on_disk(self.options.on_disk),
            );
            let mut sparse = SparseVectorsConfigBuilder::default();
            for name in [SPARSE, WHOLE] {
                sparse.add_named_vector_params(
                    name,
                    SparseVectorParamsBuilder::default().modifier(Modifier::Idf),
                );
            }
            let mut builder = CreateCollectionBuilder::new(&name)
                .vectors_config(vectors)
                .sparse_vectors_config(sparse)
                .metadata(metadata.clone())
                .replication_factor(self.options.replication.unwrap_or(DEFAULT_REPLICATION))
                .write_consistency_factor(self.options.write_consistency.unwrap_or(1))
                .on_disk_payload(self.options.on_disk);
            if let Some(shards) = self.options.shards {
                builder = builder.shard_number(shards);
            }
            self.client.create_collection(builder)
        });
        if let Err(e) = created {
            // Another process may have created it at the same time.
            let exists = self.call("checking the collection", self.options.write_budget, || {
                self.client.collection_exists(&name)
            })?;
            if !exists {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Deletes the collection (tests and `--reset`).
    pub fn delete_collection(&self) -> Result<()> {
        let name = self.options.collection.clone();
        self.call("deleting the collection", self.options.write_budget, || {
            self.client.delete_collection(&name)
        })?;
        Ok(())
    }

    /// Step points in the collection (each incident also has one incident point).
    pub fn count(&self) -> Result<u64> {
        self.count_of(STEP_DOC, self.options.write_budget)
    }

    /// Which of `ids` the collection holds steps of.
    fn held_incidents(&self, ids: &[IncidentId]) -> Result<Vec<IncidentId>> {
        let name = self.options.collection.clone();
        let filter = Filter::must([
            Condition::matches("doc", STEP_DOC.to_owned()),
            Condition::matches(
                "incident_id",
                ids.iter()
                    .map(|i| i.as_str().to_owned())
                    .collect::<Vec<_>>(),
            ),
        ]);
        let r = self.call("looking up incidents", self.options.query_budget, || {
            self.client.facet(
                FacetCountsBuilder::new(&name, "incident_id")
                    .filter(filter.clone())
                    .limit(ids.len() as u64)
                    .exact(true),
            )
        })?;
        Ok(r.hits
            .into_iter()
            // Deleted incidents stay listed with a count of 0 until the segment is optimised.
            .filter(|h| h.count > 0)
            .filter_map(|h| match h.value?.variant? {
                facet_value::Variant::StringValue(s) => IncidentId::parse(&s).ok(),
                _ => None,
            })
            .collect())
    }

    /// Points per incident revision, as Qdrant holds them (of the points `filter` allows).
    fn revisions(&self, at_least: usize, filter: Option<Filter>) -> Result<HashMap<String, u64>> {
        let name = self.options.collection.clone();
        let mut limit = (at_least as u64 * 2).max(1024);
        loop {
            let r = self.call(
                "reading incident revisions",
                self.options.write_budget,
                || {
                    let mut request = FacetCountsBuilder::new(&name, "incident_rev")
                        .limit(limit)
                        .exact(true);
                    if let Some(filter) = &filter {
                        request = request.filter(filter.clone());
                    }
                    self.client.facet(request)
                },
            )?;
            if (r.hits.len() as u64) < limit {
                return Ok(r
                    .hits
                    .into_iter()
                    // An exact facet still lists values whose points were all deleted, with a
                    // count of 0, until the segment is optimised: such a revision is not held.
                    .filter(|h| h.count > 0)
                    .filter_map(|h| match h.value?.variant? {
                        facet_value::Variant::StringValue(s) => Some((s, h.count)),
                        _ => None,
                    })
                    .collect());
            }
            limit *= 4;
        }
    }

    /// Mirrors the published state of the embedded index at `index_dir` into the collection,
    /// writing only incidents Qdrant does not hold in full at their current revision, and
    /// deleting revisions that are gone. Call it while holding the index's writer lock (an open
    /// [`IndexWriter`](crate::IndexWriter)) so that the generation does not change underneath.
    pub fn sync_from(
        &self,
        index_dir: &Path,
        progress: &dyn Progress,
    ) -> Result<QdrantSyncSummary> {
        let started = Instant::now();
        let manifest =
            Manifest::load(index_dir)?.ok_or_else(|| Error::IndexMissing(index_dir.to_owned()))?;
        if manifest.model_id != self.model_id {
            return Err(Error::QdrantCollection {
                collection: self.options.collection.clone(),
                message: format!(
                    "the local index was built with {}, the collection with {}",
                    manifest.model_id, self.model_id
                ),
            });
        }
        let engine = Engine::open(index_dir)?;
        if engine.generation() != manifest.generation {
            return Err(Error::Qdrant(
                "the local index changed during the sync; run it again".into(),
            ));
        }
        let expected: BTreeMap<String, (IncidentId, u64, Origin)> = manifest
            .files
            .values()
            .map(|f| {
                (
                    revision(&f.incident.id, f.hash.as_str()),
                    // Its steps and its incident point.
                    (f.incident.id.clone(), f.steps.len() as u64 + 1, f.origin),
                )
            })
            .collect();
        let held = self.revisions(expected.len(), None)?;
        // Documents written straight into the collection through the API (by a server with no
        // local index) belong to the API: the local index does not know them, and its sync
        // leaves them alone. One it knows too is mirrored from it like any other.
        let api_only = self.revisions(
            0,
            Some(Filter::must([Condition::matches(
                "origin",
                origin_name(Origin::Api).to_owned(),
            )])),
        )?;
        let local: HashSet<&IncidentId> = expected.values().map(|(id, _, _)| id).collect();
        let stale: Vec<String> = held
            .iter()
            .filter(|(rev, n)| expected.get(*rev).is_none_or(|(_, want, _)| want != *n))
            .filter(|(rev, _)| {
                !api_only.contains_key(*rev)
                    || incident_of_revision(rev).is_none_or(|id| local.contains(&id))
            })
            .map(|(rev, _)| rev.clone())
            .collect();
        let name = self.options.collection.clone();
        for chunk in stale.chunks(256) {
            let filter = Filter::must([Condition::matches("incident_rev", chunk.to_vec())]);
            self.call("deleting stale points", self.options.write_budget, || {
                self.client.delete_points(
                    DeletePointsBuilder::new(&name)
                        .points(filter.clone())
                        .wait(true),
                )
            })?;
        }
        let todo: Vec<(&String, &IncidentId, Origin)> = expected
            .iter()
            .filter(|(rev, (_, n, _))| held.get(*rev) != Some(n) && *n > 0)
            .map(|(rev, (id, _, origin))| (rev, id, *origin))
            .collect();
        progress.start(Phase::Mirror, todo.len() as u64);
        let mut summary = QdrantSyncSummary {
            revisions_deleted: stale.len(),
            ..QdrantSyncSummary::default()
        };
        let mut batch: Vec<PointStruct> = Vec::with_capacity(BATCH);
        for (rev, id, origin) in todo {
            let incident = engine.incident(id)?.ok_or_else(|| {
                Error::Corrupt(format!("manifest names {id}, the index lacks it"))
            })?;
            let vectors = incident
                .steps
                .iter()
                .map(|step| {
                    engine
                        .step_vector(&step.id)
                        .ok_or_else(|| Error::Corrupt(format!("step {} has no vector", step.id)))
                })
                .collect::<Result<Vec<_>>>()?;
            batch.extend(points_of(&incident, vectors, rev, origin)?);
            if batch.len() >= BATCH {
                summary.points_upserted += batch.len();
                self.upsert(std::mem::take(&mut batch))?;
            }
            summary.incidents_upserted += 1;
            progress.advance(summary.incidents_upserted as u64);
        }
        if !batch.is_empty() {
            summary.points_upserted += batch.len();
            self.upsert(batch)?;
        }
        summary.points_total = self.count()?;
        summary.elapsed = started.elapsed();
        Ok(summary)
    }

    fn upsert(&self, points: Vec<PointStruct>) -> Result<()> {
        let name = self.options.collection.clone();
        self.call("writing points", self.options.write_budget, || {
            self.client
                .upsert_points(UpsertPointsBuilder::new(&name, points.clone()).wait(true))
        })?;
        Ok(())
    }

    fn check_model(&self, embedder: &dyn Embedder) -> Result<()> {
        if embedder.model_id() != self.model_id || embedder.dimension() != self.dimension {
            return Err(Error::QdrantCollection {
                collection: self.options.collection.clone(),
                message: format!(
                    "was built with {} ({} dimensions), the query embedder is {} ({})",
                    self.model_id,
                    self.dimension,
                    embedder.model_id(),
                    embedder.dimension()
                ),
            });
        }
        Ok(())
    }

    /// Steps ranked against the request: the shared pipeline over this collection.
    pub fn search(
        &self,
        request: &SearchRequest,
        embedder: &dyn Embedder,
    ) -> Result<SearchResponse> {
        crate::searcher::search(&View::new(self), &self.synonyms, request, embedder)
    }

    /// Past incidents ranked as wholes against a source: the shared pipeline over this
    /// collection.
    pub fn similar(
        &self,
        request: &SimilarRequest,
        embedder: &dyn Embedder,
    ) -> Result<SimilarResponse> {
        crate::searcher::similar(&View::new(self), &self.synonyms, request, embedder)
    }

    /// A query over the collection with the options every read shares.
    fn query_builder(&self, limit: usize) -> QueryPointsBuilder {
        let mut builder = QueryPointsBuilder::new(&self.options.collection).limit(limit as u64);
        if let Some(consistency) = self.options.read_consistency {
            builder = builder.read_consistency(consistency.value());
        }
        builder
    }

    fn query(&self, what: &str, request: QueryPoints) -> Result<Vec<ScoredPoint>> {
        let response = self.call(what, self.options.query_budget, || {
            self.client.query(request.clone())
        })?;
        Ok(response.result)
    }

    /// Payloads and dense vectors of an incident's points.
    fn incident_points(&self, id: &IncidentId) -> Result<Vec<(Json, Vec<f32>)>> {
        let name = self.options.collection.clone();
        let filter = Filter::must([
            Condition::matches("incident_id", id.as_str().to_owned()),
            Condition::matches("doc", STEP_DOC.to_owned()),
        ]);
        let response = self.call("reading an incident", self.options.query_budget, || {
            self.client.scroll(
                ScrollPointsBuilder::new(&name)
                    .filter(filter.clone())
                    .limit(10_000)
                    .with_payload(true)
                    .with_vectors(true),
            )
        })?;
        response
            .result
            .into_iter()
            .map(|p| {
                let vector = match p.vectors.as_ref().and_then(|v| v.get_vector_by_name(DENSE)) {
                    Some(qdrant_client::qdrant::vector_output::Vector::Dense(d)) => d.data,
                    _ => return Err(Error::Qdrant("point without its dense vector".into())),
                };
                Ok((Json::from(Payload::from(p.payload)), vector))
            })
            .collect()
    }
}

impl QdrantStore {
    /// The model a collection was made for (its metadata's model id), `None` when it does not
    /// exist yet: for a query server with no local index to choose its embedder by.
    pub fn model_of_collection(options: &QdrantOptions) -> Result<Option<String>> {
        let probe = Self::client_for(options.clone(), "", 0)?;
        let name = options.collection.clone();
        let exists = probe.call("checking the collection", options.write_budget, || {
            probe.client.collection_exists(&name)
        })?;
        if !exists {
            return Ok(None);
        }
        let info = probe.call("reading the collection", options.write_budget, || {
            probe.client.collection_info(&name)
        })?;
        let meta = Json::from(Payload::from(
            info.result
                .and_then(|r| r.config)
                .map(|c| c.metadata)
                .unwrap_or_default(),
        ));
        Ok(meta
            .get("precedent_model_id")
            .and_then(Json::as_str)
            .map(str::to_owned))
    }

    /// The incident point's payload fields `fields` (all with `None`), `None` when the
    /// collection holds no incident point for `id`.
    fn incident_payload(&self, id: &IncidentId, fields: Option<&[&str]>) -> Result<Option<Json>> {
        let name = self.options.collection.clone();
        let mut request = GetPointsBuilder::new(&name, vec![PointId::from(incident_point_id(id))]);
        request = match fields {
            Some(fields) => request.with_payload(PayloadIncludeSelector::new(
                fields
                    .iter()
                    .map(|f| (*f).to_owned())
                    .collect::<Vec<String>>(),
            )),
            None => request.with_payload(true),
        };
        if let Some(consistency) = self.options.read_consistency {
            request = request.read_consistency(consistency.value());
        }
        let request = request.build();
        let response = self.call("reading an incident", self.options.query_budget, || {
            self.client.get_points(request.clone())
        })?;
        Ok(response
            .result
            .into_iter()
            .next()
            .map(|p| Json::from(Payload::from(p.payload))))
    }

    /// Every incident the collection holds, as listings show it, in no particular order.
    fn all_incidents(&self) -> Result<Vec<crate::api::IncidentEntry>> {
        let name = self.options.collection.clone();
        let filter = Filter::must([Condition::matches("doc", INCIDENT_DOC.to_owned())]);
        let fields: Vec<String> = ["incident_id", "title", "path"].map(str::to_owned).to_vec();
        let mut out = Vec::new();
        let mut offset: Option<PointId> = None;
        loop {
            let response = self.call("listing incidents", self.options.query_budget, || {
                let mut request = ScrollPointsBuilder::new(&name)
                    .filter(filter.clone())
                    .limit(1000)
                    .with_payload(PayloadIncludeSelector::new(fields.clone()));
                if let Some(offset) = &offset {
                    request = request.offset(offset.clone());
                }
                self.client.scroll(request)
            })?;
            for p in response.result {
                let payload = Json::from(Payload::from(p.payload));
                out.push(crate::api::IncidentEntry {
                    incident_id: parse_incident_id(&payload["incident_id"])?,
                    title: payload["title"].as_str().unwrap_or_default().to_owned(),
                    path: payload["path"].as_str().unwrap_or_default().to_owned(),
                });
            }
            match response.next_page_offset {
                Some(next) => offset = Some(next),
                None => return Ok(out),
            }
        }
    }

    /// Counts of the values of `key` over the points of kind `doc`, most frequent first.
    fn facet_counts(&self, key: &str, doc: &str) -> Result<Vec<crate::api::FacetCount>> {
        let name = self.options.collection.clone();
        let filter = Filter::must([Condition::matches("doc", doc.to_owned())]);
        let r = self.call("reading facets", self.options.query_budget, || {
            self.client.facet(
                FacetCountsBuilder::new(&name, key)
                    .filter(filter.clone())
                    .limit(10_000)
                    .exact(true),
            )
        })?;
        let mut out: Vec<crate::api::FacetCount> = r
            .hits
            .into_iter()
            // Values of deleted points linger with a count of 0 until the segment is optimised.
            .filter(|h| h.count > 0)
            .filter_map(|h| match h.value?.variant? {
                facet_value::Variant::StringValue(value) => Some(crate::api::FacetCount {
                    value,
                    count: h.count,
                }),
                _ => None,
            })
            .collect();
        out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
        Ok(out)
    }

    /// Points of kind `doc`, counted within `budget`.
    fn count_of(&self, doc: &str, budget: Duration) -> Result<u64> {
        let name = self.options.collection.clone();
        let filter = Filter::must([Condition::matches("doc", doc.to_owned())]);
        let r = self.call("counting points", budget, || {
            self.client.count(
                qdrant_client::qdrant::CountPointsBuilder::new(&name)
                    .filter(filter.clone())
                    .exact(true),
            )
        })?;
        Ok(r.result.map_or(0, |r| r.count))
    }

    /// The earliest (`Asc`) or latest (`Desc`) incident start date.
    fn date_edge(
        &self,
        direction: qdrant_client::qdrant::Direction,
    ) -> Result<Option<chrono::NaiveDate>> {
        let name = self.options.collection.clone();
        let filter = Filter::must([Condition::matches("doc", INCIDENT_DOC.to_owned())]);
        let response = self.call("reading dates", self.options.query_budget, || {
            self.client.scroll(
                ScrollPointsBuilder::new(&name)
                    .filter(filter.clone())
                    .limit(1)
                    .order_by(
                        qdrant_client::qdrant::OrderByBuilder::new("date_days")
                            .direction(direction as i32),
                    )
                    .with_payload(PayloadIncludeSelector::new(vec!["date_days".to_owned()])),
            )
        })?;
        Ok(response.result.into_iter().next().and_then(|p| {
            let days = Json::from(Payload::from(p.payload))["date_days"].as_i64()?;
            crate::writer::date_of_days(days)
        }))
    }

    /// Writes an incident revision's points, then deletes every other revision of it: a reader
    /// sees the old or the new steps (briefly some of both), never none.
    fn replace_incident(
        &self,
        incident: &Incident,
        points: Vec<PointStruct>,
        rev: &str,
    ) -> Result<()> {
        for chunk in points.chunks(BATCH) {
            self.upsert(chunk.to_vec())?;
        }
        let name = self.options.collection.clone();
        let filter = Filter {
            must: vec![Condition::matches(
                "incident_id",
                incident.id.as_str().to_owned(),
            )],
            must_not: vec![Condition::matches("incident_rev", rev.to_owned())],
            ..Filter::default()
        };
        self.call(
            "deleting replaced points",
            self.options.write_budget,
            || {
                self.client.delete_points(
                    DeletePointsBuilder::new(&name)
                        .points(filter.clone())
                        .wait(true),
                )
            },
        )?;
        Ok(())
    }
}

impl crate::api::Store for QdrantStore {
    fn search(&self, request: &SearchRequest, embedder: &dyn Embedder) -> Result<SearchResponse> {
        QdrantStore::search(self, request, embedder)
    }
    fn similar(
        &self,
        request: &SimilarRequest,
        embedder: &dyn Embedder,
    ) -> Result<SimilarResponse> {
        QdrantStore::similar(self, request, embedder)
    }
    fn incident(&self, id: &IncidentId) -> Result<Option<Incident>> {
        let Some(payload) = self.incident_payload(id, Some(&["record"]))? else {
            return Ok(None);
        };
        let record = payload["record"]
            .as_str()
            .ok_or_else(|| Error::Qdrant(format!("the point of incident {id} has no record")))?;
        serde_json::from_str(record)
            .map(Some)
            .map_err(|e| Error::Qdrant(format!("the record of incident {id} does not parse: {e}")))
    }
    fn resolve_incident(&self, reference: &str) -> Result<IncidentId> {
        let wanted = reference.trim();
        if let Ok(id) = IncidentId::parse(wanted)
            && self
                .incident_payload(&id, Some(&["incident_id"]))?
                .is_some()
        {
            return Ok(id);
        }
        let all = self.all_incidents()?;
        let held: Vec<(&IncidentId, &str)> = all
            .iter()
            .map(|e| (&e.incident_id, e.path.as_str()))
            .collect();
        crate::engine::resolve_among(wanted, None, &held)
    }
    fn facets(&self) -> Result<crate::api::Facets> {
        use qdrant_client::qdrant::Direction;
        Ok(crate::api::Facets {
            kinds: self.facet_counts("kind", STEP_DOC)?,
            services: self.facet_counts("services", INCIDENT_DOC)?,
            severities: self.facet_counts("severity", INCIDENT_DOC)?,
            tags: self.facet_counts("tags", INCIDENT_DOC)?,
            trigger_classes: self.facet_counts("trigger_class", INCIDENT_DOC)?,
            remediation_classes: self.facet_counts("remediation_class", INCIDENT_DOC)?,
            date_min: self.date_edge(Direction::Asc)?,
            date_max: self.date_edge(Direction::Desc)?,
            incidents: self.count_of(INCIDENT_DOC, self.options.query_budget)?,
            steps: self.count_of(STEP_DOC, self.options.query_budget)?,
        })
    }
    fn stats(&self) -> Result<crate::api::Stats> {
        Ok(crate::api::Stats {
            // Qdrant has no publish counter; its collection is the one state.
            generation: 0,
            incidents: self.count_of(INCIDENT_DOC, self.options.query_budget)?,
            steps: self.count_of(STEP_DOC, self.options.query_budget)?,
            size_bytes: 0,
            model_id: self.model_id.clone(),
            dimension: self.dimension,
        })
    }
    fn list_incidents(&self, limit: usize) -> Result<Vec<crate::api::IncidentEntry>> {
        let mut all = self.all_incidents()?;
        all.sort_by(|a, b| a.path.cmp(&b.path));
        all.truncate(limit);
        Ok(all)
    }
    fn kind(&self) -> &'static str {
        "qdrant"
    }
    fn publish(&self, index_dir: &Path) -> Result<()> {
        self.sync_from(index_dir, &crate::writer::NoProgress)
            .map(|_| ())
    }
    fn health(&self) -> Result<()> {
        self.call("checking health", HEALTH_BUDGET, || {
            self.client.health_check()
        })
        .map(|_| ())
    }
    fn put_write_up(
        &self,
        path: &str,
        bytes: &[u8],
        embedder: &dyn Embedder,
    ) -> Result<crate::UpsertOutcome> {
        self.check_model(embedder)?;
        let options = crate::WriterOptions::default();
        let (path, incident) = crate::writer::api_write_up(path, bytes, &options)?;
        let held = self.incident_payload(&incident.id, Some(&["origin"]))?;
        if held
            .as_ref()
            .is_some_and(|p| p["origin"].as_str() != Some(origin_name(Origin::Api)))
        {
            return Err(Error::OwnedByCorpus { path });
        }
        let texts: Vec<String> = incident
            .steps
            .iter()
            .map(|s| s.contextual_text(&incident.title))
            .collect();
        let mut vectors = Vec::with_capacity(texts.len());
        for batch in texts.chunks(options.embed_batch.max(1)) {
            let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
            let embedded = embedder.embed(&refs).map_err(Error::Embed)?;
            if embedded.len() != refs.len()
                || embedded
                    .iter()
                    .any(|v| v.len() != self.dimension || v.iter().any(|x| !x.is_finite()))
            {
                return Err(Error::Embed(
                    format!(
                        "embedder returned malformed vectors for {} texts",
                        refs.len()
                    )
                    .into(),
                ));
            }
            vectors.extend(embedded);
        }
        let rev = revision(&incident.id, incident.content_hash.as_str());
        let points = points_of(&incident, vectors, &rev, Origin::Api)?;
        self.replace_incident(&incident, points, &rev)?;
        Ok(crate::UpsertOutcome {
            incident_id: incident.id.clone(),
            steps: incident.steps.len(),
            replaced: held.is_some(),
            generation: 0,
        })
    }
    fn delete_write_up(&self, id: &IncidentId) -> Result<bool> {
        let Some(held) = self.incident_payload(id, Some(&["origin", "path"]))? else {
            return Ok(false);
        };
        if held["origin"].as_str() != Some(origin_name(Origin::Api)) {
            return Err(Error::OwnedByCorpus {
                path: held["path"].as_str().unwrap_or_default().to_owned(),
            });
        }
        let name = self.options.collection.clone();
        // Steps first, the incident point last: a delete cut short leaves the incident
        // listed, so asking again finishes it.
        for doc in [STEP_DOC, INCIDENT_DOC] {
            let filter = Filter::must([
                Condition::matches("incident_id", id.as_str().to_owned()),
                Condition::matches("doc", doc.to_owned()),
            ]);
            self.call("deleting an incident", self.options.write_budget, || {
                self.client.delete_points(
                    DeletePointsBuilder::new(&name)
                        .points(filter.clone())
                        .wait(true),
                )
            })?;
        }
        Ok(true)
    }
}

/// `doc` of a step point.
const STEP_DOC: &str = "step";
/// `doc` of an incident point: one per incident, with the [`WHOLE`] sparse vector of its whole
/// write-up (the incident-level leg) and its metadata.
const INCIDENT_DOC: &str = "incident";

/// Compiled filters of one request: the Qdrant filter, and the query whose quoted phrases a
/// step must contain (checked on each returned step, as the embedded store's phrase query
/// decides it).
struct Mask {
    filter: Filter,
    required: Option<Analyzed>,
}

impl Mask {
    /// What retrieval reads of each returned step: its ids, and the fields a required phrase
    /// is checked against. The shown steps are read in full afterwards (`prepare`): a step's
    /// whole payload, card included, is about 2 KB, and each leg returns up to hundreds.
    fn lean(&self) -> PayloadIncludeSelector {
        let mut fields = vec!["step_id".to_owned(), "incident_id".to_owned()];
        if self.required.is_some() {
            fields.extend(["text", "title", "headings"].map(str::to_owned));
        }
        PayloadIncludeSelector::new(fields)
    }
}

/// A step a request's answers carried.
struct SeenStep {
    payload: Json,
    incident: u32,
    /// Whether `payload` is the whole payload, or only the fields retrieval asked for.
    full: bool,
}

/// What one request has seen of the collection, numbered in arrival order: the pipeline
/// addresses steps and incidents by these numbers.
#[derive(Default)]
struct Seen {
    steps: Vec<SeenStep>,
    step_numbers: HashMap<String, u32>,
    incidents: Vec<IncidentId>,
    incident_numbers: HashMap<IncidentId, u32>,
}

impl Seen {
    fn incident(&mut self, id: IncidentId) -> u32 {
        if let Some(&n) = self.incident_numbers.get(&id) {
            return n;
        }
        let n = self.incidents.len() as u32;
        self.incidents.push(id.clone());
        self.incident_numbers.insert(id, n);
        n
    }

    fn step(&mut self, payload: Json) -> Result<u32> {
        let step_id = payload["step_id"].as_str().unwrap_or_default().to_owned();
        if let Some(&n) = self.step_numbers.get(&step_id) {
            return Ok(n);
        }
        let incident = self.incident(parse_incident_id(&payload["incident_id"])?);
        let n = self.steps.len() as u32;
        self.steps.push(SeenStep {
            payload,
            incident,
            full: false,
        });
        self.step_numbers.insert(step_id, n);
        Ok(n)
    }
}

/// The collection as one request sees it.
struct View<'a> {
    store: &'a QdrantStore,
    seen: std::sync::Mutex<Seen>,
}

impl<'a> View<'a> {
    fn new(store: &'a QdrantStore) -> Self {
        View {
            store,
            seen: std::sync::Mutex::new(Seen::default()),
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        // A panic while holding the lock leaves only append-only tables behind.
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Returned step points, numbered, without those that miss a required phrase.
    fn ranked(&self, points: Vec<ScoredPoint>, mask: &Mask) -> Result<Ranked<u32>> {
        let mut seen = self.seen();
        let mut out = Vec::with_capacity(points.len());
        for p in points {
            let payload = Json::from(Payload::from(p.payload));
            if let Some(analyzed) = &mask.required {
                let text = payload["text"].as_str().unwrap_or_default();
                if !analyzed.satisfies_required(text, &all_text(&payload)) {
                    continue;
                }
            }
            out.push((seen.step(payload)?, p.score));
        }
        Ok(out)
    }

    fn id_of(&self, incident: u32) -> IncidentId {
        self.seen().incidents[incident as usize].clone()
    }

    /// A BM25 query on the sparse vector `using` (steps: [`SPARSE`], whole write-ups:
    /// [`WHOLE`]), `None` when the query has no terms.
    fn sparse_request(
        &self,
        sparse: &(Vec<u32>, Vec<f32>),
        n: usize,
        using: &str,
    ) -> Option<QueryPointsBuilder> {
        let (indices, values) = sparse.clone();
        (!indices.is_empty()).then(|| {
            self.store
                .query_builder(n)
                .query(VectorInput::new_sparse(indices, values))
                .using(using)
        })
    }

    /// The BM25 query over steps.
    fn lexical_request(
        &self,
        sparse: &(Vec<u32>, Vec<f32>),
        n: usize,
        mask: &Mask,
    ) -> Option<QueryPoints> {
        let request = self.sparse_request(sparse, n, SPARSE)?;
        Some(
            request
                .filter(mask.filter.clone())
                .with_payload(mask.lean())
                .build(),
        )
    }

    /// The BM25 query over whole write-ups (the incident points), unfiltered.
    fn incident_request(&self, sparse: &(Vec<u32>, Vec<f32>), n: usize) -> Option<QueryPoints> {
        let request = self.sparse_request(sparse, n, WHOLE)?;
        Some(
            request
                .with_payload(PayloadIncludeSelector::new(vec!["incident_id".to_owned()]))
                .build(),
        )
    }

    /// Incident points as ranks of the incident-level leg.
    fn incident_ranks(&self, points: Vec<ScoredPoint>) -> Result<IncidentRanks<u32>> {
        let mut seen = self.seen();
        let mut out = HashMap::with_capacity(points.len());
        for (position, p) in points.into_iter().enumerate() {
            let payload = Json::from(Payload::from(p.payload));
            let incident = seen.incident(parse_incident_id(&payload["incident_id"])?);
            out.entry(incident)
                .or_insert((position as u32 + 1, p.score));
        }
        Ok(out)
    }
}

impl Retrieval for View<'_> {
    type Step = u32;
    type Incident = u32;
    type Mask = Mask;

    fn check_model(&self, embedder: &dyn Embedder) -> Result<()> {
        self.store.check_model(embedder)
    }

    fn dimension(&self) -> usize {
        self.store.dimension
    }

    fn mask(
        &self,
        filters: &Filters,
        exclude: Option<u32>,
        required: Option<&Analyzed>,
    ) -> Result<Mask> {
        if !filters.incident_ids.is_empty() {
            let held = self.store.held_incidents(&filters.incident_ids)?;
            if let Some(missing) = filters.incident_ids.iter().find(|id| !held.contains(*id)) {
                return Err(Error::UnknownIncident(missing.clone()));
            }
        }
        let exclude = exclude.map(|n| self.id_of(n));
        Ok(Mask {
            filter: to_filter(filters, exclude.as_ref()),
            required: required.filter(|a| !a.required.is_empty()).cloned(),
        })
    }

    fn lexical(&self, analyzed: &Analyzed, n: usize, mask: &Mask) -> Result<Ranked<u32>> {
        let Some(request) = self.lexical_request(&query_sparse(analyzed), n, mask) else {
            return Ok(Vec::new());
        };
        let points = self.store.query("searching full text", request)?;
        self.ranked(points, mask)
    }

    fn lexical_with_incidents(
        &self,
        analyzed: &Analyzed,
        n: usize,
        mask: &Mask,
        with_incidents: bool,
    ) -> Result<(Ranked<u32>, Option<IncidentRanks<u32>>)> {
        if !with_incidents {
            return Ok((self.lexical(analyzed, n, mask)?, None));
        }
        let sparse = query_sparse(analyzed);
        let (Some(steps), Some(whole)) = (
            self.lexical_request(&sparse, n, mask),
            self.incident_request(&sparse, n),
        ) else {
            // No query terms: neither leg has anything to find.
            return Ok((Vec::new(), Some(HashMap::new())));
        };
        // Both sparse queries in one round trip.
        let name = self.store.options.collection.clone();
        let mut batch = QueryBatchPointsBuilder::new(&name, vec![steps, whole]);
        if let Some(consistency) = self.store.options.read_consistency {
            batch = batch.read_consistency(consistency.value());
        }
        let batch = batch.build();
        let response = self.store.call(
            "searching full text",
            self.store.options.query_budget,
            || self.store.client.query_batch(batch.clone()),
        )?;
        let mut results = response.result.into_iter();
        let (Some(steps), Some(whole)) = (results.next(), results.next()) else {
            return Err(Error::Qdrant(
                "a batch of two queries returned fewer answers".into(),
            ));
        };
        Ok((
            self.ranked(steps.result, mask)?,
            Some(self.incident_ranks(whole.result)?),
        ))
    }

    fn vectors(&self, queries: &[Vec<f32>], n: usize, mask: &Mask) -> Result<Vec<Ranked<u32>>> {
        if queries.is_empty() {
            return Ok(Vec::new());
        }
        let params = SearchParamsBuilder::default().exact(self.store.options.exact);
        let requests: Vec<QueryPoints> = queries
            .iter()
            .map(|q| {
                self.store
                    .query_builder(n)
                    .query(q.clone())
                    .using(DENSE)
                    .params(params.clone())
                    .filter(mask.filter.clone())
                    .with_payload(mask.lean())
                    .build()
            })
            .collect();
        let name = self.store.options.collection.clone();
        let mut batch = QueryBatchPointsBuilder::new(&name, requests);
        if let Some(consistency) = self.store.options.read_consistency {
            batch = batch.read_consistency(consistency.value());
        }
        let batch = batch.build();
        let response =
            self.store
                .call("searching vectors", self.store.options.query_budget, || {
                    self.store.client.query_batch(batch.clone())
                })?;
        response
            .result
            .into_iter()
            .map(|r| self.ranked(r.result, mask))
            .collect()
    }

    fn incident_leg(&self, analyzed: &Analyzed, n: usize) -> Result<IncidentRanks<u32>> {
        let Some(request) = self.incident_request(&query_sparse(analyzed), n) else {
            return Ok(HashMap::new());
        };
        let points = self.store.query("searching whole write-ups", request)?;
        self.incident_ranks(points)
    }

    fn incident_of(&self, step: u32) -> u32 {
        self.seen().steps[step as usize].incident
    }

    fn find_incident(&self, id: &IncidentId) -> Result<Option<u32>> {
        let held = self.store.held_incidents(std::slice::from_ref(id))?;
        Ok(held.into_iter().next().map(|id| self.seen().incident(id)))
    }

    fn incident_with_hash(&self, hash: &ContentHash) -> Result<Option<u32>> {
        let name = self.store.options.collection.clone();
        let filter = Filter::must([
            Condition::matches("doc", INCIDENT_DOC.to_owned()),
            Condition::matches("content_hash", hash.as_str().to_owned()),
        ]);
        let response = self.store.call(
            "looking up a write-up",
            self.store.options.query_budget,
            || {
                self.store.client.scroll(
                    ScrollPointsBuilder::new(&name)
                        .filter(filter.clone())
                        .limit(1)
                        .with_payload(PayloadIncludeSelector::new(vec!["incident_id".to_owned()])),
                )
            },
        )?;
        let Some(p) = response.result.into_iter().next() else {
            return Ok(None);
        };
        let id = parse_incident_id(&Json::from(Payload::from(p.payload))["incident_id"])?;
        Ok(Some(self.seen().incident(id)))
    }

    fn source(&self, incident: u32) -> Result<SourceSteps> {
        let id = self.id_of(incident);
        let mut points = self.store.incident_points(&id)?;
        if points.is_empty() {
            return Err(Error::UnknownIncident(id));
        }
        points.sort_by_key(|(p, _)| p["ordinal"].as_u64());
        let title = points[0].0["title"].as_str().unwrap_or_default().to_owned();
        let situation: Vec<_> = points
            .iter()
            .filter(|(p, _)| {
                serde_json::from_value::<StepKind>(p["kind"].clone())
                    .is_ok_and(|k| SITUATION_KINDS.contains(&k))
            })
            .cloned()
            .collect();
        let mut chosen = if situation.is_empty() {
            points
        } else {
            situation
        };
        chosen.truncate(MAX_SOURCE_STEPS);
        let mut text = title;
        for (p, _) in &chosen {
            text.push('\n');
            text.push_str(p["text"].as_str().unwrap_or_default());
        }
        let vectors = chosen.into_iter().map(|(_, v)| v).collect();
        Ok(SourceSteps { text, vectors })
    }

    fn prepare(&self, steps: &[u32]) -> Result<()> {
        let wanted: Vec<String> = {
            let seen = self.seen();
            let mut ids: Vec<String> = steps
                .iter()
                .map(|&n| &seen.steps[n as usize])
                .filter(|s| !s.full)
                .map(|s| s.payload["step_id"].as_str().unwrap_or_default().to_owned())
                .collect();
            ids.sort();
            ids.dedup();
            ids
        };
        if wanted.is_empty() {
            return Ok(());
        }
        let ids: Vec<PointId> = wanted
            .iter()
            .map(|id| {
                StepId::parse(id)
                    .map(|id| PointId::from(point_id(&id)))
                    .map_err(|_| Error::Qdrant(format!("a point has the bad step id {id:?}")))
            })
            .collect::<Result<_>>()?;
        let name = self.store.options.collection.clone();
        let mut request = GetPointsBuilder::new(&name, ids).with_payload(true);
        if let Some(consistency) = self.store.options.read_consistency {
            request = request.read_consistency(consistency.value());
        }
        let request = request.build();
        let response = self
            .store
            .call("reading steps", self.store.options.query_budget, || {
                self.store.client.get_points(request.clone())
            })?;
        let mut seen = self.seen();
        for p in response.result {
            let payload = Json::from(Payload::from(p.payload));
            let step_id = payload["step_id"].as_str().unwrap_or_default();
            if let Some(&n) = seen.step_numbers.get(step_id) {
                let step = &mut seen.steps[n as usize];
                step.payload = payload;
                step.full = true;
            }
        }
        // A point deleted between the query and now: its hit would have no text.
        match steps.iter().find(|&&n| !seen.steps[n as usize].full) {
            Some(&n) => Err(Error::QdrantUnavailable(format!(
                "step {} changed while it was being read; ask again",
                seen.steps[n as usize].payload["step_id"]
            ))),
            None => Ok(()),
        }
    }

    fn hits(&self, steps: &[(u32, Score)], snippet: &dyn Fn(&str) -> String) -> Result<Vec<Hit>> {
        let numbers: Vec<u32> = steps.iter().map(|(n, _)| *n).collect();
        self.prepare(&numbers)?;
        let seen = self.seen();
        steps
            .iter()
            .map(|(step, score)| {
                to_hit(&seen.steps[*step as usize].payload, score.clone(), snippet)
            })
            .collect()
    }

    fn summary(&self, incident: u32) -> Result<IncidentSummary> {
        let seen = self.seen();
        // Any step of the incident read in full (`prepare` read the ones `similar` shows).
        let step = seen
            .steps
            .iter()
            .find(|s| s.incident == incident && s.full)
            .ok_or_else(|| {
                Error::Qdrant(format!(
                    "no step of incident {} was read",
                    seen.incidents[incident as usize]
                ))
            })?;
        let payload = &step.payload;
        let meta = &payload["incident"];
        Ok(IncidentSummary {
            incident_id: seen.incidents[incident as usize].clone(),
            title: payload["title"].as_str().unwrap_or_default().to_owned(),
            path: payload["path"].as_str().unwrap_or_default().to_owned(),
            date: serde_json::from_value::<Option<DateRange>>(meta["date"].clone())
                .unwrap_or_default(),
            severity: meta["severity"].as_str().map(str::to_owned),
            services: serde_json::from_value(meta["services"].clone()).unwrap_or_default(),
            card: serde_json::from_value(meta["card"].clone()).unwrap_or_default(),
        })
    }
}

/// Time limit of a `/healthz` probe of Qdrant, retries included.
const HEALTH_BUDGET: Duration = Duration::from_secs(2);

/// Steps of an incident revision: `{incident id}@{first 16 hex digits of its file's hash}`.
fn revision(id: &IncidentId, hash: &str) -> String {
    format!("{}@{}", id.as_str(), &hash[..hash.len().min(16)])
}

/// Who owns a point's incident, as the `origin` payload field says it.
fn origin_name(origin: Origin) -> &'static str {
    match origin {
        Origin::Corpus => "corpus",
        Origin::Api => "api",
    }
}

/// The incident id of a revision name (`{id}@{hash}`).
fn incident_of_revision(rev: &str) -> Option<IncidentId> {
    IncidentId::parse(rev.rsplit_once('@')?.0).ok()
}

/// Every point of an incident revision: one per step (with `vectors[i]`, the embedding of step
/// `i`) and the incident point.
fn points_of(
    incident: &Incident,
    vectors: Vec<Vec<f32>>,
    rev: &str,
    origin: Origin,
) -> Result<Vec<PointStruct>> {
    if vectors.len() != incident.steps.len() {
        return Err(Error::Corrupt(format!(
            "{} steps and {} vectors for incident {}",
            incident.steps.len(),
            vectors.len(),
            incident.id
        )));
    }
    let mut points = Vec::with_capacity(incident.steps.len() + 1);
    for (step, vector) in incident.steps.iter().zip(vectors) {
        let (indices, values) = doc_sparse(&incident.title, &step.heading_path, &step.text);
        let mut payload = json!({
            "doc": STEP_DOC,
            "origin": origin_name(origin),
            "step_id": step.id.as_str(),
            "incident_id": incident.id.as_str(),
            "incident_rev": rev,
            "ordinal": step.ordinal,
            "title": incident.title,
            "kind": step.kind,
            "outcome": step.outcome,
            "text": step.text,
            "headings": step.heading_path,
            "path": incident.path,
            "line_start": step.line_start,
            "line_end": step.line_end,
            "incident": {
                "date": incident.date,
                "severity": incident.severity,
                "services": incident.services,
                "card": incident.card,
            },
        });
        add_filter_fields(&mut payload, incident);
        let payload = Payload::try_from(payload).map_err(|e| Error::Qdrant(e.to_string()))?;
        points.push(PointStruct::new(
            point_id(&step.id),
            NamedVectors::default()
                .add_vector(DENSE, Vector::new_dense(vector))
                .add_vector(SPARSE, Vector::new_sparse(indices, values)),
            payload,
        ));
    }
    points.push(incident_point(incident, rev, origin)?);
    Ok(points)
}

/// The point of a whole write-up: the [`WHOLE`] sparse vector of its title, every heading once
/// and every step (as the embedded store's incident index holds it); its metadata, lowercased
/// as the filters and facets read it; and the whole parse (`record`, JSON), which `incident`
/// returns and avenues read.
fn incident_point(incident: &Incident, rev: &str, origin: Origin) -> Result<PointStruct> {
    let (headings, text) = crate::writer::whole_write_up(incident);
    let (indices, values) = sparse_weights(&[
        (&incident.title, BOOSTS.title, AVG_TITLE, STEM),
        (&headings, BOOSTS.headings, AVG_WHOLE_HEADINGS, STEM),
        (&text, BOOSTS.text, AVG_WHOLE_TEXT, STEM),
        (
            &format!("{}\n{headings}\n{text}", incident.title),
            BOOSTS.ident,
            AVG_WHOLE_TEXT,
            IDENT,
        ),
    ]);
    let record = serde_json::to_string(incident).map_err(|e| Error::Qdrant(e.to_string()))?;
    let mut payload = json!({
        "doc": INCIDENT_DOC,
        "origin": origin_name(origin),
        "incident_id": incident.id.as_str(),
        "incident_rev": rev,
        "content_hash": incident.content_hash.as_str(),
        "title": incident.title,
        "path": incident.path,
        "record": record,
    });
    add_filter_fields(&mut payload, incident);
    let payload = Payload::try_from(payload).map_err(|e| Error::Qdrant(e.to_string()))?;
    Ok(PointStruct::new(
        incident_point_id(&incident.id),
        NamedVectors::default().add_vector(WHOLE, Vector::new_sparse(indices, values)),
        payload,
    ))
}

/// The incident's fields that filters and facets read, lowercased as they match: the same on
/// its step points and its incident point.
fn add_filter_fields(payload: &mut Json, incident: &Incident) {
    let fields = json!({
        "services": lower(&incident.services),
        "tags": lower(&incident.tags),
        "severity": incident.severity.as_ref().map(|s| s.trim().to_lowercase()),
        "date_days": incident.date.map(|d| crate::writer::days_since_epoch(d.start)),
        "trigger_class": incident.card.trigger_class,
        "remediation_class": incident.card.remediation_class,
    });
    if let (Some(payload), Json::Object(fields)) = (payload.as_object_mut(), fields) {
        payload.extend(fields);
    }
}

/// UUIDv5 (URL namespace) of the incident id: the id of its incident point.
fn incident_point_id(id: &IncidentId) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("precedent:incident:{}", id.as_str()).as_bytes(),
    )
    .to_string()
}

/// UUIDv5 (URL namespace) of the step id.
fn point_id(id: &StepId) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("precedent:step:{}", id.as_str()).as_bytes(),
    )
    .to_string()
}

fn lower(values: &[String]) -> Vec<String> {
    values.iter().map(|s| s.trim().to_lowercase()).collect()
}

/// Sparse dimension of a term: a stable 32-bit hash of the analyser tag and the term.
fn term_index(tag: u8, term: &str) -> u32 {
    let mut h = blake3::Hasher::new();
    h.update(&[tag]);
    h.update(term.as_bytes());
    let b = h.finalize();
    u32::from_le_bytes([
        b.as_bytes()[0],
        b.as_bytes()[1],
        b.as_bytes()[2],
        b.as_bytes()[3],
    ])
}

const STEM: u8 = b's';
const IDENT: u8 = b'i';

/// BM25 document weights (term-frequency saturation and length normalisation; Qdrant
/// multiplies in the IDF) over the fields of the full-text index, with its field boosts.
fn doc_sparse(title: &str, headings: &[String], text: &str) -> (Vec<u32>, Vec<f32>) {
    let headings = headings.join(" \u{2192} ");
    let all = format!("{title}\n{headings}\n{text}");
    sparse_weights(&[
        (title, BOOSTS.title, AVG_TITLE, STEM),
        (&headings, BOOSTS.headings, AVG_HEADINGS, STEM),
        (text, BOOSTS.text, AVG_TEXT, STEM),
        (&all, BOOSTS.ident, AVG_IDENT, IDENT),
    ])
}

/// BM25 document weights of fields given as (text, boost, typical length in terms, analyser).
fn sparse_weights(fields: &[(&str, f32, f32, u8)]) -> (Vec<u32>, Vec<f32>) {
    let mut weights: BTreeMap<u32, f32> = BTreeMap::new();
    let mut stem = stem_index_analyzer();
    let mut ident = ident_analyzer();
    for &(field, boost, avg, tag) in fields {
        let analyzer = if tag == STEM { &mut stem } else { &mut ident };
        let toks = terms(analyzer, field);
        let len = toks.len() as f32;
        let mut tf: HashMap<&str, f32> = HashMap::new();
        for t in &toks {
            *tf.entry(t.as_str()).or_default() += 1.0;
        }
        for (t, f) in tf {
            let w = f * (K1 + 1.0) / (f + K1 * (1.0 - B + B * len / avg));
            *weights.entry(term_index(tag, t)).or_default() += boost * w;
        }
    }
    weights.into_iter().unzip()
}

/// The query's terms, each of weight 1: stems, and identifiers that are not also stems (as
/// in the full-text query).
fn query_sparse(analyzed: &Analyzed) -> (Vec<u32>, Vec<f32>) {
    let mut weights: BTreeMap<u32, f32> = BTreeMap::new();
    for t in &analyzed.stems {
        weights.insert(term_index(STEM, t), 1.0);
    }
    for t in analyzed
        .idents
        .iter()
        .filter(|t| !analyzed.stems.contains(t))
    {
        weights.insert(term_index(IDENT, t), 1.0);
    }
    // Synonyms, down-weighted as in the full-text query; a phrase's words share its weight.
    for e in &analyzed.expansions {
        let w = EXPANSION_WEIGHT / e.stems.len().max(1) as f32;
        for t in &e.stems {
            weights.entry(term_index(STEM, t)).or_insert(w);
        }
        if let [t] = e.idents.as_slice()
            && !e.stems.contains(t)
        {
            weights
                .entry(term_index(IDENT, t))
                .or_insert(EXPANSION_WEIGHT);
        }
    }
    weights.into_iter().unzip()
}

/// The filters as a Qdrant filter (`None` when nothing is restricted).
fn to_filter(filters: &Filters, exclude: Option<&IncidentId>) -> Filter {
    let mut must = Vec::new();
    let any = |field: &str, values: Vec<String>| Condition::matches(field, values);
    if !filters.kinds.is_empty() {
        let kinds = filters
            .kinds
            .iter()
            .filter_map(|k| serde_json::to_value(k).ok()?.as_str().map(str::to_owned))
            .collect();
        must.push(any("kind", kinds));
    }
    if !filters.services.is_empty() {
        must.push(any("services", lower(&filters.services)));
    }
    if !filters.severities.is_empty() {
        must.push(any("severity", lower(&filters.severities)));
    }
    if !filters.tags.is_empty() {
        must.push(any("tags", lower(&filters.tags)));
    }
    if !filters.incident_ids.is_empty() {
        must.push(any(
            "incident_id",
            filters
                .incident_ids
                .iter()
                .map(|i| i.as_str().to_owned())
                .collect(),
        ));
    }
    if !filters.trigger_classes.is_empty() {
        must.push(any(
            "trigger_class",
            filters
                .trigger_classes
                .iter()
                .map(|c| c.as_str().to_owned())
                .collect(),
        ));
    }
    if !filters.remediation_classes.is_empty() {
        must.push(any(
            "remediation_class",
            filters
                .remediation_classes
                .iter()
                .map(|c| c.as_str().to_owned())
                .collect(),
        ));
    }
    if filters.since.is_some() || filters.until.is_some() {
        must.push(Condition::range(
            "date_days",
            Range {
                gte: filters
                    .since
                    .map(|d| crate::writer::days_since_epoch(d) as f64),
                lte: filters
                    .until
                    .map(|d| crate::writer::days_since_epoch(d) as f64),
                ..Range::default()
            },
        ));
    }
    let mut filter = Filter::must(must);
    if let Some(id) = exclude {
        filter.must_not = vec![Condition::matches("incident_id", id.as_str().to_owned())];
    }
    filter
}

fn parse_incident_id(v: &Json) -> Result<IncidentId> {
    IncidentId::parse(v.as_str().unwrap_or_default())
        .map_err(|e| Error::Qdrant(format!("point with a bad incident id: {e}")))
}

/// Title, headings and text of a step payload, as the identifier field holds them.
fn all_text(p: &Json) -> String {
    let headings: Vec<&str> = p["headings"]
        .as_array()
        .map(|a| a.iter().filter_map(Json::as_str).collect())
        .unwrap_or_default();
    format!(
        "{}\n{}\n{}",
        p["title"].as_str().unwrap_or_default(),
        headings.join(" \u{2192} "),
        p["text"].as_str().unwrap_or_default()
    )
}

fn to_hit(p: &Json, score: Score, snippet: &dyn Fn(&str) -> String) -> Result<Hit> {
    let text = p["text"].as_str().unwrap_or_default().to_owned();
    Ok(Hit {
        step_id: StepId::parse(p["step_id"].as_str().unwrap_or_default())
            .map_err(|e| Error::Qdrant(format!("point with a bad step id: {e}")))?,
        incident_id: parse_incident_id(&p["incident_id"])?,
        title: p["title"].as_str().unwrap_or_default().to_owned(),
        kind: serde_json::from_value(p["kind"].clone())
            .map_err(|e| Error::Qdrant(format!("point with a bad kind: {e}")))?,
        outcome: serde_json::from_value(p["outcome"].clone()).unwrap_or_default(),
        heading_path: serde_json::from_value(p["headings"].clone()).unwrap_or_default(),
        date: serde_json::from_value(p["incident"]["date"].clone()).unwrap_or_default(),
        services: serde_json::from_value(p["incident"]["services"].clone()).unwrap_or_default(),
        snippet: snippet(&text),
        text,
        score,
        citation: Citation {
            path: p["path"].as_str().unwrap_or_default().to_owned(),
            line_start: p["line_start"].as_u64().unwrap_or_default() as u32,
            line_end: p["line_end"].as_u64().unwrap_or_default() as u32,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_vectors_weigh_fields_and_saturate() {
        let (i, v) = doc_sparse(
            "Disk full",
            &["Impact".into()],
            "disk disk disk full on db1",
        );
        assert_eq!(i.len(), v.len());
        assert!(
            i.windows(2).all(|w| w[0] < w[1]),
            "indices sorted and distinct"
        );
        let disk = v[i
            .iter()
            .position(|&x| x == term_index(STEM, "disk"))
            .unwrap()];
        let db1 = v[i
            .iter()
            .position(|&x| x == term_index(STEM, "db1"))
            .unwrap()];
        // Three occurrences plus the title weigh more than one, but far less than 4x.
        assert!(disk > db1 && disk < 4.0 * db1, "{disk} {db1}");
        let (qi, qv) = query_sparse(&Analyzed::plain("the disk is full"));
        assert_eq!(qv, vec![1.0; qi.len()]);
        assert!(qi.contains(&term_index(STEM, "disk")));
    }

    #[test]
    fn point_ids_are_stable_uuids() {
        let id = StepId::parse("0123456789abcdef0123456789abcdef").unwrap();
        assert_eq!(point_id(&id), point_id(&id));
        assert_eq!(point_id(&id).len(), 36);
        assert_eq!(&point_id(&id)[14..15], "5", "version 5");
    }

    #[test]
    fn filters_become_conditions() {
        let f = to_filter(&Filters::default(), None);
        assert!(f.must.is_empty() && f.must_not.is_empty());
        let id = IncidentId::parse("a/b.md").unwrap_or_else(|_| {
            IncidentId::parse("0123456789abcdef").expect("some valid incident id")
        });
        let f = to_filter(
            &Filters {
                services: vec!["API".into()],
                since: chrono::NaiveDate::from_ymd_opt(2024, 1, 1),
                ..Filters::default()
            },
            Some(&id),
        );
        assert_eq!(f.must.len(), 2);
        assert_eq!(f.must_not.len(), 1);
    }
}
