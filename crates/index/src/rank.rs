//! Ranking steps both stores share after retrieval: the per-incident limit, grouping of steps
//! into incidents, and match quality. [`Engine`](crate::Engine) and the Qdrant store call these
//! on their fused step lists, so the two give the same semantics.

use std::collections::HashMap;
use std::hash::Hash;

use crate::api::{Hit, HitGroup, MatchQuality, SearchRequest, SimilarIncident};
use crate::query::Analyzed;
use crate::schema::{stem_analyzer, terms};

/// Hits whose words count towards [`coverage`].
const COVERAGE_HITS: usize = 3;

/// At most `per` items of each incident (`per == 0`: no limit), in their order, cut to `k`.
pub(crate) fn limit_per_incident<T, K: Eq + Hash>(
    items: impl IntoIterator<Item = T>,
    incident: impl Fn(&T) -> K,
    per: usize,
    k: usize,
) -> Vec<T> {
    let mut seen: HashMap<K, usize> = HashMap::new();
    let mut out = Vec::with_capacity(k.min(64));
    for item in items {
        if out.len() >= k {
            break;
        }
        let count = seen.entry(incident(&item)).or_default();
        if per == 0 || *count < per {
            *count += 1;
            out.push(item);
        }
    }
    out
}

/// Items grouped by incident, groups in the order of their best (first) item, each group at
/// most `per` items (`per == 0`: no limit), at most `k` groups.
pub(crate) fn group_by_incident<T, K: Eq + Hash>(
    items: impl IntoIterator<Item = T>,
    incident: impl Fn(&T) -> K,
    per: usize,
    k: usize,
) -> Vec<Vec<T>> {
    let mut index: HashMap<K, usize> = HashMap::new();
    let mut groups: Vec<Vec<T>> = Vec::new();
    for item in items {
        let key = incident(&item);
        match index.get(&key) {
            Some(&g) if per == 0 || groups[g].len() < per => groups[g].push(item),
            Some(_) => {}
            None if groups.len() < k => {
                index.insert(key, groups.len());
                groups.push(vec![item]);
            }
            None => {}
        }
    }
    groups
}

/// How many fused candidates a search needs so that the per-incident limit or grouping can
/// still fill `k`.
pub(crate) fn candidates_needed(request: &SearchRequest) -> usize {
    let per = request.per_incident.max(1);
    let want = if request.group {
        request.k.saturating_mul(per).saturating_mul(2)
    } else if request.per_incident > 0 {
        request.k.saturating_mul(3)
    } else {
        request.k
    };
    request.rrf.candidates.max(want).min(10_000)
}

/// Applies the request's per-incident limit or grouping to fused items (best first): the items
/// to turn into hits, and, when grouping, the group sizes in order.
pub(crate) fn select<T, K: Eq + Hash>(
    items: Vec<T>,
    incident: impl Fn(&T) -> K,
    request: &SearchRequest,
) -> (Vec<T>, Option<Vec<usize>>) {
    if request.group {
        let groups = group_by_incident(items, incident, request.per_incident, request.k);
        let sizes = groups.iter().map(Vec::len).collect();
        (groups.into_iter().flatten().collect(), Some(sizes))
    } else {
        (
            limit_per_incident(items, incident, request.per_incident, request.k),
            None,
        )
    }
}

/// The hits of [`select`] split back into their groups.
pub(crate) fn groups_of(hits: &[Hit], sizes: &[usize]) -> Vec<HitGroup> {
    let mut out = Vec::with_capacity(sizes.len());
    let mut at = 0;
    for &size in sizes {
        let members = &hits[at..(at + size).min(hits.len())];
        at += size;
        let Some(best) = members.first() else {
            continue;
        };
        out.push(HitGroup {
            incident_id: best.incident_id.clone(),
            title: best.title.clone(),
            path: best.citation.path.clone(),
            score: best.score.fused,
            hits: members.to_vec(),
        });
    }
    out
}

/// Cosine similarity (the embedding model of the index) from which the best step counts as a
/// close match on meaning alone. Calibrated on the 42 judged dev queries against 10
/// out-of-scope ones (payroll, mainframe abends, recipes, HR): the judged queries' best
/// similarity is 0.45-0.76 (one at 0.39), the out-of-scope ones' 0.19-0.40.
pub(crate) const STRONG_SIMILARITY: f32 = 0.60;
/// Similarity from which a strong word match makes a close match.
pub(crate) const GOOD_SIMILARITY: f32 = 0.50;
/// Below this similarity there is no close precedent, whatever the words.
pub(crate) const WEAK_SIMILARITY: f32 = 0.42;
/// Share of the query's content words found in one of the best steps that makes a strong
/// match.
pub(crate) const STRONG_COVERAGE: f32 = 0.75;
/// Without a vector leg (lexical mode): the share below which there is no close precedent.
pub(crate) const WEAK_COVERAGE: f32 = 0.5;

