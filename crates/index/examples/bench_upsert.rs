//! What publishing one changed write-up costs: wall time and bytes written per
//! `IndexWriter::upsert`, on a copy of an existing index (which is left untouched).
//!
//! ```text
//! cargo run --release -p precedent-index --example bench_upsert -- --index DIR [--rounds 5]
//! ```
//!
//! Each round upserts a different version of one small write-up (so every round is a real
//! change: one incident of a few steps replaced). Bytes written are the sizes of the files of
//! the new generation that are not hard links to the previous one (link count 1), plus the
//! manifest: what the publish wrote, however it wrote it (`write`, `mmap`, `copy_file_range`).
//! The embedder is the real model (its vectors for the few new steps are part of the cost).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use precedent_core::BoxError;
use precedent_embed::{BertEmbedder, EmbedderOptions, Precision, resolve_model_dir};
use precedent_index::{Engine, IndexWriter, WriterOptions, index_model_id};

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let dst = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &dst)?;
        } else if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), dst)?;
        }
    }
    Ok(())
}

/// Bytes of the published generation that are new: files with one link (unchanged files are
/// hard links to the previous generation), plus the manifest.
#[cfg(unix)]
fn new_bytes(index: &Path) -> Result<u64, BoxError> {
    use std::os::unix::fs::MetadataExt as _;
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(index.join("manifest.json"))?)?;
    let data = index.join(
        manifest["data_dir"]
            .as_str()
            .ok_or("manifest without data_dir")?,
    );
    let mut total = std::fs::metadata(index.join("manifest.json"))?.len();
    let mut stack = vec![data];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.nlink() == 1 {
                total += meta.len();
            }
        }
    }
    Ok(total)
}

#[cfg(not(unix))]
fn new_bytes(_: &Path) -> Result<u64, BoxError> {
    Ok(0)
}

fn main() -> Result<(), BoxError> {
    let mut index: Option<PathBuf> = None;
    let mut rounds = 5usize;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--index" => index = Some(value.into()),
            "--rounds" => rounds = value.parse()?,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    let source = index.ok_or("--index DIR is required")?;
    let steps = Engine::open(&source)?.stats().steps;
    let tmp = tempfile::tempdir()?;
    let copy = tmp.path().join("index");
    copy_dir(&source, &copy)?;
    // The index's own precision, as `precedent` picks it: another one would need a rebuild.
    let precision = match index_model_id(&source) {
        Some(id) if id.ends_with("+bf16") => Precision::Bf16,
        _ => Precision::F32,
    };
    let options = EmbedderOptions {
        precision,
        ..EmbedderOptions::default()
    };
    let model = Arc::new(BertEmbedder::load(&resolve_model_dir(None)?, options)?);
    let mut writer = IndexWriter::open(&copy, model, WriterOptions::default())?;
    let mut times = Vec::new();
    let mut bytes = Vec::new();
    for round in 0..rounds {
        let doc = format!(
            "# Queue workers wedged, take {round}\n\n## Summary\n\nThe billing queue workers \
             stopped consuming after a malformed message (variant {round}).\n\n## Root cause\n\n\
             A payload without a currency field crashed the deserializer in a loop.\n\n\
             ## Resolution\n\nWe moved the poison message to the dead-letter queue and the \
             workers recovered.\n"
        );
        let started = Instant::now();
        writer.upsert("bench/queue-poison.md", doc.as_bytes())?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        bytes.push(new_bytes(&copy)?);
        if std::env::var_os("BENCH_DEBUG").is_some() {
            let _ = std::process::Command::new("ls")
                .arg("-laR")
                .arg(&copy)
                .status();
        }
    }
    times.sort_by(f64::total_cmp);
    bytes.sort_unstable();
    let kib = |b: u64| b as f64 / 1024.0;
    println!(
        "index of {steps} steps: one upsert p50 {:.0} ms (min {:.0}, max {:.0}), {:.1} KiB written (min {:.1}, max {:.1}), {rounds} rounds",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1],
        kib(bytes[bytes.len() / 2]),
        kib(bytes[0]),
        kib(bytes[bytes.len() - 1]),
    );
    Ok(())
}
