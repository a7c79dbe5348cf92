//! Shared state of the HTTP and MCP front ends, and the one place that calls the index.
//!
//! Every index call runs on the blocking pool (tantivy and the embedder are CPU- and
//! I/O-bound), and every error comes back as an [`ApiError`].

use std::sync::Arc;
use std::time::Instant;

use precedent_core::{Embedder, Incident, IncidentId};
use precedent_index::{
    AvenuesRequest, AvenuesResponse, CompareRequest, CompareResponse, Engine, Facets,
    IncidentEntry, IndexWriter, SearchRequest, SearchResponse, SimilarRequest, SimilarResponse,
    Stats, Store, WriterOptions,
};
use tokio::sync::Semaphore;

use crate::error::{ApiError, ErrorCode};
use crate::metrics::Metrics;
use crate::options::ServerOptions;

/// Longest incident reference (id, id prefix or relative path) accepted, in bytes.
pub(crate) const MAX_REFERENCE_BYTES: usize = 1024;

/// What a server reads from and writes to: one [`Store`] answers every read (search,
/// `similar`, avenues, incidents, facets, stats); the local index, when there is one, takes
/// writes first (they are then published to the store) and answers exact and regex search,
/// which scan step texts. Without a local index, writes go straight to the store.
#[derive(Clone)]
pub struct Backend {
    store: Arc<dyn Store>,
    index: Option<Arc<Engine>>,
    /// Whether `index` is `store` itself (the embedded index alone), so one refresh does.
    index_is_store: bool,
}

impl Backend {
    /// The embedded index alone: it answers everything and takes the writes.
    pub fn index(engine: Arc<Engine>) -> Self {
        Backend {
            store: engine.clone(),
            index: Some(engine),
            index_is_store: true,
        }
    }

    /// `store` for every read; `index`, when given, for writes (published to `store`) and
    /// scans. With no index the server is stateless: any number of them can serve one store.
    pub fn store(store: Arc<dyn Store>, index: Option<Arc<Engine>>) -> Self {
        Backend {
            store,
            index,
            index_is_store: false,
        }
    }

    /// The store reads come from.
    pub fn reads(&self) -> &Arc<dyn Store> {
        &self.store
    }
}

impl From<Arc<Engine>> for Backend {
    fn from(engine: Arc<Engine>) -> Self {
        Backend::index(engine)
    }
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("store", &self.store.kind())
            .field("index", &self.index.is_some())
            .finish()
    }
}

