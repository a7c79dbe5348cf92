//! Open-loop (constant-rate) load generator for `POST /v1/search`.
//!
//! ```text
//! cargo run --release -p precedent-server --example load -- --url http://127.0.0.1:7777 \
//!     --corpus ../shared/corpora [--queries FILE.jsonl] [--rates 10,20,40,...] [--seconds 20]
//!     [--mode hybrid] [--server-pid PID]
//! ```
//!
//! Requests are sent on a fixed schedule (request `i` at `start + i / rate`) whatever the
//! server does, each on its own task, so a slow server cannot slow the generator down
//! (no coordinated omission): a request's latency runs from its *scheduled* time to its
//! response. Queries are the incident titles of `--corpus` and the judged queries of
//! `--queries`, in a fixed shuffled order, so the server embeds a different text each time.
//! Rates are tried in order until p99 exceeds 100 ms or any request fails; the report names the
//! highest rate held with p99 under 100 ms, and the server's peak RSS when `--server-pid` is
//! given. Each rate's line also gives the machine's CPU steal while it ran (`/proc/stat`): a
//! figure measured while the host took a share of the CPUs is not comparable with others.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use precedent_parse::{ParseOptions, parse_file};

struct Args {
    url: String,
    corpus: Option<PathBuf>,
    queries: Option<PathBuf>,
    rates: Vec<f64>,
    seconds: f64,
    mode: String,
    server_pid: Option<u32>,
}

