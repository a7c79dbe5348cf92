//! Throughput, latency and memory report of the embedder on this machine.
//!
//! ```text
//! cargo run --release -p precedent-embed --example bench_embed -- [options]
//!   --model-dir DIR        model directory (default: $PRECEDENT_MODEL_DIR, then the cache)
//!   --backend B            native (default) or candle
//!   --precision P          f32 (default), bf16, bf16-avx512 or auto (native backend)
//!   --batch-size N         texts per forward pass (default: the library's)
//!   --threads N            worker threads (default: the library's)
//!   --steps N              ~100-word steps to embed (default 10000)
//!   --queries N            ~20-word queries to embed in bulk (default 1000)
//!   --sweep                compare batch sizes 8, 16, 32, 64 on 1024 steps first
//!   --numpy-peak X         auto (default: run numpy if present), off, or a GFLOP/s figure
//! ```

#[path = "../benches/support/corpus.rs"]
mod corpus;

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use precedent_core::Embedder;
use precedent_embed::{Backend, BertEmbedder, EmbedderOptions, Precision, resolve_model_dir};

/// Best of 30 float32 1536x1536 products, in GFLOP/s; one line so that it can be printed as a
/// shell command.
const NUMPY_SCRIPT: &str = "import numpy as np, time; n = 1536; \
    a = np.random.rand(n, n).astype(np.float32); b = np.random.rand(n, n).astype(np.float32); \
    [a @ b for _ in range(3)]; \
    best = min((lambda t: (a @ b, time.perf_counter() - t)[1])(time.perf_counter()) for _ in range(30)); \
    print(2 * n ** 3 / best / 1e9)";

struct Args {
    model_dir: Option<PathBuf>,
    options: EmbedderOptions,
    steps: usize,
    queries: usize,
    sweep: bool,
    numpy: Numpy,
}

enum Numpy {
    Auto,
    Off,
    Given(f64),
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        model_dir: std::env::var_os("PRECEDENT_MODEL_DIR").map(PathBuf::from),
        options: EmbedderOptions::default(),
        steps: 10_000,
        queries: 1_000,
        sweep: false,
        numpy: Numpy::Auto,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |s: String| s.parse::<usize>().map_err(|e| format!("{s}: {e}"));
        match flag.as_str() {
            "--model-dir" => args.model_dir = Some(PathBuf::from(value()?)),
            "--backend" => {
                args.options.backend = match value()?.as_str() {
                    "native" => Backend::Native,
                    "candle" => Backend::Candle,
                    other => return Err(format!("unknown backend {other}")),
                }
            }
            "--precision" => {
                let v = value()?;
                args.options.precision =
                    Precision::parse(&v).ok_or_else(|| format!("unknown precision {v}"))?;
            }
            "--batch-size" => args.options.batch_size = number(value()?)?,
            "--threads" => args.options.threads = Some(number(value()?)?),
            "--steps" => args.steps = number(value()?)?,
            "--queries" => args.queries = number(value()?)?,
            "--sweep" => args.sweep = true,
            "--numpy-peak" => {
                args.numpy = match value()?.as_str() {
                    "auto" => Numpy::Auto,
                    "off" => Numpy::Off,
                    v => Numpy::Given(v.parse().map_err(|e| format!("{v}: {e}"))?),
                }
            }
            "-h" | "--help" => {
                println!("see the header of crates/embed/examples/bench_embed.rs");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            let mut source = e.source();
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}

struct Throughput {
    texts: usize,
    tokens: usize,
    flops: f64,
    elapsed: Duration,
    /// CPU time of all threads over the run, when /proc tells.
    cpu: Option<Duration>,
}

impl Throughput {
    fn print(&self, label: &str) {
        let s = self.elapsed.as_secs_f64();
        println!(
            "{label:<22} {:>6} texts, {:>5.1} tokens avg: {:>7.1} texts/s {:>8.0} tokens/s {:>6.1} GFLOP/s",
            self.texts,
            self.tokens as f64 / self.texts as f64,
            self.texts as f64 / s,
            self.tokens as f64 / s,
            self.flops / s / 1e9,
        );
        if let Some(cpu) = self.cpu {
            let cpu = cpu.as_secs_f64();
            println!(
                "{:<22} {:.2} cores busy on average, {:.1} GFLOP per CPU-second",
                "",
                cpu / s,
                self.flops / cpu / 1e9
            );
        }
    }
}

/// Embeds `texts` in calls of `per_call` texts, as an indexer would.
fn throughput(
    model: &BertEmbedder,
    texts: &[String],
    per_call: usize,
) -> Result<Throughput, Box<dyn std::error::Error>> {
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    // Counted a call at a time: encodings of 10k texts at once would add ~100 MiB to the peak
    // RSS this report gives for the embedder.
    let mut counts = Vec::with_capacity(refs.len());
    for call in refs.chunks(per_call) {
        counts.extend(model.token_counts(call)?);
    }
    let flops: f64 = counts.iter().map(|&n| model.forward_flops(n) as f64).sum();
    let cpu_start = cpu_time();
    let start = Instant::now();
    for call in refs.chunks(per_call) {
        let vectors = model.embed_texts(call)?;
        assert_eq!(vectors.len(), call.len());
    }
    let elapsed = start.elapsed();
    Ok(Throughput {
        texts: texts.len(),
        tokens: counts.iter().sum(),
        flops,
        elapsed,
        cpu: cpu_start.zip(cpu_time()).map(|(a, b)| b.saturating_sub(a)),
    })
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let dir = resolve_model_dir(args.model_dir.as_deref())?;

    let numpy_peak = match args.numpy {
        Numpy::Off => None,
        Numpy::Given(v) => Some(v),
        Numpy::Auto => numpy_peak_auto(),
    };

    println!("precedent-embed benchmark");
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        let load: Vec<&str> = load.split_whitespace().take(3).collect();
        println!(
            "load average before the run: {} (other processes share the cores)",
            load.join(" ")
        );
    }
    println!(
        "threads: candle_core::utils::get_num_threads() = {}, RAYON_NUM_THREADS = {}",
        candle_core::utils::get_num_threads(),
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "unset".into())
    );

