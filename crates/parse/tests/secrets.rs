//! Planted secrets: none may survive parsing, in any field the parse output carries.

use precedent_core::{DiagnosticCode, Incident};
use precedent_parse::testing::planted_secrets;
use precedent_parse::{ParseOptions, parse, parse_file};

/// Every corpus-derived string of an incident, named by field.
fn surfaces(incident: &Incident) -> Vec<(String, String)> {
    let mut out = vec![
        ("id".to_owned(), incident.id.as_str().to_owned()),
        ("path".to_owned(), incident.path.clone()),
        ("title".to_owned(), incident.title.clone()),
    ];
    out.extend(
        incident
            .summary
            .iter()
            .map(|s| ("summary".to_owned(), s.clone())),
    );
    out.extend(
        incident
            .severity
            .iter()
            .map(|s| ("severity".to_owned(), s.clone())),
    );
    out.extend(
        incident
            .company
            .iter()
            .map(|s| ("company".to_owned(), s.clone())),
    );
    out.extend(
        incident
            .services
            .iter()
            .map(|s| ("services".to_owned(), s.clone())),
    );
    out.extend(incident.tags.iter().map(|s| ("tags".to_owned(), s.clone())));
    for step in &incident.steps {
        out.push((format!("step {} text", step.ordinal), step.text.clone()));
        out.push((
            format!("step {} id", step.ordinal),
            step.id.as_str().to_owned(),
        ));
        for heading in &step.heading_path {
            out.push((format!("step {} heading", step.ordinal), heading.clone()));
        }
    }
    out
}

#[test]
fn no_planted_secret_survives_parsing() {
    let corpus = planted_secrets();
    assert!(
        corpus.secrets.len() >= 60,
        "{} secrets",
        corpus.secrets.len()
    );
    assert!(corpus.kinds().len() >= 25, "{:?}", corpus.kinds());
    let forms: std::collections::BTreeSet<_> = corpus.secrets.iter().map(|s| s.form).collect();
    for form in [
        "plain",
        "table",
        "front-matter",
        "heading",
        "escaped",
        "file-name",
        "code",
    ] {
        assert!(forms.contains(form), "no secret planted in {form} form");
    }

    let dir = std::env::temp_dir().join(format!("precedent-secrets-{}", std::process::id()));
    corpus.write_to(&dir).unwrap();
    let mut leaks = Vec::new();
    let mut texts = String::new();
    let mut redactions = 0;
    for (path, _) in &corpus.files {
        let parsed = parse_file(path, &dir.join(path), &ParseOptions::default());
        redactions += parsed
            .diagnostics
            .iter()
            .filter(|d| d.code == DiagnosticCode::SecretRedacted)
            .count();
        for diagnostic in &parsed.diagnostics {
            leaks.extend(
                corpus
                    .leaks_in(&diagnostic.message)
                    .into_iter()
                    .map(|(s, n)| format!("{path}: diagnostic: {} ({}) via {n}", s.kind, s.form)),
            );
        }
        let incident = parsed.incident.expect("every planted file parses");
        for (field, value) in surfaces(&incident) {
            leaks.extend(
                corpus
                    .leaks_in(&value)
                    .into_iter()
                    .map(|(s, n)| format!("{path}: {field}: {} ({}) via {n}", s.kind, s.form)),
            );
            texts.push_str(&value);
            texts.push('\n');
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    eprintln!(
        "planted {} secrets of {} kinds in {} files; {redactions} redactions; {} leaked",
        corpus.secrets.len(),
        corpus.kinds().len(),
        corpus.files.len(),
        leaks.len()
    );
    assert!(
        leaks.is_empty(),
        "{} leaks:\n{}",
        leaks.len(),
        leaks.join("\n")
    );
    assert!(
        redactions >= corpus.secrets.len() - 4,
        "{redactions} redactions"
    );
    // Redaction keeps the prose around a truncated key.
    for line in &corpus.bystanders {
        assert!(texts.contains(line.as_str()), "lost {line:?}");
    }
    assert!(texts.contains("The paste was cut off here."));
}

#[test]
fn redaction_keeps_line_numbers() {
    let doc = "# T\n\n## Root cause\n\n```\n-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n-----END RSA PRIVATE KEY-----\n```\n\nThe disk filled on db-3.\n";
    let incident = parse("a.md", doc.as_bytes(), &ParseOptions::default())
        .incident
        .unwrap();
    let step = incident
        .steps
        .iter()
        .find(|s| s.text.contains("disk filled"))
        .unwrap();
    assert_eq!(step.line_end, 12, "{step:?}");
    assert!(!step.text.contains("MIIEow"), "{step:?}");
}

/// Redactions per rule over the shared corpus, to watch for false positives (run with
/// `--ignored --nocapture`; prints counts only, never the text).
#[test]
#[ignore = "needs ../shared/corpora"]
fn shared_corpus_redactions() {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpora");
    let mut files = Vec::new();
    walk(&root, &mut files);
    let mut counts = std::collections::BTreeMap::new();
    let mut parsed_files = 0;
    for path in &files {
        let name = path
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let parsed = parse_file(&name, path, &ParseOptions::default());
        parsed_files += usize::from(parsed.incident.is_some());
        for d in parsed
            .diagnostics
            .iter()
            .filter(|d| d.code == DiagnosticCode::SecretRedacted)
        {
            *counts.entry(d.message.clone()).or_insert(0) += 1;
        }
    }
    eprintln!("{parsed_files} write-ups; redactions: {counts:#?}");
    assert!(parsed_files > 0);
}
