//! Secret redaction, before any text leaves the parser.
//!
//! The rules are data: `rules/gitleaks.toml` is gitleaks' default rule set (MIT, Zachary Rice;
//! copied verbatim, licence in its header) and `rules/local.toml` adds rules in the same format
//! for how secrets appear in prose and pasted configuration (short and multi-word passwords,
//! prefixed names, connection strings, URL user info, truncated PEM blocks, long random tokens
//! next to a secret-ish word). A local rule with a gitleaks id replaces it.
//!
//! Matching follows gitleaks: a rule runs only when one of its keywords occurs (one `RegexSet`
//! over all keywords finds which), the secret is `secretGroup` or the first group that took
//! part, it must reach the rule's Shannon entropy, and allowlists (regexes on the secret, the
//! match or the line; stopwords) drop false positives. Adaptations: patterns run over bytes with
//! ASCII classes (faster; secrets are ASCII), rules compile on first use, rules that only apply to
//! some file types (`path`) are left out, and gitleaks' token terminator (whitespace, quote or
//! `;`) also accepts prose punctuation, because write-ups end tokens with `.`, `,` or `)`.
//!
//! Redaction runs twice: on the raw text (so front matter and line-based code see no secret) and
//! on each rendered leaf (so secrets the Markdown renderer reassembles from escapes, emphasis or
//! entities are caught in the text that is indexed and shown). File names go through
//! [`redact_name`].

use std::collections::HashMap;
use std::sync::{LazyLock, OnceLock};

use precedent_core::{Diagnostic, DiagnosticCode, Level};
use regex::bytes::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use serde::Deserialize;

use crate::leaf::{Leaf, line_at};
use crate::text::LineIndex;

const GITLEAKS_RULES: &str = include_str!("rules/gitleaks.toml");
const LOCAL_RULES: &str = include_str!("rules/local.toml");

/// gitleaks' token terminator, and what it becomes here.
const GITLEAKS_END: &str = r#"(?:[\x60'"\s;]|\\[nr]|$)"#;
const PROSE_END: &str = r#"(?:[^A-Za-z0-9+/=_-]|\\[nr]|$)"#;

/// What a redacted secret becomes: `[REDACTED:rule-id]`.
const MARKER: &str = "[REDACTED:";

/// Compiled regexes are capped: a rule past this is dropped rather than slow to build.
const REGEX_SIZE_LIMIT: usize = 8 << 20;

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    allowlist: Option<AllowSpec>,
    #[serde(default)]
    rules: Vec<RuleSpec>,
}

#[derive(Deserialize)]
struct RuleSpec {
    id: String,
    regex: Option<String>,
    entropy: Option<f64>,
    #[serde(default)]
    keywords: Vec<String>,
    #[serde(rename = "secretGroup")]
    secret_group: Option<usize>,
    path: Option<String>,
    #[serde(default)]
    allowlists: Vec<AllowSpec>,
}

#[derive(Deserialize, Default)]
struct AllowSpec {
    condition: Option<String>,
    #[serde(rename = "regexTarget")]
    regex_target: Option<String>,
    #[serde(default)]
    regexes: Vec<String>,
    #[serde(default)]
    stopwords: Vec<String>,
    #[serde(default)]
    paths: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    Secret,
    Match,
    Line,
}

/// One allowlist: a finding it matches is not a secret.
struct Allow {
    and: bool,
    target: Target,
    regexes: Vec<Regex>,
    /// Lowercase.
    stopwords: Vec<String>,
}

struct Rule {
    id: String,
    source: String,
    entropy: Option<f64>,
    group: Option<usize>,
    allow_specs: Vec<AllowSpec>,
    compiled: OnceLock<Option<Compiled>>,
}

struct Compiled {
    regex: Regex,
    allows: Vec<Allow>,
}

struct Engine {
    rules: Vec<Rule>,
    /// Keyword set; pattern `i` triggers the rules in `keyword_rules[i]`.
    keywords: RegexSet,
    keyword_rules: Vec<Vec<usize>>,
    /// Rules without keywords run always.
    always: Vec<usize>,
    global: Allow,
}

