//! Search latency and ANN recall at 100k steps.
//!
//! ```text
//! cargo run --release -p precedent-index --example bench_search -- [--steps 100000] [--index DIR]
//!     [--corpus DIR] [--queries 200] [--eval-queries FILE] [--embed-cache FILE]
//!     [--precision auto|f32|bf16]
//! ```
//!
//! The index holds every real write-up of `--corpus` (default `corpus-samples/`; the report uses
//! `../shared/corpora`), indexed as they are with their real vectors, and synthetic write-ups
//! up to `--steps` steps: their steps are real step texts with the words shuffled, and their
//! vectors are real step vectors (embedded with the real model) plus Gaussian noise of standard
//! deviation 0.02 per component, renormalised (cosine to the source about 0.93). Queries are
//! real: the judged queries of `--eval-queries` (default `../shared/eval/dev-queries.jsonl` when
//! it exists), incident titles and the first words of real steps, embedded with the real model.
//! `--index DIR` keeps the built index for later runs; `--embed-cache FILE` keeps the real
//! vectors. `--precision` is the embedder's, `auto` by default as in the CLI (an index built
//! with one precision is not queried with another: use a separate `--index` per precision).
//! For profiling: `BENCH_ONLY=Lexical|Vector|Hybrid` times one mode (without the query
//! embedding) and skips the recall check; `BENCH_SHOW_SLOWEST=1` prints each mode's 3 slowest
//! queries.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use precedent_core::{BoxError, Embedder};
use precedent_embed::{
    BertEmbedder, CachedEmbedder, EmbedderOptions, Precision, resolve_model_dir,
};
use precedent_index::{Engine, IndexWriter, Mode, NoProgress, SearchRequest, WriterOptions};
use precedent_parse::{ParseOptions, parse_file};

struct Args {
    steps: usize,
    index: Option<PathBuf>,
    corpus: PathBuf,
    queries: usize,
    eval_queries: Option<PathBuf>,
    embed_cache: Option<PathBuf>,
    precision: Precision,
}

fn args() -> Args {
    let mut out = Args {
        steps: 100_000,
        index: None,
        corpus: Path::new(env!("CARGO_MANIFEST_DIR")).join("../../corpus-samples"),
        queries: 200,
        eval_queries: Some(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/eval/dev-queries.jsonl"),
        )
        .filter(|p| p.exists()),
        embed_cache: None,
        precision: Precision::Auto,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--steps" => out.steps = value.parse().expect("--steps N"),
            "--index" => out.index = Some(value.into()),
            "--corpus" => out.corpus = value.into(),
            "--queries" => out.queries = value.parse().expect("--queries N"),
            "--eval-queries" => out.eval_queries = Some(value.into()),
            "--embed-cache" => out.embed_cache = Some(value.into()),
            "--precision" => {
                out.precision = Precision::parse(&value).expect("--precision auto|f32|bf16")
            }
            other => panic!("unknown flag {other}"),
        }
    }
    out
}

/// Vectors for the index: a real step's own vector; for a synthetic step, a real step's vector
/// (chosen by a hash of the text) plus Gaussian noise of standard deviation 0.02 per component,
/// renormalised (cosine to the source about 0.93). Reports the real model's id so the index
/// accepts the real model for queries.
struct Derived {
    model_id: String,
    real: Vec<Vec<f32>>,
    known: HashMap<String, Vec<f32>>,
}

impl Embedder for Derived {
    fn model_id(&self) -> &str {
        &self.model_id
    }
    fn dimension(&self) -> usize {
        self.real[0].len()
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, BoxError> {
        Ok(texts
            .iter()
            .map(|t| {
                if let Some(v) = self.known.get(*t) {
                    return v.clone();
                }
                let h = blake3::hash(t.as_bytes());
                let mut seed = u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap()) | 1;
                let base = &self.real[(seed % self.real.len() as u64) as usize];
                let mut v: Vec<f32> = base
                    .iter()
                    .map(|x| x + 0.02 * gaussian(&mut seed))
                    .collect();
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.iter_mut().for_each(|x| *x /= norm);
                v
            })
            .collect())
    }
}

/// Query vectors computed ahead of time: search latency without the embedding.
struct Precomputed {
    model_id: String,
    dim: usize,
    vectors: HashMap<String, Vec<f32>>,
}

