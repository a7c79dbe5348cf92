//! Deciding what a step is about: from its headings when they say, from its wording otherwise;
//! and what came of it, from the cues writers use ("ruled out", "did not help", "fixed it").

use std::sync::LazyLock;

use precedent_core::{Outcome, StepKind};
use regex::Regex;

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
    if lower.trim_end().ends_with('?') && !LESSON_QUESTION.is_match(&lower) {
        // Template questions ("How many people were involved in the remediation?") name no
        // kind: what is written under them is classified by its wording.
        return None;
    }
    HEADINGS
        .iter()
        .find(|(phrase, _)| lower.contains(phrase))
        .map(|&(_, kind)| kind)
}

static LESSON_QUESTION: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?i)\b(?:lucky|went (?:well|wrong|poorly|badly)|go (?:well|wrong)|learn|could (?:we|have) (?:done|gone) better|improve)",
    )
});

/// Wording cues per kind. Each match scores the kind's weight.
static CUES: LazyLock<Vec<(StepKind, f32, Regex)>> = LazyLock::new(|| {
    use StepKind::*;
    let cue = |kind, weight, pattern: &str| {
        (
            kind,
            weight,
            Regex::new(&ascii_classes(&format!("(?i){pattern}"))).expect("cue pattern compiles"),
        )
    };
    vec![
        cue(
            Mitigation,
            1.5,
            r"\b(?:roll(?:ed|ing|s)? ?back|rollbacks?|revert(?:ed|ing|s)?|restored|restores|recovered|mitigated|mitigate[sd]?|resolved|resolves|back to normal|returned to normal|returns to normal|back online|fully operational|service (?:was|is) (?:restored|back)|recovery (?:was )?complete|failed over|fail(?:ed)? ?over to|workaround|error rates? (?:dropped|recovered|returned)|fixed|fix (?:was )?(?:deployed|applied|rolled out)|this resolved|which resolved|resolving|stabili[sz]ed|changed back|set back|back to (?:the )?(?:previous|last known good|old)|(?:^|\| )(?:recovery|resolution|mitigation|fix):|^(?:the )?(?:recovery|resolution|remediation|mitigation|restoration)(?: efforts?)? (?:involved|included|includes|required|consisted|entailed))\b",
        ),
        cue(
            Action,
            1.25,
            r"\b(?:restart\w*|reboot\w*|redeploy\w*|deploy(?:ed|s|ing)?|scal(?:ed|es|ing)|increas(?:e|ed|es|ing)|decreas(?:ed|es|ing)|rais(?:ed|es|ing)|lower(?:ed|s|ing)|applie[sd]|applying|disabl(?:ed|es|ing)|enabl(?:ed|es|ing)|kill(?:ed|s|ing)|drain(?:ed|s|ing)|cordon\w*|depool\w*|repool\w*|remov(?:ed|es|ing)|add(?:ed|s|ing)|push(?:ed|es|ing)|trie[sd]|trying|attempt\w*|manually|bump(?:ed|s)|upgrad(?:ed|es|ing)|downgrad\w*|rotat(?:ed|es|ing)|renew(?:ed|s|ing)|replac(?:ed|es|ing)|mov(?:ed|es|ing)|migrat(?:ed|es|ing)|purg(?:ed|es|ing)|flush(?:ed|es|ing)|clear(?:ed|s|ing)|delet(?:ed|es|ing)|block(?:ed|s|ing)|bann?(?:ed|s|ing)|throttl\w*|paus(?:ed|es|ing)|stopp?(?:ed|s|ing)|switch(?:ed|es|ing)|re-?ran|re-?run\w*|forc(?:ed|es|ing)|patch\w*|fail(?:ed|s|ing)? ?over|set (?:the|to|up)|marked|changed|configured|rollout|rolled out|uncordon\w*|terminat(?:ed|es|ing)|recreat\w*|re-?creat\w*|provision\w*|resiz\w*|extend\w*|freed|free up|expand\w*|roll-?over|start(?:ed|s)? (?:a|the) (?:full |manual )?\w+)\b",
        ),
        cue(
            Investigation,
            1.2,
            r"\b(?:suspect\w*|hypothes\w*|investigat\w*|look(?:s|ed|ing)? (?:at|into)|check(?:s|ed|ing)?|noticed|found|discover\w*|reveal\w*|figured out|turned out|appear(?:s|ed) to|seem(?:s|ed) to|we thought|might be|could be|ruled out|rule out|debug\w*|logs? (?:from [\w-]+ )?(?:\w+ )?show(?:ed|s|n)?|dug into|digging|traced|narrowed|confirm(?:ed|s)?|identified|determined|realiz\w*|realis\w*|points? out|pointed out|culprit|red herring|theory|examin\w*|inspect\w*|verif(?:y|ied|ies)|profil\w*|conclu\w+|diagnos\w*|observ\w*|it is noted|noted that|analys\w*|analyz\w*|ssh(?:ed)? (?:in)?to|explanation|findings?|chas(?:e|ed|ing)|suggest(?:s|ed|ing)?|(?:which )?means that|indicat(?:es|ed|ing) that|we (?:now )?know|review(?:ed|ing|s)?|attempted to ssh|tries logging)\b",
        ),
        // An attempt to log in or connect is a check of the system, however it is worded
        // ("Attempted to SSH into the node, but it was unresponsive").
        cue(
            Investigation,
            1.6,
            r"\b(?:attempt(?:ed|s|ing)?|tri(?:ed|es)|trying) (?:to )?(?:ssh|log(?:ging)? ?in(?:to)?|login|connect(?:ing)? to|access|reach|curl|ping)\b",
        ),
        cue(
            Detection,
            1.2,
            r"\b(?:alert(?:ed|s|ing)?|paged|page[sd]? |pager|on-?call|reported|reports?|noticed|notices|monitoring|icinga|nagios|pingdom|grafana|datadog|pagerduty|opsgenie|uptime check|detected|notified|spike[sd]?|elevated|start(?:ed|s) (?:to )?(?:fail|return|throw|time)\w*|begins? (?:to )?(?:fail|return|throw|time)\w*|began (?:to )?\w+ing|errors? rates?|5\d\d(?:s| errors)?|timeouts?|timing out|latency|unreachable|went down|is down|was down|goes down|became unavailable|symptom\w*|complain\w*|ticket|customers? (?:report|complain)\w*|users? (?:report|complain)\w*|drops? to|dropped to|notready|crash\w*|failing|unresponsive|not responding|stopped working|inaccessible|no longer|warnings?|warned|alarms?|notices?|not (?:scheduled|running|ready|available|responding|working|loading)|[A-Z][a-z]+(?:[A-Z][a-z]+)+ (?:starts|started|fires|fired|firing|triggered)|(?:^|\| )detection:)\b",
        ),
        cue(
            RootCause,
            1.3,
            r"\b(?:caused by|root cause|because|due to|triggered by|the cause|result(?:ed)? (?:of|in)|led to|contribut\w+|underlying|was the reason|misconfigur\w*|bug in|regression|race condition|expired|exhaust\w*|leak\w*|overflow\w*|core issue|the culprit|culprit pr|no (?:monitoring|alerting|limits?) (?:of|for|on))\b",
        ),
        cue(
            Impact,
            1.1,
            r"\b(?:users? (?:were|was) (?:unable|not able)|unavailable|outage|affected|downtime|degraded|impact\w*|unable to|could not|couldn't|lost|data loss|minutes of|hours of|for \d+ (?:minutes|hours)|no data could)\b",
        ),
        // What the incident did to people and systems: "The incident caused the team to
        // scramble", "Approx. 8000 exceptions thrown over the course of the outage".
        cue(
            Impact,
            1.6,
            r"\b(?:the (?:incident|outage|disruption|downtime) (?:caused|meant|resulted in|led to|left|prevented|forced|cost)|\d[\d,.]*k? (?:\w+[/ ]){0,2}(?:errors|exceptions|failures|requests|users|customers|sessions|jobs|builds|messages|events|orders|payments) (?:were |was )?(?:thrown|failed|affected|lost|dropped|rejected|delayed|impacted))\b",
        ),
        cue(
            FollowUp,
            1.3,
            r"\b(?:we will|we'll|we are going to|will be|action items?|should|need to|needs to|todo|plan to|going forward|to prevent|in the future|follow[- ]?up|T\d{5,7}|[A-Z]{2,10}-\d{1,6}|status: (?:done|todo|open|in progress))\b",
        ),
        cue(
            Lesson,
            1.5,
            r"\b(?:went well|went wrong|went poorly|lessons?|learn(?:ed|t)|got lucky|luckily|in hindsight|takeaway|we were lucky|fortunately|unfortunately|highlighted|overlooked)\b",
        ),
        cue(
            Summary,
            1.4,
            r"\b(?:experienced (?:a|an)|suffered (?:a|an)|there was (?:a|an) (?:\w+ )?(?:outage|incident)|this (?:incident|document|post-?mortem|report) (?:describes|covers|summari[sz]es)|tl;?dr)\b",
        ),
    ]
});

