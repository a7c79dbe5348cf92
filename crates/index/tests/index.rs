//! End-to-end tests of indexing and search on `corpus-samples/`, with the real embedding model.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use crate::common::{
    copy_dir, corpus_samples, embedder, file_states, options, pruning, save_cache, steps_of, sync,
};
use chrono::NaiveDate;
use precedent_core::{BoxError, Embedder, IncidentId, StepKind};
use precedent_index::{
    Engine, Error, Filters, IndexWriter, Mode, NoProgress, SearchRequest, SimilarRequest,
    SimilarSource, WriterOptions,
};
use proptest::prelude::*;

const MODES: [Mode; 3] = [Mode::Lexical, Mode::Vector, Mode::Hybrid];

/// One index of the sample corpus, built once per test binary and only read.
fn shared_index() -> &'static Path {
    static INDEX: OnceLock<PathBuf> = OnceLock::new();
    INDEX.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let summary = sync(&dir, &corpus_samples(), options());
        assert_eq!(summary.added, 32, "{summary:?}");
        dir
    })
}

fn search(engine: &Engine, request: &SearchRequest) -> precedent_index::SearchResponse {
    engine
        .search(request, &*embedder())
        .unwrap_or_else(|e| panic!("{request:?}: {e}"))
}

fn incident_id_of(engine: &Engine, path: &str) -> IncidentId {
    let id = IncidentId::from_path(path);
    assert!(engine.incident(&id).unwrap().is_some(), "{path} is indexed");
    id
}

#[test]
fn lexical_search_finds_identifiers_and_phrases_and_cites_lines() {
    let engine = Engine::open(shared_index()).unwrap();
    let r = search(
        &engine,
        &SearchRequest::new("OOMKilled").with_mode(Mode::Lexical),
    );
    assert!(!r.hits.is_empty());
    assert_eq!(
        r.hits[0].citation.path,
        "k8s-oomkilled-after-limits-change.md"
    );
    assert_eq!(r.hits[0].score.lexical_rank, Some(1));
    assert_eq!(r.hits[0].score.vector_rank, None);
    assert_eq!(r.hits[0].score.vector_similarity, None);
    assert!(
        r.hits[0].snippet.contains("**OOMKilled**"),
        "{}",
        r.hits[0].snippet
    );

    // Exact phrase: the steps that say it come first, from both write-ups that do.
    let r = search(
        &engine,
        &SearchRequest::new("no space left on device")
            .with_mode(Mode::Lexical)
            .with_k(5),
    );
    let paths: Vec<&str> = r.hits.iter().map(|h| h.citation.path.as_str()).collect();
    assert!(
        paths.contains(&"2022-03-14-disk-full-debug-logs.md"),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"20180412-inode-exhaustion.txt"),
        "{paths:?}"
    );
    assert!(
        r.hits[0]
            .text
            .to_lowercase()
            .contains("no space left on device"),
        "{}",
        r.hits[0].text
    );

    let r = search(
        &engine,
        &SearchRequest::new("ECONNRESET connection pool").with_mode(Mode::Lexical),
    );
    assert_eq!(
        r.hits[0].citation.path,
        "connection-pool-exhaustion-econnreset.md"
    );

    // Citations point at the lines the text comes from.
    let r = search(
        &engine,
        &SearchRequest::new("certificate expired renewal").with_k(20),
    );
    for hit in &r.hits {
        let file = fs::read_to_string(corpus_samples().join(&hit.citation.path)).unwrap();
        let lines: Vec<&str> = file.lines().collect();
        let (a, b) = (
            hit.citation.line_start as usize,
            hit.citation.line_end as usize,
        );
        assert!(1 <= a && a <= b && b <= lines.len(), "{:?}", hit.citation);
        let cited = lines[a - 1..b].join("\n");
        let first_word = hit
            .text
            .split(|c: char| !c.is_alphanumeric())
            .find(|w| w.len() > 2)
            .unwrap();
        assert!(
            cited.contains(first_word),
            "{first_word:?} not in {:?} of {}",
            hit.citation,
            hit.citation.path
        );
    }
}

#[test]
fn vector_and_hybrid_search_find_paraphrases() {
    let engine = Engine::open(shared_index()).unwrap();
    let query =
        "containers were killed because they ran out of memory after we lowered their limits";
    for mode in [Mode::Vector, Mode::Hybrid] {
        let r = search(
            &engine,
            &SearchRequest::new(query)
                .with_mode(mode)
                .with_k(5)
                .with_per_incident(0),
        );
        assert_eq!(r.hits.len(), 5);
        assert!(
            r.hits
                .iter()
                .any(|h| h.citation.path == "k8s-oomkilled-after-limits-change.md"),
            "{mode:?}: {:?}",
            r.hits.iter().map(|h| &h.citation.path).collect::<Vec<_>>()
        );
        for (i, hit) in r.hits.iter().enumerate() {
            if mode == Mode::Vector {
                assert_eq!(hit.score.vector_rank, Some(i as u32 + 1));
            }
            let sim = hit.score.vector_similarity.unwrap();
            assert!((-1.0..=1.0001).contains(&sim), "{sim}");
        }
        assert!(
            r.hits
                .windows(2)
                .all(|w| w[0].score.fused >= w[1].score.fused)
        );
    }
    // In hybrid mode a step found by both retrievers carries both ranks.
    let r = search(
        &engine,
        &SearchRequest::new("wildcard TLS certificate expired").with_k(5),
    );
    let both = r
        .hits
        .iter()
        .find(|h| h.score.lexical_rank.is_some() && h.score.vector_rank.is_some());
    assert!(
        both.is_some(),
        "{:?}",
        r.hits.iter().map(|h| &h.score).collect::<Vec<_>>()
    );
}

