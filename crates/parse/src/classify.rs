//! Deciding what a step is about: from its headings when they say, from its wording otherwise;
//! and what came of it, from the cues writers use ("ruled out", "did not help", "fixed it").

use std::sync::LazyLock;

use precedent_core::{Outcome, StepKind};
use regex::{Regex, RegexSet};

/// What a heading says about the section under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeadingKind {
    /// The section holds steps of this kind.
    Kind(StepKind),
    /// A timeline: each entry is its own step, classified by its wording.
    Timeline,
    /// A narrative ("What happened"): each paragraph classified by its wording, `summary` when
    /// the wording says nothing.
    Narrative,
}

/// Heading phrases, most specific first. Matched as substrings of the lowercased heading.
const HEADINGS: &[(&str, HeadingKind)] = {
    use HeadingKind::{Kind, Narrative, Timeline};
    use StepKind::*;
    &[
        ("root cause", Kind(RootCause)),
        ("contributing factor", Kind(RootCause)),
        ("five whys", Kind(RootCause)),
        ("5 whys", Kind(RootCause)),
        ("lead-up", Kind(RootCause)),
        ("leadup", Kind(RootCause)),
        ("trigger", Kind(RootCause)),
        ("action item", Kind(FollowUp)),
        ("actionable", Kind(FollowUp)),
        ("follow-up", Kind(FollowUp)),
        ("follow up", Kind(FollowUp)),
        ("followup", Kind(FollowUp)),
        ("review action", Kind(FollowUp)),
        ("corrective", Kind(FollowUp)),
        ("prevention", Kind(FollowUp)),
        ("preventive", Kind(FollowUp)),
        ("next step", Kind(FollowUp)),
        ("remediation item", Kind(FollowUp)),
        ("improvement", Kind(FollowUp)),
        ("what can be improved", Kind(FollowUp)),
        ("todo", Kind(FollowUp)),
        ("to do", Kind(FollowUp)),
        ("tasks", Kind(FollowUp)),
        ("lesson", Kind(Lesson)),
        ("learn", Kind(Lesson)),
        ("went well", Kind(Lesson)),
        ("went wrong", Kind(Lesson)),
        ("went poorly", Kind(Lesson)),
        ("went badly", Kind(Lesson)),
        ("didn't go", Kind(Lesson)),
        ("lucky", Kind(Lesson)),
        ("takeaway", Kind(Lesson)),
        ("how'd we do", Kind(Lesson)),
        ("how did we do", Kind(Lesson)),
        ("retrospective", Kind(Lesson)),
        ("reflection", Kind(Lesson)),
        ("time to detect", Kind(Impact)),
        ("time to detection", Kind(Impact)),
        ("time to repair", Kind(Impact)),
        ("time to resolve", Kind(Impact)),
        ("time to recover", Kind(Impact)),
        ("stats", Kind(Impact)),
        ("impact", Kind(Impact)),
        ("fault", Kind(Impact)),
        ("severity", Kind(Impact)),
        ("affected", Kind(Impact)),
        ("detection", Kind(Detection)),
        ("detected", Kind(Detection)),
        ("identified", Kind(Detection)),
        ("symptom", Kind(Detection)),
        ("alert", Kind(Detection)),
        ("how we found", Kind(Detection)),
        ("investigation", Kind(Investigation)),
        ("investigating", Kind(Investigation)),
        ("diagnosis", Kind(Investigation)),
        ("debugging", Kind(Investigation)),
        ("troubleshooting", Kind(Investigation)),
        ("hypothes", Kind(Investigation)),
        ("analysis", Kind(Investigation)),
        ("resolution", Kind(Mitigation)),
        ("recovery", Kind(Mitigation)),
        ("mitigation", Kind(Mitigation)),
        ("remediation", Kind(Mitigation)),
        ("workaround", Kind(Mitigation)),
        ("restoration", Kind(Mitigation)),
        ("resolved", Kind(Mitigation)),
        ("the fix", Kind(Mitigation)),
        ("response", Kind(Action)),
        ("repair", Kind(Action)),
        ("actions taken", Kind(Action)),
        ("what we did", Kind(Action)),
        ("timeline", Timeline),
        ("key events", Timeline),
        ("chronology", Timeline),
        ("sequence of events", Timeline),
        ("events", Timeline),
        ("incident log", Timeline),
        ("cause", Kind(RootCause)),
        ("why", Kind(RootCause)),
        ("context", Kind(RootCause)),
        ("summary", Kind(Summary)),
        ("overview", Kind(Summary)),
        ("tl;dr", Kind(Summary)),
        ("tldr", Kind(Summary)),
        ("abstract", Kind(Summary)),
        ("introduction", Kind(Summary)),
        ("description", Kind(Summary)),
        ("background", Kind(Summary)),
        ("what happened", Narrative),
        ("narrative", Narrative),
        ("details", Narrative),
        ("story", Narrative),
        ("attendee", Kind(Other)),
        ("atendee", Kind(Other)),
        ("responders", Kind(Other)),
        ("participants", Kind(Other)),
        ("related", Kind(Other)),
        ("references", Kind(Other)),
        ("links", Kind(Other)),
        ("appendix", Kind(Other)),
        ("glossary", Kind(Other)),
        ("supporting", Kind(Other)),
    ]
};

