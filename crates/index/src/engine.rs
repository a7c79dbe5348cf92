//! The read side: search, `similar`, incidents and facets over the last published state.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use precedent_core::{ContentHash, Embedder, Incident, IncidentId, Outcome, StepId, StepKind};
use precedent_parse::{ParseOptions, parse};
use rustc_hash::{FxHashMap, FxHashSet};
use tantivy::collector::{FilterCollector, TopDocs};
use tantivy::query::TermQuery;
use tantivy::schema::{IndexRecordOption, Value};
use tantivy::{DocAddress, IndexReader, ReloadPolicy, Searcher, TantivyDocument, Term};

use crate::api::{
    Citation, FacetCount, Facets, Filters, Hit, IncidentEntry, MAX_DRAFT_BYTES, MAX_QUERY_BYTES,
    MatchCounts, MatchQuality, Score, SearchRequest, SearchResponse, SimilarRequest,
    SimilarResponse, Stats,
};
use crate::error::{Error, Result};
use crate::fusion::FusionOptions;
use crate::grep::Matcher;
use crate::layout::{INCIDENTS_DIR, STEPS_DIR, dir_size, open_tantivy};
use crate::manifest::{FORMAT_VERSION, IncidentMeta, MANIFEST_FILE, Manifest, vector_key};
use crate::query::{Analyzed, BOOSTS, Boosts, floor_boundary};
use crate::rank;
use crate::schema::{IncidentFields, KEY_FIELD, StepFields, incident_key};
use crate::searcher::{IncidentRanks, IncidentSummary, Ranked, Retrieval, SourceSteps};
use crate::synonyms::{SYNONYMS_FILE, Synonyms};
use crate::vectors::{Ann, VectorStore};
use crate::writer::days_since_epoch;

impl crate::api::Store for Engine {
    fn search(&self, request: &SearchRequest, embedder: &dyn Embedder) -> Result<SearchResponse> {
        Engine::search(self, request, embedder)
    }
    fn similar(
        &self,
        request: &SimilarRequest,
        embedder: &dyn Embedder,
    ) -> Result<SimilarResponse> {
        Engine::similar(self, request, embedder)
    }
    fn incident(&self, id: &IncidentId) -> Result<Option<Incident>> {
        Engine::incident(self, id)
    }
    fn resolve_incident(&self, reference: &str) -> Result<IncidentId> {
        Engine::resolve_incident(self, reference)
    }
    fn facets(&self) -> Result<Facets> {
        Ok(Engine::facets(self))
    }
    fn stats(&self) -> Result<Stats> {
        Ok(Engine::stats(self))
    }
    fn list_incidents(&self, limit: usize) -> Result<Vec<IncidentEntry>> {
        let s = self.snapshot();
        let mut all: Vec<IncidentEntry> = s
            .incidents
            .iter()
            .map(|i| IncidentEntry {
                incident_id: i.meta.id.clone(),
                title: i.meta.title.clone(),
                path: i.path.clone(),
            })
            .collect();
        all.sort_by(|a, b| a.path.cmp(&b.path));
        all.truncate(limit);
        Ok(all)
    }
    fn kind(&self) -> &'static str {
        "embedded"
    }
    fn refresh(&self) -> Result<bool> {
        self.reload_if_changed()
    }
}

/// The incident `wanted` names among `held` (id, path) pairs, when it is not a held full id:
/// a path relative to the corpus root (or absolute under `root`, or in its redacted form), a
/// unique id or path prefix; else [`Error::IncidentRef`] with the closest ids. Shared by every
/// store, so a reference means the same everywhere.
pub(crate) fn resolve_among(
    wanted: &str,
    root: Option<&Path>,
    held: &[(&IncidentId, &str)],
) -> Result<IncidentId> {
    let mut path = wanted.replace('\\', "/");
    if let Some(root) = root
        && let Ok(rel) = Path::new(wanted).strip_prefix(root)
    {
        path = rel.to_string_lossy().replace('\\', "/");
    }
    let path = path.trim_start_matches("./");
    // Paths are stored redacted (a secret in a file name is never indexed): the path as
    // the user types it names the file by its redacted form.
    let redacted = precedent_parse::redact_name(path);
    if let Some((id, _)) = held.iter().find(|(_, p)| *p == path || *p == redacted) {
        return Ok((*id).clone());
    }
    if wanted.is_empty() {
        return Err(Error::IncidentRef {
            reference: String::new(),
            ambiguous: false,
            candidates: Vec::new(),
        });
    }
    let lower = wanted.to_lowercase();
    let matches: Vec<&IncidentId> = held
        .iter()
        .filter(|(id, p)| {
            id.as_str().starts_with(&lower) || (!path.is_empty() && p.starts_with(path))
        })
        .map(|(id, _)| *id)
        .collect();
    match matches.as_slice() {
        [one] => return Ok((*one).clone()),
        [] => {}
        many => {
            let mut candidates: Vec<String> = many.iter().map(|i| i.to_string()).collect();
            candidates.sort();
            candidates.truncate(MAX_CANDIDATES);
            return Err(Error::IncidentRef {
                reference: wanted.to_owned(),
                ambiguous: true,
                candidates,
            });
        }
    }
    // Nothing starts with it: the ids and paths nearest to it.
    let mut scored: Vec<(usize, &str)> = held
        .iter()
        .map(|(id, p)| {
            let id = id.as_str();
            (
                closeness(&lower, id).max(closeness(&lower, &p.to_lowercase())),
                id,
            )
        })
        .filter(|(score, _)| *score > 0)
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    Err(Error::IncidentRef {
        reference: wanted.to_owned(),
        ambiguous: false,
        candidates: scored
            .into_iter()
            .take(MAX_CANDIDATES)
            .map(|(_, id)| id.to_owned())
            .collect(),
    })
}

/// Kinds whose steps describe an incident's situation: the query of `similar` from an indexed
/// incident.
pub(crate) const SITUATION_KINDS: [StepKind; 5] = [
    StepKind::Summary,
    StepKind::Detection,
    StepKind::Impact,
    StepKind::Investigation,
    StepKind::RootCause,
];
/// The same for a new write-up, whose root cause is usually not known yet.
const DRAFT_KINDS: [StepKind; 4] = [
    StepKind::Summary,
    StepKind::Impact,
    StepKind::Detection,
    StepKind::Investigation,
];
/// Most steps of a source used as queries by `similar`.
pub(crate) const MAX_SOURCE_STEPS: usize = 12;
/// Steps of one incident that add up to its `similar` score, and that are shown.
pub(crate) const STEPS_PER_INCIDENT: usize = 3;
/// With a filter that leaves at most this many steps, vector search scans them exactly instead
/// of walking the graph (an HNSW walk degrades when few nodes pass the filter).
const EXACT_SCAN_MAX: usize = 4096;
/// Fewest candidates fetched from the ANN graph before exact re-ranking.
const ANN_MIN_CANDIDATES: usize = 200;

