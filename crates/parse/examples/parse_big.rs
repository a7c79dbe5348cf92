//! Parses one file N times and prints the time: `cargo run --release -p precedent-parse --example parse_big -- FILE [N]`
fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: parse_big FILE [N]");
    let n: usize = args.next().map_or(1, |n| n.parse().expect("N is a number"));
    let bytes = std::fs::read(&path).expect("readable file");
    let options = precedent_parse::ParseOptions {
        max_bytes: u64::MAX,
        ..Default::default()
    };
    for _ in 0..n {
        let start = std::time::Instant::now();
        let parsed = precedent_parse::parse(&path, &bytes, &options);
        let steps = parsed.incident.map_or(0, |i| i.steps.len());
        println!(
            "{} bytes, {steps} steps in {:.3} s",
            bytes.len(),
            start.elapsed().as_secs_f64()
        );
    }
}