fn build(pattern: &str) -> Option<Regex> {
    RegexBuilder::new(pattern)
        .unicode(false)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .ok()
}

impl Allow {
    fn compile(spec: &AllowSpec) -> Option<Allow> {
        // Path conditions never hold for write-up text: a path-only allowlist allows nothing,
        // and an AND with a path can never be met.
        let and = spec
            .condition
            .as_deref()
            .is_some_and(|c| c.eq_ignore_ascii_case("and"));
        if !spec.paths.is_empty() && and {
            return None;
        }
        if spec.regexes.is_empty() && spec.stopwords.is_empty() {
            return None;
        }
        let target = match spec.regex_target.as_deref() {
            Some("match") => Target::Match,
            Some("line") => Target::Line,
            _ => Target::Secret,
        };
        Some(Allow {
            and,
            target,
            regexes: spec.regexes.iter().filter_map(|r| build(r)).collect(),
            stopwords: spec.stopwords.iter().map(|s| s.to_lowercase()).collect(),
        })
    }

    fn allows(&self, secret: &[u8], whole: &[u8], line: &[u8]) -> bool {
        let target = match self.target {
            Target::Secret => secret,
            Target::Match => whole,
            Target::Line => line,
        };
        let by_regex = || self.regexes.iter().any(|r| r.is_match(target));
        let by_stopword = || {
            let lower = secret.to_ascii_lowercase();
            self.stopwords
                .iter()
                .any(|w| memchr::memmem::find(&lower, w.as_bytes()).is_some())
        };
        if self.and {
            (self.regexes.is_empty() || by_regex()) && (self.stopwords.is_empty() || by_stopword())
        } else {
            by_regex() || by_stopword()
        }
    }
}

impl Rule {
    fn compiled(&self) -> Option<&Compiled> {
        self.compiled
            .get_or_init(|| {
                let regex = build(&self.source)?;
                let allows = self.allow_specs.iter().filter_map(Allow::compile).collect();
                Some(Compiled { regex, allows })
            })
            .as_ref()
    }
}

static ENGINE: LazyLock<Engine> = LazyLock::new(|| {
    let parse = |text: &str| -> ConfigFile { toml::from_str(text).expect("rule file parses") };
    let gitleaks = parse(GITLEAKS_RULES);
    let local = parse(LOCAL_RULES);
    let local_ids: std::collections::HashSet<String> =
        local.rules.iter().map(|r| r.id.clone()).collect();
    let mut rules = Vec::new();
    let mut by_keyword: HashMap<String, Vec<usize>> = HashMap::new();
    let mut always = Vec::new();
    let upstream = gitleaks
        .rules
        .into_iter()
        .filter(|r| r.path.is_none() && !local_ids.contains(&r.id));
    for spec in upstream.chain(local.rules) {
        let Some(regex) = spec.regex else { continue };
        let i = rules.len();
        if spec.keywords.is_empty() {
            always.push(i);
        }
        for keyword in &spec.keywords {
            by_keyword
                .entry(keyword.to_lowercase())
                .or_default()
                .push(i);
        }
        rules.push(Rule {
            id: spec.id,
            source: regex.replace(GITLEAKS_END, PROSE_END),
            entropy: spec.entropy,
            group: spec.secret_group,
            allow_specs: spec.allowlists,
            compiled: OnceLock::new(),
        });
    }
    let mut keywords: Vec<(String, Vec<usize>)> = by_keyword.into_iter().collect();
    keywords.sort();
    let keyword_set = RegexSetBuilder::new(
        keywords
            .iter()
            .map(|(k, _)| format!("(?i){}", regex::escape(k))),
    )
    .unicode(false)
    .size_limit(REGEX_SIZE_LIMIT)
    .build()
    .expect("keyword set compiles");
    let global = gitleaks
        .allowlist
        .map(|mut spec| {
            // The marker of an earlier pass is not a secret.
            spec.regexes.push(r"REDACTED".to_owned());
            spec.paths.clear();
            spec
        })
        .as_ref()
        .and_then(Allow::compile)
        .expect("global allowlist compiles");
    Engine {
        rules,
        keywords: keyword_set,
        keyword_rules: keywords.into_iter().map(|(_, r)| r).collect(),
        always,
        global,
    }
});

