//! Indexes a corpus with the real model and scores lexical, vector and hybrid search on a judged
//! query set, next to a whole-document BM25 baseline.
//!
//! ```text
//! cargo run --release -p precedent-index --example eval_corpus -- \
//!     --corpus ../shared/corpora --queries ../shared/eval/dev-queries.jsonl \
//!     --index /tmp/corpora-index [--runs DIR]
//! ```
//!
//! Prints indexing time, steps/s, size on disk and peak RSS, then the `score.py` table per mode.
//! With `--runs DIR`, writes `DIR/{lexical,vector,hybrid,baseline}.jsonl` for `score.py`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use precedent_embed::{BertEmbedder, EmbedderOptions, resolve_model_dir};
use precedent_index::eval::{self, EvalQuery, RunLine};
use precedent_index::{Engine, IndexWriter, Mode, Phase, Progress, WriterOptions};
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::{IndexRecordOption, STORED, STRING, Schema, TEXT, Value};
use tantivy::{Index, TantivyDocument, Term, doc};

struct Args {
    corpus: PathBuf,
    queries: PathBuf,
    index: PathBuf,
    runs: Option<PathBuf>,
}

fn args() -> Args {
    let mut corpus = None;
    let mut queries = None;
    let mut index = None;
    let mut runs = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value: PathBuf = it
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value"))
            .into();
        match flag.as_str() {
            "--corpus" => corpus = Some(value),
            "--queries" => queries = Some(value),
            "--index" => index = Some(value),
            "--runs" => runs = Some(value),
            other => panic!("unknown flag {other}"),
        }
    }
    Args {
        corpus: corpus.expect("--corpus DIR"),
        queries: queries.expect("--queries FILE"),
        index: index.expect("--index DIR"),
        runs,
    }
}

/// Prints phase changes and a dot per 10% of each phase.
struct Dots(std::sync::Mutex<(u64, u64)>);

impl Progress for Dots {
    fn start(&self, phase: Phase, total: u64) {
        eprintln!("{phase:?} ({total})");
        *self.0.lock().unwrap() = (0, total);
    }
    fn advance(&self, done: u64) {
        let mut g = self.0.lock().unwrap();
        let before = g.0 * 10 / g.1.max(1);
        g.0 += done;
        if g.0 * 10 / g.1.max(1) > before {
            eprint!(".");
        }
    }
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Plain BM25 over whole documents (tantivy's default English-stemming analyzer).
fn baseline(
    corpus: &Path,
    queries: &[EvalQuery],
) -> Result<Vec<RunLine>, Box<dyn std::error::Error>> {
    let mut builder = Schema::builder();
    let path_field = builder.add_text_field("path", STRING | STORED);
    let body = builder.add_text_field(
        "body",
        TEXT.set_indexing_options(
            tantivy::schema::TextFieldIndexing::default()
                .set_tokenizer("en_stem")
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        ),
    );
    let index = Index::create_in_ram(builder.build());
    let mut writer: tantivy::IndexWriter = index.writer(100_000_000)?;
    let mut stack = vec![corpus.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                stack.push(path);
            } else if precedent_parse::Format::of(&name).is_some()
                && !precedent_parse::is_furniture(&name)
            {
                let rel = path
                    .strip_prefix(corpus)?
                    .to_string_lossy()
                    .replace('\\', "/");
                let text = String::from_utf8_lossy(&std::fs::read(&path)?).into_owned();
                writer.add_document(doc!(path_field => rel, body => text))?;
            }
        }
    }
    writer.commit()?;
    let searcher = index.reader()?.searcher();
    let mut analyzer = index.tokenizers().get("en_stem").unwrap();
    let mut runs = Vec::new();
    for q in queries {
        let mut terms = Vec::new();
        let mut stream = analyzer.token_stream(&q.query);
        while let Some(t) = tantivy::tokenizer::TokenStream::next(&mut stream) {
            terms.push(t.text.clone());
        }
        let clauses: Vec<(Occur, Box<dyn Query>)> = terms
            .iter()
            .map(|t| {
                let q: Box<dyn Query> = Box::new(TermQuery::new(
                    Term::from_field_text(body, t),
                    IndexRecordOption::WithFreqs,
                ));
                (Occur::Should, q)
            })
            .collect();
        let top = searcher.search(
            &BooleanQuery::new(clauses),
            &TopDocs::with_limit(100).order_by_score(),
        )?;
        let ranking = top
            .into_iter()
            .map(|(_, addr)| {
                let d: TantivyDocument = searcher.doc(addr).unwrap();
                d.get_first(path_field)
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_owned()
            })
            .collect();
        runs.push(RunLine {
            id: q.id.clone(),
            ranking,
        });
    }
    Ok(runs)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args();
    let model = Arc::new(BertEmbedder::load(
        &resolve_model_dir(None)?,
        EmbedderOptions::default(),
    )?);
    let started = Instant::now();
    let mut writer = IndexWriter::open(&args.index, model.clone(), WriterOptions::default())?;
    let summary = writer.sync_dir(&args.corpus, &Dots(Default::default()))?;
    drop(writer);
    let elapsed = started.elapsed();
    eprintln!();
    let engine = Engine::open(&args.index)?;
    let stats = engine.stats();
    println!(
        "indexed: {} added, {} updated, {} removed, {} unchanged, {} skipped; {} steps ({} embedded) in {:.1?} \
         = {:.0} steps/s; {:.1} MiB on disk; peak RSS {:.0} MiB",
        summary.added,
        summary.updated,
        summary.removed,
        summary.unchanged,
        summary.skipped.len(),
        stats.steps,
        summary.steps_embedded,
        elapsed,
        summary.steps_embedded.max(1) as f64 / elapsed.as_secs_f64(),
        stats.size_bytes as f64 / (1 << 20) as f64,
        peak_rss_mib()
    );
    for (path, reason) in &summary.skipped {
        println!("  skipped {path}: {reason}");
    }

    let queries = eval::load_queries(&args.queries)?;
    let mut all = vec![(
        "baseline (BM25, whole documents)",
        "baseline",
        baseline(&args.corpus, &queries)?,
    )];
    for (label, name, mode) in [
        ("lexical", "lexical", Mode::Lexical),
        ("vector", "vector", Mode::Vector),
        ("hybrid", "hybrid", Mode::Hybrid),
    ] {
        all.push((
            label,
            name,
            eval::run(&engine, &*model, &queries, mode, 200)?,
        ));
    }
    for (label, name, runs) in &all {
        println!("\n{label}\n{}", eval::evaluate(&queries, runs));
        if let Some(dir) = &args.runs {
            std::fs::create_dir_all(dir)?;
            let mut file = std::fs::File::create(dir.join(format!("{name}.jsonl")))?;
            eval::write_run(runs, &mut file)?;
        }
    }
    Ok(())
}
