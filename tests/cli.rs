//! End-to-end tests of the `precedent` binary on `corpus-samples/` with the real model.

use crate::conformance;
use crate::util::{Dir, Served, TestCommand, hit_paths, samples};

fn index(dir: &Dir, corpus: &std::path::Path) -> String {
    let idx = dir.join("idx");
    TestCommand::new(&["index"])
        .arg(corpus)
        .arg("--index")
        .arg(&idx)
        .stdout()
}

#[test]
fn an_embed_cache_spares_the_model_on_a_rebuild() {
    let dir = Dir::new();
    let corpus = dir.join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    for name in ["2021-09-30-tls-cert-expiry.md", "cron-job-ran-twice.md"] {
        std::fs::copy(samples().join(name), corpus.join(name)).unwrap();
    }
    let cache = dir.join("cache");
    let run = |index: &str| {
        TestCommand::new(&["index", "--json"])
            .arg(&corpus)
            .arg("--index")
            .arg(dir.join(index))
            .arg("--embed-cache")
            .arg(&cache)
            .json()
    };
    let first = run("a");
    let embedded = first["steps_embedded"].as_u64().unwrap();
    assert!(embedded > 10, "{first}");
    assert_eq!(
        first["embed_cache"]["vectors_computed"], embedded,
        "{first}"
    );
    assert_eq!(first["embed_cache"]["vectors_reused"], 0, "{first}");
    let files: Vec<_> = std::fs::read_dir(&cache).unwrap().collect();
    assert_eq!(files.len(), 1, "one file for the one model id");

    // A second index of the same write-ups asks the model nothing and answers the same.
    let second = run("b");
    assert_eq!(second["steps_embedded"], embedded, "{second}");
    assert_eq!(second["embed_cache"]["vectors_computed"], 0, "{second}");
    assert_eq!(
        second["embed_cache"]["vectors_reused"], embedded,
        "{second}"
    );
    let search = |index: &str| {
        let out = TestCommand::new(&["search", "--json", "--mode", "vector", "-k", "5"])
            .arg("--index")
            .arg(dir.join(index))
            .arg("certificate expired on the load balancer")
            .json();
        let hits: Vec<(String, String)> = out["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| (h["step_id"].to_string(), h["score"].to_string()))
            .collect();
        assert!(!hits.is_empty(), "{out}");
        hits
    };
    assert_eq!(search("a"), search("b"));

    // A damaged file is ignored with a warning, and written anew.
    let file = files[0].as_ref().unwrap().path();
    std::fs::write(&file, b"not a cache").unwrap();
    let (code, stdout, stderr) = TestCommand::new(&["index", "--json"])
        .arg(&corpus)
        .arg("--index")
        .arg(dir.join("c"))
        .arg("--embed-cache")
        .arg(&cache)
        .run();
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("embed cache"), "{stderr}");
    let third: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        third["embed_cache"]["vectors_computed"], embedded,
        "{third}"
    );
    assert!(std::fs::metadata(&file).unwrap().len() > 1000);
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
    assert!(
        summary.contains(&format!("{} added", sample_count())),
        "{summary}"
    );

    // A second run changes nothing.
    let again = TestCommand::new(&["index", "--json"])
        .arg(&corpus)
        .arg("--index")
        .arg(&idx)
        .json();
    assert_eq!(again["added"], 0);
    assert_eq!(again["updated"], 0);
    assert_eq!(again["unchanged"], sample_count());

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
    assert_eq!(missing.status.code(), Some(2));
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
fn embed_answers_each_batch_before_stdin_closes() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_precedent"))
        .args(["embed", "--batch", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // One text at a time over an open pipe: each answer arrives while stdin stays open (a
    // buffering binary would block here, and the test with it, instead of passing).
    for text in ["\"disk full on the workers\"", "\"pods OOMKilled\""] {
        writeln!(stdin, "{text}").unwrap();
        stdin.flush().unwrap();
        let line = lines.next().expect("an answer").unwrap();
        let vector: Vec<f32> = serde_json::from_str(&line).unwrap();
        assert_eq!(vector.len(), 384);
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
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

// ---- The CLI as people use it (issue 16) and terminal safety (issue 11, item 9). ----

/// One index of `corpus-samples/` (plus a write-up with terminal escapes in its text and file
/// name) shared by the tests below: indexing embeds every step, so it is done once.
struct Shared {
    dir: Dir,
    corpus: std::path::PathBuf,
    idx: std::path::PathBuf,
    files: u64,
}

/// Write-ups in `corpus-samples/` (its README is not one).
fn sample_count() -> usize {
    std::fs::read_dir(samples())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name() != "README.md")
        .count()
}

/// The write-up that tries to drive the terminal: ESC (colour, cursor), OSC (window title) and
/// BEL in its title, text and file name.
const HOSTILE_NAME: &str = "evil-\u{1b}[31mred\u{7}.md";
const HOSTILE: &str = "# Escape \u{1b}]0;pwned\u{7} title\n\n## Summary\n\nThe \u{1b}[2Jzebrafish \
    cache \u{9b}31m crashed and \u{1b}]8;;http://x\u{1b}\\link\u{1b}]8;;\u{1b}\\ rang \u{7} the bell.\n\n\
    ## Root cause\n\nA zebrafish flag flipped.\n";

fn shared() -> &'static Shared {
    static SHARED: std::sync::OnceLock<Shared> = std::sync::OnceLock::new();
    SHARED.get_or_init(|| {
        let dir = Dir::new();
        let corpus = dir.copy_samples("corpus");
        std::fs::write(corpus.join(HOSTILE_NAME), HOSTILE).unwrap();
        let idx = dir.join("idx");
        let summary = TestCommand::new(&["index", "--json"])
            .arg(&corpus)
            .arg("--index")
            .arg(&idx)
            .json();
        let files = summary["added"].as_u64().unwrap();
        assert_eq!(files as usize, sample_count() + 1, "{summary}");
        Shared {
            dir,
            corpus,
            idx,
            files,
        }
    })
}

/// `precedent ARGS... --index IDX`.
fn on_index(args: &[&str]) -> TestCommand {
    TestCommand::new(args).arg("--index").arg(&shared().idx)
}

fn tls_id() -> String {
    let shown = on_index(&["show", "--json", "2021-09-30-tls-cert-expiry.md"]).json();
    shown["id"].as_str().unwrap().to_owned()
}

#[test]
fn index_json_gives_seconds_and_records_the_corpus_root() {
    let s = shared();
    let again = TestCommand::new(&["index", "--json"])
        .arg(&s.corpus)
        .arg("--index")
        .arg(&s.idx)
        .json();
    assert!(again["elapsed"].is_f64(), "{again}");
    assert_eq!(again["unchanged"], s.files);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.idx.join("manifest.json")).unwrap()).unwrap();
    let root = std::path::PathBuf::from(manifest["corpus_root"].as_str().unwrap());
    assert_eq!(root, s.corpus.canonicalize().unwrap());
}

