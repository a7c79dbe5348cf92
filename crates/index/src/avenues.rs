//! "What did people try last time?": the avenues pursued in the incidents that resemble a
//! situation, grouped by outcome ([`avenues`]), and a comparison of an ongoing investigation's
//! notes with them ([`compare`]).
//!
//! Both run over any [`Store`]: its `similar` finds the resembling incidents and its
//! `incident` reads their steps, outcomes and cards, so they are written once for every
//! store.
//!
//! An *avenue* is one thing people pursued: a hypothesis checked, an action tried, a
//! mitigation, or the cause they confirmed. Near-identical avenues of different incidents
//! (stored vectors closer than [`MERGE_SIMILARITY`]) are merged and counted per outcome. The
//! list is diversified greedily (xQuAD-style): each pick discounts later candidates from the
//! same incident and the same trigger class, and one incident never gives more than a third of
//! the list while others have candidates left.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use precedent_core::{
    DateRange, Embedder, Incident, IncidentId, Outcome, Step, StepId, StepKind, TriggerClass,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::{
    Citation, Filters, MatchQuality, SimilarRequest, SimilarSource, Store, validate_k,
};
use crate::engine::cut;
use crate::error::{Error, Result};

/// Steps of two incidents whose stored vectors are at least this close (cosine), and that share
/// at least half of their content words, are the same avenue.
pub const MERGE_SIMILARITY: f32 = 0.75;
/// Share of content words (of the shorter text) two steps must have in common to merge.
const MERGE_OVERLAP: f32 = 0.5;
/// A note and a past step at least this close (cosine) say the same thing; from
/// [`NEAR_THING`] on they do when they also share a content word.
const SAME_THING: f32 = 0.62;
const NEAR_THING: f32 = 0.45;
/// Most incidents an avenue list or a comparison draws from.
const MAX_SOURCE_INCIDENTS: usize = 50;
/// Most evidence entries shown per avenue.
const MAX_EVIDENCE: usize = 5;
/// Most candidate steps an avenue list or a comparison embeds.
const MAX_CANDIDATES: usize = 256;
/// Most note units (lines, list items, sentences) a comparison embeds.
const MAX_NOTE_UNITS: usize = 64;
/// Longest notes accepted, in bytes.
pub const MAX_NOTES_BYTES: usize = 64 * 1024;
/// Avenue text is cut to about this many bytes.
const AVENUE_TEXT_BYTES: usize = 280;

fn default_k() -> usize {
    10
}

fn default_incidents() -> usize {
    10
}

/// The outcome groups of an avenue list, in the order they are shown.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AvenueGroup {
    /// A mitigation or action that restored service (or helped).
    RestoredService,
    /// An action that was tried and did not help.
    DidNotHelp,
    /// A hypothesis that was checked and ruled out.
    RuledOut,
    /// The cause people confirmed.
    ConfirmedCause,
    /// Something tried or checked whose result the write-up does not state.
    Tried,
}

impl AvenueGroup {
    /// Every group, in display order.
    pub const ALL: [AvenueGroup; 5] = [
        AvenueGroup::RestoredService,
        AvenueGroup::DidNotHelp,
        AvenueGroup::RuledOut,
        AvenueGroup::ConfirmedCause,
        AvenueGroup::Tried,
    ];

    /// The snake_case name used in JSON and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            AvenueGroup::RestoredService => "restored_service",
            AvenueGroup::DidNotHelp => "did_not_help",
            AvenueGroup::RuledOut => "ruled_out",
            AvenueGroup::ConfirmedCause => "confirmed_cause",
            AvenueGroup::Tried => "tried",
        }
    }

    /// A heading for people.
    pub fn label(self) -> &'static str {
        match self {
            AvenueGroup::RestoredService => "Restored service",
            AvenueGroup::DidNotHelp => "Did not help",
            AvenueGroup::RuledOut => "Ruled out",
            AvenueGroup::ConfirmedCause => "Confirmed cause",
            AvenueGroup::Tried => "Tried, result not stated",
        }
    }

    /// The group of one step, `None` when the step is not something people pursued.
    fn of(step: &Step) -> Option<AvenueGroup> {
        match (step.kind, step.outcome) {
            (StepKind::Mitigation, _) => Some(AvenueGroup::RestoredService),
            (_, Some(Outcome::Helped)) => Some(AvenueGroup::RestoredService),
            (_, Some(Outcome::DidNotHelp)) => Some(AvenueGroup::DidNotHelp),
            (_, Some(Outcome::RuledOut)) => Some(AvenueGroup::RuledOut),
            (_, Some(Outcome::Confirmed)) => Some(AvenueGroup::ConfirmedCause),
            (StepKind::Action, _) => Some(AvenueGroup::Tried),
            _ => None,
        }
    }
}

impl std::fmt::Display for AvenueGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AvenueGroup {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let norm = s.trim().to_ascii_lowercase().replace(['-', ' '], "_");
        let alias = match norm.as_str() {
            "helped" | "restored" | "fixed" => "restored_service",
            "ruled" => "ruled_out",
            "confirmed" | "cause" => "confirmed_cause",
            other => other,
        };
        AvenueGroup::ALL
            .iter()
            .copied()
            .find(|g| g.as_str() == alias)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "unknown outcome group {s:?}; expected restored_service, did_not_help, ruled_out, confirmed_cause or tried"
                ))
            })
    }
}

