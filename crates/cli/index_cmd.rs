//! `precedent index DIR`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use precedent_core::Embedder;
use precedent_embed::CachedEmbedder;
use precedent_index::{IndexWriter, Phase, Progress, WriterOptions};

use crate::common::{IndexArgs, ModelArgs, StoreArgs, StoreKind, print_json};
use crate::output::clean;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory of write-ups (.md, .markdown, .txt), searched recursively.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    #[command(flatten)]
    index: IndexArgs,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    store: StoreArgs,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// Skip files larger than this many bytes.
    #[arg(long, default_value_t = precedent_parse::DEFAULT_MAX_BYTES, value_name = "BYTES")]
    max_bytes: u64,
    /// Make DIR the corpus of an index built from another directory (a subfolder, a moved
    /// copy): write-ups not under DIR are removed, unchanged relative paths are kept without
    /// re-embedding. Without it such a run is refused. Documents written through the API stay.
    #[arg(long)]
    prune: bool,
    /// Keep vectors by text in this directory across runs, one file per model id: a rebuild,
    /// a new Qdrant collection or a second index of the same write-ups embeds only text the
    /// model has not seen. The files grow with every new text; delete them to reclaim the
    /// space. A damaged file, or one of another format, is ignored with a warning and written anew.
    #[arg(long, env = "PRECEDENT_EMBED_CACHE", value_name = "DIR")]
    embed_cache: Option<PathBuf>,
}

/// The `--embed-cache` file of one model, and the cache loaded from it.
struct EmbedCache {
    path: PathBuf,
    cache: Arc<CachedEmbedder<Arc<dyn Embedder>>>,
    before: usize,
}

impl EmbedCache {
    /// Wraps `model` with the vectors cached for its model id under `dir`.
    fn open(dir: &Path, model: Arc<dyn Embedder>) -> anyhow::Result<EmbedCache> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the embed cache {}", dir.display()))?;
        let name: String = model
            .model_id()
            .chars()
            .map(|c| match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' | '+' | '@' => c,
                _ => '_',
            })
            .collect();
        let path = dir.join(format!("{name}.vectors"));
        let cache = match CachedEmbedder::load(model.clone(), &path) {
            Ok(cache) => cache,
            Err(e) => {
                tracing::warn!(
                    "embed cache {} not used ({e}); it is written anew",
                    path.display()
                );
                CachedEmbedder::new(model)
            }
        };
        let before = cache.len();
        Ok(EmbedCache {
            path,
            cache: Arc::new(cache),
            before,
        })
    }

    /// Writes the cache back (a failure only warns: the index is already written). Returns how
    /// many vectors the model computed in this run.
    fn save(&self) -> usize {
        if let Err(e) = self.cache.save(&self.path) {
            tracing::warn!("cannot write the embed cache: {e}");
        }
        self.cache.len().saturating_sub(self.before)
    }
}

