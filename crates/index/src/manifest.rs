//! The manifest: the single commit point of the index.
//!
//! `INDEX_DIR/manifest.json` names the data directory (`gen-NNNNNNNN/`) that holds the full-text
//! indexes and vectors of the published state, and records what that state was built from:
//! format version, model id and dimension, chunker version, and (in the file-table segments it
//! names, immutable files of the data directory) for every indexed file its size, modification
//! time, content hash, incident metadata and step ids. It is replaced only by write-to-temp +
//! fsync + rename + fsync of the directory, so a reader sees either the old or the new
//! manifest, never a torn one.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use precedent_core::{
    ContentHash, DateRange, IncidentId, Outcome, RemediationClass, StepId, StepKind, TriggerClass,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Version of the on-disk layout (and of the analysers, which decide the indexed terms); a
/// change forces a rebuild into a new generation. 2: files are keyed, and steps store, the
/// redacted path; 3: steps store outcome and heading path, incidents their trigger and
/// remediation class; 4: stemmed fields split identifiers at case changes, reduce number
/// plurals and index status-code classes; 5: incident documents hold the whole text, for the
/// incident-level leg; 6: vectors in segments, each with its own graph.
pub(crate) const FORMAT_VERSION: u32 = 6;
/// File name of the manifest in the index directory.
pub(crate) const MANIFEST_FILE: &str = "manifest.json";

/// The published state of an index.
///
/// `manifest.json` holds the head (everything but the file table) and names the file table's
/// segments (`tables`), immutable JSON files in the data directory written like the vector
/// segments: a publish writes one with the entries it changed (and those of the small tables
/// it merges) and hard-links the rest, so it costs O(change), not O(index). [`Manifest::load`]
/// folds them into `files`: for each path the newest table that mentions it wins, and a path
/// that table lists as removed is gone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub format_version: u32,
    /// Publish counter, +1 on every publish.
    pub generation: u64,
    /// Data directory of this state, relative to the index directory.
    pub data_dir: String,
    /// Data directory of the state before, kept so that readers still opening it succeed.
    pub previous_data_dir: Option<String>,
    pub model_id: String,
    pub dimension: usize,
    pub chunker_version: u32,
    /// What the vector files of `data_dir` hold.
    pub vectors: VectorsInfo,
    /// The file table's segments, oldest first.
    #[serde(default)]
    pub tables: Vec<TableInfo>,
    /// Indexed files by path relative to the corpus root, with secrets redacted as the parser
    /// redacts `Incident::path` (`precedent_parse::redact_name`): the key is the path every
    /// output shows, and a file name holding a secret never reaches the index directory.
    /// Read from (and written to) the table segments.
    #[serde(skip)]
    pub files: BTreeMap<String, Arc<FileEntry>>,
    /// The file table of formats before 6, inline; read only to carry API documents over
    /// when such an index is rebuilt.
    #[serde(default, rename = "files", skip_serializing)]
    pub legacy_files: Option<BTreeMap<String, FileEntry>>,
    /// Per table segment, the paths it mentions and which of them it removes; and for each
    /// path, the table its live entry is in.
    #[serde(skip)]
    pub table_state: Vec<Arc<TableState>>,
    #[serde(skip)]
    pub table_of: HashMap<String, usize>,
    /// The corpus directory last synced (canonical), so that citations can be made absolute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corpus_root: Option<PathBuf>,
}

/// One segment of the file table: `NAME.json` in the data directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TableInfo {
    /// File stem, `files-NNNNNNNN` after the generation that wrote it.
    pub name: String,
    /// Paths it mentions, entries and removals.
    pub count: u64,
    pub bytes: u64,
    pub blake3: String,
}

impl TableInfo {
    fn file(&self) -> String {
        format!("{}.json", self.name)
    }
}

