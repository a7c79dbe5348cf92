//! The incident card: the fields a responder reads first, each taken from a step and citing its
//! lines, and the trigger and remediation classes, from deterministic rules over the root cause
//! and mitigation steps (the taxonomy is documented on [`TriggerClass`] and
//! [`RemediationClass`]).

use std::sync::LazyLock;

use chrono::NaiveDateTime;
use precedent_core::{
    At, Card, CardItem, Outcome, RemediationClass, Span, Step, StepKind, TriggerClass,
};
use regex::Regex;

use crate::classify::ascii_classes;

/// Card texts are cut to about this many bytes.
const ITEM_BYTES: usize = 240;
/// At most this many items in a list field.
const MAX_ITEMS: usize = 4;

/// Builds the card of an incident from its steps.
pub(crate) fn build(steps: &[Step], summary: Option<&str>) -> Card {
    let item = |step: &Step| CardItem {
        text: first_sentences(crate::classify::body(&step.text), ITEM_BYTES),
        step_id: step.id.clone(),
        line_start: step.line_start,
        line_end: step.line_end,
    };
    let summaries = || steps.iter().filter(|s| s.kind == StepKind::Summary);
    let summary_step = summaries()
        .find(|s| s.text.split_whitespace().count() >= 8)
        .or_else(|| summaries().next());
    let summary = summary_step.map(|s| CardItem {
        text: first_sentences(summary.unwrap_or(&s.text), ITEM_BYTES),
        ..item(s)
    });
    let causes: Vec<&Step> = steps
        .iter()
        .filter(|s| s.kind == StepKind::RootCause)
        .collect();
    let trigger = causes
        .iter()
        .find(|s| s.at.is_some())
        .or_else(|| causes.iter().find(|s| TRIGGER_WORDS.is_match(&s.text)))
        .copied();
    let root_cause = causes
        .iter()
        .find(|s| {
            ROOT_CAUSE_WORDS.is_match(&s.text)
                && Some(s.id.clone()) != trigger.map(|t| t.id.clone())
        })
        .or_else(|| causes.iter().find(|s| s.at.is_none()))
        .or(causes.first())
        .copied()
        .or_else(|| {
            steps.iter().find(|s| {
                s.kind == StepKind::Investigation && s.outcome == Some(Outcome::Confirmed)
            })
        });
    let with = |kind: StepKind, outcome: Outcome| -> Vec<CardItem> {
        steps
            .iter()
            .filter(|s| s.kind == kind && s.outcome == Some(outcome))
            .take(MAX_ITEMS)
            .map(item)
            .collect()
    };
    let restored_by = with(StepKind::Mitigation, Outcome::Helped);
    let did_not_help = with(StepKind::Action, Outcome::DidNotHelp);
    let ruled_out = with(StepKind::Investigation, Outcome::RuledOut);

    let (time_to_detect, time_to_mitigate) = durations(steps);

    // The summary speaks for the cause and the fix when no step of their own does.
    let summary_text: Option<&str> = summary_step.map(|s| s.text.as_str());
    let mut cause_text: Vec<&str> = trigger
        .into_iter()
        .chain(root_cause)
        .map(|s| s.text.as_str())
        .collect();
    if cause_text.is_empty() {
        cause_text.extend(summary_text);
    }
    let mut fix_text: Vec<&str> = steps
        .iter()
        .filter(|s| s.kind == StepKind::Mitigation)
        .map(|s| s.text.as_str())
        .collect();
    fix_text.extend(summary_text.filter(|t| RESTORED.is_match(t)));
    let trigger_class = trigger_class(&cause_text);
    let remediation_class = remediation_class(&fix_text);

    Card {
        summary,
        trigger: trigger.map(item),
        root_cause: root_cause.map(item),
        restored_by,
        did_not_help,
        ruled_out,
        time_to_detect,
        time_to_mitigate,
        trigger_class,
        remediation_class,
    }
}

fn regex(pattern: &str) -> Regex {
    Regex::new(&ascii_classes(pattern)).expect("card pattern compiles")
}

static RESTORED: LazyLock<Regex> = LazyLock::new(|| {
    regex(r"(?i)\b(?:restor\w+|recover\w*|resolv\w+|mitigat\w+|fixed|rolled back|revert\w*)\b")
});

static TRIGGER_WORDS: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?i)\b(?:trigger\w*|deploy\w*|release[ds]?|change[ds]?|push(?:ed)?|upgrade[ds]?|migration|expired|rolled out|merged)\b",
    )
});

static ROOT_CAUSE_WORDS: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?i)\b(?:root cause|caused by|cause was|due to|because|the culprit|core issue|the problem was|the issue was)\b",
    )
});

