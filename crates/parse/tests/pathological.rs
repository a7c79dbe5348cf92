//! Inputs known to make Markdown parsers quadratic or to crash them. Each must parse (a
//! quadratic blow-up at these sizes would take minutes, not milliseconds) and keep its text.

use precedent_core::DiagnosticCode;
use precedent_parse::{ParseOptions, parse};

fn parse_str(name: &str, text: &str) -> precedent_core::Parsed {
    parse(name, text.as_bytes(), &ParseOptions::default())
}

fn words(parsed: &precedent_core::Parsed) -> usize {
    parsed
        .incident
        .as_ref()
        .unwrap()
        .steps
        .iter()
        .map(|s| s.text.split_whitespace().count())
        .sum()
}

#[test]
fn deep_block_quotes() {
    let text = format!("{}deep\n", ">".repeat(50_000));
    let parsed = parse_str("q.md", &text);
    assert!(words(&parsed) >= 1);
    assert!(
        parsed
            .diagnostics
            .iter()
            .any(|d| d.code == DiagnosticCode::DeepNesting)
    );
}

#[test]
fn deep_lists() {
    let mut text = String::new();
    for depth in 0..2_000 {
        text.push_str(&"  ".repeat(depth));
        text.push_str("- item\n");
    }
    let parsed = parse_str("l.md", &text);
    assert!(words(&parsed) >= 100);
}

#[test]
fn many_open_brackets() {
    let parsed = parse_str("b.md", &"[".repeat(50_000));
    assert!(parsed.incident.is_some());
    let parsed = parse_str("b2.md", &"[a](".repeat(20_000));
    assert!(parsed.incident.is_some());
    let parsed = parse_str(
        "b3.md",
        &format!("{}x{}", "[".repeat(20_000), "]".repeat(20_000)),
    );
    assert!(parsed.incident.is_some());
}

#[test]
fn emphasis_runs() {
    let parsed = parse_str("e.md", &"*a **a ".repeat(30_000));
    assert!(words(&parsed) >= 30_000);
    let parsed = parse_str("e2.md", &"_a __a ".repeat(30_000));
    assert!(words(&parsed) >= 30_000);
}

#[test]
fn huge_table() {
    let mut text = String::from("## Timeline\n\n| Time | Event |\n|---|---|\n");
    for i in 0..10_000 {
        text.push_str(&format!(
            "| {:02}:{:02} | event number {i} |\n",
            (i / 60) % 24,
            i % 60
        ));
    }
    let incident = parse_str("t.md", &text).incident.unwrap();
    assert_eq!(incident.steps.len(), 10_000);
    assert_eq!(incident.timeline.len(), 10_000);
    assert_eq!(incident.steps[9_999].line_start, 10_004);
}

#[test]
fn very_long_line() {
    let text = "word ".repeat(1_000_000);
    let parsed = parse_str("long.md", &text);
    let incident = parsed.incident.as_ref().unwrap();
    assert!(
        incident
            .steps
            .iter()
            .all(|s| s.text.split_whitespace().count() <= 160)
    );
    assert_eq!(words(&parsed), 1_000_000);
    assert!(
        parsed
            .diagnostics
            .iter()
            .any(|d| d.code == DiagnosticCode::LongLine)
    );
}

#[test]
fn encodings_and_line_endings() {
    let crlf = "# T\r\n\r\n## Root cause\r\n\r\nThe disk filled up with logs.\r\n";
    let incident = parse_str("c.md", crlf).incident.unwrap();
    assert_eq!(incident.steps[0].line_start, 5);
    assert_eq!(incident.steps[0].text, "The disk filled up with logs.");

    let bom = "\u{feff}# Title\n\nBody text that is long enough to stand as a step on its own.\n";
    let parsed = parse_str("bom.md", bom);
    assert_eq!(parsed.incident.unwrap().title, "Title");

    let mut invalid =
        b"# Title\n\nBody \xff\xfe text here that is long enough to be a step.\n".to_vec();
    invalid.extend_from_slice(b"\x80");
    let parsed = parse("u.md", &invalid, &ParseOptions::default());
    assert!(
        parsed
            .diagnostics
            .iter()
            .any(|d| d.code == DiagnosticCode::InvalidUtf8)
    );
    assert!(parsed.incident.unwrap().steps[0].text.contains('\u{FFFD}'));

    let parsed = parse(
        "bin.md",
        b"PK\x03\x04\x00\x00binary",
        &ParseOptions::default(),
    );
    assert_eq!(
        parsed.skip_reason().map(|d| d.code),
        Some(DiagnosticCode::Binary)
    );
}

#[test]
fn empty_and_whitespace_files() {
    for text in ["", "\n\n\n", "   ", "---\n---\n", "# Only a title\n"] {
        let parsed = parse_str("e.md", text);
        let incident = parsed.incident.unwrap();
        assert!(incident.steps.is_empty(), "{text:?}");
        assert!(
            parsed
                .diagnostics
                .iter()
                .any(|d| d.code == DiagnosticCode::Empty)
        );
    }
}
