//! kill -9 during indexing: the index always opens and answers from the old or the new state,
//! and the next run converges, with no duplicate, phantom or missing step.
//!
//! The test re-executes its own binary to run only itself with `PRECEDENT_CRASH_CHILD` set, which
//! makes it the child: that one syncs, and the parent SIGKILLs it after a random delay spread
//! over the time a sync takes.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{
    copy_dir, corpus_samples, model, options, pruning, save_cache, steps_of, sync,
};
use precedent_embed::{BertEmbedder, CachedEmbedder, EmbedderOptions, resolve_model_dir};
use precedent_index::{Engine, IndexWriter, NoProgress, SearchRequest};

const CHILD_ENV: &str = "PRECEDENT_CRASH_CHILD";
const READY: &str = "CRASH-CHILD-READY";
const DONE: &str = "CRASH-CHILD-DONE";
const TRIALS: u64 = 20;

/// The test below, as libtest names it (what the parent runs in the child).
const CRASH_TEST: &str = "crash::sigkill_at_any_moment_leaves_the_old_or_the_new_state";

/// The child: syncs `corpus` into `index` with the vector cache at `cache`.
fn crash_child(spec: &str) {
    let parts: Vec<&str> = spec.split('\n').collect();
    let [index, corpus, cache] = parts[..] else {
        panic!("bad spec {spec:?}")
    };
    let dir = resolve_model_dir(None).unwrap();
    let bert = BertEmbedder::load(&dir, EmbedderOptions::default()).unwrap();
    let embedder = Arc::new(CachedEmbedder::load(bert, Path::new(cache)).unwrap());
    let mut writer = IndexWriter::open(Path::new(index), embedder, pruning()).unwrap();
    println!("{READY}");
    writer.sync_dir(Path::new(corpus), &NoProgress).unwrap();
    println!("{DONE}");
}

/// Small deterministic generator for kill delays.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn sigkill_at_any_moment_leaves_the_old_or_the_new_state() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        return crash_child(&spec);
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // Two versions of the corpus: B edits, deletes, renames and adds files of A.
    let (corpus_a, corpus_b) = (root.join("a"), root.join("b"));
    copy_dir(&corpus_samples(), &corpus_a);
    copy_dir(&corpus_samples(), &corpus_b);
    std::fs::remove_file(corpus_b.join("cron-job-ran-twice.md")).unwrap();
    std::fs::remove_file(corpus_b.join("20120701-leap-second-cpu.txt")).unwrap();
    std::fs::rename(
        corpus_b.join("runaway-autoscaler.md"),
        corpus_b.join("autoscaler-runaway.md"),
    )
    .unwrap();
    for name in [
        "jwt-nbf-clock-skew.md",
        "2022-03-14-disk-full-debug-logs.md",
        "cache-stampede-after-flush.txt",
    ] {
        let mut text = std::fs::read_to_string(corpus_b.join(name)).unwrap();
        text.push_str("\n\nAddendum: the fix was verified a week later by the storage team.\n");
        std::fs::write(corpus_b.join(name), text).unwrap();
    }
    std::fs::copy(
        corpus_b.join("mysql-failover-split-brain.md"),
        corpus_b.join("mysql-failover-again.md"),
    )
    .unwrap();

    // Reference states, from fresh builds (this also fills the vector cache for the child).
    let (ref_a, ref_b) = (root.join("ref-a"), root.join("ref-b"));
    sync(&ref_a, &corpus_a, options());
    sync(&ref_b, &corpus_b, options());
    let steps_a = steps_of(&ref_a);
    let steps_b = steps_of(&ref_b);
    assert_ne!(steps_a, steps_b);
    let cache = root.join("vectors.cache");
    model().save(&cache).unwrap();
    save_cache();

    let index = root.join("index");
    copy_dir(&ref_a, &index);
    let exe = std::env::current_exe().unwrap();
    let spawn = |corpus: &Path| {
        let spec = format!(
            "{}\n{}\n{}",
            index.display(),
            corpus.display(),
            cache.display()
        );
        let mut child = Command::new(&exe)
            .args([CRASH_TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, spec)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert!(
            lines.any(|l| l.is_ok_and(|l| l.contains(READY))),
            "child never got ready"
        );
        (child, lines)
    };

    // How long the child takes to sync A to B, from ready to done: kill delays are spread
    // over a bit more than that.
    let (mut child, mut lines) = spawn(&corpus_b);
    let started = Instant::now();
    assert!(
        lines.any(|l| l.is_ok_and(|l| l.contains(DONE))),
        "calibration run failed"
    );
    let window = started
        .elapsed()
        .mul_f64(1.2)
        .max(Duration::from_millis(20));
    child.wait().unwrap();
    assert_eq!(steps_of(&index), steps_b);

    let mut seed = 0x5EED_u64 ^ (window.as_nanos() as u64 | 1);
    let (mut old_states, mut new_states) = (0, 0);
    let mut at_b = true;
    for trial in 0..TRIALS {
        let (from_steps, to_steps, to_corpus) = if at_b {
            (&steps_b, &steps_a, &corpus_a)
        } else {
            (&steps_a, &steps_b, &corpus_b)
        };
        let (mut child, lines) = spawn(to_corpus);
        let delay = window.mul_f64((next(&mut seed) % 1000) as f64 / 1000.0);
        std::thread::sleep(delay);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        drop(lines);

        // The index opens (Engine::open checks that every step has exactly one live document
        // and one vector) and serves exactly one of the two states.
        let steps = steps_of(&index);
        if &steps == from_steps {
            old_states += 1;
        } else if &steps == to_steps {
            new_states += 1;
        } else {
            panic!(
                "trial {trial}: killed after {delay:?}: the index serves neither state ({} steps)",
                steps.len()
            );
        }
        let engine = Engine::open(&index).unwrap();
        let hits = engine
            .search(&SearchRequest::new("disk full"), &*model())
            .unwrap()
            .hits;
        assert!(!hits.is_empty());

        // The next run converges.
        let mut writer = IndexWriter::open(&index, model(), pruning()).unwrap();
        writer.sync_dir(to_corpus, &NoProgress).unwrap();
        drop(writer);
        assert_eq!(&steps_of(&index), to_steps, "trial {trial}: no convergence");
        at_b = !at_b;
    }
    eprintln!(
        "{TRIALS} kills over a {window:?} window: {old_states} old states, {new_states} new states"
    );
    assert_eq!(old_states + new_states, TRIALS);
}
