//! Blocks -> steps: heading-aware grouping, splitting of long blocks on sentence boundaries with
//! a small overlap, merging of tiny fragments, classification and outcomes.

use precedent_core::{At, Outcome, StepKind};

use crate::assemble::{Assembled, Block, Section};
use crate::classify::{self, HeadingKind};
use crate::leaf::line_at;

/// Chunking limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkOptions {
    /// A step holds at most this many words (the overlap included).
    pub max_words: usize,
    /// A long block split in several steps repeats at most this many words (one sentence) at
    /// the start of the next step.
    pub overlap_words: usize,
    /// Fragments shorter than this merge with a neighbour in the same section.
    pub min_words: usize,
}

impl Default for ChunkOptions {
    fn default() -> Self {
        // 160 words stays under the 256 tokens of MiniLM-class models for most English prose.
        Self {
            max_words: 160,
            overlap_words: 30,
            min_words: 10,
        }
    }
}

/// A step before it gets its ids.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Chunk {
    pub(crate) section: usize,
    pub(crate) text: String,
    pub(crate) line_start: u32,
    pub(crate) line_end: u32,
    pub(crate) kind: StepKind,
    pub(crate) at: Option<At>,
    pub(crate) outcome: Option<Outcome>,
    pub(crate) timeline: bool,
    /// A timeline row, classified by its own wording.
    pub(crate) row: bool,
}

#[derive(Debug)]
struct Piece {
    section: usize,
    text: String,
    marks: Vec<(u32, u32)>,
    timeline: bool,
    at: Option<At>,
    hint: Option<StepKind>,
    /// A list item of its own.
    list: bool,
    /// Boilerplate or template text, which never merges with anything.
    boiler: bool,
}

impl Piece {
    fn words(&self) -> usize {
        self.text.split_whitespace().count()
    }

    fn absorb(&mut self, other: Piece) {
        let base = self.text.len() as u32 + 1;
        self.text.push('\n');
        self.text.push_str(&other.text);
        self.marks
            .extend(other.marks.into_iter().map(|(o, l)| (o + base, l)));
        if self.at.is_none() {
            self.at = other.at;
        }
        self.boiler = false;
    }
}

/// Whether `intro`, not itself a list item, sits on the line right above the list item or
/// timeline row `next` of its section.
fn introduces(intro: &Piece, next: &Piece) -> bool {
    let last = intro.marks.last().map(|&(_, line)| line);
    let first = next.marks.first().map(|&(_, line)| line);
    !intro.list
        && (next.list || next.timeline)
        && intro.section == next.section
        && last
            .zip(first)
            .is_some_and(|(last, first)| first == last + 1)
}

