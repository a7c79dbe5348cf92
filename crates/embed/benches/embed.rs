//! Criterion benchmarks of the embedder on the real all-MiniLM-L6-v2 model (install it with
//! `scripts/fetch-model`). `examples/bench_embed.rs` prints a fuller report (GFLOP/s, latency
//! percentiles, memory).

#[path = "support/corpus.rs"]
mod corpus;

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use precedent_core::Embedder;
use precedent_embed::{Backend, BertEmbedder, CachedEmbedder, EmbedderOptions, resolve_model_dir};

fn model(backend: Backend) -> BertEmbedder {
    let explicit = std::env::var_os("PRECEDENT_MODEL_DIR").map(PathBuf::from);
    let dir = resolve_model_dir(explicit.as_deref())
        .unwrap_or_else(|e| panic!("the benchmarks need the model: {e}"));
    BertEmbedder::load(
        &dir,
        EmbedderOptions {
            backend,
            ..EmbedderOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()))
}

fn embed(c: &mut Criterion) {
    let native = Arc::new(model(Backend::Native));
    let steps = corpus::steps(64, 1);
    let steps: Vec<&str> = steps.iter().map(String::as_str).collect();
    let queries = corpus::queries(64, 2);
    let queries: Vec<&str> = queries.iter().map(String::as_str).collect();

    let mut group = c.benchmark_group("embed");
    group.sample_size(10);

    group.throughput(Throughput::Elements(steps.len() as u64));
    group.bench_function("native/64 steps of ~100 words", |b| {
        b.iter(|| native.embed_texts(black_box(&steps)).unwrap())
    });
    group.throughput(Throughput::Elements(queries.len() as u64));
    group.bench_function("native/64 queries of ~20 words", |b| {
        b.iter(|| native.embed_texts(black_box(&queries)).unwrap())
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("native/1 query", |b| {
        b.iter(|| native.embed_texts(black_box(&queries[..1])).unwrap())
    });

    let cached = CachedEmbedder::new(Arc::clone(&native));
    cached.embed(&steps).unwrap();
    group.throughput(Throughput::Elements(steps.len() as u64));
    group.bench_function("cache hit/64 steps", |b| {
        b.iter(|| cached.embed(black_box(&steps)).unwrap())
    });

    let candle = model(Backend::Candle);
    let few = &steps[..16];
    group.throughput(Throughput::Elements(few.len() as u64));
    group.bench_function("candle/16 steps of ~100 words", |b| {
        b.iter(|| candle.embed_texts(black_box(few)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, embed);
criterion_main!(benches);
