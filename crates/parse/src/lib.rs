//! Reads one post-incident write-up and splits it into diagnostic steps.
//!
//! [`parse`] takes a file's path (relative to the corpus root) and bytes and returns a
//! [`Parsed`]: the `Incident` with its metadata, steps and timeline,
//! plus diagnostics. It never fails and never panics on messy input: binary files, files over
//! the size cap and unsupported formats come back without an incident and with a diagnostic
//! saying why; invalid UTF-8, BOMs, CRLF, broken front matter and pasted secrets are repaired
//! or redacted and reported.
//!
//! ```
//! use precedent_parse::{parse, ParseOptions};
//! use precedent_core::StepKind;
//!
//! let doc = b"# Disk full\n\n## Root cause\n\nDebug logging filled /var.\n";
//! let parsed = parse("2021-03-04-disk.md", doc, &ParseOptions::default());
//! let incident = parsed.incident.unwrap();
//! assert_eq!(incident.title, "Disk full");
//! assert_eq!(incident.steps[0].kind, StepKind::RootCause);
//! assert_eq!((incident.steps[0].line_start, incident.steps[0].line_end), (5, 5));
//! ```

mod assemble;
mod card;
mod chunk;
mod classify;
mod front_matter;
mod leaf;
mod markdown;
mod plain;
mod redact;
mod text;
mod time;

#[doc(hidden)]
pub mod testing;

use std::sync::LazyLock;

use regex::Regex;

use precedent_core::{
    ContentHash, DateRange, Diagnostic, DiagnosticCode, Incident, IncidentId, Level, Parsed, Step,
    StepId, StepKind, TimelineEntry,
};

pub use chunk::ChunkOptions;
pub use front_matter::FrontMatter;
pub use redact::redact_name;

/// Version of the chunking rules; the index rebuilds when it changes.
pub const CHUNKER_VERSION: u32 = 3;

/// Files larger than this are skipped by default.
pub const DEFAULT_MAX_BYTES: u64 = 10 * 1024 * 1024;

/// Summaries taken from a summary step are cut to about this many bytes.
const SUMMARY_BYTES: usize = 400;

/// How to parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseOptions {
    /// Files larger than this are skipped with a diagnostic.
    pub max_bytes: u64,
    /// Step size limits.
    pub chunk: ChunkOptions,
}

impl Default for ParseOptions {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_BYTES,
            chunk: ChunkOptions::default(),
        }
    }
}

/// The formats the parser reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.md`, `.markdown`, `.mdown`, `.mkd`.
    Markdown,
    /// `.txt`, `.text`.
    PlainText,
}

impl Format {
    /// The format of a path, from its extension.
    pub fn of(path: &str) -> Option<Format> {
        let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase())?;
        match ext.as_str() {
            "md" | "markdown" | "mdown" | "mkd" => Some(Format::Markdown),
            "txt" | "text" => Some(Format::PlainText),
            _ => None,
        }
    }
}

/// File names that are never write-ups (repository furniture). Write-ups are never dropped for
/// their name otherwise: `templates-service-outage.md` is a write-up.
pub fn is_furniture(file_name: &str) -> bool {
    let lower = file_name.to_ascii_lowercase();
    matches!(
        lower.as_str(),
        "readme.md"
            | "readme.txt"
            | "license.txt"
            | "license.md"
            | "attribution.md"
            | "manifest.tsv"
            | "changelog.md"
            | "contributing.md"
            | "code_of_conduct.md"
    )
}

