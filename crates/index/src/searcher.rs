//! The one query pipeline: validation, analysis, similar-source preparation, fusion, the
//! incident-level leg, grouping and hit shaping, written once over [`Retrieval`], the narrow
//! set of primitives each store implements (the embedded [`Engine`](crate::Engine)'s snapshot
//! and, with the `qdrant` feature, the Qdrant store). A store answers "top n steps by BM25",
//! "top n steps by vector", "top n write-ups by BM25", "these steps as hits"; what a search
//! or `similar` means is decided here, so both stores rank alike and a third would implement
//! only the trait. (After tantivy's `Directory` and quickwit's `Storage`: the engine above, a
//! small contract below.)

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::hash::Hash;
use std::time::Instant;

use precedent_core::{Card, ContentHash, DateRange, Embedder, IncidentId};

use crate::api::{
    Hit, MAX_QUERY_BYTES, Mode, Score, SearchRequest, SearchResponse, SimilarIncident,
    SimilarRequest, SimilarResponse, SimilarSource, validate_k,
};
use crate::engine::{DraftSource, STEPS_PER_INCIDENT, cut};
use crate::error::{Error, Result};
use crate::fusion::{FusionOptions, reciprocal_rank_fusion};
use crate::query::{Analyzed, Highlighter};
use crate::rank;
use crate::synonyms::Synonyms;
use crate::vectors::top_n;

/// Ranked `(item, score)` pairs, best first.
pub(crate) type Ranked<T> = Vec<(T, f32)>;

/// Incident -> (rank from 1, BM25 score) in the incident-level leg.
pub(crate) type IncidentRanks<I> = HashMap<I, (u32, f32)>;

/// What an indexed incident contributes as the source of `similar`: its title and situation
/// steps as query text, and those steps' stored vectors.
pub(crate) struct SourceSteps {
    pub text: String,
    pub vectors: Vec<Vec<f32>>,
}

/// What a `similar` answer shows of an incident besides its steps.
pub(crate) struct IncidentSummary {
    pub incident_id: IncidentId,
    pub title: String,
    pub path: String,
    pub date: Option<DateRange>,
    pub severity: Option<String>,
    pub services: Vec<String>,
    pub card: Card,
}

/// The retrieval primitives of one store, over one consistent state for the length of a
/// request (the embedded store's snapshot; for Qdrant, the points its answers carried).
///
/// Contract, which the conformance tests check on every store:
/// - `lexical`, `vectors` and `incident_leg` return at most `n` items, best first, each item
///   once; `lexical` and `vectors` return only steps the mask allows.
/// - `mask` fails with [`Error::UnknownIncident`] for an incident id in the filters that the
///   store does not hold, and with a quoted phrase in `required`, allows only steps that
///   contain it.
/// - `vectors` scores by cosine similarity of unit vectors (the dot product).
/// - `hits` and `summary` answer for steps returned in this request; after `prepare` of
///   those steps they make no further call to the store.
pub(crate) trait Retrieval: Sync {
    /// A step, as the store addresses it during the request.
    type Step: Copy + Eq + Hash + Ord + Send + Sync + Debug;
    /// An incident, likewise.
    type Incident: Copy + Eq + Hash + Ord + Send + Sync + Debug;
    /// Compiled filters.
    type Mask: Sync;