/// An indicatif bar on a terminal, nothing otherwise.
struct Bar(Option<ProgressBar>, Arc<Mutex<&'static str>>);

impl Progress for Bar {
    fn start(&self, phase: Phase, total: u64) {
        let Some(bar) = &self.0 else { return };
        let (label, unit) = match phase {
            Phase::Scan => ("scanning", "files"),
            Phase::Parse => ("parsing", "files"),
            Phase::Embed => ("embedding", "steps"),
            Phase::Write => ("writing", "steps"),
            Phase::Mirror => ("qdrant", "points"),
            _ => ("working", "items"),
        };
        *self.1.lock().unwrap_or_else(|e| e.into_inner()) = unit;
        bar.reset();
        bar.set_length(total);
        bar.set_position(0);
        bar.set_message(label);
    }

    fn advance(&self, done: u64) {
        if let Some(bar) = &self.0 {
            bar.inc(done);
        }
    }
}

/// A rate for people: a whole number with its unit, one decimal below 10.
fn rate(per_sec: f64, unit: &str) -> String {
    if !per_sec.is_finite() || per_sec <= 0.0 {
        format!("- {unit}/s")
    } else if per_sec < 10.0 {
        format!("{per_sec:.1} {unit}/s")
    } else {
        format!("{per_sec:.0} {unit}/s")
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !args.dir.is_dir() {
        anyhow::bail!("{} is not a directory", args.dir.display());
    }
    let mut embedder = args.model.load_for(&args.index.index)?;
    let embed_cache = match &args.embed_cache {
        Some(dir) => {
            let cache = EmbedCache::open(dir, embedder)?;
            embedder = cache.cache.clone();
            Some(cache)
        }
        None => None,
    };
    let qdrant = match args.store.store {
        StoreKind::Qdrant => Some(args.store.qdrant(embedder.as_ref())?),
        StoreKind::Embedded => None,
    };
    let mut options = WriterOptions::default();
    options.parse.max_bytes = args.max_bytes;
    options.prune = args.prune;
    let rebuild_reason = precedent_index::rebuild_reason(&args.index.index, embedder.as_ref())
        .ok()
        .flatten();
    let mut writer = IndexWriter::open(&args.index.index, embedder, options)
        .with_context(|| format!("cannot open the index at {}", args.index.index.display()))?;
    let unit = Arc::new(Mutex::new("files"));
    let bar = std::io::stderr().is_terminal().then(|| {
        let unit = unit.clone();
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len} {rate} eta {eta}")
                .expect("static template")
                .with_key(
                    "rate",
                    move |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let unit = *unit.lock().unwrap_or_else(|e| e.into_inner());
                        let _ = w.write_str(&rate(state.per_sec(), unit));
                    },
                )
                .progress_chars("=> "),
        );
        bar
    });
    let summary = writer.sync_dir(&args.dir, &Bar(bar.clone(), unit.clone()));
    // Vectors computed before a failure are good: keep them for the next run.
    let computed = embed_cache.as_ref().map(EmbedCache::save);
    let summary = summary?;
    // (computed by the model, taken from the cache) of the steps this run embedded.
    let counts = computed.map(|c| (c, summary.steps_embedded.saturating_sub(c as u64)));
    // Mirror while the writer (and its lock) is alive, so the generation cannot change.
    let mirrored = match &qdrant {
        Some(store) => Some(store.sync_from(&args.index.index, &Bar(bar.clone(), unit.clone()))?),
        None => None,
    };
    drop(writer);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let rebuild_reason = summary.rebuilt.then_some(rebuild_reason).flatten();
    if args.json {
        let mut value = serde_json::to_value(&summary)?;
        // Durations as seconds, numbers.
        value["elapsed"] = serde_json::json!(summary.elapsed.as_secs_f64());
        value["rebuild_reason"] = serde_json::json!(rebuild_reason);
        if let (Some(cache), Some((computed, reused))) = (&embed_cache, counts) {
            value["embed_cache"] = serde_json::json!({
                "path": cache.path,
                "vectors_computed": computed,
                "vectors_reused": reused,
            });
        }
        if let (Some(m), Some(store)) = (&mirrored, &qdrant) {
            value["qdrant"] = serde_json::json!({
                "collection": store.collection(),
                "incidents_upserted": m.incidents_upserted,
                "revisions_deleted": m.revisions_deleted,
                "points_upserted": m.points_upserted,
                "points_total": m.points_total,
                "elapsed": m.elapsed.as_secs_f64(),
            });
        }
        print_json(&value)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let secs = summary.elapsed.as_secs_f64();
    let rebuilt = match (&rebuild_reason, summary.rebuilt) {
        (Some(reason), _) => format!(", full rebuild: {reason}"),
        (None, true) if summary.generation > 1 => ", full rebuild".to_owned(),
        _ => String::new(),
    };
    writeln!(
        out,
        "indexed {} into {} (generation {}{rebuilt})",
        args.dir.display(),
        args.index.index.display(),
        summary.generation,
    )?;
    let api = match summary.api_documents {
        0 => String::new(),
        n => format!(" ({n} written through the API, kept)"),
    };
    writeln!(
        out,
        "files: {} added, {} updated, {} removed, {} unchanged, {} skipped{api}",
        summary.added,
        summary.updated,
        summary.removed,
        summary.unchanged,
        summary.skipped.len()
    )?;
    let reused = match counts {
        Some((_, reused)) => format!(", {reused} of them from the embed cache"),
        None => String::new(),
    };
    writeln!(
        out,
        "steps: {} in the index, {} embedded in {:.1} s ({}{reused})",
        summary.steps_total,
        summary.steps_embedded,
        secs,
        rate(summary.steps_embedded as f64 / secs.max(1e-9), "steps")
    )?;
    if let (Some(m), Some(store)) = (&mirrored, &qdrant) {
        writeln!(
            out,
            "qdrant {}: {} incidents written ({} points), {} stale revisions deleted, {} points in total, in {:.1} s",
            store.collection(),
            m.incidents_upserted,
            m.points_upserted,
            m.revisions_deleted,
            m.points_total,
            m.elapsed.as_secs_f64()
        )?;
    }
    for (path, reason) in &summary.skipped {
        writeln!(out, "skipped {}: {}", clean(path), clean(reason))?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