/// Minutes from the first symptom (or the trigger) to detection, and from detection to the last
/// mitigation that helped, when the timeline gives both ends a date and time.
fn durations(steps: &[Step]) -> (Option<Span>, Option<Span>) {
    let stamped: Vec<(&Step, NaiveDateTime)> = steps
        .iter()
        .filter_map(|s| Some((s, when(s.at.as_ref()?)?)))
        .collect();
    let first = |kinds: &[StepKind]| stamped.iter().find(|(s, _)| kinds.contains(&s.kind));
    let start = first(&[StepKind::RootCause]);
    let detected = first(&[StepKind::Detection]);
    let mitigated = stamped
        .iter()
        .rfind(|(s, _)| s.kind == StepKind::Mitigation);
    let span = |a: &(&Step, NaiveDateTime), b: &(&Step, NaiveDateTime)| {
        let minutes = (b.1 - a.1).num_minutes();
        (0..=60 * 24 * 30).contains(&minutes).then_some(Span {
            minutes,
            from_line: a.0.line_start,
            to_line: b.0.line_start,
        })
    };
    let ttd = match (start, detected) {
        (Some(a), Some(b)) => span(a, b),
        _ => None,
    };
    let ttm = match (detected.or(start), mitigated) {
        (Some(a), Some(b)) => span(a, b),
        _ => None,
    };
    (ttd, ttm)
}

fn when(at: &At) -> Option<NaiveDateTime> {
    Some(at.date?.and_time(at.time?))
}

/// Trigger-class rules: each class scores its cue matches; the trigger's text counts before the
/// root cause's (it comes first in `texts`), ties go to the earlier class in this table.
static TRIGGER_RULES: LazyLock<Vec<(TriggerClass, Regex)>> = LazyLock::new(|| {
    use TriggerClass::*;
    vec![
        (
            CertificateSecret,
            regex(
                r"(?i)\b(?:certificates?|certs?|x509|tls|ssl|expir\w+|secrets?|credentials?|passwords?|tokens?|api keys?|key rotation|rotated)\b",
            ),
        ),
        (
            OperatorError,
            regex(
                r"(?i)\b(?:human error|operator error|typo|accidental(?:ly)?|mistaken(?:ly)?|by mistake|wrong (?:command|host|cluster|server|database|environment)|manually (?:ran|deleted|removed|ran)|fat[- ]finger\w*)\b",
            ),
        ),
        (
            DnsNetwork,
            regex(
                r"(?i)\b(?:dns|bgp|network\w*|rout(?:e|es|ing)|load ?balanc\w+|lvs|partition\w*|packet\w*|firewall\w*|cdn|subnets?|ip address\w*|vpn|rp_filter|latency between|connectivity)\b",
            ),
        ),
        (
            Capacity,
            regex(
                r"(?i)\b(?:disk (?:space|full|filled)|filled up|full|out of (?:memory|disk|space|capacity)|oom\w*|exhaust\w*|capacity|quotas?|limits?|connection pool|too many (?:connections|requests)|cpu|memory|overload\w*|saturat\w*|inodes?|traffic spike|load spike|ran out)\b",
            ),
        ),
        (
            DatabaseStorage,
            regex(
                r"(?i)\b(?:databases?|db|mysql|postgres\w*|replica\w*|replication|storage|elasticsearch|opensearch|redis|kafka|cassandra|mongo\w*|deadlock\w*|schema|index(?:es)? corrupt\w*|etcd)\b",
            ),
        ),
        (
            Dependency,
            regex(
                r"(?i)\b(?:third[- ]party|upstream|vendors?|dependenc\w+|docker ?hub|github|npm|registry|external (?:service|provider|api)|supplier|saas|provider outage)\b",
            ),
        ),
        (
            ProviderHardware,
            regex(
                r"(?i)\b(?:hardware|power|cooling|racks?|disk failure|failed disk|nic|host failure|hypervisor|aws|gcp|azure|ec2|cloud provider|data ?cent(?:er|re)|kernel)\b",
            ),
        ),
        (
            CodeBug,
            regex(
                r"(?i)\b(?:bugs?|regression|race condition|null pointer|exception|memory leak|leak\w*|overflow\w*|regex\w*|off-by-one|infinite loop|defect|crash\w*|corruption)\b",
            ),
        ),
        (
            DeployConfig,
            regex(
                r"(?i)\b(?:deploy\w*|releases?|released|config\w*|changes?|rollout|rolled out|migration|upgrade\w*|puppet|merged?|pull request|pr|feature flag|terraform|helm|scap)\b",
            ),
        ),
    ]
});

/// The trigger class of an incident from its trigger and root cause texts.
pub(crate) fn trigger_class(texts: &[&str]) -> TriggerClass {
    best(&TRIGGER_RULES, texts).unwrap_or(TriggerClass::Unknown)
}