    /// Fails when the store's vectors come from another model than `embedder`'s.
    fn check_model(&self, embedder: &dyn Embedder) -> Result<()>;
    /// Dimension of the store's vectors.
    fn dimension(&self) -> usize;
    /// The filters (and quoted phrases of `required`, and one excluded incident) compiled.
    fn mask(
        &self,
        filters: &crate::api::Filters,
        exclude: Option<Self::Incident>,
        required: Option<&Analyzed>,
    ) -> Result<Self::Mask>;
    /// BM25 top `n` steps.
    fn lexical(
        &self,
        analyzed: &Analyzed,
        n: usize,
        mask: &Self::Mask,
    ) -> Result<Ranked<Self::Step>>;
    /// For each query vector, the top `n` steps by cosine similarity.
    fn vectors(
        &self,
        queries: &[Vec<f32>],
        n: usize,
        mask: &Self::Mask,
    ) -> Result<Vec<Ranked<Self::Step>>>;
    /// BM25 top `n` write-ups as wholes (title, headings, every step), unfiltered: the leg
    /// only re-weighs steps the filtered step legs found.
    fn incident_leg(&self, analyzed: &Analyzed, n: usize) -> Result<IncidentRanks<Self::Incident>>;
    /// `lexical` and, when `with_incidents`, `incident_leg` for the same query: stores that
    /// can answer both in one round trip do.
    #[allow(clippy::type_complexity)]
    fn lexical_with_incidents(
        &self,
        analyzed: &Analyzed,
        n: usize,
        mask: &Self::Mask,
        with_incidents: bool,
    ) -> Result<(Ranked<Self::Step>, Option<IncidentRanks<Self::Incident>>)> {
        let steps = self.lexical(analyzed, n, mask)?;
        let incidents = if with_incidents {
            Some(self.incident_leg(analyzed, n)?)
        } else {
            None
        };
        Ok((steps, incidents))
    }
    /// The incident a step belongs to (a step the store returned in this request).
    fn incident_of(&self, step: Self::Step) -> Self::Incident;
    /// The incident with this id, `None` when the store does not hold it.
    fn find_incident(&self, id: &IncidentId) -> Result<Option<Self::Incident>>;
    /// The indexed incident whose write-up has exactly these bytes.
    fn incident_with_hash(&self, hash: &ContentHash) -> Result<Option<Self::Incident>>;
    /// An indexed incident as the source of `similar`.
    fn source(&self, incident: Self::Incident) -> Result<SourceSteps>;
    /// Reads in full the returned steps about to be shown (`hits`, `summary`), in one go;
    /// stores whose retrieval already holds them need do nothing.
    fn prepare(&self, steps: &[Self::Step]) -> Result<()> {
        let _ = steps;
        Ok(())
    }
    /// Returned steps as hits, in order.
    fn hits(
        &self,
        steps: &[(Self::Step, Score)],
        snippet: &dyn Fn(&str) -> String,
    ) -> Result<Vec<Hit>>;
    /// What `similar` shows of an incident it returned steps of.
    fn summary(&self, incident: Self::Incident) -> Result<IncidentSummary>;
    /// `exact` and `regex` search, for stores that hold the step texts in a scannable form.
    fn scan(&self, request: &SearchRequest, started: Instant) -> Result<SearchResponse> {
        let _ = (request, started);
        Err(Error::invalid(
            "exact and regex search scan the embedded index; this store answers lexical, \
             vector and hybrid search",
        ))
    }
}

/// One fused step.
#[derive(Debug, Clone)]
pub(crate) struct Candidate<S> {
    pub step: S,
    pub fused: f32,
    pub lexical: Option<(u32, f32)>,
    pub vector: Option<(u32, f32)>,
    /// Rank and BM25 score of the step's incident in the incident-level leg.
    pub incident: Option<(u32, f32)>,
}

impl<S: Copy> Candidate<S> {
    pub(crate) fn score(&self) -> (S, Score) {
        (
            self.step,
            Score {
                fused: self.fused,
                lexical_rank: self.lexical.map(|x| x.0),
                lexical_score: self.lexical.map(|x| x.1),
                vector_rank: self.vector.map(|x| x.0),
                vector_similarity: self.vector.map(|x| x.1),
                incident_rank: self.incident.map(|x| x.0),
                incident_score: self.incident.map(|x| x.1),
            },
        )
    }
}

