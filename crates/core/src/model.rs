//! Incidents, steps and parse diagnostics.

use std::fmt;
use std::str::FromStr;

use chrono::{NaiveDate, NaiveTime};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::card::Card;
use crate::ids::{ContentHash, IncidentId, StepId};

/// What a step is about, following the sections of common post-incident templates.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// Overview of the whole incident.
    Summary,
    /// Who and what was affected, for how long.
    Impact,
    /// Symptoms seen, alerts that fired, how the problem was noticed.
    Detection,
    /// Hypotheses raised, diagnosis, what was checked.
    Investigation,
    /// Things tried during the response.
    Action,
    /// What restored service.
    Mitigation,
    /// Trigger, root cause, contributing factors.
    RootCause,
    /// Lessons: what went well, badly, where we got lucky.
    Lesson,
    /// Action items and prevention work.
    FollowUp,
    /// A timeline entry whose wording names no other kind.
    TimelineEvent,
    /// Anything else.
    Other,
}

impl StepKind {
    /// Every kind, in declaration order.
    pub const ALL: [StepKind; 11] = [
        StepKind::Summary,
        StepKind::Impact,
        StepKind::Detection,
        StepKind::Investigation,
        StepKind::Action,
        StepKind::Mitigation,
        StepKind::RootCause,
        StepKind::Lesson,
        StepKind::FollowUp,
        StepKind::TimelineEvent,
        StepKind::Other,
    ];

    /// The snake_case name used in JSON, filters and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Summary => "summary",
            StepKind::Impact => "impact",
            StepKind::Detection => "detection",
            StepKind::Investigation => "investigation",
            StepKind::Action => "action",
            StepKind::Mitigation => "mitigation",
            StepKind::RootCause => "root_cause",
            StepKind::Lesson => "lesson",
            StepKind::FollowUp => "follow_up",
            StepKind::TimelineEvent => "timeline_event",
            StepKind::Other => "other",
        }
    }
}

impl fmt::Display for StepKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A step kind name that is not one of [`StepKind::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownStepKind(pub String);

impl fmt::Display for UnknownStepKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = StepKind::ALL.iter().map(|k| k.as_str()).collect();
        write!(
            f,
            "unknown step kind {:?}; expected one of {}",
            self.0,
            names.join(", ")
        )
    }
}

impl std::error::Error for UnknownStepKind {}

impl FromStr for StepKind {
    type Err = UnknownStepKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_lowercase().replace(['-', ' '], "_");
        StepKind::ALL
            .into_iter()
            .find(|k| k.as_str() == norm)
            .ok_or_else(|| UnknownStepKind(s.to_owned()))
    }
}

/// What the text says came of a hypothesis or an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The action improved things or fixed them.
    Helped,
    /// The action was tried and changed nothing.
    DidNotHelp,
    /// The hypothesis was checked and rejected.
    RuledOut,
    /// The hypothesis was checked and found true.
    Confirmed,
    /// Tried or suspected, with no stated result.
    Unknown,
}

impl Outcome {
    /// Every outcome, in declaration order.
    pub const ALL: [Outcome; 5] = [
        Outcome::Helped,
        Outcome::DidNotHelp,
        Outcome::RuledOut,
        Outcome::Confirmed,
        Outcome::Unknown,
    ];

    /// The snake_case name used in JSON, filters and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Helped => "helped",
            Outcome::DidNotHelp => "did_not_help",
            Outcome::RuledOut => "ruled_out",
            Outcome::Confirmed => "confirmed",
            Outcome::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Outcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_lowercase().replace(['-', ' '], "_");
        Outcome::ALL
            .iter()
            .copied()
            .find(|o| o.as_str() == norm)
            .ok_or_else(|| {
                let names: Vec<_> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
                format!(
                    "unknown outcome {s:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// When a timeline entry happened, as far as the text says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct At {
    /// The time as written (`14:02 UTC`, `T+5m`, `2021-03-04 14:02`).
    pub raw: String,
    /// The date, when written or implied by a date heading above the entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<NaiveDate>,
    /// The time of day, when written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<NaiveTime>,
    /// Minutes after the start of the incident, for relative times (`T+5m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset_minutes: Option<i64>,
}

/// First and (when known) last day of an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DateRange {
    /// Day the incident started.
    pub start: NaiveDate,
    /// Day it ended, if the write-up says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<NaiveDate>,
}

/// One retrievable unit of a write-up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Step {
    /// Deterministic id (incident id, ordinal, content hash).
    pub id: StepId,
    /// Incident this step belongs to.
    pub incident_id: IncidentId,
    /// Position of the step in its incident, from 0.
    pub ordinal: u32,
    /// What the step is about.
    pub kind: StepKind,
    /// Headings above the step, outermost first, e.g. `["Timeline", "14:02"]`.
    pub heading_path: Vec<String>,
    /// The step's source text (secrets redacted), as written.
    pub text: String,
    /// First line of the step in the source file, from 1.
    pub line_start: u32,
    /// Last line of the step in the source file, inclusive.
    pub line_end: u32,
    /// Time of a timeline entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<At>,
    /// Outcome of a hypothesis or action, when the text states one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
}

impl Step {
    /// The text with its heading path in front, so that it reads on its own; this is what gets
    /// embedded and full-text indexed.
    pub fn contextual_text(&self, title: &str) -> String {
        let mut out = String::with_capacity(title.len() + self.text.len() + 32);
        out.push_str(title);
        for heading in &self.heading_path {
            out.push_str(" > ");
            out.push_str(heading);
        }
        out.push('\n');
        out.push_str(&self.text);
        out
    }
}