/// Turns assembled blocks into chunks.
pub(crate) fn chunk(assembled: Assembled, options: &ChunkOptions) -> Vec<Chunk> {
    let Assembled {
        sections, blocks, ..
    } = assembled;
    let mapped = |block: &Block| -> Option<StepKind> {
        let section = sections[block.section].kind;
        let sticky = matches!(
            section,
            Some(HeadingKind::Kind(StepKind::Lesson | StepKind::FollowUp))
        );
        let hint = if sticky {
            section
        } else {
            block.hint.or(section)
        };
        match hint {
            Some(HeadingKind::Kind(kind)) => Some(kind),
            _ => None,
        }
    };

    // 1. Pieces: blocks of a labelled section merge up to the size limit.
    let mut pieces: Vec<Piece> = Vec::with_capacity(blocks.len());
    for block in blocks {
        let hint = mapped(&block);
        let piece = Piece {
            section: block.section,
            timeline: block.timeline,
            at: block.at.clone(),
            hint,
            list: block.item,
            boiler: classify::is_boilerplate(&block.text),
            text: block.text,
            marks: block.marks,
        };
        if let Some(last) = pieces.last_mut() {
            let same = last.section == piece.section
                && !last.timeline
                && !piece.timeline
                && last.hint == piece.hint
                && !last.boiler
                && !piece.boiler
                && !(last.list && piece.list && piece.words() >= options.min_words);
            if same && piece.hint.is_some() && last.words() + piece.words() <= options.max_words {
                last.absorb(piece);
                continue;
            }
        }
        pieces.push(piece);
    }

    // 2. Tiny fragments join a neighbour of their section: the previous one, else the next.
    let mut merged: Vec<Piece> = Vec::with_capacity(pieces.len());
    let mut carry: Option<Piece> = None;
    let mut pieces = pieces.into_iter().peekable();
    while let Some(mut piece) = pieces.next() {
        if let Some(tiny) = carry.take() {
            if tiny.section == piece.section && !piece.timeline && !piece.boiler {
                let mut tiny = tiny;
                tiny.absorb(piece);
                piece = tiny;
            } else {
                merged.push(tiny);
            }
        }
        // A status marker ("Incident declared") stays a step of its own, whatever its size:
        // joined to the alert quoted under it, it would read as the alert.
        let marker = piece.words() < options.min_words && classify::is_status_marker(&piece.text);
        if !piece.timeline && piece.words() < options.min_words && !piece.boiler && !marker {
            // A line that introduces the list right under it ("Icinga alert on 'MediaWiki
            // exceptions'" over the alert rows) belongs with that list, not with the paragraph
            // above it: it joins the first item, or stands alone before timeline rows.
            if let Some(next) = pieces.peek()
                && introduces(&piece, next)
            {
                if next.timeline || next.boiler {
                    merged.push(piece);
                } else {
                    carry = Some(piece);
                }
                continue;
            }
            if let Some(last) = merged.last_mut()
                && last.section == piece.section
                && !last.timeline
                && !last.boiler
                && last.words() + piece.words() <= options.max_words + options.min_words
            {
                last.absorb(piece);
                continue;
            }
            carry = Some(piece);
            continue;
        }
        merged.push(piece);
    }
    merged.extend(carry);

    // 3. Split long pieces, classify.
    let mut chunks = Vec::with_capacity(merged.len());
    for (i, piece) in merged.into_iter().enumerate() {
        let section = &sections[piece.section];
        let in_timeline = section.kind == Some(HeadingKind::Timeline);
        let first_in_root = i == 0 && section.heading_path.is_empty();
        let narrative = section.kind == Some(HeadingKind::Narrative);
        let row = piece.timeline || (in_timeline && piece.hint.is_none());
        let ranges = if row || narrative {
            clauses(&piece.text, options)
        } else {
            split(&piece.text, options)
        };
        for range in ranges {
            let text = piece.text[range.clone()].to_owned();
            let (kind, outcome) = classify_text(&text, row, piece.hint, first_in_root, narrative);
            chunks.push(Chunk {
                section: piece.section,
                line_start: line_at(&piece.marks, range.start),
                line_end: line_at(&piece.marks, range.end - 1),
                text,
                kind,
                at: piece.at.clone(),
                outcome,
                timeline: piece.timeline || (in_timeline && piece.at.is_some()),
                row,
            });
        }
    }
    read_sequence(&mut chunks, &sections);
    chunks
}

/// The kind and outcome of one step from its own text: boilerplate is `other`, status markers
/// are `timeline_event`, timeline rows take their kind from their wording, other steps from
/// their section unless the wording plainly says otherwise.
fn classify_text(
    text: &str,
    row: bool,
    hint: Option<StepKind>,
    first_in_root: bool,
    narrative: bool,
) -> (StepKind, Option<Outcome>) {
    use StepKind::*;
    if classify::is_boilerplate(text) {
        return (Other, None);
    }
    let status_allowed = row
        || matches!(
            hint,
            None | Some(Mitigation | Action | Detection | Impact | Investigation | TimelineEvent)
        );
    if status_allowed && classify::is_status_marker(text) {
        return (TimelineEvent, None);
    }
    let kind = if let Some(kind) = classify::label_kind(text).filter(|_| row || hint.is_none()) {
        kind
    } else if row {
        classify::wording_kind(text, &classify::TIMELINE_KINDS).unwrap_or(TimelineEvent)
    } else if matches!(hint, None | Some(Other)) && classify::is_action_item(text) {
        FollowUp
    } else if let Some(kind) = hint {
        kind
    } else if first_in_root {
        Summary
    } else {
        let fallback = if narrative { Summary } else { Other };
        classify::wording_kind(text, &classify::PROSE_KINDS).unwrap_or(fallback)
    };
    settle(kind, classify::outcome(kind, text), text)
}

/// Reconciles a kind with its outcome: a mitigation is what restored service, so one that did
/// not help is an action, and an action that restored service is a mitigation.
fn settle(kind: StepKind, outcome: Option<Outcome>, text: &str) -> (StepKind, Option<Outcome>) {
    use StepKind::*;
    match (kind, outcome) {
        (Mitigation, Some(Outcome::DidNotHelp)) => (Action, outcome),
        (Mitigation, _) => (Mitigation, Some(Outcome::Helped)),
        (Action, Some(Outcome::Helped)) if classify::restores_service(text) => {
            (Mitigation, outcome)
        }
        _ => (kind, outcome),
    }
}

