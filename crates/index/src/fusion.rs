//! Reciprocal-rank fusion (Cormack, Clarke and Büttcher, 2009).
//!
//! Each retriever contributes `weight / (k + rank)` for every item it returned (ranks from 1);
//! an item's fused score is the sum. RRF needs no score calibration between BM25 and cosine
//! similarity, which is why it is the default way to combine them (Qdrant, Elasticsearch and
//! Vespa do the same).

use std::collections::HashMap;
use std::hash::Hash;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How lexical and vector rankings are fused in hybrid mode.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct FusionOptions {
    /// The RRF constant: larger values flatten the advantage of top ranks.
    pub k: f32,
    /// Weight of the BM25 ranking.
    pub lexical_weight: f32,
    /// Weight of the vector ranking.
    pub vector_weight: f32,
    /// Weight of the incident-level ranking (BM25 over each write-up's whole text), added to
    /// every step of a ranked incident in lexical and hybrid mode; 0 turns the leg off.
    pub incident_weight: f32,
    /// How many candidates each retriever contributes before fusion (at least `k` of the
    /// request is used).
    pub candidates: usize,
}

impl Default for FusionOptions {
    fn default() -> Self {
        Self {
            k: 60.0,
            lexical_weight: 1.0,
            vector_weight: 1.0,
            incident_weight: 1.5,
            candidates: 100,
        }
    }
}

impl FusionOptions {
    pub(crate) fn validate(&self) -> Result<()> {
        let finite_non_negative = |x: f32| x.is_finite() && x >= 0.0;
        if !(self.k.is_finite() && self.k > 0.0) {
            return Err(Error::invalid(format!(
                "rrf.k must be positive, got {}",
                self.k
            )));
        }
        if !finite_non_negative(self.lexical_weight)
            || !finite_non_negative(self.vector_weight)
            || !finite_non_negative(self.incident_weight)
        {
            return Err(Error::invalid(
                "rrf weights must be finite and non-negative",
            ));
        }
        if self.candidates == 0 || self.candidates > 10_000 {
            return Err(Error::invalid("rrf.candidates must be between 1 and 10000"));
        }
        Ok(())
    }
}

/// One fused item: its score and its 1-based rank in each input list (`None` when absent).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Fused<K> {
    pub item: K,
    pub score: f32,
    pub ranks: Vec<Option<u32>>,
}