/// The kind the wording of `text` points to, if any cue matches. `allowed` restricts the
/// answer (timeline entries only become detection, investigation, action or mitigation).
pub(crate) fn wording_kind(text: &str, allowed: &[StepKind]) -> Option<StepKind> {
    let kind = best_cue(text, allowed)?;
    // A row that finds something and acts on it is the action ("Issue confirmed. Begin
    // reverting the PRs").
    if kind == StepKind::Investigation
        && allowed == TIMELINE_KINDS
        && CUES
            .iter()
            .any(|(k, _, r)| *k == StepKind::Mitigation && r.is_match(text))
    {
        return Some(StepKind::Mitigation);
    }
    // Likewise a row whose later sentence acts on what the first found ("Giovanni realizes
    // the database could be the root issue. Restarts the database.").
    // The act leads its sentence: "Restarts the database", "Removed the Ingress object".
    if kind == StepKind::Investigation && allowed == TIMELINE_KINDS {
        let acted = later_sentences(text)
            .filter(|sentence| {
                CUES.iter().any(|(k, _, r)| {
                    matches!(k, StepKind::Action | StepKind::Mitigation)
                        && r.find(sentence).is_some_and(|m| m.start() < 24)
                })
            })
            .filter_map(|sentence| best_cue(sentence, allowed))
            .find(|k| matches!(k, StepKind::Action | StepKind::Mitigation));
        if acted.is_some() {
            return acted;
        }
    }
    // A hypothesis given as the reason for an act is the act ("Suspecting network issues,
    // the proxy pod is restarted"; "In an attempt to fix the problem, we deleted ...").
    if kind == StepKind::Investigation {
        let acted = std::iter::once(text.trim())
            .chain(later_sentences(text))
            .filter_map(|sentence| PURPOSE_LEAD.captures(sentence))
            .filter_map(|caps| best_cue(caps.get(1)?.as_str(), allowed))
            .find(|k| matches!(k, StepKind::Action | StepKind::Mitigation));
        if acted.is_some() {
            return acted;
        }
    }
    Some(kind)
}

