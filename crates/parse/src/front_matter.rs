//! YAML (`---`) and TOML (`+++`) front matter.

use chrono::NaiveDate;
use precedent_core::{Diagnostic, DiagnosticCode, Level};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::time;

/// The front matter fields the parser understands. Keys are matched case-insensitively and the
/// aliases in each description are accepted too; other keys are ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "precedent write-up front matter")]
pub struct FrontMatter {
    /// Title of the incident.
    pub title: Option<String>,
    /// Start date or datetime (`2021-03-04`, `2021-03-04T14:02:00Z`). Aliases: `start`,
    /// `start_time`, `start_date`, `started`, `started_at`, `incident_date`.
    pub date: Option<NaiveDate>,
    /// End date or datetime. Aliases: `end_time`, `end_date`, `ended`, `ended_at`, `resolved_at`.
    pub end: Option<NaiveDate>,
    /// Severity as written (`SEV1`, `major`, `2`). Aliases: `sev`, `priority`.
    pub severity: Option<String>,
    /// Affected services, a list or a comma-separated string. Aliases: `service`, `product`,
    /// `products`, `component`, `components`, `systems`, `affected_services`.
    #[serde(default)]
    pub services: Vec<String>,
    /// Tags, a list or a comma-separated string. Aliases: `tag`, `categories`, `category`,
    /// `keywords`, `labels`.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Organisation. Aliases: `organization`, `organisation`, `org`.
    pub company: Option<String>,
    /// One-paragraph summary; also indexed as a `summary` step. Aliases: `description`, `tldr`,
    /// `abstract`.
    pub summary: Option<String>,
}

const DATE_KEYS: &[&str] = &[
    "date",
    "start",
    "start_time",
    "start_date",
    "started",
    "started_at",
    "incident_date",
];
const END_KEYS: &[&str] = &[
    "end",
    "end_time",
    "end_date",
    "ended",
    "ended_at",
    "resolved_at",
];
const SEVERITY_KEYS: &[&str] = &["severity", "sev", "priority"];
const SERVICE_KEYS: &[&str] = &[
    "services",
    "service",
    "product",
    "products",
    "component",
    "components",
    "systems",
    "affected_services",
];
const TAG_KEYS: &[&str] = &[
    "tags",
    "tag",
    "categories",
    "category",
    "keywords",
    "labels",
];
const COMPANY_KEYS: &[&str] = &["company", "organization", "organisation", "org"];
const SUMMARY_KEYS: &[&str] = &["summary", "description", "tldr", "abstract"];

/// Front matter found at the top of a document.
#[derive(Debug)]
pub(crate) struct Found {
    pub(crate) fields: FrontMatter,
    /// Byte length of the block, fences included.
    pub(crate) len: usize,
    /// Lines (1-based, inclusive) of the `summary` value, for its step's citation.
    pub(crate) summary_lines: Option<(u32, u32)>,
}