#[test]
fn filters_apply_in_every_mode() {
    let engine = Engine::open(shared_index()).unwrap();
    let query = "outage caused errors for customers";
    let oom = incident_id_of(&engine, "k8s-oomkilled-after-limits-change.md");
    for mode in MODES {
        let run = |filters: Filters| {
            search(
                &engine,
                &SearchRequest::new(query)
                    .with_mode(mode)
                    .with_k(10)
                    .with_filters(filters),
            )
            .hits
        };

        let hits = run(Filters {
            kinds: vec![StepKind::RootCause, StepKind::Mitigation],
            ..Filters::default()
        });
        assert!(!hits.is_empty(), "{mode:?}");
        assert!(
            hits.iter()
                .all(|h| matches!(h.kind, StepKind::RootCause | StepKind::Mitigation)),
            "{mode:?}"
        );
        if mode == Mode::Vector {
            assert_eq!(
                hits.len(),
                10,
                "filtering inside the search keeps k results"
            );
        }

        let hits = run(Filters {
            services: vec!["Product-Search".into()],
            ..Filters::default()
        });
        assert!(!hits.is_empty(), "{mode:?}");
        assert!(hits.iter().all(|h| h.incident_id == oom), "{mode:?}");
        if mode != Mode::Lexical {
            assert!(!hits.is_empty());
        }

        let hits = run(Filters {
            severities: vec!["sev2".into()],
            ..Filters::default()
        });
        assert!(!hits.is_empty(), "{mode:?}");
        for hit in &hits {
            let incident = engine.incident(&hit.incident_id).unwrap().unwrap();
            assert_eq!(
                incident
                    .severity
                    .as_deref()
                    .map(str::to_lowercase)
                    .as_deref(),
                Some("sev2")
            );
        }

        let since = NaiveDate::from_ymd_opt(2022, 1, 1).unwrap();
        let until = NaiveDate::from_ymd_opt(2022, 12, 31).unwrap();
        let hits = run(Filters {
            since: Some(since),
            until: Some(until),
            ..Filters::default()
        });
        assert!(!hits.is_empty(), "{mode:?}");
        for hit in &hits {
            let date = engine
                .incident(&hit.incident_id)
                .unwrap()
                .unwrap()
                .date
                .unwrap()
                .start;
            assert!(since <= date && date <= until, "{mode:?}: {date}");
        }

        let hits = run(Filters {
            incident_ids: vec![oom.clone()],
            kinds: vec![StepKind::Summary],
            ..Filters::default()
        });
        assert!(
            !hits.is_empty(),
            "{mode:?}: no summary step of the OOM incident"
        );
        assert!(
            hits.iter()
                .all(|h| h.incident_id == oom && h.kind == StepKind::Summary),
            "{mode:?}"
        );

        let hits = run(Filters {
            tags: vec!["KUBERNETES".into()],
            ..Filters::default()
        });
        assert!(!hits.is_empty(), "{mode:?}");
        for hit in &hits {
            let tags = engine.incident(&hit.incident_id).unwrap().unwrap().tags;
            assert!(
                tags.iter().any(|t| t.eq_ignore_ascii_case("kubernetes")),
                "{mode:?}: {tags:?}"
            );
        }
    }
    let unknown = Filters {
        incident_ids: vec![IncidentId::parse("nope-00000000").unwrap()],
        ..Filters::default()
    };
    let err = engine
        .search(&SearchRequest::new("x").with_filters(unknown), &*embedder())
        .unwrap_err();
    assert!(
        matches!(err, Error::UnknownIncident(_)) && err.is_user_error(),
        "{err}"
    );
}

#[test]
fn weird_queries_are_searched_not_parsed() {
    let engine = Engine::open(shared_index()).unwrap();
    let long = "disk full ".repeat(1000);
    let weird = [
        "\"",
        "-",
        "a:b",
        "(((",
        ")))",
        "AND",
        "OR NOT AND",
        "\"unbalanced phrase",
        "title:disk",
        "*",
        "?",
        "~2",
        "[1 TO 5]",
        "\\",
        "+",
        "!",
        "{}",
        "-disk",
        "disk AND (full OR",
        &long,
        "éèà 日本語",
        "a\u{0}b",
    ];
    for q in weird {
        for mode in MODES {
            let r = engine.search(&SearchRequest::new(q).with_mode(mode), &*embedder());
            assert!(r.is_ok(), "{q:?} {mode:?}: {:?}", r.err());
        }
    }
    assert_eq!(
        search(&engine, &SearchRequest::new("(((").with_mode(Mode::Lexical))
            .hits
            .len(),
        0
    );
    for q in ["", "   ", "\n\t"] {
        let err = engine
            .search(&SearchRequest::new(q), &*embedder())
            .unwrap_err();
        assert!(err.is_user_error(), "{err}");
        assert_eq!(err.to_string(), "invalid request: empty query");
    }
    let err = engine
        .search(&SearchRequest::new("x").with_k(0), &*embedder())
        .unwrap_err();
    assert!(err.is_user_error());
}

#[test]
fn similar_ranks_whole_incidents() {
    let engine = Engine::open(shared_index()).unwrap();
    let model = embedder();
    let tls = incident_id_of(&engine, "2021-09-30-tls-cert-expiry.md");
    let r = engine
        .similar(
            &SimilarRequest::new(SimilarSource::Incident(tls.clone())),
            &*model,
        )
        .unwrap();
    assert_eq!(r.incidents.len(), 10);
    let ids: Vec<_> = r.incidents.iter().map(|i| &i.incident_id).collect();
    assert!(!ids.contains(&&tls), "the source is excluded");
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "one entry per incident");
    assert!(r.incidents.windows(2).all(|w| w[0].score >= w[1].score));
    for incident in &r.incidents {
        assert!((1..=3).contains(&incident.steps.len()));
        assert!(
            incident
                .steps
                .iter()
                .all(|s| s.incident_id == incident.incident_id)
        );
    }
    let top3: Vec<&str> = r.incidents[..3].iter().map(|i| i.path.as_str()).collect();
    assert!(
        top3.contains(&"2020-06-02-missing-intermediate-cert.md"),
        "{top3:?}"
    );

    let text = SimilarSource::Text("TLS handshakes fail: the certificate has expired".into());
    let r = engine
        .similar(
            &SimilarRequest {
                k: 3,
                ..SimilarRequest::new(text)
            },
            &*model,
        )
        .unwrap();
    assert_eq!(r.incidents.len(), 3);
    assert!(
        [
            "2021-09-30-tls-cert-expiry.md",
            "2020-06-02-missing-intermediate-cert.md"
        ]
        .contains(&r.incidents[0].path.as_str()),
        "{:?}",
        r.incidents[0].path
    );

    let draft = "# Checkout pods restarting\n\n## Summary\n\nCheckout pods keep restarting with exit code 137 \
                 since this morning's deploy; memory climbs until the kernel kills them.\n\n## Detection\n\n\
                 Alert on pod restarts fired at 09:12.\n";
    let source = SimilarSource::WriteUp {
        path: "draft.md".into(),
        text: draft.into(),
    };
    let r = engine
        .similar(&SimilarRequest::new(source), &*model)
        .unwrap();
    let top3: Vec<&str> = r.incidents[..3].iter().map(|i| i.path.as_str()).collect();
    assert!(
        top3.iter()
            .any(|p| p.contains("oomkilled") || p.contains("memory-leak")),
        "{top3:?}"
    );

    let unknown = SimilarSource::Incident(IncidentId::parse("nope-00000000").unwrap());
    let err = engine
        .similar(&SimilarRequest::new(unknown), &*model)
        .unwrap_err();
    assert!(err.is_user_error(), "{err}");
}

#[test]
fn incidents_facets_and_stats() {
    let engine = Engine::open(shared_index()).unwrap();
    let stats = engine.stats();
    assert_eq!(stats.incidents, 32);
    assert_eq!(stats.dimension, 384);
    assert!(stats.size_bytes > 0);
    let facets = engine.facets();
    assert_eq!(facets.incidents, 32);
    assert_eq!(facets.steps, stats.steps);
    assert_eq!(
        facets.kinds.iter().map(|k| k.count).sum::<u64>(),
        stats.steps
    );
    assert!(
        facets
            .severities
            .iter()
            .any(|s| s.value == "sev2" && s.count >= 3),
        "{:?}",
        facets.severities
    );
    assert!(facets.services.iter().any(|s| s.value == "product-search"));
    assert!(facets.date_min.unwrap() < facets.date_max.unwrap());

    let id = IncidentId::from_path("2021-09-30-tls-cert-expiry.md");
    let incident = engine.incident(&id).unwrap().unwrap();
    assert_eq!(incident.path, "2021-09-30-tls-cert-expiry.md");
    assert!(incident.steps.len() > 10);
    assert!(!incident.timeline.is_empty());
    assert!(
        engine
            .incident(&IncidentId::parse("nope-00000000").unwrap())
            .unwrap()
            .is_none()
    );
    let all = engine.dump_steps().unwrap();
    assert_eq!(all.len() as u64, stats.steps);
}