/// A secret found: byte range and rule.
#[derive(Debug, Clone, Copy)]
struct Finding {
    start: usize,
    end: usize,
    rule: usize,
}

/// Shannon entropy of `bytes`, in bits per byte.
fn entropy(bytes: &[u8]) -> f64 {
    let mut counts = [0u32; 256];
    for &b in bytes {
        counts[b as usize] += 1;
    }
    let n = bytes.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

impl Engine {
    /// Non-overlapping secrets in `text`, in order.
    fn find(&self, text: &str) -> Vec<Finding> {
        // An earlier pass's markers name rules (`[REDACTED:api-key]`): blank the names, keeping
        // offsets, so that they are no secret-ish word for the rules that look for one.
        let masked;
        let bytes = if memchr::memmem::find(text.as_bytes(), MARKER.as_bytes()).is_some() {
            let mut copy = text.as_bytes().to_vec();
            for at in memchr::memmem::find_iter(text.as_bytes(), MARKER.as_bytes()) {
                let name = at + MARKER.len();
                let end = memchr::memchr(b']', &copy[name..]).map_or(name, |p| name + p);
                copy[name..end].fill(b'x');
            }
            masked = copy;
            &masked[..]
        } else {
            text.as_bytes()
        };
        let mut candidates = vec![false; self.rules.len()];
        for i in &self.always {
            candidates[*i] = true;
        }
        let mut any = !self.always.is_empty();
        for k in self.keywords.matches(bytes).iter() {
            for &i in &self.keyword_rules[k] {
                candidates[i] = true;
                any = true;
            }
        }
        if !any {
            return Vec::new();
        }
        let mut found = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            if !candidates[i] {
                continue;
            }
            let Some(compiled) = rule.compiled() else {
                continue;
            };
            for caps in compiled.regex.captures_iter(bytes) {
                let whole = caps.get(0).expect("group 0 always matches");
                let secret = match rule.group {
                    Some(g) => caps.get(g),
                    None => caps.iter().skip(1).flatten().next(),
                }
                .unwrap_or(whole);
                if secret.is_empty() {
                    continue;
                }
                if rule
                    .entropy
                    .is_some_and(|min| entropy(secret.as_bytes()) < min)
                {
                    continue;
                }
                let line = {
                    let start =
                        memchr::memrchr(b'\n', &bytes[..whole.start()]).map_or(0, |p| p + 1);
                    let end = memchr::memchr(b'\n', &bytes[whole.end()..])
                        .map_or(bytes.len(), |p| whole.end() + p);
                    &bytes[start..end]
                };
                let allowed = std::iter::once(&self.global)
                    .chain(&compiled.allows)
                    .any(|a| a.allows(secret.as_bytes(), whole.as_bytes(), line));
                if allowed {
                    continue;
                }
                // Byte classes may stop inside a multi-byte character: widen to whole ones.
                let mut start = secret.start();
                while !text.is_char_boundary(start) {
                    start -= 1;
                }
                let mut end = secret.end();
                while !text.is_char_boundary(end) {
                    end += 1;
                }
                found.push(Finding {
                    start,
                    end,
                    rule: i,
                });
            }
        }
        found.sort_by_key(|f| (f.start, std::cmp::Reverse(f.end)));
        let mut merged: Vec<Finding> = Vec::with_capacity(found.len());
        for f in found {
            match merged.last_mut() {
                Some(last) if f.start < last.end => last.end = last.end.max(f.end),
                _ => merged.push(f),
            }
        }
        merged
    }
}

/// `text` with each finding replaced by its marker. Line breaks inside a secret are kept, so line
/// numbers stay exact. Calls `moved` with each finding's old and new byte range.
fn apply(
    text: &str,
    found: &[Finding],
    mut moved: impl FnMut((usize, usize), (usize, usize)),
) -> String {
    let engine = &*ENGINE;
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for f in found {
        out.push_str(&text[at..f.start]);
        let new_start = out.len();
        out.push_str(MARKER);
        out.push_str(&engine.rules[f.rule].id);
        out.push(']');
        let secret = &text[f.start..f.end];
        out.extend(std::iter::repeat_n('\n', secret.matches('\n').count()));
        moved((f.start, f.end), (new_start, out.len()));
        at = f.end;
    }
    out.push_str(&text[at..]);
    out
}