/// Read access to a published index. Cheap to share (`Arc<Engine>`), `Send + Sync`; searches
/// never wait for a writer: they read the state named by the manifest when the engine was
/// opened or last reloaded.
#[derive(Debug)]
pub struct Engine {
    dir: PathBuf,
    current: RwLock<Arc<Snapshot>>,
    /// Held while a snapshot is opened: after a publish, one request reloads and the others
    /// wait for it (single flight) instead of each opening the new state.
    reloading: Mutex<()>,
    /// The synonym table: built in, the corpus root's `synonyms.toml`, and a file given with
    /// [`Engine::use_synonyms`].
    synonyms: RwLock<Arc<Synonyms>>,
    extra_synonyms: RwLock<Option<PathBuf>>,
}

/// The built-in table, plus the corpus's own `synonyms.toml` and `extra` when they exist.
fn load_synonyms(corpus_root: Option<&Path>, extra: Option<&Path>) -> Result<Synonyms> {
    let mut table = Synonyms::builtin();
    if let Some(file) = corpus_root.map(|r| r.join(SYNONYMS_FILE))
        && file.is_file()
    {
        table.add_file(&file)?;
    }
    if let Some(extra) = extra {
        table.add_file(extra)?;
    }
    Ok(table)
}

/// Everything one published generation needs to answer queries.
struct Snapshot {
    manifest_identity: FileIdentity,
    generation: u64,
    model_id: String,
    dimension: usize,
    size_bytes: u64,
    reader: IndexReader,
    fields: StepFields,
    incidents_reader: IndexReader,
    incident_fields: IncidentFields,
    /// The live vectors of every segment, segment after segment.
    store: VectorStore,
    /// The segments, with the slot range of their live vectors in `store`.
    segments: Vec<Segment>,
    /// Per vector slot.
    slots: Vec<SlotInfo>,
    /// Per slot, where its document is.
    docs: Vec<DocAddress>,
    incidents: Vec<IncidentInfo>,
    incident_index: HashMap<IncidentId, u32>,
    /// Content hash of each write-up's bytes -> index into `incidents`: a `similar` text that
    /// is an indexed write-up excludes it.
    incident_by_hash: HashMap<ContentHash, u32>,
    /// Incident document key ([`incident_key`]) -> index into `incidents`.
    incident_keys: HashMap<u64, u32>,
    corpus_root: Option<PathBuf>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("generation", &self.generation)
            .field("steps", &self.slots.len())
            .finish()
    }
}

/// One vector segment as searched: its live vectors are `store[slots]`; its graph (when it has
/// one) also holds its dead ones, which a walk must filter out.
#[derive(Debug)]
struct Segment {
    slots: std::ops::Range<u32>,
    ann: Option<Ann>,
    has_dead: bool,
}

#[derive(Debug, Clone)]
struct SlotInfo {
    incident: u32,
    kind: StepKind,
    outcome: Option<Outcome>,
}

#[derive(Debug, Clone)]
struct IncidentInfo {
    path: String,
    meta: IncidentMeta,
    /// Lowercased, for filters.
    services: Vec<String>,
    tags: Vec<String>,
    severity: Option<String>,
    date_days: Option<i64>,
    slots: Vec<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileIdentity {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

fn identity(path: &Path) -> Option<FileIdentity> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let (dev, ino) = {
        use std::os::unix::fs::MetadataExt;
        (meta.dev(), meta.ino())
    };
    #[cfg(not(unix))]
    let (dev, ino) = (0, 0);
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i128);
    Some(FileIdentity {
        dev,
        ino,
        len: meta.len(),
        mtime_ns,
    })
}

impl Engine {
    /// Opens the index at `dir` for reading. [`Error::IndexMissing`] when there is none.
    pub fn open(dir: &Path) -> Result<Engine> {
        let snapshot = Snapshot::open_latest(dir)?;
        let synonyms = load_synonyms(snapshot.corpus_root.as_deref(), None)?;
        Ok(Engine {
            dir: dir.to_owned(),
            current: RwLock::new(Arc::new(snapshot)),
            reloading: Mutex::new(()),
            synonyms: RwLock::new(Arc::new(synonyms)),
            extra_synonyms: RwLock::new(None),
        })
    }

    /// Adds the synonym groups of `file` (TOML, `groups = [["cert", "certificate"], ...]`) to
    /// the built-in table and the corpus's own `synonyms.toml`.
    pub fn use_synonyms(&self, file: &Path) -> Result<()> {
        let table = load_synonyms(self.snapshot().corpus_root.as_deref(), Some(file))?;
        *self.synonyms.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
        *self
            .extra_synonyms
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(file.to_owned());
        Ok(())
    }

