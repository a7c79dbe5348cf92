//! Leaves -> blocks: resolves sections (headings, pseudo-headings, bold labels), finds timeline
//! entries, and groups list items and table rows into blocks that never cross a section.

use precedent_core::At;

use crate::classify::{self, HeadingKind};
use crate::leaf::{Leaf, LeafKind};
use crate::time;

/// Labels deeper than this are kept in the text but not in the heading path.
const MAX_LABELS: usize = 6;

/// A section: the headings above some blocks, and what they say.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Section {
    pub(crate) heading_path: Vec<String>,
    /// What the innermost heading that says anything says.
    pub(crate) kind: Option<HeadingKind>,
    /// Time of a heading such as `### 2018-01-19 11:00`.
    pub(crate) at: Option<At>,
}

/// A block: a run of source that becomes one or more steps.
#[derive(Debug, Clone)]
pub(crate) struct Block {
    pub(crate) section: usize,
    pub(crate) text: String,
    pub(crate) marks: Vec<(u32, u32)>,
    /// A timeline entry: stays a step of its own.
    pub(crate) timeline: bool,
    pub(crate) at: Option<At>,
    /// Kind named by a bold label on the block.
    pub(crate) hint: Option<HeadingKind>,
    /// Where the block came from, to know what may join it.
    origin: Origin,
    /// A list item of its own (not joined with its siblings).
    pub(crate) item: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Origin {
    Paragraph,
    List(u32),
    Table(u32),
    Timeline,
}

impl Block {
    fn append(&mut self, leaf: &Leaf, prefix: &str) {
        if leaf.is_blank() {
            return;
        }
        if !self.text.is_empty() {
            self.text.push('\n');
        }
        if let (false, Some(&(_, line))) = (prefix.is_empty(), leaf.marks.first()) {
            self.marks.push((self.text.len() as u32, line));
        }
        self.text.push_str(prefix);
        let base = self.text.len() as u32;
        self.marks
            .extend(leaf.marks.iter().map(|&(o, l)| (o + base, l)));
        self.text.push_str(&leaf.text);
    }
}

/// The result: sections, blocks, and the title if the first heading was one.
#[derive(Debug)]
pub(crate) struct Assembled {
    pub(crate) sections: Vec<Section>,
    pub(crate) blocks: Vec<Block>,
    pub(crate) first_heading: Option<String>,
}

struct State {
    headings: Vec<(u8, String)>,
    labels: Vec<(u32, String)>,
    timeline_items: Vec<u32>,
    open_items: Vec<u32>,
    sections: Vec<Section>,
    blocks: Vec<Block>,
    current: Option<Block>,
    table_header: Option<(u32, Vec<String>)>,
    last_date: Option<chrono::NaiveDate>,
}

impl State {
    fn section(&mut self) -> usize {
        let mut heading_path: Vec<String> = self.headings.iter().map(|(_, h)| h.clone()).collect();
        heading_path.extend(self.labels.iter().take(MAX_LABELS).map(|(_, l)| l.clone()));
        if let Some(last) = self.sections.last()
            && last.heading_path == heading_path
        {
            return self.sections.len() - 1;
        }
        // The innermost heading that says anything decides, except that everything under a
        // lessons or follow-ups section stays a lesson or a follow-up ("What went poorly" >
        // "Detection delay" is a lesson, not a detection).
        let kinds: Vec<_> = heading_path
            .iter()
            .filter_map(|h| classify::heading_kind(h))
            .collect();
        let kind = kinds
            .iter()
            .find(|k| {
                matches!(
                    k,
                    HeadingKind::Kind(
                        precedent_core::StepKind::Lesson | precedent_core::StepKind::FollowUp
                    )
                )
            })
            .or(kinds.last())
            .copied();
        let at = self
            .headings
            .last()
            .and_then(|(_, h)| time::leading_timestamp(h))
            .filter(|(_, len)| *len + 12 >= self.headings.last().map_or(0, |(_, h)| h.len()))
            .map(|(at, _)| at);
        self.sections.push(Section {
            heading_path,
            kind,
            at,
        });
        self.sections.len() - 1
    }

    fn flush(&mut self) {
        if let Some(block) = self.current.take()
            && !block.text.trim().is_empty()
        {
            self.blocks.push(block);
        }
    }

    fn open(&mut self, origin: Origin, hint: Option<HeadingKind>, at: Option<At>) -> &mut Block {
        self.flush();
        let section = self.section();
        let timeline = origin == Origin::Timeline;
        self.current.insert(Block {
            section,
            text: String::new(),
            marks: Vec::new(),
            timeline,
            at,
            hint,
            origin,
            item: matches!(origin, Origin::List(_)),
        })
    }

