//! The write side: incremental, crash-safe indexing of a corpus directory.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use precedent_core::{ContentHash, Embedder, Incident, IncidentId};
use precedent_parse::{CHUNKER_VERSION, Format, ParseOptions, is_furniture, parse, redact_name};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;
use tantivy::{TantivyDocument, Term};

use crate::error::{Error, Result};
use crate::layout::{
    GEN_PREFIX, INCIDENTS_DIR, LOCK_FILE, STEPS_DIR, data_dir_name, link_dir, link_file,
    open_tantivy,
};
use crate::manifest::{
    FORMAT_VERSION, FileEntry, IncidentMeta, Manifest, Origin, SegmentInfo, StepEntry, VectorsInfo,
    sync_dir, text_hash, vector_key,
};
use crate::schema::{IncidentFields, StepFields, incident_key};
use crate::vectors::{Ann, SegmentFile, VectorStore, merge_plan};

/// A timestamp closer than this to the scan is not trusted (a same-size rewrite within the
/// filesystem's timestamp granularity, 2 s on FAT, would go unseen); such files are hashed next
/// time, as git does with "racily clean" entries.
const RACY_WINDOW: Duration = Duration::from_secs(2);

/// Below this many steps a commit's full text is written by one tantivy thread.
const SMALL_CHANGE_STEPS: usize = 2_000;
/// The memory arena of such a writer, and of the incident writer: tantivy's smallest.
const SMALL_WRITER_MEMORY: usize = 15_000_000;

/// Most steps one file may produce by default (the largest real write-ups have a few hundred).
pub const DEFAULT_MAX_STEPS: usize = 2_000;

/// What indexing is doing, for progress bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Phase {
    /// Listing the corpus directory.
    Scan,
    /// Checking files against the manifest, hashing and parsing changed ones (total = files).
    Parse,
    /// Embedding new steps (total = steps to embed).
    Embed,
    /// Writing vectors, full text and the manifest (total = 0).
    Write,
    /// Mirroring the published index into Qdrant (total = incidents to write).
    Mirror,
}

/// Receives progress reports; every method has a no-op default.
pub trait Progress: Send + Sync {
    /// A phase starts; `total` units of work follow (0 when unknown).
    fn start(&self, phase: Phase, total: u64) {
        let _ = (phase, total);
    }
    /// `done` more units of the current phase are finished.
    fn advance(&self, done: u64) {
        let _ = done;
    }
}

/// A [`Progress`] that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// What a sync or an upsert did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IndexSummary {
    /// Files indexed for the first time.
    pub added: usize,
    /// Files whose content changed and were re-indexed.
    pub updated: usize,
    /// Files gone from the corpus (or now unreadable as write-ups) and removed.
    pub removed: usize,
    /// Files left as they were.
    pub unchanged: usize,
    /// Files not indexed, with the reason (relative path, reason).
    pub skipped: Vec<(String, String)>,
    /// Documents written through the API, which a sync leaves as they are.
    pub api_documents: usize,
    /// Steps in the index afterwards.
    pub steps_total: u64,
    /// Steps whose vectors were computed in this run (others were reused).
    pub steps_embedded: u64,
    /// Generation published (unchanged when nothing was written).
    pub generation: u64,
    /// True when the whole index was rebuilt (first run, or model/chunker/format change).
    pub rebuilt: bool,
    /// Wall time.
    pub elapsed: Duration,
}

/// How to index.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WriterOptions {
    /// Parser options (size cap, step sizes).
    pub parse: ParseOptions,
    /// Texts per call to the embedder.
    pub embed_batch: usize,
    /// Build an ANN graph only from this many vectors up; smaller indexes are searched exactly.
    pub ann_min_vectors: usize,
    /// Threads used to build the ANN graph.
    pub threads: usize,
    /// Memory budget of the tantivy writer, in bytes.
    pub tantivy_memory: usize,
    /// A file whose parse has more steps than this is skipped (its reason says so): one huge
    /// table would otherwise become hundreds of thousands of steps. Default 2,000.
    pub max_steps: usize,
    /// Timestamps (mtime, ctime) younger than this at scan time are not trusted and the file is
    /// hashed on the next run. Default 2 s.
    pub racy_window: Duration,
    /// Let [`IndexWriter::sync_dir`] take a corpus directory other than the recorded one (a
    /// subfolder, a moved copy): the files not under it are removed. Without it such a sync
    /// is an [`Error::OtherCorpus`]. Default false.
    pub prune: bool,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            parse: ParseOptions::default(),
            embed_batch: 64,
            ann_min_vectors: 4096,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            tantivy_memory: 64 << 20,
            max_steps: DEFAULT_MAX_STEPS,
            racy_window: RACY_WINDOW,
            prune: false,
        }
    }
}

impl WriterOptions {
    /// The same options with another ANN threshold.
    pub fn with_ann_min_vectors(mut self, n: usize) -> Self {
        self.ann_min_vectors = n;
        self
    }

    /// The same options with another per-file step cap.
    pub fn with_max_steps(mut self, n: usize) -> Self {
        self.max_steps = n;
        self
    }

    /// The same options with another window of untrusted timestamps.
    pub fn with_racy_window(mut self, window: Duration) -> Self {
        self.racy_window = window;
        self
    }
}

/// What [`IndexWriter::upsert`] did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UpsertOutcome {
    /// Id of the incident.
    pub incident_id: IncidentId,
    /// Number of steps indexed for it.
    pub steps: usize,
    /// True when it replaced an indexed version.
    pub replaced: bool,
    /// Generation published.
    pub generation: u64,
}

/// The only writer of an index directory: holds its lock from [`IndexWriter::open`] until
/// dropped.
pub struct IndexWriter {
    dir: PathBuf,
    embedder: Arc<dyn Embedder>,
    options: WriterOptions,
    _lock: File,
    /// Last published state, `None` for a new index.
    manifest: Option<Manifest>,
    /// True when the next commit must rebuild from scratch (no usable previous state).
    rebuild: bool,
    /// The corpus directory being synced (canonical), recorded in the manifest.
    corpus_root: Option<PathBuf>,
}

impl std::fmt::Debug for IndexWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexWriter")
            .field("dir", &self.dir)
            .field("model", &self.embedder.model_id())
            .field("generation", &self.manifest.as_ref().map(|m| m.generation))
            .finish()
    }
}

/// A file to (re)index.
struct Upsert {
    path: String,
    stamp: Stamp,
    incident: Incident,
    origin: Origin,
}

/// What `stat` says about a file, as far as it can be trusted to detect changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Stamp {
    size: u64,
    mtime_ns: Option<u64>,
    ctime_ns: Option<u64>,
    inode: Option<(u64, u64)>,
}

impl FileEntry {
    fn set_stamp(&mut self, stamp: &Stamp) {
        self.size = stamp.size;
        self.mtime_ns = stamp.mtime_ns;
        self.ctime_ns = stamp.ctime_ns;
        self.inode = stamp.inode;
    }
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Stamp {
        #[cfg(unix)]
        let (ctime_ns, inode) = {
            use std::os::unix::fs::MetadataExt as _;
            let ctime = u64::try_from(meta.ctime())
                .ok()
                .and_then(|s| s.checked_mul(1_000_000_000))
                .and_then(|s| s.checked_add(u64::try_from(meta.ctime_nsec()).ok()?));
            (ctime, Some((meta.dev(), meta.ino())))
        };
        #[cfg(not(unix))]
        let (ctime_ns, inode) = (None, None);
        Stamp {
            size: meta.len(),
            mtime_ns: mtime_ns(meta),
            ctime_ns,
            inode,
        }
    }

