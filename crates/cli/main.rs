//! The `precedent` command line.

mod common;
mod embed_cmd;
mod eval_cmd;
mod index_cmd;
mod parse_cmd;
mod search_cmd;
mod serve_cmd;
mod show_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Searchable memory of past incidents.
///
/// precedent reads a directory of post-incident write-ups (Markdown or plain text), splits each
/// into the diagnostic steps people took (symptoms seen, hypotheses ruled out, actions tried,
/// mitigation, contributing factors, follow-ups), and answers "which past incidents look like
/// the one we are in, and what did people try?".
#[derive(Debug, Parser)]
#[command(
    name = "precedent",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build or update the index from a directory of write-ups (incremental: unchanged files
    /// cost nothing, changed files are replaced, deleted files removed).
    Index(index_cmd::Args),
    /// Find past diagnostic steps: symptoms, hypotheses, actions, mitigations, causes.
    Search(search_cmd::SearchArgs),
    /// Find past incidents similar to an indexed one, a draft write-up, or a description.
    Similar(search_cmd::SimilarArgs),
    /// Show one incident with its steps and timeline.
    Show(show_cmd::Args),
    /// Show how one write-up is understood: metadata, steps with kind, outcome and line span.
    Parse(parse_cmd::Args),
    /// Embed texts: one JSON string per line on stdin, one JSON array per line on stdout.
    Embed(embed_cmd::Args),
    /// Serve the HTTP API and MCP (streamable HTTP at /mcp) on loopback.
    Serve(serve_cmd::ServeArgs),
    /// Serve MCP over stdio, for an agent that starts precedent itself.
    Mcp(serve_cmd::McpArgs),
    /// Score retrieval on judged queries: nDCG@10, recall@10 and MRR per mode and query kind.
    Eval(eval_cmd::Args),
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
        Command::Index(args) => index_cmd::run(args),
        Command::Search(args) => search_cmd::search(args),
        Command::Similar(args) => search_cmd::similar(args),
        Command::Show(args) => show_cmd::run(args),
        Command::Parse(args) => parse_cmd::run(args),
        Command::Embed(args) => embed_cmd::run(args),
        Command::Eval(args) => eval_cmd::run(args),
        Command::Serve(args) => serve_cmd::serve(args),
        Command::Mcp(args) => serve_cmd::mcp(args),
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
