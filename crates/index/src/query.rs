//! Turning free user text into a tantivy query, and highlighting.
//!
//! There is no query syntax to get wrong: the text is analysed into terms and the query is a
//! disjunction of BM25 term queries over the stemmed fields and the identifier field, plus
//! phrase queries for text in double quotes and for the query as a whole (so that
//! `no space left on device` ranks exact phrases first). Quotes may be unbalanced, and `AND`,
//! `-`, `:` and parentheses are words or separators. A query with no terms at all (`(((`)
//! matches nothing lexically; that is not an error.

use std::collections::HashSet;
use std::sync::LazyLock;

use tantivy::Term;
use tantivy::query::{BooleanQuery, BoostQuery, Occur, PhraseQuery, Query, TermQuery};
use tantivy::schema::IndexRecordOption;
use tantivy::tokenizer::TextAnalyzer;

use crate::schema::{TextFields, ident_analyzer, stem_analyzer, terms};
use crate::synonyms::{EXPANSION_WEIGHT, Entry, Synonyms};

/// Most distinct terms taken from one query (longer queries are cut, not refused).
const MAX_TERMS: usize = 64;
/// Longest query, in terms, that also gets a whole-query phrase clause.
const MAX_PHRASE_TERMS: usize = 6;

/// Function words left out of the BM25 disjunction (Lucene's English stop set). They carry
/// almost no BM25 weight, yet each one adds a posting list as long as the index to every long
/// query; phrases keep them, so `no space left on device` still matches as a phrase.
const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it",
    "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these",
    "they", "this", "to", "was", "will", "with",
];

/// [`STOP_WORDS`] as the stem analyser and the identifier analyser (lowercased) emit them.
static STOPS: LazyLock<HashSet<String>> = LazyLock::new(|| {
    let mut stem = stem_analyzer();
    let mut out: HashSet<String> = STOP_WORDS.iter().map(|w| (*w).to_owned()).collect();
    for w in STOP_WORDS {
        out.extend(terms(&mut stem, w));
    }
    out
});

/// `terms` without stop words, unless nothing else is left.
fn content_terms(terms: Vec<String>) -> Vec<String> {
    let kept: Vec<String> = terms
        .iter()
        .filter(|t| !STOPS.contains(&t.to_lowercase()))
        .cloned()
        .collect();
    if kept.is_empty() { terms } else { kept }
}

/// Field weights of the lexical query, tuned on the dev queries.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Boosts {
    pub title: f32,
    pub headings: f32,
    pub text: f32,
    pub ident: f32,
    pub phrase: f32,
}

pub(crate) const BOOSTS: Boosts = Boosts {
    title: 0.6,
    headings: 0.4,
    text: 1.0,
    ident: 0.5,
    phrase: 1.0,
};

/// The analysed query: terms for BM25 and for highlighting.
#[derive(Debug, Clone, Default)]
pub(crate) struct Analyzed {
    /// Distinct stemmed terms, in query order, without stop words (unless nothing else is left).
    pub stems: Vec<String>,
    /// Distinct identifier terms, in query order, likewise without stop words.
    pub idents: Vec<String>,
    /// Quoted phrases (each analysed both ways) and the whole query.
    pub phrases: Vec<(Vec<String>, Vec<String>)>,
    /// Quoted phrases, each analysed both ways: a step must contain every one (as stemmed
    /// words in order, or as identifiers in order) to match.
    pub required: Vec<(Vec<String>, Vec<String>)>,
    /// Synonyms of words and phrases of the query, matched down-weighted.
    pub expansions: Vec<Entry>,
}

impl Analyzed {
    /// The query without synonym expansion.
    #[cfg(test)]
    pub fn plain(text: &str) -> Analyzed {
        Analyzed::new(text, &Synonyms::default())
    }