    /// The stamp of a file that nobody may have touched in the last `window` before
    /// `scan_time`; otherwise the times are dropped, which makes the next run hash the file.
    fn trusted(self, scan_time: SystemTime, window: Duration) -> Stamp {
        let scan_ns = scan_time
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let old_enough = |t: Option<u64>| {
            t.is_some_and(|t| scan_ns.saturating_sub(t) >= window.as_nanos() as u64 && t <= scan_ns)
        };
        #[cfg(unix)]
        let ok = old_enough(self.mtime_ns) && old_enough(self.ctime_ns);
        #[cfg(not(unix))]
        let ok = old_enough(self.mtime_ns);
        if ok {
            self
        } else {
            Stamp {
                mtime_ns: None,
                ctime_ns: None,
                ..self
            }
        }
    }

    /// True when `entry` was recorded with trusted times and none of size, times or inode moved
    /// since.
    fn matches(&self, entry: &FileEntry) -> bool {
        #[cfg(unix)]
        let times = entry.ctime_ns.is_some()
            && entry.ctime_ns == self.ctime_ns
            && entry.inode == self.inode;
        #[cfg(not(unix))]
        let times = true;
        entry.mtime_ns.is_some()
            && entry.mtime_ns == self.mtime_ns
            && entry.size == self.size
            && times
    }
}

impl IndexWriter {
    /// Opens (creating if needed) the index at `dir` for writing. Fails with
    /// [`Error::Locked`] when another writer holds it. Readers are not affected.
    pub fn open(
        dir: &Path,
        embedder: Arc<dyn Embedder>,
        options: WriterOptions,
    ) -> Result<IndexWriter> {
        fs::create_dir_all(dir).map_err(Error::io("cannot create index directory", dir))?;
        let lock = lock(dir)?;
        let manifest = Manifest::load(dir)?;
        let rebuild = match &manifest {
            None => true,
            Some(m) => {
                m.rebuild_reason(embedder.model_id(), embedder.dimension())
                    .is_some()
                    || !dir.join(&m.data_dir).is_dir()
            }
        };
        let writer = IndexWriter {
            dir: dir.to_owned(),
            embedder,
            options,
            _lock: lock,
            manifest,
            rebuild,
            corpus_root: None,
        };
        writer.collect_garbage();
        Ok(writer)
    }

    /// A single write to an index that needs a rebuild would publish that write alone, losing
    /// every other incident: refused until a full sync has rebuilt the index.
    fn refuse_single_writes_before_a_rebuild(&self) -> Result<()> {
        match &self.manifest {
            Some(m) if self.rebuild && !m.files.is_empty() => Err(Error::RebuildNeeded {
                reason: m
                    .rebuild_reason(self.embedder.model_id(), self.embedder.dimension())
                    .unwrap_or_else(|| "the previous state cannot be reused".to_owned()),
            }),
            _ => Ok(()),
        }
    }

    /// Refuses a sync of `root` when the index holds write-ups of another corpus directory,
    /// unless [`WriterOptions::prune`] says to make `root` the corpus.
    fn check_corpus_root(&self, root: &Path) -> Result<()> {
        let Some(m) = &self.manifest else {
            return Ok(());
        };
        let Some(recorded) = &m.corpus_root else {
            return Ok(());
        };
        let files = m.files_of(Origin::Corpus).count();
        if recorded == root || files == 0 || self.options.prune {
            return Ok(());
        }
        Err(Error::OtherCorpus {
            recorded: recorded.clone(),
            given: root.to_owned(),
            files,
        })
    }

    /// A rebuild starts from nothing; documents written through the API have no file to be
    /// read again, so they are carried over as the published state holds them (their steps
    /// are re-embedded, their parse is kept). One that cannot be read back is reported.
    fn carry_api_documents(&self, upserts: &mut Vec<Upsert>, skipped: &mut Vec<(String, String)>) {
        let Some(m) = &self.manifest else { return };
        if m.files_of(Origin::Api).next().is_none() {
            return;
        }
        // The published state's incident records, if this build can read them (a format
        // change may stop that).
        let records = crate::engine::IncidentRecords::open(&self.dir.join(&m.data_dir)).ok();
        for (path, entry) in m.files_of(Origin::Api) {
            let incident = records
                .as_ref()
                .and_then(|r| r.get(&entry.incident.id).ok().flatten());
            match incident {
                Some(incident) => upserts.push(Upsert {
                    path: path.clone(),
                    stamp: Stamp {
                        size: entry.size,
                        ..Stamp::default()
                    },
                    incident,
                    origin: Origin::Api,
                }),
                None => skipped.push((
                    path.clone(),
                    "written through the API and unreadable from the previous index format; PUT it again"
                        .to_owned(),
                )),
            }
        }
    }

    /// Generation of the last published state (0 for a new index).
    pub fn generation(&self) -> u64 {
        self.manifest.as_ref().map_or(0, |m| m.generation)
    }