/// One entry of an incident's timeline, pointing at its step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TimelineEntry {
    /// When it happened.
    pub at: At,
    /// The step that holds the entry.
    pub step_id: StepId,
    /// The entry's kind, from its own wording.
    pub kind: StepKind,
    /// Line of the entry in the source file.
    pub line: u32,
}

/// One post-incident write-up, parsed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Incident {
    /// Stable id derived from `path`.
    pub id: IncidentId,
    /// Path relative to the corpus root, `/`-separated.
    pub path: String,
    /// Title from front matter, the first heading, or the file name.
    pub title: String,
    /// When it happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<DateRange>,
    /// Severity as written (`SEV1`, `major`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// Services or products affected.
    #[serde(default)]
    pub services: Vec<String>,
    /// Tags, categories and keywords.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Organisation the write-up is about, when named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
    /// One-paragraph summary, from front matter or the first summary section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// blake3 of the file's bytes.
    pub content_hash: ContentHash,
    /// The steps, in document order.
    pub steps: Vec<Step>,
    /// Timestamped steps, in document order.
    #[serde(default)]
    pub timeline: Vec<TimelineEntry>,
    /// The incident at a glance, computed from its steps.
    #[serde(default)]
    pub card: Card,
}

/// How serious a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Worth knowing, nothing lost.
    Info,
    /// Something was repaired or guessed.
    Warning,
    /// The file was skipped.
    Error,
}

/// Stable code of a diagnostic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DiagnosticCode {
    /// The extension is not one the parser reads.
    UnsupportedFormat,
    /// The file holds NUL bytes: binary, skipped.
    Binary,
    /// The file is over the size cap, skipped.
    TooLarge,
    /// The file could not be read.
    Unreadable,
    /// Invalid UTF-8 was replaced with U+FFFD.
    InvalidUtf8,
    /// A byte-order mark was removed.
    Bom,
    /// CRLF or CR line endings were normalised.
    LineEndings,
    /// Front matter could not be parsed; the body was still read.
    FrontMatter,
    /// A front matter field had an unexpected type or value.
    FrontMatterField,
    /// A secret was replaced by a `[REDACTED:...]` marker.
    SecretRedacted,
    /// Nesting deeper than the parser follows was flattened.
    DeepNesting,
    /// A line longer than the parser's limit was split.
    LongLine,
    /// The file has no text to index.
    Empty,
    /// No date could be found.
    NoDate,
}

/// Something the parser noticed, repaired or skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Diagnostic {
    /// How serious it is.
    pub level: Level,
    /// Stable code.
    pub code: DiagnosticCode,
    /// Human-readable explanation.
    pub message: String,
    /// Line it refers to, from 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
}

impl Diagnostic {
    /// A diagnostic without a line.
    pub fn new(level: Level, code: DiagnosticCode, message: impl Into<String>) -> Self {
        Self {
            level,
            code,
            message: message.into(),
            line: None,
        }
    }

    /// The same diagnostic, pointing at `line`.
    pub fn at_line(mut self, line: u32) -> Self {
        self.line = Some(line);
        self
    }
}

/// The result of parsing one file: the incident, unless the file was skipped, and what the
/// parser noticed on the way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Parsed {
    /// The incident; `None` when the file was skipped (see `diagnostics`).
    pub incident: Option<Incident>,
    /// Repairs, guesses and reasons for skipping.
    pub diagnostics: Vec<Diagnostic>,
}

impl Parsed {
    /// Why the file was skipped, if it was.
    pub fn skip_reason(&self) -> Option<&Diagnostic> {
        if self.incident.is_some() {
            return None;
        }
        self.diagnostics.iter().find(|d| d.level == Level::Error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn step_kind_names_round_trip() {
        for kind in StepKind::ALL {
            assert_eq!(kind.as_str().parse::<StepKind>(), Ok(kind));
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
        assert_eq!("Root-Cause".parse::<StepKind>(), Ok(StepKind::RootCause));
        let err = "cause".parse::<StepKind>().unwrap_err().to_string();
        assert!(err.contains("follow_up"), "{err}");
    }

    fn arb_step() -> impl Strategy<Value = Step> {
        (
            "[a-z]{1,10}",
            0u32..1000,
            proptest::sample::select(StepKind::ALL.to_vec()),
            proptest::collection::vec("\\PC{0,12}", 0..3),
            "\\PC{0,200}",
            1u32..5000,
            0u32..50,
            proptest::option::of(proptest::sample::select(vec![
                Outcome::Helped,
                Outcome::DidNotHelp,
                Outcome::RuledOut,
                Outcome::Confirmed,
                Outcome::Unknown,
            ])),
            proptest::option::of((0u32..24, 0u32..60, proptest::option::of(-100i64..1000))),
        )
            .prop_map(
                |(name, ordinal, kind, heading_path, text, line_start, len, outcome, at)| {
                    let incident_id = IncidentId::from_path(&format!("{name}.md"));
                    let id = StepId::new(&incident_id, ordinal, &ContentHash::of(text.as_bytes()));
                    Step {
                        id,
                        incident_id,
                        ordinal,
                        kind,
                        heading_path,
                        text,
                        line_start,
                        line_end: line_start + len,
                        at: at.map(|(h, m, offset)| At {
                            raw: format!("{h:02}:{m:02}"),
                            date: NaiveDate::from_ymd_opt(2021, 3, 4),
                            time: NaiveTime::from_hms_opt(h, m, 0),
                            offset_minutes: offset,
                        }),
                        outcome,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn step_serde_round_trips(step in arb_step()) {
            let json = serde_json::to_string(&step).unwrap();
            let back: Step = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(back, step);
        }
    }
}