/// Parses one write-up. `relative_path` (either separator) names it in ids and citations.
pub fn parse(relative_path: &str, bytes: &[u8], options: &ParseOptions) -> Parsed {
    let mut diagnostics = Vec::new();
    let skip = |code, message: String| Parsed {
        incident: None,
        diagnostics: vec![Diagnostic::new(Level::Error, code, message)],
    };
    let Some(format) = Format::of(relative_path) else {
        return skip(
            DiagnosticCode::UnsupportedFormat,
            "not a write-up format (expected .md, .markdown or .txt)".to_owned(),
        );
    };
    if bytes.len() as u64 > options.max_bytes {
        return skip(
            DiagnosticCode::TooLarge,
            format!(
                "file is {} bytes, over the {} byte cap",
                bytes.len(),
                options.max_bytes
            ),
        );
    }
    if let Some(at) = memchr::memchr(0, bytes) {
        return skip(
            DiagnosticCode::Binary,
            format!("NUL byte at offset {at}: binary file"),
        );
    }
    let content_hash = ContentHash::of(bytes);
    let text = text::decode(bytes, &mut diagnostics);
    let mut text = redact::redact(text, &mut diagnostics);
    let front = match format {
        Format::Markdown => front_matter::extract(&text, &mut diagnostics),
        Format::PlainText => None,
    };
    if let Some(found) = &front {
        // Blank the block out rather than cut it, so offsets and lines stay those of the file.
        let blanked: String = text[..found.len]
            .chars()
            .map(|c| if c == '\n' { '\n' } else { ' ' })
            .collect();
        text.replace_range(..found.len, &blanked);
    }
    let lines = text::LineIndex::new(&text);
    let leaves = match format {
        Format::Markdown => markdown::leaves(&text, &lines, &mut diagnostics),
        Format::PlainText => plain::leaves(&text),
    };
    let assembled = assemble::assemble(&leaves);
    let first_heading = assembled.first_heading.clone();
    let sections = assembled.sections.clone();
    let chunks = chunk::chunk(assembled, &options.chunk);

    // Secrets in a file name must not reach the path, id or title shown and indexed.
    let path = redact::redact_name(&normalise(relative_path));
    let id = IncidentId::from_path(&path);
    let fields = front.as_ref().map(|f| f.fields.clone()).unwrap_or_default();
    let title = fields
        .title
        .clone()
        .or(first_heading)
        .unwrap_or_else(|| title_from_path(&path));

    let mut steps = Vec::with_capacity(chunks.len() + 1);
    let mut timeline = Vec::new();
    if let (Some(summary), Some(found)) = (&fields.summary, &front) {
        let (line_start, line_end) = found.summary_lines.unwrap_or((1, 1));
        steps.push(new_step(
            &id,
            0,
            StepKind::Summary,
            vec!["Summary".to_owned()],
            summary.clone(),
            line_start,
            line_end,
        ));
    }
    for chunk in chunks {
        let ordinal = steps.len() as u32;
        let mut step = new_step(
            &id,
            ordinal,
            chunk.kind,
            sections[chunk.section].heading_path.clone(),
            chunk.text,
            chunk.line_start,
            chunk.line_end,
        );
        step.outcome = chunk.outcome;
        step.at = chunk.at;
        if let (true, Some(at)) = (chunk.timeline, &step.at) {
            timeline.push(TimelineEntry {
                at: at.clone(),
                step_id: step.id.clone(),
                kind: step.kind,
                line: step.line_start,
            });
        }
        steps.push(step);
    }
    if steps.is_empty() {
        diagnostics.push(Diagnostic::new(
            Level::Warning,
            DiagnosticCode::Empty,
            "no text to index",
        ));
    }

    let file_name = path.rsplit('/').next().unwrap_or(&path);
    let start = fields
        .date
        .or_else(|| time::date_from_file_name(file_name))
        .or_else(|| time::first_date_in(&title))
        .or_else(|| timeline_date(&steps))
        .or_else(|| {
            time::first_date_in(text.get(..text.floor_char_boundary(4000)).unwrap_or(&text))
        });
    if start.is_none() {
        diagnostics.push(Diagnostic::new(
            Level::Info,
            DiagnosticCode::NoDate,
            "no date in front matter, file name or text; date filters will not match this incident",
        ));
    }
    let summary = fields.summary.clone().or_else(|| {
        steps
            .iter()
            .find(|s| s.kind == StepKind::Summary)
            .map(|s| cut(&s.text, SUMMARY_BYTES))
    });
    let card = card::build(&steps, summary.as_deref());
    let severity = fields
        .severity
        .or_else(|| severity_in(text.get(..text.floor_char_boundary(6000)).unwrap_or(&text)));
    let incident = Incident {
        id,
        path,
        title,
        date: start.map(|start| DateRange {
            start,
            end: fields.end.filter(|end| *end >= start),
        }),
        severity,
        services: fields.services,
        tags: fields.tags,
        company: fields.company,
        summary,
        content_hash,
        steps,
        timeline,
        card,
    };
    Parsed {
        incident: Some(incident),
        diagnostics,
    }
}