    /// Brings the index in line with the write-ups under `corpus_root`: unchanged files cost a
    /// `stat` (or a hash when their timestamp cannot be trusted), changed files are replaced,
    /// deleted or renamed files disappear. Files that cannot be indexed are reported in
    /// [`IndexSummary::skipped`], never fatal. Nothing is written when nothing changed.
    pub fn sync_dir(
        &mut self,
        corpus_root: &Path,
        progress: &dyn Progress,
    ) -> Result<IndexSummary> {
        let started = Instant::now();
        let scan_time = SystemTime::now();
        progress.start(Phase::Scan, 0);
        let mut skipped = Vec::new();
        let walked = walk(corpus_root, &self.dir, &mut skipped)?;
        self.check_corpus_root(&walked.root)?;
        self.corpus_root = Some(walked.root.clone());
        let files = &walked.files;
        progress.start(Phase::Parse, files.len() as u64);

        // Only the corpus's own write-ups are synced; documents written through the API stay.
        let base: BTreeMap<String, FileEntry> = match (&self.manifest, self.rebuild) {
            (Some(m), false) => m
                .files_of(Origin::Corpus)
                .map(|(p, f)| (p.clone(), f.clone()))
                .collect(),
            _ => BTreeMap::new(),
        };
        let api_paths: HashSet<String> = self.manifest.as_ref().map_or_else(HashSet::new, |m| {
            m.files_of(Origin::Api).map(|(p, _)| p.clone()).collect()
        });
        let mut upserts = Vec::new();
        let mut removals = Vec::new();
        let mut unchanged = 0;
        let mut refreshed = Vec::new();
        let mut seen = HashSet::new();
        for (rel, full) in files {
            // Files are known by their redacted path (see `FileEntry`): a secret in a name
            // reaches neither the manifest nor the full-text index.
            let key = redact_name(rel);
            progress.advance(1);
            if !seen.insert(key.clone()) {
                skipped.push((
                    key,
                    "its name, with secrets redacted, is that of another file; rename it"
                        .to_owned(),
                ));
                continue;
            }
            if api_paths.contains(&key) {
                skipped.push((
                    key,
                    "a document written through the API has this path; delete it through the API (DELETE /v1/incidents/ID) to index this file"
                        .to_owned(),
                ));
                continue;
            }
            let old = base.get(&key);
            let outcome = examine(rel, full, &walked.root, old, scan_time, &self.options);
            match outcome {
                Examined::Unchanged(stamp) => {
                    unchanged += 1;
                    refreshed.extend(stamp.map(|s| (key.clone(), s)));
                }
                Examined::Changed(upsert) => upserts.push(*upsert),
                Examined::Skipped { reason, drop_old } => {
                    skipped.push((key.clone(), reason));
                    if old.is_some() {
                        if drop_old {
                            removals.push(key.clone());
                        } else {
                            unchanged += 1;
                        }
                    }
                }
            }
        }
        // What was indexed under a directory that could not be listed this time stays.
        let unlisted: Vec<String> = walked.unlisted.iter().map(|d| redact_name(d)).collect();
        let (kept, gone): (Vec<&String>, Vec<&String>) = base
            .keys()
            .filter(|p| !seen.contains(*p))
            .partition(|p| unlisted.iter().any(|d| p.starts_with(d.as_str())));
        unchanged += kept.len();
        removals.extend(gone.into_iter().cloned());

        let added = upserts
            .iter()
            .filter(|u| !base.contains_key(&u.path))
            .count();
        let updated = upserts.len() - added;
        if self.rebuild {
            self.carry_api_documents(&mut upserts, &mut skipped);
        }
        let removed = removals.len();
        let mut summary = IndexSummary {
            added,
            updated,
            removed,
            unchanged,
            skipped,
            api_documents: 0,
            steps_total: 0,
            steps_embedded: 0,
            generation: self.generation(),
            rebuilt: false,
            elapsed: Duration::ZERO,
        };
        if !upserts.is_empty() || !removals.is_empty() || self.rebuild {
            let stats = self.commit(upserts, removals, &refreshed, progress, &|| true)?;
            summary.skipped.extend(stats.skipped);
            summary.added -= stats.rejected_added;
            summary.updated -= stats.rejected_updated;
            summary.steps_embedded = stats.embedded;
            summary.rebuilt = stats.rebuilt;
        }
        summary.steps_total = self.manifest.as_ref().map_or(0, Manifest::steps_total);
        summary.api_documents = self
            .manifest
            .as_ref()
            .map_or(0, |m| m.files_of(Origin::Api).count());
        summary.generation = self.generation();
        // Entries the walk left out are named as walked: redact those names too.
        for (path, _) in &mut summary.skipped {
            *path = redact_name(path);
        }
        summary.skipped.sort();
        summary.elapsed = started.elapsed();
        Ok(summary)
    }

    /// Indexes (or replaces) one write-up given by its path relative to the corpus root and its
    /// bytes, and publishes. A write-up the parser cannot use is an [`Error::InvalidWriteUp`].
    pub fn upsert(&mut self, relative_path: &str, bytes: &[u8]) -> Result<UpsertOutcome> {
        self.upsert_unless_abandoned(relative_path, bytes, &|| true)
    }

    /// [`IndexWriter::upsert`] that asks `proceed` once, just before its commit point, whether
    /// the caller still wants the write: when it answers false nothing is published and the
    /// result is [`Error::Abandoned`]. A caller that answers true has its write published (or
    /// an error); the question is never asked again.
    pub fn upsert_unless_abandoned(
        &mut self,
        relative_path: &str,
        bytes: &[u8],
        proceed: &dyn Fn() -> bool,
    ) -> Result<UpsertOutcome> {
        self.refuse_single_writes_before_a_rebuild()?;
        let (path, incident) = api_write_up(relative_path, bytes, &self.options)?;
        let existing = self.manifest.as_ref().and_then(|m| m.files.get(&path));
        if existing.is_some_and(|f| f.origin == Origin::Corpus) {
            return Err(Error::OwnedByCorpus { path });
        }
        let replaced = existing.is_some();
        let upsert = Upsert {
            path: path.clone(),
            stamp: Stamp {
                size: bytes.len() as u64,
                ..Stamp::default()
            },
            incident,
            origin: Origin::Api,
        };
        let id = upsert.incident.id.clone();
        let stats = self.commit(vec![upsert], Vec::new(), &[], &NoProgress, proceed)?;
        if let Some((_, reason)) = stats.skipped.into_iter().next() {
            return Err(Error::InvalidWriteUp { path, reason });
        }
        let steps = self
            .manifest
            .as_ref()
            .and_then(|m| m.files.get(&path))
            .map_or(0, |f| f.steps.len());
        Ok(UpsertOutcome {
            incident_id: id,
            steps,
            replaced,
            generation: self.generation(),
        })
    }

    /// Removes an incident written through the API; `false` when it was not indexed. An
    /// incident of a corpus file is an [`Error::OwnedByCorpus`]: remove the file instead.
    pub fn delete(&mut self, id: &IncidentId) -> Result<bool> {
        self.delete_unless_abandoned(id, &|| true)
    }

    /// [`IndexWriter::delete`] that asks `proceed` before its commit point, as
    /// [`IndexWriter::upsert_unless_abandoned`] does.
    pub fn delete_unless_abandoned(
        &mut self,
        id: &IncidentId,
        proceed: &dyn Fn() -> bool,
    ) -> Result<bool> {
        self.refuse_single_writes_before_a_rebuild()?;
        let entry = self
            .manifest
            .as_ref()
            .and_then(|m| m.files.iter().find(|(_, f)| &f.incident.id == id));
        let Some((path, entry)) = entry else {
            return Ok(false);
        };
        if entry.origin == Origin::Corpus {
            return Err(Error::OwnedByCorpus { path: path.clone() });
        }
        let path = path.clone();
        self.commit(Vec::new(), vec![path], &[], &NoProgress, proceed)?;
        Ok(true)
    }