#[test]
fn a_second_run_without_changes_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (index, corpus) = (tmp.path().join("index"), tmp.path().join("corpus"));
    copy_dir(&corpus_samples(), &corpus);
    let first = sync(&index, &corpus, options());
    assert_eq!((first.added, first.removed, first.unchanged), (32, 0, 0));
    assert!(first.rebuilt);
    let before = file_states(&index);
    let second = sync(&index, &corpus, options());
    assert_eq!(
        (
            second.added,
            second.updated,
            second.removed,
            second.unchanged
        ),
        (0, 0, 0, 32),
        "{second:?}"
    );
    assert_eq!(second.steps_embedded, 0);
    assert_eq!(second.generation, first.generation);
    assert_eq!(file_states(&index), before, "no file of the index changed");
    // Touching a file without changing it costs a hash, not a write.
    let f = corpus.join("cron-job-ran-twice.md");
    fs::write(&f, fs::read(&f).unwrap()).unwrap();
    let third = sync(&index, &corpus, options());
    assert_eq!(third.unchanged, 32);
    assert_eq!(file_states(&index), before);
}

#[test]
fn a_second_writer_is_refused_while_readers_search() {
    let tmp = tempfile::tempdir().unwrap();
    let index = tmp.path().join("index");
    copy_dir(shared_index(), &index);
    let writer = IndexWriter::open(&index, embedder(), options()).unwrap();
    let err = IndexWriter::open(&index, embedder(), options()).unwrap_err();
    assert!(
        matches!(err, Error::Locked { pid: Some(pid) } if pid == std::process::id()),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "index is locked by another writer (pid {})",
            std::process::id()
        )
    );
    assert!(err.is_user_error());
    // Readers do not wait for the writer.
    let engine = Engine::open(&index).unwrap();
    assert!(
        !search(&engine, &SearchRequest::new("disk full"))
            .hits
            .is_empty()
    );
    drop(writer);
    assert!(IndexWriter::open(&index, embedder(), options()).is_ok());
}

#[test]
fn upsert_delete_and_reload() {
    let tmp = tempfile::tempdir().unwrap();
    let index = tmp.path().join("index");
    copy_dir(shared_index(), &index);
    let engine = Engine::open(&index).unwrap();
    assert!(!engine.reload_if_changed().unwrap());
    let mut writer = IndexWriter::open(&index, embedder(), options()).unwrap();
    let doc = "# Zeppelin queue frozen\n\n## Summary\n\nThe zeppelin-dispatch queue froze after a quokka migration.\n";
    let outcome = writer.upsert("new/zeppelin.md", doc.as_bytes()).unwrap();
    assert!(!outcome.replaced);
    assert!(outcome.steps >= 1);
    assert!(engine.reload_if_changed().unwrap());
    assert!(!engine.reload_if_changed().unwrap());
    let r = search(
        &engine,
        &SearchRequest::new("zeppelin quokka").with_mode(Mode::Lexical),
    );
    assert_eq!(r.hits[0].citation.path, "new/zeppelin.md");
    assert_eq!(r.hits[0].incident_id, outcome.incident_id);

    let again = writer
        .upsert(
            "new/zeppelin.md",
            doc.replace("froze", "stalled").as_bytes(),
        )
        .unwrap();
    assert!(again.replaced);
    engine.reload().unwrap();
    assert_eq!(engine.stats().incidents, 33);

    let bad = writer.upsert("bin.md", b"\x00\x01binary").unwrap_err();
    assert!(
        matches!(bad, Error::InvalidWriteUp { .. }) && bad.is_user_error(),
        "{bad}"
    );
    assert!(
        writer
            .upsert("../escape.md", doc.as_bytes())
            .unwrap_err()
            .is_user_error()
    );

    assert!(writer.delete(&outcome.incident_id).unwrap());
    assert!(!writer.delete(&outcome.incident_id).unwrap());
    engine.reload().unwrap();
    assert_eq!(engine.stats().incidents, 32);
    assert!(
        search(
            &engine,
            &SearchRequest::new("zeppelin quokka").with_mode(Mode::Lexical)
        )
        .hits
        .is_empty()
    );
    assert_eq!(steps_of(&index), steps_of(shared_index()));
}

/// The real model under another name: what an index built with a different model looks like.
struct Renamed(Arc<dyn Embedder>);