/// Splits off and reads front matter. Unparseable front matter is reported and its block is
/// still removed from the body (it is metadata, not prose).
pub(crate) fn extract(text: &str, diagnostics: &mut Vec<Diagnostic>) -> Option<Found> {
    let (fence, toml) = if text.starts_with("---\n") {
        ("---", false)
    } else if text.starts_with("+++\n") {
        ("+++", true)
    } else {
        return None;
    };
    let body_start = fence.len() + 1;
    let mut offset = body_start;
    let mut close = None;
    for line in text[body_start..].split_inclusive('\n') {
        let trimmed = line.trim_end();
        if trimmed == fence || (!toml && trimmed == "...") {
            close = Some((offset, offset + line.len()));
            break;
        }
        offset += line.len();
    }
    let (inner_end, len) = close?;
    let inner = &text[body_start..inner_end];
    if let Err(why) = within_bounds(inner) {
        diagnostics.push(
            Diagnostic::new(
                Level::Warning,
                DiagnosticCode::FrontMatter,
                format!("front matter ignored: {why}"),
            )
            .at_line(1),
        );
        return Some(Found {
            fields: FrontMatter::default(),
            len,
            summary_lines: None,
        });
    }
    let value: Result<Value, String> = if toml {
        toml::from_str::<Value>(inner).map_err(|e| e.to_string())
    } else {
        serde_norway::from_str::<Value>(inner).map_err(|e| e.to_string())
    };
    let value = match value {
        Ok(value) => value,
        Err(err) => {
            let first_line = err.lines().next().unwrap_or_default().to_owned();
            diagnostics.push(
                Diagnostic::new(
                    Level::Warning,
                    DiagnosticCode::FrontMatter,
                    format!(
                        "front matter is not valid {}: {first_line}",
                        if toml { "TOML" } else { "YAML" }
                    ),
                )
                .at_line(1),
            );
            return Some(Found {
                fields: FrontMatter::default(),
                len,
                summary_lines: None,
            });
        }
    };
    let Value::Object(map) = value else {
        if !value.is_null() {
            diagnostics.push(
                Diagnostic::new(
                    Level::Warning,
                    DiagnosticCode::FrontMatter,
                    "front matter is not a map of keys to values",
                )
                .at_line(1),
            );
        }
        return Some(Found {
            fields: FrontMatter::default(),
            len,
            summary_lines: None,
        });
    };
    let lookup = |keys: &[&str]| -> Option<(&str, &Value)> {
        map.iter()
            .find(|(k, v)| !v.is_null() && keys.iter().any(|key| k.eq_ignore_ascii_case(key)))
            .map(|(k, v)| (k.as_str(), v))
    };
    let mut field_error = |key: &str, expected: &str| {
        diagnostics.push(
            Diagnostic::new(
                Level::Warning,
                DiagnosticCode::FrontMatterField,
                format!("front matter field `{key}` ignored: expected {expected}"),
            )
            .at_line(1),
        );
    };
    let mut string = |keys: &[&str]| -> Option<String> {
        let (key, value) = lookup(keys)?;
        let s = scalar(value);
        if s.is_none() {
            field_error(key, "a string");
        }
        s.filter(|s| !s.is_empty())
    };
    let title = string(&["title"]);
    let severity = string(SEVERITY_KEYS);
    let company = string(COMPANY_KEYS);
    let summary = string(SUMMARY_KEYS);
    let date_start = string(DATE_KEYS);
    let date_end = string(END_KEYS);
    let mut list = |keys: &[&str]| -> Vec<String> {
        let Some((key, value)) = lookup(keys) else {
            return Vec::new();
        };
        match value {
            Value::Array(items) => items
                .iter()
                .filter_map(scalar)
                .filter(|s| !s.is_empty())
                .collect(),
            other => match scalar(other) {
                Some(s) => s
                    .split(',')
                    .map(|p| p.trim().to_owned())
                    .filter(|p| !p.is_empty())
                    .collect(),
                None => {
                    field_error(key, "a list of strings or a comma-separated string");
                    Vec::new()
                }
            },
        }
    };
    let services = list(SERVICE_KEYS);
    let tags = list(TAG_KEYS);
    let mut date = |value: Option<String>, key: &str| -> Option<NaiveDate> {
        let value = value?;
        let date = time::date_value(&value);
        if date.is_none() {
            field_error(key, "a date such as 2021-03-04");
        }
        date
    };
    let date_start = date(date_start, "date");
    let date_end = date(date_end, "end");
    let summary_lines = summary
        .as_ref()
        .and_then(|_| key_lines(text, body_start, inner_end, SUMMARY_KEYS));
    // YAML and TOML unescape (`\x41KIA...`, folded lines): redact the values as read.
    let mut redact = |value: String| crate::redact::redact_at(&value, 1, diagnostics);
    let title = title.map(&mut redact);
    let severity = severity.map(&mut redact);
    let company = company.map(&mut redact);
    let summary = summary.map(&mut redact);
    let services = services.into_iter().map(&mut redact).collect();
    let tags = tags.into_iter().map(&mut redact).collect();
    Some(Found {
        fields: FrontMatter {
            title,
            date: date_start,
            end: date_end,
            severity,
            services,
            tags,
            company,
            summary,
        },
        len,
        summary_lines,
    })
}