    /// Writes a new generation with `upserts` applied, `removals` gone and the stamps of
    /// `refreshed` files updated, then publishes it unless `proceed` says no right before the
    /// commit point.
    fn commit(
        &mut self,
        upserts: Vec<Upsert>,
        removals: Vec<String>,
        refreshed: &[(String, Stamp)],
        progress: &dyn Progress,
        proceed: &dyn Fn() -> bool,
    ) -> Result<CommitStats> {
        let rebuild = self.rebuild;
        let base = if rebuild {
            None
        } else {
            self.manifest.as_ref()
        };
        let base_dir = base.map(|m| self.dir.join(&m.data_dir));
        let dim = self.embedder.dimension();
        let mut files: BTreeMap<String, Arc<FileEntry>> =
            base.map(|m| m.files.clone()).unwrap_or_default();
        let mut stale_incidents: Vec<IncidentId> = Vec::new();
        for path in &removals {
            if let Some(old) = files.remove(path) {
                stale_incidents.push(old.incident.id.clone());
            }
        }
        // The paths whose entries this commit writes (or removes).
        let mut changed: BTreeSet<String> = BTreeSet::new();
        for path in &removals {
            changed.insert(path.clone());
        }
        for (path, stamp) in refreshed {
            if let Some(entry) = files.get_mut(path) {
                Arc::make_mut(entry).set_stamp(stamp);
                changed.insert(path.clone());
            }
        }
        let mut stats = CommitStats {
            rebuilt: rebuild,
            ..CommitStats::default()
        };

        // Where each base vector is: the newest segment holding its key.
        let base_segments: &[SegmentInfo] = base.map_or(&[], |m| m.vectors.segments.as_slice());
        let mut segment_files = Vec::with_capacity(base_segments.len());
        let mut location: FxHashMap<u64, (usize, u32)> = FxHashMap::default();
        location.reserve(base_segments.iter().map(|s| s.count as usize).sum());
        if let Some(d) = &base_dir {
            for (i, seg) in base_segments.iter().enumerate() {
                let file = SegmentFile::open(&d.join(seg.vectors_file()), dim, seg.bytes)?;
                for (slot, key) in file.keys().iter().enumerate() {
                    location.insert(*key, (i, slot as u32));
                }
                segment_files.push(file);
            }
        }
        // Which incidents take which paths and keys; refuse (skip) the rare id collisions that
        // would otherwise let one file's delete remove another's steps. Keys are looked up in
        // what this commit claims and releases first; the owner of every base key is listed
        // only when a new key is in some base segment and not one the commit released.
        let mut owner_of_incident: HashMap<IncidentId, Arc<str>> = files
            .iter()
            .map(|(p, f)| (f.incident.id.clone(), Arc::from(p.as_str())))
            .collect();
        let mut claims: FxHashMap<u64, Option<Arc<str>>> = FxHashMap::default();
        let mut owner_of_key: Option<FxHashMap<u64, Arc<str>>> = None;
        let list_owners = |files: &BTreeMap<String, Arc<FileEntry>>| {
            let mut owners = FxHashMap::default();
            for (p, f) in files {
                let p: Arc<str> = p.as_str().into();
                for s in &f.steps {
                    owners.insert(vector_key(&s.id), p.clone());
                }
            }
            owners
        };
        let mut accepted: Vec<(Upsert, Vec<String>)> = Vec::new();
        for upsert in upserts {
            let path = upsert.path.clone();
            let owner: Arc<str> = path.as_str().into();
            if let Some(old) = files.get(&path) {
                for step in &old.steps {
                    claims.insert(vector_key(&step.id), None);
                }
                owner_of_incident.remove(&old.incident.id);
            }
            let id = &upsert.incident.id;
            let collision = owner_of_incident
                .get(id)
                .filter(|p| ***p != *path)
                .cloned()
                .or_else(|| {
                    let mut keys = HashSet::new();
                    upsert.incident.steps.iter().find_map(|s| {
                        let key = vector_key(&s.id);
                        if !keys.insert(key) {
                            return Some(owner.clone());
                        }
                        let current = match claims.get(&key) {
                            Some(claim) => claim.clone(),
                            None if location.contains_key(&key) => owner_of_key
                                .get_or_insert_with(|| list_owners(&files))
                                .get(&key)
                                .cloned(),
                            None => None,
                        };
                        current.filter(|p| **p != *path)
                    })
                });
            if let Some(other) = collision {
                stats.skipped.push((
                    path.clone(),
                    format!("its ids collide with those of {other}; rename the file"),
                ));
                if files.contains_key(&path) {
                    stats.rejected_updated += 1;
                } else {
                    stats.rejected_added += 1;
                }
                // Its previous version, if any, stays indexed.
                if let Some(old) = files.get(&path) {
                    owner_of_incident.insert(old.incident.id.clone(), owner.clone());
                    for step in &old.steps {
                        claims.insert(vector_key(&step.id), Some(owner.clone()));
                    }
                }
                continue;
            }
            owner_of_incident.insert(id.clone(), owner.clone());
            for step in &upsert.incident.steps {
                claims.insert(vector_key(&step.id), Some(owner.clone()));
            }
            if let Some(old) = files.get(&path) {
                stale_incidents.push(old.incident.id.clone());
            }
            let texts: Vec<String> = upsert
                .incident
                .steps
                .iter()
                .map(|s| s.contextual_text(&upsert.incident.title))
                .collect();
            accepted.push((upsert, texts));
        }
        if accepted.is_empty() && stale_incidents.is_empty() && !rebuild {
            return Ok(stats);
        }

        // The base versions of the changed files: a step whose key keeps its text keeps its
        // vector where it is; every other accepted step gets one in the new segment.
        let mut base_hash_of_key: FxHashMap<u64, &str> = FxHashMap::default();
        if let Some(m) = base {
            let changed = removals.iter().chain(accepted.iter().map(|(u, _)| &u.path));
            for entry in changed.filter_map(|p| m.files.get(p)) {
                for step in &entry.steps {
                    base_hash_of_key.insert(vector_key(&step.id), &step.text_hash);
                }
            }
        }
        let mut pending: Vec<(u64, String, &str)> = Vec::new();
        for (upsert, texts) in &accepted {
            for (step, text) in upsert.incident.steps.iter().zip(texts) {
                let key = vector_key(&step.id);
                let hash = text_hash(text);
                if base_hash_of_key.get(&key) != Some(&hash.as_str()) {
                    pending.push((key, hash, text.as_str()));
                }
            }
        }
        // A text some base step already has is not embedded again: its vector is copied.
        let mut reuse: HashMap<String, u64> = HashMap::new();
        if let Some(m) = base
            && !pending.is_empty()
        {
            let wanted: FxHashSet<&str> = pending.iter().map(|(_, h, _)| h.as_str()).collect();
            for entry in m.files.values() {
                for step in &entry.steps {
                    if wanted.contains(step.text_hash.as_str()) {
                        reuse
                            .entry(step.text_hash.clone())
                            .or_insert_with(|| vector_key(&step.id));
                    }
                }
            }
        }
        let mut todo: Vec<(&str, String)> = Vec::new();
        let mut queued = HashSet::new();
        for (_, hash, text) in &pending {
            if !reuse.contains_key(hash) && queued.insert(hash.as_str()) {
                todo.push((text, hash.clone()));
            }
        }
        progress.start(Phase::Embed, todo.len() as u64);
        let mut fresh: HashMap<String, Vec<f32>> = HashMap::with_capacity(todo.len());
        for batch in todo.chunks(self.options.embed_batch.max(1)) {
            let texts: Vec<&str> = batch.iter().map(|(t, _)| *t).collect();
            let vectors = self.embedder.embed(&texts).map_err(Error::Embed)?;
            if vectors.len() != texts.len()
                || vectors
                    .iter()
                    .any(|v| v.len() != dim || v.iter().any(|x| !x.is_finite()))
            {
                return Err(Error::Embed(
                    format!(
                        "embedder returned malformed vectors for {} texts",
                        texts.len()
                    )
                    .into(),
                ));
            }
            for ((_, hash), vector) in batch.iter().zip(vectors) {
                fresh.insert(hash.clone(), vector);
            }
            progress.advance(batch.len() as u64);
        }
        stats.embedded = fresh.len() as u64;

        // The new file table.
        for (upsert, texts) in &accepted {
            let incident = &upsert.incident;
            let steps = incident
                .steps
                .iter()
                .zip(texts)
                .map(|(s, text)| StepEntry {
                    id: s.id.clone(),
                    kind: s.kind,
                    outcome: s.outcome,
                    text_hash: text_hash(text),
                })
                .collect();
            let mut entry = FileEntry {
                size: 0,
                mtime_ns: None,
                ctime_ns: None,
                inode: None,
                hash: incident.content_hash.clone(),
                incident: IncidentMeta {
                    id: incident.id.clone(),
                    title: incident.title.clone(),
                    date: incident.date,
                    severity: incident.severity.clone(),
                    services: incident.services.clone(),
                    tags: incident.tags.clone(),
                    trigger_class: incident.card.trigger_class,
                    remediation_class: incident.card.remediation_class,
                },
                steps,
                origin: upsert.origin,
            };
            entry.set_stamp(&upsert.stamp);
            changed.insert(upsert.path.clone());
            files.insert(upsert.path.clone(), Arc::new(entry));
        }

        // Live vectors per base segment after this commit; every step must have one.
        progress.start(Phase::Write, 0);
        let in_new: FxHashSet<u64> = pending.iter().map(|(k, _, _)| *k).collect();
        let mut live = vec![0u64; base_segments.len()];
        let mut total = 0u64;
        for entry in files.values() {
            for step in &entry.steps {
                total += 1;
                let key = vector_key(&step.id);
                if in_new.contains(&key) {
                    continue;
                }
                let &(seg, _) = location
                    .get(&key)
                    .ok_or_else(|| Error::Corrupt(format!("no vector for step {}", step.id)))?;
                live[seg] += 1;
            }
        }
        let counts: Vec<(u64, u64)> = base_segments
            .iter()
            .zip(&live)
            .map(|(s, &l)| (s.count, l))
            .collect();
        let merged = merge_plan(&counts, pending.len() as u64);

        // The new segment: the changed steps' vectors, then the live vectors of the segments
        // it merges.
        let mut out_keys = Vec::with_capacity(pending.len());
        let mut out_data = Vec::with_capacity(pending.len() * dim);
        for (key, hash, _) in &pending {
            out_keys.push(*key);
            match (fresh.get(hash), reuse.get(hash)) {
                (Some(v), _) => out_data.extend_from_slice(v),
                (None, Some(from)) => {
                    let &(seg, slot) = location.get(from).ok_or_else(|| {
                        Error::Corrupt(format!("no vector for step key {from:016x}"))
                    })?;
                    segment_files[seg].push_vector(slot, &mut out_data)?;
                }
                (None, None) => {
                    return Err(Error::Corrupt(format!("no vector for step key {key:016x}")));
                }
            }
        }
        // Per merged segment, the slots of its live vectors.
        let mut keep_slots: HashMap<usize, Vec<u32>> =
            merged.iter().map(|&i| (i, Vec::new())).collect();
        if !merged.is_empty() {
            for entry in files.values() {
                for step in &entry.steps {
                    let key = vector_key(&step.id);
                    if in_new.contains(&key) {
                        continue;
                    }
                    if let Some(&(seg, slot)) = location.get(&key)
                        && let Some(slots) = keep_slots.get_mut(&seg)
                    {
                        slots.push(slot);
                    }
                }
            }
        }
        // The graph of the largest merged segment is updated rather than rebuilt when most of
        // it is live: its vectors go first, the others are added to it.
        let donor = merged
            .iter()
            .copied()
            .filter(|&i| {
                base_segments[i].ann
                    && (base_segments[i].count - live[i]) * 4 < base_segments[i].count
            })
            .max_by_key(|&i| live[i]);
        let mut ann_added: Vec<u32> = (0..out_keys.len() as u32).collect();
        let mut donor_removed = Vec::new();
        for &i in donor
            .iter()
            .chain(merged.iter().filter(|&&i| Some(i) != donor))
        {
            let slots = &keep_slots[&i];
            let d = base_dir
                .as_ref()
                .ok_or_else(|| Error::Corrupt("merge without a base".into()))?;
            let seg = &base_segments[i];
            let whole =
                VectorStore::read(&d.join(seg.vectors_file()), dim, seg.bytes, &seg.blake3)?;
            if Some(i) == donor {
                let kept: HashSet<u32> = slots.iter().copied().collect();
                donor_removed = (0..whole.len() as u32)
                    .filter(|s| !kept.contains(s))
                    .map(|s| whole.keys()[s as usize])
                    .collect();
                ann_added.clear();
            }
            for &slot in slots {
                if Some(i) != donor {
                    ann_added.push(out_keys.len() as u32);
                }
                out_keys.push(whole.keys()[slot as usize]);
                out_data.extend_from_slice(whole.vector(slot));
            }
        }
        if donor.is_some() {
            // The fresh vectors came first: they are additions too.
            ann_added.extend(0..pending.len() as u32);
        }
        let store = VectorStore::new(dim, out_keys, out_data)?;

        // A fresh data directory for the new generation.
        let generation = self.generation() + 1;
        let data_dir_name = data_dir_name(generation);
        let data_dir = self.dir.join(&data_dir_name);
        if data_dir.exists() {
            fs::remove_dir_all(&data_dir)
                .map_err(Error::io("cannot remove stale data directory", &data_dir))?;
        }
        fs::create_dir_all(&data_dir)
            .map_err(Error::io("cannot create data directory", &data_dir))?;
        if let Some(base_dir) = &base_dir {
            link_dir(&base_dir.join(STEPS_DIR), &data_dir.join(STEPS_DIR))?;
            link_dir(&base_dir.join(INCIDENTS_DIR), &data_dir.join(INCIDENTS_DIR))?;
        }

        // 1. Vectors: the segments kept are linked, the new one written.
        let mut segments = Vec::new();
        for (i, seg) in base_segments.iter().enumerate() {
            if live[i] == 0 || merged.contains(&i) {
                continue;
            }
            let from = base_dir
                .as_ref()
                .ok_or_else(|| Error::Corrupt("segment without a base".into()))?;
            let mut files = vec![seg.vectors_file()];
            if seg.ann {
                files.push(seg.graph_file());
            }
            for name in files {
                link_file(&from.join(&name), &data_dir.join(&name))?;
            }
            segments.push(seg.clone());
        }
        if !store.keys().is_empty() {
            let name = format!("vectors-{generation:08}");
            let mut seg = SegmentInfo {
                name,
                count: store.len() as u64,
                bytes: 0,
                blake3: String::new(),
                ann: store.len() >= self.options.ann_min_vectors,
            };
            (seg.bytes, seg.blake3) = store.write(&data_dir.join(seg.vectors_file()))?;
            if seg.ann {
                let graph = match donor {
                    Some(i) => Ann::update(
                        &base_dir
                            .as_ref()
                            .ok_or_else(|| Error::Corrupt("merge without a base".into()))?
                            .join(base_segments[i].graph_file()),
                        &store,
                        &donor_removed,
                        ann_added,
                        self.options.threads,
                    )?,
                    None => Ann::build(&store, self.options.threads)?,
                };
                if graph.len() != store.len() {
                    return Err(Error::Corrupt(format!(
                        "graph holds {} vectors, segment {}",
                        graph.len(),
                        store.len()
                    )));
                }
                graph.save(&data_dir.join(seg.graph_file()))?;
            }
            segments.push(seg);
        }

        // 2. Full text.
        let removed_ids: Vec<&IncidentId> = stale_incidents.iter().collect();
        let incidents: Vec<&Incident> = accepted.iter().map(|(u, _)| &u.incident).collect();
        let paths: Vec<&str> = accepted.iter().map(|(u, _)| u.path.as_str()).collect();
        // The two indexes are independent, and a small commit is mostly fsyncs: both at once.
        let (steps_dir, incidents_dir) = (data_dir.join(STEPS_DIR), data_dir.join(INCIDENTS_DIR));
        let create = base_dir.is_none();
        let (steps, incidents_written) = std::thread::scope(|scope| {
            let steps = scope
                .spawn(|| self.write_steps(&steps_dir, create, &removed_ids, &incidents, &paths));
            let written = self.write_incidents(&incidents_dir, create, &removed_ids, &incidents);
            let steps = steps
                .join()
                .unwrap_or_else(|_| Err(Error::Corrupt("the step index writer panicked".into())));
            (steps, written)
        });
        steps?;
        incidents_written?;

        // 3. The file table, then the manifest: the commit point, unless the caller gave up.
        let mut manifest = Manifest {
            format_version: FORMAT_VERSION,
            generation,
            data_dir: data_dir_name,
            previous_data_dir: base.map(|m| m.data_dir.clone()),
            model_id: self.embedder.model_id().to_owned(),
            dimension: dim,
            chunker_version: CHUNKER_VERSION,
            vectors: VectorsInfo {
                count: total,
                segments,
            },
            tables: Vec::new(),
            files,
            legacy_files: None,
            table_state: Vec::new(),
            table_of: HashMap::new(),
            corpus_root: self
                .corpus_root
                .clone()
                .or_else(|| self.manifest.as_ref()?.corpus_root.clone()),
        };
        manifest.write_tables(&self.dir, base, &changed)?;
        for d in [
            data_dir.join(STEPS_DIR),
            data_dir.join(INCIDENTS_DIR),
            data_dir.clone(),
        ] {
            sync_dir(&d)?;
        }
        if !proceed() {
            let _ = fs::remove_dir_all(&data_dir);
            return Err(Error::Abandoned);
        }
        manifest.store(&self.dir)?;
        self.manifest = Some(manifest);
        self.rebuild = false;
        self.collect_garbage();
        Ok(stats)
    }