/// Reads steps in order, as a responder reads a timeline: rows before anything was noticed
/// that make a change are the trigger, and an action takes the verdict of the rows after it
/// ("10:49 attempt at running the rollover script" / "10:51 attempt fails").
fn read_sequence(chunks: &mut [Chunk], sections: &[Section]) {
    use StepKind::*;
    // Two steps read in sequence: one section, or two timestamped sections side by side
    // ("### 12:49 PM" then "### 1:06 PM" under one timeline).
    let together = |a: usize, b: usize| {
        a == b || {
            let (x, y) = (&sections[a], &sections[b]);
            x.at.is_some()
                && y.at.is_some()
                && x.heading_path.len() == y.heading_path.len()
                && x.heading_path.len() >= 2
                && x.heading_path[..x.heading_path.len() - 1]
                    == y.heading_path[..y.heading_path.len() - 1]
        }
    };
    // Triggers: change rows of a timeline before its first symptom.
    let mut noticed = false;
    let mut responded = false;
    for chunk in chunks.iter_mut() {
        if !chunk.row {
            continue;
        }
        // A release row before anyone acted is the trigger, even after the first symptom.
        if !responded
            && matches!(chunk.kind, Detection | TimelineEvent)
            && classify::leads_with_change(&chunk.text)
        {
            chunk.kind = RootCause;
            chunk.outcome = None;
            continue;
        }
        if matches!(chunk.kind, Action | Mitigation) {
            responded = true;
        }
        match chunk.kind {
            Detection | Investigation => noticed = true,
            Action | Mitigation | TimelineEvent if !noticed && classify::is_change(&chunk.text) => {
                chunk.kind = RootCause;
                chunk.outcome = None;
            }
            Action | Mitigation => noticed = true,
            _ => {}
        }
    }
    // Verdicts from the following steps of the same section.
    for i in 0..chunks.len() {
        if !classify::takes_result(chunks[i].kind) {
            continue;
        }
        if matches!(
            chunks[i].outcome,
            Some(Outcome::Helped | Outcome::DidNotHelp)
        ) && chunks[i].kind == Action
        {
            continue;
        }
        if chunks[i].kind == Mitigation && !chunks[i].row {
            continue;
        }
        // A mitigation that says itself that service came back keeps its word.
        if chunks[i].kind == Mitigation
            && classify::outcome(Mitigation, &chunks[i].text) == Some(Outcome::Helped)
        {
            continue;
        }
        let mut verdict = None;
        for j in i + 1..chunks.len().min(i + 4) {
            let next = &chunks[j];
            // The next timestamped section answers only with its first step, and only the
            // last step of this one.
            let adjacent = next.section == chunks[i].section
                || (j == i + 1 && together(chunks[i].section, next.section));
            if !adjacent {
                break;
            }
            let anaphoric = next.row || classify::refers_back(&next.text);
            if !anaphoric {
                break;
            }
            if let Some(found) = classify::result_of_previous(&next.text) {
                verdict = Some(found);
                break;
            }
            if classify::takes_result(next.kind) && !classify::is_completion(&next.text) {
                break;
            }
        }
        let Some(verdict) = verdict else { continue };
        let (kind, outcome) = match (chunks[i].kind, verdict) {
            (Mitigation, Outcome::DidNotHelp) => (Action, verdict),
            (Action, Outcome::Helped) => (Mitigation, verdict),
            (kind, verdict) => (kind, verdict),
        };
        chunks[i].kind = kind;
        chunks[i].outcome = Some(outcome);
    }
    // A hypothesis answered by the next paragraph ("... suggests the master's ssh access" /
    // "This is verified not to be the case").
    for i in 0..chunks.len().saturating_sub(1) {
        if chunks[i].kind != Investigation
            || matches!(
                chunks[i].outcome,
                Some(Outcome::RuledOut | Outcome::Confirmed)
            )
        {
            continue;
        }
        let next = &chunks[i + 1];
        if !together(chunks[i].section, next.section) || !classify::refers_back(&next.text) {
            continue;
        }
        if let Some(found @ (Outcome::RuledOut | Outcome::Confirmed)) =
            classify::outcome(Investigation, &next.text)
        {
            chunks[i].outcome = Some(found);
        }
    }
    // A timeline with no mitigation: its last action that did not fail is what ended it.
    let rows = || chunks.iter().filter(|c| c.row);
    if rows().next().is_some() && !rows().any(|c| c.kind == Mitigation) {
        let last = chunks
            .iter()
            .rposition(|c| c.row && c.kind == Action && c.outcome != Some(Outcome::DidNotHelp));
        if let Some(i) = last {
            chunks[i].kind = Mitigation;
            chunks[i].outcome = Some(Outcome::Helped);
        }
    }
    // What restored service: the actions right before a row that says it came back.
    for k in 0..chunks.len() {
        let recovered = chunks[k].row
            && matches!(chunks[k].kind, TimelineEvent | Detection | Mitigation)
            && classify::result_of_previous(&chunks[k].text) == Some(Outcome::Helped);
        if !recovered {
            continue;
        }
        let mut marked = 0;
        let section = chunks[k].section;
        for i in (k.saturating_sub(3)..k).rev() {
            if chunks[i].section != section || !chunks[i].row {
                break;
            }
            // "Network infrastructure replacement completed": the work it completes, started
            // rows before ("Started replacing the network infrastructure"), restored service.
            if classify::is_completion(&chunks[i].text)
                && let Some(start) = started_by(chunks, i, section)
            {
                chunks[start].kind = Mitigation;
                chunks[start].outcome = Some(Outcome::Helped);
            }
            let step = &mut chunks[i];
            match (step.kind, step.outcome) {
                (Action, Some(Outcome::DidNotHelp)) | (Investigation, _) => break,
                (Action, _) => {
                    step.kind = Mitigation;
                    step.outcome = Some(Outcome::Helped);
                    marked += 1;
                }
                (Mitigation, _) => marked += 1,
                _ => {}
            }
            if marked == 2 {
                break;
            }
        }
    }
}