/// A sentence that opens with why something was done, then says what was: the main clause.
static PURPOSE_LEAD: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?i)^(?:[\s\-*•]+)?(?:suspecting|thinking|believing|assuming|hoping|guessing|in an attempt to|in order to|to rule out)\b[^,.;]{0,100}, ([^.;]{8,})",
    )
});

/// The sentences of `text` after its first that tell of something done then, not of an
/// earlier change ("DockerHub password was changed as part of ...").
fn later_sentences(text: &str) -> impl Iterator<Item = &str> {
    let mut starts = vec![0];
    let bytes = text.as_bytes();
    for i in 0..bytes.len() {
        // Not after an initial ("M.A. suspects", "N. S. realises").
        let initial = i >= 1
            && bytes[i - 1].is_ascii_uppercase()
            && (i < 2 || !bytes[i - 2].is_ascii_alphanumeric());
        let end = matches!(bytes[i], b'.' | b'!' | b'?')
            && !initial
            && bytes.get(i + 1).is_some_and(|b| b.is_ascii_whitespace())
            || bytes[i] == b'\n';
        if end {
            starts.push(i + 1);
        }
    }
    starts.push(text.len());
    let pieces: Vec<&str> = starts.windows(2).map(|w| text[w[0]..w[1]].trim()).collect();
    pieces
        .into_iter()
        .skip(1)
        .filter(|s| s.split_whitespace().count() >= 2 && !EARLIER.is_match(s))
}

static EARLIER: LazyLock<Regex> = LazyLock::new(|| regex(r"(?i)\b(?:was|were|had been|had)\b"));

fn best_cue(text: &str, allowed: &[StepKind]) -> Option<StepKind> {
    let mut best: Option<(StepKind, f32)> = None;
    for (kind, weight, regex) in CUES.iter() {
        if !allowed.contains(kind) {
            continue;
        }
        let hits = regex.find_iter(text).take(8).count();
        if hits == 0 {
            continue;
        }
        // Early cues say more than late ones: the first clause of a row names what happened.
        let first = regex.find(text).map_or(0, |m| m.start());
        let early = if first < 40 { 0.3 } else { 0.0 };
        let score = weight * (1.0 + (hits as f32 - 1.0) * 0.5) + early;
        if best.is_none_or(|(_, s)| score > s) {
            best = Some((*kind, score));
        }
    }
    best.map(|(kind, _)| kind)
}

/// A row that names its kind in a label ("**Recovery:** uncordoned the node").
pub(crate) fn label_kind(text: &str) -> Option<StepKind> {
    let caps = LABEL.captures(body(text))?;
    let label = caps.get(1)?.as_str().to_ascii_lowercase();
    Some(match label.as_str() {
        "recovery" | "resolution" | "mitigation" | "fix" | "workaround" | "resolved by" => {
            StepKind::Mitigation
        }
        "detection" | "detected" | "identified" | "alert" | "symptom" | "symptoms" => {
            StepKind::Detection
        }
        "root cause" | "trigger" | "cause" => StepKind::RootCause,
        "impact" => StepKind::Impact,
        "investigation" | "diagnosis" | "finding" | "findings" => StepKind::Investigation,
        _ => return None,
    })
}