    fn write_steps(
        &self,
        dir: &Path,
        create: bool,
        removed: &[&IncidentId],
        incidents: &[&Incident],
        paths: &[&str],
    ) -> Result<()> {
        let index = open_tantivy(dir, create, true)?;
        let f = StepFields::of(&index)?;
        // A small change is written by one thread with the smallest arena: starting the
        // default writer (a thread and arena per core) costs more than the change itself.
        let steps: usize = incidents.iter().map(|i| i.steps.len()).sum();
        let mut writer: tantivy::IndexWriter<TantivyDocument> = if steps < SMALL_CHANGE_STEPS {
            index.writer_with_num_threads(1, SMALL_WRITER_MEMORY)?
        } else {
            index.writer(self.options.tantivy_memory)?
        };
        for id in removed {
            writer.delete_term(Term::from_field_text(f.incident_id, id.as_str()));
        }
        for (incident, path) in incidents.iter().zip(paths) {
            // Dates are stored as days since the epoch so that range filters are plain integers.
            let date = incident.date.map(|d| days_since_epoch(d.start));
            let lower = |v: &str| v.trim().to_lowercase();
            for step in &incident.steps {
                let mut doc = TantivyDocument::default();
                let headings = step.heading_path.join(" / ");
                doc.add_text(f.step_id, step.id.as_str());
                doc.add_u64(f.key, vector_key(&step.id));
                doc.add_text(f.incident_id, incident.id.as_str());
                doc.add_text(f.title, &incident.title);
                doc.add_text(f.headings, &headings);
                doc.add_text(f.text, &step.text);
                doc.add_text(
                    f.ident,
                    format!("{}\n{}\n{}", incident.title, headings, step.text),
                );
                doc.add_text(f.kind, step.kind.as_str());
                for s in &incident.services {
                    doc.add_text(f.services, lower(s));
                }
                if let Some(sev) = &incident.severity {
                    doc.add_text(f.severity, lower(sev));
                }
                for t in &incident.tags {
                    doc.add_text(f.tags, lower(t));
                }
                if let Some(days) = date {
                    doc.add_i64(f.date, days);
                }
                if let Some(outcome) = step.outcome {
                    doc.add_text(f.outcome, outcome.as_str());
                }
                doc.add_text(
                    f.heading_path,
                    serde_json::to_string(&step.heading_path).unwrap_or_default(),
                );
                doc.add_text(f.path, path);
                doc.add_u64(f.line_start, u64::from(step.line_start));
                doc.add_u64(f.line_end, u64::from(step.line_end));
                writer.add_document(doc)?;
            }
        }
        writer.commit()?;
        writer.wait_merging_threads()?;
        Ok(())
    }

