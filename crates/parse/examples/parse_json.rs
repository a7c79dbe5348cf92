//! Prints the parse of one write-up as JSON, the shape of `precedent parse FILE --json`, without
//! building the whole binary: `cargo run --release -p precedent-parse --example parse_json -- FILE
//! [ROOT]` (ids and paths are relative to ROOT, default the file's directory).

use std::path::Path;

use precedent_parse::{ParseOptions, parse_file};

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(file) = args.next() else {
        eprintln!("usage: parse_json FILE [ROOT]");
        std::process::exit(2);
    };
    let path = Path::new(&file);
    let relative = match args.next() {
        Some(root) => path
            .strip_prefix(&root)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned(),
        None => path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    let parsed = parse_file(&relative, path, &ParseOptions::default());
    println!(
        "{}",
        serde_json::to_string_pretty(&parsed).expect("a parse serialises")
    );
}
