//! Helpers shared by the integration tests: the real embedding model (behind a vector cache so
//! repeated texts are embedded once), corpus copies and index comparisons.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use precedent_core::Embedder;
use precedent_embed::{BertEmbedder, CachedEmbedder, EmbedderOptions, resolve_model_dir};
use precedent_index::{Engine, IndexSummary, IndexWriter, NoProgress, WriterOptions};

pub type Model = CachedEmbedder<BertEmbedder>;

/// The sample corpus of the repository.
pub fn corpus_samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../corpus-samples")
}

/// Where the vector cache of the tests lives between runs (vectors of the real model).
pub fn cache_file() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("precedent-index-tests.embcache")
}

static MODEL: OnceLock<Arc<Model>> = OnceLock::new();
static SAVE: Mutex<()> = Mutex::new(());

/// all-MiniLM-L6-v2 from the local cache (installed by `scripts/fetch-model`).
pub fn model() -> Arc<Model> {
    MODEL
        .get_or_init(|| {
            let dir =
                resolve_model_dir(None).expect("model not installed: run scripts/fetch-model");
            let bert = BertEmbedder::load(&dir, EmbedderOptions::default()).expect("model loads");
            let cached = match CachedEmbedder::load(bert, &cache_file()) {
                Ok(cached) => cached,
                Err(_) => CachedEmbedder::new(
                    BertEmbedder::load(&dir, EmbedderOptions::default()).expect("model loads"),
                ),
            };
            Arc::new(cached)
        })
        .clone()
}

pub fn embedder() -> Arc<dyn Embedder> {
    model()
}

/// Persists the vector cache so that later runs skip the model for texts already seen.
pub fn save_cache() {
    let _guard = SAVE.lock().unwrap_or_else(|e| e.into_inner());
    let _ = model().save(&cache_file());
}

/// Copies every file of `from` (recursively) into `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dst = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dst);
        } else {
            fs::copy(entry.path(), dst).unwrap();
        }
    }
}

pub fn options() -> WriterOptions {
    WriterOptions::default()
}

/// [`options`] that let a sync take another corpus directory than the recorded one: for
/// tests that copy an index and sync a copy of its corpus.
#[allow(dead_code)] // not every test binary uses it
pub fn pruning() -> WriterOptions {
    let mut options = options();
    options.prune = true;
    options
}

/// Opens a writer, syncs `corpus` into `index`, closes the writer.
pub fn sync(index: &Path, corpus: &Path, options: WriterOptions) -> IndexSummary {
    let mut writer = IndexWriter::open(index, embedder(), options).expect("writer opens");
    let summary = writer.sync_dir(corpus, &NoProgress).expect("sync succeeds");
    drop(writer);
    save_cache();
    summary
}

/// Every file under `dir` with its size and modification time.
pub fn file_states(dir: &Path) -> BTreeMap<PathBuf, (u64, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                out.insert(entry.path(), (meta.len(), meta.modified().unwrap()));
            }
        }
    }
    out
}

/// The steps an index serves, as (step id, text, path).
pub fn steps_of(index: &Path) -> Vec<(String, String, String)> {
    let engine = Engine::open(index).expect("index opens");
    engine
        .dump_steps()
        .unwrap()
        .into_iter()
        .map(|(id, text, path)| (id.to_string(), text, path))
        .collect()
}