/// What a table segment holds, as written.
#[derive(Serialize)]
struct TableOut<'a> {
    files: BTreeMap<&'a str, &'a FileEntry>,
    removed: Vec<&'a str>,
}

#[derive(Deserialize)]
struct TableIn {
    files: BTreeMap<String, FileEntry>,
    #[serde(default)]
    removed: Vec<String>,
}

#[derive(Debug, Default, PartialEq)]
pub(crate) struct TableState {
    paths: HashSet<String>,
    removed: Vec<String>,
}

/// The vectors of a data directory: immutable segments, oldest first.
///
/// A step's vector is in the newest segment that holds its key; copies in older segments, and
/// keys no file lists any more, are dead. A publish writes one new segment (the changed
/// steps' vectors, plus the live vectors of any segments it merges) and hard-links the rest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct VectorsInfo {
    /// Number of live vectors (= number of steps).
    pub count: u64,
    #[serde(default)]
    pub segments: Vec<SegmentInfo>,
}

/// One vector segment: `NAME.bin` (flat f32 vectors and their keys) and, when `ann`,
/// `NAME.usearch` (its HNSW graph), both in the data directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SegmentInfo {
    /// File stem, `vectors-NNNNNNNN` after the generation that wrote it.
    pub name: String,
    /// Vectors in the file, live or dead.
    pub count: u64,
    /// Size of `NAME.bin`.
    pub bytes: u64,
    /// blake3 of `NAME.bin`.
    pub blake3: String,
    /// Whether `NAME.usearch` exists.
    pub ann: bool,
}

impl SegmentInfo {
    pub fn vectors_file(&self) -> String {
        format!("{}.bin", self.name)
    }

    pub fn graph_file(&self) -> String {
        format!("{}.usearch", self.name)
    }
}

/// One indexed write-up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct FileEntry {
    pub size: u64,
    /// Modification time in ns since the epoch; `None` when it cannot be trusted (the file
    /// changed too close to the scan to rule out a same-tick rewrite), which forces a hash check.
    pub mtime_ns: Option<u64>,
    /// Status-change time in ns since the epoch, trusted like `mtime_ns`. Any write, and any
    /// `touch` that puts an old mtime back, moves it; nobody can set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctime_ns: Option<u64>,
    /// Device and inode numbers: a file replaced by another (rename over it) has new ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inode: Option<(u64, u64)>,
    pub hash: ContentHash,
    pub incident: IncidentMeta,
    pub steps: Vec<StepEntry>,
    /// Who owns it: a file of the corpus directory (synced by `precedent index DIR`) or a
    /// document written through the API (`PUT /v1/incidents`), which no sync removes.
    #[serde(default, skip_serializing_if = "Origin::is_corpus")]
    pub origin: Origin,
}

/// Who owns an indexed write-up. The two kinds are kept apart: a sync of the corpus
/// directory never removes or replaces an API document, and the API never replaces or
/// deletes a file's incident.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Origin {
    /// A file under the corpus root.
    #[default]
    Corpus,
    /// A document written through the API (or `IndexWriter::upsert`).
    Api,
}

impl Origin {
    fn is_corpus(&self) -> bool {
        *self == Origin::Corpus
    }
}

/// What filters and `similar` need to know about an incident without touching tantivy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct IncidentMeta {
    pub id: IncidentId,
    pub title: String,
    pub date: Option<DateRange>,
    pub severity: Option<String>,
    pub services: Vec<String>,
    pub tags: Vec<String>,
    /// From the incident's card, for facets and filters.
    #[serde(default)]
    pub trigger_class: TriggerClass,
    #[serde(default)]
    pub remediation_class: RemediationClass,
}

/// One indexed step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StepEntry {
    pub id: StepId,
    pub kind: StepKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// blake3 (32 hex digits) of the text that was embedded; equal texts share a vector.
    pub text_hash: String,
}

