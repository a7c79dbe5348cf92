//! `precedent eval QUERIES.jsonl`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use precedent_index::Mode;
use precedent_index::eval::{self, EvalReport};

use crate::common::open;
use crate::common::{IndexArgs, ModelArgs, print_json};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Judged queries, one JSON object per line: {id, query, kind, relevant: {doc: grade}};
    /// document ids are paths relative to the indexed directory.
    queries: PathBuf,
    /// Modes to evaluate (repeatable) [default: lexical, vector and hybrid].
    #[arg(long = "mode")]
    modes: Vec<Mode>,
    /// Also write each mode's ranking as run-MODE.jsonl in this directory (the format
    /// shared/eval/score.py reads).
    #[arg(long, value_name = "DIR")]
    runs: Option<PathBuf>,
    #[command(flatten)]
    index: IndexArgs,
    #[command(flatten)]
    model: ModelArgs,
    /// Print the reports as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let queries = eval::load_queries(&args.queries)?;
    let engine = open(&args.index)?;
    let embedder = args.model.load_for(&args.index.index)?;
    let modes = if args.modes.is_empty() {
        vec![Mode::Lexical, Mode::Vector, Mode::Hybrid]
    } else {
        args.modes
    };
    let mut reports: Vec<(Mode, EvalReport)> = Vec::new();
    for mode in modes {
        let runs = eval::run(&engine, embedder.as_ref(), &queries, mode, 100)?;
        if let Some(dir) = &args.runs {
            std::fs::create_dir_all(dir)?;
            let name = format!(
                "run-{}.jsonl",
                serde_json::to_value(mode)?.as_str().unwrap_or("mode")
            );
            let path = dir.join(name);
            let mut file = std::fs::File::create(&path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eval::write_run(&runs, &mut file)?;
        }
        reports.push((mode, eval::evaluate(&queries, &runs)));
    }
    if args.json {
        let map: serde_json::Map<String, serde_json::Value> = reports
            .iter()
            .map(|(m, r)| {
                Ok((
                    serde_json::to_value(m)?.as_str().unwrap_or("").to_owned(),
                    serde_json::to_value(r)?,
                ))
            })
            .collect::<anyhow::Result<_>>()?;
        print_json(&map)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("{} queries from {}", queries.len(), args.queries.display());
    println!(
        "{:<8} {:<12} {:>4} {:>8} {:>10} {:>6}",
        "mode", "queries", "n", "nDCG@10", "recall@10", "MRR"
    );
    for (mode, report) in &reports {
        let name = serde_json::to_value(mode)?
            .as_str()
            .unwrap_or("")
            .to_owned();
        let o = &report.overall;
        println!(
            "{name:<8} {:<12} {:>4} {:>8.3} {:>10.3} {:>6.3}",
            "all", o.n, o.ndcg10, o.recall10, o.mrr
        );
        for (kind, a) in &report.per_kind {
            println!(
                "{:<8} {kind:<12} {:>4} {:>8.3} {:>10.3} {:>6.3}",
                "", a.n, a.ndcg10, a.recall10, a.mrr
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