#[test]
fn a_closed_pipe_ends_quietly_with_status_0() {
    let s = shared();
    let id = tls_id();
    for (what, cmd, keep) in [
        (
            "search | head -1",
            on_index(&["search", "--mode", "lexical", "-k", "1000", "the"]),
            1,
        ),
        ("show | head", on_index(&["show", "--no-pager", &id]), 0),
        ("show --json | head", on_index(&["show", "--json", &id]), 0),
        (
            "parse | head",
            TestCommand::new(&["parse"]).arg(s.corpus.join("2021-09-30-tls-cert-expiry.md")),
            0,
        ),
        (
            "search --json | head -1",
            on_index(&["search", "--json", "--mode", "lexical", "-k", "1000", "the"]),
            1,
        ),
    ] {
        let (code, lines, stderr) = cmd.env("RUST_BACKTRACE", "1").into_closed_pipe(keep);
        assert_eq!(code, 0, "{what}: {stderr}");
        assert_eq!(lines.len(), keep, "{what}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("error"),
            "{what}: {stderr}"
        );
    }
}

#[test]
fn exit_status_is_0_found_1_nothing_2_error() {
    let (code, out, _) = on_index(&["search", "--mode", "lexical", "certificate"]).run();
    assert_eq!(code, 0, "{out}");
    let (code, out, err) = on_index(&["search", "--mode", "lexical", "qqqzzzxxyy"]).run();
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(err.contains("no matching steps"), "{err}");
    let (code, _, _) = on_index(&["search", "--json", "--mode", "lexical", "qqqzzzxxyy"]).run();
    assert_eq!(code, 1);
    let (code, _, err) = on_index(&["search", "disk", "--since", "soon"]).run();
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = on_index(&["show", "nothing-here-00000000"]).run();
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = TestCommand::new(&["search", "disk", "--index", "/nonexistent/idx"]).run();
    assert_eq!(code, 2, "{err}");
    let help = TestCommand::new(&["search", "--help"]).stdout();
    assert!(help.contains("Exit status: 0"), "{help}");
}

#[test]
fn query_words_need_no_quotes() {
    let joined = on_index(&[
        "search",
        "--json",
        "--mode",
        "lexical",
        "certificate",
        "expired",
    ])
    .json();
    let quoted = on_index(&[
        "search",
        "--json",
        "--mode",
        "lexical",
        "certificate expired",
    ])
    .json();
    assert!(!joined["hits"].as_array().unwrap().is_empty());
    assert_eq!(joined["hits"], quoted["hits"]);

    // `similar` takes words as text when they are not an id.
    let similar = on_index(&[
        "similar",
        "--json",
        "pods",
        "crashlooping",
        "OOMKilled",
        "after",
        "deploy",
    ])
    .json();
    let first = similar["incidents"][0]["path"].as_str().unwrap();
    assert!(first.contains("oom"), "{similar}");
}

#[test]
fn dates_take_the_forms_people_type() {
    for (flag, value) in [
        ("--since", "2021-09-01"),
        ("--since", "2021-09"),
        ("--since", "2021"),
        ("--until", "2021-09"),
        ("--until", "7d"),
        ("--since", "520w"),
    ] {
        let (code, out, err) = on_index(&[
            "search",
            "--json",
            "--mode",
            "lexical",
            "certificate",
            flag,
            value,
        ])
        .run();
        assert!(code == 0 || code == 1, "{flag} {value}: {err}");
        assert!(out.contains("\"hits\""), "{flag} {value}");
    }
    // A month as `until` runs to its last day: the 2021-09-30 incident is in.
    let hits = on_index(&[
        "search",
        "--json",
        "--mode",
        "lexical",
        "certificate",
        "--since",
        "2021-09",
        "--until",
        "2021-09",
    ])
    .json();
    let paths = hit_paths(&hits);
    assert!(
        !paths.is_empty() && paths.iter().all(|p| p.starts_with("2021-09-30")),
        "{paths:?}"
    );
    for bad in ["yesterday-ish", "2023-13", "soon"] {
        let (code, _, err) = on_index(&["search", "disk", "--since", bad]).run();
        assert_eq!(code, 2);
        for form in ["2023-06-01", "2023-06", "2023", "7d", "2w"] {
            assert!(err.contains(form), "{bad}: {err}");
        }
    }
}