    fn in_timeline_section(&mut self) -> bool {
        let section = self.section();
        self.sections[section].kind == Some(HeadingKind::Timeline)
    }

    /// Fills in a time's date from the last date seen in the document's timeline.
    fn dated(&mut self, mut at: At) -> At {
        match at.date {
            Some(date) => self.last_date = Some(date),
            None if at.time.is_some() => at.date = self.last_date,
            None => {}
        }
        at
    }
}

/// Groups `leaves` into sections and blocks.
pub(crate) fn assemble(leaves: &[Leaf]) -> Assembled {
    let mut state = State {
        headings: Vec::new(),
        labels: Vec::new(),
        timeline_items: Vec::new(),
        open_items: Vec::new(),
        sections: Vec::new(),
        blocks: Vec::new(),
        current: None,
        table_header: None,
        last_date: None,
    };
    let mut first_heading = None;
    let mut seen_content = false;
    for leaf in leaves {
        match leaf.kind {
            LeafKind::Heading(level) => {
                state.flush();
                let text = leaf.text.trim().to_owned();
                // A level-1 heading before any content is the document's title, not a section.
                if level == 1
                    && !seen_content
                    && first_heading.is_none()
                    && state.headings.is_empty()
                {
                    first_heading = Some(text);
                    continue;
                }
                if first_heading.is_none() && !seen_content && state.headings.is_empty() {
                    first_heading = Some(text.clone());
                }
                state.labels.clear();
                state.headings.retain(|(l, _)| *l < level);
                if let Some((at, _)) = time::leading_timestamp(&text) {
                    let at = state.dated(at);
                    if let Some(date) = at.date {
                        state.last_date = Some(date);
                    }
                }
                state.headings.push((level, text));
            }
            LeafKind::Item { id, list } => {
                seen_content = true;
                let label_kind = leaf.label.as_deref().and_then(classify::heading_kind);
                if let (Some(label), Some(_)) = (&leaf.label, label_kind) {
                    // `- **Impact**: ...` opens a pseudo-section for the item and its children.
                    state.flush();
                    state.labels.push((id, label.clone()));
                    let rest = leaf.text.trim().strip_prefix(label.as_str()).unwrap_or("");
                    if !rest.trim_start_matches(':').trim().is_empty() {
                        let block = state.open(Origin::List(list), label_kind, None);
                        block.append(leaf, "");
                    }
                    continue;
                }
                let stamp = time::leading_timestamp(&leaf.text);
                let nested_in_timeline = !state.timeline_items.is_empty();
                let timeline_section = state.in_timeline_section();
                if !nested_in_timeline
                    && (stamp.is_some() || (timeline_section && !leaf.is_blank()))
                {
                    let at = stamp
                        .map(|(at, _)| state.dated(at))
                        .or_else(|| trailing_timestamp(&leaf.text));
                    state.timeline_items.push(id);
                    let block = state.open(Origin::Timeline, None, at);
                    block.append(leaf, "");
                    continue;
                }
                // Each item is a block of its own; nested items stay with their parent.
                let nested = !state.open_items.is_empty();
                let joins = matches!(&state.current, Some(b) if (nested && matches!(b.origin, Origin::List(_))) || (nested_in_timeline && b.origin == Origin::Timeline))
                    && state.current.as_ref().map(|b| b.section) == Some(state.section());
                state.open_items.push(id);
                if !joins {
                    state.open(Origin::List(list), None, None);
                }
                if let Some(block) = &mut state.current {
                    block.append(leaf, "- ");
                }
            }
            LeafKind::ItemEnd { id } => {
                if let Some(at) = state.open_items.iter().rposition(|&i| i == id) {
                    state.open_items.truncate(at);
                }
                if state.timeline_items.last() == Some(&id) {
                    state.timeline_items.pop();
                    state.flush();
                }
                if state.labels.last().is_some_and(|(l, _)| *l == id) {
                    state.labels.pop();
                    state.flush();
                }
            }
            LeafKind::Paragraph { in_item } | LeafKind::Code { in_item } => {
                seen_content = true;
                let section = state.section();
                let joinable = in_item
                    && matches!(&state.current, Some(b) if b.section == section && b.origin != Origin::Paragraph);
                if joinable {
                    if let Some(block) = &mut state.current {
                        block.append(leaf, "");
                    }
                    continue;
                }
                let hint = leaf.label.as_deref().and_then(classify::heading_kind);
                let stamp = time::leading_timestamp(&leaf.text);
                if let (Some((at, _)), true) =
                    (stamp, matches!(leaf.kind, LeafKind::Paragraph { .. }))
                {
                    let at = state.dated(at);
                    let block = state.open(Origin::Timeline, None, Some(at));
                    block.append(leaf, "");
                    state.flush();
                    continue;
                }
                let at = state.sections[section].at.clone();
                let block = state.open(Origin::Paragraph, hint, at);
                block.append(leaf, "");
                state.flush();
            }
            LeafKind::Row { table, header } => {
                seen_content = true;
                if header {
                    state.flush();
                    state.table_header = Some((table, leaf.cells.clone()));
                    continue;
                }
                let time_column = state.table_header.as_ref().is_some_and(|(t, cells)| {
                    *t == table
                        && cells.first().is_some_and(|c| {
                            matches!(
                                c.trim().to_lowercase().as_str(),
                                "time"
                                    | "date"
                                    | "timestamp"
                                    | "when"
                                    | "time (utc)"
                                    | "date/time"
                                    | "datetime"
                            )
                        })
                });
                let stamp = leaf
                    .cells
                    .first()
                    .and_then(|c| time::leading_timestamp(c.trim()));
                let timeline_section = state.in_timeline_section();
                if stamp.is_some() || time_column || timeline_section {
                    let at = stamp.map(|(at, _)| state.dated(at));
                    let block = state.open(Origin::Timeline, None, at);
                    block.append(leaf, "");
                    state.flush();
                    continue;
                }
                let joins = matches!(&state.current, Some(b) if b.origin == Origin::Table(table));
                if !joins {
                    state.open(Origin::Table(table), None, None);
                }
                if let Some(block) = &mut state.current {
                    block.append(leaf, "");
                }
            }
        }
    }
    state.flush();
    Assembled {
        sections: state.sections,
        blocks: state.blocks,
        first_heading,
    }
}

/// `Fault occurs 2020-08-04 13:30`: a timeline entry whose time comes last.
fn trailing_timestamp(text: &str) -> Option<At> {
    let line = text.lines().next()?.trim_end();
    let start = line
        .char_indices()
        .rev()
        .take(24)
        .map(|(i, _)| i)
        .filter(|&i| {
            line[..i].ends_with(' ') && line[i..].starts_with(|c: char| c.is_ascii_digit())
        });
    for i in start.collect::<Vec<_>>().into_iter().rev() {
        if let Some((at, len)) = time::leading_timestamp(&line[i..])
            && i + len >= line.len()
        {
            return Some(at);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::type_complexity)]
    use super::*;
    use crate::text::LineIndex;

    fn blocks(
        markdown: &str,
    ) -> (
        Vec<Section>,
        Vec<(usize, String, bool, Option<String>)>,
        Option<String>,
    ) {
        let lines = LineIndex::new(markdown);
        let leaves = crate::markdown::leaves(markdown, &lines, &mut Vec::new());
        let a = assemble(&leaves);
        let blocks = a
            .blocks
            .into_iter()
            .map(|b| (b.section, b.text, b.timeline, b.at.map(|a| a.raw)))
            .collect();
        (a.sections, blocks, a.first_heading)
    }

    #[test]
    fn sections_and_timeline() {
        let (sections, blocks, title) = blocks(
            "# Outage\n\nIntro.\n\n## Timeline\n\n| Time | Event |\n|--|--|\n| 14:02 | paged |\n| 14:10 | rolled back |\n\n## Contributing Factors\n\n- a\n- b\n",
        );
        assert_eq!(title.as_deref(), Some("Outage"));
        assert_eq!(sections.len(), 3);
        assert_eq!(sections[1].kind, Some(HeadingKind::Timeline));
        assert_eq!(
            blocks,
            vec![
                (0, "Intro.".into(), false, None),
                (1, "14:02 | paged".into(), true, Some("14:02".into())),
                (1, "14:10 | rolled back".into(), true, Some("14:10".into())),
                (2, "- a".into(), false, None),
                (2, "- b".into(), false, None),
            ]
        );
    }

    #[test]
    fn bold_labels_open_pseudo_sections() {
        let (sections, blocks, _) = blocks(
            "# Incident on 2020-08-04\n\n- **Key events**\n  - Fault occurs 2020-08-04 13:30\n  - Fault detected 2020-08-04 18:13\n- **Impact**:\n  - risk\n- **Resolution**: fixed it\n",
        );
        let paths: Vec<_> = sections.iter().map(|s| s.heading_path.join("/")).collect();
        assert_eq!(paths, ["Key events", "Impact", "Resolution"]);
        assert_eq!(
            blocks[0],
            (
                0,
                "Fault occurs 2020-08-04 13:30".into(),
                true,
                Some("2020-08-04 13:30".into())
            )
        );
        assert_eq!(blocks[2], (1, "- risk".into(), false, None));
        assert_eq!(blocks[3], (2, "Resolution: fixed it".into(), false, None));
    }
}
