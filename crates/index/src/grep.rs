//! `exact` and `regex` search: which step texts match a literal or a pattern, counted as `rg`
//! counts (non-overlapping, non-empty matches), with the matches marked in a snippet.
//!
//! Patterns come from users and from the network, so they are compiled with bounded program
//! and cache sizes; the `regex` crate matches in time linear in the text whatever the pattern.

use regex::{Regex, RegexBuilder};

use crate::api::Mode;
use crate::error::{Error, Result};
use crate::query::snippet_around;

/// Largest compiled pattern (bytes of the regex program), far above what a person types.
const SIZE_LIMIT: usize = 1 << 20;
/// Largest lazy DFA cache per search.
const DFA_SIZE_LIMIT: usize = 4 << 20;

/// A compiled `exact` string or `regex` pattern.
#[derive(Debug, Clone)]
pub(crate) struct Matcher {
    regex: Regex,
}

impl Matcher {
    /// The matcher for `query` in `mode` (`Exact` or `Regex`); a pattern that does not compile
    /// is an invalid request naming the problem.
    pub(crate) fn new(mode: Mode, query: &str, case_sensitive: bool) -> Result<Matcher> {
        let pattern = match mode {
            Mode::Exact => regex::escape(query),
            Mode::Regex => query.to_owned(),
            other => {
                return Err(Error::invalid(format!(
                    "mode {other:?} does not match text literally"
                )));
            }
        };
        let regex = RegexBuilder::new(&pattern)
            .case_insensitive(!case_sensitive)
            .size_limit(SIZE_LIMIT)
            .dfa_size_limit(DFA_SIZE_LIMIT)
            .build()
            .map_err(|e| match e {
                regex::Error::CompiledTooBig(limit) => Error::invalid(format!(
                    "the pattern is too large once compiled (limit {limit} bytes); simplify it"
                )),
                other => Error::invalid(format!("invalid regex: {other}")),
            })?;
        Ok(Matcher { regex })
    }

    /// Number of non-empty matches in `text` (0 when it does not match).
    pub(crate) fn count(&self, text: &str) -> u32 {
        self.regex.find_iter(text).filter(|m| !m.is_empty()).count() as u32
    }

    /// A passage of `text` around its matches, each wrapped in `**`.
    pub(crate) fn snippet(&self, text: &str) -> String {
        let spans: Vec<(usize, usize, String)> = self
            .regex
            .find_iter(text)
            .filter(|m| !m.is_empty())
            .map(|m| (m.start(), m.end(), m.as_str().to_lowercase()))
            .collect();
        snippet_around(text, &spans)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_is_literal_and_ignores_case_unless_asked() {
        let m = Matcher::new(Mode::Exact, "a.b (x)", false).unwrap();
        assert_eq!(m.count("A.B (X) and a.b (x), not axb (x)"), 2);
        let m = Matcher::new(Mode::Exact, "OOMKilled", true).unwrap();
        assert_eq!(m.count("OOMKilled, oomkilled, OOMKilled"), 2);
    }

    #[test]
    fn regex_counts_non_empty_matches_like_rg() {
        let m = Matcher::new(Mode::Regex, "rate.?limit|toomanyrequests", false).unwrap();
        assert_eq!(
            m.count("Rate-limited by the registry: TooManyRequests; ratelimit hit"),
            3
        );
        let empty = Matcher::new(Mode::Regex, "x*", false).unwrap();
        assert_eq!(empty.count("abc"), 0);
        assert_eq!(empty.count("axxb x"), 2);
    }

    #[test]
    fn bad_patterns_are_invalid_requests() {
        let e = Matcher::new(Mode::Regex, "(unclosed", false).unwrap_err();
        assert!(matches!(e, Error::InvalidRequest(_)), "{e:?}");
        assert!(e.to_string().contains("invalid regex"), "{e}");
        let huge = Matcher::new(Mode::Regex, r"\w{1000}{1000}", false).unwrap_err();
        assert!(huge.to_string().contains("too large"), "{huge}");
    }

    #[test]
    fn snippets_mark_every_match() {
        let m = Matcher::new(Mode::Regex, r"5\d\d", false).unwrap();
        assert_eq!(
            m.snippet("saw 502 then 503 from the ALB"),
            "saw **502** then **503** from the ALB"
        );
    }
}
