//! `precedent serve` (HTTP API + MCP at /mcp) and `precedent mcp` (MCP over stdio).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use anyhow::Context;
use precedent_server::ServerOptions;

use crate::common::{IndexArgs, ModelArgs, StoreArgs, StoreKind, open};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on. Anything but loopback needs a bearer token.
    #[arg(long, env = "PRECEDENT_ADDR", default_value = "127.0.0.1:7777")]
    addr: SocketAddr,
    /// File holding the bearer token clients must send (Authorization: Bearer ...). The token
    /// can also come from $PRECEDENT_TOKEN; never from the command line.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Accept PUT /v1/incidents and DELETE /v1/incidents/{id} (requires a token).
    #[arg(long)]
    allow_writes: bool,
    /// Accepted Host header (repeatable) [default: localhost, 127.0.0.1 and the IPv6 loopback, on
    /// the bound port].
    #[arg(long = "allowed-host", value_name = "HOST")]
    allowed_hosts: Vec<String>,
    /// Origin allowed to call the API from a browser (repeatable; enables CORS for it).
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    cors_origins: Vec<String>,
    /// Requests handled at once; more get 503 with Retry-After.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Open connections at most; at the cap a new connection evicts an idle one.
    #[arg(
        long,
        env = "PRECEDENT_MAX_CONNECTIONS",
        default_value_t = 1024,
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    max_connections: u32,
    /// Time a client has to send a request's headers before its connection is closed, in
    /// seconds.
    #[arg(
        long,
        env = "PRECEDENT_HEADER_TIMEOUT",
        default_value_t = 10,
        value_name = "SECS",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    header_timeout: u64,
    /// Time a kept-alive connection may sit idle between requests, in seconds.
    #[arg(
        long,
        env = "PRECEDENT_IDLE_TIMEOUT",
        default_value_t = 60,
        value_name = "SECS",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    idle_timeout: u64,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    index: IndexArgs,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Debug, clap::Args)]
pub struct McpArgs {
    /// Print a ready MCP client configuration (absolute paths of this binary, the index and the
    /// model) and exit.
    #[arg(long)]
    print_config: bool,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    index: IndexArgs,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    store: StoreArgs,
}

/// What the server answers from, with the embedder for its queries and a line saying so.
/// `--store embedded`: the index at `--index`. `--store qdrant`: the collection for every read;
/// the local index too when `--index` holds one (writes then go to it first, and exact and
/// regex search scan it), else none: a stateless server whose writes go to Qdrant. The caller
/// keeps the returned backend until the server runtime is gone, so that the Qdrant store's
/// own runtime is never dropped inside it.
fn backend(
    index: &IndexArgs,
    model: &ModelArgs,
    store: &StoreArgs,
) -> anyhow::Result<(
    precedent_server::Backend,
    Arc<dyn precedent_core::Embedder>,
    String,
)> {
    let local = || -> anyhow::Result<Arc<precedent_index::Engine>> { Ok(Arc::new(open(index)?)) };
    match store.store {
        StoreKind::Embedded => {
            let embedder = model.load_for(&index.index)?;
            let what = format!("index {}", index.index.display());
            Ok((precedent_server::Backend::index(local()?), embedder, what))
        }
        StoreKind::Qdrant => {
            let has_index = index.index.join("manifest.json").is_file();
            let embedder = if has_index {
                model.load_for(&index.index)?
            } else {
                model.load_for_collection(store)?
            };
            let qdrant: Arc<dyn precedent_index::Store> =
                Arc::new(store.qdrant(embedder.as_ref())?);
            let (index_engine, what) = if has_index {
                (
                    Some(local()?),
                    format!(
                        "Qdrant collection {}, writes through the index {}",
                        store.collection,
                        index.index.display()
                    ),
                )
            } else {
                (
                    None,
                    format!(
                        "Qdrant collection {} (no local index at {}: writes go to the collection)",
                        store.collection,
                        index.index.display()
                    ),
                )
            };
            Ok((
                precedent_server::Backend::store(qdrant, index_engine),
                embedder,
                what,
            ))
        }
    }
}

#[derive(Debug, clap::Args)]
struct LimitArgs {
    /// Largest MCP tool result, in bytes (longer results are truncated and say so).
    #[arg(long, default_value_t = 20_000, value_name = "BYTES")]
    mcp_budget: usize,
    /// Time limit of one request or tool call, in seconds.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    timeout: u64,
}