fn report(diagnostics: &mut Vec<Diagnostic>, rule: usize, line: Option<u32>) {
    let diagnostic = Diagnostic::new(
        Level::Warning,
        DiagnosticCode::SecretRedacted,
        format!("redacted a secret ({})", ENGINE.rules[rule].id),
    );
    diagnostics.push(match line {
        Some(line) => diagnostic.at_line(line),
        None => diagnostic,
    });
}

/// Replaces every secret in `text` with `[REDACTED:rule-id]`, keeping line breaks so that line
/// numbers stay exact. Reports one diagnostic per secret with its line.
pub(crate) fn redact(text: String, diagnostics: &mut Vec<Diagnostic>) -> String {
    let found = ENGINE.find(&text);
    if found.is_empty() {
        return text;
    }
    let index = LineIndex::new(&text);
    for f in &found {
        report(diagnostics, f.rule, Some(index.line(f.start)));
    }
    apply(&text, &found, |_, _| {})
}

/// Redacts a value that has no line of its own (a front matter field): diagnostics at `line`.
pub(crate) fn redact_at(text: &str, line: u32, diagnostics: &mut Vec<Diagnostic>) -> String {
    let found = ENGINE.find(text);
    if found.is_empty() {
        return text.to_owned();
    }
    for f in &found {
        report(diagnostics, f.rule, Some(line));
    }
    apply(text, &found, |_, _| {})
}

/// Redacts a rendered leaf: its text (keeping its line marks right), its label and cells.
/// Catches what the raw pass cannot see: secrets reassembled from Markdown escapes, emphasis
/// and entities.
pub(crate) fn redact_leaf(leaf: &mut Leaf, diagnostics: &mut Vec<Diagnostic>) {
    let found = ENGINE.find(&leaf.text);
    if !found.is_empty() {
        for f in &found {
            let line = (!leaf.marks.is_empty()).then(|| line_at(&leaf.marks, f.start));
            report(diagnostics, f.rule, line);
        }
        // Old and new range of each replacement, to move the marks.
        let mut moves = Vec::with_capacity(found.len());
        let text = apply(&leaf.text, &found, |old, new| moves.push((old, new)));
        let mut marks = Vec::with_capacity(leaf.marks.len());
        for &(offset, line) in &leaf.marks {
            let offset = offset as usize;
            let i = moves.partition_point(|&((s, _), _)| s <= offset);
            let new = match i.checked_sub(1).map(|j| moves[j]) {
                // Inside a secret: the mark moves to its marker.
                Some(((_, e), (n, _))) if offset < e => n,
                Some(((_, e), (_, n_end))) => n_end + (offset - e),
                None => offset,
            };
            if marks.last().is_none_or(|&(o, _)| o as usize != new) {
                marks.push((new as u32, line));
            }
        }
        leaf.text = text;
        leaf.marks = marks;
    }
    if let Some(label) = &leaf.label {
        let found = ENGINE.find(label);
        if !found.is_empty() {
            leaf.label = Some(apply(label, &found, |_, _| {}));
        }
    }
    for cell in &mut leaf.cells {
        let found = ENGINE.find(cell);
        if !found.is_empty() {
            *cell = apply(cell, &found, |_, _| {});
        }
    }
}

