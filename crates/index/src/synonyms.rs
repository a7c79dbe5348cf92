//! The synonym and abbreviation table: groups of words and phrases that mean the same thing in
//! incident write-ups (`cert` / `certificate`, `ALB` / `load balancer`, `k8s` / `kubernetes`).
//! A query containing one member of a group also matches the others, down-weighted
//! ([`EXPANSION_WEIGHT`]). The built-in table ships as `crates/index/synonyms.toml`; users add
//! groups with a file of the same shape (`synonyms.toml` in the corpus root, or given
//! explicitly).

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::schema::{ident_analyzer, stem_analyzer, terms};

/// Weight of an expansion relative to a word of the query.
pub(crate) const EXPANSION_WEIGHT: f32 = 0.4;
/// File name of a corpus's own table, in the corpus root.
pub const SYNONYMS_FILE: &str = "synonyms.toml";
/// Most expansions one query gets.
const MAX_EXPANSIONS: usize = 24;

const BUILTIN: &str = include_str!("../synonyms.toml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    groups: Vec<Vec<String>>,
}

/// One member of a group, analysed as the stemmed fields and the identifier field see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub stems: Vec<String>,
    pub idents: Vec<String>,
}

/// A synonym table. Cheap to clone behind an `Arc`.
#[derive(Debug, Clone, Default)]
pub struct Synonyms {
    groups: Vec<Vec<Entry>>,
}

impl Synonyms {
    /// The table shipped with precedent.
    pub fn builtin() -> Synonyms {
        // The shipped file is checked by a test; a broken one yields no synonyms, not a panic.
        Synonyms::parse(BUILTIN, "built-in synonyms").unwrap_or_default()
    }

    /// The built-in table plus the groups of `path`.
    pub fn builtin_and(path: &Path) -> Result<Synonyms> {
        let mut table = Synonyms::builtin();
        table.add_file(path)?;
        Ok(table)
    }

    /// Adds the groups of a TOML file (`groups = [["cert", "certificate"], ...]`).
    pub fn add_file(&mut self, path: &Path) -> Result<()> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::invalid(format!("cannot read synonyms file {}: {e}", path.display()))
        })?;
        let other = Synonyms::parse(&text, &path.display().to_string())?;
        self.groups.extend(other.groups);
        Ok(())
    }

    /// Parses a table; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Synonyms> {
        let file: File = toml::from_str(text)
            .map_err(|e| Error::invalid(format!("bad synonyms file {origin}: {e}")))?;
        let (mut stem, mut ident) = (stem_analyzer(), ident_analyzer());
        let groups = file
            .groups
            .iter()
            .map(|group| {
                group
                    .iter()
                    .map(|member| Entry {
                        stems: terms(&mut stem, member),
                        idents: terms(&mut ident, member),
                    })
                    .filter(|e| !e.stems.is_empty() && !e.idents.is_empty())
                    .collect::<Vec<_>>()
            })
            .filter(|g| g.len() >= 2)
            .collect();
        Ok(Synonyms { groups })
    }

    /// Number of groups.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// True when the table has no groups.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// The members of every group the query (its stem and identifier term sequences) contains,
    /// other than those it contains already.
    pub(crate) fn expand(&self, stems: &[String], idents: &[String]) -> Vec<Entry> {
        let contains = |seq: &[String], part: &[String]| {
            !part.is_empty() && seq.windows(part.len()).any(|w| w == part)
        };
        let present = |e: &Entry| contains(stems, &e.stems) || contains(idents, &e.idents);
        let mut out: Vec<Entry> = Vec::new();
        for group in &self.groups {
            if !group.iter().any(present) {
                continue;
            }
            for entry in group {
                if !present(entry) && !out.contains(entry) {
                    out.push(entry.clone());
                }
            }
        }
        out.truncate(MAX_EXPANSIONS);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(analyzer: fn() -> tantivy::tokenizer::TextAnalyzer, s: &str) -> Vec<String> {
        terms(&mut analyzer(), s)
    }

    fn expansions(table: &Synonyms, query: &str) -> Vec<String> {
        table
            .expand(&seq(stem_analyzer, query), &seq(ident_analyzer, query))
            .into_iter()
            .map(|e| e.idents.join(" "))
            .collect()
    }

    #[test]
    fn the_builtin_table_parses_and_expands_abbreviations() {
        let table = Synonyms::parse(BUILTIN, "built-in").unwrap();
        assert!(table.len() > 30, "{}", table.len());
        let got = expansions(&table, "ALB returning errors");
        assert!(got.contains(&"load balancer".to_owned()), "{got:?}");
        let got = expansions(&table, "the load balancers dropped requests");
        assert!(got.contains(&"alb".to_owned()), "{got:?}");
        let got = expansions(&table, "pods OOMKilled");
        assert!(got.contains(&"out of memory".to_owned()), "{got:?}");
        assert!(expansions(&table, "k8s upgrade").contains(&"kubernetes".to_owned()));
        assert!(expansions(&table, "pg replica lag").contains(&"postgres".to_owned()));
        assert!(expansions(&table, "zebra").is_empty());
    }

    #[test]
    fn user_files_add_groups_and_bad_ones_are_user_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SYNONYMS_FILE);
        std::fs::write(&path, "groups = [[\"frobnicator\", \"widget press\"]]\n").unwrap();
        let table = Synonyms::builtin_and(&path).unwrap();
        assert_eq!(table.len(), Synonyms::builtin().len() + 1);
        assert_eq!(expansions(&table, "frobnicator jammed"), ["widget press"]);
        std::fs::write(&path, "groups = 3").unwrap();
        assert!(Synonyms::builtin_and(&path).unwrap_err().is_user_error());
        assert!(
            Synonyms::builtin_and(&dir.path().join("missing.toml"))
                .unwrap_err()
                .is_user_error()
        );
    }
}