impl Embedder for Renamed {
    fn model_id(&self) -> &str {
        "renamed-minilm"
    }
    fn dimension(&self) -> usize {
        self.0.dimension()
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, BoxError> {
        self.0.embed(texts)
    }
}

#[test]
fn a_model_change_rebuilds_into_a_new_generation() {
    let tmp = tempfile::tempdir().unwrap();
    let index = tmp.path().join("index");
    copy_dir(shared_index(), &index);
    let engine = Engine::open(&index).unwrap();
    let before = engine.generation();
    let mut writer = IndexWriter::open(&index, Arc::new(Renamed(embedder())), options()).unwrap();
    let summary = writer.sync_dir(&corpus_samples(), &NoProgress).unwrap();
    drop(writer);
    assert!(summary.rebuilt);
    assert_eq!(summary.added, 32);
    assert_eq!(summary.generation, before + 1);
    // The engine keeps serving the old state until reloaded, then refuses the old model.
    assert!(
        !search(&engine, &SearchRequest::new("disk full"))
            .hits
            .is_empty()
    );
    assert!(engine.reload_if_changed().unwrap());
    let err = engine
        .search(&SearchRequest::new("disk full"), &*embedder())
        .unwrap_err();
    assert!(
        matches!(err, Error::ModelMismatch { .. }) && err.is_user_error(),
        "{err}"
    );
    assert!(
        engine
            .search(&SearchRequest::new("disk full"), &Renamed(embedder()))
            .is_ok()
    );
    // Lexical search needs no model.
    assert!(
        engine
            .search(
                &SearchRequest::new("disk full").with_mode(Mode::Lexical),
                &*embedder()
            )
            .is_ok()
    );
    assert_eq!(steps_of(&index), steps_of(shared_index()));
}

#[test]
fn an_unpublished_generation_is_ignored_and_redone() {
    // What a crash right before the manifest rename leaves: a complete new data directory that
    // no manifest names.
    let tmp = tempfile::tempdir().unwrap();
    let (index, corpus) = (tmp.path().join("index"), tmp.path().join("corpus"));
    copy_dir(&corpus_samples(), &corpus);
    copy_dir(shared_index(), &index);
    let old_manifest = fs::read(index.join("manifest.json")).unwrap();
    let old_steps = steps_of(&index);
    fs::remove_file(corpus.join("cron-job-ran-twice.md")).unwrap();
    fs::write(
        corpus.join("new.md"),
        "# New one\n\n## Root cause\n\nA brand new failure mode of the frobnicator.\n",
    )
    .unwrap();
    sync(&index, &corpus, pruning());
    let new_steps = steps_of(&index);
    assert_ne!(old_steps, new_steps);
    fs::write(index.join("manifest.json"), &old_manifest).unwrap();
    assert_eq!(steps_of(&index), old_steps, "the old state is served");
    let summary = sync(&index, &corpus, pruning());
    assert_eq!((summary.added, summary.removed), (1, 1));
    assert_eq!(steps_of(&index), new_steps, "the next run converges");
}

#[test]
fn the_ann_graph_agrees_with_exact_search_on_a_small_index() {
    let tmp = tempfile::tempdir().unwrap();
    let index = tmp.path().join("index");
    sync(&index, &corpus_samples(), options().with_ann_min_vectors(0));
    let engine = Engine::open(&index).unwrap();
    let model = embedder();
    let mut overlap = 0;
    let queries = [
        "disk filled up with logs",
        "certificate expired",
        "database failover",
        "retry storm",
        "DNS",
    ];
    for q in queries {
        let v = model.embed(&[q]).unwrap().remove(0);
        let ann = engine.vector_probe(&v, 10, false).unwrap();
        let exact = engine.vector_probe(&v, 10, true).unwrap();
        overlap += ann.iter().filter(|id| exact.contains(id)).count();
        // Hybrid search over the graph works with filters too.
        let filters = Filters {
            kinds: vec![StepKind::RootCause],
            ..Filters::default()
        };
        let r = search(
            &engine,
            &SearchRequest::new(q)
                .with_mode(Mode::Vector)
                .with_filters(filters),
        );
        assert!(!r.hits.is_empty(), "{q}");
        assert!(r.hits.iter().all(|h| h.kind == StepKind::RootCause));
    }
    assert!(
        overlap as f64 / (10.0 * queries.len() as f64) >= 0.98,
        "recall {overlap}/50"
    );
}

/// The graph's top 10 for `v` overlaps an exact scan's by at least 9.
fn graph_agrees_with_exact(engine: &Engine, v: &[f32]) {
    let ann = engine.vector_probe(v, 10, false).unwrap();
    let exact = engine.vector_probe(v, 10, true).unwrap();
    assert_eq!(ann.len(), 10);
    let overlap = ann.iter().filter(|id| exact.contains(id)).count();
    assert!(overlap >= 9, "{overlap}/10: {ann:?} vs {exact:?}");
}

/// Vector search, 50 hits, no per-incident limit.
fn vector_search(engine: &Engine, query: &str) -> precedent_index::SearchResponse {
    search(
        engine,
        &SearchRequest::new(query)
            .with_mode(Mode::Vector)
            .with_per_incident(0)
            .with_k(50),
    )
}

/// Vector segments: each publish adds one, holding only the changed steps' vectors (and the
/// small segments it merges); older copies of a key are dead and never returned, and a
/// search over several segments with graphs finds what an exact scan finds.
#[test]
fn publishes_add_small_vector_segments_whose_dead_copies_never_surface() {
    let tmp = tempfile::tempdir().unwrap();
    let (index, corpus) = (tmp.path().join("index"), tmp.path().join("corpus"));
    copy_dir(&corpus_samples(), &corpus);
    let graphs = || options().with_ann_min_vectors(0);
    sync(&index, &corpus, graphs());
    let segments = |index: &Path| -> Vec<(String, u64)> {
        let manifest: serde_json::Value =
            serde_json::from_slice(&fs::read(index.join("manifest.json")).unwrap()).unwrap();
        manifest["vectors"]["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["name"].as_str().unwrap().to_owned(),
                    s["count"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let base = segments(&index);
    assert_eq!(base.len(), 1, "{base:?}");
    let base_count = base[0].1;
    let mut writer = IndexWriter::open(&index, embedder(), graphs()).unwrap();
    let doc = |n: usize, cause: &str| {
        format!(
            "# Zeppelin gateway outage {n}\n\n## Root cause\n\n{cause}\n\n## Resolution\n\n\
             We restarted the zeppelin gateway and traffic recovered.\n"
        )
    };
    let first = writer
        .upsert(
            "api/zeppelin-1.md",
            doc(1, "The zeppelin gateway leaked sockets until it froze.").as_bytes(),
        )
        .unwrap();
    let second = writer
        .upsert(
            "api/zeppelin-2.md",
            doc(2, "A zeppelin config push removed every route.").as_bytes(),
        )
        .unwrap();
    // A rewrite gives the same steps new text: the old vectors stay in their segment, dead.
    writer
        .upsert(
            "api/zeppelin-1.md",
            doc(1, "The zeppelin gateway ran out of file descriptors.").as_bytes(),
        )
        .unwrap();
    let after = segments(&index);
    assert!(after.len() >= 2, "{after:?}");
    assert_eq!(after[0], base[0], "the base segment is kept as it was");
    assert!(
        after[1..].iter().all(|(_, count)| *count < 20),
        "only changed steps are written: {after:?}"
    );
    drop(writer);
    let engine = Engine::open(&index).unwrap();
    let model = embedder();
    let v = model
        .embed(&["zeppelin gateway leaked sockets"])
        .unwrap()
        .remove(0);
    graph_agrees_with_exact(&engine, &v);
    let r = vector_search(&engine, "zeppelin gateway sockets file descriptors");
    let zeppelin: Vec<_> = r
        .hits
        .iter()
        .filter(|h| h.title.contains("Zeppelin"))
        .collect();
    assert!(!zeppelin.is_empty());
    // Each live step once: the dead copies of the rewritten steps are not hits.
    let mut ids: Vec<_> = r.hits.iter().map(|h| h.step_id.to_string()).collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "a step came back twice");
    assert!(
        !r.hits.iter().any(|h| h.text.contains("leaked sockets")),
        "a dead vector surfaced"
    );
    assert!(first.steps >= 2 && second.steps >= 2);
    assert_eq!(
        engine.stats().steps,
        base_count + (first.steps + second.steps) as u64
    );
    // Deleting removes the incident's vectors from every segment's results.
    let mut writer = IndexWriter::open(&index, embedder(), graphs()).unwrap();
    assert!(writer.delete(&first.incident_id).unwrap());
    drop(writer);
    engine.reload().unwrap();
    let r = vector_search(&engine, "zeppelin gateway file descriptors");
    assert!(!r.hits.is_empty());
    assert!(
        !r.hits
            .iter()
            .any(|h| h.title == "Zeppelin gateway outage 1")
    );
    assert_eq!(engine.stats().steps, base_count + second.steps as u64);
    // A corpus file rewritten: its old vectors stay in the base segment's graph, dead, and
    // the graph walk filters them out.
    let file = fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "md") && !p.ends_with("README.md"))
        .unwrap();
    let text = fs::read_to_string(&file).unwrap();
    fs::write(&file, text.replace("\n\n", "\n\nRewritten: ")).unwrap();
    sync(&index, &corpus, graphs());
    let after = segments(&index);
    assert_eq!(
        after[0], base[0],
        "the base segment is kept, with dead vectors"
    );
    engine.reload().unwrap();
    graph_agrees_with_exact(&engine, &v);
    let r = vector_search(
        &engine,
        text.lines().find(|l| l.len() > 40).unwrap_or("outage"),
    );
    assert!(!r.hits.is_empty());
    let live: std::collections::HashSet<String> = engine
        .dump_steps()
        .unwrap()
        .into_iter()
        .map(|(id, _, _)| id.to_string())
        .collect();
    assert!(
        r.hits.iter().all(|h| live.contains(&h.step_id.to_string())),
        "every hit is a live step"
    );
}

// Incremental indexing converges to what a fresh build gives, whatever the edits.

#[derive(Debug, Clone)]
enum Edit {
    Append(usize, u8),
    Rewrite(usize),
    Delete(usize),
    Rename(usize),
    Add(usize, u8),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(f, v)| Edit::Append(f, v)),
        any::<usize>().prop_map(Edit::Rewrite),
        any::<usize>().prop_map(Edit::Delete),
        any::<usize>().prop_map(Edit::Rename),
        (any::<usize>(), any::<u8>()).prop_map(|(f, v)| Edit::Add(f, v)),
    ]
}

