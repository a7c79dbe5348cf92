//! `precedent show ID`.

use std::collections::HashSet;
use std::process::ExitCode;

use precedent_core::{Incident, Step, StepKind};

use crate::common::{IndexArgs, ModelArgs, StoreArgs, StoreKind, open, print_json};
use crate::output::{ColorWhen, Printer, citation};
use crate::search_cmd::shown_path;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The incident: its id, a unique id prefix, or the path of its write-up relative to the
    /// corpus root.
    #[arg(value_name = "ID")]
    id: String,
    /// Only steps of this kind (repeatable): summary, impact, detection, investigation, action,
    /// mitigation, root_cause, lesson, follow_up, timeline_event, other.
    #[arg(long = "kind", value_name = "KIND")]
    kinds: Vec<StepKind>,
    /// Print citations with the absolute path of the write-up.
    #[arg(long)]
    absolute: bool,
    /// Never page the output (by default a long incident goes through $PAGER or less when
    /// stdout is a terminal).
    #[arg(long)]
    no_pager: bool,
    /// Print the incident as JSON (the whole incident, whatever --kind says).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    index: IndexArgs,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    store: StoreArgs,
}

pub fn run(args: Args, color: ColorWhen) -> anyhow::Result<ExitCode> {
    // With --store qdrant the collection holds the incidents: no local index needed.
    let (store, root): (Box<dyn precedent_index::Store>, _) = match args.store.store {
        StoreKind::Embedded => {
            let engine = open(&args.index)?;
            let root = engine.corpus_root();
            (Box::new(engine), root)
        }
        StoreKind::Qdrant => {
            let embedder = args.model.load_for_collection(&args.store)?;
            (Box::new(args.store.qdrant(embedder.as_ref())?), None)
        }
    };
    let id = store.resolve_incident(&args.id)?;
    let Some(incident) = store.incident(&id)? else {
        anyhow::bail!("incident {id} vanished from the {} store", store.kind());
    };
    if args.json {
        print_json(&incident)?;
        return Ok(ExitCode::SUCCESS);
    }
    let root = if args.absolute { root } else { None };
    let path = shown_path(&incident.path, root.as_deref());
    let mut p = Printer::paged(color, args.no_pager);
    print_incident(&mut p, &incident, &path, &args.kinds)?;
    p.finish()?;
    Ok(ExitCode::SUCCESS)
}

fn print_incident(
    p: &mut Printer,
    incident: &Incident,
    path: &str,
    kinds: &[StepKind],
) -> std::io::Result<()> {
    p.line(&p.title(&incident.title))?;
    p.line(&format!("id:       {}", incident.id))?;
    p.line(&format!("path:     {}", p.path(path)))?;
    if let Some(date) = &incident.date {
        let end = date.end.map(|e| format!(" .. {e}")).unwrap_or_default();
        p.line(&format!("date:     {}{end}", date.start))?;
    }
    if let Some(severity) = &incident.severity {
        p.wrapped("severity: ", 10, "          ", severity)?;
    }
    if !incident.services.is_empty() {
        p.wrapped(
            "services: ",
            10,
            "          ",
            &incident.services.join(", "),
        )?;
    }
    if !incident.tags.is_empty() {
        p.wrapped("tags:     ", 10, "          ", &incident.tags.join(", "))?;
    }
    print_card(p, incident, path)?;

    let keep = |step: &Step| kinds.is_empty() || kinds.contains(&step.kind);
    let step_of = |id: &precedent_core::StepId| incident.steps.iter().find(|s| &s.id == id);
    let on_timeline: HashSet<_> = incident.timeline.iter().map(|e| &e.step_id).collect();
    let rows: Vec<_> = incident
        .timeline
        .iter()
        .filter_map(|e| Some((e, step_of(&e.step_id)?)))
        .filter(|(_, s)| keep(s))
        .collect();
    if !rows.is_empty() {
        p.line("")?;
        p.line(&p.heading("timeline"))?;
        let at_width = rows
            .iter()
            .map(|(e, _)| e.at.raw.chars().count())
            .max()
            .unwrap_or(0)
            .min(24);
        for (entry, step) in rows {
            let text = without_time(&step.text, &entry.at.raw);
            let at = crate::output::clean(&entry.at.raw).into_owned();
            let kind = format!("{:<14}", entry.kind.as_str());
            let lead = format!("  {at:<at_width$}  {} ", p.kind(&kind));
            let lead_width = 2 + at_width.max(at.chars().count()) + 2 + kind.len() + 1;
            let indent = " ".repeat(lead_width.min(40));
            p.wrapped(&lead, lead_width, &indent, text)?;
            p.line(&format!(
                "{indent}{}",
                p.dim(&citation(path, step.line_start, step.line_end))
            ))?;
        }
    }
    let steps: Vec<&Step> = incident
        .steps
        .iter()
        .filter(|s| !on_timeline.contains(&s.id) && keep(s))
        .collect();
    if !steps.is_empty() {
        p.line("")?;
        p.line(&p.heading("steps"))?;
        for step in steps {
            let outcome = step
                .outcome
                .and_then(|o| serde_json::to_value(o).ok())
                .and_then(|v| v.as_str().map(|s| format!(" [{s}]")))
                .unwrap_or_default();
            let heading = if step.heading_path.is_empty() {
                String::new()
            } else {
                format!("  {}", p.dim(&step.heading_path.join(" > ")))
            };
            p.line(&format!(
                "  {}  {}{outcome}{heading}",
                p.kind(&format!("{:<14}", step.kind.as_str())),
                p.path(&citation(path, step.line_start, step.line_end)),
            ))?;
            for para in step.text.lines().filter(|l| !l.trim().is_empty()) {
                p.wrapped("      ", 6, "      ", para)?;
            }
        }
    }
    Ok(())
}