/// A request for the avenues pursued for a symptom or situation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AvenuesRequest {
    /// The symptom or situation, in words (an alert, an error, what on-call sees).
    pub query: String,
    /// Number of avenues, 1..=1000.
    #[serde(default = "default_k")]
    pub k: usize,
    /// How many resembling incidents to draw avenues from, 1..=50.
    #[serde(default = "default_incidents")]
    pub incidents: usize,
    /// Restrictions on the incidents (as in search; `kinds` is ignored: avenues are always
    /// investigation, action, mitigation and root-cause steps).
    #[serde(default)]
    pub filters: Filters,
    /// Keep only this group.
    #[serde(default)]
    pub outcome: Option<AvenueGroup>,
}

impl AvenuesRequest {
    /// Up to 10 avenues for `query`, from up to 10 incidents, unfiltered.
    pub fn new(query: impl Into<String>) -> Self {
        Self {
            query: query.into(),
            k: default_k(),
            incidents: default_incidents(),
            filters: Filters::default(),
            outcome: None,
        }
    }

    fn validate(&self) -> Result<()> {
        if self.query.trim().is_empty() {
            return Err(Error::invalid("empty query"));
        }
        validate_k(self.k)?;
        validate_incidents(self.incidents)?;
        self.filters.validate()
    }
}

fn validate_incidents(n: usize) -> Result<()> {
    if n == 0 || n > MAX_SOURCE_INCIDENTS {
        return Err(Error::invalid(format!(
            "incidents must be between 1 and {MAX_SOURCE_INCIDENTS}, got {n}"
        )));
    }
    Ok(())
}

/// One step behind an avenue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AvenueEvidence {
    /// Its incident.
    pub incident_id: IncidentId,
    /// The incident's title.
    pub title: String,
    /// When the incident happened.
    pub date: Option<DateRange>,
    /// The incident's trigger class.
    pub trigger_class: TriggerClass,
    /// The step.
    pub step_id: StepId,
    /// Its kind.
    pub kind: StepKind,
    /// What came of it.
    pub outcome: Option<Outcome>,
    /// Its text, cut to about a sentence or two.
    pub text: String,
    /// Where it is.
    pub citation: Citation,
}

/// How many incidents an avenue had each result in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OutcomeCounts {
    /// Incidents where it restored service or helped.
    pub helped: u32,
    /// Incidents where it was tried and did not help.
    pub did_not_help: u32,
    /// Incidents where it was checked and ruled out.
    pub ruled_out: u32,
    /// Incidents where it was the confirmed cause.
    pub confirmed: u32,
    /// Incidents where the result is not stated.
    pub unknown: u32,
}

impl OutcomeCounts {
    fn add(&mut self, group: AvenueGroup) {
        match group {
            AvenueGroup::RestoredService => self.helped += 1,
            AvenueGroup::DidNotHelp => self.did_not_help += 1,
            AvenueGroup::RuledOut => self.ruled_out += 1,
            AvenueGroup::ConfirmedCause => self.confirmed += 1,
            AvenueGroup::Tried => self.unknown += 1,
        }
    }

    /// "helped in 2 incidents, did not help in 1".
    pub fn describe(&self) -> String {
        let parts: Vec<String> = [
            (self.helped, "helped"),
            (self.did_not_help, "did not help"),
            (self.ruled_out, "ruled out"),
            (self.confirmed, "confirmed"),
            (self.unknown, "result not stated"),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| {
            let s = if n == 1 { "" } else { "s" };
            format!("{what} in {n} incident{s}")
        })
        .collect();
        parts.join(", ")
    }
}

/// One thing people pursued, merged across incidents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Avenue {
    /// The group it is listed under: its most frequent result across incidents.
    pub group: AvenueGroup,
    /// What was done or checked, in the words of its best-matching step.
    pub text: String,
    /// In how many incidents it had each result.
    pub counts: OutcomeCounts,
    /// Number of distinct incidents it was pursued in.
    pub incidents: u32,
    /// Relevance to the request: the resemblance of its incidents to the situation, from 0 to 1.
    pub score: f32,
    /// The steps it came from, best first (at most 5).
    pub evidence: Vec<AvenueEvidence>,
}

/// Answer to an [`AvenuesRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AvenuesResponse {
    /// Grouped by outcome (the order of [`AvenueGroup::ALL`]), best first within a group.
    pub avenues: Vec<Avenue>,
    /// Number of resembling incidents the avenues were drawn from.
    pub incidents_considered: u32,
    /// Distinct incidents among the avenues' evidence.
    pub distinct_incidents: u32,
    /// Distinct trigger classes among the avenues' incidents.
    pub distinct_trigger_classes: u32,
    /// How closely the resembling incidents match the situation: `none` means no close
    /// precedent, and the avenues are a long shot.
    pub match_quality: MatchQuality,
    /// Time spent, in milliseconds.
    pub took_ms: u64,
}