fn write_ups(corpus: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != "README.md")
        .collect();
    files.sort();
    files
}

fn apply(corpus: &Path, edit: &Edit, serial: usize) {
    let files = write_ups(corpus);
    if files.is_empty() {
        return;
    }
    let pick = |i: usize| &files[i % files.len()];
    match edit {
        Edit::Append(f, v) => {
            let mut text = fs::read_to_string(pick(*f)).unwrap();
            text.push_str(&format!("\n\n## Follow-up note {v}\n\nThe on-call engineer added note {v} about the pager.\n"));
            fs::write(pick(*f), text).unwrap();
        }
        Edit::Rewrite(f) => {
            let text = fs::read_to_string(pick(*f)).unwrap();
            fs::write(pick(*f), text.replacen(" the ", " a ", 2)).unwrap();
        }
        Edit::Delete(f) => fs::remove_file(pick(*f)).unwrap(),
        Edit::Rename(f) => {
            let from = pick(*f);
            let to = corpus.join(format!(
                "renamed-{serial}-{}",
                from.file_name().unwrap().to_string_lossy()
            ));
            fs::rename(from, to).unwrap();
        }
        Edit::Add(f, v) => {
            let ext = pick(*f).extension().unwrap().to_string_lossy().into_owned();
            let mut text = fs::read_to_string(pick(*f)).unwrap();
            text.push_str(&format!(
                "\n\nAdded copy {v}: the same incident seen from another team.\n"
            ));
            fs::write(corpus.join(format!("added-{serial}.{ext}")), text).unwrap();
        }
    }
}

/// What two indexes must agree on: their steps, and what searches return.
type Observed = (Vec<(String, String, String)>, Vec<Vec<String>>);

fn observable(index: &Path) -> Observed {
    let engine = Engine::open(index).unwrap();
    let mut results = Vec::new();
    for q in [
        "disk full",
        "certificate expired",
        "on-call engineer note pager",
        "database",
    ] {
        // All lexical matches, as a set (BM25 statistics count deleted documents until segments
        // merge, so scores, not matches, may differ from a fresh build).
        let mut lexical: Vec<String> = search(
            &engine,
            &SearchRequest::new(q)
                .with_per_incident(0)
                .with_mode(Mode::Lexical)
                .with_k(1000),
        )
        .hits
        .into_iter()
        .map(|h| h.step_id.to_string())
        .collect();
        lexical.sort();
        results.push(lexical);
        // Exact vector search: identical order.
        let vector = search(
            &engine,
            &SearchRequest::new(q)
                .with_per_incident(0)
                .with_mode(Mode::Vector)
                .with_k(10),
        );
        results.push(
            vector
                .hits
                .into_iter()
                .map(|h| h.step_id.to_string())
                .collect(),
        );
    }
    (steps_of(index), results)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn incremental_updates_equal_a_fresh_build(rounds in proptest::collection::vec(proptest::collection::vec(edit(), 1..4), 1..4)) {
        let tmp = tempfile::tempdir().unwrap();
        let (index, corpus, fresh) = (tmp.path().join("index"), tmp.path().join("corpus"), tmp.path().join("fresh"));
        copy_dir(&corpus_samples(), &corpus);
        copy_dir(shared_index(), &index);
        let mut serial = 0;
        for round in &rounds {
            for edit in round {
                serial += 1;
                apply(&corpus, edit, serial);
            }
            let summary = sync(&index, &corpus, pruning());
            // Only the corpus README is left out, as repository furniture.
            prop_assert!(summary.skipped.iter().all(|(path, _)| path == "README.md"), "{:?}", summary.skipped);
        }
        sync(&fresh, &corpus, options());
        let (steps_a, results_a) = observable(&index);
        let (steps_b, results_b) = observable(&fresh);
        prop_assert_eq!(steps_a, steps_b);
        prop_assert_eq!(results_a, results_b);
        save_cache();
    }
}

#[test]
fn bad_files_are_skipped_with_reasons() {
    let tmp = tempfile::tempdir().unwrap();
    let (index, corpus) = (tmp.path().join("index"), tmp.path().join("corpus"));
    fs::create_dir_all(corpus.join("sub")).unwrap();
    fs::write(
        corpus.join("good.md"),
        "# Good\n\n## Root cause\n\nThe disk filled up with debug logs.\n",
    )
    .unwrap();
    fs::write(corpus.join("sub/binary.md"), b"abc\x00def").unwrap();
    fs::write(corpus.join("README.md"), "# not a write-up\n").unwrap();
    fs::write(corpus.join("image.png"), b"\x89PNG").unwrap();
    let summary = sync(&index, &corpus, pruning());
    assert_eq!(summary.added, 1);
    // Everything not indexed is reported, furniture and other formats included.
    let paths: Vec<&str> = summary.skipped.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        ["README.md", "image.png", "sub/binary.md"],
        "{:?}",
        summary.skipped
    );
    assert!(
        summary.skipped[2].1.contains("binary"),
        "{}",
        summary.skipped[2].1
    );
    // A write-up that turns bad is removed; the reason is reported each run.
    fs::write(corpus.join("good.md"), b"\x00").unwrap();
    let summary = sync(&index, &corpus, pruning());
    assert_eq!((summary.removed, summary.skipped.len()), (1, 4));
    assert_eq!(Engine::open(&index).unwrap().stats().steps, 0);
    let _ = WriterOptions::default();
}

