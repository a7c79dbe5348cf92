//! Plain-text front end: write-ups whose headings are bare lines (`Summary`, `Timeline`,
//! `Actionables`), bullets such as `•` or `-`, and timestamped lines.

use crate::classify;
use crate::leaf::{Leaf, LeafKind};
use crate::time;

/// Splits plain text into leaves.
pub(crate) fn leaves(text: &str) -> Vec<Leaf> {
    let mut out = Vec::new();
    let mut current: Option<Leaf> = None;
    let mut next_id = 0u32;
    let mut list: Option<u32> = None;
    let mut open_item: Option<u32> = None;
    let lines: Vec<&str> = text.split('\n').collect();

    let flush = |current: &mut Option<Leaf>, out: &mut Vec<Leaf>, open_item: &mut Option<u32>| {
        if let Some(leaf) = current.take()
            && (!leaf.is_blank() || matches!(leaf.kind, LeafKind::Item { .. }))
        {
            out.push(leaf);
        }
        if let Some(id) = open_item.take() {
            out.push(Leaf::new(LeafKind::ItemEnd { id }));
        }
    };

    for (i, raw) in lines.iter().enumerate() {
        let line_no = i as u32 + 1;
        let line = raw.trim_end();
        let trimmed = line.trim_start();
        if trimmed.is_empty() {
            flush(&mut current, &mut out, &mut open_item);
            list = None;
            continue;
        }
        let underline = lines.get(i + 1).is_some_and(|next| {
            let next = next.trim();
            next.len() >= 3 && (next.bytes().all(|b| b == b'=') || next.bytes().all(|b| b == b'-'))
        });
        if let Some(section) = classify::template_instruction(trimmed) {
            // A template's instruction left in the text ("Explicit next steps to prevent this
            // from happening again ...") opens the section it asks for; the line itself is
            // template text, `other`.
            flush(&mut current, &mut out, &mut open_item);
            list = None;
            template_line(&mut out, section, trimmed, line_no);
            continue;
        }
        if !is_heading(trimmed) && is_template_question(trimmed, lines.get(i + 1).copied()) {
            // A template question left in the text ("How many people were involved in the
            // remediation?") ends the section above it; the line itself stays a step.
            flush(&mut current, &mut out, &mut open_item);
            list = None;
            template_line(&mut out, Some(trimmed), trimmed, line_no);
            continue;
        }
        if is_heading(trimmed) || underline {
            flush(&mut current, &mut out, &mut open_item);
            list = None;
            let mut leaf = Leaf::new(LeafKind::Heading(if underline { 1 } else { 2 }));
            leaf.push(trimmed.trim_end_matches(':'), line_no);
            out.push(leaf);
            continue;
        }
        if is_rule(trimmed) {
            flush(&mut current, &mut out, &mut open_item);
            continue;
        }
        let bullet = bullet_len(trimmed);
        let timestamped = bullet.is_none() && time::leading_timestamp(trimmed).is_some();
        if bullet.is_some() || timestamped {
            flush(&mut current, &mut out, &mut open_item);
            next_id += 1;
            let id = next_id;
            let list_id = *list.get_or_insert(id);
            let mut leaf = Leaf::new(LeafKind::Item { id, list: list_id });
            let body = &trimmed[bullet.unwrap_or(0)..];
            leaf.push(body.trim_start(), line_no);
            current = Some(leaf);
            open_item = Some(id);
            continue;
        }
        match &mut current {
            Some(leaf) => {
                leaf.push_separator(" ");
                leaf.push(trimmed, line_no);
            }
            None => {
                list = None;
                let mut leaf = Leaf::new(LeafKind::Paragraph { in_item: false });
                leaf.push(trimmed, line_no);
                current = Some(leaf);
            }
        }
    }
    flush(&mut current, &mut out, &mut open_item);
    out
}

/// A line a template left: the heading of the section it opens, if any, then the line itself
/// as a step of its own.
fn template_line(out: &mut Vec<Leaf>, section: Option<&str>, line: &str, line_no: u32) {
    if let Some(section) = section {
        let mut heading = Leaf::new(LeafKind::Heading(2));
        heading.push(section, line_no);
        out.push(heading);
    }
    let mut leaf = Leaf::new(LeafKind::Paragraph { in_item: false });
    leaf.push(line, line_no);
    out.push(leaf);
}

/// A bare heading line: short, not a sentence, and a known section name.
fn is_heading(line: &str) -> bool {
    let words = line.split_whitespace().count();
    let ends_like_sentence = line.ends_with(['.', ',', ';']) && !line.ends_with("...");
    line.chars().count() <= 60
        && (1..=7).contains(&words)
        && !ends_like_sentence
        && line.chars().next().is_some_and(char::is_alphabetic)
        && classify::heading_kind(line.trim_end_matches([':', '?'])).is_some()
}

/// A short question on a line of its own, as templates leave them: it reads as a heading.
fn is_template_question(line: &str, next: Option<&str>) -> bool {
    let words = line.split_whitespace().count();
    line.ends_with('?')
        && (3..=14).contains(&words)
        && line.chars().next().is_some_and(char::is_uppercase)
        && bullet_len(line).is_none()
        && next.is_none_or(|n| n.trim().is_empty() || bullet_len(n.trim_start()).is_some())
}

fn is_rule(line: &str) -> bool {
    line.len() >= 3 && line.bytes().all(|b| matches!(b, b'-' | b'=' | b'*' | b'_'))
}

/// Byte length of a leading bullet marker, if the line has one.
fn bullet_len(line: &str) -> Option<usize> {
    for marker in ["• ", "· ", "– ", "- ", "* ", "+ ", "•", "◦ "] {
        if line.starts_with(marker) {
            return Some(marker.len());
        }
    }
    let digits = line.bytes().take_while(u8::is_ascii_digit).count();
    if (1..=3).contains(&digits) {
        let rest = &line[digits..];
        if rest.starts_with(". ") || rest.starts_with(") ") {
            return Some(digits + 2);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_structure() {
        let text = "Summary\nThe LDAP CA expired.\nIt broke logins.\n\nTimeline\n• 20:29 cert expired\n  continued\n14:02 UTC - paged\nWhat went well?\n• fast fix\n";
        let got: Vec<(LeafKind, String, u32)> = leaves(text)
            .into_iter()
            .map(|l| (l.kind, l.text, l.marks.first().map_or(0, |m| m.1)))
            .collect();
        let expected = vec![
            (LeafKind::Heading(2), "Summary".to_owned(), 1),
            (
                LeafKind::Paragraph { in_item: false },
                "The LDAP CA expired. It broke logins.".to_owned(),
                2,
            ),
            (LeafKind::Heading(2), "Timeline".to_owned(), 5),
            (
                LeafKind::Item { id: 1, list: 1 },
                "20:29 cert expired continued".to_owned(),
                6,
            ),
            (LeafKind::ItemEnd { id: 1 }, String::new(), 0),
            (
                LeafKind::Item { id: 2, list: 1 },
                "14:02 UTC - paged".to_owned(),
                8,
            ),
            (LeafKind::ItemEnd { id: 2 }, String::new(), 0),
            (LeafKind::Heading(2), "What went well?".to_owned(), 9),
            (LeafKind::Item { id: 3, list: 3 }, "fast fix".to_owned(), 10),
            (LeafKind::ItemEnd { id: 3 }, String::new(), 0),
        ];
        assert_eq!(got, expected);
    }
}