#[test]
fn incidents_are_found_by_prefix_and_path() {
    let s = shared();
    let id = tls_id();
    assert!(id.starts_with("2021-09-30-tls-cert-expiry"), "{id}");
    let prefix = &id[..id.len() - 4];
    for reference in [
        id.as_str(),
        prefix,
        "2021-09-30-tls",
        "./2021-09-30-tls-cert-expiry.md",
        s.corpus
            .join("2021-09-30-tls-cert-expiry.md")
            .to_str()
            .unwrap(),
    ] {
        let shown = on_index(&["show", "--json", reference]).json();
        assert_eq!(shown["id"], id.as_str(), "{reference}");
    }
    let similar = on_index(&["similar", "--json", "2021-09-30-tls-cert-expiry.md"]).json();
    let incidents = similar["incidents"].as_array().unwrap();
    assert!(!incidents.is_empty() && incidents.iter().all(|i| i["incident_id"] != id.as_str()));

    // Ambiguous: the candidates are listed.
    let (code, _, err) = on_index(&["show", "20"]).run();
    assert_eq!(code, 2);
    assert!(err.contains("several incidents"), "{err}");
    assert!(err.contains("20120701-leap-second-cpu"), "{err}");
    // Unknown: the closest are listed.
    let (code, _, err) = on_index(&["show", "tls-cert-expiry-2021"]).run();
    assert_eq!(code, 2);
    assert!(err.contains(&id), "{err}");
}

#[test]
fn lexical_search_show_and_parse_need_no_model() {
    let s = shared();
    let empty = s.dir.join("no-model");
    std::fs::create_dir_all(&empty).unwrap();
    let out = on_index(&["search", "--mode", "lexical", "certificate", "expired"])
        .arg("--model-dir")
        .arg(&empty)
        .env("XDG_CACHE_HOME", &empty)
        .env("HOME", &empty)
        .stdout();
    assert!(out.contains("cert"), "{out}");
    let shown = on_index(&["show", "--no-pager", "2021-09-30-tls"])
        .env("PRECEDENT_MODEL_DIR", &empty)
        .env("HOME", &empty)
        .stdout();
    assert!(
        shown.contains("steps") || shown.contains("timeline"),
        "{shown}"
    );
    // Hybrid does need it, and says how to do without.
    let (code, _, err) = on_index(&["search", "certificate"])
        .arg("--model-dir")
        .arg(&empty)
        .run();
    assert_eq!(code, 2);
    assert!(err.contains("--mode lexical"), "{err}");
}

#[test]
fn plain_text_off_a_terminal_and_colour_on_one() {
    let query = ["search", "--mode", "lexical", "certificate", "expired"];
    let plain = on_index(&query).stdout();
    assert!(
        !plain.contains('\u{1b}') && !plain.contains("**"),
        "{plain}"
    );
    // One copy-pasteable citation per hit: path:line or path:line-line.
    let cites: Vec<&str> = plain
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|w| w.contains(".md:") || w.contains(".txt:"))
        .collect();
    assert_eq!(cites.len(), 10, "{plain}");
    for c in &cites {
        let (_, lines) = c.rsplit_once(':').unwrap();
        let mut parts = lines.split('-');
        let a: u32 = parts.next().unwrap().parse().unwrap();
        if let Some(b) = parts.next() {
            assert!(b.parse::<u32>().unwrap() > a, "{c}");
        }
    }
    let forced = on_index(&query).arg("--color").arg("always").stdout();
    assert!(forced.contains("\u{1b}["), "{forced}");

    let (code, tty) = on_index(&query).in_pty();
    assert_eq!(code, 0, "{tty}");
    assert!(tty.contains("\u{1b}[1m"), "no bold on a terminal: {tty}");
    assert!(!tty.contains("**"), "{tty}");
    let (_, no_color) = on_index(&query).env("NO_COLOR", "1").in_pty();
    assert!(!no_color.contains('\u{1b}'), "{no_color}");
    let (_, never) = on_index(&query).arg("--color").arg("never").in_pty();
    assert!(!never.contains('\u{1b}'), "{never}");
    // Lines are wrapped at the terminal's 100 columns.
    assert!(
        never.lines().all(|l| l.trim_end().chars().count() <= 100),
        "{never}"
    );
}

#[test]
fn absolute_citations_use_the_recorded_root() {
    let out = on_index(&["search", "--mode", "lexical", "--absolute", "certificate"]).stdout();
    let path = out
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .find(|w| w.contains(".md:"))
        .unwrap();
    let file = path.rsplit_once(':').unwrap().0;
    let file = file.rsplit_once(':').map_or(file, |(f, _)| f);
    assert!(
        std::path::Path::new(file).is_absolute() && std::path::Path::new(file).is_file(),
        "{out}"
    );
}