#[test]
fn hits_carry_outcome_date_services_and_heading_path() {
    let engine = Engine::open(shared_index()).unwrap();
    let r = search(
        &engine,
        &SearchRequest::new("restarted the ingress controller pods").with_k(20),
    );
    assert!(!r.hits.is_empty());
    let restart = r
        .hits
        .iter()
        .find(|h| h.citation.path.starts_with("2023-11-02-storefront-502s"))
        .expect("the pool incident's restart is found");
    assert!(restart.date.is_some(), "{restart:?}");
    assert!(
        restart.services.iter().any(|s| s == "storefront"),
        "{restart:?}"
    );
    assert!(!restart.heading_path.is_empty(), "{restart:?}");
    assert!(
        r.hits
            .iter()
            .any(|h| h.outcome == Some(precedent_core::Outcome::DidNotHelp)),
        "some restart did not help: {:?}",
        r.hits
            .iter()
            .map(|h| (&h.text, h.outcome))
            .collect::<Vec<_>>()
    );
    let similar = engine
        .similar(
            &SimilarRequest::new(SimilarSource::Text(
                "storefront 502 Bad Gateway from the ingress".into(),
            )),
            &*embedder(),
        )
        .unwrap();
    assert!(!similar.incidents.is_empty());
    assert!(
        similar
            .incidents
            .iter()
            .any(|i| i.card.root_cause.is_some() && !i.card.restored_by.is_empty()),
        "similar incidents come with their cards"
    );
}

#[test]
fn avenues_group_by_outcome_merge_across_incidents_and_diversify() {
    use precedent_index::{AvenueGroup, AvenuesRequest};
    let engine = Engine::open(shared_index()).unwrap();
    let model = embedder();
    let request = AvenuesRequest {
        k: 12,
        ..AvenuesRequest::new("storefront returns 502 Bad Gateway from the ingress")
    };
    let r = precedent_index::avenues(&engine, &request, &*model).unwrap();
    assert!(!r.avenues.is_empty());
    assert!(r.avenues.len() <= 12);
    // Grouped in display order.
    assert!(r.avenues.windows(2).all(|w| w[0].group <= w[1].group));
    let groups: std::collections::BTreeSet<_> = r.avenues.iter().map(|a| a.group).collect();
    for g in [
        AvenueGroup::RestoredService,
        AvenueGroup::DidNotHelp,
        AvenueGroup::RuledOut,
    ] {
        assert!(groups.contains(&g), "{g} missing: {:#?}", r.avenues);
    }
    // Restarting the ingress controller is one avenue, merged across incidents, with both
    // results counted.
    let restart = r
        .avenues
        .iter()
        .find(|a| a.incidents >= 2 && a.text.to_lowercase().contains("restart"))
        .unwrap_or_else(|| panic!("no merged restart avenue: {:#?}", r.avenues));
    assert!(
        restart.counts.helped >= 1 && restart.counts.did_not_help >= 1,
        "{restart:#?}"
    );
    let mut paths: Vec<_> = restart.evidence.iter().map(|e| &e.incident_id).collect();
    paths.dedup();
    assert_eq!(paths.len(), restart.evidence.len(), "one line per incident");
    // No incident gives more than a third of the list while others exist.
    let mut per_incident = std::collections::HashMap::new();
    for a in &r.avenues {
        *per_incident.entry(&a.evidence[0].incident_id).or_insert(0) += 1;
    }
    assert!(per_incident.len() >= 3, "{per_incident:?}");
    let cap = r.avenues.len().div_ceil(3);
    assert!(
        per_incident.values().all(|&n| n <= cap),
        "{per_incident:?} (cap {cap})"
    );
    assert!(
        r.distinct_incidents >= 3 && r.distinct_trigger_classes >= 2,
        "{r:?}"
    );
    // Every avenue cites real lines.
    for a in &r.avenues {
        assert!(!a.evidence.is_empty());
        assert!(a.evidence.iter().all(|e| e.citation.line_start >= 1));
    }

    // One group only.
    let only = precedent_index::avenues(
        &engine,
        &AvenuesRequest {
            outcome: Some(AvenueGroup::DidNotHelp),
            ..request.clone()
        },
        &*model,
    )
    .unwrap();
    assert!(!only.avenues.is_empty());
    assert!(
        only.avenues
            .iter()
            .all(|a| a.group == AvenueGroup::DidNotHelp)
    );

    // Filters restrict the incidents avenues come from.
    let since = NaiveDate::from_ymd_opt(2023, 9, 1).unwrap();
    let filtered = precedent_index::avenues(
        &engine,
        &AvenuesRequest {
            filters: Filters {
                since: Some(since),
                ..Filters::default()
            },
            ..request.clone()
        },
        &*model,
    )
    .unwrap();
    assert!(!filtered.avenues.is_empty());
    assert!(
        filtered
            .avenues
            .iter()
            .flat_map(|a| &a.evidence)
            .all(|e| e.date.is_some_and(|d| d.start >= since)),
        "{filtered:#?}"
    );
    let err = precedent_index::avenues(&engine, &AvenuesRequest::new(" "), &*model).unwrap_err();
    assert!(err.is_user_error());
}

#[test]
fn compare_lists_what_notes_lack_and_flags_ruled_out_hypotheses() {
    use precedent_index::{AvenueGroup, CompareRequest};
    let engine = Engine::open(shared_index()).unwrap();
    let notes = "Storefront is returning 502 Bad Gateway from the ingress since 18:40.\n\
                 - we think it is a DNS problem, checking the resolvers\n\
                 - restarted the ingress controller pods\n";
    let r = precedent_index::compare(&engine, &CompareRequest::new(notes), &*embedder()).unwrap();
    assert!(!r.incidents.is_empty());
    assert!(
        r.ruled_out_before
            .iter()
            .any(|m| m.note.contains("DNS") && m.past.text.contains("DNS")),
        "the DNS hypothesis was ruled out before: {:#?}",
        r.ruled_out_before
    );
    assert!(
        r.ruled_out_before.iter().all(|m| m.note_line == 2),
        "{:#?}",
        r.ruled_out_before
    );
    assert!(!r.not_in_notes.is_empty());
    assert!(
        r.not_in_notes
            .iter()
            .any(|a| a.group == AvenueGroup::RestoredService),
        "{:#?}",
        r.not_in_notes
    );
    // What the notes already say is not listed as missing.
    assert!(
        !r.not_in_notes.iter().any(|a| a
            .text
            .to_lowercase()
            .contains("restarted the ingress controller pods")),
        "{:#?}",
        r.not_in_notes
    );
    let err =
        precedent_index::compare(&engine, &CompareRequest::new("ok"), &*embedder()).unwrap_err();
    assert!(err.is_user_error(), "{err}");
}