/// Everything a request handler needs. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub(crate) inner: Arc<Shared>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("options", &self.inner.options)
            .field("backend", &self.inner.backend)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Shared {
    pub(crate) options: ServerOptions,
    pub(crate) backend: Backend,
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
    /// State for a server with these options, answering from `backend` (an `Arc<Engine>` for
    /// the embedded index alone) and embedding queries with `embedder` (the model the index
    /// was built with). Default allowed hosts and origins use the port of `options.addr`, so
    /// bind first and put the bound address there.
    pub fn new(
        options: ServerOptions,
        backend: impl Into<Backend>,
        embedder: Arc<dyn Embedder>,
    ) -> crate::Result<AppState> {
        options.validate()?;
        let hosts = options.effective_hosts();
        let origins = options.effective_origins();
        let permits = Arc::new(Semaphore::new(options.concurrency_limit));
        Ok(AppState {
            inner: Arc::new(Shared {
                options,
                backend: backend.into(),
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

    /// Checks the local index (and the store) for a newer published state and switches to it.
    pub async fn reload(&self) -> Result<(), ApiError> {
        let backend = self.inner.backend.clone();
        blocking(move || {
            if let Some(index) = backend.index.as_ref().filter(|_| !backend.index_is_store) {
                index.reload_if_changed()?;
            }
            backend.store.refresh().map(|_| ())
        })
        .await
    }

    /// Runs `work` on the blocking pool over the read store, brought up to date first.
    async fn read<T, F>(&self, work: F) -> Result<T, ApiError>
    where
        F: FnOnce(&dyn Store, &dyn Embedder) -> precedent_index::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let (store, embedder) = (
            self.inner.backend.store.clone(),
            self.inner.embedder.clone(),
        );
        blocking(move || {
            refresh(store.as_ref());
            work(store.as_ref(), embedder.as_ref())
        })
        .await
    }

    pub(crate) async fn search(&self, request: SearchRequest) -> Result<SearchResponse, ApiError> {
        // Exact and regex search scan step texts: the local index's, when there is one.
        if request.mode.scans()
            && let Some(index) = self.inner.backend.index.clone()
        {
            let embedder = self.inner.embedder.clone();
            return blocking(move || {
                refresh(index.as_ref());
                index.search(&request, embedder.as_ref())
            })
            .await;
        }
        self.read(move |store, embedder| store.search(&request, embedder))
            .await
    }

    pub(crate) async fn similar(
        &self,
        request: SimilarRequest,
    ) -> Result<SimilarResponse, ApiError> {
        self.read(move |store, embedder| store.similar(&request, embedder))
            .await
    }

    /// The avenues people pursued in the incidents that resemble the request's situation.
    pub(crate) async fn avenues(
        &self,
        request: AvenuesRequest,
    ) -> Result<AvenuesResponse, ApiError> {
        self.read(move |store, embedder| precedent_index::avenues(store, &request, embedder))
            .await
    }

    /// A comparison of notes with past incidents, as [`AppState::avenues`] runs.
    pub(crate) async fn compare(
        &self,
        request: CompareRequest,
    ) -> Result<CompareResponse, ApiError> {
        self.read(move |store, embedder| precedent_index::compare(store, &request, embedder))
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
        let reference = reference.to_owned();
        self.read(move |store, _| store.resolve_incident(&reference))
            .await
    }

    pub(crate) async fn incident(&self, id: IncidentId) -> Result<Incident, ApiError> {
        let found = self
            .read(move |store, _| store.incident(&id).map(|i| i.ok_or(id)))
            .await?;
        found.map_err(|id| ApiError::new(ErrorCode::NotFound, format!("unknown incident id {id}")))
    }

    pub(crate) async fn facets(&self) -> Result<Facets, ApiError> {
        self.read(|store, _| store.facets()).await
    }

    /// The read store's kind and whether it answers now.
    pub(crate) async fn store_health(&self) -> (&'static str, Result<(), String>) {
        let store = self.inner.backend.store.clone();
        let kind = store.kind();
        let health = tokio::task::spawn_blocking(move || store.health().map_err(|e| e.to_string()))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        (kind, health)
    }

    pub(crate) async fn stats(&self) -> Result<Stats, ApiError> {
        self.read(|store, _| store.stats()).await
    }

    /// Held incidents sorted by path, at most `limit`, for MCP resource listings.
    pub(crate) async fn incident_list(&self, limit: usize) -> Result<Vec<IncidentEntry>, ApiError> {
        self.read(move |store, _| store.list_incidents(limit)).await
    }

    /// Indexes one write-up under `path` and publishes; the served engine is reloaded. A write
    /// not published by `deadline` is abandoned (nothing is published) and answered `timeout`.
    pub(crate) async fn upsert(
        &self,
        path: String,
        markdown: String,
        deadline: tokio::time::Instant,
    ) -> Result<precedent_index::UpsertOutcome, ApiError> {
        if self.inner.backend.index.is_none() {
            return self
                .write_to_store(deadline, move |store, embedder| {
                    store.put_write_up(&path, markdown.as_bytes(), embedder)
                })
                .await;
        }
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
        if self.inner.backend.index.is_none() {
            return self
                .write_to_store(deadline, move |store, _| store.delete_write_up(&id))
                .await;
        }
        let deleted = self
            .write(deadline, move |writer, proceed| {
                writer.delete_unless_abandoned(&id, proceed)
            })
            .await?;
        self.reload().await?;
        Ok(deleted)
    }

    /// Runs one write straight into the store (no local index) under the write lock. A write
    /// still running at `deadline` is answered `timeout` but may still land: the store has no
    /// commit point to stop it at, and writing the same document again is harmless.
    async fn write_to_store<T, F>(
        &self,
        deadline: tokio::time::Instant,
        work: F,
    ) -> Result<T, ApiError>
    where
        F: FnOnce(&dyn Store, &dyn Embedder) -> precedent_index::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let timeout = || {
            ApiError::new(
                ErrorCode::Timeout,
                format!(
                    "write not done within {} ms; it may still reach the store, so send it again to be sure",
                    self.inner.options.request_timeout.as_millis()
                ),
            )
        };
        let guard = tokio::time::timeout_at(deadline, self.inner.write_lock.clone().lock_owned())
            .await
            .map_err(|_| timeout())?;
        let (store, embedder) = (
            self.inner.backend.store.clone(),
            self.inner.embedder.clone(),
        );
        let task = tokio::task::spawn_blocking(move || {
            let _guard = guard;
            work(store.as_ref(), embedder.as_ref())
        });
        match tokio::time::timeout_at(deadline, task).await {
            Err(_) => Err(timeout()),
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(err))) => Err(ApiError::from(err)),
            Ok(Err(join)) => Err(ApiError::internal(&join)),
        }
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
        // The store reads come from (for the embedded index itself, publishing is a no-op).
        let store = self.inner.backend.store.clone();
        let mut task = tokio::task::spawn_blocking(move || {
            let _guard = guard;
            let mut writer = IndexWriter::open(&dir, embedder, WriterOptions::default())?;
            let value = work(&mut writer, &|| writer_ticket.commit())?;
            // The write reaches the store searches read while the lock still holds the
            // generation: a Qdrant collection gets the changed incidents (or, after a failed
            // attempt, everything it missed: the sync converges).
            store.publish(&dir).map_err(|e| match e {
                precedent_index::Error::QdrantUnavailable(m) => {
                    precedent_index::Error::QdrantUnavailable(format!(
                        "the write is in the index but not yet in the search store; it gets there with the next write or `precedent index --store qdrant`: {m}"
                    ))
                }
                other => other,
            })?;
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

/// Switches to a newer published state if there is one (for the embedded index, a `stat` of
/// the manifest). A failure is logged and the current state keeps answering.
fn refresh(store: &dyn Store) {
    if let Err(err) = store.refresh() {
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