#[test]
fn show_puts_the_card_first_and_repeats_nothing() {
    let id = tls_id();
    let out = on_index(&["show", "--no-pager", &id]).stdout();
    let card = out.find("\ncard\n").or_else(|| out.find("summary"));
    let timeline = out.find("\ntimeline\n");
    assert!(card.is_some(), "{out}");
    if let Some(t) = timeline {
        assert!(card.unwrap() < t, "{out}");
    }
    // Each step once: its citation is printed once.
    let shown = on_index(&["show", "--json", &id]).json();
    let path = shown["path"].as_str().unwrap();
    for step in shown["steps"].as_array().unwrap() {
        let (a, b) = (
            step["line_start"].as_u64().unwrap(),
            step["line_end"].as_u64().unwrap(),
        );
        let cite = if b > a {
            format!("{path}:{a}-{b}")
        } else {
            format!("{path}:{a}")
        };
        let n = out
            .lines()
            .filter(|l| l.split_whitespace().any(|w| w == cite))
            .count();
        assert!(n >= 1, "{cite} missing: {out}");
    }
    let old_style = |w: &str| {
        w.strip_prefix('L').is_some_and(|r| {
            r.split('-')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        })
    };
    assert!(!out.split_whitespace().any(old_style), "{out}");
    let only = on_index(&["show", "--no-pager", "--kind", "root_cause", &id]).stdout();
    assert!(
        only.contains("root_cause") && !only.contains("detection "),
        "{only}"
    );
    // --json keeps its shape.
    assert!(
        shown["steps"].is_array() && shown["timeline"].is_array() && shown["title"].is_string()
    );

    // On a terminal, long output goes through the pager.
    let (code, paged) = on_index(&["show", &id])
        .env("PAGER", "sed -e s/^/paged:/")
        .in_pty();
    assert_eq!(code, 0);
    assert!(paged.contains("paged:"), "{paged}");
    let (_, unpaged) = on_index(&["show", "--no-pager", &id])
        .env("PAGER", "sed -e s/^/paged:/")
        .in_pty();
    assert!(!unpaged.contains("paged:"), "{unpaged}");
}

#[test]
fn terminal_escapes_from_the_corpus_are_never_printed() {
    let s = shared();
    let raw =
        |text: &str| text.contains('\u{1b}') || text.contains('\u{7}') || text.contains('\u{9b}');
    let search = on_index(&["search", "--mode", "lexical", "zebrafish"]).stdout();
    assert!(search.contains("zebrafish") && !raw(&search), "{search:?}");
    assert!(search.contains("\\x1b"), "{search:?}");
    let search = on_index(&[
        "search",
        "--mode",
        "lexical",
        "zebrafish",
        "--color",
        "always",
    ])
    .stdout();
    assert!(
        !search.contains("\u{1b}]") && !search.contains('\u{7}'),
        "{search:?}"
    );
    let show = on_index(&["show", "--no-pager", "evil"]).stdout();
    assert!(show.contains("zebrafish") && !raw(&show), "{show:?}");
    let parse = TestCommand::new(&["parse"])
        .arg(s.corpus.join(HOSTILE_NAME))
        .stdout();
    assert!(parse.contains("zebrafish") && !raw(&parse), "{parse:?}");
    let similar = on_index(&["similar", "zebrafish", "cache", "crashed"]).stdout();
    assert!(!raw(&similar), "{similar:?}");
}

#[test]
fn similar_takes_plain_notes() {
    let s = shared();
    for name in ["notes.log", "notes", "notes.txt"] {
        let notes = s.dir.create(
            &format!("notes/{name}"),
            "14:02 pods OOMKilled again after the deploy\nmemory limit 512Mi, restarts climbing\n",
        );
        let out = TestCommand::new(&["similar", "--json", "--file"])
            .arg(&notes)
            .arg("--index")
            .arg(&s.idx)
            .json();
        let first = out["incidents"][0]["path"].as_str().unwrap();
        assert!(
            first.contains("oom") || first.contains("memory"),
            "{name}: {out}"
        );
    }
}

#[test]
fn help_is_short_and_complete_on_demand() {
    let short = TestCommand::new(&["search", "--help"]).stdout();
    assert!(!short.contains("--qdrant-url"), "{short}");
    assert!(short.contains("--help-all"), "{short}");
    assert!(
        short.contains("Usage: precedent search [OPTIONS] <QUERY>..."),
        "{short}"
    );
    let all = TestCommand::new(&["search", "--help-all"]).stdout();
    assert!(
        all.contains("Qdrant store") && all.contains("--qdrant-url"),
        "{all}"
    );
    let similar = TestCommand::new(&["similar", "--help"]).stdout();
    assert!(
        !similar.contains("Usage: precedent similar --index"),
        "{similar}"
    );
    let mcp = TestCommand::new(&["mcp", "--help-all"]).stdout();
    assert!(
        !mcp.contains("503") && !mcp.contains("--concurrency"),
        "{mcp}"
    );
}

