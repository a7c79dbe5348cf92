//! A stand-in for `precedent serve` / `precedent mcp`, to run the server without the CLI:
//!
//! ```text
//! cargo run -p precedent-server --example serve -- serve --index DIR [--addr 127.0.0.1:7777] [--model-dir DIR]
//! cargo run -p precedent-server --example serve -- mcp --index DIR [--model-dir DIR]
//! cargo run -p precedent-server --example serve -- index CORPUS_DIR --index DIR [--model-dir DIR]
//! ```
//!
//! The bearer token, if any, is read from `$PRECEDENT_TOKEN` (never from argv).

use std::path::PathBuf;
use std::sync::Arc;

use precedent_server::ServerOptions;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let command = args
        .next()
        .ok_or("usage: serve|mcp --index DIR [--addr ADDR] [--model-dir DIR]")?;
    let mut options = ServerOptions::default();
    let mut model_dir: Option<PathBuf> = None;
    let mut corpus: Option<PathBuf> = None;
    while let Some(flag) = args.next() {
        if !flag.starts_with("--") && corpus.is_none() {
            corpus = Some(flag.into());
            continue;
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--index" => options.index_dir = value.into(),
            "--addr" => options.addr = value.parse()?,
            "--model-dir" => model_dir = Some(value.into()),
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    options.token = std::env::var("PRECEDENT_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    let model_dir = precedent_embed::resolve_model_dir(model_dir.as_deref())?;
    let embedder = Arc::new(precedent_embed::BertEmbedder::load(
        &model_dir,
        Default::default(),
    )?);
    if command == "index" {
        let corpus = corpus.ok_or("index needs a corpus directory")?;
        let mut writer =
            precedent_index::IndexWriter::open(&options.index_dir, embedder, Default::default())?;
        let summary = writer.sync_dir(&corpus, &precedent_index::NoProgress)?;
        eprintln!(
            "indexed: {} added, {} updated, {} removed",
            summary.added, summary.updated, summary.removed
        );
        return Ok(());
    }
    let engine = Arc::new(precedent_index::Engine::open(&options.index_dir)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match command.as_str() {
            "serve" => precedent_server::serve(options, engine, embedder).await,
            "mcp" => precedent_server::serve_stdio(options, engine, embedder).await,
            other => Err(precedent_server::Error::Options(format!(
                "unknown command {other}"
            ))),
        }
    })?;
    Ok(())
}
