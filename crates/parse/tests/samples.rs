//! Snapshot of the parse of every write-up in `corpus-samples/`, in a compact form that shows
//! what a reviewer needs: metadata, and per step its kind, lines, time, outcome and opening words.

use std::fmt::Write;

use precedent_parse::{ParseOptions, parse};

fn summary(path: &std::path::Path) -> String {
    let name = path.file_name().unwrap().to_str().unwrap();
    let bytes = std::fs::read(path).unwrap();
    let parsed = parse(name, &bytes, &ParseOptions::default());
    let mut out = String::new();
    for d in &parsed.diagnostics {
        writeln!(
            out,
            "diagnostic: {:?} {:?} line {:?}",
            d.level, d.code, d.line
        )
        .unwrap();
    }
    let Some(incident) = parsed.incident else {
        return out + "skipped\n";
    };
    writeln!(out, "id: {}", incident.id).unwrap();
    writeln!(out, "title: {}", incident.title).unwrap();
    writeln!(out, "date: {:?}", incident.date).unwrap();
    writeln!(
        out,
        "severity: {:?} services: {:?} tags: {:?}",
        incident.severity, incident.services, incident.tags
    )
    .unwrap();
    writeln!(out, "timeline entries: {}", incident.timeline.len()).unwrap();
    for step in &incident.steps {
        let words: Vec<&str> = step.text.split_whitespace().take(10).collect();
        writeln!(
            out,
            "{:>3} {:<14} L{}-{} {}{}| {} | {}",
            step.ordinal,
            step.kind.as_str(),
            step.line_start,
            step.line_end,
            step.at
                .as_ref()
                .map(|a| format!("@{} ", a.raw))
                .unwrap_or_default(),
            step.outcome
                .map(|o| format!("[{o:?}] "))
                .unwrap_or_default(),
            step.heading_path.join(" > "),
            words.join(" "),
        )
        .unwrap();
    }
    out
}

#[test]
fn every_sample_parses_as_recorded() {
    insta::glob!("../../../corpus-samples", "*.{md,txt}", |path| {
        insta::assert_snapshot!(summary(path));
    });
}

#[test]
fn samples_keep_exact_line_spans() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../corpus-samples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if precedent_parse::Format::of(&name).is_none() || precedent_parse::is_furniture(&name) {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let source = String::from_utf8_lossy(&bytes).replace("\r\n", "\n");
        let lines: Vec<&str> = source.split('\n').collect();
        let incident = parse(&name, &bytes, &ParseOptions::default())
            .incident
            .unwrap();
        assert!(!incident.steps.is_empty(), "{name}");
        for step in &incident.steps {
            let first = step.text.split_whitespace().next().unwrap();
            let last = step.text.split_whitespace().last().unwrap();
            let start_line = lines[step.line_start as usize - 1];
            let end_line = lines[step.line_end as usize - 1];
            let core = |w: &str| w.trim_matches(|c: char| !c.is_alphanumeric()).to_owned();
            if !first.starts_with("[REDACTED") {
                assert!(
                    start_line.contains(&core(first)),
                    "{name}: step {} starts with {first:?}, line {} is {start_line:?}",
                    step.ordinal,
                    step.line_start
                );
            }
            if !last.starts_with("[REDACTED") {
                assert!(
                    end_line.contains(&core(last)),
                    "{name}: step {} ends with {last:?}, line {} is {end_line:?}",
                    step.ordinal,
                    step.line_end
                );
            }
        }
        seen += 1;
    }
    assert!(seen >= 25, "only {seen} samples");
}

#[test]
fn samples_with_secrets_are_redacted() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../corpus-samples");
    let mut redacted = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let bytes = std::fs::read(&path).unwrap();
        let parsed = parse(&name, &bytes, &ParseOptions::default());
        let Some(incident) = parsed.incident else {
            continue;
        };
        for step in &incident.steps {
            for secret in [
                "AKIAIOSFODNN7EXAMPLE",
                "wJalrXUtnFEMI",
                "ghp_",
                "xoxb-",
                "hunter2",
                "eyJhbGci",
                "BEGIN RSA PRIVATE KEY",
            ] {
                assert!(
                    !step.text.contains(secret),
                    "{name}: {secret} leaked in step {}",
                    step.ordinal
                );
            }
        }
        redacted += parsed
            .diagnostics
            .iter()
            .filter(|d| d.code == precedent_core::DiagnosticCode::SecretRedacted)
            .count();
    }
    assert!(redacted >= 6, "only {redacted} redactions");
}