/// Ranked steps for a query, on any store.
pub(crate) fn search<R: Retrieval>(
    store: &R,
    synonyms: &Synonyms,
    request: &SearchRequest,
    embedder: &dyn Embedder,
) -> Result<SearchResponse> {
    let started = Instant::now();
    request.validate()?;
    if request.mode.scans() {
        return store.scan(request, started);
    }
    if request.mode.embeds() {
        store.check_model(embedder)?;
    }
    let query = cut(&request.query, MAX_QUERY_BYTES);
    let analyzed = Analyzed::new(query, synonyms);
    let mask = store.mask(&request.filters, None, Some(&analyzed))?;
    let n = rank::candidates_needed(request);
    let with_incidents = request.mode != Mode::Vector && request.rrf.incident_weight > 0.0;
    let (lexical, vector, incidents) = retrieve(
        store,
        &analyzed,
        query,
        request.mode,
        n,
        &mask,
        with_incidents,
        embedder,
    )?;
    let mut fused = fuse(&lexical, &vector, &request.rrf);
    if let Some(incidents) = incidents {
        add_incident_leg(&mut fused, &incidents, &request.rrf, |s| {
            store.incident_of(s)
        });
    }
    let (chosen, sizes) = rank::select(fused, |c| store.incident_of(c.step), request);
    let highlighter = Highlighter::new(&analyzed);
    let scored: Vec<_> = chosen.iter().map(Candidate::score).collect();
    let hits = store.hits(&scored, &|text| highlighter.snippet(text))?;
    let groups = sizes.map(|sizes| rank::groups_of(&hits, &sizes));
    let match_quality = rank::quality_of_hits(&analyzed, &hits, request.mode != Mode::Lexical);
    Ok(SearchResponse {
        hits,
        groups,
        match_quality,
        counts: None,
        took_ms: started.elapsed().as_millis() as u64,
    })
}

/// Runs the retrievers `mode` asks for, and the incident-level leg when `with_incidents`; the
/// vector side (the query embedding dominates) runs on a second thread while BM25 over steps,
/// then over whole write-ups, runs on this one.
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn retrieve<R: Retrieval>(
    store: &R,
    analyzed: &Analyzed,
    query: &str,
    mode: Mode,
    n: usize,
    mask: &R::Mask,
    with_incidents: bool,
    embedder: &dyn Embedder,
) -> Result<(
    Ranked<R::Step>,
    Ranked<R::Step>,
    Option<IncidentRanks<R::Incident>>,
)> {
    let lexical_side = || store.lexical_with_incidents(analyzed, n, mask, with_incidents);
    let vector_side = || -> Result<Ranked<R::Step>> {
        let v = embed_query(store, embedder, query)?;
        Ok(store
            .vectors(std::slice::from_ref(&v), n, mask)?
            .pop()
            .unwrap_or_default())
    };
    match mode {
        Mode::Lexical | Mode::Exact | Mode::Regex => {
            let (steps, incidents) = lexical_side()?;
            Ok((steps, Vec::new(), incidents))
        }
        Mode::Vector => Ok((Vec::new(), vector_side()?, None)),
        Mode::Hybrid => std::thread::scope(|scope| {
            let handle = scope.spawn(vector_side);
            let lexical = lexical_side();
            let vector = handle
                .join()
                .unwrap_or_else(|_| Err(Error::Embed("embedding thread panicked".into())));
            let (steps, incidents) = lexical?;
            Ok((steps, vector?, incidents))
        }),
    }
}

/// The query's embedding, checked against the store's dimension.
fn embed_query<R: Retrieval>(store: &R, embedder: &dyn Embedder, query: &str) -> Result<Vec<f32>> {
    let v = embedder
        .embed(&[query])
        .map_err(Error::Embed)?
        .pop()
        .ok_or_else(|| Error::Embed("embedder returned no vector".into()))?;
    if v.len() != store.dimension() {
        return Err(Error::Embed(
            format!(
                "embedder returned {} values, expected {}",
                v.len(),
                store.dimension()
            )
            .into(),
        ));
    }
    Ok(v)
}

/// An incident of `similar` with its score and its best steps.
type Scored<R> = (
    <R as Retrieval>::Incident,
    f32,
    Vec<Candidate<<R as Retrieval>::Step>>,
);

