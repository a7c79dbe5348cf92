//! The flat stream of leaves both front ends (Markdown, plain text) produce: headings,
//! paragraphs, list items, table rows and code blocks, each with its plain text and a map from
//! text offsets back to source lines.

/// What a leaf is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeafKind {
    /// A heading; level 7 marks a pseudo-heading (a paragraph that is only bold text).
    Heading(u8),
    /// A paragraph, HTML block or block quote paragraph; `in_item` when inside a list item.
    Paragraph { in_item: bool },
    /// The own text of a list item (without nested lists); `ItemEnd` with the same id follows.
    Item { id: u32, list: u32 },
    /// The end of list item `id`.
    ItemEnd { id: u32 },
    /// A table row; `header` for the head row.
    Row { table: u32, header: bool },
    /// A code block; `in_item` when inside a list item.
    Code { in_item: bool },
}

/// One leaf.
#[derive(Debug, Clone)]
pub(crate) struct Leaf {
    pub(crate) kind: LeafKind,
    /// Plain text, markup removed.
    pub(crate) text: String,
    /// `(offset in text, source line)`, offsets increasing: text from `offset` on starts on `line`.
    pub(crate) marks: Vec<(u32, u32)>,
    /// Table cells, for rows.
    pub(crate) cells: Vec<String>,
    /// Bold text the leaf starts with, when it reads as a label (`**Impact**:`).
    pub(crate) label: Option<String>,
}

impl Leaf {
    pub(crate) fn new(kind: LeafKind) -> Self {
        Self {
            kind,
            text: String::new(),
            marks: Vec::new(),
            cells: Vec::new(),
            label: None,
        }
    }

    /// Appends `s`, whose first byte sits on source line `line`; a `\n` inside `s` advances the line.
    pub(crate) fn push(&mut self, s: &str, line: u32) {
        let mut line = line;
        for (i, part) in s.split('\n').enumerate() {
            if i > 0 {
                self.text.push('\n');
                line += 1;
            }
            if part.is_empty() {
                continue;
            }
            if self.marks.last().is_none_or(|&(_, l)| l != line) {
                self.marks.push((self.text.len() as u32, line));
            }
            self.text.push_str(part);
        }
    }

    /// Appends text that has no source line of its own (separators).
    pub(crate) fn push_separator(&mut self, s: &str) {
        if !self.text.is_empty() && !self.text.ends_with([' ', '\n']) {
            self.text.push_str(s);
        }
    }

    pub(crate) fn is_blank(&self) -> bool {
        self.text.trim().is_empty()
    }
}

/// Source line of byte `offset` of a text with these marks.
pub(crate) fn line_at(marks: &[(u32, u32)], offset: usize) -> u32 {
    let i = marks.partition_point(|&(o, _)| o as usize <= offset);
    marks[i.saturating_sub(1)].1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_follow_lines() {
        let mut leaf = Leaf::new(LeafKind::Code { in_item: false });
        leaf.push("a\nbc\n\nd", 10);
        leaf.push_separator(" ");
        leaf.push("e", 14);
        assert_eq!(leaf.text, "a\nbc\n\nd e");
        assert_eq!(leaf.marks, [(0, 10), (2, 11), (6, 13), (8, 14)]);
        assert_eq!(line_at(&leaf.marks, 0), 10);
        assert_eq!(line_at(&leaf.marks, 3), 11);
        assert_eq!(line_at(&leaf.marks, 8), 14);
    }
}