impl Manifest {
    /// Why an index built as this manifest says cannot be updated in place by an embedder of
    /// `model_id` and `dimension` and must be rebuilt; `None` when it can.
    pub fn rebuild_reason(&self, model_id: &str, dimension: usize) -> Option<String> {
        if self.format_version != FORMAT_VERSION {
            Some(format!(
                "the index format changed (version {} to {FORMAT_VERSION})",
                self.format_version
            ))
        } else if self.model_id != model_id || self.dimension != dimension {
            Some(format!(
                "the embedding model changed ({} to {model_id})",
                self.model_id
            ))
        } else if self.chunker_version != precedent_parse::CHUNKER_VERSION {
            Some(format!(
                "the chunker changed (version {} to {})",
                self.chunker_version,
                precedent_parse::CHUNKER_VERSION
            ))
        } else {
            None
        }
    }

    /// The indexed files one owner has, by path.
    pub fn files_of(&self, origin: Origin) -> impl Iterator<Item = (&String, &FileEntry)> {
        self.files
            .iter()
            .filter(move |(_, f)| f.origin == origin)
            .map(|(p, f)| (p, &**f))
    }

    pub fn steps_total(&self) -> u64 {
        self.files.values().map(|f| f.steps.len() as u64).sum()
    }

    /// Reads the manifest of `index_dir` and its file table, `None` when there is none. The
    /// table of an index in another format is left empty (its files need a rebuild), except
    /// for the inline table of formats before 6.
    pub fn load(index_dir: &Path) -> Result<Option<Manifest>> {
        let Some(mut manifest) = Manifest::load_head(index_dir)? else {
            return Ok(None);
        };
        if let Some(legacy) = manifest.legacy_files.take() {
            manifest.files = legacy.into_iter().map(|(p, e)| (p, Arc::new(e))).collect();
            return Ok(Some(manifest));
        }
        if manifest.format_version != FORMAT_VERSION {
            return Ok(Some(manifest));
        }
        let data_dir = index_dir.join(&manifest.data_dir);
        for (t, table) in manifest.tables.iter().enumerate() {
            let path = data_dir.join(table.file());
            let bytes = fs::read(&path).map_err(Error::io("cannot read file table", &path))?;
            if bytes.len() as u64 != table.bytes
                || blake3::hash(&bytes).to_hex().as_str() != table.blake3
            {
                return Err(Error::Corrupt(format!(
                    "{} does not match the manifest",
                    path.display()
                )));
            }
            let parsed: TableIn =
                serde_json::from_slice(&bytes).map_err(|source| Error::Manifest {
                    path: path.clone(),
                    source,
                })?;
            let mut state = TableState {
                paths: HashSet::with_capacity(parsed.files.len() + parsed.removed.len()),
                removed: Vec::with_capacity(parsed.removed.len()),
            };
            for p in parsed.removed {
                manifest.files.remove(&p);
                manifest.table_of.remove(&p);
                state.paths.insert(p.clone());
                state.removed.push(p);
            }
            for (p, entry) in parsed.files {
                manifest.table_of.insert(p.clone(), t);
                state.paths.insert(p.clone());
                manifest.files.insert(p, Arc::new(entry));
            }
            manifest.table_state.push(Arc::new(state));
        }
        Ok(Some(manifest))
    }

