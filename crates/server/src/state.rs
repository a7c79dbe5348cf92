//! Shared state of the HTTP and MCP front ends, and the one place that calls the index.
//!
//! Every index call runs on the blocking pool (tantivy and the embedder are CPU- and
//! I/O-bound), and every error comes back as an [`ApiError`].

use std::sync::Arc;
use std::time::Instant;

use precedent_core::{Embedder, Incident, IncidentId};
use precedent_index::{
    AvenuesRequest, AvenuesResponse, CompareRequest, CompareResponse, Engine, Facets, IndexWriter,
    QueryStore, SearchRequest, SearchResponse, SimilarRequest, SimilarResponse, Stats,
    WriterOptions,
};
use tokio::sync::Semaphore;

use crate::error::{ApiError, ErrorCode};
use crate::metrics::Metrics;
use crate::options::ServerOptions;

/// Longest incident reference (id, id prefix or relative path) accepted, in bytes.
pub(crate) const MAX_REFERENCE_BYTES: usize = 1024;

/// Everything a request handler needs. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub(crate) inner: Arc<Shared>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Shared {
    pub(crate) options: ServerOptions,
    pub(crate) engine: Arc<Engine>,
    pub(crate) embedder: Arc<dyn Embedder>,
    pub(crate) hosts: Vec<String>,
    pub(crate) origins: Vec<String>,
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) metrics: Arc<Metrics>,
    /// Serialises writes from this process; the index lock guards against other processes.
    /// Held by the blocking write itself, so a write abandoned at its deadline still keeps
    /// the next one waiting until it is over.
    pub(crate) write_lock: Arc<tokio::sync::Mutex<()>>,
    /// Cancelled when the server shuts down (ends MCP streams).
    pub(crate) shutdown: tokio_util::sync::CancellationToken,
}

impl AppState {
    /// State for a server with these options, serving `engine` and embedding queries with
    /// `embedder` (the model the index was built with). Default allowed hosts and origins use
    /// the port of `options.addr`, so bind first and put the bound address there.
    pub fn new(
        options: ServerOptions,
        engine: Arc<Engine>,
        embedder: Arc<dyn Embedder>,
    ) -> crate::Result<AppState> {
        options.validate()?;
        let hosts = options.effective_hosts();
        let origins = options.effective_origins();
        let permits = Arc::new(Semaphore::new(options.concurrency_limit));
        Ok(AppState {
            inner: Arc::new(Shared {
                options,
                engine,
                embedder,
                hosts,
                origins,
                permits,
                metrics: Arc::default(),
                write_lock: Arc::default(),
                shutdown: tokio_util::sync::CancellationToken::new(),
            }),
        })
    }

    /// The options in force.
    pub fn options(&self) -> &ServerOptions {
        &self.inner.options
    }

    /// Checks the index directory for a newer published generation and switches to it.
    pub async fn reload(&self) -> Result<(), ApiError> {
        let engine = self.inner.engine.clone();
        blocking(move || engine.reload_if_changed().map(|_| ())).await
    }

    pub(crate) async fn search(&self, request: SearchRequest) -> Result<SearchResponse, ApiError> {
        let (engine, embedder) = (self.inner.engine.clone(), self.inner.embedder.clone());
        let store = self.inner.options.query_store.clone();
        // Exact and regex search scan step texts, which only the embedded index holds.
        blocking(move || match store {
            Some(store) if !request.mode.scans() => store.search(&request, embedder.as_ref()),
            _ => {
                refresh(&engine);
                engine.search(&request, embedder.as_ref())
            }
        })
        .await
    }

    pub(crate) async fn similar(
        &self,
        request: SimilarRequest,
    ) -> Result<SimilarResponse, ApiError> {
        let (engine, embedder) = (self.inner.engine.clone(), self.inner.embedder.clone());
        let store = self.inner.options.query_store.clone();
        blocking(move || match store {
            Some(store) => store.similar(&request, embedder.as_ref()),
            None => {
                refresh(&engine);
                engine.similar(&request, embedder.as_ref())
            }
        })
        .await
    }

    /// Avenues over the configured store, with incidents read from the embedded index.
    pub(crate) async fn avenues(
        &self,
        request: AvenuesRequest,
    ) -> Result<AvenuesResponse, ApiError> {
        let (engine, embedder) = (self.inner.engine.clone(), self.inner.embedder.clone());
        let store = self.inner.options.query_store.clone();
        blocking(move || {
            refresh(&engine);
            let on: &dyn QueryStore = store.as_deref().unwrap_or(engine.as_ref());
            precedent_index::avenues(on, &engine, &request, embedder.as_ref())
        })
        .await
    }