    fn synonyms(&self) -> Arc<Synonyms> {
        self.synonyms
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Generation being served.
    pub fn generation(&self) -> u64 {
        self.snapshot().generation
    }

    /// Switches to the latest published state. Searches in flight finish on the old one.
    pub fn reload(&self) -> Result<()> {
        let _one = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        self.reload_locked()
    }

    fn reload_locked(&self) -> Result<()> {
        let snapshot = Arc::new(Snapshot::open_latest(&self.dir)?);
        let extra = self
            .extra_synonyms
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let synonyms = load_synonyms(snapshot.corpus_root.as_deref(), extra.as_deref())?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = snapshot;
        *self.synonyms.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(synonyms);
        Ok(())
    }

    /// Reloads when a writer published since; returns whether it did. Costs one `stat` when
    /// nothing changed.
    pub fn reload_if_changed(&self) -> Result<bool> {
        let manifest = self.dir.join(MANIFEST_FILE);
        if identity(&manifest) == Some(self.snapshot().manifest_identity) {
            return Ok(false);
        }
        // Single flight: whoever waited here while another request reloaded finds the new
        // state in place.
        let _one = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        if identity(&manifest) == Some(self.snapshot().manifest_identity) {
            return Ok(false);
        }
        self.reload_locked()?;
        Ok(true)
    }

    /// Size and identity of the served state.
    pub fn stats(&self) -> Stats {
        let s = self.snapshot();
        Stats {
            generation: s.generation,
            incidents: s.incidents.len() as u64,
            steps: s.slots.len() as u64,
            size_bytes: s.size_bytes,
            model_id: s.model_id.clone(),
            dimension: s.dimension,
        }
    }

    /// Ranked steps for a query.
    pub fn search(
        &self,
        request: &SearchRequest,
        embedder: &dyn Embedder,
    ) -> Result<SearchResponse> {
        crate::searcher::search(&*self.snapshot(), &self.synonyms(), request, embedder)
    }

    /// Past incidents ranked as wholes against a source, each with its best-matching steps.
    pub fn similar(
        &self,
        request: &SimilarRequest,
        embedder: &dyn Embedder,
    ) -> Result<SimilarResponse> {
        crate::searcher::similar(&*self.snapshot(), &self.synonyms(), request, embedder)
    }

    /// The corpus directory the index was last synced from (canonical), when recorded.
    pub fn corpus_root(&self) -> Option<PathBuf> {
        self.snapshot().corpus_root.clone()
    }

    /// The incident a person means by `reference`: its full id, a unique prefix of its id, or
    /// the path of its write-up relative to the corpus root (or absolute, under the recorded
    /// root). [`Error::IncidentRef`] lists the closest ids when it names none or several.
    pub fn resolve_incident(&self, reference: &str) -> Result<IncidentId> {
        let s = self.snapshot();
        let wanted = reference.trim();
        if let Ok(id) = IncidentId::parse(wanted)
            && s.incident_index.contains_key(&id)
        {
            return Ok(id);
        }
        let held: Vec<(&IncidentId, &str)> = s
            .incidents
            .iter()
            .map(|i| (&i.meta.id, i.path.as_str()))
            .collect();
        resolve_among(wanted, s.corpus_root.as_deref(), &held)
    }

    /// The full parse of an indexed incident, `None` when the id is unknown.
    pub fn incident(&self, id: &IncidentId) -> Result<Option<Incident>> {
        self.snapshot().incident(id)
    }

    /// Values present in the index, with counts, for filter menus.
    pub fn facets(&self) -> Facets {
        self.snapshot().facets()
    }

    /// Every indexed step as (step id, text, path), sorted, read from the full-text index: for
    /// tests that compare two indexes.
    #[doc(hidden)]
    pub fn dump_steps(&self) -> Result<Vec<(StepId, String, String)>> {
        let s = self.snapshot();
        let searcher = s.reader.searcher();
        let mut out = Vec::with_capacity(s.docs.len());
        for addr in &s.docs {
            let doc: TantivyDocument = searcher.doc(*addr)?;
            let id = StepId::parse(stored_str(&doc, s.fields.step_id))
                .map_err(|e| Error::Corrupt(e.to_string()))?;
            out.push((
                id,
                stored_str(&doc, s.fields.text).to_owned(),
                stored_str(&doc, s.fields.path).to_owned(),
            ));
        }
        out.sort();
        Ok(out)
    }

    /// The stored vector of a step of the current snapshot.
    #[cfg_attr(not(feature = "qdrant"), allow(dead_code))]
    pub(crate) fn step_vector(&self, id: &StepId) -> Option<Vec<f32>> {
        let s = self.snapshot();
        let slot = s.store.slot(crate::manifest::vector_key(id))?;
        Some(s.store.vector(slot).to_vec())
    }

    /// Vector search alone, by a query vector, for measurements: step ids best first, from the
    /// ANN graph (`exact == false`, when there is one) or by exact scan.
    #[doc(hidden)]
    pub fn vector_probe(&self, query: &[f32], k: usize, exact: bool) -> Result<Vec<StepId>> {
        let s = self.snapshot();
        let graphs = s.segments.iter().any(|seg| seg.ann.is_some());
        let mut hits = match (graphs, exact) {
            // The depth search uses for its vector list (`FusionOptions::candidates`).
            (true, false) => s.vector(query, k.max(FusionOptions::default().candidates), None)?,
            _ => s.store.exact_search(query, k, None),
        };
        hits.truncate(k);
        hits.into_iter().map(|(slot, _)| s.step_id(slot)).collect()
    }

    /// Lexical search with custom field weights, for tuning.
    #[doc(hidden)]
    pub fn lexical_probe(
        &self,
        query: &str,
        k: usize,
        title: f32,
        headings: f32,
        ident: f32,
        phrase: f32,
    ) -> Result<Vec<(StepId, String)>> {
        let s = self.snapshot();
        let boosts = Boosts {
            title,
            headings,
            text: 1.0,
            ident,
            phrase,
        };
        let hits = s.lexical(&Analyzed::new(query, &self.synonyms()), k, None, boosts)?;
        hits.into_iter()
            .map(|(slot, _)| {
                Ok((
                    s.step_id(slot)?,
                    s.incidents[s.slots[slot as usize].incident as usize]
                        .path
                        .clone(),
                ))
            })
            .collect()
    }
}

/// Most candidates an unknown or ambiguous incident reference lists.
const MAX_CANDIDATES: usize = 5;

/// How close `candidate` is to what someone typed: a contained reference ranks first, then the
/// length of the common prefix plus the words (split on `-`, `_`, `/`, `.`) they share.
fn closeness(typed: &str, candidate: &str) -> usize {
    if typed.is_empty() {
        return 0;
    }
    if candidate.contains(typed) {
        return 1000 + typed.len();
    }
    let prefix = typed
        .chars()
        .zip(candidate.chars())
        .take_while(|(a, b)| a == b)
        .count();
    let words = |t: &str| -> Vec<String> {
        t.split(['-', '_', '/', '.', ' '])
            .filter(|w| w.len() > 1)
            .map(str::to_owned)
            .collect()
    };
    let theirs = words(candidate);
    let shared = words(typed).iter().filter(|w| theirs.contains(w)).count();
    let score = prefix + 10 * shared;
    if prefix >= 3 || shared > 0 { score } else { 0 }
}

/// Slots with their retriever score, best first.
/// The `key` fast field of each found document (step or incident), in order.
fn doc_keys(
    searcher: &Searcher,
    found: Vec<(f32, DocAddress)>,
    what: &str,
) -> Result<Vec<(f32, u64)>> {
    let mut columns: HashMap<u32, tantivy::columnar::Column<u64>> = HashMap::new();
    let mut out = Vec::with_capacity(found.len());
    for (score, addr) in found {
        let column = match columns.entry(addr.segment_ord) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(
                searcher
                    .segment_reader(addr.segment_ord)
                    .fast_fields()
                    .u64(KEY_FIELD)?,
            ),
        };
        let key = column
            .first(addr.doc_id)
            .ok_or_else(|| Error::Corrupt(format!("{what} document without key")))?;
        out.push((score, key));
    }
    Ok(out)
}

/// What `similar` compares with when the source is a draft write-up: its title and situation
/// steps as query text, and their embeddings. Shared by both stores.
pub(crate) struct DraftSource {
    pub query: String,
    pub vectors: Vec<Vec<f32>>,
    /// The id the draft would have if indexed (none for free text).
    pub incident_id: Option<IncidentId>,
}

