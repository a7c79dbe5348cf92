//! Tantivy schemas and analyzers.
//!
//! Two indexes live in each data directory: `steps/` (one document per step, what search ranks)
//! and `incidents/` (one document per incident: its full parse as JSON, for `incident(id)`, and
//! its whole text, analysed as steps are, for the incident-level leg of a search).
//!
//! Step documents are analysed two ways:
//! - `title`, `headings` and `text` with [`STEM`]: words, lowercased, English-stemmed, so
//!   "expired" matches "expiry"-free text about "expiring" certificates;
//! - `ident` (title + headings + text again) with [`IDENT`]: identifiers and error strings kept
//!   whole and unstemmed: `OOMKilled`, `ECONNRESET`, `x509`, `cert-manager`, `v4.12`,
//!   `insecure_skip_verify`, lowercased, with positions so that `no space left on device`
//!   matches as a phrase.

use tantivy::Index;
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, Stemmer, TextAnalyzer, Token, TokenStream, Tokenizer,
};

/// Stemmed English words.
pub(crate) const STEM: &str = "precedent_stem";
/// Whole identifiers.
pub(crate) const IDENT: &str = "precedent_ident";

/// Fields of a step document.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepFields {
    pub step_id: Field,
    /// Vector key (u64), fast: joins a document to its vector and filter attributes.
    pub key: Field,
    pub incident_id: Field,
    pub title: Field,
    pub headings: Field,
    pub text: Field,
    pub ident: Field,
    pub kind: Field,
    pub services: Field,
    pub severity: Field,
    pub tags: Field,
    /// Incident start, days since 1970-01-01.
    pub date: Field,
    /// The step's outcome (`helped`, `did_not_help`, ...), absent when none.
    pub outcome: Field,
    /// The step's heading path as a JSON array (stored only; `headings` is the searchable form).
    pub heading_path: Field,
    pub path: Field,
    pub line_start: Field,
    pub line_end: Field,
}

pub(crate) const KEY_FIELD: &str = "key";

/// The searchable text fields of a document, step or incident: what a BM25 query runs over.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TextFields {
    pub title: Field,
    pub headings: Field,
    pub text: Field,
    pub ident: Field,
}

impl StepFields {
    pub fn text_fields(&self) -> TextFields {
        TextFields {
            title: self.title,
            headings: self.headings,
            text: self.text,
            ident: self.ident,
        }
    }
}

impl StepFields {
    pub fn schema() -> (Schema, StepFields) {
        let mut b = Schema::builder();
        let stemmed = |stored: bool| {
            let options = analysed(STEM);
            if stored {
                options.set_stored()
            } else {
                options
            }
        };
        let keyword = STRING | FAST;
        let fields = StepFields {
            step_id: b.add_text_field("step_id", STRING | STORED),
            key: b.add_u64_field(KEY_FIELD, INDEXED | FAST | STORED),
            incident_id: b.add_text_field("incident_id", keyword.clone() | STORED),
            title: b.add_text_field("title", stemmed(true)),
            headings: b.add_text_field("headings", stemmed(false)),
            text: b.add_text_field("text", stemmed(true)),
            ident: b.add_text_field("ident", analysed(IDENT)),
            kind: b.add_text_field("kind", keyword.clone() | STORED),
            services: b.add_text_field("services", keyword.clone()),
            severity: b.add_text_field("severity", keyword.clone()),
            tags: b.add_text_field("tags", keyword.clone()),
            date: b.add_i64_field("date", INDEXED | FAST),
            outcome: b.add_text_field("outcome", keyword.clone() | STORED),
            heading_path: b.add_text_field("heading_path", STORED),
            path: b.add_text_field("path", STORED),
            line_start: b.add_u64_field("line_start", STORED),
            line_end: b.add_u64_field("line_end", STORED),
        };
        (b.build(), fields)
    }

    pub fn of(index: &Index) -> tantivy::Result<StepFields> {
        let s = index.schema();
        Ok(StepFields {
            step_id: s.get_field("step_id")?,
            key: s.get_field(KEY_FIELD)?,
            incident_id: s.get_field("incident_id")?,
            title: s.get_field("title")?,
            headings: s.get_field("headings")?,
            text: s.get_field("text")?,
            ident: s.get_field("ident")?,
            kind: s.get_field("kind")?,
            services: s.get_field("services")?,
            severity: s.get_field("severity")?,
            tags: s.get_field("tags")?,
            date: s.get_field("date")?,
            outcome: s.get_field("outcome")?,
            heading_path: s.get_field("heading_path")?,
            path: s.get_field("path")?,
            line_start: s.get_field("line_start")?,
            line_end: s.get_field("line_end")?,
        })
    }
}