#[test]
fn mcp_prints_a_ready_config() {
    let s = shared();
    let config = on_index(&["mcp", "--print-config"]).json();
    let server = &config["mcpServers"]["precedent"];
    let args: Vec<&str> = server["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(std::path::Path::new(server["command"].as_str().unwrap()).is_absolute());
    assert_eq!(args[0], "mcp");
    let idx = args.iter().position(|a| *a == "--index").unwrap();
    assert_eq!(
        std::path::Path::new(args[idx + 1]),
        s.idx.canonicalize().unwrap()
    );
    let model = args.iter().position(|a| *a == "--model-dir").unwrap();
    assert!(
        std::path::Path::new(args[model + 1])
            .join("config.json")
            .is_file()
    );
}

#[test]
fn serve_says_serving_only_once_it_serves() {
    let (code, _, err) = on_index(&["serve", "--addr", "0.0.0.0:0"]).run();
    assert_eq!(code, 2, "{err}");
    assert!(!err.contains("serving"), "{err}");
}

#[test]
fn avenues_and_compare_answer_what_was_tried_before() {
    let s = shared();
    let out = on_index(&[
        "avenues",
        "storefront",
        "502",
        "Bad",
        "Gateway",
        "from",
        "the",
        "ingress",
    ])
    .stdout();
    assert!(out.contains("Restored service"), "{out}");
    assert!(out.contains("Did not help"), "{out}");
    assert!(out.contains(".md:"), "citations: {out}");
    let json = on_index(&[
        "avenues",
        "--json",
        "--outcome",
        "ruled_out",
        "502s",
        "from",
        "the",
        "ingress",
    ])
    .json();
    let avenues = json["avenues"].as_array().unwrap();
    assert!(!avenues.is_empty(), "{json}");
    assert!(avenues.iter().all(|a| a["group"] == "ruled_out"), "{json}");
    let (code, _, err) = on_index(&["avenues", "disk", "--outcome", "maybe"]).run();
    assert_eq!(code, 2);
    assert!(err.contains("restored_service"), "{err}");

    let notes = s.dir.join("notes.md");
    std::fs::write(
        &notes,
        "Storefront returns 502 Bad Gateway from the ingress since 18:40.\n- we think it is a DNS problem\n",
    )
    .unwrap();
    let compare = |file: &std::path::Path| {
        TestCommand::new(&["compare", "--index"])
            .arg(&s.idx)
            .arg("--file")
            .arg(file)
    };
    let out = compare(&notes).stdout();
    assert!(out.contains("Compared with"), "{out}");
    assert!(out.contains("Not in your notes yet"), "{out}");
    assert!(out.contains("ruled out before"), "{out}");
    let missing = s.dir.join("no-such-notes.md");
    let (code, _, err) = compare(&missing).run();
    assert_eq!(code, 2);
    assert!(err.contains("cannot read"), "{err}");
}

/// Queries that reach every planted write-up's steps (they talk about credentials and leaks).
const SECRET_QUERIES: &[&str] = &[
    "token",
    "password credentials",
    "secret key leaked",
    "connection string",
    "leak file name",
    "private key certificate",
    "api key header authorization",
];

/// Every planted secret, over every surface: CLI `--json`, the HTTP API, MCP over stdio
/// (text and structured content) and the bytes of the index directory. Nothing leaks.
#[test]
fn planted_secrets_reach_no_surface() {
    let planted = precedent_parse::testing::planted_secrets();
    assert!(planted.secrets.len() >= 60, "{}", planted.secrets.len());
    assert!(planted.kinds().len() >= 25, "{:?}", planted.kinds());
    let dir = Dir::new();
    let corpus = dir.join("corpus");
    planted.write_to(&corpus).unwrap();
    // The secrets are really in the corpus, so the checks below could fail.
    let written: String = planted
        .files
        .iter()
        .map(|(path, text)| format!("{path}\n{text}\n"))
        .collect();
    assert_eq!(planted.leaks_in(&written).len(), planted.secrets.len());

    let idx = dir.join("idx");
    let mut outputs: Vec<(String, String)> = Vec::new();
    let summary = TestCommand::new(&["index", "--json"])
        .arg(&corpus)
        .arg("--index")
        .arg(&idx)
        .stdout();
    outputs.push(("cli index --json".into(), summary.clone()));
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    let added = summary["added"].as_u64().unwrap();
    let write_ups = planted
        .files
        .iter()
        .filter(|(path, text)| {
            let options = precedent_parse::ParseOptions::default();
            precedent_parse::parse(path, text.as_bytes(), &options)
                .incident
                .is_some()
        })
        .count();
    assert!(write_ups >= 5);
    assert_eq!(added as usize, write_ups, "{summary}");

    // CLI.
    let cli = |args: &[&str]| TestCommand::new(args).arg("--index").arg(&idx).stdout();
    let mut ids = std::collections::BTreeSet::new();
    for query in SECRET_QUERIES {
        for mode in ["lexical", "hybrid"] {
            // Exit status 1 when nothing is found, as grep does.
            let (code, out, err) =
                TestCommand::new(&["search", "--json", "--mode", mode, "-k", "100", query])
                    .arg("--index")
                    .arg(&idx)
                    .run();
            assert!(code == 0 || code == 1, "{err}");
            let hits: serde_json::Value = serde_json::from_str(&out).unwrap();
            for hit in hits["hits"].as_array().unwrap() {
                ids.insert(hit["incident_id"].as_str().unwrap().to_owned());
            }
            outputs.push((format!("cli search {mode} {query:?}"), out));
        }
    }

    // MCP over stdio: every incident listed, read and compared.
    let mut mcp = TestCommand::new(&["mcp"])
        .arg("--index")
        .arg(&idx)
        .mcp_stdio();
    assert!(mcp.initialize()["result"].is_object());
    let listed = mcp.call("resources/list", serde_json::json!({}));
    let resources = listed["result"]["resources"].as_array().unwrap();
    assert_eq!(resources.len() as u64, added, "{listed}");
    for resource in resources {
        ids.insert(resource["name"].as_str().unwrap().to_owned());
    }
    outputs.push(("mcp resources/list".into(), listed.to_string()));
    assert_eq!(ids.len() as u64, added, "{ids:?}");
    for id in &ids {
        let read = mcp.call(
            "resources/read",
            serde_json::json!({"uri": format!("incident://{id}")}),
        );
        assert!(read["result"].is_object(), "{read}");
        outputs.push((format!("mcp resources/read {id}"), read.to_string()));
        for (tool, args) in [
            ("get_incident", serde_json::json!({"incident_id": id})),
            (
                "find_similar_incidents",
                serde_json::json!({"incident_id": id, "k": 50}),
            ),
        ] {
            let answer = mcp.tool(tool, args);
            assert_eq!(answer["result"]["isError"], false, "{answer}");
            outputs.push((format!("mcp {tool} {id}"), answer.to_string()));
        }
    }
    for query in SECRET_QUERIES {
        let answer = mcp.tool(
            "search_incidents",
            serde_json::json!({"query": query, "k": 50}),
        );
        assert_eq!(answer["result"]["isError"], false, "{answer}");
        outputs.push((format!("mcp search {query:?}"), answer.to_string()));
    }
    let facets = mcp.tool("list_facets", serde_json::json!({}));
    outputs.push(("mcp list_facets".into(), facets.to_string()));
    drop(mcp);

    // CLI show and similar, HTTP.
    let served = TestCommand::new(&["serve"])
        .arg("--index")
        .arg(&idx)
        .serve();
    for id in &ids {
        outputs.push((
            format!("cli show {id}"),
            cli(&["show", "--json", id.as_str()]),
        ));
        outputs.push((
            format!("cli similar {id}"),
            cli(&["similar", "--json", id.as_str()]),
        ));
        let (status, body) = served.request("GET", &format!("/v1/incidents/{id}"), None);
        assert_eq!(status, 200, "{body}");
        outputs.push((format!("http incident {id}"), body));
        let request = serde_json::json!({"incident_id": id, "k": 100}).to_string();
        let (status, body) = served.request("POST", "/v1/similar", Some(&request));
        assert_eq!(status, 200, "{body}");
        outputs.push((format!("http similar {id}"), body));
    }
    for query in SECRET_QUERIES {
        let request = serde_json::json!({"query": query, "k": 100}).to_string();
        let (status, body) = served.request("POST", "/v1/search", Some(&request));
        assert_eq!(status, 200, "{body}");
        outputs.push((format!("http search {query:?}"), body));
    }
    outputs.push((
        "http facets".into(),
        served.request("GET", "/v1/facets", None).1,
    ));
    drop(served);

    // The index directory, byte by byte.
    let mut stack = vec![idx.clone()];
    let mut files = 0;
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files += 1;
                let bytes = std::fs::read(&path).unwrap();
                outputs.push((
                    path.display().to_string(),
                    String::from_utf8_lossy(&bytes).into_owned(),
                ));
            }
        }
    }
    assert!(files > 5, "{files} files in the index");

    let leaks: Vec<String> = outputs
        .iter()
        .flat_map(|(surface, text)| {
            planted
                .leaks_in(text)
                .into_iter()
                .map(move |(s, needle)| format!("{} ({}) in {surface}: {needle}", s.kind, s.form))
        })
        .collect();
    assert!(
        leaks.is_empty(),
        "{} of {} planted secrets leaked:\n{}",
        leaks.len(),
        planted.secrets.len(),
        leaks.join("\n")
    );
}