/// Reads and parses a file, turning read errors into a diagnostic.
pub fn parse_file(
    relative_path: &str,
    full_path: &std::path::Path,
    options: &ParseOptions,
) -> Parsed {
    match std::fs::metadata(full_path) {
        Ok(meta) if meta.len() > options.max_bytes => {
            return Parsed {
                incident: None,
                diagnostics: vec![Diagnostic::new(
                    Level::Error,
                    DiagnosticCode::TooLarge,
                    format!(
                        "file is {} bytes, over the {} byte cap",
                        meta.len(),
                        options.max_bytes
                    ),
                )],
            };
        }
        _ => {}
    }
    match std::fs::read(full_path) {
        Ok(bytes) => parse(relative_path, &bytes, options),
        Err(err) => Parsed {
            incident: None,
            diagnostics: vec![Diagnostic::new(
                Level::Error,
                DiagnosticCode::Unreadable,
                format!("cannot read file: {err}"),
            )],
        },
    }
}

fn new_step(
    incident: &IncidentId,
    ordinal: u32,
    kind: StepKind,
    heading_path: Vec<String>,
    text: String,
    line_start: u32,
    line_end: u32,
) -> Step {
    let id = StepId::new(incident, ordinal, &ContentHash::of(text.as_bytes()));
    Step {
        id,
        incident_id: incident.clone(),
        ordinal,
        kind,
        heading_path,
        text,
        line_start,
        line_end,
        at: None,
        outcome: None,
    }
}

fn normalise(path: &str) -> String {
    path.replace('\\', "/")
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// `2021-09-30-cert-expiry.md` -> `cert expiry`. Only a leading date is dropped: a UUID or
/// any other name that starts with digits keeps them.
fn title_from_path(path: &str) -> String {
    static LEADING_DATE: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"^(?:(?:19|20)\d\d[-_.]?(?:0[1-9]|1[0-2])(?:[-_.]?(?:0[1-9]|[12]\d|3[01]))?)(?:[-_ ]+|$)")
            .expect("date pattern compiles")
    });
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.rsplit_once('.').map_or(file, |(s, _)| s);
    let trimmed = LEADING_DATE.find(stem).map_or(stem, |m| &stem[m.end()..]);
    let base = if trimmed.is_empty() { stem } else { trimmed };
    base.replace(['-', '_'], " ").trim().to_owned()
}

/// The day most timeline rows fall on: the incident's own day, not that of a setup row
/// months before.
fn timeline_date(steps: &[Step]) -> Option<chrono::NaiveDate> {
    let mut days: Vec<chrono::NaiveDate> =
        steps.iter().filter_map(|s| s.at.as_ref()?.date).collect();
    days.sort_unstable();
    let mut best: Option<(chrono::NaiveDate, usize)> = None;
    for group in days.chunk_by(|a, b| a == b) {
        if best.is_none_or(|(_, n)| group.len() > n) {
            best = Some((group[0], group.len()));
        }
    }
    best.map(|(day, _)| day)
}

/// A severity written in the text: `SEV2`, `Sev 1`, `P1 incident`, `Severity: high`.
fn severity_in(text: &str) -> Option<String> {
    static SEVERITY: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(
            r"(?i)(?-u:\b)(?:(sev)[- ]?([0-5])(?-u:\b)|(p)([0-4])[ -](?:incident|outage|issue|severity|priority)|severity(?:\s+level)?\**\s*[:=-]?\s*\**\s*(sev[- ]?[0-5]|[0-5]|critical|high|major|medium|moderate|minor|low)(?-u:\b)|priority\s*[:=-]?\s*(p[0-4])(?-u:\b))",
        )
        .expect("severity pattern compiles")
    });
    let caps = SEVERITY.captures(text)?;
    let value = if let (Some(_), Some(n)) = (caps.get(1), caps.get(2)) {
        format!("SEV{}", n.as_str())
    } else if let (Some(_), Some(n)) = (caps.get(3), caps.get(4)) {
        format!("P{}", n.as_str())
    } else if let Some(v) = caps.get(5) {
        let v = v.as_str();
        if v.len() <= 1 {
            format!("SEV{v}")
        } else if v.to_ascii_lowercase().starts_with("sev") {
            format!("SEV{}", &v[v.len() - 1..])
        } else {
            v.to_ascii_lowercase()
        }
    } else {
        caps.get(6)?.as_str().to_ascii_uppercase()
    };
    Some(value)
}

fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let end = text.floor_char_boundary(max);
    let end = text[..end].rfind(' ').unwrap_or(end);
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use precedent_core::Outcome;

    #[test]
    fn skips_what_it_cannot_read() {
        let options = ParseOptions {
            max_bytes: 10,
            ..ParseOptions::default()
        };
        let check = |path: &str, bytes: &[u8], code| {
            let parsed = parse(path, bytes, &options);
            assert!(parsed.incident.is_none());
            assert_eq!(parsed.skip_reason().map(|d| d.code), Some(code));
        };
        check("a.pdf", b"x", DiagnosticCode::UnsupportedFormat);
        check("a.md", b"0123456789ab", DiagnosticCode::TooLarge);
        check("a.md", b"ab\0cd", DiagnosticCode::Binary);
    }

    #[test]
    fn titles_from_paths() {
        assert_eq!(
            title_from_path("x/2021-09-30-cert-expiry.md"),
            "cert expiry"
        );
        assert_eq!(title_from_path("20170719-ldap.txt"), "ldap");
        assert_eq!(title_from_path("2021.md"), "2021");
        assert_eq!(
            title_from_path("icco/0c8e1f6a-3b2d-4c5e-9f70-1a2b3c4d5e6f.md"),
            "0c8e1f6a 3b2d 4c5e 9f70 1a2b3c4d5e6f"
        );
        assert_eq!(title_from_path("20170719-ldap.txt"), "ldap");
        assert_eq!(
            title_from_path("PM2021-004-adfs-outage.md"),
            "PM2021 004 adfs outage"
        );
    }

    #[test]
    fn severities_from_text() {
        let check = |text: &str, expected: Option<&str>| {
            assert_eq!(severity_in(text).as_deref(), expected, "{text:?}");
        };
        check("This was a SEV2 incident.", Some("SEV2"));
        check("Sev 1: checkout down", Some("SEV1"));
        check("Declared a P1 incident at 14:02.", Some("P1"));
        check("- **Severity**: High", Some("high"));
        check("Severity: 3", Some("SEV3"));
        check("Priority: p2", Some("P2"));
        check("We moved p1 of the database.", None);
        check("several incidents", None);
    }

    #[test]
    fn timestamped_sections_read_in_sequence() {
        let text = "# Hub down\n\n## Timeline\n\n### 12:42 PM\nIncident declared\n> Description: \
            An uptime check on the hub is failing since 12:41 and the alert policy fired.\n\n\
            ### 1:29 PM\nEngineer attempts hub pod restarts.\n\n### 1:35 PM\n\
            Restarting the hub pods is not having the intended effect.\n\n### 1:40 PM\n\
            Attempted to SSH into the node, but it was unresponsive.\n\n### 1:50 PM\n\
            Engineer realizes the proxy could be the root issue. Restarts the proxy pod.\n\n\
            ## Resolution\n\nRemediation involved moving the proxy to a new node pool.\n";
        let parsed = parse("hub.md", text.as_bytes(), &ParseOptions::default());
        let incident = parsed.incident.expect("parsed");
        let step = |needle: &str| {
            incident
                .steps
                .iter()
                .find(|s| s.text.contains(needle))
                .unwrap_or_else(|| panic!("no step with {needle:?}: {:#?}", incident.steps))
        };
        // The marker stays apart from the alert quoted under it.
        assert_eq!(step("Incident declared").kind, StepKind::TimelineEvent);
        assert!(!step("Incident declared").text.contains("uptime"));
        // The verdict comes from the next timestamped section.
        let restart = step("attempts hub pod restarts");
        assert_eq!(
            (restart.kind, restart.outcome),
            (StepKind::Action, Some(Outcome::DidNotHelp))
        );
        assert_eq!(step("SSH into the node").kind, StepKind::Investigation);
        assert!(matches!(
            step("Restarts the proxy pod").kind,
            StepKind::Action | StepKind::Mitigation
        ));
        let remediation = step("Remediation involved");
        assert_eq!(
            (remediation.kind, remediation.outcome),
            (StepKind::Mitigation, Some(Outcome::Helped))
        );
    }

    #[test]
    fn template_named_write_ups_are_not_furniture() {
        assert!(!is_furniture("templates-service-outage.md"));
        assert!(!is_furniture("template-db.md"));
        assert!(is_furniture("README.md"));
        assert!(is_furniture("LICENSE.txt"));
    }

    #[test]
    fn front_matter_summary_is_a_step() {
        let doc = "---\ntitle: T\nsummary: The disk filled.\n---\n\nBody paragraph that is long enough to stand alone as a step.\n";
        let incident = parse("a.md", doc.as_bytes(), &ParseOptions::default())
            .incident
            .unwrap();
        assert_eq!(incident.steps[0].kind, StepKind::Summary);
        assert_eq!(
            (incident.steps[0].line_start, incident.steps[0].line_end),
            (3, 3)
        );
        assert_eq!(incident.steps[1].line_start, 6);
        assert_eq!(incident.summary.as_deref(), Some("The disk filled."));
    }
}
