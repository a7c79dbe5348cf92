//! `precedent show ID`.

use std::process::ExitCode;

use precedent_core::IncidentId;

use crate::common::{IndexArgs, print_json};
use crate::search_cmd::open;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Incident id, as printed by search and similar.
    id: IncidentId,
    #[command(flatten)]
    index: IndexArgs,
    /// Print the incident as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let engine = open(&args.index)?;
    let Some(incident) = engine.incident(&args.id)? else {
        eprintln!(
            "error: no incident {} in {}",
            args.id,
            args.index.index.display()
        );
        return Ok(ExitCode::from(1));
    };
    if args.json {
        print_json(&incident)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}", incident.title);
    println!("id:       {}", incident.id);
    println!("path:     {}", incident.path);
    if let Some(date) = &incident.date {
        println!(
            "date:     {}{}",
            date.start,
            date.end.map(|e| format!(" .. {e}")).unwrap_or_default()
        );
    }
    if let Some(severity) = &incident.severity {
        println!("severity: {severity}");
    }
    if !incident.services.is_empty() {
        println!("services: {}", incident.services.join(", "));
    }
    if !incident.tags.is_empty() {
        println!("tags:     {}", incident.tags.join(", "));
    }
    if !incident.timeline.is_empty() {
        println!("\ntimeline:");
        for entry in &incident.timeline {
            let text = incident
                .steps
                .iter()
                .find(|s| s.id == entry.step_id)
                .map(|s| s.text.as_str())
                .unwrap_or("");
            println!(
                "  {:<20} {:<14} {}",
                entry.at.raw,
                entry.kind.as_str(),
                crate::common::one_line(text, 90)
            );
        }
    }
    println!("\nsteps:");
    for step in &incident.steps {
        let outcome = step
            .outcome
            .map(|o| {
                format!(
                    " [{}]",
                    serde_json::to_value(o)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                )
            })
            .unwrap_or_default();
        println!(
            "  #{:<3} {:<14} L{}-{}{outcome}  {}",
            step.ordinal,
            step.kind.as_str(),
            step.line_start,
            step.line_end,
            step.heading_path.join(" > ")
        );
        for line in step.text.lines() {
            println!("       {line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
