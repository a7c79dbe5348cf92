//! The `precedent` command line.

mod parse_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Searchable memory of past incidents.
///
/// precedent reads a directory of post-incident write-ups (Markdown or plain text), splits each
/// into the diagnostic steps people took (symptoms seen, hypotheses ruled out, actions tried,
/// mitigation, contributing factors, follow-ups), and answers "which past incidents look like
/// the one we are in, and what did people try?".
#[derive(Debug, Parser)]
#[command(name = "precedent", version, propagate_version = true, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show how one write-up is understood: metadata, steps with kind, outcome and line span.
    Parse(parse_cmd::Args),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PRECEDENT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Parse(args) => parse_cmd::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(2)
        }
    }
}