/// The action row of `section` before `done` whose work the completion row `done` reports
/// finished: the nearest one that shares a content word with it, within 6 rows.
fn started_by(chunks: &[Chunk], done: usize, section: usize) -> Option<usize> {
    let stems = |text: &str| -> Vec<String> {
        text.split(|c: char| !c.is_ascii_alphabetic())
            .filter(|w| w.len() >= 5)
            .map(|w| w[..5].to_ascii_lowercase())
            .filter(|w| !matches!(w.as_str(), "compl" | "finis" | "start" | "began" | "begin"))
            .collect()
    };
    let wanted = stems(classify::body(&chunks[done].text));
    if wanted.is_empty() {
        return None;
    }
    (done.saturating_sub(6)..done).rev().find(|&j| {
        let c = &chunks[j];
        c.section == section
            && c.row
            && c.kind == StepKind::Action
            && c.outcome != Some(Outcome::DidNotHelp)
            && stems(classify::body(&c.text))
                .iter()
                .any(|w| wanted.contains(w))
    })
}

/// Byte ranges of a timeline entry or narrative paragraph: one per sentence group of at least
/// `min_words`, since each sentence there tends to be one step of the response ("The proxy pod
/// is restarted. This does not resolve the issue, so the ingress pods are restarted.").
fn clauses(text: &str, options: &ChunkOptions) -> Vec<std::ops::Range<usize>> {
    let words = text.split_whitespace().count();
    if words < 3 * options.min_words {
        return split(text, options);
    }
    let count = |r: &std::ops::Range<usize>| text[r.clone()].split_whitespace().count();
    let limit = options.max_words + options.min_words;
    let mut out: Vec<std::ops::Range<usize>> = Vec::new();
    let mut pending: Option<std::ops::Range<usize>> = None;
    for sentence in sentences(text, options.max_words) {
        let range = match pending.take() {
            Some(p) if count(&(p.start..sentence.end)) <= limit => p.start..sentence.end,
            // Too long together (the fragment is the tail of a sentence cut at `max_words`):
            // it ends the previous range instead, or stands alone.
            Some(p) => {
                match out.last_mut() {
                    Some(last) if count(&(last.start..p.end)) <= limit => last.end = p.end,
                    _ => out.push(p),
                }
                sentence
            }
            None => sentence,
        };
        if text[range.clone()].split_whitespace().count() < options.min_words {
            pending = Some(range);
        } else {
            out.push(range);
        }
    }
    if let Some(rest) = pending {
        match out.last_mut() {
            Some(last) if count(&(last.start..rest.end)) <= limit => last.end = rest.end,
            _ => out.push(rest),
        }
    }
    out
}