/// Front matter past this size is not read: write-up metadata is a few lines.
const MAX_BYTES: usize = 64 * 1024;
/// Flow collections (`[`, `{`) nested past this depth are not read.
const MAX_DEPTH: usize = 32;
/// More flow collections, anchors and aliases than this are not read.
const MAX_NODES: usize = 1024;
/// Lines indented (spaces, `- ` and `? ` markers) past this many columns are not read.
const MAX_INDENT: usize = 256;

/// A cheap scan that keeps inputs that are slow for the YAML parser from reaching it: its cost
/// grows faster than linearly with nesting (200 KB of `[` took 38 s) and aliases multiply work.
/// Brackets inside quoted scalars count too: skipping quotes would let a stray quote hide real
/// nesting, and metadata never needs this much.
fn within_bounds(inner: &str) -> Result<(), String> {
    if inner.len() > MAX_BYTES {
        return Err(format!(
            "{} bytes, over the {MAX_BYTES} byte limit",
            inner.len()
        ));
    }
    let bytes = inner.as_bytes();
    let (mut depth, mut nodes) = (0usize, 0usize);
    let mut previous = b'\n';
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if previous == b'\n' {
            let indent = bytes[i..]
                .iter()
                .take_while(|&&c| matches!(c, b' ' | b'\t' | b'-' | b'?'))
                .count();
            if indent > MAX_INDENT {
                return Err(format!("a line indented over {MAX_INDENT} columns"));
            }
        }
        match b {
            // A comment runs to the end of the line; inside a quoted scalar ` #` is text, but
            // brackets there are text too, so skipping them hides no nesting.
            b'#' if matches!(previous, b' ' | b'\t' | b'\n') => {
                i = memchr::memchr(b'\n', &bytes[i..]).map_or(bytes.len(), |p| i + p);
                previous = b'#';
                continue;
            }
            b'[' | b'{' => {
                depth += 1;
                nodes += 1;
                if depth > MAX_DEPTH {
                    return Err(format!("collections nested over {MAX_DEPTH} deep"));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'&' | b'*' => nodes += 1,
            _ => {}
        }
        if nodes > MAX_NODES {
            return Err(format!(
                "over {MAX_NODES} flow collections, anchors and aliases"
            ));
        }
        previous = b;
        i += 1;
    }
    Ok(())
}

/// A scalar as text; TOML datetimes arrive as a one-key map.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Object(map) if map.len() == 1 => map
            .iter()
            .next()
            .filter(|(k, _)| k.contains("datetime"))
            .and_then(|(_, v)| v.as_str().map(str::to_owned)),
        _ => None,
    }
}