/// Fuses ranked lists, each given with its weight, best item first. Duplicates inside one list
/// count at their first (best) position. The output is sorted by fused score, descending; ties
/// go to the item with the better best rank, then to the earlier list, then to the smaller item.
pub(crate) fn reciprocal_rank_fusion<K: Hash + Eq + Ord + Clone>(
    lists: &[(f32, &[K])],
    k: f32,
) -> Vec<Fused<K>> {
    let mut by_item: HashMap<&K, usize> = HashMap::new();
    let mut fused: Vec<Fused<K>> = Vec::new();
    for (list_index, (weight, items)) in lists.iter().enumerate() {
        for (position, item) in items.iter().enumerate() {
            let rank = position as u32 + 1;
            let slot = *by_item.entry(item).or_insert_with(|| {
                fused.push(Fused {
                    item: item.clone(),
                    score: 0.0,
                    ranks: vec![None; lists.len()],
                });
                fused.len() - 1
            });
            let entry = &mut fused[slot];
            if entry.ranks[list_index].is_none() {
                entry.ranks[list_index] = Some(rank);
                entry.score += weight / (k + rank as f32);
            }
        }
    }
    let best = |f: &Fused<K>| {
        f.ranks
            .iter()
            .enumerate()
            .filter_map(|(list, rank)| rank.map(|r| (r, list)))
            .min()
            .unwrap_or((u32::MAX, usize::MAX))
    };
    fused.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| best(a).cmp(&best(b)))
            .then_with(|| a.item.cmp(&b.item))
    });
    fused
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn order(lists: &[(f32, &[u32])], k: f32) -> Vec<u32> {
        reciprocal_rank_fusion(lists, k)
            .into_iter()
            .map(|f| f.item)
            .collect()
    }

    #[test]
    fn hand_computed_scores() {
        let fused = reciprocal_rank_fusion(&[(1.0, &[1, 2, 3][..]), (1.0, &[3, 1][..])], 60.0);
        let score = |item| fused.iter().find(|f| f.item == item).unwrap().score;
        assert!((score(1) - (1.0 / 61.0 + 1.0 / 62.0)).abs() < 1e-7);
        assert!((score(3) - (1.0 / 63.0 + 1.0 / 61.0)).abs() < 1e-7);
        assert!((score(2) - 1.0 / 62.0).abs() < 1e-7);
        assert_eq!(fused.iter().map(|f| f.item).collect::<Vec<_>>(), [1, 3, 2]);
        assert_eq!(fused[1].ranks, [Some(3), Some(1)]);
    }

    #[test]
    fn ties_are_broken_by_best_rank_then_list_then_item() {
        // 7 and 8 each appear once at rank 1: equal scores, lexical (first) list wins.
        assert_eq!(order(&[(1.0, &[7]), (1.0, &[8])], 60.0), [7, 8]);
        assert_eq!(order(&[(1.0, &[8]), (1.0, &[7])], 60.0), [8, 7]);
        // Same best rank in the same list cannot happen; identical lists tie on everything but
        // the item, and both orders give the same answer.
        assert_eq!(order(&[(1.0, &[]), (1.0, &[5])], 60.0), [5]);
    }

    #[test]
    fn the_k_constant_changes_the_winner() {
        // a: ranks 1 and 10; b: ranks 3 and 3. Small k favours the single top rank.
        let lists: [(f32, &[u32]); 2] = [
            (1.0, &[1, 9, 2, 8, 7, 6, 5, 4, 3, 11]),
            (1.0, &[11, 12, 2, 13, 14, 15, 16, 17, 18, 1]),
        ];
        let small = order(&lists, 1.0);
        let large = order(&lists, 1000.0);
        assert_eq!(small[0], 1);
        assert_eq!(large[0], 2);
    }

    #[test]
    fn zero_weight_removes_a_list_from_the_order() {
        let fused = order(&[(0.0, &[1, 2]), (1.0, &[2, 1])], 60.0);
        assert_eq!(fused, [2, 1]);
    }

    fn lists() -> impl Strategy<Value = (Vec<u32>, Vec<u32>, f32)> {
        (
            proptest::sample::subsequence((0u32..40).collect::<Vec<_>>(), 0..40).prop_shuffle(),
            proptest::sample::subsequence((0u32..40).collect::<Vec<_>>(), 0..40).prop_shuffle(),
            1.0f32..200.0,
        )
    }

    proptest! {
        #[test]
        fn fusion_is_a_sorted_union((a, b, k) in lists()) {
            let fused = reciprocal_rank_fusion(&[(1.0, &a), (1.0, &b)], k);
            let mut items: Vec<u32> = fused.iter().map(|f| f.item).collect();
            prop_assert!(fused.windows(2).all(|w| w[0].score >= w[1].score));
            items.sort_unstable();
            let mut union: Vec<u32> = a.iter().chain(&b).copied().collect();
            union.sort_unstable();
            union.dedup();
            prop_assert_eq!(items, union);
        }

        #[test]
        fn moving_an_item_up_never_lowers_it((a, b, k) in lists(), pick in 0usize..40) {
            prop_assume!(a.len() >= 2);
            let i = pick % a.len();
            prop_assume!(i > 0);
            let mut better = a.clone();
            better.swap(i, i - 1);
            let before = reciprocal_rank_fusion(&[(1.0, &a), (1.0, &b)], k);
            let after = reciprocal_rank_fusion(&[(1.0, &better), (1.0, &b)], k);
            let item = a[i];
            let score = |v: &[Fused<u32>]| v.iter().find(|f| f.item == item).unwrap().score;
            let pos = |v: &[Fused<u32>]| v.iter().position(|f| f.item == item).unwrap();
            prop_assert!(score(&after) > score(&before));
            prop_assert!(pos(&after) <= pos(&before));
        }

        #[test]
        fn an_item_in_both_lists_beats_one_dominated_in_both((a, b, k) in lists()) {
            // x dominates y if x is in every list y is in, at a rank at least as good.
            let fused = reciprocal_rank_fusion(&[(1.0, &a), (1.0, &b)], k);
            let pos: HashMap<u32, usize> = fused.iter().enumerate().map(|(i, f)| (f.item, i)).collect();
            for x in &fused {
                for y in &fused {
                    let dominates = x.item != y.item && x.ranks.iter().zip(&y.ranks).all(|(rx, ry)| match (rx, ry) {
                        (_, None) => true,
                        (Some(rx), Some(ry)) => rx <= ry,
                        (None, Some(_)) => false,
                    });
                    if dominates {
                        prop_assert!(pos[&x.item] < pos[&y.item], "{:?} should precede {:?}", x, y);
                    }
                }
            }
        }
    }
}