/// `serve`'s connection limits come from flags, then the environment, then the defaults, and
/// `--help` names them.
#[test]
fn serve_takes_connection_limits_from_flags_then_env() {
    let help = TestCommand::new(&["serve", "--help"]).stdout();
    for name in [
        "--max-connections",
        "--header-timeout",
        "--idle-timeout",
        "PRECEDENT_MAX_CONNECTIONS",
        "PRECEDENT_HEADER_TIMEOUT",
        "PRECEDENT_IDLE_TIMEOUT",
        "[default: 1024]",
    ] {
        assert!(help.contains(name), "{name} not in:\n{help}");
    }
    let (code, _, err) = on_index(&["serve", "--header-timeout", "0"]).run();
    assert_eq!(code, 2, "{err}");

    // A connection that sends nothing is closed after the header-read timeout: the flag's
    // 1 s wins over the environment's 600 s. A read returning end-of-file is the signal.
    let silent_for = |served: &Served| {
        use std::io::Read;
        let mut stream = std::net::TcpStream::connect(&served.addr).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        let started = std::time::Instant::now();
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf).unwrap_or(usize::MAX);
        (n, started.elapsed())
    };
    let served = on_index(&["serve", "--header-timeout", "1"])
        .env("PRECEDENT_HEADER_TIMEOUT", "600")
        .serve();
    let (n, took) = silent_for(&served);
    assert_eq!(n, 0, "not closed");
    assert!(took < std::time::Duration::from_secs(10), "{took:?}");
    drop(served);
    // The environment alone: the idle timeout of a kept-alive connection.
    let served = on_index(&["serve"])
        .env("PRECEDENT_IDLE_TIMEOUT", "1")
        .serve();
    {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&served.addr).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        write!(
            stream,
            "GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n",
            served.addr
        )
        .unwrap();
        let mut answer = Vec::new();
        let started = std::time::Instant::now();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(e) => panic!("not closed: {e}"),
            }
        }
        assert!(answer.starts_with(b"HTTP/1.1 200"));
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }
}

