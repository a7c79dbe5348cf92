//! `precedent avenues QUERY...` and `precedent compare --file NOTES`.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use precedent_index::{
    Avenue, AvenueGroup, AvenuesRequest, CompareRequest, MAX_NOTES_BYTES, MatchQuality, NoteMatch,
};

use crate::common::{FilterArgs, IndexArgs, ModelArgs, StoreArgs, explain, open_store, print_json};
use crate::output::{ColorWhen, Printer, citation};
use crate::search_cmd::{NO_CLOSE_PRECEDENT, kind_label};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  precedent avenues 502s from the ingress after a deploy
  precedent avenues disk full on the database primary --outcome did_not_help
  precedent avenues certificate expired --since 2023 --json")]
pub struct AvenuesArgs {
    /// The symptom or situation, in your own words (several words need no quotes).
    #[arg(required = true, num_args = 1.., value_name = "QUERY")]
    query: Vec<String>,
    /// Number of avenues to return.
    #[arg(short, default_value_t = 10)]
    k: usize,
    /// How many resembling past incidents to draw avenues from (1-50).
    #[arg(long = "incidents", default_value_t = 10, value_name = "N")]
    incident_pool: usize,
    /// Keep one group: restored_service (or helped), did_not_help, ruled_out,
    /// confirmed_cause, tried.
    #[arg(long, value_name = "OUTCOME")]
    outcome: Option<AvenueGroup>,
    #[command(flatten)]
    filters: FilterArgs,
    /// Print the response as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    index: IndexArgs,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    store: StoreArgs,
}