    /// A comparison of notes with past incidents, as [`AppState::avenues`] runs.
    pub(crate) async fn compare(
        &self,
        request: CompareRequest,
    ) -> Result<CompareResponse, ApiError> {
        let (engine, embedder) = (self.inner.engine.clone(), self.inner.embedder.clone());
        let store = self.inner.options.query_store.clone();
        blocking(move || {
            refresh(&engine);
            let on: &dyn QueryStore = store.as_deref().unwrap_or(engine.as_ref());
            precedent_index::compare(on, &engine, &request, embedder.as_ref())
        })
        .await
    }

    /// The incident `reference` names, read as the CLI reads it: a full id, a unique id prefix,
    /// or the write-up's path relative to the corpus root. An unknown reference is `not_found`
    /// and an ambiguous one `bad_request`, both listing the closest ids.
    pub(crate) async fn resolve(&self, reference: &str) -> Result<IncidentId, ApiError> {
        let reference = reference.trim();
        if reference.is_empty() {
            return Err(ApiError::bad_request("empty incident id"));
        }
        if reference.len() > MAX_REFERENCE_BYTES {
            return Err(ApiError::bad_request(format!(
                "incident id longer than {MAX_REFERENCE_BYTES} bytes"
            )));
        }
        let engine = self.inner.engine.clone();
        let reference = reference.to_owned();
        blocking(move || {
            refresh(&engine);
            engine.resolve_incident(&reference)
        })
        .await
    }

    pub(crate) async fn incident(&self, id: IncidentId) -> Result<Incident, ApiError> {
        let engine = self.inner.engine.clone();
        let found = blocking(move || {
            refresh(&engine);
            engine.incident(&id).map(|i| i.ok_or(id))
        })
        .await?;
        found.map_err(|id| ApiError::new(ErrorCode::NotFound, format!("unknown incident id {id}")))
    }

    pub(crate) async fn facets(&self) -> Result<Facets, ApiError> {
        let engine = self.inner.engine.clone();
        blocking(move || {
            refresh(&engine);
            Ok(engine.facets())
        })
        .await
    }

    /// The query store's kind and whether it answers (`None` without one: the index is it).
    pub(crate) async fn store_health(&self) -> Option<(&'static str, Result<(), String>)> {
        let store = self.inner.options.query_store.clone()?;
        let kind = store.kind();
        let health = tokio::task::spawn_blocking(move || store.health().map_err(|e| e.to_string()))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        Some((kind, health))
    }

    pub(crate) async fn stats(&self) -> Result<Stats, ApiError> {
        let engine = self.inner.engine.clone();
        blocking(move || {
            refresh(&engine);
            Ok(engine.stats())
        })
        .await
    }

    /// Indexed incidents, as (id, title, path) sorted by path, at most `limit`, for MCP
    /// resource listings.
    ///
    /// The engine has no listing call yet, so this reads the published manifest (the index's
    /// commit point, replaced atomically) and takes only ids, titles and paths from it. Any
    /// surprise in it yields an empty list rather than an error: resources can still be read by
    /// id through the `incident://{id}` template.
    pub(crate) async fn incident_list(
        &self,
        limit: usize,
    ) -> Result<Vec<(IncidentId, String, String)>, ApiError> {
        let path = self.inner.options.index_dir.join("manifest.json");
        let list = tokio::task::spawn_blocking(move || {
            let bytes = std::fs::read(&path).ok()?;
            let manifest: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
            let files = manifest.get("files")?.as_object()?;
            let list = files
                .iter()
                .filter_map(|(path, entry)| {
                    let incident = entry.get("incident")?;
                    let id = IncidentId::parse(incident.get("id")?.as_str()?).ok()?;
                    let title = incident.get("title")?.as_str()?.to_owned();
                    Some((id, title, path.clone()))
                })
                .take(limit)
                .collect::<Vec<_>>();
            Some(list)
        })
        .await
        .map_err(|e| ApiError::internal(&e))?;
        Ok(list.unwrap_or_default())
    }

    /// Indexes one write-up under `path` and publishes; the served engine is reloaded. A write
    /// not published by `deadline` is abandoned (nothing is published) and answered `timeout`.
    pub(crate) async fn upsert(
        &self,
        path: String,
        markdown: String,
        deadline: tokio::time::Instant,
    ) -> Result<precedent_index::UpsertOutcome, ApiError> {
        let outcome = self
            .write(deadline, move |writer, proceed| {
                writer.upsert_unless_abandoned(&path, markdown.as_bytes(), proceed)
            })
            .await?;
        self.reload().await?;
        Ok(outcome)
    }