/// One candidate avenue step, before merging.
struct Candidate {
    incident: usize,
    step: Step,
    words: BTreeSet<String>,
    group: AvenueGroup,
    vector: Vec<f32>,
    /// Resemblance of its incident to the situation, 0..=1.
    weight: f32,
}

/// A resembling incident with its avenue candidates.
struct Source {
    incident: Incident,
    /// Its `similar` score divided by the best one.
    weight: f32,
}

/// The incidents resembling `source`, best first, with the full parse of each, and how
/// closely the best of them matches.
fn sources(
    store: &dyn Store,
    source: SimilarSource,
    n: usize,
    filters: &Filters,
    embedder: &dyn Embedder,
) -> Result<(Vec<Source>, MatchQuality)> {
    let filters = Filters {
        kinds: Vec::new(),
        ..filters.clone()
    };
    let similar = store.similar(
        &SimilarRequest {
            source,
            k: n,
            filters,
        },
        embedder,
    )?;
    let best = similar
        .incidents
        .first()
        .map_or(1.0, |i| i.score.max(f32::EPSILON));
    let mut out = Vec::with_capacity(similar.incidents.len());
    for found in similar.incidents {
        // An incident deleted since the store answered is skipped, not an error.
        if let Some(incident) = store.incident(&found.incident_id)? {
            out.push(Source {
                incident,
                weight: (found.score / best).clamp(0.0, 1.0),
            });
        }
    }
    Ok((out, similar.match_quality))
}

/// The steps of `sources` that are avenues (at most [`MAX_CANDIDATES`], best incidents
/// first), each embedded on its own text. Not the stored vectors: those carry the incident's
/// title (for retrieval), so two incidents' "restarted the ingress pods" would look apart and
/// every step of one incident alike.
fn candidates(sources: &[Source], embedder: &dyn Embedder) -> Result<Vec<Candidate>> {
    let mut out = Vec::new();
    'sources: for (i, source) in sources.iter().enumerate() {
        let root_cause = source.incident.card.root_cause.as_ref().map(|c| &c.step_id);
        for step in &source.incident.steps {
            let group = if Some(&step.id) == root_cause {
                Some(AvenueGroup::ConfirmedCause)
            } else {
                AvenueGroup::of(step)
            };
            let Some(group) = group else { continue };
            if out.len() == MAX_CANDIDATES {
                break 'sources;
            }
            out.push(Candidate {
                incident: i,
                words: content_words(&step.text),
                step: step.clone(),
                group,
                vector: Vec::new(),
                weight: source.weight,
            });
        }
    }
    let texts: Vec<&str> = out.iter().map(|c| without_time(&c.step.text)).collect();
    let vectors = embedder.embed(&texts).map_err(Error::Embed)?;
    for (c, v) in out.iter_mut().zip(vectors) {
        c.vector = v;
    }
    Ok(out)
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Words too common in write-ups to say what an avenue is about.
const STOP_WORDS: &[&str] = &[
    "the", "and", "for", "was", "were", "that", "this", "with", "from", "had", "has", "have",
    "not", "but", "all", "our", "its", "into", "then", "than", "which", "when", "after", "before",
    "about", "again", "also", "been", "being", "did", "does", "they", "them", "their", "there",
    "some", "more", "most", "other", "only", "over", "such", "what", "while", "utc", "because",
    "would", "could", "should", "any", "are", "can", "out", "off", "one", "two",
];

/// Lowercased content words of a text, crudely stemmed (`restarted`, `restarting` and
/// `restarts` are `restart`); numbers, timestamps and stop words left out.
fn content_words(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() >= 3 && !w.chars().any(|c| c.is_ascii_digit()))
        .map(str::to_lowercase)
        .filter(|w| !STOP_WORDS.contains(&w.as_str()))
        .map(|w| {
            for suffix in ["ing", "ed", "es", "s"] {
                if w.len() > suffix.len() + 3
                    && let Some(stem) = w.strip_suffix(suffix)
                {
                    return stem.to_owned();
                }
            }
            w
        })
        .collect()
}

/// Share of the smaller set's words that the other has too.
fn overlap(a: &BTreeSet<String>, b: &BTreeSet<String>) -> f32 {
    let small = a.len().min(b.len());
    if small == 0 {
        return 0.0;
    }
    a.intersection(b).count() as f32 / small as f32
}

/// A timeline row's text without its leading time ("2023-11-02 18:50 | ", "06:48 UTC: ",
/// "14:02 "), which says when, not what.
fn without_time(text: &str) -> &str {
    let is_time = |token: &str| {
        let digits = token.chars().filter(char::is_ascii_digit).count();
        digits >= 2
            && token.contains([':', '-'])
            && token
                .chars()
                .all(|c| c.is_ascii_digit() || "-:T.Z/".contains(c))
    };
    let mut rest = text.trim_start();
    let mut stripped = false;
    for _ in 0..3 {
        let token_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let token = rest[..token_end].trim_end_matches([':', ',']);
        let zone = matches!(token, "UTC" | "GMT" | "Z");
        if !(is_time(token) || (stripped && zone)) {
            break;
        }
        rest = rest[token_end..].trim_start();
        stripped = true;
    }
    if !stripped {
        return text;
    }
    let rest = rest.trim_start_matches([' ', ':', '-', '|', '\u{2013}', '\u{2014}']);
    if rest.is_empty() { text } else { rest }
}

