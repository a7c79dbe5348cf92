//! Parser throughput: the 709 shared write-ups (when `../shared/corpora` is present), the
//! project's samples, and one 10 MiB Markdown file.
//! `cargo bench -p precedent-parse --bench parse`

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use precedent_parse::{Format, ParseOptions, is_furniture, parse};

fn collect(dir: &Path, root: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            collect(&path, root, out);
        } else if let Some(name) = path.file_name().and_then(|n| n.to_str())
            && Format::of(name).is_some()
            && !is_furniture(name)
        {
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.push((rel, std::fs::read(&path).unwrap()));
        }
    }
}

fn bench_set(c: &mut Criterion, name: &str, files: &[(String, Vec<u8>)]) {
    let bytes: usize = files.iter().map(|(_, b)| b.len()).sum();
    let options = ParseOptions::default();
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Bytes(bytes as u64));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    group.bench_function(format!("{} files", files.len()), |b| {
        b.iter(|| {
            for (rel, data) in files {
                black_box(parse(rel, data, &options));
            }
        })
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shared = manifest.join("../../../shared/corpora");
    let mut files = Vec::new();
    collect(&shared, &shared, &mut files);
    if files.is_empty() {
        eprintln!("../shared/corpora not found; skipping the shared corpus benchmark");
    } else {
        bench_set(c, "shared_corpora", &files);
    }
    let samples_dir = manifest.join("../../corpus-samples");
    let mut samples = Vec::new();
    collect(&samples_dir, &samples_dir, &mut samples);
    bench_set(c, "corpus_samples", &samples);

    // 10 MiB of real-looking Markdown: the samples' bodies repeated under numbered headings.
    let mut big = String::with_capacity(11 << 20);
    let mut i = 0;
    while big.len() < 10 << 20 {
        let (_, data) = &samples[i % samples.len()];
        big.push_str(&format!("\n## Part {i}\n\n"));
        big.push_str(&String::from_utf8_lossy(data).replace("---\n", "\n"));
        i += 1;
    }
    big.truncate(big.floor_char_boundary(10 << 20));
    bench_set(
        c,
        "ten_mib_markdown",
        &[("big.md".to_owned(), big.into_bytes())],
    );
}

criterion_group!(parse_benches, benches);
criterion_main!(parse_benches);
