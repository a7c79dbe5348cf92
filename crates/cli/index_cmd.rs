//! `precedent index DIR`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use precedent_index::{IndexWriter, Phase, Progress, WriterOptions};

use crate::common::{IndexArgs, ModelArgs, StoreArgs, StoreKind, print_json};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory of write-ups (.md, .markdown, .txt), searched recursively.
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
}

/// An indicatif bar on a terminal, nothing otherwise.
struct Bar(Option<ProgressBar>);

impl Progress for Bar {
    fn start(&self, phase: Phase, total: u64) {
        let Some(bar) = &self.0 else { return };
        let label = match phase {
            Phase::Scan => "scanning",
            Phase::Parse => "parsing",
            Phase::Embed => "embedding",
            Phase::Write => "writing",
            Phase::Mirror => "qdrant",
            _ => "working",
        };
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

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !args.dir.is_dir() {
        anyhow::bail!("{} is not a directory", args.dir.display());
    }
    let embedder = args.model.load()?;
    let qdrant = match args.store.store {
        StoreKind::Qdrant => Some(args.store.qdrant(embedder.as_ref())?),
        StoreKind::Embedded => None,
    };
    let mut options = WriterOptions::default();
    options.parse.max_bytes = args.max_bytes;
    let mut writer = IndexWriter::open(&args.index.index, embedder, options)
        .with_context(|| format!("cannot open the index at {}", args.index.index.display()))?;
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
                .expect("static template")
                .progress_chars("=> "),
        );
        bar
    });
    let summary = writer.sync_dir(&args.dir, &Bar(bar.clone()))?;
    // Mirror while the writer (and its lock) is alive, so the generation cannot change.
    let mirrored = match &qdrant {
        Some(store) => Some(store.sync_from(&args.index.index, &Bar(bar.clone()))?),
        None => None,
    };
    drop(writer);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if args.json {
        let mut value = serde_json::to_value(&summary)?;
        if let (Some(m), Some(store)) = (&mirrored, &qdrant) {
            value["qdrant"] = serde_json::json!({
                "collection": store.collection(),
                "incidents_upserted": m.incidents_upserted,
                "revisions_deleted": m.revisions_deleted,
                "points_upserted": m.points_upserted,
                "points_total": m.points_total,
                "elapsed_ms": m.elapsed.as_millis() as u64,
            });
        }
        print_json(&value)?;
        return Ok(ExitCode::SUCCESS);
    }
    let secs = summary.elapsed.as_secs_f64();
    println!(
        "indexed {} into {} (generation {}{})",
        args.dir.display(),
        args.index.index.display(),
        summary.generation,
        if summary.rebuilt {
            ", full rebuild"
        } else {
            ""
        }
    );
    println!(
        "files: {} added, {} updated, {} removed, {} unchanged, {} skipped",
        summary.added,
        summary.updated,
        summary.removed,
        summary.unchanged,
        summary.skipped.len()
    );
    println!(
        "steps: {} in the index, {} embedded in {:.1} s ({:.0} steps/s)",
        summary.steps_total,
        summary.steps_embedded,
        secs,
        summary.steps_embedded as f64 / secs.max(1e-9)
    );
    if let (Some(m), Some(store)) = (&mirrored, &qdrant) {
        println!(
            "qdrant {}: {} incidents written ({} points), {} stale revisions deleted, {} points in total, in {:.1} s",
            store.collection(),
            m.incidents_upserted,
            m.points_upserted,
            m.revisions_deleted,
            m.points_total,
            m.elapsed.as_secs_f64()
        );
    }
    for (path, reason) in &summary.skipped {
        println!("skipped {path}: {reason}");
    }
    Ok(ExitCode::SUCCESS)
}