/// The first clause of a step ("Suspected DNS" of "Suspected DNS; resolution was correct"),
/// or the whole text when it has one clause.
fn lead_clause(text: &str) -> &str {
    let cut = [";", ", so ", " - ", " but ", ": ", ". "]
        .iter()
        .filter_map(|sep| text.find(sep))
        .filter(|&at| at >= 8)
        .min();
    cut.map_or(text, |at| text[..at].trim())
}

/// Whether a note (its vector and words) says what a past step says.
fn same_thing(similarity: f32, note: &BTreeSet<String>, past: &BTreeSet<String>) -> bool {
    similarity >= SAME_THING || (similarity >= NEAR_THING && overlap(note, past) > 0.0)
}

/// Candidates merged into clusters of near-identical avenues; each cluster lists candidate
/// indexes, best first.
fn cluster(cands: &[Candidate], relevance: &[f32]) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..cands.len()).collect();
    order.sort_by(|&a, &b| relevance[b].total_cmp(&relevance[a]).then(a.cmp(&b)));
    let mut clusters: Vec<Vec<usize>> = Vec::new();
    for i in order {
        // Join the cluster whose head is closest, when close enough in meaning and words and
        // the cluster has no step of this incident yet (steps of one incident share its title
        // in their vectors, so they look alike without being the same avenue).
        let best = clusters
            .iter_mut()
            .filter(|c| c.iter().all(|&j| cands[j].incident != cands[i].incident))
            .map(|c| {
                let sim = dot(&cands[c[0]].vector, &cands[i].vector);
                let words = overlap(&cands[c[0]].words, &cands[i].words);
                (sim, words, c)
            })
            .filter(|(sim, words, _)| *sim >= MERGE_SIMILARITY && *words >= MERGE_OVERLAP)
            .map(|(sim, _, c)| (sim, c))
            .max_by(|a, b| a.0.total_cmp(&b.0));
        match best {
            Some((_, c)) => c.push(i),
            None => clusters.push(vec![i]),
        }
    }
    clusters
}

/// Shortens a step's text to about [`AVENUE_TEXT_BYTES`] at a word boundary.
fn short(text: &str) -> String {
    let text = text.trim();
    if text.len() <= AVENUE_TEXT_BYTES {
        return text.to_owned();
    }
    let head = cut(text, AVENUE_TEXT_BYTES);
    let head = head.rfind(' ').map_or(head, |at| &head[..at]);
    format!("{}…", head.trim_end_matches([',', ';', ':']))
}

fn evidence(source: &Source, step: &Step) -> AvenueEvidence {
    AvenueEvidence {
        incident_id: source.incident.id.clone(),
        title: source.incident.title.clone(),
        date: source.incident.date,
        trigger_class: source.incident.card.trigger_class,
        step_id: step.id.clone(),
        kind: step.kind,
        outcome: step.outcome,
        text: short(&step.text),
        citation: Citation {
            path: source.incident.path.clone(),
            line_start: step.line_start,
            line_end: step.line_end,
        },
    }
}

/// Builds the avenue of one cluster.
fn avenue(cluster: &[usize], cands: &[Candidate], sources: &[Source], score: f32) -> Avenue {
    let mut counts = OutcomeCounts::default();
    let mut seen: BTreeSet<(usize, AvenueGroup)> = BTreeSet::new();
    let mut incidents: BTreeSet<usize> = BTreeSet::new();
    let mut votes: HashMap<AvenueGroup, u32> = HashMap::new();
    for &i in cluster {
        let c = &cands[i];
        incidents.insert(c.incident);
        if seen.insert((c.incident, c.group)) {
            counts.add(c.group);
            *votes.entry(c.group).or_default() += 1;
        }
    }
    // The most frequent result; ties go to the earlier group (restored service first).
    let group = AvenueGroup::ALL
        .iter()
        .copied()
        .filter(|g| votes.contains_key(g))
        .max_by(|a, b| votes[a].cmp(&votes[b]).then(b.cmp(a)))
        .unwrap_or(cands[cluster[0]].group);
    // One evidence line per incident, best first.
    let mut shown: BTreeSet<usize> = BTreeSet::new();
    let evidence = cluster
        .iter()
        .filter(|&&i| shown.insert(cands[i].incident))
        .take(MAX_EVIDENCE)
        .map(|&i| evidence(&sources[cands[i].incident], &cands[i].step))
        .collect();
    Avenue {
        group,
        text: short(without_time(&cands[cluster[0]].step.text)),
        counts,
        incidents: incidents.len() as u32,
        score,
        evidence,
    }
}