    fn write_incidents(
        &self,
        dir: &Path,
        create: bool,
        removed: &[&IncidentId],
        incidents: &[&Incident],
    ) -> Result<()> {
        let index = open_tantivy(dir, create, false)?;
        let f = IncidentFields::of(&index)?;
        let mut writer: tantivy::IndexWriter<TantivyDocument> =
            index.writer_with_num_threads(1, SMALL_WRITER_MEMORY)?;
        for id in removed {
            writer.delete_term(Term::from_field_text(f.incident_id, id.as_str()));
        }
        for incident in incidents {
            let mut doc = TantivyDocument::default();
            doc.add_text(f.incident_id, incident.id.as_str());
            doc.add_u64(f.key, incident_key(incident.id.as_str()));
            // The whole write-up for the incident-level leg.
            let (headings, text) = whole_write_up(incident);
            doc.add_text(f.title, &incident.title);
            doc.add_text(f.headings, &headings);
            doc.add_text(f.ident, format!("{}\n{headings}\n{text}", incident.title));
            doc.add_text(f.text, text);
            let json = serde_json::to_string(incident).map_err(|e| {
                Error::Corrupt(format!("cannot serialise incident {}: {e}", incident.id))
            })?;
            doc.add_text(f.json, json);
            writer.add_document(doc)?;
        }
        writer.commit()?;
        writer.wait_merging_threads()?;
        Ok(())
    }