static REMEDIATION_RULES: LazyLock<Vec<(RemediationClass, Regex)>> = LazyLock::new(|| {
    use RemediationClass::*;
    vec![
        (
            Rollback,
            regex(
                r"(?i)\b(?:roll(?:ed|ing)? ?back|rollbacks?|revert\w*|downgrad\w*|changed back|back to (?:the )?(?:previous|last known good|old))\b",
            ),
        ),
        (
            SelfResolved,
            regex(
                r"(?i)\b(?:self[- ]resolv\w+|resolved (?:itself|on its own|by itself)|recovered (?:on its own|by itself)|no action (?:was )?(?:taken|needed|required))\b",
            ),
        ),
        (
            RestartFailover,
            regex(
                r"(?i)\b(?:restart\w*|reboot\w*|fail(?:ed|ing)? ?over|failovers?|recreat\w*|re-?creat\w*|redeploy\w*|uncordon\w*|replaced (?:the )?(?:node|host|instance|pod)s?|new node|promot\w+)\b",
            ),
        ),
        (
            ScaleUp,
            regex(
                r"(?i)\b(?:scal(?:ed|ing) (?:up|out)|scaled|add(?:ed|ing)? (?:more )?(?:nodes|capacity|replicas|servers|instances|memory|disk)|increas\w+|resiz\w+|bigger|more (?:nodes|capacity|memory|disk)|expand\w*|extend\w*)\b",
            ),
        ),
        (
            TrafficShift,
            regex(
                r"(?i)\b(?:drain\w*|depool\w*|repool\w*|rerout\w*|shift\w* traffic|traffic (?:was )?(?:shifted|moved|redirected)|block\w*|rate[- ]limit\w*|throttl\w*|dns change|moved traffic|cordon\w*)\b",
            ),
        ),
        (
            SoftwareFix,
            regex(
                r"(?i)\b(?:hot-?fix\w*|patch\w*|fix (?:was )?(?:deployed|released|merged|shipped)|deployed a fix|code (?:change|fix)|pull request|released? (?:a |version )|new version|bug ?fix)\b",
            ),
        ),
        (
            ConfigFix,
            regex(
                r"(?i)\b(?:config\w*|settings?|flags?|parameters?|limits?|timeouts?|password (?:was )?(?:restored|changed)|disabl\w+|enabl\w+|set (?:to|the))\b",
            ),
        ),
    ]
});

/// The remediation class of an incident from the texts of its mitigations.
pub(crate) fn remediation_class(texts: &[&str]) -> RemediationClass {
    best(&REMEDIATION_RULES, texts).unwrap_or(RemediationClass::Undisclosed)
}

fn best<C: Copy>(rules: &[(C, Regex)], texts: &[&str]) -> Option<C> {
    let mut best: Option<(C, f32)> = None;
    for (class, regex) in rules {
        let score: f32 = texts
            .iter()
            .enumerate()
            .map(|(i, t)| regex.find_iter(t).take(4).count() as f32 / (1.0 + i as f32))
            .sum();
        if score > 0.0 && best.is_none_or(|(_, s)| score > s) {
            best = Some((*class, score));
        }
    }
    best.map(|(class, _)| class)
}

/// The first sentence or two of `text`, within about `max` bytes, on one line.
fn first_sentences(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.len() <= max {
        return flat;
    }
    let end = flat.floor_char_boundary(max);
    let cut = flat[..end]
        .rfind(". ")
        .filter(|&i| i > max / 3)
        .map(|i| i + 1)
        .or_else(|| flat[..end].rfind(' '))
        .unwrap_or(end);
    format!("{}…", flat[..cut].trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_classes_from_cause_text() {
        let check = |text: &str, expected: TriggerClass| {
            assert_eq!(trigger_class(&[text]), expected, "{text:?}");
        };
        check(
            "The TLS certificate for the API expired.",
            TriggerClass::CertificateSecret,
        );
        check(
            "A config push with a bad regex was deployed.",
            TriggerClass::DeployConfig,
        );
        check(
            "The disk filled up with debug logs.",
            TriggerClass::Capacity,
        );
        check(
            "An engineer accidentally ran the script against the wrong cluster.",
            TriggerClass::OperatorError,
        );
        check("A BGP route withdrawal.", TriggerClass::DnsNetwork);
        check("Nothing said.", TriggerClass::Unknown);
    }

    #[test]
    fn remediation_classes_from_mitigations() {
        let check = |text: &str, expected: RemediationClass| {
            assert_eq!(remediation_class(&[text]), expected, "{text:?}");
        };
        check("We rolled back the release.", RemediationClass::Rollback);
        check(
            "Restarted the hub pod and service came back.",
            RemediationClass::RestartFailover,
        );
        check(
            "Scaled the cluster up to 12 nodes.",
            RemediationClass::ScaleUp,
        );
        check(
            "Depooled the eqiad datacenter.",
            RemediationClass::TrafficShift,
        );
        check("", RemediationClass::Undisclosed);
    }

    #[test]
    fn sentences_are_cut_on_boundaries() {
        assert_eq!(first_sentences("One.  Two\nthree.", 100), "One. Two three.");
        let long = "First sentence is here and it is long enough. ".repeat(10);
        let cut = first_sentences(&long, 120);
        assert!(cut.len() <= 124 && cut.ends_with('…'), "{cut}");
    }
}