/// Picks up to `k` clusters greedily: relevance discounted by what was picked from the same
/// incident (x0.5 each) and the same trigger class (x0.8 each); no incident gives more than a
/// third of the list while clusters of other incidents remain.
fn diversify(
    clusters: &[Vec<usize>],
    cands: &[Candidate],
    sources: &[Source],
    relevance: &[f32],
    k: usize,
) -> Vec<(usize, f32)> {
    let cap = k.div_ceil(3).max(1);
    let head = |c: &Vec<usize>| cands[c[0]].incident;
    let class = |c: &Vec<usize>| sources[head(c)].incident.card.trigger_class;
    let mut picked: Vec<(usize, f32)> = Vec::new();
    let mut per_incident: HashMap<usize, usize> = HashMap::new();
    let mut per_class: HashMap<TriggerClass, usize> = HashMap::new();
    let mut left: Vec<usize> = (0..clusters.len()).collect();
    while picked.len() < k && !left.is_empty() {
        let others_remain = |incident: usize| left.iter().any(|&c| head(&clusters[c]) != incident);
        let best = left
            .iter()
            .enumerate()
            .filter(|&(_, &c)| {
                let inc = head(&clusters[c]);
                per_incident.get(&inc).copied().unwrap_or(0) < cap || !others_remain(inc)
            })
            .map(|(pos, &c)| {
                let inc = head(&clusters[c]);
                let rel = relevance[clusters[c][0]]
                    // A merged avenue, seen in several incidents, is worth more.
                    * (1.0 + 0.15 * (clusters[c].len().min(4) as f32 - 1.0))
                    * 0.5f32.powi(per_incident.get(&inc).copied().unwrap_or(0) as i32)
                    * 0.8f32.powi(
                        per_class
                            .get(&class(&clusters[c]))
                            .copied()
                            .unwrap_or(0) as i32,
                    );
                (pos, c, rel)
            })
            .max_by(|a, b| a.2.total_cmp(&b.2).then(b.1.cmp(&a.1)));
        let Some((pos, c, _)) = best else { break };
        left.remove(pos);
        *per_incident.entry(head(&clusters[c])).or_default() += 1;
        *per_class.entry(class(&clusters[c])).or_default() += 1;
        picked.push((c, relevance[clusters[c][0]]));
    }
    picked
}

/// Relevance of each candidate: its incident's resemblance, raised a little when the step
/// itself is close to the situation's vector.
fn relevance(cands: &[Candidate], query: Option<&[f32]>) -> Vec<f32> {
    cands
        .iter()
        .map(|c| {
            let closeness = query.map_or(0.0, |q| dot(q, &c.vector).max(0.0));
            // What was tried with no stated result tells less than what helped, failed or
            // was ruled out: it fills the list only after those.
            let informative = if c.group == AvenueGroup::Tried {
                0.6
            } else {
                1.0
            };
            informative * c.weight * (0.6 + 0.4 * closeness)
        })
        .collect()
}

fn summarise(avenues: &[Avenue]) -> (u32, u32) {
    let incidents: BTreeSet<&IncidentId> = avenues
        .iter()
        .flat_map(|a| a.evidence.iter().map(|e| &e.incident_id))
        .collect();
    let classes: BTreeSet<TriggerClass> = avenues
        .iter()
        .flat_map(|a| a.evidence.iter().map(|e| e.trigger_class))
        .collect();
    (incidents.len() as u32, classes.len() as u32)
}

/// The distinct avenues people pursued in the incidents that resemble `request.query`,
/// grouped by outcome and diversified across incidents and trigger classes.
pub fn avenues(
    store: &dyn Store,
    request: &AvenuesRequest,
    embedder: &dyn Embedder,
) -> Result<AvenuesResponse> {
    let started = Instant::now();
    request.validate()?;
    let query = request.query.trim();
    let (sources, match_quality) = sources(
        store,
        SimilarSource::Text(query.to_owned()),
        request.incidents,
        &request.filters,
        embedder,
    )?;
    let mut cands = candidates(&sources, embedder)?;
    if let Some(group) = request.outcome {
        cands.retain(|c| c.group == group);
    }
    let query_vector = embedder
        .embed(&[cut(query, crate::api::MAX_QUERY_BYTES)])
        .map_err(Error::Embed)?
        .pop();
    let relevance = relevance(&cands, query_vector.as_deref());
    let clusters = cluster(&cands, &relevance);
    let picked = diversify(&clusters, &cands, &sources, &relevance, request.k);
    let mut avenues: Vec<Avenue> = picked
        .into_iter()
        .map(|(c, score)| avenue(&clusters[c], &cands, &sources, score))
        .collect();
    if let Some(group) = request.outcome {
        avenues.retain(|a| a.group == group);
    }
    // Grouped in display order; the sort is stable, so picks keep their order in a group.
    avenues.sort_by_key(|a| a.group);
    let (distinct_incidents, distinct_trigger_classes) = summarise(&avenues);
    Ok(AvenuesResponse {
        avenues,
        incidents_considered: sources.len() as u32,
        distinct_incidents,
        distinct_trigger_classes,
        match_quality,
        took_ms: started.elapsed().as_millis() as u64,
    })
}

/// A comparison of an ongoing investigation's notes with the past incidents they resemble.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompareRequest {
    /// The notes: a draft write-up (Markdown) or plain notes or log lines pasted from the
    /// incident channel, up to 64 KiB.
    pub notes: String,
    /// How many similar past incidents to compare with, 1..=50.
    #[serde(default = "default_compare_k")]
    pub k: usize,
    /// Restrictions on the past incidents.
    #[serde(default)]
    pub filters: Filters,
}