    /// Removes data directories other than the published one and the one before it, and
    /// temporary files left by a crash. Best effort: readers may still hold old files open,
    /// which Unix allows.
    fn collect_garbage(&self) {
        let keep: Vec<&str> = match &self.manifest {
            Some(m) => [Some(m.data_dir.as_str()), m.previous_data_dir.as_deref()]
                .into_iter()
                .flatten()
                .collect(),
            None => Vec::new(),
        };
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(GEN_PREFIX) && !keep.contains(&name.as_ref()) {
                let _ = fs::remove_dir_all(entry.path());
            } else if name.starts_with('.') && name.contains(".tmp-") {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

#[derive(Debug, Default)]
struct CommitStats {
    embedded: u64,
    skipped: Vec<(String, String)>,
    rejected_added: usize,
    rejected_updated: usize,
    rebuilt: bool,
}

fn epoch() -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()
}

pub(crate) fn days_since_epoch(date: chrono::NaiveDate) -> i64 {
    date.signed_duration_since(epoch()).num_days()
}

/// The date `days` after 1970-01-01 (the inverse of [`days_since_epoch`]).
#[cfg_attr(not(feature = "qdrant"), allow(dead_code))]
pub(crate) fn date_of_days(days: i64) -> Option<chrono::NaiveDate> {
    epoch().checked_add_signed(chrono::TimeDelta::try_days(days)?)
}

/// Takes the writer lock of `dir`.
fn lock(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(Error::io("cannot open lock file", &path))?;
    match fs4::FileExt::try_lock(&file) {
        Ok(()) => {}
        Err(fs4::TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(Error::Locked {
                pid: text.trim().parse().ok(),
            });
        }
        Err(fs4::TryLockError::Error(err)) => {
            return Err(Error::io("cannot lock index", &path)(err));
        }
    }
    // Record our pid for the error message of the next writer; skip the write (and the mtime
    // change) when it is already there.
    let pid = std::process::id().to_string();
    let mut current = String::new();
    let _ = file.read_to_string(&mut current);
    if current.trim() != pid {
        let io = Error::io("cannot write lock file", &path);
        file.set_len(0)
            .and_then(|_| file.rewind())
            .and_then(|_| file.write_all(pid.as_bytes()))
            .map_err(io)?;
    }
    Ok(file)
}

enum Examined {
    /// Nothing to do; with a fresher trusted stamp when the file had to be hashed.
    Unchanged(Option<Stamp>),
    Changed(Box<Upsert>),
    Skipped {
        reason: String,
        drop_old: bool,
    },
}

fn mtime_ns(meta: &fs::Metadata) -> Option<u64> {
    let modified = meta.modified().ok()?;
    modified
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_nanos() as u64)
}

/// Decides what to do with one file, reading it only when its stamp (size, mtime, ctime, inode)
/// moved or could not be trusted.
fn examine(
    rel: &str,
    full: &Path,
    root: &Path,
    old: Option<&FileEntry>,
    scan_time: SystemTime,
    options: &WriterOptions,
) -> Examined {
    let skip = |reason: String, drop_old: bool| Examined::Skipped { reason, drop_old };
    let mut file = match open_inside(full, root) {
        Ok(file) => file,
        Err((reason, drop_old)) => return skip(reason, drop_old),
    };
    let before = match file.metadata() {
        Ok(meta) => Stamp::of(&meta),
        Err(err) => return skip(format!("cannot read file: {err}"), false),
    };
    if let Some(old) = old
        && before.matches(old)
    {
        return Examined::Unchanged(None);
    }
    let max = options.parse.max_bytes;
    if before.size > max {
        return skip(
            format!("file is {} bytes, over the {max} byte cap", before.size),
            true,
        );
    }
    let mut bytes = Vec::with_capacity(before.size as usize);
    if let Err(err) = (&mut file).take(max + 1).read_to_end(&mut bytes) {
        return skip(format!("cannot read file: {err}"), false);
    }
    if bytes.len() as u64 > max {
        return skip(format!("file is over the {max} byte cap"), true);
    }
    // A file written while it was read keeps no trusted stamp: the next run hashes it again.
    let after = file.metadata().map(|m| Stamp::of(&m)).ok();
    let stamp = if after == Some(before) && before.size == bytes.len() as u64 {
        before.trusted(scan_time, options.racy_window)
    } else {
        Stamp {
            size: bytes.len() as u64,
            ..Stamp::default()
        }
    };
    if let Some(old) = old
        && old.hash == ContentHash::of(&bytes)
    {
        return Examined::Unchanged(Some(stamp));
    }
    let parsed = parse(rel, &bytes, &options.parse);
    match parsed.incident {
        Some(incident) if incident.steps.len() > options.max_steps => skip(
            too_many_steps(incident.steps.len(), options.max_steps),
            true,
        ),
        Some(incident) => Examined::Changed(Box::new(Upsert {
            path: redact_name(rel),
            stamp,
            incident,
            origin: Origin::Corpus,
        })),
        None => skip(
            parsed
                .skip_reason()
                .map_or_else(|| "not a write-up".to_owned(), |d| d.message.clone()),
            true,
        ),
    }
}

fn too_many_steps(steps: usize, max: usize) -> String {
    format!("the write-up parses into {steps} steps, over the cap of {max} steps per file")
}

/// Opens a corpus file for reading. Refused, with the reason and whether an indexed version
/// must go: anything that is not a regular file inside `root` (canonical) once every link is
/// resolved. On Linux the opened descriptor itself is checked too, so a path swapped for a link
/// between the check and the open is still caught.
fn open_inside(full: &Path, root: &Path) -> Result<File, (String, bool)> {
    let outside = || {
        (
            "resolves to a path outside the corpus root".to_owned(),
            true,
        )
    };
    let real = fs::canonicalize(full).map_err(|e| (format!("cannot resolve path: {e}"), true))?;
    if !real.starts_with(root) {
        return Err(outside());
    }
    let meta = fs::metadata(&real).map_err(|e| (format!("cannot read file: {e}"), false))?;
    if !meta.is_file() {
        return Err((not_regular(&meta.file_type()), true));
    }
    let file = File::open(&real).map_err(|e| (format!("cannot read file: {e}"), false))?;
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd as _;
        if let Ok(opened) = fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
            && !opened.starts_with(root)
        {
            return Err(outside());
        }
    }
    Ok(file)
}

/// Why a directory entry that is neither a file nor a directory is not read.
fn not_regular(file_type: &fs::FileType) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt as _;
        let kind = if file_type.is_fifo() {
            "a FIFO"
        } else if file_type.is_socket() {
            "a socket"
        } else if file_type.is_block_device() {
            "a block device"
        } else if file_type.is_char_device() {
            "a character device"
        } else {
            "not a regular file"
        };
        format!("{kind}, not a regular file")
    }
    #[cfg(not(unix))]
    {
        let _ = file_type;
        "not a regular file".to_owned()
    }
}

/// What [`walk`] found.
struct Walked {
    /// The corpus root, canonical.
    root: PathBuf,
    /// Candidate write-ups: relative `/`-separated path and full path, sorted.
    files: Vec<(String, PathBuf)>,
    /// Prefixes (`dir/`) of subdirectories that could not be listed: what was indexed under
    /// them stays as it was.
    unlisted: Vec<String>,
}