static LABEL: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?i)^(recovery|resolution|mitigation|fix|workaround|resolved by|detection|detected|identified|alert|symptoms?|root cause|trigger|cause|impact|investigation|diagnosis|findings?)\s*:",
    )
});

/// Kinds a timeline entry can take from its wording.
pub(crate) const TIMELINE_KINDS: [StepKind; 4] = [
    StepKind::Detection,
    StepKind::Investigation,
    StepKind::Action,
    StepKind::Mitigation,
];

/// Kinds a paragraph in an unlabelled section can take.
pub(crate) const PROSE_KINDS: [StepKind; 9] = [
    StepKind::Mitigation,
    StepKind::Action,
    StepKind::Investigation,
    StepKind::Detection,
    StepKind::RootCause,
    StepKind::Impact,
    StepKind::FollowUp,
    StepKind::Lesson,
    StepKind::Summary,
];

fn regex(pattern: &str) -> Regex {
    Regex::new(&ascii_classes(pattern)).expect("pattern compiles")
}

/// ASCII word boundaries, word and space classes: the cues are English, and Unicode classes
/// make the lazy DFA give up on long texts.
pub(crate) fn ascii_classes(pattern: &str) -> String {
    let pattern = ascii_boundaries(pattern);
    let mut out = String::with_capacity(pattern.len() + 64);
    let mut chars = pattern.chars();
    let mut in_class = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let next = chars.next();
                match next {
                    Some(n @ ('w' | 's')) if !in_class => {
                        out.push_str("(?-u:\\");
                        out.push(n);
                        out.push(')');
                    }
                    Some(n) => {
                        out.push('\\');
                        out.push(n);
                    }
                    None => out.push('\\'),
                }
            }
            '[' if !in_class => {
                in_class = true;
                out.push(c);
            }
            ']' if in_class => {
                in_class = false;
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// A timestamp, bullet or emphasis at the start of a row, which says nothing about its kind.
static LEAD: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?i)^(?:[\s\-*•>|_#]+|\d{4}-\d\d-\d\d[T ]?|\d{1,2}:(?:\d\d|\?\?)(?::\d\d)?(?:\s*[ap]\.?m\.?)?|\s*(?:utc|gmt|bst|cet|cest|eet|eest|pst|pdt|est|edt|ist|jst|z)\b|[\s:|,\-–—.)]+)*",
    )
});

/// The row without its leading timestamp and markup.
pub(crate) fn body(text: &str) -> &str {
    let lead = LEAD.find(text).map_or(0, |m| m.end());
    text[lead..].trim()
}

/// Boilerplate and template text: time zone notes, unanswered template questions and
/// instructions, placeholder rows, bare "time to repair" stats.
static BOILERPLATE: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?i)^(?:(?:all |the )?(?:times?|timestamps?|dates?)(?: and dates)?(?: are| is| listed| shown| given| below)*(?: are)?(?: in| at)?\s*(?:\(?utc|gmt|[a-z]{2,4}t\)?|[a-z]+ time)\b[^.]{0,30}\.?$|for example\b|e\.g\.|ideally,? these|things that (?:could have )?(?:went|go|gone)|describe |explain |use this (?:section|template)|this section\b|fill (?:in|out)\b|replace this|\[?(?:tbd|tba|n/?a|none|todo|\.\.\.)\]?\.?$|short (?:event )?description|(?:total )?time to (?:repair|detect\w*|resolve|recover\w*|mitigat\w*|acknowledge)\s*:?\s*[\d\s]*(?:[dhms]|mins?|minutes?|hours?|days?)\b[\d\s dhmsinutesor]*$)",
    )
});

/// A list item that opens with a verb in the imperative ("- Investigate why the alert did not
/// fire", "• Add a runbook"): what a write-up's action items look like, whatever section they
/// are in. Timeline rows tell what was done, in the past tense; these say what to do.
pub(crate) fn is_action_item(text: &str) -> bool {
    let t = text.trim_start();
    let bulleted = ["- ", "* ", "• ", "+ "].iter().any(|m| t.starts_with(m))
        || t.split_once(". ").is_some_and(|(n, _)| {
            !n.is_empty() && n.len() <= 2 && n.bytes().all(|b| b.is_ascii_digit())
        });
    bulleted && IMPERATIVE.is_match(body(t))
}

static IMPERATIVE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&ascii_boundaries(
        r"^(?:\[[ x]\] )?(?:Investigate|Add|Make sure|Make|Create|Chase|Consider|Improve|Fix|Reduce|Document|Implement|Change|Write|Update|Use|Ensure|Increase|Replace|Clarify|Review|Monitor|Evaluate|Set up|Automate|Audit|Define|Establish|Introduce|Migrate|Upgrade|Remove|Limit|Alert on|Test|Move|Deprecate|Refactor|Rewrite|Build|Extend|Expose|Track|Verify|Require|Split|Rename|Revisit|Explore|Look into|Figure out|Discuss|Decide|Schedule|Plan|Prepare|Train|Educate|Share|Publish|Restrict|Configure|Tune|Adjust|Provide|Allow|Prevent|Avoid|Stop|Switch|Enable|Disable|Puppetize|File)\b(?: (?:a|an|the|to|that|why|how|whether|if|all|our|more|better|new|some|each|every|us|them|it|this|these|[a-z][\w-]*))",
    ))
    .expect("imperative pattern compiles")
});