    /// Reads `manifest.json` alone, without the file table.
    fn load_head(index_dir: &Path) -> Result<Option<Manifest>> {
        let path = index_dir.join(MANIFEST_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(Error::io("cannot read manifest", &path)(err)),
        };
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|source| Error::Manifest { path, source })?;
        Ok(Some(manifest))
    }

    /// Writes this manifest's file table into its data directory, before [`Manifest::store`]:
    /// one new table segment with the entries of the `changed` paths (a path no longer in
    /// `files` is written as removed, when an older table kept here mentions it) and the live
    /// entries of the base tables that `vectors::merge_plan` folds in; the other base tables
    /// are hard-linked. Without a base, every entry goes into the new table.
    pub fn write_tables(
        &mut self,
        index_dir: &Path,
        base: Option<&Manifest>,
        changed: &BTreeSet<String>,
    ) -> Result<()> {
        let data_dir = index_dir.join(&self.data_dir);
        let base = base.filter(|b| b.format_version == FORMAT_VERSION && !b.tables.is_empty());
        let (base_tables, base_state) = match base {
            Some(b) => (b.tables.as_slice(), b.table_state.as_slice()),
            None => (&[][..], &[][..]),
        };
        // Live entries per base table once `changed` is written.
        let mut live = vec![0u64; base_tables.len()];
        if let Some(b) = base {
            for (path, &t) in &b.table_of {
                if !changed.contains(path) {
                    live[t] += 1;
                }
            }
        }
        let counts: Vec<(u64, u64)> = base_tables
            .iter()
            .zip(&live)
            .map(|(t, &l)| (t.count, l))
            .collect();
        let merged: Vec<usize> = match base {
            Some(_) => crate::vectors::merge_plan(&counts, changed.len() as u64),
            None => Vec::new(),
        };
        let kept: Vec<usize> = (0..base_tables.len())
            .filter(|t| live[*t] > 0 && !merged.contains(t))
            .collect();
        let mentioned_by_kept = |p: &str| kept.iter().any(|&t| base_state[t].paths.contains(p));

        // The new table: changed entries and removals, and what the merged tables hold.
        let mut entries: BTreeMap<&str, &FileEntry> = BTreeMap::new();
        let mut removed: BTreeSet<&str> = BTreeSet::new();
        let everything = base.is_none();
        let paths: Box<dyn Iterator<Item = &String>> = if everything {
            Box::new(self.files.keys())
        } else {
            Box::new(changed.iter())
        };
        for p in paths {
            match self.files.get(p) {
                Some(entry) => {
                    entries.insert(p, entry);
                }
                None if mentioned_by_kept(p) => {
                    removed.insert(p);
                }
                None => {}
            }
        }
        if let Some(b) = base {
            for (path, &t) in &b.table_of {
                if merged.contains(&t)
                    && !changed.contains(path)
                    && let Some(entry) = self.files.get(path)
                {
                    entries.insert(path, entry);
                }
            }
            // The removals of every table not kept (merged, or with nothing live left) still
            // hide what older kept tables hold.
            for t in (0..base_tables.len()).filter(|t| !kept.contains(t)) {
                for p in &base_state[t].removed {
                    if !self.files.contains_key(p) && mentioned_by_kept(p) {
                        removed.insert(p);
                    }
                }
            }
        }

        let mut tables = Vec::with_capacity(kept.len() + 1);
        let mut state = Vec::with_capacity(kept.len() + 1);
        let mut table_of = HashMap::with_capacity(self.files.len());
        if let Some(b) = base {
            let base_dir = index_dir.join(&b.data_dir);
            for &t in &kept {
                let name = base_tables[t].file();
                crate::layout::link_file(&base_dir.join(&name), &data_dir.join(&name))?;
                tables.push(base_tables[t].clone());
                state.push(base_state[t].clone());
            }
            for (path, &t) in &b.table_of {
                if let Some(i) = kept.iter().position(|&k| k == t)
                    && !changed.contains(path)
                {
                    table_of.insert(path.clone(), i);
                }
            }
        }
        if !entries.is_empty() || !removed.is_empty() {
            let name = format!("files-{:08}", self.generation);
            let out = TableOut {
                files: entries,
                removed: removed.iter().copied().collect(),
            };
            let bytes = serde_json::to_vec(&out).map_err(|source| Error::Manifest {
                path: data_dir.join(&name),
                source,
            })?;
            let info = TableInfo {
                name,
                count: (out.files.len() + out.removed.len()) as u64,
                bytes: bytes.len() as u64,
                blake3: blake3::hash(&bytes).to_hex().to_string(),
            };
            let path = data_dir.join(info.file());
            let mut file =
                File::create(&path).map_err(Error::io("cannot create file table", &path))?;
            file.write_all(&bytes)
                .and_then(|_| file.sync_all())
                .map_err(Error::io("cannot write file table", &path))?;
            let t = tables.len();
            for p in out.files.keys() {
                table_of.insert((*p).to_owned(), t);
            }
            state.push(Arc::new(TableState {
                paths: out
                    .files
                    .keys()
                    .chain(out.removed.iter())
                    .map(|p| (*p).to_owned())
                    .collect(),
                removed: out.removed.iter().map(|p| (*p).to_owned()).collect(),
            }));
            tables.push(info);
        }
        self.tables = tables;
        self.table_state = state;
        self.table_of = table_of;
        Ok(())
    }

    /// Publishes this manifest: the commit point of a write. Its file table must have been
    /// written ([`Manifest::write_tables`]).
    pub fn store(&self, index_dir: &Path) -> Result<()> {
        let bytes = serde_json::to_vec(self).map_err(|source| Error::Manifest {
            path: index_dir.join(MANIFEST_FILE),
            source,
        })?;
        atomic_write(&index_dir.join(MANIFEST_FILE), &bytes)
    }
}