pub fn avenues(args: AvenuesArgs, color: ColorWhen) -> anyhow::Result<ExitCode> {
    let embedder = args
        .model
        .load_for(&args.index.index)
        .context("avenues needs the embedding model")?;
    let store = open_store(&args.store, &args.index, embedder.as_ref())?;
    let request = AvenuesRequest {
        query: args.query.join(" "),
        k: args.k,
        incidents: args.incident_pool,
        filters: args.filters.to_filters(store.as_ref())?,
        outcome: args.outcome,
    };
    let response = precedent_index::avenues(store.as_ref(), &request, embedder.as_ref())
        .map_err(|e| explain(e.into(), &args.model, &args.index))?;
    let found = !response.avenues.is_empty();
    if args.json {
        print_json(&response)?;
    } else if !found {
        eprintln!("no avenues: no resembling incident records a hypothesis, action or mitigation");
    } else {
        let mut p = Printer::stdout(color);
        if response.match_quality == MatchQuality::None {
            p.line(&p.dim(NO_CLOSE_PRECEDENT))?;
        }
        print_avenues(&mut p, &response.avenues)?;
        p.line(&p.dim(&format!(
            "({} avenues from {} incidents, {} trigger classes; {} resembling incidents read; {} ms)",
            response.avenues.len(),
            response.distinct_incidents,
            response.distinct_trigger_classes,
            response.incidents_considered,
            response.took_ms
        )))?;
        p.finish()?;
    }
    Ok(if found {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Avenues under a heading per group.
fn print_avenues(p: &mut Printer, avenues: &[Avenue]) -> std::io::Result<()> {
    let mut group = None;
    for (i, avenue) in avenues.iter().enumerate() {
        if group != Some(avenue.group) {
            if group.is_some() {
                p.line("")?;
            }
            p.line(&p.heading(avenue.group.label()))?;
            group = Some(avenue.group);
        }
        let lead = format!("{:>2}. ", i + 1);
        p.wrapped(&lead, lead.len(), "    ", &avenue.text)?;
        p.line(&format!("    {}", p.dim(&avenue.counts.describe())))?;
        for e in &avenue.evidence {
            let cite = citation(&e.citation.path, e.citation.line_start, e.citation.line_end);
            let date = e
                .date
                .map_or_else(|| "undated".into(), |d| d.start.to_string());
            let kind = kind_label(e.kind, e.outcome);
            let lead = format!("      {}  {} ", p.path(&cite), p.kind(&format!("[{kind}]")));
            let width = 6 + cite.chars().count() + 2 + kind.chars().count() + 3;
            p.wrapped(&lead, width, "        ", &format!("{} ({date})", e.title))?;
        }
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  precedent compare --file notes.md
  pbpaste | precedent compare --file -
  precedent compare --file draft-postmortem.md -k 3 --json")]
pub struct CompareArgs {
    /// The notes: a draft write-up or plain notes or log lines from the incident channel
    /// (`-` reads standard input; at most 64 KiB).
    #[arg(long, value_name = "NOTES")]
    file: PathBuf,
    /// Number of similar past incidents to compare with (1-50).
    #[arg(short, default_value_t = 5)]
    k: usize,
    #[command(flatten)]
    filters: FilterArgs,
    /// Print the response as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    index: IndexArgs,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    store: StoreArgs,
}

fn read_notes(file: &PathBuf) -> anyhow::Result<String> {
    let mut bytes = Vec::new();
    let limit = MAX_NOTES_BYTES as u64 + 1;
    if file.as_os_str() == "-" {
        std::io::stdin()
            .take(limit)
            .read_to_end(&mut bytes)
            .context("cannot read the notes from standard input")?;
    } else {
        std::fs::File::open(file)
            .and_then(|f| f.take(limit).read_to_end(&mut bytes))
            .with_context(|| format!("cannot read {}", file.display()))?;
    }
    if bytes.len() > MAX_NOTES_BYTES {
        anyhow::bail!(
            "{} holds more than {} KiB; compare the part that describes the incident",
            file.display(),
            MAX_NOTES_BYTES / 1024
        );
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

pub fn compare(args: CompareArgs, color: ColorWhen) -> anyhow::Result<ExitCode> {
    let notes = read_notes(&args.file)?;
    let embedder = args
        .model
        .load_for(&args.index.index)
        .context("compare needs the embedding model")?;
    let store = open_store(&args.store, &args.index, embedder.as_ref())?;
    let request = CompareRequest {
        notes,
        k: args.k,
        filters: args.filters.to_filters(store.as_ref())?,
    };
    let response = precedent_index::compare(store.as_ref(), &request, embedder.as_ref())
        .map_err(|e| explain(e.into(), &args.model, &args.index))?;
    let found = !response.incidents.is_empty();
    if args.json {
        print_json(&response)?;
        return Ok(if found {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    if !found {
        eprintln!("no similar past incidents to compare with");
        return Ok(ExitCode::from(1));
    }
    let mut p = Printer::stdout(color);
    if response.match_quality == MatchQuality::None {
        p.line(&p.dim(NO_CLOSE_PRECEDENT))?;
    }
    p.line(&p.heading("Compared with"))?;
    for (i, inc) in response.incidents.iter().enumerate() {
        let date = inc
            .date
            .map_or_else(|| "undated".into(), |d| d.start.to_string());
        p.line(&format!(
            "{:>2}. {}  {}",
            i + 1,
            p.title(&inc.title),
            p.dim(&format!(
                "({date}, {}, {})",
                inc.trigger_class, inc.incident_id
            ))
        ))?;
    }
    let sections: [(&str, &[NoteMatch]); 3] = [
        (
            "Your notes suspect what was ruled out before",
            &response.ruled_out_before,
        ),
        (
            "Your notes match a confirmed past cause",
            &response.matches_confirmed_cause,
        ),
        (
            "Your notes mention what did not help before",
            &response.did_not_help_before,
        ),
    ];
    for (title, matches) in sections {
        if matches.is_empty() {
            continue;
        }
        p.line("")?;
        p.line(&p.heading(title))?;
        for m in matches {
            p.wrapped(
                &format!("  line {}: ", m.note_line),
                8 + m.note_line.to_string().len(),
                "    ",
                &m.note,
            )?;
            let e = &m.past;
            let cite = citation(&e.citation.path, e.citation.line_start, e.citation.line_end);
            let lead = format!("    {} ", p.path(&cite));
            p.wrapped(&lead, 4 + cite.chars().count() + 1, "      ", &e.text)?;
        }
    }
    p.line("")?;
    if response.not_in_notes.is_empty() {
        p.line(
            &p.heading("Your notes already cover what these incidents checked, tried and fixed"),
        )?;
    } else {
        p.line(&p.heading("Not in your notes yet"))?;
        print_avenues(&mut p, &response.not_in_notes)?;
    }
    p.line(&p.dim(&format!("({} ms)", response.took_ms)))?;
    p.finish()?;
    Ok(ExitCode::SUCCESS)
}
