//! The network face of `precedent`: an HTTP API (axum) and an MCP server (rmcp) over one
//! [`Backend`]: the embedded [`precedent_index::Engine`], or a [`precedent_index::Store`]
//! such as Qdrant, with or without a local index.
//!
//! - HTTP: `POST /v1/search`, `POST /v1/similar`, `GET /v1/incidents/{id}`, `GET /v1/facets`,
//!   `GET /healthz`, `GET /metrics`, `GET /openapi.json`, and when enabled
//!   `PUT /v1/incidents` (JSON [`UpsertBody`] `{path, markdown}`; `path` only names the
//!   write-up) and `DELETE /v1/incidents/{id}`. Errors are `{code, message}` with a stable
//!   [`ErrorCode`]. `GET /openapi.json` ([`openapi_document`]) describes it all.
//! - MCP: read-only tools `search_incidents`, `find_similar_incidents`, `get_incident`,
//!   `list_facets` and resources `incident://{id}`, over streamable HTTP at `/mcp` (same
//!   server, same checks) or over stdio ([`serve_stdio`]).
//!
//! Every request passes one gate: `Host` and `Origin` allow-lists, the bearer token when one is
//! configured (compared in constant time), body size, a concurrency limit (503 with
//! `Retry-After`) and a time limit. A non-loopback bind without a token is refused. Index work
//! runs on the blocking pool; a generation published by `precedent index` is picked up without
//! a restart.
//!
//! ```no_run
//! use std::sync::Arc;
//! use precedent_server::{ServerOptions, serve};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let model_dir = precedent_embed::resolve_model_dir(None)?;
//! let embedder = Arc::new(precedent_embed::BertEmbedder::load(&model_dir, Default::default())?);
//! let options = ServerOptions::new("127.0.0.1:7777".parse()?, ".precedent");
//! let engine = Arc::new(precedent_index::Engine::open(&options.index_dir)?);
//! serve(options, engine, embedder).await?;
//! # Ok(()) }
//! ```

mod api;
mod conn;
mod error;
mod http;
mod mcp;
mod metrics;
mod openapi;
mod options;
mod security;
mod state;
mod stdio;

use std::future::Future;
use std::sync::Arc;

use precedent_core::Embedder;
use tokio::net::TcpListener;

use crate::conn::{Accepted, GuardedListener};

pub use api::{
    DeleteResponse, HealthResponse, SearchBody, SimilarBody, UpsertBody, UpsertResponse,
};
pub use error::{ApiError, Error, ErrorBody, ErrorCode, Result};
pub use http::router;
pub use mcp::{
    ENVELOPE_TAG, FindSimilarParams, GetIncidentParams, ListFacetsParams, MCP_MAX_K, McpServer,
    PREAMBLE, RESOURCE_SCHEME, SearchIncidentsParams, ToolFilters,
};
pub use openapi::document as openapi_document;
pub use options::{DEFAULT_ADDR, ServerOptions};
pub use state::{AppState, Backend};
pub use stdio::serve_lines;

/// Binds `options.addr` and serves HTTP and MCP until ctrl-c, then shuts down gracefully.
pub async fn serve(
    options: ServerOptions,
    backend: impl Into<Backend>,
    embedder: Arc<dyn Embedder>,
) -> Result<()> {
    check_bind(&options)?;
    let addr = options.addr;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    serve_on(listener, options, backend, embedder, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}

/// Serves on an already bound listener until `shutdown` completes. `options.addr` is replaced
/// by the listener's address (so default allowed hosts carry the real port).
pub async fn serve_on(
    listener: TcpListener,
    mut options: ServerOptions,
    backend: impl Into<Backend>,
    embedder: Arc<dyn Embedder>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    options.addr = listener.local_addr()?;
    check_bind(&options)?;
    let state = AppState::new(options, backend, embedder)?;
    let reloader = spawn_reloader(state.clone());
    let app = router(state.clone());
    tracing::info!(addr = %state.options().addr, writes = state.options().allow_writes, "serving HTTP API and MCP at /mcp");
    let cancel = state.inner.shutdown.clone();
    let listener = GuardedListener::new(
        listener,
        state.options().conn_limits(),
        state.inner.metrics.clone(),
    );
    let app = app.into_make_service_with_connect_info::<Accepted>();
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down");
            cancel.cancel();
        })
        .await;
    reloader.abort();
    state.inner.shutdown.cancel();
    result.map_err(Error::Io)
}

/// Serves MCP over stdin/stdout until the client disconnects. Nothing else may write to
/// stdout (logs go to stderr). Malformed lines get JSON-RPC error replies ([`serve_lines`]).
pub async fn serve_stdio(
    options: ServerOptions,
    backend: impl Into<Backend>,
    embedder: Arc<dyn Embedder>,
) -> Result<()> {
    let state = AppState::new(options, backend, embedder)?;
    let reloader = spawn_reloader(state.clone());
    let result = serve_lines(state, tokio::io::stdin(), tokio::io::stdout()).await;
    reloader.abort();
    result
}

/// A non-loopback listener needs a token; writes need a token.
fn check_bind(options: &ServerOptions) -> Result<()> {
    options.validate()?;
    if options.token.is_none() && !options.addr.ip().is_loopback() {
        return Err(Error::InsecureBind(options.addr));
    }
    if options.allow_writes && options.token.is_none() {
        return Err(Error::Options("writes need a bearer token".into()));
    }
    Ok(())
}

/// Polls the index directory for a newer generation (written by `precedent index`).
fn spawn_reloader(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(state.options().reload_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if let Err(err) = state.reload().await {
                tracing::warn!(error = %err, "cannot reload the index");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_loopback_binds_need_a_token() {
        let mut options = ServerOptions::new("0.0.0.0:7777".parse().unwrap(), "idx");
        assert!(matches!(check_bind(&options), Err(Error::InsecureBind(_))));
        options.token = Some("a-long-enough-token-123".into());
        assert!(check_bind(&options).is_ok());
        let mut local = ServerOptions::new("127.0.0.1:0".parse().unwrap(), "idx");
        assert!(check_bind(&local).is_ok());
        local.allow_writes = true;
        assert!(check_bind(&local).is_err());
        local.token = Some("short".into());
        assert!(matches!(check_bind(&local), Err(Error::Options(_))));
    }
}
