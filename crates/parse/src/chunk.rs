//! Blocks -> steps: heading-aware grouping, splitting of long blocks on sentence boundaries with
//! a small overlap, merging of tiny fragments, classification and outcomes.

use precedent_core::{At, Outcome, StepKind};

use crate::assemble::{Assembled, Block};
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
}

#[derive(Debug)]
struct Piece {
    section: usize,
    text: String,
    marks: Vec<(u32, u32)>,
    timeline: bool,
    at: Option<At>,
    hint: Option<StepKind>,
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
    }
}

/// Turns assembled blocks into chunks.
pub(crate) fn chunk(assembled: Assembled, options: &ChunkOptions) -> Vec<Chunk> {
    let Assembled {
        sections, blocks, ..
    } = assembled;
    let mapped = |block: &Block| -> Option<StepKind> {
        match block.hint.or(sections[block.section].kind) {
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
            text: block.text,
            marks: block.marks,
        };
        if let Some(last) = pieces.last_mut() {
            let same = last.section == piece.section
                && !last.timeline
                && !piece.timeline
                && last.hint == piece.hint;
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
    for mut piece in pieces {
        if let Some(tiny) = carry.take() {
            if tiny.section == piece.section && !piece.timeline {
                let mut tiny = tiny;
                tiny.absorb(piece);
                piece = tiny;
            } else {
                merged.push(tiny);
            }
        }
        if !piece.timeline && piece.words() < options.min_words {
            if let Some(last) = merged.last_mut()
                && last.section == piece.section
                && !last.timeline
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
        for range in split(&piece.text, options) {
            let text = piece.text[range.clone()].to_owned();
            let kind = if piece.timeline || (in_timeline && piece.hint.is_none()) {
                classify::wording_kind(&text, &classify::TIMELINE_KINDS)
                    .unwrap_or(StepKind::TimelineEvent)
            } else if let Some(kind) = piece.hint {
                kind
            } else if first_in_root {
                StepKind::Summary
            } else {
                let fallback = if narrative {
                    StepKind::Summary
                } else {
                    StepKind::Other
                };
                classify::wording_kind(&text, &classify::PROSE_KINDS).unwrap_or(fallback)
            };
            let outcome = classify::outcome(kind, &text);
            chunks.push(Chunk {
                section: piece.section,
                line_start: line_at(&piece.marks, range.start),
                line_end: line_at(&piece.marks, range.end - 1),
                text,
                kind,
                at: piece.at.clone(),
                outcome,
                timeline: piece.timeline || (in_timeline && piece.at.is_some()),
            });
        }
    }
    chunks
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