fn default_compare_k() -> usize {
    5
}

impl CompareRequest {
    /// Compares `notes` with the 5 most similar past incidents.
    pub fn new(notes: impl Into<String>) -> Self {
        Self {
            notes: notes.into(),
            k: default_compare_k(),
            filters: Filters::default(),
        }
    }

    fn validate(&self) -> Result<()> {
        if self.notes.trim().is_empty() {
            return Err(Error::invalid("empty notes"));
        }
        if self.notes.len() > MAX_NOTES_BYTES {
            return Err(Error::invalid(format!(
                "notes are {} bytes; at most {MAX_NOTES_BYTES} are accepted",
                self.notes.len()
            )));
        }
        validate_incidents(self.k)?;
        self.filters.validate()
    }
}

/// A past incident a comparison drew from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ComparedIncident {
    /// The incident.
    pub incident_id: IncidentId,
    /// Its title.
    pub title: String,
    /// When it happened.
    pub date: Option<DateRange>,
    /// Its trigger class.
    pub trigger_class: TriggerClass,
    /// Its resemblance to the notes, relative to the best (1.0).
    pub score: f32,
}

/// A line of the notes that meets a past step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NoteMatch {
    /// The line of the notes, as written.
    pub note: String,
    /// Its line number in the notes, from 1.
    pub note_line: u32,
    /// Cosine similarity between the note and the past step.
    pub similarity: f32,
    /// The past step.
    pub past: AvenueEvidence,
}

/// Answer to a [`CompareRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CompareResponse {
    /// The past incidents compared with, most similar first.
    pub incidents: Vec<ComparedIncident>,
    /// What those incidents checked, tried and fixed that the notes do not mention yet,
    /// grouped by outcome like avenues.
    pub not_in_notes: Vec<Avenue>,
    /// Hypotheses or checks in the notes that were ruled out in a past incident.
    pub ruled_out_before: Vec<NoteMatch>,
    /// Lines of the notes that match a cause confirmed in a past incident.
    pub matches_confirmed_cause: Vec<NoteMatch>,
    /// Lines of the notes that match something that did not help before.
    pub did_not_help_before: Vec<NoteMatch>,
    /// How closely the past incidents match the notes (`none`: no close precedent).
    pub match_quality: MatchQuality,
    /// Time spent, in milliseconds.
    pub took_ms: u64,
}

/// One unit of the notes: a line, a list item or a sentence of a long line.
#[derive(Debug, Clone)]
struct NoteUnit {
    text: String,
    line: u32,
}

/// Splits notes into units worth comparing: non-empty lines of at least three words, long
/// lines split at sentence ends; headings, fences and table rules are skipped.
/// `text` without an ordered-list marker ("3. ", "12) "); a leading time such as "14:02" stays.
fn strip_list_marker(text: &str) -> &str {
    let digits = text.len() - text.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let rest = &text[digits..];
    match rest.strip_prefix(['.', ')']) {
        Some(after) if digits > 0 && (after.is_empty() || after.starts_with(' ')) => after.trim(),
        _ => text.trim(),
    }
}

fn note_units(notes: &str) -> Vec<NoteUnit> {
    let mut out = Vec::new();
    let mut in_fence = false;
    for (i, line) in notes.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        if trimmed.starts_with('#') || trimmed.starts_with("---") || trimmed.starts_with("|-") {
            continue;
        }
        let text = strip_list_marker(trimmed.trim_start_matches(['-', '*', '+', '>', ' ']));
        let pieces: Vec<&str> = if text.len() > 160 {
            text.split_inclusive(". ").collect()
        } else {
            vec![text]
        };
        for piece in pieces {
            let piece = piece.trim();
            if piece.split_whitespace().count() >= 3 {
                out.push(NoteUnit {
                    text: cut(piece, 1000).to_owned(),
                    line: i as u32 + 1,
                });
            }
        }
    }
    if out.len() > MAX_NOTE_UNITS {
        // Keep the spread: every n-th unit rather than only the first ones.
        let step = out.len().div_ceil(MAX_NOTE_UNITS);
        out = out.into_iter().step_by(step).collect();
    }
    out
}

