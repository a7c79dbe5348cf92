//! Property tests: steps cover the document's text with no gaps, overlap only by the stated
//! overlap, and their line spans are exact.

use std::collections::BTreeMap;

use precedent_parse::{ChunkOptions, ParseOptions, parse};
use proptest::prelude::*;

/// One generated block and the words each of its source lines holds.
#[derive(Debug, Clone)]
enum Gen {
    Heading(usize, Vec<String>),
    Paragraph(Vec<Vec<String>>),
    List(Vec<Vec<String>>),
    Timeline(Vec<(u32, Vec<String>)>),
    Code(Vec<Vec<String>>),
}

fn word() -> impl Strategy<Value = String> {
    "[a-z]{1,8}"
}

fn line(max: usize) -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(word(), 1..max)
}

fn block() -> impl Strategy<Value = Gen> {
    prop_oneof![
        (
            1usize..4,
            prop::sample::select(vec![
                "Summary",
                "Timeline",
                "Root cause",
                "Notes",
                "Action items",
                "Impact"
            ])
        )
            .prop_map(|(level, h)| Gen::Heading(
                level + 1,
                h.split(' ').map(str::to_owned).collect()
            )),
        prop::collection::vec(line(25), 1..12).prop_map(Gen::Paragraph),
        prop::collection::vec(line(15), 1..8).prop_map(Gen::List),
        prop::collection::vec((0u32..1440, line(10)), 1..6).prop_map(Gen::Timeline),
        prop::collection::vec(line(6), 1..5).prop_map(Gen::Code),
    ]
}

/// Renders the blocks; returns the text and, per content line, its words.
fn render(blocks: &[Gen]) -> (String, BTreeMap<u32, Vec<String>>) {
    let mut text = String::new();
    let mut content = BTreeMap::new();
    let mut line = 1u32;
    let mut push = |text: &mut String, s: &str, words: Option<Vec<String>>, line: &mut u32| {
        text.push_str(s);
        text.push('\n');
        if let Some(words) = words {
            content.insert(*line, words);
        }
        *line += 1;
    };
    for block in blocks {
        match block {
            Gen::Heading(level, words) => push(
                &mut text,
                &format!("{} {}", "#".repeat(*level), words.join(" ")),
                None,
                &mut line,
            ),
            Gen::Paragraph(lines) => {
                for (i, words) in lines.iter().enumerate() {
                    let end = if i % 3 == 2 { "." } else { "" };
                    push(
                        &mut text,
                        &format!("{}{end}", words.join(" ")),
                        Some(words.clone()),
                        &mut line,
                    );
                }
            }
            Gen::List(items) => {
                for words in items {
                    push(
                        &mut text,
                        &format!("- {}", words.join(" ")),
                        Some(words.clone()),
                        &mut line,
                    );
                }
            }
            Gen::Timeline(rows) => {
                push(&mut text, "| Time | Event |", None, &mut line);
                push(&mut text, "|---|---|", None, &mut line);
                for (minute, words) in rows {
                    let mut all = vec![format!("{:02}:{:02}", minute / 60, minute % 60)];
                    all.extend(words.iter().cloned());
                    push(
                        &mut text,
                        &format!("| {} | {} |", all[0], words.join(" ")),
                        Some(all),
                        &mut line,
                    );
                }
            }
            Gen::Code(lines) => {
                push(&mut text, "```", None, &mut line);
                for words in lines {
                    push(&mut text, &words.join(" "), Some(words.clone()), &mut line);
                }
                push(&mut text, "```", None, &mut line);
            }
        }
        push(&mut text, "", None, &mut line);
    }
    (text, content)
}

fn tokens(s: &str) -> Vec<String> {
    s.split(|c: char| !(c.is_alphanumeric() || c == ':'))
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn steps_cover_text_exactly(blocks in prop::collection::vec(block(), 1..14), max_words in 12usize..80) {
        let chunk = ChunkOptions { max_words, overlap_words: max_words / 4, min_words: 4 };
        let options = ParseOptions { chunk, ..ParseOptions::default() };
        let (text, content) = render(&blocks);
        let incident = parse("doc.md", text.as_bytes(), &options).incident.unwrap();
        let source: Vec<&str> = text.split('\n').collect();

        // Exact spans: the first and last token of a step sit on its first and last line.
        for step in &incident.steps {
            let toks = tokens(&step.text);
            prop_assert!(!toks.is_empty());
            prop_assert!(step.line_start <= step.line_end);
            let first_line = tokens(source[step.line_start as usize - 1]);
            let last_line = tokens(source[step.line_end as usize - 1]);
            prop_assert!(first_line.contains(&toks[0]), "step {} starts {:?}, line {} is {:?}", step.ordinal, toks[0], step.line_start, first_line);
            prop_assert!(last_line.contains(toks.last().unwrap()), "step {} ends {:?}, line {} is {:?}", step.ordinal, toks.last(), step.line_end, last_line);
            prop_assert!(step.text.split_whitespace().count() <= max_words + chunk.min_words, "step of {} words", step.text.split_whitespace().count());
        }

        // No gaps: every word of every content line is in a step whose span holds the line.
        for (line, words) in &content {
            let holders: Vec<_> = incident.steps.iter().filter(|s| s.line_start <= *line && *line <= s.line_end).collect();
            prop_assert!(!holders.is_empty(), "line {line} {words:?} is in no step");
            for word in words {
                prop_assert!(holders.iter().any(|s| tokens(&s.text).contains(word)), "word {word:?} of line {line} missing");
            }
        }

        // Overlap: steps repeat at most `overlap_words` words each.
        let total_content: usize = content.values().map(Vec::len).sum();
        let total_steps: usize = incident.steps.iter().map(|s| tokens(&s.text).len()).sum();
        prop_assert!(total_steps >= total_content);
        prop_assert!(total_steps <= total_content + incident.steps.len() * chunk.overlap_words, "{total_steps} words in steps for {total_content} in the text");
    }
}