/// Lists candidate write-ups under `root`. Every entry left out is reported in `skipped` with
/// its reason: hidden entries, the index directory, furniture (README, LICENSE, ...), other
/// extensions, names that are not UTF-8, FIFOs, sockets and devices, broken or looping links,
/// links to directories (never followed, so no cycles) or to anything outside the root, and
/// subdirectories that cannot be listed (or whose path is too long). Only the root itself must
/// be listable.
fn walk(root: &Path, index_dir: &Path, skipped: &mut Vec<(String, String)>) -> Result<Walked> {
    let root = fs::canonicalize(root).map_err(Error::io("cannot read corpus directory", root))?;
    if !fs::metadata(&root).is_ok_and(|m| m.is_dir()) {
        return Err(Error::invalid(format!(
            "{} is not a directory",
            root.display()
        )));
    }
    let index_dir = fs::canonicalize(index_dir).ok();
    let mut walked = Walked {
        root: root.clone(),
        files: Vec::new(),
        unlisted: Vec::new(),
    };
    let mut stack = vec![(root.clone(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if prefix.is_empty() => {
                return Err(Error::io("cannot list directory", &dir)(err));
            }
            Err(err) => {
                skipped.push((
                    prefix.trim_end_matches('/').to_owned(),
                    format!("cannot list directory: {err}"),
                ));
                walked.unlisted.push(prefix);
                continue;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(err) => {
                    skipped.push((
                        format!("{prefix}*"),
                        format!("cannot list directory entry: {err}"),
                    ));
                    continue;
                }
            };
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                skipped.push((
                    format!("{prefix}{}", name.to_string_lossy()),
                    "file name is not UTF-8".to_owned(),
                ));
                continue;
            };
            let rel = format!("{prefix}{name}");
            let mut skip = |reason: String| skipped.push((rel.clone(), reason));
            let path = entry.path();
            let file_type = match entry.file_type() {
                Ok(file_type) => file_type,
                Err(err) => {
                    skip(format!("cannot read file type: {err}"));
                    continue;
                }
            };
            if file_type.is_dir()
                && index_dir
                    .as_ref()
                    .is_some_and(|i| fs::canonicalize(&path).ok().as_ref() == Some(i))
            {
                skip("the index directory".to_owned());
                continue;
            }
            if name.starts_with('.') {
                skip("hidden entry".to_owned());
                continue;
            }
            if file_type.is_dir() {
                stack.push((path, format!("{rel}/")));
                continue;
            }
            if file_type.is_symlink() {
                match fs::canonicalize(&path) {
                    Err(err) => {
                        skip(format!("broken or looping symbolic link: {err}"));
                        continue;
                    }
                    Ok(real) if !real.starts_with(&root) => {
                        skip("symbolic link to a path outside the corpus root".to_owned());
                        continue;
                    }
                    Ok(real) => match fs::metadata(&real) {
                        Ok(meta) if meta.is_dir() => {
                            skip("symbolic link to a directory (not followed)".to_owned());
                            continue;
                        }
                        Ok(meta) if !meta.is_file() => {
                            skip(format!(
                                "symbolic link to {}",
                                not_regular(&meta.file_type())
                            ));
                            continue;
                        }
                        Ok(_) => {}
                        Err(err) => {
                            skip(format!("cannot read link target: {err}"));
                            continue;
                        }
                    },
                }
            } else if !file_type.is_file() {
                skip(not_regular(&file_type));
                continue;
            }
            if Format::of(name).is_none() {
                skip("not a write-up format (expected .md, .markdown or .txt)".to_owned());
            } else if is_furniture(name) {
                skip("repository furniture (README, LICENSE, ...), not a write-up".to_owned());
            } else {
                walked.files.push((rel, path));
            }
        }
    }
    walked.files.sort();
    Ok(walked)
}

/// A write-up given through the API, parsed as `options` say, with its (redacted) path: an
/// invalid path, a file the parser cannot use or one over the step cap is an error. Every
/// store's API write starts here.
pub(crate) fn api_write_up(
    relative_path: &str,
    bytes: &[u8],
    options: &WriterOptions,
) -> Result<(String, Incident)> {
    let raw = normalise_relative(relative_path)?;
    let parsed = parse(&raw, bytes, &options.parse);
    let path = redact_name(&raw);
    let Some(incident) = parsed.incident else {
        let reason = parsed
            .skip_reason()
            .map_or("not a write-up".to_owned(), |d| d.message.clone());
        return Err(Error::InvalidWriteUp { path, reason });
    };
    if incident.steps.len() > options.max_steps {
        let reason = too_many_steps(incident.steps.len(), options.max_steps);
        return Err(Error::InvalidWriteUp { path, reason });
    }
    Ok((path, incident))
}

/// Validates a path given with an upsert: relative, no `..`, `/`-separated.
fn normalise_relative(path: &str) -> Result<String> {
    let parts: Vec<&str> = path
        .split(['/', '\\'])
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.is_empty() || path.starts_with('/') || parts.contains(&"..") || path.contains('\0') {
        return Err(Error::invalid(format!(
            "invalid write-up path {path:?}: expected a relative path without '..'"
        )));
    }
    let normalised = parts.join("/");
    if Format::of(&normalised).is_none() {
        return Err(Error::InvalidWriteUp {
            path: normalised,
            reason: "not a write-up format (expected .md, .markdown or .txt)".to_owned(),
        });
    }
    Ok(normalised)
}

/// A write-up as a whole, as the incident-level leg searches it: every heading once, in order,
/// and every step's text, each one line apart.
pub(crate) fn whole_write_up(incident: &Incident) -> (String, String) {
    let mut headings: Vec<&str> = Vec::new();
    for step in &incident.steps {
        for h in &step.heading_path {
            if !headings.contains(&h.as_str()) {
                headings.push(h);
            }
        }
    }
    let text = incident
        .steps
        .iter()
        .map(|s| s.text.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    (headings.join("\n"), text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upsert_paths_are_validated() {
        assert_eq!(normalise_relative("./a\\b.md").unwrap(), "a/b.md");
        for bad in ["", "/etc/x.md", "../x.md", "a/../../x.md", "x.pdf"] {
            assert!(
                normalise_relative(bad).unwrap_err().is_user_error(),
                "{bad}"
            );
        }
    }

    #[test]
    fn walk_reports_everything_it_leaves_out() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for f in [
            "a.md",
            "sub/b.txt",
            "README.md",
            ".hidden/c.md",
            "x.png",
            "idx/d.md",
            "sub/.e.md",
        ] {
            let p = root.join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, "# t\n\nbody\n").unwrap();
        }
        let mut skipped = Vec::new();
        let walked = walk(root, &root.join("idx"), &mut skipped).unwrap();
        let rels: Vec<_> = walked.files.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(rels, ["a.md", "sub/b.txt"]);
        skipped.sort();
        let skipped: Vec<_> = skipped
            .iter()
            .map(|(p, r)| (p.as_str(), r.split(' ').next().unwrap()))
            .collect();
        assert_eq!(
            skipped,
            [
                (".hidden", "hidden"),
                ("README.md", "repository"),
                ("idx", "the"),
                ("sub/.e.md", "hidden"),
                ("x.png", "not"),
            ]
        );
    }

    #[test]
    fn stamps_are_trusted_only_when_old_enough() {
        let scan = UNIX_EPOCH + Duration::from_secs(1_000);
        let at = |secs: u64| Some(secs * 1_000_000_000);
        let stamp = Stamp {
            size: 3,
            mtime_ns: at(990),
            ctime_ns: at(990),
            inode: Some((1, 2)),
        };
        let window = Duration::from_secs(2);
        assert_eq!(stamp.trusted(scan, window), stamp);
        for young in [
            Stamp {
                mtime_ns: at(999),
                ..stamp
            },
            Stamp {
                ctime_ns: at(999),
                ..stamp
            },
            Stamp {
                mtime_ns: at(2_000),
                ..stamp
            },
        ] {
            let t = young.trusted(scan, window);
            assert_eq!((t.mtime_ns, t.ctime_ns, t.size), (None, None, 3));
        }
    }
}