    if args.sweep {
        let steps = corpus::steps(1024, 7);
        println!("batch size sweep, 1024 steps of ~100 words:");
        for batch_size in [8, 16, 32, 64] {
            let options = EmbedderOptions {
                batch_size,
                ..args.options.clone()
            };
            let model = BertEmbedder::load(&dir, options)?;
            throughput(&model, &steps[..64], 64)?;
            throughput(&model, &steps, 1024)?.print(&format!("  batch {batch_size}"));
        }
    }

    let load_start = Instant::now();
    let model = BertEmbedder::load(&dir, args.options.clone())?;
    let load_time = load_start.elapsed();
    let rss_after_load = peak_rss_kib();
    println!(
        "model: {} ({} dims, {:?} pooling, max {} tokens), loaded in {:.0} ms",
        model.model_id(),
        model.dimension(),
        model.pooling(),
        model.max_seq_len(),
        load_time.as_secs_f64() * 1e3
    );
    println!(
        "backend: {:?}, {:?}, batch size {}, {} threads, kernels {}",
        model.backend(),
        model.precision(),
        model.batch_size(),
        model.threads(),
        model.cpu_kernels()
    );

    let steps = corpus::steps(args.steps, 1);
    let queries = corpus::queries(args.queries, 2);
    throughput(&model, &steps[..steps.len().min(64)], 64)?; // warm-up

    let step_run = throughput(&model, &steps, 1000)?;
    step_run.print("steps (~100 words)");
    let rss = peak_rss_kib();
    let query_run = throughput(&model, &queries, 1000)?;
    query_run.print("queries (~20 words)");

    let cpu_start = cpu_time();
    let mut latencies: Vec<Duration> = queries
        .iter()
        .cycle()
        .take(200)
        .map(|q| {
            let start = Instant::now();
            model.embed_texts(&[q]).map(|_| start.elapsed())
        })
        .collect::<Result<_, _>>()?;
    let cpu_per_query = cpu_start
        .zip(cpu_time())
        .map(|(a, b)| b.saturating_sub(a) / latencies.len() as u32);
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "query latency (200 single-query calls): p50 {:.2} ms, p99 {:.2} ms{}",
        ms(latencies[100]),
        ms(latencies[197]),
        cpu_per_query.map_or(String::new(), |c| format!(
            ", {:.2} ms CPU per query",
            ms(c)
        ))
    );
    let mib = |kib: u64| kib as f64 / 1024.0;
    match (rss_after_load, rss) {
        (Some(load), Some(steps_peak)) => println!(
            "peak RSS (VmHWM): {:.0} MiB after loading the model, {:.0} MiB after embedding {} steps",
            mib(load),
            mib(steps_peak),
            steps.len(),
        ),
        _ => println!("peak RSS: /proc/self/status not available"),
    }

    let model_gflops = step_run.flops / step_run.elapsed.as_secs_f64() / 1e9;
    // Measured before and after the model, the best counts: other processes on the machine only
    // ever make it lower.
    let numpy_peak = match (numpy_peak, &args.numpy) {
        (Some(before), Numpy::Auto) => Some(numpy_peak_auto().map_or(before, |a| a.max(before))),
        (peak, _) => peak,
    };
    match numpy_peak {
        Some(peak) => println!(
            "numpy float32 1536x1536 matmul, best of runs before and after: {peak:.1} GFLOP/s; \
             the model on ~100-word steps reaches {model_gflops:.1} GFLOP/s = {:.0}% of it",
            100.0 * model_gflops / peak
        ),
        None => println!(
            "numpy peak not measured; to compare, run\n  env -u OPENBLAS_CORETYPE -u \
             OPENBLAS_L2_SIZE python3 -c '{}'\nand divide {model_gflops:.1} GFLOP/s by its output",
            NUMPY_SCRIPT
        ),
    }
    Ok(())
}

/// GFLOP/s of a float32 1536x1536 numpy matmul, if python3 with numpy is installed.
fn numpy_peak_auto() -> Option<f64> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(NUMPY_SCRIPT)
        .env_remove("OPENBLAS_CORETYPE")
        .env_remove("OPENBLAS_L2_SIZE")
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

/// CPU time of every thread of this process so far (first field of each thread's schedstat).
/// Threads that exited are not counted; the embedder's pool threads live as long as it does.
fn cpu_time() -> Option<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total))
}

/// `VmHWM` of this process in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
