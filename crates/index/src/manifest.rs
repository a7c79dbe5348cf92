//! The manifest: the single commit point of the index.
//!
//! `INDEX_DIR/manifest.json` names the data directory (`gen-NNNNNNNN/`) that holds the full-text
//! indexes and vectors of the published state, and records what that state was built from:
//! format version, model id and dimension, chunker version, and for every indexed file its size,
//! modification time, content hash, incident metadata and step ids. It is replaced only by
//! write-to-temp + fsync + rename + fsync of the directory, so a reader sees either the old or
//! the new manifest, never a torn one.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

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
    /// Indexed files by path relative to the corpus root, with secrets redacted as the parser
    /// redacts `Incident::path` (`precedent_parse::redact_name`): the key is the path every
    /// output shows, and a file name holding a secret never reaches the index directory.
    pub files: BTreeMap<String, FileEntry>,
    /// The corpus directory last synced (canonical), so that citations can be made absolute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corpus_root: Option<PathBuf>,
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
        self.files.iter().filter(move |(_, f)| f.origin == origin)
    }

    pub fn steps_total(&self) -> u64 {
        self.files.values().map(|f| f.steps.len() as u64).sum()
    }

    /// Reads the manifest of `index_dir`, `None` when there is none.
    pub fn load(index_dir: &Path) -> Result<Option<Manifest>> {
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

    /// Publishes this manifest: the commit point of a write.
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

    #[test]
    fn manifest_round_trips_through_disk() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Manifest::load(dir.path()).unwrap().is_none());
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            generation: 3,
            data_dir: "gen-00000003".into(),
            previous_data_dir: None,
            model_id: "m".into(),
            dimension: 4,
            chunker_version: 1,
            vectors: VectorsInfo {
                count: 0,
                segments: vec![SegmentInfo {
                    name: "vectors-00000003".into(),
                    count: 0,
                    bytes: 24,
                    blake3: "x".into(),
                    ann: false,
                }],
            },
            files: BTreeMap::new(),
            corpus_root: None,
        };
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