impl DraftSource {
    /// The source for free text, the same whichever front end sent it (CLI `--text` or
    /// `--file`, HTTP, MCP): text that reads as several steps (a draft write-up, notes in
    /// paragraphs or lists) is prepared as a draft ([`DraftSource::prepare`], as Markdown when
    /// it has a Markdown heading, else as plain text), so each situation step is embedded on
    /// its own instead of the whole text being cut at the model's 256 tokens; a single step
    /// is one query.
    pub(crate) fn from_text(text: &str, embedder: &dyn Embedder) -> Result<DraftSource> {
        let text = cut(text, MAX_DRAFT_BYTES);
        let markdown = text.lines().any(|l| {
            let hashes = l.bytes().take_while(|&b| b == b'#').count();
            (1..=6).contains(&hashes) && l[hashes..].starts_with(' ')
        });
        let path = if markdown { "draft.md" } else { "draft.txt" };
        let parsed = parse(path, text.as_bytes(), &ParseOptions::default());
        if let Some(incident) = parsed.incident
            && incident.steps.len() >= 2
        {
            let mut draft = DraftSource::from_incident(path, &incident, embedder)?;
            draft.incident_id = None;
            return Ok(draft);
        }
        let query = cut(text, MAX_QUERY_BYTES).to_owned();
        let vectors = embedder.embed(&[&query]).map_err(Error::Embed)?;
        Ok(DraftSource {
            query,
            vectors,
            incident_id: None,
        })
    }

    /// Parses the draft and embeds its summary, impact, detection and investigation steps
    /// (all steps when it has none of those), at most [`MAX_SOURCE_STEPS`].
    pub(crate) fn prepare(path: &str, text: &str, embedder: &dyn Embedder) -> Result<DraftSource> {
        let parsed = parse(path, text.as_bytes(), &ParseOptions::default());
        let Some(incident) = parsed.incident else {
            let reason = parsed
                .skip_reason()
                .map_or("not a write-up".to_owned(), |d| d.message.clone());
            return Err(Error::InvalidWriteUp {
                path: path.to_owned(),
                reason,
            });
        };
        DraftSource::from_incident(path, &incident, embedder)
    }

    fn from_incident(
        path: &str,
        incident: &precedent_core::Incident,
        embedder: &dyn Embedder,
    ) -> Result<DraftSource> {
        let mut steps: Vec<_> = incident
            .steps
            .iter()
            .filter(|st| DRAFT_KINDS.contains(&st.kind))
            .collect();
        if steps.is_empty() {
            steps = incident.steps.iter().collect();
        }
        steps.truncate(MAX_SOURCE_STEPS);
        if steps.is_empty() {
            return Err(Error::InvalidWriteUp {
                path: path.to_owned(),
                reason: "no text to compare".into(),
            });
        }
        let texts: Vec<String> = steps
            .iter()
            .map(|st| st.contextual_text(&incident.title))
            .collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let vectors = embedder.embed(&refs).map_err(Error::Embed)?;
        let mut query = incident.title.clone();
        for st in &steps {
            query.push('\n');
            query.push_str(&st.text);
        }
        Ok(DraftSource {
            query: cut(&query, MAX_QUERY_BYTES).to_owned(),
            vectors,
            incident_id: Some(incident.id.clone()),
        })
    }
}

pub(crate) fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        text
    } else {
        &text[..floor_boundary(text, max)]
    }
}

fn stored_str(doc: &TantivyDocument, field: tantivy::schema::Field) -> &str {
    doc.get_first(field).and_then(|v| v.as_str()).unwrap_or("")
}

fn stored_u64(doc: &TantivyDocument, field: tantivy::schema::Field) -> u64 {
    doc.get_first(field).and_then(|v| v.as_u64()).unwrap_or(0)
}

/// The embedded store's retrieval primitives: steps are vector slots, incidents indexes into
/// the snapshot's incident list, and the mask one flag per slot.
impl Retrieval for Snapshot {
    type Step = u32;
    type Incident = u32;
    type Mask = Option<Arc<Vec<bool>>>;

    fn check_model(&self, embedder: &dyn Embedder) -> Result<()> {
        Snapshot::check_model(self, embedder)
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    fn mask(
        &self,
        filters: &Filters,
        exclude: Option<u32>,
        required: Option<&Analyzed>,
    ) -> Result<Self::Mask> {
        let mask = self.compile(filters, exclude)?;
        match required {
            Some(analyzed) => self.require_phrases(analyzed, mask),
            None => Ok(mask),
        }
    }

    fn lexical(&self, analyzed: &Analyzed, n: usize, mask: &Self::Mask) -> Result<Ranked<u32>> {
        Snapshot::lexical(self, analyzed, n, mask.as_ref(), BOOSTS)
    }

    fn vectors(
        &self,
        queries: &[Vec<f32>],
        n: usize,
        mask: &Self::Mask,
    ) -> Result<Vec<Ranked<u32>>> {
        queries
            .iter()
            .map(|q| Snapshot::vector(self, q, n, mask.as_ref()))
            .collect()
    }

    fn incident_leg(&self, analyzed: &Analyzed, n: usize) -> Result<IncidentRanks<u32>> {
        self.whole_leg(analyzed, n)
    }

    fn incident_of(&self, step: u32) -> u32 {
        self.slots[step as usize].incident
    }

    fn find_incident(&self, id: &IncidentId) -> Result<Option<u32>> {
        Ok(self.incident_index.get(id).copied())
    }

    fn incident_with_hash(&self, hash: &ContentHash) -> Result<Option<u32>> {
        Ok(self.incident_by_hash.get(hash).copied())
    }

    fn source(&self, incident: u32) -> Result<SourceSteps> {
        let info = &self.incidents[incident as usize];
        let mut slots: Vec<u32> = info
            .slots
            .iter()
            .copied()
            .filter(|&slot| SITUATION_KINDS.contains(&self.slots[slot as usize].kind))
            .collect();
        if slots.is_empty() {
            slots = info.slots.clone();
        }
        slots.truncate(MAX_SOURCE_STEPS);
        let mut text = info.meta.title.clone();
        let searcher = self.reader.searcher();
        for &slot in &slots {
            let doc: TantivyDocument = searcher.doc(self.docs[slot as usize])?;
            text.push('\n');
            text.push_str(stored_str(&doc, self.fields.text));
        }
        let vectors = slots
            .iter()
            .map(|&slot| self.store.vector(slot).to_vec())
            .collect();
        Ok(SourceSteps { text, vectors })
    }

    fn hits(&self, steps: &[(u32, Score)], snippet: &dyn Fn(&str) -> String) -> Result<Vec<Hit>> {
        steps
            .iter()
            .map(|(slot, score)| self.hit(*slot, score.clone(), snippet))
            .collect()
    }

    fn summary(&self, incident: u32) -> Result<IncidentSummary> {
        let info = &self.incidents[incident as usize];
        Ok(IncidentSummary {
            incident_id: info.meta.id.clone(),
            title: info.meta.title.clone(),
            path: info.path.clone(),
            date: info.meta.date,
            severity: info.meta.severity.clone(),
            services: info.meta.services.clone(),
            card: self
                .incident(&info.meta.id)?
                .map(|i| i.card)
                .unwrap_or_default(),
        })
    }

    fn scan(&self, request: &SearchRequest, started: Instant) -> Result<SearchResponse> {
        self.grep(request, started)
    }
}

impl Snapshot {
    /// The full parse of an incident, `None` when the id is unknown.
    fn incident(&self, id: &IncidentId) -> Result<Option<Incident>> {
        stored_incident(&self.incidents_reader.searcher(), &self.incident_fields, id)
    }