/// Fields of an incident document: the parse, and the whole write-up's text for the
/// incident-level BM25 leg (a step's rank draws on its incident's evidence).
#[derive(Debug, Clone, Copy)]
pub(crate) struct IncidentFields {
    pub incident_id: Field,
    /// Hash of the incident id (fast): joins a hit to the snapshot's incident list without
    /// reading the stored document.
    pub key: Field,
    /// The whole [`precedent_core::Incident`] as JSON.
    pub json: Field,
    pub title: Field,
    /// Every heading of the write-up.
    pub headings: Field,
    /// Every step's text.
    pub text: Field,
    /// Title, headings and text again, as identifiers.
    pub ident: Field,
}

impl IncidentFields {
    pub fn schema() -> (Schema, IncidentFields) {
        let mut b = Schema::builder();
        let fields = IncidentFields {
            incident_id: b.add_text_field("incident_id", STRING | STORED),
            key: b.add_u64_field(KEY_FIELD, INDEXED | FAST),
            json: b.add_text_field("json", STORED),
            title: b.add_text_field("title", analysed(STEM)),
            headings: b.add_text_field("headings", analysed(STEM)),
            text: b.add_text_field("text", analysed(STEM)),
            ident: b.add_text_field("ident", analysed(IDENT)),
        };
        (b.build(), fields)
    }

    pub fn of(index: &Index) -> tantivy::Result<IncidentFields> {
        let s = index.schema();
        Ok(IncidentFields {
            incident_id: s.get_field("incident_id")?,
            key: s.get_field(KEY_FIELD)?,
            json: s.get_field("json")?,
            title: s.get_field("title")?,
            headings: s.get_field("headings")?,
            text: s.get_field("text")?,
            ident: s.get_field("ident")?,
        })
    }

    pub fn text_fields(&self) -> TextFields {
        TextFields {
            title: self.title,
            headings: self.headings,
            text: self.text,
            ident: self.ident,
        }
    }
}

/// A text field analysed by `tokenizer`, with frequencies and positions (for phrases).
fn analysed(tokenizer: &str) -> TextOptions {
    TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(tokenizer)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    )
}

