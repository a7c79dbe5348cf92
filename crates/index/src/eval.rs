//! Retrieval quality over a judged query set, computed exactly as the reference scorer
//! `shared/eval/score.py` does.
//!
//! A ranking of steps is collapsed to a ranking of documents (each document at the rank of its
//! best step; a document id is the write-up's path relative to the indexed directory). Per
//! query: nDCG@10 with gains 2/1/0 and a `log2(rank + 1)` discount, the ideal DCG taken from the
//! judged documents sorted by grade and cut at 10; recall@10, the judged documents (grade >= 1)
//! in the top 10 over the number judged; MRR, one over the rank of the first judged document at
//! any depth. All are macro-averaged over queries, overall and per query kind.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::io::BufRead;
use std::path::Path;

use precedent_core::Embedder;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::{Mode, SearchRequest};
use crate::engine::Engine;
use crate::error::{Error, Result};

/// One judged query (a line of `dev-queries.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EvalQuery {
    /// Query id, e.g. `q01`.
    pub id: String,
    /// The query text.
    pub query: String,
    /// `keyword`, `paraphrase` or `symptom`.
    pub kind: String,
    /// Grade (1 or 2) of each judged document id.
    pub relevant: BTreeMap<String, u8>,
}

/// One line of a run file: a query id and its document ranking, best first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RunLine {
    /// Query id.
    pub id: String,
    /// Document ids, best first.
    pub ranking: Vec<String>,
}

/// Scores of one query.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct QueryScores {
    /// nDCG@10.
    pub ndcg10: f64,
    /// Recall@10.
    pub recall10: f64,
    /// Reciprocal rank of the first judged document.
    pub mrr: f64,
}

/// Macro-averages over a set of queries.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Averages {
    /// Number of queries.
    pub n: usize,
    /// Mean nDCG@10.
    pub ndcg10: f64,
    /// Mean recall@10.
    pub recall10: f64,
    /// Mean reciprocal rank.
    pub mrr: f64,
}

/// Scores of a run.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct EvalReport {
    /// Over all queries.
    pub overall: Averages,
    /// Per query kind.
    pub per_kind: BTreeMap<String, Averages>,
    /// Per query id: its kind and scores.
    pub per_query: BTreeMap<String, (String, QueryScores)>,
}

/// Reads a judged query set (JSON lines; blank lines ignored).
pub fn load_queries(path: &Path) -> Result<Vec<EvalQuery>> {
    let file = std::fs::File::open(path).map_err(Error::io("cannot open query file", path))?;
    let mut out = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(Error::io("cannot read query file", path))?;
        if line.trim().is_empty() {
            continue;
        }
        let query = serde_json::from_str(&line).map_err(|e| {
            Error::invalid(format!(
                "{}:{}: not a judged query: {e}",
                path.display(),
                n + 1
            ))
        })?;
        out.push(query);
    }
    Ok(out)
}

/// Keeps the first occurrence of each document id.
pub fn collapse<'a>(ranking: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut seen = HashSet::new();
    ranking
        .into_iter()
        .filter(|d| seen.insert(*d))
        .map(str::to_owned)
        .collect()
}

/// Scores one document ranking against judgments (duplicates after the first are ignored).
pub fn score(relevant: &BTreeMap<String, u8>, ranking: &[String]) -> QueryScores {
    let ranking = collapse(ranking.iter().map(String::as_str));
    let grade = |d: &str| f64::from(relevant.get(d).copied().unwrap_or(0));
    let discount = |i: usize| 1.0 / ((i + 2) as f64).log2();
    let dcg: f64 = ranking
        .iter()
        .take(10)
        .enumerate()
        .map(|(i, d)| grade(d) * discount(i))
        .sum();
    let mut ideal: Vec<u8> = relevant.values().copied().collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let idcg: f64 = ideal
        .iter()
        .take(10)
        .enumerate()
        .map(|(i, g)| f64::from(*g) * discount(i))
        .sum();
    let found = ranking.iter().take(10).filter(|d| grade(d) > 0.0).count();
    let recall10 = if relevant.is_empty() {
        0.0
    } else {
        found as f64 / relevant.len() as f64
    };
    let mrr = ranking
        .iter()
        .position(|d| grade(d) > 0.0)
        .map_or(0.0, |i| 1.0 / (i + 1) as f64);
    QueryScores {
        ndcg10: if idcg > 0.0 { dcg / idcg } else { 0.0 },
        recall10,
        mrr,
    }
}

/// Scores a run; queries missing from `runs` score with an empty ranking, as in `score.py`.
pub fn evaluate(queries: &[EvalQuery], runs: &[RunLine]) -> EvalReport {
    let by_id: BTreeMap<&str, &RunLine> = runs.iter().map(|r| (r.id.as_str(), r)).collect();
    let mut report = EvalReport::default();
    let mut sums: BTreeMap<String, (usize, f64, f64, f64)> = BTreeMap::new();
    for q in queries {
        let ranking = by_id.get(q.id.as_str()).map_or(&[][..], |r| &r.ranking[..]);
        let s = score(&q.relevant, ranking);
        for key in ["all", q.kind.as_str()] {
            let e = sums.entry(key.to_owned()).or_default();
            *e = (e.0 + 1, e.1 + s.ndcg10, e.2 + s.recall10, e.3 + s.mrr);
        }
        report.per_query.insert(q.id.clone(), (q.kind.clone(), s));
    }
    for (key, (n, ndcg, recall, mrr)) in sums {
        let n_f = n as f64;
        let avg = Averages {
            n,
            ndcg10: ndcg / n_f,
            recall10: recall / n_f,
            mrr: mrr / n_f,
        };
        if key == "all" {
            report.overall = avg;
        } else {
            report.per_kind.insert(key, avg);
        }
    }
    report
}