    fn facets(&self) -> Facets {
        let s = self;
        let mut kinds: BTreeMap<&str, u64> = BTreeMap::new();
        for slot in &s.slots {
            *kinds.entry(slot.kind.as_str()).or_default() += 1;
        }
        let mut services: BTreeMap<&str, u64> = BTreeMap::new();
        let mut severities: BTreeMap<&str, u64> = BTreeMap::new();
        let mut tags: BTreeMap<&str, u64> = BTreeMap::new();
        let mut triggers: BTreeMap<&str, u64> = BTreeMap::new();
        let mut remediations: BTreeMap<&str, u64> = BTreeMap::new();
        for info in &s.incidents {
            *triggers
                .entry(info.meta.trigger_class.as_str())
                .or_default() += 1;
            *remediations
                .entry(info.meta.remediation_class.as_str())
                .or_default() += 1;
            for v in &info.services {
                *services.entry(v).or_default() += 1;
            }
            for v in &info.tags {
                *tags.entry(v).or_default() += 1;
            }
            if let Some(v) = &info.severity {
                *severities.entry(v).or_default() += 1;
            }
        }
        let list = |m: BTreeMap<&str, u64>| {
            let mut v: Vec<FacetCount> = m
                .into_iter()
                .map(|(value, count)| FacetCount {
                    value: value.to_owned(),
                    count,
                })
                .collect();
            v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
            v
        };
        let dates = s
            .incidents
            .iter()
            .filter_map(|i| i.meta.date.map(|d| d.start));
        Facets {
            kinds: list(kinds),
            services: list(services),
            severities: list(severities),
            tags: list(tags),
            trigger_classes: list(triggers),
            remediation_classes: list(remediations),
            date_min: dates.clone().min(),
            date_max: dates.max(),
            incidents: s.incidents.len() as u64,
            steps: s.slots.len() as u64,
        }
    }

    /// Opens the state the manifest names, retrying when a writer publishes (and collects the
    /// old state) while we open.
    fn open_latest(dir: &Path) -> Result<Snapshot> {
        let mut last_err = None;
        for _ in 0..5 {
            let identity_before = identity(&dir.join(MANIFEST_FILE));
            let Some(manifest) = Manifest::load(dir)? else {
                return Err(Error::IndexMissing(dir.to_owned()));
            };
            match Snapshot::open(dir, manifest, identity_before) {
                Ok(s) => return Ok(s),
                Err(err) => {
                    if identity(&dir.join(MANIFEST_FILE)) == identity_before {
                        return Err(err);
                    }
                    last_err = Some(err);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| Error::Corrupt("index keeps changing while opening".into())))
    }

    fn open(dir: &Path, manifest: Manifest, identity: Option<FileIdentity>) -> Result<Snapshot> {
        let data_dir = dir.join(&manifest.data_dir);
        let mut steps = open_tantivy(&data_dir.join(STEPS_DIR), false, true)?;
        // Segments are searched in parallel: a long query over a multi-segment index otherwise
        // walks each segment's posting lists in turn.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        if threads > 1 && steps.searchable_segment_ids()?.len() > 1 {
            steps.set_multithread_executor(threads)?;
        }
        let incidents_index = open_tantivy(&data_dir.join(INCIDENTS_DIR), false, false)?;
        let reader = steps
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let incidents_reader = incidents_index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let fields = StepFields::of(&steps)?;
        let incident_fields = IncidentFields::of(&incidents_index)?;
        if manifest.format_version != FORMAT_VERSION {
            return Err(Error::OldFormat {
                dir: dir.to_owned(),
                found: manifest.format_version,
                expected: FORMAT_VERSION,
            });
        }
        let (store, segments) = load_vectors(&data_dir, &manifest)?;
        let total = manifest.steps_total() as usize;
        if store.len() != total {
            return Err(Error::Corrupt(format!(
                "manifest lists {total} steps but the vector files hold {}",
                store.len()
            )));
        }
        let mut slots: Vec<Option<SlotInfo>> = vec![None; total];
        let mut incidents = Vec::with_capacity(manifest.files.len());
        let mut incident_index = HashMap::with_capacity(manifest.files.len());
        let mut incident_by_hash = HashMap::with_capacity(manifest.files.len());
        let mut incident_keys = HashMap::with_capacity(manifest.files.len());
        for (path, entry) in &manifest.files {
            let idx = incidents.len() as u32;
            let mut info = IncidentInfo {
                path: path.clone(),
                services: entry
                    .incident
                    .services
                    .iter()
                    .map(|v| v.trim().to_lowercase())
                    .collect(),
                tags: entry
                    .incident
                    .tags
                    .iter()
                    .map(|v| v.trim().to_lowercase())
                    .collect(),
                severity: entry
                    .incident
                    .severity
                    .as_ref()
                    .map(|v| v.trim().to_lowercase()),
                date_days: entry.incident.date.map(|d| days_since_epoch(d.start)),
                meta: entry.incident.clone(),
                slots: Vec::with_capacity(entry.steps.len()),
            };
            for step in &entry.steps {
                let slot = store
                    .slot(vector_key(&step.id))
                    .ok_or_else(|| Error::Corrupt(format!("step {} has no vector", step.id)))?;
                slots[slot as usize] = Some(SlotInfo {
                    incident: idx,
                    kind: step.kind,
                    outcome: step.outcome,
                });
                info.slots.push(slot);
            }
            incident_keys.insert(incident_key(entry.incident.id.as_str()), idx);
            incident_index.insert(entry.incident.id.clone(), idx);
            incident_by_hash.insert(entry.hash.clone(), idx);
            incidents.push(info);
        }
        let slots: Vec<SlotInfo> = slots.into_iter().collect::<Option<_>>().ok_or_else(|| {
            Error::Corrupt("vector file holds steps the manifest does not list".into())
        })?;

        // Each step has exactly one live document: no duplicate, phantom or missing step.
        let searcher = reader.searcher();
        let mut docs: Vec<Option<DocAddress>> = vec![None; total];
        for (ord, segment) in searcher.segment_readers().iter().enumerate() {
            let keys = segment.fast_fields().u64(KEY_FIELD)?;
            for doc in segment.doc_ids_alive() {
                let key = keys
                    .first(doc)
                    .ok_or_else(|| Error::Corrupt("step document without key".into()))?;
                let slot = store
                    .slot(key)
                    .ok_or_else(|| Error::Corrupt(format!("phantom step document {key:016x}")))?;
                if docs[slot as usize]
                    .replace(DocAddress::new(ord as u32, doc))
                    .is_some()
                {
                    return Err(Error::Corrupt(format!(
                        "duplicate step document {key:016x}"
                    )));
                }
            }
        }
        let docs: Vec<DocAddress> = docs
            .into_iter()
            .collect::<Option<_>>()
            .ok_or_else(|| Error::Corrupt("step without document".into()))?;
        let size_bytes =
            dir_size(&data_dir) + std::fs::metadata(dir.join(MANIFEST_FILE)).map_or(0, |m| m.len());
        Ok(Snapshot {
            manifest_identity: identity.unwrap_or(FileIdentity {
                dev: 0,
                ino: 0,
                len: 0,
                mtime_ns: 0,
            }),
            generation: manifest.generation,
            corpus_root: manifest.corpus_root,
            model_id: manifest.model_id,
            dimension: manifest.dimension,
            size_bytes,
            reader,
            fields,
            incidents_reader,
            incident_fields,
            store,
            segments,
            slots,
            docs,
            incidents,
            incident_index,
            incident_by_hash,
            incident_keys,
        })
    }