/// The `key` of an incident document: the first 8 bytes of the BLAKE3 hash of its id.
pub(crate) fn incident_key(id: &str) -> u64 {
    let hash = blake3::hash(id.as_bytes());
    u64::from_le_bytes(hash.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// Registers the analyzers an index of ours needs (they are not persisted by tantivy).
pub(crate) fn register_tokenizers(index: &Index) {
    index.tokenizers().register(STEM, stem_index_analyzer());
    index.tokenizers().register(IDENT, ident_analyzer());
}

/// The analyser of stemmed fields as queries see it: words split at case changes
/// (`CrashLoopBackOff` is `crash loop back off`; the whole identifier is in `ident`), number
/// plurals reduced (`502s` is `502`), lowercased, English-stemmed.
pub(crate) fn stem_analyzer() -> TextAnalyzer {
    stem_with(false)
}

/// The analyser of stemmed fields as documents are indexed: [`stem_analyzer`], and an HTTP
/// status code also stands for its class at the same position (`502` is also `5xx`), so a
/// query for `5xx errors` finds `502`, `503` and `504`.
pub(crate) fn stem_index_analyzer() -> TextAnalyzer {
    stem_with(true)
}

fn stem_with(classes: bool) -> TextAnalyzer {
    TextAnalyzer::builder(OpsTokenizer {
        classes,
        tokens: Vec::new(),
    })
    .filter(RemoveLongFilter::limit(48))
    .filter(LowerCaser)
    .filter(Stemmer::new(Language::English))
    .build()
}

/// Splits text into runs of letters and digits (as tantivy's `SimpleTokenizer`), then each run
/// at case changes (`OOMKilled` -> `OOM`, `Killed`; `HTTPServer` -> `HTTP`, `Server`); a run of
/// digits followed by a plural `s` becomes the digits. With `classes`, a three-digit number from
/// 100 to 599 is followed, at the same position, by its class (`5xx`).
#[derive(Debug, Clone)]
pub(crate) struct OpsTokenizer {
    classes: bool,
    tokens: Vec<Token>,
}

pub(crate) struct OpsTokenStream<'a> {
    tokens: &'a mut Vec<Token>,
    next: usize,
}

/// Byte ranges of the parts of `run` split at case changes.
fn case_parts(run: &str) -> Vec<(usize, usize)> {
    let chars: Vec<(usize, char)> = run.char_indices().collect();
    let has_lower = chars.iter().any(|(_, c)| c.is_lowercase());
    let has_upper = chars.iter().skip(1).any(|(_, c)| c.is_uppercase());
    if !has_lower || !has_upper {
        return vec![(0, run.len())];
    }
    let mut parts = Vec::new();
    let mut start = 0;
    for i in 1..chars.len() {
        let (at, c) = chars[i];
        let prev = chars[i - 1].1;
        let next_lower = chars.get(i + 1).is_some_and(|(_, n)| n.is_lowercase());
        let boundary =
            c.is_uppercase() && (prev.is_lowercase() || (prev.is_uppercase() && next_lower));
        if boundary {
            parts.push((start, at));
            start = at;
        }
    }
    parts.push((start, run.len()));
    parts
}

impl OpsTokenizer {
    fn push(&mut self, text: &str, from: usize, to: usize, position: usize) {
        self.tokens.push(Token {
            offset_from: from,
            offset_to: to,
            position,
            text: text.to_owned(),
            position_length: 1,
        });
    }
}

impl Tokenizer for OpsTokenizer {
    type TokenStream<'a> = OpsTokenStream<'a>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> OpsTokenStream<'a> {
        self.tokens.clear();
        let mut position = 0usize;
        let mut start = None;
        let bytes_end = text.len();
        let mut runs = Vec::new();
        for (i, c) in text.char_indices() {
            match (c.is_alphanumeric(), start) {
                (true, None) => start = Some(i),
                (false, Some(s)) => {
                    runs.push((s, i));
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            runs.push((s, bytes_end));
        }
        for (from, to) in runs {
            let run = &text[from..to];
            let digits = run.trim_end_matches(['s', 'S']);
            let plural =
                digits.len() + 1 == run.len() && digits.bytes().all(|b| b.is_ascii_digit());
            let parts = if plural {
                vec![(0, digits.len())]
            } else {
                case_parts(run)
            };
            for (a, b) in parts {
                let part = &run[a..b];
                let end = if plural { to } else { from + b };
                self.push(part, from + a, end, position);
                if self.classes
                    && part.len() == 3
                    && part.bytes().all(|b| b.is_ascii_digit())
                    && (b'1'..=b'5').contains(&part.as_bytes()[0])
                {
                    let class = format!("{}xx", &part[..1]);
                    self.push(&class, from + a, end, position);
                }
                position += 1;
            }
        }
        OpsTokenStream {
            tokens: &mut self.tokens,
            next: 0,
        }
    }
}

impl TokenStream for OpsTokenStream<'_> {
    fn advance(&mut self) -> bool {
        self.next += 1;
        self.next <= self.tokens.len()
    }

    fn token(&self) -> &Token {
        &self.tokens[self.next - 1]
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.tokens[self.next - 1]
    }
}

pub(crate) fn ident_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(IdentTokenizer::default())
        .filter(RemoveLongFilter::limit(64))
        .build()
}

/// Analyses `text` into its terms, in order.
pub(crate) fn terms(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stream = analyzer.token_stream(text);
    while let Some(token) = stream.next() {
        out.push(token.text.clone());
    }
    out
}

/// Splits on whitespace and punctuation but keeps runs of letters, digits and `_` whole, joined
/// by single inner `-` or `.` (`cert-manager`, `v4.12`, `10.0.0.1`); lowercases.
#[derive(Debug, Clone, Default)]
pub(crate) struct IdentTokenizer {
    token: Token,
}

pub(crate) struct IdentTokenStream<'a> {
    text: &'a str,
    offset: usize,
    token: &'a mut Token,
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