/// What `heading` says about its section, if anything.
pub(crate) fn heading_kind(heading: &str) -> Option<HeadingKind> {
    let lower = heading.to_lowercase();
    HEADINGS
        .iter()
        .find(|(phrase, _)| lower.contains(phrase))
        .map(|&(_, kind)| kind)
}

/// Wording cues per kind. Each match scores the kind's weight.
static CUES: LazyLock<Vec<(StepKind, f32, Regex)>> = LazyLock::new(|| {
    use StepKind::*;
    let cue = |kind, weight, pattern: &str| {
        (
            kind,
            weight,
            Regex::new(&ascii_boundaries(&format!("(?i){pattern}"))).expect("cue pattern compiles"),
        )
    };
    vec![
        cue(
            Mitigation,
            1.5,
            r"\b(?:roll(?:ed|ing)? ?back|reverted|reverting|restored|recovered|mitigated|mitigate|resolved|back to normal|returned to normal|back online|back up|fully operational|service (?:was|is) (?:restored|back)|recovery (?:was )?complete|failed over|fail(?:ed)? ?over to|workaround|error rates? (?:dropped|recovered|returned)|fixed)\b",
        ),
        cue(
            Action,
            1.0,
            r"\b(?:restart\w*|reboot\w*|redeploy\w*|deploy(?:ed|s|ing)|scal(?:ed|es|ing)|increas(?:ed|es|ing)|decreas(?:ed|es|ing)|rais(?:ed|es|ing)|lower(?:ed|s|ing)|ran|runs|applie[sd]|applying|disabl(?:ed|es|ing)|enabl(?:ed|es|ing)|kill(?:ed|s|ing)|drain(?:ed|s|ing)|cordon\w*|remov(?:ed|es|ing)|add(?:ed|s|ing)|push(?:ed|es|ing)|trie[sd]|trying|attempt\w*|manually|bump(?:ed|s)|upgrad(?:ed|es|ing)|downgrad\w*|rotat(?:ed|es|ing)|renew(?:ed|s|ing)|replac(?:ed|es|ing)|mov(?:ed|es|ing)|migrat(?:ed|es|ing)|purg(?:ed|es|ing)|flush(?:ed|es|ing)|clear(?:ed|s|ing)|delet(?:ed|es|ing)|block(?:ed|s|ing)|bann?(?:ed|s|ing)|throttl\w*|paus(?:ed|es|ing)|stopp?(?:ed|s|ing)|switch(?:ed|es|ing)|trigger(?:ed|s|ing)|re-?ran|re-?run\w*|forc(?:ed|es|ing)|patch\w*|fail(?:ed|s|ing)? ?over)\b",
        ),
        cue(
            Investigation,
            1.2,
            r"\b(?:suspect\w*|hypothes\w*|investigat\w*|look(?:s|ed|ing)? (?:at|into)|check(?:s|ed|ing)?|noticed|found that|figured out|turned out|appear(?:s|ed) to|seem(?:s|ed) to|we thought|might be|could be|ruled out|rule out|debug\w*|logs? show(?:ed|s)?|dug into|digging|traced|narrowed|confirmed|identified|determined|realized|realised|points? out|pointed out|root cause|culprit|red herring|theory|examin\w*|inspect\w*|verified|profil\w*)\b",
        ),
        cue(
            Detection,
            1.2,
            r"\b(?:alert(?:ed|s|ing)?|paged|page[sd]? |pager|on-?call|reported|reports|noticed|monitoring|icinga|nagios|pingdom|prometheus|grafana|datadog|pagerduty|opsgenie|detected|notified|spike[sd]?|elevated|start(?:ed|s) (?:to )?(?:fail|return|throw|time)\w*|began (?:to )?\w+ing|errors? rates?|5\d\d(?:s| errors)?|timeouts?|latency|unreachable|went down|is down|was down|became unavailable|symptom\w*|complain\w*)\b",
        ),
        cue(
            RootCause,
            1.3,
            r"\b(?:caused by|root cause|because|due to|triggered by|the cause|result(?:ed)? of|led to|contribut\w+|underlying|was the reason|misconfigur\w*|bug in|regression|race condition|expired|exhaust\w*|leak\w*|overflow\w*)\b",
        ),
        cue(
            Impact,
            1.1,
            r"\b(?:users? (?:were|was) (?:unable|not able)|unavailable|outage|affected|downtime|customers?|degraded|impact\w*|unable to|could not|couldn't|lost|data loss|minutes of|hours of|for \d+ (?:minutes|hours))\b",
        ),
        cue(
            FollowUp,
            1.3,
            r"\b(?:we will|we'll|we are going to|will be|action items?|should|need to|needs to|todo|plan to|going forward|to prevent|in the future|ticket|follow[- ]?up|T\d{5,7}|[A-Z]{2,10}-\d{1,6})\b",
        ),
        cue(
            Lesson,
            1.5,
            r"\b(?:went well|went wrong|went poorly|lessons?|learn(?:ed|t)|got lucky|luckily|in hindsight|takeaway|we were lucky|fortunately|unfortunately)\b",
        ),
    ]
});