/// First and last line of a card item.
type Lines = (u64, u64);

/// The card (when the index has one for the incident), else the summary. Read through JSON so
/// that an index without cards shows the summary.
fn print_card(p: &mut Printer, incident: &Incident, path: &str) -> std::io::Result<()> {
    let json = serde_json::to_value(incident).unwrap_or_default();
    let card = json.get("card").and_then(|c| c.as_object());
    let mut rows: Vec<(&str, String, Option<Lines>)> = Vec::new();
    if let Some(card) = card {
        let item = |v: &serde_json::Value| {
            let text = v.get("text")?.as_str()?.to_owned();
            let lines = v
                .get("line_start")
                .and_then(|s| s.as_u64())
                .zip(v.get("line_end").and_then(|e| e.as_u64()));
            Some((text, lines))
        };
        for (key, label) in [
            ("summary", "summary"),
            ("trigger", "trigger"),
            ("root_cause", "cause"),
            ("restored_by", "restored"),
            ("did_not_help", "no help"),
            ("ruled_out", "ruled out"),
        ] {
            match card.get(key) {
                Some(serde_json::Value::Array(items)) => {
                    for (text, lines) in items.iter().filter_map(item) {
                        rows.push((label, text, lines));
                    }
                }
                Some(v) => {
                    if let Some((text, lines)) = item(v) {
                        rows.push((label, text, lines));
                    }
                }
                None => {}
            }
        }
        for (key, label) in [
            ("time_to_detect", "detected"),
            ("time_to_mitigate", "mitigated"),
        ] {
            if let Some(minutes) = card.get(key).and_then(|s| s.get("minutes")?.as_i64()) {
                rows.push((label, format!("after {}", minutes_text(minutes)), None));
            }
        }
    }
    if rows.is_empty()
        && let Some(summary) = &incident.summary
    {
        rows.push(("summary", summary.clone(), None));
    }
    if rows.is_empty() {
        return Ok(());
    }
    p.line("")?;
    p.line(&p.heading("card"))?;
    for (label, text, lines) in rows {
        let lead = format!("  {label:<10} ");
        p.wrapped(&lead, lead.len(), "             ", &text)?;
        if let Some((start, end)) = lines {
            p.line(&format!(
                "             {}",
                p.dim(&citation(path, start as u32, end as u32))
            ))?;
        }
    }
    Ok(())
}

fn minutes_text(minutes: i64) -> String {
    if minutes < 60 {
        format!("{minutes} min")
    } else {
        format!("{} h {:02} min", minutes / 60, minutes % 60)
    }
}

/// A timeline step's text without the time it starts with (the time is in its own column).
fn without_time<'a>(text: &'a str, at: &str) -> &'a str {
    let t = text.trim_start();
    match t.strip_prefix(at) {
        Some(rest) => rest
            .trim_start_matches([' ', '-', '–', '—', ':', '|', '*'])
            .trim_start(),
        None => t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_text_loses_its_time() {
        assert_eq!(without_time("14:02 - alert fired", "14:02"), "alert fired");
        assert_eq!(without_time("**14:02** alert", "14:02"), "**14:02** alert");
        assert_eq!(without_time("alert at 14:02", "14:02"), "alert at 14:02");
        assert_eq!(minutes_text(75), "1 h 15 min");
    }
}