/// With `--precision auto`, the model follows the index: an index embedded in f32 answers a
/// hybrid search where auto alone would pick bf16 (CPUs with AMX), and `index` updates it in
/// place instead of re-embedding everything.
#[test]
fn auto_precision_follows_the_index() {
    let dir = Dir::new();
    let corpus = dir.create(
        "c/2022-05-01-disk-full.md",
        "# Disk full on the primary\n\n## Timeline\n\n- 10:00 alerts: no space left on device\n- 10:05 deleted old WAL segments, helped\n",
    );
    let corpus = corpus.parent().unwrap().to_owned();
    let idx = dir.join("idx");
    let index = |precision: &str| {
        TestCommand::new(&["index", "--json", "--index"])
            .arg(&idx)
            .arg(&corpus)
            .env("PRECEDENT_PRECISION", precision)
            .json()
    };
    let first = index("f32");
    assert!(first["steps_total"].as_u64().unwrap() >= 2, "{first}");
    let again = index("auto");
    assert_eq!(again["rebuilt"], false, "auto kept the f32 index: {again}");
    let hits = TestCommand::new(&["search", "--json", "--mode", "hybrid", "--index"])
        .arg(&idx)
        .arg("disk full")
        .env("PRECEDENT_PRECISION", "auto")
        .json();
    assert!(!hits["hits"].as_array().unwrap().is_empty(), "{hits}");
}

/// Every indexed step's text, as `show --json` gives it, one file per step: what `grep -r`
/// over "the same steps" reads.
fn steps_as_files(dir: &Dir) -> std::path::PathBuf {
    let s = shared();
    let out = dir.join("steps");
    std::fs::create_dir_all(&out).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&s.corpus)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut shown = 0;
    for name in names {
        let (code, stdout, _) = on_index(&["show", "--json"]).arg(&name).run();
        if code != 0 {
            continue; // not a write-up (README, synonyms.toml, ...)
        }
        shown += 1;
        let incident: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        for step in incident["steps"].as_array().unwrap() {
            let file = out.join(step["id"].as_str().unwrap().replace(['/', ':', '#'], "_"));
            std::fs::write(file, step["text"].as_str().unwrap()).unwrap();
        }
    }
    assert_eq!(shown as u64, s.files, "every indexed write-up shown");
    out
}

/// Lines `grep -r ARGS... PATTERN DIR` prints (0 when nothing matches).
fn grep_lines(args: &[&str], pattern: &str, dir: &std::path::Path) -> u64 {
    let out = std::process::Command::new("grep")
        .arg("-r")
        .args(args)
        .arg("--")
        .arg(pattern)
        .arg(dir)
        .env("LC_ALL", "C.UTF-8")
        .output()
        .expect("grep runs");
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "grep failed: {out:?}"
    );
    String::from_utf8_lossy(&out.stdout).lines().count() as u64
}

#[test]
fn exact_and_regex_count_what_grep_counts() {
    let dir = Dir::new();
    let steps = steps_as_files(&dir);
    // Patterns whose matches do not depend on leftmost-first (Rust) versus leftmost-longest
    // (POSIX) alternation.
    let cases: [(&str, &str, &[&str]); 5] = [
        ("--regex", "rate.?limit|toomanyrequests", &["-i", "-E"]),
        ("--regex", "5[0-9][0-9]", &["-i", "-E"]),
        ("--regex", "certificate|expired", &["-i", "-E"]),
        ("--exact", "disk space", &["-i", "-F"]),
        ("--exact", "TLS", &["-F"]),
    ];
    let mut nonzero = 0;
    for (flag, pattern, grep_args) in cases {
        let mut args = vec!["search", "--json", flag, pattern];
        if !grep_args.contains(&"-i") {
            args.push("-s");
        }
        let (code, stdout, stderr) = on_index(&args).run();
        assert!(code <= 1, "{flag} {pattern}: {stderr}");
        let body: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        let counts = &body["counts"];
        let steps_matching = grep_lines(&[grep_args, &["-l"]].concat(), pattern, &steps);
        let matches = grep_lines(&[grep_args, &["-o", "-h"]].concat(), pattern, &steps);
        assert_eq!(
            counts["steps"], steps_matching,
            "{flag} {pattern}: {counts}"
        );
        assert_eq!(counts["matches"], matches, "{flag} {pattern}: {counts}");
        let hits = body["hits"].as_array().unwrap();
        assert_eq!(
            hits.len() as u64,
            steps_matching.min(1000),
            "every matching step listed"
        );
        let incidents: std::collections::HashSet<&str> = hits
            .iter()
            .map(|h| h["incident_id"].as_str().unwrap())
            .collect();
        assert_eq!(counts["incidents"], incidents.len() as u64, "{counts}");
        if steps_matching > 0 {
            nonzero += 1;
            assert!(
                hits[0]["snippet"].as_str().unwrap().contains("**"),
                "{}",
                hits[0]
            );
        }
    }
    assert!(
        nonzero >= 4,
        "the cases must find something in corpus-samples"
    );

    // The human form ends with the counts; a bad pattern is a clear error (exit 2).
    let out = on_index(&["search", "--regex", "certificate|expired", "-k", "2"]).stdout();
    assert!(
        out.lines().last().unwrap().contains("matches in") && out.contains("2 shown"),
        "{out}"
    );
    let err = on_index(&["search", "--regex", "(unclosed"]).fails();
    assert!(err.contains("invalid regex"), "{err}");
    let err = on_index(&["search", "--exact", "x", "--regex", "y"]).fails();
    assert!(err.contains("cannot be used with"), "{err}");
}