/// Lines of a top-level key's value in the front matter block, for a citation.
fn key_lines(text: &str, start: usize, end: usize, keys: &[&str]) -> Option<(u32, u32)> {
    let first_line = 1 + text[..start].matches('\n').count() as u32;
    let lines: Vec<&str> = text[start..end].lines().collect();
    let is_key = |line: &str| {
        let key = line
            .split([':', '='])
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches('"');
        !line.starts_with([' ', '\t', '-']) && keys.iter().any(|k| key.eq_ignore_ascii_case(k))
    };
    let at = lines.iter().position(|l| is_key(l))?;
    let mut last = at;
    for (i, line) in lines.iter().enumerate().skip(at + 1) {
        let top_level_key =
            !line.starts_with([' ', '\t']) && line.contains([':', '=']) && !line.trim().is_empty();
        if top_level_key {
            break;
        }
        if !line.trim().is_empty() {
            last = i;
        }
    }
    // `summary: >` or `summary:` followed by an indented block: the text starts on the next line.
    let value = lines[at]
        .split_once([':', '='])
        .map_or("", |(_, v)| v.trim());
    let value_starts_below = value.is_empty() || value.starts_with(['>', '|']);
    let first = if value_starts_below && last > at {
        at + 1
    } else {
        at
    };
    Some((first_line + first as u32, first_line + last as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_front_matter() {
        let text = "---\ntitle: Disk full\ndate: 2021-03-04T10:00:00Z\nseverity: 2\nservices: [api, db]\nkeywords: disk, logs\nsummary: >\n  Logs filled\n  the disk.\nweight: 3\n---\n# Body\n";
        let mut diagnostics = Vec::new();
        let found = extract(text, &mut diagnostics).unwrap();
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        assert_eq!(found.fields.title.as_deref(), Some("Disk full"));
        assert_eq!(found.fields.date, "2021-03-04".parse().ok());
        assert_eq!(found.fields.severity.as_deref(), Some("2"));
        assert_eq!(found.fields.services, ["api", "db"]);
        assert_eq!(found.fields.tags, ["disk", "logs"]);
        assert_eq!(
            found.fields.summary.as_deref(),
            Some("Logs filled the disk.")
        );
        assert_eq!(found.summary_lines, Some((8, 9)));
        assert_eq!(&text[found.len..], "# Body\n");
    }

    #[test]
    fn toml_front_matter() {
        let text =
            "+++\ntitle = \"DNS\"\nstart = 2020-01-02T03:04:05Z\ntags = [\"dns\"]\n+++\nbody";
        let mut diagnostics = Vec::new();
        let found = extract(text, &mut diagnostics).unwrap();
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        assert_eq!(found.fields.title.as_deref(), Some("DNS"));
        assert_eq!(found.fields.date, "2020-01-02".parse().ok());
        assert_eq!(found.fields.tags, ["dns"]);
        assert_eq!(&text[found.len..], "body");
    }

    #[test]
    fn hostile_front_matter_is_not_parsed() {
        let check = |inner: String| {
            let text = format!("---\n{inner}\n---\n# Body\n");
            let start = std::time::Instant::now();
            let mut diagnostics = Vec::new();
            let found = extract(&text, &mut diagnostics).unwrap();
            let took = start.elapsed();
            assert!(took.as_millis() < 500, "{took:?}");
            assert_eq!(found.fields, FrontMatter::default());
            assert_eq!(
                diagnostics[0].code,
                DiagnosticCode::FrontMatter,
                "{diagnostics:?}"
            );
            assert_eq!(&text[found.len..], "# Body\n");
            took
        };
        check("[".repeat(200_000));
        check(format!("a: {}", "[".repeat(200_000)));
        check(format!(
            "a: {}{}",
            "{a: ".repeat(50_000),
            "}".repeat(50_000)
        ));
        check(format!("a: {}", "[x, ']', ".repeat(2_000)));
        check("- ".repeat(30_000));
        check(format!("a: {}", "x".repeat(100_000)));
        let laughs: String = (1..10)
            .map(|i| {
                format!(
                    "l{i}: &l{i} [{}]\n",
                    vec![format!("*l{}", i - 1); 10].join(", ")
                )
            })
            .collect();
        check(format!("l0: &l0 lol\n{laughs}"));
    }

    #[test]
    fn ordinary_nesting_is_read() {
        let text = "---\ntitle: \"[draft] {x}\"\ntags: [a, [b, {c: d}]]\nservices:\n  - api\n  - db\n---\n";
        let found = extract(text, &mut Vec::new()).unwrap();
        assert_eq!(found.fields.title.as_deref(), Some("[draft] {x}"));
        assert_eq!(found.fields.services, ["api", "db"]);
    }

    #[test]
    fn bad_front_matter_is_reported_not_fatal() {
        let mut diagnostics = Vec::new();
        let found = extract("---\ntitle: [unclosed\n---\nbody", &mut diagnostics).unwrap();
        assert_eq!(found.fields, FrontMatter::default());
        assert_eq!(diagnostics[0].code, DiagnosticCode::FrontMatter);
        let mut diagnostics = Vec::new();
        let found = extract("---\ntitle: {a: 1}\ndate: soon\n---\n", &mut diagnostics).unwrap();
        assert_eq!(found.fields.title, None);
        assert_eq!(diagnostics.len(), 2, "{diagnostics:?}");
        assert!(extract("---\nnever closed\n", &mut Vec::new()).is_none());
        assert!(extract("# no front matter", &mut Vec::new()).is_none());
    }
}