    fn check_model(&self, embedder: &dyn Embedder) -> Result<()> {
        if embedder.model_id() != self.model_id || embedder.dimension() != self.dimension {
            return Err(Error::ModelMismatch {
                index_model: self.model_id.clone(),
                index_dimension: self.dimension,
                embedder_model: embedder.model_id().to_owned(),
                embedder_dimension: embedder.dimension(),
            });
        }
        Ok(())
    }

    fn step_id(&self, slot: u32) -> Result<StepId> {
        let doc: TantivyDocument = self.reader.searcher().doc(self.docs[slot as usize])?;
        StepId::parse(stored_str(&doc, self.fields.step_id))
            .map_err(|e| Error::Corrupt(e.to_string()))
    }

    /// Which slots pass `filters` (and are not of `exclude`); `None` when all do.
    fn compile(&self, filters: &Filters, exclude: Option<u32>) -> Result<Option<Arc<Vec<bool>>>> {
        if filters.is_empty() && exclude.is_none() {
            return Ok(None);
        }
        let lower = |v: &[String]| {
            v.iter()
                .map(|s| s.trim().to_lowercase())
                .collect::<Vec<_>>()
        };
        let (services, severities, tags) = (
            lower(&filters.services),
            lower(&filters.severities),
            lower(&filters.tags),
        );
        let only: Option<Vec<u32>> = if filters.incident_ids.is_empty() {
            None
        } else {
            Some(
                filters
                    .incident_ids
                    .iter()
                    .map(|id| {
                        self.incident_index
                            .get(id)
                            .copied()
                            .ok_or_else(|| Error::UnknownIncident(id.clone()))
                    })
                    .collect::<Result<_>>()?,
            )
        };
        let since = filters.since.map(days_since_epoch);
        let until = filters.until.map(days_since_epoch);
        let incident_ok: Vec<bool> = self
            .incidents
            .iter()
            .enumerate()
            .map(|(idx, info)| {
                let idx = idx as u32;
                Some(idx) != exclude
                    && only.as_ref().is_none_or(|o| o.contains(&idx))
                    && (services.is_empty() || info.services.iter().any(|s| services.contains(s)))
                    && (tags.is_empty() || info.tags.iter().any(|t| tags.contains(t)))
                    && (severities.is_empty()
                        || info
                            .severity
                            .as_ref()
                            .is_some_and(|s| severities.contains(s)))
                    && (since.is_none() || info.date_days.is_some_and(|d| Some(d) >= since))
                    && (until.is_none() || info.date_days.is_some_and(|d| Some(d) <= until))
                    && (filters.trigger_classes.is_empty()
                        || filters.trigger_classes.contains(&info.meta.trigger_class))
                    && (filters.remediation_classes.is_empty()
                        || filters
                            .remediation_classes
                            .contains(&info.meta.remediation_class))
            })
            .collect();
        let mask = self
            .slots
            .iter()
            .map(|s| {
                incident_ok[s.incident as usize]
                    && (filters.kinds.is_empty() || filters.kinds.contains(&s.kind))
            })
            .collect();
        Ok(Some(Arc::new(mask)))
    }

    /// `mask` narrowed to the steps that contain every quoted phrase of the query.
    fn require_phrases(
        &self,
        analyzed: &Analyzed,
        mask: Option<Arc<Vec<bool>>>,
    ) -> Result<Option<Arc<Vec<bool>>>> {
        let Some(query) = analyzed.required_query(self.fields.text_fields()) else {
            return Ok(mask);
        };
        let searcher = self.reader.searcher();
        let found = searcher.search(&query, &tantivy::collector::DocSetCollector)?;
        let mut out = vec![false; self.slots.len()];
        for addr in found {
            let keys = searcher
                .segment_reader(addr.segment_ord)
                .fast_fields()
                .u64(KEY_FIELD)?;
            if let Some(slot) = keys.first(addr.doc_id).and_then(|k| self.store.slot(k))
                && mask.as_ref().is_none_or(|m| m[slot as usize])
            {
                out[slot as usize] = true;
            }
        }
        Ok(Some(Arc::new(out)))
    }

    /// BM25 top-`n` slots.
    fn lexical(
        &self,
        analyzed: &Analyzed,
        n: usize,
        mask: Option<&Arc<Vec<bool>>>,
        boosts: Boosts,
    ) -> Result<Vec<(u32, f32)>> {
        let Some(query) = analyzed.query(self.fields.text_fields(), boosts) else {
            return Ok(Vec::new());
        };
        let searcher: Searcher = self.reader.searcher();
        let top = TopDocs::with_limit(n).order_by_score();
        let found: Vec<(f32, DocAddress)> = match mask {
            None => searcher.search(&query, &top)?,
            Some(mask) => {
                // Filter on the fast `key` column while collecting, so the top n are all
                // allowed steps.
                let (slots, mask) = (self.store.slot_map(), mask.clone());
                let predicate =
                    move |key: u64| slots.get(&key).is_some_and(|&slot| mask[slot as usize]);
                searcher.search(
                    &query,
                    &FilterCollector::new(KEY_FIELD.to_owned(), predicate, top),
                )?
            }
        };
        let mut out = Vec::with_capacity(found.len());
        for (score, key) in doc_keys(&searcher, found, "step")? {
            let slot = self
                .store
                .slot(key)
                .ok_or_else(|| Error::Corrupt(format!("phantom step document {key:016x}")))?;
            out.push((slot, score));
        }
        Ok(out)
    }