/// Byte ranges of `text` that make its steps: whole when short enough, otherwise sentences
/// packed up to `max_words`, each next range starting with the previous range's last sentence
/// when that sentence is short enough to repeat.
pub(crate) fn split(text: &str, options: &ChunkOptions) -> Vec<std::ops::Range<usize>> {
    let whole = trim_range(text, 0..text.len());
    if whole.is_empty() {
        return Vec::new();
    }
    let words = text.split_whitespace().count();
    if words <= options.max_words {
        return vec![whole];
    }
    let sentences = sentences(text, options.max_words);
    let counts: Vec<usize> = sentences
        .iter()
        .map(|r| text[r.clone()].split_whitespace().count())
        .collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < sentences.len() {
        let mut j = i;
        let mut total = 0;
        while j < sentences.len() && (j == i || total + counts[j] <= options.max_words) {
            total += counts[j];
            j += 1;
        }
        out.push(sentences[i].start..sentences[j - 1].end);
        if j >= sentences.len() {
            break;
        }
        let last = j - 1;
        i = if last > i && counts[last] <= options.overlap_words && total - counts[last] > 0 {
            last
        } else {
            j
        };
    }
    out
}

/// Sentence ranges (trimmed): split after `.`, `!`, `?` followed by whitespace, and at line
/// breaks; a sentence longer than `max_words` is cut at word boundaries.
fn sentences(text: &str, max_words: usize) -> Vec<std::ops::Range<usize>> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let push = |range: std::ops::Range<usize>, out: &mut Vec<std::ops::Range<usize>>| {
        let range = trim_range(text, range);
        if !range.is_empty() {
            cut_words(text, range, max_words, out);
        }
    };
    for i in 0..bytes.len() {
        let end_of_sentence = matches!(bytes[i], b'.' | b'!' | b'?')
            && bytes.get(i + 1).is_some_and(|b| b.is_ascii_whitespace());
        if bytes[i] == b'\n' || end_of_sentence {
            push(start..i + 1, &mut out);
            start = i + 1;
        }
    }
    push(start..bytes.len(), &mut out);
    out
}

fn cut_words(
    text: &str,
    range: std::ops::Range<usize>,
    max_words: usize,
    out: &mut Vec<std::ops::Range<usize>>,
) {
    let mut count = 0;
    let mut piece_start = range.start;
    let mut in_word = false;
    for (i, c) in text[range.clone()].char_indices() {
        let at = range.start + i;
        if c.is_whitespace() {
            if in_word && count == max_words {
                out.push(trim_range(text, piece_start..at));
                piece_start = at;
                count = 0;
            }
            in_word = false;
        } else if !in_word {
            in_word = true;
            count += 1;
        }
    }
    let rest = trim_range(text, piece_start..range.end);
    if !rest.is_empty() {
        out.push(rest);
    }
}

fn trim_range(text: &str, range: std::ops::Range<usize>) -> std::ops::Range<usize> {
    let s = &text[range.clone()];
    let start = range.start + (s.len() - s.trim_start().len());
    let end = range.start + s.trim_end().len();
    if end <= start {
        start..start
    } else {
        start..end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(max_words: usize, overlap_words: usize) -> ChunkOptions {
        ChunkOptions {
            max_words,
            overlap_words,
            min_words: 1,
        }
    }

    fn pieces(text: &str, options: &ChunkOptions) -> Vec<String> {
        split(text, options)
            .into_iter()
            .map(|r| text[r].to_owned())
            .collect()
    }

    #[test]
    fn short_text_is_one_piece() {
        assert_eq!(pieces("  one two three \n", &opts(5, 1)), ["one two three"]);
        assert!(pieces("   ", &opts(5, 1)).is_empty());
    }

    #[test]
    fn long_text_splits_on_sentences_with_overlap() {
        let text = "A b c. D e. F g h. I j.";
        assert_eq!(
            pieces(text, &opts(5, 2)),
            ["A b c. D e.", "D e. F g h.", "I j."]
        );
        assert_eq!(
            pieces(text, &opts(5, 3)),
            ["A b c. D e.", "D e. F g h.", "F g h. I j."]
        );
        assert_eq!(pieces(text, &opts(5, 0)), ["A b c. D e.", "F g h. I j."]);
    }

    #[test]
    fn long_sentences_cut_on_words() {
        assert_eq!(
            pieces("a b c d e f g", &opts(3, 0)),
            ["a b c", "d e f", "g"]
        );
    }
}
