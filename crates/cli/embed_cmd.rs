//! `precedent embed`: JSON strings in, JSON arrays out, one per line.

use std::io::{BufRead, BufWriter, Write};
use std::process::ExitCode;

use anyhow::Context;

use crate::common::{IndexArgs, ModelArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// With `--precision auto`, vectors come in the precision of this index's model, so they
    /// compare with what it holds (no index there: the machine's default).
    #[command(flatten)]
    index: IndexArgs,
    /// Texts embedded per model call.
    #[arg(long, default_value_t = 32)]
    batch: usize,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let embedder = args.model.load_for(&args.index.index)?;
    let stdin = std::io::stdin().lock();
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut batch: Vec<String> = Vec::with_capacity(args.batch.max(1));
    let flush = |batch: &mut Vec<String>, out: &mut BufWriter<_>| -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let texts: Vec<&str> = batch.iter().map(String::as_str).collect();
        let vectors = embedder
            .embed(&texts)
            .map_err(|e| anyhow::anyhow!(e))
            .context("embedding failed")?;
        for vector in vectors {
            serde_json::to_writer(&mut *out, &vector)?;
            writeln!(out)?;
        }
        // Each batch is answered before the next is read: a caller can keep one process open
        // and send one text at a time (`--batch 1`).
        out.flush()?;
        batch.clear();
        Ok(())
    };
    for (n, line) in stdin.lines().enumerate() {
        let line = line.context("cannot read stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        let text: String = serde_json::from_str(&line).with_context(|| {
            format!(
                "line {}: expected a JSON string such as \"disk full\"",
                n + 1
            )
        })?;
        batch.push(text);
        if batch.len() >= args.batch.max(1) {
            flush(&mut batch, &mut out)?;
        }
    }
    flush(&mut batch, &mut out)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