#[test]
fn search_keeps_at_most_per_incident_steps_and_groups_incidents() {
    let engine = Engine::open(shared_index()).unwrap();
    let count_max = |r: &precedent_index::SearchResponse| {
        let mut per: std::collections::HashMap<&str, usize> = Default::default();
        for h in &r.hits {
            *per.entry(h.incident_id.as_str()).or_default() += 1;
        }
        per.values().copied().max().unwrap_or(0)
    };
    for mode in MODES {
        let unlimited = search(
            &engine,
            &SearchRequest::new("disk full no space left")
                .with_mode(mode)
                .with_k(20)
                .with_per_incident(0),
        );
        assert!(
            count_max(&unlimited) > 2,
            "{mode:?}: the query has dense incidents"
        );
        let limited = search(
            &engine,
            &SearchRequest::new("disk full no space left")
                .with_mode(mode)
                .with_k(20),
        );
        assert!(!limited.hits.is_empty());
        assert!(count_max(&limited) <= 2, "{mode:?}");
        assert!(limited.groups.is_none());
        let grouped = search(
            &engine,
            &SearchRequest::new("disk full no space left")
                .with_mode(mode)
                .with_k(3)
                .with_group(true)
                .with_per_incident(3),
        );
        let groups = grouped.groups.as_ref().expect("groups");
        assert_eq!(groups.len(), 3, "{mode:?}");
        let ids: std::collections::HashSet<_> = groups.iter().map(|g| &g.incident_id).collect();
        assert_eq!(ids.len(), 3, "distinct incidents");
        assert!(
            groups
                .iter()
                .all(|g| !g.hits.is_empty() && g.hits.len() <= 3)
        );
        assert!(
            groups
                .iter()
                .all(|g| g.hits.iter().all(|h| h.incident_id == g.incident_id))
        );
        assert!(groups.windows(2).all(|w| w[0].score >= w[1].score));
        let flat: usize = groups.iter().map(|g| g.hits.len()).sum();
        assert_eq!(flat, grouped.hits.len());
    }
}

#[test]
fn ops_wording_meets_its_variants() {
    let engine = Engine::open(shared_index()).unwrap();
    // `502s` finds steps that say `502` (and not only the one that says `502s`).
    let r = search(
        &engine,
        &SearchRequest::new("502s")
            .with_mode(Mode::Lexical)
            .with_k(20),
    );
    assert!(
        r.hits
            .iter()
            .any(|h| h.text.contains("502") && !h.text.contains("502s")),
        "{:?}",
        r.hits.iter().map(|h| &h.citation.path).collect::<Vec<_>>()
    );
    // `5xx` finds the status codes of its class.
    let r = search(
        &engine,
        &SearchRequest::new("5xx")
            .with_mode(Mode::Lexical)
            .with_k(20),
    );
    assert!(r.hits.iter().any(|h| h.text.contains("503")));
    // `crash-loop` finds `CrashLoopBackOff` in a write-up that never says "crash loop".
    let r = search(
        &engine,
        &SearchRequest::new("crash-loop")
            .with_mode(Mode::Lexical)
            .with_k(20)
            .with_per_incident(0),
    );
    assert!(
        r.hits.iter().any(
            |h| h.citation.path == "k8s-oomkilled-after-limits-change.md"
                && h.text.contains("CrashLoopBackOff")
        ),
        "{:?}",
        r.hits.iter().map(|h| &h.citation.path).collect::<Vec<_>>()
    );
    // A built-in synonym: `out of memory` meets `OOMKilled`.
    let r = search(
        &engine,
        &SearchRequest::new("out of memory").with_mode(Mode::Lexical),
    );
    assert!(r.hits.iter().any(|h| h.text.contains("OOMKilled")));
}

#[test]
fn a_user_synonym_file_extends_the_table() {
    let engine = Engine::open(shared_index()).unwrap();
    let request = SearchRequest::new("frobnicator").with_mode(Mode::Lexical);
    assert!(search(&engine, &request).hits.is_empty());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("synonyms.toml");
    fs::write(&file, "groups = [[\"frobnicator\", \"crontab\"]]\n").unwrap();
    let engine = Engine::open(shared_index()).unwrap();
    engine.use_synonyms(&file).unwrap();
    let r = search(&engine, &request);
    assert!(!r.hits.is_empty());
    assert!(
        r.hits
            .iter()
            .all(|h| h.text.to_lowercase().contains("crontab")
                || h.title.to_lowercase().contains("crontab"))
    );
    fs::write(&file, "groups = \"nope\"").unwrap();
    assert!(engine.use_synonyms(&file).unwrap_err().is_user_error());
}

#[test]
fn quoted_phrases_are_required() {
    let engine = Engine::open(shared_index()).unwrap();
    for mode in [Mode::Lexical, Mode::Hybrid] {
        let loose = search(
            &engine,
            &SearchRequest::new("no space left disk")
                .with_mode(mode)
                .with_k(20),
        );
        assert!(
            loose
                .hits
                .iter()
                .any(|h| !h.text.to_lowercase().contains("no space left")),
            "{mode:?}: unquoted words match more than the phrase"
        );
        let strict = search(
            &engine,
            &SearchRequest::new("\"no space left\" disk")
                .with_mode(mode)
                .with_k(20),
        );
        assert!(!strict.hits.is_empty(), "{mode:?}");
        assert!(
            strict
                .hits
                .iter()
                .all(|h| h.text.to_lowercase().contains("no space left")),
            "{mode:?}: {:?}",
            strict.hits.iter().map(|h| &h.text).collect::<Vec<_>>()
        );
    }
}

#[test]
fn match_quality_says_when_there_is_no_close_precedent() {
    use precedent_index::MatchQuality;
    let engine = Engine::open(shared_index()).unwrap();
    for query in [
        "COBOL batch job abend on the mainframe",
        "payroll tax withholding for new hires",
        "recipe for sourdough bread with rye flour",
    ] {
        let r = search(&engine, &SearchRequest::new(query));
        assert_eq!(r.match_quality, MatchQuality::None, "{query}");
        assert!(!r.hits.is_empty(), "hits are still returned");
    }
    // A paraphrase of a sample's root cause.
    let r = search(
        &engine,
        &SearchRequest::new("the container memory limit was set below what the JVM heap needed"),
    );
    assert_eq!(r.match_quality, MatchQuality::Strong);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["match_quality"], "strong");
}

#[test]
fn snippets_mark_content_words_only() {
    let engine = Engine::open(shared_index()).unwrap();
    let r = search(
        &engine,
        &SearchRequest::new("disk filled up after one of the log rotations from the host")
            .with_mode(Mode::Lexical),
    );
    assert!(!r.hits.is_empty());
    assert!(r.hits.iter().any(|h| h.snippet.contains("**")));
    for h in &r.hits {
        for stop in [
            "**after**",
            "**from**",
            "**one**",
            "**the**",
            "**of**",
            "**up**",
        ] {
            assert!(!h.snippet.to_lowercase().contains(stop), "{}", h.snippet);
        }
    }
}