    /// The incident-level leg: BM25 over each write-up's whole text (title, headings, every
    /// step), best first, as incident index -> (rank from 1, score). Ranked over all
    /// incidents: filters apply to the steps it re-weighs.
    fn whole_leg(&self, analyzed: &Analyzed, n: usize) -> Result<IncidentRanks<u32>> {
        // Words only: phrase clauses over whole write-ups walk long position lists, and the
        // step legs score phrases already.
        let boosts = Boosts {
            phrase: 0.0,
            ..BOOSTS
        };
        let Some(query) = analyzed.query(self.incident_fields.text_fields(), boosts) else {
            return Ok(HashMap::new());
        };
        let searcher: Searcher = self.incidents_reader.searcher();
        let found: Vec<(f32, DocAddress)> =
            searcher.search(&query, &TopDocs::with_limit(n).order_by_score())?;
        let mut out = HashMap::with_capacity(found.len());
        for (position, (score, key)) in doc_keys(&searcher, found, "incident")?
            .into_iter()
            .enumerate()
        {
            let &idx = self
                .incident_keys
                .get(&key)
                .ok_or_else(|| Error::Corrupt(format!("phantom incident document {key:016x}")))?;
            out.entry(idx).or_insert((position as u32 + 1, score));
        }
        Ok(out)
    }

    /// Top-`n` slots by cosine similarity: the ANN graph with the filter applied during the
    /// walk, re-ranked exactly; or an exact scan for small indexes and selective filters.
    fn vector(
        &self,
        query: &[f32],
        n: usize,
        mask: Option<&Arc<Vec<bool>>>,
    ) -> Result<Vec<(u32, f32)>> {
        let allow_slot = |slot: u32| mask.is_none_or(|m| m[slot as usize]);
        let mut scored: Vec<(u32, f32)> = Vec::new();
        for segment in &self.segments {
            let range = segment.slots.clone();
            let allowed_count = mask.map_or(range.len(), |m| {
                m[range.start as usize..range.end as usize]
                    .iter()
                    .filter(|x| **x)
                    .count()
            });
            if allowed_count == 0 {
                continue;
            }
            match &segment.ann {
                Some(ann) if allowed_count > EXACT_SCAN_MAX => {
                    // Over-fetch from the f16 graph and re-rank exactly with the f32 vectors.
                    // A key is this segment's when its live slot is in the segment's range.
                    let want = (n * 2).max(ANN_MIN_CANDIDATES).min(allowed_count).max(1);
                    let live = |slot: u32| range.contains(&slot) && allow_slot(slot);
                    let allow_key = |key: u64| self.store.slot(key).is_some_and(live);
                    let found = if mask.is_none() && !segment.has_dead {
                        ann.search(query, want, None)?
                    } else {
                        ann.search(query, want, Some(&allow_key))?
                    };
                    scored.extend(
                        found
                            .into_iter()
                            .filter_map(|(key, _)| self.store.slot(key))
                            .filter(|&slot| live(slot))
                            .map(|slot| {
                                (slot, crate::vectors::dot(query, self.store.vector(slot)))
                            }),
                    );
                }
                _ => scored.extend(self.store.exact_search_in(
                    query,
                    n,
                    range,
                    mask.map(|_| &allow_slot as &dyn Fn(u32) -> bool),
                )),
            }
        }
        self.store.top_n(&mut scored, n);
        Ok(scored)
    }

