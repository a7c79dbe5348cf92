//! Any bytes, as Markdown and as plain text: the parser must not panic, and every step it
//! returns must have a sane line span inside the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use precedent_parse::{ParseOptions, parse};

fuzz_target!(|data: &[u8]| {
    let options = ParseOptions::default();
    let lines = data.iter().filter(|&&b| b == b'\n' || b == b'\r').count() as u32 + 1;
    for name in ["fuzz.md", "fuzz.txt"] {
        let parsed = parse(name, data, &options);
        if let Some(incident) = parsed.incident {
            for step in &incident.steps {
                assert!(step.line_start >= 1 && step.line_start <= step.line_end);
                assert!(step.line_end <= lines, "line {} of {lines}", step.line_end);
                assert!(!step.text.trim().is_empty());
            }
        }
    }
});