#[test]
fn index_refuses_another_directory_unless_told_to_prune() {
    let dir = Dir::new();
    for (sub, name) in [
        ("ops", "2022-03-14-disk-full-debug-logs.md"),
        ("db", "mysql-failover-split-brain.md"),
    ] {
        dir.create(
            &format!("corpus/{sub}/{name}"),
            std::fs::read(samples().join(name)).unwrap(),
        );
    }
    let idx = dir.join("idx");
    let run = |corpus: &str, extra: &[&str]| {
        TestCommand::new(&["index"])
            .arg(dir.join(corpus))
            .arg("--index")
            .arg(&idx)
            .args(extra)
            .run()
    };
    let (code, out, err) = run("corpus", &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 added"), "{out}");
    // A subfolder would drop the other write-ups: refused, nothing changes.
    let (code, _, err) = run("corpus/ops", &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--prune") && err.contains("2 write-ups"),
        "{err}"
    );
    let (code, out, _) = run("corpus", &[]);
    assert_eq!(code, 0);
    assert!(out.contains("0 removed, 2 unchanged"), "{out}");
    let (code, out, err) = run("corpus/ops", &["--prune"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("1 added") && out.contains("2 removed"),
        "{out}"
    );
}

/// A draft of more than 4 KiB, in Markdown: what a responder pastes mid-incident.
fn long_draft() -> String {
    let mut draft = String::from(
        "# Checkout errors after the certificate rotation\n\n## Summary\n\nSince 09:10 UTC the \
         checkout service returns TLS handshake failures to about a third of clients; the \
         load balancer logs show x509 certificate has expired or is not yet valid.\n\n\
         ## Impact\n\nCustomers on older Android devices cannot pay; support tickets are \
         climbing.\n\n## Timeline\n\n",
    );
    for minute in 10..60 {
        draft.push_str(&format!(
            "- 09:{minute:02} checked the edge nodes again: the chain served still lacks the \
             intermediate certificate and handshakes keep failing for old clients.\n"
        ));
    }
    draft
}

#[test]
fn cli_and_http_similar_rank_a_draft_alike() {
    let dir = Dir::new();
    let draft = long_draft();
    assert!(
        draft.len() > 4096,
        "the draft must exceed the old 4 KiB cap"
    );
    let file = dir.create("draft.md", &draft);
    let cli = TestCommand::new(&["similar", "--json", "-k", "5", "--file"])
        .arg(&file)
        .arg("--index")
        .arg(&shared().idx)
        .json();
    let served = on_index(&["serve"]).serve();
    let body = serde_json::json!({"text": draft, "k": 5}).to_string();
    let (status, http) = served.json("POST", "/v1/similar", Some(&body));
    assert_eq!(status, 200, "{http}");
    let ids = |v: &serde_json::Value| -> Vec<String> {
        v["incidents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["incident_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(!ids(&cli).is_empty(), "{cli}");
    assert_eq!(ids(&cli), ids(&http), "same ranking from the CLI and HTTP");
    let first = cli["incidents"][0]["path"].as_str().unwrap();
    assert!(first.contains("cert"), "{cli}");
    // Over 64 KiB is refused with a reason, not cut silently.
    let huge = serde_json::json!({"text": "x ".repeat(40_000)}).to_string();
    let (status, err) = served.json("POST", "/v1/similar", Some(&huge));
    assert_eq!(status, 400, "{err}");
}

/// The store conformance suite (`tests/conformance`) on the embedded index, through a server
/// with writes; `tests/qdrant.rs` runs it on a stateless Qdrant server.
#[test]
fn the_embedded_store_passes_the_conformance_suite() {
    let dir = Dir::new();
    let idx = dir.join("idx");
    TestCommand::new(&["index", "--json"])
        .arg(samples())
        .arg("--index")
        .arg(&idx)
        .json();
    let token = "a-token-for-the-embedded-conformance-run";
    let token_file = dir.create("token", token);
    let served = TestCommand::new(&["serve", "--allow-writes", "--token-file"])
        .arg(&token_file)
        .arg("--index")
        .arg(&idx)
        .serve();
    conformance::run(&conformance::Subject {
        served: &served,
        token,
        store: "embedded",
    });
}
