//! Step-level hybrid search over post-incident write-ups.
//!
//! [`IndexWriter`] turns a directory of write-ups into an index: each write-up is parsed into
//! diagnostic steps (`precedent-parse`), every step becomes a tantivy document (BM25 over
//! stemmed words and over whole identifiers such as `OOMKilled` or `x509`) and an embedding in
//! an HNSW graph (usearch) backed by a flat f32 file. Re-running it is incremental: unchanged
//! files cost a `stat`, changed files are replaced, deleted and renamed ones disappear.
//!
//! [`Engine`] answers from the last published state: [`Engine::search`] runs BM25 and vector
//! retrieval (concurrently in hybrid mode) and fuses them by reciprocal-rank fusion;
//! [`Engine::similar`] ranks whole incidents against an indexed incident, a draft write-up or
//! free text. Filters (kind, service, severity, dates, tags, incidents) are applied inside both
//! retrievers. [`eval`] scores rankings against judged queries.
//!
//! # Storage and crash safety
//!
//! Each publish writes a new immutable data directory `gen-NNNNNNNN/` (tantivy files of the
//! previous generation are hard-linked, never modified), in the order vectors, tantivy commit,
//! then `manifest.json` by write-temp + fsync + rename + fsync-dir. The manifest names the data
//! directory, so it is the single commit point: a crash at any moment leaves the previous
//! manifest naming the previous, untouched directory, and the next run redoes the work. One
//! writer at a time holds `LOCK`; readers never take it.
//!
//! ```no_run
//! use std::path::Path;
//! use std::sync::Arc;
//! use precedent_core::Embedder;
//! use precedent_index::{Engine, IndexWriter, NoProgress, SearchRequest, WriterOptions};
//!
//! # fn run(embedder: Arc<dyn Embedder>) -> precedent_index::Result<()> {
//! let index = Path::new(".precedent");
//! let mut writer = IndexWriter::open(index, embedder.clone(), WriterOptions::default())?;
//! let summary = writer.sync_dir(Path::new("postmortems"), &NoProgress)?;
//! println!("{} added, {} updated, {} removed", summary.added, summary.updated, summary.removed);
//! drop(writer); // releases the lock
//!
//! let engine = Engine::open(index)?;
//! let response = engine.search(&SearchRequest::new("pods OOMKilled after limits change"), &*embedder)?;
//! for hit in response.hits {
//!     println!("{}:{} {} {}", hit.citation.path, hit.citation.line_start, hit.kind, hit.snippet);
//! }
//! # Ok(())
//! # }
//! ```

mod api;
mod avenues;
pub mod dates;
mod engine;
mod error;
pub mod eval;
mod fusion;
mod grep;
mod layout;
mod manifest;
#[cfg(feature = "qdrant")]
pub mod qdrant;
mod query;
mod rank;
mod schema;
mod searcher;
mod synonyms;
mod vectors;
mod writer;

pub use api::{
    Citation, FacetCount, Facets, Filters, Hit, HitGroup, IncidentEntry, MAX_DRAFT_BYTES, MAX_K,
    MAX_QUERY_BYTES, MatchCounts, MatchQuality, Mode, Score, SearchRequest, SearchResponse,
    SimilarIncident, SimilarRequest, SimilarResponse, SimilarSource, Stats, Store,
};
pub use avenues::{
    Avenue, AvenueEvidence, AvenueGroup, AvenuesRequest, AvenuesResponse, CompareRequest,
    CompareResponse, ComparedIncident, MAX_NOTES_BYTES, MERGE_SIMILARITY, NoteMatch, OutcomeCounts,
    avenues, compare,
};
pub use engine::Engine;
pub use error::{Error, Result};
pub use fusion::FusionOptions;
pub use manifest::{index_model_id, rebuild_reason};
pub use synonyms::{SYNONYMS_FILE, Synonyms};
pub use writer::{
    IndexSummary, IndexWriter, NoProgress, Phase, Progress, UpsertOutcome, WriterOptions,
};
