//! Options shared by several commands: where the index and the model are, and search filters.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use chrono::NaiveDate;
use precedent_core::{Embedder, RemediationClass, StepKind, TriggerClass};
use precedent_embed::{BertEmbedder, EmbedderOptions, Precision, resolve_model_dir};
use precedent_index::dates::{DateEdge, parse_date, today};
#[cfg(feature = "qdrant")]
pub use precedent_index::qdrant::QdrantStore;
use precedent_index::{Engine, Filters, Store};

/// Stands in for the Qdrant store in a build without the `qdrant` feature: it cannot exist, so
/// its methods are never called; `--store qdrant` fails with a clear error before.
#[cfg(not(feature = "qdrant"))]
pub enum QdrantStore {}

#[cfg(not(feature = "qdrant"))]
impl QdrantStore {
    pub fn collection(&self) -> &str {
        match *self {}
    }
    pub fn with_synonyms(self, _: precedent_index::Synonyms) -> Self {
        match self {}
    }
    pub fn sync_from(
        &self,
        _: &std::path::Path,
        _: &dyn precedent_index::Progress,
    ) -> precedent_index::Result<Summary> {
        match *self {}
    }
}

/// What a Qdrant sync reports (never built without the `qdrant` feature).
#[cfg(not(feature = "qdrant"))]
pub struct Summary {
    pub incidents_upserted: usize,
    pub revisions_deleted: usize,
    pub points_upserted: usize,
    pub points_total: u64,
    pub elapsed: std::time::Duration,
}

#[cfg(not(feature = "qdrant"))]
impl precedent_index::Store for QdrantStore {
    fn search(
        &self,
        _: &precedent_index::SearchRequest,
        _: &dyn Embedder,
    ) -> precedent_index::Result<precedent_index::SearchResponse> {
        match *self {}
    }
    fn similar(
        &self,
        _: &precedent_index::SimilarRequest,
        _: &dyn Embedder,
    ) -> precedent_index::Result<precedent_index::SimilarResponse> {
        match *self {}
    }
    fn incident(
        &self,
        _: &precedent_core::IncidentId,
    ) -> precedent_index::Result<Option<precedent_core::Incident>> {
        match *self {}
    }
    fn resolve_incident(&self, _: &str) -> precedent_index::Result<precedent_core::IncidentId> {
        match *self {}
    }
    fn facets(&self) -> precedent_index::Result<precedent_index::Facets> {
        match *self {}
    }
    fn stats(&self) -> precedent_index::Result<precedent_index::Stats> {
        match *self {}
    }
    fn list_incidents(
        &self,
        _: usize,
    ) -> precedent_index::Result<Vec<precedent_index::IncidentEntry>> {
        match *self {}
    }
    fn kind(&self) -> &'static str {
        match *self {}
    }
}

/// `--index`: where the index lives.
#[derive(Debug, Clone, clap::Args)]
pub struct IndexArgs {
    /// Index directory.
    #[arg(
        long,
        env = "PRECEDENT_INDEX",
        default_value = ".precedent",
        value_name = "PATH"
    )]
    pub index: PathBuf,
}

/// `--model-dir`: which embedding model to use.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// Sentence-transformers model directory [default: the cache filled by scripts/fetch-model].
    #[arg(long, env = "PRECEDENT_MODEL_DIR", value_name = "PATH")]
    pub model_dir: Option<PathBuf>,
    /// Number format of the model's products: auto (an existing index's own; for a new one
    /// bf16 where the CPU has AMX, else f32), f32 or bf16. Part of the model id: an index built
    /// with one is rebuilt by `index` and refused by searches with the other.
    #[arg(
        long,
        env = "PRECEDENT_PRECISION",
        default_value = "auto",
        value_name = "auto|f32|bf16",
        value_parser = parse_precision
    )]
    pub precision: Precision,
}

fn parse_precision(s: &str) -> Result<Precision, String> {
    Precision::parse(s).ok_or_else(|| format!("unknown precision {s:?}: use auto, f32 or bf16"))
}