/// Compares an investigation's notes with the past incidents they resemble: what those
/// incidents checked, tried and fixed that the notes do not mention; which of the notes'
/// hypotheses were ruled out before; which match a confirmed past cause.
pub fn compare(
    store: &dyn Store,
    request: &CompareRequest,
    embedder: &dyn Embedder,
) -> Result<CompareResponse> {
    let started = Instant::now();
    request.validate()?;
    let units = note_units(&request.notes);
    if units.is_empty() {
        return Err(Error::invalid(
            "the notes have no line of three words or more to compare",
        ));
    }
    let (sources, match_quality) = sources(
        store,
        SimilarSource::Text(request.notes.clone()),
        request.k,
        &request.filters,
        embedder,
    )?;
    let texts: Vec<&str> = units.iter().map(|u| u.text.as_str()).collect();
    let note_vectors = embedder.embed(&texts).map_err(Error::Embed)?;
    let cands = candidates(&sources, embedder)?;
    // A step is read whole (its candidate vector) and by its lead clause ("Suspected DNS" of
    // "Suspected DNS; resolution was correct, DNS ruled out"), since a note line usually
    // states only the hypothesis or the action.
    let matchable: Vec<usize> = (0..cands.len())
        .filter(|&i| cands[i].group != AvenueGroup::Tried)
        .collect();
    // Only leads that differ from the whole text are embedded: the whole is already.
    let with_lead: Vec<usize> = matchable
        .iter()
        .copied()
        .filter(|&i| {
            let whole = without_time(&cands[i].step.text);
            lead_clause(whole).len() < whole.len()
        })
        .collect();
    let mut step_texts: Vec<&str> = with_lead
        .iter()
        .map(|&i| lead_clause(without_time(&cands[i].step.text)))
        .collect();
    // What the resembling incidents saw (symptoms, impact, summary): a note line closer to
    // one of these than to any past hypothesis or action is an observation, not a verdict.
    let observed: Vec<&str> = sources
        .iter()
        .flat_map(|s| &s.incident.steps)
        .filter(|step| {
            matches!(
                step.kind,
                StepKind::Detection | StepKind::Impact | StepKind::Summary
            )
        })
        .map(|step| without_time(&step.text))
        .take(MAX_CANDIDATES / 4)
        .collect();
    step_texts.extend(&observed);
    let embedded = embedder.embed(&step_texts).map_err(Error::Embed)?;
    let (leads, observed_vectors) = embedded.split_at(with_lead.len());
    let mut step_vectors: Vec<Option<[&[f32]; 2]>> = vec![None; cands.len()];
    for &i in &matchable {
        step_vectors[i] = Some([&cands[i].vector, &cands[i].vector]);
    }
    for (&i, lead) in with_lead.iter().zip(leads) {
        step_vectors[i] = Some([&cands[i].vector, lead]);
    }
    let observation: Vec<f32> = note_vectors
        .iter()
        .map(|v| {
            observed_vectors
                .iter()
                .map(|o| dot(v, o))
                .fold(f32::MIN, f32::max)
        })
        .collect();

    let note_words: Vec<BTreeSet<String>> = units.iter().map(|u| content_words(&u.text)).collect();
    // The line of the notes that says what each past avenue says, if any, with its similarity.
    let nearest: Vec<Option<(usize, f32)>> = cands
        .iter()
        .zip(&step_vectors)
        .map(|(c, vectors)| {
            let vectors = (*vectors)?;
            note_vectors
                .iter()
                .enumerate()
                .map(|(u, v)| {
                    let sim = vectors.iter().map(|s| dot(v, s)).fold(f32::MIN, f32::max);
                    (u, sim)
                })
                .filter(|&(u, sim)| same_thing(sim, &note_words[u], &c.words))
                .max_by(|a, b| {
                    let key =
                        |&(u, sim): &(usize, f32)| sim + 0.25 * overlap(&note_words[u], &c.words);
                    key(a).total_cmp(&key(b))
                })
        })
        .collect();

    let relevance = relevance(&cands, None);
    // Not yet in the notes: candidates no note line comes close to.
    let missing: Vec<usize> = (0..cands.len())
        .filter(|&i| nearest[i].is_none() && step_vectors[i].is_some())
        .collect();
    let sub: Vec<Candidate> = missing
        .iter()
        .map(|&i| Candidate {
            incident: cands[i].incident,
            step: cands[i].step.clone(),
            words: cands[i].words.clone(),
            group: cands[i].group,
            vector: cands[i].vector.clone(),
            weight: cands[i].weight,
        })
        .collect();
    let sub_relevance: Vec<f32> = missing.iter().map(|&i| relevance[i]).collect();
    let clusters = cluster(&sub, &sub_relevance);
    let k = 12;
    let mut not_in_notes: Vec<Avenue> = diversify(&clusters, &sub, &sources, &sub_relevance, k)
        .into_iter()
        .map(|(c, score)| avenue(&clusters[c], &sub, &sources, score))
        .collect();
    not_in_notes.sort_by_key(|a| a.group);

    // Notes that meet a past ruled-out hypothesis, a confirmed cause, or a failed action: the
    // best past match per note line and group.
    let mut best: HashMap<(u32, AvenueGroup), (f32, usize)> = HashMap::new();
    for (i, c) in cands.iter().enumerate() {
        let Some((u, sim)) = nearest[i] else {
            continue;
        };
        let key = (units[u].line, c.group);
        let e = best.entry(key).or_insert((sim, i));
        if sim > e.0 {
            *e = (sim, i);
        }
    }
    // A note line is either something done or something suspected, whichever kind of past
    // step it resembles most: "restarted the ingress pods" that met a failed restart is not
    // also reported as matching a confirmed cause that mentions the ingress pods.
    let mut as_action: HashMap<u32, f32> = HashMap::new();
    let mut as_hypothesis: HashMap<u32, f32> = HashMap::new();
    for (&(line, group), &(sim, _)) in &best {
        let side = match group {
            AvenueGroup::RuledOut | AvenueGroup::ConfirmedCause => &mut as_hypothesis,
            _ => &mut as_action,
        };
        let e = side.entry(line).or_insert(sim);
        *e = e.max(sim);
    }
    let observed_at: HashMap<u32, f32> = units
        .iter()
        .zip(&observation)
        .map(|(u, &sim)| (u.line, sim))
        .fold(HashMap::new(), |mut m, (line, sim)| {
            let e = m.entry(line).or_insert(sim);
            *e = e.max(sim);
            m
        });
    best.retain(|&(line, group), _| {
        let action = as_action.get(&line).copied().unwrap_or(f32::MIN);
        let hypothesis = as_hypothesis.get(&line).copied().unwrap_or(f32::MIN);
        let observed = observed_at.get(&line).copied().unwrap_or(f32::MIN);
        let mine = match group {
            AvenueGroup::RuledOut | AvenueGroup::ConfirmedCause => hypothesis,
            _ => action,
        };
        mine >= action.max(hypothesis) && mine >= observed
    });
    let mut matches: Vec<((u32, AvenueGroup), (f32, usize))> = best.into_iter().collect();
    matches.sort_by(|a, b| b.1.0.total_cmp(&a.1.0).then(a.0.cmp(&b.0)));
    let mut ruled_out_before = Vec::new();
    let mut matches_confirmed_cause = Vec::new();
    let mut did_not_help_before = Vec::new();
    for ((line, group), (sim, i)) in matches {
        let unit = units
            .iter()
            .find(|u| u.line == line)
            .map_or("", |u| u.text.as_str());
        let m = NoteMatch {
            note: unit.to_owned(),
            note_line: line,
            similarity: sim,
            past: evidence(&sources[cands[i].incident], &cands[i].step),
        };
        match group {
            AvenueGroup::RuledOut => ruled_out_before.push(m),
            AvenueGroup::ConfirmedCause => matches_confirmed_cause.push(m),
            AvenueGroup::DidNotHelp => did_not_help_before.push(m),
            _ => {}
        }
    }
    let best_weight = sources.first().map_or(1.0, |s| s.weight);
    Ok(CompareResponse {
        incidents: sources
            .iter()
            .map(|s| ComparedIncident {
                incident_id: s.incident.id.clone(),
                title: s.incident.title.clone(),
                date: s.incident.date,
                trigger_class: s.incident.card.trigger_class,
                score: s.weight / best_weight.max(f32::EPSILON),
            })
            .collect(),
        not_in_notes,
        ruled_out_before,
        matches_confirmed_cause,
        did_not_help_before,
        match_quality,
        took_ms: started.elapsed().as_millis() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_parse_with_aliases_and_keep_their_order() {
        assert_eq!(
            "did-not-help".parse::<AvenueGroup>().unwrap(),
            AvenueGroup::DidNotHelp
        );
        assert_eq!(
            "helped".parse::<AvenueGroup>().unwrap(),
            AvenueGroup::RestoredService
        );
        assert!("maybe".parse::<AvenueGroup>().unwrap_err().is_user_error());
        let mut sorted = AvenueGroup::ALL;
        sorted.sort();
        assert_eq!(sorted, AvenueGroup::ALL);
    }

    #[test]
    fn counts_read_as_a_sentence() {
        let mut c = OutcomeCounts::default();
        c.add(AvenueGroup::RestoredService);
        c.add(AvenueGroup::RestoredService);
        c.add(AvenueGroup::DidNotHelp);
        assert_eq!(
            c.describe(),
            "helped in 2 incidents, did not help in 1 incident"
        );
    }

    #[test]
    fn notes_split_into_lines_worth_comparing() {
        let notes = "# Notes\n\n- 14:02 restarted the ingress pods, no change\n- ok\n```\nkubectl get pods\n```\nChecked DNS resolution from the node. It resolves fine. Next we look at the certificates on the load balancer because the handshake fails for every client that connects through the public endpoint since the deploy.\n";
        let units = note_units(notes);
        let texts: Vec<&str> = units.iter().map(|u| u.text.as_str()).collect();
        assert_eq!(texts[0], "14:02 restarted the ingress pods, no change");
        assert_eq!(units[0].line, 3);
        assert!(!texts.iter().any(|t| t.contains("kubectl")), "{texts:?}");
        assert!(texts.len() >= 3, "{texts:?}");
        assert!(units[1..].iter().all(|u| u.line == 8));
    }

    #[test]
    fn times_are_not_what_a_step_says() {
        for (text, expected) in [
            ("2023-11-02 18:50 | Suspected DNS", "Suspected DNS"),
            (
                "06:48 UTC: restarting had no effect",
                "restarting had no effect",
            ),
            ("14:02 restarted the pods", "restarted the pods"),
            ("2021-03-04T14:02Z - failover", "failover"),
            ("Restarted at 14:02", "Restarted at 14:02"),
            ("502 errors from the ingress", "502 errors from the ingress"),
            ("14:02", "14:02"),
        ] {
            assert_eq!(without_time(text), expected, "{text}");
        }
    }

    #[test]
    fn short_text_is_cut_at_a_word() {
        let long = "word ".repeat(100);
        let s = short(&long);
        assert!(s.len() <= AVENUE_TEXT_BYTES + 3);
        assert!(s.ends_with('…'));
        assert_eq!(short(" a b "), "a b");
    }
}