/// Instructions of incident templates left in the text, with the section each one opens
/// (`None`: a note that opens none). Headings lost in a plain-text export leave these as the
/// only marks of where the follow-ups or the documentation notes begin.
static TEMPLATE_INSTRUCTIONS: LazyLock<Vec<(Regex, Option<&'static str>)>> = LazyLock::new(|| {
    vec![
        (
            regex(r"(?i)^(?:explicit )?next steps to prevent this from happening again\b"),
            Some("Next steps"),
        ),
        (
            regex(r"(?i)^where is the documentation that someone responding to this\b"),
            Some("Documentation"),
        ),
        (
            regex(r"(?i)^note: please add the #?[\w-]+ phabricator project to these\b"),
            None,
        ),
    ]
});

/// The section a template instruction opens (`Some(None)`: an instruction that opens none),
/// or `None` when `line` is not one.
pub(crate) fn template_instruction(line: &str) -> Option<Option<&'static str>> {
    let b = body(line);
    TEMPLATE_INSTRUCTIONS
        .iter()
        .find(|(r, _)| r.is_match(b))
        .map(|&(_, section)| section)
}

/// A metadata line left in the body ("Severity: SEV2", "Authors: ...").
static METADATA: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?i)^(?:severity|sev|priority|date|authors?|owners?|editors?|reviewers?|incident (?:id|commander)|ic|duration|document status|last updated)\s*:\s*\S+(?:\s+\S+){0,5}$",
    )
});

static PLACEHOLDER: LazyLock<Regex> = LazyLock::new(|| {
    regex(r"(?i)\b(?:hh:mm|yyyy-mm-dd|lorem ipsum|<(?:description|time|date|event)>)")
});

/// Whether a step is boilerplate or template text (kind `other`).
pub(crate) fn is_boilerplate(text: &str) -> bool {
    let b = body(text);
    if b.is_empty() {
        return true;
    }
    if PLACEHOLDER.is_match(text)
        || BOILERPLATE.is_match(b)
        || METADATA.is_match(b)
        || template_instruction(b).is_some()
    {
        return true;
    }
    // An unanswered template question: the whole step is one or two questions.
    let words = b.split_whitespace().count();
    b.ends_with('?') && words <= 30 && b.matches(['.', '!']).count() == 0
}

/// Status markers: a row that only says the incident changed state.
static STATUS: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?i)^(?:(?:the )?(?:incident|issue|outage|problem|event)s?(?: \w+){0,2} (?:is |was |has been |were |have been |now |officially |formally |then |finally |declared |marked (?:as )?)*(?:declared|opened|raised|closed|resolved|over|mitigated|ended|started|begins|began|communicated|downgraded|upgraded)\b|(?:(?:incident|issue|fault|problem) )?(?:first )?(?:resolved|closed|declared|mitigated|recovered|detected|reported|occurs|occurred|started|ended|identified)\s*:?\s*(?:at|on)?\s*[\d\-: ,/.tTzZ]*(?:utc|gmt)?\s*$|(?:all |the )?(?:\w+ ){0,2}(?:services?|systems?|sites?|everything|production|platform|apis?|traffic|operations|functionality)(?: \w+)? (?:is |are |was |were |has |have |now |been |fully |verified |confirmed |back |completely )*(?:restored|recovered|operational|back (?:up|online|to normal)|returns? to normal|returned to normal|healthy|stable|working (?:again|normally|as expected))\b|all (?:issues|problems|errors|alerts) (?:are |have |now |been )*(?:resolved|cleared|gone)|recovery\b.*\bis ok\b|monitoring (?:the )?(?:situation|recovery)|incident (?:closed|resolved|over)|post-?mortem (?:phase|review|meeting))",
    )
});

/// Icinga/Nagios recovery notices.
static RECOVERY_NOTICE: LazyLock<Regex> =
    LazyLock::new(|| regex(r"\bRECOVERY\b|(?i:\brecovery alert\b)"));

/// Communications: updates to customers, status pages, mails.
static COMMS: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?i)^(?:\w+ ){0,3}(?:comms\b|communicat\w*|status ?page|announce\w*|(?:sent|send|sends|posted|posts) (?:an? |the )?(?:update|e-?mail|mail|message|notice|notification)|follow-up (?:mail|e-?mail)|respond(?:ed|s)? to (?:the )?(?:customer|user)|informed|notif(?:ied|ies|y) (?:the )?(?:customers?|users?|stakeholders?))|\b(?:confirm|confirms|confirmed) (?:that )?they are no longer\b",
    )
});

