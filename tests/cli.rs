//! End-to-end tests of the `precedent` binary on `corpus-samples/` with the real model.

mod util;

use util::{Dir, TestCommand, samples};

fn index(dir: &Dir, corpus: &std::path::Path) -> String {
    let idx = dir.join("idx");
    TestCommand::new(&["index"])
        .arg(corpus)
        .arg("--index")
        .arg(&idx)
        .stdout()
}

#[test]
fn parse_shows_steps_and_json() {
    let file = samples().join("2021-09-30-tls-cert-expiry.md");
    let human = TestCommand::new(&["parse"]).arg(&file).stdout();
    assert!(human.contains("title:"), "{human}");
    assert!(
        human.contains("timeline_event") || human.contains("detection"),
        "{human}"
    );
    let json = TestCommand::new(&["parse", "--json"]).arg(&file).json();
    let steps = json["incident"]["steps"].as_array().unwrap();
    assert!(steps.len() > 5);
    assert!(steps.iter().all(|s| s["line_start"].as_u64().unwrap() >= 1));
}

#[test]
fn parse_reports_skipped_files() {
    let dir = Dir::new();
    let bin = dir.create("x.md", b"\x00\x01binary");
    let out = TestCommand::new(&["parse"]).arg(&bin).output();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("binary"));
    let err = TestCommand::new(&["parse"])
        .arg(dir.join("missing.md"))
        .fails();
    assert!(err.contains("not a readable file"), "{err}");
}

#[test]
fn index_search_show_similar_end_to_end() {
    let dir = Dir::new();
    let corpus = dir.copy_samples("corpus");
    let idx = dir.join("idx");
    let summary = index(&dir, &corpus);
    assert!(summary.contains("28 added"), "{summary}");

    // A second run changes nothing.
    let again = TestCommand::new(&["index", "--json"])
        .arg(&corpus)
        .arg("--index")
        .arg(&idx)
        .json();
    assert_eq!(again["added"], 0);
    assert_eq!(again["updated"], 0);
    assert_eq!(again["unchanged"], 28);

    let hits = TestCommand::new(&[
        "search",
        "--json",
        "certificate expired and clients failed TLS handshakes",
    ])
    .arg("--index")
    .arg(&idx)
    .json();
    let hits = hits["hits"].as_array().unwrap();
    assert!(!hits.is_empty());
    let top_paths: Vec<&str> = hits
        .iter()
        .take(5)
        .map(|h| h["citation"]["path"].as_str().unwrap())
        .collect();
    assert!(
        top_paths.iter().any(|p| p.contains("cert")),
        "{top_paths:?}"
    );
    for key in [
        "step_id",
        "incident_id",
        "title",
        "kind",
        "text",
        "snippet",
        "score",
        "citation",
    ] {
        assert!(hits[0].get(key).is_some(), "hit lacks {key}");
    }

    let human = TestCommand::new(&["search", "no space left on device", "--kind", "root_cause"])
        .arg("--index")
        .arg(&idx)
        .stdout();
    assert!(human.contains("[root_cause]"), "{human}");
    assert!(!human.contains("[action]"), "{human}");

    let id = hits[0]["incident_id"].as_str().unwrap().to_owned();
    let shown = TestCommand::new(&["show", "--json", &id])
        .arg("--index")
        .arg(&idx)
        .json();
    assert_eq!(shown["id"], id.as_str());

    let similar = TestCommand::new(&["similar", "--json", &id])
        .arg("--index")
        .arg(&idx)
        .json();
    let incidents = similar["incidents"].as_array().unwrap();
    assert!(!incidents.is_empty());
    assert!(
        incidents.iter().all(|i| i["incident_id"] != id.as_str()),
        "similar returned the incident itself"
    );

    let by_text = TestCommand::new(&[
        "similar",
        "--text",
        "pods restarting with OOMKilled after a deploy",
    ])
    .arg("--index")
    .arg(&idx)
    .stdout();
    assert!(by_text.to_lowercase().contains("oom"), "{by_text}");

    let missing = TestCommand::new(&["show", "nothing-here-00000000"])
        .arg("--index")
        .arg(&idx)
        .output();
    assert_eq!(missing.status.code(), Some(1));
}

#[test]
fn search_without_an_index_explains() {
    let dir = Dir::new();
    let err = TestCommand::new(&["search", "disk"])
        .arg("--index")
        .arg(dir.join("none"))
        .fails();
    assert!(err.contains("precedent index"), "{err}");
}

#[test]
fn embed_reads_json_lines() {
    let out = TestCommand::new(&["embed"])
        .stdin("\"The weather is lovely today.\"\n\"It's so sunny outside!\"\n")
        .stdout();
    let vectors: Vec<Vec<f32>> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(vectors.len(), 2);
    assert_eq!(vectors[0].len(), 384);
    let cos: f32 = vectors[0].iter().zip(&vectors[1]).map(|(a, b)| a * b).sum();
    assert!((cos - 0.6660).abs() < 1e-3, "{cos}");
    let err = TestCommand::new(&["embed"]).stdin("not json\n").fails();
    assert!(err.contains("line 1"), "{err}");
}

#[test]
fn eval_scores_a_judged_set() {
    let dir = Dir::new();
    let corpus = dir.copy_samples("corpus");
    let idx = dir.join("idx");
    index(&dir, &corpus);
    let queries = dir.create(
        "q.jsonl",
        concat!(
            r#"{"id": "a", "query": "TLS certificate expired", "kind": "keyword", "relevant": {"2021-09-30-tls-cert-expiry.md": 2}}"#,
            "\n",
            r#"{"id": "b", "query": "inodes ran out while the disk looked half empty", "kind": "symptom", "relevant": {"20180412-inode-exhaustion.txt": 2}}"#,
            "\n"
        ),
    );
    let report = TestCommand::new(&["eval", "--json"])
        .arg(&queries)
        .arg("--index")
        .arg(&idx)
        .arg("--runs")
        .arg(dir.join("runs"))
        .json();
    for mode in ["lexical", "vector", "hybrid"] {
        let ndcg = report[mode]["overall"]["ndcg10"].as_f64().unwrap();
        assert!(ndcg > 0.5, "{mode}: {ndcg}");
    }
    assert!(dir.join("runs/run-hybrid.jsonl").exists());
}

#[test]
fn help_teaches() {
    let help = TestCommand::new(&["--help"]).stdout();
    for cmd in [
        "index", "search", "similar", "show", "parse", "embed", "eval",
    ] {
        assert!(help.contains(cmd), "{cmd} missing from --help");
    }
    let search = TestCommand::new(&["search", "--help"]).stdout();
    assert!(search.contains("--kind") && search.contains("--since") && search.contains("--mode"));
}