/// Runs every query through `engine` in `mode`, keeping `depth` steps, and returns the document
/// rankings (the run file).
pub fn run(
    engine: &Engine,
    embedder: &dyn Embedder,
    queries: &[EvalQuery],
    mode: Mode,
    depth: usize,
) -> Result<Vec<RunLine>> {
    queries
        .iter()
        .map(|q| {
            let request = SearchRequest::new(q.query.clone())
                .with_mode(mode)
                .with_k(depth.clamp(1, crate::api::MAX_K));
            let response = engine.search(&request, embedder)?;
            let ranking = collapse(response.hits.iter().map(|h| h.citation.path.as_str()));
            Ok(RunLine {
                id: q.id.clone(),
                ranking,
            })
        })
        .collect()
}

/// Writes a run in the JSON-lines format `score.py` reads.
pub fn write_run(runs: &[RunLine], out: &mut dyn std::io::Write) -> std::io::Result<()> {
    for line in runs {
        serde_json::to_writer(&mut *out, line)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

impl fmt::Display for EvalReport {
    /// The table `score.py` prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:12} {:>3} {:>8} {:>6} {:>6}",
            "subset", "n", "nDCG@10", "R@10", "MRR"
        )?;
        let row = |f: &mut fmt::Formatter<'_>, name: &str, a: &Averages| {
            writeln!(
                f,
                "{name:12} {:3} {:8.3} {:6.3} {:6.3}",
                a.n, a.ndcg10, a.recall10, a.mrr
            )
        };
        row(f, "all", &self.overall)?;
        for kind in ["keyword", "paraphrase", "symptom"] {
            if let Some(a) = self.per_kind.get(kind) {
                row(f, kind, a)?;
            }
        }
        for (kind, a) in self
            .per_kind
            .iter()
            .filter(|(k, _)| !["keyword", "paraphrase", "symptom"].contains(&k.as_str()))
        {
            row(f, kind, a)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(pairs: &[(&str, u8)]) -> BTreeMap<String, u8> {
        pairs.iter().map(|(d, g)| (d.to_string(), *g)).collect()
    }

    fn ranking(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn hand_computed_metrics() {
        // Judged: a=2, b=1, c=1. Ranking: x, a, c, a (dup), y.
        let r = rel(&[("a", 2), ("b", 1), ("c", 1)]);
        let s = score(&r, &ranking(&["x", "a", "c", "a", "y"]));
        // DCG = 2/log2(3) + 1/log2(4) = 1.261860 + 0.5; IDCG = 2/1 + 1/log2(3) + 1/log2(4).
        let dcg = 2.0 / 3f64.log2() + 0.5;
        let idcg = 2.0 + 1.0 / 3f64.log2() + 0.5;
        assert!(close(s.ndcg10, dcg / idcg), "{}", s.ndcg10);
        assert!(close(s.recall10, 2.0 / 3.0));
        assert!(close(s.mrr, 0.5));
        // Hand value: (1.2618595 + 0.5) / (2 + 0.6309298 + 0.5) = 0.5627273; score.py prints
        // 0.563 / 0.667 / 0.500 for this query and run.
        assert!((s.ndcg10 - 0.562_727_3).abs() < 1e-6, "{}", s.ndcg10);
    }

    #[test]
    fn cutoffs_and_empty_rankings() {
        let r = rel(&[("a", 1)]);
        let deep: Vec<String> = (0..10)
            .map(|i| format!("x{i}"))
            .chain(["a".to_owned()])
            .collect();
        let s = score(&r, &deep);
        assert_eq!((s.ndcg10, s.recall10), (0.0, 0.0));
        assert!(close(s.mrr, 1.0 / 11.0), "MRR has no cutoff");
        assert_eq!(score(&r, &[]), QueryScores::default());
        let s = score(&r, &ranking(&["a"]));
        assert_eq!((s.ndcg10, s.recall10, s.mrr), (1.0, 1.0, 1.0));
    }

    #[test]
    fn macro_averages_per_kind() {
        let q = |id: &str, kind: &str, r: &[(&str, u8)]| EvalQuery {
            id: id.into(),
            query: "q".into(),
            kind: kind.into(),
            relevant: rel(r),
        };
        let queries = [
            q("q1", "keyword", &[("a", 2)]),
            q("q2", "symptom", &[("b", 1)]),
            q("q3", "symptom", &[("c", 1)]),
        ];
        let runs = [
            RunLine {
                id: "q1".into(),
                ranking: ranking(&["a"]),
            },
            RunLine {
                id: "q2".into(),
                ranking: ranking(&["x", "b"]),
            },
        ];
        let report = evaluate(&queries, &runs);
        assert_eq!(report.overall.n, 3);
        assert!(close(report.overall.mrr, (1.0 + 0.5 + 0.0) / 3.0));
        assert!(close(report.per_kind["symptom"].mrr, 0.25));
        assert!(close(report.per_kind["keyword"].ndcg10, 1.0));
        let table = report.to_string();
        assert!(
            table.contains("keyword        1    1.000  1.000  1.000"),
            "{table}"
        );
        let mut out = Vec::new();
        write_run(&runs, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap().lines().next().unwrap(),
            r#"{"id":"q1","ranking":["a"]}"#
        );
    }
}