impl Embedder for Precomputed {
    fn model_id(&self) -> &str {
        &self.model_id
    }
    fn dimension(&self) -> usize {
        self.dim
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, BoxError> {
        Ok(texts.iter().map(|t| self.vectors[*t].clone()).collect())
    }
}

fn xorshift(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

fn uniform(seed: &mut u64) -> f32 {
    ((xorshift(seed) >> 11) as f64 / (1u64 << 53) as f64) as f32
}

fn gaussian(seed: &mut u64) -> f32 {
    let (u1, u2) = (uniform(seed).max(1e-9), uniform(seed));
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Write-ups under `root`, recursively, as (name relative to `base`, path).
fn walk(base: &Path, root: &Path, out: &mut Vec<(String, PathBuf)>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(root)? {
        let path = entry?.path();
        let name = path
            .strip_prefix(base)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if path.is_dir() {
            walk(base, &path, out)?;
        } else if !precedent_parse::is_furniture(&name) {
            out.push((name, path));
        }
    }
    Ok(())
}

fn main() -> Result<(), BoxError> {
    let args = args();
    let model = Arc::new(BertEmbedder::load(
        &resolve_model_dir(None)?,
        EmbedderOptions {
            precision: args.precision,
            ..EmbedderOptions::default()
        },
    )?);
    eprintln!("embedder: {}", model.model_id());

    // Real write-ups, their steps and their vectors.
    let mut real_texts = Vec::new();
    let mut titles = Vec::new();
    let mut headings = Vec::new();
    let mut files = Vec::new();
    walk(&args.corpus, &args.corpus, &mut files)?;
    files.sort();
    for (name, path) in &files {
        if let Some(incident) = parse_file(name, path, &ParseOptions::default()).incident {
            titles.push(incident.title.clone());
            for step in &incident.steps {
                real_texts.push((step.contextual_text(&incident.title), step.text.clone()));
                if let Some(h) = step.heading_path.last() {
                    headings.push(h.clone());
                }
            }
        }
    }
    let started = Instant::now();
    let cached = match &args.embed_cache {
        Some(path) => CachedEmbedder::load(model.clone(), path)?,
        None => CachedEmbedder::new(model.clone()),
    };
    let refs: Vec<&str> = real_texts.iter().map(|(c, _)| c.as_str()).collect();
    let real_vectors = cached.embed(&refs)?;
    if let Some(path) = &args.embed_cache {
        cached.save(path)?;
    }
    eprintln!(
        "embedded {} real steps of {} write-ups in {:.1?}",
        refs.len(),
        titles.len(),
        started.elapsed()
    );

    let keep = args.index.is_some();
    let tmp = tempfile::tempdir()?;
    let index = args
        .index
        .clone()
        .unwrap_or_else(|| tmp.path().join("index"));
    if !index.join("manifest.json").exists() {
        // Synthetic write-ups of 20 steps each.
        let corpus = tmp.path().join("corpus");
        std::fs::create_dir_all(corpus.join("synthetic"))?;
        for (name, path) in &files {
            let to = corpus.join("real").join(name);
            std::fs::create_dir_all(to.parent().unwrap())?;
            std::fs::copy(path, to)?;
        }
        let mut seed = 42u64;
        let per_file = 20;
        let n_files = args
            .steps
            .saturating_sub(real_texts.len())
            .div_ceil(per_file);
        for f in 0..n_files {
            let title = &titles[f % titles.len()];
            let mut doc = format!("# Synthetic {f}: {title}\n\n");
            for s in 0..per_file {
                let (_, text) =
                    &real_texts[(xorshift(&mut seed) % real_texts.len() as u64) as usize];
                let mut words: Vec<&str> = text.split_whitespace().collect();
                for i in (1..words.len()).rev() {
                    words.swap(i, (xorshift(&mut seed) % (i as u64 + 1)) as usize);
                }
                let heading = &headings[(xorshift(&mut seed) % headings.len() as u64) as usize];
                doc.push_str(&format!("## {heading} {s}\n\n{}\n\n", words.join(" ")));
            }
            std::fs::write(corpus.join(format!("synthetic/syn-{f:06}.md")), doc)?;
        }
        let derived = Arc::new(Derived {
            model_id: model.model_id().to_owned(),
            real: real_vectors.clone(),
            known: refs
                .iter()
                .map(|t| (*t).to_owned())
                .zip(real_vectors.iter().cloned())
                .collect(),
        });
        let started = Instant::now();
        let mut writer = IndexWriter::open(&index, derived, WriterOptions::default())?;
        let summary = writer.sync_dir(&corpus, &NoProgress)?;
        drop(writer);
        let elapsed = started.elapsed();
        eprintln!(
            "indexed {} synthetic files, {} steps in {:.1?} ({:.0} steps/s)",
            summary.added,
            summary.steps_total,
            elapsed,
            summary.steps_total as f64 / elapsed.as_secs_f64()
        );
    }
    let started = Instant::now();
    let engine = Engine::open(&index)?;
    let stats = engine.stats();
    println!(
        "index: {} steps, {} incidents, {:.1} MiB on disk, opened in {:.1?} (real write-ups, then \
         synthetic ones: real step texts with words shuffled, real step vectors + N(0, 0.02) \
         noise renormalised)",
        stats.steps,
        stats.incidents,
        stats.size_bytes as f64 / (1 << 20) as f64,
        started.elapsed()
    );

    // Queries: judged queries, titles, and first words of real steps.
    let mut seed = 7u64;
    let mut queries: Vec<String> = Vec::new();
    if let Some(path) = &args.eval_queries {
        for q in precedent_index::eval::load_queries(path)? {
            queries.push(q.query);
        }
    }
    while queries.len() < args.queries {
        if queries.len().is_multiple_of(4) {
            queries.push(titles[(xorshift(&mut seed) % titles.len() as u64) as usize].clone());
        } else {
            let (_, text) = &real_texts[(xorshift(&mut seed) % real_texts.len() as u64) as usize];
            let n = 4 + (xorshift(&mut seed) % 8) as usize;
            queries.push(
                text.split_whitespace()
                    .take(n)
                    .collect::<Vec<_>>()
                    .join(" "),
            );
        }
    }
    let refs: Vec<&str> = queries.iter().map(String::as_str).collect();
    let vectors = model.embed(&refs)?;
    let precomputed = Precomputed {
        model_id: model.model_id().to_owned(),
        dim: model.dimension(),
        vectors: queries
            .iter()
            .cloned()
            .zip(vectors.iter().cloned())
            .collect(),
    };

    // Warm up, then time each query once per configuration.
    for q in queries.iter().take(20) {
        engine.search(&SearchRequest::new(q.clone()), &*model)?;
    }
    println!(
        "{:<34} {:>9} {:>9} {:>9}",
        "latency over queries (k=10)", "p50", "p99", "max"
    );
    for (mode, with_embedding) in [
        (Mode::Lexical, false),
        (Mode::Vector, false),
        (Mode::Hybrid, false),
        (Mode::Vector, true),
        (Mode::Hybrid, true),
    ] {
        if let Ok(only) = std::env::var("BENCH_ONLY")
            && (only != format!("{mode:?}") || with_embedding)
        {
            continue;
        }
        let embedder: &dyn Embedder = if with_embedding {
            &*model
        } else {
            &precomputed
        };
        let mut times = Vec::with_capacity(queries.len());
        let mut slowest = Vec::with_capacity(queries.len());
        for q in &queries {
            let started = Instant::now();
            let r = engine.search(&SearchRequest::new(q.clone()).with_mode(mode), embedder)?;
            times.push(started.elapsed());
            slowest.push((started.elapsed(), q));
            assert!(!r.hits.is_empty() || mode == Mode::Lexical);
        }
        times.sort();
        slowest.sort();
        if std::env::var_os("BENCH_SHOW_SLOWEST").is_some() {
            for (t, q) in slowest.iter().rev().take(3) {
                eprintln!("  {mode:?} {:.2}ms  {q:?}", t.as_secs_f64() * 1e3);
            }
        }
        let label = format!(
            "{mode:?}{}",
            if with_embedding {
                " incl. query embedding"
            } else {
                ""
            }
        );
        println!(
            "{label:<34} {:>7.2}ms {:>7.2}ms {:>7.2}ms",
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.99).as_secs_f64() * 1e3,
            times.last().unwrap().as_secs_f64() * 1e3
        );
    }

    if std::env::var_os("BENCH_ONLY").is_some() {
        return Ok(());
    }
    // ANN recall@10 against exact search over the same vectors.
    let mut found = 0;
    let mut found100 = 0;
    let mut ann_times = Vec::new();
    let mut exact_times = Vec::new();
    for v in &vectors {
        let t = Instant::now();
        let ann = engine.vector_probe(v, 10, false)?;
        ann_times.push(t.elapsed());
        let t = Instant::now();
        let exact = engine.vector_probe(v, 10, true)?;
        exact_times.push(t.elapsed());
        found += ann.iter().filter(|id| exact.contains(id)).count();
        let ann100 = engine.vector_probe(v, 100, false)?;
        let exact100 = engine.vector_probe(v, 100, true)?;
        found100 += ann100.iter().filter(|id| exact100.contains(id)).count();
    }
    ann_times.sort();
    exact_times.sort();
    println!(
        "ANN recall@10 vs exact: {:.4}, recall@100: {:.4}, over {} queries (ANN p50 {:.2}ms, exact scan p50 {:.2}ms)",
        found as f64 / (10 * vectors.len()) as f64,
        found100 as f64 / (100 * vectors.len()) as f64,
        vectors.len(),
        percentile(&ann_times, 0.5).as_secs_f64() * 1e3,
        percentile(&exact_times, 0.5).as_secs_f64() * 1e3
    );
    if keep {
        eprintln!("index kept at {}", index.display());
    }
    Ok(())
}