/// The id of the embedding model the index at `index_dir` was built with; `None` when there
/// is no index there (or its manifest cannot be read: opening it will say why).
pub fn index_model_id(index_dir: &Path) -> Option<String> {
    Manifest::load(index_dir).ok().flatten().map(|m| m.model_id)
}

/// Why indexing the index at `index_dir` with `embedder` will rebuild it from scratch (model,
/// chunker or format changed); `None` when it will update in place or there is no index yet.
pub fn rebuild_reason(
    index_dir: &Path,
    embedder: &dyn precedent_core::Embedder,
) -> Result<Option<String>> {
    Ok(Manifest::load(index_dir)?
        .and_then(|m| m.rebuild_reason(embedder.model_id(), embedder.dimension())))
}

/// The 64-bit key of a step in the vector index: the first 16 hex digits of its id (which is
/// itself a blake3 prefix). `u64::MAX` is reserved by usearch, so it is mapped away.
pub(crate) fn vector_key(id: &StepId) -> u64 {
    let key = u64::from_str_radix(&id.as_str()[..16], 16).unwrap_or(0);
    if key == u64::MAX { key - 1 } else { key }
}

/// Hash identifying the text a step's vector was computed from.
pub(crate) fn text_hash(text: &str) -> String {
    blake3::hash(text.as_bytes()).to_hex()[..32].to_owned()
}