/// A file name or relative path with its secrets replaced by `[REDACTED:rule-id]`. The parser
/// derives an incident's `path`, id slug and fallback title from this, so a token pasted into a
/// file name reaches no output; callers that show or store a path should use it too.
pub fn redact_name(name: &str) -> String {
    let found = ENGINE.find(name);
    if found.is_empty() {
        return name.to_owned();
    }
    apply(name, &found, |_, _| {})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: &str) {
        let mut diagnostics = Vec::new();
        let out = redact(input.to_owned(), &mut diagnostics);
        assert_eq!(out, expected);
        assert_eq!(
            out.lines().count(),
            input.lines().count(),
            "line count changed"
        );
        let redactions = expected.matches(MARKER).count();
        assert_eq!(diagnostics.len(), redactions, "{diagnostics:?}");
    }

    #[test]
    fn every_rule_compiles() {
        let broken: Vec<&str> = ENGINE
            .rules
            .iter()
            .filter(|r| r.compiled().is_none())
            .map(|r| r.id.as_str())
            .collect();
        assert!(broken.is_empty(), "{broken:?}");
        assert!(ENGINE.rules.len() > 200);
    }

    #[test]
    fn redacts_each_kind() {
        check(
            "key AKIAZDOCIS2JHTLGMXGE here",
            "key [REDACTED:aws-access-token] here",
        );
        check(
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "aws_secret_access_key = [REDACTED:aws-secret-key]",
        );
        check(
            "token ghp_u8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL8d leaked.",
            "token [REDACTED:github-pat] leaked.",
        );
        check(
            "Authorization: Bearer abcdefghijklmnop.qrstuvwx",
            "Authorization: Bearer [REDACTED:bearer-token]",
        );
        check(
            "Authorization: Basic dXNlcjpodW50ZXIy",
            "Authorization: Basic [REDACTED:basic-auth]",
        );
        check(
            "db password=hunter2; ok",
            "db password=[REDACTED:password]; ok",
        );
        check(
            "MYSQL_ROOT_PASSWORD=pw1",
            "MYSQL_ROOT_PASSWORD=[REDACTED:password]",
        );
        check(
            "the password is \"correct horse battery\" now",
            "the password is \"[REDACTED:password]\" now",
        );
        check(
            "postgres://app:s3cr3t@db.internal:5432/app",
            "postgres://app:[REDACTED:url-password]@db.internal:5432/app",
        );
        check(
            "mysql://root:p@ss@w0rd@db.internal/app",
            "mysql://root:[REDACTED:url-password]@db.internal/app",
        );
        check(
            "redis://:hunter2@cache:6379",
            "redis://:[REDACTED:url-password]@cache:6379",
        );
        check(
            "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=bXlrZXlteWtleW15a2V5bXlrZXk=;EndpointSuffix=core.windows.net",
            "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=[REDACTED:generic-api-key];EndpointSuffix=core.windows.net",
        );
        check(
            "a\n-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nabc\n-----END RSA PRIVATE KEY-----\nb",
            "a\n[REDACTED:private-key]\n\n\n\nb",
        );
    }

    #[test]
    fn truncated_pem_stops_at_the_key() {
        let key = "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun";
        check(
            &format!(
                "-----BEGIN PRIVATE KEY-----\n{key}\n{key}\nWe rotated it.\n\nlater\n-----END PRIVATE KEY-----\n"
            ),
            "[REDACTED:private-key]\n\n\nWe rotated it.\n\nlater\n-----END PRIVATE KEY-----\n",
        );
    }

    #[test]
    fn leaves_prose_alone() {
        check(
            "the token signing certificate expired; password resets failed",
            "the token signing certificate expired; password resets failed",
        );
        check(
            "see https://example.com/a:b@c",
            "see https://example.com/a:b@c",
        );
        check(
            "Password: reset for every user",
            "Password: reset for every user",
        );
        check("api_key: rotated", "api_key: rotated");
    }

    #[test]
    fn leaf_marks_follow_the_text() {
        let mut leaf = Leaf::new(crate::leaf::LeafKind::Paragraph { in_item: false });
        leaf.push("a ghp_u8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL8d", 3);
        leaf.push_separator(" ");
        leaf.push("b", 4);
        let mut diagnostics = Vec::new();
        redact_leaf(&mut leaf, &mut diagnostics);
        assert_eq!(leaf.text, "a [REDACTED:github-pat] b");
        assert_eq!(leaf.marks, [(0, 3), (24, 4)]);
        assert_eq!(diagnostics[0].line, Some(3));
    }

    #[test]
    fn names() {
        assert_eq!(
            redact_name("2021/leak-ghp_u8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL8d.md"),
            "2021/leak-[REDACTED:github-pat].md"
        );
        assert_eq!(
            redact_name("2021-09-30-cert-expiry.md"),
            "2021-09-30-cert-expiry.md"
        );
    }
}