impl ModelArgs {
    /// Loads the model for the index at `index`: with `--precision auto`, in the precision the
    /// index was built with, so an index built on a machine without AMX (f32) still answers on
    /// one with it, and `index` updates it in place instead of re-embedding everything.
    pub fn load_for(&self, index: &std::path::Path) -> anyhow::Result<Arc<dyn Embedder>> {
        let precision = match (self.precision, precedent_index::index_model_id(index)) {
            (Precision::Auto, Some(id)) if id.ends_with("+bf16") => Precision::Bf16,
            (Precision::Auto, Some(_)) => Precision::F32,
            (precision, _) => precision,
        };
        self.load_with(precision)
    }

    /// The model for the Qdrant collection of `store` with no local index: `auto` precision
    /// takes the collection's (or, for a new collection, that of a new index).
    pub fn load_for_collection(&self, store: &StoreArgs) -> anyhow::Result<Arc<dyn Embedder>> {
        let precision = match (self.precision, store.collection_model()?) {
            (Precision::Auto, Some(id)) if id.ends_with("+bf16") => Precision::Bf16,
            (Precision::Auto, Some(_)) => Precision::F32,
            (precision, _) => precision,
        };
        self.load_with(precision)
    }

    fn load_with(&self, precision: Precision) -> anyhow::Result<Arc<dyn Embedder>> {
        let dir = resolve_model_dir(self.model_dir.as_deref())?;
        let options = EmbedderOptions {
            precision,
            ..EmbedderOptions::default()
        };
        let embedder = BertEmbedder::load(&dir, options)
            .with_context(|| format!("cannot load the embedding model from {}", dir.display()))?;
        Ok(Arc::new(embedder))
    }
}

/// Stands in for the model where none is needed (lexical search): it has no vectors to give,
/// and says so if asked.
#[derive(Debug)]
pub struct NoModel;

impl Embedder for NoModel {
    fn model_id(&self) -> &str {
        "none"
    }
    fn dimension(&self) -> usize {
        0
    }
    fn embed(&self, _: &[&str]) -> Result<Vec<Vec<f32>>, precedent_core::BoxError> {
        Err("no embedding model loaded (lexical mode)".into())
    }
}

/// Adds what to do to an error that has a known way out: a model that does not match the
/// index.
pub fn explain(err: anyhow::Error, model: &ModelArgs, index: &IndexArgs) -> anyhow::Error {
    let Some(precedent_index::Error::ModelMismatch { index_model, .. }) =
        err.downcast_ref::<precedent_index::Error>()
    else {
        return err;
    };
    let given = model.model_dir.as_ref().map_or_else(
        || "the default model".to_owned(),
        |d| d.display().to_string(),
    );
    let hint = format!(
        "either pass --model-dir and --precision for the model the index was built with \
         ({index_model}; a `+bf16` suffix means --precision bf16, none f32), or re-index \
         with this one: `precedent index DIR --index {} --model-dir {given}` (a full \
         rebuild); `--mode lexical` needs no model",
        index.index.display()
    );
    err.context(hint)
}

/// Where steps are stored and searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// The index directory (`--index`): one machine, no server.
    Embedded,
    /// A Qdrant server or cluster (`--qdrant-url`): every read comes from the collection;
    /// `index` stages in `--index` first; `serve`, `mcp` and `show` need no local index.
    Qdrant,
}

