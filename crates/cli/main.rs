//! The `precedent` command line.

mod avenues_cmd;
mod common;
mod embed_cmd;
mod eval_cmd;
mod index_cmd;
mod output;
mod parse_cmd;
mod search_cmd;
mod serve_cmd;
mod show_cmd;

use std::process::ExitCode;

use clap::{ArgAction, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::output::ColorWhen;

/// Closing words of every help text.
const EXIT_STATUS: &str = "\
Exit status: 0 when something was found (or the command succeeded), 1 when a search, similar or
parse found nothing, 2 on errors (as grep). `--help-all` also shows the Qdrant store options.";

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
    max_term_width = 100,
    disable_help_flag = true,
    after_help = EXIT_STATUS
)]
struct Cli {
    /// Colour: auto (on a terminal, unless NO_COLOR is set), always or never.
    #[arg(
        long,
        global = true,
        value_name = "WHEN",
        default_value = "auto",
        display_order = 900
    )]
    color: ColorWhen,
    /// Print help (--help-all for every option).
    #[arg(short = 'h', long = "help", global = true, action = ArgAction::HelpShort, display_order = 901)]
    help: Option<bool>,
    /// Print help with every option, the Qdrant store's included.
    #[arg(long = "help-all", global = true, action = ArgAction::HelpLong, display_order = 902)]
    help_all: Option<bool>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build or update the index from a directory of write-ups (incremental: unchanged files
    /// cost nothing, changed files are replaced, deleted files removed).
    Index(index_cmd::Args),
    /// Find past diagnostic steps: symptoms, hypotheses, actions, mitigations, causes.
    #[command(
        override_usage = "precedent search [OPTIONS] <QUERY>...\n       precedent search [OPTIONS] (--exact <STRING> | --regex <RE>)"
    )]
    Search(search_cmd::SearchArgs),
    /// Find past incidents similar to an indexed one, a draft write-up, or a description.
    Similar(search_cmd::SimilarArgs),
    /// What people checked, tried and fixed for a symptom in the incidents that resemble it,
    /// grouped by outcome (restored service, did not help, ruled out, confirmed cause).
    Avenues(avenues_cmd::AvenuesArgs),
    /// Compare notes of an ongoing investigation with similar past incidents: what they did
    /// that the notes lack, which of your hypotheses were ruled out before.
    Compare(avenues_cmd::CompareArgs),
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
    let mut command = Cli::command();
    // Help flags are the global ones above; the exit status is told by every command.
    command = command.mut_subcommands(|sub| sub.disable_help_flag(true).after_help(EXIT_STATUS));
    let cli = match Cli::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    let color = cli.color;
    let result = match cli.command {
        Command::Index(args) => index_cmd::run(args),
        Command::Search(args) => search_cmd::search(args, color),
        Command::Similar(args) => search_cmd::similar(args, color),
        Command::Avenues(args) => avenues_cmd::avenues(args, color),
        Command::Compare(args) => avenues_cmd::compare(args, color),
        Command::Show(args) => show_cmd::run(args, color),
        Command::Parse(args) => parse_cmd::run(args),
        Command::Embed(args) => embed_cmd::run(args),
        Command::Eval(args) => eval_cmd::run(args),
        Command::Serve(args) => serve_cmd::serve(args),
        Command::Mcp(args) => serve_cmd::mcp(args),
    };
    match result {
        Ok(code) => code,
        // A reader that went away (`| head`) is not an error, as with grep and rg.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            // Error texts can carry corpus file names: never let them drive the terminal.
            eprintln!("error: {}", output::clean(&err.to_string()));
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {}", output::clean(&cause.to_string()));
            }
            ExitCode::from(2)
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
