//! Parses every write-up under a directory and prints, per top-level folder, how many steps of
//! each kind came out and what share of the text ended up as `other`; also files skipped and
//! the wall time. `cargo run --release -p precedent-parse --example corpus_stats -- DIR`

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use precedent_core::StepKind;
use precedent_parse::{Format, ParseOptions, is_furniture, parse};

/// Files, skipped, steps per kind, text bytes, `other` text bytes.
type Row = (usize, usize, BTreeMap<StepKind, usize>, usize, usize);

fn main() {
    let root = std::env::args().nth(1).expect("usage: corpus_stats DIR");
    let root = Path::new(&root);
    let mut files = Vec::new();
    walk(root, &mut files);
    files.sort();
    let inputs: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|p| {
            (
                p.strip_prefix(root).unwrap().to_string_lossy().into_owned(),
                std::fs::read(p).unwrap(),
            )
        })
        .collect();
    let options = ParseOptions::default();
    let start = Instant::now();
    let parsed: Vec<_> = inputs
        .iter()
        .map(|(rel, bytes)| (rel, parse(rel, bytes, &options)))
        .collect();
    let elapsed = start.elapsed();

    let mut table: BTreeMap<String, Row> = BTreeMap::new();
    for (rel, p) in &parsed {
        let corpus = rel.split('/').next().unwrap_or("").to_owned();
        let row = table.entry(corpus).or_default();
        row.0 += 1;
        match &p.incident {
            None => row.1 += 1,
            Some(incident) => {
                for step in &incident.steps {
                    *row.2.entry(step.kind).or_default() += 1;
                    let bytes = step.text.len();
                    row.3 += bytes;
                    if step.kind == StepKind::Other {
                        row.4 += bytes;
                    }
                }
            }
        }
    }
    print!("| corpus | files | skipped |");
    for kind in StepKind::ALL {
        print!(" {} |", kind.as_str());
    }
    println!(" steps | other text % |");
    print!("|---|---|---|");
    for _ in StepKind::ALL {
        print!("---|");
    }
    println!("---|---|");
    let mut totals = (0, 0, BTreeMap::new(), 0, 0);
    for (corpus, (files, skipped, kinds, text, other)) in &table {
        print!("| {corpus} | {files} | {skipped} |");
        for kind in StepKind::ALL {
            let n = kinds.get(&kind).copied().unwrap_or(0);
            *totals.2.entry(kind).or_insert(0) += n;
            print!(" {n} |");
        }
        let steps: usize = kinds.values().sum();
        println!(
            " {steps} | {:.1} |",
            100.0 * *other as f64 / (*text).max(1) as f64
        );
        totals.0 += files;
        totals.1 += skipped;
        totals.3 += text;
        totals.4 += other;
    }
    print!("| **all** | {} | {} |", totals.0, totals.1);
    for kind in StepKind::ALL {
        print!(" {} |", totals.2.get(&kind).copied().unwrap_or(0));
    }
    let steps: usize = totals.2.values().sum();
    println!(
        " {steps} | {:.1} |",
        100.0 * totals.4 as f64 / totals.3.max(1) as f64
    );
    let bytes: usize = inputs.iter().map(|(_, b)| b.len()).sum();
    println!(
        "\nparsed {} files ({:.1} MB) in {:.3} s on one thread ({:.1} MB/s)",
        inputs.len(),
        bytes as f64 / 1e6,
        elapsed.as_secs_f64(),
        bytes as f64 / 1e6 / elapsed.as_secs_f64()
    );
    for (rel, p) in &parsed {
        if let Some(reason) = p.skip_reason() {
            println!("skipped {rel}: {}", reason.message);
        }
    }
}

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out);
        } else if let Some(name) = path.file_name().and_then(|n| n.to_str())
            && !is_furniture(name)
            && Format::of(name).is_some()
        {
            out.push(path);
        }
    }
}