fn args() -> Result<Args, String> {
    let mut out = Args {
        url: "http://127.0.0.1:7777".into(),
        corpus: None,
        queries: None,
        rates: vec![
            10.0, 20.0, 40.0, 60.0, 80.0, 100.0, 120.0, 140.0, 160.0, 200.0,
        ],
        seconds: 20.0,
        mode: "hybrid".into(),
        server_pid: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--url" => out.url = value.trim_end_matches('/').to_owned(),
            "--corpus" => out.corpus = Some(value.into()),
            "--queries" => out.queries = Some(value.into()),
            "--rates" => {
                out.rates = value
                    .split(',')
                    .map(|r| r.trim().parse::<f64>())
                    .collect::<Result<_, _>>()
                    .map_err(|e| bad(&e))?;
            }
            "--seconds" => out.seconds = value.parse().map_err(|e| bad(&e))?,
            "--mode" => out.mode = value,
            "--server-pid" => out.server_pid = Some(value.parse().map_err(|e| bad(&e))?),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(out)
}

/// Incident titles of every write-up under `dir`.
fn titles(dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.to_string_lossy().into_owned();
        if path.is_dir() {
            titles(&path, out)?;
        } else if !precedent_parse::is_furniture(&name)
            && let Some(incident) = parse_file(&name, &path, &ParseOptions::default()).incident
        {
            out.push(incident.title);
        }
    }
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

struct Step {
    rate: f64,
    sent: usize,
    failed: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
    achieved: f64,
}

async fn run_rate(
    client: &reqwest::Client,
    url: &str,
    bodies: &Arc<Vec<serde_json::Value>>,
    rate: f64,
    seconds: f64,
    offset: usize,
) -> Step {
    let n = (rate * seconds).round().max(1.0) as usize;
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let at = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(at).await;
        let (client, url, bodies) = (client.clone(), url.to_owned(), bodies.clone());
        tasks.spawn(async move {
            let body = &bodies[(offset + i) % bodies.len()];
            let ok = match client.post(&url).json(body).send().await {
                Ok(response) => {
                    let ok = response.status().is_success();
                    // Read the whole body: the latency includes the transfer.
                    response.bytes().await.is_ok() && ok
                }
                Err(_) => false,
            };
            (at.elapsed(), ok)
        });
    }
    let began = start.into_std();
    let mut latencies = Vec::with_capacity(n);
    let mut failed = 0;
    while let Some(done) = tasks.join_next().await {
        let (latency, ok) = done.expect("request task panicked");
        latencies.push(latency);
        failed += usize::from(!ok);
    }
    let elapsed = began.elapsed().as_secs_f64();
    latencies.sort();
    Step {
        rate,
        sent: n,
        failed,
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
        max: *latencies.last().expect("at least one request"),
        achieved: n as f64 / elapsed,
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args()?;
    let mut queries = Vec::new();
    if let Some(dir) = &args.corpus {
        titles(dir, &mut queries)?;
    }
    if let Some(path) = &args.queries {
        for line in std::fs::read_to_string(path)?.lines() {
            let value: serde_json::Value = serde_json::from_str(line)?;
            if let Some(q) = value.get("query").and_then(|q| q.as_str()) {
                queries.push(q.to_owned());
            }
        }
    }
    queries.retain(|q| !q.trim().is_empty());
    queries.sort();
    queries.dedup();
    if queries.is_empty() {
        return Err("no queries: give --corpus DIR and/or --queries FILE.jsonl".into());
    }
    // A fixed shuffle, so that consecutive requests are unrelated.
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    for i in (1..queries.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        queries.swap(i, (seed % (i as u64 + 1)) as usize);
    }
    let bodies: Arc<Vec<serde_json::Value>> = Arc::new(
        queries
            .iter()
            .map(|q| serde_json::json!({"query": q, "k": 10, "mode": args.mode}))
            .collect(),
    );
    let url = format!("{}/v1/search", args.url);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;

    // Warm up: every query once, slowly (also checks that the server answers).
    let warm = Instant::now();
    for body in bodies.iter().take(50) {
        let response = client.post(&url).json(body).send().await?;
        if !response.status().is_success() {
            return Err(format!("{url}: {} {}", response.status(), response.text().await?).into());
        }
    }
    println!(
        "{} distinct queries, mode {}, {} s per rate; warm-up of 50 sequential requests took {:.1?}",
        bodies.len(),
        args.mode,
        args.seconds,
        warm.elapsed()
    );
    println!(
        "{:>8} {:>7} {:>7} {:>9} {:>9} {:>9} {:>10} {:>7}",
        "rate/s", "sent", "failed", "p50", "p99", "max", "achieved/s", "steal"
    );
    let mut best = None;
    let mut offset = 0;
    for &rate in &args.rates {
        let before = cpu_times();
        let step = run_rate(&client, &url, &bodies, rate, args.seconds, offset).await;
        let steal = steal_share(before, cpu_times());
        offset += step.sent;
        println!(
            "{:>8.0} {:>7} {:>7} {:>7.1}ms {:>7.1}ms {:>7.1}ms {:>10.1} {:>7}",
            step.rate,
            step.sent,
            step.failed,
            step.p50.as_secs_f64() * 1e3,
            step.p99.as_secs_f64() * 1e3,
            step.max.as_secs_f64() * 1e3,
            step.achieved,
            steal.map_or("?".to_owned(), |s| format!("{:.0}%", s * 100.0))
        );
        if step.failed > 0 || step.p99 > Duration::from_millis(100) {
            break;
        }
        best = Some(step.rate);
        // Let queues drain between rates.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    match best {
        Some(rate) => println!("highest rate held with p99 < 100 ms and no failures: {rate} req/s"),
        None => println!("no rate held with p99 < 100 ms"),
    }
    if let Some(pid) = args.server_pid {
        match peak_rss_mib(pid) {
            Some(mib) => println!("server peak RSS (VmHWM of pid {pid}): {mib:.0} MiB"),
            None => println!("cannot read /proc/{pid}/status"),
        }
    }
    Ok(())
}

/// Total and stolen CPU time of the machine so far (the `cpu` line of `/proc/stat`, in ticks):
/// a virtual machine whose host takes its CPUs away ("steal") runs everything slower, so a
/// latency figure means little without it.
fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let steal = *ticks.get(7)?;
    Some((ticks.iter().take(8).sum(), steal))
}

/// Share of the CPU time between two readings that the host stole.
fn steal_share(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> Option<f64> {
    let ((t0, s0), (t1, s1)) = (before?, after?);
    let total = t1.checked_sub(t0).filter(|t| *t > 0)?;
    Some(s1.saturating_sub(s0) as f64 / total as f64)
}
