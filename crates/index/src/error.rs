//! Errors of the index crate.
//!
//! Variants are split in two families: *user errors* (a bad request, an unknown id, an index that
//! is missing or locked, a model that does not match the index) that an HTTP layer maps to 4xx,
//! and *internal errors* (I/O, tantivy, the ANN library, a corrupt index) that map to 5xx. See
//! [`Error::is_user_error`].

use std::path::PathBuf;

use precedent_core::{BoxError, IncidentId};

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while indexing or searching.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request is malformed: empty query, `k` out of range, a bad filter or option.
    #[error("invalid request: {0}")]
    InvalidRequest(String),

    /// No incident with this id is indexed.
    #[error("unknown incident id {0}")]
    UnknownIncident(IncidentId),

    /// An incident reference (id, id prefix or path) that names no incident, or several.
    #[error("{}", incident_ref_message(.reference, .candidates, .ambiguous))]
    IncidentRef {
        /// What was given.
        reference: String,
        /// True when it names several incidents, false when it names none.
        ambiguous: bool,
        /// The closest incident ids (best first), at most a handful.
        candidates: Vec<String>,
    },

    /// The write-up sent for indexing or as a `similar` source cannot be used.
    #[error("write-up {path} cannot be indexed: {reason}")]
    InvalidWriteUp {
        /// Path given with the write-up.
        path: String,
        /// Why it was rejected.
        reason: String,
    },

    /// A write through the API to an incident that a file of the corpus directory owns: the
    /// next `precedent index DIR` would undo it, so it is refused.
    #[error(
        "{path} is a file of the corpus directory, indexed by `precedent index`: edit or remove the file and run `precedent index` again (documents written through the API take paths no corpus file has)"
    )]
    OwnedByCorpus {
        /// Path of the write-up, relative to the corpus root.
        path: String,
    },

    /// A single-document write (upsert, delete) on an index that needs a full rebuild (its
    /// model, chunker or format is not this writer's): published alone, it would replace the
    /// whole index with that one document. A full `precedent index DIR` must run first.
    #[error(
        "the index needs a full rebuild before it takes single writes: {reason}; run `precedent index DIR` with this model first"
    )]
    RebuildNeeded {
        /// Why (e.g. "the embedding model changed (a to b)").
        reason: String,
    },

    /// An index written in another on-disk format, which this build cannot read.
    #[error(
        "the index at {} is in format {found} and this build reads format {expected}: run `precedent index DIR --index {}` to rebuild it",
        .dir.display(), .dir.display()
    )]
    OldFormat {
        /// The index directory.
        dir: PathBuf,
        /// The format its manifest records.
        found: u32,
        /// The format this build writes and reads.
        expected: u32,
    },

    /// A sync of a corpus directory other than the one the index was built from, which would
    /// remove every incident of the recorded one.
    #[error(
        "this index holds {files} write-ups of {}, and {} is another directory: syncing it would remove them. Pass --prune to make {} the corpus (unchanged relative paths are kept without re-embedding; write-ups not under it are removed), or use another --index",
        .recorded.display(), .given.display(), .given.display()
    )]
    OtherCorpus {
        /// The corpus root recorded in the index.
        recorded: PathBuf,
        /// The directory given.
        given: PathBuf,
        /// Corpus-owned write-ups in the index.
        files: usize,
    },

    /// There is no index at this path (run `precedent index DIR` first).
    #[error("no index at {}: build one with `precedent index DIR`", .0.display())]
    IndexMissing(PathBuf),

    /// Another process holds the writer lock.
    #[error("index is locked by another writer ({})", match .pid { Some(pid) => format!("pid {pid}"), None => "pid unknown".to_owned() })]
    Locked {
        /// Process id written in the lock file by the holder, if readable.
        pid: Option<u32>,
    },

    /// The embedder given does not produce the vectors this index was built with.
    #[error(
        "the index was built with model {index_model} (dimension {index_dimension}) but the embedder is {embedder_model} (dimension {embedder_dimension})"
    )]
    ModelMismatch {
        /// Model recorded in the index manifest.
        index_model: String,
        /// Its dimension.
        index_dimension: usize,
        /// Model of the embedder passed in.
        embedder_model: String,
        /// Its dimension.
        embedder_dimension: usize,
    },

    /// A file or directory could not be read or written.
    #[error("{context}: {}", .path.display())]
    Io {
        /// What was being done.
        context: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The full-text engine failed.
    #[error("full-text index error")]
    Tantivy(#[from] tantivy::TantivyError),

    /// The ANN library failed.
    #[error("vector index error: {0}")]
    Ann(String),

    /// The embedder failed.
    #[error("embedding failed")]
    Embed(#[source] BoxError),

    /// The manifest could not be (de)serialised.
    #[error("manifest {} is unreadable", .path.display())]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },

    /// Qdrant refused an operation or answered something unusable (the `qdrant` store): a
    /// permanent failure, retrying the same request will not help.
    #[error("qdrant: {0}")]
    Qdrant(String),

    /// Qdrant could not be reached, or stayed overloaded, within the operation's time budget
    /// (retries with backoff included): a transient failure, worth retrying later (HTTP 503
    /// with `Retry-After`).
    #[error("qdrant unavailable: {0}")]
    QdrantUnavailable(String),

    /// The Qdrant collection was built for another model or layout.
    #[error("qdrant collection {collection}: {message}")]
    QdrantCollection {
        /// The collection.
        collection: String,
        /// What does not match, and what to do.
        message: String,
    },

    /// The index on disk contradicts itself (a bug or outside tampering; rebuild it).
    #[error("index is corrupt: {0}")]
    Corrupt(String),

    /// A write was called off by its caller (for example a request that timed out) before its
    /// commit point: nothing was published.
    #[error("write abandoned before it was published")]
    Abandoned,
}

fn incident_ref_message(reference: &str, candidates: &[String], ambiguous: &bool) -> String {
    let what = if *ambiguous {
        format!("{reference:?} names several incidents")
    } else {
        format!("no incident matches {reference:?}")
    };
    if candidates.is_empty() {
        what
    } else {
        let label = if *ambiguous { "candidates" } else { "closest" };
        format!("{what}; {label}: {}", candidates.join(", "))
    }
}

impl Error {
    /// True for errors caused by the request or the caller's setup (HTTP 4xx), false for
    /// internal failures (HTTP 5xx).
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            Error::InvalidRequest(_)
                | Error::UnknownIncident(_)
                | Error::IncidentRef { .. }
                | Error::InvalidWriteUp { .. }
                | Error::OwnedByCorpus { .. }
                | Error::OtherCorpus { .. }
                | Error::RebuildNeeded { .. }
                | Error::OldFormat { .. }
                | Error::IndexMissing(_)
                | Error::Locked { .. }
                | Error::ModelMismatch { .. }
                | Error::QdrantCollection { .. }
        )
    }

    pub(crate) fn io(
        context: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            context,
            path,
            source,
        }
    }

    pub(crate) fn ann(err: impl std::fmt::Display) -> Error {
        Error::Ann(err.to_string())
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Error {
        Error::InvalidRequest(message.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_and_internal_errors_are_told_apart() {
        assert!(Error::Locked { pid: Some(42) }.is_user_error());
        assert_eq!(
            Error::Locked { pid: Some(42) }.to_string(),
            "index is locked by another writer (pid 42)"
        );
        assert!(Error::invalid("empty query").is_user_error());
        assert!(!Error::Corrupt("x".into()).is_user_error());
        assert!(!Error::Ann("x".into()).is_user_error());
    }
}