/// The kind the wording of `text` points to, if any cue matches. `allowed` restricts the
/// answer (timeline entries only become detection, investigation, action or mitigation).
pub(crate) fn wording_kind(text: &str, allowed: &[StepKind]) -> Option<StepKind> {
    let mut best: Option<(StepKind, f32)> = None;
    for (kind, weight, regex) in CUES.iter() {
        if !allowed.contains(kind) {
            continue;
        }
        let hits = regex.find_iter(text).take(8).count();
        if hits == 0 {
            continue;
        }
        let score = weight * hits as f32;
        if best.is_none_or(|(_, s)| score > s) {
            best = Some((*kind, score));
        }
    }
    best.map(|(kind, _)| kind)
}

/// Kinds a timeline entry can take from its wording.
pub(crate) const TIMELINE_KINDS: [StepKind; 4] = [
    StepKind::Detection,
    StepKind::Investigation,
    StepKind::Action,
    StepKind::Mitigation,
];

/// Kinds a paragraph in an unlabelled section can take.
pub(crate) const PROSE_KINDS: [StepKind; 8] = [
    StepKind::Mitigation,
    StepKind::Action,
    StepKind::Investigation,
    StepKind::Detection,
    StepKind::RootCause,
    StepKind::Impact,
    StepKind::FollowUp,
    StepKind::Lesson,
];

static OUTCOMES: LazyLock<(RegexSet, [Outcome; 4])> = LazyLock::new(|| {
    let patterns = [
        // did not help: checked first, its phrases contain the others' words.
        r"(?i)\b(?:did ?n[o']t (?:help|work|fix|resolve|improve|change|make a difference|solve)|didn't (?:help|work|fix|resolve|improve|change|solve)|no (?:noticeable |visible |measurable )?(?:effect|improvement|change|difference)|had no (?:effect|impact)|without (?:success|effect|any effect)|to no avail|unsuccessful(?:ly)?|still (?:failing|broken|down|erroring|seeing)|(?:problem|issue|errors?) persisted|made (?:it|things|the problem) worse|wasn't enough|was not enough|was not sufficient|not sufficient|insufficient|in vain)\b",
        r"(?i)\b(?:rul(?:ed?|ing) (?:(?:it|this|that|them|those) )?out|was ?n[o']t the (?:cause|problem|issue|culprit)|wasn't the (?:cause|problem|issue|culprit)|not (?:the|a) (?:cause|culprit)|red herring|false (?:lead|alarm|positive)|turned out not to|no evidence (?:of|that)|disproved|eliminated|unrelated|(?:looked|looks|was|were|is|are|both|all|seemed) (?:fine|normal|healthy|ok|correct|unchanged)|nothing (?:wrong|unusual|suspicious))\b",
        r"(?i)\b(?:turned out to be|turns out|confirmed|(?:was|is) indeed|identified (?:the|as|that)|found the (?:cause|culprit|problem|issue|bug)|root cause (?:was|is)|pinpointed|verified that|proved to be|traced (?:it|the \w+) (?:back )?to|the culprit)\b",
        r"(?i)\b(?:fixed (?:it|the|this)|this fixed|which fixed|resolved (?:it|the|this)|which resolved|(?:that|this|which) (?:helped|worked|did the trick|solved)|restored|recovered|mitigated|back to normal|returned to normal|error rates? (?:dropped|fell|recovered)|succeeded|successfully|(?:started|began) (?:to )?(?:recover|work)|brought (?:it|\w+) back|cleared (?:up|the))\b",
    ];
    (
        RegexSet::new(patterns.map(ascii_boundaries)).expect("outcome patterns compile"),
        [
            Outcome::DidNotHelp,
            Outcome::RuledOut,
            Outcome::Confirmed,
            Outcome::Helped,
        ],
    )
});

static TENTATIVE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&ascii_boundaries(r"(?i)\b(?:suspect\w*|hypothes\w*|thought|theory|maybe|might|could be|possibly|tried|try|attempt\w*|wonder\w*|guess\w*)\b"))
        .expect("tentative pattern compiles")
});