/// `--store` and the Qdrant connection: under their own heading, shown by `--help-all`.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Qdrant store (shown by --help-all)")]
pub struct StoreArgs {
    /// Where steps are stored and searched.
    #[arg(
        long,
        env = "PRECEDENT_STORE",
        default_value = "embedded",
        hide_short_help = true
    )]
    pub store: StoreKind,
    /// Qdrant gRPC URL (with --store qdrant).
    #[arg(
        long,
        env = "PRECEDENT_QDRANT_URL",
        default_value = "http://127.0.0.1:6334",
        value_name = "URL",
        hide_short_help = true
    )]
    pub qdrant_url: String,
    /// File holding the Qdrant API key (never on the command line).
    #[arg(
        long,
        env = "PRECEDENT_QDRANT_API_KEY_FILE",
        value_name = "FILE",
        hide_short_help = true
    )]
    pub qdrant_api_key_file: Option<PathBuf>,
    /// Qdrant collection.
    #[arg(
        long,
        env = "PRECEDENT_COLLECTION",
        default_value = "precedent",
        value_name = "NAME",
        hide_short_help = true
    )]
    pub collection: String,
    /// Exact (brute-force) dense search in Qdrant instead of its HNSW.
    #[arg(long, hide = true)]
    pub qdrant_exact: bool,
    /// Shards of a new collection [default: Qdrant's, one per node].
    #[arg(
        long,
        env = "PRECEDENT_QDRANT_SHARDS",
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..),
        hide_short_help = true
    )]
    pub qdrant_shards: Option<u32>,
    /// Copies of each shard in a new collection [default: 2, so that a cluster of three or
    /// more nodes keeps answering after losing one]. Given, an existing collection made with
    /// another factor is refused.
    #[arg(
        long,
        env = "PRECEDENT_QDRANT_REPLICATION",
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..),
        hide_short_help = true
    )]
    pub qdrant_replication: Option<u32>,
    /// Replicas that must acknowledge a write [default: 1].
    #[arg(
        long,
        env = "PRECEDENT_QDRANT_WRITE_CONSISTENCY",
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..),
        hide_short_help = true
    )]
    pub qdrant_write_consistency: Option<u32>,
    /// Replicas a search must hear from: all, majority, quorum or a number [default: Qdrant's,
    /// 1].
    #[arg(
        long,
        env = "PRECEDENT_QDRANT_READ_CONSISTENCY",
        value_name = "C",
        hide_short_help = true
    )]
    pub qdrant_read_consistency: Option<String>,
    /// Keep payload and dense vectors of a new collection on disk (memory-mapped) instead of
    /// in RAM.
    #[arg(long, env = "PRECEDENT_QDRANT_ON_DISK", hide_short_help = true)]
    pub qdrant_on_disk: bool,
}

impl StoreArgs {
    #[cfg(not(feature = "qdrant"))]
    pub fn qdrant(&self, _: &dyn Embedder) -> anyhow::Result<QdrantStore> {
        anyhow::bail!("this build of precedent has no Qdrant store (build with --features qdrant)")
    }

    /// The model id the collection was made for, `None` when it does not exist yet.
    #[cfg(feature = "qdrant")]
    pub fn collection_model(&self) -> anyhow::Result<Option<String>> {
        Ok(QdrantStore::model_of_collection(&self.qdrant_options()?)?)
    }

    #[cfg(not(feature = "qdrant"))]
    pub fn collection_model(&self) -> anyhow::Result<Option<String>> {
        anyhow::bail!("this build of precedent has no Qdrant store (build with --features qdrant)")
    }

    /// Connects to the Qdrant collection for `embedder`'s model (creating it on first use).
    #[cfg(feature = "qdrant")]
    pub fn qdrant(&self, embedder: &dyn Embedder) -> anyhow::Result<QdrantStore> {
        Ok(QdrantStore::connect(
            self.qdrant_options()?,
            embedder.model_id(),
            embedder.dimension(),
        )?)
    }

    /// The connection and collection options the flags give.
    #[cfg(feature = "qdrant")]
    fn qdrant_options(&self) -> anyhow::Result<precedent_index::qdrant::QdrantOptions> {
        use precedent_index::qdrant::QdrantOptions;
        let mut options = QdrantOptions::new(&self.qdrant_url, &self.collection);
        options.exact = self.qdrant_exact;
        options.shards = self.qdrant_shards;
        options.replication = self.qdrant_replication;
        options.write_consistency = self.qdrant_write_consistency;
        options.read_consistency = self
            .qdrant_read_consistency
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e: String| anyhow::anyhow!(e))?;
        options.on_disk = self.qdrant_on_disk;
        if let Some(file) = &self.qdrant_api_key_file {
            let key = std::fs::read_to_string(file).with_context(|| {
                format!("cannot read the Qdrant API key from {}", file.display())
            })?;
            options.api_key = Some(key.trim().to_owned());
        }
        Ok(options)
    }
}

