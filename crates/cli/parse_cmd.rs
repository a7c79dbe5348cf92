//! `precedent parse FILE`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use precedent_core::{Level, Parsed};
use precedent_parse::{ParseOptions, parse_file};

use crate::common::print_json;
use crate::output::{citation, clean};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The write-up to parse (.md, .markdown or .txt).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Print the parse as JSON (the Incident and diagnostics).
    #[arg(long)]
    json: bool,
    /// Skip files larger than this many bytes.
    #[arg(long, default_value_t = precedent_parse::DEFAULT_MAX_BYTES, value_name = "BYTES")]
    max_bytes: u64,
    /// Corpus root the incident id and path are relative to, as `precedent index DIR` would
    /// make them [default: the root the index recorded, when FILE is under it; else FILE's
    /// directory].
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    #[command(flatten)]
    index: crate::common::IndexArgs,
}

/// The path of `file` relative to the corpus root, so that the id printed is the one the index
/// uses: `--root`, else the root the index recorded when `file` lies under it, else its name.
fn relative_name(
    file: &std::path::Path,
    root: Option<&std::path::Path>,
    index: &std::path::Path,
) -> Option<String> {
    let canonical = std::fs::canonicalize(file).ok();
    let recorded = || {
        precedent_index::Engine::open(index)
            .ok()
            .and_then(|engine| engine.corpus_root())
    };
    let root = match root {
        Some(root) => std::fs::canonicalize(root).ok(),
        None => recorded(),
    };
    if let (Some(root), Some(file)) = (root, &canonical)
        && let Ok(relative) = file.strip_prefix(&root)
    {
        return relative.to_str().map(str::to_owned);
    }
    file.file_name()?.to_str().map(str::to_owned)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let name = relative_name(&args.file, args.root.as_deref(), &args.index.index)
        .with_context(|| format!("{} is not a file name", args.file.display()))?;
    if !args.file.is_file() {
        anyhow::bail!("{} is not a readable file", args.file.display());
    }
    let options = ParseOptions {
        max_bytes: args.max_bytes,
        ..ParseOptions::default()
    };
    let parsed = parse_file(&name, &args.file, &options);
    if args.json {
        print_json(&parsed)?;
    } else {
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        print_human(&mut out, &parsed)?;
        out.flush()?;
    }
    Ok(if parsed.incident.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_human(out: &mut impl Write, parsed: &Parsed) -> std::io::Result<()> {
    for d in &parsed.diagnostics {
        let level = match d.level {
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
        };
        let line = d.line.map(|l| format!(" (line {l})")).unwrap_or_default();
        writeln!(out, "{level}: {}{line}", clean(&d.message))?;
    }
    let Some(incident) = &parsed.incident else {
        return writeln!(out, "skipped");
    };
    writeln!(out, "id:        {}", incident.id)?;
    writeln!(out, "title:     {}", clean(&incident.title))?;
    writeln!(out, "path:      {}", clean(&incident.path))?;
    if let Some(date) = &incident.date {
        match date.end {
            Some(end) => writeln!(out, "date:      {} .. {end}", date.start)?,
            None => writeln!(out, "date:      {}", date.start)?,
        }
    }
    if let Some(severity) = &incident.severity {
        writeln!(out, "severity:  {}", clean(severity))?;
    }
    if !incident.services.is_empty() {
        writeln!(out, "services:  {}", clean(&incident.services.join(", ")))?;
    }
    if !incident.tags.is_empty() {
        writeln!(out, "tags:      {}", clean(&incident.tags.join(", ")))?;
    }
    writeln!(
        out,
        "steps:     {} ({} on the timeline)",
        incident.steps.len(),
        incident.timeline.len()
    )?;
    for step in &incident.steps {
        let outcome = step
            .outcome
            .map(|o| {
                format!(
                    " [{}]",
                    serde_json::to_value(o)
                        .unwrap_or_default()
                        .as_str()
                        .unwrap_or("")
                )
            })
            .unwrap_or_default();
        let at = step
            .at
            .as_ref()
            .map(|a| format!(" @{}", clean(&a.raw)))
            .unwrap_or_default();
        writeln!(out)?;
        writeln!(
            out,
            "#{:<3} {:<14} {}{at}{outcome}  {}",
            step.ordinal,
            step.kind.as_str(),
            citation(&clean(&incident.path), step.line_start, step.line_end),
            clean(&step.heading_path.join(" > "))
        )?;
        for line in step.text.lines() {
            writeln!(out, "     {}", clean(line))?;
        }
    }
    Ok(())
}