    pub fn new(text: &str, synonyms: &Synonyms) -> Analyzed {
        let mut stem = stem_analyzer();
        let mut ident = ident_analyzer();
        let (all_stems, all_idents) = (terms(&mut stem, text), terms(&mut ident, text));
        let mut out = Analyzed {
            stems: content_terms(distinct(all_stems.clone())),
            idents: content_terms(distinct(all_idents.clone())),
            phrases: Vec::new(),
            required: Vec::new(),
            expansions: synonyms.expand(&all_stems, &all_idents),
        };
        for phrase in quoted(text) {
            let (st, id) = (terms(&mut stem, phrase), terms(&mut ident, phrase));
            if !st.is_empty() && !id.is_empty() {
                out.required.push((st, id));
            }
        }
        let mut add_phrase = |s: &str, stem: &mut TextAnalyzer, ident: &mut TextAnalyzer| {
            let (st, id) = (terms(stem, s), terms(ident, s));
            if id.len() >= 2 && id.len() <= MAX_PHRASE_TERMS * 2 {
                out.phrases.push((st, id));
            }
        };
        for phrase in quoted(text) {
            add_phrase(phrase, &mut stem, &mut ident);
        }
        if !text.contains('"') && terms(&mut ident, text).len() <= MAX_PHRASE_TERMS {
            add_phrase(text, &mut stem, &mut ident);
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.stems.is_empty() && self.idents.is_empty()
    }

    /// The BM25 query, `None` when the text has no terms.
    pub fn query(&self, f: TextFields, boosts: Boosts) -> Option<Box<dyn Query>> {
        if self.is_empty() {
            return None;
        }
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let mut push = |q: Box<dyn Query>, boost: f32| {
            if boost > 0.0 {
                clauses.push((Occur::Should, Box::new(BoostQuery::new(q, boost))));
            }
        };
        let term = |field, t: &str| -> Box<dyn Query> {
            Box::new(TermQuery::new(
                Term::from_field_text(field, t),
                IndexRecordOption::WithFreqs,
            ))
        };
        for t in &self.stems {
            push(term(f.title, t), boosts.title);
            push(term(f.headings, t), boosts.headings);
            push(term(f.text, t), boosts.text);
        }
        let stems: HashSet<&str> = self.stems.iter().map(String::as_str).collect();
        for t in self.idents.iter().filter(|t| !stems.contains(t.as_str())) {
            push(term(f.ident, t), boosts.ident);
        }
        for e in &self.expansions {
            let w = EXPANSION_WEIGHT;
            if let [t] = e.stems.as_slice() {
                push(term(f.title, t), boosts.title * w);
                push(term(f.headings, t), boosts.headings * w);
                push(term(f.text, t), boosts.text * w);
            } else {
                let terms = e
                    .stems
                    .iter()
                    .map(|t| Term::from_field_text(f.text, t))
                    .collect();
                push(Box::new(PhraseQuery::new(terms)), boosts.text * w);
            }
            if let [t] = e.idents.as_slice() {
                if e.stems.as_slice() != [t.clone()] {
                    push(term(f.ident, t), boosts.ident * w);
                }
            } else if e.idents.len() > 1 {
                let terms = e
                    .idents
                    .iter()
                    .map(|t| Term::from_field_text(f.ident, t))
                    .collect();
                push(Box::new(PhraseQuery::new(terms)), boosts.ident * w);
            }
        }
        for (st, id) in &self.phrases {
            if st.len() >= 2 {
                let terms = st
                    .iter()
                    .map(|t| Term::from_field_text(f.text, t))
                    .collect();
                push(Box::new(PhraseQuery::new(terms)), boosts.phrase);
            }
            let terms = id
                .iter()
                .map(|t| Term::from_field_text(f.ident, t))
                .collect();
            push(Box::new(PhraseQuery::new(terms)), boosts.phrase);
        }
        if let Some(required) = self.required_query(f) {
            // Scored by the other clauses; the quoted phrases only decide what may match.
            clauses.push((Occur::Must, Box::new(BoostQuery::new(required, 0.0))));
        }
        Some(Box::new(BooleanQuery::new(clauses)))
    }

    /// A query matching the steps that contain every quoted phrase (as stemmed words in the
    /// text or as identifiers anywhere in the step), `None` when nothing is quoted.
    pub fn required_query(&self, f: TextFields) -> Option<Box<dyn Query>> {
        if self.required.is_empty() {
            return None;
        }
        let sequence = |field, words: &[String]| -> Box<dyn Query> {
            if let [one] = words {
                Box::new(TermQuery::new(
                    Term::from_field_text(field, one),
                    IndexRecordOption::Basic,
                ))
            } else {
                Box::new(PhraseQuery::new(
                    words
                        .iter()
                        .map(|t| Term::from_field_text(field, t))
                        .collect(),
                ))
            }
        };
        let all = self
            .required
            .iter()
            .map(|(st, id)| -> (Occur, Box<dyn Query>) {
                let either = BooleanQuery::new(vec![
                    (Occur::Should, sequence(f.text, st)),
                    (Occur::Should, sequence(f.ident, id)),
                ]);
                (Occur::Must, Box::new(either))
            })
            .collect();
        Some(Box::new(BooleanQuery::new(all)))
    }

    /// Whether `text` (a step's text, or title, headings and text for identifiers) contains
    /// every quoted phrase, as [`Analyzed::required_query`] decides it: the check for stores
    /// that cannot run that query.
    #[cfg(feature = "qdrant")]
    pub fn satisfies_required(&self, text: &str, all: &str) -> bool {
        if self.required.is_empty() {
            return true;
        }
        let contains = |seq: &[String], part: &[String]| seq.windows(part.len()).any(|w| w == part);
        let stems = terms(&mut stem_analyzer(), text);
        let idents = terms(&mut ident_analyzer(), all);
        self.required
            .iter()
            .all(|(st, id)| contains(&stems, st) || contains(&idents, id))
    }
}

fn distinct(terms: Vec<String>) -> Vec<String> {
    let mut seen = HashSet::new();
    terms
        .into_iter()
        .filter(|t| seen.insert(t.clone()))
        .take(MAX_TERMS)
        .collect()
}

/// Text between pairs of double quotes; an unpaired last quote is ignored.
fn quoted(text: &str) -> Vec<&str> {
    let parts: Vec<&str> = text.split('"').collect();
    // parts at odd indexes are inside quotes, except a trailing one with no closing quote.
    let closed = if parts.len().is_multiple_of(2) {
        parts.len() - 1
    } else {
        parts.len()
    };
    parts[..closed]
        .iter()
        .skip(1)
        .step_by(2)
        .copied()
        .filter(|p| !p.trim().is_empty())
        .collect()
}

/// The largest char boundary of `text` at or below `index` (`str::floor_char_boundary` needs a
/// newer Rust than the workspace's MSRV).
pub(crate) fn floor_boundary(text: &str, index: usize) -> usize {
    let mut i = index.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Builds snippets: a window of the text around the densest cluster of query terms, matched
/// words wrapped in `**`.
#[derive(Debug)]
pub(crate) struct Highlighter {
    stems: HashSet<String>,
    idents: HashSet<String>,
}

/// Longest snippet, in bytes (plus marks and ellipses).
const SNIPPET_BYTES: usize = 240;

/// Words never highlighted, beyond [`STOP_WORDS`]: common function words, numbers spelt out
/// and reporting filler, which match everywhere and say nothing about why a step was found.
const NOT_HIGHLIGHTED: &[&str] = &[
    "about", "above", "after", "again", "against", "all", "also", "am", "any", "because", "been",
    "before", "being", "below", "between", "both", "can", "could", "did", "do", "does", "doing",
    "down", "during", "each", "few", "from", "further", "had", "has", "have", "having", "he",
    "her", "here", "him", "his", "how", "i", "its", "just", "more", "most", "my", "nor", "now",
    "off", "once", "one", "only", "other", "our", "out", "over", "own", "same", "she", "should",
    "so", "some", "than", "them", "those", "through", "too", "two", "under", "until", "up", "very",
    "we", "were", "what", "when", "where", "which", "while", "who", "whom", "why", "would", "you",
    "your", "us", "via", "got", "get", "report", "reports", "reported", "saw", "seen", "see",
    "started", "start", "three",
];

/// Whether a term is worth marking in a snippet: not a stop word or filler (in any of its
/// analysed forms).
fn highlightable(term: &str) -> bool {
    static SKIP: LazyLock<HashSet<String>> = LazyLock::new(|| {
        let mut stem = stem_analyzer();
        let mut out: HashSet<String> = STOPS.clone();
        for w in NOT_HIGHLIGHTED {
            out.insert((*w).to_owned());
            out.extend(terms(&mut stem, w));
        }
        out
    });
    !SKIP.contains(term)
}

impl Highlighter {
    /// Marks the query's content words and its single-word synonyms; stop words and filler
    /// never.
    pub fn new(analyzed: &Analyzed) -> Highlighter {
        let single = |f: fn(&Entry) -> &Vec<String>| {
            analyzed
                .expansions
                .iter()
                .filter_map(move |e| match f(e).as_slice() {
                    [t] => Some(t.clone()),
                    _ => None,
                })
        };
        Highlighter {
            stems: analyzed
                .stems
                .iter()
                .cloned()
                .chain(single(|e| &e.stems))
                .filter(|t| highlightable(t))
                .collect(),
            idents: analyzed
                .idents
                .iter()
                .cloned()
                .chain(single(|e| &e.idents))
                .filter(|t| highlightable(t))
                .collect(),
        }
    }

    pub fn snippet(&self, text: &str) -> String {
        let mut spans: Vec<(usize, usize, String)> = Vec::new();
        let mut stem = stem_analyzer();
        let mut stream = stem.token_stream(text);
        while let Some(t) = stream.next() {
            if self.stems.contains(&t.text) {
                spans.push((t.offset_from, t.offset_to, t.text.clone()));
            }
        }
        let mut ident = ident_analyzer();
        let mut stream = ident.token_stream(text);
        while let Some(t) = stream.next() {
            if self.idents.contains(&t.text) {
                spans.push((t.offset_from, t.offset_to, t.text.clone()));
            }
        }
        spans.sort_by_key(|s| (s.0, std::cmp::Reverse(s.1)));
        // Drop spans nested in or overlapping an earlier one.
        let mut merged: Vec<(usize, usize, String)> = Vec::new();
        for span in spans {
            match merged.last() {
                Some(last) if span.0 < last.1 => {}
                _ => merged.push(span),
            }
        }
        snippet_around(text, &merged)
    }
}

/// The passage of `text` (about [`SNIPPET_BYTES`]) with the most distinct matched terms,
/// matches wrapped in `**`. `merged` holds matches as (start, end, term), sorted and disjoint.
pub(crate) fn snippet_around(text: &str, merged: &[(usize, usize, String)]) -> String {
    // Window with the most distinct matched terms.
    let (mut best_start, mut best_score) = (0usize, 0usize);
    for (i, span) in merged.iter().enumerate() {
        let window_end = span.0 + SNIPPET_BYTES;
        let distinct: HashSet<&str> = merged[i..]
            .iter()
            .take_while(|s| s.1 <= window_end)
            .map(|s| s.2.as_str())
            .collect();
        if distinct.len() > best_score {
            best_score = distinct.len();
            best_start = span.0;
        }
    }
    // Start a little before the first match, at a word boundary.
    let mut start = if best_start <= 40 {
        0
    } else {
        floor_boundary(text, best_start - 40)
    };
    if start > 0
        && let Some(space) = text[start..best_start].find(char::is_whitespace)
    {
        start += space + 1;
    }
    let mut end = floor_boundary(text, start + SNIPPET_BYTES);
    if end < text.len()
        && let Some(space) = text[start..end].rfind(char::is_whitespace)
        && space > 0
    {
        end = start + space;
    }
    let mut out = String::with_capacity(end - start + 16);
    if start > 0 {
        out.push('…');
    }
    let mut at = start;
    for (from, to, _) in merged.iter().filter(|s| s.0 >= start && s.1 <= end) {
        out.push_str(&text[at..*from]);
        out.push_str("**");
        out.push_str(&text[*from..*to]);
        out.push_str("**");
        at = *to;
    }
    out.push_str(&text[at..end]);
    if end < text.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_words_leave_the_disjunction_but_not_the_phrase() {
        let a = Analyzed::plain("The disk is full on db1");
        assert_eq!(a.stems, ["disk", "full", "db1"]);
        assert!(!a.idents.iter().any(|t| t.eq_ignore_ascii_case("the")));
        // The whole-query phrase keeps every word, so exact wording still ranks first.
        assert_eq!(a.phrases.len(), 1);
        assert_eq!(a.phrases[0].0.len(), 6);
        // A query of nothing but stop words still searches for them.
        assert_eq!(
            Analyzed::plain("to be or not").stems,
            ["to", "be", "or", "not"]
        );
    }

    #[test]
    fn quotes_are_found_and_unbalanced_ones_ignored() {
        assert_eq!(quoted(r#"a "b c" d "e f""#), ["b c", "e f"]);
        assert_eq!(quoted(r#"a "b c" d "e f"#), ["b c"]);
        assert_eq!(quoted(r#"""#), Vec::<&str>::new());
        assert_eq!(quoted("no quotes"), Vec::<&str>::new());
    }

    #[test]
    fn weird_queries_analyse_without_panicking() {
        let (_, fields) = crate::schema::StepFields::schema();
        for q in [
            "\"",
            "-",
            "a:b",
            "(((",
            "AND",
            "\"unbalanced phrase",
            "",
            &"x".repeat(10_000),
        ] {
            let analyzed = Analyzed::plain(q);
            let built = analyzed.query(fields.text_fields(), BOOSTS);
            assert_eq!(built.is_none(), analyzed.is_empty(), "{q:?}");
        }
        assert!(Analyzed::plain("(((").is_empty());
        let long: String = (0..5000).map(|i| format!("w{i} ")).collect();
        assert_eq!(Analyzed::plain(&long).stems.len(), MAX_TERMS);
    }

    #[test]
    fn whole_query_and_quoted_phrases_become_phrase_clauses() {
        let a = Analyzed::plain("no space left on device");
        assert_eq!(a.phrases.len(), 1);
        assert_eq!(a.phrases[0].1, ["no", "space", "left", "on", "device"]);
        let a = Analyzed::plain(r#"disk "no space left" again"#);
        assert_eq!(a.phrases.len(), 1);
        assert_eq!(a.phrases[0].1, ["no", "space", "left"]);
    }

    #[test]
    fn snippets_mark_matches_and_stay_short() {
        let h = Highlighter::new(&Analyzed::plain("pods OOMKilled"));
        assert_eq!(
            h.snippet("Two pods were OOMKilled."),
            "Two **pods** were **OOMKilled**."
        );
        let long = format!(
            "{} the pod was OOMKilled {}",
            "word ".repeat(100),
            "tail ".repeat(100)
        );
        let s = h.snippet(&long);
        assert!(s.starts_with('…') && s.ends_with('…'), "{s}");
        assert!(s.contains("**OOMKilled**"), "{s}");
        assert!(s.len() < SNIPPET_BYTES + 40, "{}", s.len());
        // No match: the start of the text.
        let h = Highlighter::new(&Analyzed::plain("zebra"));
        assert!(h.snippet(&long).starts_with("word word"));
        // Stop words and filler are never marked, even when they are all the query has.
        let h = Highlighter::new(&Analyzed::plain(
            "one disk after some reports from the host",
        ));
        assert_eq!(
            h.snippet("One disk filled after reports from the host."),
            "One **disk** filled after reports from the **host**."
        );
        let h = Highlighter::new(&Analyzed::plain("to be or not"));
        assert_eq!(h.snippet("to be or not"), "to be or not");
        // Multi-byte text near the cut does not panic.
        let h = Highlighter::new(&Analyzed::plain("é"));
        let _ = h.snippet(&"é".repeat(400));
    }
}