/// Whether `text` only reports a change of state, or a communication, without crediting an
/// action: `timeline_event`, never `mitigation`.
pub(crate) fn is_status_marker(text: &str) -> bool {
    let b = body(text);
    if RECOVERY_NOTICE.is_match(b) && !credits_action(b) {
        return true;
    }
    if COMMS.is_match(b) {
        return true;
    }
    if !STATUS.is_match(b) || b.split_whitespace().count() > 10 {
        return false;
    }
    !credits_action(b)
}

/// An action verb in a clause of its own ("Rate limiting disabled, service recovered"): the
/// row credits the recovery to something done.
static ACTION_CLAUSE: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?i)\b(?:restart\w*|reboot\w*|redeploy\w*|deploy(?:ed|ing)|rolled back|rollback|revert\w*|disabled|enabled|scaled|increased|removed|added|applied|patched|failed over|drained|depooled|killed|replaced|changed|switched|rotated|renewed|fixed|attempted|tried|after (?:the |we )?\w+ing)\b",
    )
});

fn credits_action(text: &str) -> bool {
    ACTION_CLAUSE.is_match(text)
}

/// A change being made: in a timeline before anything was noticed, it is the trigger.
static CHANGE: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?i)\b(?:deploy(?:ed|ment|s|ing)?|merged?|released?|rolled out|roll-?out|rolling out|applied|pushed|push|upgrade[ds]?|upgrading|migrat\w+|config(?:uration)? (?:change|push|update)|change (?:was |is )?(?:made|applied|deployed|merged)|scap sync|sync(?:ed)? started|picks? up|started replacing|scaling (?:up|down)|roll-?over|rotat\w+|expire[sd]|maintenance|puppet|terraform|helm)\b",
    )
});

/// Whether a row opens with a change ("Unrelated deployment reduces the timeout"), whatever
/// else its wording says.
pub(crate) fn leads_with_change(text: &str) -> bool {
    let b = body(text);
    RELEASE.find(b).is_some_and(|m| m.start() < 32) && !REVERT.is_match(b) && !FIX.is_match(b)
}

static RELEASE: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?i)\b(?:deploy(?:ed|ment|s|ing)?|merged?|released?|rolled out|roll-?out|rolling out|pushed|upgrade[ds]?|upgrading|migration|config(?:uration)? (?:change|push|update)|scap sync)\b",
    )
});

static FIX: LazyLock<Regex> =
    LazyLock::new(|| regex(r"(?i)\b(?:fix\w*|hot-?fix\w*|patch\w*|mitigat\w*|workaround)\b"));

/// Whether a timeline row describes a change (a deploy, a push, an upgrade).
pub(crate) fn is_change(text: &str) -> bool {
    let b = body(text);
    CHANGE.is_match(b) && !REVERT.is_match(b)
}

static REVERT: LazyLock<Regex> =
    LazyLock::new(|| regex(r"(?i)\b(?:revert\w*|roll(?:ed|ing)? ?back|rollback)\b"));

/// The outcome a row reports about the action before it ("attempt fails", "errors came back",
/// "service recovered").
pub(crate) fn result_of_previous(text: &str) -> Option<Outcome> {
    let b = body(text);
    if AFTER_FAIL.is_match(b) {
        return Some(Outcome::DidNotHelp);
    }
    if AFTER_OK.is_match(b) {
        return Some(Outcome::Helped);
    }
    None
}

static AFTER_FAIL: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?i)(?:^(?:\w+ ){0,4}(?:fails?|failed)\b|\b(?:still|(?:fail(?:s|ed|ing)?|crash(?:es|ed)?|errors?|down|broken|notready|oom\w*) again|again (?:fails?|failed|crash\w*|down)|persists?|persisted|came back|comes back|returned|recurr\w*|same (?:error|issue|problem|symptoms?)|another (?:node|pod|instance|host|server)|no (?:change|effect|improvement|luck)|not having the (?:intended|desired) effect|did ?n[o']t (?:help|work|fix|resolve|solve)|does ?n[o']t (?:help|work|fix|resolve|solve)|not (?:fixed|resolved|solved)|worse|unsuccessful)\b)",
    )
});

static AFTER_OK: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?i)\b(?:recover(?:ed|s|ing)|restored|back to normal|returns? to normal|returned to normal|(?:went|came|got|dropped|fell) (?:back )?(?:down )?to normal(?: levels)?|resolved|mitigated|subsided|stabili[sz]ed|healthy again|working again|up again|errors? (?:rates? )?(?:dropped|fell|stopped|disappeared)|no longer (?:seeing|see|failing|erroring)|RECOVERY|(?:incident|issue) (?:is |was )?(?:closed|over)|(?:verified|fully) operational|all clear)\b",
    )
});