/// Past incidents ranked as wholes against a source, each with its best-matching steps, on
/// any store.
pub(crate) fn similar<R: Retrieval>(
    store: &R,
    synonyms: &Synonyms,
    request: &SimilarRequest,
    embedder: &dyn Embedder,
) -> Result<SimilarResponse> {
    let started = Instant::now();
    validate_k(request.k)?;
    request.filters.validate()?;
    let (text, vectors, exclude) = match &request.source {
        SimilarSource::Incident(id) => {
            let incident = store
                .find_incident(id)?
                .ok_or_else(|| Error::UnknownIncident(id.clone()))?;
            let source = store.source(incident)?;
            (source.text, source.vectors, Some(incident))
        }
        SimilarSource::Text(text) => {
            if text.trim().is_empty() {
                return Err(Error::invalid("empty text"));
            }
            store.check_model(embedder)?;
            let draft = DraftSource::from_text(text, embedder)?;
            let exclude = store.incident_with_hash(&ContentHash::of(text.as_bytes()))?;
            (draft.query, draft.vectors, exclude)
        }
        SimilarSource::WriteUp { path, text } => {
            store.check_model(embedder)?;
            let draft = DraftSource::prepare(path, text, embedder)?;
            let exclude = match &draft.incident_id {
                Some(id) => store.find_incident(id)?,
                None => None,
            };
            (draft.query, draft.vectors, exclude)
        }
    };
    if let Some(bad) = vectors.iter().find(|v| v.len() != store.dimension()) {
        return Err(Error::Embed(
            format!(
                "source vector has {} values, expected {}",
                bad.len(),
                store.dimension()
            )
            .into(),
        ));
    }
    let mask = store.mask(&request.filters, exclude, None)?;
    let n = (request.k * 20).clamp(100, 2000);
    let analyzed = Analyzed::new(&text, synonyms);
    let lexical = store.lexical(&analyzed, n, &mask)?;
    // One vector list: each step at its best similarity to any source vector.
    let mut best: HashMap<R::Step, f32> = HashMap::new();
    for list in store.vectors(&vectors, n, &mask)? {
        for (step, sim) in list {
            let e = best.entry(step).or_insert(f32::MIN);
            *e = e.max(sim);
        }
    }
    let mut vector: Ranked<R::Step> = best.into_iter().collect();
    top_n(&mut vector, n);
    let options = FusionOptions::default();
    let fused = fuse(&lexical, &vector, &options);
    let mut per_incident: BTreeMap<R::Incident, Vec<Candidate<R::Step>>> = BTreeMap::new();
    for c in fused {
        let list = per_incident.entry(store.incident_of(c.step)).or_default();
        if list.len() < STEPS_PER_INCIDENT {
            list.push(c);
        }
    }
    // The incident-level leg: the source against each write-up's whole text, weighed as the
    // steps' sum is (up to STEPS_PER_INCIDENT step scores).
    let leg_weight = options.incident_weight * STEPS_PER_INCIDENT as f32;
    let whole = store.incident_leg(&analyzed, n)?;
    let mut ranked: Vec<Scored<R>> = per_incident
        .into_iter()
        .map(|(incident, steps)| {
            let leg = whole
                .get(&incident)
                .map_or(0.0, |&(rank, _)| leg_weight / (options.k + rank as f32));
            (
                incident,
                steps.iter().map(|c| c.fused).sum::<f32>() + leg,
                steps,
            )
        })
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.truncate(request.k);
    let shown: Vec<R::Step> = ranked
        .iter()
        .flat_map(|(_, _, steps)| steps.iter().map(|c| c.step))
        .collect();
    store.prepare(&shown)?;
    let highlighter = Highlighter::new(&analyzed);
    let incidents = ranked
        .into_iter()
        .map(|(incident, score, steps)| {
            let summary = store.summary(incident)?;
            let scored: Vec<_> = steps.iter().map(Candidate::score).collect();
            Ok(SimilarIncident {
                incident_id: summary.incident_id,
                title: summary.title,
                path: summary.path,
                score,
                date: summary.date,
                severity: summary.severity,
                services: summary.services,
                card: summary.card,
                steps: store.hits(&scored, &|text| highlighter.snippet(text))?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    // Ties in score keep a stable order by incident id, whatever the store's keys are.
    let mut incidents = incidents;
    incidents.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.incident_id.cmp(&b.incident_id))
    });
    let match_quality = rank::quality_of_similar(&analyzed, &incidents);
    Ok(SimilarResponse {
        incidents,
        match_quality,
        took_ms: started.elapsed().as_millis() as u64,
    })
}

/// Reciprocal-rank fusion of the step legs, with each candidate's ranks and scores.
pub(crate) fn fuse<S: Copy + Eq + Hash + Ord>(
    lexical: &[(S, f32)],
    vector: &[(S, f32)],
    options: &FusionOptions,
) -> Vec<Candidate<S>> {
    let lex_items: Vec<S> = lexical.iter().map(|x| x.0).collect();
    let vec_items: Vec<S> = vector.iter().map(|x| x.0).collect();
    let lex_score: HashMap<S, f32> = lexical.iter().copied().collect();
    let vec_score: HashMap<S, f32> = vector.iter().copied().collect();
    reciprocal_rank_fusion(
        &[
            (options.lexical_weight, &lex_items),
            (options.vector_weight, &vec_items),
        ],
        options.k,
    )
    .into_iter()
    .map(|f| Candidate {
        step: f.item,
        fused: f.score,
        lexical: f.ranks[0].map(|r| (r, lex_score[&f.item])),
        vector: f.ranks[1].map(|r| (r, vec_score[&f.item])),
        incident: None,
    })
    .collect()
}

/// Adds the incident-level leg to fused step candidates: each step gains
/// `incident_weight / (k + rank of its incident)`, so a step of a write-up that matches as a
/// whole rises above an equally ranked step of one that matches in a single line. The leg only
/// re-weighs steps the step legs found; it brings in none of its own.
pub(crate) fn add_incident_leg<S, I: Eq + Hash>(
    fused: &mut [Candidate<S>],
    incidents: &HashMap<I, (u32, f32)>,
    options: &FusionOptions,
    incident_of: impl Fn(S) -> I,
) where
    S: Copy,
{
    if incidents.is_empty() {
        return;
    }
    for c in fused.iter_mut() {
        if let Some(&(rank, score)) = incidents.get(&incident_of(c.step)) {
            c.fused += options.incident_weight / (options.k + rank as f32);
            c.incident = Some((rank, score));
        }
    }
    // Stable: equal scores keep the order the step legs gave them.
    fused.sort_by(|a, b| b.fused.total_cmp(&a.fused));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(step: u32, fused: f32) -> Candidate<u32> {
        Candidate {
            step,
            fused,
            lexical: None,
            vector: None,
            incident: None,
        }
    }

    #[test]
    fn the_incident_leg_lifts_steps_of_ranked_write_ups_only() {
        // Steps 0 and 1 belong to incident 10, step 2 to incident 20 (unranked by the leg).
        let incident_of = |step: u32| if step < 2 { 10 } else { 20 };
        let mut fused = vec![candidate(2, 0.03), candidate(0, 0.02), candidate(1, 0.01)];
        let legs = HashMap::from([(10, (1, 7.5))]);
        let options = FusionOptions::default();
        add_incident_leg(&mut fused, &legs, &options, incident_of);
        let order: Vec<u32> = fused.iter().map(|c| c.step).collect();
        assert_eq!(order, [0, 1, 2]);
        assert_eq!(fused[0].incident, Some((1, 7.5)));
        assert_eq!(fused[2].incident, None);
        let gain = options.incident_weight / (options.k + 1.0);
        assert!((fused[0].fused - (0.02 + gain)).abs() < 1e-6);
        assert!((fused[2].fused - 0.03).abs() < 1e-6);
    }
}