/// Filters on the steps a search may return.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FilterArgs {
    /// Only steps of this kind (repeatable): summary, impact, detection, investigation, action,
    /// mitigation, root_cause, lesson, follow_up, timeline_event, other.
    #[arg(long = "kind", value_name = "KIND")]
    pub kinds: Vec<StepKind>,
    /// Only incidents that affected this service (repeatable).
    #[arg(long = "service", value_name = "SERVICE")]
    pub services: Vec<String>,
    /// Only incidents of this severity as written, e.g. SEV1 (repeatable).
    #[arg(long = "severity", value_name = "SEVERITY")]
    pub severities: Vec<String>,
    /// Only incidents with this tag (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Only incidents that started on or after this date: 2023-06-01, 2023-06, 2023, or a
    /// time ago such as 7d or 2w.
    #[arg(long, value_name = "DATE", value_parser = parse_since)]
    pub since: Option<NaiveDate>,
    /// Only incidents that started on or before this date (2023-06 means up to June 30).
    #[arg(long, value_name = "DATE", value_parser = parse_until)]
    pub until: Option<NaiveDate>,
    /// Only steps of this incident: an id, a unique id prefix or a path (repeatable).
    #[arg(long = "incident", value_name = "ID")]
    pub incidents: Vec<String>,
    /// Only incidents whose trigger is of this class (repeatable): deploy_config, capacity,
    /// dependency, certificate_secret, dns_network, database_storage, code_bug,
    /// provider_hardware, operator_error, unknown.
    #[arg(long = "trigger-class", value_name = "CLASS")]
    pub trigger_classes: Vec<TriggerClass>,
    /// Only incidents restored this way (repeatable): rollback, config_fix, scale_up,
    /// restart_failover, traffic_shift, software_fix, self_resolved, undisclosed.
    #[arg(long = "remediation-class", value_name = "CLASS")]
    pub remediation_classes: Vec<RemediationClass>,
}

fn parse_since(text: &str) -> Result<NaiveDate, String> {
    parse_date(text, DateEdge::Start, today()).map_err(|e| e.to_string())
}

fn parse_until(text: &str) -> Result<NaiveDate, String> {
    parse_date(text, DateEdge::End, today()).map_err(|e| e.to_string())
}

impl FilterArgs {
    /// The filters, with `--incident` references (ids, id prefixes, paths) resolved by the
    /// store the command reads.
    pub fn to_filters(&self, store: &dyn Store) -> anyhow::Result<Filters> {
        let incident_ids = self
            .incidents
            .iter()
            .map(|r| Ok(store.resolve_incident(r)?))
            .collect::<anyhow::Result<_>>()?;
        Ok(Filters {
            kinds: self.kinds.clone(),
            services: self.services.clone(),
            severities: self.severities.clone(),
            since: self.since,
            until: self.until,
            tags: self.tags.clone(),
            incident_ids,
            trigger_classes: self.trigger_classes.clone(),
            remediation_classes: self.remediation_classes.clone(),
        })
    }
}

/// Writes `value` as pretty JSON on stdout.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    // As an io::Error, so that a closed pipe is recognised as one.
    serde_json::to_writer_pretty(&mut out, value).map_err(std::io::Error::from)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

/// The store a command reads, as `--store` says: the embedded index at `--index`, or the
/// Qdrant collection (which needs no local index).
pub fn open_store(
    store: &StoreArgs,
    index: &IndexArgs,
    embedder: &dyn Embedder,
) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match store.store {
        StoreKind::Embedded => Arc::new(open(index)?),
        StoreKind::Qdrant => Arc::new(store.qdrant(embedder)?),
    })
}

/// Opens the embedded index, saying how to build one when there is none.
pub fn open(index: &IndexArgs) -> anyhow::Result<Engine> {
    Engine::open(&index.index).with_context(|| {
        format!(
            "cannot open the index at {} (build it with `precedent index DIR`)",
            index.index.display()
        )
    })
}