#[test]
fn the_incident_leg_ranks_whole_write_ups() {
    let engine = Engine::open(shared_index()).unwrap();
    // Three words from three different steps of one write-up: no step has them all, the
    // write-up as a whole does.
    let query = "logrotate promotion truncate";
    for mode in [Mode::Lexical, Mode::Hybrid] {
        let r = search(&engine, &SearchRequest::new(query).with_mode(mode));
        assert!(!r.hits.is_empty(), "{mode:?}");
        let top = &r.hits[0];
        assert_eq!(
            top.citation.path, "2022-03-14-disk-full-debug-logs.md",
            "{mode:?}"
        );
        assert_eq!(
            top.score.incident_rank,
            Some(1),
            "{mode:?}: {:?}",
            top.score
        );
        assert!(top.score.incident_score.is_some_and(|s| s > 0.0));
        // The leg adds its share to the fused score.
        let lone = top
            .score
            .lexical_rank
            .map_or(0.0, |r| 1.0 / (60.0 + r as f32))
            + top
                .score
                .vector_rank
                .map_or(0.0, |r| 1.0 / (60.0 + r as f32));
        assert!(top.score.fused > lone + 1.0 / 62.0, "{:?}", top.score);
    }
    // Turned off, no hit carries an incident rank; vector mode never runs it.
    let mut off = SearchRequest::new(query).with_mode(Mode::Lexical);
    off.rrf.incident_weight = 0.0;
    let r = search(&engine, &off);
    assert!(!r.hits.is_empty());
    assert!(r.hits.iter().all(|h| h.score.incident_rank.is_none()));
    let r = search(&engine, &SearchRequest::new(query).with_mode(Mode::Vector));
    assert!(!r.hits.is_empty());
    assert!(r.hits.iter().all(|h| h.score.incident_rank.is_none()));
}

/// Who owns an incident: files of the corpus directory are synced by `sync_dir`, documents
/// written through `upsert` are not, and neither side removes or replaces the other's.
#[test]
fn api_documents_and_corpus_files_are_kept_apart() {
    let tmp = tempfile::tempdir().unwrap();
    let (corpus, index) = (tmp.path().join("corpus"), tmp.path().join("index"));
    for (sub, name) in [
        ("ops", "2022-03-14-disk-full-debug-logs.md"),
        ("ops", "2021-09-30-tls-cert-expiry.md"),
        ("db", "mysql-failover-split-brain.md"),
    ] {
        fs::create_dir_all(corpus.join(sub)).unwrap();
        fs::copy(corpus_samples().join(name), corpus.join(sub).join(name)).unwrap();
    }
    assert_eq!(sync(&index, &corpus, options()).added, 3);

    let doc = "# Zeppelin queue frozen\n\n## Summary\n\nThe zeppelin-dispatch queue froze after a quokka migration.\n";
    let mut writer = IndexWriter::open(&index, embedder(), options()).unwrap();
    let api = writer.upsert("api/zeppelin.md", doc.as_bytes()).unwrap();
    // The API cannot replace or delete what a corpus file owns.
    let taken = writer
        .upsert("ops/2021-09-30-tls-cert-expiry.md", doc.as_bytes())
        .unwrap_err();
    assert!(
        matches!(taken, Error::OwnedByCorpus { .. }) && taken.is_user_error(),
        "{taken}"
    );
    let engine = Engine::open(&index).unwrap();
    let tls = engine
        .resolve_incident("ops/2021-09-30-tls-cert-expiry.md")
        .unwrap();
    let refused = writer.delete(&tls).unwrap_err();
    assert!(matches!(refused, Error::OwnedByCorpus { .. }), "{refused}");
    drop(writer);
    let zeppelin = |engine: &Engine| {
        engine.reload().unwrap();
        search(
            engine,
            &SearchRequest::new("zeppelin quokka").with_mode(Mode::Lexical),
        )
        .hits
        .iter()
        .filter(|h| h.incident_id == api.incident_id)
        .count()
    };

    // A sync keeps the API document, and a file at its path does not replace it.
    fs::create_dir_all(corpus.join("api")).unwrap();
    fs::write(
        corpus.join("api/zeppelin.md"),
        "# Other\n\n## Summary\n\nA file.\n",
    )
    .unwrap();
    let summary = sync(&index, &corpus, options());
    assert_eq!(
        (summary.removed, summary.added, summary.api_documents),
        (0, 0, 1),
        "{summary:?}"
    );
    assert!(
        summary
            .skipped
            .iter()
            .any(|(p, why)| p == "api/zeppelin.md" && why.contains("written through the API")),
        "{:?}",
        summary.skipped
    );
    assert!(zeppelin(&engine) > 0);
    fs::remove_file(corpus.join("api/zeppelin.md")).unwrap();

    // Another directory (here a subfolder) is refused unless pruning is asked for.
    let mut writer = IndexWriter::open(&index, embedder(), options()).unwrap();
    let other = writer
        .sync_dir(&corpus.join("ops"), &NoProgress)
        .unwrap_err();
    assert!(
        matches!(other, Error::OtherCorpus { files: 3, .. }),
        "{other}"
    );
    assert!(other.to_string().contains("--prune"), "{other}");
    drop(writer);
    engine.reload().unwrap();
    assert_eq!(
        engine.stats().incidents,
        4,
        "nothing removed by the refused sync"
    );
    let mut prune = options();
    prune.prune = true;
    let pruned = sync(&index, &corpus.join("ops"), prune);
    // Relative paths change with the root: ops/x.md becomes x.md.
    assert_eq!(
        (pruned.added, pruned.removed, pruned.api_documents),
        (2, 3, 1),
        "{pruned:?}"
    );
    assert!(zeppelin(&engine) > 0);

    // A rebuild (here a model change) carries the API document over, re-embedded.
    let mut writer = IndexWriter::open(&index, Arc::new(Renamed(embedder())), options()).unwrap();
    let rebuilt = writer.sync_dir(&corpus.join("ops"), &NoProgress).unwrap();
    drop(writer);
    assert!(rebuilt.rebuilt, "{rebuilt:?}");
    assert_eq!(rebuilt.api_documents, 1, "{rebuilt:?}");
    assert_eq!(zeppelin(&engine), 1);
    let r = search(
        &engine,
        &SearchRequest::new("zeppelin quokka").with_mode(Mode::Lexical),
    );
    assert_eq!(r.hits[0].citation.path, "api/zeppelin.md");
    assert_eq!(engine.stats().incidents, 3);
}

/// A single write to an index built with another model would publish that write alone, as a
/// rebuilt index of one document: it is refused, and nothing is lost.
#[test]
fn single_writes_wait_for_the_rebuild_a_model_change_needs() {
    let tmp = tempfile::tempdir().unwrap();
    let index = tmp.path().join("index");
    copy_dir(shared_index(), &index);
    let before = steps_of(&index);
    let mut writer = IndexWriter::open(&index, Arc::new(Renamed(embedder())), options()).unwrap();
    let doc = "# Zeppelin queue frozen\n\n## Summary\n\nThe zeppelin queue froze.\n";
    let refused = writer
        .upsert("new/zeppelin.md", doc.as_bytes())
        .unwrap_err();
    assert!(
        matches!(refused, Error::RebuildNeeded { .. }) && refused.is_user_error(),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("embedding model changed"),
        "{refused}"
    );
    let engine = Engine::open(&index).unwrap();
    let id = engine
        .resolve_incident("2021-09-30-tls-cert-expiry.md")
        .unwrap();
    assert!(matches!(
        writer.delete(&id).unwrap_err(),
        Error::RebuildNeeded { .. }
    ));
    drop(writer);
    assert_eq!(steps_of(&index), before, "nothing was published");
}
