//! Markdown front end: pulldown-cmark events -> leaves.

use precedent_core::{Diagnostic, DiagnosticCode, Level};
use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

use crate::leaf::{Leaf, LeafKind};
use crate::text::LineIndex;

/// Nesting past this depth gets a diagnostic; it is still walked, iteratively.
const DEEP: usize = 64;

/// Walks `text` (front matter already blanked out) and returns its leaves.
pub(crate) fn leaves(
    text: &str,
    lines: &LineIndex,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<Leaf> {
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_FOOTNOTES;
    let mut walker = Walker {
        lines,
        out: Vec::new(),
        current: None,
        items: Vec::new(),
        lists: Vec::new(),
        next_id: 0,
        table: 0,
        label: LabelState::Idle,
        max_depth: 0,
        quote_depth: 0,
    };
    for (event, range) in Parser::new_ext(text, options).into_offset_iter() {
        walker.event(event, range.start);
    }
    walker.flush();
    // Rendering undoes escapes, emphasis and entities that split a secret in the source.
    for leaf in &mut walker.out {
        crate::redact::redact_leaf(leaf, diagnostics);
    }
    if walker.max_depth > DEEP {
        diagnostics.push(Diagnostic::new(
            Level::Info,
            DiagnosticCode::DeepNesting,
            format!(
                "lists or quotes nested {} levels deep; read as a flat sequence",
                walker.max_depth
            ),
        ));
    }
    walker.out
}

/// Tracking of a leading `**label**`.
#[derive(Debug, PartialEq)]
enum LabelState {
    Idle,
    /// Inside the leaf's first strong span.
    Open,
    /// The first strong span ended at this text offset.
    Done(usize),
}

struct Walker<'a> {
    lines: &'a LineIndex,
    out: Vec<Leaf>,
    current: Option<Leaf>,
    /// Open list items (ids).
    items: Vec<u32>,
    /// Open lists (ids); the first is the top-level list.
    lists: Vec<u32>,
    next_id: u32,
    table: u32,
    label: LabelState,
    max_depth: usize,
    quote_depth: usize,
}

impl Walker<'_> {
    fn id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }

    fn flush(&mut self) {
        if let Some(mut leaf) = self.current.take() {
            if let LabelState::Done(end) = self.label {
                leaf.label = label_of(&leaf.text, end);
            }
            self.label = LabelState::Idle;
            match leaf.kind {
                // A paragraph that is only bold text is a heading in disguise.
                LeafKind::Paragraph { in_item: false } if self.quote_depth == 0 => {
                    if let Some(label) = &leaf.label
                        && leaf.text.trim().trim_end_matches(':').trim() == label
                    {
                        leaf.kind = LeafKind::Heading(7);
                        leaf.label = None;
                    }
                    if !leaf.is_blank() {
                        self.out.push(leaf);
                    }
                }
                LeafKind::Item { .. } | LeafKind::Row { .. } => self.out.push(leaf),
                _ if !leaf.is_blank() => self.out.push(leaf),
                _ => {}
            }
        }
    }

    fn start(&mut self, kind: LeafKind) {
        self.flush();
        self.current = Some(Leaf::new(kind));
    }

    fn in_item(&self) -> bool {
        !self.items.is_empty()
    }

    fn leaf(&mut self) -> &mut Leaf {
        let in_item = self.in_item();
        self.current
            .get_or_insert_with(|| Leaf::new(LeafKind::Paragraph { in_item }))
    }

    fn text(&mut self, s: &str, offset: usize) {
        let line = self.lines.line(offset);
        let leaf = self.leaf();
        if let LeafKind::Row { .. } = leaf.kind
            && let Some(cell) = leaf.cells.last_mut()
        {
            cell.push_str(s);
        }
        leaf.push(s, line);
    }

    fn event(&mut self, event: Event<'_>, offset: usize) {
        match event {
            Event::Start(tag) => self.start_tag(tag),
            Event::End(tag) => self.end_tag(tag, offset),
            Event::Text(s) | Event::Code(s) | Event::InlineMath(s) | Event::DisplayMath(s) => {
                self.text(&s, offset)
            }
            Event::Html(s) => {
                let stripped = strip_tags(&s);
                if !stripped.trim().is_empty() {
                    self.text(&stripped, offset);
                }
            }
            Event::SoftBreak => self.leaf().push_separator(" "),
            Event::HardBreak => self.leaf().push_separator("\n"),
            Event::TaskListMarker(done) => {
                let line = self.lines.line(offset);
                self.leaf().push(if done { "[x] " } else { "[ ] " }, line);
            }
            Event::Rule => self.flush(),
            Event::InlineHtml(_) | Event::FootnoteReference(_) => {}
        }
    }

    fn start_tag(&mut self, tag: Tag<'_>) {
        match tag {
            Tag::Heading { .. } => self.start(LeafKind::Heading(1)),
            Tag::Paragraph => {
                // The first paragraph of a loose list item is the item's own text.
                let keeps_item = matches!(&self.current, Some(l) if matches!(l.kind, LeafKind::Item { .. }) && l.is_blank());
                if !keeps_item {
                    let in_item = self.in_item();
                    self.start(LeafKind::Paragraph { in_item });
                }
            }
            Tag::List(_) => {
                self.flush();
                let id = self.id();
                self.lists.push(id);
                self.max_depth = self.max_depth.max(self.lists.len() + self.quote_depth);
            }
            Tag::Item => {
                let id = self.id();
                let list = self.lists.first().copied().unwrap_or(id);
                self.items.push(id);
                self.start(LeafKind::Item { id, list });
            }
            Tag::BlockQuote(_) => {
                self.flush();
                self.quote_depth += 1;
                self.max_depth = self.max_depth.max(self.lists.len() + self.quote_depth);
            }
            Tag::CodeBlock(_) => {
                let in_item = self.in_item();
                self.start(LeafKind::Code { in_item });
            }
            Tag::HtmlBlock => {
                let in_item = self.in_item();
                self.start(LeafKind::Paragraph { in_item });
            }
            Tag::Table(_) => {
                self.flush();
                self.table += 1;
            }
            Tag::TableHead => {
                let table = self.table;
                self.start(LeafKind::Row {
                    table,
                    header: true,
                });
            }
            Tag::TableRow => {
                let table = self.table;
                self.start(LeafKind::Row {
                    table,
                    header: false,
                });
            }
            Tag::TableCell => {
                let leaf = self.leaf();
                if !leaf.cells.is_empty() {
                    leaf.push_separator(" | ");
                }
                leaf.cells.push(String::new());
            }
            Tag::Strong
                if self.label == LabelState::Idle
                    && self.current.as_ref().is_none_or(Leaf::is_blank) =>
            {
                self.label = LabelState::Open;
            }
            Tag::FootnoteDefinition(_) => self.flush(),
            _ => {}
        }
    }

    fn end_tag(&mut self, tag: TagEnd, _offset: usize) {
        match tag {
            TagEnd::Heading(level) => {
                if let Some(leaf) = &mut self.current {
                    leaf.kind = LeafKind::Heading(level as u8);
                }
                self.flush();
            }
            TagEnd::Paragraph
            | TagEnd::CodeBlock
            | TagEnd::HtmlBlock
            | TagEnd::TableHead
            | TagEnd::TableRow
                // The item's own text may continue after its first paragraph; nested blocks flush it.
                if !matches!(&self.current, Some(l) if matches!(l.kind, LeafKind::Item { .. })) => {
                    self.flush();
                }
            TagEnd::List(_) => {
                self.flush();
                self.lists.pop();
            }
            TagEnd::Item => {
                self.flush();
                if let Some(id) = self.items.pop() {
                    self.out.push(Leaf::new(LeafKind::ItemEnd { id }));
                }
            }
            TagEnd::BlockQuote(_) => {
                self.flush();
                self.quote_depth = self.quote_depth.saturating_sub(1);
            }
            TagEnd::Table | TagEnd::FootnoteDefinition => self.flush(),
            TagEnd::Strong
                if self.label == LabelState::Open => {
                    let end = self.current.as_ref().map_or(0, |l| l.text.len());
                    self.label = LabelState::Done(end);
                }
            _ => {}
        }
    }
}