/// How close the best results are to the query, from the best cosine similarity of a returned
/// step to the query (`None` when no vector leg ran) and the share of the query's content
/// words found in one of the best returned steps (`0.0..=1.0`). Shared by search, `similar`
/// and anything else that must say "no close precedent". Words alone never lift a result
/// the vector leg finds remote: generic words (`job`, `report`) match everywhere.
pub(crate) fn match_quality(best_similarity: Option<f32>, coverage: f32) -> MatchQuality {
    match best_similarity {
        Some(sim) if sim >= STRONG_SIMILARITY => MatchQuality::Strong,
        Some(sim) if sim >= GOOD_SIMILARITY && coverage >= STRONG_COVERAGE => MatchQuality::Strong,
        Some(sim) if sim >= WEAK_SIMILARITY => MatchQuality::Weak,
        Some(_) => MatchQuality::None,
        None if coverage >= STRONG_COVERAGE => MatchQuality::Strong,
        None if coverage >= WEAK_COVERAGE => MatchQuality::Weak,
        None => MatchQuality::None,
    }
}

/// The best share, over the first few hits, of the query's content words (stemmed) that the
/// hit's title and text contain; 0 when the query has none.
pub(crate) fn coverage(analyzed: &Analyzed, hits: &[Hit]) -> f32 {
    if analyzed.stems.is_empty() {
        return 0.0;
    }
    let mut stem = stem_analyzer();
    hits.iter()
        .take(COVERAGE_HITS)
        .map(|hit| {
            let words: std::collections::HashSet<String> = terms(&mut stem, &hit.title)
                .into_iter()
                .chain(terms(&mut stem, &hit.text))
                .collect();
            let found = analyzed.stems.iter().filter(|t| words.contains(*t)).count();
            found as f32 / analyzed.stems.len() as f32
        })
        .fold(0.0, f32::max)
}

/// Match quality of a list of hits for the analysed query: their best vector similarity (when
/// the vector leg ran) and their word coverage.
pub(crate) fn quality_of_hits(analyzed: &Analyzed, hits: &[Hit], vector_ran: bool) -> MatchQuality {
    if hits.is_empty() {
        return MatchQuality::None;
    }
    let best = hits
        .iter()
        .filter_map(|h| h.score.vector_similarity)
        .fold(None, |acc: Option<f32>, s| {
            Some(acc.map_or(s, |a| a.max(s)))
        });
    let best = if vector_ran {
        Some(best.unwrap_or(0.0))
    } else {
        None
    };
    match_quality(best, coverage(analyzed, hits))
}

/// Match quality of `similar`: that of the best steps of its best incidents.
pub(crate) fn quality_of_similar(
    analyzed: &Analyzed,
    incidents: &[SimilarIncident],
) -> MatchQuality {
    let steps: Vec<Hit> = incidents
        .iter()
        .take(COVERAGE_HITS)
        .filter_map(|i| i.steps.first().cloned())
        .collect();
    quality_of_hits(analyzed, &steps, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_keeps_order_and_caps_each_incident() {
        let items = [(1, 'a'), (1, 'b'), (1, 'c'), (2, 'd'), (1, 'e'), (3, 'f')];
        let got = limit_per_incident(items, |x| x.0, 2, 10);
        assert_eq!(got, [(1, 'a'), (1, 'b'), (2, 'd'), (3, 'f')]);
        assert_eq!(limit_per_incident(items, |x| x.0, 0, 10).len(), 6);
        assert_eq!(
            limit_per_incident(items, |x| x.0, 1, 2),
            [(1, 'a'), (2, 'd')]
        );
    }

    #[test]
    fn groups_follow_their_best_member() {
        let items = [(2, 'a'), (1, 'b'), (2, 'c'), (2, 'd'), (3, 'e'), (1, 'f')];
        let got = group_by_incident(items, |x| x.0, 2, 2);
        assert_eq!(got, [vec![(2, 'a'), (2, 'c')], vec![(1, 'b'), (1, 'f')]]);
        let all = group_by_incident(items, |x| x.0, 0, 10);
        assert_eq!(all.iter().map(Vec::len).collect::<Vec<_>>(), [3, 2, 1]);
    }

    #[test]
    fn match_quality_needs_meaning_or_words() {
        assert_eq!(match_quality(Some(0.8), 0.0), MatchQuality::Strong);
        assert_eq!(match_quality(Some(0.55), 1.0), MatchQuality::Strong);
        assert_eq!(match_quality(Some(0.5), 0.0), MatchQuality::Weak);
        assert_eq!(match_quality(Some(0.2), 0.1), MatchQuality::None);
        assert_eq!(match_quality(Some(0.35), 1.0), MatchQuality::None);
        assert_eq!(match_quality(None, 1.0), MatchQuality::Strong);
        assert_eq!(match_quality(None, 0.0), MatchQuality::None);
    }
}
