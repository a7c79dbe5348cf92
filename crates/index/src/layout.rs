//! Where things are in an index directory.
//!
//! ```text
//! INDEX_DIR/
//!   LOCK                 writer lock (fs4 exclusive lock; holds the writer's pid)
//!   manifest.json        the commit point: names the published data directory, its vector
//!                        segments and its file-table segments
//!   gen-00000007/        data directory of generation 7 (immutable once published)
//!     steps/             tantivy index, one document per step
//!     incidents/         tantivy index, one document per incident (its parse as JSON)
//!     vectors-00000001.bin      a vector segment: flat f32 vectors + their keys
//!     vectors-00000001.usearch  its HNSW graph (when the segment is large enough)
//!     vectors-00000007.bin      the segment generation 7 wrote (its changed steps, and the
//!                               live vectors of the small segments it merged)
//!     files-00000001.json       a file-table segment: entries by path, and removed paths
//!     files-00000007.json       the entries generation 7 changed (and those it merged)
//!   gen-00000006/        the previous state, kept for readers that are still opening it
//! ```
//!
//! A writer never modifies a published data directory: it hard-links the previous state's
//! tantivy files and the vector segments it keeps into a fresh directory (tantivy never
//! rewrites a file in place: segment files are created once and `meta.json` is replaced by
//! rename), writes the changes there, and publishes by renaming a new manifest over the old
//! one. A publish writes O(change) bytes: one small vector segment, one small tantivy segment,
//! one small file-table segment and the manifest head, plus whatever the merge policies fold
//! together (`vectors::merge_plan`, tantivy's log merge policy).

use std::fs;
use std::path::Path;

use tantivy::Index;
use tantivy::directory::MmapDirectory;

use crate::error::{Error, Result};
use crate::schema::{IncidentFields, StepFields, register_tokenizers};

pub(crate) const LOCK_FILE: &str = "LOCK";
pub(crate) const STEPS_DIR: &str = "steps";
pub(crate) const INCIDENTS_DIR: &str = "incidents";
pub(crate) const GEN_PREFIX: &str = "gen-";

pub(crate) fn data_dir_name(generation: u64) -> String {
    format!("{GEN_PREFIX}{generation:08}")
}

/// Opens one of the two tantivy indexes of a data directory, creating it when `create`.
pub(crate) fn open_tantivy(dir: &Path, create: bool, steps: bool) -> Result<Index> {
    if create {
        fs::create_dir_all(dir).map_err(Error::io("cannot create index directory", dir))?;
    }
    let directory = MmapDirectory::open(dir).map_err(|e| Error::Tantivy(e.into()))?;
    let index = if create && !Index::exists(&directory).map_err(|e| Error::Tantivy(e.into()))? {
        let schema = if steps {
            StepFields::schema().0
        } else {
            IncidentFields::schema().0
        };
        Index::create(directory, schema, tantivy::IndexSettings::default())?
    } else {
        Index::open(directory)?
    };
    register_tokenizers(&index);
    Ok(index)
}

/// Hard-links every file of `from` into `to` (created), except tantivy's lock files.
pub(crate) fn link_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).map_err(Error::io("cannot create index directory", to))?;
    for entry in fs::read_dir(from).map_err(Error::io("cannot list index directory", from))? {
        let entry = entry.map_err(Error::io("cannot list index directory", from))?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with(".tantivy-") {
            continue;
        }
        // Filesystems without hard links get a copy: just as immutable, only bigger.
        link_file(&entry.path(), &to.join(&name))?;
    }
    Ok(())
}

/// Hard-links the file `from` to `to`, or copies it where hard links are not supported.
pub(crate) fn link_file(from: &Path, to: &Path) -> Result<()> {
    if let Err(err) = fs::hard_link(from, to) {
        fs::copy(from, to).map_err(|_| Error::io("cannot link index file", from)(err))?;
    }
    Ok(())
}

/// Total size of the files under `dir`.
pub(crate) fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