/// Writes `bytes` to `path` atomically and durably: temp file in the same directory, fsync,
/// rename over `path`, fsync of the directory.
pub(crate) fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp: PathBuf = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let mut file = File::create(&tmp).map_err(Error::io("cannot create temporary file", &tmp))?;
    file.write_all(bytes)
        .map_err(Error::io("cannot write temporary file", &tmp))?;
    file.sync_all()
        .map_err(Error::io("cannot sync temporary file", &tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(Error::io("cannot rename into place", path))?;
    sync_dir(dir)
}

/// fsyncs a directory so that renames and creations inside it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("cannot sync directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_keys_are_stable_prefixes() {
        let id = StepId::parse("0123456789abcdef0123456789abcdef").unwrap();
        assert_eq!(vector_key(&id), 0x0123_4567_89ab_cdef);
        let max = StepId::parse("ffffffffffffffff0123456789abcdef").unwrap();
        assert_ne!(vector_key(&max), u64::MAX);
    }

    /// A manifest of no files and no segments.
    fn bare_manifest(generation: u64, data_dir: String) -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            generation,
            data_dir,
            previous_data_dir: None,
            model_id: "m".into(),
            dimension: 4,
            chunker_version: 1,
            vectors: VectorsInfo {
                count: 0,
                segments: Vec::new(),
            },
            tables: Vec::new(),
            files: BTreeMap::new(),
            legacy_files: None,
            table_state: Vec::new(),
            table_of: HashMap::new(),
            corpus_root: None,
        }
    }

    fn entry(path: &str, version: u32) -> FileEntry {
        let bytes = format!("{path} v{version}");
        let id = IncidentId::from_path(path);
        let hash = ContentHash::of(bytes.as_bytes());
        FileEntry {
            size: bytes.len() as u64,
            mtime_ns: Some(u64::from(version)),
            ctime_ns: None,
            inode: None,
            hash: hash.clone(),
            incident: IncidentMeta {
                id: id.clone(),
                title: bytes.clone(),
                date: None,
                severity: None,
                services: Vec::new(),
                tags: Vec::new(),
                trigger_class: TriggerClass::default(),
                remediation_class: RemediationClass::default(),
            },
            steps: vec![StepEntry {
                id: StepId::new(&id, 0, &hash),
                kind: StepKind::Summary,
                outcome: None,
                text_hash: text_hash(&bytes),
            }],
            origin: Origin::Corpus,
        }
    }

    /// Publishes of a few changes each over a large first table: whatever is added, replaced,
    /// removed and added again, the folded table segments give back exactly the table that
    /// was written, the large table is kept (not rewritten) until it is half dead, and there
    /// are few segments.
    #[test]
    fn file_table_segments_fold_back_to_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let mut model: BTreeMap<String, Arc<FileEntry>> = BTreeMap::new();
        let mut base: Option<Manifest> = None;
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let (mut max_tables, mut removals_over_kept_tables) = (0, 0);
        for generation in 1..=400u64 {
            let mut changed = BTreeSet::new();
            let edits = if generation == 1 { 500 } else { 1 + next(3) };
            for _ in 0..edits {
                let path = format!("f{:04}.md", next(600));
                if generation > 1 && next(3) == 0 {
                    model.remove(&path);
                } else {
                    model.insert(path.clone(), Arc::new(entry(&path, generation as u32)));
                }
                changed.insert(path);
            }
            let data_dir = format!("gen-{generation:08}");
            fs::create_dir_all(dir.path().join(&data_dir)).unwrap();
            let mut manifest = bare_manifest(generation, data_dir);
            manifest.files = model.clone();
            manifest
                .write_tables(dir.path(), base.as_ref(), &changed)
                .unwrap();
            manifest.store(dir.path()).unwrap();
            let loaded = Manifest::load(dir.path()).unwrap().unwrap();
            assert_eq!(loaded.files, model, "generation {generation}");
            assert_eq!(
                loaded.table_of, manifest.table_of,
                "generation {generation}"
            );
            if generation <= 10 {
                assert_eq!(
                    loaded.tables[0].name, "files-00000001",
                    "generation {generation}"
                );
                assert!(loaded.tables.len() <= 2, "generation {generation}");
            }
            if loaded.tables.len() > 1 && loaded.table_state.iter().any(|t| !t.removed.is_empty()) {
                removals_over_kept_tables += 1;
            }
            max_tables = max_tables.max(loaded.tables.len());
            base = Some(loaded);
        }
        assert!(max_tables <= 6, "{max_tables} table segments");
        assert!(
            removals_over_kept_tables > 50,
            "{removals_over_kept_tables}"
        );
    }

    #[test]
    fn manifest_round_trips_through_disk() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Manifest::load(dir.path()).unwrap().is_none());
        let mut manifest = bare_manifest(3, "gen-00000003".into());
        manifest.vectors.segments.push(SegmentInfo {
            name: "vectors-00000003".into(),
            count: 0,
            bytes: 24,
            blake3: "x".into(),
            ann: false,
        });
        manifest.store(dir.path()).unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), Some(manifest));
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n != MANIFEST_FILE)
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