/// Whether a paragraph opens by pointing back at what came before ("This does not resolve
/// the issue", "That fixed it").
pub(crate) fn refers_back(text: &str) -> bool {
    REFERS_BACK.is_match(body(text))
}

static REFERS_BACK: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?i)^(?:this|that|it|which|these|those|the (?:restart|rollback|revert|change|fix|attempt|deploy\w*)|unfortunately|however|but|sadly|again)\b",
    )
});

/// A row that only says the previous action finished ("Node rollover completed").
pub(crate) fn is_completion(text: &str) -> bool {
    COMPLETION.is_match(body(text)) && body(text).split_whitespace().count() <= 8
}

static COMPLETION: LazyLock<Regex> =
    LazyLock::new(|| regex(r"(?i)\b(?:completed?|finished|done|in progress|underway)\b"));

/// Kinds of response steps whose outcome can come from later rows.
pub(crate) fn takes_result(kind: StepKind) -> bool {
    matches!(kind, StepKind::Action | StepKind::Mitigation)
}

static OUTCOME_CUES: LazyLock<[(Outcome, Regex); 4]> = LazyLock::new(|| {
    [
        (
            Outcome::DidNotHelp,
            regex(
                r"(?i)\b(?:did ?n[o']t (?:help|work|fix|resolve|improve|change|make a difference|solve)|does ?n[o']t (?:help|work|fix|resolve|improve|change|solve)|do(?:es)? not (?:help|work|fix|resolve|improve|change|solve)|did not (?:help|work|fix|resolve|improve|change|solve)|nor did|no (?:noticeable |visible |measurable )?(?:effect|improvement|change|difference|luck)|had no (?:effect|impact)|without (?:success|effect|any effect)|to no avail|unsuccessful(?:ly)?|still (?:failing|broken|down|erroring|seeing|persists?|present|occurring|happening|there|not)|(?:problem|issue|errors?|it) (?:still )?persist(?:s|ed)?|(?:is|was|were) not (?:fixed|resolved|solved|enough|sufficient)|made (?:it|things|the problem|matters) worse|wasn't enough|insufficient|in vain|(?:attempt|rollback|revert|deploy(?:ment)?|restart|it|which|but (?:the )?\w+) (?:also )?fail(?:s|ed)\b|fails? (?:due|because|with)|but (?:gets|got|get) an? (?:error|failure)|came back|comes back|(?:show|showed|shows) the same error|resulted in (?:\w+ )?(?:issues|problems|errors)|pushed \w+ to 100|hoping that|not having the (?:intended|desired|expected) effect|ineffective|not effective|will not fix|won't fix)\b",
            ),
        ),
        (
            Outcome::RuledOut,
            regex(
                r"(?i)\b(?:rul(?:ed?|ing) (?:(?:it|this|that|them|those) )?out|(?:was|is) ?n[o']t the (?:cause|problem|issue|culprit)|not (?:the|a) (?:cause|culprit)|red herrings?|false (?:lead|alarm|positive)|turned out not to|no evidence (?:of|that)|disproved|eliminated|unrelated|not related|no correlation|not (?:to )?be the case|(?:looked|looks|was|were|is|are|both|all|seemed) (?:fine|normal|healthy|ok|correct|unchanged)|confirmed (?:they|it|that \w+) (?:were|was|is|are) (?:healthy|fine|ok)|nothing (?:wrong|unusual|suspicious|obvious)|nothing (?:on|in|about) (?:the )?[\w-]+ (?:\w+ )?(?:preventing|blocking|stopping|causing)|no (?:problems?|issues?) (?:with|in|on|found)|shows? no (?:problems?|issues?|errors?)|(?:endpoint|service|proxy) working means|didn't think|did not think|are (?:both )?(?:working|functioning|fine) (?:fine|correctly|as expected)?)\b",
            ),
        ),
        (
            Outcome::Confirmed,
            regex(
                r"(?i)\b(?:turned out to be|turns out|confirmed|(?:was|is) indeed|identified (?:the|as|that)|is identified|(?:was|were|is) identified|found (?:the|a|that|out)|discovered|revealed|conclu(?:ded|sion)|determined (?:that|the)|realiz(?:es|ed)|realis(?:es|ed)|root cause (?:was|is|identified)|pinpointed|verified that|proved to be|traced (?:it|the \w+)? ?(?:back )?to|the culprit|known issues?|explanation|is suspected as the source|source of the problem|, but (?:rather )?(?:an?|the) (?:[\w-]+ ){0,3}(?:issue|problem|bug|exhaustion|leak|misconfiguration)\b)\b",
            ),
        ),
        (
            Outcome::Helped,
            regex(
                r"(?i)\b(?:fixed|fixes|this fixed|which fixed|resolved (?:it|the|this)|which resolved|this resolved|resolves|(?:that|this|which) (?:helped|worked|did the trick|solved)|helped|restored|recovered|mitigated|back to normal|returned to normal|returns? to normal|(?:went|came|got|dropped|fell) (?:back )?(?:down )?to normal(?: levels)?|quickly return|error rates? (?:dropped|fell|recovered)|succeeded|successful(?:ly)?|(?:started|began) (?:to )?(?:recover|work)|brought (?:it|\w+) back|cleared (?:up|the)|improv(?:ed|es|ement)|subsided|stabili[sz]ed|is complete|completed?|works? again|working again|healthy again|(?:;|, but|but) [a-z][a-z \-]{2,60} did\.?$)",
            ),
        ),
    ]
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

/// The outcome cues found in `text`, with the position of the last match of each.
fn cues(text: &str) -> Vec<(Outcome, usize)> {
    OUTCOME_CUES
        .iter()
        .filter_map(|(o, r)| {
            r.find_iter(text)
                .filter(|m| {
                    !matches!(o, Outcome::Helped | Outcome::Confirmed) || !negated(text, m.start())
                })
                .last()
                .map(|m| (*o, m.start()))
        })
        .collect()
}

/// Whether the words just before `at` negate what follows ("is not fixed", "never resolved").
fn negated(text: &str, at: usize) -> bool {
    let before = &text[text.floor_char_boundary(at.saturating_sub(12))..at];
    let before = before.to_ascii_lowercase();
    ["not ", "n't ", "never ", "no longer ", "nor "]
        .iter()
        .any(|n| before.ends_with(n) || before.contains(&format!(" {n}")))
}

/// What the text says came of a hypothesis or an action; `None` for other kinds.
///
/// Actions take `helped` or `did_not_help`, investigations `ruled_out` or `confirmed`; when
/// both verdicts are written, the later one is the write-up's conclusion ("the rollback did not
/// help ... restarting the pods fixed it"), except that a partial improvement still helped.
pub(crate) fn outcome(kind: StepKind, text: &str) -> Option<Outcome> {
    let found = cues(text);
    let pick = |a: Outcome, b: Outcome| -> Option<Outcome> {
        let pa = found.iter().find(|(o, _)| *o == a).map(|(_, p)| *p);
        let pb = found.iter().find(|(o, _)| *o == b).map(|(_, p)| *p);
        match (pa, pb) {
            (Some(x), Some(y)) => Some(if x >= y { a } else { b }),
            (Some(_), None) => Some(a),
            (None, Some(_)) => Some(b),
            (None, None) => None,
        }
    };
    match kind {
        StepKind::Action | StepKind::Mitigation => {
            let picked = pick(Outcome::DidNotHelp, Outcome::Helped);
            if picked == Some(Outcome::DidNotHelp)
                && PARTIAL.is_match(text)
                && !RECURRENCE.is_match(text)
            {
                return Some(Outcome::Helped);
            }
            picked.or_else(|| {
                (kind == StepKind::Action && TENTATIVE.is_match(text)).then_some(Outcome::Unknown)
            })
        }
        StepKind::Investigation => pick(Outcome::RuledOut, Outcome::Confirmed)
            .or_else(|| TENTATIVE.is_match(text).then_some(Outcome::Unknown)),
        _ => None,
    }
}

/// The problem coming back, which undoes any improvement.
static RECURRENCE: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?i)\b(?:came back|comes back|the same (?:error|issue|problem)|same error|again|recurr\w*|returned)\b",
    )
});

/// A partial improvement, which still counts as helped.
static PARTIAL: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?i)\b(?:mostly|partially|partly|somewhat|improved|subsided|some improvement|seems? to have improved)\b",
    )
});

/// Whether the text says service came back fully, not just that things improved.
pub(crate) fn restores_service(text: &str) -> bool {
    FULL_RESTORE.is_match(text) && !PARTIAL.is_match(text)
}

static FULL_RESTORE: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?i)\b(?:fixed|resolved|restored|recovered|mitigated|back to normal|returns? to normal|returned to normal|quickly return|this time successfully|successfully|rolled back|rollback|revert\w*|stabili[sz]ed|no longer)\b",
    )
});

#[cfg(test)]
mod tests {
    use super::*;
    use StepKind::*;

    #[test]
    fn ascii_classes_leave_brackets_alone() {
        assert_eq!(ascii_classes(r"a\w+[\s-]\b"), r"a(?-u:\w)+[\s-](?-u:\b)");
    }

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
        check(
            "The incident caused the support team to answer tickets all weekend.",
            Some(Impact),
        );
        check(
            "Roughly 12,000 checkout requests failed during the window.",
            Some(Impact),
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