impl Tokenizer for IdentTokenizer {
    type TokenStream<'a> = IdentTokenStream<'a>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> IdentTokenStream<'a> {
        self.token.reset();
        IdentTokenStream {
            text,
            offset: 0,
            token: &mut self.token,
        }
    }
}

impl TokenStream for IdentTokenStream<'_> {
    fn advance(&mut self) -> bool {
        let rest = &self.text[self.offset..];
        let Some(start_rel) = rest.find(is_word) else {
            self.offset = self.text.len();
            return false;
        };
        let start = self.offset + start_rel;
        let mut end = start;
        let mut chars = self.text[start..].char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if is_word(c) {
                end = start + i + c.len_utf8();
            } else if (c == '-' || c == '.') && chars.peek().is_some_and(|(_, next)| is_word(*next))
            {
                continue;
            } else {
                break;
            }
        }
        self.offset = end;
        self.token.offset_from = start;
        self.token.offset_to = end;
        self.token.position = self.token.position.wrapping_add(1);
        self.token.text.clear();
        for c in self.text[start..end].chars() {
            self.token.text.extend(c.to_lowercase());
        }
        true
    }

    fn token(&self) -> &Token {
        self.token
    }

    fn token_mut(&mut self) -> &mut Token {
        self.token
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(analyzer: fn() -> TextAnalyzer, input: &str, expected: &[&str]) {
        assert_eq!(terms(&mut analyzer(), input), expected, "{input:?}");
    }

    #[test]
    fn ident_keeps_identifiers_whole() {
        check(
            ident_analyzer,
            "Pods OOMKilled; ECONNRESET from x509!",
            &["pods", "oomkilled", "econnreset", "from", "x509"],
        );
        check(
            ident_analyzer,
            "cert-manager v4.12 at 10.0.0.1.",
            &["cert-manager", "v4.12", "at", "10.0.0.1"],
        );
        check(
            ident_analyzer,
            "insecure_skip_verify: true -- a - b",
            &["insecure_skip_verify", "true", "a", "b"],
        );
        check(
            ident_analyzer,
            "route53:ChangeResourceRecordSets",
            &["route53", "changeresourcerecordsets"],
        );
        check(ident_analyzer, "\"(((\" - a:b", &["a", "b"]);
        check(ident_analyzer, "", &[]);
        check(ident_analyzer, "Ünïcode ДИСК", &["ünïcode", "диск"]);
    }

    #[test]
    fn ident_positions_are_consecutive() {
        let mut analyzer = ident_analyzer();
        let mut stream = analyzer.token_stream("no space left on device");
        let mut positions = Vec::new();
        while let Some(token) = stream.next() {
            positions.push(token.position);
        }
        assert_eq!(positions, [0, 1, 2, 3, 4]);
    }

    #[test]
    fn stem_analyzer_stems_english() {
        check(stem_analyzer, "Certificates expired", &["certif", "expir"]);
    }

    #[test]
    fn stem_analyzer_splits_identifiers_and_number_plurals() {
        check(
            stem_analyzer,
            "CrashLoopBackOff crash-loop cert-manager OOMKilled",
            &[
                "crash", "loop", "back", "off", "crash", "loop", "cert", "manag", "oom", "kill",
            ],
        );
        check(
            stem_analyzer,
            "HTTPServer x509 ipv4",
            &["http", "server", "x509", "ipv4"],
        );
        check(stem_analyzer, "502s and 5xx", &["502", "and", "5xx"]);
        check(
            stem_analyzer,
            "insecure_skip_verify v4.12",
            &["insecur", "skip", "verifi", "v4", "12"],
        );
        check(
            stem_analyzer,
            "Ünïcode ДИСК ПолныйДиск",
            &["ünïcode", "диск", "полный", "диск"],
        );
        check(stem_analyzer, "", &[]);
    }

    #[test]
    fn indexed_status_codes_also_stand_for_their_class() {
        check(stem_index_analyzer, "got 502s", &["got", "502", "5xx"]);
        check(
            stem_index_analyzer,
            "port 8080, 404",
            &["port", "8080", "404", "4xx"],
        );
        let mut analyzer = stem_index_analyzer();
        let mut stream = analyzer.token_stream("a 503 b");
        let mut positions = Vec::new();
        while let Some(token) = stream.next() {
            positions.push(token.position);
        }
        assert_eq!(positions, [0, 1, 1, 2]);
    }
}