/// A leading bold label: `**Impact**: ...`, `**Impact:** ...` or a paragraph of only bold text.
/// `strong_end` is where the leaf's first (leading) strong span ended in its text.
fn label_of(text: &str, strong_end: usize) -> Option<String> {
    let strong = text.get(..strong_end)?;
    let rest = text[strong_end..].trim_start();
    let label = strong.trim().trim_end_matches(':').trim();
    let shaped = strong.trim_end().ends_with(':') || rest.is_empty() || rest.starts_with(':');
    let words = label.split_whitespace().count();
    (shaped && (1..=8).contains(&words)).then(|| label.to_owned())
}

fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::type_complexity)]
    use super::*;

    fn kinds(text: &str) -> Vec<(LeafKind, String, Option<String>)> {
        let lines = LineIndex::new(text);
        leaves(text, &lines, &mut Vec::new())
            .into_iter()
            .map(|l| (l.kind, l.text, l.label))
            .collect()
    }

    #[test]
    fn blocks_become_leaves() {
        let got = kinds(
            "# T\n\npara *one*\ntwo\n\n- a\n  - b\n- **Impact**: c\n\n| Time | Event |\n|---|---|\n| 14:02 | x |\n\n**Timeline**\n\n```\ncode\n```\n",
        );
        let expected = vec![
            (LeafKind::Heading(1), "T".into(), None),
            (
                LeafKind::Paragraph { in_item: false },
                "para one two".into(),
                None,
            ),
            (LeafKind::Item { id: 2, list: 1 }, "a".into(), None),
            (LeafKind::Item { id: 4, list: 1 }, "b".into(), None),
            (LeafKind::ItemEnd { id: 4 }, "".into(), None),
            (LeafKind::ItemEnd { id: 2 }, "".into(), None),
            (
                LeafKind::Item { id: 5, list: 1 },
                "Impact: c".into(),
                Some("Impact".into()),
            ),
            (LeafKind::ItemEnd { id: 5 }, "".into(), None),
            (
                LeafKind::Row {
                    table: 1,
                    header: true,
                },
                "Time | Event".into(),
                None,
            ),
            (
                LeafKind::Row {
                    table: 1,
                    header: false,
                },
                "14:02 | x".into(),
                None,
            ),
            (LeafKind::Heading(7), "Timeline".into(), None),
            (LeafKind::Code { in_item: false }, "code\n".into(), None),
        ];
        assert_eq!(got, expected);
    }

    #[test]
    fn marks_point_at_source_lines() {
        let text = "para\nline two\n\n- item\n\n  more\n";
        let lines = LineIndex::new(text);
        let leaves = leaves(text, &lines, &mut Vec::new());
        assert_eq!(leaves[0].marks, [(0, 1), (5, 2)]);
        assert_eq!(leaves[1].marks, [(0, 4)]);
        assert_eq!(leaves[2].kind, LeafKind::Paragraph { in_item: true });
        assert_eq!(leaves[2].marks, [(0, 6)]);
    }
}