/// `\b` as an ASCII word boundary: Unicode boundaries make the regex engine fall back to its
/// slowest matcher on any non-ASCII text, and the cues are English words.
pub(crate) fn ascii_boundaries(pattern: &str) -> String {
    pattern.replace(r"\b", r"(?-u:\b)")
}

/// What the text says came of a hypothesis or an action; `None` for other kinds.
pub(crate) fn outcome(kind: StepKind, text: &str) -> Option<Outcome> {
    if !matches!(
        kind,
        StepKind::Investigation | StepKind::Action | StepKind::Mitigation
    ) {
        return None;
    }
    let (set, outcomes) = &*OUTCOMES;
    let matches = set.matches(text);
    let mut found = outcomes
        .iter()
        .zip(0..)
        .filter(|(_, i)| matches.matched(*i))
        .map(|(o, _)| *o);
    if let Some(first) = found.next() {
        // A mitigation that "recovered" says nothing new; keep outcomes where they inform.
        return Some(first);
    }
    if matches!(kind, StepKind::Investigation | StepKind::Action) && TENTATIVE.is_match(text) {
        return Some(Outcome::Unknown);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use StepKind::*;

    #[test]
    fn headings_map_to_kinds() {
        let check = |heading: &str, expected: Option<HeadingKind>| {
            assert_eq!(heading_kind(heading), expected, "{heading:?}");
        };
        check("Root Causes", Some(HeadingKind::Kind(RootCause)));
        check("Contributing Factors", Some(HeadingKind::Kind(RootCause)));
        check("Action Items", Some(HeadingKind::Kind(FollowUp)));
        check("Actionables", Some(HeadingKind::Kind(FollowUp)));
        check("Lessons Learned", Some(HeadingKind::Kind(Lesson)));
        check("Where did we get lucky?", Some(HeadingKind::Kind(Lesson)));
        check("Impact", Some(HeadingKind::Kind(Impact)));
        check("Detection", Some(HeadingKind::Kind(Detection)));
        check("Diagnosis", Some(HeadingKind::Kind(Investigation)));
        check("Response", Some(HeadingKind::Kind(Action)));
        check(
            "Resolution and Recovery",
            Some(HeadingKind::Kind(Mitigation)),
        );
        check("Timeline", Some(HeadingKind::Timeline));
        check("Key events", Some(HeadingKind::Timeline));
        check("Incident summary", Some(HeadingKind::Kind(Summary)));
        check("Five Whys", Some(HeadingKind::Kind(RootCause)));
        check("Leadup", Some(HeadingKind::Kind(RootCause)));
        check("Follow-up tasks", Some(HeadingKind::Kind(FollowUp)));
        check("ADFS Outage", None);
    }

    #[test]
    fn wording_picks_a_kind() {
        let check = |text: &str, expected: Option<StepKind>| {
            assert_eq!(wording_kind(text, &PROSE_KINDS), expected, "{text:?}");
        };
        check(
            "We rolled back the release and service was restored.",
            Some(Mitigation),
        );
        check(
            "Icinga alerted on elevated 5xx error rates.",
            Some(Detection),
        );
        check(
            "We suspected the load balancer and checked its logs.",
            Some(Investigation),
        );
        check(
            "The outage was caused by an expired certificate.",
            Some(RootCause),
        );
        check(
            "We will add monitoring for certificate expiry.",
            Some(FollowUp),
        );
        check("Nothing to see.", None);
        assert_eq!(
            wording_kind("Restarted the pods", &TIMELINE_KINDS),
            Some(Action)
        );
    }

    #[test]
    fn outcomes_from_cues() {
        let check = |kind, text: &str, expected: Option<Outcome>| {
            assert_eq!(outcome(kind, text), expected, "{text:?}");
        };
        check(
            Action,
            "Restarting the pods did not help.",
            Some(Outcome::DidNotHelp),
        );
        check(
            Action,
            "We restarted the pods, which had no effect.",
            Some(Outcome::DidNotHelp),
        );
        check(
            Investigation,
            "We suspected DNS but ruled it out.",
            Some(Outcome::RuledOut),
        );
        check(
            Investigation,
            "The database looked healthy.",
            Some(Outcome::RuledOut),
        );
        check(
            Investigation,
            "It turned out to be an expired certificate.",
            Some(Outcome::Confirmed),
        );
        check(Action, "Rolling back fixed it.", Some(Outcome::Helped));
        check(
            Mitigation,
            "Failing over restored service.",
            Some(Outcome::Helped),
        );
        check(
            Investigation,
            "We suspected the cache.",
            Some(Outcome::Unknown),
        );
        check(Investigation, "Logs were collected.", None);
        check(RootCause, "Restarting did not help.", None);
    }
}
