//! The parser reads write-ups as an SRE does: kinds, outcomes, cards and categories on
//! corpus-samples written for these hard cases (status markers, failed actions, results in the
//! next row, template questions, UUID names).

use std::path::Path;

use precedent_core::{Incident, Outcome, RemediationClass, StepKind, TriggerClass};
use precedent_parse::{ParseOptions, parse_file};

fn sample(name: &str) -> Incident {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../corpus-samples")
        .join(name);
    parse_file(name, &path, &ParseOptions::default())
        .incident
        .unwrap_or_else(|| panic!("{name} parses"))
}

/// The kind and outcome of the narrowest step covering `line`.
fn at_line(incident: &Incident, line: u32) -> (StepKind, Option<Outcome>) {
    let step = incident
        .steps
        .iter()
        .filter(|s| s.line_start <= line && line <= s.line_end)
        .min_by_key(|s| s.line_end - s.line_start)
        .unwrap_or_else(|| panic!("no step covers line {line}"));
    (step.kind, step.outcome)
}

const TIMELINE: &str = "2024-02-06-ingress-crashloop-after-chart-upgrade.md";

#[test]
fn timeline_rows_take_their_kind_from_their_wording() {
    use Outcome::*;
    use StepKind::*;
    let incident = sample(TIMELINE);
    let check = |line: u32, kind: StepKind, outcome: Option<Outcome>| {
        assert_eq!(at_line(&incident, line), (kind, outcome), "line {line}");
    };
    check(13, Other, None); // "All times in UTC."
    check(17, Other, None); // placeholder row
    check(18, RootCause, None); // the upgrade, before anyone noticed: the trigger
    check(19, Detection, None);
    check(20, TimelineEvent, None); // "Incident declared"
    check(21, Investigation, Some(RuledOut));
    check(22, Action, Some(DidNotHelp)); // its verdict is in the next row
    check(23, Detection, None); // "Errors came back": the symptom again
    check(24, Action, Some(DidNotHelp)); // "Attempt fails" follows
    check(26, Investigation, Some(Confirmed));
    check(27, Mitigation, Some(Helped)); // the rollback before "Service fully restored"
    check(28, TimelineEvent, None); // a status marker, never a mitigation
    check(29, TimelineEvent, None);
    check(38, Other, None); // unanswered template question
    check(42, FollowUp, None);
}

#[test]
fn the_card_cites_what_restored_service_and_what_did_not() {
    let incident = sample(TIMELINE);
    assert_eq!(incident.severity.as_deref(), Some("SEV2"));
    let card = &incident.card;
    let trigger = card.trigger.as_ref().expect("a trigger");
    assert_eq!(trigger.line_start, 18);
    assert!(
        trigger.text.starts_with("Helm chart upgrade"),
        "{}",
        trigger.text
    );
    let cause = card.root_cause.as_ref().expect("a root cause");
    assert_eq!((cause.line_start, cause.line_end), (33, 34));
    let restored: Vec<u32> = card.restored_by.iter().map(|i| i.line_start).collect();
    assert_eq!(restored, [27]);
    let failed: Vec<u32> = card.did_not_help.iter().map(|i| i.line_start).collect();
    assert!(failed.contains(&22) && failed.contains(&24), "{failed:?}");
    let ruled_out: Vec<u32> = card.ruled_out.iter().map(|i| i.line_start).collect();
    assert_eq!(ruled_out, [21]);
    let ttd = card.time_to_detect.expect("time to detect");
    assert_eq!((ttd.minutes, ttd.from_line, ttd.to_line), (6, 18, 19));
    let ttm = card.time_to_mitigate.expect("time to mitigate");
    assert_eq!((ttm.minutes, ttm.from_line, ttm.to_line), (37, 19, 27));
    assert_eq!(card.trigger_class, TriggerClass::DeployConfig);
    assert_eq!(card.remediation_class, RemediationClass::Rollback);
    let summary = card.summary.as_ref().expect("a summary");
    assert!(
        summary.text.starts_with("Public traffic"),
        "{}",
        summary.text
    );
}

#[test]
fn prose_outcomes_and_uuid_names() {
    use Outcome::*;
    use StepKind::*;
    let name = "5f0c2a9e-7d41-4b8a-9c3e-2e6f1a0b7c55.md";
    let incident = sample(name);
    // A UUID file name keeps its digits.
    assert_eq!(incident.title, "5f0c2a9e 7d41 4b8a 9c3e 2e6f1a0b7c55");
    assert_eq!(at_line(&incident, 1).0, Summary);
    assert_eq!(at_line(&incident, 5), (Investigation, Some(RuledOut)));
    assert_eq!(at_line(&incident, 8), (Action, Some(DidNotHelp)));
    assert_eq!(at_line(&incident, 11), (Investigation, Some(Confirmed)));
    assert_eq!(at_line(&incident, 15), (Mitigation, Some(Helped)));
    let card = &incident.card;
    assert_eq!(card.trigger_class, TriggerClass::CertificateSecret);
    assert_eq!(card.remediation_class, RemediationClass::RestartFailover);
    assert!(!card.did_not_help.is_empty() && !card.ruled_out.is_empty());
}