    /// Removes one incident and publishes; `false` when it was not indexed. Abandoned at
    /// `deadline` as [`AppState::upsert`] is.
    pub(crate) async fn delete(
        &self,
        id: IncidentId,
        deadline: tokio::time::Instant,
    ) -> Result<bool, ApiError> {
        let deleted = self
            .write(deadline, move |writer, proceed| {
                writer.delete_unless_abandoned(&id, proceed)
            })
            .await?;
        self.reload().await?;
        Ok(deleted)
    }

    /// Runs one write on the blocking pool under the write lock. At `deadline` the write is
    /// abandoned unless it already reached its commit point, in which case its real outcome is
    /// awaited and returned: a client told `timeout` never sees the write applied later.
    async fn write<T, F>(&self, deadline: tokio::time::Instant, work: F) -> Result<T, ApiError>
    where
        F: FnOnce(&mut IndexWriter, &dyn Fn() -> bool) -> precedent_index::Result<T>
            + Send
            + 'static,
        T: Send + 'static,
    {
        let timeout = || {
            ApiError::new(
                ErrorCode::Timeout,
                format!(
                    "write not published within {} ms; it was abandoned",
                    self.inner.options.request_timeout.as_millis()
                ),
            )
        };
        let guard = tokio::time::timeout_at(deadline, self.inner.write_lock.clone().lock_owned())
            .await
            .map_err(|_| timeout())?;
        let ticket = Arc::new(Ticket::default());
        let (dir, embedder) = (
            self.inner.options.index_dir.clone(),
            self.inner.embedder.clone(),
        );
        let writer_ticket = ticket.clone();
        let store = self.inner.options.query_store.clone();
        let mut task = tokio::task::spawn_blocking(move || {
            let _guard = guard;
            let mut writer = IndexWriter::open(&dir, embedder, WriterOptions::default())?;
            let value = work(&mut writer, &|| writer_ticket.commit())?;
            // The write reaches the store searches read while the lock still holds the
            // generation: a Qdrant collection gets the changed incidents (or, after a failed
            // attempt, everything it missed: the sync converges).
            if let Some(store) = store {
                store.publish(&dir).map_err(|e| match e {
                    precedent_index::Error::QdrantUnavailable(m) => {
                        precedent_index::Error::QdrantUnavailable(format!(
                            "the write is in the index but not yet in the search store; it gets there with the next write or `precedent index --store qdrant`: {m}"
                        ))
                    }
                    other => other,
                })?;
            }
            Ok::<T, precedent_index::Error>(value)
        });
        let joined = tokio::select! {
            joined = &mut task => joined,
            () = tokio::time::sleep_until(deadline) => {
                if ticket.abandon() {
                    return Err(timeout());
                }
                task.await
            }
        };
        match joined {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(ApiError::from(err)),
            Err(join) => Err(ApiError::internal(&join)),
        }
    }
}

/// Who decides the fate of a write racing its deadline: the writer (about to publish) or the
/// request (giving up). Exactly one of them wins.
#[derive(Debug, Default)]
struct Ticket(std::sync::atomic::AtomicU8);

impl Ticket {
    const PENDING: u8 = 0;
    const COMMITTING: u8 = 1;
    const ABANDONED: u8 = 2;

    /// The writer may publish (true) unless the request gave up first.
    fn commit(&self) -> bool {
        self.swap_from_pending(Self::COMMITTING)
    }

    /// The request gives up (true) unless the writer is already publishing.
    fn abandon(&self) -> bool {
        self.swap_from_pending(Self::ABANDONED)
    }

    fn swap_from_pending(&self, to: u8) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        self.0
            .compare_exchange(Self::PENDING, to, SeqCst, SeqCst)
            .is_ok()
    }
}

/// Switches to a newer published generation if there is one (a `stat` of the manifest). A
/// failure is logged and the current state keeps answering.
fn refresh(engine: &Engine) {
    if let Err(err) = engine.reload_if_changed() {
        tracing::warn!(error = %crate::error::ErrorChain(&err), "cannot load the new index generation");
    }
}

/// Runs index work on the blocking pool and maps its error.
async fn blocking<T, F>(work: F) -> Result<T, ApiError>
where
    F: FnOnce() -> precedent_index::Result<T> + Send + 'static,
    T: Send + 'static,
{
    let started = Instant::now();
    let result = tokio::task::spawn_blocking(work).await;
    tracing::trace!(
        elapsed_us = started.elapsed().as_micros() as u64,
        "index call"
    );
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(ApiError::from(err)),
        Err(join) => Err(ApiError::internal(&join)),
    }
}