impl LimitArgs {
    fn apply(&self, options: &mut ServerOptions) {
        options.mcp_result_bytes = self.mcp_budget;
        options.request_timeout = Duration::from_secs(self.timeout.max(1));
    }
}

fn read_token(file: Option<&PathBuf>) -> anyhow::Result<Option<String>> {
    if let Some(file) = file {
        let token = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read token file {}", file.display()))?;
        return Ok(Some(token.trim().to_owned()));
    }
    Ok(std::env::var("PRECEDENT_TOKEN")
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty()))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

pub fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    // The store is made inside the server's runtime, so a Qdrant client runs on it.
    let runtime = runtime()?;
    let entered = runtime.enter();
    let (backend, embedder, what) = backend(&args.index, &args.model, &args.store)?;
    let mut options = ServerOptions::new(args.addr, &args.index.index);
    options.token = read_token(args.token_file.as_ref())?;
    options.allow_writes = args.allow_writes;
    if !args.allowed_hosts.is_empty() {
        options.allowed_hosts = Some(args.allowed_hosts);
    }
    options.cors_origins = args.cors_origins;
    args.limits.apply(&mut options);
    options.concurrency_limit = args.concurrency;
    options.max_connections = args.max_connections as usize;
    options.header_read_timeout = Duration::from_secs(args.header_timeout);
    options.idle_timeout = Duration::from_secs(args.idle_timeout);
    let bind = args.addr;
    let kept = backend.clone();
    drop(entered);
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .with_context(|| format!("cannot listen on {bind}"))?;
        let addr = listener.local_addr()?;
        let mut server = Box::pin(precedent_server::serve_on(
            listener,
            options,
            backend,
            embedder,
            async {
                let _ = tokio::signal::ctrl_c().await;
            },
        ));
        // The server checks its options (token for a non-loopback address, ...) before it
        // first waits: say "serving" only once that first step has passed.
        let first = std::future::poll_fn(|cx| Poll::Ready(server.as_mut().poll(cx))).await;
        if let Poll::Ready(result) = first {
            return result.map_err(anyhow::Error::from);
        }
        eprintln!("precedent: serving {what} on http://{addr} (MCP at /mcp)");
        server.await.map_err(anyhow::Error::from)
    })?;
    drop(runtime);
    drop(kept);
    Ok(ExitCode::SUCCESS)
}

pub fn mcp(args: McpArgs) -> anyhow::Result<ExitCode> {
    if args.print_config {
        print_config(&args)?;
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = runtime()?;
    let entered = runtime.enter();
    let (backend, embedder, _) = backend(&args.index, &args.model, &args.store)?;
    let mut options = ServerOptions {
        index_dir: args.index.index.clone(),
        ..ServerOptions::default()
    };
    args.limits.apply(&mut options);
    let kept = backend.clone();
    drop(entered);
    runtime.block_on(precedent_server::serve_stdio(options, backend, embedder))?;
    drop(runtime);
    drop(kept);
    Ok(ExitCode::SUCCESS)
}

/// `mcp --print-config`: the `mcpServers` block most MCP clients (Claude Desktop and Code,
/// Cursor, ...) read, with absolute paths, since clients start servers with a minimal
/// environment and an unknown working directory.
fn print_config(args: &McpArgs) -> anyhow::Result<()> {
    let absolute = |p: &std::path::Path| -> anyhow::Result<String> {
        let p = std::path::absolute(p)
            .with_context(|| format!("cannot make {} absolute", p.display()))?;
        Ok(p.canonicalize().unwrap_or(p).display().to_string())
    };
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let model = precedent_embed::resolve_model_dir(args.model.model_dir.as_deref())?;
    let mut argv = vec![
        "mcp".to_owned(),
        "--index".to_owned(),
        absolute(&args.index.index)?,
        "--model-dir".to_owned(),
        absolute(&model)?,
    ];
    if args.store.store == StoreKind::Qdrant {
        // The API key stays in its file; the client reads the file's path only.
        argv.extend(
            [
                "--store",
                "qdrant",
                "--qdrant-url",
                &args.store.qdrant_url,
                "--collection",
                &args.store.collection,
            ]
            .map(str::to_owned),
        );
        if let Some(file) = &args.store.qdrant_api_key_file {
            argv.extend(["--qdrant-api-key-file".to_owned(), absolute(file)?]);
        }
    }
    let config = serde_json::json!({
        "mcpServers": {
            "precedent": {
                "command": absolute(&exe)?,
                "args": argv,
            }
        }
    });
    crate::common::print_json(&config)
}