    /// `exact` and `regex` search: every step that matches, in write-up order (path, then
    /// line), with counts over the whole index after filters. The per-incident limit applies
    /// only with `group`; `k` caps the hits (or groups), never the counts.
    fn grep(&self, request: &SearchRequest, started: Instant) -> Result<SearchResponse> {
        let query = cut(&request.query, MAX_QUERY_BYTES);
        let matcher = Matcher::new(request.mode, query, request.case_sensitive)?;
        let mask = self.compile(&request.filters, None)?;
        let counts = self.scan(&matcher, mask.as_deref())?;
        let mut totals = MatchCounts::default();
        let mut found = Vec::new();
        for info in &self.incidents {
            let before = totals.steps;
            for &slot in &info.slots {
                let n = counts[slot as usize];
                if n > 0 {
                    totals.matches += u64::from(n);
                    totals.steps += 1;
                    found.push((
                        slot,
                        Score {
                            fused: n as f32,
                            ..Score::default()
                        },
                    ));
                }
            }
            if totals.steps > before {
                totals.incidents += 1;
            }
        }
        let limits = SearchRequest {
            per_incident: if request.group {
                request.per_incident
            } else {
                0
            },
            ..request.clone()
        };
        let (chosen, sizes) = rank::select(
            found,
            |(slot, _)| self.slots[*slot as usize].incident,
            &limits,
        );
        let hits = chosen
            .iter()
            .map(|(slot, score)| self.hit(*slot, score.clone(), &|text| matcher.snippet(text)))
            .collect::<Result<Vec<_>>>()?;
        let groups = sizes.map(|sizes| rank::groups_of(&hits, &sizes));
        Ok(SearchResponse {
            match_quality: if hits.is_empty() {
                MatchQuality::None
            } else {
                MatchQuality::Strong
            },
            hits,
            groups,
            counts: Some(totals),
            took_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// Matches of `matcher` in each step's text, by slot (0 for steps `mask` leaves out).
    /// Reads the doc store segment by segment, in document order.
    fn scan(&self, matcher: &Matcher, mask: Option<&Vec<bool>>) -> Result<Vec<u32>> {
        let searcher = self.reader.searcher();
        // The steps to read, in document order (where each slot's document is, `docs`,
        // was found when the snapshot was opened).
        let mut todo: Vec<(DocAddress, u32)> = self
            .docs
            .iter()
            .enumerate()
            .filter(|(slot, _)| mask.is_none_or(|m| m[*slot]))
            .map(|(slot, &addr)| (addr, slot as u32))
            .collect();
        todo.sort_unstable_by_key(|(addr, _)| (addr.segment_ord, addr.doc_id));
        // Contiguous runs on each core: each thread reads its blocks of the doc store once.
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 4);
        let per = todo.len().div_ceil(threads).max(1);
        let found: Vec<Result<Vec<(u32, u32)>>> = std::thread::scope(|scope| {
            let workers: Vec<_> = todo
                .chunks(per)
                .map(|run| {
                    let searcher = &searcher;
                    scope.spawn(move || -> Result<Vec<(u32, u32)>> {
                        let mut stores = HashMap::new();
                        let mut out = Vec::new();
                        for &(addr, slot) in run {
                            let store = match stores.entry(addr.segment_ord) {
                                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                                std::collections::hash_map::Entry::Vacant(e) => e.insert(
                                    searcher
                                        .segment_reader(addr.segment_ord)
                                        .get_store_reader(4)
                                        .map_err(tantivy::TantivyError::from)?,
                                ),
                            };
                            let stored: TantivyDocument = store.get(addr.doc_id)?;
                            let n = matcher.count(stored_str(&stored, self.fields.text));
                            if n > 0 {
                                out.push((slot, n));
                            }
                        }
                        Ok(out)
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join()
                        .unwrap_or_else(|_| Err(Error::Corrupt("scan thread panicked".into())))
                })
                .collect()
        });
        let mut counts = vec![0u32; self.slots.len()];
        for part in found {
            for (slot, n) in part? {
                counts[slot as usize] = n;
            }
        }
        Ok(counts)
    }

    fn hit(&self, slot: u32, score: Score, snippet: &dyn Fn(&str) -> String) -> Result<Hit> {
        let doc: TantivyDocument = self.reader.searcher().doc(self.docs[slot as usize])?;
        let f = &self.fields;
        let text = stored_str(&doc, f.text).to_owned();
        let kind = stored_str(&doc, f.kind)
            .parse::<StepKind>()
            .map_err(|e| Error::Corrupt(format!("stored step kind: {e}")))?;
        let slot = &self.slots[slot as usize];
        let info = &self.incidents[slot.incident as usize];
        let heading_path = serde_json::from_str(stored_str(&doc, f.heading_path))
            .map_err(|e| Error::Corrupt(format!("stored heading path: {e}")))?;
        Ok(Hit {
            step_id: StepId::parse(stored_str(&doc, f.step_id))
                .map_err(|e| Error::Corrupt(e.to_string()))?,
            incident_id: IncidentId::parse(stored_str(&doc, f.incident_id))
                .map_err(|e| Error::Corrupt(e.to_string()))?,
            title: stored_str(&doc, f.title).to_owned(),
            kind,
            outcome: slot.outcome,
            heading_path,
            date: info.meta.date,
            services: info.meta.services.clone(),
            snippet: snippet(&text),
            text,
            score,
            citation: Citation {
                path: stored_str(&doc, f.path).to_owned(),
                line_start: stored_u64(&doc, f.line_start) as u32,
                line_end: stored_u64(&doc, f.line_end) as u32,
            },
        })
    }
}

/// Reads the vector segments of `data_dir` (each checked against the manifest) and keeps each
/// key's vector from the newest segment that holds it, when the manifest lists the key.
fn load_vectors(data_dir: &Path, manifest: &Manifest) -> Result<(VectorStore, Vec<Segment>)> {
    let dim = manifest.dimension;
    let listed: FxHashSet<u64> = manifest
        .files
        .values()
        .flat_map(|f| f.steps.iter().map(|s| vector_key(&s.id)))
        .collect();
    let mut files = Vec::with_capacity(manifest.vectors.segments.len());
    let mut newest: FxHashMap<u64, usize> = FxHashMap::default();
    newest.reserve(listed.len());
    for (i, seg) in manifest.vectors.segments.iter().enumerate() {
        let file = VectorStore::read(
            &data_dir.join(seg.vectors_file()),
            dim,
            seg.bytes,
            &seg.blake3,
        )?;
        for key in file.keys() {
            if listed.contains(key) {
                newest.insert(*key, i);
            }
        }
        files.push(file);
    }
    // The live vectors, segment after segment. Each file's vectors are compacted in place and
    // the first (the largest, usually) becomes the buffer the others are appended to, so
    // opening does not hold two copies of the vectors.
    let mut keys: Vec<u64> = Vec::new();
    let mut data: Vec<f32> = Vec::new();
    let mut segments = Vec::with_capacity(files.len());
    for (i, (file, seg)) in files
        .into_iter()
        .zip(&manifest.vectors.segments)
        .enumerate()
    {
        let start = keys.len() as u32;
        let file_len = file.len();
        let (mut seg_keys, mut seg_data) = file.into_parts();
        let mut kept = 0;
        for slot in 0..seg_keys.len() {
            if newest.get(&seg_keys[slot]) == Some(&i) {
                if kept != slot {
                    seg_keys[kept] = seg_keys[slot];
                    seg_data.copy_within(slot * dim..(slot + 1) * dim, kept * dim);
                }
                kept += 1;
            }
        }
        seg_keys.truncate(kept);
        seg_data.truncate(kept * dim);
        if keys.is_empty() {
            (keys, data) = (seg_keys, seg_data);
        } else {
            keys.extend_from_slice(&seg_keys);
            data.extend_from_slice(&seg_data);
        }
        let ann = if seg.ann {
            let ann = Ann::load(&data_dir.join(seg.graph_file()), dim)?;
            if ann.len() != file_len {
                return Err(Error::Corrupt(format!(
                    "the graph of {} holds {} vectors, its file {file_len}",
                    seg.name,
                    ann.len(),
                )));
            }
            Some(ann)
        } else {
            None
        };
        let end = keys.len() as u32;
        segments.push(Segment {
            slots: start..end,
            has_dead: (end - start) as usize != file_len,
            ann,
        });
    }
    Ok((VectorStore::new(dim, keys, data)?, segments))
}

/// The stored parse of incident `id`, from an incident index.
fn stored_incident(
    searcher: &Searcher,
    fields: &IncidentFields,
    id: &IncidentId,
) -> Result<Option<Incident>> {
    let term = Term::from_field_text(fields.incident_id, id.as_str());
    let query = TermQuery::new(term, IndexRecordOption::Basic);
    let Some((_, addr)) = searcher
        .search(&query, &TopDocs::with_limit(1).order_by_score())?
        .into_iter()
        .next()
    else {
        return Ok(None);
    };
    let doc: TantivyDocument = searcher.doc(addr)?;
    let json = stored_str(&doc, fields.json);
    serde_json::from_str(json)
        .map(Some)
        .map_err(|e| Error::Corrupt(format!("stored incident {id} does not parse: {e}")))
}

/// The stored incident records of a data directory, readable without its vectors (which an
/// index of an older format lays out otherwise): what a rebuild carries API documents over
/// from.
pub(crate) struct IncidentRecords {
    searcher: Searcher,
    fields: IncidentFields,
}

impl IncidentRecords {
    pub fn open(data_dir: &Path) -> Result<IncidentRecords> {
        let index = open_tantivy(&data_dir.join(INCIDENTS_DIR), false, false)?;
        let reader: IndexReader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(IncidentRecords {
            searcher: reader.searcher(),
            fields: IncidentFields::of(&index)?,
        })
    }

    pub fn get(&self, id: &IncidentId) -> Result<Option<Incident>> {
        stored_incident(&self.searcher, &self.fields, id)
    }
}