#[test]
fn every_sample_has_a_card_with_classes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../corpus-samples");
    let mut checked = 0;
    let mut classified = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if precedent_parse::Format::of(&name).is_none() || precedent_parse::is_furniture(&name) {
            continue;
        }
        let incident = parse_file(&name, &path, &ParseOptions::default())
            .incident
            .unwrap();
        checked += 1;
        let card = &incident.card;
        for item in card.restored_by.iter().chain(&card.did_not_help) {
            let step = incident
                .steps
                .iter()
                .find(|s| s.id == item.step_id)
                .unwrap();
            assert_eq!(
                (step.line_start, step.line_end),
                (item.line_start, item.line_end)
            );
        }
        if card.trigger_class != TriggerClass::Unknown {
            classified += 1;
        }
    }
    assert!(checked >= 28, "{checked} samples");
    assert!(
        classified * 10 >= checked * 8,
        "{classified} of {checked} classified"
    );
}

/// A plain-text export whose headings were lost: the template's own instructions mark where the
/// follow-ups begin, an imperative list item is an action item wherever it stands, a hypothesis
/// given as the reason for an act is the act, and a completion row credits the work it completes.
#[test]
fn plain_text_without_headings_reads_by_template_and_wording() {
    use Outcome::*;
    use StepKind::*;
    let text = "\
The queue workers of the billing service stopped for two hours after a kernel update.

All times are in UTC.
• 09:02 first alert about billing jobs piling up.
• 09:20 workers are determined to be stuck. Suspecting a bad worker image, the worker pool is restarted.
• 09:31 This does not resolve the issue, the jobs stay queued.
• 09:40 we now know that there is nothing on the hosts preventing the workers from starting.
• 09:55 Started replacing the worker hosts with hosts on the previous kernel.
• 10:40 Worker host replacement completed
• 10:41 Queue depth keeps growing for a few minutes
• 11:05 All systems verified operational

Where did we get lucky?
• the backlog fit in the queue's retention

Explicit next steps to prevent this from happening again as much as possible, with tasks linked for every step.

NOTE: Please add the #wikimedia-incident Phabricator project to these follow-up tasks and move them.
• Pin the kernel version of worker hosts
• Add an alert on queue depth
";
    let parsed = precedent_parse::parse(
        "billing-workers.txt",
        text.as_bytes(),
        &ParseOptions::default(),
    );
    let incident = parsed.incident.expect("parses");
    let check = |line: u32, kind: StepKind, outcome: Option<Outcome>| {
        assert_eq!(at_line(&incident, line), (kind, outcome), "line {line}");
    };
    check(5, Action, Some(DidNotHelp)); // the restart, for a suspected bad image
    check(7, Investigation, Some(RuledOut)); // nothing on the hosts prevents it
    check(8, Mitigation, Some(Helped)); // the replacement that "completed" before recovery
    check(16, Other, None); // the template's instruction
    check(18, Other, None); // the template's note
    check(19, FollowUp, None);
    check(20, FollowUp, None);
    let next_steps = incident
        .steps
        .iter()
        .find(|s| s.line_start == 19)
        .expect("a step at line 19");
    assert_eq!(next_steps.heading_path, ["Next steps"], "{next_steps:?}");
}

/// A short line right above a list of alert rows introduces them: it is not glued to the
/// paragraph above it (a blank line apart), however short it is.
#[test]
fn a_short_line_over_a_list_stays_with_the_list() {
    let text = "\
The primary database lost its volume at 09:12 and writes stopped for every tenant.

About 4000 requests failed with a 503 status over the next twenty minutes

PagerDuty alert on 'API error rate above five percent'
• 09:14: PagerDuty reports: CRITICAL - API error rate above 5 percent on the api pool
• 09:31: PagerDuty reports: RECOVERY - API error rate back under 1 percent on the api pool
";
    let parsed = precedent_parse::parse("alerts.txt", text.as_bytes(), &ParseOptions::default());
    let incident = parsed.incident.expect("parses");
    let intro = incident
        .steps
        .iter()
        .find(|s| s.line_start <= 5 && 5 <= s.line_end)
        .expect("a step covers line 5");
    assert_eq!(intro.line_start, 5, "{intro:?}");
    assert_eq!(intro.kind, StepKind::Detection, "{intro:?}");
    let (impact, _) = at_line(&incident, 3);
    assert_eq!(impact, StepKind::Impact);
}
